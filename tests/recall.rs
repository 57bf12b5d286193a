//! Recall of the faithful algorithm (reference ratios, group-mean GQA query) against the
//! brute-force exact top-k, on synthetic caches with the structure of real ones. Each
//! scenario prints its numbers (`cargo test --test recall -- --nocapture`) and asserts
//! floors measured over seeds 1-5 with a margin (see docs/RECALL.md for the table and
//! why each floor is where it is).

use pariskv::algorithm::gqa::GqaPolicy;
use pariskv::algorithm::search::{RatioPolicy, Ratios};
use pariskv::eval::synth::{Rng, SynthCache, SynthSpec};
use pariskv::eval::{attention_mass, exact_top_k, recall};
use pariskv::{Config, DType, Index, RowData};

const N: usize = 16_384;
const D: usize = 128;
const GROUP: usize = 4;
const QUERIES: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Metrics {
    coarse: f64,
    fine: f64,
    rerank_all: f64,
    mass: f64,
    mass_exact: f64,
}

fn index_over(cache: &SynthCache, ratios: RatioPolicy, center: bool) -> Index {
    let mut cfg = Config::new(D, GROUP, 1);
    cfg.kv_dtype = DType::F32;
    cfg.ratios = ratios;
    cfg.center = center;
    // The faithful algorithm: one retrieval with the group-mean query.
    cfg.gqa = GqaPolicy::Mean;
    let mut index = Index::new(cfg).unwrap();
    index.append(RowData::F32(&cache.keys), RowData::F32(&cache.values), N).unwrap();
    index
}

/// Mean metrics over `QUERIES` planted queries at top-k `k`, keys centred or not.
fn measure(spec: &SynthSpec, k: usize, center: bool) -> Metrics {
    let cache = SynthCache::generate(spec);
    let mut paris = index_over(&cache, RatioPolicy::Adaptive, center);
    // Every key a candidate: the final stage alone, i.e. the 4-bit estimator's recall.
    let mut estimator = index_over(&cache, RatioPolicy::Fixed(Ratios { cand: 1.0, coll: 1.0 }), center);
    let zone_range = paris.config().zone(N);
    let zone: Vec<u32> = (zone_range.start as u32..zone_range.end as u32).collect();
    let scale = paris.config().attn.scale;
    let mut rng = Rng::new(spec.seed + 77);
    let mut m = Metrics::default();
    for _ in 0..QUERIES {
        let targets: Vec<usize> = (0..8).map(|_| zone[rng.below(zone.len())] as usize).collect();
        let q: Vec<f32> = (0..GROUP).flat_map(|_| cache.planted_query(&targets, 6.0, &mut rng)).collect();
        let mean: Vec<f32> =
            (0..D).map(|j| q.chunks_exact(D).map(|h| h[j]).sum::<f32>() / GROUP as f32).collect();
        let r = &paris.search_detailed(RowData::F32(&q), k).unwrap()[0];
        let all = &estimator.search(RowData::F32(&q), k).unwrap()[0];
        let keys = paris.keys(0).unwrap();
        let exact = exact_top_k(&keys, &mean, &zone, k);
        assert!(r.top.iter().all(|c| r.candidates.binary_search(c).is_ok()), "top-k outside the candidates");
        m.coarse += recall(&r.candidates, &exact);
        m.fine += recall(&r.top, &exact);
        m.rerank_all += recall(all, &exact);
        for qh in q.chunks_exact(D) {
            m.mass += attention_mass(&keys, qh, &zone, &r.top, scale) / GROUP as f64;
            m.mass_exact += attention_mass(&keys, qh, &zone, &exact, scale) / GROUP as f64;
        }
    }
    let n = QUERIES as f64;
    Metrics {
        coarse: m.coarse / n,
        fine: m.fine / n,
        rerank_all: m.rerank_all / n,
        mass: m.mass / n,
        mass_exact: m.mass_exact / n,
    }
}

/// Floors for one scenario: (coarse, final, estimator-only, mass) at k = 256 and 1024.
struct Floors {
    coarse: f64,
    fine: f64,
    rerank_all: f64,
    mass: f64,
}

/// Seeds to run: `PARISKV_RECALL_SEEDS=1,2,3,4,5` re-measures the floors; CI runs 1 and 2.
fn seeds() -> Vec<u64> {
    std::env::var("PARISKV_RECALL_SEEDS")
        .map(|s| s.split(',').map(|x| x.trim().parse().expect("PARISKV_RECALL_SEEDS: numbers")).collect())
        .unwrap_or_else(|_| vec![1, 2])
}

