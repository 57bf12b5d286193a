//! The group policy's ranking score over many cells at once: each head's probabilities
//! (`gqa::HeadSoftmax`) and their mean, with the portable exp computed once per logit and
//! vectorised. Same bits as the oracle: the exp below is `portable::exp_nonpositive`
//! without branches (lanes select instead), the normaliser the same fixed-point sum.

use multiversion::multiversion;

use crate::algorithm::portable::from_fixed;
use crate::constants::{EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_POLY, FIXED_FRACTION_BITS};

/// `portable::exp_nonpositive` as straight-line code, so that a loop over it vectorises.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let xm = x.min(0.0); // NaN.min(0) is 0: a NaN lane computes e^0, then takes x
    let under = xm < EXP_FLOOR;
    let xc = if under { 0.0 } else { xm };
    let n = (xc * EXP_LOG2E).round_ties_even();
    let r = (xc - n * EXP_LN2_HI) - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    let e = y * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x.is_nan() {
        x
    } else if under {
        0.0
    } else {
        e
    }
}

// The lanes round like the scalar code on every target (no fused multiply-adds in Rust).
#[multiversion(targets = "simd")]
fn exp_shifted(logits: &[f32], max: f32, out: &mut [f32]) {
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = exp_lane(l - max);
    }
}

/// Group scores of n cells: `logits[h * n + i]` is head h's logit of cell i; `scores[i]`
/// receives the mean over the g heads of each head's probability, as
/// `gqa::rank_by_group_probability` adds them (head order, each `prob / g`).
pub fn group_scores(g: usize, logits: &[f32], scores: &mut Vec<f32>, e: &mut Vec<f32>) {
    let n = logits.len() / g.max(1);
    scores.clear();
    scores.resize(n, 0.0);
    e.resize(n, 0.0);
    for l in logits.chunks_exact(n.max(1)).take(g) {
        let (n_inf, max) = count_inf_and_max(l);
        if n_inf > 0 {
            // +inf rows share the head's probability; everything else gets none
            let share = 1.0 / n_inf as f32;
            for (s, &x) in scores.iter_mut().zip(l) {
                *s += if x == f32::INFINITY { share } else { 0.0 } / g as f32;
            }
            continue;
        }
        exp_shifted(l, max, e);
        add_probs(l, e, from_fixed(fixed_sum(l, e)), g as f32, scores);
    }
}

/// How many logits are +inf, and the largest finite one (-inf when none is).
#[multiversion(targets = "simd")]
fn count_inf_and_max(l: &[f32]) -> (usize, f32) {
    let (mut n_inf, mut max) = (0usize, f32::NEG_INFINITY);
    for &x in l {
        n_inf += usize::from(x == f32::INFINITY);
        max = if x.is_finite() && x > max { x } else { max };
    }
    (n_inf, max)
}

/// The sum of `to_fixed(e[i])` over the finite logits, without converting floats to u64
/// (which most vector units cannot): y = e * 2^32 (exact) is split into h * 2^16 + r, h and
/// r exact floats below 2^16 + 1, and `to_fixed` truncates y, which is h * 2^16 + trunc(r).
#[multiversion(targets = "simd")]
fn fixed_sum(l: &[f32], e: &[f32]) -> u64 {
    const SCALE: f32 = (1u64 << FIXED_FRACTION_BITS) as f32;
    let (mut hi, mut lo) = (0u64, 0u64);
    for (&x, &v) in l.iter().zip(e) {
        let y = if x.is_finite() { v * SCALE } else { 0.0 };
        let h = (y * (1.0 / 65536.0)).floor();
        let r = y - h * 65536.0;
        hi += h as u32 as u64;
        lo += r as u32 as u64;
    }
    (hi << 16) + lo
}

#[multiversion(targets = "simd")]
fn add_probs(logits: &[f32], e: &[f32], norm: f32, g: f32, scores: &mut [f32]) {
    for ((s, &l), &v) in scores.iter_mut().zip(logits).zip(e) {
        let prob = if l.is_finite() { v / norm } else { 0.0 };
        *s += prob / g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::gqa::HeadSoftmax;
    use crate::algorithm::portable::{exp_nonpositive, to_fixed};
    use crate::eval::synth::Rng;

    #[test]
    fn exp_lanes_equal_the_portable_exp() {
        let mut xs: Vec<f32> = (0..=200_000).map(|i| -(i as f32) * 4.1e-4).collect();
        xs.extend([
            0.0,
            -0.0,
            3.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -80.0,
            -80.000_01,
            -79.999_99,
            -1e-45,
        ]);
        let mut out = vec![0.0; xs.len()];
        exp_shifted(&xs, 0.0, &mut out);
        for (&x, &e) in xs.iter().zip(&out) {
            let want = exp_nonpositive(x);
            assert!(
                e.to_bits() == want.to_bits() || (e.is_nan() && want.is_nan()),
                "exp({x}) = {e}, not {want}"
            );
        }
    }

    #[test]
    fn fixed_sums_equal_to_fixed() {
        let mut rng = Rng::new(6);
        let mut e: Vec<f32> = (0..100_000).map(|_| rng.uniform()).collect();
        e.extend([0.0, 1.0, 1.0 - f32::EPSILON, f32::MIN_POSITIVE, 1.5e-5, 65536.0 / 4294967296.0]);
        e.extend((0..2000).map(|i| exp_nonpositive(-(i as f32) * 0.05)));
        let l: Vec<f32> =
            e.iter().enumerate().map(|(i, _)| if i % 97 == 0 { f32::NAN } else { 0.0 }).collect();
        let want: u64 = l.iter().zip(&e).filter(|(x, _)| x.is_finite()).map(|(_, &v)| to_fixed(v)).sum();
        assert_eq!(fixed_sum(&l, &e), want);
        for (&v, x) in e.iter().zip(&l) {
            assert_eq!(fixed_sum(&[*x], &[v]), if x.is_finite() { to_fixed(v) } else { 0 }, "{v}");
        }
    }

    /// The scores `gqa::rank_by_group_probability` adds up, bit for bit, with +inf, -inf
    /// and NaN logits among finite ones.
    #[test]
    fn group_scores_equal_the_oracle_sum() {
        let mut rng = Rng::new(4);
        for (g, n) in [(1, 10), (4, 1000), (6, 777)] {
            for special in [None, Some(f32::INFINITY), Some(f32::NEG_INFINITY), Some(f32::NAN)] {
                let mut logits: Vec<f32> = (0..g * n).map(|_| 8.0 * rng.normal()).collect();
                if let Some(x) = special {
                    logits[3] = x;
                    logits[n - 1] = x;
                }
                let (mut scores, mut e) = (Vec::new(), Vec::new());
                group_scores(g, &logits, &mut scores, &mut e);
                for (i, &got) in scores.iter().enumerate() {
                    let mut want = 0.0f32;
                    for l in logits.chunks_exact(n) {
                        want += HeadSoftmax::of(l.iter().copied()).prob(l[i]) / g as f32;
                    }
                    assert_eq!(got.to_bits(), want.to_bits(), "g {g}, cell {i}, {special:?}");
                }
            }
        }
    }
}
