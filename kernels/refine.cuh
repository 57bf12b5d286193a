// The exact rescoring of shortlists (refine >= 2): key rows staged in shared memory and
// summed in the CPU's order; pk_refine per retrieval (group.cuh has the group's), then
// pk_refine_pick keeps the best.
#pragma once

#include "query.cuh"
#include "topk.cuh"

// <q, key> over the d values (a multiple of 8) of the row at `row` (shared memory), summed
// as attention::dot by 8 lanes of a warp: lane i runs the sum of values j = i mod 8 in
// order, then ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)) + 0 (the empty tail). Every
// lane of the 8 returns the result; all 32 lanes must call it. The key type is a template
// argument so that the type is switched on once per dot, not once per element.
template <int DT>
__device__ __forceinline__ float pk_exact_dot_8_as(const float * q, const unsigned char * row, int d, int i) {
    float acc = 0.0f;
    for (int j = i; j < d; j += 8) acc = __fadd_rn(acc, __fmul_rn(q[j], pk_load_as<DT>(row, j)));
    const float pair = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 4, 8));   // i: a_i + a_(i+4)
    const float half = __fadd_rn(pair, __shfl_down_sync(0xFFFFFFFFu, pair, 1, 8)); // 0: lo, 2: hi
    const float total = __fadd_rn(half, __shfl_down_sync(0xFFFFFFFFu, half, 2, 8)); // 0: lo + hi
    return __fadd_rn(__shfl_sync(0xFFFFFFFFu, total, 0, 8), 0.0f);
}

__device__ __forceinline__ float pk_exact_dot_8(const float * q, const unsigned char * row, int dtype, int d, int i) {
    switch (dtype) {
        case PK_F16:  return pk_exact_dot_8_as<PK_F16>(q, row, d, i);
        case PK_BF16: return pk_exact_dot_8_as<PK_BF16>(q, row, d, i);
        case PK_Q8_0: return pk_exact_dot_8_as<PK_Q8_0>(q, row, d, i);
        default:      return pk_exact_dot_8_as<PK_F32>(q, row, d, i);
    }
}

// Stages the key rows of a warp's four shortlisted cells in shared memory, `pitch` bytes
// apart (16-byte loads where the rows allow): lanes 8t..8t+7 hold row t's cell (-1: none;
// the rows are a prefix of the tile). All 32 lanes call it; it ends with __syncwarp. Rows
// of at most 512 bytes (f16 up to d 256, f32 up to d 128) are loaded all four into
// registers before any is stored, so that their loads are in flight together: a row's
// store waits for its load, and the next row's load would wait behind that store. A row
// the stream's row cache holds is read there (its K row, 16-byte aligned).
__device__ __forceinline__ const char * pk_key_row(const pk_step_args & a, int u, const char * keys, int c) {
    if (a.cache.slots) {
        const int t = pk_row_table(a.L.n_h, u);
        const int s = pk_row_cache_find(a.cache, t, c);
        if (s >= 0) return pk_row_table_data(a.cache, t) + (long long) s * a.cache.row_bytes;
    }
    return keys + c * a.k_stride;
}

__device__ __forceinline__ void pk_stage_key_rows(const pk_step_args & a, int u, int cell, unsigned char * stage, int pitch) {
    const int lane = threadIdx.x % 32;
    const char * keys = a.k + pk_off(a, u, a.L.k_a, a.L.k_h);
    const int esize = a.k_dtype == PK_F32 ? 4 : 2, bytes = pk_row_bytes(a.k_dtype, a.d); // q8_0: 2-aligned
    const bool wide = ((unsigned long long) keys % 16 == 0) && a.k_stride % 16 == 0 && bytes % 16 == 0;
    if (wide && bytes <= 16 * 32) {
        int c[4];
        uint4 v[4];
#pragma unroll
        for (int row_t = 0; row_t < 4; ++row_t) {
            c[row_t] = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
            if (c[row_t] >= 0 && 16 * lane < bytes) v[row_t] = *(const uint4 *) (pk_key_row(a, u, keys, c[row_t]) + 16 * lane);
        }
#pragma unroll
        for (int row_t = 0; row_t < 4; ++row_t) {
            if (c[row_t] >= 0 && 16 * lane < bytes) *(uint4 *) (stage + row_t * pitch + 16 * lane) = v[row_t];
        }
        __syncwarp();
        return;
    }
    for (int row_t = 0; row_t < 4; ++row_t) {
        const int c = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
        if (c < 0) break;
        const char * row = pk_key_row(a, u, keys, c);
        unsigned char * dst = stage + row_t * pitch;
        if (wide) {
            for (int o = 16 * lane; o < bytes; o += 16 * 32) *(uint4 *) (dst + o) = *(const uint4 *) (row + o);
        } else if (esize == 4) {
            for (int o = 4 * lane; o < bytes; o += 4 * 32) *(unsigned int *) (dst + o) = *(const unsigned int *) (row + o);
        } else {
            for (int o = 2 * lane; o < bytes; o += 2 * 32) *(unsigned short *) (dst + o) = *(const unsigned short *) (row + o);
        }
    }
    __syncwarp();
}

// The shortlist's exact scores (pk_exact_dot_8) replace its estimates' keys at the front of
// the list. Each warp stages 4 key rows in shared memory (16-byte loads where the rows
// allow), `pitch` bytes apart (src/cuda/kernels.rs: refine_pitch), then lanes 8t..8t+7
// score row t. grid (shortlist tiles of PK_REFINE_WARPS * 4, retrievals, units),
// PK_REFINE_WARPS warps, dynamic shared memory d floats (the query) then the warps' rows
extern "C" __global__ void pk_refine(pk_step_args a, int pitch) {
    pk_grid_order();
    extern __shared__ float pk_refine_smem[];
    const int r = blockIdx.y, u = blockIdx.z, ur = u * a.n_ret + r;
    const int n_refined = pk_ret(a, u, r).n_refined;
    const int first = blockIdx.x * PK_REFINE_WARPS * 4;
    if (first >= n_refined) return;
    float * qs = pk_refine_smem;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    unsigned char * stage = (unsigned char *) (qs + a.d) + warp * 4 * pitch;
    // the retrieval's query unrotated, as gqa::select_group takes it from group_query: the
    // mean of the group's heads, or of head r alone
    const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
    const int h0 = a.n_ret == 1 ? 0 : r, h1 = a.n_ret == 1 ? a.n_heads : r + 1;
    for (int j = threadIdx.x; j < a.d; j += blockDim.x) qs[j] = pk_head_mean(q0, a.q_stride, h0, h1, j);
    __syncthreads();
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    const int i0 = first + warp * 4;
    const int t = lane / 8;
    const int cell = i0 + t < n_refined ? (int) (cand[i0 + t] & 0xFFFFFFFFull) : -1;
    pk_stage_key_rows(a, u, cell, stage, pitch);
    const float score = pk_exact_dot_8(qs, stage + t * pitch, a.k_dtype, a.d, lane % 8);
    if (cell >= 0 && lane % 8 == 0) cand[i0 + t] = pk_key(score, cell);
}

// The keep best exact scores of each shortlist are chosen (marked and appended to the unit's
// rows as pk_topk does); grid (retrievals, 1, units), PK_TOPK_THREADS threads
extern "C" __global__ void pk_refine_pick(pk_step_args a) {
    pk_grid_order();
    __shared__ pk_select S;
    const int r = blockIdx.x, u = blockIdx.z, ur = u * a.n_ret + r;
    const pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_refined;
    if (n <= 0) return;
    pk_take_best(a, u, S, a.cand + (long long) ur * a.n, n, x.keep);
}
