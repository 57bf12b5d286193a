//! Candidates from the collision planes (`collide`): for each retrieval, the cells counted
//! above its cutoff, and at the cutoff while it still takes ties (lower cells first:
//! `search::candidates`). The group policy needs only their union, per-head and mean each
//! retrieval's list. With AVX-512 32 cells are compared at once per retrieval and the taken
//! ones written by a compressing store; ties are taken from a chunk's lowest cells up.

use std::ops::Range;

use crate::cpu::collide::NOT_COUNTED;

/// The counts of retrieval r over cells `range` from the planes (`[retrieval][n]`).
#[inline]
fn plane<'a>(planes: &'a [u16], n: usize, r: usize, range: &Range<usize>) -> &'a [u16] {
    &planes[r * n + range.start..r * n + range.end]
}

/// Whether retrieval r takes a cell of count `x` (cutoff `cut`, `ties` left at it).
#[inline]
fn takes(x: u16, cut: u16, ties: &mut usize) -> bool {
    if x == NOT_COUNTED || x < cut {
        return false;
    }
    if x > cut {
        return true;
    }
    let tie = *ties > 0;
    *ties -= usize::from(tie);
    tie
}

/// The union over the retrievals' candidates among `range`, in cell order, into `out`.
pub fn union(
    planes: &[u16],
    n: usize,
    cuts: &[u16],
    range: Range<usize>,
    ties: &mut [usize],
    out: &mut Vec<u32>,
) {
    out.clear();
    let mut start = range.start;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        let bulk = range.len() / 32 * 32;
        // SAFETY: AVX-512 F and BW detected; the planes hold n cells per retrieval.
        unsafe { avx512::union(planes, n, cuts, range.start..range.start + bulk, ties, out) };
        start += bulk;
    }
    for c in start..range.end {
        let mut taken = false;
        for (r, (&cut, t)) in cuts.iter().zip(ties.iter_mut()).enumerate() {
            taken |= takes(planes[r * n + c], cut, t);
        }
        if taken {
            out.push(c as u32);
        }
    }
}

