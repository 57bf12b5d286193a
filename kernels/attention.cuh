// Exact softmax attention of each unit's query heads over the unit's rows (the CUDA twin of
// attention::attend): rows are gathered by cell from K and V (device memory, or pinned host
// memory through UVA), each row loaded once for all the group's heads, PK_ATT_ROWS rows per
// block with an online softmax per warp, then the blocks are combined. Row counts are read
// on the device.
#pragma once

#include "common.cuh"
#include "search.cuh"

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
    float * partial;            // [units][chunks][heads][2 + dv]: max, sum, accumulator
    char * out;                 // head h of unit u at out + off(u) + h*out_stride bytes (f32)
    long long out_stride;
};

__device__ __forceinline__ long long pk_att_off(const pk_attend_args & a, int u, long long sa, long long sh) {
    return (long long) (u / a.L.n_h) * sa + (long long) (u % a.L.n_h) * sh;
}

// four consecutive elements j..j+3 of a row as floats
__device__ __forceinline__ float4 pk_load4(const char * row, int dtype, int j) {
    if (dtype == PK_F32) return *(const float4 *) (row + 4 * j);
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

// grid (chunks, 1, units), PK_ATT_WARPS warps; dynamic shared memory: the heads' queries
// (n_heads*dk floats) and per warp the heads' running max, sum and accumulator
extern "C" __global__ void pk_attend_partial(pk_attend_args a) {
    extern __shared__ float sm[];
    const int u = blockIdx.z, chunk = blockIdx.x, n_chunks = gridDim.x, H = a.n_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_rows = a.n_rows[u * a.n_rows_stride];
    if (chunk * PK_ATT_ROWS >= n_rows) {
        return; // the grid covers the bound; the combine reads only the blocks that hold rows
    }
    float * qs = sm;                                  // [H][dk]
    float * wst = sm + H * a.dk;                      // [warps][H][2 + dv]
    float * mine = wst + warp * H * (2 + a.dv);
    const char * q = a.q + pk_att_off(a, u, a.L.q_a, a.L.q_h);
    for (int i = threadIdx.x; i < H * a.dk; i += blockDim.x) {
        qs[i] = ((const float *) (q + (i / a.dk) * a.q_stride))[i % a.dk];
    }
    for (int i = lane; i < H * (2 + a.dv); i += 32) mine[i] = (i % (2 + a.dv)) == 0 ? -INFINITY : 0.0f;
    __syncthreads();
    const int r0 = chunk * PK_ATT_ROWS, r1 = min(n_rows, r0 + PK_ATT_ROWS);
    const int * rows = a.rows + u * a.row_stride;
    const char * kb = a.k + pk_att_off(a, u, a.L.k_a, a.L.k_h);
    const char * vb = a.v + pk_att_off(a, u, a.L.v_a, a.L.v_h);
    for (int r = r0 + warp; r < r1; r += PK_ATT_WARPS) {
        const long long cell = rows[r];
        const char * krow = kb + cell * a.k_stride;
        const char * vrow = vb + cell * a.v_stride;
        float dots[PK_MAX_GROUP];
        for (int h = 0; h < H; ++h) dots[h] = 0.0f;
        for (int j = 4 * lane; j < a.dk; j += 128) {
            const float4 k4 = pk_load4(krow, a.k_dtype, j);
            for (int h = 0; h < H; ++h) {
                const float * qh = qs + h * a.dk + j;
                dots[h] += qh[0] * k4.x + qh[1] * k4.y + qh[2] * k4.z + qh[3] * k4.w;
            }
        }
        for (int h = 0; h < H; ++h) {
            float d = dots[h];
            for (int o = 16; o > 0; o /= 2) d += __shfl_xor_sync(0xFFFFFFFFu, d, o);
            dots[h] = d;
        }
        for (int j = 4 * lane; j < a.dv; j += 128) {
            const float4 v4 = pk_load4(vrow, a.v_dtype, j);
            for (int h = 0; h < H; ++h) {
                float * st = mine + h * (2 + a.dv);
                const float s = pk_logit(a, dots[h]);
                const float m_new = fmaxf(st[0], s);
                const float corr = __expf(st[0] - m_new), p = __expf(s - m_new);
                float * acc = st + 2 + j;
                acc[0] = acc[0] * corr + p * v4.x;
                acc[1] = acc[1] * corr + p * v4.y;
                acc[2] = acc[2] * corr + p * v4.z;
                acc[3] = acc[3] * corr + p * v4.w;
            }
        }
        __syncwarp();
        if (lane == 0) {
            for (int h = 0; h < H; ++h) {
                float * st = mine + h * (2 + a.dv);
                const float s = pk_logit(a, dots[h]);
                const float m_new = fmaxf(st[0], s);
                st[1] = st[1] * __expf(st[0] - m_new) + __expf(s - m_new);
                st[0] = m_new;
            }
        }
        __syncwarp();
    }
    __syncthreads();
    // combine the warps into this block's partial result
    for (int h = 0; h < H; ++h) {
        float mm = -INFINITY;
        for (int w = 0; w < PK_ATT_WARPS; ++w) {
            const float * st = wst + (w * H + h) * (2 + a.dv);
            if (st[1] > 0.0f) mm = fmaxf(mm, st[0]);
        }
        float * part = a.partial + (((long long) u * n_chunks + chunk) * H + h) * (2 + a.dv);
        for (int j = threadIdx.x; j < a.dv + 1; j += blockDim.x) {
            float sum = 0.0f;
            for (int w = 0; w < PK_ATT_WARPS; ++w) {
                const float * st = wst + (w * H + h) * (2 + a.dv);
                if (st[1] > 0.0f) sum += (j == 0 ? st[1] : st[1 + j]) * __expf(st[0] - mm);
            }
            part[1 + j] = sum;
        }
        if (threadIdx.x == 0) part[0] = mm;
    }
}

// grid (heads, 1, units): combines the blocks that hold rows
extern "C" __global__ void pk_attend_combine(pk_attend_args a, int n_chunks) {
    const int h = blockIdx.x, u = blockIdx.z, H = a.n_heads;
    const int used = min(n_chunks, (a.n_rows[u * a.n_rows_stride] + PK_ATT_ROWS - 1) / PK_ATT_ROWS);
    auto part = [&](int c) { return a.partial + (((long long) u * n_chunks + c) * H + h) * (2 + a.dv); };
    float mm = -INFINITY;
    for (int c = 0; c < used; ++c) {
        if (part(c)[1] > 0.0f) mm = fmaxf(mm, part(c)[0]);
    }
    float l = 0.0f;
    for (int c = 0; c < used; ++c) {
        if (part(c)[1] > 0.0f) l += part(c)[1] * __expf(part(c)[0] - mm);
    }
    float * out = (float *) (a.out + pk_att_off(a, u, a.L.out_a, a.L.out_h) + h * a.out_stride);
    for (int j = threadIdx.x; j < a.dv; j += blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < used; ++c) {
            if (part(c)[1] > 0.0f) s += part(c)[2 + j] * __expf(part(c)[0] - mm);
        }
        out[j] = l > 0.0f ? s / l : 0.0f;
    }
}
