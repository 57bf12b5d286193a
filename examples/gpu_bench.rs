//! GPU benchmark (feature `cuda`): one decode step as llama.cpp would run it for an
//! 8B-shaped model (d = 128, 8 KV heads of 4 query heads each, 32 layers; `--shape qwen7b`:
//! the Qwen2.5-7B-1M shape, 4 KV heads of 7 query heads each, 28 layers; `--shape mha7b`:
//! a multi-head 7B (Llama-2-7B), 32 KV heads of one query head, 32 layers; top-k 2048,
//! sink 4, window 512), at N cells, with K/V in device memory and in pinned host memory
//! (UVA); time per stage from CUDA events, and dense attention over all N in the same run.
//! The step starts from the zone histogram the encodes keep, as in llama.cpp; the row
//! "recounting" counts it every step instead, the row "1-block top-k" selects each list in
//! one block where the GPU has thread-block clusters, the row "plain launches" launches
//! each kernel after the one before it has finished where the GPU has programmatic
//! dependent launch (sm_90 on). With K/V in host memory, the step also runs through a row
//! cache (src/cuda/row_cache.rs) of 2 x and 4 x top-k slots per KV head.
//!
//! Settings: the paper's (reference ratio table; group-mean and per-head query), then
//! per-head with the first tuned table (share 0.1 above 30K keys) and with today's (0.2),
//! each without and with refine 2 (the defaults: today's table and refine 2).
//!
//!   cargo run --release --features cuda --example gpu_bench -- [--defaults-only | --offload]
//!       [--shape llama8b|qwen7b|mha7b] [N ...]
//!
//! `--defaults-only`: only the default settings with K/V in HBM, kept, recounting, with the
//! one-block top-k and with plain launches (for profilers). `--offload`: only the default
//! settings with K/V in host RAM, without and with the row cache.

use pariskv::algorithm::attention::AttnParams;
use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::algorithm::rotation::Rotation;
use pariskv::algorithm::search::{RatioPolicy, Ratios};
use pariskv::constants::TUNED_RHO_COLL;
use pariskv::cuda::driver::{self, DeviceBuffer, Stream, Timer};
use pariskv::cuda::encode::{encode, EncodeTarget, GpuRotation};
use pariskv::cuda::pinned::PinnedHost;
use pariskv::cuda::row_cache::{RowCache, RowCacheShape};
use pariskv::cuda::step::{attend, run_marked, GpuLayer, Rows, StageMarks, StepBuffers, UnitLayout};
use pariskv::eval::synth::Rng;
use pariskv::rows::DType;
use pariskv::shape::Shape;
use pariskv::step::StepParams;

const D: usize = 128;

/// The model shape a step is timed for (the head dimension is D for all).
#[derive(Clone, Copy)]
struct Model {
    kv_heads: usize,
    /// query heads per KV head
    group: usize,
    layers: usize,
}

impl Model {
    fn named(name: &str) -> Model {
        match name {
            "llama8b" => Model { kv_heads: 8, group: 4, layers: 32 },
            "qwen7b" => Model { kv_heads: 4, group: 7, layers: 28 },
            "mha7b" => Model { kv_heads: 32, group: 1, layers: 32 },
            _ => panic!("--shape: llama8b, qwen7b or mha7b, not {name}"),
        }
    }
}
/// Graph replays timed per configuration: about 200 ms of them, 1 to 10.
fn graph_replays(step_ms: f64) -> usize {
    ((200.0 / step_ms) as usize).clamp(1, 10)
}

