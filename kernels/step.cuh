// One decode step's retrieval, for every unit (a KV head of a token: its query group) of a
// layer at once: the CUDA twin of cache_step::attend_cache / gqa::select_group /
// search::select_top_k, stage for stage. Every size that changes per step (visible cells,
// zone, candidates, rows) is read on the device; grids are sized from bounds fixed at
// setup. blockIdx.z is the unit everywhere. This file holds the structs and helpers every
// stage shares; one file per stage, in launch order (src/cuda/step.rs):
//   visibility.cuh  begin, visibility, classify
//   query.cuh       tiers (and the queries rotated, rounded to int8 for estimate.cuh)
//   estimate.cuh    the 4-bit estimate in integers (helpers of rerank.cuh and group.cuh)
//   collisions.cuh  collisions (and the cutoffs and the ties before each chunk)
//   rerank.cuh      select_rerank (per-head and mean policies)
//   group.cuh       the group policy's union, estimate, norm, score (and refine)
//   topk.cuh        topk, and unmark (for searches without attention; a step's attention
//                   clears the marks of the rows it reads)
//   topk_cluster.cuh  topk and refine_pick by thread-block clusters (sm_90 on)
//   refine.cuh      refine, refine_pick (refine >= 2)
//   attention.cuh   the attention over each unit's rows
#pragma once

#include "common.cuh"
#include "row_cache.cuh"

#define PK_NOT_IN_ZONE 0xFFFF
#define PK_TOPK_THREADS PK_TOPK_THREADS_

enum pk_class : unsigned char { PK_HIDDEN = 0, PK_ZONE = 1, PK_FIXED = 2 };

// Per retrieval (one per query head, or one for the group's mean query).
struct pk_retrieval {
    int k;                      // best estimates kept: its share of top-k (or the whole zone
                                // when that is small), times the refine factor
    int m;                      // candidates wanted
    int cutoff;                 // collision count at the candidate cutoff
    int ties_left;              // cells at the cutoff still taken, lowest cells first
    int n_cand;                 // candidates written
    int keep;                   // cells it contributes: its share (k is a longer shortlist when refining)
    int n_refined;              // shortlisted cells rescored exactly (0 without refining)
    int pad;
};
// mirrored field for field by Retrieval and UnitState in src/cuda/step.rs (which asserts the
// same sizes)

// Per unit, followed by its retrievals.
struct pk_unit_state {
    int n_visible, n_zone, n_rows;
    int p_min, p_max;
    unsigned int tag;           // the mark value (1): marks are cleared after every step
    // with a kept histogram: cells of the view counted in it, visible cells not counted, and
    // all cells counted in it (its block 0's total)
    int n_counted, n_uncounted;
    unsigned int kept_total;
};

// Unit u = a * n_h + h: `a` the token (or group of heads), `h` the KV head. Every per-unit
// array of the cache is addressed as base + a*stride_a + h*stride_h (bytes).
struct pk_unit_layout {
    int n_units, n_h;
    long long k_a, k_h, v_a, v_h;
    long long codes_a, codes_h, nib_a, nib_h, w_a, w_h;
    long long mask_a, pos_a;
    long long q_a, q_h, out_a, out_h;
    long long kept_a, kept_h, counted_a, counted_h;
};

struct pk_step_args {
    pk_unit_layout L;
    unsigned char * state;      // [n_units] x (pk_unit_state + n_ret pk_retrieval)
    int n;                      // cells in the cache view
    int nb;                     // blocks per key
    int dp;                     // padded head dim
    int n_ret;                  // retrievals per unit
    int top_k, n_sink, n_local;
    int adaptive;               // ratio table: 1 the reference's, 2 the tuned one; 0 rho_cand / rho_coll
    double rho_cand, rho_coll;
    int max_collisions;
    int dense_zone;             // zones up to this size are attended whole (top_k in a step)
    const char * q;             // query heads of unit 0 (f32 rows q_stride bytes apart)
    long long q_stride;
    int n_heads;                // query heads per unit
    const char * mask; int mask_dtype;
    const char * pos;
    const char * codes;
    const char * nibbles;
    const char * weights;
    const unsigned int * kept;  // the histogram the encodes keep ([nb][256] a unit), or null
    const unsigned char * counted; // its flags, one a cell (1: the cell's codes are in it)
    unsigned char * klass;      // [units][n]
    unsigned int * hist;        // [units][nb][256]: the zone's
    signed char * q_i8;         // [units][n_ret][dp]: the rotated queries in int8 (estimate.cuh)
    float * q_factor;           // [units][n_ret][nb]: their blocks' factors
    unsigned char * levels;     // [units][n_ret][nb][256]
    unsigned short * counts;    // [units][n_ret][n]
    unsigned int * count_hist;  // [units][n_ret][max_collisions + 1]
    unsigned short * chunk_hist; // [units][n_ret][chunks][max_collisions + 1]: each chunk's
                                // share of count_hist
    int * chunk_ties;           // [units][n_ret][chunks + 1]: ties before each chunk
    unsigned long long * cand;  // [units][n_ret][n]: keys of the candidates
    unsigned int * mark;        // [units][n]
    int * rows;                 // [units][n]
    int refine;                 // shortlist factor of the exact rescoring (<= 1: off)
    int d;                      // head dim (unpadded)
    const char * k;             // key row of cell c of unit u at k + off(u) + c*k_stride
    int k_dtype;
    long long k_stride;
    const char * v;             // value rows, as k: the refine's row cache fills copy them
    long long v_stride;
    int v_bytes;                // a value row's bytes
    int group;                  // the group policy: one candidate union per unit (group.cuh)
    float scale, softcap;       // of the attention, for the group's selection logits
    float * logits;             // [units][n_ret][n]: per head, over the unit's union or shortlist
    struct pk_group_stat * gstat; // [units][n_ret][2]: per head, over the union and the shortlist
    unsigned int * done;        // [units][PK_DONE_SLOTS]: blocks finished (pk_last_block)
    pk_row_cache cache;         // the stream's row cache (cache.slots 0: none): the refine takes
                                // its key rows there (row_cache.cuh)
};

