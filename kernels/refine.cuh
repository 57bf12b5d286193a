// The exact rescoring of shortlists (refine >= 2): key rows staged in shared memory and
// summed in the CPU's order; pk_refine per retrieval (group.cuh has the group's), then
// pk_refine_pick keeps the best.
#pragma once

#include "query.cuh"
#include "topk.cuh"

// <q, key> for up to HB heads' queries (q, then d floats apart) over the d values (a
// multiple of 8) of the row at `row` (shared memory), summed as attention::dot by 8 lanes of
// a warp: lane i runs each head's sum of values j = i mod 8 in order, then ((a0 + a4) +
// (a1 + a5)) + ((a2 + a6) + (a3 + a7)) + 0 (the empty tail). Each element of the row is read
// and converted once for all heads. Every lane of the 8 gets the results; all 32 lanes must
// call it, with the same nh <= HB. The key type is a template argument so that the type is
// switched on once per row, not once per element.
template <int DT, int HB>
__device__ __forceinline__ void pk_exact_dots_8_as(const float * q, int nh, const unsigned char * row, int d, int i,
                                                   float (&out)[HB]) {
    float acc[HB];
#pragma unroll
    for (int h = 0; h < HB; ++h) acc[h] = 0.0f;
    for (int j = i; j < d; j += 8) {
        const float x = pk_load_as<DT>(row, j);
#pragma unroll
        for (int h = 0; h < HB; ++h) {
            if (h < nh) acc[h] = __fadd_rn(acc[h], __fmul_rn(q[h * d + j], x));
        }
    }
#pragma unroll
    for (int h = 0; h < HB; ++h) {
        const float pair = __fadd_rn(acc[h], __shfl_down_sync(0xFFFFFFFFu, acc[h], 4, 8)); // i: a_i + a_(i+4)
        const float half = __fadd_rn(pair, __shfl_down_sync(0xFFFFFFFFu, pair, 1, 8));     // 0: lo, 2: hi
        const float total = __fadd_rn(half, __shfl_down_sync(0xFFFFFFFFu, half, 2, 8));    // 0: lo + hi
        out[h] = __fadd_rn(__shfl_sync(0xFFFFFFFFu, total, 0, 8), 0.0f);
    }
}

template <int HB>
__device__ __forceinline__ void pk_exact_dots_8(const float * q, int nh, const unsigned char * row, int dtype, int d, int i,
                                                float (&out)[HB]) {
    switch (dtype) {
        case PK_F16:  pk_exact_dots_8_as<PK_F16, HB>(q, nh, row, d, i, out); break;
        case PK_BF16: pk_exact_dots_8_as<PK_BF16, HB>(q, nh, row, d, i, out); break;
        case PK_Q8_0: pk_exact_dots_8_as<PK_Q8_0, HB>(q, nh, row, d, i, out); break;
        default:      pk_exact_dots_8_as<PK_F32, HB>(q, nh, row, d, i, out); break;
    }
}

// one head's pk_exact_dots_8
__device__ __forceinline__ float pk_exact_dot_8(const float * q, const unsigned char * row, int dtype, int d, int i) {
    float out[1];
    pk_exact_dots_8<1>(q, 1, row, dtype, d, i, out);
    return out[0];
}

