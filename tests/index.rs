//! The index handle: append semantics, dtypes, GQA grouping, all-or-nothing errors.

use half::{bf16, f16};
use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
use pariskv::{Config, DType, ErrorKind, Index, RowData};

fn interleaved(n: usize, d: usize, heads: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let caches: Vec<SynthCache> =
        (0..heads).map(|h| SynthCache::generate(&SynthSpec::new(n, d, seed + h as u64))).collect();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for t in 0..n {
        for c in &caches {
            k.extend_from_slice(&c.keys[t * d..][..d]);
            v.extend_from_slice(&c.values[t * d..][..d]);
        }
    }
    (k, v)
}

fn config(d: usize, nq: usize, nkv: usize) -> Config {
    let mut cfg = Config::new(d, nq, nkv);
    cfg.top_k = 64;
    cfg.n_local = 32;
    cfg.dense_threshold = 1; // ParisKV from the first cell
    cfg
}

/// Appends `k`/`v` (`n` tokens) in chunks of the given sizes.
fn append_chunks(ix: &mut Index, k: &[f32], v: &[f32], nkv: usize, d: usize, chunks: &[usize]) {
    let mut t = 0;
    for &chunk in chunks {
        let r = t * nkv * d..(t + chunk) * nkv * d;
        ix.append(RowData::F32(&k[r.clone()]), RowData::F32(&v[r]), chunk).unwrap();
        t += chunk;
    }
}

#[test]
fn appending_in_chunks_equals_appending_at_once() {
    let (n, d, nkv) = (3000, 64, 2);
    let (k, v) = interleaved(n, d, nkv, 1);
    // Without centring any chunking is the same; with it, the first append sets each head's
    // key centre, so the chunks after an equal first append may be anything.
    for (center, whole_chunks, part_chunks) in
        [(false, &[3000][..], &[1, 7, 500, 1, 2491][..]), (true, &[500, 2500], &[500, 1, 7, 1, 2491])]
    {
        let mut cfg = config(d, 8, nkv);
        cfg.center = center;
        let mut whole = Index::new(cfg.clone()).unwrap();
        append_chunks(&mut whole, &k, &v, nkv, d, whole_chunks);
        let mut parts = Index::new(cfg).unwrap();
        append_chunks(&mut parts, &k, &v, nkv, d, part_chunks);
        assert_eq!(parts.len(), n);
        let mut rng = Rng::new(2);
        let q: Vec<f32> = (0..8 * d).map(|_| rng.normal()).collect();
        assert_eq!(whole.search(RowData::F32(&q), 64).unwrap(), parts.search(RowData::F32(&q), 64).unwrap());
        let (mut a, mut b) = (vec![0.0; 8 * d], vec![0.0; 8 * d]);
        whole.attend(RowData::F32(&q), &mut a).unwrap();
        parts.attend(RowData::F32(&q), &mut b).unwrap();
        assert_eq!(a, b, "centre {center}");
        assert_eq!(whole.stats(), parts.stats());
    }
}

