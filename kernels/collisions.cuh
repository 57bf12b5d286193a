// Stage 3 of a step: every zone cell's collision count per retrieval, their histogram,
// the candidate cutoff and the ties' ranks.
#pragma once

#include "step.cuh"

// a retrieval's k, candidate count, cutoff and ties left (search::candidates), by one warp:
// the highest count whose cells, with those of every higher count, reach the candidates
// wanted, 32 counts at a time from the top
__device__ void pk_cutoff(const pk_step_args & a, int u, int r) {
    const int lane = threadIdx.x % 32;
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
    long long above = 0; // cells of the counts above those of this round
    int cutoff = 0;
    for (int top = a.max_collisions; top >= 0; top -= 32) {
        const int c = top - lane;
        const long long here = c >= 0 ? __ldcg(ch + c) : 0;
        long long incl = here; // cells of counts c..top
        for (int o = 1; o < 32; o *= 2) {
            const long long y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
            if (lane >= o) incl += y;
        }
        const unsigned int reached = __ballot_sync(0xFFFFFFFFu, c >= 0 && above + incl >= m);
        if (reached) {
            const int first = __ffs(reached) - 1;
            cutoff = top - first;
            above += __shfl_sync(0xFFFFFFFFu, incl - here, first);
            break;
        }
        above += __shfl_sync(0xFFFFFFFFu, incl, 31);
    }
    if (lane == 0) {
        x.k = k;
        x.keep = keep;
        x.n_refined = 0;
        x.m = (int) m;
        x.cutoff = cutoff;
        x.ties_left = (int) max(0ll, m - above);
    }
}

// four words of four bytes each (tables 0-3, entries e..e+3) as the four words of entries
// e..e+3, byte j of each from table j
__device__ __forceinline__ uint4 pk_interleave4(unsigned int a, unsigned int b, unsigned int c, unsigned int d) {
    const unsigned int ab_lo = __byte_perm(a, b, 0x5140), cd_lo = __byte_perm(c, d, 0x5140); // a0 b0 a1 b1
    const unsigned int ab_hi = __byte_perm(a, b, 0x7362), cd_hi = __byte_perm(c, d, 0x7362); // a2 b2 a3 b3
    return make_uint4(__byte_perm(ab_lo, cd_lo, 0x5410), __byte_perm(ab_lo, cd_lo, 0x7632),
                      __byte_perm(ab_hi, cd_hi, 0x5410), __byte_perm(ab_hi, cd_hi, 0x7632));
}

