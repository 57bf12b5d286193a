// ParisKV in libllama: see llama-pariskv.h.

#include "llama-pariskv.h"

#include "llama-context.h"
#include "llama-graph.h"
#include "llama-impl.h"
#include "llama-kv-cache-iswa.h"
#include "llama-kv-cache.h"
#include "llama-model.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

//
// settings
//

static pariskv_settings pariskv_settings_of(const std::string & text) {
    pariskv_settings s;
    if (pariskv_settings_parse(text.c_str(), &s) != PARISKV_OK) {
        throw std::runtime_error(std::string("ParisKV settings '") + text + "': " + pariskv_last_error());
    }
    return s;
}

// the settings in words, for the start-up line
static std::string pariskv_describe(const pariskv_settings & s) {
    char ratios[64];
    if (s.candidates > 0.0f) {
        snprintf(ratios, sizeof(ratios), "candidates %.3g of the zone,", s.candidates);
    } else {
        snprintf(ratios, sizeof(ratios), "%s ratios,", s.ratios == PARISKV_RATIOS_REFERENCE ? "reference" : "tuned");
    }
    char text[320];
    snprintf(text, sizeof(text), "top-k %u (%s), sink %u, window %u, %s refine %u, keys %s", s.top_k,
            s.gqa == PARISKV_GQA_MEAN ? "group-mean query" : s.gqa == PARISKV_GQA_GROUP ? "k rows for the group" : "each query head its share, the group the union",
            s.n_sink, s.n_window, ratios, s.refine, s.center ? "centred" : "as they are");
    return text;
}

static thread_local const llama_pariskv_scope * pariskv_scope_current = nullptr;

llama_pariskv_scope::llama_pariskv_scope(const llama_cparams & cparams) :
        settings(pariskv_settings_of(cparams.pariskv)), outer(pariskv_scope_current) {
    pariskv_scope_current = this;
}

llama_pariskv_scope::~llama_pariskv_scope() {
    pariskv_scope_current = outer;
}

const pariskv_settings * llama_pariskv_scope::current() {
    return pariskv_scope_current ? &pariskv_scope_current->settings : nullptr;
}

//
// which layers
//

// why ParisKV cannot handle this cache at all, or nullptr
static const char * pariskv_why_not(const llama_hparams & hparams, bool shares_cells, bool v_trans,
                                    ggml_type type_k, ggml_type type_v) {
    if (shares_cells) {
        return "the cache shares its cells with another cache";
    }
    if (v_trans) {
        return "V is transposed (flash attention is off; use -fa on or auto)";
    }
    if (!ggml_pariskv_kv_type(type_k) || !ggml_pariskv_kv_type(type_v)) {
        return "the K/V cache type is not f32, f16, bf16 or q8_0";
    }
    if (hparams.f_max_alibi_bias > 0.0f) {
        return "the model uses ALiBi";
    }
    return nullptr;
}

// whether the backend of the device holding a layer's cache runs both ParisKV ops there
// (host memory: the CPU backend always does); asked with the layer's shapes and the settings
static bool pariskv_runs_on(ggml_backend_buffer_type_t buft, const llama_hparams & hparams, uint32_t il,
                            ggml_type type_k, ggml_type type_v, const int64_t dims[3], const pariskv_settings & settings) {
    if (ggml_backend_buft_is_host(buft)) {
        return true;
    }
    ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
    if (!dev) {
        return false;
    }
    ggml_init_params ip = {
        /*.mem_size   =*/ 16*ggml_tensor_overhead(),
        /*.mem_buffer =*/ nullptr,
        /*.no_alloc   =*/ true,
    };
    ggml_context * ctx = ggml_init(ip);
    if (!ctx) {
        return false;
    }
    const int64_t dk = hparams.n_embd_head_k(il), dv = hparams.n_embd_head_v(il), n_kv = 256;
    const int64_t n_head = hparams.n_head(il), n_head_kv = hparams.n_head_kv(il);

    ggml_tensor * q       = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, dk, n_head, 1);
    ggml_tensor * k       = ggml_new_tensor_4d(ctx, type_k, dk, n_head_kv, n_kv, 1);
    ggml_tensor * v       = ggml_new_tensor_4d(ctx, type_v, dv, n_head_kv, n_kv, 1);
    ggml_tensor * mask    = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, 1, 1, 1);
    ggml_tensor * pos     = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_kv, 1);
    ggml_tensor * codes   = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[0], n_kv, n_head_kv, 1);
    ggml_tensor * nibbles = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[1], n_kv, n_head_kv, 1);
    ggml_tensor * weights = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, dims[2], n_kv, n_head_kv, 1);
    ggml_tensor * stored  = ggml_new_tensor_2d(ctx, type_k, dk*n_head_kv, n_kv);
    ggml_tensor * idxs    = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, 1);
    ggml_tensor * centers = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, dk + 1, n_head_kv);

    ggml_tensor * encode = ggml_pariskv_encode(ctx, stored, idxs, codes, nibbles, weights, centers);
    ggml_tensor * attn   = ggml_pariskv_attn(ctx, q, k, v, mask, pos, codes, nibbles, weights, &settings, 1.0f, 0.0f);

    const bool ok = ggml_backend_dev_supports_op(dev, encode) && ggml_backend_dev_supports_op(dev, attn);
    ggml_free(ctx);
    return ok;
}

// the encode of cells idxs of k into index x: it keeps x's code histogram and makes x's row
// cache forget the cells
static ggml_tensor * pariskv_encode_op(ggml_context * ctx, ggml_tensor * k, ggml_tensor * idxs,
        const llama_pariskv_kv::layer_index & x) {
    ggml_tensor * encoded = ggml_pariskv_encode(ctx, k, idxs, x.codes, x.nibbles, x.weights, x.centers);
    if (x.kept) {
        ggml_pariskv_keep_histogram(encoded, x.kept);
    }
    if (x.rows) {
        ggml_pariskv_use_row_cache(encoded, x.rows, x.row_slots, (int32_t) x.codes->ne[3], 0, x.v_row_bytes);
    }
    return encoded;
}

