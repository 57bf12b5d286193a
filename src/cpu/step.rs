//! One decode step over an engine's cache with `step::attend_cache`'s contract and results,
//! organised for speed, its loops shared by a team of threads (`team`):
//! - classify: visibility, sink / window / zone and the zone's code histogram, in two
//!   passes over the cells;
//! - tiers: each retrieval's levels (`search::tier_levels`);
//! - collisions: every retrieval's counts in one pass over the codes (`collide`), with
//!   each thread's histograms of counts;
//! - candidates: every retrieval's cutoff from its histogram of counts, the candidates of
//!   all of them in one pass (ties by the lower cell, as `search::candidates`: a thread
//!   takes the ties the threads before it left);
//! - rerank: the 4-bit estimates of a candidate for every head that needs it from one read
//!   of its codes (`estimate`), then the policy's ranking and refine as in `gqa`;
//! - attention over sink ∪ retrieved ∪ window (`attention::attend`), the heads shared out.
//!
//! Splitting never changes a result: every cell and row is computed as on one thread.

use multiversion::multiversion;

use crate::algorithm::attention::{attend, dot_heads, AttnScratch};
use crate::algorithm::gqa::{merge_ranks, GqaPolicy};
use crate::algorithm::prefetch;
use crate::algorithm::rank::{rank_key, top_k_keys};
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::{candidate_count, cutoff, group_query, tier_budgets, tier_levels};
use crate::cpu;
use crate::cpu::collide::{self, GroupCounts};
use crate::cpu::estimate::{estimate_group, GroupQueries, Kernel};
use crate::cpu::kept;
use crate::cpu::softmax::group_scores;
use crate::cpu::team::{Parts, Team};
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
    pub rerank_ranking: f64,
    pub refine: f64,
    pub refine_rows: f64,
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

/// What one thread of a team computes for itself in a split; the leader merges them.
#[derive(Debug, Default)]
struct ThreadPart {
    /// classify: (lowest, highest position, visible cells) of the share, then its zone
    /// cells and the zone's code histogram
    p_min: i64,
    p_max: i64,
    n_visible: usize,
    n_zone: usize,
    hist: Vec<u32>,
    levels: Vec<u8>,
    /// collisions: the share's histograms of counts (`[retrieval][count]`)
    count_hist: Vec<u32>,
    /// candidates: each retrieval's candidates of the share, and their union
    lists: Vec<Vec<u32>>,
    union: Vec<u32>,
    ties: Vec<usize>,
    /// rerank and refine: `[head][row of the share]`
    values: Vec<f32>,
    row: Vec<f32>,
    attn: AttnScratch,
}

/// Reusable buffers of a step; after warm-up a step allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Time the stages into `times` (off by default).
    pub timing: bool,
    pub times: StageTimes,
    parts: Vec<ThreadPart>,
    visible: Vec<bool>,
    in_zone: Vec<bool>,
    hist: Vec<u32>,
    retrievals: Vec<Retrieval>,
    /// Each retrieval's query, unrotated (for refine) and rotated, back to back.
    plain: Vec<f32>,
    rotated: Vec<f32>,
    mean: Vec<f32>,
    levels: Vec<u8>,
    counts: GroupCounts,
    /// Each retrieval's candidates in cell order (unless only their union is needed), and
    /// their union.
    union_only: bool,
    lists: Vec<Vec<u32>>,
    union: Vec<u32>,
    shortlist: Vec<u32>,
    keys: Vec<u64>,
    queries: GroupQueries,
    estimates: Vec<f32>,
    logits: Vec<f32>,
    softmax_buf: (Vec<f32>, Vec<f32>),
    row: Vec<f32>,
    ranked: Vec<Vec<u32>>,
    seen: std::collections::HashSet<u32>,
    retrieved: Vec<u32>,
    cells: Vec<u32>,
}

impl Scratch {
    /// The cells the last step attended, in cell order.
    pub fn attended(&self) -> &[u32] {
        &self.cells
    }
}

