//! The fixed, data-independent codebook: sign centroids per block and the 8 magnitude
//! levels of the 4-bit code. Nothing here is trained, which is why retrieval does not
//! drift as generation goes on (docs/DESIGN.md §1).

use crate::algorithm::rank::score_key;
use crate::shape::{BLOCK, N_CENTROIDS, N_LEVELS};

pub use crate::constants::{LEVELS, THRESHOLDS};

/// Magnitude index of a normalised coordinate |u_j|: the number of thresholds at or below
/// it. NaN maps to 0 (every comparison is false).
#[inline]
pub fn magnitude_index(x: f32) -> u8 {
    THRESHOLDS.iter().map(|&t| (x >= t) as u8).sum()
}

/// Centroid code of one block: bit j set when coordinate j is non-negative. This is the
/// nearest sign pattern to the block (any positive scaling of it).
#[inline]
pub fn sign_code(block: &[f32]) -> u8 {
    debug_assert_eq!(block.len(), BLOCK);
    block.iter().enumerate().fold(0u8, |c, (j, &x)| c | (((x >= 0.0) as u8) << j))
}

/// One coordinate's 4-bit code: the magnitude index in bits 0-2, the sign bit (set when
/// non-negative, as in the centroid code) in bit 3.
#[inline]
pub fn nibble(non_negative: bool, magnitude: u8) -> u8 {
    debug_assert!((magnitude as usize) < N_LEVELS);
    magnitude | ((non_negative as u8) << 3)
}

/// The reconstruction value v_j a 4-bit code stands for: sign times level.
#[inline]
pub fn nibble_value(code: u8) -> f32 {
    let level = LEVELS[(code & 7) as usize];
    if code & 8 != 0 {
        level
    } else {
        -level
    }
}

/// Scores of all 256 centroids for one query block: score(c) = <q_b, s(c)>, summed over
/// the coordinates in order so that every implementation rounds the same way (each
/// centroid's sum is taken coordinate by coordinate; the loop runs over centroids inside,
/// which vectorises without changing any sum).
pub fn centroid_scores(q_block: &[f32], out: &mut [f32; N_CENTROIDS]) {
    debug_assert_eq!(q_block.len(), BLOCK);
    out.fill(0.0);
    for (j, &q) in q_block.iter().enumerate() {
        for (c, score) in out.iter_mut().enumerate() {
            *score += if c >> j & 1 != 0 { q } else { -q };
        }
    }
}

