//! Retrieval (docs/DESIGN.md §1.2): cluster histograms, nested tiers of centroids,
//! collision counts, candidates, 4-bit rerank and top-k, over the cells of a retrieval
//! zone given as a cell range and a validity predicate. Each stage is a function of its
//! own so that the GPU kernels can be checked against it stage by stage.

use std::ops::Range;

use crate::algorithm::codebook::{centroid_order, centroid_scores};
use crate::algorithm::encode::Codes;
use crate::algorithm::estimate::{estimate, QueryI8};
use crate::algorithm::prefetch;
use crate::algorithm::rank::top_k_in_place;
use crate::constants::{REFERENCE_RATIOS, TUNED_RATIOS};
use crate::error::{Error, Result};
use crate::shape::{Shape, BLOCK, N_CENTROIDS, N_TIERS, TIER_FRACTIONS};

/// Candidate and collision ratios (rho_cand, rho_coll).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    pub cand: f64,
    pub coll: f64,
}

impl Ratios {
    /// The reference implementation's table, by retrieval-zone size.
    pub fn reference(n_zone: usize) -> Ratios {
        Ratios::from_table(&REFERENCE_RATIOS, n_zone)
    }

    /// The tuned table (`constants::TUNED_RATIOS`), by retrieval-zone size.
    pub fn tuned(n_zone: usize) -> Ratios {
        Ratios::from_table(&TUNED_RATIOS, n_zone)
    }

    /// The first row of `table` whose bound is above `n_zone`, else its last.
    fn from_table(table: &[(usize, f64, f64)], n_zone: usize) -> Ratios {
        let last = &table[table.len() - 1];
        let &(_, cand, coll) = table.iter().find(|&&(below, _, _)| n_zone < below).unwrap_or(last);
        Ratios { cand, coll }
    }

    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("rho_cand", self.cand), ("rho_coll", self.coll)] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::invalid(format!("{name} = {v} must lie in (0, 1]")));
            }
        }
        Ok(())
    }
}

/// How the ratios are chosen for a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RatioPolicy {
    /// `Ratios::reference(N)` for zone size N (the paper's adaptive table).
    Adaptive,
    /// `Ratios::tuned(N)`: wider candidate shares than the reference's, rho_coll 1.
    Tuned,
    Fixed(Ratios),
}

impl RatioPolicy {
    pub fn ratios(&self, n_zone: usize) -> Ratios {
        match *self {
            RatioPolicy::Adaptive => Ratios::reference(n_zone),
            RatioPolicy::Tuned => Ratios::tuned(n_zone),
            RatioPolicy::Fixed(r) => r,
        }
    }
}

/// Marks a cell outside the zone in the collision-count array (counts never exceed 6 * 64).
pub const NOT_IN_ZONE: u16 = u16::MAX;

/// `ceil(n * ratio * fraction)` in f64, multiplied left to right: every implementation
/// computes the budgets exactly this way.
fn ceil_count(n: usize, ratio: f64, fraction: f64) -> usize {
    (n as f64 * ratio * fraction).ceil() as usize
}

/// Tier budgets T_t = ceil(N * rho_coll * tau_t).
pub fn tier_budgets(n_zone: usize, rho_coll: f64) -> [usize; N_TIERS] {
    std::array::from_fn(|t| ceil_count(n_zone, rho_coll, TIER_FRACTIONS[t]))
}

/// Number of candidates: ceil(N * rho_cand), but never fewer than min(k, N) so that the
/// rerank can always fill the top-k (the reference leaves that case undefined).
pub fn candidate_count(n_zone: usize, rho_cand: f64, k: usize) -> usize {
    ceil_count(n_zone, rho_cand, 1.0).max(k).min(n_zone)
}

/// Whether `tally` adds cells to a histogram or takes them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    Add,
    Remove,
}

/// Adds or removes the codes of `cells` in a `[block][centroid]` histogram.
pub fn tally(
    shape: &Shape,
    codes: &Codes,
    cells: impl IntoIterator<Item = usize>,
    hist: &mut [u32],
    op: Tally,
) {
    for cell in cells {
        for (b, &c) in codes.cell_codes(shape, cell).iter().enumerate() {
            let n = &mut hist[b * N_CENTROIDS + c as usize];
            *n = match op {
                Tally::Add => *n + 1,
                Tally::Remove => *n - 1,
            };
        }
    }
}

