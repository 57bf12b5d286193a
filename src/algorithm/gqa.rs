//! Retrieval for a group of query heads sharing one KV head (GQA). All heads of a group
//! attend over the same rows; the policy decides which rows:
//! - `Mean`: one retrieval with the mean of the group's queries (the paper's reference);
//! - `PerHead`: each head retrieves its own share of k (k / g, the remainder to the first
//!   heads) and the group attends over the union: at most k rows, fewer where heads overlap;
//! - `Group`: k distinct rows of the largest group-mean attention probability, estimated
//!   from every head's candidates (`select_group_rows`).
//!
//! Measured on Gemma 3 270M (4 query heads per KV head), passkey at ~8K tokens: with `Mean`
//! the answer is wrong at top-k 256 and 1024 for needles at depth 0.5 and 0.75, with
//! `PerHead` it is right at both: the mean of heads that look for different tokens points at
//! neither. `PerHead`'s union holds only 0.5-0.7 k distinct rows on real captures; `Group`
//! fills k and comes within 0.036 of the best any shared k rows can hold (Gemma 3 and
//! Qwen2.5 at 8K-32K; docs/FIDELITY.md, "GQA: k rows for the group").
//!
//! With a refine factor r > 1 each retrieval keeps its r * k best cells by the 4-bit
//! estimate and then the k best of those by the exact inner product with the key rows:
//! the estimator's error (not the coarse stage) is what loses most exact keys once the
//! candidates are many (docs/FIDELITY.md, "Retrieval beyond the paper").

use std::collections::HashSet;
use std::ops::Range;

use crate::algorithm::attention::{dot, AttnParams};
use crate::algorithm::encode::Codes;
use crate::algorithm::estimate::{estimate, QueryI8};
use crate::algorithm::portable::{exp_nonpositive, from_fixed, to_fixed};
use crate::algorithm::rank::top_k_in_place;
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::{
    group_query, histogram, select_candidates, select_top_k, RatioPolicy, SearchScratch, SearchStats,
    Selection,
};
use crate::error::{Error, Result};
use crate::rows::Rows;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GqaPolicy {
    Mean,
    PerHead,
    /// k distinct rows for the group's attention mass (`select_group_rows`): the default,
    /// for its quality (docs/FIDELITY.md, "GQA: k rows for the group").
    #[default]
    Group,
}

impl GqaPolicy {
    /// Every policy, in the order of its op parameter.
    pub const ALL: [GqaPolicy; 3] = [GqaPolicy::PerHead, GqaPolicy::Mean, GqaPolicy::Group];

    /// The policy's name in settings, flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            GqaPolicy::PerHead => "per-head",
            GqaPolicy::Mean => "mean",
            GqaPolicy::Group => "group",
        }
    }

    /// The policy named `name` (`name`'s inverse).
    pub fn from_name(name: &str) -> Option<GqaPolicy> {
        GqaPolicy::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// Reusable buffers of a group retrieval.
#[derive(Clone, Debug, Default)]
pub struct GroupScratch {
    pub search: SearchScratch,
    hist: Vec<u32>,
    mean: Vec<f32>,
    q_rot: Vec<f32>,
    lists: Vec<Vec<u32>>,
    seen: HashSet<u32>,
    row: Vec<f32>,
    /// The shared policies: each head's candidates with their logits, the group score of
    /// each cell touched (indexed by cell), and the union's cells.
    scored: Vec<Vec<(f32, u32)>>,
    score: Vec<f32>,
    touched: Vec<u32>,
    pool: Vec<(f32, u32)>,
    queries: Vec<QueryI8>,
    /// Candidate cells of every retrieval of the last call (for measuring the coarse stage).
    pub candidates: Vec<u32>,
    /// Each retrieval's refine shortlist of the last call (the cells whose key rows the
    /// refine read), best estimate first; none without a refine. For measuring what a row
    /// cache holds.
    pub shortlists: Vec<Vec<u32>>,
}

/// What the exact stages of a group's retrieval read: the key rows for rescoring a shortlist
/// (see the module docs) and, for the shared policies, how scores become logits.
#[derive(Clone, Copy)]
pub struct Refine<'a> {
    /// The key rows of the cells `codes` encodes, same cell numbering.
    pub keys: &'a Rows<'a>,
    /// Shortlist size per retrieval in units of its k; 1 (or 0) turns refining off.
    pub factor: usize,
    pub attn: AttnParams,
}