/// Runs one step (see `step::attend_cache`, whose results it gives) on the team's leader,
/// the team sharing its loops (`Team::lead` runs it there).
pub fn attend_cache<V: Fn(usize) -> bool + Sync>(
    team: &Team,
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
    s.parts.resize_with(team.nth, ThreadPart::default);
    let mut lap = Lap::start(s.timing);
    let mut stats = classify(team, &shape, p, cache, s);
    lap.lap(&mut s.times.classify);
    s.cells.clear();
    if stats.n_visible > 0 {
        if stats.n_zone <= p.top_k {
            s.cells.extend((0..n as u32).filter(|&c| s.visible[c as usize]));
        } else {
            let (n_candidates, n_refined) =
                select(team, rotation, p, cache, queries, stats.n_zone, &mut lap, s)?;
            stats.n_candidates = n_candidates;
            stats.n_refined = n_refined;
            s.cells.extend((0..n as u32).filter(|&c| s.visible[c as usize] && !s.in_zone[c as usize]));
            s.cells.extend_from_slice(&s.retrieved);
            s.cells.sort_unstable();
        }
    }
    stats.n_attended = s.cells.len();
    attention(team, p, cache, queries, s, out)?;
    lap.lap(&mut s.times.attention);
    Ok(stats)
}

/// Visible cells, the zone (visible, neither sink nor window) and its code histogram.
fn classify<V: Fn(usize) -> bool + Sync>(
    team: &Team,
    shape: &Shape,
    p: &StepParams,
    cache: &CacheView<V>,
    s: &mut Scratch,
) -> StepStats {
    let n = cache.pos.len();
    s.visible.resize(n, false);
    s.in_zone.resize(n, false);
    let (visible, parts) = (Parts::new(&mut s.visible), Parts::new(&mut s.parts));
    team.split(n, &|t, range| {
        // SAFETY (both parts): each thread writes its own share of the cells and its own part.
        let (vis, part) = unsafe { (visible.part(range.clone()), &mut parts.part(t..t + 1)[0]) };
        let (mut p_min, mut p_max, mut n_visible) = (i64::MAX, i64::MIN, 0usize);
        for (v, c) in vis.iter_mut().zip(range) {
            *v = (cache.visible)(c);
            if *v {
                let pos = cache.pos[c] as i64;
                p_min = p_min.min(pos);
                p_max = p_max.max(pos);
                n_visible += 1;
            }
        }
        (part.p_min, part.p_max, part.n_visible) = (p_min, p_max, n_visible);
    });
    let threads = &s.parts[..team.nth];
    let p_min = threads.iter().map(|t| t.p_min).min().unwrap_or(i64::MAX);
    let p_max = threads.iter().map(|t| t.p_max).max().unwrap_or(i64::MIN);
    let n_visible = threads.iter().map(|t| t.n_visible).sum();
    let (sink_end, window_start) =
        (p_min.saturating_add(p.n_sink as i64), p_max.saturating_sub(p.n_local as i64));
    let table_len = shape.n_blocks * N_CENTROIDS;
    // the zone's histogram comes from the caller, from the index's kept one, or is counted here
    let counted = cache.zone_hist.is_some() || cache.kept.is_some();
    let (visible, in_zone, parts) = (&s.visible, Parts::new(&mut s.in_zone), Parts::new(&mut s.parts));
    team.split(n, &|t, range| {
        // SAFETY: as above.
        let (zone, part) = unsafe { (in_zone.part(range.clone()), &mut parts.part(t..t + 1)[0]) };
        part.hist.clear();
        part.hist.resize(table_len, 0);
        let hist: &mut [[u32; N_CENTROIDS]] = part.hist.as_chunks_mut().0;
        let mut n_zone = 0;
        for (z, c) in zone.iter_mut().zip(range) {
            let pos = cache.pos[c] as i64;
            *z = visible[c] && !(pos < sink_end || pos > window_start);
            if *z {
                n_zone += 1;
                if !counted {
                    for (h, &code) in hist.iter_mut().zip(cache.codes.cell_codes(shape, c)) {
                        h[code as usize] += 1;
                    }
                }
            }
        }
        part.n_zone = n_zone;
    });
    s.hist.clear();
    s.hist.resize(table_len, 0);
    let mut n_zone = 0;
    for part in &s.parts[..team.nth] {
        n_zone += part.n_zone;
        for (h, &x) in s.hist.iter_mut().zip(&part.hist) {
            *h += x;
        }
    }
    let mut zone_counted = !counted;
    if let Some(given) = cache.zone_hist {
        s.hist.copy_from_slice(given);
    } else if let Some(kept) = cache.kept {
        if !kept::zone_histogram(shape, &cache.codes, &kept, &s.in_zone, n_zone, &mut s.hist) {
            count_zone(team, shape, cache, s);
            zone_counted = true;
        }
    }
    StepStats { n_visible, n_zone, zone_counted, ..StepStats::default() }
}

