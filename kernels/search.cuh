// One decode step's retrieval, for every unit (a KV head of a token: its query group) of a
// layer at once: the CUDA twin of cache_step::attend_cache / gqa::select_group /
// search::select_top_k, stage for stage. Every size that changes per step (visible cells,
// zone, candidates, rows) is read on the device; grids are sized from bounds fixed at
// setup. blockIdx.z is the unit everywhere.
//
// Launches (src/cuda/step.rs): begin, visibility, classify, query_rot, tiers, collisions,
// cutoff, tie_chunks, scan_chunks, select_rerank, topk, and when refining refine and
// refine_pick (the group policy replaces select_rerank .. refine_pick by group.cuh's
// stages); then unmark and attention.cuh.
#pragma once

#include "common.cuh"

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
static_assert(sizeof(pk_retrieval) == 32, "pk_retrieval changed: update src/cuda/step.rs");

// Per unit, followed by its retrievals.
struct pk_unit_state {
    int n_visible, n_zone, n_rows;
    int p_min, p_max;
    unsigned int tag;           // the mark value (1): marks are cleared after every step
};
static_assert(sizeof(pk_unit_state) == 24, "pk_unit_state changed: update src/cuda/step.rs");

// Unit u = a * n_h + h: `a` the token (or group of heads), `h` the KV head. Every per-unit
// array of the cache is addressed as base + a*stride_a + h*stride_h (bytes).
struct pk_unit_layout {
    int n_units, n_h;
    long long k_a, k_h, v_a, v_h;
    long long codes_a, codes_h, nib_a, nib_h, w_a, w_h;
    long long mask_a, pos_a;
    long long q_a, q_h, out_a, out_h;
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
    unsigned char * klass;      // [units][n]
    unsigned int * hist;        // [units][nb][256]
    float * q_rot;              // [units][n_ret][dp]
    unsigned char * levels;     // [units][n_ret][nb][256]
    unsigned short * counts;    // [units][n_ret][n]
    unsigned int * count_hist;  // [units][n_ret][max_collisions + 1]
    int * chunk_ties;           // [units][n_ret][chunks + 1]
    unsigned long long * cand;  // [units][n_ret][n]: keys of the candidates
    unsigned int * mark;        // [units][n]
    int * rows;                 // [units][n]
    int refine;                 // shortlist factor of the exact rescoring (<= 1: off)
    int d;                      // head dim (unpadded)
    const char * k;             // key row of cell c of unit u at k + off(u) + c*k_stride
    int k_dtype;
    long long k_stride;
    int group;                  // the group policy: one candidate union per unit (group.cuh)
    float scale, softcap;       // of the attention, for the group's selection logits
    float * logits;             // [units][n_ret][n]: per head, over the unit's union or shortlist
    struct pk_group_stat * gstat; // [units][n_ret][2]: per head, over the union and the shortlist
};

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
__device__ __forceinline__ float pk_mask_of(const pk_step_args & a, int u, int c) {
    return pk_load(a.mask + (u / a.L.n_h) * a.L.mask_a, a.mask_dtype, c);
}
__device__ __forceinline__ int pk_pos_of(const pk_step_args & a, int u, int c) {
    return ((const int *) (a.pos + (u / a.L.n_h) * a.L.pos_a))[c];
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

// the extremes of the visible cells' positions; grid (chunks, 1, units)
extern "C" __global__ void pk_visibility(pk_step_args a) {
    const int u = blockIdx.z;
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1, count = 0;
    const int c1 = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    for (int c = blockIdx.x * PK_CHUNK + threadIdx.x; c < c1; c += blockDim.x) {
        if (pk_mask_of(a, u, c) > -INFINITY) {
            const int p = pk_pos_of(a, u, c);
            lo = min(lo, p);
            hi = max(hi, p);
            count++;
        }
    }
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
// cluster sizes, and the fixed cells appended to the unit's rows; grid (chunks, 1, units),
// dynamic shared memory nb*256 counters
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
    const int c1 = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    for (int c = blockIdx.x * PK_CHUNK + threadIdx.x; c < c1; c += blockDim.x) {
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
    }
    for (int o = 16; o > 0; o /= 2) zone += __shfl_xor_sync(0xFFFFFFFFu, zone, o);
    if (threadIdx.x % 32 == 0 && zone) atomicAdd(&s.n_zone, zone);
    __syncthreads();
    unsigned int * h = a.hist + (long long) u * total;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        if (pk_hist_smem[i]) atomicAdd(&h[i], pk_hist_smem[i]);
    }
}

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

