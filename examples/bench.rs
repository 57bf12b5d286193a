//! CPU benchmark, one thread, one KV head with a group of 4 query heads, d = 128, f16 K/V:
//! encode throughput, the retrieval stages, ParisKV attend (retrieval + attention over
//! sink ∪ top-k ∪ window; the defaults with the group-mean, the per-head and the group
//! policy, the group policy at half the top-k (about per-head's attention mass, docs/FIDELITY.md),
//! and per-head with the first defaults: refine 1, share 0.1) and dense attention over all N,
//! in the same run.
//!
//!   cargo run --release --example bench -- [N ...]     (default: 32768 131072 1048576)

use std::hint::black_box;
use std::time::Instant;

use pariskv::algorithm::attention::{attend, AttnScratch};
use pariskv::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::algorithm::rotation::Rotation;
use pariskv::algorithm::search::{
    candidate_count, candidates, collision_counts, group_query, histogram, rerank, tier_budgets, tier_levels,
    RatioPolicy, Ratios, SearchScratch,
};
use pariskv::constants::TUNED_RHO_COLL;
use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
use pariskv::shape::Shape;
use pariskv::{Config, DType, Index, RowData, Rows};

const D: usize = 128;
const GROUP: usize = 4;

/// Fastest of `reps` runs of `f`, in seconds (the least disturbed by other load).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[0]
}

fn main() {
    let sizes: Vec<usize> =
        std::env::args().skip(1).map(|a| a.parse().expect("N must be a number")).collect();
    let sizes = if sizes.is_empty() { vec![32_768, 131_072, 1_048_576] } else { sizes };
    println!("| N | encode keys/s | hist ms | tiers ms | collisions ms | candidates ms | rerank ms | search ms | ParisKV attend ms (mean) | dense ms | dense / ParisKV | ParisKV attend ms (per-head) | dense / per-head | per-head, first defaults ms | dense / first defaults | ParisKV attend ms (group) | dense / group | group, top-k / 2 ms | dense / group, top-k / 2 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        bench(n);
    }
}

fn bench(n: usize) {
    let mut spec = SynthSpec::new(n, D, 7);
    spec.n_outlier_channels = 0;
    let cache = SynthCache::generate(&spec);
    let mut cfg = Config::new(D, GROUP, 1);
    cfg.kv_dtype = DType::F16;
    let reps = if n > 500_000 { 5 } else { 11 };

    // Encode throughput: the primitive over fresh storage.
    let shape = Shape::new(D).unwrap();
    let rot = Rotation::new(shape, cfg.seed);
    let keys = Rows::packed(RowData::F32(&cache.keys), D).unwrap();
    let cells: Vec<usize> = (0..n).collect();
    let mut store = CodeStore::default();
    store.grow(&shape, n).unwrap();
    let mut es = EncodeScratch::default();
    let t_encode = time(3, || encode_rows(&rot, &keys, &cells, None, &mut store.as_mut(), &mut es).unwrap());

    // The stages, one by one, over the zone of the default layout.
    let zone = cfg.zone(n);
    let mut rng = Rng::new(1);
    let targets: Vec<usize> = (0..8).map(|_| zone.start + rng.below(zone.len())).collect();
    let q: Vec<f32> = (0..GROUP).flat_map(|_| cache.planted_query(&targets, 6.0, &mut rng)).collect();
    let (mut mean, mut q_rot) = (Vec::new(), vec![0.0; shape.padded_dim]);
    group_query(&rot, &q, &mut mean, &mut q_rot);
    let codes = store.as_ref();
    let mut s = SearchScratch::default();
    let t_hist = time(reps, || {
        black_box(histogram(&shape, &codes, zone.clone(), |_| true, &mut s.hist));
    });
    let ratios = RatioPolicy::Adaptive.ratios(zone.len());
    let budgets = tier_budgets(zone.len(), ratios.coll);
    let t_tiers = time(reps, || tier_levels(&shape, &q_rot, &s.hist, &budgets, &mut s.levels));
    let t_coll =
        time(reps, || collision_counts(&shape, &codes, zone.clone(), |_| true, &s.levels, &mut s.counts));
    let m = candidate_count(zone.len(), ratios.cand, cfg.top_k);
    let t_cand = time(reps, || {
        candidates(&shape, &s.counts, zone.start, m, &mut s.count_hist, &mut s.candidates);
    });
    s.query.set(&q_rot);
    let t_rerank = time(reps, || rerank(&shape, &codes, &s.query, &s.candidates, cfg.top_k, &mut s.top));

    // End to end through the index handle, against dense attention over all N: the
    // paper's group-mean retrieval, then one retrieval per query head (the default).
    cfg.gqa = GqaPolicy::Mean;
    let mut index = Index::new(cfg.clone()).unwrap();
    index.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), n).unwrap();
    let t_search = time(reps, || drop(black_box(index.search(RowData::F32(&q), cfg.top_k).unwrap())));
    let mut out = vec![0.0; GROUP * D];
    let t_paris = time(reps, || index.attend(RowData::F32(&q), &mut out).unwrap());
    cfg.gqa = GqaPolicy::PerHead;
    let mut per_head = Index::new(cfg.clone()).unwrap();
    per_head.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), n).unwrap();
    let t_per_head = time(reps, || per_head.attend(RowData::F32(&q), &mut out).unwrap());
    cfg.gqa = GqaPolicy::Group;
    let mut group = Index::new(cfg.clone()).unwrap();
    group.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), n).unwrap();
    let t_group = time(reps, || group.attend(RowData::F32(&q), &mut out).unwrap());
    let mut half = cfg.clone();
    half.top_k /= 2;
    let mut group_half = Index::new(half).unwrap();
    group_half.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), n).unwrap();
    let t_group_half = time(reps, || group_half.attend(RowData::F32(&q), &mut out).unwrap());
    cfg.gqa = GqaPolicy::PerHead;
    // the defaults before the wider shares and refine: for zones of 30K keys and more
    // the first tuned table is the share 0.1 with collision tiers over the whole zone
    let mut first = cfg.clone();
    first.refine = 1;
    first.ratios = RatioPolicy::Fixed(Ratios { cand: 0.1, coll: TUNED_RHO_COLL });
    let mut first_idx = Index::new(first).unwrap();
    first_idx.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), n).unwrap();
    let t_first = time(reps, || first_idx.attend(RowData::F32(&q), &mut out).unwrap());
    let all: Vec<u32> = (0..n as u32).collect();
    let (k, v) = (index.keys(0).unwrap(), index.values(0).unwrap());
    let mut scratch = AttnScratch::default();
    let t_dense = time(reps, || attend(&q, &k, &v, &all, cfg.attn, &mut scratch, &mut out).unwrap());

    let ms = |t: f64| t * 1e3;
    println!(
        "| {n} | {:.2e} | {:.2} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x | {:.2} | {:.1}x | {:.2} | {:.1}x | {:.2} | {:.1}x | {:.2} | {:.1}x |",
        n as f64 / t_encode,
        ms(t_hist),
        ms(t_tiers),
        ms(t_coll),
        ms(t_cand),
        ms(t_rerank),
        ms(t_search),
        ms(t_paris),
        ms(t_dense),
        t_dense / t_paris,
        ms(t_per_head),
        t_dense / t_per_head,
        ms(t_first),
        t_dense / t_first,
        ms(t_group),
        t_dense / t_group,
        ms(t_group_half),
        t_dense / t_group_half
    );
}
