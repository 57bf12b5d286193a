// Stage 5 on GPUs with thread-block clusters (sm_90 on): pk_topk and pk_refine_pick with
// each list selected by a cluster of PK_TOPK_CLUSTER blocks instead of one. Block b of a
// cluster counts and takes the b-th slice of the list; after each count pass the blocks'
// digit histograms are summed through distributed shared memory, so every block settles the
// same digits (pk_select_digit over the sum) and the list is read at the bandwidth of
// eight SMs. The keys chosen are pk_topk's: the k smallest. Keys of the boundary bin are
// held by block 0, which settles them alone as pk_select_held does. Compiled for sm_90 on;
// src/cuda/step.rs launches these only where the device has clusters.
#pragma once

#include "refine.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#include <cooperative_groups.h>
#define PK_CLUSTERS 1
#endif

// a cluster block's dynamic shared memory
struct pk_cluster_select {
    pk_select S;                               // its slice's counts; block 0's held keys
    unsigned int total[PK_SELECT_BINS];        // the cluster's counts (the sum of every S.h)
    unsigned long long stash[PK_TOPK_STASH];   // its sure shortlist keys, until every read is done
    int n_stash;
};
static_assert(sizeof(pk_cluster_select) <= PK_TOPK_CLUSTER_SMEM, "the shared memory src/cuda asks for");
static_assert(PK_SELECT_BINS % PK_TOPK_CLUSTER == 0, "an equal share of the bins per cluster block");

#ifdef PK_CLUSTERS
namespace pk_cg = cooperative_groups;

// the slice [lo, hi) of n keys that block `rank` of the cluster takes
__device__ __forceinline__ void pk_cluster_slice(int n, int rank, int & lo, int & hi) {
    lo = (int) ((long long) n * rank / PK_TOPK_CLUSTER);
    hi = (int) ((long long) n * (rank + 1) / PK_TOPK_CLUSTER);
}

// pk_select_list over the cluster: each block counts its slice, the sums settle the digits
__device__ void pk_cluster_select_list(pk_cluster_select & C, const unsigned long long * cand, int n, int k) {
    pk_cg::cluster_group cluster = pk_cg::this_cluster();
    pk_select & S = C.S;
    int lo, hi;
    pk_cluster_slice(n, (int) cluster.block_rank(), lo, hi);
    pk_select_begin(S, k);
    for (int shift = 64 - PK_SELECT_BITS;; shift = pk_next_shift(shift)) {
        pk_select_count(S, cand + lo, hi - lo, shift);
        cluster.sync(); // every slice counted
        // each block sums its share of the bins over the cluster and writes the sums into every
        // block's total: remote reads wait on their latency, remote writes do not
        const int share = PK_SELECT_BINS / PK_TOPK_CLUSTER, first = (int) cluster.block_rank() * share;
        for (int i = first + threadIdx.x; i < first + share; i += blockDim.x) {
            unsigned int sum = 0;
            for (int b = 0; b < PK_TOPK_CLUSTER; ++b) sum += cluster.map_shared_rank(S.h, b)[i];
            for (int b = 0; b < PK_TOPK_CLUSTER; ++b) cluster.map_shared_rank(C.total, b)[i] = sum;
        }
        cluster.sync(); // every block's total complete, every count read before any is cleared
        pk_select_digit(S, C.total, shift);
        if (S.settled || S.here <= PK_SELECT_HELD) return;
    }
}

// a key of the boundary bin into block 0's held keys (the cluster's `here` <= PK_SELECT_HELD)
__device__ __forceinline__ void pk_cluster_hold(pk_cluster_select & C, unsigned long long key) {
    const pk_select & S = C.S;
    if (S.settled || (key & S.known) != S.prefix) return;
    pk_select * S0 = pk_cg::this_cluster().map_shared_rank(&C.S, 0);
    S0->held[atomicAdd(&S0->n_held, 1)] = key;
}

// pk_take_best by the cluster: every block takes the sure keys of its slice, block 0 then
// settles and takes the held ones
__device__ void pk_cluster_take_best(const pk_step_args & a, int u, pk_cluster_select & C,
                                     const unsigned long long * cand, int n, int k) {
    if (k <= 0) return;
    pk_cg::cluster_group cluster = pk_cg::this_cluster();
    pk_select & S = C.S;
    if (k >= n) {
        pk_select_all(S);
    } else {
        pk_cluster_select_list(C, cand, n, k);
    }
    int lo, hi;
    pk_cluster_slice(n, (int) cluster.block_rank(), lo, hi);
    pk_unit_state & s = pk_unit(a, u);
    unsigned int * mark = a.mark + (long long) u * a.n;
    int * rows = a.rows + (long long) u * a.n;
    for (int i0 = lo; i0 < hi; i0 += blockDim.x) { // rounds uniform over the block
        const int i = i0 + threadIdx.x;
        const unsigned long long key = i < hi ? cand[i] : ~0ull;
        if (i < hi) pk_cluster_hold(C, key);
        pk_take_round(s, mark, rows, i < hi && pk_select_sure(S, key), key);
    }
    cluster.sync(); // the held keys are all in block 0; no block touches another's after
    if (cluster.block_rank() == 0 && !S.settled) pk_take_held(S, s, mark, rows);
}

