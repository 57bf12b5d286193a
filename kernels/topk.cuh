// Stage 5 of a step: the top-k (or the shortlist when refining) of each retrieval's
// candidates, the rows each unit attends, and the marks cleared after the step.
#pragma once

#include "step.cuh"

// The k smallest of n unique keys, by one block: a radix select on 12-bit digits from the
// top. A digit's pass counts the keys that match the bits settled so far in a histogram
// of 4096 bins, and the bin where the running count reaches the keys still wanted settles
// the digit. It is settled as a whole (every key of the bin wanted) after one or two
// passes where scores differ; otherwise, once the bin holds at most PK_SELECT_HELD keys,
// the pass that takes the chosen keys also copies the bin's keys into shared memory and
// the remaining digits are settled there, so a list is read twice in the common case
// (count, take) instead of once per digit.
// keys a thread reads per round of the passes over a list
#define PK_TOPK_KEYS 8
#define PK_SELECT_BITS 12
#define PK_SELECT_BINS (1 << PK_SELECT_BITS)
#define PK_SELECT_HELD 2048
static_assert(PK_SELECT_BINS % PK_TOPK_THREADS == 0, "whole bins per thread");

struct pk_select {
    unsigned int h[PK_SELECT_BINS];
    unsigned long long held[PK_SELECT_HELD];  // the boundary bin's keys (held mode)
    unsigned int warp_sum[PK_TOPK_THREADS / 32];
    unsigned long long prefix, known;         // the k-th key's bits settled, and which they are
    int shift;                                // the last digit settled
    int remaining;                            // keys still wanted among those matching prefix
    int here;                                 // keys matching prefix
    int settled;                              // every key matching prefix is wanted
    int n_held;
};

__device__ __forceinline__ int pk_next_shift(int shift) {
    return shift >= PK_SELECT_BITS ? shift - PK_SELECT_BITS : 0;
}

// counts the keys of src[0..m) that match the settled bits, by their digit at `shift`
__device__ void pk_select_count(pk_select & S, const unsigned long long * src, int m, int shift) {
    for (int i = threadIdx.x; i < PK_SELECT_BINS; i += blockDim.x) S.h[i] = 0;
    __syncthreads();
    const unsigned long long known = S.known, prefix = S.prefix;
    // PK_TOPK_KEYS keys a thread per round, their loads in flight together
    for (int i0 = 0; i0 < m; i0 += PK_TOPK_KEYS * blockDim.x) {
        unsigned long long key[PK_TOPK_KEYS];
#pragma unroll
        for (int j = 0; j < PK_TOPK_KEYS; ++j) {
            const int i = i0 + j * blockDim.x + threadIdx.x;
            key[j] = i < m ? src[i] : 0ull;
        }
#pragma unroll
        for (int j = 0; j < PK_TOPK_KEYS; ++j) {
            const int i = i0 + j * blockDim.x + threadIdx.x;
            if (i < m && (key[j] & known) == prefix) atomicAdd(&S.h[(key[j] >> shift) & (PK_SELECT_BINS - 1)], 1u);
        }
    }
    __syncthreads();
}

// settles the digit at `shift` from the histogram `h` (S.h, or a cluster's sum of them):
// thread t sums bins per*t.., a block scan finds the thread whose bins reach the count still
// wanted, the thread its bin
__device__ void pk_select_digit(pk_select & S, const unsigned int * h, int shift) {
    const int per = PK_SELECT_BINS / PK_TOPK_THREADS, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const unsigned int need = (unsigned int) S.remaining;
    unsigned int sum = 0;
    for (int j = 0; j < per; ++j) sum += h[per * threadIdx.x + j];
    unsigned int incl = sum;
    for (int o = 1; o < 32; o *= 2) {
        const unsigned int x = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= o) incl += x;
    }
    if (lane == 31) S.warp_sum[warp] = incl;
    __syncthreads();
    unsigned int below = incl - sum;
    for (int w = 0; w < warp; ++w) below += S.warp_sum[w];
    if (below < need && below + sum >= need) {
        for (int j = 0; j < per; ++j) {
            const unsigned int digit = per * threadIdx.x + j, here = h[digit];
            if (below + here >= need) {
                S.prefix |= (unsigned long long) digit << shift;
                S.known |= (unsigned long long) (PK_SELECT_BINS - 1) << shift;
                S.shift = shift;
                S.remaining = (int) (need - below);
                S.here = (int) here;
                S.settled = here == need - below || S.known == ~0ull;
                break;
            }
            below += here;
        }
    }
    __syncthreads();
}

