#pragma once

// ParisKV top-k attention in libllama (GGML_PARISKV=ON): the retrieval index kept next to
// the K storage of the layers of a llama_kv_cache it handles, and the hooks that upstream
// code calls (docs/INTEGRATION.md lists each call site).
//
// Each handled layer gets three tensors parallel to its K storage (codes, nibbles, weights:
// [*, kv_size, n_head_kv, n_stream]) in the same buffer type, so the index lives where the
// keys live; under --pariskv-offload the K/V go to pinned host memory (chosen while the
// cache is constructed) and the index stays in the device's memory. New keys are encoded by
// the graph right after they are stored (encode); keys rewritten in place (K-shift, stream
// copy, state load) are encoded again, all occupied cells at once, in the next update().
// Unless --pariskv-center off, each layer also has a key centre per KV head, set by its
// first encode (the mean of that ubatch's keys) and zeroed by clear().

#include "ggml-backend.h"
#include "ggml-pariskv.h"
#include "llama.h"
#include "pariskv-compat.h"

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

struct llama_context;
struct llama_cparams;
struct llama_ubatch;
struct llm_graph_context;
class llama_kv_cache;
class llama_kv_cache_context;
class llama_memory_i;

// The settings of the context whose memory llama_model::create_memory builds, seen by the
// KV caches it constructs there (they choose where handled layers' K/V live before they
// allocate them); nested scopes restore the outer one.
class llama_pariskv_scope {
public:
    explicit llama_pariskv_scope(const llama_cparams & cparams); // throws on bad settings
    ~llama_pariskv_scope();

    llama_pariskv_scope(const llama_pariskv_scope &) = delete;
    llama_pariskv_scope & operator=(const llama_pariskv_scope &) = delete;

    // the innermost scope's settings, or nullptr outside any
    static const pariskv_settings * current();

private:
    pariskv_settings settings;
    const llama_pariskv_scope * outer;
};

// The ParisKV state of one llama_kv_cache (its member `pariskv`; null when ParisKV does not
// handle the cache), and the hooks upstream code calls with the cache.
struct llama_pariskv_kv {
    //
    // hooks
    //

    // llama_kv_cache constructor, per layer: the buffer type of layer il's K/V (buft unless
    // --pariskv-offload puts a handled layer in pinned host memory of its device dev)
    static ggml_backend_buffer_type_t layer_buft(llama_kv_cache & kv, uint32_t il, ggml_backend_dev_t dev,
            ggml_backend_buffer_type_t buft, ggml_type type_k, ggml_type type_v);
    // then, of layer il's K alone: its device's buffer type under --pariskv-offload-keys device
    // (only V in pinned host memory), else buft, layer_buft's answer
    static ggml_backend_buffer_type_t k_buft(const llama_kv_cache & kv, uint32_t il, ggml_backend_buffer_type_t buft);

    // end of the llama_kv_cache constructor: allocates the index of every layer it can
    // handle; layers, models and cache types it cannot handle stay dense, with one log line
    static void init(llama_kv_cache & kv);

    // llama_kv_cache::clear: the key centres start over with the next keys stored
    static void clear(llama_kv_cache & kv);

    // llama_kv_cache::state_read: restored keys wait for their re-encode
    static void rewritten(llama_kv_cache & kv);

    // llama_kv_cache_context (update, before every batch): whether a re-encode is pending;
    // first, settle_kept
    static bool pending(const llama_kv_cache & kv);
    // cells emptied since the last batch (seq_rm, seq_keep, clear) taken out of the kept code
    // histograms of host indexes, so that a step keeps taking its zone's histogram from them
    // (a counted cell beyond a step's view would make it count the zone every step). A check
    // of one histogram per stream when nothing was emptied. Device indexes keep such cells
    // (their steps count the zone while one lies beyond the view).
    static void settle_kept(const llama_kv_cache & kv);

    // end of llama_kv_cache::update: re-encodes every occupied cell after keys were
    // rewritten in place (shifted: a K-shift or stream copy ran); true if it computed
    static bool update(llama_kv_cache & kv, llama_context * lctx, bool shifted);

    // llama_kv_cache::cpy_k: the encode of the keys just stored (stored, the set_rows
    // result) into layer il's index, or stored itself where the layer is not handled
    static ggml_tensor * encode(const llama_kv_cache & kv, ggml_context * ctx, ggml_tensor * stored,
            ggml_tensor * k_idxs, int32_t il);

    // start of llm_graph_context::build_attn_mha: ParisKV attention for a decode ubatch
    // over a handled layer's cache ([n_embd_v*n_head, n_tokens]), or nullptr to stay dense
    // (then k, v and kq_mask may be replaced: device copies of offloaded K/V for a prefill,
    // or the local window of a fill=local prefill)
    static ggml_tensor * build_attn(const llm_graph_context & g, ggml_tensor * q, ggml_tensor *& k, ggml_tensor *& v,
            ggml_tensor * kq_b, ggml_tensor *& kq_mask, ggml_tensor * sinks, ggml_tensor * v_mla, float kq_scale, int il);