/// The faithful algorithm (keys as they are) on one scenario.
fn check(name: &str, configure: impl Fn(&mut SynthSpec), floors: [Floors; 2]) {
    check_with(name, configure, false, floors)
}

fn check_with(name: &str, configure: impl Fn(&mut SynthSpec), center: bool, floors: [Floors; 2]) {
    for (k, floor) in [256, 1024].into_iter().zip(floors) {
        for seed in seeds() {
            let mut spec = SynthSpec::new(N, D, seed);
            configure(&mut spec);
            let m = measure(&spec, k, center);
            println!(
                "{name:<28} seed {seed} k {k:>4}: coarse {:.3} final {:.3} estimator-only {:.3} \
                 mass {:.3} (exact top-k {:.3})",
                m.coarse, m.fine, m.rerank_all, m.mass, m.mass_exact
            );
            assert!(m.fine <= m.coarse + 1e-12, "{name}: the final top-k comes from the candidates");
            assert!(
                m.coarse >= floor.coarse,
                "{name} k={k} seed {seed}: coarse recall {:.3} < {}",
                m.coarse,
                floor.coarse
            );
            assert!(
                m.fine >= floor.fine,
                "{name} k={k} seed {seed}: final recall {:.3} < {}",
                m.fine,
                floor.fine
            );
            assert!(
                m.rerank_all >= floor.rerank_all,
                "{name} k={k} seed {seed}: estimator-only recall {:.3} < {}",
                m.rerank_all,
                floor.rerank_all
            );
            assert!(m.mass >= floor.mass, "{name} k={k} seed {seed}: mass {:.3} < {}", m.mass, floor.mass);
        }
    }
}

#[test]
fn clustered_keys() {
    check(
        "clustered",
        |s| {
            s.n_outlier_channels = 0;
            s.drift = 0.0;
        },
        [
            Floors { coarse: 0.85, fine: 0.80, rerank_all: 0.90, mass: 0.45 },
            Floors { coarse: 0.75, fine: 0.75, rerank_all: 0.93, mass: 0.70 },
        ],
    );
}

#[test]
fn clustered_keys_with_drift() {
    check(
        "clustered + drift",
        |s| s.n_outlier_channels = 0,
        [
            Floors { coarse: 0.88, fine: 0.83, rerank_all: 0.90, mass: 0.50 },
            Floors { coarse: 0.80, fine: 0.80, rerank_all: 0.93, mass: 0.74 },
        ],
    );
}

// With outlier channels, key norms vary ~10x and dominate the exact ranking, while the
// coarse stage ranks by direction only (codes are scale invariant): recall falls towards
// the random baseline (rho_cand = 0.2 at this size). An independent NumPy model saw the same on real
// keys; these floors pin today's faithful behaviour so a change is noticed either way.
#[test]
fn zero_mean_outlier_channels() {
    check(
        "outliers (zero mean) + drift",
        |s| s.outlier_offset = 0.0,
        [
            Floors { coarse: 0.27, fine: 0.25, rerank_all: 0.65, mass: 0.12 },
            Floors { coarse: 0.25, fine: 0.25, rerank_all: 0.80, mass: 0.15 },
        ],
    );
}

// A large offset shared by all keys puts every key in the same centroid of most blocks
// and dominates the 4-bit estimate, so the estimator degrades too. Mean-centring per head
// is the fix: see the next test.
#[test]
fn outlier_channels_with_shared_offset() {
    check(
        "outliers (offset) + drift",
        |_| {},
        [
            Floors { coarse: 0.15, fine: 0.13, rerank_all: 0.30, mass: 0.04 },
            Floors { coarse: 0.12, fine: 0.12, rerank_all: 0.57, mass: 0.05 },
        ],
    );
}

// The same keys centred (`Config::center`, the library's default; the centre is the mean of
// the first append, here the whole cache's first 4096 keys): the shared offset is gone and
// the estimator is back at the zero-mean scenario's level (seeds 1-5: 0.69-0.79 at k 256,
// 0.84-0.87 at 1024, against 0.37-0.55 and 0.63-0.70 uncentred; the floors sit above every
// uncentred value). The coarse stage stays limited by the outlier norms, as above.
#[test]
fn outlier_channels_with_shared_offset_centred() {
    check_with(
        "outliers (offset), centred",
        |_| {},
        true,
        [
            Floors { coarse: 0.30, fine: 0.30, rerank_all: 0.65, mass: 0.18 },
            Floors { coarse: 0.28, fine: 0.28, rerank_all: 0.80, mass: 0.22 },
        ],
    );
}
