//! The 4-bit estimate of <k, q> (`algorithm::estimate`) for every head of a group at once,
//! each cell's 4-bit codes and weights read once for all heads.
//!
//! The AVX2 kernel gives `estimate`'s bits: a block's integer dot is exact in any order
//! (the codes' int8 levels by a byte shuffle, shared by the heads; the level's sign moved
//! onto the head's int8 query, then `maddubs` and `madd`), and the f32 terms and sums are the
//! oracle's: w_b * (factor_b * dot), block b into accumulator b mod 4 in block order,
//! never fused. For 8·k blocks (head dim 64 and up); `estimate` itself otherwise.

use std::ops::Range;

use crate::algorithm::encode::Codes;
use crate::algorithm::estimate::{estimate, QueryI8};
use crate::algorithm::prefetch;
use crate::shape::Shape;

/// The rotated queries of a group in the estimate's form, one per head.
#[derive(Clone, Debug, Default)]
pub struct GroupQueries {
    n_blocks: usize,
    queries: Vec<QueryI8>,
}

impl GroupQueries {
    /// Rounds `q_rot`: rotated queries of `shape.padded_dim` values back to back.
    pub fn set(&mut self, shape: &Shape, q_rot: &[f32]) {
        self.n_blocks = shape.n_blocks;
        let heads = q_rot.len() / shape.padded_dim;
        self.queries.resize_with(heads, QueryI8::default);
        for (q, x) in self.queries.iter_mut().zip(q_rot.chunks_exact(shape.padded_dim)) {
            q.set(x);
        }
    }

    pub fn heads(&self) -> usize {
        self.queries.len()
    }
}

/// Which kernel `estimate_group` runs for a shape on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The widest kernel the CPU runs for `n_blocks` blocks.
    pub fn best(n_blocks: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if n_blocks.is_multiple_of(8)
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernel::Avx2;
            }
        }
        let _ = n_blocks;
        Kernel::Scalar
    }
}