/// Cluster sizes n_b(c) of the zone, `hist[b * 256 + c]`; returns N.
pub fn histogram(
    shape: &Shape,
    codes: &Codes,
    cells: Range<usize>,
    valid: impl Fn(usize) -> bool,
    hist: &mut Vec<u32>,
) -> usize {
    hist.clear();
    hist.resize(shape.n_blocks * N_CENTROIDS, 0);
    let mut n = 0;
    tally(shape, codes, cells.filter(|&c| valid(c)).inspect(|_| n += 1), hist, Tally::Add);
    n
}

/// Tier level of every centroid, `levels[b * 256 + c]` in 0..=6: the number of tiers the
/// centroid belongs to. Walking centroids best first, a centroid is in tier t while the
/// keys of the centroids ranked before it number fewer than T_t.
pub fn tier_levels(
    shape: &Shape,
    q_rot: &[f32],
    hist: &[u32],
    budgets: &[usize; N_TIERS],
    levels: &mut Vec<u8>,
) {
    levels.clear();
    levels.resize(shape.n_blocks * N_CENTROIDS, 0);
    let mut scores = [0.0f32; N_CENTROIDS];
    let mut order = [0u8; N_CENTROIDS];
    for b in 0..shape.n_blocks {
        centroid_scores(&q_rot[b * BLOCK..][..BLOCK], &mut scores);
        centroid_order(&scores, &mut order);
        let sizes = &hist[b * N_CENTROIDS..][..N_CENTROIDS];
        let block_levels = &mut levels[b * N_CENTROIDS..][..N_CENTROIDS];
        let mut before = 0usize;
        for &c in order.iter() {
            let level = budgets.iter().filter(|&&t| before < t).count();
            if level == 0 {
                break;
            }
            block_levels[c as usize] = level as u8;
            before += sizes[c as usize] as usize;
        }
    }
}

/// Collision count of every cell of `cells` (index `cell - cells.start`), or
/// `NOT_IN_ZONE` for cells the predicate rejects.
pub fn collision_counts(
    shape: &Shape,
    codes: &Codes,
    cells: Range<usize>,
    valid: impl Fn(usize) -> bool,
    levels: &[u8],
    counts: &mut Vec<u16>,
) {
    counts.clear();
    counts.reserve(cells.len());
    let nb = shape.n_blocks;
    let rows = codes.codes[cells.start * nb..cells.end * nb].chunks_exact(nb);
    for (cell, row) in cells.zip(rows) {
        if !valid(cell) {
            counts.push(NOT_IN_ZONE);
            continue;
        }
        let mut total = 0u16;
        for (table, &c) in levels.chunks_exact(N_CENTROIDS).zip(row) {
            total += table[c as usize] as u16;
        }
        counts.push(total);
    }
}

/// The cutoff of `m` candidates from the histogram of their counts (`count_hist[c]` cells
/// count c): the highest count whose cells at or above it number at least m (0 when all
/// cells are fewer than m), and how many cells at exactly the cutoff are taken.
pub fn cutoff(count_hist: &[u32], m: usize) -> (u16, usize) {
    let mut above = 0usize;
    for c in (0..count_hist.len()).rev() {
        if above + count_hist[c] as usize >= m {
            return (c as u16, m - above);
        }
        above += count_hist[c] as usize;
    }
    (0, m.saturating_sub(above))
}

