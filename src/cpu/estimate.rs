//! The 4-bit estimate of <k, q> (`encode::estimate`) for every head of a group at once,
//! each cell's 4-bit codes and weights read once for all heads.
//!
//! The vector kernels put one block per lane and reproduce `estimate`'s arithmetic
//! exactly, so that they select the same cells as the oracle and the GPU: a coordinate's
//! term is its signed level times the rotated query coordinate (what the oracle's table
//! holds), a block's eight terms are added as the same tree, times the block's weight,
//! and block b goes into accumulator b mod 4 in block order; multiplies and adds are never
//! fused. AVX-512 (16 blocks per vector, the signed levels looked up by one permute) for
//! 16·k blocks (head dim 128 and up), AVX2 (8 blocks, magnitude by a permute and the sign
//! from the code's bit 3) for 8·k blocks, `estimate` itself otherwise.

use std::ops::Range;

use crate::algorithm::codebook::{nibble_value, LEVELS};
use crate::algorithm::encode::{estimate, estimator_lut, Codes};
use crate::algorithm::prefetch;
use crate::shape::{Shape, BLOCK};

/// The rotated queries of a group in the kernels' layout: `[head][j][block]`, coordinate j
/// of every block together, plus each head's `estimator_lut` for the scalar path.
#[derive(Clone, Debug, Default)]
pub struct GroupQueries {
    n_blocks: usize,
    heads: usize,
    by_coordinate: Vec<f32>,
    luts: Vec<Vec<f32>>,
}

