//! GPU stages against the CPU oracle (feature `cuda`). Without a CUDA driver and GPU every
//! test prints why it skipped and passes; scripts/gpu-tests.sh runs them on a GPU machine.
#![cfg(feature = "cuda")]

use half::{bf16, f16};
use pariskv::cuda::driver::{self, DeviceBuffer, Stream};
use pariskv::cuda::encode::{encode, EncodeTarget, GpuRotation};
use pariskv::encode::{encode_rows, CodeStore, EncodeScratch};
use pariskv::rotation::Rotation;
use pariskv::rows::{DType, RowData, Rows};
use pariskv::shape::Shape;
use pariskv::synth::{SynthCache, SynthSpec};

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
        [(128, 2, 4099), (64, 1, 1), (256, 1, 1000), (96, 3, 77), (8, 1, 33), (512, 1, 257)]
    {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let shape = Shape::new(d).unwrap();
            let rot = Rotation::new(shape, 0x5EED + d as u64);
            // [n][n_heads][d], structured keys plus a few degenerate ones
            let mut spec = SynthSpec::new(n * n_heads, d, d as u64 + n as u64);
            spec.topic_len = 97;
            let mut f = SynthCache::generate(&spec).keys;
            f[..d].fill(0.0);
            if n > 2 {
                f[d * n_heads..][..d].fill(f32::NAN);
            }
            let (bytes, exact) = keys_in(dtype, &f);
            let gpu_keys = DeviceBuffer::from_slice(&bytes).unwrap();
            // encode every cell but the first, in reverse order
            let cells: Vec<i64> = (1..n as i64).rev().collect();
            let gpu_cells = DeviceBuffer::from_slice(&cells).unwrap();
            let gpu_n = DeviceBuffer::from_slice(&[cells.len() as i32]).unwrap();
            let (cb, nb, wb) = (shape.code_bytes(), shape.nibble_bytes(), shape.n_weights() * 2);
            let codes = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * cb]).unwrap();
            let nibbles = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * nb]).unwrap();
            let weights = DeviceBuffer::from_slice(&vec![0u8; n * n_heads * wb]).unwrap();
            let target = EncodeTarget {
                keys: gpu_keys.ptr,
                key_dtype: dtype,
                key_row_stride: n_heads * d * dtype.size(),
                key_head_stride: d * dtype.size(),
                codes: codes.ptr,
                nibbles: nibbles.ptr,
                weights: weights.ptr,
                kv_size: n,
                n_heads,
            };
            let grot = GpuRotation::new(&rot).unwrap();
            encode(module, &grot, &target, gpu_cells.ptr, gpu_n.ptr, cells.len() + 5, &Stream::null())
                .unwrap();
            driver::synchronize().unwrap();
            let got_codes: Vec<u8> = codes.read(n * n_heads * cb).unwrap();
            let got_nibbles: Vec<u8> = nibbles.read(n * n_heads * nb).unwrap();
            let got_weights: Vec<u16> = weights.read(n * n_heads * shape.n_weights()).unwrap();
            for h in 0..n_heads {
                // CPU: every cell of this head, then cell 0 cleared (the GPU was not asked for it)
                let rows = Rows::head_of(RowData::F32(&exact), n_heads, d, h, n).unwrap();
                let mut store = CodeStore::default();
                store.grow(&shape, n).unwrap();
                let all: Vec<usize> = (0..n).collect();
                encode_rows(&rot, &rows, &all, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
                store.codes[..cb].fill(0);
                store.nibbles[..nb].fill(0);
                store.weights[..shape.n_weights()].fill(f16::ZERO);
                let g = |v: &[u8], per: usize| v[h * n * per..][..n * per].to_vec();
                assert_eq!(g(&got_codes, cb), store.codes, "codes d={d} {dtype:?} head {h}");
                assert_eq!(g(&got_nibbles, nb), store.nibbles, "4-bit codes d={d} {dtype:?} head {h}");
                let w: Vec<u16> = got_weights[h * n * shape.n_weights()..][..n * shape.n_weights()].to_vec();
                let cpu_w: Vec<u16> = store.weights.iter().map(|x| x.to_bits()).collect();
                assert_eq!(w, cpu_w, "weights d={d} {dtype:?} head {h}");
                checked += n - 1;
            }
        }
    }
    println!("encode: {checked} keys bitwise equal to the CPU");
}