// a layer ParisKV may handle: global attention, K and V, a head size the index supports
static bool pariskv_layer_shape(const llama_hparams & hparams, uint32_t il, int64_t dims[3]) {
    return !hparams.is_swa(il) && ggml_pariskv_index_dims(hparams.n_embd_head_k(il), dims);
}

ggml_backend_buffer_type_t llama_pariskv_kv::layer_buft(llama_kv_cache & kv, uint32_t il, ggml_backend_dev_t dev,
        ggml_backend_buffer_type_t buft, ggml_type type_k, ggml_type type_v) {
    const pariskv_settings * s = llama_pariskv_scope::current();
    int64_t dims[3];
    if (!s || s->top_k == 0 || !s->offload || kv.swa_type != LLAMA_SWA_TYPE_NONE || kv.hparams.is_mla() ||
            pariskv_why_not(kv.hparams, kv.other != nullptr, kv.v_trans, type_k, type_v) ||
            !pariskv_layer_shape(kv.hparams, il, dims)) {
        return buft; // a layer ParisKV will not handle keeps its K/V on the device
    }
    if (!kv.pariskv) {
        kv.pariskv = std::make_shared<llama_pariskv_kv>();
    }
    auto & pk = *kv.pariskv;
    if (ggml_backend_buft_is_host(buft)) {
        pk.offload_why_not = "the KV cache is in host memory already";
        return buft;
    }
    // a layer whose device cannot run the ops stays dense there (init logs it)
    if (!pariskv_runs_on(buft, kv.hparams, il, type_k, type_v, dims, *s)) {
        return buft;
    }

    using host_buft_fn = ggml_backend_buffer_type_t (*)(int device);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    auto host_buft = reg ? (host_buft_fn) ggml_backend_reg_get_proc_address(reg, "ggml_backend_pariskv_host_buffer_type") : nullptr;
    int device = -1;
    for (size_t i = 0; host_buft && i < ggml_backend_reg_dev_count(reg); ++i) {
        if (ggml_backend_reg_dev_get(reg, i) == dev) {
            device = (int) i;
        }
    }
    ggml_backend_buffer_type_t host = device >= 0 ? host_buft(device) : nullptr;
    if (!host) {
        pk.offload_why_not = reg && strncmp(ggml_backend_reg_name(reg), "RPC", 3) == 0
            ? "the KV cache is in the RPC server's memory (offload applies to a CUDA device's own cache)"
            : "the device's backend has no pinned host buffer type for it (a CUDA build has)";
        return buft;
    }
    pk.offload_dev_buft[il] = buft;
    return host;
}

ggml_backend_buffer_type_t llama_pariskv_kv::k_buft(const llama_kv_cache & kv, uint32_t il, ggml_backend_buffer_type_t buft) {
    const pariskv_settings * s = llama_pariskv_scope::current();
    if (!s || !s->offload_keys || !kv.pariskv) {
        return buft;
    }
    const auto it = kv.pariskv->offload_dev_buft.find(il);
    return it != kv.pariskv->offload_dev_buft.end() ? it->second : buft;
}

