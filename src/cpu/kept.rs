//! The zone's code histogram kept between decode steps, instead of counted every step.
//!
//! An index may keep, beside its codes, a histogram of the codes of every cell flagged as
//! counted (`hist`, `[block][centroid]`) and those flags (`counted`, one byte per cell).
//! Whoever encodes cells keeps them true: before the cells' codes are overwritten it
//! removes the counted ones (`tally`), after it adds them. A step then takes the zone's
//! histogram as the kept one minus the counted cells of its view outside the zone (the
//! sink, the window, hidden cells: a few hundred), which is exact when every zone cell is
//! counted and no counted cell lies outside the view; otherwise it counts as before.

use crate::algorithm::encode::Codes;
use crate::algorithm::search::Tally;
use crate::shape::{Shape, N_CENTROIDS};
pub use crate::step::Kept;

/// Adds the codes of `cells` not yet counted to `hist` and flags them (`Tally::Add`), or
/// removes those counted and clears their flags (`Tally::Remove`).
pub fn tally(shape: &Shape, codes: &Codes, cells: &[usize], hist: &mut [u32], counted: &mut [u8], op: Tally) {
    let blocks: &mut [[u32; N_CENTROIDS]] = hist.as_chunks_mut().0;
    for &c in cells {
        let flag = &mut counted[c];
        let wanted = u8::from(op == Tally::Add);
        if *flag == wanted {
            continue;
        }
        *flag = wanted;
        for (h, &code) in blocks.iter_mut().zip(codes.cell_codes(shape, c)) {
            let n = &mut h[code as usize];
            *n = match op {
                Tally::Add => *n + 1,
                Tally::Remove => *n - 1,
            };
        }
    }
}

/// The zone's histogram into `out` from the kept one, for a view of `in_zone.len()` cells
/// (cell c of the view is cell c of the index) whose zone holds `n_zone` cells; false when
/// the kept one cannot give it exactly (a zone cell not counted, or a counted cell outside
/// the view), and then the caller counts.
pub fn zone_histogram(
    shape: &Shape,
    codes: &Codes,
    kept: &Kept,
    in_zone: &[bool],
    n_zone: usize,
    out: &mut Vec<u32>,
) -> bool {
    let n = in_zone.len();
    if kept.hist.len() != shape.n_blocks * N_CENTROIDS || kept.counted.len() < n {
        return false;
    }
    let counted = &kept.counted[..n];
    let zone_counted = counted.iter().zip(in_zone).filter(|&(&f, &z)| z && f == 1).count();
    if zone_counted != n_zone {
        return false;
    }
    out.clear();
    out.extend_from_slice(kept.hist);
    let blocks: &mut [[u32; N_CENTROIDS]] = out.as_chunks_mut().0;
    let mut removed = 0usize;
    for c in (0..n).filter(|&c| counted[c] == 1 && !in_zone[c]) {
        for (h, &code) in blocks.iter_mut().zip(codes.cell_codes(shape, c)) {
            h[code as usize] -= 1;
        }
        removed += 1;
    }
    // every counted cell is in block 0's histogram once
    let total: usize = kept.hist[..N_CENTROIDS].iter().map(|&x| x as usize).sum();
    total == removed + n_zone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::CodeStore;
    use crate::algorithm::search::histogram;
    use crate::eval::synth::Rng;

    #[test]
    fn kept_histogram_gives_the_zone_or_declines() {
        let mut rng = Rng::new(9);
        let shape = Shape::new(64).unwrap();
        let n = 400;
        let mut store = CodeStore::default();
        store.grow(&shape, n).unwrap();
        for c in store.codes.iter_mut() {
            *c = rng.below(256) as u8;
        }
        let mut hist = vec![0u32; shape.n_blocks * N_CENTROIDS];
        let mut counted = vec![0u8; n];
        let all: Vec<usize> = (0..n).collect();
        tally(&shape, &store.as_ref(), &all, &mut hist, &mut counted, Tally::Add);
        tally(&shape, &store.as_ref(), &all[..10], &mut hist, &mut counted, Tally::Add); // counted once
                                                                                         // rewrite cells 5..15 as an encode does: out, new codes, in
        tally(&shape, &store.as_ref(), &all[5..15], &mut hist, &mut counted, Tally::Remove);
        for c in 5..15 {
            store.codes[c * shape.n_blocks] ^= 0x5A;
        }
        tally(&shape, &store.as_ref(), &all[5..15], &mut hist, &mut counted, Tally::Add);
        let mut want = Vec::new();
        histogram(&shape, &store.as_ref(), 0..n, |_| true, &mut want);
        assert_eq!(hist, want, "the kept histogram follows rewrites");

        let view = 300; // cells 300.. counted but outside the view
        let in_zone: Vec<bool> = (0..view).map(|c| c % 7 != 0 && c > 4).collect();
        let n_zone = in_zone.iter().filter(|&&z| z).count();
        let kept = Kept { hist: &hist, counted: &counted };
        let mut got = Vec::new();
        assert!(
            !zone_histogram(&shape, &store.as_ref(), &kept, &in_zone, n_zone, &mut got),
            "cells outside the view"
        );
        let all_view: Vec<bool> = (0..n).map(|c| c % 7 != 0 && c > 4).collect();
        let n_zone = all_view.iter().filter(|&&z| z).count();
        assert!(zone_histogram(&shape, &store.as_ref(), &kept, &all_view, n_zone, &mut got));
        histogram(&shape, &store.as_ref(), 0..n, |c| all_view[c], &mut want);
        assert_eq!(got, want, "the zone's histogram");
        let mut uncounted = counted.clone();
        uncounted[6] = 0;
        let kept = Kept { hist: &hist, counted: &uncounted };
        assert!(
            !zone_histogram(&shape, &store.as_ref(), &kept, &all_view, n_zone, &mut got),
            "a zone cell not counted"
        );
    }
}