// The row cache slots of a warp's four shortlisted cells (lanes 8t..8t+7 hold row t's cell,
// -1: none): each row taken by its first lane (pk_row_take; claims where `may_claim`), every
// lane given all four answers; counted in the cache's stats.
__device__ __forceinline__ void pk_take_key_rows(const pk_step_args & a, int u, int cell, bool may_claim, int (&p)[4]) {
    const int lane = threadIdx.x % 32;
    const int t = pk_row_table(a.L.n_h, u);
    int mine = -1;
    if (cell >= 0 && lane % 8 == 0) mine = pk_row_take(a.cache, t, cell, pk_row_pin(a.cache, t), may_claim);
#pragma unroll
    for (int row_t = 0; row_t < 4; ++row_t) p[row_t] = __shfl_sync(0xFFFFFFFFu, mine, 8 * row_t);
    // the rows read from the cache and from host memory (fills included), one atomic each a warp
    int hits = 0, misses = 0;
#pragma unroll
    for (int row_t = 0; row_t < 4; ++row_t) {
        const bool row = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t) >= 0;
        hits += row && p[row_t] >= 0;
        misses += row && p[row_t] < 0;
    }
    if (lane == 0 && hits) atomicAdd(a.cache.stats + 2 * t, (unsigned long long) hits);
    if (lane == 0 && misses) atomicAdd(a.cache.stats + 2 * t + 1, (unsigned long long) misses);
}

// a load past L1 where a row cache's slot may have been written this step (CACHED)
template <bool CACHED, typename T> __device__ __forceinline__ T pk_ld(const T * p) {
    return CACHED ? __ldcg(p) : *p;
}

// The key row of cell c: in its row cache slot where the take found one (read past L1: a
// fill of this step may have written it), else where the keys are
__device__ __forceinline__ const char * pk_key_row(const pk_step_args & a, int u, const char * keys, int c, int p) {
    if (p >= 0) return pk_row_table_data(a.cache, pk_row_table(a.L.n_h, u)) + (long long) p * a.cache.row_bytes;
    return keys + c * a.k_stride;
}

// Copies the claimed rows of the warp's four (their staged K rows, V from host memory) into
// their slots, then pins each slot for the step, so that later stages read them as hits
// (row_cache.cuh). All 32 lanes call it.
__device__ __forceinline__ void pk_fill_key_rows(const pk_step_args & a, int u, int cell, const int (&p)[4],
                                                 const unsigned char * stage, int pitch) {
    const int lane = threadIdx.x % 32;
    const pk_row_cache & C = a.cache;
    const int t = pk_row_table(a.L.n_h, u);
    const char * values = a.v + pk_off(a, u, a.L.v_a, a.L.v_h);
    bool filled = false;
#pragma unroll
    for (int row_t = 0; row_t < 4; ++row_t) {
        const int c = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
        if (p[row_t] > -2) continue;
        char * slot = pk_row_table_data(C, t) + (long long) (-2 - p[row_t]) * C.row_bytes;
        pk_copy_row(slot, (const char *) stage + row_t * pitch, pk_row_bytes(a.k_dtype, a.d), lane);
        pk_copy_row(slot + C.v_off, values + c * a.v_stride, a.v_bytes, lane);
        filled = true;
    }
    if (!filled) return;
    __threadfence(); // each lane's copies before the pin
    __syncwarp();
    const int mine = lane < 8 ? p[0] : lane < 16 ? p[1] : lane < 24 ? p[2] : p[3]; // no indexing: registers
    if (lane % 8 == 0 && mine <= -2) atomicExch(C.stamp + (long long) t * C.slots + (-2 - mine), pk_row_pin(C, t));
}

