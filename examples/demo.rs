//! CPU demo: builds a ParisKV index over a long synthetic KV cache and prints, for queries
//! aimed at planted keys, the recall of the coarse stage and of the final top-k against the
//! exact top-k, the softmax mass covered, the output error against dense attention, and
//! the time of each against dense attention. By default it runs two caches: clustered keys
//! that drift along the sequence, then the same with outlier channels (10-50x) carrying a
//! shared offset, the known hard case of the paper's algorithm (docs/RECALL.md).
//!
//!   cargo run --release --example demo -- [--tokens N] [--head-dim D] [--q-heads H]
//!       [--kv-heads H] [--top-k K] [--queries Q] [--seed S]
//!       [--outliers C --drift X --offset X]   (one custom cache instead of the two)

use std::time::Instant;

use pariskv::algorithm::attention::{attend, AttnScratch};
use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
use pariskv::eval::{attention_mass, exact_top_k, recall, relative_l2_error};
use pariskv::{Config, Index, RowData};

#[derive(Clone, Copy)]
struct Args {
    tokens: usize,
    head_dim: usize,
    q_heads: usize,
    kv_heads: usize,
    top_k: usize,
    queries: usize,
    seed: u64,
    outliers: usize,
    drift: f32,
    offset: f32,
    custom: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        tokens: 131_072,
        head_dim: 128,
        q_heads: 8,
        kv_heads: 2,
        top_k: 2048,
        queries: 8,
        seed: 1,
        outliers: 4,
        drift: 1.0,
        offset: 2.0,
        custom: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let x: f64 = value.parse().map_err(|_| format!("{flag}: '{value}' is not a number"))?;
        let n = x as u64;
        match flag.as_str() {
            "--tokens" => a.tokens = n as usize,
            "--head-dim" => a.head_dim = n as usize,
            "--q-heads" => a.q_heads = n as usize,
            "--kv-heads" => a.kv_heads = n as usize,
            "--top-k" => a.top_k = n as usize,
            "--queries" => a.queries = n as usize,
            "--seed" => a.seed = n,
            "--outliers" => (a.outliers, a.custom) = (n as usize, true),
            "--drift" => (a.drift, a.custom) = (x as f32, true),
            "--offset" => (a.offset, a.custom) = (x as f32, true),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("demo: {e}");
        std::process::exit(2);
    });
    let scenarios: Vec<(&str, usize, f32, f32)> = if args.custom {
        vec![("custom", args.outliers, args.drift, args.offset)]
    } else {
        vec![
            ("clustered keys drifting along the sequence", 0, 1.0, 0.0),
            ("the same plus 4 outlier channels (10-50x) with a shared offset", 4, 1.0, 2.0),
        ]
    };
    for (name, outliers, drift, offset) in scenarios {
        println!("\n== synthetic cache: {name}");
        let a = Args { outliers, drift, offset, ..args };
        if let Err(e) = run(&a) {
            eprintln!("demo: {e}");
            std::process::exit(1);
        }
    }
}

