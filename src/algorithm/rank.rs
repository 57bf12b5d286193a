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

/// Keeps the best `k` of `items` (score, index) in rank order; drops the rest.
pub fn top_k_in_place(items: &mut Vec<(f32, u32)>, k: usize) {
    let cmp = |a: &(f32, u32), b: &(f32, u32)| rank_order(a.0, a.1, b.0, b.1);
    if k == 0 {
        items.clear();
        return;
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, cmp);
        items.truncate(k);
    }
    items.sort_unstable_by(cmp);
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
    fn k_larger_than_len_sorts_all() {
        let mut v = vec![(0.5, 2), (0.7, 1)];
        top_k_in_place(&mut v, 10);
        assert_eq!(v, vec![(0.7, 1), (0.5, 2)]);
        top_k_in_place(&mut v, 0);
        assert!(v.is_empty());
    }
}
