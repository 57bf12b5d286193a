// Encode (rotation + centroid codes + 4-bit codes + weights) of the keys of given cells:
// the CUDA twin of encode::encode_rows, bitwise equal to it.
#pragma once

#include "common.cuh"
#include "row_cache.cuh"

// Where the keys and the index of (global cell g, KV head h) live: a cache of n_stream
// streams of kv_size cells; g = stream * kv_size + cell.
struct pk_encode_args {
    const char * keys;          // key of (g, h) at keys + g*key_row_stride + h*key_head_stride
    int          key_dtype;
    long long    key_row_stride;
    long long    key_head_stride;
    const long long * cells;    // global cells to encode
    const int *  n_cells;       // how many of them (read on the device), or null: max_cells
    long long    max_cells;     // the grid's bound
    unsigned char * codes;      // index of (g, h) at ((stream*n_heads + h)*kv_size + cell) rows
    unsigned char * nibbles;
    __half *     weights;
    unsigned int * hist;        // the kept histogram, [stream*n_heads + h][nb][256], or null: none kept
    unsigned char * counted;    // its flags, one a row of codes (1: the row's codes are in hist)
    long long    hist_stride;   // bytes from (stream, head) t's histogram to t + 1's
    long long    counted_stride;// bytes from t's flags to t + 1's (cell c's flag at c)
    long long    kv_size;
    int          n_heads;
    float *      center;        // per KV head center_len = head_dim + 1 floats (centre, count), or null
    const float * signs;        // the rotation's sign diagonal, padded_dim values
    float        scale;         // 1/sqrt(padded_dim)
    int          head_dim;
    int          padded_dim;
    int          init_center;   // 1: the grid has one block per head, which sets an unset centre
                                // itself (pk_center_init's work, without its launch)
    pk_row_cache cache;         // rows kept across steps, [stream*n_heads + h] tables: an encoded
                                // cell's are forgotten (cache.slots 0: none)
};

// The twin of center::init for KV head h by one block, a thread per coordinate: sets an
// unset centre to the mean of the keys of the first PK_CENTER_ROWS listed cells, each
// coordinate summed in f32 in list order, one rounded division, non-finite -> 0. Every
// thread of the block calls it (it ends with a barrier where it sets the centre).
__device__ __forceinline__ void pk_center_set(const pk_encode_args & a, int h) {
    const int d = a.head_dim;
    float * c = a.center + (long long) h * (d + 1);
    const long long n = min((long long) PK_CENTER_ROWS, a.n_cells ? (long long) *a.n_cells : a.max_cells);
    // every thread reads the count before any thread can write it (after the barrier)
    if (c[d] != 0.0f || n <= 0) {
        return;
    }
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float sum = 0.0f;
#pragma unroll 8
        for (long long i = 0; i < n; ++i) {
            const char * key = a.keys + a.cells[i] * a.key_row_stride + h * a.key_head_stride;
            sum = __fadd_rn(sum, pk_load(key, a.key_dtype, j));
        }
        const float mean = __fdiv_rn(sum, (float) n);
        c[j] = isfinite(mean) ? mean : 0.0f;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        c[d] = (float) n;
    }
    __syncthreads();
}

// pk_center_set, one block per KV head (blockIdx.x), before a ubatch's encode
extern "C" __global__ void pk_center_init(pk_encode_args a) { pk_grid_order(); pk_center_set(a, blockIdx.x); }

// One warp per (cell, head); blockIdx.y = head. Dynamic shared memory: padded_dim floats
// per warp.
extern "C" __global__ void pk_encode(pk_encode_args a) {
    pk_grid_order();
    extern __shared__ float pk_encode_smem[];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long i = (long long) blockIdx.x * PK_ENCODE_WARPS + warp;
    const int h = blockIdx.y;
    if (a.init_center) pk_center_set(a, h); // every thread: it has barriers
    if (i >= (a.n_cells ? (long long) *a.n_cells : a.max_cells)) {
        return;
    }
    const int d = a.head_dim, dp = a.padded_dim, nb = dp / PK_BLOCK;
    float * y = pk_encode_smem + warp * dp;
    const long long g = a.cells[i];
    const char * key = a.keys + g * a.key_row_stride + h * a.key_head_stride;
    const float * c = a.center ? a.center + (long long) h * (d + 1) : nullptr;
    if (c && c[d] == 0.0f) {
        c = nullptr; // not set: keys as they are
    }

    // D (x - c), zero-padded
    for (int j = lane; j < dp; j += 32) {
        y[j] = j < d ? __fsub_rn(pk_load(key, a.key_dtype, j), c ? c[j] : 0.0f) * a.signs[j] : 0.0f;
    }
    __syncwarp();
    pk_fwht_warp(y, dp, lane);
    for (int j = lane; j < dp; j += 32) {
        y[j] = __fmul_rn(y[j], a.scale);
    }
    __syncwarp();

    const long long s = g / a.kv_size, cell = g % a.kv_size;
    const long long row = (s * a.n_heads + h) * a.kv_size + cell;
    if (lane == 0) pk_row_cache_forget(a.cache, s * a.n_heads + h, cell); // its rows are new
    // the kept histogram (kept::tally): the cell's old codes out if they were counted, the new in
    const long long t = s * a.n_heads + h;
    unsigned int * hist = a.hist ? (unsigned int *) ((char *) a.hist + t * a.hist_stride) : nullptr;
    unsigned char * counted = a.counted + t * a.counted_stride + cell;
    const bool was_counted = hist && *counted != 0;
    for (int b = lane; b < nb; b += 32) {
        const float * yb = y + b * PK_BLOCK;
        unsigned int code = 0;
        float r2 = 0.0f;
#pragma unroll
        for (int j = 0; j < PK_BLOCK; ++j) {
            code |= (unsigned int) (yb[j] >= 0.0f) << j;
            r2 = __fadd_rn(r2, __fmul_rn(yb[j], yb[j]));
        }
        const float r = __fsqrt_rn(r2);
        float alpha = 0.0f;
        unsigned int packed = 0;
#pragma unroll
        for (int j = 0; j < PK_BLOCK; ++j) {
            const float u = __fdiv_rn(fabsf(yb[j]), r);
            const int t = pk_magnitude_index(u);
            alpha = __fadd_rn(alpha, __fmul_rn(PK_LEVELS[t], u));
            packed |= (unsigned int) (t | ((yb[j] >= 0.0f) << 3)) << (4 * j);
        }
        if (was_counted) atomicSub(&hist[b * PK_N_CENTROIDS + a.codes[row * nb + b]], 1u);
        a.codes[row * nb + b] = (unsigned char) code;
        if (hist) atomicAdd(&hist[b * PK_N_CENTROIDS + code], 1u);
        unsigned char * nib = a.nibbles + row * (dp / 2) + b * (PK_BLOCK / 2);
#pragma unroll
        for (int k = 0; k < PK_BLOCK / 2; ++k) {
            nib[k] = (unsigned char) (packed >> (8 * k));
        }
        a.weights[row * nb + b] = pk_store_weight(__fdiv_rn(r, alpha));
    }
    if (hist) {
        __syncwarp(); // every lane has read the flag
        if (lane == 0) *counted = 1;
    }
}
