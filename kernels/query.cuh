// Stage 2 of a step: the retrieval queries rotated, and each centroid's tier level.
#pragma once

#include "step.cuh"

// coordinate j of the mean of query heads h0..h1 of a unit (at q0, q_stride bytes apart),
// summed in head order, then divided, as search::group_query: the group-mean retrieval
// query of pk_query_rot, and the unrotated query that pk_topk refines with
__device__ __forceinline__ float pk_head_mean(const char * q0, long long q_stride, int h0, int h1, int j) {
    float s = 0.0f;
    for (int h = h0; h < h1; ++h) s = __fadd_rn(s, ((const float *) (q0 + h * q_stride))[j]);
    return __fdiv_rn(s, (float) (h1 - h0));
}

// rotated retrieval queries: retrieval r of unit u is query head r (per-head) or the mean
// of the group's heads (pk_head_mean); one warp per (retrieval, unit), dynamic shared memory
// dp floats
extern "C" __global__ void pk_query_rot(pk_step_args a, int mean, const float * signs, float scale, int d) {
    extern __shared__ float y[];
    const int r = blockIdx.x, u = blockIdx.z, lane = threadIdx.x, dp = a.dp;
    const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
    for (int j = lane; j < dp; j += 32) {
        float v = 0.0f;
        if (j < d) {
            if (mean) {
                v = pk_head_mean(q0, a.q_stride, 0, a.n_heads, j);
            } else {
                v = ((const float *) (q0 + r * a.q_stride))[j];
            }
            v = v * signs[j];
        }
        y[j] = v;
    }
    __syncwarp();
    pk_fwht_warp(y, dp, lane);
    float * out = a.q_rot + ((long long) u * a.n_ret + r) * dp;
    for (int j = lane; j < dp; j += 32) out[j] = __fmul_rn(y[j], scale);
}

// tier level of every centroid; grid (blocks, retrievals, units), PK_N_CENTROIDS threads.
// The centroids are ordered by a bitonic sort of their keys (pk_key: higher score first,
// NaN as -inf, -0 == +0, ties by lower index, as rank::rank_order). Thread i takes the i-th
// best centroid: its level counts the tiers whose budget the zone cells of the better
// centroids (an exclusive prefix sum) have not used up. Levels only fall along the order,
// so this is the serial walk of search::tiers that stops at level 0.
extern "C" __global__ void pk_tiers(pk_step_args a) {
    static_assert((PK_N_CENTROIDS & (PK_N_CENTROIDS - 1)) == 0, "a bitonic sort of a power of two");
    __shared__ unsigned long long order[PK_N_CENTROIDS];
    __shared__ long long budget[PK_N_TIERS];
    __shared__ long long warp_total[PK_N_CENTROIDS / 32];
    const int b = blockIdx.x, r = blockIdx.y, u = blockIdx.z, c = threadIdx.x;
    const int lane = c % 32, warp = c / 32;
    const float * q = a.q_rot + ((long long) u * a.n_ret + r) * a.dp + b * PK_BLOCK;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PK_BLOCK; ++j) s = __fadd_rn(s, (c >> j & 1) ? q[j] : -q[j]);
    order[c] = pk_key(s, c);
    if (c == 0) {
        const int n_zone = pk_unit(a, u).n_zone;
        double cand, coll;
        pk_ratios(a, n_zone, cand, coll);
        for (int t = 0; t < PK_N_TIERS; ++t) budget[t] = pk_ceil_count(n_zone, coll, PK_TIER_FRACTIONS[t]);
    }
    __syncthreads();
    for (int size = 2; size <= PK_N_CENTROIDS; size *= 2) {
        for (int stride = size / 2; stride > 0; stride /= 2) {
            const int partner = c ^ stride;
            if (partner > c) {
                const unsigned long long x = order[c], y = order[partner];
                if ((x > y) == ((c & size) == 0)) {
                    order[c] = y;
                    order[partner] = x;
                }
            }
            __syncthreads();
        }
    }
    const int mine = (int) (order[c] & 0xFFFFFFFFull);
    const long long size = a.hist[((long long) u * a.nb + b) * PK_N_CENTROIDS + mine];
    long long before = size;
    for (int o = 1; o < 32; o *= 2) {
        const long long x = __shfl_up_sync(0xFFFFFFFFu, before, o);
        if (lane >= o) before += x;
    }
    if (lane == 31) warp_total[warp] = before;
    __syncthreads();
    before -= size;
    for (int w = 0; w < warp; ++w) before += warp_total[w];
    int level = 0;
    for (int t = 0; t < PK_N_TIERS; ++t) level += before < budget[t];
    a.levels[(((long long) u * a.n_ret + r) * a.nb + b) * PK_N_CENTROIDS + mine] = (unsigned char) level;
}
