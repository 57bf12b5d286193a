//! Row reuse between consecutive decode steps (`--reuse STEPS`). Around each sampled position
//! the decode steps are replayed one token at a time, and each step's retrieved zone rows
//! (its top-k) are compared with the rows the steps just before it retrieved: the share
//! found among the last step's, the last 2 steps' and the last 4 steps' rows. Under
//! `--pariskv-offload` those rows cross PCIe; a GPU-memory cache holding the rows of the
//! last m steps would serve that share of them, and needs room for the union of those m
//! steps' rows (reported as a multiple of k). Sink and window rows are not counted (every
//! step reads them), nor the refine shortlist's rows (only the step protocol below counts
//! them), nor steps whose zone is attended whole.
//!
//! Besides the ideal history, a slot table like the one a GPU row cache would keep is
//! simulated (`SlotCache`): k, 2k and 4k slots per layer and KV head, 4-way set associative,
//! a miss filling its set's least recently used slot; "cache" is its hit rate. And the
//! device's whole step protocol, the refine's shortlists included (`row_cache.rs`), with 2k
//! and 4k slots.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::{Index, Result, RowData};

use crate::row_cache::{Slots, StepRows, StepTable, PROTOCOLS, WAYS};
use crate::{append_until, config, positions, replay_len, Args, Layer};

/// The histories compared: the rows of the last m steps.
const HISTORIES: [usize; 3] = [1, 2, 4];
const DEEPEST: usize = HISTORIES[HISTORIES.len() - 1];
/// The slot tables simulated: slots as multiples of k.
const CAPACITIES: [usize; 3] = [1, 2, 4];
/// The step protocol's tables: slots as multiples of k.
const PROTOCOL_SLOTS: [usize; 2] = [2, 4];

/// Sums of one (layer, policy, k) configuration over the measured steps and KV heads.
#[derive(Default, Clone)]
pub struct ReuseSums {
    n: usize,
    rows: f64,
    /// the share of a step's rows among the last m steps' rows, per history
    hits: [f64; HISTORIES.len()],
    /// the last m steps' distinct rows over k, per history
    held: [f64; HISTORIES.len()],
    /// the share of a step's rows the slot table held, per capacity
    cached: [f64; CAPACITIES.len()],
    /// the step protocol's rows, per capacity (PROTOCOL_SLOTS) and protocol
    protocol: [[StepRows; PROTOCOLS.len()]; PROTOCOL_SLOTS.len()],
}

impl ReuseSums {
    fn add(&mut self, o: &ReuseSums) {
        self.n += o.n;
        self.rows += o.rows;
        for i in 0..HISTORIES.len() {
            self.hits[i] += o.hits[i];
            self.held[i] += o.held[i];
        }
        for i in 0..CAPACITIES.len() {
            self.cached[i] += o.cached[i];
        }
        for (mine, theirs) in self.protocol.iter_mut().flatten().zip(o.protocol.iter().flatten()) {
            mine.add(theirs);
        }
    }

    fn mean(&self, x: f64) -> f64 {
        x / self.n.max(1) as f64
    }

    pub fn header() {
        println!(
            "{:>5} {:>9} {:>5} | {:>6} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7}",
            "layer",
            "gqa",
            "k",
            "steps",
            "rows",
            "hit(1)",
            "hit(2)",
            "hit(4)",
            "held(1)",
            "held(2)",
            "held(4)",
            "c(1k)",
            "c(2k)",
            "c(4k)"
        );
    }

    fn print_row(&self, layer: &str, policy: GqaPolicy, k: usize) {
        let m = |x: f64| self.mean(x);
        println!(
            "{layer:>5} {:>9} {k:>5} | {:>6} {:>7.1} | {:>7.3} {:>7.3} {:>7.3} | {:>7.2} {:>7.2} {:>7.2} | {:>7.3} {:>7.3} {:>7.3}",
            policy.name(),
            self.n,
            m(self.rows),
            m(self.hits[0]),
            m(self.hits[1]),
            m(self.hits[2]),
            m(self.held[0]),
            m(self.held[1]),
            m(self.held[2]),
            m(self.cached[0]),
            m(self.cached[1]),
            m(self.cached[2])
        );
    }