/// The `m` cells with the highest collision counts; at the cutoff count, lower cells
/// first. Returns the cutoff count. `first_cell` is the cell of `counts[0]`.
pub fn candidates(
    shape: &Shape,
    counts: &[u16],
    first_cell: usize,
    m: usize,
    count_hist: &mut Vec<u32>,
    out: &mut Vec<u32>,
) -> u16 {
    let max = shape.max_collisions();
    count_hist.clear();
    count_hist.resize(max + 1, 0);
    for &c in counts.iter().filter(|&&c| c != NOT_IN_ZONE) {
        count_hist[c as usize] += 1;
    }
    let (cutoff, mut ties_left) = cutoff(count_hist, m);
    let cutoff = cutoff as usize;
    out.clear();
    for (i, &c) in counts.iter().enumerate() {
        if c == NOT_IN_ZONE || (c as usize) < cutoff {
            continue;
        }
        if c as usize == cutoff {
            if ties_left == 0 {
                continue;
            }
            ties_left -= 1;
        }
        out.push((first_cell + i) as u32);
    }
    cutoff as u16
}

/// Scores `cands` with the 4-bit estimator and keeps the best `k` in rank order.
pub fn rerank(shape: &Shape, codes: &Codes, q: &QueryI8, cands: &[u32], k: usize, out: &mut Vec<(f32, u32)>) {
    out.clear();
    for (i, &cell) in cands.iter().enumerate() {
        if let Some(&ahead) = cands.get(i + prefetch::DISTANCE) {
            prefetch::prefetch(codes.cell_nibbles(shape, ahead as usize));
            prefetch::prefetch(codes.cell_weights(shape, ahead as usize));
        }
        let cell = cell as usize;
        let score = estimate(q, codes.cell_nibbles(shape, cell), codes.cell_weights(shape, cell));
        out.push((score, cell as u32));
    }
    top_k_in_place(out, k);
}

/// The retrieval query of one KV head: the mean of its query heads (the reference's GQA
/// policy), rotated. `group` holds the heads' queries back to back.
pub fn group_query(
    rotation: &crate::algorithm::rotation::Rotation,
    group: &[f32],
    mean: &mut Vec<f32>,
    out: &mut [f32],
) {
    let d = rotation.shape().head_dim;
    let heads = group.len() / d;
    mean.clear();
    mean.resize(d, 0.0);
    for q in group.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(q) {
            *m += v;
        }
    }
    for m in mean.iter_mut() {
        *m /= heads as f32;
    }
    rotation.apply(mean, out);
}

/// What one selection did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SearchStats {
    /// Keys in the retrieval zone (N).
    pub n_zone: usize,
    /// Candidates reranked.
    pub n_candidates: usize,
    /// Shortlisted cells rescored exactly from their key rows (refine), 0 without.
    pub n_refined: usize,
    /// Collision count at the candidate cutoff.
    pub cutoff: u16,
    pub rho_cand: f64,
    pub rho_coll: f64,
}

/// Reusable buffers of a selection; after warm-up a step allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct SearchScratch {
    pub hist: Vec<u32>,
    pub levels: Vec<u8>,
    pub counts: Vec<u16>,
    pub count_hist: Vec<u32>,
    /// The rotated query of the last selection in the estimate's form.
    pub query: QueryI8,
    /// Candidate cells of the last selection, in cell order.
    pub candidates: Vec<u32>,
    /// Top-k of the last selection: (estimated score, cell), best first.
    pub top: Vec<(f32, u32)>,
}

/// Inputs of one selection over one KV head's encoded keys.
pub struct Selection<'a, F: Fn(usize) -> bool> {
    pub shape: Shape,
    pub codes: Codes<'a>,
    /// Rotated retrieval query (`padded_dim`).
    pub q_rot: &'a [f32],
    /// Cells to consider, and which of them are in the zone.
    pub cells: Range<usize>,
    pub valid: F,
    /// Cluster sizes of exactly the zone, when the caller maintains them.
    pub zone_hist: Option<&'a [u32]>,
    pub policy: RatioPolicy,
    pub k: usize,
}

/// Runs every stage; the top-k lands in `scratch.top`, best first.
pub fn select_top_k<F: Fn(usize) -> bool>(
    sel: &Selection<F>,
    scratch: &mut SearchScratch,
) -> Result<SearchStats> {
    let stats = select_candidates(sel, scratch)?;
    rerank(&sel.shape, &sel.codes, &scratch.query, &scratch.candidates, sel.k, &mut scratch.top);
    Ok(stats)
}

