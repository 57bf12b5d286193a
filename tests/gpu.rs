//! GPU stages against the CPU oracle (feature `cuda`). Without a CUDA driver and GPU every
//! test prints why it skipped and passes; scripts/gpu-tests.sh runs them on a GPU machine.
#![cfg(feature = "cuda")]

use half::{bf16, f16};
use pariskv::algorithm::center;
use pariskv::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
use pariskv::algorithm::rotation::Rotation;
use pariskv::cuda::driver::{self, DeviceBuffer, Stream};
use pariskv::cuda::encode::{encode, EncodeTarget, GpuRotation};
use pariskv::eval::synth::{SynthCache, SynthSpec};
use pariskv::rows::{DType, RowBuf, RowData, Rows};
use pariskv::shape::Shape;

/// The current context of device 0, or None (after saying why) when there is no GPU.
fn gpu() -> Option<()> {
    match driver::use_primary_context(0) {
        Ok(_) => Some(()),
        Err(e) => {
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// Keys as raw bytes of `dtype` plus the same values in f32.
fn keys_in(dtype: DType, f: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match dtype {
        DType::F32 => (f.iter().flat_map(|x| x.to_le_bytes()).collect(), f.to_vec()),
        DType::F16 => {
            let h: Vec<f16> = f.iter().map(|&x| f16::from_f32(x)).collect();
            (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
        }
        DType::BF16 => {
            let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
            (h.iter().flat_map(|x| x.to_le_bytes()).collect(), h.iter().map(|x| x.to_f32()).collect())
        }
        DType::Q8_0 => {
            // ggml's quantisation (RowBuf), and each byte times its block's scale back
            let mut buf = RowBuf::new(DType::Q8_0);
            buf.extend_from_f32(f);
            let RowData::Q8_0(blocks) = buf.data() else { unreachable!() };
            let exact = blocks.iter().flat_map(|b| b.quants.map(|q| q as f32 * b.scale.to_f32())).collect();
            (buf.data().as_bytes().to_vec(), exact)
        }
    }
}

#[test]
fn encode_is_bitwise_equal_to_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let module = driver::module_for(&Stream::null()).unwrap();
    let mut checked = 0;
    for (d, n_heads, n) in
        [(128usize, 2, 4099), (64, 1, 1), (256, 1, 1000), (96, 3, 77), (8, 1, 33), (512, 1, 257), (128, 2, 4)]
    {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0] {
            if dtype == DType::Q8_0 && !d.is_multiple_of(32) {
                continue; // q8_0 rows are whole blocks of 32
            }
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 0x5EED + d as u64);
            // [n][n_heads][d], structured keys plus a few degenerate ones: a zero key, and a
            // NaN coordinate (which also zeroes that coordinate of the centre)
            let mut spec = SynthSpec::new(n * n_heads, d, d as u64 + n as u64);
            spec.topic_len = 97;
            let mut f = SynthCache::generate(&spec).keys;
            f[..d].fill(0.0);
            if n > 2 {
                f[d * n_heads + 3] = f32::NAN;
            }
            let (bytes, exact) = keys_in(dtype, &f);
            for centered in [false, true] {
                checked += encode_case(module, &rot, dtype, &bytes, &exact, n_heads, n, centered);
            }
        }
    }
    println!("encode: {checked} keys bitwise equal to the CPU (with and without centring)");
}

/// GPU encode of every cell but the first (listed in reverse, with a device count below the
/// grid's bound, or at it for a few cells: one block per head, which sets the centre
/// itself), then of the first alone, against the CPU's: codes, 4-bit codes, weights and
/// (`centered`) the centres, which the first call sets, bitwise. Returns the keys checked.
#[allow(clippy::too_many_arguments)]
fn encode_case(
    module: &driver::Module,
    rot: &Rotation,
    dtype: DType,
    bytes: &[u8],
    exact: &[f32],
    n_heads: usize,
    n: usize,
    centered: bool,
) -> usize {
    let shape = rot.shape();
    let d = shape.head_dim;
    let gpu_keys = DeviceBuffer::from_slice(bytes).unwrap();
    let first: Vec<i64> = (1..n as i64).rev().collect();
    let (cb, nb, wb) = (shape.code_bytes(), shape.nibble_bytes(), shape.n_weights() * 2);
    let codes = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * cb]).unwrap();
    let nibbles = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * nb]).unwrap();
    let weights = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * wb]).unwrap();
    let centers = DeviceBuffer::from_slice(&vec![0.0f32; n_heads * center::len(d)]).unwrap();
    let target = EncodeTarget {
        keys: gpu_keys.ptr,
        key_dtype: dtype,
        key_row_stride: dtype.bytes(n_heads * d),
        key_head_stride: dtype.bytes(d),
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        hist: 0,
        counted: 0,
        kept_stride: 0,
        kv_size: n,
        n_heads,
        center: if centered { centers.ptr } else { 0 },
        row_cache: Default::default(),
    };
    let grot = GpuRotation::new(rot).unwrap();
    for cells in [first.clone(), vec![0]] {
        let gpu_cells = DeviceBuffer::from_slice(&cells).unwrap();
        let gpu_n = DeviceBuffer::from_slice(&[cells.len() as i32]).unwrap();
        let bound = if cells.len() <= 4 { cells.len().max(1) } else { cells.len() + 5 };
        encode(module, &grot, &target, gpu_cells.ptr, gpu_n.ptr, bound, &Stream::null()).unwrap();
    }
    driver::synchronize().unwrap();
    let got_codes: Vec<u8> = codes.read(n * n_heads * cb).unwrap();
    let got_nibbles: Vec<u8> = nibbles.read(n * n_heads * nb).unwrap();
    let got_weights: Vec<u16> = weights.read(n * n_heads * shape.n_weights()).unwrap();
    let got_centers: Vec<f32> = centers.read(n_heads * center::len(d)).unwrap();
    for h in 0..n_heads {
        let what = format!("d={d} {dtype:?} head {h} centred {centered}");
        let rows = Rows::head_of(RowData::F32(exact), n_heads, d, h, n).unwrap();
        let mut c = vec![0.0f32; center::len(d)];
        if centered {
            let first: Vec<usize> = first.iter().map(|&x| x as usize).collect();
            center::init(&rows, &first, &mut c, &mut Vec::new());
            center::init(&rows, &[0], &mut c, &mut Vec::new());
            let gpu_c = &got_centers[h * center::len(d)..][..center::len(d)];
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(gpu_c), bits(&c), "centre {what}");
        }
        let mut store = CodeStore::default();
        store.grow(&shape, n).unwrap();
        let all: Vec<usize> = (0..n).collect();
        let offset = center::offset(&c);
        encode_rows(rot, &rows, &all, offset, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
        let g = |v: &[u8], per: usize| v[h * n * per..][..n * per].to_vec();
        assert_eq!(g(&got_codes, cb), store.codes, "codes {what}");
        assert_eq!(g(&got_nibbles, nb), store.nibbles, "4-bit codes {what}");
        let w: Vec<u16> = got_weights[h * n * shape.n_weights()..][..n * shape.n_weights()].to_vec();
        let cpu_w: Vec<u16> = store.weights.iter().map(|x| x.to_bits()).collect();
        assert_eq!(w, cpu_w, "weights {what}");
    }
    n * n_heads
}