impl GroupQueries {
    /// Lays out `q_rot`: `heads` rotated queries of `shape.padded_dim` values back to back.
    pub fn set(&mut self, shape: &Shape, q_rot: &[f32]) {
        let (nb, d) = (shape.n_blocks, shape.padded_dim);
        self.n_blocks = nb;
        self.heads = q_rot.len() / d;
        self.by_coordinate.resize(q_rot.len(), 0.0);
        for (h, q) in q_rot.chunks_exact(d).enumerate() {
            let out = &mut self.by_coordinate[h * d..][..d];
            for (b, block) in q.chunks_exact(BLOCK).enumerate() {
                for (j, &x) in block.iter().enumerate() {
                    out[j * nb + b] = x;
                }
            }
        }
        self.luts.resize_with(self.heads, Vec::new);
        for (h, q) in q_rot.chunks_exact(d).enumerate() {
            estimator_lut(q, &mut self.luts[h]);
        }
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Head h's `estimator_lut`.
    pub fn lut(&self, h: usize) -> &[f32] {
        &self.luts[h]
    }
}

/// Which kernel `estimate_group` runs for a shape on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The widest kernel the CPU runs for `n_blocks` blocks.
    pub fn best(n_blocks: usize) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if n_blocks.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
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
/// heads `heads` of `q`, equal to `estimate` with head h's table, by `kernel` (from
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
    assert!(heads.end <= q.heads && out.len() >= heads.len() * n, "estimate_group: sizes");
    assert!(q.n_blocks == shape.n_blocks, "estimate_group: queries laid out for another shape");
    assert!(
        cells.iter().all(|&c| (c as usize) < codes.weights.len() / shape.n_weights().max(1)),
        "estimate_group: cell out of range"
    );
    match kernel {
        Kernel::Scalar => {
            for (i, &c) in cells.iter().enumerate() {
                let (nib, w) = (codes.cell_nibbles(shape, c as usize), codes.cell_weights(shape, c as usize));
                for (o, h) in heads.clone().enumerate() {
                    out[o * n + i] = estimate(&q.luts[h], nib, w);
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => {
            assert!(shape.n_blocks.is_multiple_of(8));
            // SAFETY: `Kernel::best` chose this kernel after detecting AVX2 and F16C; the
            // cells were checked above, so every row read lies inside `codes`.
            unsafe { x86::estimate_avx2(shape, codes, q, heads, cells, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => {
            assert!(shape.n_blocks.is_multiple_of(16));
            // SAFETY: as above, with AVX-512F detected.
            unsafe { x86::estimate_avx512(shape, codes, q, heads, cells, out) }
        }
    }
}

/// Signed levels by 4-bit code (`nibble_value`), for the AVX-512 permute.
fn signed_levels() -> [f32; 16] {
    std::array::from_fn(|c| nibble_value(c as u8))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{prefetch, signed_levels, Codes, GroupQueries, Range, Shape, LEVELS};

    /// Heads whose accumulators one pass over the cells keeps.
    const HEAD_BATCH: usize = 16;

    /// Adds the four 4-block groups of `x` (blocks 0-3, 4-7, ...) into `acc` in block order:
    /// lane i of `acc` is the oracle's accumulator i.
    #[inline(always)]
    unsafe fn add_groups_512(acc: __m128, x: __m512) -> __m128 {
        let a = _mm_add_ps(acc, _mm512_extractf32x4_ps::<0>(x));
        let a = _mm_add_ps(a, _mm512_extractf32x4_ps::<1>(x));
        let a = _mm_add_ps(a, _mm512_extractf32x4_ps::<2>(x));
        _mm_add_ps(a, _mm512_extractf32x4_ps::<3>(x))
    }

    /// (acc0 + acc1) + (acc2 + acc3).
    #[inline(always)]
    unsafe fn finish(acc: __m128) -> f32 {
        let mut a = [0.0f32; 4];
        _mm_storeu_ps(a.as_mut_ptr(), acc);
        (a[0] + a[1]) + (a[2] + a[3])
    }

    /// A block's eight terms added as `block_dot` does: ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7)).
    macro_rules! block_tree {
        ($add:ident, $p:expr) => {{
            let p = $p;
            $add($add($add(p[0], p[1]), $add(p[2], p[3])), $add($add(p[4], p[5]), $add(p[6], p[7])))
        }};
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn estimate_avx512(
        shape: &Shape,
        codes: &Codes,
        q: &GroupQueries,
        heads: Range<usize>,
        cells: &[u32],
        out: &mut [f32],
    ) {
        let mut h0 = heads.start;
        while h0 < heads.end {
            // a fixed number of heads per pass over the cells: their accumulators stay in
            // registers
            let batch = match heads.end - h0 {
                1 => estimate_avx512_batch::<1>,
                2 => estimate_avx512_batch::<2>,
                3 => estimate_avx512_batch::<3>,
                4 | 5 => estimate_avx512_batch::<4>,
                6 | 7 => estimate_avx512_batch::<6>,
                _ => estimate_avx512_batch::<8>,
            };
            h0 += unsafe { batch(shape, codes, q, h0, h0 - heads.start, cells, out) };
        }
    }

    /// Heads `h0..h0 + NH` of `q` into `out` from row `row0` on (`[head][cell]`); returns NH.
    #[target_feature(enable = "avx512f")]
    unsafe fn estimate_avx512_batch<const NH: usize>(
        shape: &Shape,
        codes: &Codes,
        q: &GroupQueries,
        h0: usize,
        row0: usize,
        cells: &[u32],
        out: &mut [f32],
    ) -> usize {
        let (nb, d, n) = (shape.n_blocks, shape.padded_dim, cells.len());
        assert!(q.by_coordinate.len() >= (h0 + NH) * d && out.len() >= (row0 + NH) * n);
        let levels = signed_levels();
        let table = _mm512_loadu_ps(levels.as_ptr());
        for (i, &cell) in cells.iter().enumerate() {
            if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
                prefetch::prefetch(codes.cell_nibbles(shape, ahead as usize));
                prefetch::prefetch(codes.cell_weights(shape, ahead as usize));
            }
            let nib = codes.cell_nibbles(shape, cell as usize).as_ptr();
            let wts = codes.cell_weights(shape, cell as usize).as_ptr();
            let mut acc = [_mm_setzero_ps(); NH];
            for chunk in 0..nb / 16 {
                // lane b: the 4 bytes (8 codes) of block 16·chunk + b; code j in bits 4j..4j+3
                let words = _mm512_loadu_si512(nib.add(chunk * 64) as *const __m512i);
                let w = _mm512_cvtph_ps(_mm256_loadu_si256(wts.add(chunk * 16) as *const __m256i));
                let v: [__m512; 8] = [
                    _mm512_permutexvar_ps(words, table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<8>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<12>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<16>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<20>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<24>(words), table),
                    _mm512_permutexvar_ps(_mm512_srli_epi32::<28>(words), table),
                ];
                for (h, a) in acc.iter_mut().enumerate() {
                    let qh = q.by_coordinate.as_ptr().add((h0 + h) * d + chunk * 16);
                    let p: [__m512; 8] =
                        std::array::from_fn(|j| _mm512_mul_ps(v[j], _mm512_loadu_ps(qh.add(j * nb))));
                    let block = block_tree!(_mm512_add_ps, p);
                    *a = add_groups_512(*a, _mm512_mul_ps(w, block));
                }
            }
            for (h, a) in acc.iter().enumerate() {
                out[(row0 + h) * n + i] = finish(*a);
            }
        }
        NH
    }

    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn estimate_avx2(
        shape: &Shape,
        codes: &Codes,
        q: &GroupQueries,
        heads: Range<usize>,
        cells: &[u32],
        out: &mut [f32],
    ) {
        let (nb, d, n) = (shape.n_blocks, shape.padded_dim, cells.len());
        let magnitudes = _mm256_loadu_ps(LEVELS.as_ptr());
        let sign = _mm256_set1_epi32(i32::MIN);
        let mut acc = [_mm_setzero_ps(); HEAD_BATCH];
        // the signed level of code j of every lane: the magnitude by a permute (low 3 bits),
        // negated unless bit 3 (non-negative) is set
        macro_rules! level {
            ($words:expr, $j:literal) => {{
                let idx = _mm256_srli_epi32::<{ 4 * $j }>($words);
                let m = _mm256_permutevar8x32_ps(magnitudes, idx);
                let bit3 = _mm256_slli_epi32::<{ 28 - 4 * $j }>($words);
                _mm256_xor_ps(m, _mm256_castsi256_ps(_mm256_andnot_si256(bit3, sign)))
            }};
        }
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
                for chunk in 0..nb / 8 {
                    let words = _mm256_loadu_si256(nib.add(chunk * 32) as *const __m256i);
                    let w = _mm256_cvtph_ps(_mm_loadu_si128(wts.add(chunk * 8) as *const __m128i));
                    let v: [__m256; 8] = [
                        level!(words, 0),
                        level!(words, 1),
                        level!(words, 2),
                        level!(words, 3),
                        level!(words, 4),
                        level!(words, 5),
                        level!(words, 6),
                        level!(words, 7),
                    ];
                    for (h, a) in accs.iter_mut().enumerate() {
                        let qh = q.by_coordinate.as_ptr().add((h0 + h) * d + chunk * 8);
                        let p: [__m256; 8] =
                            std::array::from_fn(|j| _mm256_mul_ps(v[j], _mm256_loadu_ps(qh.add(j * nb))));
                        let x = _mm256_mul_ps(w, block_tree!(_mm256_add_ps, p));
                        let s = _mm_add_ps(*a, _mm256_castps256_ps128(x));
                        *a = _mm_add_ps(s, _mm256_extractf128_ps::<1>(x));
                    }
                }
                for (h, a) in accs.iter().enumerate() {
                    out[(h0 - heads.start + h) * n + i] = finish(*a);
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
                    let mut lut = Vec::new();
                    estimator_lut(q, &mut lut);
                    let c = cells[5] as usize;
                    let direct = estimate(
                        &lut,
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