// higher score first, NaN as -inf, -0 == +0, ties by lower index (rank::rank_order)
__device__ __forceinline__ bool pk_better(float sa, int ia, float sb, int ib) {
    sa = isnan(sa) ? -INFINITY : sa;
    sb = isnan(sb) ? -INFINITY : sb;
    return sa > sb || (sa == sb && ia < ib);
}

// tier level of every centroid; grid (blocks, retrievals, units), PK_N_CENTROIDS threads.
// Thread i takes the i-th best centroid: its level counts the tiers whose budget the zone
// cells of the better centroids (an exclusive prefix sum) have not used up. Levels only fall
// along the order, so this is the serial walk of search::tiers that stops at level 0.
extern "C" __global__ void pk_tiers(pk_step_args a) {
    __shared__ float score[PK_N_CENTROIDS];
    __shared__ unsigned char order[PK_N_CENTROIDS];
    __shared__ long long budget[PK_N_TIERS];
    __shared__ long long warp_total[PK_N_CENTROIDS / 32];
    const int b = blockIdx.x, r = blockIdx.y, u = blockIdx.z, c = threadIdx.x;
    const int lane = c % 32, warp = c / 32;
    const float * q = a.q_rot + ((long long) u * a.n_ret + r) * a.dp + b * PK_BLOCK;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PK_BLOCK; ++j) s = __fadd_rn(s, (c >> j & 1) ? q[j] : -q[j]);
    score[c] = s;
    if (c == 0) {
        const int n_zone = pk_unit(a, u).n_zone;
        double cand, coll;
        pk_ratios(a, n_zone, cand, coll);
        for (int t = 0; t < PK_N_TIERS; ++t) budget[t] = pk_ceil_count(n_zone, coll, PK_TIER_FRACTIONS[t]);
    }
    __syncthreads();
    int rank = 0;
    for (int o = 0; o < PK_N_CENTROIDS; ++o) rank += pk_better(score[o], o, s, c);
    order[rank] = (unsigned char) c;
    __syncthreads();
    const int mine = order[c];
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

