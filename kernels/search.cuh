// One decode step's retrieval over an index, for one KV head and the query heads sharing it:
// the CUDA twin of cache_step::attend_cache / gqa::select_group / search::select_top_k,
// stage for stage. Every size that changes per step (visible cells, zone, candidates, rows)
// is read on the device; grids are sized from the cell count fixed at setup.
//
// Order of launches (src/cuda/step.rs): begin, visibility, classify, zero(hist), histogram,
// query_rot, tiers, zero(count_hist), collisions, cutoff, tie_chunks, scan_chunks,
// select_rerank, 8 x {zero(radix), radix_hist, radix_pick}, mark, rows.
#pragma once

#include "common.cuh"

#define PK_NOT_IN_ZONE 0xFFFF
#define PK_NO_KEY 0xFFFFFFFFFFFFFFFFull

enum pk_class : unsigned char { PK_HIDDEN = 0, PK_ZONE = 1, PK_FIXED = 2 };

// Per retrieval (one per query head, or one for the group's mean query).
struct pk_retrieval {
    int k;                      // its share of top-k, or the whole zone when that is small
    int m;                      // candidates
    int cutoff;                 // collision count at the candidate cutoff
    int ties_left;              // cells at the cutoff still taken, lowest cells first
    unsigned long long prefix;  // radix select: the bits of the k-th key found so far
    int remaining;              // radix select: keys still to place below the prefix
};

struct pk_step_state {
    int n_visible, n_zone, n_rows;
    int p_min, p_max;
    unsigned int tag;           // this step's mark value (cells chosen in this step)
    pk_retrieval r[1];          // [n_retrievals]
};

struct pk_step_args {
    pk_step_state * state;
    int n;                      // cells in the cache view
    int nb;                     // blocks per key
    int dp;                     // padded head dim
    int n_ret;                  // retrievals
    int top_k, n_sink, n_local;
    int adaptive;               // the reference ratio table, else rho_cand / rho_coll
    double rho_cand, rho_coll;
    int max_collisions;
    const void * mask; int mask_dtype;
    const int * pos;
    const unsigned char * codes;
    const unsigned char * nibbles;
    const __half * weights;
    unsigned char * klass;      // [n]
    unsigned int * hist;        // [nb][256]
    const float * q_rot;        // [n_ret][dp]
    unsigned char * levels;     // [n_ret][nb][256]
    unsigned short * counts;    // [n_ret][n]
    unsigned int * count_hist;  // [n_ret][max_collisions + 1]
    int * chunk_ties;           // [n_ret][chunks + 1]
    unsigned long long * keys;  // [n_ret][n]
    unsigned int * radix;       // [n_ret][256]
    unsigned int * mark;        // [n]
    int * rows;                 // [n]
};

__device__ __forceinline__ pk_retrieval & pk_ret(const pk_step_args & a, int r) { return a.state->r[r]; }

__device__ __forceinline__ void pk_ratios(const pk_step_args & a, int n_zone, double & cand, double & coll) {
    if (!a.adaptive) {
        cand = a.rho_cand;
        coll = a.rho_coll;
        return;
    }
    for (int i = 0; i < PK_N_RATIO_ROWS; ++i) {
        const pk_ratio_row & row = PK_REFERENCE_RATIOS[i];
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

__device__ __forceinline__ float pk_mask_value(const pk_step_args & a, int c) {
    return pk_load(a.mask, a.mask_dtype, c);
}

extern "C" __global__ void pk_step_begin(pk_step_args a) {
    pk_step_state * s = a.state;
    s->n_visible = 0;
    s->n_zone = 0;
    s->n_rows = 0;
    s->p_min = 0x7FFFFFFF;
    s->p_max = -0x7FFFFFFF - 1;
    s->tag += 1;
}

extern "C" __global__ void pk_zero_u32(unsigned int * p, long long n) {
    for (long long i = (long long) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long) gridDim.x * blockDim.x) {
        p[i] = 0;
    }
}

// the extremes of the visible cells' positions
extern "C" __global__ void pk_visibility(pk_step_args a) {
    int lo = 0x7FFFFFFF, hi = -0x7FFFFFFF - 1, count = 0;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < a.n; c += gridDim.x * blockDim.x) {
        if (pk_mask_value(a, c) > -INFINITY) {
            lo = min(lo, a.pos[c]);
            hi = max(hi, a.pos[c]);
            count++;
        }
    }
    atomicMin(&a.state->p_min, lo);
    atomicMax(&a.state->p_max, hi);
    atomicAdd(&a.state->n_visible, count);
}

