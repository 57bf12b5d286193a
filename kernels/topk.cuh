// Stage 5 of a step: the top-k (or the shortlist when refining) of each retrieval's
// candidates, the rows each unit attends, and the marks cleared after the step.
#pragma once

#include "step.cuh"

// The key of rank k (1-based) among n keys, or ~0 when k >= n: a radix select, 8 bits per
// pass from the top, by the whole block (h, prefix, remaining, done in shared memory).
// keys a thread reads per round of the radix passes and of the compaction
#define PK_TOPK_KEYS 8

__device__ unsigned long long pk_threshold(const unsigned long long * cand, int n, int k, unsigned int * h,
                                           unsigned long long & prefix, int & remaining, int & done) {
    if (k >= n) return ~0ull;
    const int lane = threadIdx.x % 32;
    if (threadIdx.x == 0) {
        prefix = 0;
        remaining = k;
        done = 0;
    }
    __syncthreads();
    for (int pass = 7; pass >= 0 && !done; --pass) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) h[i] = 0;
        __syncthreads();
        const int shift = 8 * pass;
        const unsigned long long hi_mask = pass == 7 ? 0ull : (~0ull << (shift + 8));
        const unsigned long long want = prefix & hi_mask;
        // PK_TOPK_KEYS keys a thread per round, their loads in flight together
        for (int i0 = 0; i0 < n; i0 += PK_TOPK_KEYS * blockDim.x) {
            unsigned long long key[PK_TOPK_KEYS];
#pragma unroll
            for (int j = 0; j < PK_TOPK_KEYS; ++j) {
                const int i = i0 + j * blockDim.x + threadIdx.x;
                key[j] = i < n ? cand[i] : 0ull;
            }
#pragma unroll
            for (int j = 0; j < PK_TOPK_KEYS; ++j) {
                const int i = i0 + j * blockDim.x + threadIdx.x;
                if (i < n && (key[j] & hi_mask) == want) atomicAdd(&h[(key[j] >> shift) & 255], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // the digit where the running count reaches `remaining`: lane l sums digits
            // 8l..8l+7, a warp scan finds the lane, the lane its digit
            unsigned int sum = 0;
#pragma unroll
            for (int j = 0; j < 8; ++j) sum += h[8 * lane + j];
            unsigned int incl = sum;
            for (int o = 1; o < 32; o *= 2) {
                const unsigned int x = __shfl_up_sync(0xFFFFFFFFu, incl, o);
                if (lane >= o) incl += x;
            }
            const unsigned int need = (unsigned int) remaining;
            const int first = __ffs(__ballot_sync(0xFFFFFFFFu, incl >= need)) - 1;
            if (lane == first) {
                unsigned int below = incl - sum;
                for (int j = 0; j < 8; ++j) {
                    const unsigned int here = h[8 * lane + j];
                    if (below + here >= need) {
                        prefix |= (unsigned long long) (8 * lane + j) << shift;
                        remaining = (int) (need - below);
                        // once the score bits are settled and every key with them is
                        // needed, the cell bits need no passes of their own
                        if (pass == 4 && here == need - below) {
                            prefix |= 0xFFFFFFFFull;
                            done = 1;
                        }
                        break;
                    }
                    below += here;
                }
            }
        }
        __syncthreads();
    }
    const unsigned long long t = prefix;
    __syncthreads(); // every thread has read it before a next call rewrites it
    return t;
}

// the keys of cand[0..n) at or below `threshold`: each cell marked with the step's tag and
// appended to the unit's rows once per unit (one atomic on the row count per warp a round)
__device__ __forceinline__ void pk_take_chosen(const pk_step_args & a, int u, const unsigned long long * cand, int n,
                                               unsigned long long threshold) {
    pk_unit_state & s = pk_unit(a, u);
    unsigned int * mark = a.mark + (long long) u * a.n;
    int * rows = a.rows + (long long) u * a.n;
    const unsigned int tag = s.tag;
    const int lane = threadIdx.x % 32;
    for (int i0 = 0; i0 < n; i0 += blockDim.x) { // rounds uniform over the block
        const int i = i0 + threadIdx.x;
        const unsigned long long key = i < n ? cand[i] : ~0ull;
        const int c = (int) (key & 0xFFFFFFFFull);
        const bool fresh = i < n && key <= threshold && atomicExch(&mark[c], tag) != tag;
        const unsigned int ballot = __ballot_sync(0xFFFFFFFFu, fresh);
        int slot = 0;
        if (lane == 0 && ballot) slot = atomicAdd(&s.n_rows, __popc(ballot));
        slot = __shfl_sync(0xFFFFFFFFu, slot, 0) + __popc(ballot & ((1u << lane) - 1));
        if (fresh) rows[slot] = c;
    }
}

