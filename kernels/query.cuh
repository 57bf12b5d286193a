// Stage 2 of a step: the retrieval queries rotated, and each centroid's tier level.
#pragma once

#include "estimate.cuh"
#include "step.cuh"

// coordinate j of the mean of query heads h0..h1 of a unit (at q0, q_stride bytes apart),
// summed in head order, then divided, as search::group_query: the group-mean retrieval
// query of pk_tiers, and the unrotated query that pk_topk refines with
__device__ __forceinline__ float pk_head_mean(const char * q0, long long q_stride, int h0, int h1, int j) {
    float s = 0.0f;
    for (int h = h0; h < h1; ++h) s = __fadd_rn(s, ((const float *) (q0 + h * q_stride))[j]);
    return __fdiv_rn(s, (float) (h1 - h0));
}

// the rotated queries of retrievals ur0..ur0 + n - 1 (consecutive) in int8 and their factors
// into shared memory (qi: padded * dp bytes, factor: padded * nb floats), then zero queries
// up to `padded` heads (padded >= n), by the block
__device__ __forceinline__ void pk_load_queries_i8(const pk_step_args & a, long long ur0, int n, int padded, signed char * qi,
                                                   float * factor) {
    for (int i = threadIdx.x; i < padded * a.dp; i += blockDim.x) qi[i] = i < n * a.dp ? a.q_i8[ur0 * a.dp + i] : 0;
    for (int i = threadIdx.x; i < padded * a.nb; i += blockDim.x) factor[i] = i < n * a.nb ? a.q_factor[ur0 * a.nb + i] : 0.0f;
}

// Tier level of every centroid, with the retrieval queries rotated on the way: grid
// (blocks, retrievals, units), PK_N_CENTROIDS threads, dynamic shared memory dp floats.
// The block loads retrieval r of unit u (query head r, or the mean of the group's heads:
// pk_head_mean), warp 0 rotates it with the Walsh-Hadamard butterflies of rotation::fwht and
// block b writes code block b of it, rounded to int8 (pk_round_query_block), to q_i8 and
// q_factor for the estimates. Thread c scores centroid c (its sign pattern against the block's
// 8 coordinates); the block sorts the 256 centroids by key (pk_key: higher score first, NaN as
// -inf, -0 == +0, ties by lower index, as rank::rank_order) with a bitonic sort, one centroid
// a thread, and an exclusive scan of their zone cells in that order gives each centroid the
// cells of those before it (integers: the same sum as the serial walk's). Its level counts the
// tiers whose budget that sum has not used up: the serial walk of search::tiers.
extern "C" __global__ void pk_tiers(pk_step_args a, int mean, const float * signs, float scale, int d) {
    pk_grid_order();
    extern __shared__ float y[];
    // the sort's exchanges across warps, the scan's warp totals, the cells before each centroid
    __shared__ unsigned long long swap_key[PK_N_CENTROIDS];
    __shared__ unsigned int swap_size[PK_N_CENTROIDS], warp_total[PK_N_CENTROIDS / 32], before_of[PK_N_CENTROIDS];
    __shared__ long long budget[PK_N_TIERS];
    const int b = blockIdx.x, r = blockIdx.y, u = blockIdx.z, c = threadIdx.x, dp = a.dp;
    // every load of the prologue in flight together: the centroid's zone cells, the query's
    // coordinates (by the whole block; warp 0 then rotates them), the zone's size (warp 1
    // sets the tier budgets while warp 0 rotates)
    const unsigned int size = a.hist[((long long) u * a.nb + b) * PK_N_CENTROIDS + c];
    {
        const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
        for (int j = c; j < dp; j += blockDim.x) {
            float v = 0.0f;
            if (j < d) {
                v = mean ? pk_head_mean(q0, a.q_stride, 0, a.n_heads, j) : ((const float *) (q0 + r * a.q_stride))[j];
                v = v * signs[j];
            }
            y[j] = v;
        }
    }
    __syncthreads();
    if (c < 32) {
        pk_fwht_warp(y, dp, c);
        for (int j = c; j < dp; j += 32) y[j] = __fmul_rn(y[j], scale);
        __syncwarp();
        if (c < PK_BLOCK) {
            const long long ur = (long long) u * a.n_ret + r;
            float factor;
            a.q_i8[ur * dp + b * PK_BLOCK + c] = pk_round_query_block(y + b * PK_BLOCK, c, &factor);
            if (c == 0) a.q_factor[ur * a.nb + b] = factor;
        }
    }
    if (c == 32) {
        const int n_zone = pk_unit(a, u).n_zone;
        double cand, coll;
        pk_ratios(a, n_zone, cand, coll);
        for (int t = 0; t < PK_N_TIERS; ++t) budget[t] = pk_ceil_count(n_zone, coll, PK_TIER_FRACTIONS[t]);
    }
    __syncthreads();
    const float * q = y + b * PK_BLOCK;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PK_BLOCK; ++j) s = __fadd_rn(s, (c >> j & 1) ? q[j] : -q[j]);
    // (score key, centroid): unique, so the order is total
    unsigned long long key = (pk_key(s, c) & 0xFFFFFFFF00000000ull) | (unsigned int) c;
    unsigned int cells = size;
    for (int run = 2; run <= PK_N_CENTROIDS; run *= 2) {
        for (int j = run / 2; j > 0; j /= 2) {
            unsigned long long other_key;
            unsigned int other_cells;
            if (j >= 32) {
                swap_key[c] = key;
                swap_size[c] = cells;
                __syncthreads();
                other_key = swap_key[c ^ j];
                other_cells = swap_size[c ^ j];
                __syncthreads();
            } else {
                other_key = __shfl_xor_sync(0xFFFFFFFFu, key, j);
                other_cells = __shfl_xor_sync(0xFFFFFFFFu, cells, j);
            }
            // ascending runs where bit `run` is clear; the lower thread of a pair keeps the
            // smaller key of an ascending run, the larger of a descending one
            const bool ascending = (c & run) == 0, lower = (c & j) == 0;
            if (lower == ascending ? other_key < key : other_key > key) {
                key = other_key;
                cells = other_cells;
            }
        }
    }
    // thread i holds the i-th centroid: the cells before it are an exclusive scan
    const int lane = c % 32, warp = c / 32;
    unsigned int incl = cells;
    for (int o = 1; o < 32; o *= 2) {
        const unsigned int x = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= o) incl += x;
    }
    if (lane == 31) warp_total[warp] = incl;
    __syncthreads();
    unsigned int sorted_before = incl - cells; // at most n cells: fits 32 bits
    for (int w = 0; w < warp; ++w) sorted_before += warp_total[w];
    before_of[key & 0xFFu] = sorted_before;
    __syncthreads();
    const unsigned int before = before_of[c];
    int level = 0;
    for (int t = 0; t < PK_N_TIERS; ++t) level += (long long) before < budget[t];
    a.levels[(((long long) u * a.n_ret + r) * a.nb + b) * PK_N_CENTROIDS + c] = (unsigned char) level;
}
