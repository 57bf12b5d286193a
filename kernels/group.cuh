// The group policy's selection (gqa::select_group_rows), for every unit of a layer at once:
// k distinct rows per KV head, ranked by the group-mean softmax probability. The coarse
// stage is collisions.cuh's, one retrieval per head, each looking for the whole shortlist; then
//   pk_group_union       one pass over each chunk of cells for all heads: the cells any head
//                        chose (the union, in retrieval 0's list);
//   pk_group_estimate    each union cell estimated for every head as a logit, its codes read
//                        once per batch of heads; the heads' maxima and +inf counts;
//   pk_group_norm        each head's softmax normaliser, in fixed point (portable.rs); it
//                        replaces each logit by its exp(logit - max), which the score reuses;
//   pk_group_score       each cell's mean probability over the heads, as its key;
// pk_topk keeps the best (or the shortlist when refining); refining runs pk_group_refine
// (exact logits of the shortlist for every head), then norm and score again, and
// pk_refine_pick. exp, tanh and the sums are the portable ones, so the keys are the CPU's to
// the bit and the rows chosen are the same. `stage` 0 is the union, 1 the shortlist.
#pragma once

#include "refine.cuh"

__device__ __forceinline__ pk_group_stat & pk_gstat(const pk_step_args & a, int u, int h, int stage) {
    return a.gstat[((long long) u * a.n_ret + h) * 2 + stage];
}
__device__ __forceinline__ float * pk_logits(const pk_step_args & a, int u, int h) {
    return a.logits + ((long long) u * a.n_ret + h) * a.n;
}
// the length of a stage's list (retrieval 0's)
__device__ __forceinline__ int pk_group_len(const pk_step_args & a, int u, int stage) {
    const pk_retrieval & x = pk_ret(a, u, 0);
    return stage ? x.n_refined : x.n_cand;
}

// Heads' softmax extremes (the largest finite logit, as pk_ord, and the +inf count), kept
// per thread while it goes over its logits, merged over the block in shared memory, then
// added to each head's stat with one atomic per block: one per warp and round put tens of
// thousands of atomics on the same few words.
struct pk_extremes {
    int max_ord;
    int n_inf;
};
__device__ __forceinline__ pk_extremes pk_no_extremes() {
    return pk_extremes{pk_ord(-INFINITY), 0};
}
__device__ __forceinline__ void pk_extremes_take(pk_extremes & e, float logit, bool valid) {
    if (valid && isfinite(logit)) e.max_ord = max(e.max_ord, pk_ord(logit));
    e.n_inf += valid && logit == INFINITY;
}

struct pk_block_extremes {
    pk_extremes head[PK_MAX_GROUP];
};
// every thread calls it; a __syncthreads must follow before the first pk_block_extremes_add
__device__ __forceinline__ void pk_block_extremes_clear(pk_block_extremes & B) {
    for (int j = threadIdx.x; j < PK_MAX_GROUP; j += blockDim.x) B.head[j] = pk_no_extremes();
}
// head j's extremes of each lane into the block's; every lane of the warp calls it
__device__ __forceinline__ void pk_block_extremes_add(pk_block_extremes & B, int j, pk_extremes e) {
    for (int o = 16; o > 0; o /= 2) {
        e.max_ord = max(e.max_ord, __shfl_xor_sync(0xFFFFFFFFu, e.max_ord, o));
        e.n_inf += __shfl_xor_sync(0xFFFFFFFFu, e.n_inf, o);
    }
    if (threadIdx.x % 32 == 0) {
        if (e.max_ord != pk_ord(-INFINITY)) atomicMax(&B.head[j].max_ord, e.max_ord);
        if (e.n_inf) atomicAdd(&B.head[j].n_inf, e.n_inf);
    }
}
// the block's heads 0..nh-1 into the stage's stats of heads h0..; every thread calls it
// (it begins with the __syncthreads that every warp's additions need)
__device__ __forceinline__ void pk_block_extremes_flush(const pk_block_extremes & B, const pk_step_args & a, int u,
                                                        int h0, int nh, int stage) {
    __syncthreads();
    for (int j = threadIdx.x; j < nh; j += blockDim.x) {
        pk_group_stat & st = pk_gstat(a, u, h0 + j, stage);
        if (B.head[j].max_ord != pk_ord(-INFINITY)) atomicMax(&st.max_ord, B.head[j].max_ord);
        if (B.head[j].n_inf) atomicAdd(&st.n_inf, B.head[j].n_inf);
    }
}