// collision counts per cell and their histogram, for `r_batch` retrievals per block (each
// cell's codes loaded once for all of them, into registers); grid (chunks, retrieval
// batches, units). The levels of four retrievals share a word, one byte each, so one
// shared-memory load serves four and the words add bytewise (a level is at most
// PK_N_TIERS: 32 blocks sum to 192, below a byte's 256, before the bytes are unpacked).
// Dynamic shared memory (src/cuda/kernels.rs: collisions_smem): ceil(r_batch / 4) * nb*256
// words, then r_batch * (max_collisions + 1) counters.
#define PK_PACKED_BLOCKS 32
static_assert(PK_PACKED_BLOCKS * PK_N_TIERS < 256, "packed levels overflow a byte");
extern "C" __global__ void pk_collisions(pk_step_args a, int r_batch) {
    extern __shared__ unsigned int pk_lv_words[];
    constexpr int MAX_WORDS = PK_MAX_HEAD_DIM / PK_BLOCK / 4;
    const int u = blockIdx.z, r0 = blockIdx.y * r_batch, nr = min(r_batch, a.n_ret - r0);
    const int n_lv = a.nb * PK_N_CENTROIDS, n_ch = a.max_collisions + 1, n_quads = (nr + 3) / 4;
    const int n_words = a.nb % 4 == 0 ? a.nb / 4 : 0; // 0: byte by byte
    unsigned int * local = pk_lv_words + (r_batch + 3) / 4 * n_lv;
    const unsigned char * lv = a.levels + ((long long) u * a.n_ret + r0) * n_lv;
    for (int i = threadIdx.x; i < n_quads * n_lv; i += blockDim.x) {
        const int q = i / n_lv, e = i % n_lv;
        unsigned int w = 0;
        for (int j = 0; j < 4 && 4 * q + j < nr; ++j) w |= (unsigned int) lv[(4 * q + j) * n_lv + e] << (8 * j);
        pk_lv_words[i] = w;
    }
    for (int i = threadIdx.x; i < nr * n_ch; i += blockDim.x) local[i] = 0;
    __syncthreads();
    const unsigned char * codes = pk_codes_of(a, u);
    const unsigned char * klass = a.klass + (long long) u * a.n;
    const int c1 = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    for (int c = blockIdx.x * PK_CHUNK + threadIdx.x; c < c1; c += blockDim.x) {
        const bool in_zone = klass[c] == PK_ZONE;
        const unsigned char * code = codes + (long long) c * a.nb;
        unsigned int words[MAX_WORDS];
#pragma unroll
        for (int i = 0; i < MAX_WORDS; ++i) words[i] = in_zone && i < n_words ? ((const unsigned int *) code)[i] : 0u;
        for (int q = 0; q < n_quads; ++q) {
            const unsigned int * L = pk_lv_words + q * n_lv;
            int total[4] = {0, 0, 0, 0};
            unsigned int packed = 0;
            auto unpack = [&]() {
#pragma unroll
                for (int j = 0; j < 4; ++j) total[j] += packed >> (8 * j) & 255;
                packed = 0;
            };
            if (in_zone && n_words > 0) {
#pragma unroll
                for (int i = 0; i < MAX_WORDS; ++i) {
                    if (i >= n_words) break;
                    const unsigned int x = words[i];
                    const int b = 4 * i;
                    packed += L[(b + 0) * PK_N_CENTROIDS + (x & 255)] + L[(b + 1) * PK_N_CENTROIDS + (x >> 8 & 255)]
                            + L[(b + 2) * PK_N_CENTROIDS + (x >> 16 & 255)] + L[(b + 3) * PK_N_CENTROIDS + (x >> 24)];
                    if ((b + 4) % PK_PACKED_BLOCKS == 0) unpack();
                }
            } else if (in_zone) {
                for (int b = 0; b < a.nb; ++b) {
                    packed += L[b * PK_N_CENTROIDS + code[b]];
                    if ((b + 1) % PK_PACKED_BLOCKS == 0) unpack();
                }
            }
            unpack();
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int r = 4 * q + j;
                if (r >= nr) break;
                a.counts[((long long) u * a.n_ret + r0 + r) * a.n + c] = in_zone ? (unsigned short) total[j] : PK_NOT_IN_ZONE;
                if (in_zone) atomicAdd(&local[r * n_ch + total[j]], 1u);
            }
        }
    }
    __syncthreads();
    unsigned int * ch = a.count_hist + ((long long) u * a.n_ret + r0) * n_ch;
    for (int i = threadIdx.x; i < nr * n_ch; i += blockDim.x) {
        if (local[i]) atomicAdd(&ch[i], local[i]);
    }
}

// each retrieval's k, candidate count, cutoff and ties left (search::candidates);
// grid (retrievals, 1, units)
extern "C" __global__ void pk_cutoff(pk_step_args a) {
    const int r = blockIdx.x, u = blockIdx.z;
    if (threadIdx.x != 0) return;
    const int n_zone = pk_unit(a, u).n_zone;
    pk_retrieval & x = pk_ret(a, u, r);
    // small zones: everything (cache_step attends every visible cell)
    // per head its share of top-k; the group policy's heads each look for all k
    int k = n_zone <= a.dense_zone ? n_zone : a.group ? a.top_k : a.top_k / a.n_ret + (r < a.top_k % a.n_ret);
    k = min(k, n_zone);
    const int keep = k;
    // a shortlist of refine * k estimates (gqa::select_group); a zone taken whole is not
    if (a.refine > 1 && n_zone > a.dense_zone) k = (int) min((long long) n_zone, (long long) k * a.refine);
    double cand, coll;
    pk_ratios(a, n_zone, cand, coll);
    long long m = pk_ceil_count(n_zone, cand, 1.0);
    m = min((long long) n_zone, max(m, (long long) k));
    const unsigned int * ch = a.count_hist + ((long long) u * a.n_ret + r) * (a.max_collisions + 1);
    long long above = 0;
    int cutoff = 0;
    for (int c = a.max_collisions; c >= 0; --c) {
        if (above + ch[c] >= m) {
            cutoff = c;
            break;
        }
        above += ch[c];
    }
    x.k = k;
    x.keep = keep;
    x.n_refined = 0;
    x.m = (int) m;
    x.cutoff = cutoff;
    x.ties_left = (int) max(0ll, m - above);
}

