// Exact softmax attention of the query heads of a group over a list of rows (the CUDA twin
// of attention::attend): rows are gathered by cell from K and V (device memory, or pinned
// host memory through UVA), in chunks of PK_ATT_ROWS per block with an online softmax, then
// the chunks are combined. The row count is read on the device.
#pragma once

#include "common.cuh"


struct pk_attend_args {
    const int * rows;           // cells to attend
    const int * n_rows;         // how many (on the device)
    int max_rows;               // upper bound, fixes the grid
    const float * q;            // query head h at q + h*q_stride floats
    long long q_stride;
    const char * k; int k_dtype; long long k_stride;  // row of cell c at k + c*k_stride bytes
    const char * v; int v_dtype; long long v_stride;
    int dk, dv;
    float scale, softcap;
    float * partial;            // [heads][chunks][2 + dv]: max, sum, accumulator
    float * out;                // head h at out + h*out_stride floats
    long long out_stride;
};

__device__ __forceinline__ float pk_logit(const pk_attend_args & a, float dot) {
    const float s = dot * a.scale;
    return a.softcap > 0.0f ? a.softcap * tanhf(s / a.softcap) : s;
}

// grid (chunks, heads), PK_ATT_WARPS warps
extern "C" __global__ void pk_attend_partial(pk_attend_args a) {
    __shared__ float wm[PK_ATT_WARPS], wl[PK_ATT_WARPS];
    __shared__ float wacc[PK_ATT_WARPS][PK_MAX_HEAD_DIM];
    const int h = blockIdx.y, chunk = blockIdx.x, n_chunks = gridDim.x;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_rows = *a.n_rows;
    const int r0 = chunk * PK_ATT_ROWS, r1 = min(n_rows, r0 + PK_ATT_ROWS);
    const float * q = a.q + h * a.q_stride;
    float m = -INFINITY, l = 0.0f;
    float acc[PK_MAX_HEAD_DIM / 32];
    for (int i = 0; i < PK_MAX_HEAD_DIM / 32; ++i) acc[i] = 0.0f;
    for (int r = r0 + warp; r < r1; r += PK_ATT_WARPS) {
        const long long cell = a.rows[r];
        const char * krow = a.k + cell * a.k_stride;
        float dot = 0.0f;
        for (int j = lane; j < a.dk; j += 32) dot += q[j] * pk_load(krow, a.k_dtype, j);
        for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xFFFFFFFFu, dot, o);
        const float s = pk_logit(a, dot);
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new), p = __expf(s - m_new);
        l = l * corr + p;
        const char * vrow = a.v + cell * a.v_stride;
        for (int i = 0, j = lane; j < a.dv; ++i, j += 32) acc[i] = acc[i] * corr + p * pk_load(vrow, a.v_dtype, j);
        m = m_new;
    }
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
    for (int i = 0, j = lane; j < a.dv; ++i, j += 32) wacc[warp][j] = acc[i];
    __syncthreads();
    float * part = a.partial + ((long long) h * n_chunks + chunk) * (2 + a.dv);
    float mm = -INFINITY;
    for (int w = 0; w < PK_ATT_WARPS; ++w) mm = fmaxf(mm, wm[w]);
    for (int j = threadIdx.x; j < a.dv; j += blockDim.x) {
        float s = 0.0f;
        for (int w = 0; w < PK_ATT_WARPS; ++w) {
            if (wl[w] > 0.0f) s += wacc[w][j] * __expf(wm[w] - mm);
        }
        part[2 + j] = s;
    }
    if (threadIdx.x == 0) {
        float ls = 0.0f;
        for (int w = 0; w < PK_ATT_WARPS; ++w) {
            if (wl[w] > 0.0f) ls += wl[w] * __expf(wm[w] - mm);
        }
        part[0] = mm;
        part[1] = ls;
    }
}

// grid (heads), combines the chunks that hold rows
extern "C" __global__ void pk_attend_combine(pk_attend_args a, int n_chunks) {
    const int h = blockIdx.x;
    const int used = min(n_chunks, (*a.n_rows + PK_ATT_ROWS - 1) / PK_ATT_ROWS);
    const float * part = a.partial + (long long) h * n_chunks * (2 + a.dv);
    float mm = -INFINITY;
    for (int c = 0; c < used; ++c) {
        if (part[c * (2 + a.dv) + 1] > 0.0f) mm = fmaxf(mm, part[c * (2 + a.dv)]);
    }
    float l = 0.0f;
    for (int c = 0; c < used; ++c) {
        const float * p = part + c * (2 + a.dv);
        if (p[1] > 0.0f) l += p[1] * __expf(p[0] - mm);
    }
    float * out = a.out + h * a.out_stride;
    for (int j = threadIdx.x; j < a.dv; j += blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < used; ++c) {
            const float * p = part + c * (2 + a.dv);
            if (p[1] > 0.0f) s += p[2 + j] * __expf(p[0] - mm);
        }
        out[j] = l > 0.0f ? s / l : 0.0f;
    }
}