// One pass over a chunk of cells for all heads of the unit: each cell is in the union when
// any head chose it (pk_for_candidates' rule, every head's tie rank kept); union cells are
// appended to retrieval 0's list (in no particular order: the list is ranked by key), with
// one atomic on its length per block. grid (chunks, 1, units), PK_CHUNK_THREADS threads.
// One barrier a round: the warps' tie counts and the heads' running tie bases are double
// buffered by the round's parity, so a warp that runs ahead into the next round writes the
// other buffer; each warp sums the earlier warps' ties once a head (a lane a head) and hands
// the sums out by shuffles only where the head has ties in the warp.
extern "C" __global__ void pk_group_union(pk_step_args a) {
    pk_grid_order();
    constexpr int WARPS = PK_CHUNK_THREADS / 32;
    static_assert(PK_MAX_GROUP <= 32, "a lane a head");
    __shared__ int warp_ties[2][PK_MAX_GROUP][WARPS];
    __shared__ int base[2][PK_MAX_GROUP];
    __shared__ int cutoff[PK_MAX_GROUP], ties_left[PK_MAX_GROUP];
    __shared__ int warp_union[WARPS];
    __shared__ int block_slot;
    const int u = blockIdx.z, g = a.n_ret;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int r = threadIdx.x; r < g; r += blockDim.x) {
        const pk_retrieval & x = pk_ret(a, u, r);
        base[0][r] = a.chunk_ties[((long long) u * g + r) * (pk_n_chunks(a) + 1) + blockIdx.x];
        // a head that keeps nothing: no count reaches its cutoff, and none ties
        cutoff[r] = x.k > 0 ? x.cutoff : INT_MAX;
        ties_left[r] = x.ties_left;
    }
    __syncthreads();
    pk_retrieval & x0 = pk_ret(a, u, 0);
    unsigned long long * list = a.cand + (long long) u * g * a.n;
    const int end = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    const unsigned int lanes_before = (1u << lane) - 1;
    unsigned int mine = 0; // bit round: this thread's cell of that round is in the union
    for (int round = 0; round < PK_CHUNK_ROUNDS; ++round) {
        const int buf = round & 1;
        const int c = blockIdx.x * PK_CHUNK + round * PK_CHUNK_THREADS + threadIdx.x;
        unsigned int chosen = 0; // bit r: head r chose c
        unsigned int tie = 0;
        const unsigned short * count_of = a.counts + (long long) u * g * a.n + c; // head 0's count of c
        for (int r = 0; r < g; ++r, count_of += a.n) {
            const int count = c < end ? *count_of : PK_NOT_IN_ZONE;
            const int cut = cutoff[r];
            const bool t = count == cut;
            const unsigned int ballot = __ballot_sync(0xFFFFFFFFu, t);
            if (lane == 0) warp_ties[buf][r][warp] = __popc(ballot);
            tie |= (unsigned int) t << r;
            if (count != PK_NOT_IN_ZONE && count > cut) chosen |= 1u << r;
        }
        __syncthreads();
        // lane r: head r's ties before this warp (the chunk's earlier rounds and chunks in
        // base, the block's earlier warps)
        int before = 0;
        if (lane < g) {
            before = base[buf][lane];
            for (int w = 0; w < warp; ++w) before += warp_ties[buf][lane][w];
        }
        for (int r = 0; r < g; ++r) {
            const unsigned int ballot = __ballot_sync(0xFFFFFFFFu, tie >> r & 1);
            if (ballot == 0) continue; // warp-uniform: no tie of head r here
            const int rank = __shfl_sync(0xFFFFFFFFu, before, r) + __popc(ballot & lanes_before);
            if ((tie >> r & 1) && rank < ties_left[r]) chosen |= 1u << r;
        }
        // the next round's bases, by the last warp (its sums cover every earlier warp)
        if (warp == WARPS - 1 && lane < g) base[buf ^ 1][lane] = before + warp_ties[buf][lane][warp];
        mine |= (unsigned int) (chosen != 0) << round;
    }
    // the block's union cells: a scan over its threads, one atomic for the block
    const int n_mine = __popc(mine);
    int incl = n_mine;
    for (int o = 1; o < 32; o *= 2) {
        const int y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) warp_union[warp] = incl;
    __syncthreads();
    if (threadIdx.x == 0) {
        int total = 0;
        for (int w = 0; w < PK_CHUNK_THREADS / 32; ++w) total += warp_union[w];
        block_slot = total ? atomicAdd(&x0.n_cand, total) : 0;
    }
    __syncthreads();
    int slot = block_slot + incl - n_mine;
    for (int w = 0; w < warp; ++w) slot += warp_union[w];
    for (int round = 0; round < PK_CHUNK_ROUNDS; ++round) {
        if (mine >> round & 1) list[slot++] = (unsigned long long) (blockIdx.x * PK_CHUNK + round * PK_CHUNK_THREADS + threadIdx.x);
    }
}

