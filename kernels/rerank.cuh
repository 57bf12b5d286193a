// Stage 4 of a step (per-head and mean policies): the candidates scored with the 4-bit
// estimator (group.cuh is the group policy's).
#pragma once

#include "query.cuh"

// Walks this block's chunk of cells for retrieval r of unit u, PK_CHUNK_THREADS cells a
// round, and calls f(c, chosen) on every thread every round (so that f may use warp
// collectives; c may be past the end, then chosen is false). chosen: c is one of the
// retrieval's candidates (count above the cutoff, or at it among the first ties_left cells).
// warp_ties and base are the caller's shared memory.
template <typename F>
__device__ __forceinline__ void pk_for_candidates(const pk_step_args & a, int u, int r, int * warp_ties, int & base, F f) {
    const int ur = u * a.n_ret + r;
    if (threadIdx.x == 0) base = a.chunk_ties[(long long) ur * (pk_n_chunks(a) + 1) + blockIdx.x];
    __syncthreads();
    const pk_retrieval & x = pk_ret(a, u, r);
    const unsigned short * counts = a.counts + (long long) ur * a.n;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int end = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    for (int c0 = blockIdx.x * PK_CHUNK; c0 < end; c0 += PK_CHUNK_THREADS) {
        const int c = c0 + threadIdx.x;
        const int count = c < end ? counts[c] : PK_NOT_IN_ZONE;
        const bool tie = count == x.cutoff;
        // rank among the ties before this cell: block-wide exclusive scan of `tie`
        const unsigned int ballot = __ballot_sync(0xFFFFFFFFu, tie);
        if (lane == 0) warp_ties[warp] = __popc(ballot);
        __syncthreads();
        int rank = base + __popc(ballot & ((1u << lane) - 1));
        for (int w = 0; w < warp; ++w) rank += warp_ties[w];
        __syncthreads();
        if (threadIdx.x == 0) {
            int t = 0;
            for (int w = 0; w < PK_CHUNK_THREADS / 32; ++w) t += warp_ties[w];
            base += t;
        }
        f(c, count != PK_NOT_IN_ZONE && (count > x.cutoff || (tie && rank < x.ties_left)));
        __syncthreads();
    }
}

// every retrieval's candidates scored with the 4-bit estimator (pk_estimate) and appended
// (key) to its list; grid (chunks, retrievals, units), PK_CHUNK_THREADS threads, dynamic
// smem dp bytes then nb floats (pk_load_queries_i8; dp is a multiple of 8)
extern "C" __global__ void pk_select_rerank(pk_step_args a) {
    pk_grid_order();
    extern __shared__ int2 pk_rerank_query[];
    __shared__ int warp_ties[PK_CHUNK_THREADS / 32];
    __shared__ int base;
    const int r = blockIdx.y, u = blockIdx.z, ur = u * a.n_ret + r;
    signed char * qi = (signed char *) pk_rerank_query;
    float * factor = (float *) (qi + a.dp);
    pk_load_queries_i8(a, ur, 1, 1, qi, factor);
    pk_retrieval & x = pk_ret(a, u, r);
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    const unsigned char * nibbles = (const unsigned char *) (a.nibbles + pk_off(a, u, a.L.nib_a, a.L.nib_h));
    const __half * weights = (const __half *) (a.weights + pk_off(a, u, a.L.w_a, a.L.w_h));
    pk_for_candidates(a, u, r, warp_ties, base, [&](int c, bool chosen) {
        const bool emit = chosen && x.k > 0;
        unsigned long long key = 0;
        if (emit) {
            key = pk_key(pk_estimate(qi, factor, nibbles + (long long) c * (a.dp / 2), weights + (long long) c * a.nb, a.nb), c);
        }
        pk_append(emit, key, &x.n_cand, cand);
    });
}