// Chunks of PK_CHUNK cells of a cell pass (at least one, as src/cuda/step.rs counts them).
// Passes whose blocks pay a fixed cost (shared tables loaded, histograms flushed) run a grid
// of bounded size: block x takes chunks x, x + gridDim.x, ...
__device__ __forceinline__ int pk_n_chunks(const pk_step_args & a) {
    return a.n > PK_CHUNK ? (a.n + PK_CHUNK - 1) / PK_CHUNK : 1;
}

// Cells a thread takes of a chunk, in a pass of PK_CHUNK_THREADS threads a block.
#define PK_CHUNK_ROUNDS (PK_CHUNK / PK_CHUNK_THREADS)
static_assert(PK_CHUNK_ROUNDS <= 32, "a thread's rounds are bits of a word");

// a unit's PK_DONE_SLOTS counters of finished blocks: one per collision batch
static_assert(PK_DONE_SLOTS >= PK_MAX_GROUP, "a counter per batch");

// appends `value` to list (counter n) for every lane with emit, one atomic per warp: the
// lanes in `lanes` take part (all 32, or __activemask() where a loop's tail diverges)
template <typename T>
__device__ __forceinline__ void pk_append(bool emit, T value, int * n, T * list, unsigned int lanes = 0xFFFFFFFFu) {
    const int lane = threadIdx.x % 32;
    const unsigned int votes = __ballot_sync(lanes, emit);
    if (!votes) return;
    const int leader = __ffs(votes) - 1;
    int slot = 0;
    if (lane == leader) slot = atomicAdd(n, __popc(votes));
    slot = __shfl_sync(lanes, slot, leader);
    if (emit) list[slot + __popc(votes & ((1u << lane) - 1))] = value;
}

// Whether this block is the last of `blocks` to count itself at `*done`, which is 0 between
// steps (the last block resets it, so graph replays work). Each block's writes are made
// visible before it counts itself, so the last block sees all of them (read with __ldcg or
// atomics: not through L1). Every thread of the block calls it.
__device__ __forceinline__ bool pk_last_block(unsigned int * done, unsigned int blocks) {
    __shared__ unsigned int ticket;
    // one thread fences and takes the ticket (as cooperative groups' grid sync does): the
    // barriers order the block's writes before its fence and the last block's reads after
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        ticket = atomicAdd(done, 1u);
        if (ticket == blocks - 1) {
            __threadfence();
            *done = 0;
        }
    }
    __syncthreads();
    return ticket == blocks - 1;
}

// One head's softmax statistics over a list of logits (gqa::rank_by_group_probability):
// the largest finite logit (as pk_ord), the +inf count, and the fixed-point sum of
// exp(logit - max) over the finite ones.
struct pk_group_stat {
    int max_ord;
    int n_inf;
    unsigned long long norm;
};