/// Events at each stage's end, summed over the steps of a layer.
struct Events {
    start: Timer,
    stages: Vec<(&'static str, Timer)>,
    totals: Vec<(&'static str, f64)>,
}

impl StageMarks for Events {
    fn mark(&mut self, stage: &'static str, stream: &Stream) -> pariskv::Result<()> {
        // Each stage's time: from the previous mark (or the step's start) to this one.
        let idx = self.stages.iter().position(|(s, _)| *s == stage).unwrap_or_else(|| {
            self.stages.push((stage, Timer::new().unwrap()));
            self.totals.push((stage, 0.0));
            self.stages.len() - 1
        });
        let ms = if idx == 0 { self.start.stop(stream)? } else { self.stages[idx - 1].1.stop(stream)? };
        self.totals[idx].1 += ms as f64;
        self.stages[idx].1.start(stream)
    }
}

fn main() -> pariskv::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if args.iter().any(|a| a == "--defaults-only") {
        Mode::DefaultsOnly
    } else if args.iter().any(|a| a == "--offload") {
        Mode::Offload
    } else {
        Mode::All
    };
    let shape_at = args.iter().position(|a| a == "--shape");
    let model =
        Model::named(shape_at.map_or("llama8b", |i| {
            args.get(i + 1).map(String::as_str).expect("--shape llama8b|qwen7b|mha7b")
        }));
    let sizes: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|&(i, a)| !a.starts_with("--") && shape_at.is_none_or(|s| i != s + 1))
        .map(|(_, a)| a.parse().expect("N"))
        .collect();
    let sizes = if sizes.is_empty() { vec![32_768, 131_072, 1_048_576] } else { sizes };
    driver::use_primary_context(0)?;
    let stream = Stream::null();
    let module = driver::module_for(&stream)?;
    let shape = Shape::new(D)?;
    let rot = Rotation::new(shape, pariskv::config::DEFAULT_SEED);
    let grot = GpuRotation::new(&rot)?;
    let Model { kv_heads, group, layers } = model;
    println!("decode step for d={D}, {kv_heads} KV heads x {group} query heads, {layers} layers, top-k 2048, sink 4, window 512");
    for n in sizes {
        bench(n, model, mode, module, &grot, &stream)?;
    }
    Ok(())
}

/// Which rows of the benchmark run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    DefaultsOnly,
    Offload,
}

