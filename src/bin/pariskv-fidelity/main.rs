//! Fidelity of ParisKV retrieval on captured queries and keys (`capture-qkv`), against the
//! exact selection with the same k and the same GQA policy, per layer and overall:
//! recall@k, the coarse stage's recall (exact keys among the candidates), the zone rows
//! attended (distinct), the group's attention mass (each query head's softmax mass over the
//! retrieval zone that the selection covers, averaged over the group's heads) beside that of
//! three exact selections (per query head: k/g rows each, merged; the group-mean query's
//! top-k; the best shared k rows: those of the highest group-mean probability, a bound on any
//! shared selection of k rows) and the gap to that bound, and the relative error of the
//! attention output against dense attention. The exact selection of the group policy is the
//! best shared k rows.
//!
//!   pariskv-fidelity --capture DIR [--layers 5,11,17] [--k 64,256,1024] [--gqa per-head,mean,group]
//!       [--positions 16] [--min-pos 1024] [--max-pos P] [--sink 4] [--window 512] [--scale S]
//!       [--ratios tuned|reference|CAND:COLL] [--refine R] [--center on|off] [--ubatch 512]
//!       [--reuse STEPS] [--json OUT]
//!
//! Ratios and refine default to the library's defaults (`Config::new`); `--ratios
//! reference --gqa mean --refine 1` is the paper's setting. `--refine R` rescores each
//! retrieval's R * k best estimates exactly (the library's `Config::refine`).
//! `--center` switches key centring (`Config::center`, on by default; off is the paper's
//! setting): each KV head's keys are encoded minus the mean of its first append, which
//! leaves each query's exact ranking and softmax unchanged (q.(k - c) = q.k - q.c) but
//! changes what the codes see. The first append holds `--ubatch` keys, as llama.cpp's first
//! ubatch of a prompt does (512 by default). `--max-pos P` ends the replay at position P (a
//! causal capture's prefix is a shorter capture).
//!
//! Decode steps are replayed causally: the index holds keys 0..=t when position t's query
//! is asked, for `--positions` positions evenly spaced from `--min-pos` to the end. Keys and
//! values are stored in f16, as llama.cpp's default cache does.
//!
//! `--synthetic N:DRIFT` replaces the capture by a synthetic layer (`synth`, as in
//! tests/recall.rs: clustered keys without outlier channels): N keys of d = 128 whose
//! cluster centres move by DRIFT (in units of their norm) from the first token to the last,
//! one KV head of 4 query heads aimed at 8 random earlier keys: how recall holds along a
//! drifting sequence with the fixed codebook.
//!
//! `--reuse STEPS` measures instead how many of a decode step's retrieved rows the steps just
//! before it retrieved too (`reuse.rs`): the hit rate a cache of recent rows would have, and
//! that of a simulated set-associative slot table of k, 2k and 4k rows, and the GPU row
//! cache's whole step protocol under offload, refine shortlists included (`row_cache.rs`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pariskv::algorithm::attention::{attend, AttnScratch};
use pariskv::algorithm::gqa::{merge_ranks, GqaPolicy};
use pariskv::algorithm::search::{RatioPolicy, Ratios};
use pariskv::eval::npy;
use pariskv::eval::{
    best_shared_mass, exact_top_k, group_mass, group_probabilities, recall, relative_l2_error,
};
use pariskv::{Config, DType, Index, Result, RowData};

mod reuse;
mod row_cache;

struct Args {
    capture: PathBuf,
    synthetic: Option<(usize, f32)>,
    layers: Option<Vec<usize>>,
    ks: Vec<usize>,
    policies: Vec<GqaPolicy>,
    positions: usize,
    min_pos: usize,
    max_pos: Option<usize>,
    sink: usize,
    window: usize,
    scale: Option<f32>,
    ratios: RatioPolicy,
    refine: usize,
    center: bool,
    ubatch: usize,
    /// consecutive decode steps measured per position for row reuse (0: the fidelity report)
    reuse: usize,
    json: Option<PathBuf>,
}

