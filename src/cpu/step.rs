//! One decode step over an engine's cache with `step::attend_cache`'s contract and results,
//! organised for speed:
//! - classify: visibility, sink / window / zone and the zone's code histogram in two passes;
//! - tiers: each retrieval's levels (`search::tier_levels`);
//! - collisions: every retrieval's counts in one pass over the codes (`collide`);
//! - candidates: every retrieval's cutoff from its histogram of counts, the candidates of
//!   all of them in one pass (ties by the lower cell, as `search::candidates`);
//! - rerank: the 4-bit estimates of a candidate for every head that needs it from one read
//!   of its codes (`estimate`), then the policy's ranking and refine as in `gqa`;
//! - attention over sink ∪ retrieved ∪ window (`attention::attend`).

use crate::algorithm::attention::{attend, dot, AttnScratch};
use crate::algorithm::gqa::{merge_ranks, rescore, GqaPolicy};
use crate::algorithm::rank::top_k_in_place;
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::{
    candidate_count, cutoff, group_query, tally, tier_budgets, tier_levels, Tally,
};
use crate::cpu::collide::GroupCounts;
use crate::cpu::estimate::{estimate_group, GroupQueries, Kernel};
use crate::cpu::softmax::group_scores;
use crate::error::{Error, Result};
use crate::rows::Rows;
use crate::shape::{Shape, N_CENTROIDS};
use crate::step::{CacheView, StepParams, StepStats};

/// One retrieval of a group: which heads' mean it searches with (one head for per-head
/// and group), the rows it finally keeps and how many it keeps before refining.
#[derive(Clone, Copy, Debug)]
struct Retrieval {
    heads: (usize, usize),
    k: usize,
    shortlist: usize,
}

/// Seconds spent per stage, summed over the steps run with `Scratch::timing` on.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub classify: f64,
    pub tiers: f64,
    pub collisions: f64,
    pub candidates: f64,
    pub rerank: f64,
    pub refine: f64,
    pub attention: f64,
}

/// A stopwatch that reads the clock only when timing is on.
struct Lap(Option<std::time::Instant>);

impl Lap {
    fn start(on: bool) -> Lap {
        Lap(on.then(std::time::Instant::now))
    }

    /// Adds the time since the last lap to `total`.
    fn lap(&mut self, total: &mut f64) {
        if let Some(t) = self.0.as_mut() {
            let now = std::time::Instant::now();
            *total += (now - *t).as_secs_f64();
            *t = now;
        }
    }
}

/// Reusable buffers of a step; after warm-up a step allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Time the stages into `times` (off by default).
    pub timing: bool,
    pub times: StageTimes,
    visible: Vec<bool>,
    in_zone: Vec<bool>,
    hist: Vec<u32>,
    retrievals: Vec<Retrieval>,
    /// Each retrieval's query, unrotated (for refine) and rotated, back to back.
    plain: Vec<f32>,
    rotated: Vec<f32>,
    mean: Vec<f32>,
    levels: Vec<u8>,
    one_level: Vec<u8>,
    counts: GroupCounts,
    /// Each retrieval's candidates in cell order, and their union.
    lists: Vec<Vec<u32>>,
    union: Vec<u32>,
    marked: Vec<bool>,
    shortlist: Vec<u32>,
    queries: GroupQueries,
    estimates: Vec<f32>,
    scored: Vec<(f32, u32)>,
    logits: Vec<f32>,
    softmax_buf: (Vec<f32>, Vec<f32>),
    row: Vec<f32>,
    ranked: Vec<Vec<u32>>,
    seen: std::collections::HashSet<u32>,
    retrieved: Vec<u32>,
    cells: Vec<u32>,
    attn: AttnScratch,
}

impl Scratch {
    /// The cells the last step attended, in cell order.
    pub fn attended(&self) -> &[u32] {
        &self.cells
    }
}

