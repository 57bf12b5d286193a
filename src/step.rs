//! One decode step over a KV cache the engine owns (llama.cpp's), for one query group and
//! one KV head: which cells are valid comes from the attention mask (-inf = not visible:
//! empty, another sequence, the future), the sink and the local window come from the
//! cells' positions, and everything else visible is the retrieval zone.
//!
//! With positions p of the visible cells, p_min and p_max their extremes: sink cells have
//! p < p_min + n_sink, window cells p > p_max - n_local. When the zone holds no more than
//! top-k cells, every visible cell is attended (dense over the visible cells).

use crate::algorithm::attention::{attend, AttnParams, AttnScratch};
use crate::algorithm::encode::Codes;
use crate::algorithm::gqa::{select_group, GqaPolicy, GroupScratch, Refine};
use crate::algorithm::rotation::Rotation;
use crate::algorithm::search::RatioPolicy;
use crate::error::{Error, Result};
use crate::rows::Rows;
use crate::shape::{Shape, N_CENTROIDS};

/// Settings of a step (static per layer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepParams {
    pub top_k: usize,
    pub n_sink: usize,
    pub n_local: usize,
    pub ratios: RatioPolicy,
    pub gqa: GqaPolicy,
    /// Exact rescoring factor (see `gqa`; 1 or 0: off).
    pub refine: usize,
    pub attn: AttnParams,
}

/// Where each cell stands in this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Hidden,
    Zone,
    Fixed,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    pub n_visible: usize,
    pub n_zone: usize,
    pub n_candidates: usize,
    /// Cells rescored exactly (refine).
    pub n_refined: usize,
    pub n_attended: usize,
    /// The step counted its zone's code histogram itself: it was given none and its index's
    /// kept one (`CacheView::kept`) could not give it.
    pub zone_counted: bool,
}

/// Reusable buffers of a step.
#[derive(Debug, Default)]
pub struct StepScratch {
    class: Vec<Class>,
    cells: Vec<u32>,
    retrieved: Vec<u32>,
    group: GroupScratch,
    attn: AttnScratch,
}

impl StepScratch {
    /// The cells the last step attended, in cell order.
    pub fn attended(&self) -> &[u32] {
        &self.cells
    }
}

/// The cache a step reads: K and V rows, the index of the same cells, and per cell its
/// visibility (`visible[c]`) and position.
pub struct CacheView<'a, V: Fn(usize) -> bool> {
    pub keys: Rows<'a>,
    pub values: Rows<'a>,
    pub codes: Codes<'a>,
    pub visible: V,
    pub pos: &'a [i32],
    /// The code histogram of exactly the retrieval zone (`[block][centroid]`), when the
    /// caller keeps one (an index handle does); the step counts it otherwise.
    pub zone_hist: Option<&'a [u32]>,
    /// The index's kept histogram of all counted cells, when it keeps one (`cpu::kept`): the
    /// fast step takes the zone's from it where that is exact. The oracle always counts.
    pub kept: Option<Kept<'a>>,
}

/// An index's histogram of the codes of every cell flagged in `counted` (`cpu::kept`).
#[derive(Clone, Copy, Debug)]
pub struct Kept<'a> {
    /// `[block][centroid]`.
    pub hist: &'a [u32],
    /// One flag per cell of the index: 1 = its codes are in `hist`.
    pub counted: &'a [u8],
}

/// Checks that the view's rows, positions and codes cover the same cells, with keys of
/// `shape`'s head dim.
pub fn check_view<V: Fn(usize) -> bool>(shape: &Shape, cache: &CacheView<V>) -> Result<()> {
    let n = cache.pos.len();
    if cache.keys.len() != n || cache.values.len() != n || cache.codes.n_cells(shape)? != n {
        return Err(Error::invalid(format!(
            "cache step: {} key rows, {} value rows, {} positions and {} encoded cells disagree",
            cache.keys.len(),
            cache.values.len(),
            n,
            cache.codes.n_cells(shape)?
        )));
    }
    if cache.keys.dim() != shape.head_dim {
        return Err(Error::invalid(format!(
            "cache step: key rows of {} for head_dim {}",
            cache.keys.dim(),
            shape.head_dim
        )));
    }
    if let Some(h) = cache.zone_hist.filter(|h| h.len() != shape.n_blocks * N_CENTROIDS) {
        return Err(Error::invalid(format!(
            "cache step: zone histogram of {} entries, expected {}",
            h.len(),
            shape.n_blocks * N_CENTROIDS
        )));
    }
    Ok(())
}