// cells at the cutoff count per chunk (for their rank among ties); grid (chunks, retrievals, units)
extern "C" __global__ void pk_tie_chunks(pk_step_args a) {
    __shared__ int ties;
    const int r = blockIdx.y, u = blockIdx.z, ur = u * a.n_ret + r;
    if (threadIdx.x == 0) ties = 0;
    __syncthreads();
    const unsigned short * counts = a.counts + (long long) ur * a.n;
    const int cutoff = pk_ret(a, u, r).cutoff;
    const int c1 = min(a.n, (blockIdx.x + 1) * PK_CHUNK);
    int mine = 0;
    for (int c = blockIdx.x * PK_CHUNK + threadIdx.x; c < c1; c += blockDim.x) mine += counts[c] == cutoff;
    for (int o = 16; o > 0; o /= 2) mine += __shfl_xor_sync(0xFFFFFFFFu, mine, o);
    if (threadIdx.x % 32 == 0 && mine) atomicAdd(&ties, mine);
    __syncthreads();
    if (threadIdx.x == 0) a.chunk_ties[(long long) ur * (gridDim.x + 1) + blockIdx.x] = ties;
}

// exclusive prefix of the chunks' tie counts; grid (retrievals, 1, units), one warp
extern "C" __global__ void pk_scan_chunks(pk_step_args a, int n_chunks) {
    int * t = a.chunk_ties + ((long long) blockIdx.z * a.n_ret + blockIdx.x) * (n_chunks + 1);
    const int lane = threadIdx.x;
    int carry = 0;
    for (int i0 = 0; i0 < n_chunks; i0 += 32) {
        const int i = i0 + lane;
        const int v = i < n_chunks ? t[i] : 0;
        int incl = v;
        for (int o = 1; o < 32; o *= 2) {
            const int n = __shfl_up_sync(0xFFFFFFFFu, incl, o);
            if (lane >= o) incl += n;
        }
        if (i < n_chunks) t[i] = carry + incl - v;
        carry += __shfl_sync(0xFFFFFFFFu, incl, 31);
    }
}

// the order-preserving key of (score, cell): smaller is better
__device__ __forceinline__ unsigned long long pk_key(float score, int cell) {
    if (isnan(score)) score = -INFINITY;
    if (score == 0.0f) score = 0.0f; // -0 ranks as +0
    unsigned int bits = __float_as_uint(score);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u); // ascending with the score
    return ((unsigned long long) ~bits << 32) | (unsigned int) cell;
}

// the 4-bit estimate of <q, key> for one cell from the retrieval's table `lut` (dp*16
// floats), summed exactly as encode::estimate
__device__ __forceinline__ float pk_estimate(const float * lut, const unsigned char * nib, const __half * w, int nb) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    // blocks four at a time, so that acc[b % 4] is a register
    for (int b0 = 0; b0 < nb; b0 += 4) {
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) {
            const int b = b0 + bb;
            if (b >= nb) break;
            const float * t = lut + b * PK_BLOCK * 16;
            const unsigned char * by = nib + b * 4;
            float pair[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                pair[i] = __fadd_rn(t[(2 * i) * 16 + (by[i] & 15)], t[(2 * i + 1) * 16 + (by[i] >> 4)]);
            }
            const float dot = __fadd_rn(__fadd_rn(pair[0], pair[1]), __fadd_rn(pair[2], pair[3]));
            acc[bb] = __fadd_rn(acc[bb], __fmul_rn(__half2float(w[b]), dot));
        }
    }
    return __fadd_rn(__fadd_rn(acc[0], acc[1]), __fadd_rn(acc[2], acc[3]));
}

// the estimator table of rotated query q (dp floats) into lut (dp*16 floats), by the block
__device__ __forceinline__ void pk_build_lut(float * lut, const float * q, int dp) {
    for (int i = threadIdx.x; i < dp * 16; i += blockDim.x) {
        const int j = i / 16, code = i % 16;
        const float level = PK_LEVELS[code & 7];
        lut[i] = __fmul_rn((code & 8) ? level : -level, q[j]);
    }
}

