// Exact softmax attention of each unit's query heads over the unit's rows (the CUDA twin of
// attention::attend): rows are gathered by cell from K and V (device memory, or pinned host
// memory through UVA), each row loaded once for a batch of the group's heads; a unit's rows
// are split evenly over a fixed number of blocks (flash-decoding), each warp keeping an
// online softmax in registers; the last block of a unit to finish combines the blocks' states
// (one launch, no second kernel). Row counts are read on the device.
#pragma once

#include "common.cuh"
#include "row_cache.cuh"
#include "step.cuh"

struct pk_attend_args {
    pk_unit_layout L;
    const int * rows;           // [units][row_stride] cells to attend
    long long row_stride;
    const int * n_rows;         // the count of unit u at n_rows[u * n_rows_stride] (ints)
    int n_rows_stride;
    int max_rows;               // upper bound, fixes the grid
    const char * q;             // query head h of unit u at q + off(u) + h*q_stride bytes
    long long q_stride;
    int n_heads;
    const char * k; int k_dtype; long long k_stride;  // row of cell c at k + off(u) + c*k_stride
    const char * v; int v_dtype; long long v_stride;
    int dk, dv;
    float scale, softcap;
    float * partial;            // [units][chunks][heads][PK_ATT_PART(dv)]: max, sum, padding, accumulator
    char * out;                 // head h of unit u at out + off(u) + h*out_stride bytes (f32)
    long long out_stride;
    unsigned int * done;        // per unit, blocks finished; 0 between steps (the last resets it)
    unsigned int * mark;        // the step's marks, unit u's at mark + u*row_stride, cleared
                                // for the rows attended (pk_unmark's work); null: none
    pk_row_cache cache;         // rows kept across steps (row_cache.cuh); cache.slots 0: none
    int * plan;                 // with a cache: each row's slot, as rows (pk_row_plan's answer)
};

// floats of one block's state for one head: max, sum, padding, then the accumulator (16-byte
// aligned for the combine's vector loads)
#define PK_ATT_PART(dv) (PK_ATT_STATE_HEAD + (dv))

__device__ __forceinline__ long long pk_att_off(const pk_attend_args & a, int u, long long sa, long long sh) {
    return (long long) (u / a.L.n_h) * sa + (long long) (u % a.L.n_h) * sh;
}

// Every row of each unit taken from its row cache table (pk_row_take; a miss claims a slot
// where its set has one free this step, which the attention fills); the answers go to
// a.plan. grid (blocks, 1, units), PK_CHUNK_THREADS threads, a thread per row
extern "C" __global__ void pk_row_plan(pk_attend_args a) {
    pk_grid_order();
    const pk_row_cache & C = a.cache;
    const int u = blockIdx.z;
    const long long t = pk_row_table(a.L.n_h, u);
    const int n_rows = a.n_rows[u * a.n_rows_stride];
    const int * rows = a.rows + u * a.row_stride;
    const unsigned int pin = pk_row_pin(C, t);
    int * plan = a.plan + u * a.row_stride;
    unsigned long long hits = 0, misses = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_rows; i += gridDim.x * blockDim.x) {
        const int p = pk_row_take(C, t, rows[i], pin, true);
        plan[i] = p;
        hits += p >= 0;
        misses += p < 0;
    }
    for (int o = 16; o > 0; o /= 2) {
        hits += __shfl_xor_sync(0xFFFFFFFFu, hits, o);
        misses += __shfl_xor_sync(0xFFFFFFFFu, misses, o);
    }
    if (threadIdx.x % 32 == 0 && (hits || misses)) {
        atomicAdd(C.stats + 2 * t, hits);
        atomicAdd(C.stats + 2 * t + 1, misses);
    }
}

