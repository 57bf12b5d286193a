//! Row reuse between consecutive decode steps (`--reuse STEPS`). Around each sampled position
//! the decode steps are replayed one token at a time, and each step's retrieved zone rows
//! (its top-k) are compared with the rows the steps just before it retrieved: the share
//! found among the last step's, the last 2 steps' and the last 4 steps' rows. Under
//! `--pariskv-offload` those rows cross PCIe; a GPU-memory cache holding the rows of the
//! last m steps would serve that share of them, and needs room for the union of those m
//! steps' rows (reported as a multiple of k). Sink and window rows are not counted (every
//! step reads them), nor the refine shortlist's rows (the index does not report them), nor
//! steps whose zone is attended whole.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::{Index, Result, RowData};

use crate::{append_until, config, positions, replay_len, Args, Layer};

/// The histories compared: the rows of the last m steps.
const HISTORIES: [usize; 3] = [1, 2, 4];
const DEEPEST: usize = HISTORIES[HISTORIES.len() - 1];

/// Sums of one (layer, policy, k) configuration over the measured steps and KV heads.
#[derive(Default, Clone)]
pub struct ReuseSums {
    n: usize,
    rows: f64,
    /// the share of a step's rows among the last m steps' rows, per history
    hits: [f64; HISTORIES.len()],
    /// the last m steps' distinct rows over k, per history
    held: [f64; HISTORIES.len()],
}

impl ReuseSums {
    fn add(&mut self, o: &ReuseSums) {
        self.n += o.n;
        self.rows += o.rows;
        for i in 0..HISTORIES.len() {
            self.hits[i] += o.hits[i];
            self.held[i] += o.held[i];
        }
    }

    fn mean(&self, x: f64) -> f64 {
        x / self.n.max(1) as f64
    }

    pub fn header() {
        println!(
            "{:>5} {:>9} {:>5} | {:>6} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7}",
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
            "held(4)"
        );
    }

    fn print_row(&self, layer: &str, policy: GqaPolicy, k: usize) {
        let m = |x: f64| self.mean(x);
        println!(
            "{layer:>5} {:>9} {k:>5} | {:>6} {:>7.1} | {:>7.3} {:>7.3} {:>7.3} | {:>7.2} {:>7.2} {:>7.2}",
            policy.name(),
            self.n,
            m(self.rows),
            m(self.hits[0]),
            m(self.hits[1]),
            m(self.hits[2]),
            m(self.held[0]),
            m(self.held[1]),
            m(self.held[2])
        );
    }

    fn json(&self, il: usize, policy: GqaPolicy, k: usize) -> String {
        let list = |v: &[f64; HISTORIES.len()]| {
            v.iter().map(|x| format!("{:.6}", self.mean(*x))).collect::<Vec<_>>().join(", ")
        };
        format!(
            "  {{\"layer\": {il}, \"gqa\": \"{}\", \"k\": {k}, \"steps\": {}, \"rows\": {:.1}, \"histories\": {:?}, \
             \"hit\": [{}], \"held_over_k\": [{}]}},",
            policy.name(),
            self.n,
            self.mean(self.rows),
            HISTORIES,
            list(&self.hits),
            list(&self.held)
        )
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

/// Replays one layer's decode steps under one GQA policy, for every k.
fn replay(a: &Args, layer: &Layer, policy: GqaPolicy) -> Result<Vec<ReuseSums>> {
    let (nq, d, nkv) = (layer.q.shape[1], layer.q.shape[2], layer.k.shape[1]);
    let n = replay_len(a, layer);
    let cfg = config(a, layer, policy);
    let mut index = Index::new(cfg.clone())?;
    let mut sums = vec![ReuseSums::default(); a.ks.len()];
    let mut history: Vec<Vec<History>> = vec![vec![History::new(); nkv]; a.ks.len()];
    let (mut appended, mut last) = (0, None);
    let all = steps(a, n);
    for (i, &s) in all.iter().enumerate() {
        if last.is_some_and(|l| l + 1 != s) {
            // a gap since the last step: the history starts again
            history.iter_mut().flatten().for_each(|h| h.clear());
        }
        last = Some(s);
        append_until(a, layer, &mut index, &mut appended, s)?;
        let zone = cfg.zone(s + 1);
        let q = &layer.q.data[s * nq * d..(s + 1) * nq * d];
        for (ki, &k) in a.ks.iter().enumerate() {
            if zone.len() <= k {
                history[ki].iter_mut().for_each(|h| h.clear());
                continue;
            }
            let found = index.search_detailed(RowData::F32(q), k)?;
            for (h, r) in found.iter().enumerate() {
                let past = &mut history[ki][h];
                if past.len() == DEEPEST {
                    measure(&mut sums[ki], past, &r.top, k);
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
         held: their distinct rows over k)",
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