/// The histogram an encode keeps (`kept::tally` on the GPU): after encoding every cell of
/// two streams of two KV heads, then again a third of them from other keys, it counts each
/// encoded cell's final codes once (recounted from the codes read back, which
/// `encode_is_bitwise_equal_to_the_cpu` checks), flags exactly the encoded cells, and
/// leaves cells never encoded out.
#[test]
fn encode_keeps_the_histogram() {
    if gpu().is_none() {
        return;
    }
    let module = driver::module_for(&Stream::null()).unwrap();
    let (d, n_heads, kv_size, streams) = (128usize, 2, 700, 2);
    let shape = Shape::new(d).unwrap();
    let grot = GpuRotation::new(&Rotation::new(shape, 11)).unwrap();
    let cells_total = kv_size * streams;
    let keys = |seed: u64| {
        let f = SynthCache::generate(&SynthSpec::new(cells_total * n_heads, d, seed)).keys;
        keys_in(DType::F16, &f).0
    };
    let (keys_a, keys_b) =
        (DeviceBuffer::from_slice(&keys(1)).unwrap(), DeviceBuffer::from_slice(&keys(2)).unwrap());
    let (cb, blocks) = (shape.code_bytes(), shape.n_blocks);
    let zeros = |bytes: usize| DeviceBuffer::from_slice(&vec![0u8; bytes]).unwrap();
    // packed (histograms, then flags), and merged: each (stream, head)'s histogram and flags
    // in one row of a buffer (as the ggml integration keeps them)
    let (hist_bytes, tables) = (blocks * 256 * 4, streams * n_heads);
    for merged in [false, true] {
        let codes = zeros(cells_total * n_heads * cb);
        let nibbles = zeros(cells_total * n_heads * shape.nibble_bytes());
        let weights = zeros(cells_total * n_heads * shape.n_weights() * 2);
        let stride = if merged { (hist_bytes + kv_size).div_ceil(4) * 4 } else { 0 };
        let kept = zeros(if merged { tables * stride } else { tables * (hist_bytes + kv_size) });
        let (hist_at, counted_at) = if merged { (0, hist_bytes) } else { (0, tables * hist_bytes) };
        let target = |keys: &DeviceBuffer| EncodeTarget {
            keys: keys.ptr,
            key_dtype: DType::F16,
            key_row_stride: n_heads * d * 2,
            key_head_stride: d * 2,
            codes: codes.ptr,
            nibbles: nibbles.ptr,
            weights: weights.ptr,
            hist: kept.ptr + hist_at as u64,
            counted: kept.ptr + counted_at as u64,
            kept_stride: stride,
            kv_size,
            n_heads,
            center: 0,
            row_cache: Default::default(),
        };
        // every cell of each stream but its last 50, then every third of those again, other keys
        let first: Vec<i64> =
            (0..cells_total as i64).filter(|g| (*g as usize) % kv_size < kv_size - 50).collect();
        let again: Vec<i64> = first.iter().copied().filter(|g| g % 3 == 0).collect();
        for (keys, cells) in [(&keys_a, &first), (&keys_b, &again)] {
            let gcells = DeviceBuffer::from_slice(cells).unwrap();
            encode(module, &grot, &target(keys), gcells.ptr, 0, cells.len(), &Stream::null()).unwrap();
        }
        driver::synchronize().unwrap();
        let got_codes: Vec<u8> = codes.read(cells_total * n_heads * cb).unwrap();
        // table t's histogram and flags, wherever the layout puts them
        let raw: Vec<u8> = kept.read(kept.bytes).unwrap();
        let (mut got_hist, mut got_counted) = (Vec::new(), Vec::new());
        for t in 0..tables {
            let (h0, c0) = if merged {
                (t * stride, t * stride + hist_bytes)
            } else {
                (t * hist_bytes, counted_at + t * kv_size)
            };
            got_hist.extend(
                raw[h0..h0 + hist_bytes].chunks(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            got_counted.extend_from_slice(&raw[c0..c0 + kv_size]);
        }
        let mut want_hist = vec![0u32; got_hist.len()];
        let mut want_counted = vec![0u8; got_counted.len()];
        for &g in &first {
            let (s, cell) = (g as usize / kv_size, g as usize % kv_size);
            for h in 0..n_heads {
                let row = (s * n_heads + h) * kv_size + cell;
                want_counted[row] = 1;
                for (b, &code) in got_codes[row * cb..][..cb].iter().enumerate() {
                    want_hist[((s * n_heads + h) * blocks + b) * 256 + code as usize] += 1;
                }
            }
        }
        assert_eq!(got_counted, want_counted, "the encoded cells flagged, and only they (merged {merged})");
        assert_eq!(got_hist, want_hist, "each encoded cell's final codes counted once (merged {merged})");
        println!(
            "kept histogram (merged {merged}): {} cells encoded, {} again, over {streams} streams x {n_heads} KV heads",
            first.len(),
            again.len()
        );
    }
}

mod step {
    use super::*;
    use pariskv::algorithm::attention::{attend, AttnParams, AttnScratch};
    use pariskv::algorithm::estimate::QueryI8;
    use pariskv::algorithm::gqa::{select_group, GqaPolicy, GroupScratch, Refine};
    use pariskv::algorithm::search::{
        candidate_count, candidates, collision_counts, group_query, histogram, rerank, tier_budgets,
        tier_levels, RatioPolicy,
    };
    use pariskv::cuda::row_cache::{RowCache, RowCacheShape};
    use pariskv::cuda::step::{
        gather, run, state_stride, Gathered, GpuLayer, Retrieval, StepBuffers, UnitLayout, UnitState,
    };
    use pariskv::step::{attend_cache, CacheView, StepParams, StepScratch};
    use std::collections::BTreeSet;

    #[derive(Clone, Copy)]
    pub struct Case {
        pub d: usize,
        pub g: usize,
        pub n: usize,
        pub gqa: GqaPolicy,
        pub top_k: usize,
        pub dtype: DType,
        /// KV heads per token (units = tokens x kv)
        pub kv: usize,
        /// two tokens of two sequences sharing the cache, cells alternating between them
        pub two_sequences: bool,
        /// exact rescoring factor (1: off)
        pub refine: usize,
        /// the tuned ratio table instead of the reference's
        pub tuned: bool,
        /// attention logit soft-capping (0: off)
        pub softcap: f32,
        /// cells in runs of this many with equal keys and values (1: all distinct), so that
        /// whole runs tie in every count, estimate and score (ties go to the lower cell)
        pub tied: usize,
    }

    impl Case {
        /// 5000 cells of two KV heads of four query heads, per head, top-k 256, f16: the
        /// case others vary
        pub const BASE: Case = Case {
            d: 128,
            g: 4,
            n: 5000,
            gqa: GqaPolicy::PerHead,
            top_k: 256,
            dtype: DType::F16,
            kv: 2,
            two_sequences: false,
            refine: 1,
            tuned: false,
            softcap: 0.0,
            tied: 1,
        };
    }

    /// The CPU's stages for one retrieval, for stage-by-stage comparison.
    struct CpuRetrieval {
        levels: Vec<u8>,
        counts: Vec<u16>,
        cutoff: u16,
        candidates: BTreeSet<u32>,
        /// refining: the estimates rescored exactly (empty without)
        shortlist: BTreeSet<u32>,
        top: BTreeSet<u32>,
    }

    /// What a step case gives the GPU of the zone's histogram (the CPU always counts it).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum KeptMode {
        /// Nothing: the step counts it.
        Counted,
        /// A kept histogram of every cell: the step takes it less what is outside the zone.
        Exact,
        /// Kept, with three more counted cells beyond the view: the step must count instead.
        BeyondView,
        /// Kept, but one cell (visible to the first token) not counted in it: the step must
        /// count for that token.
        Uncounted,
    }

    pub fn check_case(c: &Case) {
        check_case_with(c, None, KeptMode::Counted)
    }

    /// `check_case` on `shared` buffers (left as earlier steps left them) or fresh ones,
    /// with the zone's histogram given as `kept` says.
    pub fn check_case_with(c: &Case, shared: Option<&StepBuffers>, kept: KeptMode) {
        let module = driver::module_for(&Stream::null()).unwrap();
        let (d, n, g, kv) = (c.d, c.n, c.g, c.kv);
        let tokens = if c.two_sequences { 2 } else { 1 };
        let units = tokens * kv;
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 77);
        // K/V storage [n][kv][d]
        let mut spec = SynthSpec::new(n * kv, d, (d * 31 + n) as u64);
        spec.n_outlier_channels = 0;
        spec.topic_len = 513;
        let cache = SynthCache::generate(&spec);
        let tie = |rows: &[f32]| -> Vec<f32> {
            let w = kv * d; // a cell's row of every KV head
            (0..n).flat_map(|cell| rows[cell / c.tied * c.tied * w..][..w].iter().copied()).collect()
        };
        let (kb, kf) = keys_in(c.dtype, &tie(&cache.keys));
        let (vb, vf) = keys_in(c.dtype, &tie(&cache.values));
        let (cb, nbb, nw) = (shape.code_bytes(), shape.nibble_bytes(), shape.n_weights());
        let mut stores = Vec::new();
        for h in 0..kv {
            let rows = Rows::head_of(RowData::F32(&kf), kv, d, h, n).unwrap();
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            let all: Vec<usize> = (0..n).collect();
            encode_rows(&rot, &rows, &all, None, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
            stores.push(store);
        }
        let visible = |t: usize, cell: usize| !c.two_sequences || cell % 2 == t;
        let pos: Vec<i32> = (0..n as i32).map(|x| if c.two_sequences { x / 2 } else { x }).collect();
        let mask: Vec<f32> = (0..tokens)
            .flat_map(|t| (0..n).map(move |x| if visible(t, x) { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let mut rng = pariskv::eval::synth::Rng::new(n as u64 + 3);
        let mut q = Vec::new();
        for _ in 0..units {
            let targets: Vec<usize> = (0..4).map(|_| rng.below(n * kv)).collect();
            for _ in 0..g {
                q.extend(cache.planted_query(&targets, 8.0, &mut rng));
            }
        }
        let policy = if c.tuned { RatioPolicy::Tuned } else { RatioPolicy::Adaptive };
        let params = StepParams {
            top_k: c.top_k,
            n_sink: 4,
            n_local: 64,
            ratios: policy,
            gqa: c.gqa,
            refine: c.refine,
            attn: AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: c.softcap },
        };

        // GPU, all units in one step (twice: the second must not see the first's marks)
        let up = |b: &[u8]| DeviceBuffer::from_slice(b).unwrap();
        let (gk, gv) = (up(&kb), up(&vb));
        let codes_all: Vec<u8> = stores.iter().flat_map(|s| s.codes.clone()).collect();
        let nib_all: Vec<u8> = stores.iter().flat_map(|s| s.nibbles.clone()).collect();
        let w_all: Vec<u16> = stores.iter().flat_map(|s| s.weights.iter().map(|w| w.to_bits())).collect();
        let (gcodes, gnib, gw) = (up(&codes_all), up(&nib_all), DeviceBuffer::from_slice(&w_all).unwrap());
        // the kept histograms and flags, per KV head, as the encodes would have left them
        let extra = if kept == KeptMode::BeyondView { 3 } else { 0 };
        let (hist_len, flags_len) = (shape.n_blocks * 256, n + extra);
        let mut kept_hist = vec![0u32; kv * hist_len];
        let mut kept_flags = vec![0u8; kv * flags_len];
        for (h, store) in stores.iter().enumerate() {
            // cell `flag` counted with cell x's codes
            let mut count = |flag: usize, x: usize| {
                kept_flags[h * flags_len + flag] = 1;
                for (b, &code) in store.codes[x * cb..][..cb].iter().enumerate() {
                    kept_hist[h * hist_len + b * 256 + code as usize] += 1;
                }
            };
            // the sixth cell the first token sees left out (past the sink of four)
            let left_out =
                if kept == KeptMode::Uncounted { (0..n).filter(|&x| visible(0, x)).nth(5) } else { None };
            for x in (0..n).filter(|&x| Some(x) != left_out) {
                count(x, x);
            }
            for i in 0..extra {
                count(n + i, i % n);
            }
        }
        let gkept = DeviceBuffer::from_slice(&kept_hist).unwrap();
        let gflags = DeviceBuffer::from_slice(&kept_flags).unwrap();
        let gmask = DeviceBuffer::from_slice(&mask).unwrap();
        let gpos = DeviceBuffer::from_slice(&pos).unwrap();
        let gq = DeviceBuffer::from_slice(&q).unwrap();
        let gout = DeviceBuffer::new(units * g * d * 4).unwrap();
        let own;
        let buf = match shared {
            Some(b) => b,
            None => {
                own = StepBuffers::new(shape, d, n + 7, g, units).unwrap();
                &own
            }
        };
        let row_bytes = c.dtype.bytes(d); // q8_0: whole blocks
        let layer = GpuLayer {
            layout: UnitLayout {
                n_units: units as i32,
                n_h: kv as i32,
                k_a: 0,
                k_h: row_bytes as i64,
                v_a: 0,
                v_h: row_bytes as i64,
                codes_a: 0,
                codes_h: (n * cb) as i64,
                nib_a: 0,
                nib_h: (n * nbb) as i64,
                w_a: 0,
                w_h: (n * nw * 2) as i64,
                mask_a: (n * 4) as i64,
                pos_a: 0,
                q_a: (kv * g * d * 4) as i64,
                q_h: (g * d * 4) as i64,
                out_a: (kv * g * d * 4) as i64,
                out_h: (g * d * 4) as i64,
                kept_a: 0,
                kept_h: (hist_len * 4) as i64,
                counted_a: 0,
                counted_h: flags_len as i64,
            },
            n,
            k: gk.ptr,
            k_dtype: c.dtype,
            k_stride: kv * row_bytes,
            v: gv.ptr,
            v_dtype: c.dtype,
            v_stride: kv * row_bytes,
            codes: gcodes.ptr,
            nibbles: gnib.ptr,
            weights: gw.ptr,
            kept: if kept == KeptMode::Counted { 0 } else { gkept.ptr },
            counted: if kept == KeptMode::Counted { 0 } else { gflags.ptr },
            mask: gmask.ptr,
            mask_dtype: DType::F32,
            pos: gpos.ptr,
            q: gq.ptr,
            q_stride: d * 4,
            n_heads: g,
            out: gout.ptr,
            out_stride: d * 4,
            row_cache: Default::default(),
        };
        let grot = GpuRotation::new(&rot).unwrap();
        for _ in 0..2 {
            run(module, &grot, &params, &layer, buf, &Stream::null()).unwrap();
        }
        driver::synchronize().unwrap();
        let n_ret = if c.gqa == GqaPolicy::Mean { 1 } else { g };
        let stride = state_stride(n_ret);
        let state: Vec<u8> = buf.state.read(units * stride).unwrap();
        let klass: Vec<u8> = buf.klass.read(units * n).unwrap();
        let hist_all: Vec<u32> = buf.hist.read(units * shape.n_blocks * 256).unwrap();
        assert_eq!(
            gkept.read::<u32>(kept_hist.len()).unwrap(),
            kept_hist,
            "the step leaves the kept histogram"
        );
        assert_eq!(
            gflags.read::<u8>(kept_flags.len()).unwrap(),
            kept_flags,
            "the step leaves the kept flags"
        );
        let levels: Vec<u8> = buf.levels.read(units * n_ret * shape.n_blocks * 256).unwrap();
        let counts: Vec<u16> = buf.counts.read(units * n_ret * n).unwrap();
        let cand: Vec<u64> = buf.cand.read(units * n_ret * n).unwrap();
        let rows_all: Vec<i32> = buf.rows.read(units * n).unwrap();
        let out: Vec<f32> = gout.read(units * g * d).unwrap();
        // the standalone gather of the same rows: raw bytes equal to the stored rows
        let (gath_k, gath_v) = (
            DeviceBuffer::new(units * n * row_bytes).unwrap(),
            DeviceBuffer::new(units * n * row_bytes).unwrap(),
        );
        let to =
            Gathered { k: gath_k.ptr, k_bytes: row_bytes, v: gath_v.ptr, v_bytes: row_bytes, max_rows: n };
        let step_rows = buf.rows_of(n, n_ret);
        gather(module, &layer, &step_rows, &to, &Stream::null()).unwrap();
        driver::synchronize().unwrap();
        let (gathered_k, gathered_v): (Vec<u8>, Vec<u8>) =
            (gath_k.read(units * n * row_bytes).unwrap(), gath_v.read(units * n * row_bytes).unwrap());

        for u in 0..units {
            let (t, h) = (u / kv, u % kv);
            let what = format!(
                "d={d} g={g} n={n} {:?} k={} {:?} {kept:?} unit {u} of {units}",
                c.gqa, c.top_k, c.dtype
            );
            // the CPU: the whole step, then its stages one by one
            let krows = Rows::head_of(RowData::F32(&kf), kv, d, h, n).unwrap();
            let vrows = Rows::head_of(RowData::F32(&vf), kv, d, h, n).unwrap();
            let store = &stores[h];
            let vis = |x: usize| visible(t, x);
            let view = CacheView {
                keys: krows,
                values: vrows,
                codes: store.as_ref(),
                visible: vis,
                pos: &pos,
                zone_hist: None,
                kept: None,
            };
            let qu = &q[u * g * d..][..g * d];
            let mut cpu_out = vec![0.0f32; g * d];
            let stats =
                attend_cache(&rot, &params, &view, qu, &mut StepScratch::default(), &mut cpu_out).unwrap();
            let (mut p_min, mut p_max) = (i64::MAX, i64::MIN);
            for x in (0..n).filter(|&x| vis(x)) {
                p_min = p_min.min(pos[x] as i64);
                p_max = p_max.max(pos[x] as i64);
            }
            let class: Vec<u8> = (0..n)
                .map(|x| match (vis(x), (pos[x] as i64) < p_min + 4 || (pos[x] as i64) > p_max - 64) {
                    (false, _) => 0,
                    (true, true) => 2,
                    (true, false) => 1,
                })
                .collect();
            let zone = |x: usize| class[x] == 1;
            let mut hist = Vec::new();
            let n_zone = histogram(&shape, &store.as_ref(), 0..n, zone, &mut hist);
            let heads: Vec<&[f32]> = match c.gqa {
                GqaPolicy::Mean => vec![qu],
                GqaPolicy::PerHead | GqaPolicy::Group => qu.chunks_exact(d).collect(),
            };
            let ratios = policy.ratios(n_zone);
            let mut cpu = Vec::new();
            for (r, qh) in heads.iter().enumerate() {
                let k = if n_zone <= c.top_k {
                    n_zone
                } else if c.gqa == GqaPolicy::Group {
                    c.top_k // every head looks for the group's k
                } else {
                    c.top_k / n_ret + usize::from(r < c.top_k % n_ret)
                };
                let mut q_rot = vec![0.0; shape.padded_dim];
                group_query(&rot, qh, &mut Vec::new(), &mut q_rot);
                let mut levels = Vec::new();
                tier_levels(&shape, &q_rot, &hist, &tier_budgets(n_zone, ratios.coll), &mut levels);
                let mut counts = Vec::new();
                collision_counts(&shape, &store.as_ref(), 0..n, zone, &levels, &mut counts);
                // refining: a shortlist of refine * k estimates, then the k best exact scores
                let refining = c.refine > 1 && n_zone > c.top_k;
                let shortlist = if refining { (k * c.refine).min(n_zone) } else { k };
                let m = candidate_count(n_zone, ratios.cand, shortlist);
                let (mut ch, mut cand) = (Vec::new(), Vec::new());
                let cutoff = candidates(&shape, &counts, 0, m, &mut ch, &mut cand);
                let mut qi = QueryI8::default();
                qi.set(&q_rot);
                let mut top = Vec::new();
                rerank(&shape, &store.as_ref(), &qi, &cand, shortlist, &mut top);
                let listed: BTreeSet<u32> = top.iter().map(|&(_, x)| x).collect();
                if refining {
                    let mut mean = Vec::new();
                    group_query(&rot, qh, &mut mean, &mut q_rot);
                    let cells: Vec<u32> = listed.iter().copied().collect();
                    let exact = pariskv::eval::exact_top_k(&krows, &mean, &cells, k);
                    top = exact.into_iter().map(|x| (0.0, x)).collect();
                }
                cpu.push(CpuRetrieval {
                    levels,
                    counts,
                    cutoff,
                    candidates: if k > 0 { cand.into_iter().collect() } else { BTreeSet::new() },
                    shortlist: if refining { listed } else { BTreeSet::new() },
                    top: top.into_iter().map(|(_, x)| x).collect(),
                });
            }

            // the group policy: the union of the heads' candidates, the shortlist (the best
            // refine * k of the union by group probability) and the k rows, from the CPU's
            // select_group (k * refine with refine 1 gives the shortlist)
            let group_cpu = (c.gqa == GqaPolicy::Group).then(|| {
                if n_zone <= c.top_k {
                    let zone_cells: BTreeSet<u32> = (0..n as u32).filter(|&x| zone(x as usize)).collect();
                    return (zone_cells.clone(), BTreeSet::new(), zone_cells);
                }
                let mut scratch = GroupScratch::default();
                let pick = |scratch: &mut GroupScratch, k: usize, factor: usize| -> BTreeSet<u32> {
                    let refine = Refine { keys: &krows, factor, attn: params.attn };
                    let mut out = Vec::new();
                    select_group(
                        &rot,
                        GqaPolicy::Group,
                        qu,
                        store.as_ref(),
                        0..n,
                        zone,
                        None,
                        policy,
                        k,
                        refine,
                        scratch,
                        &mut out,
                    )
                    .unwrap();
                    assert_eq!(out.len(), out.iter().collect::<BTreeSet<_>>().len(), "{what}: repeats");
                    out.into_iter().collect()
                };
                let top = pick(&mut scratch, c.top_k, c.refine);
                let union: BTreeSet<u32> = scratch.candidates.iter().copied().collect();
                let shortlist =
                    if c.refine > 1 { pick(&mut scratch, c.top_k * c.refine, 1) } else { BTreeSet::new() };
                assert_eq!(top.len(), c.top_k, "{what}: the CPU's group rows fill k");
                (union, shortlist, top)
            });

            // SAFETY (test): the state holds, per unit, a UnitState and n_ret Retrievals.
            let us: UnitState =
                unsafe { std::ptr::read_unaligned(state[u * stride..].as_ptr() as *const UnitState) };
            assert_eq!(us.n_zone as usize, n_zone, "{what}: zone size");
            assert_eq!(&klass[u * n..][..n], &class[..], "{what}: classes");
            assert_eq!(&hist_all[u * hist.len()..][..hist.len()], &hist[..], "{what}: histogram");
            let mut rows_cpu: BTreeSet<u32> = (0..n as u32).filter(|&x| class[x as usize] == 2).collect();
            for (r, x) in cpu.iter().enumerate() {
                let ur = u * n_ret + r;
                let ret: Retrieval = unsafe {
                    std::ptr::read_unaligned(
                        state[u * stride
                            + std::mem::size_of::<UnitState>()
                            + r * std::mem::size_of::<Retrieval>()..]
                            .as_ptr() as *const Retrieval,
                    )
                };
                assert_eq!(
                    levels[ur * x.levels.len()..][..x.levels.len()],
                    x.levels[..],
                    "{what}: tier levels {r}"
                );
                assert_eq!(counts[ur * n..][..n], x.counts[..], "{what}: collision counts {r}");
                assert_eq!(ret.cutoff as u16, x.cutoff, "{what}: cutoff {r}");
                if group_cpu.is_some() {
                    continue; // the group's one list is retrieval 0's, checked below
                }
                let keys = &cand[ur * n..][..ret.n_cand as usize];
                let cells = |keys: &mut dyn Iterator<Item = &u64>| -> BTreeSet<u32> {
                    keys.filter(|&&k| k != u64::MAX).map(|k| (k & 0xFFFF_FFFF) as u32).collect()
                };
                if x.shortlist.is_empty() {
                    assert_eq!(cells(&mut keys.iter()), x.candidates, "{what}: candidates {r}");
                } else {
                    // the list now holds the shortlist's exact keys, the other candidates ~0
                    assert_eq!(cells(&mut keys.iter()), x.shortlist, "{what}: shortlist {r}");
                    assert_eq!(ret.n_refined as usize, x.shortlist.len(), "{what}: cells refined {r}");
                }
                // the top-k: the keep smallest keys
                let mut sorted = keys.to_vec();
                sorted.sort_unstable();
                let gpu_top = cells(&mut sorted.iter().take(ret.keep.max(0) as usize));
                assert_eq!(gpu_top, x.top, "{what}: top-k {r}");
                rows_cpu.extend(x.top.iter().copied());
            }
            if let Some((union, shortlist, top)) = &group_cpu {
                let ret: Retrieval = unsafe {
                    std::ptr::read_unaligned(
                        state[u * stride + std::mem::size_of::<UnitState>()..].as_ptr() as *const Retrieval
                    )
                };
                let keys = &cand[u * n_ret * n..][..ret.n_cand as usize];
                let cells = |keys: &mut dyn Iterator<Item = &u64>| -> BTreeSet<u32> {
                    keys.filter(|&&k| k != u64::MAX).map(|k| (k & 0xFFFF_FFFF) as u32).collect()
                };
                assert_eq!(ret.n_cand as usize, union.len(), "{what}: group union size");
                if shortlist.is_empty() {
                    assert_eq!(cells(&mut keys.iter()), *union, "{what}: group union");
                } else {
                    assert_eq!(cells(&mut keys.iter()), *shortlist, "{what}: group shortlist");
                    assert_eq!(ret.n_refined as usize, shortlist.len(), "{what}: group cells refined");
                }
                let mut sorted = keys.to_vec();
                sorted.sort_unstable();
                let gpu_top = cells(&mut sorted.iter().take(ret.keep.max(0) as usize));
                assert_eq!(gpu_top, *top, "{what}: group top-k");
                rows_cpu.extend(top.iter().copied());
            }
            let rows: BTreeSet<u32> =
                rows_all[u * n..][..us.n_rows as usize].iter().map(|&x| x as u32).collect();
            assert_eq!(rows, rows_cpu, "{what}: attended rows");
            assert_eq!(us.n_rows as usize, stats.n_attended, "{what}: row count");
            for (i, &cell) in rows_all[u * n..][..us.n_rows as usize].iter().enumerate() {
                let src = (cell as usize * kv + h) * row_bytes;
                let dst = (u * n + i) * row_bytes;
                assert_eq!(
                    gathered_k[dst..][..row_bytes],
                    kb[src..][..row_bytes],
                    "{what}: gathered K row {i}"
                );
                assert_eq!(
                    gathered_v[dst..][..row_bytes],
                    vb[src..][..row_bytes],
                    "{what}: gathered V row {i}"
                );
            }
            let got = &out[u * g * d..][..g * d];
            let scale = cpu_out.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
            let worst = got.iter().zip(&cpu_out).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "{what}: attention output off by {worst} (relative to its largest value)");
            let mut again = vec![0.0f32; g * d];
            let rows_v: Vec<u32> = rows.iter().copied().collect();
            attend(qu, &krows, &vrows, &rows_v, params.attn, &mut AttnScratch::default(), &mut again)
                .unwrap();
            assert_eq!(again, cpu_out, "{what}: same rows, same CPU output");
            if u == 0 {
                println!("step {what}: {} rows, worst relative error {worst:.2e}", rows.len());
            }
        }

        // The same step captured once in a CUDA graph and replayed twice (as llama.cpp's CUDA
        // backend replays a decode step): the same rows, the same output up to the order in
        // which rows are summed.
        let owned = driver::OwnedStream::new().unwrap();
        let stream = owned.stream();
        let graph =
            driver::Graph::capture(&stream, || run(module, &grot, &params, &layer, buf, &stream)).unwrap();
        gout.write(&vec![0.0f32; units * g * d]).unwrap();
        for _ in 0..2 {
            graph.launch(&stream).unwrap();
        }
        driver::synchronize().unwrap();
        // the last step's rows and outputs as the first run's: the same rows, the outputs up to
        // the order in which rows are summed
        let same_as_first = |what: &str| {
            let again_state: Vec<u8> = buf.state.read(units * stride).unwrap();
            let again_rows: Vec<i32> = buf.rows.read(units * n).unwrap();
            let again_out: Vec<f32> = gout.read(units * g * d).unwrap();
            for u in 0..units {
                // SAFETY (test): the state holds, per unit, a UnitState and n_ret Retrievals.
                let (a, b): (UnitState, UnitState) = unsafe {
                    (
                        std::ptr::read_unaligned(state[u * stride..].as_ptr() as *const UnitState),
                        std::ptr::read_unaligned(again_state[u * stride..].as_ptr() as *const UnitState),
                    )
                };
                let set =
                    |r: &[i32], m: i32| r[u * n..][..m as usize].iter().copied().collect::<BTreeSet<i32>>();
                assert_eq!(set(&again_rows, b.n_rows), set(&rows_all, a.n_rows), "{what}: rows of unit {u}");
                let (got, want) = (&again_out[u * g * d..][..g * d], &out[u * g * d..][..g * d]);
                let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max);
                assert!(worst < 1e-5, "{what}: output of unit {u} off by {worst}");
            }
        };
        same_as_first("graph replay");

        // A row cache (as under offload): steps that find an earlier step's rows there (the
        // refine's K rows, the attention's K and V rows; the refine fills its shortlist's rows,
        // which the attention then finds in the same step) select the same rows, with the same
        // exact scores and outputs equal up to the order rows are summed; every slot holds its
        // cell's rows. Then every held K row zeroed: the refine's exact scores change, so it
        // reads them there.
        let cache =
            RowCache::new(RowCacheShape::new((1, kv, 4096), (row_bytes, row_bytes)).unwrap()).unwrap();
        let cached = GpuLayer { row_cache: cache.stream(0).unwrap(), ..layer };
        let sorted_cand = || {
            let mut keys: Vec<u64> = buf.cand.read(units * n_ret * n).unwrap();
            keys.sort_unstable();
            keys
        };
        let clean_cand = {
            let mut keys = cand.clone();
            keys.sort_unstable();
            keys
        };
        // (where some retrieval refined: a zone of up to top-k cells is attended whole)
        let refined = (0..units).any(|u| {
            // SAFETY (test): the state holds, per unit, a UnitState and n_ret Retrievals.
            let ret: Retrieval = unsafe {
                std::ptr::read_unaligned(
                    state[u * stride + std::mem::size_of::<UnitState>()..].as_ptr() as *const Retrieval
                )
            };
            ret.n_refined > 0
        });
        let hits = || cache.stats().unwrap().iter().map(|s| s.hits).sum::<u64>();
        for step in 0..2 {
            run(module, &grot, &params, &cached, buf, &Stream::null()).unwrap();
            driver::synchronize().unwrap();
            same_as_first(&format!("row cache step {step}"));
            assert!(sorted_cand() == clean_cand, "row cache step {step}: exact scores differ");
            if step == 0 && refined {
                // the refine filled its shortlist's rows, the top-k among them
                assert!(hits() > 0, "the first step's attention read the rows its refine filled");
            }
        }
        assert!(hits() > 0, "the second step read rows from the cache");
        let held = cache.contents().unwrap();
        let mut zeroed = held.clone();
        for (_, at, _) in held_slots(&held, row_bytes, &kb, &vb, "row cache after two steps") {
            zeroed.data[at..][..row_bytes].fill(0);
        }
        if refined {
            cache.write_data(&zeroed.data).unwrap();
            run(module, &grot, &params, &cached, buf, &Stream::null()).unwrap();
            driver::synchronize().unwrap();
            assert!(sorted_cand() != clean_cand, "the refine reads K rows from the cache");
        }
    }

    /// The zone's histogram from a kept one (less the counted cells outside the zone: the
    /// sink, the window, the other sequence's cells), and counted where the kept one cannot
    /// give it exactly: the step's histogram, classes, selections and output as the CPU's.
    #[test]
    fn step_takes_the_kept_histogram() {
        if gpu().is_none() {
            return;
        }
        use GqaPolicy::*;
        let base = Case::BASE;
        let cases = [
            base,
            Case { gqa: Mean, two_sequences: true, ..base },
            Case { g: 8, n: 4500, gqa: Group, two_sequences: true, refine: 2, tuned: true, ..base },
            Case { d: 64, g: 1, n: 1, top_k: 16, dtype: DType::F32, kv: 1, ..base },
            Case { n: 40_000, gqa: Group, refine: 2, tuned: true, ..base },
        ];
        for c in &cases {
            for kept in [KeptMode::Exact, KeptMode::BeyondView, KeptMode::Uncounted] {
                check_case_with(c, None, kept);
            }
        }
    }

    #[test]
    fn step_matches_the_cpu_stage_by_stage() {
        if gpu().is_none() {
            return;
        }
        use DType::*;
        use GqaPolicy::*;
        let cases = [
            Case::BASE,
            Case { gqa: Mean, two_sequences: true, ..Case::BASE },
            Case { d: 64, g: 1, n: 1, top_k: 16, dtype: F32, kv: 1, ..Case::BASE },
            Case { d: 64, g: 1, n: 100, top_k: 16, dtype: F32, kv: 3, two_sequences: true, ..Case::BASE },
            Case {
                d: 256,
                g: 8,
                n: 12_345,
                top_k: 1000,
                dtype: BF16,
                kv: 1,
                two_sequences: true,
                ..Case::BASE
            },
            Case { d: 256, n: 2000, top_k: 4096, kv: 1, ..Case::BASE },
            // d 512: the attention's widest rows (four 128-element slices a lane, pk_attend_4_2)
            Case { d: 512, g: 2, n: 1500, kv: 1, ..Case::BASE },
            Case { g: 8, n: 70_001, gqa: Mean, top_k: 2048, tuned: true, ..Case::BASE },
            Case { n: 1 << 20, top_k: 2048, kv: 1, ..Case::BASE },
            // refining: shortlists of 2x and 4x, both policies, all key types, K through the
            // row strides of several heads
            Case { refine: 2, tuned: true, ..Case::BASE },
            Case { gqa: Mean, dtype: BF16, two_sequences: true, refine: 4, tuned: true, ..Case::BASE },
            Case {
                d: 64,
                g: 2,
                n: 3000,
                top_k: 100,
                dtype: F32,
                kv: 3,
                refine: 3,
                tuned: true,
                ..Case::BASE
            },
            Case { d: 256, n: 20_000, top_k: 2048, kv: 1, refine: 4, tuned: true, ..Case::BASE },
            // runs of equal keys: ties in the collision counts, estimates and scores, decided
            // by the cell (the selects' cell digits)
            Case { n: 9000, gqa: Group, top_k: 512, refine: 2, tuned: true, tied: 64, ..Case::BASE },
            Case { n: 6000, kv: 1, two_sequences: true, refine: 2, tuned: true, tied: 16, ..Case::BASE },
            // q8_0 K/V (ggml's -ctk q8_0 -ctv q8_0): both policies, refining
            Case { dtype: Q8_0, two_sequences: true, refine: 2, tuned: true, ..Case::BASE },
            Case { n: 9000, gqa: Group, top_k: 512, dtype: Q8_0, refine: 2, tuned: true, ..Case::BASE },
            // the group policy (k rows for the group): every key type, one and two
            // sequences, refining 1-4, the zone taken whole, soft-capped logits, Qwen2.5's
            // 6 heads per KV head and Gemma 3's d 256
            Case { gqa: Group, tuned: true, ..Case::BASE },
            Case { gqa: Group, dtype: BF16, two_sequences: true, refine: 2, tuned: true, ..Case::BASE },
            Case {
                d: 64,
                g: 2,
                n: 3000,
                gqa: Group,
                top_k: 100,
                dtype: F32,
                kv: 3,
                refine: 3,
                softcap: 30.0,
                ..Case::BASE
            },
            Case { g: 6, n: 30_000, gqa: Group, top_k: 1024, refine: 2, tuned: true, ..Case::BASE },
            // the estimate's head batches padded with zero heads: 12 heads in batches of 8
            // and 4 (the second padded in the 8-head kernel), and d 32, whose 4 blocks take
            // the estimate's path for rows not in whole groups of 8 blocks
            Case { g: 12, n: 6000, gqa: Group, top_k: 256, kv: 1, refine: 2, tuned: true, ..Case::BASE },
            Case { d: 32, g: 3, n: 3000, gqa: Group, top_k: 128, refine: 2, tuned: true, ..Case::BASE },
            Case { d: 256, n: 20_000, gqa: Group, top_k: 2048, kv: 1, refine: 4, tuned: true, ..Case::BASE },
            Case { d: 256, n: 2000, gqa: Group, top_k: 4096, kv: 1, refine: 2, tuned: true, ..Case::BASE },
            Case {
                d: 64,
                g: 1,
                n: 100,
                gqa: Group,
                top_k: 16,
                dtype: F32,
                kv: 3,
                two_sequences: true,
                refine: 2,
                ..Case::BASE
            },
        ];
        // One set of buffers for steps of different cell counts, group sizes, GQA policies and
        // unit counts, one after another (as the ggml op shares them between layers and calls).
        let shared = StepBuffers::new(Shape::new(128).unwrap(), 128, 6000, 8, 4).unwrap();
        for c in [
            Case { g: 8, ..Case::BASE },
            Case { n: 3001, dtype: F32, ..Case::BASE },
            Case { n: 4000, gqa: Mean, two_sequences: true, ..Case::BASE },
            Case { g: 1, n: 5999, top_k: 512, dtype: BF16, kv: 1, ..Case::BASE },
            Case { g: 8, n: 2500, top_k: 128, two_sequences: true, ..Case::BASE },
            Case { g: 8, n: 4500, gqa: Group, two_sequences: true, refine: 2, tuned: true, ..Case::BASE },
        ] {
            check_case_with(&c, Some(&shared), KeptMode::Counted);
        }
        // Under compute-sanitizer (PARISKV_GPU_TEST_SMALL=1) the largest case would take too long.
        let small = std::env::var_os("PARISKV_GPU_TEST_SMALL").is_some();
        for c in cases.iter().filter(|c| !small || c.n <= 100_000) {
            check_case(c);
        }
    }

    /// Thread-block clusters and programmatic launches allowed again when dropped (a failed
    /// case must not change the kernels later tests run).
    struct OneBlockTopK;
    impl Drop for OneBlockTopK {
        fn drop(&mut self) {
            driver::allow_clusters(true);
            driver::allow_programmatic_launch(true);
        }
    }

    /// The one-block top-k kernels (GPUs without clusters; shortlists longer than a cluster
    /// block's stash on any GPU) and plain launches (GPUs without programmatic dependent
    /// launch: those before sm_90, as without clusters) against the CPU, on a GPU that has
    /// both. Both are forbidden process-wide meanwhile: run with --test-threads 1 to keep the
    /// other tests on the cluster kernels and programmatic launches.
    #[test]
    fn step_matches_the_cpu_with_one_block_top_k() {
        if gpu().is_none() {
            return;
        }
        use GqaPolicy::*;
        let base = Case::BASE;
        let cases = [
            base,
            Case { refine: 2, tuned: true, two_sequences: true, ..base },
            Case { gqa: Mean, refine: 4, ..base },
            Case { n: 40_000, gqa: Group, refine: 2, tuned: true, ..base },
            Case { n: 9000, gqa: Group, top_k: 512, refine: 2, tuned: true, tied: 64, ..base },
        ];
        driver::allow_clusters(false);
        driver::allow_programmatic_launch(false);
        let _restore = OneBlockTopK;
        for c in &cases {
            check_case(c);
        }
    }
}

/// Through the C ABI, with K and V in pinned host memory read by the kernels through UVA:
/// encode on the GPU, one step, output equal to the CPU step's.
#[test]
fn c_abi_step_with_kv_in_host_memory() {
    use pariskv::algorithm::gqa::GqaPolicy;
    use pariskv::algorithm::search::RatioPolicy;
    use pariskv::ffi::cache::{pariskv_step, pariskv_step_stats};
    use pariskv::ffi::cuda::*;
    use pariskv::ffi::pariskv_status;
    use pariskv::step::{attend_cache, CacheView, StepParams, StepScratch};
    if gpu().is_none() {
        return;
    }
    let (n, d, g) = (20_000usize, 128usize, 4usize);
    let shape = Shape::new(d).unwrap();
    let seed = pariskv::config::DEFAULT_SEED;
    let mut spec = SynthSpec::new(n, d, 5);
    spec.n_outlier_channels = 0;
    let cache = SynthCache::generate(&spec);
    let (kb, kf) = keys_in(DType::F16, &cache.keys);
    let (vb, vf) = keys_in(DType::F16, &cache.values);
    // K and V in pinned, device-mapped host memory
    let host = |bytes: &[u8]| {
        let (mut h, mut dptr) = (std::ptr::null_mut(), 0u64);
        assert_eq!(pariskv_host_alloc(bytes.len(), &mut h, &mut dptr), pariskv_status::PARISKV_OK);
        // SAFETY (test): `h` holds bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), h as *mut u8, bytes.len()) };
        (h, dptr)
    };
    let ((kh, kd), (vh, vd)) = (host(&kb), host(&vb));
    let codes = DeviceBuffer::new(n * shape.code_bytes()).unwrap();
    let nibbles = DeviceBuffer::new(n * shape.nibble_bytes()).unwrap();
    let weights = DeviceBuffer::new(n * shape.n_weights() * 2).unwrap();
    let cells: Vec<i64> = (0..n as i64).collect();
    let gcells = DeviceBuffer::from_slice(&cells).unwrap();
    let gn = DeviceBuffer::from_slice(&[n as i32]).unwrap();
    // the histogram the encode keeps, which the step starts from
    let ghist = DeviceBuffer::from_slice(&vec![0u32; shape.n_blocks * 256]).unwrap();
    let gflags = DeviceBuffer::from_slice(&vec![0u8; n]).unwrap();
    let target = pariskv_cuda_encode_target {
        keys: kd,
        key_dtype: 1,
        key_row_stride: d * 2,
        key_head_stride: 0,
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        kv_size: n,
        n_heads: 1,
        hist: ghist.ptr,
        counted: gflags.ptr,
        kept_stride: 0,
        row_cache: std::ptr::null(),
    };
    let null = std::ptr::null_mut();
    // centred keys (the centre set by this first encode, from K in host memory)
    let gcenter = DeviceBuffer::from_slice(&vec![0.0f32; center::len(d)]).unwrap();
    assert_eq!(
        pariskv_cuda_encode(d as u32, seed, &target, gcenter.ptr, gcells.ptr, gn.ptr, n, null),
        pariskv_status::PARISKV_OK
    );
    let pos: Vec<i32> = (0..n as i32).collect();
    let mask = vec![0.0f32; n];
    let (gpos, gmask) = (DeviceBuffer::from_slice(&pos).unwrap(), DeviceBuffer::from_slice(&mask).unwrap());
    let mut rng = pariskv::eval::synth::Rng::new(3);
    let q: Vec<f32> = (0..g).flat_map(|_| cache.planted_query(&[100, 9000, 15000], 8.0, &mut rng)).collect();
    let gq = DeviceBuffer::from_slice(&q).unwrap();
    let gout = DeviceBuffer::new(g * d * 4).unwrap();
    let mut step = std::ptr::null_mut();
    assert_eq!(
        pariskv_cuda_step_create(d as u32, d as u32, seed, n, g as u32, 1, &mut step),
        pariskv_status::PARISKV_OK
    );
    let params = pariskv_step {
        head_dim: d as u32,
        v_dim: d as u32,
        n_heads: g as u32,
        top_k: 512,
        n_sink: 4,
        n_local: 256,
        ratio_table: 2,
        gqa_policy: 0,
        rho_cand: 0.0,
        rho_coll: 0.0,
        scale: 1.0 / (d as f32).sqrt(),
        softcap: 0.0,
        seed,
        refine: 2,
    };
    let layer = pariskv_cuda_layer {
        n_units: 1,
        n_kv_heads: 1,
        n_heads: g as u32,
        n_cells: n,
        k: kd,
        k_dtype: 1,
        k_row_stride: d * 2,
        k_token_stride: 0,
        k_head_stride: 0,
        v: vd,
        v_dtype: 1,
        v_row_stride: d * 2,
        v_token_stride: 0,
        v_head_stride: 0,
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        index_token_stride_codes: 0,
        index_head_stride_codes: 0,
        index_token_stride_nibbles: 0,
        index_head_stride_nibbles: 0,
        index_token_stride_weights: 0,
        index_head_stride_weights: 0,
        mask: gmask.ptr,
        mask_dtype: 0,
        mask_token_stride: 0,
        pos: gpos.ptr,
        pos_token_stride: 0,
        q: gq.ptr,
        q_row_stride: d * 4,
        q_token_stride: 0,
        q_head_stride: 0,
        out: gout.ptr,
        out_row_stride: d * 4,
        out_token_stride: 0,
        out_head_stride: 0,
        hist: ghist.ptr,
        hist_token_stride: 0,
        hist_head_stride: 0,
        counted: gflags.ptr,
        counted_token_stride: 0,
        counted_head_stride: 0,
        row_cache: std::ptr::null(),
        row_cache_stream: 0,
    };
    assert_eq!(pariskv_cuda_step_run(step, &params, &layer, null), pariskv_status::PARISKV_OK);
    driver::synchronize().unwrap();
    let got: Vec<f32> = gout.read(g * d).unwrap();

    // the CPU oracle
    let rot = Rotation::new(shape, seed);
    let krows = Rows::packed(RowData::F32(&kf), d).unwrap();
    let vrows = Rows::packed(RowData::F32(&vf), d).unwrap();
    let mut store = CodeStore::default();
    store.grow(&shape, n).unwrap();
    let all: Vec<usize> = (0..n).collect();
    let mut c = vec![0.0f32; center::len(d)];
    center::init(&krows, &all, &mut c, &mut Vec::new());
    assert_eq!(gcenter.read::<f32>(center::len(d)).unwrap(), c, "centre");
    let offset = center::offset(&c);
    encode_rows(&rot, &krows, &all, offset, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
    let view = CacheView {
        keys: krows,
        values: vrows,
        codes: store.as_ref(),
        visible: |_| true,
        pos: &pos,
        zone_hist: None,
        kept: None,
    };
    let sp = StepParams {
        top_k: 512,
        n_sink: 4,
        n_local: 256,
        ratios: RatioPolicy::Tuned,
        gqa: GqaPolicy::PerHead,
        refine: 2,
        attn: pariskv::algorithm::attention::AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 },
    };
    let mut want = vec![0.0f32; g * d];
    let cpu = attend_cache(&rot, &sp, &view, &q, &mut StepScratch::default(), &mut want).unwrap();
    // what the step did, read back through the C ABI, as the CPU step counts it
    let (mut st, mut written) = ([pariskv_step_stats::default(); 2], 0usize);
    assert_eq!(pariskv_cuda_step_stats(step, st.as_mut_ptr(), 2, &mut written), pariskv_status::PARISKV_OK);
    assert_eq!(written, 1, "one unit ran");
    assert_eq!(
        (st[0].n_visible, st[0].n_zone, st[0].n_candidates, st[0].n_attended, st[0].n_refined),
        (cpu.n_visible, cpu.n_zone, cpu.n_candidates, cpu.n_attended, cpu.n_refined),
        "step stats"
    );
    assert_eq!(st[0].zone_counted, 0, "the step took its zone's histogram from the kept one");
    assert!(cpu.n_refined > 0, "the step refined (shortlists read K through UVA)");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max);
    println!("C ABI step, K/V in pinned host memory (UVA): worst relative error {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
    // bad input is an error with a message, not a crash
    let bad = pariskv_step { seed: 1, ..params };
    assert_eq!(pariskv_cuda_step_run(step, &bad, &layer, null), pariskv_status::PARISKV_ERR_INVALID_ARGUMENT);
    let half_kept = pariskv_cuda_layer { counted: 0, ..layer };
    assert_eq!(
        pariskv_cuda_step_run(step, &params, &half_kept, null),
        pariskv_status::PARISKV_ERR_INVALID_ARGUMENT,
        "a kept histogram without its flags"
    );
    assert_eq!(
        pariskv_cuda_step_run(null as _, &params, &layer, null),
        pariskv_status::PARISKV_ERR_INVALID_ARGUMENT
    );
    pariskv_cuda_step_free(step);
    assert_eq!(pariskv_host_free(kh), pariskv_status::PARISKV_OK);
    assert_eq!(pariskv_host_free(vh), pariskv_status::PARISKV_OK);
}

mod index {
    use super::*;
    use pariskv::algorithm::gqa::GqaPolicy;
    use pariskv::config::{Config, Device};
    use pariskv::index::{open, Index};
    use pariskv::rows::RowBuf;

    struct Case {
        d: usize,
        nq: usize,
        nkv: usize,
        dtype: DType,
        gqa: GqaPolicy,
        kv_in_host: bool,
        refine: usize,
    }

    /// Largest difference relative to the largest CPU value.
    fn rel_err(got: &[f32], want: &[f32]) -> f32 {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        got.iter().zip(want).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max)
    }

    fn check(c: &Case) {
        let mut cfg = Config::new(c.d, c.nq, c.nkv);
        cfg.top_k = 96;
        cfg.n_sink = 4;
        cfg.n_local = 32;
        cfg.dense_threshold = 1; // ParisKV from the first cell
        cfg.kv_dtype = c.dtype;
        cfg.gqa = c.gqa;
        cfg.refine = c.refine;
        let mut cpu = Index::new(cfg.clone()).unwrap();
        cfg.device = Device::Cuda { ordinal: 0, kv_in_host: c.kv_in_host };
        let mut gpu = open(cfg.clone()).unwrap();
        // Appends that grow the GPU storage past its first capacity (1024) twice.
        let chunks = [1usize, 90, 900, 1500, 2600];
        let total: usize = chunks.iter().sum();
        let mut spec = SynthSpec::new(total * c.nkv, c.d, (c.d * 7 + c.nq) as u64);
        spec.topic_len = 301;
        let cache = SynthCache::generate(&spec);
        let mut rng = pariskv::eval::synth::Rng::new(c.nq as u64);
        let mut at = 0;
        for n in chunks {
            let rows = at * c.nkv * c.d..(at + n) * c.nkv * c.d;
            let (_, kf) = keys_in(c.dtype, &cache.keys[rows.clone()]);
            let (_, vf) = keys_in(c.dtype, &cache.values[rows]);
            // the GPU index gets the keys in the caller's dtype, the CPU index the same
            // values in f32
            let mut k_in = RowBuf::new(c.dtype);
            k_in.extend_from_f32(&kf);
            gpu.append(k_in.data(), RowData::F32(&vf), n).unwrap();
            cpu.append(RowData::F32(&kf), RowData::F32(&vf), n).unwrap();
            at += n;
            let what = format!(
                "d={} {}q/{}kv {:?} {:?} host={} refine={} len={at}",
                c.d, c.nq, c.nkv, c.dtype, c.gqa, c.kv_in_host, c.refine
            );
            assert_eq!(gpu.len(), cpu.len(), "{what}: length");
            let targets: Vec<usize> = (0..3).map(|_| rng.below(at * c.nkv)).collect();
            let q: Vec<f32> = (0..c.nq).flat_map(|_| cache.planted_query(&targets, 8.0, &mut rng)).collect();
            for k in [1, 40, 96, 5000] {
                let want = cpu.search(RowData::F32(&q), k).unwrap();
                let got = gpu.search(RowData::F32(&q), k).unwrap();
                assert_eq!(got, want, "{what}: search k={k}");
                assert_eq!(gpu.stats(), cpu.stats(), "{what}: stats after search k={k}");
            }
            let mut want = vec![0.0f32; c.nq * c.d];
            let mut got = vec![0.0f32; c.nq * c.d];
            cpu.attend(RowData::F32(&q), &mut want).unwrap();
            gpu.attend(RowData::F32(&q), &mut got).unwrap();
            let err = rel_err(&got, &want);
            assert!(err < 1e-3, "{what}: attention off by {err} relative");
            assert_eq!(gpu.stats(), cpu.stats(), "{what}: stats after attend");
            if n == *chunks.last().unwrap() {
                println!("index {what}: search equal, attention within {err:.2e}");
            }
        }
    }

    /// The GPU index answers as the CPU index does: the same ranked search lists and stats,
    /// attention within 1e-3 relative, across appends that grow its storage; K/V in device
    /// memory or in pinned host memory (UVA); head dims 64/128/256, GQA 1/4/8; with and
    /// without refining; f32, f16, bf16 and q8_0 rows.
    #[test]
    fn gpu_index_matches_the_cpu_index() {
        if gpu().is_none() {
            return;
        }
        use DType::*;
        use GqaPolicy::*;
        for c in [
            Case { d: 128, nq: 8, nkv: 2, dtype: F16, gqa: PerHead, kv_in_host: false, refine: 1 },
            Case { d: 64, nq: 4, nkv: 4, dtype: BF16, gqa: Mean, kv_in_host: false, refine: 1 },
            Case { d: 256, nq: 8, nkv: 1, dtype: F32, gqa: PerHead, kv_in_host: true, refine: 1 },
            Case { d: 128, nq: 32, nkv: 4, dtype: F16, gqa: Mean, kv_in_host: true, refine: 1 },
        ] {
            check(&c);
        }
        // refining: ranked lists by exact score, from K in device or host memory
        for c in [
            Case { d: 128, nq: 8, nkv: 2, dtype: F16, gqa: PerHead, kv_in_host: false, refine: 3 },
            Case { d: 64, nq: 4, nkv: 4, dtype: BF16, gqa: Mean, kv_in_host: true, refine: 2 },
            Case { d: 256, nq: 8, nkv: 1, dtype: F32, gqa: PerHead, kv_in_host: true, refine: 4 },
            Case { d: 128, nq: 12, nkv: 2, dtype: F16, gqa: Group, kv_in_host: false, refine: 2 },
            Case { d: 256, nq: 4, nkv: 1, dtype: BF16, gqa: Group, kv_in_host: true, refine: 1 },
            // q8_0 rows: the values the CPU index gets are the blocks' own, so both round alike
            Case { d: 128, nq: 8, nkv: 2, dtype: Q8_0, gqa: PerHead, kv_in_host: false, refine: 2 },
            Case { d: 128, nq: 8, nkv: 2, dtype: Q8_0, gqa: Group, kv_in_host: true, refine: 2 },
        ] {
            check(&c);
        }
    }

    /// NaN and infinities in keys, values and queries on the GPU index: no crash, no fault
    /// (compute-sanitizer runs this too), every position inside the retrieval zone without
    /// repeats and at most k of them, K/V in device and in host memory, both GQA policies;
    /// for finite queries the lists equal the CPU index's.
    #[test]
    fn nan_and_inf_stay_in_bounds_on_the_gpu() {
        if gpu().is_none() {
            return;
        }
        let (d, nq, nkv, n) = (64usize, 4usize, 2usize, 3000usize);
        let spec = SynthSpec::new(n * nkv, d, 9);
        let cache = SynthCache::generate(&spec);
        let (mut keys, mut values) = (cache.keys.clone(), cache.values.clone());
        for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN].into_iter().enumerate() {
            // whole poisoned keys, single poisoned channels, a poisoned value row
            let t = 700 + 500 * i;
            keys[t * nkv * d..(t + 1) * nkv * d].fill(bad);
            keys[((t + 1) * nkv + 1) * d + 5] = bad;
            values[(t + 2) * nkv * d] = bad;
        }
        let mut rng = pariskv::eval::synth::Rng::new(3);
        let finite: Vec<f32> = (0..nq * d).map(|_| rng.normal()).collect();
        let mut poisoned = finite.clone();
        poisoned[7] = f32::NAN;
        poisoned[d + 3] = f32::INFINITY;
        for (gqa, kv_in_host) in [
            (GqaPolicy::PerHead, false),
            (GqaPolicy::Mean, true),
            (GqaPolicy::Mean, false),
            (GqaPolicy::PerHead, true),
            (GqaPolicy::Group, false),
            (GqaPolicy::Group, true),
        ] {
            let mut cfg = Config::new(d, nq, nkv);
            cfg.top_k = 64;
            cfg.n_local = 32;
            cfg.dense_threshold = 1; // ParisKV from the first cell
            cfg.kv_dtype = DType::F16;
            cfg.gqa = gqa;
            let mut cpu = Index::new(cfg.clone()).unwrap();
            cfg.device = Device::Cuda { ordinal: 0, kv_in_host };
            let mut gpu = open(cfg.clone()).unwrap();
            cpu.append(RowData::F32(&keys), RowData::F32(&values), n).unwrap();
            gpu.append(RowData::F32(&keys), RowData::F32(&values), n).unwrap();
            let zone = cfg.zone(n);
            for (name, q) in [("finite query", &finite), ("NaN/Inf query", &poisoned)] {
                for k in [1, 64, 4096] {
                    let what = format!("{gqa:?} host={kv_in_host} {name} k={k}");
                    let got = gpu.search(RowData::F32(q), k).unwrap();
                    for list in &got {
                        assert!(list.len() <= k, "{what}: {} positions", list.len());
                        assert!(
                            list.iter().all(|&c| zone.contains(&(c as usize))),
                            "{what}: outside the zone"
                        );
                        let mut uniq = list.clone();
                        uniq.sort_unstable();
                        uniq.dedup();
                        assert_eq!(uniq.len(), list.len(), "{what}: repeated positions");
                    }
                    if q == &finite {
                        assert_eq!(
                            got,
                            cpu.search(RowData::F32(q), k).unwrap(),
                            "{what}: GPU and CPU lists differ"
                        );
                    }
                }
                let mut out = vec![0.0f32; nq * d];
                // attention over poisoned rows may be NaN (as dense attention would be), but returns
                gpu.attend(RowData::F32(q), &mut out).unwrap();
            }
            println!("NaN/Inf on the GPU ({gqa:?}, K/V in host memory: {kv_in_host}): in bounds");
        }
    }

    /// A device that does not exist is a clean error, not a crash.
    #[test]
    fn missing_device_is_an_error() {
        if gpu().is_none() {
            return;
        }
        let mut cfg = Config::new(128, 8, 2);
        cfg.device = Device::Cuda { ordinal: 1000, kv_in_host: false };
        let err = open(cfg).err().expect("device 1000 opened");
        assert!(err.to_string().contains("1000"), "{err}");
    }

    /// Through the C ABI: `device` and `kv_in_host` in the config give a GPU index whose
    /// attention matches the CPU handle's.
    #[test]
    fn c_abi_index_on_the_gpu() {
        use pariskv::ffi::*;
        if gpu().is_none() {
            return;
        }
        let (d, nq, nkv, n) = (128usize, 8usize, 2usize, 6000usize);
        // SAFETY (test): plain integers and floats, filled by config_init.
        let mut cfg: pariskv_config = unsafe { std::mem::zeroed() };
        cfg.struct_size = std::mem::size_of::<pariskv_config>() as u32;
        assert_eq!(
            pariskv_config_init(&mut cfg, d as u32, nq as u32, nkv as u32),
            pariskv_status::PARISKV_OK
        );
        cfg.top_k = 256;
        cfg.dense_threshold = 1; // ParisKV from the first cell
        let spec = SynthSpec::new(n * nkv, d, 11);
        let cache = SynthCache::generate(&spec);
        let mut rng = pariskv::eval::synth::Rng::new(5);
        let q: Vec<f32> =
            (0..nq).flat_map(|_| cache.planted_query(&[7, 3000, 11000], 8.0, &mut rng)).collect();
        let mut outs = Vec::new();
        for (device, kv_in_host) in [(-1, 0), (0, 0), (0, 1)] {
            cfg.device = device;
            cfg.kv_in_host = kv_in_host;
            let mut ix = std::ptr::null_mut();
            assert_eq!(pariskv_index_create(&cfg, &mut ix), pariskv_status::PARISKV_OK);
            let (k, v) = (cache.keys.as_ptr().cast(), cache.values.as_ptr().cast());
            assert_eq!(pariskv_index_append(ix, 0, k, v, n), pariskv_status::PARISKV_OK);
            let mut out = vec![0.0f32; nq * d];
            assert_eq!(
                pariskv_index_attend(ix, 0, q.as_ptr().cast(), out.as_mut_ptr()),
                pariskv_status::PARISKV_OK
            );
            pariskv_index_free(ix);
            outs.push(out);
        }
        for (i, out) in outs.iter().enumerate().skip(1) {
            let err = rel_err(out, &outs[0]);
            assert!(err < 1e-3, "C ABI GPU index {i}: attention off by {err} relative");
        }
    }
}

