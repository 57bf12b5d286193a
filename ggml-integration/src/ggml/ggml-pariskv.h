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
// and, optionally, the histogram of the codes kept between steps
// (ggml_pariskv_keep_histogram):
//   hist    I32 [n_blocks*256, n_head_kv, n_stream]       codes of the counted cells
//   counted I8  [n_cells, n_head_kv, n_stream]            1 = the cell's codes are in hist
// (256: PARISKV_N_CENTROIDS, the centroids of a code block)

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

// an encode or attention op (returned) that keeps or reads the index's code histogram
// (hist, counted: the optional index tensors above, zeroed when allocated): an encode takes
// the cells it rewrites out of the histogram and adds their new codes; an attention takes
// its zone's histogram from it instead of counting the zone every step (CPU and CUDA).
GGML_API struct ggml_tensor * ggml_pariskv_keep_histogram(
        struct ggml_tensor * op,
        struct ggml_tensor * hist,
        struct ggml_tensor * counted);

// the library's element type of a tensor type (F32, F16, BF16, Q8_0); false for any other
GGML_API bool ggml_pariskv_dtype(enum ggml_type type, pariskv_dtype * out);

// the index of KV head h of stream s as the library reads it (index tensors as above, in
// host memory), with its kept histogram and flags where hist is not NULL
GGML_API struct pariskv_codes ggml_pariskv_codes_of(
        const struct ggml_tensor * codes,
        const struct ggml_tensor * nibbles,
        const struct ggml_tensor * weights,
        const struct ggml_tensor * hist,
        const struct ggml_tensor * counted,
        int64_t s,
        int64_t h);

// what a PARISKV_ATTN node holds, as both backends read it: its sources, shapes and the
// library's decode step (unpacked from its op params)
struct ggml_pariskv_attn_args {
    const struct ggml_tensor * q, * k, * v, * mask, * pos, * codes, * nibbles, * weights;
    const struct ggml_tensor * hist, * counted; // the kept histogram, or NULL
    int64_t n_head_kv, n_kv, n_stream, n_tokens;
    int64_t n_tps; // tokens per stream
    int64_t group; // query heads per KV head
    struct pariskv_step step;
};

GGML_API struct ggml_pariskv_attn_args ggml_pariskv_attn_args_of(const struct ggml_tensor * node);

#ifdef __cplusplus
}
#endif