// four consecutive elements j..j+3 (j a multiple of 4) of a row as floats
__device__ __forceinline__ float4 pk_load4(const char * row, int dtype, int j) {
    if (dtype == PK_F32) return *(const float4 *) (row + 4 * j);
    if (dtype == PK_Q8_0) { // the four bytes lie in one block, 2-byte aligned
        const char * b = row + j / PK_Q8_0_BLOCK * PK_Q8_0_BYTES;
        const float d = __half2float(*(const __half *) b);
        const char2 lo = *(const char2 *) (b + 2 + j % PK_Q8_0_BLOCK), hi = *(const char2 *) (b + 4 + j % PK_Q8_0_BLOCK);
        return make_float4(lo.x * d, lo.y * d, hi.x * d, hi.y * d);
    }
    const uint2 raw = *(const uint2 *) (row + 2 * j);
    if (dtype == PK_F16) {
        const float2 lo = __half22float2(*(const __half2 *) &raw.x), hi = __half22float2(*(const __half2 *) &raw.y);
        return make_float4(lo.x, lo.y, hi.x, hi.y);
    }
    const float2 lo = __bfloat1622float2(*(const __nv_bfloat162 *) &raw.x);
    const float2 hi = __bfloat1622float2(*(const __nv_bfloat162 *) &raw.y);
    return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__device__ __forceinline__ float pk_logit(const pk_attend_args & a, float dot) {
    const float s = dot * a.scale;
    return a.softcap > 0.0f ? a.softcap * tanhf(s / a.softcap) : s;
}

// Combines the n_blk blocks' states of unit u into its outputs (run by the unit's last
// block; `sm` holds heads * (n_blk + 1) floats, src/cuda/kernels.rs: attend_smem): one warp
// per head finds the overall maximum and each block's weight exp(max_b - max), then every
// output element is the weighted sum of the blocks' accumulators over the total weight. Blocks without rows have
// sum 0 and weight 0. Reads bypass L1: other blocks wrote them.
__device__ __forceinline__ void pk_attend_combine(const pk_attend_args & a, int u, int n_blk, float * sm) {
    const int H = a.n_heads, P = PK_ATT_PART(a.dv), lane = threadIdx.x % 32;
    float * weight = sm;             // [H][n_blk]
    float * total = sm + H * n_blk;  // [H]
    const float * part0 = a.partial + (long long) u * n_blk * H * P;
    for (int h = threadIdx.x / 32; h < H; h += blockDim.x / 32) {
        float mm = -INFINITY;
        for (int c = lane; c < n_blk; c += 32) {
            const float * p = part0 + ((long long) c * H + h) * P;
            if (__ldcg(p + 1) > 0.0f) mm = fmaxf(mm, __ldcg(p));
        }
        for (int o = 16; o > 0; o /= 2) mm = fmaxf(mm, __shfl_xor_sync(0xFFFFFFFFu, mm, o));
        float l = 0.0f;
        for (int c = lane; c < n_blk; c += 32) {
            const float * p = part0 + ((long long) c * H + h) * P;
            const float sum = __ldcg(p + 1);
            const float w = sum > 0.0f ? __expf(__ldcg(p) - mm) : 0.0f;
            weight[h * n_blk + c] = w;
            l += sum > 0.0f ? sum * w : 0.0f;
        }
        for (int o = 16; o > 0; o /= 2) l += __shfl_xor_sync(0xFFFFFFFFu, l, o);
        if (lane == 0) total[h] = l;
    }
    __syncthreads();
    // four elements at a time where the accumulators allow it
    const int width = a.dv % 4 == 0 ? 4 : 1, per_head = a.dv / width;
    for (int e = threadIdx.x; e < H * per_head; e += blockDim.x) {
        const int h = e / per_head, j = e % per_head * width;
        const float * w = weight + h * n_blk;
        const float * p = part0 + (long long) h * P + PK_ATT_STATE_HEAD + j;
        const long long step = (long long) H * P;
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (width == 4) {
#pragma unroll 8
            for (int c = 0; c < n_blk; ++c) {
                const float4 x = __ldcg((const float4 *) (p + c * step));
                s.x += x.x * w[c]; s.y += x.y * w[c]; s.z += x.z * w[c]; s.w += x.w * w[c];
            }
        } else {
#pragma unroll 8
            for (int c = 0; c < n_blk; ++c) s.x += __ldcg(p + c * step) * w[c];
        }
        const float t = total[h], inv = t > 0.0f ? 1.0f / t : 0.0f;
        float * out = (float *) (a.out + pk_att_off(a, u, a.L.out_a, a.L.out_h) + h * a.out_stride) + j;
        out[0] = s.x * inv;
        if (width == 4) {
            out[1] = s.y * inv;
            out[2] = s.z * inv;
            out[3] = s.w * inv;
        }
    }
}

// Rows of a warp in flight at once: their loads are independent, so their latencies overlap.
#define PK_ATT_BATCH 4

__device__ __forceinline__ constexpr int pk_log2(int v) { return v <= 1 ? 0 : 1 + pk_log2(v / 2); }

// One halving stage of pk_warp_sum_many: lanes whose bit `o` is set keep the upper HALF of
// their values and send the lower to their partner, the others the reverse. The choice is
// bitwise: a select of two elements would become a select of their addresses and put the
// values in local memory.
template <int HALF>
__device__ __forceinline__ void pk_sum_halve(float * v, int lane, int o) {
    const unsigned int upper = lane & o ? 0xFFFFFFFFu : 0u;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
        const unsigned int lo = __float_as_uint(v[i]), hi = __float_as_uint(v[i + HALF]);
        const float send = __uint_as_float((lo & upper) | (hi & ~upper));
        const float keep = __uint_as_float((hi & upper) | (lo & ~upper));
        v[i] = keep + __shfl_xor_sync(0xFFFFFFFFu, send, o);
    }
}