// Walks this block's chunk of cells for retrieval r of unit u, PK_CHUNK_THREADS cells a
// round, and calls f(c, chosen) on every thread every round (so that f may use warp
// collectives; c may be past the end, then chosen is false). chosen: c is one of the
// retrieval's candidates (count above the cutoff, or at it among the first ties_left cells).
// warp_ties and base are the caller's shared memory.
template <typename F>
__device__ __forceinline__ void pk_for_candidates(const pk_step_args & a, int u, int r, int * warp_ties, int & base, F f) {
    const int ur = u * a.n_ret + r;
    if (threadIdx.x == 0) base = a.chunk_ties[(long long) ur * (gridDim.x + 1) + blockIdx.x];
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

// appends `value` to list (counter n) for every lane with emit, one atomic per warp
__device__ __forceinline__ void pk_append(bool emit, unsigned long long value, int * n, unsigned long long * list) {
    const int lane = threadIdx.x % 32;
    const unsigned int votes = __ballot_sync(0xFFFFFFFFu, emit);
    int slot = 0;
    if (lane == 0 && votes) slot = atomicAdd(n, __popc(votes));
    slot = __shfl_sync(0xFFFFFFFFu, slot, 0);
    if (emit) list[slot + __popc(votes & ((1u << lane) - 1))] = value;
}

// every retrieval's candidates scored with the 4-bit estimator (pk_estimate) and appended
// (key) to its list; grid (chunks, retrievals, units), PK_CHUNK_THREADS threads, dynamic
// smem dp*16 floats
extern "C" __global__ void pk_select_rerank(pk_step_args a) {
    extern __shared__ float pk_lut[];
    __shared__ int warp_ties[PK_CHUNK_THREADS / 32];
    __shared__ int base;
    const int r = blockIdx.y, u = blockIdx.z, ur = u * a.n_ret + r;
    pk_build_lut(pk_lut, a.q_rot + (long long) ur * a.dp, a.dp);
    pk_retrieval & x = pk_ret(a, u, r);
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    const unsigned char * nibbles = (const unsigned char *) (a.nibbles + pk_off(a, u, a.L.nib_a, a.L.nib_h));
    const __half * weights = (const __half *) (a.weights + pk_off(a, u, a.L.w_a, a.L.w_h));
    pk_for_candidates(a, u, r, warp_ties, base, [&](int c, bool chosen) {
        const bool emit = chosen && x.k > 0;
        unsigned long long key = 0;
        if (emit) {
            key = pk_key(pk_estimate(pk_lut, nibbles + (long long) c * (a.dp / 2), weights + (long long) c * a.nb, a.nb), c);
        }
        pk_append(emit, key, &x.n_cand, cand);
    });
}

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

// <q, key> over the d values (a multiple of 8) of the row at `row` (shared memory), summed
// as attention::dot by 8 lanes of a warp: lane i runs the sum of values j = i mod 8 in
// order, then ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)) + 0 (the empty tail). Every
// lane of the 8 returns the result; all 32 lanes must call it
__device__ __forceinline__ float pk_exact_dot_8(const float * q, const unsigned char * row, int dtype, int d, int i) {
    float acc = 0.0f;
    for (int j = i; j < d; j += 8) acc = __fadd_rn(acc, __fmul_rn(q[j], pk_load(row, dtype, j)));
    const float pair = __fadd_rn(acc, __shfl_down_sync(0xFFFFFFFFu, acc, 4, 8));   // i: a_i + a_(i+4)
    const float half = __fadd_rn(pair, __shfl_down_sync(0xFFFFFFFFu, pair, 1, 8)); // 0: lo, 2: hi
    const float total = __fadd_rn(half, __shfl_down_sync(0xFFFFFFFFu, half, 2, 8)); // 0: lo + hi
    return __fadd_rn(__shfl_sync(0xFFFFFFFFu, total, 0, 8), 0.0f);
}

// Stages the key rows of a warp's four shortlisted cells in shared memory, `pitch` bytes
// apart (16-byte loads where the rows allow): lanes 8t..8t+7 hold row t's cell (-1: none;
// the rows are a prefix of the tile). All 32 lanes call it; it ends with __syncwarp.
__device__ __forceinline__ void pk_stage_key_rows(const pk_step_args & a, int u, int cell, unsigned char * stage, int pitch) {
    const int lane = threadIdx.x % 32;
    const char * keys = a.k + pk_off(a, u, a.L.k_a, a.L.k_h);
    const int esize = a.k_dtype == PK_F32 ? 4 : 2, bytes = a.d * esize;
    const bool wide = ((unsigned long long) keys % 16 == 0) && a.k_stride % 16 == 0 && bytes % 16 == 0;
    for (int row_t = 0; row_t < 4; ++row_t) {
        const int c = __shfl_sync(0xFFFFFFFFu, cell, 8 * row_t);
        if (c < 0) break;
        const char * row = keys + c * a.k_stride;
        unsigned char * dst = stage + row_t * pitch;
        if (wide) {
            for (int o = 16 * lane; o < bytes; o += 16 * 32) *(uint4 *) (dst + o) = *(const uint4 *) (row + o);
        } else if (esize == 4) {
            for (int o = 4 * lane; o < bytes; o += 4 * 32) *(unsigned int *) (dst + o) = *(const unsigned int *) (row + o);
        } else {
            for (int o = 2 * lane; o < bytes; o += 2 * 32) *(unsigned short *) (dst + o) = *(const unsigned short *) (row + o);
        }
    }
    __syncwarp();
}

// The shortlist's exact scores (pk_exact_dot_8) replace its estimates' keys at the front of
// the list. Each warp stages 4 key rows in shared memory (16-byte loads where the rows
// allow), `pitch` bytes apart (src/cuda/kernels.rs: refine_pitch), then lanes 8t..8t+7
// score row t. grid (shortlist tiles of PK_REFINE_WARPS * 4, retrievals, units),
// PK_REFINE_WARPS warps, dynamic shared memory d floats (the query) then the warps' rows
extern "C" __global__ void pk_refine(pk_step_args a, int pitch) {
    extern __shared__ float pk_refine_smem[];
    const int r = blockIdx.y, u = blockIdx.z, ur = u * a.n_ret + r;
    const int n_refined = pk_ret(a, u, r).n_refined;
    const int first = blockIdx.x * PK_REFINE_WARPS * 4;
    if (first >= n_refined) return;
    float * qs = pk_refine_smem;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    unsigned char * stage = (unsigned char *) (qs + a.d) + warp * 4 * pitch;
    // the retrieval's query unrotated, as gqa::select_group takes it from group_query: the
    // mean of the group's heads, or of head r alone
    const char * q0 = a.q + pk_off(a, u, a.L.q_a, a.L.q_h);
    const int h0 = a.n_ret == 1 ? 0 : r, h1 = a.n_ret == 1 ? a.n_heads : r + 1;
    for (int j = threadIdx.x; j < a.d; j += blockDim.x) qs[j] = pk_head_mean(q0, a.q_stride, h0, h1, j);
    __syncthreads();
    unsigned long long * cand = a.cand + (long long) ur * a.n;
    const int i0 = first + warp * 4;
    const int t = lane / 8;
    const int cell = i0 + t < n_refined ? (int) (cand[i0 + t] & 0xFFFFFFFFull) : -1;
    pk_stage_key_rows(a, u, cell, stage, pitch);
    const float score = pk_exact_dot_8(qs, stage + t * pitch, a.k_dtype, a.d, lane % 8);
    if (cell >= 0 && lane % 8 == 0) cand[i0 + t] = pk_key(score, cell);
}

// The keep best exact scores of each shortlist are chosen (marked and appended to the unit's
// rows as pk_topk does); grid (retrievals, 1, units), PK_TOPK_THREADS threads
extern "C" __global__ void pk_refine_pick(pk_step_args a) {
    __shared__ unsigned int h[256];
    __shared__ unsigned long long prefix;
    __shared__ int remaining;
    __shared__ int done;
    const int r = blockIdx.x, u = blockIdx.z, ur = u * a.n_ret + r;
    pk_retrieval & x = pk_ret(a, u, r);
    const int n = x.n_refined;
    if (n <= 0) return;
    const unsigned long long * cand = a.cand + (long long) ur * a.n;
    const unsigned long long threshold = pk_threshold(cand, n, x.keep, h, prefix, remaining, done);
    pk_take_chosen(a, u, cand, n, threshold);
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