// a select of the k smallest keys, nothing settled yet
__device__ __forceinline__ void pk_select_begin(pk_select & S, int k) {
    if (threadIdx.x == 0) {
        S.prefix = 0;
        S.known = 0;
        S.remaining = k;
        S.settled = 0;
        S.n_held = 0;
    }
    __syncthreads();
}

// the whole list wanted (k >= n): every key at or below the threshold ~0
__device__ __forceinline__ void pk_select_all(pk_select & S) {
    if (threadIdx.x == 0) {
        S.settled = 1;
        S.prefix = ~0ull;
        S.known = ~0ull;
    }
    __syncthreads();
}

// Settles digits over the n keys at `cand` until the k-th smallest (k < n) is settled or
// its bin fits in shared memory. Then the chosen keys are those at or below
// pk_select_threshold when S.settled, else those below S.prefix and, of the keys matching
// it (held, then pk_select_held), the S.remaining smallest.
__device__ void pk_select_list(pk_select & S, const unsigned long long * cand, int n, int k) {
    pk_select_begin(S, k);
    for (int shift = 64 - PK_SELECT_BITS;; shift = pk_next_shift(shift)) {
        pk_select_count(S, cand, n, shift);
        pk_select_digit(S, S.h, shift);
        if (S.settled || S.here <= PK_SELECT_HELD) return;
    }
}

__device__ __forceinline__ unsigned long long pk_select_threshold(const pk_select & S) {
    return S.prefix | ~S.known;
}

// in held mode, whether a key of the list is chosen outright, and whether it is held
__device__ __forceinline__ bool pk_select_sure(const pk_select & S, unsigned long long key) {
    return S.settled ? key <= pk_select_threshold(S) : key < S.prefix;
}
__device__ __forceinline__ void pk_select_hold(pk_select & S, unsigned long long key) {
    if (!S.settled && (key & S.known) == S.prefix) S.held[atomicAdd(&S.n_held, 1)] = key;
}

// settles the remaining digits over the held keys (every one matches the prefix); after
// it the held keys at or below pk_select_threshold are the wanted ones
__device__ void pk_select_held(pk_select & S) {
    __syncthreads(); // every held key written
    while (!S.settled) {
        const int shift = pk_next_shift(S.shift);
        pk_select_count(S, S.held, S.n_held, shift);
        pk_select_digit(S, S.h, shift);
    }
}

// one round of taking keys, uniform over the block: each chosen cell marked with the step's
// tag and appended to the unit's rows once per unit (one atomic on the row count per warp)
__device__ __forceinline__ void pk_take_round(pk_unit_state & s, unsigned int * mark, int * rows, bool chosen,
                                              unsigned long long key) {
    const int c = (int) (key & 0xFFFFFFFFull);
    pk_append(chosen && atomicExch(&mark[c], s.tag) != s.tag, c, &s.n_rows, rows);
}

// the held keys still wanted settled and taken (after a pass that held the boundary bin)
__device__ void pk_take_held(pk_select & S, pk_unit_state & s, unsigned int * mark, int * rows) {
    pk_select_held(S);
    const unsigned long long t = pk_select_threshold(S);
    for (int i0 = 0; i0 < S.n_held; i0 += blockDim.x) {
        const int i = i0 + threadIdx.x;
        const unsigned long long key = i < S.n_held ? S.held[i] : ~0ull;
        pk_take_round(s, mark, rows, i < S.n_held && key <= t, key);
    }
}