// Every union cell estimated for every head as a logit (pk_estimate's integers and sums),
// its codes read once per batch of heads and their signed int8 levels expanded once for the
// batch; the heads' maxima and +inf counts. A thread per list entry, the grid striding over
// the list, so that every lane works. grid (blocks, 1, units), PK_CHUNK_THREADS threads,
// dynamic shared memory HB queries in the estimate's form (the heads' int8 coordinates, then
// their factors: group_estimate_smem of the kernel's HB).
// groups of four blocks whose codes and weights a thread loads before using them
#define PK_ESTIMATE_GROUPS 2

// One cell's sums for the HB heads, four blocks at a time (acc[j][b % 4] a register).
// WIDE: the rows allow 16-byte code words and 8-byte weight words per four blocks, and the
// blocks come in whole groups (nb % (4 * PK_ESTIMATE_GROUPS) == 0); then the heads' queries
// and factors are read as 16-byte words too, and no test is left in the loop.
template <int HB, bool WIDE>
__device__ __forceinline__ void pk_group_estimate_cell(const pk_step_args & a, const unsigned char * nib, const __half * w,
                                                       const signed char * qs, const float * fs, float (&acc)[HB][4]) {
    for (int g0 = 0; g0 < a.nb; g0 += 4 * PK_ESTIMATE_GROUPS) {
        uint4 codes4[PK_ESTIMATE_GROUPS];
        uint2 w4[PK_ESTIMATE_GROUPS];
#pragma unroll
        for (int s = 0; s < PK_ESTIMATE_GROUPS; ++s) {
            const int b0 = g0 + 4 * s;
            if (WIDE) {
                codes4[s] = ((const uint4 *) nib)[b0 / 4];
                w4[s] = ((const uint2 *) w)[b0 / 4];
            } else {
                unsigned int word[4] = {0, 0, 0, 0};
                unsigned short half[4] = {0, 0, 0, 0};
                for (int bb = 0; bb < 4 && b0 + bb < a.nb; ++bb) {
                    const unsigned char * x = nib + 4 * (b0 + bb);
                    word[bb] = x[0] | x[1] << 8 | x[2] << 16 | (unsigned int) x[3] << 24;
                    half[bb] = __half_as_ushort(w[b0 + bb]);
                }
                codes4[s] = make_uint4(word[0], word[1], word[2], word[3]);
                w4[s] = make_uint2(half[0] | (unsigned int) half[1] << 16, half[2] | (unsigned int) half[3] << 16);
            }
        }
#pragma unroll
        for (int s = 0; s < PK_ESTIMATE_GROUPS; ++s) {
            const int b0 = g0 + 4 * s;
            if (!WIDE && b0 >= a.nb) break;
            // the four blocks' signed levels (coordinates 0-3 and 4-7) and weights, once for all heads
            int lv_lo[4], lv_hi[4];
            float wb[4];
#pragma unroll
            for (int bb = 0; bb < 4; ++bb) {
                const unsigned int by4 = bb == 0 ? codes4[s].x : bb == 1 ? codes4[s].y : bb == 2 ? codes4[s].z : codes4[s].w;
                const unsigned int wpair = bb < 2 ? w4[s].x : w4[s].y;
                wb[bb] = __half2float(__ushort_as_half((unsigned short) (wpair >> (16 * (bb % 2)))));
                lv_lo[bb] = pk_signed_levels(by4 & 0xFFFFu);
                lv_hi[bb] = pk_signed_levels(by4 >> 16);
            }
#pragma unroll
            for (int j = 0; j < HB; ++j) {
                int2 q[4];
                float f[4];
                if (WIDE) {
                    // blocks b0..b0+3 of head j: 32 bytes of coordinates, 16 of factors
                    const int4 q01 = *(const int4 *) (qs + j * a.dp + b0 * PK_BLOCK);
                    const int4 q23 = *(const int4 *) (qs + j * a.dp + (b0 + 2) * PK_BLOCK);
                    const float4 f4 = *(const float4 *) (fs + j * a.nb + b0);
                    q[0] = make_int2(q01.x, q01.y), q[1] = make_int2(q01.z, q01.w);
                    q[2] = make_int2(q23.x, q23.y), q[3] = make_int2(q23.z, q23.w);
                    f[0] = f4.x, f[1] = f4.y, f[2] = f4.z, f[3] = f4.w;
                }
#pragma unroll
                for (int bb = 0; bb < 4; ++bb) {
                    const int b = b0 + bb;
                    if (!WIDE) {
                        if (b >= a.nb) break;
                        q[bb] = *(const int2 *) (qs + j * a.dp + b * PK_BLOCK);
                        f[bb] = fs[j * a.nb + b];
                    }
                    const int dot = pk_block_dot(lv_lo[bb], lv_hi[bb], q[bb]);
                    acc[j][bb] = __fadd_rn(acc[j][bb], pk_block_term(wb[bb], f[bb], dot));
                }
            }
        }
    }
}

