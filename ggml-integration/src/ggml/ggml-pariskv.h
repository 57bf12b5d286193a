#pragma once

// ParisKV top-k attention as ggml ops (ref. https://arxiv.org/abs/2602.07721): the graph
// API of a GGML_PARISKV=ON build. The ops' CPU and CUDA implementations call the pariskv
// library (pariskv.h), which is linked into ggml-base.
//
// The index of a KV cache lives in three tensors that parallel its K storage, per cell and
// KV head (dims from ggml_pariskv_index_dims):
//   codes   I8  [dims[0], n_cells, n_head_kv, n_stream]   centroid codes
//   nibbles I8  [dims[1], n_cells, n_head_kv, n_stream]   packed 4-bit codes
//   weights F16 [dims[2], n_cells, n_head_kv, n_stream]   per-block weights
// and, optionally, one key centre per KV head (shared by the streams):
//   centers F32 [head_dim + 1, n_head_kv]                  centre, then keys averaged (0: unset)
// and, optionally, the histogram of the codes kept between steps with its flags
// (ggml_pariskv_keep_histogram), one row per KV head and stream:
//   kept    I32 [ggml_pariskv_kept_ne0(n_blocks, n_cells), n_head_kv, n_stream]
//           the codes of the counted cells, n_blocks*256 counts (256: PARISKV_N_CENTROIDS,
//           the centroids of a code block), then n_cells bytes, 1 = the cell is counted
// and, for K/V in host memory on a CUDA device (--pariskv-offload), optionally a cache of
// K/V rows in GPU memory across decode steps (ggml_pariskv_use_row_cache):
//   rows    I8  [ggml_pariskv_row_cache_bytes(...)]       all zero when new

#include "ggml.h"
#include "pariskv.h"