/// Pinned host memory: a buffer large enough for the fast path (two 1 GiB chunks pinned by
/// several threads) reports its progress and is read by the device at its host address: by
/// the copy engine within each chunk, by a kernel across the boundary; a small one takes one cuMemHostAlloc; the C ABI refuses to
/// free a pointer twice or one it did not hand out.
#[test]
fn pinned_host_memory_fast_path() {
    use pariskv::cuda::pinned::PinnedHost;
    use pariskv::cuda::step::{gather, Gathered, GpuLayer, Rows as StepRows, UnitLayout};
    use pariskv::ffi::cuda::pariskv_host_free;
    use pariskv::ffi::pariskv_status;
    if gpu().is_none() {
        return;
    }
    let bytes = (1usize << 30) + (320 << 20);
    let mut seen = Vec::new();
    let start = std::time::Instant::now();
    let big = PinnedHost::with_progress(bytes, &mut |done, total| seen.push((done, total))).unwrap();
    eprintln!(
        "pinned {} MiB in {:.2} s, {} progress reports",
        bytes >> 20,
        start.elapsed().as_secs_f64(),
        seen.len()
    );
    assert_eq!(seen.last(), Some(&(bytes, bytes)), "the last report is the whole buffer");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == bytes), "reports only grow: {seen:?}");
    assert_eq!(big.device, big.host as u64, "mapped at its host address");
    // a pattern across the chunk boundary, written by the host, read from the device address
    let (at, len) = ((1usize << 30) - 4096, 8192usize);
    let pattern: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    // SAFETY (test): inside the buffer.
    unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), (big.host as *mut u8).add(at), len) };
    // by the copy engine, a copy within each chunk (one across them is refused by the driver)
    let dev = DeviceBuffer::new(len).unwrap();
    for half in [0, len / 2] {
        // SAFETY (test): both ranges are live device-accessible memory of len / 2 bytes.
        let r = unsafe {
            cudarc::driver::sys::cuMemcpyDtoD_v2(
                dev.ptr + half as u64,
                big.device + (at + half) as u64,
                len / 2,
            )
        };
        driver::check(r, "cuMemcpyDtoD").unwrap();
    }
    assert_eq!(dev.read::<u8>(len).unwrap(), pattern, "the copy engine reads what the host wrote");
    // by a kernel (the step's gather) in one row across the boundary
    let module = driver::module_for(&Stream::null()).unwrap();
    let (rows, n_rows) =
        (DeviceBuffer::from_slice(&[0i32]).unwrap(), DeviceBuffer::from_slice(&[1i32]).unwrap());
    let (out_k, out_v) = (DeviceBuffer::new(len).unwrap(), DeviceBuffer::new(len).unwrap());
    let row = big.device + at as u64;
    let layer = GpuLayer {
        layout: UnitLayout { n_units: 1, n_h: 1, ..Default::default() },
        n: 1,
        k: row,
        k_dtype: DType::F16,
        k_stride: len,
        v: row,
        v_dtype: DType::F16,
        v_stride: len,
        codes: 0,
        nibbles: 0,
        weights: 0,
        kept: 0,
        counted: 0,
        mask: 0,
        mask_dtype: DType::F32,
        pos: 0,
        q: 0,
        q_stride: 0,
        n_heads: 1,
        out: 0,
        out_stride: 0,
        row_cache: Default::default(),
    };
    let rows = StepRows { rows: rows.ptr, row_stride: 1, n_rows: n_rows.ptr, n_rows_stride: 1, mark: 0 };
    let to = Gathered { k: out_k.ptr, k_bytes: len, v: out_v.ptr, v_bytes: len, max_rows: 1 };
    gather(module, &layer, &rows, &to, &Stream::null()).unwrap();
    driver::synchronize().unwrap();
    assert_eq!(out_k.read::<u8>(len).unwrap(), pattern, "a kernel reads across the chunks");
    // small: one cuMemHostAlloc
    let small = PinnedHost::with_progress(4096, &mut |_, _| {}).unwrap();
    assert_eq!(small.device, small.host as u64);
    // the C ABI's free: once, and only what it handed out
    let (h, _) = big.into_raw();
    assert_eq!(pariskv_host_free(h), pariskv_status::PARISKV_OK);
    assert_ne!(pariskv_host_free(h), pariskv_status::PARISKV_OK, "a second free is refused");
    assert_ne!(pariskv_host_free(small.host), pariskv_status::PARISKV_OK, "not handed out: refused");
    drop(small);
}

