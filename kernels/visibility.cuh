// Stage 1 of a step: each unit's state reset, every cell classified (hidden, zone, sink or
// window) and the zone's code histogram made: from the one the encodes keep, less the
// counted cells outside the zone (a few hundred), or where that is not exact counted.
#pragma once

#include "step.cuh"

// resets each unit's state and clears its histograms; grid (1, 1, units)
extern "C" __global__ void pk_begin(pk_step_args a) {
    pk_grid_order();
    const int u = blockIdx.z;
    if (threadIdx.x == 0) {
        pk_unit_state & s = pk_unit(a, u);
        s.n_visible = 0;
        s.n_zone = 0;
        s.n_rows = 0;
        s.p_min = 0x7FFFFFFF;
        s.p_max = -0x7FFFFFFF - 1;
        // marks are 0 between steps (cleared by the attention or pk_unmark), whatever layout
        // the last step had
        s.tag = 1;
        s.n_counted = 0;
        s.n_uncounted = 0;
    }
    if (a.kept) {
        // every counted cell is in block 0's histogram once
        __shared__ unsigned int total;
        if (threadIdx.x == 0) total = 0;
        __syncthreads();
        const unsigned int * kept = pk_kept_of(a, u);
        unsigned int part = 0;
        for (int i = threadIdx.x; i < PK_N_CENTROIDS; i += blockDim.x) part += kept[i];
        atomicAdd(&total, part);
        __syncthreads();
        if (threadIdx.x == 0) pk_unit(a, u).kept_total = total;
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

// the extremes of the visible cells' positions and, with a kept histogram, the view's
// counted cells and its visible cells not counted; grid (blocks striding over the chunks, 1,
// units)
extern "C" __global__ void pk_visibility(pk_step_args a) {
    pk_grid_order();
    const int u = blockIdx.z;
    const unsigned char * counted = a.kept ? pk_counted_of(a, u) : nullptr;
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1, count = 0, n_counted = 0, n_uncounted = 0;
    pk_for_block_cells(a, u, [&](int c, float mask, int p) {
        const bool is_counted = counted && counted[c];
        n_counted += is_counted;
        if (mask > -INFINITY) {
            lo = min(lo, p);
            hi = max(hi, p);
            count++;
            n_uncounted += !is_counted;
        }
    });
    for (int o = 16; o > 0; o /= 2) {
        lo = min(lo, __shfl_xor_sync(0xFFFFFFFFu, lo, o));
        hi = max(hi, __shfl_xor_sync(0xFFFFFFFFu, hi, o));
        count += __shfl_xor_sync(0xFFFFFFFFu, count, o);
        n_counted += __shfl_xor_sync(0xFFFFFFFFu, n_counted, o);
        n_uncounted += __shfl_xor_sync(0xFFFFFFFFu, n_uncounted, o);
    }
    // the warps' results merged in shared memory, then one atomic per block and field: one
    // per warp put thousands of atomics on the same few words of each unit
    __shared__ int b_lo, b_hi, b_count, b_counted, b_uncounted;
    if (threadIdx.x == 0) {
        b_lo = 0x7FFFFFFF;
        b_hi = -0x7FFFFFFF - 1;
        b_count = b_counted = b_uncounted = 0;
    }
    __syncthreads();
    if (threadIdx.x % 32 == 0 && (count || n_counted)) {
        atomicMin(&b_lo, lo);
        atomicMax(&b_hi, hi);
        atomicAdd(&b_count, count);
        atomicAdd(&b_counted, n_counted);
        atomicAdd(&b_uncounted, n_uncounted);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        pk_unit_state & s = pk_unit(a, u);
        if (b_count) {
            atomicMin(&s.p_min, b_lo);
            atomicMax(&s.p_max, b_hi);
            atomicAdd(&s.n_visible, b_count);
        }
        if (counted) {
            if (b_counted) atomicAdd(&s.n_counted, b_counted);
            if (b_uncounted) atomicAdd(&s.n_uncounted, b_uncounted);
        }
    }
}

// adds `delta` (1, or ~0u to take one away) to the shared [nb][256] counters of `code`'s blocks
__device__ __forceinline__ void pk_tally_smem(unsigned int * hist, const unsigned char * code, int nb, unsigned int delta) {
    if (nb % 4 == 0) {
        for (int i = 0; i < nb / 4; ++i) {
            const unsigned int x = ((const unsigned int *) code)[i];
            for (int j = 0; j < 4; ++j) atomicAdd(&hist[(4 * i + j) * PK_N_CENTROIDS + (x >> (8 * j) & 255)], delta);
        }
    } else {
        for (int b = 0; b < nb; ++b) atomicAdd(&hist[b * PK_N_CENTROIDS + code[b]], delta);
    }
}

// classes (hidden, zone, fixed: p < p_min + n_sink or p > p_max - n_local), the zone's
// cluster sizes, and the fixed cells appended to the unit's rows; grid (blocks striding over
// the chunks, 1, units), dynamic shared memory nb*256 counters (flushed once per block).
// Where the kept histogram is exact the blocks count only what lies outside the zone, taken
// away (modulo 2^32), and add the kept one, a slice each (one block adding all of it waits
// on nb*256 / blockDim.x loads in a row: the longest block of the pass).
extern "C" __global__ void pk_classify(pk_step_args a) {
    pk_grid_order();
    extern __shared__ unsigned int pk_hist_smem[];
    const int u = blockIdx.z;
    pk_unit_state & s = pk_unit(a, u);
    const int total = a.nb * PK_N_CENTROIDS;
    for (int i = threadIdx.x; i < total; i += blockDim.x) pk_hist_smem[i] = 0;
    __syncthreads();
    const long long sink_end = (long long) s.p_min + a.n_sink;
    const long long window_start = (long long) s.p_max - a.n_local;
    const unsigned char * codes = pk_codes_of(a, u);
    const bool from_kept = pk_kept_exact(a, s);
    const unsigned char * counted = from_kept ? pk_counted_of(a, u) : nullptr;
    unsigned char * klass = a.klass + (long long) u * a.n;
    int * rows = a.rows + (long long) u * a.n;
    int zone = 0;
    pk_for_block_cells(a, u, [&](int c, float mask, int p) {
        unsigned char k = PK_HIDDEN;
        if (mask > -INFINITY) k = (p < sink_end || p > window_start) ? PK_FIXED : PK_ZONE;
        klass[c] = k;
        // the warp's fixed cells with one atomic (the lanes here: a chunk's tail diverges)
        pk_append(k == PK_FIXED, c, &s.n_rows, rows, __activemask());
        zone += k == PK_ZONE;
        if (from_kept ? k != PK_ZONE && counted[c] : k == PK_ZONE) {
            pk_tally_smem(pk_hist_smem, codes + (long long) c * a.nb, a.nb, from_kept ? ~0u : 1u);
        }
    });
    __shared__ int b_zone; // one atomic per block; reset before the barrier ahead of the additions
    if (threadIdx.x == 0) b_zone = 0;
    for (int o = 16; o > 0; o /= 2) zone += __shfl_xor_sync(0xFFFFFFFFu, zone, o);
    __syncthreads();
    if (threadIdx.x % 32 == 0 && zone) atomicAdd(&b_zone, zone);
    __syncthreads();
    if (threadIdx.x == 0 && b_zone) atomicAdd(&s.n_zone, b_zone);
    unsigned int * h = a.hist + (long long) u * total;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const unsigned int add = pk_hist_smem[i];
        if (add) atomicAdd(&h[i], add);
    }
    if (from_kept) {
        const unsigned int * kept = pk_kept_of(a, u);
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
            const unsigned int add = kept[i];
            if (add) atomicAdd(&h[i], add);
        }
    }
}