// the k smallest keys of cand[0..n) taken (marked and appended to the unit's rows)
__device__ void pk_take_best(const pk_step_args & a, int u, pk_select & S, const unsigned long long * cand, int n, int k) {
    if (k <= 0) return;
    if (k >= n) {
        pk_select_all(S);
    } else {
        pk_select_list(S, cand, n, k);
    }
    pk_unit_state & s = pk_unit(a, u);
    unsigned int * mark = a.mark + (long long) u * a.n;
    int * rows = a.rows + (long long) u * a.n;
    for (int i0 = 0; i0 < n; i0 += blockDim.x) { // rounds uniform over the block
        const int i = i0 + threadIdx.x;
        const unsigned long long key = i < n ? cand[i] : ~0ull;
        if (i < n) pk_select_hold(S, key);
        pk_take_round(s, mark, rows, i < n && pk_select_sure(S, key), key);
    }
    if (!S.settled) pk_take_held(S, s, mark, rows);
}

// whether retrieval steps of this unit refine (gqa::select_group refines every retrieval of
// a zone not taken whole, even when the shortlist is the whole list)
__device__ __forceinline__ bool pk_refining(const pk_step_args & a, int u) {
    return a.refine > 1 && pk_unit(a, u).n_zone > a.dense_zone;
}

// The k best candidates of each retrieval (a select in one block over its list). Without
// refining they are chosen: marked with the step's tag and appended, once per unit, to the
// unit's rows. When refining they are the shortlist: moved to the front of the list
// (n_refined of them, in no particular order), the rest of the list set to ~0 (never
// chosen), for pk_refine and pk_refine_pick. grid (retrievals, 1, units), PK_TOPK_THREADS
// threads
extern "C" __global__ void pk_topk(pk_step_args a) {
    pk_grid_order();
    __shared__ pk_select S;
    __shared__ int warp_sel[PK_TOPK_THREADS / 32];
    __shared__ int base;
    const int r = blockIdx.x, u = blockIdx.z, ur = u * a.n_ret + r;
    pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_cand, k = x.k;
    if (k <= 0) return;
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    if (!pk_refining(a, u)) {
        pk_take_best(a, u, S, cand, n, k);
        return;
    }
    if (k >= n) { // the whole list is the shortlist
        if (threadIdx.x == 0) x.n_refined = n;
        return;
    }
    pk_select_list(S, cand, n, k);
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
            if (first + j < n) pk_select_hold(S, key[j]);
            mine += first + j < n && pk_select_sure(S, key[j]);
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
            if (first + j < n && pk_select_sure(S, key[j])) cand[slot++] = key[j];
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 0; w < (int) blockDim.x / 32; ++w) base += warp_sel[w];
        }
        __syncthreads();
    }
    if (!S.settled) {
        // the held keys still wanted follow the sure ones (every read of the list is done)
        pk_select_held(S);
        const unsigned long long t = pk_select_threshold(S);
        for (int i = threadIdx.x; i < S.n_held; i += blockDim.x) {
            if (S.held[i] <= t) cand[atomicAdd(&base, 1)] = S.held[i];
        }
        __syncthreads();
    }
    const int kept = base; // k: keys are unique
    for (int i = kept + threadIdx.x; i < n; i += blockDim.x) cand[i] = ~0ull;
    if (threadIdx.x == 0) x.n_refined = kept;
}

// clears the marks the top-k set, so that the next step, whatever its cell count or unit
// layout, starts from zero marks (searches without attention: a step's attention clears
// the marks of its rows itself); grid (chunks, 1, units)
extern "C" __global__ void pk_unmark(pk_step_args a) {
    pk_grid_order();
    const int u = blockIdx.z;
    const int n_rows = pk_unit(a, u).n_rows;
    unsigned int * mark = a.mark + (long long) u * a.n;
    const int * rows = a.rows + (long long) u * a.n;
    for (int i = blockIdx.x * PK_CHUNK + threadIdx.x; i < min(n_rows, (blockIdx.x + 1) * PK_CHUNK); i += blockDim.x) {
        mark[rows[i]] = 0;
    }
}