// hidden, zone or fixed (sink: p < p_min + n_sink, window: p > p_max - n_local)
extern "C" __global__ void pk_classify(pk_step_args a) {
    const long long sink_end = (long long) a.state->p_min + a.n_sink;
    const long long window_start = (long long) a.state->p_max - a.n_local;
    int zone = 0;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < a.n; c += gridDim.x * blockDim.x) {
        unsigned char k = PK_HIDDEN;
        if (pk_mask_value(a, c) > -INFINITY) {
            const long long p = a.pos[c];
            k = (p < sink_end || p > window_start) ? PK_FIXED : PK_ZONE;
            zone += k == PK_ZONE;
        }
        a.klass[c] = k;
    }
    atomicAdd(&a.state->n_zone, zone);
}

// cluster sizes of the zone, hist[b][c]; dynamic shared memory nb*256 counters
extern "C" __global__ void pk_histogram(pk_step_args a) {
    extern __shared__ unsigned int pk_hist_smem[];
    const int total = a.nb * PK_N_CENTROIDS;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        pk_hist_smem[i] = 0;
    }
    __syncthreads();
    const int c0 = blockIdx.x * PK_CHUNK, c1 = min(a.n, c0 + PK_CHUNK);
    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        if (a.klass[c] != PK_ZONE) continue;
        const unsigned char * code = a.codes + (long long) c * a.nb;
        for (int b = 0; b < a.nb; ++b) {
            atomicAdd(&pk_hist_smem[b * PK_N_CENTROIDS + code[b]], 1u);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        if (pk_hist_smem[i]) atomicAdd(&a.hist[i], pk_hist_smem[i]);
    }
}

// higher score first, NaN as -inf, -0 == +0, ties by lower index (rank::rank_order)
__device__ __forceinline__ bool pk_better(float sa, int ia, float sb, int ib) {
    sa = isnan(sa) ? -INFINITY : sa;
    sb = isnan(sb) ? -INFINITY : sb;
    return sa > sb || (sa == sb && ia < ib);
}

// tier level of every centroid of block blockIdx.x for retrieval blockIdx.y; 256 threads
extern "C" __global__ void pk_tiers(pk_step_args a) {
    __shared__ float score[PK_N_CENTROIDS];
    __shared__ unsigned char order[PK_N_CENTROIDS];
    const int b = blockIdx.x, r = blockIdx.y, c = threadIdx.x;
    const float * q = a.q_rot + (long long) r * a.dp + b * PK_BLOCK;
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PK_BLOCK; ++j) {
        s = __fadd_rn(s, (c >> j & 1) ? q[j] : -q[j]);
    }
    score[c] = s;
    __syncthreads();
    int rank = 0;
    for (int o = 0; o < PK_N_CENTROIDS; ++o) {
        rank += pk_better(score[o], o, s, c);
    }
    order[rank] = (unsigned char) c;
    __syncthreads();
    if (c == 0) {
        const int n_zone = a.state->n_zone;
        double cand, coll;
        pk_ratios(a, n_zone, cand, coll);
        long long budget[PK_N_TIERS];
        for (int t = 0; t < PK_N_TIERS; ++t) budget[t] = pk_ceil_count(n_zone, coll, PK_TIER_FRACTIONS[t]);
        unsigned char * lv = a.levels + ((long long) r * a.nb + b) * PK_N_CENTROIDS;
        const unsigned int * sizes = a.hist + b * PK_N_CENTROIDS;
        long long before = 0;
        for (int i = 0; i < PK_N_CENTROIDS; ++i) lv[i] = 0;
        for (int i = 0; i < PK_N_CENTROIDS; ++i) {
            int level = 0;
            for (int t = 0; t < PK_N_TIERS; ++t) level += before < budget[t];
            if (level == 0) break;
            lv[order[i]] = (unsigned char) level;
            before += sizes[order[i]];
        }
    }
}

