//! The one ordering every selection uses (centroids, candidates, top-k), on the CPU and
//! on the GPU alike, so that results can be compared exactly: higher score first, NaN
//! ranked as -inf, equal scores (including -0 and +0) broken by the lower index.

use std::cmp::Ordering;

/// The score a selection ranks by: NaN becomes -inf so it sorts last and never wins.
#[inline]
pub fn rank_score(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// `Less` when `(sa, ia)` ranks before `(sb, ib)`. Total over (score, index) pairs.
#[inline]
pub fn rank_order(sa: f32, ia: u32, sb: f32, ib: u32) -> Ordering {
    let (sa, sb) = (rank_score(sa), rank_score(sb));
    match sb.partial_cmp(&sa) {
        Some(Ordering::Equal) | None => ia.cmp(&ib),
        Some(o) => o,
    }
}

/// A u32 that orders scores as `rank_order` does, best (highest) first: NaN as -inf, -0 as
/// +0. With the index below it (`rank_key`), integer order is rank order.
#[inline]
pub fn score_key(x: f32) -> u32 {
    let x = rank_score(x) + 0.0; // -0 + 0 = +0
    let bits = x.to_bits();
    // IEEE order as unsigned order (negatives flipped whole, positives above them), then
    // reversed so that higher scores come first
    let ascending = if bits >> 31 == 1 { !bits } else { bits | 1 << 31 };
    !ascending
}

/// `(score, index)` as one integer in rank order (lower ranks first).
#[inline]
pub fn rank_key(score: f32, index: u32) -> u64 {
    (score_key(score) as u64) << 32 | index as u64
}

/// Keeps the `k` smallest of `keys` (`rank_key`s: the best k), in rank order when `sorted`.
pub fn top_k_keys(keys: &mut Vec<u64>, k: usize, sorted: bool) {
    if k == 0 {
        keys.clear();
        return;
    }
    if keys.len() > k {
        keys.select_nth_unstable(k - 1);
        keys.truncate(k);
    }
    if sorted {
        keys.sort_unstable();
    }
}

/// Keeps the best `k` of `items` (score, index) in rank order; drops the rest.
pub fn top_k_in_place(items: &mut Vec<(f32, u32)>, k: usize) {
    let key = |a: &(f32, u32)| rank_key(a.0, a.1);
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by_key(k - 1, key);
        items.truncate(k);
    }
    items.sort_unstable_by_key(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_last_and_ties_by_index() {
        let mut v = vec![(1.0, 5), (f32::NAN, 0), (2.0, 9), (1.0, 3), (-0.0, 1), (0.0, 0)];
        top_k_in_place(&mut v, 5);
        let idx: Vec<u32> = v.iter().map(|p| p.1).collect();
        assert_eq!(idx, vec![9, 3, 5, 0, 1]);
    }

    #[test]
    fn keys_order_as_rank_order() {
        let scores = [
            f32::NAN,
            f32::NEG_INFINITY,
            -3.5,
            -f32::MIN_POSITIVE,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            f32::MIN_POSITIVE,
            2.0,
            f32::MAX,
            f32::INFINITY,
            -f32::NAN,
        ];
        for (i, &a) in scores.iter().enumerate() {
            for (j, &b) in scores.iter().enumerate() {
                for (ia, ib) in [(3u32, 7u32), (7, 3), (5, 5)] {
                    let want = rank_order(a, ia, b, ib);
                    assert_eq!(
                        rank_key(a, ia).cmp(&rank_key(b, ib)),
                        want,
                        "{a} #{ia} vs {b} #{ib} ({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn k_larger_than_len_sorts_all() {
        let mut v = vec![(0.5, 2), (0.7, 1)];
        top_k_in_place(&mut v, 10);
        assert_eq!(v, vec![(0.7, 1), (0.5, 2)]);
        top_k_in_place(&mut v, 0);
        assert!(v.is_empty());
    }
}