// HB: the heads a thread holds sums and extremes for (the registers it needs); hb <= HB
template <int HB>
__device__ __forceinline__ void pk_group_estimate_rows(const pk_step_args & a, int hb) {
    extern __shared__ __align__(16) signed char pk_group_q[];
    const int u = blockIdx.z, g = a.n_ret, lane = threadIdx.x % 32;
    const int n_list = pk_ret(a, u, 0).n_cand;
    if ((int) (blockIdx.x * blockDim.x) >= n_list) return;
    const unsigned long long * list = a.cand + (long long) u * g * a.n;
    const unsigned char * nibbles = (const unsigned char *) (a.nibbles + pk_off(a, u, a.L.nib_a, a.L.nib_h));
    const __half * weights = (const __half *) (a.weights + pk_off(a, u, a.L.w_a, a.L.w_h));
    const bool wide = (unsigned long long) nibbles % 16 == 0 && (a.dp / 2) % 16 == 0 &&
                      (unsigned long long) weights % 8 == 0 && a.nb % (4 * PK_ESTIMATE_GROUPS) == 0;
    __shared__ pk_block_extremes B;
    signed char * qs = pk_group_q;
    float * fs = (float *) (qs + HB * a.dp);
    for (int h0 = 0; h0 < g; h0 += hb) {
        const int nh = min(hb, g - h0);
        __syncthreads(); // the previous batch's queries and extremes are no longer read
        // padded with zero heads up to HB: the hot loop then runs over HB heads with no
        // test and no branch between them (a zero head's terms are zero and its logits are
        // never kept), so the compiler interleaves the heads' shared loads and products
        pk_load_queries_i8(a, (long long) u * g + h0, nh, HB, qs, fs);
        pk_block_extremes_clear(B);
        __syncthreads();
        pk_extremes ext[HB];
#pragma unroll
        for (int j = 0; j < HB; ++j) ext[j] = pk_no_extremes();
        for (int i0 = blockIdx.x * blockDim.x + threadIdx.x - lane; i0 < n_list; i0 += gridDim.x * blockDim.x) {
            const int i = i0 + lane;
            const bool valid = i < n_list;
            float acc[HB][4];
#pragma unroll
            for (int j = 0; j < HB; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
            if (valid) {
                const long long c = (long long) (list[i] & 0xFFFFFFFFull);
                const unsigned char * nib = nibbles + c * (a.dp / 2);
                const __half * w = weights + c * a.nb;
                if (wide) {
                    pk_group_estimate_cell<HB, true>(a, nib, w, qs, fs, acc);
                } else {
                    pk_group_estimate_cell<HB, false>(a, nib, w, qs, fs, acc);
                }
            }
#pragma unroll
            for (int j = 0; j < HB; ++j) {
                if (j >= nh) break;
                float logit = -INFINITY;
                if (valid) {
                    const float est = __fadd_rn(__fadd_rn(acc[j][0], acc[j][1]), __fadd_rn(acc[j][2], acc[j][3]));
                    logit = pk_selection_logit(est, a.scale, a.softcap);
                    pk_logits(a, u, h0 + j)[i] = logit;
                }
                pk_extremes_take(ext[j], logit, valid);
            }
        }
#pragma unroll
        for (int j = 0; j < HB; ++j) {
            if (j < nh) pk_block_extremes_add(B, j, ext[j]);
        }
        pk_block_extremes_flush(B, a, u, h0, nh, 0);
    }
}

// pk_group_estimate_rows by capacity (src/cuda/kernels.rs: GROUP_ESTIMATE): 1, 2 and 4 heads
// with four blocks an SM (64 registers, with two groups of blocks loaded at once; the few
// values the 4-head one spills are reloaded once a batch, outside the loop over cells), and
// PK_GROUP_HEAD_BATCH
#define PK_GROUP_ESTIMATE_SMALL(HB)                                   \
    extern "C" __global__ void __launch_bounds__(PK_CHUNK_THREADS, 4) \
    pk_group_estimate_##HB(pk_step_args a, int hb) {                  \
        pk_grid_order();                                              \
        pk_group_estimate_rows<HB>(a, hb);                            \
    }