#ifdef __cplusplus
extern "C" {
#endif

// false if head_dim is not supported (a multiple of 8 up to 512)
GGML_API bool ggml_pariskv_index_dims(int64_t head_dim, int64_t dims[3]);

// the element types a K/V cache may have for the ops (F32, F16, BF16, Q8_0; a backend's
// supports_op may take fewer: CUDA reads no Q8_0)
GGML_API bool ggml_pariskv_kv_type(enum ggml_type type);

// whether the ops log one line per step (token and KV head): GGML_PARISKV_STATS set to
// anything but "" or "0"; the lines are info, shown by llama.cpp's tools from -lv 4
GGML_API bool ggml_pariskv_log_steps(void);

// encodes the keys stored at cells idxs (I64, global: stream*n_cells + cell, like the
// KV cache's k_idxs) of k (contiguous K storage [head_dim*n_head_kv, n_cells, n_stream] or
// [head_dim*n_head_kv, n_cells*n_stream], F32/F16/BF16/Q8_0) into the index; with centers (may
// be NULL: keys encoded as they are), each KV head's keys minus its centre, which the first
// encode that has cells sets to their mean (zero centers to start over); returns a view of
// codes to order later readers after it
GGML_API struct ggml_tensor * ggml_pariskv_encode(
        struct ggml_context * ctx,
        struct ggml_tensor  * k,
        struct ggml_tensor  * idxs,
        struct ggml_tensor  * codes,
        struct ggml_tensor  * nibbles,
        struct ggml_tensor  * weights,
        struct ggml_tensor  * centers);

// decode attention over sink + top-k + local window, per token and KV head, exact over those
// rows, as settings say (top-k > 0; its op params: pariskv_op_params_pack)
// q       [D,  n_head,    n_tokens]           F32
// k       [D,  n_head_kv, n_kv, n_stream]     F32/F16/BF16/Q8_0 (view of the KV cache)
// v       [Dv, n_head_kv, n_kv, n_stream]     F32/F16/BF16/Q8_0, not transposed
// mask    [n_kv, n_tokens/n_stream, 1, n_stream] F16/F32, 0 or -INF only (no ALiBi)
// pos     [n_kv, n_stream]                    I32, position of each cell
// codes, nibbles, weights: the index views of the same streams (n_cells >= n_kv)
// result  [Dv, n_head, n_tokens]              F32
GGML_API struct ggml_tensor * ggml_pariskv_attn(
        struct ggml_context           * ctx,
        struct ggml_tensor            * q,
        struct ggml_tensor            * k,
        struct ggml_tensor            * v,
        struct ggml_tensor            * mask,
        struct ggml_tensor            * pos,
        struct ggml_tensor            * codes,
        struct ggml_tensor            * nibbles,
        struct ggml_tensor            * weights,
        const struct pariskv_settings * settings,
        float                           scale,
        float                           softcap);

// the sources an op's kept histogram and row cache take: encode's after its centres,
// attention's after its index views (ggml's GGML_MAX_SRC = 10 are all used then)
enum { GGML_PARISKV_ENCODE_KEPT = 6, GGML_PARISKV_ENCODE_ROWS = 7, GGML_PARISKV_ATTN_KEPT = 8, GGML_PARISKV_ATTN_ROWS = 9 };

// elements of a kept histogram row (above) for code blocks of n_blocks bytes, n_cells cells
GGML_API int64_t ggml_pariskv_kept_ne0(int64_t n_blocks, int64_t n_cells);

// an encode or attention op (returned) that keeps or reads the index's code histogram
// (kept: the optional index tensor above, zeroed when allocated; an attention takes a view
// of its streams): an encode takes the cells it rewrites out of the histogram and adds
// their new codes; an attention takes its zone's histogram from it instead of counting the
// zone every step (CPU and CUDA).
GGML_API struct ggml_tensor * ggml_pariskv_keep_histogram(
        struct ggml_tensor * op,
        struct ggml_tensor * kept);

// bytes of a row cache of `slots` slots (a power of two, at least 4) per KV head of each of
// n_stream streams, for K rows of k_row_bytes and V rows of v_row_bytes; 0 where the
// library cannot keep one (no CUDA, bad sizes: pariskv_last_error says why)
GGML_API size_t ggml_pariskv_row_cache_bytes(int64_t n_stream, int64_t n_head_kv, int64_t slots,
        size_t k_row_bytes, size_t v_row_bytes);

// an encode or attention op (returned) that keeps K/V rows in `rows` (the optional tensor
// above, of every stream of the cache, on the op's CUDA device): an attention reads the
// rows of streams first_stream.. it retrieved in earlier steps from there, and copies the
// others in; an encode forgets the cells it rewrites (first_stream 0). v_row_bytes: the
// cache's V rows (an encode has no V). The CPU backend ignores it.
GGML_API struct ggml_tensor * ggml_pariskv_use_row_cache(
        struct ggml_tensor * op,
        struct ggml_tensor * rows,
        int32_t              slots,
        int32_t              n_stream,
        int32_t              first_stream,
        int32_t              v_row_bytes);

// the library's element type of a tensor type (F32, F16, BF16, Q8_0); false for any other
GGML_API bool ggml_pariskv_dtype(enum ggml_type type, pariskv_dtype * out);

// the index of KV head h of stream s as the library reads it (index tensors as above, in
// host memory), with its kept histogram and flags where kept is not NULL
GGML_API struct pariskv_codes ggml_pariskv_codes_of(
        const struct ggml_tensor * codes,
        const struct ggml_tensor * nibbles,
        const struct ggml_tensor * weights,
        const struct ggml_tensor * kept,
        int64_t s,
        int64_t h);

// where a kept histogram row's flags start: bytes after its counts (codes: the index's)
GGML_API size_t ggml_pariskv_kept_flags_offset(const struct ggml_tensor * codes);

// an op's row cache (NULL: none) and its description as the library takes it, base at
// stream 0 (the op's first stream: *first_stream)
GGML_API const struct ggml_tensor * ggml_pariskv_row_cache_of(const struct ggml_tensor * op,
        size_t k_row_bytes, struct pariskv_cuda_row_cache * out, uint32_t * first_stream);

// what a PARISKV_ATTN node holds, as both backends read it: its sources, shapes and the
// library's decode step (unpacked from its op params)
struct ggml_pariskv_attn_args {
    const struct ggml_tensor * q, * k, * v, * mask, * pos, * codes, * nibbles, * weights;
    const struct ggml_tensor * kept;            // the kept histogram, or NULL
    const struct ggml_tensor * row_cache;       // the K/V rows kept on the device, or NULL
    int64_t n_head_kv, n_kv, n_stream, n_tokens;
    int64_t n_tps; // tokens per stream
    int64_t group; // query heads per KV head
    struct pariskv_step step;
};

GGML_API struct ggml_pariskv_attn_args ggml_pariskv_attn_args_of(const struct ggml_tensor * node);

#ifdef __cplusplus
}
#endif