fn usage(why: &str) -> ! {
    eprintln!("pariskv-fidelity: {why}");
    eprintln!(
        "usage: pariskv-fidelity --capture DIR [--layers 5,11,17] [--k 64,256,1024] [--gqa per-head,mean,group (all)] \
         [--positions 16] [--min-pos 1024] [--max-pos P] [--sink 4] [--window 512] [--scale S] [--ratios tuned|reference|CAND:COLL] [--refine R] [--center on|off] [--ubatch 512] [--reuse STEPS] [--json OUT]"
    );
    std::process::exit(2)
}

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Vec<T> {
    s.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| usage(&format!("bad {what} {x:?}")))).collect()
}

fn parse_args() -> Args {
    parse_args_from(std::env::args().skip(1))
}

/// The arguments after the program's name.
fn parse_args_from(argv: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        capture: PathBuf::new(),
        synthetic: None,
        layers: None,
        ks: vec![64, 128, 256, 512, 1024, 2048],
        policies: GqaPolicy::ALL.to_vec(),
        positions: 16,
        min_pos: 1024,
        max_pos: None,
        sink: 4,
        window: 512,
        scale: None,
        ratios: Config::new(8, 1, 1).ratios,
        refine: pariskv::config::DEFAULT_REFINE,
        center: pariskv::config::DEFAULT_CENTER,
        ubatch: 512,
        reuse: 0,
        json: None,
    };
    let argv: Vec<String> = argv.collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let val = it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--capture" => a.capture = PathBuf::from(val),
            "--synthetic" => {
                let (n, drift) = val.split_once(':').unwrap_or_else(|| usage("--synthetic N:DRIFT"));
                a.synthetic = Some((list(n, "N")[0], list(drift, "drift")[0]));
            }
            "--layers" => a.layers = Some(list(val, "layer")),
            "--k" => a.ks = list(val, "k"),
            "--gqa" => {
                a.policies = val
                    .split(',')
                    .map(|p| {
                        GqaPolicy::from_name(p)
                            .unwrap_or_else(|| usage(&format!("--gqa {p:?}: per-head, mean or group")))
                    })
                    .collect()
            }
            "--positions" => a.positions = list(val, "count")[0],
            "--min-pos" => a.min_pos = list(val, "position")[0],
            "--max-pos" => a.max_pos = Some(list(val, "position")[0]),
            "--sink" => a.sink = list(val, "sink")[0],
            "--window" => a.window = list(val, "window")[0],
            "--scale" => a.scale = Some(list(val, "scale")[0]),
            "--ratios" => {
                a.ratios = match val.split_once(':') {
                    None if val == "adaptive" || val == "reference" => RatioPolicy::Adaptive,
                    None if val == "tuned" => RatioPolicy::Tuned,
                    Some((c, l)) => {
                        RatioPolicy::Fixed(Ratios { cand: list(c, "ratio")[0], coll: list(l, "ratio")[0] })
                    }
                    None => usage("--ratios: tuned, reference (adaptive) or CAND:COLL"),
                }
            }
            "--refine" => a.refine = list(val, "refine")[0],
            "--center" => {
                a.center = match val.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => usage("--center: on or off"),
                }
            }
            "--ubatch" => a.ubatch = list(val, "ubatch")[0],
            "--reuse" => a.reuse = list(val, "steps")[0],
            "--json" => a.json = Some(PathBuf::from(val)),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if a.capture.as_os_str().is_empty() == a.synthetic.is_none() {
        usage("give --capture or --synthetic");
    }
    if a.ks.contains(&0) || a.positions == 0 {
        usage("k and --positions must be positive");
    }
    if a.ubatch == 0 {
        usage("--ubatch must be positive");
    }
    a
}

/// One layer's capture: `[n][heads][dim]` arrays.
struct Layer {
    il: usize,
    q: npy::Array,
    k: npy::Array,
    v: npy::Array,
}

fn load_layer(dir: &Path, il: usize) -> Result<Layer> {
    let read = |w: &str| npy::read(&dir.join(format!("{w}_l{il}.npy")));
    let (q, k, v) = (read("q")?, read("k")?, read("v")?);
    let ok = q.shape.len() == 3
        && k.shape.len() == 3
        && v.shape.len() == 3
        && q.shape[0] == k.shape[0]
        && k.shape[0] == v.shape[0]
        && q.shape[2] == k.shape[2]
        && k.shape[1] == v.shape[1]
        && k.shape[1] > 0
        && q.shape[1] % k.shape[1] == 0;
    if !ok {
        return Err(pariskv::Error::invalid(format!(
            "layer {il}: shapes q {:?}, k {:?}, v {:?} do not form [n, heads, dim] with GQA",
            q.shape, k.shape, v.shape
        )));
    }
    Ok(Layer { il, q, k, v })
}