void llama_pariskv_kv::init(llama_kv_cache & kv) {
    const pariskv_settings * s = llama_pariskv_scope::current();
    if (!s || s->top_k == 0 || kv.swa_type != LLAMA_SWA_TYPE_NONE) {
        kv.pariskv.reset(); // not a cache ParisKV handles (the SWA part of an iSWA cache)
        return;
    }
    if (!kv.pariskv) {
        kv.pariskv = std::make_shared<llama_pariskv_kv>();
    }
    auto & pk = *kv.pariskv;
    pk.settings = *s;

    // -nkvo: the constructor put K/V in host memory without asking layer_buft
    if (s->offload && !pk.offload_why_not && pk.offload_dev_buft.empty() && !kv.layers.empty() &&
            ggml_backend_buffer_is_host(kv.layers[0].k->buffer)) {
        pk.offload_why_not = "the KV cache is in host memory already (-nkvo)";
    }

    const char * why_not = pariskv_why_not(kv.hparams, kv.other != nullptr, kv.v_trans, kv.type_k(), kv.type_v());
    if (why_not) {
        LLAMA_LOG_WARN("%s: ParisKV not used, attention stays dense: %s\n", __func__, why_not);
        kv.pariskv.reset();
        return;
    }

    const uint32_t kv_size = kv.get_size();
    const auto & hparams = kv.hparams;

    std::map<ggml_backend_buffer_type_t, ggml_context *> ctx_map;
    std::vector<std::pair<ggml_context_ptr, ggml_backend_buffer_type_t>> ctxs;
    auto ctx_for = [&](ggml_backend_buffer_type_t buft) -> ggml_context * {
        auto it = ctx_map.find(buft);
        if (it != ctx_map.end()) {
            return it->second;
        }
        ggml_init_params ip = {
            // per layer: codes, nibbles, weights, centres, kept histogram and its flags
            /*.mem_size   =*/ 6*kv.layers.size()*ggml_tensor_overhead(),
            /*.mem_buffer =*/ nullptr,
            /*.no_alloc   =*/ true,
        };
        ggml_context * ctx = ggml_init(ip);
        if (!ctx) {
            throw std::runtime_error("failed to create ggml context for the ParisKV index");
        }
        ctxs.emplace_back(ctx, buft);
        ctx_map[buft] = ctx;
        return ctx;
    };

    pk.layers.assign(kv.layers.size(), {});
    // under offload, the row caches' slots per KV head and stream (a power of two) and bytes
    uint32_t row_slots = 4;
    while (row_slots < s->row_cache) {
        row_slots *= 2;
    }
    size_t row_cache_bytes = 0;
    std::string handled;
    int n_handled = 0;
    int n_cpu     = 0; // handled layers whose steps run on the CPU backend
    int n_device  = 0;
    for (size_t ikv = 0; ikv < kv.layers.size(); ++ikv) {
        const auto & layer = kv.layers[ikv];
        const uint32_t il = layer.il;

        int64_t dims[3];
        if (!layer.k || !layer.v || !pariskv_layer_shape(hparams, il, dims)) {
            continue;
        }

        // the index lives with the cache (on its device when K/V are offloaded to host memory)
        // and the ops run there: a device whose backend has no ParisKV kernels would update a
        // copy, so such a layer stays dense
        const auto offloaded = pk.offload_dev_buft.find(il);
        ggml_backend_buffer_type_t index_buft = offloaded != pk.offload_dev_buft.end()
            ? offloaded->second : ggml_backend_buffer_get_type(layer.k->buffer);
        if (!pariskv_runs_on(index_buft, hparams, il, kv.type_k(), kv.type_v(), dims, *s)) {
            n_device++;
            continue;
        }

        // layers aliased onto one K storage share its index
        bool shared = false;
        for (size_t j = 0; j < ikv; ++j) {
            if (kv.layers[j].k == layer.k && pk.layers[j].codes) {
                pk.layers[ikv] = pk.layers[j];
                shared = true;
                break;
            }
        }

        if (!shared) {
            ggml_context * ctx = ctx_for(index_buft);
            const int64_t n_head_kv = hparams.n_head_kv(il);

            auto & x = pk.layers[ikv];
            x.codes   = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[0], kv_size, n_head_kv, kv.n_stream);
            x.nibbles = ggml_new_tensor_4d(ctx, GGML_TYPE_I8,  dims[1], kv_size, n_head_kv, kv.n_stream);
            x.weights = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, dims[2], kv_size, n_head_kv, kv.n_stream);
            ggml_format_name(x.codes,   "pariskv_codes_l%d",   il);
            ggml_format_name(x.nibbles, "pariskv_nibbles_l%d", il);
            ggml_format_name(x.weights, "pariskv_weights_l%d", il);
            if (s->center) {
                x.centers = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hparams.n_embd_head_k(il) + 1, n_head_kv);
                ggml_format_name(x.centers, "pariskv_centers_l%d", il);
            }
            // the step takes its zone's code histogram from one kept by the encodes
            x.kept = ggml_new_tensor_3d(ctx, GGML_TYPE_I32, ggml_pariskv_kept_ne0(dims[0], kv_size), n_head_kv, kv.n_stream);
            ggml_format_name(x.kept, "pariskv_kept_l%d", il);
            // under offload, the rows the steps read kept in GPU memory across steps
            if (offloaded != pk.offload_dev_buft.end() && s->row_cache > 0) {
                const size_t k_row = ggml_row_size(kv.type_k(), hparams.n_embd_head_k(il));
                const size_t v_row = ggml_row_size(kv.type_v(), hparams.n_embd_head_v(il));
                const size_t bytes = ggml_pariskv_row_cache_bytes(kv.n_stream, n_head_kv, row_slots, k_row, v_row);
                if (bytes == 0) {
                    throw std::runtime_error(std::string("ParisKV row cache: ") + pariskv_last_error());
                }
                x.rows        = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, (int64_t) bytes);
                x.row_slots   = (int32_t) row_slots;
                x.v_row_bytes = (int32_t) v_row;
                ggml_format_name(x.rows, "pariskv_rows_l%d", il);
                row_cache_bytes += bytes;
            }
        }

        handled += (n_handled++ ? "," : "") + std::to_string(il);
        n_cpu += ggml_backend_buft_is_host(index_buft) ? 1 : 0;
    }

    if (n_device > 0) {
        LLAMA_LOG_WARN("%s: ParisKV: %d layer(s) keep their KV cache on a device whose backend cannot run ParisKV "
                "with these settings or cache types (CUDA needs -DGGML_CUDA=ON, a GPU and f32, f16, bf16 or q8_0 K/V); "
                "they stay dense (use -nkvo for a CPU KV cache)\n", __func__, n_device);
    }
    if (n_handled == 0) {
        for (auto & [ctx, buft] : ctxs) {
            GGML_UNUSED(buft);
            ctx.reset();
        }
        if (n_device == 0) {
            LLAMA_LOG_WARN("%s: ParisKV not used, attention stays dense: no layer has a supported head size\n", __func__);
        }
        kv.pariskv.reset();
        return;
    }

    // ParisKV from the depth where it beats dense attention on the backend the steps run
    // on; a cache with handled layers on both takes the larger
    uint64_t on_cpu = 0, on_device = 0;
    if (n_cpu > 0) {
        pariskv_settings_dense_threshold(&pk.settings, PARISKV_BACKEND_CPU, &on_cpu);
    }
    if (n_handled > n_cpu) {
        pariskv_settings_dense_threshold(&pk.settings, PARISKV_BACKEND_CUDA, &on_device);
    }
    pk.dense_threshold = std::max(on_cpu, on_device);

    if (s->offload && pk.offload_dev_buft.empty()) {
        LLAMA_LOG_WARN("%s: ParisKV offload not used, K/V stay where they are: %s\n", __func__,
                pk.offload_why_not ? pk.offload_why_not : "no handled layer's cache is on a device");
    }

    // a cache that never holds more cells than the threshold would carry an index for nothing
    // (under offload K/V already live in pinned memory, so the index stays with them)
    if (pk.dense_threshold == UINT64_MAX) {
        LLAMA_LOG_WARN("%s: ParisKV: %s; stays dense at every depth here: its CUDA step over K/V in GPU memory is "
                "not yet faster than flash attention; no index allocated (--pariskv-dense-threshold N forces it from N "
                "cells; with --pariskv-offload it takes over from sink + window + 2*topk cells)\n", __func__, pariskv_describe(*s).c_str());
    } else if (pk.dense_threshold >= kv_size) {
        LLAMA_LOG_WARN("%s: ParisKV: %s; never takes over in this cache of %u cells (dense below %llu), %s "
                "(--pariskv-dense-threshold sets a lower depth)\n", __func__, pariskv_describe(*s).c_str(), kv_size,
                (unsigned long long) pk.dense_threshold, pk.offload_dev_buft.empty() ? "no index allocated" : "index kept for the offloaded K/V");
    }
    if (pk.dense_threshold >= kv_size) {
        if (pk.offload_dev_buft.empty()) {
            kv.pariskv.reset();
            return; // ctxs free their contexts
        }
    }

    // the index buffers join the cache's own: memory_breakdown() and clear() see them
    size_t index_bytes = 0;
    for (auto & [ctx, buft] : ctxs) {
        ggml_backend_buffer_t b = hparams.no_alloc
            ? ggml_backend_buft_alloc_buffer(buft, 0)
            : ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), buft);
        if (!b) {
            throw std::runtime_error("failed to allocate buffer for the ParisKV index");
        }
        if (hparams.no_alloc) {
            for (ggml_tensor * t = ggml_get_first_tensor(ctx.get()); t; t = ggml_get_next_tensor(ctx.get(), t)) {
                t->buffer = b;
            }
        }
        ggml_backend_buffer_clear(b, 0);
        index_bytes += ggml_backend_buffer_get_size(b);
        kv.ctxs_bufs.emplace_back(std::move(ctx), b);
    }

    char summary[512];
    snprintf(summary, sizeof(summary), "ParisKV: %s, dense below %llu cells; layers %s (%d of %zu), K/V %s/%s; index %.2f MiB",
            pariskv_describe(*s).c_str(), (unsigned long long) pk.dense_threshold, handled.c_str(), n_handled, kv.layers.size(),
            ggml_type_name(kv.type_k()), ggml_type_name(kv.type_v()), index_bytes/1024.0/1024.0);
    pk.summary = summary;
    LLAMA_LOG_INFO("%s: %s\n", __func__, summary);

    if (!pk.offload_dev_buft.empty()) {
        const bool keys_on_device = s->offload_keys != 0;
        size_t host_bytes = 0;
        for (const auto & layer : kv.layers) {
            if (pk.offload_dev_buft.count(layer.il)) {
                host_bytes += (keys_on_device ? 0 : ggml_nbytes(layer.k)) + ggml_nbytes(layer.v);
            }
        }
        LLAMA_LOG_INFO("%s: ParisKV offload: %s of %zu layer(s) in pinned host memory (%.2f MiB), read by the device "
                "through UVA; %s\n", __func__, keys_on_device ? "V" : "K/V", pk.offload_dev_buft.size(),
                host_bytes/1024.0/1024.0, keys_on_device ? "K and the index stay on the device" : "the index stays on the device");
        if (row_cache_bytes > 0) {
            LLAMA_LOG_INFO("%s: ParisKV row cache: %u slots per KV head and stream, %.2f MiB of the index on the device "
                    "(--pariskv-row-cache)\n", __func__, row_slots, row_cache_bytes/1024.0/1024.0);
        } else {
            LLAMA_LOG_INFO("%s: ParisKV row cache: none (--pariskv-row-cache 0)\n", __func__);
        }
    }
}

