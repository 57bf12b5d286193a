// Stage 2 of a step: the retrieval queries rotated, and each centroid's tier level.
#pragma once

#include "step.cuh"

// coordinate j of the mean of query heads h0..h1 of a unit (at q0, q_stride bytes apart),
// summed in head order, then divided, as search::group_query: the group-mean retrieval
// query of pk_tiers, and the unrotated query that pk_topk refines with
__device__ __forceinline__ float pk_head_mean(const char * q0, long long q_stride, int h0, int h1, int j) {
    float s = 0.0f;
    for (int h = h0; h < h1; ++h) s = __fadd_rn(s, ((const float *) (q0 + h * q_stride))[j]);
    return __fdiv_rn(s, (float) (h1 - h0));
}

// Tier level of every centroid, with the retrieval queries rotated on the way: grid
// (blocks, retrievals, units), PK_N_CENTROIDS threads, dynamic shared memory dp floats.
// Warp 0 rotates retrieval r of unit u (query head r, or the mean of the group's heads:
// pk_head_mean) with the Walsh-Hadamard butterflies of rotation::fwht; block b writes code
// block b of it to q_rot for the later stages. Thread c scores centroid c (its sign pattern
// against the block's 8 coordinates) and ranks it by counting: the zone cells of the
// centroids whose keys (pk_key: higher score first, NaN as -inf, -0 == +0, ties by lower
// index, as rank::rank_order) come first are summed in any order (integers). Its level
// counts the tiers whose budget that sum has not used up: the serial walk of search::tiers.
extern "C" __global__ void pk_tiers(pk_step_args a, int mean, const float * signs, float scale, int d) {
    extern __shared__ float y[];
    // centroid j's rank key (pk_key's score half: higher score first) and zone cells, side
    // by side for one 8-byte load each
    __shared__ uint2 entry[PK_N_CENTROIDS];
    __shared__ long long budget[PK_N_TIERS];
    const int b = blockIdx.x, r = blockIdx.y, u = blockIdx.z, c = threadIdx.x, dp = a.dp;
    if (c < 32) {
        const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
        for (int j = c; j < dp; j += 32) {
            float v = 0.0f;
            if (j < d) {
                v = mean ? pk_head_mean(q0, a.q_stride, 0, a.n_heads, j) : ((const float *) (q0 + r * a.q_stride))[j];
                v = v * signs[j];
            }
            y[j] = v;
        }
        __syncwarp();
        pk_fwht_warp(y, dp, c);
        for (int j = c; j < dp; j += 32) y[j] = __fmul_rn(y[j], scale);
        __syncwarp();
        if (c < PK_BLOCK) a.q_rot[((long long) u * a.n_ret + r) * dp + b * PK_BLOCK + c] = y[b * PK_BLOCK + c];
    }
    if (c == 0) {
        const int n_zone = pk_unit(a, u).n_zone;
        double cand, coll;
        pk_ratios(a, n_zone, cand, coll);
        for (int t = 0; t < PK_N_TIERS; ++t) budget[t] = pk_ceil_count(n_zone, coll, PK_TIER_FRACTIONS[t]);
    }
    const unsigned int size = a.hist[((long long) u * a.nb + b) * PK_N_CENTROIDS + c];
    __syncthreads();
    const float * q = y + b * PK_BLOCK;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PK_BLOCK; ++j) s = __fadd_rn(s, (c >> j & 1) ? q[j] : -q[j]);
    const unsigned int mine = (unsigned int) (pk_key(s, c) >> 32);
    entry[c] = make_uint2(mine, size);
    __syncthreads();
    // j comes first when its key is smaller, or equal with a lower index; the sum of at
    // most n cells fits 32 bits
    unsigned int before = 0;
#pragma unroll 8
    for (int j = 0; j < PK_N_CENTROIDS; ++j) {
        const uint2 e = entry[j];
        before += e.x < mine || (e.x == mine && j < c) ? e.y : 0u;
    }
    int level = 0;
    for (int t = 0; t < PK_N_TIERS; ++t) level += (long long) before < budget[t];
    a.levels[(((long long) u * a.n_ret + r) * a.nb + b) * PK_N_CENTROIDS + c] = (unsigned char) level;
}