// The shortlist of k keys (k < n) to the front of the list by the cluster, in no particular
// order, the rest set to ~0 (pk_topk's refining branch). The front may hold keys of other
// blocks' slices not yet read, so each block stashes its sure keys in shared memory (at most
// k <= PK_TOPK_STASH, which the caller ensures) and writes them only after every block has
// read its slice.
__device__ void pk_cluster_shortlist(pk_retrieval & x, pk_cluster_select & C, unsigned long long * cand, int n, int k) {
    pk_cg::cluster_group cluster = pk_cg::this_cluster();
    const int rank = (int) cluster.block_rank();
    pk_select & S = C.S;
    if (threadIdx.x == 0) C.n_stash = 0;
    pk_cluster_select_list(C, cand, n, k); // its syncs order the reset before any stash
    int lo, hi;
    pk_cluster_slice(n, rank, lo, hi);
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const unsigned long long key = cand[i];
        pk_cluster_hold(C, key);
        if (pk_select_sure(S, key)) {
            const int slot = atomicAdd(&C.n_stash, 1);
            if (slot < PK_TOPK_STASH) C.stash[slot] = key;
        }
    }
    cluster.sync(); // every read of the list done; every stash and held key in place
    int base = 0, sure = 0;
    for (int b = 0; b < PK_TOPK_CLUSTER; ++b) {
        const int m = *cluster.map_shared_rank(&C.n_stash, b);
        base += b < rank ? m : 0;
        sure += m;
    }
    cluster.sync(); // no block reads another's count after this
    for (int i = threadIdx.x; i < min(C.n_stash, PK_TOPK_STASH); i += blockDim.x) cand[base + i] = C.stash[i];
    for (int i = k + rank * blockDim.x + threadIdx.x; i < n; i += PK_TOPK_CLUSTER * blockDim.x) cand[i] = ~0ull;
    if (rank != 0) return;
    if (!S.settled) {
        __shared__ int next;
        pk_select_held(S);
        if (threadIdx.x == 0) next = sure;
        __syncthreads();
        const unsigned long long t = pk_select_threshold(S);
        for (int i = threadIdx.x; i < S.n_held; i += blockDim.x) {
            if (S.held[i] <= t) cand[atomicAdd(&next, 1)] = S.held[i];
        }
    }
    if (threadIdx.x == 0) x.n_refined = k; // keys are unique: exactly k are chosen
}
#endif

// pk_topk by clusters: grid (retrievals * PK_TOPK_CLUSTER, 1, units), PK_TOPK_THREADS
// threads, dynamic shared memory sizeof(pk_cluster_select)
extern "C" __global__ void
#ifdef PK_CLUSTERS
__cluster_dims__(PK_TOPK_CLUSTER, 1, 1)
#endif
pk_topk_cluster(pk_step_args a) {
    pk_grid_order();
#ifdef PK_CLUSTERS
    extern __shared__ __align__(16) unsigned char pk_cluster_smem[];
    pk_cluster_select & C = *(pk_cluster_select *) pk_cluster_smem;
    const int r = blockIdx.x / PK_TOPK_CLUSTER, u = blockIdx.z, ur = u * a.n_ret + r;
    pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_cand, k = x.k;
    if (k <= 0) return;
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    if (!pk_refining(a, u)) {
        pk_cluster_take_best(a, u, C, cand, n, k);
    } else if (k >= n) { // the whole list is the shortlist
        if (blockIdx.x % PK_TOPK_CLUSTER == 0 && threadIdx.x == 0) x.n_refined = n;
    } else {
        pk_cluster_shortlist(x, C, cand, n, k);
    }
#endif
}

// pk_refine_pick by clusters: grid (retrievals * PK_TOPK_CLUSTER, 1, units), as pk_topk_cluster
extern "C" __global__ void
#ifdef PK_CLUSTERS
__cluster_dims__(PK_TOPK_CLUSTER, 1, 1)
#endif
pk_refine_pick_cluster(pk_step_args a) {
    pk_grid_order();
#ifdef PK_CLUSTERS
    extern __shared__ __align__(16) unsigned char pk_cluster_smem[];
    pk_cluster_select & C = *(pk_cluster_select *) pk_cluster_smem;
    const int r = blockIdx.x / PK_TOPK_CLUSTER, u = blockIdx.z, ur = u * a.n_ret + r;
    const pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_refined;
    if (n <= 0) return;
    pk_cluster_take_best(a, u, C, a.cand + (long long) ur * a.n, n, x.keep);
#endif
}
