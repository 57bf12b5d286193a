//! The encode and search primitives through the index handle (`pariskv::Index`): arbitrary
//! shapes, settings, call sequences and values (any f32 bit pattern, so NaN, infinities and
//! subnormals too). Nothing may crash; what a call returns must keep its documented bounds:
//! an append is all or nothing, a search returns distinct positions of the retrieval zone,
//! never more than k.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::algorithm::search::{RatioPolicy, Ratios};
use pariskv::{Config, DType, Index, RowData};

/// Mostly small multiples of 1/8, one in eight any bit pattern.
fn values(u: &mut Unstructured, n: usize) -> Result<Vec<f32>> {
    (0..n)
        .map(|_| {
            Ok(if u.ratio(1, 8)? {
                f32::from_bits(u.arbitrary()?)
            } else {
                u.int_in_range(-64i32..=64)? as f32 / 8.0
            })
        })
        .collect()
}

fn run(u: &mut Unstructured) -> Result<()> {
    let head_dim = *u.choose(&[8usize, 16, 24, 64, 96, 128])?;
    let n_kv = u.int_in_range(1..=3)?;
    let group = u.int_in_range(1..=4)?;
    let mut cfg = Config::new(head_dim, n_kv * group, n_kv);
    cfg.n_sink = u.int_in_range(0..=8)?;
    cfg.n_local = u.int_in_range(0..=32)?;
    cfg.top_k = u.int_in_range(0..=64)?;
    cfg.dense_threshold = u.int_in_range(0..=64)?;
    cfg.kv_dtype = *u.choose(&[DType::F32, DType::F16, DType::BF16, DType::Q8_0])?;
    cfg.gqa = if u.arbitrary()? { GqaPolicy::Mean } else { GqaPolicy::PerHead };
    cfg.center = u.arbitrary()?;
    if u.arbitrary()? {
        // out-of-domain ratios included: validation must refuse them
        let cand = f64::from(u.int_in_range(0u8..=20)?) / 16.0;
        let coll = f64::from(u.int_in_range(0u8..=20)?) / 16.0;
        cfg.ratios = RatioPolicy::Fixed(Ratios { cand, coll });
    }
    let Ok(mut index) = Index::new(cfg.clone()) else {
        return Ok(());
    };
    let row = n_kv * head_dim;
    for _ in 0..u.int_in_range(1..=6)? {
        match u.int_in_range(0..=2)? {
            0 => {
                let n = u.int_in_range(0..=300)?;
                let (k, v) = (values(u, n * row)?, values(u, n * row)?);
                let before = index.len();
                let ok = index.append(RowData::F32(&k), RowData::F32(&v), n).is_ok();
                assert_eq!(index.len(), if ok { before + n } else { before }, "append is all or nothing");
            }
            1 => {
                let q = values(u, cfg.n_q_heads * head_dim)?;
                let k = u.int_in_range(0..=80)?;
                if let Ok(found) = index.search_detailed(RowData::F32(&q), k) {
                    let zone = cfg.zone(index.len());
                    for r in &found {
                        assert!(r.top.len() <= k.min(zone.len()), "{} positions for k {k}", r.top.len());
                        assert!(
                            r.top.iter().all(|&p| zone.contains(&(p as usize))),
                            "a position outside the zone"
                        );
                        let mut uniq = r.top.clone();
                        uniq.sort_unstable();
                        uniq.dedup();
                        assert_eq!(uniq.len(), r.top.len(), "repeated positions");
                    }
                }
            }
            _ => {
                let q = values(u, cfg.n_q_heads * head_dim)?;
                let mut out = vec![0.0f32; cfg.n_q_heads * head_dim];
                let _ = index.attend(RowData::F32(&q), &mut out);
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