PK_GROUP_ESTIMATE_SMALL(1)
PK_GROUP_ESTIMATE_SMALL(2)
PK_GROUP_ESTIMATE_SMALL(4)
static_assert(PK_GROUP_HEAD_BATCH == 8, "pk_group_estimate_8");
extern "C" __global__ void pk_group_estimate_8(pk_step_args a, int hb) {
    pk_grid_order();
    pk_group_estimate_rows<PK_GROUP_HEAD_BATCH>(a, hb);
}

// Both over a stage's list, the blocks striding over it (a thread per entry):
// grid (blocks, heads, units), PK_CHUNK_THREADS threads
extern "C" __global__ void pk_group_norm(pk_step_args a, int stage) {
    pk_grid_order();
    const int h = blockIdx.y, u = blockIdx.z, n_list = pk_group_len(a, u, stage);
    if ((int) (blockIdx.x * blockDim.x) >= n_list) return;
    pk_group_stat & st = pk_gstat(a, u, h, stage);
    const float mx = pk_unord(st.max_ord);
    float * logits = pk_logits(a, u, h);
    unsigned long long sum = 0; // fixed point: the same total in any order
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_list; i += gridDim.x * blockDim.x) {
        const float l = logits[i];
        // what pk_group_score needs of the logit: its exp for a finite one, +inf kept, 0 else
        float e = l == INFINITY ? INFINITY : 0.0f;
        if (isfinite(l)) {
            e = pk_exp_nonpositive(__fsub_rn(l, mx));
            sum += pk_to_fixed(e);
        }
        logits[i] = e;
    }
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    if (threadIdx.x % 32 == 0 && sum) atomicAdd(&st.norm, sum);
}

// grid (blocks, 1, units), PK_CHUNK_THREADS threads; each head's statistics converted once
// per block. The list holds pk_group_norm's exps: a head's probability of a finite logit
// is its exp over the normaliser (at least 1 where any logit is finite: the largest has exp
// 1), of +inf (in a head with any) 1 over their count, of anything else 0. A cell's heads
// are loaded PK_SCORE_LOADS at a time, their loads in flight together, and divided without
// a branch (the dividend is 0 where the probability is).
#define PK_SCORE_LOADS 8
extern "C" __global__ void pk_group_score(pk_step_args a, int stage) {
    pk_grid_order();
    __shared__ float head_den[PK_MAX_GROUP];
    __shared__ int head_inf[PK_MAX_GROUP];
    const int u = blockIdx.z, n_list = pk_group_len(a, u, stage);
    if ((int) (blockIdx.x * blockDim.x) >= n_list) return;
    for (int h = threadIdx.x; h < a.n_ret; h += blockDim.x) {
        const pk_group_stat & st = pk_gstat(a, u, h, stage);
        head_den[h] = st.n_inf ? (float) st.n_inf : pk_from_fixed(st.norm);
        head_inf[h] = st.n_inf;
    }
    __syncthreads();
    unsigned long long * list = a.cand + (long long) u * a.n_ret * a.n;
    const float g = (float) a.n_ret;
    const float * logits = pk_logits(a, u, 0);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_list; i += gridDim.x * blockDim.x) {
        float score = 0.0f;
        for (int h0 = 0; h0 < a.n_ret; h0 += PK_SCORE_LOADS) {
            float e[PK_SCORE_LOADS];
#pragma unroll
            for (int j = 0; j < PK_SCORE_LOADS; ++j) e[j] = h0 + j < a.n_ret ? logits[(long long) (h0 + j) * a.n + i] : 0.0f;
#pragma unroll
            for (int j = 0; j < PK_SCORE_LOADS; ++j) {
                const int h = h0 + j;
                if (h >= a.n_ret) break;
                const float x = head_inf[h] ? (e[j] == INFINITY ? 1.0f : 0.0f) : e[j];
                const float prob = __fdiv_rn(x, head_den[h]);
                score = __fadd_rn(score, __fdiv_rn(x > 0.0f ? prob : 0.0f, g));
            }
        }
        list[i] = pk_key(score, (int) (list[i] & 0xFFFFFFFFull));
    }
}

