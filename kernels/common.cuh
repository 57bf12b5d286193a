// Shared helpers of the ParisKV kernels. The numeric constants come from src/constants.rs
// through the generated pariskv_constants.cuh; the arithmetic that must match the CPU
// oracle bit for bit uses explicit round-to-nearest intrinsics (no FMA contraction).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "pariskv_constants.cuh"

// Element types, numbered as pariskv_dtype.
enum pk_dtype : int { PK_F32 = 0, PK_F16 = 1, PK_BF16 = 2 };

__device__ __forceinline__ float pk_load(const void * row, int dtype, int i) {
    switch (dtype) {
        case PK_F16:  return __half2float(((const __half *) row)[i]);
        case PK_BF16: return __bfloat162float(((const __nv_bfloat16 *) row)[i]);
        default:      return ((const float *) row)[i];
    }
}

// Magnitude index of a normalised coordinate: thresholds at or below it (NaN -> 0).
// the Walsh-Hadamard transform of dp (a power of two) floats in shared memory, by one warp:
// the same butterflies in the same stages as rotation::fwht, so results are bitwise equal
__device__ __forceinline__ void pk_fwht_warp(float * y, int dp, int lane) {
    for (int half = 1; half < dp; half *= 2) {
        for (int p = lane; p < dp / 2; p += 32) {
            const int lo = (p / half) * 2 * half + p % half, hi = lo + half;
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
