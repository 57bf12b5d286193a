//! The decode step llama.cpp's CPU op runs, one KV head on one thread, against dense
//! attention over the same f16 cache in the same run: what a CPU user's decode pays per
//! layer and KV head. Synthetic keys (speed only), every cell visible, positions 0..N,
//! the library's default settings unless overridden; the index keeps its code histogram,
//! as llama.cpp's does on the CPU.
//!
//!   cargo run --release --example cpu_step -- [--group G] [--dim D] [--topk K]
//!       [--gqa per-head|mean|group] [--refine R] [--reps R] [--fast-only] [N ...]
//!
//! Defaults: the Qwen2.5-Coder-1.5B shape (d 128, 6 query heads per KV head), top-k 1024,
//! N = 8192 16384 32768 131072.

use std::hint::black_box;
use std::time::Instant;

use half::f16;
use pariskv::algorithm::attention::{attend, AttnParams, AttnScratch};
use pariskv::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::algorithm::rotation::Rotation;
use pariskv::algorithm::search::RatioPolicy;
use pariskv::algorithm::search::Tally;
use pariskv::config::{DEFAULT_LOCAL, DEFAULT_REFINE, DEFAULT_SEED, DEFAULT_SINK};
use pariskv::cpu::team::Team;
use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
use pariskv::shape::Shape;
use pariskv::step::{attend_cache, CacheView, Kept, StepParams, StepScratch};
use pariskv::{RowData, Rows};

struct Args {
    group: usize,
    dim: usize,
    top_k: usize,
    gqa: GqaPolicy,
    refine: usize,
    reps: usize,
    /// Time the fast step alone (for profilers).
    fast_only: bool,
    sizes: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args {
        group: 6,
        dim: 128,
        top_k: 1024,
        gqa: GqaPolicy::default(),
        refine: DEFAULT_REFINE,
        reps: 7,
        fast_only: false,
        sizes: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().unwrap_or_else(|_| panic!("{v}: not a number"));
        match arg.as_str() {
            "--group" => a.group = number(value()),
            "--dim" => a.dim = number(value()),
            "--topk" => a.top_k = number(value()),
            "--refine" => a.refine = number(value()),
            "--reps" => a.reps = number(value()),
            "--fast-only" => a.fast_only = true,
            "--gqa" => {
                let v = value();
                a.gqa = GqaPolicy::from_name(&v).unwrap_or_else(|| panic!("{v}: not a GQA policy"))
            }
            n => a.sizes.push(number(n.to_string())),
        }
    }
    if a.sizes.is_empty() {
        a.sizes = vec![8192, 16384, 32768, 131072];
    }
    a
}

/// Fastest of `reps` runs of `f`, in seconds (the least disturbed by other load).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let a = args();
    println!(
        "one KV head, one thread: d {}, {} query heads, top-k {}, gqa {}, refine {}, tuned ratios, sink {}, window {}",
        a.dim,
        a.group,
        a.top_k,
        a.gqa.name(),
        a.refine,
        DEFAULT_SINK,
        DEFAULT_LOCAL
    );
    println!("| N | ParisKV step ms | oracle step ms | dense ms | dense / ParisKV | zone | candidates | refined | attended |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &a.sizes {
        bench(&a, n);
    }
}

fn bench(a: &Args, n: usize) {
    let d = a.dim;
    let shape = Shape::new(d).unwrap();
    let rot = Rotation::new(shape, DEFAULT_SEED);
    let mut spec = SynthSpec::new(n, d, 7);
    spec.n_outlier_channels = 0;
    let cache = SynthCache::generate(&spec);
    let k16: Vec<f16> = cache.keys.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = cache.values.iter().map(|&x| f16::from_f32(x)).collect();
    let keys = Rows::packed(RowData::F16(&k16), d).unwrap();
    let values = Rows::packed(RowData::F16(&v16), d).unwrap();
    let mut store = CodeStore::default();
    store.grow(&shape, n).unwrap();
    let cells: Vec<usize> = (0..n).collect();
    encode_rows(&rot, &keys, &cells, None, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
    let pos: Vec<i32> = (0..n as i32).collect();
    let mask = vec![f16::ZERO; n];
    // the histogram llama.cpp's encodes keep on the CPU (the fast step reads it; the oracle counts)
    let (mut kept_hist, mut counted) = (vec![0u32; shape.n_blocks * 256], vec![0u8; n]);
    pariskv::cpu::kept::tally(&shape, &store.as_ref(), &cells, &mut kept_hist, &mut counted, Tally::Add);
    let view = CacheView {
        keys,
        values,
        codes: store.as_ref(),
        visible: |c: usize| mask[c].to_f32() > f32::NEG_INFINITY,
        pos: &pos,
        zone_hist: None,
        kept: Some(Kept { hist: &kept_hist, counted: &counted }),
    };
    let mut rng = Rng::new(1);
    let targets: Vec<usize> = (0..8).map(|_| rng.below(n)).collect();
    let q: Vec<f32> = (0..a.group).flat_map(|_| cache.planted_query(&targets, 6.0, &mut rng)).collect();
    let attn = AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 };
    let params = StepParams {
        top_k: a.top_k,
        n_sink: DEFAULT_SINK,
        n_local: DEFAULT_LOCAL,
        ratios: RatioPolicy::Tuned,
        gqa: a.gqa,
        refine: a.refine,
        attn,
    };
    let mut out = vec![0.0; a.group * d];
    let mut scratch = StepScratch::default();
    let stats = attend_cache(&rot, &params, &view, &q, &mut scratch, &mut out).unwrap();
    let reps = if a.fast_only { 0 } else { a.reps };
    let t_oracle = time(reps, || {
        black_box(attend_cache(&rot, &params, &view, &q, &mut scratch, &mut out).unwrap());
    });
    let mut fast = pariskv::cpu::step::Scratch::default();
    let solo = Team::solo();
    let t_step = time(a.reps, || {
        black_box(
            pariskv::cpu::step::attend_cache(&solo, &rot, &params, &view, &q, &mut fast, &mut out).unwrap(),
        );
    });
    fast.timing = true;
    for _ in 0..a.reps {
        pariskv::cpu::step::attend_cache(&solo, &rot, &params, &view, &q, &mut fast, &mut out).unwrap();
    }
    let st = fast.times;
    let per = |t: f64| t * 1e3 / a.reps as f64;
    eprintln!(
        "N {n}: stages (ms, mean): classify {:.3}, tiers {:.3}, collisions {:.3}, candidates {:.3}, rerank estimates {:.3}, rerank ranking {:.3}, refine rows {:.3}, refine ranking {:.3}, attention {:.3}",
        per(st.classify), per(st.tiers), per(st.collisions), per(st.candidates), per(st.rerank),
        per(st.rerank_ranking),
        per(st.refine_rows),
        per(st.refine),
        per(st.attention)
    );
    let all: Vec<u32> = (0..n as u32).collect();
    let mut dense_scratch = AttnScratch::default();
    let t_dense =
        time(reps, || attend(&q, &keys, &values, &all, attn, &mut dense_scratch, &mut out).unwrap());
    println!(
        "| {n} | {:.3} | {:.3} | {:.3} | {:.2}x | {} | {} | {} | {} |",
        t_step * 1e3,
        t_oracle * 1e3,
        t_dense * 1e3,
        t_dense / t_step,
        stats.n_zone,
        stats.n_candidates,
        stats.n_refined,
        stats.n_attended
    );
}