/// Runs one step (see `step::attend_cache`, whose results it gives).
pub fn attend_cache<V: Fn(usize) -> bool>(
    rotation: &Rotation,
    p: &StepParams,
    cache: &CacheView<V>,
    queries: &[f32],
    s: &mut Scratch,
    out: &mut [f32],
) -> Result<StepStats> {
    let shape = rotation.shape();
    let n = cache.pos.len();
    crate::step::check_view(&shape, cache)?;
    let mut lap = Lap::start(s.timing);
    let mut stats = classify(&shape, p, cache, s);
    lap.lap(&mut s.times.classify);
    s.cells.clear();
    if stats.n_visible > 0 {
        if stats.n_zone <= p.top_k {
            s.cells.extend((0..n as u32).filter(|&c| s.visible[c as usize]));
        } else {
            let (n_candidates, n_refined) = select(rotation, p, cache, queries, stats.n_zone, &mut lap, s)?;
            stats.n_candidates = n_candidates;
            stats.n_refined = n_refined;
            s.cells.extend((0..n as u32).filter(|&c| s.visible[c as usize] && !s.in_zone[c as usize]));
            s.cells.extend_from_slice(&s.retrieved);
            s.cells.sort_unstable();
        }
    }
    stats.n_attended = s.cells.len();
    attend(queries, &cache.keys, &cache.values, &s.cells, p.attn, &mut s.attn, out)?;
    lap.lap(&mut s.times.attention);
    Ok(stats)
}

/// Visible cells, the zone (visible, neither sink nor window) and its code histogram.
fn classify<V: Fn(usize) -> bool>(
    shape: &Shape,
    p: &StepParams,
    cache: &CacheView<V>,
    s: &mut Scratch,
) -> StepStats {
    let n = cache.pos.len();
    let (mut p_min, mut p_max, mut n_visible) = (i64::MAX, i64::MIN, 0usize);
    s.visible.clear();
    s.visible.extend((0..n).map(|c| {
        let v = (cache.visible)(c);
        if v {
            let pos = cache.pos[c] as i64;
            p_min = p_min.min(pos);
            p_max = p_max.max(pos);
            n_visible += 1;
        }
        v
    }));
    let (sink_end, window_start) =
        (p_min.saturating_add(p.n_sink as i64), p_max.saturating_sub(p.n_local as i64));
    s.in_zone.clear();
    s.in_zone.extend(
        s.visible
            .iter()
            .zip(cache.pos)
            .map(|(&v, &pos)| v && !((pos as i64) < sink_end || (pos as i64) > window_start)),
    );
    s.hist.clear();
    s.hist.resize(shape.n_blocks * N_CENTROIDS, 0);
    let zone = (0..n).filter(|&c| s.in_zone[c]);
    let n_zone = zone.clone().count();
    tally(shape, &cache.codes, zone, &mut s.hist, Tally::Add);
    StepStats { n_visible, n_zone, ..StepStats::default() }
}