void llama_pariskv_kv::check_memory(const llama_memory_i * mem, const llama_cparams & cparams) {
    if (pariskv_settings_of(cparams.pariskv).top_k == 0) {
        return;
    }
    if (!dynamic_cast<const llama_kv_cache *>(mem) && !dynamic_cast<const llama_kv_cache_iswa *>(mem)) {
        LLAMA_LOG_WARN("%s: ParisKV not used, attention stays dense: this model's memory type is not supported\n", __func__);
    }
}

bool llama_pariskv_kv::handles(int32_t il, const llama_kv_cache & kv) const {
    const auto it = kv.map_layer_ids.find(il);
    return it != kv.map_layer_ids.end() && layers[it->second].codes != nullptr;
}

bool llama_pariskv_kv::offloaded(int32_t il, const llama_kv_cache & kv) const {
    const auto it = kv.map_layer_ids.find(il);
    return it != kv.map_layer_ids.end() && offload_dev_buft.count(kv.layers[it->second].il) > 0;
}

llama_pariskv_kv::choice llama_pariskv_kv::choose(const llama_kv_cache_context & mctx, uint32_t n_tokens,
        uint32_t n_seqs_unq, bool training) const {
    if (training) {
        return choice::training;
    }
    if (n_tokens != n_seqs_unq) { // decode-shaped: one token per sequence
        return choice::not_decode;
    }
    return (uint64_t) mctx.n_kv > dense_threshold ? choice::pariskv : choice::shallow;
}

bool llama_pariskv_kv::use(const llama_kv_cache_context & mctx, uint32_t n_tokens, uint32_t n_seqs_unq, bool training) const {
    const bool on = choose(mctx, n_tokens, n_seqs_unq, training) == choice::pariskv;
    if (on && !took_over) {
        // said once for a real step (not for the worst-case graphs the context reserves at
        // start-up over an empty cache)
        uint32_t used = 0;
        for (size_t s = 0; s < mctx.kv->v_cells.size(); ++s) {
            used = std::max(used, mctx.kv->v_cells[s].get_used());
        }
        if (used > 0) {
            took_over = true;
            LLAMA_LOG_INFO("%s: ParisKV takes over: decoding over %u cells (%u in use), the dense threshold is %llu\n",
                    __func__, mctx.n_kv, used, (unsigned long long) dense_threshold);
        }
    }
    return on;
}

//
// in-place rewrites
//

void llama_pariskv_kv::clear(llama_kv_cache & kv) {
    if (!kv.pariskv) {
        return;
    }
    kv.pariskv->took_over = false;
    kv.pariskv->seq_stats.clear(); // the steps counted since the last clear (not a warm-up's)
    // the next encode sets them again from the first keys stored after the clear
    for (const auto & x : kv.pariskv->layers) {
        if (x.centers && x.centers->data) { // no data: a size-only (no_alloc) cache
            ggml_backend_tensor_memset(x.centers, 0, 0, ggml_nbytes(x.centers));
        }
    }
}

void llama_pariskv_kv::rewritten(llama_kv_cache & kv) {
    if (kv.pariskv) {
        kv.pariskv->reencode = true;
    }
}

bool llama_pariskv_kv::pending(const llama_kv_cache & kv) {
    if (!kv.pariskv) {
        return false;
    }
    settle_kept(kv);
    return kv.pariskv->reencode;
}