// collision counts per cell and their histogram, for `r_batch` retrievals per block (each
// cell's codes loaded once for all of them, into registers); grid (blocks striding over the
// chunks, retrieval batches, units): a block loads the tier tables and flushes its
// histogram once, however many chunks it takes. The levels of four retrievals share a word, one byte each, so one
// shared-memory load serves four and the words add bytewise (a level is at most
// PK_N_TIERS: 32 blocks sum to 192, below a byte's 256, before the bytes are unpacked).
// Each chunk's histogram is kept too (chunk_hist), so that the batch's last block, once it
// has the cutoffs, has every chunk's ties at the cutoff without reading the counts again.
// Dynamic shared memory (src/cuda/kernels.rs: collisions_smem): ceil(r_batch / 4) * nb*256
// words, then r_batch * (max_collisions + 1) counters for the block and as many for a chunk.
#define PK_PACKED_BLOCKS 32
static_assert(PK_PACKED_BLOCKS * PK_N_TIERS < 256, "packed levels overflow a byte");
extern "C" __global__ void pk_collisions(pk_step_args a, int r_batch) {
    pk_grid_order();
    extern __shared__ __align__(16) unsigned int pk_lv_words[];
    constexpr int MAX_WORDS = PK_MAX_HEAD_DIM / PK_BLOCK / 4;
    const int u = blockIdx.z, r0 = blockIdx.y * r_batch, nr = min(r_batch, a.n_ret - r0);
    const int n_lv = a.nb * PK_N_CENTROIDS, n_ch = a.max_collisions + 1, n_quads = (nr + 3) / 4;
    const int n_words = a.nb % 4 == 0 ? a.nb / 4 : 0; // 0: byte by byte
    const int n_chunks = pk_n_chunks(a);
    unsigned int * local = pk_lv_words + (r_batch + 3) / 4 * n_lv;
    unsigned int * in_chunk = local + nr * n_ch;
    const unsigned char * lv = a.levels + ((long long) u * a.n_ret + r0) * n_lv;
    // (loops by quad and entry, not a flat index split by a run-time division: the block's
    // fixed cost was mostly that arithmetic). Sixteen entries of each of a quad's tables per
    // thread and round, one 16-byte load each (n_lv is a multiple of 256 and every table
    // 256-byte aligned), interleaved into their sixteen words by byte permutes: the loads of
    // a round are in flight together
    for (int q = 0; q < n_quads; ++q) {
        const uint4 * lq = (const uint4 *) (lv + (long long) 4 * q * n_lv);
        const int nj = min(4, nr - 4 * q), n16 = n_lv / 16;
        for (int e = threadIdx.x; e < n16; e += blockDim.x) {
            const uint4 zero = make_uint4(0, 0, 0, 0);
            const uint4 t0 = lq[e], t1 = nj > 1 ? lq[n16 + e] : zero, t2 = nj > 2 ? lq[2 * n16 + e] : zero,
                        t3 = nj > 3 ? lq[3 * n16 + e] : zero;
            uint4 * out = (uint4 *) (pk_lv_words + q * n_lv + 16 * e);
            out[0] = pk_interleave4(t0.x, t1.x, t2.x, t3.x);
            out[1] = pk_interleave4(t0.y, t1.y, t2.y, t3.y);
            out[2] = pk_interleave4(t0.z, t1.z, t2.z, t3.z);
            out[3] = pk_interleave4(t0.w, t1.w, t2.w, t3.w);
        }
    }
    for (int i = threadIdx.x; i < 2 * nr * n_ch; i += blockDim.x) local[i] = 0;
    __syncthreads();
    const unsigned char * codes = pk_codes_of(a, u);
    const unsigned char * klass = a.klass + (long long) u * a.n;
    for (int chunk = blockIdx.x; chunk < n_chunks; chunk += gridDim.x) {
        const int c1 = min(a.n, (chunk + 1) * PK_CHUNK);
        for (int c = chunk * PK_CHUNK + threadIdx.x; c < c1; c += blockDim.x) {
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
                    if (in_zone) atomicAdd(&in_chunk[r * n_ch + total[j]], 1u);
                }
            }
        }
        __syncthreads();
        // the chunk's histogram out (at most PK_CHUNK cells: a short each), into the block's
        for (int r = 0; r < nr; ++r) {
            unsigned short * out = a.chunk_hist + (((long long) u * a.n_ret + r0 + r) * n_chunks + chunk) * n_ch;
            for (int bin = threadIdx.x; bin < n_ch; bin += blockDim.x) {
                const int i = r * n_ch + bin;
                const unsigned int v = in_chunk[i];
                out[bin] = (unsigned short) v;
                local[i] += v;
                in_chunk[i] = 0;
            }
        }
        __syncthreads();
    }
    unsigned int * ch = a.count_hist + ((long long) u * a.n_ret + r0) * n_ch;
    for (int i = threadIdx.x; i < nr * n_ch; i += blockDim.x) {
        if (local[i]) atomicAdd(&ch[i], local[i]);
    }
    // the batch's last block sets its retrievals' cutoffs, a warp each, then the ties before
    // each chunk: the exclusive prefix over the chunks of their bins at the cutoff
    if (!pk_last_block(a.done + u * PK_DONE_SLOTS + blockIdx.y, gridDim.x)) return;
    const int lane = threadIdx.x % 32;
    for (int r = threadIdx.x / 32; r < nr; r += blockDim.x / 32) {
        const int ur = u * a.n_ret + r0 + r;
        pk_cutoff(a, u, r0 + r);
        __syncwarp();
        const int cutoff = pk_ret(a, u, r0 + r).cutoff;
        const unsigned short * h = a.chunk_hist + (long long) ur * n_chunks * n_ch + cutoff;
        int * t = a.chunk_ties + (long long) ur * (n_chunks + 1);
        int carry = 0;
        for (int i0 = 0; i0 < n_chunks; i0 += 32) {
            const int i = i0 + lane;
            const int v = i < n_chunks ? __ldcg(h + (long long) i * n_ch) : 0;
            int incl = v;
            for (int o = 1; o < 32; o *= 2) {
                const int y = __shfl_up_sync(0xFFFFFFFFu, incl, o);
                if (lane >= o) incl += y;
            }
            if (i < n_chunks) t[i] = carry + incl - v;
            carry += __shfl_sync(0xFFFFFFFFu, incl, 31);
        }
    }
}