__device__ __forceinline__ size_t pk_state_stride(const pk_step_args & a) {
    return sizeof(pk_unit_state) + a.n_ret * sizeof(pk_retrieval);
}
__device__ __forceinline__ pk_unit_state & pk_unit(const pk_step_args & a, int u) {
    return *(pk_unit_state *) (a.state + u * pk_state_stride(a));
}
__device__ __forceinline__ pk_retrieval & pk_ret(const pk_step_args & a, int u, int r) {
    return ((pk_retrieval *) (a.state + u * pk_state_stride(a) + sizeof(pk_unit_state)))[r];
}
__device__ __forceinline__ long long pk_off(const pk_step_args & a, int u, long long sa, long long sh) {
    return (long long) (u / a.L.n_h) * sa + (long long) (u % a.L.n_h) * sh;
}
__device__ __forceinline__ const unsigned char * pk_codes_of(const pk_step_args & a, int u) {
    return (const unsigned char *) (a.codes + pk_off(a, u, a.L.codes_a, a.L.codes_h));
}
__device__ __forceinline__ const unsigned int * pk_kept_of(const pk_step_args & a, int u) {
    return (const unsigned int *) ((const char *) a.kept + pk_off(a, u, a.L.kept_a, a.L.kept_h));
}
__device__ __forceinline__ const unsigned char * pk_counted_of(const pk_step_args & a, int u) {
    return a.counted + pk_off(a, u, a.L.counted_a, a.L.counted_h);
}
// Whether the kept histogram gives the zone's exactly (kept::zone_histogram): every counted
// cell lies in the view and every visible cell is counted, so the zone's histogram is the
// kept one less the counted cells outside the zone. Known from pk_visibility on.
__device__ __forceinline__ bool pk_kept_exact(const pk_step_args & a, const pk_unit_state & s) {
    return a.kept && s.n_uncounted == 0 && (unsigned int) s.n_counted == s.kept_total;
}
// unit u's mask row (a.mask_dtype) and cell positions
__device__ __forceinline__ const char * pk_mask_row(const pk_step_args & a, int u) {
    return a.mask + (u / a.L.n_h) * a.L.mask_a;
}
__device__ __forceinline__ const int * pk_pos_row(const pk_step_args & a, int u) {
    return (const int *) (a.pos + (u / a.L.n_h) * a.L.pos_a);
}

// f(c, mask, pos) for every cell c of this block's chunks in a strided cell pass of
// PK_CHUNK_THREADS threads a block, with unit u's mask value and position of the cell: a
// thread's PK_CHUNK_ROUNDS cells of a chunk are loaded first, all in flight together, then
// taken in order (one cell's loads after another's, behind the stores f makes, wait on
// memory PK_CHUNK_ROUNDS times as long)
template <typename F>
__device__ __forceinline__ void pk_for_block_cells(const pk_step_args & a, int u, F f) {
    // the rows once: the compiler did not hoist their division by n_h out of the branches
    // around each cell's loads
    const char * mask_row = pk_mask_row(a, u);
    const int * pos_row = pk_pos_row(a, u);
    for (int chunk = blockIdx.x; chunk < pk_n_chunks(a); chunk += gridDim.x) {
        const int c0 = chunk * PK_CHUNK + threadIdx.x;
        float mask[PK_CHUNK_ROUNDS];
        int pos[PK_CHUNK_ROUNDS];
#pragma unroll
        for (int r = 0; r < PK_CHUNK_ROUNDS; ++r) {
            const int c = c0 + r * PK_CHUNK_THREADS;
            mask[r] = c < a.n ? pk_load(mask_row, a.mask_dtype, c) : -INFINITY;
            pos[r] = c < a.n ? pos_row[c] : 0;
        }
#pragma unroll
        for (int r = 0; r < PK_CHUNK_ROUNDS; ++r) {
            const int c = c0 + r * PK_CHUNK_THREADS;
            if (c < a.n) f(c, mask[r], pos[r]);
        }
    }
}

__device__ __forceinline__ void pk_ratios(const pk_step_args & a, int n_zone, double & cand, double & coll) {
    if (!a.adaptive) {
        cand = a.rho_cand;
        coll = a.rho_coll;
        return;
    }
    // 1: search::Ratios::reference, 2: search::Ratios::tuned
    const pk_ratio_row * table = a.adaptive == 2 ? PK_TUNED_RATIOS : PK_REFERENCE_RATIOS;
    for (int i = 0; i < PK_N_RATIO_ROWS; ++i) {
        const pk_ratio_row & row = table[i];
        if (row.below < 0 || n_zone < row.below) {
            cand = row.cand;
            coll = row.coll;
            return;
        }
    }
}

// ceil(n * ratio * fraction) in double, multiplied left to right (search::ceil_count)
__device__ __forceinline__ long long pk_ceil_count(int n, double ratio, double fraction) {
    return (long long) ceil(__dmul_rn(__dmul_rn((double) n, ratio), fraction));
}

// floats as ints that order alike (for atomicMax), and back
__device__ __forceinline__ int pk_ord(float f) {
    const int i = __float_as_int(f);
    return i >= 0 ? i : i ^ 0x7FFFFFFF;
}
__device__ __forceinline__ float pk_unord(int i) {
    return __int_as_float(i >= 0 ? i : i ^ 0x7FFFFFFF);
}

// the order-preserving key of (score, cell): smaller is better
__device__ __forceinline__ unsigned long long pk_key(float score, int cell) {
    if (isnan(score)) score = -INFINITY;
    if (score == 0.0f) score = 0.0f; // -0 ranks as +0
    unsigned int bits = __float_as_uint(score);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u); // ascending with the score
    return ((unsigned long long) ~bits << 32) | (unsigned int) cell;
}