#[test]
fn half_precision_inputs_match_their_f32_values() {
    let (n, d) = (1500, 128);
    let (k, v) = interleaved(n, d, 1, 4);
    // Round through f16 / bf16 first so the f32 path sees exactly the same values.
    let k16: Vec<f16> = k.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
    let kb: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
    let vb: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
    let mut rng = Rng::new(3);
    let q: Vec<f32> = (0..4 * d).map(|_| rng.normal()).collect();
    let q16: Vec<f16> = q.iter().map(|&x| f16::from_f32(x)).collect();
    let qb: Vec<bf16> = q.iter().map(|&x| bf16::from_f32(x)).collect();
    for (dt, keys, vals, queries) in [
        (DType::F16, RowData::F16(&k16), RowData::F16(&v16), RowData::F16(&q16)),
        (DType::BF16, RowData::BF16(&kb), RowData::BF16(&vb), RowData::BF16(&qb)),
    ] {
        let widen = |r: RowData| -> Vec<f32> {
            let rows = pariskv::Rows::packed(r, 1).unwrap();
            (0..rows.len())
                .map(|i| {
                    let mut x = [0.0];
                    rows.load(i, &mut x);
                    x[0]
                })
                .collect()
        };
        let (kf, vf, qf) = (widen(keys), widen(vals), widen(queries));
        let mut cfg = config(d, 4, 1);
        cfg.kv_dtype = dt;
        let mut native = Index::new(cfg.clone()).unwrap();
        native.append(keys, vals, n).unwrap();
        let mut wide = Index::new(cfg).unwrap();
        wide.append(RowData::F32(&kf), RowData::F32(&vf), n).unwrap();
        assert_eq!(
            native.search(queries, 64).unwrap(),
            wide.search(RowData::F32(&qf), 64).unwrap(),
            "{dt:?}"
        );
        let (mut a, mut b) = (vec![0.0; 4 * d], vec![0.0; 4 * d]);
        native.attend(queries, &mut a).unwrap();
        wide.attend(RowData::F32(&qf), &mut b).unwrap();
        assert_eq!(a, b, "{dt:?}");
    }
}

#[test]
fn gqa_heads_use_their_own_kv_head() {
    // Two KV heads with different caches; query heads 0-1 use KV head 0, 2-3 KV head 1.
    let (n, d) = (2000, 64);
    let (k, v) = interleaved(n, d, 2, 8);
    let mut two = Index::new(config(d, 4, 2)).unwrap();
    two.append(RowData::F32(&k), RowData::F32(&v), n).unwrap();
    let mut rng = Rng::new(1);
    let q: Vec<f32> = (0..4 * d).map(|_| rng.normal()).collect();
    let mut out = vec![0.0; 4 * d];
    two.attend(RowData::F32(&q), &mut out).unwrap();
    for h in 0..2 {
        // The same heads against a one-KV-head index of that head alone.
        let kh: Vec<f32> = k.chunks_exact(d).skip(h).step_by(2).flatten().copied().collect();
        let vh: Vec<f32> = v.chunks_exact(d).skip(h).step_by(2).flatten().copied().collect();
        let mut one = Index::new(config(d, 2, 1)).unwrap();
        one.append(RowData::F32(&kh), RowData::F32(&vh), n).unwrap();
        let mut o = vec![0.0; 2 * d];
        one.attend(RowData::F32(&q[h * 2 * d..][..2 * d]), &mut o).unwrap();
        assert_eq!(&out[h * 2 * d..][..2 * d], &o[..], "KV head {h}");
    }
}

#[test]
fn failed_calls_change_nothing() {
    let d = 64;
    let mut ix = Index::new(config(d, 2, 1)).unwrap();
    let (k, v) = interleaved(100, d, 1, 2);
    ix.append(RowData::F32(&k), RowData::F32(&v), 100).unwrap();
    let before = ix.stats();
    let e = ix.append(RowData::F32(&k), RowData::F32(&v[..v.len() - 1]), 100).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("values"), "{}", e.message);
    assert_eq!(ix.stats(), before);
    assert!(ix.search(RowData::F32(&[0.0; 64]), 4).is_err(), "wrong query count");
    assert!(ix.search(RowData::F32(&[0.0; 128]), 0).is_err(), "k = 0");
    let mut out = vec![0.0; 127];
    assert!(ix.attend(RowData::F32(&[0.0; 128]), &mut out).is_err());
    assert_eq!(ix.stats(), before);
    let mut empty = Index::new(config(d, 2, 1)).unwrap();
    assert!(empty.attend(RowData::F32(&[0.0; 128]), &mut [0.0; 128]).is_err());
}