/// A synthetic layer with drifting keys and planted queries (see the module docs).
fn synthetic_layer(n: usize, drift: f32) -> Layer {
    use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
    const D: usize = 128;
    const GROUP: usize = 4;
    let mut spec = SynthSpec::new(n, D, 2026);
    spec.drift = drift;
    spec.n_outlier_channels = 0;
    let cache = SynthCache::generate(&spec);
    let mut rng = Rng::new(7);
    let mut q = Vec::with_capacity(n * GROUP * D);
    for t in 0..n {
        let targets: Vec<usize> = (0..8).map(|_| rng.below(t + 1)).collect();
        for _ in 0..GROUP {
            q.extend(cache.planted_query(&targets, 6.0, &mut rng));
        }
    }
    let array = |shape: Vec<usize>, data: Vec<f32>| npy::Array { shape, data };
    Layer {
        il: 0,
        q: array(vec![n, GROUP, D], q),
        k: array(vec![n, 1, D], cache.keys),
        v: array(vec![n, 1, D], cache.values),
    }
}

/// The layers listed in meta.json ("layers": [..]).
fn meta_layers(dir: &Path) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(dir.join("meta.json"))
        .map_err(|e| pariskv::Error::invalid(format!("{}/meta.json: {e}", dir.display())))?;
    let at = text.find("\"layers\"").ok_or_else(|| pariskv::Error::invalid("meta.json has no \"layers\""))?;
    let open = text[at..].find('[').map(|i| at + i + 1);
    let close = text[at..].find(']').map(|i| at + i);
    match (open, close) {
        (Some(o), Some(c)) if o <= c => {
            Ok(text[o..c].split(',').filter_map(|x| x.trim().parse().ok()).collect())
        }
        _ => Err(pariskv::Error::invalid("meta.json: malformed \"layers\"")),
    }
}

/// Sums of one (layer, policy, k) configuration over positions and KV heads.
#[derive(Default, Clone)]
struct Sums {
    n: usize,
    recall: f64,
    coarse: f64,
    mass: f64,
    mass_exact: f64,
    /// Zone rows attended (distinct).
    rows: f64,
    /// Group zone mass of the exact per-head selection (k/g rows per query head, merged),
    /// of the exact group-mean query's top-k, and of the best shared k rows (the bound).
    mass_per_head: f64,
    mass_mean: f64,
    mass_bound: f64,
    out_err: f64,
    zone: f64,
    candidates: f64,
    refined: f64,
    /// Bytes a step reads for this KV head (see `step_bytes`).
    bytes: f64,
    /// Recall@k per sampled position (the sequence plot).
    along: Vec<(usize, f64)>,
}

impl Sums {
    fn mean(&self, x: f64) -> f64 {
        x / self.n.max(1) as f64
    }

    /// Adds another configuration's sums (for the overall rows; `along` stays per layer).
    fn add(&mut self, o: &Sums) {
        self.n += o.n;
        self.recall += o.recall;
        self.coarse += o.coarse;
        self.mass += o.mass;
        self.mass_exact += o.mass_exact;
        self.rows += o.rows;
        self.mass_per_head += o.mass_per_head;
        self.mass_mean += o.mass_mean;
        self.mass_bound += o.mass_bound;
        self.out_err += o.out_err;
        self.zone += o.zone;
        self.candidates += o.candidates;
        self.refined += o.refined;
        self.bytes += o.bytes;
    }

    /// One table row: `layer` (a number or "all"), policy, k and the means.
    fn print_row(&self, layer: &str, policy: GqaPolicy, k: usize) {
        println!(
            "{:>5} {:>9} {:>5} | {:>8.4} {:>8.4} | {:>7.0} {:>8.4} {:>8.4} | {:>8.4} {:>8.4} {:>8.4} {:>8.4} | {:>8.2e} | {:>8.0} {:>8.0} {:>8.0} | {:>7.2}",
            layer,
            policy.name(),
            k,
            self.mean(self.recall),
            self.mean(self.coarse),
            self.mean(self.rows),
            self.mean(self.mass),
            self.mean(self.mass_exact),
            self.mean(self.mass_per_head),
            self.mean(self.mass_mean),
            self.mean(self.mass_bound),
            self.mean(self.mass_bound - self.mass),
            self.mean(self.out_err),
            self.mean(self.zone),
            self.mean(self.candidates),
            self.mean(self.refined),
            self.mean(self.bytes) / 1e6
        );
    }
}