/// One group's retrieval over `codes`: `queries` holds the group's heads back to back; the
/// chosen cells land in `out`, best first (per-head lists merged rank by rank, without
/// repeats). Returns the work summed over the group's retrievals.
#[allow(clippy::too_many_arguments)]
pub fn select_group<F: Fn(usize) -> bool>(
    rotation: &Rotation,
    policy: GqaPolicy,
    queries: &[f32],
    codes: Codes,
    cells: Range<usize>,
    valid: F,
    zone_hist: Option<&[u32]>,
    ratios: RatioPolicy,
    k: usize,
    refine: Refine,
    scratch: &mut GroupScratch,
    out: &mut Vec<u32>,
) -> Result<SearchStats> {
    let shape = rotation.shape();
    let d = shape.head_dim;
    if queries.is_empty() || !queries.len().is_multiple_of(d) {
        return Err(Error::invalid(format!("{} query values are not whole heads of {d}", queries.len())));
    }
    if policy == GqaPolicy::Group {
        let problem = Shared { rotation, queries, codes, cells, zone_hist, ratios, k, refine };
        return select_group_rows(&problem, valid, scratch, out);
    }
    let heads: Vec<&[f32]> = match policy {
        GqaPolicy::Mean => vec![queries],
        GqaPolicy::PerHead | GqaPolicy::Group => queries.chunks_exact(d).collect(),
    };
    let g = heads.len();
    scratch.lists.resize_with(g, Vec::new);
    scratch.candidates.clear();
    scratch.shortlists.resize_with(if refine.factor > 1 { g } else { 0 }, Vec::new);
    scratch.shortlists.iter_mut().for_each(Vec::clear);
    // The zone is the same for every head: count its clusters once.
    let zone_hist = match zone_hist {
        Some(h) => Some(h),
        None if g > 1 => {
            histogram(&shape, &codes, cells.clone(), &valid, &mut scratch.hist);
            Some(&scratch.hist[..])
        }
        None => None,
    };
    let mut total = SearchStats::default();
    for (h, q) in heads.iter().enumerate() {
        let k_h = k / g + usize::from(h < k % g);
        scratch.lists[h].clear();
        if k_h == 0 {
            continue;
        }
        scratch.q_rot.resize(shape.padded_dim, 0.0);
        group_query(rotation, q, &mut scratch.mean, &mut scratch.q_rot);
        let shortlist = if refine.factor > 1 { k_h.saturating_mul(refine.factor) } else { k_h };
        let sel = Selection {
            shape,
            codes,
            q_rot: &scratch.q_rot,
            cells: cells.clone(),
            valid: &valid,
            zone_hist,
            policy: ratios,
            k: shortlist,
        };
        let mut s = select_top_k(&sel, &mut scratch.search)?;
        if refine.factor > 1 {
            // group_query left the unrotated retrieval query (the head's own, or the mean) in
            // `mean`; the estimated scores are replaced by exact ones
            s.n_refined = scratch.search.top.len();
            scratch.shortlists[h].extend(scratch.search.top.iter().map(|&(_, c)| c));
            rescore(refine.keys, &scratch.mean, &mut scratch.row, &mut scratch.search.top)?;
            top_k_in_place(&mut scratch.search.top, k_h);
        }
        scratch.lists[h].extend(scratch.search.top.iter().map(|&(_, c)| c));
        scratch.candidates.extend_from_slice(&scratch.search.candidates);
        total = SearchStats {
            n_candidates: total.n_candidates + s.n_candidates,
            n_refined: total.n_refined + s.n_refined,
            ..s
        };
    }
    merge_ranks(&scratch.lists[..g], &mut scratch.seen, out);
    if g > 1 {
        scratch.candidates.sort_unstable();
        scratch.candidates.dedup();
    }
    Ok(total)
}