void llama_pariskv_kv::settle_kept(const llama_kv_cache & kv) {
    const auto & pk = *kv.pariskv;
    // the handled layers whose index keeps its histogram in host memory (one per index:
    // layers aliased onto one K share it); their counted flags are alike, each encode
    // writing every layer's cells
    std::vector<size_t> host;
    for (size_t ikv = 0; ikv < pk.layers.size(); ++ikv) {
        const auto & x = pk.layers[ikv];
        bool first = x.kept && x.kept->data && ggml_backend_buffer_is_host(x.kept->buffer);
        for (size_t j : host) {
            first = first && pk.layers[j].kept != x.kept;
        }
        if (first) {
            host.push_back(ikv);
        }
    }
    if (host.empty()) {
        return;
    }
    const layer_index & x0 = pk.layers[host[0]];
    std::vector<int64_t> emptied;
    for (size_t s = 0; s < kv.v_cells.size(); ++s) {
        const auto & cells = kv.v_cells[s];
        // every counted cell is once in block 0 of a head's histogram: more than the cells
        // in use means some were emptied since they were encoded
        const uint32_t * h0 = (const uint32_t *) ((const char *) x0.kept->data + s*x0.kept->nb[2]);
        uint64_t n_counted = 0;
        for (int i = 0; i < PARISKV_N_CENTROIDS; ++i) {
            n_counted += h0[i];
        }
        if (n_counted <= cells.get_used()) {
            continue;
        }
        const uint8_t * flags = (const uint8_t *) h0 + ggml_pariskv_kept_flags_offset(x0.codes);
        emptied.clear();
        for (uint32_t c = 0; c < cells.size(); ++c) {
            if (flags[c] && cells.is_empty(c)) {
                emptied.push_back(c);
            }
        }
        for (size_t ikv : host) {
            const layer_index & x = pk.layers[ikv];
            const uint32_t head_dim = kv.hparams.n_embd_head_k(kv.layers[ikv].il);
            for (int64_t h = 0; h < x.codes->ne[2]; ++h) {
                pariskv_codes c = ggml_pariskv_codes_of(x.codes, x.nibbles, x.weights, x.kept, s, h);
                if (pariskv_codes_tally(head_dim, &c, emptied.data(), emptied.size(), 0) != PARISKV_OK) {
                    LLAMA_LOG_WARN("%s: %s\n", __func__, pariskv_last_error());
                }
            }
        }
        LLAMA_LOG_DEBUG("%s: stream %zu: %zu emptied cells taken out of the kept code histograms\n", __func__, s,
                emptied.size());
    }
}

// the occupied cells of all streams, for a re-encode: empty cells are never attended and are
// encoded when written, and a key centre not yet set (a state loaded into a cleared cache)
// becomes the mean of cached keys, not of whatever the empty cells hold
class llm_graph_input_pariskv_cells : public llm_graph_input_i {
public:
    explicit llm_graph_input_pariskv_cells(std::vector<int64_t> cells) : cells(std::move(cells)) {}

    void set_input(const llama_ubatch * ubatch) override {
        GGML_UNUSED(ubatch);
        GGML_ASSERT(ggml_backend_buffer_is_host(idxs->buffer));
        GGML_ASSERT(ggml_nelements(idxs) == (int64_t) cells.size());
        memcpy(idxs->data, cells.data(), ggml_nbytes(idxs));
    }

    const std::vector<int64_t> cells;

    ggml_tensor * idxs = nullptr; // I64 [cells]
};

bool llama_pariskv_kv::update(llama_kv_cache & kv, llama_context * lctx, bool shifted) {
    if (!kv.pariskv) {
        return false;
    }
    auto & pk = *kv.pariskv;
    pk.reencode = pk.reencode || shifted;

    std::vector<int64_t> cells;
    for (size_t s = 0; pk.reencode && s < kv.v_cells.size(); ++s) {
        const int64_t kv_size = kv.v_cells[s].size();
        for (int64_t c = 0; c < kv_size; ++c) {
            if (!kv.v_cells[s].is_empty((uint32_t) c)) {
                cells.push_back((int64_t) s*kv_size + c);
            }
        }
    }
    if (cells.empty()) {
        pk.reencode = false; // nothing cached: cells are encoded when written
        return false;
    }

    LLAMA_LOG_DEBUG("%s: encoding the occupied cells into the ParisKV index\n", __func__);

    auto * sched = lctx->get_sched();
    ggml_backend_sched_reset(sched);

    auto * res = lctx->get_gf_res_reserve();
    res->reset();

    auto * ctx = res->get_ctx();
    auto * gf  = res->get_gf();

    auto inp = std::make_unique<llm_graph_input_pariskv_cells>(std::move(cells));
    inp->idxs = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, (int64_t) inp->cells.size());
    ggml_set_input(inp->idxs);

    for (size_t ikv = 0; ikv < kv.layers.size(); ++ikv) {
        const auto & x = pk.layers[ikv];
        bool first = x.codes != nullptr;
        for (size_t j = 0; j < ikv && first; ++j) {
            first = pk.layers[j].codes != x.codes;
        }
        if (first) {
            ggml_build_forward_expand(gf, pariskv_encode_op(ctx, kv.layers[ikv].k, inp->idxs, x));
        }
    }

    res->add_input(std::move(inp));

    if (!ggml_backend_sched_alloc_graph(sched, gf)) {
        LLAMA_LOG_ERROR("%s: failed to allocate compute graph for the ParisKV re-encode\n", __func__);
        return false;
    }

    res->set_inputs(nullptr);

    if (lctx->graph_compute(gf, false) != GGML_STATUS_SUCCESS) {
        LLAMA_LOG_ERROR("%s: failed to compute the ParisKV re-encode\n", __func__);
        return false;
    }

    pk.reencode = false;
    return true;
}

//
// graph
//

ggml_tensor * llama_pariskv_kv::encode(const llama_kv_cache & kv, ggml_context * ctx, ggml_tensor * stored,
        ggml_tensor * k_idxs, int32_t il) {
    if (!kv.pariskv || !kv.pariskv->handles(il, kv)) {
        return stored;
    }
    const auto & x = kv.pariskv->layers[kv.map_layer_ids.at(il)];
    ggml_tensor * encoded = pariskv_encode_op(ctx, stored, k_idxs, x);
    // build_attn finds the encode of its own layer in the graph by this name
    ggml_format_name(encoded, "pariskv_encoded-%d", il);
    return encoded;
}