#[test]
fn search_respects_sink_window_and_k() {
    let (n, d) = (1000, 64);
    let (k, v) = interleaved(n, d, 1, 5);
    let mut cfg = config(d, 1, 1);
    cfg.n_sink = 10;
    cfg.n_local = 100;
    let mut ix = Index::new(cfg).unwrap();
    ix.append(RowData::F32(&k), RowData::F32(&v), n).unwrap();
    let q = vec![0.5f32; d];
    let top = &ix.search(RowData::F32(&q), 50).unwrap()[0];
    assert_eq!(top.len(), 50);
    assert!(top.iter().all(|&p| (10..900).contains(&p)), "only zone positions");
    let all = &ix.search(RowData::F32(&q), 5000).unwrap()[0];
    assert_eq!(all.len(), 890, "k beyond the zone returns the whole zone");
}

/// NaN and infinities in keys, values and queries never crash the index nor yield a position
/// outside the zone, whatever the dtype and GQA policy; finite queries over a cache with a few
/// bad keys still return as many distinct positions as the policy promises.
#[test]
fn nan_and_inf_never_crash_or_escape_bounds() {
    let (d, nq, nkv, n) = (64, 4, 2, 3000);
    let (mut keys, mut values) = interleaved(n, d, nkv, 9);
    for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN].into_iter().enumerate() {
        // whole poisoned keys, single poisoned channels, a poisoned value row
        let t = 700 + 500 * i;
        keys[t * nkv * d..(t + 1) * nkv * d].fill(bad);
        keys[((t + 1) * nkv + 1) * d + 5] = bad;
        values[(t + 2) * nkv * d] = bad;
    }
    let mut rng = Rng::new(3);
    let finite: Vec<f32> = (0..nq * d).map(|_| rng.normal()).collect();
    let mut poisoned = finite.clone();
    poisoned[7] = f32::NAN;
    poisoned[d + 3] = f32::INFINITY;
    let g = nq / nkv;
    for (dtype, gqa) in [
        (DType::F32, GqaPolicy::PerHead),
        (DType::F16, GqaPolicy::Mean),
        (DType::BF16, GqaPolicy::PerHead),
        (DType::F32, GqaPolicy::Mean),
        (DType::F16, GqaPolicy::Group),
    ] {
        let mut cfg = config(d, nq, nkv);
        cfg.kv_dtype = dtype;
        cfg.gqa = gqa;
        let mut ix = Index::new(cfg.clone()).unwrap();
        ix.append(RowData::F32(&keys), RowData::F32(&values), n).unwrap();
        let zone = cfg.zone(n);
        for (name, q) in [("finite query", &finite), ("NaN/Inf query", &poisoned)] {
            for k in [1, 64, 4096] {
                let top = ix.search(RowData::F32(q), k).unwrap();
                for list in &top {
                    assert!(
                        list.iter().all(|&c| zone.contains(&(c as usize))),
                        "{dtype:?} {gqa:?} {name} k={k}: outside the zone"
                    );
                    let mut uniq = list.clone();
                    uniq.sort_unstable();
                    uniq.dedup();
                    assert_eq!(uniq.len(), list.len(), "{dtype:?} {gqa:?} {name} k={k}: repeated positions");
                    if q == &finite {
                        // mean and group: one list of k; per-head: the union of each head's k/g
                        let (lo, hi) = match gqa {
                            GqaPolicy::Mean => (k.min(zone.len()), k.min(zone.len())),
                            GqaPolicy::PerHead => ((k / g).min(zone.len()), k.min(zone.len())),
                            // group: k distinct rows shared by the group
                            GqaPolicy::Group => (k.min(zone.len()), k.min(zone.len())),
                        };
                        assert!(
                            (lo..=hi).contains(&list.len()),
                            "{dtype:?} {gqa:?} {name} k={k}: {} positions",
                            list.len()
                        );
                    }
                }
            }
            let mut out = vec![0.0f32; nq * d];
            // attention over poisoned rows may be NaN (as dense attention would be), but returns
            ix.attend(RowData::F32(q), &mut out).unwrap();
        }
    }
}