fn bench(
    n: usize,
    model: Model,
    mode: Mode,
    module: &driver::Module,
    grot: &GpuRotation,
    stream: &Stream,
) -> pariskv::Result<()> {
    let shape = grot.shape;
    let Model { kv_heads, group, layers } = model;
    let mut rng = Rng::new(n as u64);
    // one layer's cache: [N][kv_heads][D] f16 K and V, random
    let kv: Vec<u16> = (0..n * kv_heads * D).map(|_| half::f16::from_f32(rng.normal()).to_bits()).collect();
    let k_dev = DeviceBuffer::from_slice(&kv)?;
    let v_dev = DeviceBuffer::from_slice(&kv)?;
    let bytes = kv.len() * 2;
    let (k_host, v_host) = (PinnedHost::new(bytes)?, PinnedHost::new(bytes)?);
    // SAFETY (bench): both pinned buffers hold `bytes` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(kv.as_ptr() as *const u8, k_host.host as *mut u8, bytes);
        std::ptr::copy_nonoverlapping(kv.as_ptr() as *const u8, v_host.host as *mut u8, bytes);
    }
    let (cb, nb, nw) = (shape.code_bytes(), shape.nibble_bytes(), shape.n_weights() * 2);
    let codes = DeviceBuffer::new(kv_heads * n * cb)?;
    let nibbles = DeviceBuffer::new(kv_heads * n * nb)?;
    let weights = DeviceBuffer::new(kv_heads * n * nw)?;
    // the zone's code histogram as the encodes keep it (and its flags), zero before them
    let hist_bytes = shape.n_blocks * 256 * 4;
    let hist = DeviceBuffer::from_slice(&vec![0u8; kv_heads * hist_bytes])?;
    let counted = DeviceBuffer::from_slice(&vec![0u8; kv_heads * n])?;
    let cells: Vec<i64> = (0..n as i64).collect();
    let (gcells, gn) = (DeviceBuffer::from_slice(&cells)?, DeviceBuffer::from_slice(&[n as i32])?);
    let target = EncodeTarget {
        keys: k_dev.ptr,
        key_dtype: DType::F16,
        key_row_stride: kv_heads * D * 2,
        key_head_stride: D * 2,
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        hist: hist.ptr,
        counted: counted.ptr,
        kept_stride: 0,
        kv_size: n,
        n_heads: kv_heads,
        center: 0,
        row_cache: Default::default(),
    };
    let t = Timer::new()?;
    t.start(stream)?;
    encode(module, grot, &target, gcells.ptr, gn.ptr, n, stream)?;
    let enc_ms = t.stop(stream)?;

    let pos: Vec<i32> = (0..n as i32).collect();
    let (gpos, gmask) = (DeviceBuffer::from_slice(&pos)?, DeviceBuffer::from_slice(&vec![0.0f32; n])?);
    let q: Vec<f32> = (0..kv_heads * group * D).map(|_| rng.normal()).collect();
    let gq = DeviceBuffer::from_slice(&q)?;
    let gout = DeviceBuffer::new(q.len() * 4)?;
    let buf = StepBuffers::new(shape, D, n, group, kv_heads)?;
    let iota = DeviceBuffer::from_slice(&(0..n as i32).collect::<Vec<_>>())?;
    let gall = DeviceBuffer::from_slice(&[n as i32])?;
    let attn = AttnParams { scale: 1.0 / (D as f32).sqrt(), softcap: 0.0 };
    println!(
        "\nN = {n}: encode {:.2} ms for {} keys ({:.1} M keys/s)",
        enc_ms,
        n * kv_heads,
        (n * kv_heads) as f64 / enc_ms as f64 / 1e3
    );
    // the step as llama.cpp runs it (with the encodes' kept histogram), and counting the
    // zone's histogram itself every step, with the one-block top-k kernels instead of the
    // clusters' and with plain launches instead of programmatic dependent ones (where the
    // GPU has them)
    // With K/V in host RAM also through a row cache of 2 x and 4 x top-k slots per KV head
    // (a step with refine 2 takes 2 x top-k shortlisted K rows there besides the sink and
    // window): every "layer" here is the same layer with the same query, so after the first
    // step every row the cache has room for is a hit: an upper bound (real prompts hit
    // 0.8-0.84 of their top-k rows with 2k slots: docs/FIDELITY.md, "A slot table, simulated").
    let row_cache = |slots: usize| RowCache::new(RowCacheShape::new((1, kv_heads, slots), (D * 2, D * 2))?);
    let (cache_2k, cache_4k) = (row_cache(4096)?, row_cache(8192)?);
    let places = [
        ("K/V in HBM", k_dev.ptr, v_dev.ptr, true, true, true, None),
        ("K/V in HBM, recounting", k_dev.ptr, v_dev.ptr, false, true, true, None),
        ("K/V in HBM, 1-block top-k", k_dev.ptr, v_dev.ptr, true, false, true, None),
        ("K/V in HBM, plain launches", k_dev.ptr, v_dev.ptr, true, true, false, None),
        ("K/V in host RAM (UVA)", k_host.device, v_host.device, true, true, true, None),
        ("K/V in host RAM, row cache 4096", k_host.device, v_host.device, true, true, true, Some(&cache_2k)),
        ("K/V in host RAM, row cache 8192", k_host.device, v_host.device, true, true, true, Some(&cache_4k)),
    ];
    for (_, (where_, kptr, vptr, kept, clusters, programmatic, cached)) in
        places.into_iter().enumerate().filter(|&(i, _)| match mode {
            Mode::All => true,
            Mode::DefaultsOnly => i < 4,
            Mode::Offload => i >= 4,
        })
    {
        driver::allow_clusters(clusters);
        driver::allow_programmatic_launch(programmatic);
        // one layer: the KV heads of one token are the units
        let layer = GpuLayer {
            layout: UnitLayout {
                n_units: kv_heads as i32,
                n_h: kv_heads as i32,
                k_h: (D * 2) as i64,
                v_h: (D * 2) as i64,
                codes_h: (n * cb) as i64,
                nib_h: (n * nb) as i64,
                w_h: (n * nw) as i64,
                q_h: (group * D * 4) as i64,
                out_h: (group * D * 4) as i64,
                kept_h: hist_bytes as i64,
                counted_h: n as i64,
                ..UnitLayout::default()
            },
            n,
            k: kptr,
            k_dtype: DType::F16,
            k_stride: kv_heads * D * 2,
            v: vptr,
            v_dtype: DType::F16,
            v_stride: kv_heads * D * 2,
            codes: codes.ptr,
            nibbles: nibbles.ptr,
            weights: weights.ptr,
            kept: if kept { hist.ptr } else { 0 },
            counted: if kept { counted.ptr } else { 0 },
            mask: gmask.ptr,
            mask_dtype: DType::F32,
            pos: gpos.ptr,
            q: gq.ptr,
            q_stride: D * 4,
            n_heads: group,
            out: gout.ptr,
            out_stride: D * 4,
            row_cache: match cached {
                Some(c) => c.stream(0)?,
                None => Default::default(),
            },
        };
        // the paper's settings (reference ratios, group-mean or per-head query), the first
        // tuned table (as the share 0.1 it is for zones of 30K keys and more: N of 30.6K up), the
        // tuned table's wider share, each without and with refine 2 (the defaults); the group
        // policy with the tuned table
        let first = RatioPolicy::Fixed(Ratios { cand: 0.1, coll: TUNED_RHO_COLL });
        for (gqa, ratios, refine) in [
            (GqaPolicy::Mean, RatioPolicy::Adaptive, 1),
            (GqaPolicy::PerHead, RatioPolicy::Adaptive, 1),
            (GqaPolicy::PerHead, first, 1),
            (GqaPolicy::PerHead, RatioPolicy::Tuned, 1),
            (GqaPolicy::PerHead, first, 2),
            (GqaPolicy::PerHead, RatioPolicy::Tuned, 2),
            (GqaPolicy::Group, RatioPolicy::Tuned, 1),
            (GqaPolicy::Group, RatioPolicy::Tuned, 2),
        ]
        .into_iter()
        .skip(if mode == Mode::All { 0 } else { 7 })
        {
            let params = StepParams { top_k: 2048, n_sink: 4, n_local: 512, ratios, gqa, refine, attn };
            run_marked(module, grot, &params, &layer, &buf, stream, &mut NoOp)?;
            driver::synchronize()?;
            // the layers back to back
            let whole = Timer::new()?;
            whole.start(stream)?;
            for _ in 0..layers {
                run_marked(module, grot, &params, &layer, &buf, stream, &mut NoOp)?;
            }
            let step_ms = whole.stop(stream)? as f64;
            let graph_ms = graph_ms(step_ms, layers, |gs| {
                run_marked(module, grot, &params, &layer, &buf, gs, &mut NoOp)
            })?;
            // again, waiting at each stage's end to time it
            let mut ev = Events { start: Timer::new()?, stages: Vec::new(), totals: Vec::new() };
            for _ in 0..layers {
                ev.start.start(stream)?;
                run_marked(module, grot, &params, &layer, &buf, stream, &mut ev)?;
            }
            let stages: Vec<String> = ev.totals.iter().map(|(s, ms)| format!("{s} {ms:.2} ms")).collect();
            println!(
                "  {where_:<31} ParisKV ({gqa:?}, {ratios:?}, refine {refine}): {step_ms:.2} ms per decode step ({layers} layers x {kv_heads} KV heads), {graph_ms:.2} ms as a CUDA graph; stages: {}",
                stages.join(", ")
            );
        }
        if cached.is_some() || mode == Mode::Offload {
            continue; // dense attention over every cell through PCIe (and churning the cache)
        }
        // dense attention over all N, same kernel, same run
        let params = StepParams {
            top_k: n,
            n_sink: 0,
            n_local: 0,
            ratios: RatioPolicy::Adaptive,
            gqa: GqaPolicy::Mean,
            refine: 1,
            attn,
        };
        let all = Rows { rows: iota.ptr, row_stride: 0, n_rows: gall.ptr, n_rows_stride: 0, mark: 0 };
        attend(module, &buf, &layer, &params, &all, n, stream)?;
        driver::synchronize()?;
        let whole = Timer::new()?;
        whole.start(stream)?;
        for _ in 0..layers {
            attend(module, &buf, &layer, &params, &all, n, stream)?;
        }
        let dense_ms = whole.stop(stream)? as f64;
        let dense_graph_ms =
            graph_ms(dense_ms, layers, |gs| attend(module, &buf, &layer, &params, &all, n, gs))?;
        let kv_bytes = (n * kv_heads * D * 2 * 2 * layers) as f64;
        println!(
            "  {where_:<31} dense attention over all {n} cells: {dense_ms:.2} ms per decode step ({:.0} GB/s of K/V), {dense_graph_ms:.2} ms as a CUDA graph",
            kv_bytes / (dense_ms / 1e3) / 1e9
        );
    }
    Ok(())
}

/// Milliseconds per step when the `layers` launches of `layer` are captured once in a CUDA
/// graph on a created stream and replayed (no launch gaps); `step_ms` sizes the replays.
fn graph_ms(
    step_ms: f64,
    layers: usize,
    layer: impl Fn(&Stream) -> pariskv::Result<()>,
) -> pariskv::Result<f64> {
    let owned = driver::OwnedStream::new()?;
    let gs = owned.stream();
    let graph = driver::Graph::capture(&gs, || (0..layers).try_for_each(|_| layer(&gs)))?;
    graph.launch(&gs)?;
    let replay = Timer::new()?;
    replay.start(&gs)?;
    let replays = graph_replays(step_ms);
    for _ in 0..replays {
        graph.launch(&gs)?;
    }
    Ok(replay.stop(&gs)? as f64 / replays as f64)
}

struct NoOp;

impl StageMarks for NoOp {
    fn mark(&mut self, _: &'static str, _: &Stream) -> pariskv::Result<()> {
        Ok(())
    }
}