// collision counts per cell and their histogram; grid (chunks, retrievals)
extern "C" __global__ void pk_collisions(pk_step_args a) {
    extern __shared__ unsigned char pk_lv_smem[];
    const int r = blockIdx.y;
    const unsigned char * lv = a.levels + (long long) r * a.nb * PK_N_CENTROIDS;
    for (int i = threadIdx.x; i < a.nb * PK_N_CENTROIDS; i += blockDim.x) pk_lv_smem[i] = lv[i];
    __syncthreads();
    unsigned short * counts = a.counts + (long long) r * a.n;
    unsigned int * ch = a.count_hist + (long long) r * (a.max_collisions + 1);
    const int c0 = blockIdx.x * PK_CHUNK, c1 = min(a.n, c0 + PK_CHUNK);
    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        if (a.klass[c] != PK_ZONE) {
            counts[c] = PK_NOT_IN_ZONE;
            continue;
        }
        const unsigned char * code = a.codes + (long long) c * a.nb;
        int total = 0;
        for (int b = 0; b < a.nb; ++b) total += pk_lv_smem[b * PK_N_CENTROIDS + code[b]];
        counts[c] = (unsigned short) total;
        atomicAdd(&ch[total], 1u);
    }
}

// each retrieval's k, candidate count, cutoff and ties left (search::candidates)
extern "C" __global__ void pk_cutoff(pk_step_args a) {
    const int r = blockIdx.x;
    if (threadIdx.x != 0) return;
    const int n_zone = a.state->n_zone;
    pk_retrieval & x = pk_ret(a, r);
    // small zones: everything (cache_step attends every visible cell)
    int k = n_zone <= a.top_k ? n_zone : a.top_k / a.n_ret + (r < a.top_k % a.n_ret);
    k = min(k, n_zone);
    double cand, coll;
    pk_ratios(a, n_zone, cand, coll);
    long long m = pk_ceil_count(n_zone, cand, 1.0);
    m = min((long long) n_zone, max(m, (long long) k));
    const unsigned int * ch = a.count_hist + (long long) r * (a.max_collisions + 1);
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
    x.m = (int) m;
    x.cutoff = cutoff;
    x.ties_left = (int) max(0ll, m - above);
    x.prefix = 0;
    x.remaining = k;
}

// cells at the cutoff count per chunk (for their rank among ties)
extern "C" __global__ void pk_tie_chunks(pk_step_args a) {
    __shared__ int ties;
    const int r = blockIdx.y;
    if (threadIdx.x == 0) ties = 0;
    __syncthreads();
    const unsigned short * counts = a.counts + (long long) r * a.n;
    const int cutoff = pk_ret(a, r).cutoff;
    const int c0 = blockIdx.x * PK_CHUNK, c1 = min(a.n, c0 + PK_CHUNK);
    int mine = 0;
    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) mine += counts[c] == cutoff;
    atomicAdd(&ties, mine);
    __syncthreads();
    if (threadIdx.x == 0) a.chunk_ties[(long long) r * (gridDim.x + 1) + blockIdx.x] = ties;
}