/// Runs one step: `queries` are the group's heads back to back (`[n_heads][head_dim]`),
/// `out` receives `[n_heads][v_dim]`.
pub fn attend_cache<V: Fn(usize) -> bool>(
    rotation: &Rotation,
    p: &StepParams,
    cache: &CacheView<V>,
    queries: &[f32],
    scratch: &mut StepScratch,
    out: &mut [f32],
) -> Result<StepStats> {
    let shape: Shape = rotation.shape();
    let n = cache.pos.len();
    check_view(&shape, cache)?;

    // Visible cells and the extremes of their positions.
    let (mut p_min, mut p_max, mut n_visible) = (i64::MAX, i64::MIN, 0usize);
    scratch.class.clear();
    scratch.class.extend((0..n).map(|c| {
        if (cache.visible)(c) {
            let p = cache.pos[c] as i64;
            p_min = p_min.min(p);
            p_max = p_max.max(p);
            n_visible += 1;
            Class::Zone
        } else {
            Class::Hidden
        }
    }));
    // the oracle counts the zone's histogram unless given it
    let mut stats = StepStats { n_visible, zone_counted: cache.zone_hist.is_none(), ..StepStats::default() };
    scratch.cells.clear();
    if n_visible > 0 {
        let (sink_end, window_start) = (p_min + p.n_sink as i64, p_max - p.n_local as i64);
        for (class, &pos) in scratch.class.iter_mut().zip(cache.pos) {
            let pos = pos as i64;
            if *class == Class::Zone && (pos < sink_end || pos > window_start) {
                *class = Class::Fixed;
            }
        }
        stats.n_zone = scratch.class.iter().filter(|&&c| c == Class::Zone).count();
        if stats.n_zone <= p.top_k {
            scratch.cells.extend((0..n as u32).filter(|&c| scratch.class[c as usize] != Class::Hidden));
        } else {
            let class = &scratch.class;
            let s = select_group(
                rotation,
                p.gqa,
                queries,
                cache.codes,
                0..n,
                |c: usize| class[c] == Class::Zone,
                cache.zone_hist,
                p.ratios,
                p.top_k,
                Refine { keys: &cache.keys, factor: p.refine, attn: p.attn },
                &mut scratch.group,
                &mut scratch.retrieved,
            )?;
            stats.n_candidates = s.n_candidates;
            stats.n_refined = s.n_refined;
            scratch.cells.extend((0..n as u32).filter(|&c| class[c as usize] == Class::Fixed));
            scratch.cells.extend_from_slice(&scratch.retrieved);
            scratch.cells.sort_unstable();
        }
    }
    stats.n_attended = scratch.cells.len();
    attend(queries, &cache.keys, &cache.values, &scratch.cells, p.attn, &mut scratch.attn, out)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::{encode_rows, CodeStore, EncodeScratch};
    use crate::eval::synth::{Rng, SynthCache, SynthSpec};
    use crate::rows::RowData;

    struct Fixture {
        cache: SynthCache,
        store: CodeStore,
        rotation: Rotation,
    }

    fn fixture(n: usize, d: usize) -> Fixture {
        let shape = Shape::new(d).unwrap();
        let rotation = Rotation::new(shape, 5);
        let cache = SynthCache::generate(&SynthSpec::new(n, d, 9));
        let mut store = CodeStore::default();
        store.grow(&shape, n).unwrap();
        let keys = Rows::packed(RowData::F32(&cache.keys), d).unwrap();
        let cells: Vec<usize> = (0..n).collect();
        encode_rows(&rotation, &keys, &cells, None, &mut store.as_mut(), &mut EncodeScratch::default())
            .unwrap();
        Fixture { cache, store, rotation }
    }

    fn params(top_k: usize) -> StepParams {
        StepParams {
            top_k,
            n_sink: 4,
            n_local: 64,
            ratios: RatioPolicy::Adaptive,
            gqa: GqaPolicy::PerHead,
            refine: 1,
            attn: AttnParams { scale: 0.125, softcap: 0.0 },
        }
    }

    #[test]
    fn sink_window_and_zone_follow_positions_of_visible_cells() {
        // Two sequences interleaved in one cache (as in a unified llama.cpp cache): even
        // cells belong to ours, with positions 0, 1, 2, ...; odd cells are hidden.
        let (n, d) = (2000, 64);
        let f = fixture(n, d);
        let pos: Vec<i32> = (0..n as i32).map(|c| c / 2).collect();
        let keys = Rows::packed(RowData::F32(&f.cache.keys), d).unwrap();
        let values = Rows::packed(RowData::F32(&f.cache.values), d).unwrap();
        let view = CacheView {
            keys,
            values,
            codes: f.store.as_ref(),
            visible: |c: usize| c.is_multiple_of(2),
            pos: &pos,
            zone_hist: None,
            kept: None,
        };
        let q: Vec<f32> = (0..2 * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0; 2 * d];
        let mut s = StepScratch::default();
        let mean = StepParams { gqa: GqaPolicy::Mean, ..params(100) };
        let stats = attend_cache(&f.rotation, &mean, &view, &q, &mut s, &mut out).unwrap();
        assert_eq!(stats.n_visible, 1000);
        assert_eq!(stats.n_zone, 1000 - 4 - 64);
        assert_eq!(stats.n_attended, 4 + 64 + 100);
        // Per head: 50 each, so at most 100 retrieved rows in the union.
        let per_head = attend_cache(&f.rotation, &params(100), &view, &q, &mut s, &mut out).unwrap();
        assert!((4 + 64 + 50..=4 + 64 + 100).contains(&per_head.n_attended), "{per_head:?}");
        assert!(s.cells.iter().all(|&c| c % 2 == 0), "only visible cells");
        assert!((0..4).all(|p| s.cells.contains(&(2 * p))), "sink = the first positions");
        assert!((936..1000).all(|p| s.cells.contains(&(2 * p))), "window = the last positions");
    }

    #[test]
    fn small_zones_attend_every_visible_cell_exactly() {
        let (n, d) = (500, 64);
        let f = fixture(n, d);
        let pos: Vec<i32> = (0..n as i32).collect();
        let keys = Rows::packed(RowData::F32(&f.cache.keys), d).unwrap();
        let values = Rows::packed(RowData::F32(&f.cache.values), d).unwrap();
        let visible = |c: usize| c < 300;
        let view = CacheView {
            keys,
            values,
            codes: f.store.as_ref(),
            visible,
            pos: &pos,
            zone_hist: None,
            kept: None,
        };
        let mut rng = Rng::new(2);
        let q: Vec<f32> = (0..d).map(|_| rng.normal()).collect();
        let (mut out, mut dense) = (vec![0.0; d], vec![0.0; d]);
        let stats =
            attend_cache(&f.rotation, &params(1000), &view, &q, &mut StepScratch::default(), &mut out)
                .unwrap();
        assert_eq!(stats.n_attended, 300);
        let all: Vec<u32> = (0..300).collect();
        attend(&q, &keys, &values, &all, params(0).attn, &mut AttnScratch::default(), &mut dense).unwrap();
        assert_eq!(out, dense);
    }

    #[test]
    fn nothing_visible_gives_zeros_and_mismatched_sizes_fail() {
        let (n, d) = (100, 64);
        let f = fixture(n, d);
        let pos = vec![0i32; n];
        let keys = Rows::packed(RowData::F32(&f.cache.keys), d).unwrap();
        let values = Rows::packed(RowData::F32(&f.cache.values), d).unwrap();
        let view = CacheView {
            keys,
            values,
            codes: f.store.as_ref(),
            visible: |_| false,
            pos: &pos,
            zone_hist: None,
            kept: None,
        };
        let mut out = vec![1.0; d];
        attend_cache(&f.rotation, &params(8), &view, &vec![1.0; d], &mut StepScratch::default(), &mut out)
            .unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
        let short = CacheView { pos: &pos[..50], ..view };
        assert!(attend_cache(
            &f.rotation,
            &params(8),
            &short,
            &vec![1.0; d],
            &mut StepScratch::default(),
            &mut out
        )
        .is_err());
    }
}