/// Each retrieval's candidates among `range`, in cell order, into `lists[r]`.
pub fn lists(
    planes: &[u16],
    n: usize,
    cuts: &[u16],
    range: Range<usize>,
    ties: &mut [usize],
    lists: &mut [Vec<u32>],
) {
    for (r, ((&cut, t), list)) in cuts.iter().zip(ties.iter_mut()).zip(lists.iter_mut()).enumerate() {
        list.clear();
        let counts = plane(planes, n, r, &range);
        let mut start = 0;
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            start = counts.len() / 32 * 32;
            // SAFETY: AVX-512 F and BW detected.
            unsafe { avx512::list(&counts[..start], range.start, cut, t, list) };
        }
        for (i, &x) in counts.iter().enumerate().skip(start) {
            if takes(x, cut, t) {
                list.push((range.start + i) as u32);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Range, NOT_COUNTED};

    /// The cells of a chunk of 32 counts one retrieval takes, as a mask, consuming its ties
    /// from the lowest cells up.
    #[inline(always)]
    unsafe fn taken(counts: __m512i, cut: u16, ties: &mut usize) -> u32 {
        let counted = _mm512_cmpneq_epu16_mask(counts, _mm512_set1_epi16(NOT_COUNTED as i16));
        let cut = _mm512_set1_epi16(cut as i16);
        let above = _mm512_mask_cmpgt_epu16_mask(counted, counts, cut);
        let mut at = _mm512_mask_cmpeq_epu16_mask(counted, counts, cut);
        if at == 0 || *ties == 0 {
            return above;
        }
        let k = at.count_ones() as usize;
        if k <= *ties {
            *ties -= k;
            return above | at;
        }
        let mut some = 0u32;
        for _ in 0..*ties {
            let lowest = at & at.wrapping_neg();
            some |= lowest;
            at ^= lowest;
        }
        *ties = 0;
        above | some
    }

    /// Appends `first + i` for every set bit i of `mask` (32 cells) to `out`.
    #[inline(always)]
    unsafe fn emit(mask: u32, first: usize, out: &mut Vec<u32>) {
        out.reserve(32);
        let base = _mm512_add_epi32(
            _mm512_set1_epi32(first as i32),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        let len = out.len();
        let dst = out.as_mut_ptr().add(len);
        let lo = mask as u16;
        _mm512_mask_compressstoreu_epi32(dst as *mut i32, lo, base);
        let n_lo = lo.count_ones() as usize;
        _mm512_mask_compressstoreu_epi32(
            dst.add(n_lo) as *mut i32,
            (mask >> 16) as u16,
            _mm512_add_epi32(base, _mm512_set1_epi32(16)),
        );
        // SAFETY: 32 slots were reserved and the stores wrote popcount(mask) of them.
        out.set_len(len + mask.count_ones() as usize);
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn union(
        planes: &[u16],
        n: usize,
        cuts: &[u16],
        range: Range<usize>,
        ties: &mut [usize],
        out: &mut Vec<u32>,
    ) {
        assert!(cuts.len() <= ties.len() && planes.len() >= cuts.len() * n && range.end <= n);
        for c0 in range.step_by(32) {
            let mut mask = 0u32;
            for (r, (&cut, t)) in cuts.iter().zip(ties.iter_mut()).enumerate() {
                let counts = _mm512_loadu_si512(planes.as_ptr().add(r * n + c0) as *const __m512i);
                mask |= taken(counts, cut, t);
            }
            emit(mask, c0, out);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn list(counts: &[u16], first: usize, cut: u16, ties: &mut usize, out: &mut Vec<u32>) {
        for (i, chunk) in counts.chunks_exact(32).enumerate() {
            let mask = taken(_mm512_loadu_si512(chunk.as_ptr() as *const __m512i), cut, ties);
            emit(mask, first + 32 * i, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::synth::Rng;

    /// Against the plain rule, cell by cell, with many cells at the cutoffs, cells outside
    /// the zone and ranges that do not start at 0.
    #[test]
    fn union_and_lists_follow_the_rule() {
        let mut rng = Rng::new(5);
        let n = 1000;
        for nr in [1, 3, 6] {
            let planes: Vec<u16> = (0..nr * n)
                .map(|_| if rng.below(7) == 0 { NOT_COUNTED } else { 10 + rng.below(6) as u16 })
                .collect();
            let cuts: Vec<u16> = (0..nr).map(|r| 12 + (r % 3) as u16).collect();
            for range in [0..n, 7..n - 3, 64..96, 5..5] {
                for ties0 in [0usize, 3, 40, 10_000] {
                    let mut want_lists = vec![Vec::new(); nr];
                    let mut want_union = Vec::new();
                    let mut t = vec![ties0; nr];
                    for c in range.clone() {
                        let mut any = false;
                        for r in 0..nr {
                            if takes(planes[r * n + c], cuts[r], &mut t[r]) {
                                want_lists[r].push(c as u32);
                                any = true;
                            }
                        }
                        if any {
                            want_union.push(c as u32);
                        }
                    }
                    let mut got = Vec::new();
                    let mut t_union = vec![ties0; nr];
                    union(&planes, n, &cuts, range.clone(), &mut t_union, &mut got);
                    assert_eq!(got, want_union, "{nr} retrievals, {range:?}, ties {ties0}");
                    assert_eq!(t_union, t, "ties left");
                    let mut got_lists = vec![Vec::new(); nr];
                    let mut t_lists = vec![ties0; nr];
                    lists(&planes, n, &cuts, range.clone(), &mut t_lists, &mut got_lists);
                    assert_eq!(got_lists, want_lists, "{nr} retrievals, {range:?}, ties {ties0}");
                    assert_eq!(t_lists, t, "ties left");
                }
            }
        }
    }
}