/// The group's retrieved rows into `s.retrieved`; returns (candidates, rows refined) as
/// `gqa::select_group` counts them.
fn select<V: Fn(usize) -> bool>(
    rotation: &Rotation,
    p: &StepParams,
    cache: &CacheView<V>,
    queries: &[f32],
    n_zone: usize,
    lap: &mut Lap,
    s: &mut Scratch,
) -> Result<(usize, usize)> {
    let shape = rotation.shape();
    let (codes, keys) = (cache.codes, &cache.keys);
    let d = shape.head_dim;
    if queries.is_empty() || !queries.len().is_multiple_of(d) {
        return Err(Error::invalid(format!("{} query values are not whole heads of {d}", queries.len())));
    }
    let g = queries.len() / d;
    plan_retrievals(p, g, &mut s.retrievals);
    let refining = p.refine > 1;
    // queries: each retrieval's mean, plain and rotated
    let pd = shape.padded_dim;
    s.plain.resize(s.retrievals.len() * d, 0.0);
    s.rotated.resize(s.retrievals.len() * pd, 0.0);
    for (r, ret) in s.retrievals.iter().enumerate() {
        let (h0, h1) = ret.heads;
        group_query(rotation, &queries[h0 * d..h1 * d], &mut s.mean, &mut s.rotated[r * pd..][..pd]);
        s.plain[r * d..][..d].copy_from_slice(&s.mean);
    }
    // tiers and collision counts of every retrieval
    let ratios = p.ratios.ratios(n_zone);
    ratios.validate()?;
    let budgets = tier_budgets(n_zone, ratios.coll);
    s.levels.clear();
    for r in 0..s.retrievals.len() {
        tier_levels(&shape, &s.rotated[r * pd..][..pd], &s.hist, &budgets, &mut s.one_level);
        s.levels.extend_from_slice(&s.one_level);
    }
    lap.lap(&mut s.times.tiers);
    let n = s.in_zone.len();
    s.counts.count_all(&shape, &codes, n, &s.in_zone, &s.levels);
    lap.lap(&mut s.times.collisions);
    candidates(&shape, n_zone, ratios.cand, s);
    lap.lap(&mut s.times.candidates);
    s.queries.set(&shape, &s.rotated);
    let kernel = Kernel::best(shape.n_blocks);
    if p.gqa == GqaPolicy::Group {
        let shortlist = s.retrievals[0].shortlist;
        let u = s.union.len();
        s.estimates.resize(g * u, 0.0);
        estimate_group(kernel, &shape, &codes, &s.queries, 0..g, &s.union, &mut s.estimates);
        s.logits.clear();
        s.logits.extend(s.estimates.iter().map(|&e| p.attn.selection_logit(e)));
        rank_by_group(g, &s.union, &s.logits, shortlist, &mut s.softmax_buf, &mut s.scored);
        lap.lap(&mut s.times.rerank);
        let (n_candidates, mut n_refined) = (u, 0);
        if refining {
            n_refined = s.scored.len();
            s.shortlist.clear();
            s.shortlist.extend(s.scored.iter().map(|&(_, c)| c));
            exact_logits(keys, queries, p, &s.shortlist, &mut s.row, &mut s.logits)?;
            rank_by_group(g, &s.shortlist, &s.logits, p.top_k, &mut s.softmax_buf, &mut s.scored);
            lap.lap(&mut s.times.refine);
        }
        s.retrieved.clear();
        s.retrieved.extend(s.scored.iter().map(|&(_, c)| c));
        return Ok((n_candidates, n_refined));
    }
    // per-head and mean: each retrieval ranks its own candidates
    let (mut n_candidates, mut n_refined) = (0, 0);
    s.ranked.resize_with(s.retrievals.len(), Vec::new);
    for (r, ret) in s.retrievals.iter().enumerate() {
        let list = &s.lists[r];
        n_candidates += list.len();
        s.estimates.resize(list.len(), 0.0);
        estimate_group(kernel, &shape, &codes, &s.queries, r..r + 1, list, &mut s.estimates);
        s.scored.clear();
        s.scored.extend(s.estimates.iter().copied().zip(list.iter().copied()));
        top_k_in_place(&mut s.scored, ret.shortlist);
        if refining {
            n_refined += s.scored.len();
            rescore(keys, &s.plain[r * d..][..d], &mut s.row, &mut s.scored)?;
            top_k_in_place(&mut s.scored, ret.k);
        }
        s.ranked[r].clear();
        s.ranked[r].extend(s.scored.iter().map(|&(_, c)| c));
    }
    merge_ranks(&s.ranked[..s.retrievals.len()], &mut s.seen, &mut s.retrieved);
    Ok((n_candidates, n_refined))
}

