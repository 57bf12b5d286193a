// ParisKV ops in ggml-base: their constructors, shape checks and op parameters. The pariskv
// library is linked into ggml-base only, so every library entry point a backend calls is
// referenced below: that makes the linker take it from the static library and export it.

#include "ggml-pariskv.h"

#include "ggml-impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*ggml_pariskv_fn)(void);

const ggml_pariskv_fn ggml_pariskv_entry_points[] = {
    (ggml_pariskv_fn) pariskv_last_error,
    (ggml_pariskv_fn) pariskv_layout_for,
    (ggml_pariskv_fn) pariskv_center_init,
    (ggml_pariskv_fn) pariskv_encode_cells,
    (ggml_pariskv_fn) pariskv_attend_cache,
    (ggml_pariskv_fn) pariskv_attend_cache_team,
    (ggml_pariskv_fn) pariskv_settings_init,
    (ggml_pariskv_fn) pariskv_settings_parse,
    (ggml_pariskv_fn) pariskv_settings_set,
    (ggml_pariskv_fn) pariskv_settings_format,
    (ggml_pariskv_fn) pariskv_settings_value,
    (ggml_pariskv_fn) pariskv_setting_count,
    (ggml_pariskv_fn) pariskv_setting_describe,
    (ggml_pariskv_fn) pariskv_settings_dense_threshold,
    (ggml_pariskv_fn) pariskv_op_params_pack,
    (ggml_pariskv_fn) pariskv_op_params_step,
    (ggml_pariskv_fn) pariskv_cuda_available,
    (ggml_pariskv_fn) pariskv_cuda_encode,
    (ggml_pariskv_fn) pariskv_cuda_step_create,
    (ggml_pariskv_fn) pariskv_cuda_step_run,
    (ggml_pariskv_fn) pariskv_cuda_step_free,
    (ggml_pariskv_fn) pariskv_cuda_step_stats,
    (ggml_pariskv_fn) pariskv_cuda_row_cache_bytes,
    (ggml_pariskv_fn) pariskv_cuda_row_cache_clear,
    (ggml_pariskv_fn) pariskv_cuda_row_cache_stats,
    (ggml_pariskv_fn) pariskv_host_alloc,
    (ggml_pariskv_fn) pariskv_host_alloc_progress,
    (ggml_pariskv_fn) pariskv_host_free,
};

// after the attention step's op params (an encode has none), a row cache's: its slots,
// streams, the op's first stream and its V rows' bytes (ggml_pariskv_use_row_cache)
enum { GGML_PARISKV_ROW_CACHE_PARAMS = PARISKV_OP_PARAMS, GGML_PARISKV_ROW_CACHE_N_PARAMS = 4 };

static_assert((PARISKV_OP_PARAMS + GGML_PARISKV_ROW_CACHE_N_PARAMS)*sizeof(int32_t) <= GGML_MAX_OP_PARAMS,
        "the attention step's and the row cache's op params fit a node");

bool ggml_pariskv_index_dims(int64_t head_dim, int64_t dims[3]) {
    struct pariskv_layout layout;
    if (head_dim <= 0 || head_dim > INT32_MAX || pariskv_layout_for((uint32_t) head_dim, &layout) != PARISKV_OK) {
        return false;
    }
    dims[0] = layout.code_bytes;
    dims[1] = layout.nibble_bytes;
    dims[2] = layout.n_weights;
    return true;
}

bool ggml_pariskv_kv_type(enum ggml_type type) {
    pariskv_dtype d;
    return ggml_pariskv_dtype(type, &d);
}

