//! The group policy's ranking score over many cells at once: each head's probabilities
//! (`gqa::HeadSoftmax`) and their mean, with the portable exp computed once per logit and
//! vectorised. Same bits as the oracle: the exp below is `portable::exp_nonpositive`
//! without branches (lanes select instead), the normaliser the same fixed-point sum.

use multiversion::multiversion;

use crate::algorithm::portable::{from_fixed, to_fixed};
use crate::constants::{EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E, EXP_POLY};

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
        let n_inf = l.iter().filter(|&&x| x == f32::INFINITY).count();
        let max = l.iter().copied().filter(|x| x.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        if n_inf > 0 {
            // +inf rows share the head's probability; everything else gets none
            let share = 1.0 / n_inf as f32;
            for (s, &x) in scores.iter_mut().zip(l) {
                *s += if x == f32::INFINITY { share } else { 0.0 } / g as f32;
            }
            continue;
        }
        exp_shifted(l, max, e);
        let norm = from_fixed(
            l.iter().zip(e.iter()).filter(|(x, _)| x.is_finite()).map(|(_, &v)| to_fixed(v)).sum(),
        );
        add_probs(l, e, norm, g as f32, scores);
    }
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
    use crate::algorithm::portable::exp_nonpositive;
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
