// Stage 1 of a step: each unit's state reset, every cell classified (hidden, zone, sink or
// window) and the zone's code histogram counted.
#pragma once

#include "step.cuh"

// resets each unit's state and clears its histograms; grid (1, 1, units)
extern "C" __global__ void pk_begin(pk_step_args a) {
    const int u = blockIdx.z;
    if (threadIdx.x == 0) {
        pk_unit_state & s = pk_unit(a, u);
        s.n_visible = 0;
        s.n_zone = 0;
        s.n_rows = 0;
        s.p_min = 0x7FFFFFFF;
        s.p_max = -0x7FFFFFFF - 1;
        // marks are 0 between steps (pk_unmark), whatever layout the last step had
        s.tag = 1;
    }
    for (int r = threadIdx.x; r < a.n_ret; r += blockDim.x) pk_ret(a, u, r).n_cand = 0;
    unsigned int * h = a.hist + (long long) u * a.nb * PK_N_CENTROIDS;
    for (int i = threadIdx.x; i < a.nb * PK_N_CENTROIDS; i += blockDim.x) h[i] = 0;
    unsigned int * ch = a.count_hist + (long long) u * a.n_ret * (a.max_collisions + 1);
    for (int i = threadIdx.x; i < a.n_ret * (a.max_collisions + 1); i += blockDim.x) ch[i] = 0;
    if (a.group) {
        for (int i = threadIdx.x; i < a.n_ret * 2; i += blockDim.x) {
            a.gstat[(long long) u * a.n_ret * 2 + i] = pk_group_stat{pk_ord(-INFINITY), 0, 0ull};
        }
    }
}

// the extremes of the visible cells' positions; grid (blocks striding over the chunks, 1, units)
extern "C" __global__ void pk_visibility(pk_step_args a) {
    const int u = blockIdx.z;
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1, count = 0;
    pk_for_block_cells(a, [&](int c) {
        if (pk_mask_of(a, u, c) > -INFINITY) {
            const int p = pk_pos_of(a, u, c);
            lo = min(lo, p);
            hi = max(hi, p);
            count++;
        }
    });
    for (int o = 16; o > 0; o /= 2) {
        lo = min(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, o));
        hi = max(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, o));
        count += __shfl_xor_sync(0xFFFFFFFFu, count, o);
    }
    if (threadIdx.x % 32 == 0) {
        pk_unit_state & s = pk_unit(a, u);
        if (count) {
            atomicMin(&s.p_min, lo);
            atomicMax(&s.p_max, hi);
            atomicAdd(&s.n_visible, count);
        }
    }
}

// classes (hidden, zone, fixed: p < p_min + n_sink or p > p_max - n_local), the zone's
// cluster sizes, and the fixed cells appended to the unit's rows; grid (blocks striding over
// the chunks, 1, units), dynamic shared memory nb*256 counters (flushed once per block)
extern "C" __global__ void pk_classify(pk_step_args a) {
    extern __shared__ unsigned int pk_hist_smem[];
    const int u = blockIdx.z;
    pk_unit_state & s = pk_unit(a, u);
    const int total = a.nb * PK_N_CENTROIDS;
    for (int i = threadIdx.x; i < total; i += blockDim.x) pk_hist_smem[i] = 0;
    __syncthreads();
    const long long sink_end = (long long) s.p_min + a.n_sink;
    const long long window_start = (long long) s.p_max - a.n_local;
    const unsigned char * codes = pk_codes_of(a, u);
    unsigned char * klass = a.klass + (long long) u * a.n;
    int * rows = a.rows + (long long) u * a.n;
    int zone = 0;
    pk_for_block_cells(a, [&](int c) {
        unsigned char k = PK_HIDDEN;
        if (pk_mask_of(a, u, c) > -INFINITY) {
            const long long p = pk_pos_of(a, u, c);
            k = (p < sink_end || p > window_start) ? PK_FIXED : PK_ZONE;
        }
        klass[c] = k;
        if (k == PK_FIXED) {
            rows[atomicAdd(&s.n_rows, 1)] = c;
        } else if (k == PK_ZONE) {
            zone++;
            const unsigned char * code = codes + (long long) c * a.nb;
            if (a.nb % 4 == 0) {
                for (int i = 0; i < a.nb / 4; ++i) {
                    const unsigned int x = ((const unsigned int *) code)[i];
                    for (int j = 0; j < 4; ++j) atomicAdd(&pk_hist_smem[(4 * i + j) * PK_N_CENTROIDS + (x >> (8 * j) & 255)], 1u);
                }
            } else {
                for (int b = 0; b < a.nb; ++b) atomicAdd(&pk_hist_smem[b * PK_N_CENTROIDS + code[b]], 1u);
            }
        }
    });
    for (int o = 16; o > 0; o /= 2) zone += __shfl_xor_sync(0xFFFFFFFFu, zone, o);
    if (threadIdx.x % 32 == 0 && zone) atomicAdd(&s.n_zone, zone);
    __syncthreads();
    unsigned int * h = a.hist + (long long) u * total;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        if (pk_hist_smem[i]) atomicAdd(&h[i], pk_hist_smem[i]);
    }
}
