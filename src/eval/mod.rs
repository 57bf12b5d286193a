//! Evaluation support (feature `eval`; not in the library llama.cpp links): exact baselines
//! and retrieval metrics (the brute-force top-k every claim about recall is measured against,
//! recall@k, the softmax mass a selection covers), synthetic caches, `.npy` reading.

pub mod npy;
pub mod synth;

use crate::algorithm::attention::dot;
use crate::algorithm::rank::top_k_in_place;
use crate::rows::Rows;

/// Exact inner products `<q, k_cell>` for `cells`.
pub fn exact_scores(keys: &Rows, q: &[f32], cells: &[u32]) -> Vec<f32> {
    let mut row = vec![0.0; keys.dim()];
    cells
        .iter()
        .map(|&c| {
            keys.load(c as usize, &mut row);
            dot(q, &row)
        })
        .collect()
}

/// The exact top-k of `cells` by inner product with `q`, best first.
pub fn exact_top_k(keys: &Rows, q: &[f32], cells: &[u32], k: usize) -> Vec<u32> {
    let mut scored: Vec<(f32, u32)> =
        exact_scores(keys, q, cells).into_iter().zip(cells.iter().copied()).collect();
    top_k_in_place(&mut scored, k);
    scored.into_iter().map(|(_, c)| c).collect()
}

/// Share of `exact` that `found` contains (1.0 for an empty `exact`).
pub fn recall(found: &[u32], exact: &[u32]) -> f64 {
    if exact.is_empty() {
        return 1.0;
    }
    let set: std::collections::HashSet<u32> = found.iter().copied().collect();
    exact.iter().filter(|c| set.contains(c)).count() as f64 / exact.len() as f64
}

/// Share of the softmax mass over `zone` (logits `scale * <q, k>`) that `selected` covers.
/// Computed in f64 from the exact scores.
pub fn attention_mass(keys: &Rows, q: &[f32], zone: &[u32], selected: &[u32], scale: f32) -> f64 {
    let scores = exact_scores(keys, q, zone);
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) as f64;
    let weight = |s: f32| ((s as f64 - max) * scale as f64).exp();
    let total: f64 = scores.iter().map(|&s| weight(s)).sum();
    let chosen: std::collections::HashSet<u32> = selected.iter().copied().collect();
    let covered: f64 =
        zone.iter().zip(&scores).filter(|(c, _)| chosen.contains(c)).map(|(_, &s)| weight(s)).sum();
    covered / total
}

/// The group-mean attention probability of each zone cell: for each query of `queries` (the
/// heads of one GQA group, `keys.dim()` values each) the softmax over `zone` of the logits
/// `scale * <q, k>`, averaged over the heads. A set of cells covers the sum of its cells'
/// values of the group's zone mass (what `attention_mass` gives, averaged over the heads).
pub fn group_probabilities(keys: &Rows, queries: &[f32], zone: &[u32], scale: f32) -> Vec<f64> {
    let heads: Vec<&[f32]> = queries.chunks_exact(keys.dim()).collect();
    let mut p = vec![0.0f64; zone.len()];
    for q in &heads {
        let scores = exact_scores(keys, q, zone);
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s)) as f64;
        let w: Vec<f64> = scores.iter().map(|&s| ((s as f64 - max) * scale as f64).exp()).collect();
        let total: f64 = w.iter().sum();
        for (pc, wc) in p.iter_mut().zip(&w) {
            *pc += wc / total / heads.len() as f64;
        }
    }
    p
}

/// The best any shared set of rows can do for a group: for every k of `ks`, the group zone
/// mass of the k cells with the highest group-mean probability (`group_probabilities`).
pub fn best_shared_mass(probabilities: &[f64], ks: &[usize]) -> Vec<f64> {
    let mut sorted = probabilities.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut prefix = Vec::with_capacity(sorted.len() + 1);
    prefix.push(0.0);
    for p in &sorted {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + p);
    }
    ks.iter().map(|&k| prefix[k.min(sorted.len())]).collect()
}

/// The group zone mass a selection covers, from `group_probabilities` over `zone`.
pub fn group_mass(probabilities: &[f64], zone: &[u32], selected: &[u32]) -> f64 {
    let chosen: std::collections::HashSet<u32> = selected.iter().copied().collect();
    zone.iter().zip(probabilities).filter(|(c, _)| chosen.contains(c)).map(|(_, p)| p).sum()
}

/// Largest relative difference `|a - b| / max(|b|, floor)` over two outputs.
pub fn max_relative_error(a: &[f32], b: &[f32], floor: f32) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(floor)).fold(0.0, f32::max)
}

/// `||a - b|| / ||b||`.
pub fn relative_l2_error(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowData;

    #[test]
    fn best_shared_mass_bounds_every_selection_of_k() {
        let rows: Vec<f32> = (0..40).map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5).collect();
        let keys = Rows::packed(RowData::F32(&rows), 4).unwrap();
        let queries = [1.0, -0.5, 0.25, 2.0, -1.0, 0.5, 1.5, 0.0];
        let zone: Vec<u32> = (0..10).collect();
        let p = group_probabilities(&keys, &queries, &zone, 1.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "probabilities of the zone sum to 1");
        let bound = best_shared_mass(&p, &[3])[0];
        // every 3-subset covers at most the bound, and one reaches it
        let mut best = 0.0f64;
        for a in 0..10u32 {
            for b in a + 1..10 {
                for c in b + 1..10 {
                    let m = group_mass(&p, &zone, &[a, b, c]);
                    assert!(m <= bound + 1e-12);
                    best = best.max(m);
                }
            }
        }
        assert!((best - bound).abs() < 1e-12);
        // the group mass is the heads' mean of attention_mass
        let sel = [1u32, 4, 7];
        let mean =
            queries.chunks_exact(4).map(|q| attention_mass(&keys, q, &zone, &sel, 1.0)).sum::<f64>() / 2.0;
        assert!((group_mass(&p, &zone, &sel) - mean).abs() < 1e-9);
    }

    #[test]
    fn metrics_on_a_small_case() {
        let keys = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0];
        let rows = Rows::packed(RowData::F32(&keys), 2).unwrap();
        let q = [2.0, 1.0];
        assert_eq!(exact_top_k(&rows, &q, &[0, 1, 2, 3], 2), vec![2, 0]);
        assert_eq!(recall(&[0, 3], &[2, 0]), 0.5);
        let all = attention_mass(&rows, &q, &[0, 1, 2, 3], &[0, 1, 2, 3], 1.0);
        assert!((all - 1.0).abs() < 1e-12);
        let top = attention_mass(&rows, &q, &[0, 1, 2, 3], &[2], 1.0);
        let e = |x: f64| x.exp();
        assert!((top - e(3.0) / (e(2.0) + e(1.0) + e(3.0) + e(-2.0))).abs() < 1e-12);
    }
}
