//! Exact softmax attention of a group of query heads over a given list of cells: the last
//! stage of every ParisKV step (sink ∪ retrieved ∪ window) and, over all cells, dense
//! attention itself. Same arithmetic in both cases, so full coverage reproduces dense
//! attention bit for bit when the cells come in the same order.

use multiversion::multiversion;

use crate::algorithm::{portable, prefetch};
use crate::error::{Error, Result};
use crate::rows::Rows;

/// Scale and optional tanh logit softcap, as llama.cpp applies them:
/// `s = q·k * scale`, then `s = softcap * tanh(s / softcap)` when `softcap > 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub scale: f32,
    pub softcap: f32,
}

impl AttnParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::invalid(format!("attention scale {} must be finite and > 0", self.scale)));
        }
        if !(self.softcap.is_finite() && self.softcap >= 0.0) {
            return Err(Error::invalid(format!(
                "softcap {} must be finite and >= 0 (0 = off)",
                self.softcap
            )));
        }
        Ok(())
    }

    #[inline]
    pub fn logit(&self, dot: f32) -> f32 {
        let s = dot * self.scale;
        if self.softcap > 0.0 {
            self.softcap * (s / self.softcap).tanh()
        } else {
            s
        }
    }

    /// `logit` with the portable tanh: what selections rank by, equal on CPU and GPU.
    #[inline]
    pub fn selection_logit(&self, dot: f32) -> f32 {
        let s = dot * self.scale;
        if self.softcap > 0.0 {
            self.softcap * portable::tanh(s / self.softcap)
        } else {
            s
        }
    }
}

/// Dot product with eight independent partial sums (vectorises; fixed summation order).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `out[h] = dot(query h, row)` for the heads `queries` holds back to back (`row.len()`
/// values each), bit for bit: with AVX2 the eight partial sums of `dot` are the eight lanes
/// of one vector (multiplies and adds unfused, as `dot` does them), each chunk of the row
/// loaded once for all heads.
pub fn dot_heads(queries: &[f32], row: &[f32], out: &mut [f32]) {
    let d = row.len();
    assert!(
        queries.len() == out.len() * d,
        "dot_heads: {} query values for {} heads of {d}",
        queries.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if d >= 8 && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was detected just above; the sizes were checked.
        unsafe { dot_heads_avx(queries, row, out) };
        return;
    }
    for (o, q) in out.iter_mut().zip(queries.chunks_exact(d.max(1))) {
        *o = dot(q, row);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn dot_heads_avx(queries: &[f32], row: &[f32], out: &mut [f32]) {
    let d = row.len();
    let mut h0 = 0;
    while h0 < out.len() {
        let q = &queries[h0 * d..];
        // a fixed number of heads per pass, so that their accumulators stay in registers
        let done = match out.len() - h0 {
            1 => unsafe { dot_batch_avx::<1>(q, row, &mut out[h0..]) },
            2 => unsafe { dot_batch_avx::<2>(q, row, &mut out[h0..]) },
            3 => unsafe { dot_batch_avx::<3>(q, row, &mut out[h0..]) },
            4 | 5 => unsafe { dot_batch_avx::<4>(q, row, &mut out[h0..]) },
            6 | 7 => unsafe { dot_batch_avx::<6>(q, row, &mut out[h0..]) },
            _ => unsafe { dot_batch_avx::<8>(q, row, &mut out[h0..]) },
        };
        h0 += done;
    }
}

/// `dot_heads` for the first NH heads of `queries`; returns NH.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn dot_batch_avx<const NH: usize>(queries: &[f32], row: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let d = row.len();
    assert!(queries.len() >= NH * d && out.len() >= NH);
    let (chunks, tail_start) = (d / 8, d / 8 * 8);
    let mut acc = [_mm256_setzero_ps(); NH];
    for c in 0..chunks {
        // SAFETY: c * 8 + 8 <= d for the row and for each of the NH queries (checked above).
        let x = unsafe { _mm256_loadu_ps(row.as_ptr().add(c * 8)) };
        for (h, a) in acc.iter_mut().enumerate() {
            let q = unsafe { _mm256_loadu_ps(queries.as_ptr().add(h * d + c * 8)) };
            *a = _mm256_add_ps(*a, _mm256_mul_ps(q, x));
        }
    }
    for (h, a) in acc.iter().enumerate() {
        let mut l = [0.0f32; 8];
        // SAFETY: `l` holds 8 floats.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), *a) };
        let mut tail = 0.0;
        for (x, y) in queries[h * d + tail_start..(h + 1) * d].iter().zip(&row[tail_start..]) {
            tail += x * y;
        }
        out[h] = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7])) + tail;
    }
    NH
}