/// Centroids of one block sorted best first (see `rank`): the walk order of the tiers.
///
/// A centroid's complement scores exactly the negated sum (negation is exact and rounds
/// symmetrically), so only the centroids that score above zero are sorted: those with
/// equal scores stay lower index first, and in reverse their complements are the negative
/// half in rank order, equal scores again lower index first (~c = 255 - c reverses index
/// order). The zeros (of either sign) go between, lower index first. NaN scores (a NaN in
/// the query makes every score NaN) rank as -inf, which leaves index order.
pub fn centroid_order(scores: &[f32; N_CENTROIDS], order: &mut [u8; N_CENTROIDS]) {
    if scores.iter().any(|s| s.is_nan()) {
        let mut keys: [u64; N_CENTROIDS] =
            std::array::from_fn(|c| (score_key(scores[c]) as u64) << 8 | c as u64);
        keys.sort_unstable();
        for (o, k) in order.iter_mut().zip(keys) {
            *o = k as u8;
        }
        return;
    }
    let mut positive = [0u64; N_CENTROIDS / 2];
    let mut n_pos = 0;
    for (c, &s) in scores.iter().enumerate() {
        if s > 0.0 {
            positive[n_pos] = (score_key(s) as u64) << 8 | c as u64;
            n_pos += 1;
        }
    }
    let positive = &mut positive[..n_pos];
    positive.sort_unstable();
    let mut i = 0;
    for &k in positive.iter() {
        order[i] = k as u8;
        i += 1;
    }
    for (c, &s) in scores.iter().enumerate() {
        if s == 0.0 {
            order[i] = c as u8;
            i += 1;
        }
    }
    for &k in positive.iter().rev() {
        order[i] = !(k as u8);
        i += 1;
    }
    debug_assert_eq!(i, N_CENTROIDS);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lloyd-Max on [0, 1] for the density (1 - x^2)^(5/2) with exact interval moments:
    /// F0 = ∫ (1-x²)^(5/2) (x = sin θ: ∫cos⁶θ), F1 = ∫ x (1-x²)^(5/2) = -(1-x²)^(7/2) / 7.
    fn lloyd_max() -> ([f64; 8], [f64; 7]) {
        let f0 = |x: f64| {
            let t = x.asin();
            5.0 * t / 16.0
                + 15.0 / 64.0 * (2.0 * t).sin()
                + 3.0 / 64.0 * (4.0 * t).sin()
                + (6.0 * t).sin() / 192.0
        };
        let f1 = |x: f64| -(1.0 - x * x).powf(3.5) / 7.0;
        let mut levels: [f64; 8] = std::array::from_fn(|i| (i as f64 + 0.5) / 8.0);
        let mut thresholds = [0.0f64; 7];
        for _ in 0..100_000 {
            for i in 0..7 {
                thresholds[i] = 0.5 * (levels[i] + levels[i + 1]);
            }
            let edge = |i: usize| match i {
                0 => 0.0,
                8 => 1.0,
                _ => thresholds[i - 1],
            };
            let next: [f64; 8] = std::array::from_fn(|i| {
                let (a, b) = (edge(i), edge(i + 1));
                (f1(b) - f1(a)) / (f0(b) - f0(a))
            });
            let change = next.iter().zip(&levels).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            levels = next;
            if change < 1e-15 {
                break;
            }
        }
        (levels, thresholds)
    }

    /// The radix order against a comparison sort by `rank_order`, with ties, zeros of both
    /// signs and NaN among the scores.
    #[test]
    fn centroid_order_is_rank_order() {
        use crate::algorithm::rank::rank_order;
        let mut rng = crate::eval::synth::Rng::new(12);
        for case in 0..300 {
            let q: Vec<f32> = (0..BLOCK)
                .map(|j| match case % 4 {
                    0 => rng.normal(),
                    1 => (rng.below(3) as f32 - 1.0) * 0.5, // many exact ties and zeros
                    2 if j == 3 => f32::NAN,
                    _ => rng.normal() * 1e-30,
                })
                .collect();
            let mut scores = [0.0f32; N_CENTROIDS];
            centroid_scores(&q, &mut scores);
            for (c, &s) in scores.iter().enumerate() {
                let mut want = 0.0f32;
                for (j, &x) in q.iter().enumerate() {
                    want += if c >> j & 1 != 0 { x } else { -x };
                }
                assert!(s.to_bits() == want.to_bits() || (s.is_nan() && want.is_nan()));
            }
            let mut order = [0u8; N_CENTROIDS];
            centroid_order(&scores, &mut order);
            let mut want: Vec<u8> = (0..=255).collect();
            want.sort_by(|&a, &b| rank_order(scores[a as usize], a as u32, scores[b as usize], b as u32));
            assert_eq!(order.to_vec(), want, "case {case}");
        }
    }

    #[test]
    fn lloyd_max_rederived() {
        let (levels, thresholds) = lloyd_max();
        for (i, (&ours, derived)) in LEVELS.iter().zip(levels).enumerate() {
            assert!((ours as f64 - derived).abs() < 1e-7, "level {i}: {ours} vs {derived}");
        }
        for (i, (&ours, derived)) in THRESHOLDS.iter().zip(thresholds).enumerate() {
            assert!((ours as f64 - derived).abs() < 1e-7, "threshold {i}: {ours} vs {derived}");
        }
        // The reference code's four-digit values (from a Lloyd run stopped after 100 iterations).
        let design_levels = [0.0425, 0.1280, 0.2152, 0.3053, 0.4003, 0.5030, 0.6193, 0.7648];
        let design_thresholds = [0.0853, 0.1716, 0.2603, 0.3528, 0.4516, 0.5612, 0.6921];
        for (a, b) in LEVELS.iter().zip(design_levels) {
            assert!((*a as f64 - b).abs() <= 5e-5, "{a} vs DESIGN {b}");
        }
        for (a, b) in THRESHOLDS.iter().zip(design_thresholds) {
            assert!((*a as f64 - b).abs() <= 5e-5, "{a} vs DESIGN {b}");
        }
    }

    #[test]
    fn buckets_follow_thresholds() {
        assert_eq!(magnitude_index(0.0), 0);
        assert_eq!(magnitude_index(THRESHOLDS[0]), 1);
        assert_eq!(magnitude_index(0.5), 5);
        assert_eq!(magnitude_index(1.0), 7);
        assert_eq!(magnitude_index(f32::NAN), 0);
        for (i, &l) in LEVELS.iter().enumerate() {
            assert_eq!(magnitude_index(l) as usize, i, "level {i} falls in its own bucket");
        }
    }

    #[test]
    fn sign_codes_and_nibbles_round_trip() {
        let block = [1.0, -2.0, 0.0, -0.0, 3.0, -1e-9, 5.0, -7.0];
        // -0.0 >= 0.0 holds, so -0 counts as non-negative, like +0.
        assert_eq!(sign_code(&block), 0b0101_1101);
        for code in 0u8..16 {
            let v = nibble_value(code);
            assert_eq!(nibble(v >= 0.0, magnitude_index(v.abs())), code);
        }
    }

    #[test]
    fn centroid_scores_are_dot_products_and_best_is_the_sign_pattern() {
        let q = [0.3f32, -1.0, 0.25, 2.0, -0.5, 0.0, 1.5, -0.125];
        let mut scores = [0.0; N_CENTROIDS];
        centroid_scores(&q, &mut scores);
        for (c, score) in scores.iter().enumerate() {
            let exact: f32 = q.iter().enumerate().map(|(j, &x)| if c >> j & 1 != 0 { x } else { -x }).sum();
            assert!((score - exact).abs() < 1e-6);
        }
        let mut order = [0u8; N_CENTROIDS];
        centroid_order(&scores, &mut order);
        // q[5] == 0: both sign patterns of coordinate 5 tie; the lower code wins.
        assert_eq!(order[0], sign_code(&q) & !(1 << 5));
        assert_eq!(order[1], sign_code(&q));
        assert!(order.windows(2).all(|w| scores[w[0] as usize] >= scores[w[1] as usize]));
    }
}