/// The coarse stage of `select_top_k`: the candidates into `scratch.candidates` and the
/// query in the estimate's form into `scratch.query`, without the rerank.
pub fn select_candidates<F: Fn(usize) -> bool>(
    sel: &Selection<F>,
    scratch: &mut SearchScratch,
) -> Result<SearchStats> {
    let shape = &sel.shape;
    let n_cells = sel.codes.n_cells(shape)?;
    if sel.cells.start > sel.cells.end || sel.cells.end > n_cells {
        return Err(Error::invalid(format!("search: cells {:?} out of range ({n_cells} cells)", sel.cells)));
    }
    if sel.q_rot.len() != shape.padded_dim {
        return Err(Error::invalid(format!(
            "search: rotated query has {} values, expected {}",
            sel.q_rot.len(),
            shape.padded_dim
        )));
    }
    let n_zone = match sel.zone_hist {
        Some(h) if h.len() == shape.n_blocks * N_CENTROIDS => {
            scratch.hist.clear();
            scratch.hist.extend_from_slice(h);
            h[..N_CENTROIDS].iter().map(|&x| x as usize).sum()
        }
        Some(h) => {
            return Err(Error::invalid(format!(
                "search: zone histogram has {} entries, expected {}",
                h.len(),
                shape.n_blocks * N_CENTROIDS
            )))
        }
        None => histogram(shape, &sel.codes, sel.cells.clone(), &sel.valid, &mut scratch.hist),
    };
    let ratios = sel.policy.ratios(n_zone);
    ratios.validate()?;
    let budgets = tier_budgets(n_zone, ratios.coll);
    tier_levels(shape, sel.q_rot, &scratch.hist, &budgets, &mut scratch.levels);
    collision_counts(shape, &sel.codes, sel.cells.clone(), &sel.valid, &scratch.levels, &mut scratch.counts);
    let m = candidate_count(n_zone, ratios.cand, sel.k);
    let cutoff = candidates(
        shape,
        &scratch.counts,
        sel.cells.start,
        m,
        &mut scratch.count_hist,
        &mut scratch.candidates,
    );
    scratch.query.set(sel.q_rot);
    Ok(SearchStats {
        n_zone,
        n_candidates: scratch.candidates.len(),
        n_refined: 0,
        cutoff,
        rho_cand: ratios.cand,
        rho_coll: ratios.coll,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::CodeStore;

    /// One-block keys (head_dim 8) with hand-picked codes.
    fn store_with_codes(codes: &[u8]) -> (Shape, CodeStore) {
        let shape = Shape::new(8).unwrap();
        let mut store = CodeStore::default();
        store.grow(&shape, codes.len()).unwrap();
        store.codes.copy_from_slice(codes);
        (shape, store)
    }

    #[test]
    fn reference_ratio_table() {
        assert_eq!(Ratios::reference(4_999), Ratios { cand: 0.5, coll: 0.5 });
        assert_eq!(Ratios::reference(5_000), Ratios { cand: 0.25, coll: 0.3 });
        assert_eq!(Ratios::reference(29_999), Ratios { cand: 0.2, coll: 0.25 });
        assert_eq!(Ratios::reference(1 << 20), Ratios { cand: 0.1, coll: 0.2 });
        assert_eq!(Ratios::tuned(4_999), Ratios { cand: 0.5, coll: 1.0 });
        assert_eq!(Ratios::tuned(5_000), Ratios { cand: 0.3, coll: 1.0 });
        assert_eq!(Ratios::tuned(29_999), Ratios { cand: 0.3, coll: 1.0 });
        assert_eq!(Ratios::tuned(1 << 20), Ratios { cand: 0.2, coll: 1.0 });
        assert!(Ratios { cand: 0.0, coll: 0.5 }.validate().is_err());
        assert!(Ratios { cand: 0.5, coll: f64::NAN }.validate().is_err());
    }

    #[test]
    fn budgets_round_up() {
        assert_eq!(tier_budgets(100, 0.5), [3, 8, 15, 25, 38, 50]);
        assert_eq!(tier_budgets(0, 0.5), [0; 6]);
        assert_eq!(candidate_count(1000, 0.1, 8), 100);
        assert_eq!(candidate_count(1000, 0.1, 300), 300, "never fewer than k");
        assert_eq!(candidate_count(10, 0.1, 300), 10, "never more than N");
    }

    #[test]
    fn tiers_on_a_hand_made_case() {
        // Query +1 on every coordinate: centroid 0xFF scores 8, then the 8 codes with one
        // bit clear (score 6, lowest code first), and so on.
        let codes = [0xFF, 0xFF, 0xFE, 0xFD, 0xFD, 0xFD, 0x00, 0x7F, 0x0F, 0x0F];
        let (shape, store) = store_with_codes(&codes);
        let mut hist = Vec::new();
        let n = histogram(&shape, &store.as_ref(), 0..10, |_| true, &mut hist);
        assert_eq!(n, 10);
        assert_eq!((hist[0xFF], hist[0xFD], hist[0x0F]), (2, 3, 2));
        // rho_coll = 1: budgets ceil(10 * tau) = [1, 2, 3, 5, 8, 10].
        let budgets = tier_budgets(n, 1.0);
        assert_eq!(budgets, [1, 2, 3, 5, 8, 10]);
        let q = [1.0f32; 8];
        let mut levels = Vec::new();
        tier_levels(&shape, &q, &hist, &budgets, &mut levels);
        // Walk: 0xFF (0 before: all 6 tiers), 0x7F (2 before: tiers >= 2), 0xBF, 0xDF,
        // 0xEF, 0xF7, 0xFB (3 before each: tiers with T > 3), 0xFD (3 before), 0xFE
        // (6 before: T in {8, 10}), then score-4 codes from 7 before: T = 8 and 10.
        assert_eq!(levels[0xFF], 6);
        assert_eq!(levels[0x7F], 4);
        assert_eq!(levels[0xBF], 3);
        assert_eq!(levels[0xFD], 3);
        assert_eq!(levels[0xFE], 2);
        assert_eq!(levels[0x0F], 2, "first score-0 code, 7 keys before it");
        assert_eq!(levels[0x00], 1, "with rho_coll = 1 the last tier reaches every key");
        let mut counts = Vec::new();
        collision_counts(&shape, &store.as_ref(), 0..10, |c| c != 1, &levels, &mut counts);
        assert_eq!(counts[..4], [6, NOT_IN_ZONE, 2, 3]);
        assert_eq!(counts[6], 1);
        // rho_coll = 0.5: budgets [1, 1, 2, 3, 4, 5]; the walk stops once 5 keys are in.
        let budgets = tier_budgets(n, 0.5);
        assert_eq!(budgets, [1, 1, 2, 3, 4, 5]);
        tier_levels(&shape, &q, &hist, &budgets, &mut levels);
        assert_eq!((levels[0xFF], levels[0x7F], levels[0xFD], levels[0xFE]), (6, 3, 2, 0));
        assert_eq!(levels[0x00], 0, "the worst centroid is in no tier");
    }

    #[test]
    fn candidates_break_ties_by_lower_cell() {
        let shape = Shape::new(8).unwrap();
        let counts = [3u16, 5, 3, NOT_IN_ZONE, 3, 1, 5, 3];
        let (mut ch, mut out) = (Vec::new(), Vec::new());
        let cutoff = candidates(&shape, &counts, 100, 4, &mut ch, &mut out);
        assert_eq!(cutoff, 3);
        assert_eq!(out, vec![100, 101, 102, 106]);
        candidates(&shape, &counts, 0, 7, &mut ch, &mut out);
        assert_eq!(out, vec![0, 1, 2, 4, 5, 6, 7], "all zone cells, never the excluded one");
        candidates(&shape, &counts, 0, 0, &mut ch, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn zone_histogram_matches_a_recount() {
        let codes: Vec<u8> = (0..50u32).map(|i| (i * 37 % 256) as u8).collect();
        let (shape, store) = store_with_codes(&codes);
        let mut full = Vec::new();
        histogram(&shape, &store.as_ref(), 5..45, |c| c % 3 != 0, &mut full);
        let total: u32 = full.iter().sum();
        assert_eq!(total as usize, (5..45).filter(|c| c % 3 != 0).count());
    }
}