// the KV cache context of the memory a graph is built for (the global layers' part of an
// iSWA cache), or nullptr
static const llama_kv_cache_context * pariskv_kv_context(const llama_memory_context_i * mctx) {
    if (const auto * kv = dynamic_cast<const llama_kv_cache_context *>(mctx)) {
        return kv;
    }
    if (const auto * iswa = dynamic_cast<const llama_kv_cache_iswa_context *>(mctx)) {
        return iswa->get_base();
    }
    return nullptr;
}

void llama_pariskv_kv::set_pos(const llama_kv_cache_context & mctx, ggml_tensor * dst, const llama_ubatch * ubatch) {
    GGML_ASSERT(ggml_backend_buffer_is_host(dst->buffer));
    const llama_kv_cache & kv = *mctx.kv;

    const int64_t n_kv  = dst->ne[0];
    const int64_t ns    = dst->ne[1];
    const int64_t n_tps = ubatch->n_tokens/ns;

    int32_t * data = (int32_t *) dst->data;
    for (int64_t s = 0; s < ns; ++s) {
        // the cells a stream of the ubatch attends are those of its sequences' KV stream
        const auto & cells = kv.v_cells.at(kv.seq_to_stream[ubatch->seq_id[s*n_tps][0]]);
        for (int64_t c = 0; c < n_kv; ++c) {
            data[s*n_kv + c] = (uint32_t) c < cells.size() && !cells.is_empty(c) ? cells.pos_get(c) : -1;
        }
    }
}

void llama_pariskv_kv::count(const llama_kv_cache_context & mctx, const llama_ubatch & ubatch, bool attended) {
    const llama_kv_cache & kv = *mctx.kv;
    const llama_pariskv_kv & pk = *kv.pariskv;
    const uint64_t planned = (uint64_t) pk.settings.n_sink + pk.settings.n_window + pk.settings.top_k;
    for (uint32_t u = 0; u < ubatch.n_seqs_unq; ++u) {
        const llama_seq_id seq = ubatch.seq_id_unq[u];
        uint32_t n_own = 0; // tokens of seq in the ubatch, and the last one
        uint32_t last  = 0;
        for (uint32_t i = 0; i < ubatch.n_tokens; ++i) {
            if (std::find(ubatch.seq_id[i], ubatch.seq_id[i] + ubatch.n_seq_id[i], seq) != ubatch.seq_id[i] + ubatch.n_seq_id[i]) {
                ++n_own;
                last = i;
            }
        }
        llama_pariskv_seq_stats & st = pk.seq_stats[seq];
        if (n_own > 1) {
            ++st.n_prompt;
        } else if (attended) {
            // the rows the op attends for this token: sink, window and top-k, within the cells
            // the token sees (counted until they are enough)
            const auto & cells = kv.v_cells.at(kv.seq_to_stream[seq]);
            uint64_t visible = 0;
            for (uint32_t c = 0; c < (uint32_t) mctx.n_kv && c < cells.size() && visible < planned; ++c) {
                visible += !cells.is_empty(c) && cells.seq_has(c, seq) && cells.pos_get(c) <= ubatch.pos[last];
            }
            ++st.n_pariskv;
            st.n_rows += std::min(visible, planned);
        } else {
            // dense: why, as use() chose (a choice of ParisKV that no layer took is a model
            // whose attention the op does not apply, or a training graph)
            switch (pk.choose(mctx, ubatch.n_tokens, ubatch.n_seqs_unq, false)) {
                case choice::not_decode: ++st.n_mixed;       break;
                case choice::shallow:    ++st.n_shallow;     break;
                default:                 ++st.n_unsupported; break;
            }
        }
    }
}

bool llama_pariskv_kv::same_cache(const llama_kv_cache_context & prev, const llama_kv_cache_context & next) {
    return next.kv == prev.kv;
}

bool llama_pariskv_kv::same_choice(const llama_kv_cache_context & prev, const llama_kv_cache_context & next,
        const llama_ubatch & ubatch, bool training, bool chose) {
    return next.kv == prev.kv && next.kv->pariskv &&
        next.kv->pariskv->use(next, ubatch.n_tokens, ubatch.n_seqs_unq, training) == chose;
}

// The cell positions a ParisKV graph reads: one input per graph and KV cache, made by the
// first handled layer. Dense graphs of a handled cache carry one too (without a tensor), so
// that a graph is reused only for ubatches that choose as it did.
class llm_graph_input_pariskv_pos : public llm_graph_input_i {
public:
    explicit llm_graph_input_pariskv_pos(const llama_kv_cache_context * mctx) : mctx(mctx) {}

    void set_input(const llama_ubatch * ubatch) override {
        if (pos && pos->buffer) {
            llama_pariskv_kv::set_pos(*mctx, pos, ubatch);
        }
        llama_pariskv_kv::count(*mctx, *ubatch, attended);
    }

    bool can_reuse(const llm_graph_params & params) override {
        const llama_kv_cache_context * next = pariskv_kv_context(params.mctx);
        if (!next || !llama_pariskv_kv::same_choice(*mctx, *next, params.ubatch, pariskv_training(params.cparams), pos != nullptr)) {
            return false;
        }
        // the positions' shape follows the KQ mask's, which its own input checks
        mctx = next;
        return true;
    }

    const llama_kv_cache_context * mctx;

    ggml_tensor * pos = nullptr; // I32 [n_kv, n_stream], only when the ubatch is attended with ParisKV
    bool attended = false;       // a layer of the graph attends with the op (not only with pos)
};

