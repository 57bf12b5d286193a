// The 4-bit estimate of <q, key> in integer arithmetic, as algorithm::estimate: the rotated
// query rounded to int8 per block of 8 (pk_round_query_block), a block's dot with the key's
// signed int8 levels exact (two dp4a), the f32 weighted sum over the blocks in the oracle's
// order (block b into accumulator b % 4, then (a0 + a1) + (a2 + a3), never fused).
#pragma once

#include "common.cuh"

// Block b of a rotated query (the 8 floats at yb) in int8: lane c < PK_BLOCK returns
// coordinate c; *factor gets the block's scale * PK_LEVEL_SCALE (0 for an all-zero block,
// NaN where a coordinate is not finite), as QueryI8::set, to the bit.
__device__ __forceinline__ signed char pk_round_query_block(const float * yb, int c, float * factor) {
    float mx = 0.0f; // max |y|, NaN if any is NaN: the oracle's fold
    for (int j = 0; j < PK_BLOCK; ++j) {
        const float x = fabsf(yb[j]);
        if (x > mx || isnan(yb[j])) mx = x;
    }
    if (!isfinite(mx)) {
        *factor = __int_as_float(0x7FC00000);
        return 0;
    }
    if (mx == 0.0f) {
        *factor = 0.0f;
        return 0;
    }
    const float scale = __fdiv_rn(mx, 127.0f);
    *factor = __fmul_rn(scale, PK_LEVEL_SCALE);
    const float v = rintf(__fdiv_rn(yb[c], scale)); // half to even
    if (isnan(v)) return 0; // scale underflowed to 0 at 0 / 0: Rust's NaN as i8
    return (signed char) (int) fminf(fmaxf(v, -127.0f), 127.0f);
}

// The signed int8 levels of 4 codes (bits 4i..4i+3: code i, low 3 bits the magnitude, bit 3
// set for a non-negative level), byte i for code i: the magnitude by a byte permute of the
// level table, negated (256 - m, no carry: m >= 7) where bit 3 is clear.
__device__ __forceinline__ int pk_signed_levels(unsigned int codes) {
    const unsigned int mag = __byte_perm(PK_LEVELS_I8_LO, PK_LEVELS_I8_HI, codes & 0x7777u);
    // 0xFF in byte i where code i is negative: its clear bit 3 moved to a byte's top bit
    // (codes 0 and 2 in x << 4, codes 1 and 3 in x), then replicated over the byte by prmt's
    // sign mode (selector bit 3, which __byte_perm does not offer)
    const unsigned int x = ~codes & 0x8888u;
    unsigned int neg;
    asm("prmt.b32 %0, %1, %2, 0xD9C8;" : "=r"(neg) : "r"(x << 4), "r"(x));
    return (int) ((mag ^ neg) + (neg & 0x01010101u));
}

// A block's exact dot: its signed levels (coordinates 0-3 in lv_lo, 4-7 in lv_hi) against its
// 8 int8 query coordinates (q.x: 0-3, q.y: 4-7)
__device__ __forceinline__ int pk_block_dot(int lv_lo, int lv_hi, int2 q) {
    return __dp4a(lv_lo, q.x, __dp4a(lv_hi, q.y, 0));
}

// A block's term of the estimate, w * (factor * dot), rounded as the oracle's
__device__ __forceinline__ float pk_block_term(float w, float factor, int dot) {
    return __fmul_rn(w, __fmul_rn(factor, __int2float_rn(dot)));
}

// The estimate for one cell (its nb blocks' 4-bit codes nib and weights w) with the query
// qi (dp int8, 8-byte aligned) and its per-block factors
__device__ __forceinline__ float pk_estimate(const signed char * qi, const float * factor, const unsigned char * nib, const __half * w, int nb) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    // blocks four at a time, so that acc[b % 4] is a register
    for (int b0 = 0; b0 < nb; b0 += 4) {
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) {
            const int b = b0 + bb;
            if (b >= nb) break;
            const unsigned char * x = nib + b * 4;
            const unsigned int by4 = x[0] | x[1] << 8 | x[2] << 16 | (unsigned int) x[3] << 24;
            const int2 q = *(const int2 *) (qi + b * PK_BLOCK);
            const int dot = pk_block_dot(pk_signed_levels(by4 & 0xFFFFu), pk_signed_levels(by4 >> 16), q);
            acc[bb] = __fadd_rn(acc[bb], pk_block_term(__half2float(w[b]), factor[b], dot));
        }
    }
    return __fadd_rn(__fadd_rn(acc[0], acc[1]), __fadd_rn(acc[2], acc[3]));
}