/// The retrievals of a group of `g` heads under the policy, with their k and shortlist.
fn plan_retrievals(p: &StepParams, g: usize, out: &mut Vec<Retrieval>) {
    let shortlist = |k: usize| if p.refine > 1 { k.saturating_mul(p.refine) } else { k };
    out.clear();
    match p.gqa {
        GqaPolicy::Mean => out.push(Retrieval { heads: (0, g), k: p.top_k, shortlist: shortlist(p.top_k) }),
        GqaPolicy::PerHead => {
            for h in 0..g {
                let k = p.top_k / g + usize::from(h < p.top_k % g);
                if k > 0 {
                    out.push(Retrieval { heads: (h, h + 1), k, shortlist: shortlist(k) });
                }
            }
        }
        GqaPolicy::Group => out.extend((0..g).map(|h| Retrieval {
            heads: (h, h + 1),
            k: p.top_k,
            shortlist: shortlist(p.top_k),
        })),
    }
}

/// Every retrieval's candidates (`search::candidates`: the `candidate_count` highest
/// counts, ties by the lower cell) into `s.lists`, in cell order, and their union.
fn candidates(shape: &Shape, n_zone: usize, rho_cand: f64, s: &mut Scratch) {
    let nr = s.retrievals.len();
    let n = s.in_zone.len();
    s.lists.resize_with(nr, Vec::new);
    s.marked.clear();
    s.marked.resize(n, false);
    let lanes = s.counts.lanes.expect("counted");
    for (r, ret) in s.retrievals.iter().enumerate() {
        let (cut, mut ties) =
            cutoff(s.counts.histogram(r, shape), candidate_count(n_zone, rho_cand, ret.shortlist));
        let shift = (r % lanes.per_word) as u32 * lanes.bits;
        let mask = (1u64 << lanes.bits) - 1;
        let words = &s.counts.counts[(r / lanes.per_word) * n..][..n];
        // branch-free: a third of the zone is taken in no predictable pattern
        let list = &mut s.lists[r];
        list.clear();
        list.resize(n, 0);
        let mut len = 0;
        for (c, ((&w, &z), m)) in words.iter().zip(&s.in_zone).zip(s.marked.iter_mut()).enumerate() {
            let count = ((w >> shift) & mask) as u16;
            let above = z & (count > cut);
            let tie = z & (count == cut) & (ties > 0);
            ties -= tie as usize;
            list[len] = c as u32;
            len += (above | tie) as usize;
            *m |= above | tie;
        }
        list.truncate(len);
    }
    s.union.clear();
    s.union.extend((0..n as u32).filter(|&c| s.marked[c as usize]));
}

/// Ranks `cells` for the group (`gqa::rank_by_group_probability`): `logits[h * n + i]` is
/// head h's logit of `cells[i]`; the `keep` cells of the largest mean probability over the
/// heads, best first, into `out` as (score, cell).
fn rank_by_group(
    g: usize,
    cells: &[u32],
    logits: &[f32],
    keep: usize,
    buf: &mut (Vec<f32>, Vec<f32>),
    out: &mut Vec<(f32, u32)>,
) {
    let (scores, e) = buf;
    group_scores(g, logits, scores, e);
    out.clear();
    out.extend(scores.iter().copied().zip(cells.iter().copied()));
    top_k_in_place(out, keep);
}