ggml_tensor * llama_pariskv_kv::attend(const llm_graph_context & g, const llama_kv_cache_context & mctx,
        ggml_tensor * pos, ggml_tensor * encoded, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * kq_b,
        ggml_tensor * kq_mask, ggml_tensor * sinks, ggml_tensor * v_mla, float kq_scale, int il) {
    // model-specific terms the op does not apply
    if (kq_b || sinks || v_mla || g.arch == LLM_ARCH_GROK || q->type != GGML_TYPE_F32) {
        static bool logged = false;
        if (!logged) {
            logged = true;
            LLAMA_LOG_WARN("%s: ParisKV does not support this model's attention (bias, sinks, MLA or Grok); "
                    "these layers stay dense\n", __func__);
        }
        return nullptr;
    }

    const llama_kv_cache & kv = *mctx.kv;
    const llama_pariskv_kv & pk = *kv.pariskv;

    // the index views of the streams of this ubatch
    const auto & sinfo = mctx.sinfos[mctx.i_cur];
    const int64_t ns = sinfo.s1 - sinfo.s0 + 1;
    auto streams = [&](ggml_tensor * t) {
        return ggml_view_4d(g.ctx0, t, t->ne[0], t->ne[1], t->ne[2], ns, t->nb[1], t->nb[2], t->nb[3], sinfo.s0*t->nb[3]);
    };
    const auto & x = pk.layers[kv.map_layer_ids.at(il)];

    const float softcap = g.hparams.attn_soft_cap ? g.hparams.f_attn_logit_softcapping : 0.0f;
    ggml_tensor * cur = ggml_pariskv_attn(g.ctx0, q, k, v, kq_mask, pos,
            streams(encoded), streams(x.nibbles), streams(x.weights), &pk.settings, kq_scale, softcap);
    if (x.kept) {
        auto streams3 = [&](ggml_tensor * t) {
            return ggml_view_3d(g.ctx0, t, t->ne[0], t->ne[1], ns, t->nb[1], t->nb[2], sinfo.s0*t->nb[2]);
        };
        ggml_pariskv_keep_histogram(cur, streams3(x.kept));
    }
    if (x.rows) {
        ggml_pariskv_use_row_cache(cur, x.rows, x.row_slots, (int32_t) kv.n_stream, (int32_t) sinfo.s0, x.v_row_bytes);
    }
    g.cb(cur, "pariskv_attn", il);

    return ggml_reshape_2d(g.ctx0, cur, cur->ne[0]*cur->ne[1], cur->ne[2]);
}

// fill=local (llama-bench's depth fill, speed only), read from the context's settings text
static bool pariskv_fill_local(const llama_cparams & cparams) {
    static thread_local std::string text;
    static thread_local bool local = false;
    if (text != cparams.pariskv) {
        text  = cparams.pariskv;
        local = pariskv_settings_of(text).fill == 1;
    }
    return local;
}

std::pair<int64_t, int64_t> llama_pariskv_kv::fill_tiles(const llama_kv_cache_context & mctx, int64_t n_kv) {
    const auto & cells = mctx.sinfos[mctx.i_cur].idxs[0];
    const auto [lo, hi] = std::minmax_element(cells.begin(), cells.end());
    const int64_t tile = 256;
    return { (int64_t) *lo / tile * tile, std::min<int64_t>(n_kv, ((int64_t) *hi + tile) / tile * tile) };
}

// fill=local: the KQ mask's columns of the window, cut once per graph. The cut runs on the CPU,
// where the mask input lives: a view of the mask taken by a GPU node would be copied to the
// GPU with the mask's strides, i.e. nearly the whole mask, once for every layer (28 x 512 MiB
// of compute buffer at 512K cells and ubatch 512). A graph whose window moved is not reused.
class llm_graph_input_pariskv_fill : public llm_graph_input_i {
public:
    llm_graph_input_pariskv_fill(const llama_kv_cache_context * mctx, ggml_tensor * mask, std::pair<int64_t, int64_t> tiles) :
        mctx(mctx), mask(mask), tiles(tiles) {}

    void set_input(const llama_ubatch *) override {}

    bool can_reuse(const llm_graph_params & params) override {
        const llama_kv_cache_context * next = pariskv_kv_context(params.mctx);
        if (!next || !llama_pariskv_kv::same_cache(*mctx, *next) ||
                llama_pariskv_kv::fill_tiles(*next, mask->ne[0]) != tiles) {
            return false;
        }
        mctx = next;
        return true;
    }

    const llama_kv_cache_context * mctx;
    ggml_tensor * mask;                 // the graph's KQ mask input
    std::pair<int64_t, int64_t> tiles;  // the window's cells
    ggml_tensor * window = nullptr;     // its columns of the window, contiguous
};

void llama_pariskv_kv::fill_window(const llm_graph_context & g, const llama_kv_cache_context & mctx, ggml_tensor *& k,
        ggml_tensor *& v, ggml_tensor *& kq_mask, int il) {
    const llama_kv_cache & kv = *mctx.kv;
    // this cache's own K in flash attention's layout, one stream (SWA layers, in the other
    // cache of an iSWA memory, attend locally already)
    const auto layer = kv.map_layer_ids.find(il);
    if (layer == kv.map_layer_ids.end() || k->view_src != kv.layers[layer->second].k || k->ne[3] != 1 ||
            v->nb[1] > v->nb[2]) {
        return;
    }
    static bool logged = false;
    if (!logged) {
        logged = true;
        LLAMA_LOG_WARN("%s: ParisKV fill=local: prompt ubatches attend only within their own cells "
                "(speed only, for decode benchmarks at depth)\n", __func__);
    }
    llm_graph_input_pariskv_fill * inp = nullptr;
    for (auto & i : g.res->inputs) {
        auto * p = dynamic_cast<llm_graph_input_pariskv_fill *>(i.get());
        if (p && p->mask == kq_mask) {
            inp = p;
        }
    }
    if (!inp) {
        auto made = std::make_unique<llm_graph_input_pariskv_fill>(&mctx, kq_mask, fill_tiles(mctx, k->ne[2]));
        const auto [w0, w1] = made->tiles;
        // flash attention takes a contiguous mask
        made->window = ggml_cont(g.ctx0, ggml_view_4d(g.ctx0, kq_mask, w1 - w0, kq_mask->ne[1], kq_mask->ne[2],
                kq_mask->ne[3], kq_mask->nb[1], kq_mask->nb[2], kq_mask->nb[3], w0*kq_mask->nb[0]));
        ggml_set_name(made->window, "pariskv_fill_mask");
        if (g.backend_cpu) {
            ggml_backend_sched_set_tensor_backend(g.sched, made->window, g.backend_cpu);
        }
        inp = (llm_graph_input_pariskv_fill *) g.res->add_input(std::move(made));
    }
    const auto [w0, w1] = inp->tiles;
    auto window = [&](ggml_tensor * t) {
        return ggml_view_4d(g.ctx0, t, t->ne[0], t->ne[1], w1 - w0, 1, t->nb[1], t->nb[2], t->nb[3], w0*t->nb[2]);
    };
    k = window(k);
    v = window(v);
    kq_mask = inp->window;
}