    // fill=local, a prompt ubatch over this cache's layer il: k, v and kq_mask narrowed to
    // the 256-cell tiles holding the ubatch's cells (left as they are where that does not apply)
    static void fill_window(const llm_graph_context & g, const llama_kv_cache_context & mctx, ggml_tensor *& k,
            ggml_tensor *& v, ggml_tensor *& kq_mask, int il);
    // the tiles of 256 cells (llama.cpp pads n_kv to them for flash attention) holding the
    // current ubatch's cells, [w0, w1) clipped to n_kv
    static std::pair<int64_t, int64_t> fill_tiles(const llama_kv_cache_context & mctx, int64_t n_kv);

    // end of llama_model::create_memory: one log line where ParisKV was asked for but the
    // model's memory is of a kind it does not handle
    static void check_memory(const llama_memory_i * mem, const llama_cparams & cparams);

    //
    // state
    //

    struct layer_index {
        ggml_tensor * codes   = nullptr;
        ggml_tensor * nibbles = nullptr;
        ggml_tensor * weights = nullptr;
        ggml_tensor * centers = nullptr; // key centre per KV head (null: keys indexed as they are)
        ggml_tensor * kept    = nullptr; // the codes' histogram kept between steps, and which
                                         // cells it counts (ggml_pariskv_keep_histogram)
        ggml_tensor * rows    = nullptr; // K/V rows kept on the device across steps (offload)
        int32_t row_slots     = 0;       // its slots per KV head and stream
        int32_t v_row_bytes   = 0;       // its V rows' bytes
    };

    pariskv_settings settings;
    uint64_t dense_threshold = 0;     // caches of more cells than this are attended with ParisKV
    std::vector<layer_index> layers;  // [kv.layers.size()], null tensors where a layer is not handled

    // --pariskv-offload: the device buffer type (where the index goes, and K under
    // --pariskv-offload-keys device) of each layer whose K/V (or V) the constructor put in
    // pinned host memory, and why none was when none was
    std::unordered_map<uint32_t, ggml_backend_buffer_type_t> offload_dev_buft;
    const char * offload_why_not = nullptr;

    bool reencode = false; // keys were rewritten in place: encode every occupied cell again

    std::string summary; // the start-up line (llama_pariskv_summary)
    mutable bool took_over = false; // use() chose ParisKV since the last clear (logged once)

    // the states of ctx's KV caches that use ParisKV
    static std::vector<const llama_pariskv_kv *> of(const llama_context * ctx);

    // steps per sequence since the cache was made or cleared (llama_pariskv_get_seq_stats)
    mutable std::map<llama_seq_id, llama_pariskv_seq_stats> seq_stats;

    // counts ubatch's step of each of its sequences over mctx's cache: attended with ParisKV
    // (attended), or dense and why
    static void count(const llama_kv_cache_context & mctx, const llama_ubatch & ubatch, bool attended);

    bool handles(int32_t il, const llama_kv_cache & kv) const;
    bool offloaded(int32_t il, const llama_kv_cache & kv) const;
    // how a ubatch of n_tokens over n_seqs_unq sequences is attended over mctx's cache
    enum class choice { pariskv, not_decode, shallow, training };
    choice choose(const llama_kv_cache_context & mctx, uint32_t n_tokens, uint32_t n_seqs_unq, bool training) const;
    bool use(const llama_kv_cache_context & mctx, uint32_t n_tokens, uint32_t n_seqs_unq, bool training) const;

    // the attention op over layer il's cache for a decode ubatch ([n_embd_v*n_head, n_tokens]),
    // or nullptr where the model's attention has terms the op does not apply
    static ggml_tensor * attend(const llm_graph_context & g, const llama_kv_cache_context & mctx, ggml_tensor * pos,
            ggml_tensor * encoded, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * kq_b,
            ggml_tensor * kq_mask, ggml_tensor * sinks, ggml_tensor * v_mla, float kq_scale, int il);

    // whether prev and next are contexts of one cache
    static bool same_cache(const llama_kv_cache_context & prev, const llama_kv_cache_context & next);
    // whether a graph built for prev, which chose ParisKV or not (chose), chooses the same for
    // ubatch over next (then it can be reused)
    static bool same_choice(const llama_kv_cache_context & prev, const llama_kv_cache_context & next,
            const llama_ubatch & ubatch, bool training, bool chose);

    // positions of the first n_kv cells of each stream of the ubatch, I32 [n_kv, n_stream],
    // -1 for empty cells
    static void set_pos(const llama_kv_cache_context & mctx, ggml_tensor * dst, const llama_ubatch * ubatch);
};