// exclusive prefix of the chunks' tie counts, per retrieval
extern "C" __global__ void pk_scan_chunks(pk_step_args a, int n_chunks) {
    if (threadIdx.x != 0) return;
    int * t = a.chunk_ties + (long long) blockIdx.x * (n_chunks + 1);
    int sum = 0;
    for (int i = 0; i < n_chunks; ++i) {
        const int v = t[i];
        t[i] = sum;
        sum += v;
    }
}

// the order-preserving key of (score, cell): smaller is better
__device__ __forceinline__ unsigned long long pk_key(float score, int cell) {
    if (isnan(score)) score = -INFINITY;
    if (score == 0.0f) score = 0.0f; // -0 ranks as +0
    unsigned int u = __float_as_uint(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); // ascending with the score
    return ((unsigned long long) ~u << 32) | (unsigned int) cell;
}

// candidates (count above the cutoff, or at it among the first ties_left cells), scored
// with the 4-bit estimator exactly as encode::estimate; others get PK_NO_KEY.
// One thread per cell, PK_CHUNK_THREADS threads and PK_CHUNK cells per block.
extern "C" __global__ void pk_select_rerank(pk_step_args a) {
    extern __shared__ float pk_lut[];  // [dp][16]
    __shared__ int warp_ties[PK_CHUNK_THREADS / 32];
    __shared__ int base;
    const int r = blockIdx.y;
    const float * q = a.q_rot + (long long) r * a.dp;
    for (int i = threadIdx.x; i < a.dp * 16; i += blockDim.x) {
        const int j = i / 16, code = i % 16;
        const float level = PK_LEVELS[code & 7];
        pk_lut[i] = __fmul_rn((code & 8) ? level : -level, q[j]);
    }
    if (threadIdx.x == 0) base = a.chunk_ties[(long long) r * (gridDim.x + 1) + blockIdx.x];
    __syncthreads();
    const pk_retrieval & x = pk_ret(a, r);
    const unsigned short * counts = a.counts + (long long) r * a.n;
    unsigned long long * keys = a.keys + (long long) r * a.n;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // the chunk in rounds of PK_CHUNK_THREADS cells, in cell order
    for (int c0 = blockIdx.x * PK_CHUNK; c0 < min(a.n, (blockIdx.x + 1) * PK_CHUNK); c0 += PK_CHUNK_THREADS) {
        const int c = c0 + threadIdx.x;
        const int count = c < a.n ? counts[c] : PK_NOT_IN_ZONE;
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
        if (c < a.n) {
            const bool chosen = count != PK_NOT_IN_ZONE && (count > x.cutoff || (tie && rank < x.ties_left));
            unsigned long long key = PK_NO_KEY;
            if (chosen && x.k > 0) {
                const unsigned char * nib = a.nibbles + (long long) c * (a.dp / 2);
                const __half * w = a.weights + (long long) c * a.nb;
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int b = 0; b < a.nb; ++b) {
                    const float * t = pk_lut + b * PK_BLOCK * 16;
                    const unsigned char * by = nib + b * 4;
                    float pair[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        pair[i] = __fadd_rn(t[(2 * i) * 16 + (by[i] & 15)], t[(2 * i + 1) * 16 + (by[i] >> 4)]);
                    }
                    const float dot = __fadd_rn(__fadd_rn(pair[0], pair[1]), __fadd_rn(pair[2], pair[3]));
                    acc[b % 4] = __fadd_rn(acc[b % 4], __fmul_rn(__half2float(w[b]), dot));
                }
                key = pk_key(__fadd_rn(__fadd_rn(acc[0], acc[1]), __fadd_rn(acc[2], acc[3])), c);
            }
            keys[c] = key;
        }
        __syncthreads();
    }
}