/// A `Group` retrieval (the arguments of `select_group`).
struct Shared<'a> {
    rotation: &'a Rotation,
    queries: &'a [f32],
    codes: Codes<'a>,
    cells: Range<usize>,
    zone_hist: Option<&'a [u32]>,
    ratios: RatioPolicy,
    k: usize,
    refine: Refine<'a>,
}

/// `Group`: k distinct rows for the whole group.
/// 1. Each head's candidates from the coarse stage, at least as many as the shortlist (r·k
///    rows might all be one head's); their union U.
/// 2. Every cell of U scored for every head by the 4-bit estimate, its codes read once; each
///    head's logits made probabilities over U (a zone softmax whose normaliser U estimates);
///    a cell's group score is the mean of its probabilities over the heads.
/// 3. With refine r > 1, the r·k best cells are rescored exactly for every head (each key
///    row read once for the group), their group scores taken again over the shortlist, and
///    the k best kept; otherwise the k best of step 2.
fn select_group_rows<F: Fn(usize) -> bool>(
    p: &Shared,
    valid: F,
    scratch: &mut GroupScratch,
    out: &mut Vec<u32>,
) -> Result<SearchStats> {
    let shape = p.rotation.shape();
    let d = shape.head_dim;
    let heads: Vec<&[f32]> = p.queries.chunks_exact(d).collect();
    let g = heads.len();
    let zone_hist = match p.zone_hist {
        Some(h) => h,
        None => {
            histogram(&shape, &p.codes, p.cells.clone(), &valid, &mut scratch.hist);
            &scratch.hist[..]
        }
    };
    let refining = p.refine.factor > 1;
    if !refining {
        scratch.shortlists.clear();
    }
    let shortlist = if refining { p.k.saturating_mul(p.refine.factor) } else { p.k };
    // 1. every head's candidates (the coarse stage), their union, and every head's query in
    //    the estimate's form
    scratch.candidates.clear();
    scratch.queries.resize_with(g, QueryI8::default);
    let mut total = SearchStats::default();
    for (h, q) in heads.iter().enumerate() {
        scratch.q_rot.resize(shape.padded_dim, 0.0);
        group_query(p.rotation, q, &mut scratch.mean, &mut scratch.q_rot);
        let sel = Selection {
            shape,
            codes: p.codes,
            q_rot: &scratch.q_rot,
            cells: p.cells.clone(),
            valid: &valid,
            zone_hist: Some(zone_hist),
            policy: p.ratios,
            k: shortlist,
        };
        let st = select_candidates(&sel, &mut scratch.search)?;
        std::mem::swap(&mut scratch.queries[h], &mut scratch.search.query);
        scratch.candidates.extend_from_slice(&scratch.search.candidates);
        total = st;
    }
    scratch.candidates.sort_unstable();
    scratch.candidates.dedup();
    total.n_candidates = scratch.candidates.len();
    // 2. the union scored for every head, each code read once
    scratch.scored.resize_with(g, Vec::new);
    for list in &mut scratch.scored[..g] {
        list.clear();
    }
    for &c in &scratch.candidates {
        let nibbles = p.codes.cell_nibbles(&shape, c as usize);
        let weights = p.codes.cell_weights(&shape, c as usize);
        for h in 0..g {
            let logit = p.refine.attn.selection_logit(estimate(&scratch.queries[h], nibbles, weights));
            scratch.scored[h].push((logit, c));
        }
    }
    rank_by_group_probability(g, shortlist, scratch);
    if refining {
        // 3. the shortlist's key rows, each read once for every head
        scratch.lists.resize_with(g, Vec::new);
        let cells: Vec<u32> = scratch.pool.iter().map(|&(_, c)| c).collect();
        total.n_refined = cells.len();
        scratch.shortlists.resize_with(1, Vec::new);
        scratch.shortlists[0].clone_from(&cells);
        for list in &mut scratch.scored[..g] {
            list.clear();
        }
        if p.refine.keys.dim() != d {
            return Err(Error::invalid(format!(
                "refine: key rows of {} for queries of {d}",
                p.refine.keys.dim()
            )));
        }
        scratch.row.resize(d, 0.0);
        let keys = p.refine.keys;
        for &c in &cells {
            if c as usize >= keys.len() {
                return Err(Error::invalid(format!("refine: cell {c} has no key row ({} rows)", keys.len())));
            }
            keys.load(c as usize, &mut scratch.row);
            for (h, q) in heads.iter().enumerate() {
                scratch.scored[h].push((p.refine.attn.selection_logit(dot(q, &scratch.row)), c));
            }
        }
        rank_by_group_probability(g, p.k, scratch);
    }
    out.clear();
    out.extend(scratch.pool.iter().map(|&(_, c)| c));
    Ok(total)
}