mod step {
    use super::*;
    use pariskv::attention::{attend, AttnParams, AttnScratch};
    use pariskv::cache_step::{attend_cache, CacheView, StepParams, StepScratch};
    use pariskv::cuda::step::{run, GpuCache, GpuQueries, Retrieval, StepBuffers, StepHeader};
    use pariskv::encode::estimator_lut;
    use pariskv::gqa::GqaPolicy;
    use pariskv::search::{
        candidate_count, candidates, collision_counts, group_query, histogram, rerank, tier_budgets,
        tier_levels, RatioPolicy, NOT_IN_ZONE,
    };
    use std::collections::BTreeSet;

    struct Case {
        d: usize,
        g: usize,
        n: usize,
        gqa: GqaPolicy,
        top_k: usize,
        dtype: DType,
        /// every other cell belongs to another sequence (hidden), as in a unified cache
        interleaved: bool,
    }

    /// The CPU's stages for one retrieval, for stage-by-stage comparison.
    struct CpuRetrieval {
        levels: Vec<u8>,
        counts: Vec<u16>,
        cutoff: u16,
        candidates: BTreeSet<u32>,
        top: BTreeSet<u32>,
    }

    fn check_case(c: &Case) {
        let module = driver::module_for(&Stream::null()).unwrap();
        let (d, n, g) = (c.d, c.n, c.g);
        let shape = Shape::new(d).unwrap();
        let rot = Rotation::new(shape, 77);
        let mut spec = SynthSpec::new(n, d, (d * 31 + n) as u64);
        spec.n_outlier_channels = 0;
        spec.topic_len = 513;
        let cache = SynthCache::generate(&spec);
        let (kb, kf) = keys_in(c.dtype, &cache.keys);
        let (vb, vf) = keys_in(c.dtype, &cache.values);
        // CPU index of the keys as stored
        let krows = Rows::packed(RowData::F32(&kf), d).unwrap();
        let vrows = Rows::packed(RowData::F32(&vf), d).unwrap();
        let mut store = CodeStore::default();
        store.grow(&shape, n).unwrap();
        let all: Vec<usize> = (0..n).collect();
        encode_rows(&rot, &krows, &all, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
        let visible = |cell: usize| !c.interleaved || cell % 2 == 0;
        let pos: Vec<i32> = (0..n as i32).map(|x| if c.interleaved { x / 2 } else { x }).collect();
        let mask: Vec<f32> = (0..n).map(|x| if visible(x) { 0.0 } else { f32::NEG_INFINITY }).collect();
        let mut rng = pariskv::synth::Rng::new(n as u64 + 3);
        let targets: Vec<usize> = (0..4).map(|_| 2 * rng.below(n / 2 + 1).min((n - 1) / 2)).collect();
        let q: Vec<f32> = (0..g).flat_map(|_| cache.planted_query(&targets, 8.0, &mut rng)).collect();
        let params = StepParams {
            top_k: c.top_k,
            n_sink: 4,
            n_local: 64,
            ratios: RatioPolicy::Adaptive,
            gqa: c.gqa,
            attn: AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 },
        };

        // CPU: the whole step, then its stages one by one
        let view = CacheView { keys: krows, values: vrows, codes: store.as_ref(), visible, pos: &pos };
        let mut cpu_out = vec![0.0f32; g * d];
        let mut scratch = StepScratch::default();
        let stats = attend_cache(&rot, &params, &view, &q, &mut scratch, &mut cpu_out).unwrap();
        let (mut p_min, mut p_max) = (i64::MAX, i64::MIN);
        for x in (0..n).filter(|&x| visible(x)) {
            p_min = p_min.min(pos[x] as i64);
            p_max = p_max.max(pos[x] as i64);
        }
        let class: Vec<u8> = (0..n)
            .map(|x| match (visible(x), (pos[x] as i64) < p_min + 4 || (pos[x] as i64) > p_max - 64) {
                (false, _) => 0,
                (true, true) => 2,
                (true, false) => 1,
            })
            .collect();
        let zone = |x: usize| class[x] == 1;
        let mut hist = Vec::new();
        let n_zone = histogram(&shape, &store.as_ref(), 0..n, zone, &mut hist);
        let heads: Vec<&[f32]> = match c.gqa {
            GqaPolicy::Mean => vec![&q[..]],
            GqaPolicy::PerHead => q.chunks_exact(d).collect(),
        };
        let n_ret = heads.len();
        let ratios = RatioPolicy::Adaptive.ratios(n_zone);
        let mut cpu = Vec::new();
        for (r, qh) in heads.iter().enumerate() {
            let k =
                if n_zone <= c.top_k { n_zone } else { c.top_k / n_ret + usize::from(r < c.top_k % n_ret) };
            let mut q_rot = vec![0.0; shape.padded_dim];
            group_query(&rot, qh, &mut Vec::new(), &mut q_rot);
            let mut levels = Vec::new();
            tier_levels(&shape, &q_rot, &hist, &tier_budgets(n_zone, ratios.coll), &mut levels);
            let mut counts = Vec::new();
            collision_counts(&shape, &store.as_ref(), 0..n, zone, &levels, &mut counts);
            let m = candidate_count(n_zone, ratios.cand, k);
            let (mut ch, mut cand) = (Vec::new(), Vec::new());
            let cutoff = candidates(&shape, &counts, 0, m, &mut ch, &mut cand);
            let mut lut = Vec::new();
            estimator_lut(&q_rot, &mut lut);
            let mut top = Vec::new();
            rerank(&shape, &store.as_ref(), &lut, &cand, k, &mut top);
            cpu.push(CpuRetrieval {
                levels,
                counts,
                cutoff,
                candidates: cand.into_iter().collect(),
                top: top.into_iter().map(|(_, x)| x).collect(),
            });
        }

        // GPU
        let up = |b: &[u8]| DeviceBuffer::from_slice(b).unwrap();
        let (gk, gv) = (up(&kb), up(&vb));
        let gcodes = up(&store.codes);
        let gnib = up(&store.nibbles);
        let wbits: Vec<u16> = store.weights.iter().map(|w| w.to_bits()).collect();
        let gw = DeviceBuffer::from_slice(&wbits).unwrap();
        let gmask = DeviceBuffer::from_slice(&mask).unwrap();
        let gpos = DeviceBuffer::from_slice(&pos).unwrap();
        let gq = DeviceBuffer::from_slice(&q).unwrap();
        let gout = DeviceBuffer::new(g * d * 4).unwrap();
        let buf = StepBuffers::new(shape, d, n + 7, g).unwrap();
        let gcache = GpuCache {
            n,
            k: gk.ptr,
            k_dtype: c.dtype,
            k_stride: d * c.dtype.size(),
            v: gv.ptr,
            v_dtype: c.dtype,
            v_stride: d * c.dtype.size(),
            codes: gcodes.ptr,
            nibbles: gnib.ptr,
            weights: gw.ptr,
            mask: gmask.ptr,
            mask_dtype: DType::F32,
            pos: gpos.ptr,
        };
        let gqueries = GpuQueries { q: gq.ptr, q_stride: d, n_heads: g, out: gout.ptr, out_stride: d };
        let grot = GpuRotation::new(&rot).unwrap();
        // twice: the second step must not see the first's marks
        for _ in 0..2 {
            run(module, &grot, &params, &gcache, &gqueries, &buf, &Stream::null()).unwrap();
        }
        driver::synchronize().unwrap();

        let what = format!(
            "d={d} g={g} n={n} {:?} k={} {:?} interleaved={}",
            c.gqa, c.top_k, c.dtype, c.interleaved
        );
        let header: Vec<u8> = buf.state.read(std::mem::size_of::<StepHeader>() + n_ret * 32).unwrap();
        // SAFETY (test): the buffer holds a StepHeader followed by n_ret Retrievals.
        let h: StepHeader = unsafe { std::ptr::read_unaligned(header.as_ptr() as *const StepHeader) };
        assert_eq!(h.n_zone as usize, n_zone, "{what}: zone size");
        assert_eq!(buf.klass.read::<u8>(n).unwrap(), class, "{what}: classes");
        assert_eq!(buf.hist.read::<u32>(hist.len()).unwrap(), hist, "{what}: histogram");
        let levels: Vec<u8> = buf.levels.read(n_ret * shape.n_blocks * 256).unwrap();
        let counts: Vec<u16> = buf.counts.read(n_ret * n).unwrap();
        let keys: Vec<u64> = buf.keys.read(n_ret * n).unwrap();
        for (r, x) in cpu.iter().enumerate() {
            let ret: Retrieval = unsafe {
                std::ptr::read_unaligned(
                    header.as_ptr().add(std::mem::size_of::<StepHeader>() + r * 32) as *const Retrieval
                )
            };
            assert_eq!(
                levels[r * x.levels.len()..][..x.levels.len()],
                x.levels[..],
                "{what}: tier levels {r}"
            );
            assert_eq!(counts[r * n..][..n], x.counts[..], "{what}: collision counts {r}");
            assert_eq!(ret.cutoff as u16, x.cutoff, "{what}: cutoff {r}");
            let rk = &keys[r * n..][..n];
            let gpu_cand: BTreeSet<u32> = (0..n as u32).filter(|&i| rk[i as usize] != u64::MAX).collect();
            if ret.k > 0 {
                assert_eq!(gpu_cand, x.candidates, "{what}: candidates {r}");
            }
            let gpu_top: BTreeSet<u32> =
                (0..n as u32).filter(|&i| ret.k > 0 && rk[i as usize] <= ret.prefix).collect();
            assert_eq!(gpu_top, x.top, "{what}: top-k {r}");
            let _ = NOT_IN_ZONE;
        }
        let rows: Vec<i32> = buf.rows.read(h.n_rows as usize).unwrap();
        let rows: BTreeSet<u32> = rows.into_iter().map(|x| x as u32).collect();
        let cpu_rows: BTreeSet<u32> = scratch_rows(&class, &cpu);
        assert_eq!(rows, cpu_rows, "{what}: attended rows");
        assert_eq!(h.n_rows as usize, stats.n_attended, "{what}: row count");
        let out: Vec<f32> = gout.read(g * d).unwrap();
        let scale = cpu_out.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let worst = out.iter().zip(&cpu_out).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{what}: attention output off by {worst} (relative to its largest value)");
        // and the CPU attention over the GPU's rows gives the same output
        let mut again = vec![0.0f32; g * d];
        let rows_v: Vec<u32> = rows.iter().copied().collect();
        attend(&q, &krows, &vrows, &rows_v, params.attn, &mut AttnScratch::default(), &mut again).unwrap();
        assert_eq!(again, cpu_out, "{what}: same rows, same CPU output");
        println!("step {what}: {} rows, worst relative error {worst:.2e}", rows.len());
    }

