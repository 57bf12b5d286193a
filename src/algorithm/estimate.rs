//! The 4-bit estimate of <k, q> from a key's codes: sum_b w_b <v_b, q_b> over the blocks of
//! 8 coordinates, v_b the key's 4-bit levels and q_b the rotated query's block. The query is
//! rounded to int8 per block on the block's own scale and the 16 signed levels to int8 on one
//! scale (`LEVELS_I8`), so that <v_b, q_b> is an exact integer sum, the same in any order and
//! on any hardware (on the GPU two 4-byte dot products, `dp4a`; on x86 `maddubs`); only the
//! weighted sum over the blocks is f32, in a fixed order: block b into accumulator b mod 4,
//! then (a0 + a1) + (a2 + a3). Against the same sum in f32 the rounding moves recall by at
//! most 0.001 on real keys (docs/FIDELITY.md, "The 4-bit estimate in int8 arithmetic").
//!
//! Every rounding is defined so that another implementation gives the same bits (the CUDA
//! kernels do, tested): a block's scale is max |q_j| / 127 (one f32 division), a coordinate
//! q_j / scale (one division) rounded half to even and clamped to [-127, 127]; a block's
//! factor is scale * LEVEL_SCALE (one product); a block's term is w_b * (factor * dot) with
//! dot the integer sum converted exactly (|dot| <= 8 * 127 * 127 < 2^24).

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

/// The 4-bit estimate of <k, q> for one cell (the oracle every kernel must equal).
pub fn estimate(q: &QueryI8, nibbles: &[u8], weights: &[f16]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::codebook::nibble_value;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
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

    /// The same weighted sum with the levels and the query unrounded, in f64.
    fn estimate_unrounded(q_rot: &[f32], nibbles: &[u8], weights: &[f16]) -> f64 {
        let level = |j: usize| {
            let byte = nibbles[j / 2];
            nibble_value(if j.is_multiple_of(2) { byte & 15 } else { byte >> 4 }) as f64
        };
        let block =
            |b: usize| (0..BLOCK).map(|i| level(b * BLOCK + i) * q_rot[b * BLOCK + i] as f64).sum::<f64>();
        weights.iter().enumerate().map(|(b, w)| w.to_f64() * block(b)).sum()
    }

    #[test]
    fn int8_estimate_tracks_the_unrounded_estimate() {
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
            let mut qi = QueryI8::default();
            qi.set(&q_rot);
            let c = store.as_ref();
            let (mut err2, mut ref2) = (0.0f64, 0.0f64);
            for cell in 0..n {
                let (nib, w) = (c.cell_nibbles(&shape, cell), c.cell_weights(&shape, cell));
                let (f, i) = (estimate_unrounded(&q_rot, nib, w), estimate(&qi, nib, w) as f64);
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