// heads whose exact dots pk_group_refine sums together (each staged element read once for them)
#define PK_REFINE_HEADS 4

// The shortlist's exact logits for every head (pk_exact_dots_8, PK_REFINE_HEADS heads an
// element read; each key row staged once for the group, as pk_refine stages it); grid (shortlist tiles of PK_REFINE_WARPS * 4, 1,
// units), PK_REFINE_WARPS warps, dynamic shared memory n_ret * d floats (the heads' queries)
// then the warps' rows
template <bool CACHED>
__device__ __forceinline__ void pk_group_refine_rows(const pk_step_args & a, int pitch) {
    extern __shared__ float pk_refine_smem[];
    __shared__ pk_block_extremes B;
    const int u = blockIdx.z, n_refined = pk_group_len(a, u, 1);
    const int first = blockIdx.x * PK_REFINE_WARPS * 4;
    if (first >= n_refined) return;
    pk_block_extremes_clear(B);
    float * qs = pk_refine_smem;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    unsigned char * stage = (unsigned char *) (qs + a.n_ret * a.d) + warp * 4 * pitch;
    const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
    for (int h = 0; h < a.n_ret; ++h) { // by head and coordinate: no run-time division
        const float * qh = (const float *) (q0 + h * a.q_stride);
        for (int j = threadIdx.x; j < a.d; j += blockDim.x) qs[h * a.d + j] = qh[j];
    }
    __syncthreads();
    const unsigned long long * list = a.cand + (long long) u * a.n_ret * a.n;
    const int i0 = first + warp * 4, t = lane / 8;
    const bool valid = i0 + t < n_refined;
    const int cell = valid ? (int) (list[i0 + t] & 0xFFFFFFFFull) : -1;
    pk_stage_key_rows<CACHED>(a, u, cell, true, stage, pitch);
    for (int h0 = 0; h0 < a.n_ret; h0 += PK_REFINE_HEADS) {
        const int nh = min(PK_REFINE_HEADS, a.n_ret - h0);
        float dot[PK_REFINE_HEADS];
        pk_exact_dots_8<PK_REFINE_HEADS>(qs + h0 * a.d, nh, stage + t * pitch, a.k_dtype, a.d, lane % 8, dot);
#pragma unroll
        for (int j = 0; j < PK_REFINE_HEADS; ++j) {
            if (j >= nh) break;
            const float logit = pk_selection_logit(dot[j], a.scale, a.softcap);
            if (valid && lane % 8 == 0) pk_logits(a, u, h0 + j)[i0 + t] = logit;
            // each row's 8 lanes hold its logit: count the row once
            pk_extremes e = pk_no_extremes();
            pk_extremes_take(e, logit, valid && lane % 8 == 0);
            pk_block_extremes_add(B, h0 + j, e);
        }
    }
    pk_block_extremes_flush(B, a, u, 0, a.n_ret, 1);
}
extern "C" __global__ void pk_group_refine(pk_step_args a, int pitch) {
    pk_grid_order();
    pk_group_refine_rows<false>(a, pitch);
}
// through the stream's row cache (a.cache)
extern "C" __global__ void pk_group_refine_cached(pk_step_args a, int pitch) {
    pk_grid_order();
    pk_group_refine_rows<true>(a, pitch);
}