    fn scratch_rows(class: &[u8], cpu: &[CpuRetrieval]) -> BTreeSet<u32> {
        let mut s: BTreeSet<u32> = (0..class.len() as u32).filter(|&x| class[x as usize] == 2).collect();
        for r in cpu {
            s.extend(r.top.iter().copied());
        }
        s
    }

    #[test]
    fn step_matches_the_cpu_stage_by_stage() {
        if gpu().is_none() {
            return;
        }
        let cases = [
            Case {
                d: 128,
                g: 4,
                n: 5000,
                gqa: GqaPolicy::PerHead,
                top_k: 256,
                dtype: DType::F16,
                interleaved: false,
            },
            Case {
                d: 128,
                g: 4,
                n: 5000,
                gqa: GqaPolicy::Mean,
                top_k: 256,
                dtype: DType::F16,
                interleaved: false,
            },
            Case {
                d: 64,
                g: 1,
                n: 1,
                gqa: GqaPolicy::PerHead,
                top_k: 16,
                dtype: DType::F32,
                interleaved: false,
            },
            Case {
                d: 64,
                g: 1,
                n: 100,
                gqa: GqaPolicy::PerHead,
                top_k: 16,
                dtype: DType::F32,
                interleaved: true,
            },
            Case {
                d: 256,
                g: 8,
                n: 12_345,
                gqa: GqaPolicy::PerHead,
                top_k: 1000,
                dtype: DType::BF16,
                interleaved: true,
            },
            Case {
                d: 256,
                g: 4,
                n: 2000,
                gqa: GqaPolicy::PerHead,
                top_k: 4096,
                dtype: DType::F16,
                interleaved: false,
            },
            Case {
                d: 128,
                g: 8,
                n: 70_001,
                gqa: GqaPolicy::Mean,
                top_k: 2048,
                dtype: DType::F16,
                interleaved: false,
            },
            Case {
                d: 128,
                g: 4,
                n: 1 << 20,
                gqa: GqaPolicy::PerHead,
                top_k: 2048,
                dtype: DType::F16,
                interleaved: false,
            },
        ];
        // Under compute-sanitizer (PARISKV_GPU_TEST_SMALL=1) the largest case would take too long.
        let small = std::env::var_os("PARISKV_GPU_TEST_SMALL").is_some();
        for c in cases.iter().filter(|c| !small || c.n <= 100_000) {
            check_case(c);
        }
    }
}