bool ggml_pariskv_log_steps(void) {
    const char * v = getenv("GGML_PARISKV_STATS");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

static void ggml_pariskv_check_index(
        const struct ggml_tensor * codes,
        const struct ggml_tensor * nibbles,
        const struct ggml_tensor * weights,
        int64_t head_dim) {
    int64_t dims[3];
    GGML_ASSERT(ggml_pariskv_index_dims(head_dim, dims));
    GGML_ASSERT(codes->type == GGML_TYPE_I8 && nibbles->type == GGML_TYPE_I8 && weights->type == GGML_TYPE_F16);
    GGML_ASSERT(codes->ne[0] == dims[0] && nibbles->ne[0] == dims[1] && weights->ne[0] == dims[2]);
    for (int i = 1; i < GGML_MAX_DIMS; ++i) {
        GGML_ASSERT(nibbles->ne[i] == codes->ne[i] && weights->ne[i] == codes->ne[i]);
    }
    // cells of one head are rows of one stride: the layout the library reads
    GGML_ASSERT(codes->nb[0] == 1 && nibbles->nb[0] == 1 && weights->nb[0] == ggml_type_size(GGML_TYPE_F16));
    GGML_ASSERT(codes->nb[1] == (size_t) dims[0] && nibbles->nb[1] == (size_t) dims[1] &&
                weights->nb[1] == (size_t) dims[2]*ggml_type_size(GGML_TYPE_F16));
}

struct ggml_tensor * ggml_pariskv_encode(
        struct ggml_context * ctx,
        struct ggml_tensor  * k,
        struct ggml_tensor  * idxs,
        struct ggml_tensor  * codes,
        struct ggml_tensor  * nibbles,
        struct ggml_tensor  * weights,
        struct ggml_tensor  * centers) {
    const int64_t n_head_kv = codes->ne[2];

    GGML_ASSERT(ggml_pariskv_kv_type(k->type));
    GGML_ASSERT(idxs->type == GGML_TYPE_I64 && ggml_is_contiguous(idxs));
    GGML_ASSERT(k->ne[0] % n_head_kv == 0);
    // one row per cell, streams back to back: [n_embd, n_cells, n_stream] or [n_embd, n_cells*n_stream]
    GGML_ASSERT(ggml_is_contiguous(k) && ggml_nrows(k) == codes->ne[1]*codes->ne[3]);
    ggml_pariskv_check_index(codes, nibbles, weights, k->ne[0]/n_head_kv);
    GGML_ASSERT(!centers || (centers->type == GGML_TYPE_F32 && ggml_is_contiguous(centers) &&
                             centers->ne[0] == k->ne[0]/n_head_kv + 1 && ggml_nrows(centers) == n_head_kv));

    struct ggml_tensor * result = ggml_view_tensor(ctx, codes);

    result->op     = GGML_OP_PARISKV_ENCODE;
    result->src[0] = k;
    result->src[1] = idxs;
    result->src[2] = codes;
    result->src[3] = nibbles;
    result->src[4] = weights;
    result->src[5] = centers;

    return result;
}

struct ggml_tensor * ggml_pariskv_attn(
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
        float                           softcap) {
    const int64_t n_kv     = k->ne[2];
    const int64_t n_stream = k->ne[3];

    GGML_ASSERT(q->type == GGML_TYPE_F32 && q->nb[0] == sizeof(float));
    GGML_ASSERT(ggml_pariskv_kv_type(k->type) && ggml_pariskv_kv_type(v->type));
    GGML_ASSERT(q->ne[0] == k->ne[0] && q->ne[3] == 1);
    GGML_ASSERT(q->ne[1] % k->ne[1] == 0 && q->ne[2] % n_stream == 0);
    GGML_ASSERT(v->ne[1] == k->ne[1] && v->ne[2] == n_kv && v->ne[3] == n_stream);
    GGML_ASSERT(k->nb[0] == ggml_type_size(k->type) && v->nb[0] == ggml_type_size(v->type));
    GGML_ASSERT(mask->type == GGML_TYPE_F16 || mask->type == GGML_TYPE_F32);
    GGML_ASSERT(mask->ne[0] == n_kv && mask->ne[1] == q->ne[2]/n_stream && mask->ne[2] == 1 && mask->ne[3] == n_stream);
    GGML_ASSERT(pos->type == GGML_TYPE_I32 && pos->ne[0] == n_kv && pos->ne[1] == n_stream && pos->nb[0] == sizeof(int32_t));
    GGML_ASSERT(codes->ne[1] >= n_kv && codes->ne[2] == k->ne[1] && codes->ne[3] == n_stream);
    ggml_pariskv_check_index(codes, nibbles, weights, k->ne[0]);

    int32_t params[PARISKV_OP_PARAMS];
    if (pariskv_op_params_pack(settings, scale, softcap, params) != PARISKV_OK) {
        GGML_ABORT("ggml_pariskv_attn: %s", pariskv_last_error());
    }

    int64_t ne[4] = { v->ne[0], q->ne[1], q->ne[2], 1 };
    struct ggml_tensor * result = ggml_new_tensor(ctx, GGML_TYPE_F32, 4, ne);

    ggml_set_op_params(result, params, sizeof(params));

    result->op     = GGML_OP_PARISKV_ATTN;
    result->src[0] = q;
    result->src[1] = k;
    result->src[2] = v;
    result->src[3] = mask;
    result->src[4] = pos;
    result->src[5] = codes;
    result->src[6] = nibbles;
    result->src[7] = weights;

    return result;
}

int64_t ggml_pariskv_kept_ne0(int64_t n_blocks, int64_t n_cells) {
    return n_blocks*PARISKV_N_CENTROIDS + (n_cells + 3)/4;
}

size_t ggml_pariskv_kept_flags_offset(const struct ggml_tensor * codes) {
    return (size_t) codes->ne[0]*PARISKV_N_CENTROIDS*sizeof(int32_t);
}

struct ggml_tensor * ggml_pariskv_keep_histogram(
        struct ggml_tensor * op,
        struct ggml_tensor * kept) {
    // the op's index tensors: encode's codes are src[2], attention's (a view of them) src[5]
    const bool encode = op->op == GGML_OP_PARISKV_ENCODE;
    GGML_ASSERT(encode || op->op == GGML_OP_PARISKV_ATTN);
    const struct ggml_tensor * codes = op->src[encode ? 2 : 5];
    GGML_ASSERT(kept->type == GGML_TYPE_I32 && kept->nb[0] == sizeof(int32_t));
    GGML_ASSERT(kept->ne[0] >= ggml_pariskv_kept_ne0(codes->ne[0], codes->ne[1]));
    GGML_ASSERT(kept->ne[1] == codes->ne[2] && kept->ne[2] == codes->ne[3] && kept->ne[3] == 1);
    // one stride from a (stream, head)'s row to the next: the encode target's kept_stride
    GGML_ASSERT(kept->nb[2] == kept->nb[1]*kept->ne[1]);
    op->src[encode ? GGML_PARISKV_ENCODE_KEPT : GGML_PARISKV_ATTN_KEPT] = kept;
    return op;
}

size_t ggml_pariskv_row_cache_bytes(int64_t n_stream, int64_t n_head_kv, int64_t slots,
        size_t k_row_bytes, size_t v_row_bytes) {
    if (n_stream <= 0 || n_stream > UINT32_MAX || n_head_kv <= 0 || n_head_kv > UINT32_MAX || slots <= 0 || slots > UINT32_MAX) {
        return 0;
    }
    struct pariskv_cuda_row_cache c;
    memset(&c, 0, sizeof(c));
    c.n_streams   = (uint32_t) n_stream;
    c.n_kv_heads  = (uint32_t) n_head_kv;
    c.slots       = (uint32_t) slots;
    c.k_row_bytes = k_row_bytes;
    c.v_row_bytes = v_row_bytes;
    size_t bytes = 0;
    return pariskv_cuda_row_cache_bytes(&c, &bytes) == PARISKV_OK ? bytes : 0;
}

struct ggml_tensor * ggml_pariskv_use_row_cache(
        struct ggml_tensor * op,
        struct ggml_tensor * rows,
        int32_t              slots,
        int32_t              n_stream,
        int32_t              first_stream,
        int32_t              v_row_bytes) {
    const bool encode = op->op == GGML_OP_PARISKV_ENCODE;
    GGML_ASSERT(encode || op->op == GGML_OP_PARISKV_ATTN);
    GGML_ASSERT(rows->type == GGML_TYPE_I8 && ggml_is_contiguous(rows));
    GGML_ASSERT(slots > 0 && n_stream > 0 && first_stream >= 0 && first_stream < n_stream && v_row_bytes > 0);
    GGML_ASSERT(!encode || first_stream == 0);
    const int32_t p[GGML_PARISKV_ROW_CACHE_N_PARAMS] = { slots, n_stream, first_stream, v_row_bytes };
    for (int i = 0; i < GGML_PARISKV_ROW_CACHE_N_PARAMS; ++i) {
        ggml_set_op_params_i32(op, GGML_PARISKV_ROW_CACHE_PARAMS + i, p[i]);
    }
    op->src[encode ? GGML_PARISKV_ENCODE_ROWS : GGML_PARISKV_ATTN_ROWS] = rows;
    return op;
}

const struct ggml_tensor * ggml_pariskv_row_cache_of(const struct ggml_tensor * op,
        size_t k_row_bytes, struct pariskv_cuda_row_cache * out, uint32_t * first_stream) {
    const bool encode = op->op == GGML_OP_PARISKV_ENCODE;
    GGML_ASSERT(encode || op->op == GGML_OP_PARISKV_ATTN);
    const struct ggml_tensor * rows = op->src[encode ? GGML_PARISKV_ENCODE_ROWS : GGML_PARISKV_ATTN_ROWS];
    if (!rows) {
        return NULL;
    }
    const struct ggml_tensor * codes = op->src[encode ? 2 : 5];
    memset(out, 0, sizeof(*out));
    out->base        = (uint64_t) (uintptr_t) rows->data;
    out->slots       = (uint32_t) ggml_get_op_params_i32(op, GGML_PARISKV_ROW_CACHE_PARAMS + 0);
    out->n_streams   = (uint32_t) ggml_get_op_params_i32(op, GGML_PARISKV_ROW_CACHE_PARAMS + 1);
    out->n_kv_heads  = (uint32_t) codes->ne[2];
    out->k_row_bytes = k_row_bytes;
    out->v_row_bytes = (size_t) ggml_get_op_params_i32(op, GGML_PARISKV_ROW_CACHE_PARAMS + 3);
    *first_stream    = (uint32_t) ggml_get_op_params_i32(op, GGML_PARISKV_ROW_CACHE_PARAMS + 2);
    return rows;
}

bool ggml_pariskv_dtype(enum ggml_type type, pariskv_dtype * out) {
    switch (type) {
        case GGML_TYPE_F32:  *out = PARISKV_F32;  return true;
        case GGML_TYPE_F16:  *out = PARISKV_F16;  return true;
        case GGML_TYPE_BF16: *out = PARISKV_BF16; return true;
        case GGML_TYPE_Q8_0: *out = PARISKV_Q8_0; return true;
        default:             return false;
    }
}

struct pariskv_codes ggml_pariskv_codes_of(
        const struct ggml_tensor * codes,
        const struct ggml_tensor * nibbles,
        const struct ggml_tensor * weights,
        const struct ggml_tensor * kept,
        int64_t s,
        int64_t h) {
    struct pariskv_codes c;
    c.codes   = (uint8_t  *) codes->data   + s*codes->nb[3]   + h*codes->nb[2];
    c.nibbles = (uint8_t  *) nibbles->data + s*nibbles->nb[3] + h*nibbles->nb[2];
    c.weights = (uint16_t *) ((char *) weights->data + s*weights->nb[3] + h*weights->nb[2]);
    c.n_cells = (size_t) codes->ne[1];
    char * row = kept ? (char *) kept->data + s*kept->nb[2] + h*kept->nb[1] : NULL;
    c.hist    = row ? (uint32_t *) row : NULL;
    c.counted = row ? (uint8_t *) row + ggml_pariskv_kept_flags_offset(codes) : NULL;
    return c;
}

struct ggml_pariskv_attn_args ggml_pariskv_attn_args_of(const struct ggml_tensor * node) {
    GGML_ASSERT(node->op == GGML_OP_PARISKV_ATTN);
    struct ggml_pariskv_attn_args a;
    a.q       = node->src[0];
    a.k       = node->src[1];
    a.v       = node->src[2];
    a.mask    = node->src[3];
    a.pos     = node->src[4];
    a.codes   = node->src[5];
    a.nibbles = node->src[6];
    a.weights = node->src[7];
    a.kept      = node->src[GGML_PARISKV_ATTN_KEPT];
    a.row_cache = node->src[GGML_PARISKV_ATTN_ROWS];

    a.n_head_kv = a.k->ne[1];
    a.n_kv      = a.k->ne[2];
    a.n_stream  = a.k->ne[3];
    a.n_tokens  = a.q->ne[2];
    a.n_tps     = a.n_tokens/a.n_stream;
    a.group     = a.q->ne[1]/a.n_head_kv;

    if (pariskv_op_params_step(node->op_params, (uint32_t) a.k->ne[0], (uint32_t) a.v->ne[0], (uint32_t) a.group,
                               &a.step) != PARISKV_OK) {
        GGML_ABORT("%s: op params of %s: %s", __func__, node->name, pariskv_last_error());
    }
    return a;
}