/// Ranks the union for the group from `scratch.scored` (each head's (logit, cell) list over the
/// same cells): the `keep` cells of the largest mean probability over the heads, best first,
/// into `scratch.pool`.
fn rank_by_group_probability(g: usize, keep: usize, scratch: &mut GroupScratch) {
    const UNSEEN: f32 = -1.0; // probabilities are >= 0
    scratch.pool.clear();
    scratch.touched.clear();
    for h in 0..g {
        let list = &scratch.scored[h];
        let softmax = HeadSoftmax::of(list.iter().map(|&(l, _)| l));
        for &(l, c) in list {
            let c = c as usize;
            if c >= scratch.score.len() {
                scratch.score.resize(c + 1, UNSEEN);
            }
            let prob = softmax.prob(l);
            let s = &mut scratch.score[c];
            if *s == UNSEEN {
                *s = 0.0;
                scratch.touched.push(c as u32);
            }
            *s += prob / g as f32;
        }
    }
    for &c in &scratch.touched {
        let s = &mut scratch.score[c as usize];
        scratch.pool.push((*s, c));
        *s = UNSEEN;
    }
    top_k_in_place(&mut scratch.pool, keep);
}

/// One head's softmax over the logits of a group's union, as the group policy ranks by it.
/// Non-finite logits come from non-finite keys or queries: +inf rows share the head's
/// whole probability (as they would in a softmax's limit), NaN and -inf get none, and every
/// cell stays ranked so that the group still gets k distinct rows. The normaliser is summed
/// in fixed point and exp is the portable one, so that the GPU, adding in any order, gets
/// the same bits (`portable`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadSoftmax {
    n_inf: usize,
    max: f32,
    norm: f32,
}