/// `logits[h * n + i]`: head h's exact selection logit of `cells[i]`, each key row read
/// once for the group.
fn exact_logits(
    keys: &Rows,
    queries: &[f32],
    p: &StepParams,
    cells: &[u32],
    row: &mut Vec<f32>,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let d = keys.dim();
    if !queries.len().is_multiple_of(d) {
        return Err(Error::invalid(format!("refine: key rows of {d} for queries of {}", queries.len())));
    }
    let (g, n) = (queries.len() / d, cells.len());
    row.resize(d, 0.0);
    logits.resize(g * n, 0.0);
    for (i, &c) in cells.iter().enumerate() {
        if c as usize >= keys.len() {
            return Err(Error::invalid(format!("refine: cell {c} has no key row ({} rows)", keys.len())));
        }
        keys.load(c as usize, row);
        for (h, q) in queries.chunks_exact(d).enumerate() {
            logits[h * n + i] = p.attn.selection_logit(dot(q, row));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::attention::AttnParams;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
    use crate::algorithm::search::{RatioPolicy, Ratios};
    use crate::eval::synth::{Rng, SynthCache, SynthSpec};
    use crate::rows::RowData;
    use crate::step::StepScratch;
    use half::f16;

    /// The fast step against the oracle: the same cells attended, the same stats and the
    /// same output bits, over shapes, policies, ratio tables, refine factors, top-k from
    /// tiny to larger than the zone, softcap, and caches where other sequences' cells,
    /// empty cells and shuffled positions interleave.
    #[test]
    fn equals_the_oracle_exactly() {
        let mut rng = Rng::new(21);
        let mut cases = 0;
        for (d, g, n) in [(64, 4, 3000), (128, 6, 6000), (256, 4, 2500), (128, 1, 1500), (32, 3, 1200)] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 9);
            let cache = SynthCache::generate(&SynthSpec::new(n, d, 3 + d as u64));
            let k16: Vec<f16> = cache.keys.iter().map(|&x| f16::from_f32(x)).collect();
            let keys = Rows::packed(RowData::F16(&k16), d).unwrap();
            let values = Rows::packed(RowData::F32(&cache.values), d).unwrap();
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            let all: Vec<usize> = (0..n).collect();
            encode_rows(&rot, &keys, &all, None, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
            for layout in 0..3 {
                // 0: one sequence in order; 1: two sequences interleaved, ours the even
                // cells; 2: positions shuffled within blocks and a tenth of the cells empty
                let pos: Vec<i32> = match layout {
                    1 => (0..n as i32).map(|c| c / 2).collect(),
                    2 => (0..n as i32).map(|c| c ^ 5).collect(),
                    _ => (0..n as i32).collect(),
                };
                let visible = |c: usize| match layout {
                    1 => c.is_multiple_of(2),
                    2 => c % 10 != 3,
                    _ => true,
                };
                let view = CacheView { keys, values, codes: store.as_ref(), visible, pos: &pos };
                let targets: Vec<usize> = (0..6).map(|_| rng.below(n)).collect();
                let q: Vec<f32> = (0..g).flat_map(|_| cache.planted_query(&targets, 4.0, &mut rng)).collect();
                for gqa in GqaPolicy::ALL {
                    for (top_k, refine, ratios, softcap) in [
                        (64, 2, RatioPolicy::Tuned, 0.0),
                        (200, 1, RatioPolicy::Adaptive, 0.0),
                        (5, 3, RatioPolicy::Fixed(Ratios { cand: 0.05, coll: 0.3 }), 30.0),
                        (2, 1, RatioPolicy::Tuned, 0.0),
                        (100_000, 2, RatioPolicy::Tuned, 0.0),
                    ] {
                        let p = StepParams {
                            top_k,
                            n_sink: 4,
                            n_local: 64,
                            ratios,
                            gqa,
                            refine,
                            attn: AttnParams { scale: 0.2, softcap },
                        };
                        let (mut want, mut got) = (vec![0.0; g * d], vec![0.0; g * d]);
                        let mut oracle = StepScratch::default();
                        let w =
                            crate::step::attend_cache(&rot, &p, &view, &q, &mut oracle, &mut want).unwrap();
                        let mut fast = Scratch::default();
                        let s = attend_cache(&rot, &p, &view, &q, &mut fast, &mut got).unwrap();
                        let what = format!("d {d}, {g} heads, layout {layout}, {gqa:?}, {p:?}");
                        assert_eq!(s, w, "{what}");
                        assert_eq!(fast.attended(), oracle.attended(), "{what}");
                        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 5 * 3 * 3 * 5);
    }
}