/// The zone's code histogram counted, into `s.hist` (where the kept one cannot give it).
fn count_zone<V: Fn(usize) -> bool + Sync>(
    team: &Team,
    shape: &Shape,
    cache: &CacheView<V>,
    s: &mut Scratch,
) {
    let table_len = shape.n_blocks * N_CENTROIDS;
    let (in_zone, parts) = (&s.in_zone, Parts::new(&mut s.parts));
    team.split(in_zone.len(), &|t, range| {
        // SAFETY: each thread writes its own part.
        let part = unsafe { &mut parts.part(t..t + 1)[0] };
        part.hist.clear();
        part.hist.resize(table_len, 0);
        let hist: &mut [[u32; N_CENTROIDS]] = part.hist.as_chunks_mut().0;
        for c in range.filter(|&c| in_zone[c]) {
            for (h, &code) in hist.iter_mut().zip(cache.codes.cell_codes(shape, c)) {
                h[code as usize] += 1;
            }
        }
    });
    s.hist.clear();
    s.hist.resize(table_len, 0);
    for part in &s.parts[..team.nth] {
        for (h, &x) in s.hist.iter_mut().zip(&part.hist) {
            *h += x;
        }
    }
}

/// The group's retrieved rows into `s.retrieved`; returns (candidates, rows refined) as
/// `gqa::select_group` counts them.
#[allow(clippy::too_many_arguments)]
fn select<V: Fn(usize) -> bool + Sync>(
    team: &Team,
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
    let ratios = p.ratios.ratios(n_zone);
    ratios.validate()?;
    tiers(team, &shape, tier_budgets(n_zone, ratios.coll), s);
    lap.lap(&mut s.times.tiers);
    collisions(team, &shape, cache, s);
    lap.lap(&mut s.times.collisions);
    s.union_only = p.gqa == GqaPolicy::Group;
    candidates(team, n_zone, ratios.cand, s);
    lap.lap(&mut s.times.candidates);
    s.queries.set(&shape, &s.rotated);
    let kernel = Kernel::best(shape.n_blocks);
    if p.gqa == GqaPolicy::Group {
        let shortlist = s.retrievals[0].shortlist;
        let u = s.union.len();
        let union = std::mem::take(&mut s.union);
        per_row_values(team, g, &union, &mut s.parts, &mut s.logits, &|cells, out, _| {
            estimate_group(kernel, &shape, &codes, &s.queries, 0..g, cells, out);
            for e in out.iter_mut() {
                *e = p.attn.selection_logit(*e);
            }
        });
        lap.lap(&mut s.times.rerank);
        best_by_group(g, &union, &s.logits, shortlist, &mut s.softmax_buf, &mut s.keys, &mut s.shortlist);
        s.union = union;
        lap.lap(&mut s.times.rerank_ranking);
        let (n_candidates, mut n_refined) = (u, 0);
        if refining {
            n_refined = s.shortlist.len();
            // rows in cell order: the memory walks forward (results do not depend on order)
            s.shortlist.sort_unstable();
            check_rows(keys, d, &s.shortlist)?;
            per_row_values(team, g, &s.shortlist, &mut s.parts, &mut s.logits, &|cells, out, row| {
                exact_logits(keys, queries, p, cells, row, out)
            });
            lap.lap(&mut s.times.refine_rows);
            best_by_group(
                g,
                &s.shortlist,
                &s.logits,
                p.top_k,
                &mut s.softmax_buf,
                &mut s.keys,
                &mut s.retrieved,
            );
            lap.lap(&mut s.times.refine);
        } else {
            std::mem::swap(&mut s.retrieved, &mut s.shortlist);
        }
        return Ok((n_candidates, n_refined));
    }
    // per-head and mean: each retrieval ranks its own candidates (on the leader)
    let (mut n_candidates, mut n_refined) = (0, 0);
    s.ranked.resize_with(s.retrievals.len(), Vec::new);
    for (r, ret) in s.retrievals.iter().enumerate() {
        let list = &s.lists[r];
        n_candidates += list.len();
        s.estimates.resize(list.len(), 0.0);
        estimate_group(kernel, &shape, &codes, &s.queries, r..r + 1, list, &mut s.estimates);
        s.keys.clear();
        s.keys.extend(s.estimates.iter().zip(list).map(|(&e, &c)| rank_key(e, c)));
        // rank order is needed only for the last ranking (the group's lists merge by rank)
        top_k_keys(&mut s.keys, ret.shortlist, !refining);
        if refining {
            n_refined += s.keys.len();
            s.shortlist.clear();
            s.shortlist.extend(s.keys.iter().map(|&k| k as u32));
            s.shortlist.sort_unstable();
            check_rows(keys, d, &s.shortlist)?;
            s.estimates.resize(s.shortlist.len(), 0.0);
            exact_dots(keys, &s.plain[r * d..][..d], &s.shortlist, &mut s.row, &mut s.estimates);
            s.keys.clear();
            s.keys.extend(s.estimates.iter().zip(&s.shortlist).map(|(&e, &c)| rank_key(e, c)));
            top_k_keys(&mut s.keys, ret.k, true);
        }
        s.ranked[r].clear();
        s.ranked[r].extend(s.keys.iter().map(|&k| k as u32));
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

/// Every retrieval's tier levels into `s.levels` (`[retrieval][block][centroid]`), the
/// retrievals shared out.
fn tiers(team: &Team, shape: &Shape, budgets: [usize; crate::shape::N_TIERS], s: &mut Scratch) {
    let (nr, table_len, pd) = (s.retrievals.len(), shape.n_blocks * N_CENTROIDS, shape.padded_dim);
    s.levels.resize(nr * table_len, 0);
    let (levels, parts, rotated, hist) =
        (Parts::new(&mut s.levels), Parts::new(&mut s.parts), &s.rotated, &s.hist);
    team.split(nr, &|t, range| {
        // SAFETY: each thread writes its own retrievals' levels and its own part.
        let part = unsafe { &mut parts.part(t..t + 1)[0] };
        for r in range {
            tier_levels(shape, &rotated[r * pd..][..pd], hist, &budgets, &mut part.levels);
            unsafe { levels.part(r * table_len..(r + 1) * table_len) }.copy_from_slice(&part.levels);
        }
    });
}

/// Every retrieval's collision counts (`collide`) and each thread's histograms of them.
fn collisions<V: Fn(usize) -> bool + Sync>(
    team: &Team,
    shape: &Shape,
    cache: &CacheView<V>,
    s: &mut Scratch,
) {
    let n = s.in_zone.len();
    s.counts.prepare(shape, n, &s.levels);
    let (nr, hist_size) = (s.counts.retrievals, s.counts.hist_size());
    let kernel = collide::Kernel::best(shape);
    let mut planes = std::mem::take(&mut s.counts.planes);
    let (all, parts, group, in_zone) =
        (Parts::new(&mut planes), Parts::new(&mut s.parts), &s.counts, &s.in_zone);
    team.split(n, &|t, range| {
        // SAFETY: each thread writes its share of every retrieval's plane and its own part.
        let part = unsafe { &mut parts.part(t..t + 1)[0] };
        let mut shares: Vec<&mut [u16]> =
            (0..nr).map(|r| unsafe { all.part(r * n + range.start..r * n + range.end) }).collect();
        part.count_hist.clear();
        part.count_hist.resize(hist_size, 0);
        group.count_range(kernel, shape, &cache.codes, range, in_zone, &mut shares, &mut part.count_hist);
    });
    s.counts.planes = planes;
    for part in &s.parts[..team.nth] {
        for (h, &x) in s.counts.hist.iter_mut().zip(&part.count_hist) {
            *h += x;
        }
    }
}

/// Every retrieval's candidates (`search::candidates`: the `candidate_count` highest
/// counts, ties by the lower cell) into `s.lists`, in cell order, or only their union into
/// `s.union` (the group policy's).
fn candidates(team: &Team, n_zone: usize, rho_cand: f64, s: &mut Scratch) {
    let nr = s.retrievals.len();
    let n = s.in_zone.len();
    // each retrieval's (cutoff, cells at the cutoff to take)
    let cuts: Vec<(u16, usize)> = (0..nr)
        .map(|r| cutoff(s.counts.histogram(r), candidate_count(n_zone, rho_cand, s.retrievals[r].shortlist)))
        .collect();
    let cut_counts: Vec<u16> = cuts.iter().map(|&(c, _)| c).collect();
    let hist_len = s.counts.histogram(0).len();
    // `ties_before[t * nr + r]`: cells at retrieval r's cutoff in the shares before thread t's
    let mut ties_before = vec![0usize; team.nth * nr];
    for t in 1..team.nth {
        for (r, &(cut, _)) in cuts.iter().enumerate() {
            let here = s.parts[t - 1].count_hist[r * hist_len + cut as usize] as usize;
            ties_before[t * nr + r] = ties_before[(t - 1) * nr + r] + here;
        }
    }
    let union_only = s.union_only;
    let (parts, planes) = (Parts::new(&mut s.parts), &s.counts.planes);
    team.split(n, &|t, range| {
        // SAFETY: each thread writes its own part only.
        let part = unsafe { &mut parts.part(t..t + 1)[0] };
        part.ties.clear();
        part.ties.extend((0..nr).map(|r| cuts[r].1.saturating_sub(ties_before[t * nr + r])));
        part.lists.resize_with(nr, Vec::new);
        if union_only {
            for list in &mut part.lists[..nr] {
                list.clear();
            }
            cpu::candidates::union(planes, n, &cut_counts, range, &mut part.ties, &mut part.union);
        } else {
            part.union.clear();
            cpu::candidates::lists(planes, n, &cut_counts, range, &mut part.ties, &mut part.lists[..nr]);
        }
    });
    s.lists.resize_with(nr, Vec::new);
    for (r, list) in s.lists[..nr].iter_mut().enumerate() {
        list.clear();
        for part in &s.parts[..team.nth] {
            list.extend_from_slice(&part.lists[r]);
        }
    }
    s.union.clear();
    for part in &s.parts[..team.nth] {
        s.union.extend_from_slice(&part.union);
    }
}

/// Fills `[head][cell of a share]` for a share's cells, with a row buffer of its own.
type RowValues<'a> = dyn Fn(&[u32], &mut [f32], &mut Vec<f32>) + Sync + 'a;

/// `out[h * n + i]` for the n `cells` and g heads, each thread filling its share of the
/// cells by `f(cells of the share, [head][cell of the share], row buffer)`.
fn per_row_values(
    team: &Team,
    g: usize,
    cells: &[u32],
    parts: &mut [ThreadPart],
    out: &mut Vec<f32>,
    f: &RowValues,
) {
    let n = cells.len();
    out.resize(g * n, 0.0);
    let (all, parts) = (Parts::new(out), Parts::new(parts));
    team.split(n, &|t, range| {
        // SAFETY: each thread writes its own part and its share of every head's values.
        let part = unsafe { &mut parts.part(t..t + 1)[0] };
        let len = range.len();
        part.values.resize(g * len, 0.0);
        f(&cells[range.clone()], &mut part.values, &mut part.row);
        for h in 0..g {
            let dst = unsafe { all.part(h * n + range.start..h * n + range.end) };
            dst.copy_from_slice(&part.values[h * len..][..len]);
        }
    });
}

/// The group's ranking (`gqa::rank_by_group_probability`) as a set: `logits[h * n + i]` is
/// head h's logit of `cells[i]`; the `keep` cells of the largest mean probability over the
/// heads into `out`, in no particular order (the step sorts the rows it attends).
fn best_by_group(
    g: usize,
    cells: &[u32],
    logits: &[f32],
    keep: usize,
    buf: &mut (Vec<f32>, Vec<f32>),
    keys: &mut Vec<u64>,
    out: &mut Vec<u32>,
) {
    let (scores, e) = buf;
    group_scores(g, logits, scores, e);
    keys.clear();
    keys.extend(scores.iter().zip(cells).map(|(&s, &c)| rank_key(s, c)));
    if keep == 0 {
        keys.clear();
    } else if keys.len() > keep {
        keys.select_nth_unstable(keep - 1);
        keys.truncate(keep);
    }
    out.clear();
    out.extend(keys.iter().map(|&k| k as u32));
}

/// Refine's checks (`gqa`'s errors): key rows of the queries' dim for every cell.
fn check_rows(keys: &Rows, d: usize, cells: &[u32]) -> Result<()> {
    if keys.dim() != d {
        return Err(Error::invalid(format!("refine: key rows of {} for queries of {d}", keys.dim())));
    }
    match cells.iter().find(|&&c| c as usize >= keys.len()) {
        Some(c) => Err(Error::invalid(format!("refine: cell {c} has no key row ({} rows)", keys.len()))),
        None => Ok(()),
    }
}

/// `out[h * n + i]`: head h's exact selection logit of `cells[i]` (n cells, checked by
/// `check_rows`), each key row read once for the group. (Vectorised per CPU; `dot`
/// rounds the same on every target.)
#[multiversion(targets = "simd")]
fn exact_logits(
    keys: &Rows,
    queries: &[f32],
    p: &StepParams,
    cells: &[u32],
    row: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (d, n) = (keys.dim(), cells.len());
    // the row, then its dot product with each head
    row.resize(d + queries.len() / d, 0.0);
    for (i, &c) in cells.iter().enumerate() {
        if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
            keys.prefetch(ahead as usize);
        }
        keys.load(c as usize, &mut row[..d]);
        let (row, dots) = row.split_at_mut(d);
        dot_heads(queries, row, dots);
        for (h, &x) in dots.iter().enumerate() {
            out[h * n + i] = p.attn.selection_logit(x);
        }
    }
}

/// `out[i]` = the exact `<q, key of cells[i]>` (`gqa::rescore`'s score; cells checked by
/// `check_rows`), rows prefetched ahead.
fn exact_dots(keys: &Rows, q: &[f32], cells: &[u32], row: &mut Vec<f32>, out: &mut [f32]) {
    row.resize(keys.dim(), 0.0);
    for (i, &c) in cells.iter().enumerate() {
        if let Some(&ahead) = cells.get(i + prefetch::DISTANCE) {
            keys.prefetch(ahead as usize);
        }
        keys.load(c as usize, row);
        dot_heads(q, row, &mut out[i..i + 1]);
    }
}

/// Attention over `s.cells` into `out`, the heads shared out (each head's output is the
/// same computed alone or with the others).
fn attention<V: Fn(usize) -> bool + Sync>(
    team: &Team,
    p: &StepParams,
    cache: &CacheView<V>,
    queries: &[f32],
    s: &mut Scratch,
    out: &mut [f32],
) -> Result<()> {
    let (dk, dv) = (cache.keys.dim(), cache.values.dim());
    let g = queries.len() / dk.max(1);
    if team.nth == 1 || g < 2 {
        return attend(queries, &cache.keys, &cache.values, &s.cells, p.attn, &mut s.parts[0].attn, out);
    }
    if queries.len() != g * dk || out.len() != g * dv {
        return Err(Error::invalid(format!(
            "attend: {} query values and {} outputs do not make whole heads of dims {dk}/{dv}",
            queries.len(),
            out.len()
        )));
    }
    let (all, parts, cells) = (Parts::new(out), Parts::new(&mut s.parts), &s.cells);
    team.split(g, &|t, heads| {
        // SAFETY: each thread writes its own part and its own heads' outputs.
        let (part, o) = unsafe { (&mut parts.part(t..t + 1)[0], all.part(heads.start * dv..heads.end * dv)) };
        let q = &queries[heads.start * dk..heads.end * dk];
        attend(q, &cache.keys, &cache.values, cells, p.attn, &mut part.attn, o)
            .expect("attention of checked rows");
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::attention::AttnParams;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
    use crate::algorithm::search::Tally;
    use crate::algorithm::search::{RatioPolicy, Ratios};
    use crate::cpu::team::tests::with_team;
    use crate::eval::synth::{Rng, SynthCache, SynthSpec};
    use crate::rows::RowData;
    use crate::step::Kept;
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
        for (d, g, n) in
            [(64, 4, 3000), (128, 6, 6000), (256, 4, 2500), (128, 1, 1500), (32, 3, 1200), (256, 4, 8448)]
        {
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
                let view = CacheView {
                    keys,
                    values,
                    codes: store.as_ref(),
                    visible,
                    pos: &pos,
                    zone_hist: None,
                    kept: None,
                };
                let targets: Vec<usize> = (0..6).map(|_| rng.below(n)).collect();
                let q: Vec<f32> = (0..g).flat_map(|_| cache.planted_query(&targets, 4.0, &mut rng)).collect();
                for gqa in GqaPolicy::ALL {
                    for (top_k, refine, ratios, softcap) in [
                        (64, 2, RatioPolicy::Tuned, 0.0),
                        (200, 1, RatioPolicy::Adaptive, 0.0),
                        (5, 3, RatioPolicy::Fixed(Ratios { cand: 0.05, coll: 0.3 }), 30.0),
                        (256, 2, RatioPolicy::Tuned, 0.0),
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
                        let mut want = vec![0.0; g * d];
                        let mut oracle = StepScratch::default();
                        let w =
                            crate::step::attend_cache(&rot, &p, &view, &q, &mut oracle, &mut want).unwrap();
                        // one thread, and teams of two and three
                        for nth in [1, 2, 3] {
                            let runs = with_team(nth, |team| {
                                let mut fast = Scratch::default();
                                let mut got = vec![0.0; g * d];
                                team.lead(|| attend_cache(team, &rot, &p, &view, &q, &mut fast, &mut got))
                                    .map(|r| (r.unwrap(), fast.attended().to_vec(), got))
                            });
                            let (s, cells, got) = runs[0].as_ref().unwrap();
                            let what =
                                format!("d {d}, {g} heads, layout {layout}, {gqa:?}, {p:?}, {nth} threads");
                            assert_eq!(*s, w, "{what}");
                            assert_eq!(cells, oracle.attended(), "{what}");
                            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}");
                        }
                        // the zone's histogram given by the caller (as an index handle does)
                        let pmin = (0..n).filter(|&c| visible(c)).map(|c| pos[c]).min().unwrap() as i64;
                        let pmax = (0..n).filter(|&c| visible(c)).map(|c| pos[c]).max().unwrap() as i64;
                        let in_zone = |c: usize| {
                            let p = pos[c] as i64;
                            visible(c) && p >= pmin + 4 && p <= pmax - 64
                        };
                        let mut hist = Vec::new();
                        crate::algorithm::search::histogram(
                            &shape,
                            &store.as_ref(),
                            0..n,
                            in_zone,
                            &mut hist,
                        );
                        let counted = CacheView { zone_hist: Some(&hist), ..view };
                        let (mut got, mut fast) = (vec![0.0; g * d], Scratch::default());
                        let st =
                            attend_cache(&Team::solo(), &rot, &p, &counted, &q, &mut fast, &mut got).unwrap();
                        let given = StepStats { zone_counted: false, ..w };
                        assert_eq!((st, fast.attended()), (given, oracle.attended()), "given histogram");
                        assert!(
                            got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "given histogram"
                        );
                        // the index's kept histogram: exact when every cell is counted, and
                        // counted anew when a zone cell is not
                        let (mut kh, mut flags) = (vec![0u32; shape.n_blocks * 256], vec![0u8; n]);
                        kept::tally(&shape, &store.as_ref(), &all, &mut kh, &mut flags, Tally::Add);
                        let mut partly = flags.clone();
                        partly[(0..n).find(|&c| in_zone(c)).unwrap()] = 0;
                        for (flags, zone_counted) in [(&flags, false), (&partly, true)] {
                            let with_kept =
                                CacheView { kept: Some(Kept { hist: &kh, counted: flags }), ..view };
                            let (mut got, mut fast) = (vec![0.0; g * d], Scratch::default());
                            let st =
                                attend_cache(&Team::solo(), &rot, &p, &with_kept, &q, &mut fast, &mut got)
                                    .unwrap();
                            let want_st = StepStats { zone_counted, ..w };
                            assert_eq!((st, fast.attended()), (want_st, oracle.attended()), "kept histogram");
                            assert!(
                                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "kept histogram"
                            );
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 6 * 3 * 3 * 6);
    }
}