impl HeadSoftmax {
    pub fn of(logits: impl Iterator<Item = f32> + Clone) -> HeadSoftmax {
        let n_inf = logits.clone().filter(|&l| l == f32::INFINITY).count();
        let max = logits.clone().filter(|l| l.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let norm =
            from_fixed(logits.filter(|l| l.is_finite()).map(|l| to_fixed(exp_nonpositive(l - max))).sum());
        HeadSoftmax { n_inf, max, norm }
    }

    /// The probability of a logit of the list.
    #[inline]
    pub fn prob(&self, l: f32) -> f32 {
        match (self.n_inf, l.is_finite()) {
            (0, true) => exp_nonpositive(l - self.max) / self.norm,
            (_, false) if l == f32::INFINITY => 1.0 / self.n_inf as f32,
            _ => 0.0,
        }
    }
}

/// Replaces each (score, cell)'s score by the exact `<q, key of cell>`.
pub fn rescore(keys: &Rows, q: &[f32], row: &mut Vec<f32>, top: &mut [(f32, u32)]) -> Result<()> {
    if keys.dim() != q.len() {
        return Err(Error::invalid(format!("refine: key rows of {} for queries of {}", keys.dim(), q.len())));
    }
    row.resize(q.len(), 0.0);
    for (score, cell) in top.iter_mut() {
        if *cell as usize >= keys.len() {
            return Err(Error::invalid(format!("refine: cell {cell} has no key row ({} rows)", keys.len())));
        }
        keys.load(*cell as usize, row);
        *score = dot(q, row);
    }
    Ok(())
}

/// The group's per-head lists (each best first) merged rank by rank without repeats: every
/// head's best, then every head's second, ...
pub fn merge_ranks(lists: &[Vec<u32>], seen: &mut HashSet<u32>, out: &mut Vec<u32>) {
    out.clear();
    seen.clear();
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    for rank in 0..longest {
        for list in lists {
            if let Some(&c) = list.get(rank) {
                if seen.insert(c) {
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
    use crate::eval::synth::{SynthCache, SynthSpec};
    use crate::rows::{RowData, Rows};
    use crate::shape::Shape;

    const ATTN: AttnParams = AttnParams { scale: 0.125, softcap: 0.0 };

    /// Every key encoded into cells 0..n.
    fn encode_all(rot: &Rotation, keys: &Rows) -> CodeStore {
        let mut store = CodeStore::default();
        store.grow(&rot.shape(), keys.len()).unwrap();
        let cells: Vec<usize> = (0..keys.len()).collect();
        encode_rows(rot, keys, &cells, None, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
        store
    }

    #[test]
    fn per_head_shares_k_and_mean_matches_one_retrieval() {
        let (n, d) = (4000, 64);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 3);
        let mut spec = SynthSpec::new(n, d, 4);
        spec.n_outlier_channels = 0;
        let cache = SynthCache::generate(&spec);
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let store = encode_all(&rot, &keys);
        // Three heads aimed at different keys.
        let mut rng = crate::eval::synth::Rng::new(8);
        let q: Vec<f32> =
            [10, 2000, 3500].iter().flat_map(|&t| cache.planted_query(&[t], 30.0, &mut rng)).collect();
        let (mut s, mut out) = (GroupScratch::default(), Vec::new());
        let ratios = RatioPolicy::Adaptive;
        let st = select_group(
            &rot,
            GqaPolicy::PerHead,
            &q,
            store.as_ref(),
            0..n,
            |_| true,
            None,
            ratios,
            100,
            Refine { keys: &keys, factor: 1, attn: ATTN },
            &mut s,
            &mut out,
        )
        .unwrap();
        assert!(out.len() <= 100 && out.len() > 90, "{} rows", out.len());
        assert!([10, 2000, 3500].iter().all(|t| out.contains(t)), "each head finds its own key");
        assert_eq!(out[..3].to_vec(), vec![10, 2000, 3500], "rank 0 of each head first");
        assert!(st.n_candidates > st.n_zone / 10 * 3 / 2, "three retrievals' candidates summed");
        let mut seen = out.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), out.len(), "no repeats");

        // Mean: exactly the single retrieval with the averaged query.
        select_group(
            &rot,
            GqaPolicy::Mean,
            &q,
            store.as_ref(),
            0..n,
            |_| true,
            None,
            ratios,
            100,
            Refine { keys: &keys, factor: 1, attn: ATTN },
            &mut s,
            &mut out,
        )
        .unwrap();
        let mut q_rot = vec![0.0; d];
        group_query(&rot, &q, &mut Vec::new(), &mut q_rot);
        let sel = Selection {
            shape,
            codes: store.as_ref(),
            q_rot: &q_rot,
            cells: 0..n,
            valid: |_| true,
            zone_hist: None,
            policy: ratios,
            k: 100,
        };
        let mut one = SearchScratch::default();
        select_top_k(&sel, &mut one).unwrap();
        assert_eq!(out, one.top.iter().map(|&(_, c)| c).collect::<Vec<_>>());
    }

    #[test]
    fn refine_over_the_whole_zone_is_the_exact_top_k() {
        // Candidates = the whole zone and a shortlist longer than the zone: the estimator
        // decides nothing, so each head's list is its exact top share (ties aside).
        let (n, d, k) = (3000, 64, 60);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 5);
        let cache = SynthCache::generate(&SynthSpec::new(n, d, 11));
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let store = encode_all(&rot, &keys);
        let mut rng = crate::eval::synth::Rng::new(12);
        let q: Vec<f32> = (0..4).flat_map(|_| cache.planted_query(&[rng.below(n)], 2.0, &mut rng)).collect();
        let zone: Vec<u32> = (100..n as u32).collect();
        let all = RatioPolicy::Fixed(crate::algorithm::search::Ratios { cand: 1.0, coll: 1.0 });
        let (mut s, mut out) = (GroupScratch::default(), Vec::new());
        let run = |factor: usize, s: &mut GroupScratch, out: &mut Vec<u32>| {
            let refine = Refine { keys: &keys, factor, attn: ATTN };
            select_group(
                &rot,
                GqaPolicy::PerHead,
                &q,
                store.as_ref(),
                100..n,
                |_| true,
                None,
                all,
                k,
                refine,
                s,
                out,
            )
            .unwrap()
        };
        let st = run(n, &mut s, &mut out);
        assert_eq!(st.n_refined, zone.len() * 4, "every zone cell rescored by each of the 4 heads");
        // each head's shortlist is reported: here the whole zone
        assert_eq!(s.shortlists.len(), 4);
        for list in &s.shortlists {
            let mut cells = list.clone();
            cells.sort_unstable();
            assert_eq!(cells, zone);
        }
        let lists: Vec<Vec<u32>> =
            q.chunks_exact(d).map(|qh| crate::eval::exact_top_k(&keys, qh, &zone, k / 4)).collect();
        let mut exact = Vec::new();
        merge_ranks(&lists, &mut HashSet::new(), &mut exact);
        assert_eq!(out, exact);

        // Without refining, the 4-bit estimate misses some of them on these keys, so the
        // comparison above can fail.
        let st = run(1, &mut s, &mut out);
        assert_eq!(st.n_refined, 0);
        assert!(s.shortlists.iter().all(Vec::is_empty), "no refine, no shortlist");
        assert_ne!(out, exact, "the estimator alone is not exact here");
    }

    #[test]
    fn group_fills_k_distinct_rows_for_every_head() {
        let (n, d, k) = (4000, 64, 100);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 3);
        let mut spec = SynthSpec::new(n, d, 4);
        spec.n_outlier_channels = 0;
        let cache = SynthCache::generate(&spec);
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let store = encode_all(&rot, &keys);
        let mut rng = crate::eval::synth::Rng::new(8);
        // three heads aimed at different keys, a fourth at the same key as the first
        let q: Vec<f32> =
            [10, 2000, 3500, 10].iter().flat_map(|&t| cache.planted_query(&[t], 30.0, &mut rng)).collect();
        let valid = |c: usize| (4..3800).contains(&c);
        for factor in [1, 2] {
            let (mut s, mut out) = (GroupScratch::default(), Vec::new());
            let st = select_group(
                &rot,
                GqaPolicy::Group,
                &q,
                store.as_ref(),
                0..n,
                valid,
                None,
                RatioPolicy::Tuned,
                k,
                Refine { keys: &keys, factor, attn: ATTN },
                &mut s,
                &mut out,
            )
            .unwrap();
            let mut distinct = out.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!((out.len(), distinct.len()), (k, k), "refine {factor}: k distinct rows");
            assert!(out.iter().all(|&c| valid(c as usize)), "refine {factor}: zone rows only");
            assert!([10, 2000, 3500].iter().all(|t| out.contains(t)), "refine {factor}: every head's key");
            assert_eq!(st.n_refined, if factor > 1 { factor * k } else { 0 }, "the shortlist, rescored once");
            // one shortlist for the group, holding the rows chosen
            assert_eq!(s.shortlists.len(), usize::from(factor > 1));
            if let Some(list) = s.shortlists.first() {
                assert_eq!(list.len(), factor * k);
                assert!(out.iter().all(|c| list.contains(c)), "the top-k comes from the shortlist");
            }
        }
    }

    #[test]
    fn group_of_agreeing_heads_still_fills_the_shortlist() {
        // Every head asks for the same key and the candidate share is far below k: each
        // head's candidates must still cover the shortlist, since the union adds nothing.
        let (n, d, k) = (3000, 64, 100);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 6);
        let mut spec = SynthSpec::new(n, d, 13);
        spec.n_outlier_channels = 0;
        let cache = SynthCache::generate(&spec);
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let store = encode_all(&rot, &keys);
        let mut rng = crate::eval::synth::Rng::new(14);
        let one = cache.planted_query(&[1234], 30.0, &mut rng);
        let q: Vec<f32> = (0..4).flat_map(|_| one.iter().copied()).collect();
        let few = RatioPolicy::Fixed(crate::algorithm::search::Ratios { cand: 0.01, coll: 1.0 });
        let (mut s, mut out) = (GroupScratch::default(), Vec::new());
        let st = select_group(
            &rot,
            GqaPolicy::Group,
            &q,
            store.as_ref(),
            0..n,
            |_| true,
            None,
            few,
            k,
            Refine { keys: &keys, factor: 3, attn: ATTN },
            &mut s,
            &mut out,
        )
        .unwrap();
        assert_eq!((st.n_candidates, st.n_refined, out.len()), (3 * k, 3 * k, k));
        assert!(out.contains(&1234));
    }