// radix select of each retrieval's k smallest keys: the digit histogram of one pass
extern "C" __global__ void pk_radix_hist(pk_step_args a, int pass) {
    __shared__ unsigned int h[256];
    const int r = blockIdx.y;
    for (int i = threadIdx.x; i < 256; i += blockDim.x) h[i] = 0;
    __syncthreads();
    const pk_retrieval & x = pk_ret(a, r);
    if (x.remaining > 0) {
        const int shift = 8 * pass;
        const unsigned long long hi_mask = pass == 7 ? 0ull : (~0ull << (shift + 8));
        const unsigned long long * keys = a.keys + (long long) r * a.n;
        const int c0 = blockIdx.x * PK_CHUNK, c1 = min(a.n, c0 + PK_CHUNK);
        for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
            const unsigned long long k = keys[c];
            if (k != PK_NO_KEY && (k & hi_mask) == (x.prefix & hi_mask)) {
                atomicAdd(&h[(k >> shift) & 255], 1u);
            }
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        if (h[i]) atomicAdd(&a.radix[r * 256 + i], h[i]);
    }
}

extern "C" __global__ void pk_radix_pick(pk_step_args a, int pass) {
    const int r = blockIdx.x;
    if (threadIdx.x != 0) return;
    pk_retrieval & x = pk_ret(a, r);
    if (x.remaining <= 0) return;
    const unsigned int * h = a.radix + r * 256;
    unsigned int below = 0;
    for (int d = 0; d < 256; ++d) {
        if (below + h[d] >= (unsigned int) x.remaining) {
            x.prefix |= (unsigned long long) d << (8 * pass);
            x.remaining -= below;
            return;
        }
        below += h[d];
    }
}

// cells whose key is at most the k-th key get this step's tag
extern "C" __global__ void pk_mark(pk_step_args a) {
    const int r = blockIdx.y;
    const pk_retrieval & x = pk_ret(a, r);
    if (x.k <= 0) return;
    const unsigned long long * keys = a.keys + (long long) r * a.n;
    const unsigned int tag = a.state->tag;
    const int c0 = blockIdx.x * PK_CHUNK, c1 = min(a.n, c0 + PK_CHUNK);
    for (int c = c0 + threadIdx.x; c < c1; c += blockDim.x) {
        if (keys[c] <= x.prefix) a.mark[c] = tag;
    }
}

// the rows to attend: fixed cells and marked cells (any order)
extern "C" __global__ void pk_rows(pk_step_args a) {
    const unsigned int tag = a.state->tag;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < a.n; c += gridDim.x * blockDim.x) {
        if (a.klass[c] == PK_FIXED || (a.klass[c] == PK_ZONE && a.mark[c] == tag)) {
            a.rows[atomicAdd(&a.state->n_rows, 1)] = c;
        }
    }
}

// rotated retrieval queries: retrieval r is query head r (per-head) or the mean of all
// n_heads (group mean, summed in head order then divided, as search::group_query); one
// warp per retrieval, dynamic shared memory dp floats.
extern "C" __global__ void pk_query_rot(const float * queries, long long q_stride, int n_heads, int mean,
                                        const float * signs, float scale, int d, int dp, float * q_rot) {
    extern __shared__ float y[];
    const int r = blockIdx.x, lane = threadIdx.x;
    for (int j = lane; j < dp; j += 32) {
        float v = 0.0f;
        if (j < d) {
            if (mean) {
                float s = 0.0f;
                for (int h = 0; h < n_heads; ++h) s = __fadd_rn(s, queries[h * q_stride + j]);
                v = __fdiv_rn(s, (float) n_heads);
            } else {
                v = queries[r * q_stride + j];
            }
            v = v * signs[j];
        }
        y[j] = v;
    }
    __syncwarp();
    for (int half = 1; half < dp; half *= 2) {
        for (int p = lane; p < dp / 2; p += 32) {
            const int lo = (p / half) * 2 * half + p % half, hi = lo + half;
            const float x0 = y[lo], x1 = y[hi];
            y[lo] = __fadd_rn(x0, x1);
            y[hi] = __fsub_rn(x0, x1);
        }
        __syncwarp();
    }
    for (int j = lane; j < dp; j += 32) q_rot[(long long) r * dp + j] = __fmul_rn(y[j], scale);
}
