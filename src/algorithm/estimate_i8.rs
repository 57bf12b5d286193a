//! The 4-bit estimate in integer arithmetic (not wired into a step yet): the rotated query
//! rounded to int8 per block of 8 coordinates on the block's own scale, the 16 signed levels
//! to int8 on one scale (`LEVELS_I8`), so that <v_b, q_b> is an exact integer sum (on the GPU
//! two 4-byte dot products, `dp4a`; on x86 `maddubs`) in any order, and only the weighted sum
//! over the blocks stays in f32, in `encode::estimate`'s order: block b into accumulator
//! b mod 4, then (a0 + a1) + (a2 + a3). Its rounding moves recall by at most 0.001 on real
//! keys (docs/FIDELITY.md, "The 4-bit estimate in int8 arithmetic").
//!
//! Every rounding is defined so that another implementation can give the same bits: a
//! block's scale is max |q_j| / 127 (one f32 division), a coordinate q_j / scale (one
//! division) rounded half to even and clamped to [-127, 127]; a block's factor is
//! scale * LEVEL_SCALE (one product); a block's term is w_b * (factor * dot) with dot the
//! integer sum converted exactly (|dot| <= 8 * 127 * 127 < 2^24).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::constants::{LEVELS_I8, LEVEL_SCALE, MAX_HEAD_DIM};
use crate::shape::BLOCK;

/// A rotated query in the integer estimate's form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryI8 {
    /// The coordinates in int8, block after block.
    pub q: Vec<i8>,
    /// Per block: its scale times LEVEL_SCALE (0 for an all-zero block; non-finite when
    /// the block holds a non-finite coordinate, which makes its estimates NaN as in f32).
    pub factor: Vec<f32>,
}