ggml_tensor * llama_pariskv_kv::build_attn(const llm_graph_context & g, ggml_tensor * q, ggml_tensor *& k, ggml_tensor *& v,
        ggml_tensor * kq_b, ggml_tensor *& kq_mask, ggml_tensor * sinks, ggml_tensor * v_mla, float kq_scale, int il) {
    const llama_kv_cache_context * mctx = pariskv_kv_context(g.mctx);
    if (mctx && g.n_tokens > 1 && pariskv_fill_local(g.cparams)) {
        fill_window(g, *mctx, k, v, kq_mask, il);
    }
    if (!mctx || !mctx->kv->pariskv) {
        return nullptr;
    }
    const llama_kv_cache & kv = *mctx->kv;
    const llama_pariskv_kv & pk = *kv.pariskv;
    // attention over this layer's cache (not over the current K, as in training or
    // layers that reuse another's keys)
    if (!pk.handles(il, kv) || k->view_src != kv.layers[kv.map_layer_ids.at(il)].k) {
        return nullptr;
    }

    llm_graph_input_pariskv_pos * inp = nullptr;
    for (auto & i : g.res->inputs) {
        auto * p = dynamic_cast<llm_graph_input_pariskv_pos *>(i.get());
        if (p && p->mctx->kv == &kv) {
            inp = p;
        }
    }
    if (!inp) {
        auto made = std::make_unique<llm_graph_input_pariskv_pos>(mctx);
        if (pk.use(*mctx, g.ubatch.n_tokens, g.ubatch.n_seqs_unq, pariskv_training(g.cparams))) {
            // the streams of the ubatch, as in the KQ mask: one for a unified cache, else one per sequence
            const int64_t ns = kv.n_stream == 1 ? 1 : g.ubatch.n_seqs_unq;
            made->pos = ggml_new_tensor_2d(g.ctx0, GGML_TYPE_I32, mctx->n_kv, ns);
            ggml_set_input(made->pos);
            ggml_set_name(made->pos, "attn_inp_pk_pos");
        }
        inp = (llm_graph_input_pariskv_pos *) g.res->add_input(std::move(made));
    }

    // the encode of this layer's new keys, which the attention must follow
    char name[GGML_MAX_NAME];
    snprintf(name, sizeof(name), "pariskv_encoded-%d", il);
    ggml_tensor * encoded = nullptr;
    for (int i = ggml_graph_n_nodes(g.gf) - 1; i >= 0 && !encoded; --i) {
        ggml_tensor * node = ggml_graph_node(g.gf, i);
        if (node->op == GGML_OP_PARISKV_ENCODE && strcmp(node->name, name) == 0) {
            encoded = node;
        }
    }

    ggml_tensor * cur = inp->pos && encoded ? attend(g, *mctx, inp->pos, encoded, q, k, v, kq_b, kq_mask, sinks, v_mla, kq_scale, il) : nullptr;
    inp->attended = inp->attended || cur;
    if (!cur) {
        // dense attention of many queries over K/V in host memory (--pariskv-offload): one copy
        // to the device per ubatch, instead of every query tile of the kernel reading it over PCIe
        // (K only where it is in host memory too)
        if (g.n_tokens > 1 && pk.offloaded(il, kv)) {
            if (!pk.settings.offload_keys) {
                k = ggml_cont(g.ctx0, k);
                g.cb(k, "pariskv_k_dev", il);
            }
            v = ggml_cont(g.ctx0, v);
            g.cb(v, "pariskv_v_dev", il);
        }
        return nullptr;
    }
    return cur;
}


//
// public API
//

std::vector<const llama_pariskv_kv *> llama_pariskv_kv::of(const llama_context * ctx) {
    std::vector<const llama_pariskv_kv *> out;
    auto add = [&](const llama_kv_cache * kv) {
        if (kv && kv->pariskv) {
            out.push_back(kv->pariskv.get());
        }
    };
    const llama_memory_i * mem = ctx ? llama_get_memory(ctx) : nullptr;
    if (const auto * kv = dynamic_cast<const llama_kv_cache *>(mem)) {
        add(kv);
    } else if (const auto * iswa = dynamic_cast<const llama_kv_cache_iswa *>(mem)) {
        add(iswa->get_base());
        add(iswa->get_swa());
    }
    return out;
}

bool llama_pariskv_get_seq_stats(const llama_context * ctx, llama_seq_id seq_id, llama_pariskv_seq_stats * out) {
    if (!out) {
        return false;
    }
    *out = {};
    const auto states = llama_pariskv_kv::of(ctx);
    for (const llama_pariskv_kv * pk : states) {
        for (const auto & [seq, st] : pk->seq_stats) {
            if (seq_id < 0 || seq == seq_id) {
                out->n_pariskv     += st.n_pariskv;
                out->n_prompt      += st.n_prompt;
                out->n_mixed       += st.n_mixed;
                out->n_shallow     += st.n_shallow;
                out->n_unsupported += st.n_unsupported;
                out->n_rows        += st.n_rows;
            }
        }
    }
    return !states.empty();
}

const char * llama_pariskv_summary(const llama_context * ctx) {
    static thread_local std::string text;
    text.clear();
    for (const llama_pariskv_kv * pk : llama_pariskv_kv::of(ctx)) {
        text += (text.empty() ? "" : "\n") + pk->summary;
    }
    return text.c_str();
}