    #[test]
    fn group_over_the_whole_zone_exactly_is_the_best_shared_k() {
        // Candidates = the whole zone and a shortlist as long as the zone: the estimator
        // decides nothing and the normalisers are the zone's, so the k rows of the largest
        // exact group-mean probability are chosen (ties aside).
        let (n, d, k) = (3000, 64, 200);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 5);
        let cache = SynthCache::generate(&SynthSpec::new(n, d, 11));
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let store = encode_all(&rot, &keys);
        let mut rng = crate::eval::synth::Rng::new(12);
        let q: Vec<f32> = (0..4).flat_map(|_| cache.planted_query(&[rng.below(n)], 4.0, &mut rng)).collect();
        let zone: Vec<u32> = (0..n as u32).collect();
        let all = RatioPolicy::Fixed(crate::algorithm::search::Ratios { cand: 1.0, coll: 1.0 });
        let (mut s, mut out) = (GroupScratch::default(), Vec::new());
        let attn = AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 };
        let st = select_group(
            &rot,
            GqaPolicy::Group,
            &q,
            store.as_ref(),
            0..n,
            |_| true,
            None,
            all,
            k,
            Refine { keys: &keys, factor: n, attn },
            &mut s,
            &mut out,
        )
        .unwrap();
        assert_eq!(st.n_refined, n, "every zone cell rescored once for the group");
        let p = crate::eval::group_probabilities(&keys, &q, &zone, attn.scale);
        let bound = crate::eval::best_shared_mass(&p, &[k])[0];
        let got = crate::eval::group_mass(&p, &zone, &out);
        assert!((bound - got).abs() < 1e-5 * bound, "mass {got} against the bound {bound}");
        let mut best: Vec<(f32, u32)> = p.iter().zip(&zone).map(|(&x, &c)| (x as f32, c)).collect();
        top_k_in_place(&mut best, k);
        let best: Vec<u32> = best.into_iter().map(|(_, c)| c).collect();
        assert!(crate::eval::recall(&out, &best) >= 0.99, "the best shared rows");
    }
}