/// Every slot a row cache holds, as (table, byte offset of its rows in `c.data`, cell), after
/// checking that each holds its cell's K and V rows of its table's KV head (`k`, `v`: the
/// cache's rows, `[cell][table][row]` bytes).
fn held_slots(
    c: &pariskv::cuda::row_cache::Contents,
    row: usize,
    k: &[u8],
    v: &[u8],
    what: &str,
) -> Vec<(usize, usize, usize)> {
    let tables = c.clock.len();
    let slots = c.tag.len() / tables;
    let mut held = Vec::new();
    for t in 0..tables {
        for s in 0..slots {
            let tag = c.tag[t * slots + s];
            if tag == 0 {
                continue;
            }
            let (cell, at) = ((tag - 1) as usize, (t * slots + s) * c.row_bytes);
            let src = (cell * tables + t) * row;
            let stamp = c.stamp[t * slots + s];
            assert_eq!(
                c.data[at..][..row],
                k[src..][..row],
                "{what}: slot {s} of table {t}: K of cell {cell} (stamp {stamp})"
            );
            assert_eq!(
                c.data[at + c.v_off..][..row],
                v[src..][..row],
                "{what}: slot {s} of table {t}: V of cell {cell} (stamp {stamp})"
            );
            held.push((t, at, cell));
        }
    }
    held
}