// Stages the key rows of a warp's four shortlisted cells in shared memory, `pitch` bytes
// apart (16-byte loads where the rows allow): lanes 8t..8t+7 hold row t's cell (-1: none;
// the rows are a prefix of the tile). All 32 lanes call it; it ends with __syncwarp. Rows
// of at most 512 bytes (f16 up to d 256, f32 up to d 128) are loaded all four into
// registers before any is stored, so that their loads are in flight together: a row's
// store waits for its load, and the next row's load would wait behind that store. With a
// row cache (CACHED: a kernel of its own, so that steps without one pay nothing for it) the
// rows are taken there (pk_take_key_rows): hits read from their slots, fills copied into
// theirs once staged.
template <bool CACHED>
__device__ __forceinline__ void pk_stage_key_rows(const pk_step_args & a, int u, int cell, bool may_claim, unsigned char * stage,
                                                  int pitch) {
    const int lane = threadIdx.x % 32;
    const char * keys = a.k + pk_off(a, u, a.L.k_a, a.L.k_h);
    const int esize = a.k_dtype == PK_F32 ? 4 : 2, bytes = pk_row_bytes(a.k_dtype, a.d); // q8_0: 2-aligned
    const bool wide = ((unsigned long long) keys % 16 == 0) && a.k_stride % 16 == 0 && bytes % 16 == 0;
    int p[4] = {-1, -1, -1, -1};
    if (CACHED) pk_take_key_rows(a, u, cell, may_claim, p);
    if (wide && bytes <= 16 * 32) {
        int c[4];
        uint4 v[4];
#pragma unroll
        for (int row_t = 0; row_t < 4; ++row_t) {
            c[row_t] = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
            if (c[row_t] >= 0 && 16 * lane < bytes) {
                const uint4 * src = (const uint4 *) (pk_key_row(a, u, keys, c[row_t], p[row_t]) + 16 * lane);
                v[row_t] = pk_ld<CACHED>(src);
            }
        }
#pragma unroll
        for (int row_t = 0; row_t < 4; ++row_t) {
            if (c[row_t] >= 0 && 16 * lane < bytes) *(uint4 *) (stage + row_t * pitch + 16 * lane) = v[row_t];
        }
        __syncwarp();
        if (CACHED) pk_fill_key_rows(a, u, cell, p, stage, pitch);
        return;
    } else {
#pragma unroll
        for (int row_t = 0; row_t < 4; ++row_t) {
            const int c = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
            if (c < 0) break;
            const char * row = pk_key_row(a, u, keys, c, p[row_t]);
            unsigned char * dst = stage + row_t * pitch;
            if (wide) {
                for (int o = 16 * lane; o < bytes; o += 16 * 32) *(uint4 *) (dst + o) = pk_ld<CACHED>((const uint4 *) (row + o));
            } else if (esize == 4) {
                for (int o = 4 * lane; o < bytes; o += 4 * 32) *(unsigned int *) (dst + o) = pk_ld<CACHED>((const unsigned int *) (row + o));
            } else {
                for (int o = 2 * lane; o < bytes; o += 2 * 32) *(unsigned short *) (dst + o) = pk_ld<CACHED>((const unsigned short *) (row + o));
            }
        }
    }
    __syncwarp();
    if (CACHED) pk_fill_key_rows(a, u, cell, p, stage, pitch);
}

// The shortlist's exact scores (pk_exact_dot_8) replace its estimates' keys at the front of
// the list. Each warp stages 4 key rows in shared memory (16-byte loads where the rows
// allow), `pitch` bytes apart (src/cuda/kernels.rs: refine_pitch), then lanes 8t..8t+7
// score row t. grid (shortlist tiles of PK_REFINE_WARPS * 4, retrievals, units),
// PK_REFINE_WARPS warps, dynamic shared memory d floats (the query) then the warps' rows
template <bool CACHED>
__device__ __forceinline__ void pk_refine_rows(const pk_step_args & a, int pitch) {
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
    // retrieval 0's rows fill the row cache: the others' mostly repeat them (a cell claimed
    // twice would be held twice)
    pk_stage_key_rows<CACHED>(a, u, cell, r == 0, stage, pitch);
    const float score = pk_exact_dot_8(qs, stage + t * pitch, a.k_dtype, a.d, lane % 8);
    if (cell >= 0 && lane % 8 == 0) cand[i0 + t] = pk_key(score, cell);
}
extern "C" __global__ void pk_refine(pk_step_args a, int pitch) {
    pk_grid_order();
    pk_refine_rows<false>(a, pitch);
}
// through the stream's row cache (a.cache)
extern "C" __global__ void pk_refine_cached(pk_step_args a, int pitch) {
    pk_grid_order();
    pk_refine_rows<true>(a, pitch);
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