    fn json(&self, il: usize, policy: GqaPolicy, k: usize) -> String {
        let list =
            |v: &[f64]| v.iter().map(|x| format!("{:.6}", self.mean(*x))).collect::<Vec<_>>().join(", ");
        format!(
            "  {{\"layer\": {il}, \"gqa\": \"{}\", \"k\": {k}, \"steps\": {}, \"rows\": {:.1}, \"histories\": {:?}, \
             \"hit\": [{}], \"held_over_k\": [{}], \"cache_slots_over_k\": {:?}, \"cache_ways\": {WAYS}, \
             \"cache_hit\": [{}], \"protocol\": [{}]}},",
            policy.name(),
            self.n,
            self.mean(self.rows),
            HISTORIES,
            list(&self.hits),
            list(&self.held),
            CAPACITIES,
            list(&self.cached),
            self.protocol_json(k)
        )
    }

    /// The step protocol's report: one line per protocol and capacity.
    pub fn protocol_header() {
        println!(
            "{:>5} {:>9} {:>5} | {:>12} {:>6} | {:>8} {:>8} {:>8} {:>8} | {:>7}",
            "layer", "gqa", "k", "protocol", "slots", "refine", "r-hit", "attn", "a-hit", "pcie"
        );
    }

    /// Each capacity's and protocol's figures: protocol, slots, then the step's refine rows
    /// and their hit rate, attention rows and their hit rate, and the share over PCIe.
    fn protocol_rows(&self, k: usize) -> impl Iterator<Item = (&'static str, usize, [f64; 5])> + '_ {
        PROTOCOL_SLOTS.iter().enumerate().flat_map(move |(ci, &c)| {
            PROTOCOLS.iter().enumerate().map(move |(pi, &(name, _))| {
                let r = &self.protocol[ci][pi];
                let figures = [
                    self.mean(r.refine),
                    r.refine_hit_rate(),
                    self.mean(r.attention),
                    r.attention_hit_rate(),
                    r.pcie_share(),
                ];
                (name, c * k, figures)
            })
        })
    }

    fn print_protocol(&self, layer: &str, policy: GqaPolicy, k: usize) {
        for (name, slots, [refine, r_hit, attn, a_hit, pcie]) in self.protocol_rows(k) {
            println!(
                "{layer:>5} {:>9} {k:>5} | {name:>12} {slots:>6} | {refine:>8.1} {r_hit:>8.3} {attn:>8.1} {a_hit:>8.3} | {pcie:>7.3}",
                policy.name()
            );
        }
    }

    fn protocol_json(&self, k: usize) -> String {
        let rows: Vec<String> = self
            .protocol_rows(k)
            .map(|(name, slots, [refine, r_hit, attn, a_hit, pcie])| {
                format!(
                    "{{\"protocol\": \"{name}\", \"slots\": {slots}, \"refine_rows\": {refine:.1}, \"refine_hit\": {r_hit:.6}, \
                     \"attention_rows\": {attn:.1}, \"attention_hit\": {a_hit:.6}, \"pcie_share\": {pcie:.6}}}"
                )
            })
            .collect();
        rows.join(", ")
    }
}

/// The decode steps replayed: for each sampled position t, t and the `steps + DEEPEST - 1`
/// before it (the first DEEPEST only fill the history), each once, in order.
fn steps(a: &Args, n: usize) -> Vec<usize> {
    let span = a.reuse + DEEPEST - 1;
    positions(a, n)
        .into_iter()
        .flat_map(|t| t.saturating_sub(span)..=t)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// One KV head's recent top-k sets, newest last.
type History = VecDeque<HashSet<u32>>;

/// A slot table of top-k rows alone (`Slots`), a miss filling its set's least recently
/// used slot.
#[derive(Clone)]
struct SlotCache(Slots);

impl SlotCache {
    fn new(slots: usize) -> SlotCache {
        SlotCache(Slots::new(slots))
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// Looks `cell` up at `step` (> 0): true on a hit; a miss takes the slot.
    fn access(&mut self, cell: u32, step: u32) -> bool {
        let (tags, used) = self.0.set(cell);
        if let Some(w) = tags.iter().position(|&t| t == cell) {
            used[w] = step;
            return true;
        }
        let victim = (0..WAYS).min_by_key(|&w| used[w]).unwrap_or(0);
        tags[victim] = cell;
        used[victim] = step;
        false
    }
}

/// Replays one layer's decode steps under one GQA policy, for every k.
fn replay(a: &Args, layer: &Layer, policy: GqaPolicy) -> Result<Vec<ReuseSums>> {
    let (nq, d, nkv) = (layer.q.shape[1], layer.q.shape[2], layer.k.shape[1]);
    let n = replay_len(a, layer);
    let cfg = config(a, layer, policy);
    let mut index = Index::new(cfg.clone())?;
    let mut sums = vec![ReuseSums::default(); a.ks.len()];
    let mut history: Vec<Vec<History>> = vec![vec![History::new(); nkv]; a.ks.len()];
    let mut caches: Vec<Vec<Vec<SlotCache>>> =
        a.ks.iter()
            .map(|&k| vec![CAPACITIES.iter().map(|&c| SlotCache::new(c * k)).collect(); nkv])
            .collect();
    // [k][KV head][capacity][protocol]
    let mut tables: Vec<Vec<Vec<Vec<StepTable>>>> =
        a.ks.iter()
            .map(|&k| {
                let per_capacity = PROTOCOL_SLOTS
                    .iter()
                    .map(|&c| PROTOCOLS.iter().map(|&(_, fills)| StepTable::new(c * k, fills)).collect())
                    .collect();
                vec![per_capacity; nkv]
            })
            .collect();
    let (mut appended, mut last) = (0, None);
    let all = steps(a, n);
    for (i, &s) in all.iter().enumerate() {
        if last.is_some_and(|l| l + 1 != s) {
            // a gap since the last step: the history starts again
            history.iter_mut().flatten().for_each(|h| h.clear());
            caches.iter_mut().flatten().flatten().for_each(SlotCache::clear);
            tables.iter_mut().flatten().flatten().flatten().for_each(StepTable::clear);
        }
        last = Some(s);
        append_until(a, layer, &mut index, &mut appended, s)?;
        let zone = cfg.zone(s + 1);
        let q = &layer.q.data[s * nq * d..(s + 1) * nq * d];
        let stamp = s as u32 + 1; // the slot tables' clock (0: a slot never used)
        for (ki, &k) in a.ks.iter().enumerate() {
            if zone.len() <= k {
                history[ki].iter_mut().for_each(|h| h.clear());
                caches[ki].iter_mut().flatten().for_each(SlotCache::clear);
                tables[ki].iter_mut().flatten().flatten().for_each(StepTable::clear);
                continue;
            }
            let found = index.search_detailed(RowData::F32(q), k)?;
            for (h, r) in found.iter().enumerate() {
                // every step goes through the slot tables (so they are warm when measured)
                let cached: Vec<usize> = caches[ki][h]
                    .iter_mut()
                    .map(|c| r.top.iter().filter(|&&cell| c.access(cell, stamp)).count())
                    .collect();
                // the step's attention rows: sink, top-k, window
                let attended =
                    || (0..zone.start as u32).chain(r.top.iter().copied()).chain(zone.end as u32..=s as u32);
                let protocol: Vec<Vec<StepRows>> = tables[ki][h]
                    .iter_mut()
                    .map(|per| per.iter_mut().map(|t| t.step(stamp, &r.shortlists, attended())).collect())
                    .collect();
                let past = &mut history[ki][h];
                if past.len() == DEEPEST {
                    measure(&mut sums[ki], past, &r.top, k);
                    for (sum, hits) in sums[ki].cached.iter_mut().zip(&cached) {
                        *sum += *hits as f64 / r.top.len().max(1) as f64;
                    }
                    for (sum, rows) in sums[ki].protocol.iter_mut().flatten().zip(protocol.iter().flatten()) {
                        sum.add(rows);
                    }
                }
                past.push_back(r.top.iter().copied().collect());
                if past.len() > DEEPEST {
                    past.pop_front();
                }
            }
        }
        eprint!("\r  layer {} ({}): step {} of {}   ", layer.il, policy.name(), i + 1, all.len());
    }
    eprintln!();
    Ok(sums)
}

/// Adds one step's reuse of one KV head: `past` holds the last DEEPEST steps' rows.
fn measure(s: &mut ReuseSums, past: &History, top: &[u32], k: usize) {
    s.n += 1;
    s.rows += top.len() as f64;
    for (i, &m) in HISTORIES.iter().enumerate() {
        let recent: Vec<&HashSet<u32>> = past.iter().rev().take(m).collect();
        let hits = top.iter().filter(|c| recent.iter().any(|set| set.contains(c))).count();
        s.hits[i] += hits as f64 / top.len().max(1) as f64;
        let held: HashSet<u32> = recent.iter().flat_map(|set| set.iter().copied()).collect();
        s.held[i] += held.len() as f64 / k as f64;
    }
}

/// The reuse report over every layer, policy and k; the JSON rows are appended to `json`.
pub fn run(
    a: &Args,
    layers: &[usize],
    load: impl Fn(usize) -> Result<Layer>,
    json: &mut String,
) -> Result<()> {
    println!(
        "row reuse over {} consecutive decode steps at each of {} positions from {} (history: the last 1, 2, 4 steps; \
         held: their distinct rows over k; c(m k): hit rate of a {WAYS}-way slot table of m k rows)",
        a.reuse, a.positions, a.min_pos
    );
    ReuseSums::header();
    let mut overall: Vec<((GqaPolicy, usize), ReuseSums)> = Vec::new();
    for &il in layers {
        let layer = load(il)?;
        for &policy in &a.policies {
            for (ki, s) in replay(a, &layer, policy)?.into_iter().enumerate() {
                let k = a.ks[ki];
                s.print_row(&il.to_string(), policy, k);
                let _ = writeln!(json, "{}", s.json(il, policy, k));
                match overall.iter_mut().find(|(key, _)| *key == (policy, k)) {
                    Some((_, o)) => o.add(&s),
                    None => overall.push(((policy, k), s)),
                }
            }
        }
    }
    for ((policy, k), s) in &overall {
        s.print_row("all", *policy, *k);
    }
    println!(
        "\nthe row cache's step protocol (sink, window and the refine's shortlists included), per layer and KV head: \
         rows a step took (refine: K rows of its shortlists; attn: K and V rows) and their hit rates; pcie: rows \
         over PCIe against no cache"
    );
    ReuseSums::protocol_header();
    for ((policy, k), s) in &overall {
        s.print_protocol("all", *policy, *k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(steps: &[&[u32]]) -> History {
        steps.iter().map(|s| s.iter().copied().collect()).collect()
    }

    #[test]
    fn reuse_counts_rows_of_the_last_steps() {
        // four earlier steps of k = 4, oldest first
        let (a, b, c, d): (&[u32], &[u32], &[u32], &[u32]) =
            (&[1, 2, 3, 4], &[5, 6, 7, 8], &[9, 10, 11, 12], &[2, 9, 13, 14]);
        let mut s = ReuseSums::default();
        measure(&mut s, &history(&[a, b, c, d]), &[2, 9, 20, 30], 4);
        assert_eq!((s.n, s.rows), (1, 4.0));
        // 2 and 9 were in the last step; 20 and 30 in none
        assert_eq!(s.hits, [0.5, 0.5, 0.5]);
        // distinct rows of the last 1, 2, 4 steps: 4, 7, 14
        assert_eq!(s.held, [1.0, 1.75, 3.5]);
        // the next step: 1 and 20 in the last step, 5 four steps back, 40 in none
        measure(&mut s, &history(&[b, c, d, &[20, 1]]), &[1, 5, 20, 40], 4);
        assert_eq!(s.hits, [1.0, 1.0, 1.25]);
    }

    #[test]
    fn slot_cache_hits_what_it_holds_and_evicts_the_least_recent() {
        // one set of WAYS slots: every cell lands in it
        let mut c = SlotCache::new(WAYS);
        for cell in 0..WAYS as u32 {
            assert!(!c.access(cell, 1), "an empty table misses");
        }
        assert!((0..WAYS as u32).all(|cell| c.access(cell, 2 + cell)), "it holds WAYS cells");
        // cell 0 was used least recently: a new cell takes its slot
        assert!(!c.access(100, 10));
        assert!(!c.access(0, 11), "cell 0 was evicted");
        assert!(c.access(100, 12), "the new cell stays");
        c.clear();
        assert!(!c.access(100, 13));
        // more sets: a row of k cells fits a table of 2k slots mostly
        let mut big = SlotCache::new(2 * 256);
        for cell in 0..256 {
            big.access(cell * 7, 1);
        }
        let hits = (0..256).filter(|&cell| big.access(cell * 7, 2)).count();
        assert!(hits > 240, "{hits} of 256");
    }

    #[test]
    fn steps_cover_each_window_once_in_order() {
        let args = ["--synthetic", "100:0", "--reuse", "3", "--positions", "2", "--min-pos", "50"];
        let mut a = crate::parse_args_from(args.iter().map(|s| s.to_string()));
        // positions 50 and 99, each with the 3 steps measured and the 3 that fill the history
        assert_eq!(steps(&a, 100), (44..=50).chain(93..=99).collect::<Vec<_>>());
        // positions 97, 98, 99: their windows overlap and are replayed once
        (a.positions, a.min_pos) = (3, 97);
        assert_eq!(steps(&a, 100), (91..=99).collect::<Vec<_>>());
    }
}