fn run(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (n, d, nkv) = (a.tokens, a.head_dim, a.kv_heads);
    let mut cfg = Config::new(d, a.q_heads, nkv);
    cfg.top_k = a.top_k;
    cfg.kv_dtype = pariskv::DType::F16;
    println!(
        "ParisKV CPU demo: {n} tokens, head_dim {d}, {} query / {nkv} KV heads, top-k {}, sink {}, window {}, f16 K/V",
        a.q_heads, cfg.top_k, cfg.n_sink, cfg.n_local
    );

    eprint!("generating the synthetic cache ...");
    let caches: Vec<SynthCache> = (0..nkv)
        .map(|h| {
            let mut spec = SynthSpec::new(n, d, a.seed * 1000 + h as u64);
            spec.n_outlier_channels = a.outliers;
            spec.drift = a.drift;
            spec.outlier_offset = a.offset;
            SynthCache::generate(&spec)
        })
        .collect();
    let mut keys = vec![0.0f32; n * nkv * d];
    let mut values = vec![0.0f32; n * nkv * d];
    for (h, c) in caches.iter().enumerate() {
        for t in 0..n {
            keys[(t * nkv + h) * d..][..d].copy_from_slice(&c.keys[t * d..][..d]);
            values[(t * nkv + h) * d..][..d].copy_from_slice(&c.values[t * d..][..d]);
        }
    }
    eprintln!(" done");

    let mut index = Index::new(cfg.clone())?;
    let started = Instant::now();
    let chunk = 4096;
    for t0 in (0..n).step_by(chunk) {
        let m = chunk.min(n - t0);
        let range = t0 * nkv * d..(t0 + m) * nkv * d;
        index.append(RowData::F32(&keys[range.clone()]), RowData::F32(&values[range]), m)?;
    }
    let build = started.elapsed().as_secs_f64();
    let stats = index.stats();
    println!(
        "index built in {:.2} s ({:.0} keys/s per KV head); index {:.1} MiB, K/V {:.1} MiB",
        build,
        n as f64 / build,
        stats.index_bytes as f64 / (1 << 20) as f64,
        stats.kv_bytes as f64 / (1 << 20) as f64
    );

    let zone: Vec<u32> = (cfg.zone(n).start as u32..cfg.zone(n).end as u32).collect();
    let all: Vec<u32> = (0..n as u32).collect();
    let g = cfg.group_size();
    let mut rng = Rng::new(a.seed ^ 0xD3E0);
    let (mut t_paris, mut t_dense) = (0.0, 0.0);
    let (mut r_coarse, mut r_final, mut m_sel, mut m_exact, mut err) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut out = vec![0.0f32; a.q_heads * d];
    let mut dense = vec![0.0f32; a.q_heads * d];
    let mut scratch = AttnScratch::default();
    for _ in 0..a.queries {
        let mut q = Vec::with_capacity(a.q_heads * d);
        for c in &caches {
            let targets: Vec<usize> = (0..8).map(|_| zone[rng.below(zone.len())] as usize).collect();
            for _ in 0..g {
                q.extend(c.planted_query(&targets, 6.0, &mut rng));
            }
        }
        let t = Instant::now();
        index.attend(RowData::F32(&q), &mut out)?;
        t_paris += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for h in 0..nkv {
            let qs = &q[h * g * d..][..g * d];
            let o = &mut dense[h * g * d..][..g * d];
            attend(qs, &index.keys(h)?, &index.values(h)?, &all, cfg.attn, &mut scratch, o)?;
        }
        t_dense += t.elapsed().as_secs_f64();
        err += relative_l2_error(&out, &dense);

        let found = index.search_detailed(RowData::F32(&q), cfg.top_k)?;
        for (h, r) in found.iter().enumerate() {
            let keys = index.keys(h)?;
            let group = &q[h * g * d..][..g * d];
            let mean: Vec<f32> =
                (0..d).map(|j| group.chunks_exact(d).map(|qh| qh[j]).sum::<f32>() / g as f32).collect();
            let exact = exact_top_k(&keys, &mean, &zone, cfg.top_k);
            r_coarse += recall(&r.candidates, &exact);
            r_final += recall(&r.top, &exact);
            for qh in group.chunks_exact(d) {
                m_sel += attention_mass(&keys, qh, &zone, &r.top, cfg.attn.scale) / g as f64;
                m_exact += attention_mass(&keys, qh, &zone, &exact, cfg.attn.scale) / g as f64;
            }
        }
    }
    let per_head = (a.queries * nkv) as f64;
    let s = index.stats();
    println!(
        "retrieval (mean over {} queries x {nkv} KV heads; zone {} keys, {} candidates per head):",
        a.queries,
        zone.len(),
        s.last_candidates / nkv
    );
    println!("  recall@{} of the candidates (coarse stage): {:.3}", cfg.top_k, r_coarse / per_head);
    println!("  recall@{} of the final top-k:              {:.3}", cfg.top_k, r_final / per_head);
    println!(
        "  softmax mass of the zone covered:  ParisKV {:.3}   exact top-{} {:.3}",
        m_sel / per_head,
        cfg.top_k,
        m_exact / per_head
    );
    println!("  attention output vs dense: relative L2 error {:.4}", err / a.queries as f64);
    let (tp, td) = (t_paris / a.queries as f64, t_dense / a.queries as f64);
    println!(
        "time per decode step ({nkv} KV heads, one thread): ParisKV {:.2} ms, dense {:.2} ms, dense/ParisKV {:.1}x",
        tp * 1e3,
        td * 1e3,
        td / tp
    );
    Ok(())
}