// whether retrieval steps of this unit refine (gqa::select_group refines every retrieval of
// a zone not taken whole, even when the shortlist is the whole list)
__device__ __forceinline__ bool pk_refining(const pk_step_args & a, int u) {
    return a.refine > 1 && pk_unit(a, u).n_zone > a.dense_zone;
}

// The k best candidates of each retrieval (radix select in one block over its list).
// Without refining they are chosen: marked with the step's tag and appended, once per unit,
// to the unit's rows. When refining they are the shortlist: moved to the front of the list
// in list order (n_refined of them), the rest of the list set to ~0 (never chosen), for
// pk_refine and pk_refine_pick. grid (retrievals, 1, units), PK_TOPK_THREADS threads
extern "C" __global__ void pk_topk(pk_step_args a) {
    __shared__ unsigned int h[256];
    __shared__ unsigned long long prefix;
    __shared__ int remaining;
    __shared__ int done;
    __shared__ int warp_sel[PK_TOPK_THREADS / 32];
    __shared__ int base;
    const int r = blockIdx.x, u = blockIdx.z, ur = u * a.n_ret + r;
    pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_cand, k = x.k;
    if (k <= 0) return;
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    const unsigned long long threshold = pk_threshold(cand, n, k, h, prefix, remaining, done);
    if (!pk_refining(a, u)) {
        pk_take_chosen(a, u, cand, n, threshold);
        return;
    }
    // compaction in place, a tile of PK_TOPK_KEYS * blockDim keys at a time, thread t taking
    // PK_TOPK_KEYS consecutive ones: a key moves to an index at or below its own, and every
    // key of a tile is read before any of the tile is written
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (threadIdx.x == 0) base = 0;
    __syncthreads();
    for (int i0 = 0; i0 < n; i0 += PK_TOPK_KEYS * blockDim.x) {
        const int first = i0 + PK_TOPK_KEYS * threadIdx.x;
        unsigned long long key[PK_TOPK_KEYS];
        int mine = 0;
#pragma unroll
        for (int j = 0; j < PK_TOPK_KEYS; ++j) {
            key[j] = first + j < n ? cand[first + j] : ~0ull;
            mine += first + j < n && key[j] <= threshold;
        }
        int before = mine; // inclusive scan over the warp, then over the warps
        for (int o = 1; o < 32; o *= 2) {
            const int x = __shfl_up_sync(0xFFFFFFFFu, before, o);
            if (lane >= o) before += x;
        }
        if (lane == 31) warp_sel[warp] = before;
        __syncthreads();
        int slot = base + before - mine;
        for (int w = 0; w < warp; ++w) slot += warp_sel[w];
#pragma unroll
        for (int j = 0; j < PK_TOPK_KEYS; ++j) {
            if (first + j < n && key[j] <= threshold) cand[slot++] = key[j];
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 0; w < (int) blockDim.x / 32; ++w) base += warp_sel[w];
        }
        __syncthreads();
    }
    const int kept = base; // min(k, n): keys are unique
    for (int i = kept + threadIdx.x; i < n; i += blockDim.x) cand[i] = ~0ull;
    if (threadIdx.x == 0) x.n_refined = kept;
}

// clears the marks the top-k set, so that the next step, whatever its cell count or unit
// layout, starts from zero marks; grid (chunks, 1, units)
extern "C" __global__ void pk_unmark(pk_step_args a) {
    const int u = blockIdx.z;
    const int n_rows = pk_unit(a, u).n_rows;
    unsigned int * mark = a.mark + (long long) u * a.n;
    const int * rows = a.rows + (long long) u * a.n;
    for (int i = blockIdx.x * PK_CHUNK + threadIdx.x; i < min(n_rows, (blockIdx.x + 1) * PK_CHUNK); i += blockDim.x) {
        mark[rows[i]] = 0;
    }
}