/// Bytes one step reads for one KV head (index and f16 K/V rows), by stage: the collision
/// counts read every zone key's centroid codes once per retrieval (the zone histogram is
/// kept incrementally by the index); the rerank reads each candidate's 4-bit codes and
/// weights; refining reads each shortlisted key row; attention reads K and V of the
/// attended rows. A zone attended whole reads only the attended rows.
fn step_bytes(
    d: usize,
    dv: usize,
    g: usize,
    policy: GqaPolicy,
    st: &pariskv::algorithm::search::SearchStats,
    attended: usize,
    whole: bool,
) -> usize {
    let shape = pariskv::shape::Shape::new(d).expect("head_dim of a loaded index");
    let retrievals = if policy == GqaPolicy::Mean { 1 } else { g };
    let attention = attended * 2 * (d + dv);
    if whole {
        return attention;
    }
    let coarse = retrievals * st.n_zone * shape.code_bytes();
    let rerank = st.n_candidates * (shape.nibble_bytes() + 2 * shape.n_weights());
    coarse + rerank + st.n_refined * 2 * d + attention
}

/// The index configuration of a replay: the flags' settings, ParisKV from the first cell,
/// f16 K/V as llama.cpp's default cache.
fn config(a: &Args, layer: &Layer, policy: GqaPolicy) -> Config {
    let (nq, d, nkv) = (layer.q.shape[1], layer.q.shape[2], layer.k.shape[1]);
    let mut cfg = Config::new(d, nq, nkv);
    cfg.n_sink = a.sink;
    cfg.n_local = a.window;
    cfg.dense_threshold = 1;
    cfg.ratios = a.ratios;
    cfg.gqa = policy;
    cfg.refine = a.refine;
    cfg.center = a.center;
    cfg.kv_dtype = DType::F16;
    if let Some(s) = a.scale {
        cfg.attn.scale = s;
    }
    cfg
}

/// The positions a replay may use: the capture's, up to `--max-pos` (the capture is causal:
/// a prefix is a shorter capture).
fn replay_len(a: &Args, layer: &Layer) -> usize {
    a.max_pos.map_or(layer.q.shape[0], |m| layer.q.shape[0].min(m + 1))
}