/// Reusable buffers of an attention call.
#[derive(Clone, Debug, Default)]
pub struct AttnScratch {
    row: Vec<f32>,
    dots: Vec<f32>,
    logits: Vec<f32>,
    inv_sums: Vec<f32>,
}

// Compiled for baseline x86-64 and again for AVX2/AVX-512 (chosen at run time), so the
// dot products and value sums run on the widest vectors the CPU has. No FMA contraction
// happens in Rust, so every clone rounds exactly like the baseline.
#[multiversion(targets = "simd")]
/// Attention of a group of query heads (`queries`, `[n_heads][dk]`) over the cells listed
/// in `cells`, with keys and values read from `k` and `v`; writes `[n_heads][dv]` into
/// `out`. An empty cell list yields zeros.
pub fn attend(
    queries: &[f32],
    k: &Rows,
    v: &Rows,
    cells: &[u32],
    params: AttnParams,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) -> Result<()> {
    let (dk, dv) = (k.dim(), v.dim());
    let n_heads = queries.len() / dk.max(1);
    if queries.len() != n_heads * dk || out.len() != n_heads * dv {
        return Err(Error::invalid(format!(
            "attend: {} query values and {} outputs do not make whole heads of dims {dk}/{dv}",
            queries.len(),
            out.len()
        )));
    }
    if let Some(&c) = cells.iter().find(|&&c| c as usize >= k.len().min(v.len())) {
        return Err(Error::invalid(format!(
            "attend: cell {c} out of range ({} keys, {} values)",
            k.len(),
            v.len()
        )));
    }
    let n = cells.len();
    scratch.row.resize(dk.max(dv), 0.0);
    scratch.logits.resize(n_heads * n, 0.0);
    scratch.dots.resize(n_heads, 0.0);
    // Pass 1: logits, each key row converted once for all heads of the group.
    for (i, &cell) in cells.iter().enumerate() {
        if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
            k.prefetch(ahead as usize);
        }
        let row = &mut scratch.row[..dk];
        k.load(cell as usize, row);
        dot_heads(queries, row, &mut scratch.dots[..n_heads]);
        for (h, &x) in scratch.dots[..n_heads].iter().enumerate() {
            scratch.logits[h * n + i] = params.logit(x);
        }
    }
    out.fill(0.0);
    if n == 0 {
        return Ok(());
    }
    // Softmax per head, weights left in place of the logits.
    scratch.inv_sums.clear();
    for logits in scratch.logits.chunks_exact_mut(n) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for l in logits.iter_mut() {
            *l = (*l - max).exp();
            sum += *l;
        }
        scratch.inv_sums.push(1.0 / sum);
    }
    // Pass 2: weighted sum of value rows.
    for (i, &cell) in cells.iter().enumerate() {
        if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
            v.prefetch(ahead as usize);
        }
        let row = &mut scratch.row[..dv];
        v.load(cell as usize, row);
        for (h, o) in out.chunks_exact_mut(dv).enumerate() {
            let p = scratch.logits[h * n + i];
            for (acc, &x) in o.iter_mut().zip(row.iter()) {
                *acc += p * x;
            }
        }
    }
    for (h, o) in out.chunks_exact_mut(dv).enumerate() {
        for acc in o.iter_mut() {
            *acc *= scratch.inv_sums[h];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::synth::Rng;
    use crate::rows::RowData;

    /// Straight f64 softmax attention for one head.
    fn reference(q: &[f32], keys: &[Vec<f32>], vals: &[Vec<f32>], p: AttnParams) -> Vec<f64> {
        let logits: Vec<f64> = keys
            .iter()
            .map(|k| {
                let s = k.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * p.scale as f64;
                if p.softcap > 0.0 {
                    p.softcap as f64 * (s / p.softcap as f64).tanh()
                } else {
                    s
                }
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = w.iter().sum();
        (0..vals[0].len())
            .map(|j| w.iter().zip(vals).map(|(w, v)| w * v[j] as f64).sum::<f64>() / sum)
            .collect()
    }

    #[test]
    fn matches_f64_reference_with_gqa_and_softcap() {
        let mut rng = Rng::new(4);
        let (d, n, heads) = (64, 300, 4);
        let keys: Vec<Vec<f32>> = (0..n).map(|_| (0..d).map(|_| rng.normal()).collect()).collect();
        let vals: Vec<Vec<f32>> = (0..n).map(|_| (0..d).map(|_| rng.normal()).collect()).collect();
        let kf: Vec<f32> = keys.concat();
        let vf: Vec<f32> = vals.concat();
        let q: Vec<f32> = (0..heads * d).map(|_| 2.0 * rng.normal()).collect();
        let cells: Vec<u32> = (0..n as u32).filter(|c| c % 7 != 3).collect();
        let kr = Rows::packed(RowData::F32(&kf), d).unwrap();
        let vr = Rows::packed(RowData::F32(&vf), d).unwrap();
        for params in [AttnParams { scale: 0.125, softcap: 0.0 }, AttnParams { scale: 0.125, softcap: 2.0 }] {
            let mut out = vec![0.0; heads * d];
            attend(&q, &kr, &vr, &cells, params, &mut AttnScratch::default(), &mut out).unwrap();
            let ks: Vec<Vec<f32>> = cells.iter().map(|&c| keys[c as usize].clone()).collect();
            let vs: Vec<Vec<f32>> = cells.iter().map(|&c| vals[c as usize].clone()).collect();
            for h in 0..heads {
                let want = reference(&q[h * d..][..d], &ks, &vs, params);
                for (a, b) in out[h * d..][..d].iter().zip(&want) {
                    assert!((*a as f64 - b).abs() < 1e-5, "{params:?} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn dot_heads_equals_dot_bit_for_bit() {
        let mut rng = Rng::new(8);
        for d in [8, 20, 64, 128, 136, 256] {
            for heads in [1, 3, 8, 11] {
                let q: Vec<f32> = (0..heads * d).map(|_| rng.normal() * 3.0).collect();
                let row: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
                let mut got = vec![0.0; heads];
                dot_heads(&q, &row, &mut got);
                for (h, &x) in got.iter().enumerate() {
                    assert_eq!(
                        x.to_bits(),
                        dot(&q[h * d..][..d], &row).to_bits(),
                        "d {d}, head {h} of {heads}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_cells_and_empty_lists() {
        let kf = vec![1.0f32; 16];
        let kr = Rows::packed(RowData::F32(&kf), 8).unwrap();
        let p = AttnParams { scale: 1.0, softcap: 0.0 };
        let mut out = vec![7.0; 8];
        let mut s = AttnScratch::default();
        assert!(attend(&[0.0; 8], &kr, &kr, &[2], p, &mut s, &mut out).is_err());
        attend(&[0.0; 8], &kr, &kr, &[], p, &mut s, &mut out).unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
        assert!(AttnParams { scale: 0.0, softcap: 0.0 }.validate().is_err());
        assert!(AttnParams { scale: 1.0, softcap: -1.0 }.validate().is_err());
    }
}