/// Through the C ABI, with K and V in pinned host memory read by the kernels through UVA:
/// encode on the GPU, one step, output equal to the CPU step's.
#[test]
fn c_abi_step_with_kv_in_host_memory() {
    use pariskv::cache_step::{attend_cache, CacheView, StepParams, StepScratch};
    use pariskv::ffi::cache::{pariskv_step, pariskv_step_stats};
    use pariskv::ffi::cuda::*;
    use pariskv::ffi::pariskv_status;
    use pariskv::gqa::GqaPolicy;
    use pariskv::search::RatioPolicy;
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
    };
    let null = std::ptr::null_mut();
    assert_eq!(
        pariskv_cuda_encode(d as u32, seed, &target, gcells.ptr, gn.ptr, n, null),
        pariskv_status::PARISKV_OK
    );
    let pos: Vec<i32> = (0..n as i32).collect();
    let mask = vec![0.0f32; n];
    let (gpos, gmask) = (DeviceBuffer::from_slice(&pos).unwrap(), DeviceBuffer::from_slice(&mask).unwrap());
    let mut rng = pariskv::synth::Rng::new(3);
    let q: Vec<f32> = (0..g).flat_map(|_| cache.planted_query(&[100, 9000, 15000], 8.0, &mut rng)).collect();
    let gq = DeviceBuffer::from_slice(&q).unwrap();
    let gout = DeviceBuffer::new(g * d * 4).unwrap();
    let mut step = std::ptr::null_mut();
    assert_eq!(
        pariskv_cuda_step_create(d as u32, d as u32, seed, n, g as u32, &mut step),
        pariskv_status::PARISKV_OK
    );
    let params = pariskv_step {
        head_dim: d as u32,
        v_dim: d as u32,
        n_heads: g as u32,
        top_k: 512,
        n_sink: 4,
        n_local: 256,
        adaptive_ratios: 1,
        gqa_policy: 0,
        rho_cand: 0.0,
        rho_coll: 0.0,
        scale: 1.0 / (d as f32).sqrt(),
        softcap: 0.0,
        seed,
    };
    let gc = pariskv_cuda_cache {
        n_cells: n,
        k: kd,
        k_dtype: 1,
        k_stride: d * 2,
        v: vd,
        v_dtype: 1,
        v_stride: d * 2,
        codes: codes.ptr,
        nibbles: nibbles.ptr,
        weights: weights.ptr,
        mask: gmask.ptr,
        mask_dtype: 0,
        pos: gpos.ptr,
    };
    let gqs =
        pariskv_cuda_queries { q: gq.ptr, q_stride: d, n_heads: g as u32, out: gout.ptr, out_stride: d };
    assert_eq!(pariskv_cuda_step_run(step, &params, &gc, &gqs, null), pariskv_status::PARISKV_OK);
    driver::synchronize().unwrap();
    let got: Vec<f32> = gout.read(g * d).unwrap();

    // the CPU oracle
    let rot = Rotation::new(shape, seed);
    let krows = Rows::packed(RowData::F32(&kf), d).unwrap();
    let vrows = Rows::packed(RowData::F32(&vf), d).unwrap();
    let mut store = CodeStore::default();
    store.grow(&shape, n).unwrap();
    let all: Vec<usize> = (0..n).collect();
    encode_rows(&rot, &krows, &all, &mut store.as_mut(), &mut EncodeScratch::default()).unwrap();
    let view = CacheView { keys: krows, values: vrows, codes: store.as_ref(), visible: |_| true, pos: &pos };
    let sp = StepParams {
        top_k: 512,
        n_sink: 4,
        n_local: 256,
        ratios: RatioPolicy::Adaptive,
        gqa: GqaPolicy::PerHead,
        attn: pariskv::attention::AttnParams { scale: 1.0 / (d as f32).sqrt(), softcap: 0.0 },
    };
    let mut want = vec![0.0f32; g * d];
    attend_cache(&rot, &sp, &view, &q, &mut StepScratch::default(), &mut want).unwrap();
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, f32::max);
    println!("C ABI step, K/V in pinned host memory (UVA): worst relative error {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
    // bad input is an error with a message, not a crash
    let bad = pariskv_step { seed: 1, ..params };
    assert_eq!(
        pariskv_cuda_step_run(step, &bad, &gc, &gqs, null),
        pariskv_status::PARISKV_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        pariskv_cuda_step_run(null as _, &params, &gc, &gqs, null),
        pariskv_status::PARISKV_ERR_INVALID_ARGUMENT
    );
    pariskv_cuda_step_free(step);
    assert_eq!(pariskv_host_free(kh), pariskv_status::PARISKV_OK);
    assert_eq!(pariskv_host_free(vh), pariskv_status::PARISKV_OK);
    let _ = pariskv_step_stats::default();
}