// Sums each of V values (V a power of two, at most 32) over the warp's lanes with V - 1 +
// (5 - log2 V) shuffles in all instead of 5 per value. Returns the total of value
// (lane >> (5 - log2 V)) & (V - 1), which every lane of that group of 32 / V holds.
template <int V>
__device__ __forceinline__ float pk_warp_sum_many(float (&v)[V], int lane) {
    static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "a power of two up to 32");
    if constexpr (V >= 2) pk_sum_halve<V / 2>(v, lane, 16);
    if constexpr (V >= 4) pk_sum_halve<V / 4>(v, lane, 8);
    if constexpr (V >= 8) pk_sum_halve<V / 8>(v, lane, 4);
    if constexpr (V >= 16) pk_sum_halve<V / 16>(v, lane, 2);
    if constexpr (V >= 32) pk_sum_halve<V / 32>(v, lane, 1);
    float x = v[0];
#pragma unroll
    for (int o = 16 / V; o > 0; o /= 2) x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
    return x;
}

// a warp's PK_ATT_BATCH rows of `dim` elements (cell < 0: none, zeros), lane i holding
// elements 4i..4i+3 of each of the L slices of 128; row r at base + cell * stride, or where
// slot[r] >= 0 in the row cache, at cached + slot * row_bytes
template <int L>
__device__ __forceinline__ void pk_load_rows(float4 (&out)[PK_ATT_BATCH][L], const long long (&cell)[PK_ATT_BATCH],
                                             const int (&slot)[PK_ATT_BATCH], const char * base, long long stride,
                                             const char * cached, int row_bytes, int dtype, int dim, int lane) {
#pragma unroll
    for (int r = 0; r < PK_ATT_BATCH; ++r) {
        const char * row = slot[r] >= 0 ? cached + (long long) slot[r] * row_bytes : base + cell[r] * stride;
#pragma unroll
        for (int t = 0; t < L; ++t) {
            const int j = 128 * t + 4 * lane;
            out[r][t] = cell[r] >= 0 && j < dim ? pk_load4(row, dtype, j) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
}

// The row cache slots a warp reads its batch's rows (rows base.. of unit u) from (-1: host
// memory): a hit's slot, or a fill's after the warp has copied the rows there from host
// memory (by one head batch's blocks: the others read host memory, the slot being written).
// Every lane calls it.
__device__ __forceinline__ void pk_cached_rows(const pk_attend_args & a, int u, int base, const long long (&cell)[PK_ATT_BATCH],
                                               const char * kb, const char * vb, int (&slot)[PK_ATT_BATCH], int lane) {
    const pk_row_cache & C = a.cache;
    char * table = pk_row_table_data(C, pk_row_table(a.L.n_h, u));
    bool filled = false;
#pragma unroll
    for (int r = 0; r < PK_ATT_BATCH; ++r) {
        slot[r] = -1;
        if (cell[r] < 0) continue;
        const int p = a.plan[u * a.row_stride + base + r];
        if (p >= 0) {
            slot[r] = p;
        } else if (p <= -2 && blockIdx.y == 0) {
            slot[r] = -2 - p;
            char * s = table + (long long) slot[r] * C.row_bytes;
            pk_copy_row(s, kb + cell[r] * a.k_stride, pk_row_bytes(a.k_dtype, a.dk), lane);
            pk_copy_row(s + C.v_off, vb + cell[r] * a.v_stride, pk_row_bytes(a.v_dtype, a.dv), lane);
            filled = true;
        }
    }
    if (filled) __syncwarp(); // the copies visible to every lane before they are read
}

// The partial attention of one block: a 1/gridDim.x share of unit u's rows (blockIdx.z) for
// a batch of `hb` query heads (blockIdx.y), each warp taking PK_ATT_BATCH rows at a time
// with the queries and the softmax state in registers: lane i holds elements 4i..4i+3 of
// each 128-element slice of the L slices of a row (dk, dv <= 128 L; hb <= HB <= 8 / L; HB
// fixes the registers and unrolled work, so a group of 4 does not pay for 8). Every
// block writes its state (max, sum, accumulator; sum 0 when it has no rows), and the unit's
// last block combines them. Dynamic shared memory: PK_ATT_WARPS * hb * (2 + dv) floats, for
// combining the warps, and at least heads * (blocks + 1) for the blocks (attend_smem).
template <int L, int HB, bool CACHED>
__device__ __forceinline__ void pk_attend_rows(const pk_attend_args & a, int hb) {
    static_assert(HB * L <= 8, "head batch too wide for the registers");
    constexpr int MAXHB = HB;
    extern __shared__ float sm[];
    const int u = blockIdx.z, blk = blockIdx.x, n_blk = gridDim.x, H = a.n_heads;
    const int h0 = blockIdx.y * hb, nh = min(hb, H - h0);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_rows = a.n_rows[u * a.n_rows_stride];
    const int per = (n_rows + n_blk - 1) / n_blk;
    const int r0 = min(n_rows, blk * per), r1 = min(n_rows, r0 + per);
    const int * rows = a.rows + u * a.row_stride;
    if (a.mark && blockIdx.y == 0) { // one head batch's blocks cover every row once
        for (int i = r0 + threadIdx.x; i < r1; i += blockDim.x) a.mark[u * a.row_stride + rows[i]] = 0;
    }
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 q[MAXHB][L], acc[MAXHB][L];
    // The batch's (row, head) pairs are summed over the warp at once (pk_warp_sum_many):
    // lane i ends with pair (i >> (5 - log2 NV)) & (NV - 1) = row * MAXHB + head, the row
    // i >> 3, and keeps the softmax state (max, sum) of that head; pk_att_lane is the
    // first lane holding a pair.
    constexpr int NV = PK_ATT_BATCH * MAXHB, SHIFT = 5 - pk_log2(NV);
    static_assert(PK_ATT_BATCH == 4 && NV <= 32, "rows in lane bits 3 and 4 (and four slots)");
    const auto pk_att_lane = [](int r, int h) { return (r * MAXHB + h) << SHIFT; };
    const int my_r = lane >> 3;
    float m_mine = -INFINITY, l_mine = 0.0f;
    const char * qb = a.q + pk_att_off(a, u, a.L.q_a, a.L.q_h);
#pragma unroll
    for (int h = 0; h < MAXHB; ++h) {
#pragma unroll
        for (int t = 0; t < L; ++t) {
            acc[h][t] = zero;
            q[h][t] = zero;
            const int j = 128 * t + 4 * lane;
            if (h < nh && j < a.dk) {
                const float * qh = (const float *) (qb + (h0 + h) * a.q_stride) + j;
                q[h][t] = make_float4(qh[0], qh[1], qh[2], qh[3]);
            }
        }
    }
    const char * kb = a.k + pk_att_off(a, u, a.L.k_a, a.L.k_h);
    const char * vb = a.v + pk_att_off(a, u, a.L.v_a, a.L.v_h);
    // the unit's row cache table, where rows with a slot are read
    const char * cached = CACHED ? pk_row_table_data(a.cache, pk_row_table(a.L.n_h, u)) : nullptr;
    for (int base = r0 + warp * PK_ATT_BATCH; base < r1; base += PK_ATT_WARPS * PK_ATT_BATCH) {
        long long cell[PK_ATT_BATCH];
#pragma unroll
        for (int r = 0; r < PK_ATT_BATCH; ++r) cell[r] = base + r < r1 ? rows[base + r] : -1;
        // the batch's K and V rows loaded together (both in flight: V's loads would otherwise
        // wait behind the K products), then its PK_ATT_BATCH x MAXHB dot products, partial
        // over the lane's elements
        int slot[PK_ATT_BATCH] = {-1, -1, -1, -1};
        if (CACHED) pk_cached_rows(a, u, base, cell, kb, vb, slot, lane);
        float4 v4[PK_ATT_BATCH][L];
        float d[NV];
        {
            float4 k4[PK_ATT_BATCH][L];
            pk_load_rows<L>(k4, cell, slot, kb, a.k_stride, cached, a.cache.row_bytes, a.k_dtype, a.dk, lane);
            pk_load_rows<L>(v4, cell, slot, vb, a.v_stride, cached + a.cache.v_off, a.cache.row_bytes, a.v_dtype, a.dv, lane);
#pragma unroll
            for (int r = 0; r < PK_ATT_BATCH; ++r) {
#pragma unroll
                for (int h = 0; h < MAXHB; ++h) {
                    float x = 0.0f;
#pragma unroll
                    for (int t = 0; t < L; ++t) {
                        x += q[h][t].x * k4[r][t].x + q[h][t].y * k4[r][t].y + q[h][t].z * k4[r][t].z + q[h][t].w * k4[r][t].w;
                    }
                    d[r * MAXHB + h] = x;
                }
            }
        }
        // this lane's (row, head): its logit, the head's new maximum over the batch's rows
        // (lanes of one head differ in lane bits 3 and 4, the row), each row's weight and
        // their sum
        const float dot = pk_warp_sum_many<NV>(d, lane); // every lane: it shuffles
        const float s_mine = base + my_r < r1 ? pk_logit(a, dot) : -INFINITY;
        float mb = fmaxf(s_mine, __shfl_xor_sync(0xFFFFFFFFu, s_mine, 8));
        mb = fmaxf(mb, __shfl_xor_sync(0xFFFFFFFFu, mb, 16));
        const float m_new = fmaxf(m_mine, mb);
        const bool any = m_new != -INFINITY; // else nothing to attend yet: nothing changes
        const float corr = any ? __expf(m_mine - m_new) : 1.0f;
        const float p_mine = any ? __expf(s_mine - m_new) : 0.0f;
        float psum = p_mine + __shfl_xor_sync(0xFFFFFFFFu, p_mine, 8);
        psum += __shfl_xor_sync(0xFFFFFFFFu, psum, 16);
        l_mine = l_mine * corr + psum;
        m_mine = m_new;
        // every lane's accumulators take every (row, head)'s weight (nh is uniform: the
        // shuffles run in every lane or none)
#pragma unroll
        for (int h = 0; h < MAXHB; ++h) {
            if (h >= nh) break;
            const float c = __shfl_sync(0xFFFFFFFFu, corr, pk_att_lane(0, h));
            float p[PK_ATT_BATCH];
#pragma unroll
            for (int r = 0; r < PK_ATT_BATCH; ++r) p[r] = __shfl_sync(0xFFFFFFFFu, p_mine, pk_att_lane(r, h));
#pragma unroll
            for (int t = 0; t < L; ++t) {
                float4 x = acc[h][t];
                x.x *= c; x.y *= c; x.z *= c; x.w *= c;
#pragma unroll
                for (int r = 0; r < PK_ATT_BATCH; ++r) {
                    x.x += p[r] * v4[r][t].x;
                    x.y += p[r] * v4[r][t].y;
                    x.z += p[r] * v4[r][t].z;
                    x.w += p[r] * v4[r][t].w;
                }
                acc[h][t] = x;
            }
        }
    }
    // the warps' states, [warp][head][max, sum, accumulator], combined into the block's partial
    const int stride = 2 + a.dv;
#pragma unroll
    for (int h = 0; h < MAXHB; ++h) {
        if (h >= nh) break;
        float * st = sm + (warp * hb + h) * stride;
        const float m_h = __shfl_sync(0xFFFFFFFFu, m_mine, pk_att_lane(0, h));
        const float l_h = __shfl_sync(0xFFFFFFFFu, l_mine, pk_att_lane(0, h));
        if (lane == 0) {
            st[0] = m_h;
            st[1] = l_h;
        }
#pragma unroll
        for (int t = 0; t < L; ++t) {
            const int j = 128 * t + 4 * lane;
            if (j < a.dv) {
                st[2 + j] = acc[h][t].x;
                st[3 + j] = acc[h][t].y;
                st[4 + j] = acc[h][t].z;
                st[5 + j] = acc[h][t].w;
            }
        }
    }
    __syncthreads();
    const int P = PK_ATT_PART(a.dv);
    for (int h = 0; h < nh; ++h) {
        float mm = -INFINITY;
        for (int w = 0; w < PK_ATT_WARPS; ++w) {
            const float * st = sm + (w * hb + h) * stride;
            if (st[1] > 0.0f) mm = fmaxf(mm, st[0]);
        }
        float * part = a.partial + (((long long) u * n_blk + blk) * H + h0 + h) * P;
        for (int j = threadIdx.x; j < a.dv + 1; j += blockDim.x) {
            float sum = 0.0f;
            for (int w = 0; w < PK_ATT_WARPS; ++w) {
                const float * st = sm + (w * hb + h) * stride;
                if (st[1] > 0.0f) sum += st[1 + j] * __expf(st[0] - mm);
            }
            part[j == 0 ? 1 : PK_ATT_STATE_HEAD - 1 + j] = sum; // the sum, then the accumulator
        }
        if (threadIdx.x == 0) part[0] = mm;
    }
    // the last block of the unit to finish (of every head batch) combines all of them
    if (pk_last_block(a.done + u, gridDim.x * gridDim.y)) {
        pk_attend_combine(a, u, n_blk, sm);
        // the next step's pins and claims outrank this one's (units sharing a table each add)
        if (CACHED && threadIdx.x == 0) atomicAdd(a.cache.clock + pk_row_table(a.L.n_h, u), 1u);
    }
}

// grid (blocks per unit, head batches, units), PK_ATT_WARPS warps: pk_attend_rows for rows of
// up to 128 L elements, batches of up to HB heads (src/cuda/kernels.rs: ATTEND), without and
// with a row cache (its code out of the plain kernel's registers and instructions)
#define PK_ATTEND(L, HB) \
    extern "C" __global__ void pk_attend_##L##_##HB(pk_attend_args a, int hb) {        \
        pk_grid_order();                                                                \
        pk_attend_rows<L, HB, false>(a, hb);                                            \
    }                                                                                   \
    extern "C" __global__ void pk_attend_cached_##L##_##HB(pk_attend_args a, int hb) { \
        pk_grid_order();                                                                \
        pk_attend_rows<L, HB, true>(a, hb);                                             \
    }
PK_ATTEND(1, 1)
PK_ATTEND(1, 2)
PK_ATTEND(1, 4)
PK_ATTEND(1, 8)
PK_ATTEND(2, 1)
PK_ATTEND(2, 2)
PK_ATTEND(2, 4)
PK_ATTEND(4, 1)
PK_ATTEND(4, 2)
