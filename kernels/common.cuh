// Shared helpers of the ParisKV kernels. The numeric constants come from src/constants.rs
// through the generated pariskv_constants.cuh; the arithmetic that must match the CPU
// oracle bit for bit uses explicit round-to-nearest intrinsics (no FMA contraction).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "pariskv_constants.cuh"

// Programmatic dependent launch (sm_90 on, where src/cuda/driver.rs launches every kernel
// with it): the kernel waits until the grid before it in the stream has finished and its
// writes are visible. The grid after it is released as this one's blocks exit (no early
// launch_dependents: blocks of the next grid waiting in hardware from the start would take
// the SM slots this grid's later blocks need), so its launch overlaps this grid's tail.
// Every kernel calls it first, before any early return: one that returned without waiting
// would finish before its predecessor and release its successor too early.
__device__ __forceinline__ void pk_grid_order() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// One row of `bytes` copied from src to dst by the 32 lanes of a warp, in the widest words
// (16 or 4 bytes) both addresses and the length are aligned to, else bytes (the gather's
// rows, the row cache's fills)
__device__ __forceinline__ void pk_copy_row(char * dst, const char * src, int bytes, int lane) {
    const unsigned long long align = (unsigned long long) dst | (unsigned long long) src | (unsigned long long) bytes;
    if (align % 16 == 0) {
        for (int j = lane; j < bytes / 16; j += 32) ((int4 *) dst)[j] = ((const int4 *) src)[j];
    } else if (align % 4 == 0) {
        for (int j = lane; j < bytes / 4; j += 32) ((int *) dst)[j] = ((const int *) src)[j];
    } else {
        for (int j = lane; j < bytes; j += 32) dst[j] = src[j];
    }
}

// Element types, numbered as pariskv_dtype. PK_Q8_0 is ggml's block_q8_0: 32 elements in 34
// bytes (an f16 scale, then 32 signed bytes), 2-byte aligned.
enum pk_dtype : int { PK_F32 = 0, PK_F16 = 1, PK_BF16 = 2, PK_Q8_0 = 3 };
#define PK_Q8_0_BLOCK 32
#define PK_Q8_0_BYTES 34

// bytes of a row of d elements (d a multiple of PK_Q8_0_BLOCK for q8_0)
__device__ __forceinline__ int pk_row_bytes(int dtype, int d) {
    switch (dtype) {
        case PK_F32:  return 4 * d;
        case PK_Q8_0: return d / PK_Q8_0_BLOCK * PK_Q8_0_BYTES;
        default:      return 2 * d;
    }
}

// element i of a row of type DT; q8_0 as ggml's dequantize_row_q8_0 (and rows.rs): the
// byte times the block's scale, one rounding
template <int DT>
__device__ __forceinline__ float pk_load_as(const void * row, int i) {
    if (DT == PK_F16) return __half2float(((const __half *) row)[i]);
    if (DT == PK_BF16) return __bfloat162float(((const __nv_bfloat16 *) row)[i]);
    if (DT == PK_Q8_0) {
        const unsigned char * b = (const unsigned char *) row + i / PK_Q8_0_BLOCK * PK_Q8_0_BYTES;
        return __fmul_rn((float) (signed char) b[2 + i % PK_Q8_0_BLOCK], __half2float(*(const __half *) b));
    }
    return ((const float *) row)[i];
}

// pk_load_as with the type known at run time only
__device__ __forceinline__ float pk_load(const void * row, int dtype, int i) {
    switch (dtype) {
        case PK_F16:  return pk_load_as<PK_F16>(row, i);
        case PK_BF16: return pk_load_as<PK_BF16>(row, i);
        case PK_Q8_0: return pk_load_as<PK_Q8_0>(row, i);
        default:      return pk_load_as<PK_F32>(row, i);
    }
}

// Magnitude index of a normalised coordinate: thresholds at or below it (NaN -> 0).
// the Walsh-Hadamard transform of dp (a power of two) floats in shared memory, by one warp:
// the same butterflies in the same stages as rotation::fwht, so results are bitwise equal
__device__ __forceinline__ void pk_fwht_warp(float * y, int dp, int lane) {
    // half is a power of two: the pair's index by shifts and masks, not run-time divisions
    for (int s = 0, half = 1; half < dp; ++s, half *= 2) {
        for (int p = lane; p < dp / 2; p += 32) {
            const int lo = (p >> s << (s + 1)) | (p & (half - 1)), hi = lo + half;
            const float x0 = y[lo], x1 = y[hi];
            y[lo] = __fadd_rn(x0, x1);
            y[hi] = __fsub_rn(x0, x1);
        }
        __syncwarp();
    }
}

__device__ __forceinline__ int pk_magnitude_index(float u) {
    int t = 0;
#pragma unroll
    for (int i = 0; i < PK_N_LEVELS - 1; ++i) {
        t += u >= PK_THRESHOLDS[i];
    }
    return t;
}

// The stored weight: f16, saturated to its range; not finite -> 0 (as encode::store_weight).
__device__ __forceinline__ __half pk_store_weight(float w) {
    if (!isfinite(w)) {
        return __float2half_rn(0.0f);
    }
    return __float2half_rn(fminf(fmaxf(w, -65504.0f), 65504.0f));
}

// The portable arithmetic of src/algorithm/portable.rs, operation for operation: e^min(x, 0)
// (0 below PK_EXP_FLOOR), tanh from it, and fixed-point sums of values in [0, 1].
__device__ __forceinline__ float pk_exp_nonpositive(float x) {
    if (isnan(x)) return x;
    x = fminf(x, 0.0f);
    if (x < PK_EXP_FLOOR) return 0.0f;
    const float n = rintf(__fmul_rn(x, PK_EXP_LOG2E));
    const float r = __fsub_rn(__fsub_rn(x, __fmul_rn(n, PK_EXP_LN2_HI)), __fmul_rn(n, PK_EXP_LN2_LO));
    float p = PK_EXP_POLY[0];
#pragma unroll
    for (int i = 1; i < PK_EXP_POLY_LEN; ++i) p = __fadd_rn(__fmul_rn(p, r), PK_EXP_POLY[i]);
    const float y = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
    return __fmul_rn(y, __uint_as_float((unsigned int) ((int) n + 127) << 23));
}

__device__ __forceinline__ float pk_tanh_portable(float y) {
    if (isnan(y)) return y;
    const float a = fabsf(y);
    const float e = pk_exp_nonpositive(-__fadd_rn(a, a));
    return copysignf(__fdiv_rn(__fsub_rn(1.0f, e), __fadd_rn(1.0f, e)), y);
}

__device__ __forceinline__ unsigned long long pk_to_fixed(float x) {
    return __float2ull_rz(__fmul_rn(x, (float) (1ull << PK_FIXED_FRACTION_BITS)));
}

__device__ __forceinline__ float pk_from_fixed(unsigned long long s) {
    return __double2float_rn(__ddiv_rn(__ull2double_rn(s), (double) (1ull << PK_FIXED_FRACTION_BITS)));
}

// AttnParams::selection_logit
__device__ __forceinline__ float pk_selection_logit(float dot, float scale, float softcap) {
    const float s = __fmul_rn(dot, scale);
    return softcap > 0.0f ? __fmul_rn(softcap, pk_tanh_portable(__fdiv_rn(s, softcap))) : s;
}