/// The row cache (src/cuda/row_cache.rs) with K/V in pinned host memory: attention outputs
/// bitwise equal with and without it, step after step over overlapping rows; the second step
/// over the same rows reads them from the cache; cells rewritten and encoded are forgotten
/// (read again from host memory, so the answers follow the new rows).
#[test]
fn row_cache_keeps_answers_and_forgets_rewritten_cells() {
    use pariskv::algorithm::attention::AttnParams;
    use pariskv::algorithm::gqa::GqaPolicy;
    use pariskv::algorithm::search::RatioPolicy;
    use pariskv::cuda::pinned::PinnedHost;
    use pariskv::cuda::row_cache::{RowCache, RowCacheShape};
    use pariskv::cuda::step::{attend, GpuLayer, Rows as StepRows, StepBuffers, UnitLayout};
    use pariskv::eval::synth::Rng;
    use pariskv::step::StepParams;
    if gpu().is_none() {
        return;
    }
    let module = driver::module_for(&Stream::null()).unwrap();
    let (n, d, kv, g, n_rows) = (4096usize, 128usize, 2usize, 4usize, 600usize);
    let shape = Shape::new(d).unwrap();
    let row = d * 2; // f16
    let mut rng = Rng::new(11);
    // K and V, [cell][head][d] f16, in pinned host memory
    let pinned = |rng: &mut Rng| {
        let (bytes, _) = keys_in(DType::F16, &(0..n * kv * d).map(|_| rng.normal()).collect::<Vec<f32>>());
        let p = PinnedHost::new(bytes.len()).unwrap();
        // SAFETY (test): `p` holds bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.host as *mut u8, bytes.len()) };
        p
    };
    let (k, v) = (pinned(&mut rng), pinned(&mut rng));
    let q: Vec<f32> = (0..kv * g * d).map(|_| rng.normal()).collect();
    let gq = DeviceBuffer::from_slice(&q).unwrap();
    let gout = DeviceBuffer::new(kv * g * d * 4).unwrap();
    let buf = StepBuffers::new(shape, d, n, g, kv).unwrap();
    let cache = RowCache::new(RowCacheShape::new((1, kv, 4096), (row, row)).unwrap()).unwrap();
    let mut layer = GpuLayer {
        layout: UnitLayout {
            n_units: kv as i32,
            n_h: kv as i32,
            k_h: row as i64,
            v_h: row as i64,
            q_h: (g * d * 4) as i64,
            out_h: (g * d * 4) as i64,
            ..Default::default()
        },
        n,
        k: k.device,
        k_dtype: DType::F16,
        k_stride: kv * row,
        v: v.device,
        v_dtype: DType::F16,
        v_stride: kv * row,
        codes: 0,
        nibbles: 0,
        weights: 0,
        kept: 0,
        counted: 0,
        mask: 0,
        mask_dtype: DType::F32,
        pos: 0,
        q: gq.ptr,
        q_stride: d * 4,
        n_heads: g,
        out: gout.ptr,
        out_stride: d * 4,
        row_cache: Default::default(),
    };
    let params = StepParams {
        top_k: n_rows,
        n_sink: 4,
        n_local: 64,
        ratios: RatioPolicy::Tuned,
        gqa: GqaPolicy::Group,
        refine: 1,
        attn: AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 },
    };
    // each unit's rows: distinct cells, a third of them kept from the step before
    let mut cells: Vec<Vec<i32>> = vec![Vec::new(); kv];
    let next_rows = |rng: &mut Rng, cells: &mut Vec<Vec<i32>>| {
        for unit in cells.iter_mut() {
            let mut keep: Vec<i32> = unit.iter().copied().take(n_rows / 3).collect();
            while keep.len() < n_rows {
                let c = rng.below(n) as i32;
                if !keep.contains(&c) {
                    keep.push(c);
                }
            }
            *unit = keep;
        }
    };
    let rows_buf = DeviceBuffer::new(kv * n * 4).unwrap();
    let counts = DeviceBuffer::from_slice(&vec![n_rows as i32; kv]).unwrap();
    let rows = StepRows { rows: rows_buf.ptr, row_stride: n, n_rows: counts.ptr, n_rows_stride: 1, mark: 0 };
    // every tagged slot holds its cell's K and V rows of its table's head, each cell at most
    // once a table
    let held_rows_match = |cache: &RowCache, step: usize| {
        let c = cache.contents().unwrap();
        // SAFETY (test): k and v hold n cells of kv rows each.
        let host = |p: &PinnedHost| unsafe { std::slice::from_raw_parts(p.host as *const u8, n * kv * row) };
        let held = held_slots(&c, row, host(&k), host(&v), &format!("step {step}"));
        let distinct: std::collections::HashSet<(usize, usize)> =
            held.iter().map(|&(t, _, cell)| (t, cell)).collect();
        let twice = held.len() - distinct.len();
        eprintln!(
            "  clocks {:?}: {} slots held, each with its cell's rows, {twice} cells twice",
            c.clock,
            held.len()
        );
        assert_eq!(twice, 0, "step {step}: cells held twice in a table");
    };
    let run = |layer: &GpuLayer| -> Vec<f32> {
        attend(module, &buf, layer, &params, &rows, n_rows, &Stream::null()).unwrap();
        driver::synchronize().unwrap();
        gout.read(kv * g * d).unwrap()
    };
    let total =
        |c: &RowCache| c.stats().unwrap().iter().fold((0u64, 0u64), |(h, m), s| (h + s.hits, m + s.misses));
    let upload = |cells: &Vec<Vec<i32>>| {
        for (u, c) in cells.iter().enumerate() {
            rows_buf.write_at(u * n * 4, c).unwrap();
        }
    };
    next_rows(&mut rng, &mut cells);
    for step in 0..4 {
        if step >= 2 {
            next_rows(&mut rng, &mut cells);
        }
        upload(&cells);
        layer.row_cache = Default::default();
        let want = run(&layer);
        layer.row_cache = cache.stream(0).unwrap();
        let before = total(&cache);
        let got = run(&layer);
        let (hits, misses) = (total(&cache).0 - before.0, total(&cache).1 - before.1);
        eprintln!("step {step}: {hits} hits, {misses} from host memory");
        held_rows_match(&cache, step);
        assert_eq!(hits + misses, (kv * n_rows) as u64, "every row planned once");
        assert!(
            got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "step {step}: outputs differ"
        );
        match step {
            0 => assert_eq!(hits, 0, "a new cache holds nothing"),
            1 => assert!(hits as f64 >= 0.95 * (kv * n_rows) as f64, "the same rows again: {hits} hits"),
            _ => assert!(hits as f64 >= 0.3 * (kv * n_rows) as f64, "a third of the rows kept: {hits} hits"),
        }
    }
    // cells of the last step rewritten (both heads' K and V) and encoded: forgotten, so the
    // next step reads their new rows
    let rewritten: Vec<i64> = cells[0].iter().take(50).map(|&c| c as i64).collect();
    for &c in &rewritten {
        let (nk, _) = keys_in(DType::F16, &(0..kv * d).map(|_| rng.normal()).collect::<Vec<f32>>());
        let (nv, _) = keys_in(DType::F16, &(0..kv * d).map(|_| rng.normal()).collect::<Vec<f32>>());
        // SAFETY (test): cell c's rows of every head lie inside the buffers.
        unsafe {
            std::ptr::copy_nonoverlapping(
                nk.as_ptr(),
                (k.host as *mut u8).add(c as usize * kv * row),
                kv * row,
            );
            std::ptr::copy_nonoverlapping(
                nv.as_ptr(),
                (v.host as *mut u8).add(c as usize * kv * row),
                kv * row,
            );
        }
    }
    let rot = Rotation::new(shape, pariskv::config::DEFAULT_SEED);
    let grot = GpuRotation::new(&rot).unwrap();
    let (codes, nibbles, weights) = (
        DeviceBuffer::new(kv * n * shape.code_bytes()).unwrap(),
        DeviceBuffer::new(kv * n * shape.nibble_bytes()).unwrap(),
        DeviceBuffer::new(kv * n * shape.n_weights() * 2).unwrap(),
    );
    let target = EncodeTarget {
        keys: k.device,
        key_dtype: DType::F16,
        key_row_stride: kv * row,
        key_head_stride: row,
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        hist: 0,
        counted: 0,
        kept_stride: 0,
        kv_size: n,
        n_heads: kv,
        center: 0,
        row_cache: cache.all(),
    };
    let gcells = DeviceBuffer::from_slice(&rewritten).unwrap();
    encode(module, &grot, &target, gcells.ptr, 0, rewritten.len(), &Stream::null()).unwrap();
    layer.row_cache = Default::default();
    let want = run(&layer);
    layer.row_cache = cache.stream(0).unwrap();
    let before = total(&cache);
    let got = run(&layer);
    let misses = total(&cache).1 - before.1;
    // (the rewritten cells are unit 0's rows; unit 1 may read some of them too)
    let planned: usize =
        cells.iter().map(|unit| unit.iter().filter(|&&c| rewritten.contains(&(c as i64))).count()).sum();
    eprintln!("after the rewrite: {misses} rows from host memory, {planned} rows of rewritten cells");
    assert!(misses >= planned as u64, "every row of a rewritten cell read from host memory");
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "rewritten rows: outputs differ");
    // the C ABI's counts are the cache's
    {
        use pariskv::ffi::cuda::{pariskv_cuda_row_cache, pariskv_cuda_row_cache_stats};
        use pariskv::ffi::pariskv_status;
        let c = pariskv_cuda_row_cache {
            base: cache.base(),
            n_streams: 1,
            n_kv_heads: kv as u32,
            slots: cache.shape.slots as u32,
            k_row_bytes: row,
            v_row_bytes: row,
        };
        let (mut hits, mut misses) = (0u64, 0u64);
        assert_eq!(pariskv_cuda_row_cache_stats(&c, &mut hits, &mut misses), pariskv_status::PARISKV_OK);
        assert_eq!((hits, misses), total(&cache), "pariskv_cuda_row_cache_stats");
    }
    // clear: nothing held
    cache.clear().unwrap();
    let got = run(&layer);
    assert_eq!(total(&cache), (0, (kv * n_rows) as u64), "a cleared cache holds nothing");
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "after clear: outputs differ");
}