/// The replay's positions: `--positions` of them evenly spaced from `--min-pos` to the last
/// of `n`, each once.
fn positions(a: &Args, n: usize) -> Vec<usize> {
    let first = a.min_pos.min(n.saturating_sub(1));
    (0..a.positions)
        .map(|i| first + (n - 1 - first) * i / (a.positions - 1).max(1))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Appends the layer's keys and values up to position t (`appended` of them are in the
/// index): the first append one ubatch (it sets the key centre), then the rest at once.
fn append_until(a: &Args, layer: &Layer, index: &mut Index, appended: &mut usize, t: usize) -> Result<()> {
    let (nkv, d, dv) = (layer.k.shape[1], layer.k.shape[2], layer.v.shape[2]);
    for end in [a.ubatch.min(t + 1), t + 1] {
        if end > *appended {
            let span = |dim: usize| *appended * nkv * dim..end * nkv * dim;
            index.append(
                RowData::F32(&layer.k.data[span(d)]),
                RowData::F32(&layer.v.data[span(dv)]),
                end - *appended,
            )?;
            *appended = end;
        }
    }
    Ok(())
}

/// Replays one layer under one GQA policy, for every k.
fn replay(a: &Args, layer: &Layer, policy: GqaPolicy) -> Result<Vec<Sums>> {
    let (nq, d) = (layer.q.shape[1], layer.q.shape[2]);
    let n = replay_len(a, layer);
    let (nkv, dv) = (layer.k.shape[1], layer.v.shape[2]);
    let g = nq / nkv;
    let cfg = config(a, layer, policy);
    let scale = cfg.attn.scale;
    let mut index = Index::new(cfg.clone())?;
    let positions = positions(a, n);
    let mut sums = vec![Sums::default(); a.ks.len()];
    let (mut seen, mut dense, mut sparse, mut scratch) =
        (HashSet::new(), vec![0.0f32; g * dv], vec![0.0f32; g * dv], AttnScratch::default());
    let mut appended = 0;
    for &t in &positions {
        append_until(a, layer, &mut index, &mut appended, t)?;
        let q = &layer.q.data[t * nq * d..(t + 1) * nq * d];
        let zone = cfg.zone(t + 1);
        let zone_cells: Vec<u32> = (zone.start as u32..zone.end as u32).collect();
        let all: Vec<u32> = (0..=t as u32).collect();
        // each KV head's group-mean attention probabilities over the zone
        let group_probs: Vec<Vec<f64>> = (0..nkv)
            .map(|h| {
                Ok(group_probabilities(&index.keys(h)?, &q[h * g * d..(h + 1) * g * d], &zone_cells, scale))
            })
            .collect::<Result<_>>()?;
        for (ki, &k) in a.ks.iter().enumerate() {
            let found = index.search_detailed(RowData::F32(q), k)?;
            for (h, r) in found.iter().enumerate() {
                let (keys, values) = (index.keys(h)?, index.values(h)?);
                let qs = &q[h * g * d..(h + 1) * g * d];
                // a zone of at most k keys is attended whole (as the index and the op do)
                let whole = zone_cells.len() <= k;
                let top = if whole { &zone_cells } else { &r.top };
                let probs = &group_probs[h];
                // the exact selections: per query head (k/g each, merged), the group-mean query's
                // top-k, and the best shared k rows (the bound on any shared selection)
                let per_head = if whole {
                    zone_cells.clone()
                } else {
                    let lists: Vec<Vec<u32>> = qs
                        .chunks_exact(d)
                        .enumerate()
                        .map(|(i, qh)| exact_top_k(&keys, qh, &zone_cells, k / g + usize::from(i < k % g)))
                        .collect();
                    let mut merged = Vec::new();
                    merge_ranks(&lists, &mut seen, &mut merged);
                    merged
                };
                let mean_exact = if whole {
                    zone_cells.clone()
                } else {
                    let mean: Vec<f32> =
                        (0..d).map(|j| qs.chunks_exact(d).map(|qh| qh[j]).sum::<f32>() / g as f32).collect();
                    exact_top_k(&keys, &mean, &zone_cells, k)
                };
                let shared = if whole {
                    zone_cells.clone()
                } else {
                    let mut ranked: Vec<(f32, u32)> =
                        probs.iter().zip(&zone_cells).map(|(&p, &c)| (p as f32, c)).collect();
                    pariskv::algorithm::rank::top_k_in_place(&mut ranked, k);
                    ranked.into_iter().map(|(_, c)| c).collect()
                };
                // the exact selection under the same policy and k
                let exact = match policy {
                    GqaPolicy::Mean => &mean_exact,
                    GqaPolicy::PerHead => &per_head,
                    GqaPolicy::Group => &shared,
                };
                let s = &mut sums[ki];
                let rec = recall(top, exact);
                s.recall += rec;
                s.coarse += if whole { 1.0 } else { recall(&r.candidates, exact) };
                s.rows += top.len() as f64;
                s.mass += group_mass(probs, &zone_cells, top);
                s.mass_exact += group_mass(probs, &zone_cells, exact);
                s.mass_per_head += group_mass(probs, &zone_cells, &per_head);
                s.mass_mean += group_mass(probs, &zone_cells, &mean_exact);
                s.mass_bound += if whole { 1.0 } else { best_shared_mass(probs, &[k])[0] };
                // output: sink ∪ top-k ∪ window against every cell
                let mut cells: Vec<u32> = (0..zone.start as u32).chain(top.iter().copied()).collect();
                cells.extend(zone.end as u32..=t as u32);
                cells.sort_unstable();
                attend(qs, &keys, &values, &cells, cfg.attn, &mut scratch, &mut sparse)?;
                attend(qs, &keys, &values, &all, cfg.attn, &mut scratch, &mut dense)?;
                s.out_err += relative_l2_error(&sparse, &dense);
                s.zone += r.stats.n_zone as f64;
                s.candidates += if whole { 0.0 } else { r.candidates.len() as f64 };
                s.refined += r.stats.n_refined as f64;
                s.bytes += step_bytes(d, dv, g, policy, &r.stats, cells.len(), whole) as f64;
                s.n += 1;
                if h == 0 {
                    s.along.push((t, 0.0));
                }
                s.along.last_mut().expect("pushed above").1 += rec / nkv as f64;
            }
        }
        eprint!("\r  layer {} ({}): position {t} of {n}   ", layer.il, policy.name());
    }
    eprintln!();
    Ok(sums)
}

fn main() {
    let a = parse_args();
    if let Err(e) = run(&a) {
        eprintln!("pariskv-fidelity: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<()> {
    let layers = match (&a.layers, a.synthetic) {
        (_, Some(_)) => vec![0],
        (Some(l), None) => l.clone(),
        (None, None) => meta_layers(&a.capture)?,
    };
    let source = match a.synthetic {
        Some((n, drift)) => format!("synthetic: {n} keys, drift {drift}"),
        None => format!("capture {}", a.capture.display()),
    };
    println!(
        "{source}; sink {}, window {}, ratios {:?}, refine {}, centring {} (first append {}), {} positions from {}",
        a.sink,
        a.window,
        a.ratios,
        a.refine,
        if a.center { "on" } else { "off" },
        a.ubatch,
        a.positions,
        a.min_pos
    );
    let load = |il: usize| match a.synthetic {
        Some((n, drift)) => Ok(synthetic_layer(n, drift)),
        None => load_layer(&a.capture, il),
    };
    let mut json = String::from("[\n");
    if a.reuse > 0 {
        reuse::run(a, &layers, load, &mut json)?;
        return write_json(a, json);
    }
    println!(
        "{:>5} {:>9} {:>5} | {:>8} {:>8} | {:>7} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | {:>8} | {:>8} {:>8} {:>8} | {:>7}",
        "layer",
        "gqa",
        "k",
        "recall",
        "coarse",
        "rows",
        "mass",
        "mass(ex)",
        "m(ph)",
        "m(mean)",
        "bound",
        "gap",
        "out err",
        "zone",
        "cands",
        "refined",
        "MB/step"
    );
    let mut overall: Vec<((GqaPolicy, usize), Sums)> = Vec::new();
    for &il in &layers {
        let layer = load(il)?;
        for &policy in &a.policies {
            for (ki, s) in replay(a, &layer, policy)?.into_iter().enumerate() {
                let k = a.ks[ki];
                s.print_row(&il.to_string(), policy, k);
                let along: Vec<String> = s.along.iter().map(|(t, r)| format!("[{t}, {r:.5}]")).collect();
                let _ = writeln!(
                    json,
                    "  {{\"layer\": {il}, \"gqa\": \"{}\", \"k\": {k}, \"recall\": {:.6}, \"coarse_recall\": {:.6}, \
                     \"mass\": {:.6}, \"mass_exact\": {:.6}, \"rows\": {:.1}, \"mass_per_head_exact\": {:.6}, \
                     \"mass_mean_exact\": {:.6}, \"mass_bound\": {:.6}, \"gap_to_bound\": {:.6}, \"out_rel_err\": {:.6e}, \
                     \"zone\": {:.1}, \"candidates\": {:.1}, \"refined\": {:.1}, \"bytes\": {:.0}, \"recall_along\": [{}]}},",
                    policy.name(),
                    s.mean(s.recall),
                    s.mean(s.coarse),
                    s.mean(s.mass),
                    s.mean(s.mass_exact),
                    s.mean(s.rows),
                    s.mean(s.mass_per_head),
                    s.mean(s.mass_mean),
                    s.mean(s.mass_bound),
                    s.mean(s.mass_bound - s.mass),
                    s.mean(s.out_err),
                    s.mean(s.zone),
                    s.mean(s.candidates),
                    s.mean(s.refined),
                    s.mean(s.bytes),
                    along.join(", ")
                );
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
    write_json(a, json)
}

/// Closes the JSON rows' list (each row ends with ",\n") and writes it to `--json`, if given.
fn write_json(a: &Args, mut json: String) -> Result<()> {
    if let Some(path) = &a.json {
        if json.ends_with(",\n") {
            json.truncate(json.len() - 2);
            json.push('\n');
        }
        json.push_str("]\n");
        std::fs::write(path, json)
            .map_err(|e| pariskv::Error::invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