impl QueryI8 {
    /// Rounds `q_rot` (a whole number of blocks of 8) into this query.
    pub fn set(&mut self, q_rot: &[f32]) {
        assert!(q_rot.len().is_multiple_of(BLOCK), "QueryI8: a whole number of blocks");
        self.q.clear();
        self.factor.clear();
        for block in q_rot.chunks_exact(BLOCK) {
            let max = block.iter().fold(0.0f32, |m, &x| if x.abs() > m || x.is_nan() { x.abs() } else { m });
            if !max.is_finite() {
                self.q.extend(std::iter::repeat_n(0i8, BLOCK));
                self.factor.push(f32::NAN);
                continue;
            }
            if max == 0.0 {
                self.q.extend(std::iter::repeat_n(0i8, BLOCK));
                self.factor.push(0.0);
                continue;
            }
            let scale = max / 127.0;
            self.q.extend(block.iter().map(|&x| (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8));
            self.factor.push(scale * LEVEL_SCALE);
        }
    }
}

/// The int8 level of a 4-bit code: the magnitude in bits 0-2, the sign (set: non-negative)
/// in bit 3, as `codebook::nibble_value`.
#[inline]
pub fn nibble_value_i8(code: u8) -> i32 {
    let level = LEVELS_I8[(code & 7) as usize] as i32;
    if code & 8 != 0 {
        level
    } else {
        -level
    }
}

/// <v_b, q_b> of one block in integers: its 4 packed bytes (two codes each, low nibble
/// first) against the block's 8 int8 coordinates.
#[inline]
pub fn block_dot_i8(q: &[i8], bytes: &[u8]) -> i32 {
    (0..BLOCK / 2)
        .map(|i| {
            nibble_value_i8(bytes[i] & 15) * q[2 * i] as i32
                + nibble_value_i8(bytes[i] >> 4) * q[2 * i + 1] as i32
        })
        .sum()
}

/// The integer 4-bit estimate of <k, q> for one cell (the oracle every kernel must equal).
pub fn estimate_i8(q: &QueryI8, nibbles: &[u8], weights: &[f16]) -> f32 {
    const BYTES: usize = BLOCK / 2;
    let mut w = [0.0f32; MAX_HEAD_DIM / BLOCK];
    let w = &mut w[..weights.len()];
    weights.convert_to_f32_slice(w);
    let mut acc = [0.0f32; 4];
    for (b, &wb) in w.iter().enumerate() {
        let dot = block_dot_i8(&q.q[b * BLOCK..][..BLOCK], &nibbles[b * BYTES..][..BYTES]);
        acc[b % 4] += wb * (q.factor[b] * dot as f32);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// `estimate_i8` with AVX2 (and F16C for the weights), for a whole number of groups of 8
/// blocks: codes expanded to int8 levels by a byte shuffle, the level's sign moved onto the
/// query (`sign`), `maddubs` and `madd` to a block's integer dot, then the f32 terms and
/// sums in the oracle's order. Bitwise equal to `estimate_i8` (tested).
///
/// # Safety
/// The CPU must have AVX2 and F16C; `nibbles`, `weights` and `q` must hold `n_blocks`
/// blocks (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn estimate_i8_avx2(q: &QueryI8, nibbles: &[u8], weights: &[f16], n_blocks: usize) -> f32 {
    use std::arch::x86_64::*;
    debug_assert!(n_blocks.is_multiple_of(8));
    debug_assert!(
        nibbles.len() >= n_blocks * BLOCK / 2 && weights.len() >= n_blocks && q.q.len() >= n_blocks * BLOCK
    );
    let signed: [i8; 16] = std::array::from_fn(|c| nibble_value_i8(c as u8) as i8);
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(signed.as_ptr() as *const __m128i));
    let low4 = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    // the integer dots of blocks 4g..4g+3, as [b0 b0 b1 b1 | b2 b2 b3 b3] halves (i32)
    let quad = |g: usize| {
        let x = _mm_loadu_si128(nibbles.as_ptr().add(16 * g) as *const __m128i);
        let lo = _mm_and_si128(x, low4);
        let hi = _mm_and_si128(_mm_srli_epi16(x, 4), low4);
        let codes = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
        let levels = _mm256_shuffle_epi8(table, codes);
        let qv = _mm256_loadu_si256(q.q.as_ptr().add(32 * g) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(levels), _mm256_sign_epi8(qv, levels));
        _mm256_madd_epi16(pairs, ones)
    };
    let mut acc = _mm_setzero_ps();
    for e in 0..n_blocks / 8 {
        // blocks 8e..8e+7 in order: hadd gives [0 1 4 5 | 2 3 6 7]
        let dots = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(quad(2 * e), quad(2 * e + 1)), order);
        let factor = _mm256_loadu_ps(q.factor.as_ptr().add(8 * e));
        let w = _mm256_cvtph_ps(_mm_loadu_si128(weights.as_ptr().add(8 * e) as *const __m128i));
        let terms = _mm256_mul_ps(w, _mm256_mul_ps(factor, _mm256_cvtepi32_ps(dots)));
        // block b into accumulator b mod 4, in block order
        acc = _mm_add_ps(acc, _mm256_castps256_ps128(terms));
        acc = _mm_add_ps(acc, _mm256_extractf128_ps(terms, 1));
    }
    let mut a = [0.0f32; 4];
    _mm_storeu_ps(a.as_mut_ptr(), acc);
    (a[0] + a[1]) + (a[2] + a[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::{encode_rows, estimate, estimator_lut, CodeStore, EncodeScratch};
    use crate::algorithm::rotation::Rotation;
    use crate::constants::LEVELS;
    use crate::eval::synth::Rng;
    use crate::rows::{RowData, Rows};
    use crate::shape::Shape;

    #[test]
    fn int8_levels_are_the_levels_rounded() {
        for (l, &i) in LEVELS.iter().zip(LEVELS_I8.iter()) {
            assert_eq!((l / LEVELS[LEVELS.len() - 1] * 127.0).round() as i8, i);
        }
        assert_eq!(LEVEL_SCALE * 127.0, LEVELS[LEVELS.len() - 1]);
    }

    #[test]
    fn query_rounding_is_exact_where_it_can_be() {
        let mut q = QueryI8::default();
        // a block whose coordinates are multiples of its max / 127 rounds exactly
        let block: Vec<f32> =
            [127.0f32, -64.0, 0.0, 1.0, -127.0, 2.5, -2.5, 3.0].iter().map(|x| x / 64.0).collect();
        q.set(&block);
        assert_eq!(q.q, vec![127, -64, 0, 1, -127, 2, -2, 3]); // 2.5 and -2.5: half to even
        assert_eq!(q.factor, vec![(127.0f32 / 64.0 / 127.0) * LEVEL_SCALE]);
        // all zero, and non-finite
        q.set(&[0.0; 8]);
        assert_eq!((q.q.clone(), q.factor.clone()), (vec![0; 8], vec![0.0]));
        q.set(&[1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert!(q.factor[0].is_nan());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_equals_the_oracle_bit_for_bit() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")) {
            eprintln!("no AVX2/F16C: the kernel is not checked on this CPU");
            return;
        }
        let mut rng = Rng::new(17);
        for d in [64usize, 128, 256, 512] {
            let shape = Shape::new(d).unwrap();
            let nb = shape.n_blocks;
            let n = 300;
            // random codes and weights (every nibble value, weights of both signs and zero)
            let nibbles: Vec<u8> = (0..n * nb * BLOCK / 2).map(|_| (rng.next_u64() & 255) as u8).collect();
            let weights: Vec<f16> = (0..n * nb)
                .map(|i| if i % 97 == 0 { f16::ZERO } else { f16::from_f32(2.0 * rng.normal()) })
                .collect();
            let mut q_rot: Vec<f32> = (0..shape.padded_dim).map(|_| rng.normal()).collect();
            q_rot[..BLOCK].fill(0.0); // an all-zero block
            let mut qi = QueryI8::default();
            qi.set(&q_rot);
            for cell in 0..n {
                let nib = &nibbles[cell * nb * BLOCK / 2..][..nb * BLOCK / 2];
                let w = &weights[cell * nb..][..nb];
                let want = estimate_i8(&qi, nib, w);
                // SAFETY: AVX2 and F16C detected above; the slices hold nb blocks.
                let got = unsafe { estimate_i8_avx2(&qi, nib, w, nb) };
                assert_eq!(got.to_bits(), want.to_bits(), "d={d} cell {cell}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn int8_estimate_tracks_the_f32_estimate() {
        let mut rng = Rng::new(11);
        for d in [64usize, 128, 256] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 3);
            let n = 200;
            let keys: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            let rows = Rows::packed(RowData::F32(&keys), d).unwrap();
            let cells: Vec<usize> = (0..n).collect();
            encode_rows(&rot, &rows, &cells, None, &mut store.as_mut(), &mut EncodeScratch::default())
                .unwrap();
            let q: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
            let mut q_rot = vec![0.0; shape.padded_dim];
            rot.apply(&q, &mut q_rot);
            let mut lut = Vec::new();
            estimator_lut(&q_rot, &mut lut);
            let mut qi = QueryI8::default();
            qi.set(&q_rot);
            let c = store.as_ref();
            let (mut err2, mut ref2) = (0.0f64, 0.0f64);
            for cell in 0..n {
                let (nib, w) = (c.cell_nibbles(&shape, cell), c.cell_weights(&shape, cell));
                let (f, i) = (estimate(&lut, nib, w) as f64, estimate_i8(&qi, nib, w) as f64);
                err2 += (f - i) * (f - i);
                ref2 += f * f;
            }
            // int8 rounding of q (relative error about 1/254 per coordinate) and of the
            // levels (about 1%): far below the 4-bit code's own error (about 7%)
            let rel = (err2 / ref2).sqrt();
            assert!(rel < 0.02, "d={d}: int8 estimate off by {rel} (relative RMS)");
        }
    }
}