/// The row cache's C entry points check its description (no GPU needed for its size).
#[test]
fn row_cache_c_abi_checks_its_shape() {
    use pariskv::cuda::row_cache::RowCacheShape;
    use pariskv::ffi::cuda::{
        pariskv_cuda_row_cache, pariskv_cuda_row_cache_bytes, pariskv_cuda_row_cache_clear,
    };
    use pariskv::ffi::pariskv_status;
    let c = pariskv_cuda_row_cache {
        base: 0,
        n_streams: 2,
        n_kv_heads: 8,
        slots: 4096,
        k_row_bytes: 256,
        v_row_bytes: 136,
    };
    let mut bytes = 0usize;
    assert_eq!(pariskv_cuda_row_cache_bytes(&c, &mut bytes), pariskv_status::PARISKV_OK);
    let want = RowCacheShape::new((2, 8, 4096), (256, 136)).unwrap().bytes();
    assert_eq!(bytes, want);
    for bad in [
        pariskv_cuda_row_cache { slots: 3000, ..c },
        pariskv_cuda_row_cache { slots: 2, ..c },
        pariskv_cuda_row_cache { n_streams: 0, ..c },
        pariskv_cuda_row_cache { k_row_bytes: 0, ..c },
    ] {
        assert_eq!(
            pariskv_cuda_row_cache_bytes(&bad, &mut bytes),
            pariskv_status::PARISKV_ERR_INVALID_ARGUMENT,
            "{bad:?}"
        );
    }
    assert_ne!(pariskv_cuda_row_cache_bytes(std::ptr::null(), &mut bytes), pariskv_status::PARISKV_OK);
    // a cache at address 0 (or unaligned) is refused before any device work
    let null = std::ptr::null_mut();
    assert_eq!(pariskv_cuda_row_cache_clear(&c, null), pariskv_status::PARISKV_ERR_INVALID_ARGUMENT);
    assert_eq!(
        pariskv_cuda_row_cache_clear(&pariskv_cuda_row_cache { base: 8, ..c }, null),
        pariskv_status::PARISKV_ERR_INVALID_ARGUMENT
    );
}