/// `out[(h - heads.start) * cells.len() + i]` = head h's estimate for `cells[i]`, for the
/// heads `heads` of `q`, equal to `estimate` with head h's query, by `kernel` (from
/// `Kernel::best`).
pub fn estimate_group(
    kernel: Kernel,
    shape: &Shape,
    codes: &Codes,
    q: &GroupQueries,
    heads: Range<usize>,
    cells: &[u32],
    out: &mut [f32],
) {
    let n = cells.len();
    assert!(heads.end <= q.heads() && out.len() >= heads.len() * n, "estimate_group: sizes");
    assert!(q.n_blocks == shape.n_blocks, "estimate_group: queries rounded for another shape");
    assert!(
        cells.iter().all(|&c| (c as usize) < codes.weights.len() / shape.n_weights().max(1)),
        "estimate_group: cell out of range"
    );
    match kernel {
        Kernel::Scalar => {
            for (i, &c) in cells.iter().enumerate() {
                let (nib, w) = (codes.cell_nibbles(shape, c as usize), codes.cell_weights(shape, c as usize));
                for (o, h) in heads.clone().enumerate() {
                    out[o * n + i] = estimate(&q.queries[h], nib, w);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            assert!(shape.n_blocks.is_multiple_of(8));
            // SAFETY: `Kernel::best` chose this kernel after detecting AVX2 and F16C; the
            // cells were checked above, so every row read lies inside `codes`, and every
            // query holds n_blocks blocks (checked above).
            unsafe { x86::estimate_avx2(shape, codes, q, heads, cells, out) }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{prefetch, Codes, GroupQueries, Range, Shape};
    use crate::algorithm::estimate::nibble_value_i8;

    /// Heads whose accumulators one pass over the cells keeps.
    const HEAD_BATCH: usize = 16;

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn estimate_avx2(
        shape: &Shape,
        codes: &Codes,
        q: &GroupQueries,
        heads: Range<usize>,
        cells: &[u32],
        out: &mut [f32],
    ) {
        let (nb, n) = (shape.n_blocks, cells.len());
        let signed: [i8; 16] = std::array::from_fn(|c| nibble_value_i8(c as u8) as i8);
        let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(signed.as_ptr() as *const __m128i));
        let low4 = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // _mm256_hadd_epi32 of two quads gives blocks [0 1 4 5 | 2 3 6 7]
        let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
        let mut acc = [_mm_setzero_ps(); HEAD_BATCH];
        for h0 in heads.clone().step_by(HEAD_BATCH) {
            let batch = (heads.end - h0).min(HEAD_BATCH);
            for (i, &cell) in cells.iter().enumerate() {
                if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
                    prefetch::prefetch(codes.cell_nibbles(shape, ahead as usize));
                    prefetch::prefetch(codes.cell_weights(shape, ahead as usize));
                }
                let nib = codes.cell_nibbles(shape, cell as usize).as_ptr();
                let wts = codes.cell_weights(shape, cell as usize).as_ptr();
                let accs = &mut acc[..batch];
                for a in accs.iter_mut() {
                    *a = _mm_setzero_ps();
                }
                for e in 0..nb / 8 {
                    // the signed int8 levels of blocks 8e..8e+7 in coordinate order (two
                    // quads of 4 blocks), shared by the heads
                    let levels: [__m256i; 2] = std::array::from_fn(|half| {
                        let x = _mm_loadu_si128(nib.add(32 * e + 16 * half) as *const __m128i);
                        let lo = _mm_and_si128(x, low4);
                        let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), low4);
                        let codes = _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi));
                        _mm256_shuffle_epi8(table, codes)
                    });
                    let magnitude = [_mm256_abs_epi8(levels[0]), _mm256_abs_epi8(levels[1])];
                    let w = _mm256_cvtph_ps(_mm_loadu_si128(wts.add(8 * e) as *const __m128i));
                    for (o, a) in accs.iter_mut().enumerate() {
                        let qh = &q.queries[h0 + o];
                        // a quad's integer dots as [b0 b0 b1 b1 | b2 b2 b3 b3] halves
                        let quad = |half: usize| {
                            let qv =
                                _mm256_loadu_si256(qh.q.as_ptr().add(64 * e + 32 * half) as *const __m256i);
                            let pairs =
                                _mm256_maddubs_epi16(magnitude[half], _mm256_sign_epi8(qv, levels[half]));
                            _mm256_madd_epi16(pairs, ones)
                        };
                        let dots = _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(quad(0), quad(1)), order);
                        let factor = _mm256_loadu_ps(qh.factor.as_ptr().add(8 * e));
                        let terms = _mm256_mul_ps(w, _mm256_mul_ps(factor, _mm256_cvtepi32_ps(dots)));
                        // block b into accumulator b mod 4, in block order
                        let s = _mm_add_ps(*a, _mm256_castps256_ps128(terms));
                        *a = _mm_add_ps(s, _mm256_extractf128_ps::<1>(terms));
                    }
                }
                for (o, a) in accs.iter().enumerate() {
                    let mut x = [0.0f32; 4];
                    _mm_storeu_ps(x.as_mut_ptr(), *a);
                    out[(h0 - heads.start + o) * n + i] = (x[0] + x[1]) + (x[2] + x[3]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
    use crate::algorithm::rotation::Rotation;
    use crate::eval::synth::Rng;
    use crate::rows::{RowData, Rows};

    /// Every kernel this CPU runs gives `estimate`'s bits, for every head dim and group size.
    #[test]
    fn kernels_equal_the_scalar_estimate_bit_for_bit() {
        let mut rng = Rng::new(11);
        for d in [32, 64, 128, 256, 512] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 4);
            let n = 300;
            let keys: Vec<f32> =
                (0..n * d).map(|i| rng.normal() * if i % 7 == 0 { 20.0 } else { 1.0 }).collect();
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            let rows = Rows::packed(RowData::F32(&keys), d).unwrap();
            let all: Vec<usize> = (0..n).collect();
            encode_rows(&rot, &rows, &all, None, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
            for heads in [1, 3, 6, 16] {
                let q_rot: Vec<f32> = (0..heads * d).map(|_| rng.normal()).collect();
                let mut gq = GroupQueries::default();
                gq.set(&shape, &q_rot);
                let cells: Vec<u32> = (0..n as u32).filter(|c| c % 3 != 1).collect();
                let mut want = vec![0.0; heads * cells.len()];
                estimate_group(Kernel::Scalar, &shape, &store.as_ref(), &gq, 0..heads, &cells, &mut want);
                for (h, q) in q_rot.chunks_exact(d).enumerate() {
                    let mut qi = QueryI8::default();
                    qi.set(q);
                    let c = cells[5] as usize;
                    let direct = estimate(
                        &qi,
                        store.as_ref().cell_nibbles(&shape, c),
                        store.as_ref().cell_weights(&shape, c),
                    );
                    assert_eq!(want[h * cells.len() + 5].to_bits(), direct.to_bits());
                }
                let mut kernels = vec![Kernel::best(shape.n_blocks)];
                #[cfg(target_arch = "x86_64")]
                if shape.n_blocks.is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx2") {
                    kernels.push(Kernel::Avx2);
                }
                for k in kernels {
                    let mut got = vec![f32::NAN; heads * cells.len()];
                    estimate_group(k, &shape, &store.as_ref(), &gq, 0..heads, &cells, &mut got);
                    if heads > 2 {
                        let mut part = vec![f32::NAN; 2 * cells.len()];
                        estimate_group(k, &shape, &store.as_ref(), &gq, 1..3, &cells, &mut part);
                        assert_eq!(part, want[cells.len()..3 * cells.len()], "{k:?}, heads 1..3");
                    }
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{k:?} differs from estimate at d {d}, {heads} heads");
                }
            }
        }
    }
}
