//! Collision counts of every retrieval of a group in one pass over the zone's codes, kept
//! as planes: `planes[r * n + c]` is retrieval r's count of cell c (`search::
//! collision_counts`), `NOT_COUNTED` for a cell outside the zone.
//!
//! Two kernels give the same counts:
//! - scalar: the levels of up to eight retrievals packed into one u64 per (block,
//!   centroid), so that one addition per block counts all of them without carries
//!   between lanes (8-bit lanes while counts fit a byte, 16-bit past 42 blocks);
//! - AVX-512 VBMI (16 or 32 blocks, head dims 128 and 256): 64 cells at a time, their codes
//!   transposed to one vector per block, each retrieval's level of 64 codes looked up by two
//!   128-entry byte permutes, the counts added as bytes.

use crate::algorithm::encode::Codes;
use crate::shape::{Shape, N_CENTROIDS, N_TIERS};

/// A cell outside the zone in the planes (counts never come near it).
pub const NOT_COUNTED: u16 = u16::MAX;

/// How retrievals are packed into u64 words for the scalar kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lanes {
    /// Bits per retrieval's count: 8 or 16.
    pub bits: u32,
    /// Retrievals per word.
    pub per_word: usize,
}

impl Lanes {
    pub fn for_shape(shape: &Shape) -> Lanes {
        if shape.max_collisions() <= u8::MAX as usize {
            Lanes { bits: 8, per_word: 8 }
        } else {
            Lanes { bits: 16, per_word: 4 }
        }
    }

    /// Retrieval r's count from its word.
    #[inline]
    pub fn get(&self, word: u64, r: usize) -> u16 {
        let lane = (r % self.per_word) as u32 * self.bits;
        ((word >> lane) & ((1u64 << self.bits) - 1)) as u16
    }
}

/// Which kernel counts for a shape on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Vbmi,
}

impl Kernel {
    pub fn best(shape: &Shape) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if (shape.n_blocks == 16 || shape.n_blocks == 32)
            && shape.max_collisions() < u8::MAX as usize
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
        {
            return Kernel::Vbmi;
        }
        let _ = shape;
        Kernel::Scalar
    }
}

/// Counts of every retrieval for the cells of a zone.
#[derive(Clone, Debug, Default)]
pub struct GroupCounts {
    pub retrievals: usize,
    n_cells: usize,
    hist_len: usize,
    /// `[retrieval][block][centroid]`: the tier levels.
    levels: Vec<u8>,
    /// `[word][block][centroid]`: the levels packed for the scalar kernel.
    packed: Vec<u64>,
    lanes: Option<Lanes>,
    /// `[retrieval][cell]`.
    pub planes: Vec<u16>,
    /// `[retrieval][count]`: how many zone cells have each count.
    pub hist: Vec<u32>,
}

impl GroupCounts {
    /// Retrieval r's count of cell `cell` (`NOT_COUNTED` outside the zone).
    #[inline]
    pub fn count(&self, r: usize, cell: usize) -> u16 {
        self.planes[r * self.n_cells + cell]
    }

    /// Retrieval r's counts of every cell.
    pub fn plane(&self, r: usize) -> &[u16] {
        &self.planes[r * self.n_cells..][..self.n_cells]
    }

    /// Retrieval r's histogram of counts (`max_collisions + 1` entries).
    pub fn histogram(&self, r: usize) -> &[u32] {
        &self.hist[r * self.hist_len..][..self.hist_len]
    }

    /// Entries of the histograms of all retrievals (`[retrieval][count]`).
    pub fn hist_size(&self) -> usize {
        self.retrievals * self.hist_len
    }

    /// Takes the tier levels of the retrievals `levels` holds back to back
    /// (`[retrieval][block][centroid]`, as `search::tier_levels` writes them) for counting
    /// `n_cells` cells, and sizes the planes.
    pub fn prepare(&mut self, shape: &Shape, n_cells: usize, levels: &[u8]) {
        let table_len = shape.n_blocks * N_CENTROIDS;
        let lanes = Lanes::for_shape(shape);
        debug_assert!(N_TIERS * shape.n_blocks < 1 << lanes.bits);
        self.retrievals = levels.len() / table_len;
        self.n_cells = n_cells;
        self.hist_len = shape.max_collisions() + 1;
        self.levels.clear();
        self.levels.extend_from_slice(levels);
        let words = self.retrievals.div_ceil(lanes.per_word);
        self.packed.clear();
        self.packed.resize(words * table_len, 0);
        for (r, lv) in levels.chunks_exact(table_len).enumerate() {
            let (word, shift) = (r / lanes.per_word, (r % lanes.per_word) as u32 * lanes.bits);
            for (t, &l) in self.packed[word * table_len..][..table_len].iter_mut().zip(lv) {
                *t |= (l as u64) << shift;
            }
        }
        self.lanes = Some(lanes);
        self.planes.clear();
        self.planes.resize(self.retrievals * n_cells, NOT_COUNTED);
        self.hist.clear();
        self.hist.resize(self.hist_size(), 0);
    }

    /// Counts the cells `cells` into `planes` (each retrieval's share of its plane, in
    /// retrieval order) and adds the zone cells' counts to `hist` (`[retrieval][count]`).
    /// Ranges may be counted on different threads.
    #[allow(clippy::too_many_arguments)]
    pub fn count_range(
        &self,
        kernel: Kernel,
        shape: &Shape,
        codes: &Codes,
        cells: std::ops::Range<usize>,
        in_zone: &[bool],
        planes: &mut [&mut [u16]],
        hist: &mut [u32],
    ) {
        assert!(planes.len() == self.retrievals && planes.iter().all(|p| p.len() == cells.len()));
        assert!(cells.end <= in_zone.len() && codes.codes.len() >= cells.end * shape.n_blocks);
        let mut done = cells.start;
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Vbmi {
            let bulk = cells.len() / 64 * 64;
            // SAFETY: `Kernel::best` chose it after detecting AVX-512 F, BW and VBMI, for 16
            // or 32 blocks; the cells and planes were checked above.
            unsafe { vbmi::count(self, shape, codes, cells.start, bulk, in_zone, planes) };
            done += bulk;
        }
        let _ = kernel;
        self.count_scalar(shape, codes, done..cells.end, cells.start, in_zone, planes);
        for (r, plane) in planes.iter().enumerate() {
            add_histogram(plane, &mut hist[r * self.hist_len..][..self.hist_len]);
        }
    }

    /// The scalar kernel for `cells`, the planes' shares starting at cell `first`.
    fn count_scalar(
        &self,
        shape: &Shape,
        codes: &Codes,
        cells: std::ops::Range<usize>,
        first: usize,
        in_zone: &[bool],
        planes: &mut [&mut [u16]],
    ) {
        let lanes = self.lanes.expect("prepared");
        let (nb, table_len) = (shape.n_blocks, shape.n_blocks * N_CENTROIDS);
        for (w, packed) in self.packed.chunks_exact(table_len).enumerate() {
            let table: &[[u64; N_CENTROIDS]] = packed.as_chunks().0;
            let lo = w * lanes.per_word;
            let hi = self.retrievals.min(lo + lanes.per_word);
            for c in cells.clone() {
                let i = c - first;
                if !in_zone[c] {
                    for plane in &mut planes[lo..hi] {
                        plane[i] = NOT_COUNTED;
                    }
                    continue;
                }
                let mut sum = 0u64;
                for (t, &code) in table.iter().zip(&codes.codes[c * nb..(c + 1) * nb]) {
                    sum += t[code as usize];
                }
                for (r, plane) in (lo..hi).zip(&mut planes[lo..hi]) {
                    plane[i] = lanes.get(sum, r);
                }
            }
        }
    }

    /// Counts every zone cell on this thread (`prepare`, then `count_range` over all).
    pub fn count_all(
        &mut self,
        shape: &Shape,
        codes: &Codes,
        n_cells: usize,
        in_zone: &[bool],
        levels: &[u8],
    ) {
        self.prepare(shape, n_cells, levels);
        let mut planes = std::mem::take(&mut self.planes);
        let mut hist = std::mem::take(&mut self.hist);
        {
            let mut shares: Vec<&mut [u16]> =
                planes.chunks_mut(n_cells.max(1)).take(self.retrievals).collect();
            shares.resize_with(self.retrievals, Default::default);
            let kernel = Kernel::best(shape);
            self.count_range(kernel, shape, codes, 0..n_cells, in_zone, &mut shares, &mut hist);
        }
        self.planes = planes;
        self.hist = hist;
    }
}

/// Adds a plane's counts to a histogram (cells outside the zone skipped), in four copies
/// that consecutive cells take in turn: neighbouring cells often share a count, and one
/// copy would make each increment wait for the last.
fn add_histogram(plane: &[u16], hist: &mut [u32]) {
    let len = hist.len();
    let mut copies = vec![0u32; 4 * (len + 1)];
    let (chunks, rest) = plane.as_chunks::<4>();
    for c in chunks {
        for (k, &v) in c.iter().enumerate() {
            let v = (v as usize).min(len); // NOT_COUNTED into the spare last bin
            copies[k * (len + 1) + v] += 1;
        }
    }
    for &v in rest {
        copies[(v as usize).min(len)] += 1;
    }
    for copy in copies.chunks_exact(len + 1) {
        for (h, &x) in hist.iter_mut().zip(copy) {
            *h += x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vbmi {
    use std::arch::x86_64::*;

    use super::{Codes, GroupCounts, Shape, NOT_COUNTED, N_CENTROIDS};

    /// Transposes 16 vectors of 16 dwords: `r[j]` lane b becomes `r[b]` lane j.
    #[inline(always)]
    unsafe fn transpose16(r: &mut [__m512i; 16]) {
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        for i in 0..4 {
            r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for i in 0..2 {
            for k in 0..4 {
                t[8 * i + k] = _mm512_shuffle_i32x4::<0x88>(r[8 * i + k], r[8 * i + 4 + k]);
                t[8 * i + 4 + k] = _mm512_shuffle_i32x4::<0xdd>(r[8 * i + k], r[8 * i + 4 + k]);
            }
        }
        for k in 0..8 {
            r[k] = _mm512_shuffle_i32x4::<0x88>(t[k], t[8 + k]);
            r[8 + k] = _mm512_shuffle_i32x4::<0xdd>(t[k], t[8 + k]);
        }
    }

    /// Cells `first..first + n` (n a multiple of 64) into the planes' shares, which start
    /// at cell `first`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn count(
        g: &GroupCounts,
        shape: &Shape,
        codes: &Codes,
        first: usize,
        n: usize,
        in_zone: &[bool],
        planes: &mut [&mut [u16]],
    ) {
        let nb = shape.n_blocks;
        // within 4 cells of 16 code bytes, byte (k, b) to position 4 b + k: each dword then
        // holds one block of the 4 cells
        let block_major = _mm512_loadu_si512(
            std::array::from_fn::<u8, 64, _>(|p| ((p % 4) * 16 + p / 4) as u8).as_ptr() as *const __m512i,
        );
        let not_counted = _mm512_set1_epi16(NOT_COUNTED as i16);
        let mut blocks = [_mm512_setzero_si512(); 32];
        for c0 in (first..first + n).step_by(64) {
            // blocks[b] lane i: cell c0 + i's code of block b
            for half in 0..nb / 16 {
                let mut r = [_mm512_setzero_si512(); 16];
                for (j, row) in r.iter_mut().enumerate() {
                    // cells c0 + 4j .. c0 + 4j + 4, blocks 16 half .. 16 half + 16
                    let at = |k: usize| {
                        codes.codes.as_ptr().add((c0 + 4 * j + k) * nb + 16 * half) as *const __m128i
                    };
                    let v = if nb == 16 {
                        _mm512_loadu_si512(at(0) as *const __m512i)
                    } else {
                        let v = _mm512_castsi128_si512(_mm_loadu_si128(at(0)));
                        let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(at(1)));
                        let v = _mm512_inserti32x4::<2>(v, _mm_loadu_si128(at(2)));
                        _mm512_inserti32x4::<3>(v, _mm_loadu_si128(at(3)))
                    };
                    *row = _mm512_permutexvar_epi8(block_major, v);
                }
                transpose16(&mut r);
                blocks[16 * half..16 * half + 16].copy_from_slice(&r);
            }
            let high: [__mmask64; 32] =
                std::array::from_fn(|b| if b < nb { _mm512_movepi8_mask(blocks[b]) } else { 0 });
            let zone = _mm512_cmpneq_epi8_mask(
                _mm512_loadu_si512(in_zone.as_ptr().add(c0) as *const __m512i),
                _mm512_setzero_si512(),
            );
            for (r, plane) in planes.iter_mut().enumerate() {
                let levels = &g.levels[r * nb * N_CENTROIDS..][..nb * N_CENTROIDS];
                let mut acc = _mm512_setzero_si512();
                for b in 0..nb {
                    let t = levels.as_ptr().add(b * N_CENTROIDS) as *const __m512i;
                    let lo = _mm512_permutex2var_epi8(
                        _mm512_loadu_si512(t),
                        blocks[b],
                        _mm512_loadu_si512(t.add(1)),
                    );
                    let hi = _mm512_permutex2var_epi8(
                        _mm512_loadu_si512(t.add(2)),
                        blocks[b],
                        _mm512_loadu_si512(t.add(3)),
                    );
                    acc = _mm512_add_epi8(acc, _mm512_mask_blend_epi8(high[b], lo, hi));
                }
                // widen to u16, NOT_COUNTED outside the zone
                let out = plane.as_mut_ptr().add(c0 - first) as *mut __m512i;
                let lo = _mm512_cvtepu8_epi16(_mm512_castsi512_si256(acc));
                let hi = _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64::<1>(acc));
                _mm512_storeu_si512(out, _mm512_mask_blend_epi16(zone as __mmask32, not_counted, lo));
                _mm512_storeu_si512(
                    out.add(1),
                    _mm512_mask_blend_epi16((zone >> 32) as __mmask32, not_counted, hi),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::CodeStore;
    use crate::algorithm::search::{collision_counts, NOT_IN_ZONE};
    use crate::eval::synth::Rng;

    /// Every kernel this CPU has against the oracle's counts, retrieval by retrieval, with
    /// ranges that are not multiples of 64 and do not start at 0.
    #[test]
    fn planes_equal_one_retrieval_at_a_time() {
        let mut rng = Rng::new(3);
        for d in [8, 64, 128, 256, 512] {
            let shape = Shape::new(d).unwrap();
            let n = 700;
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            for c in store.codes.iter_mut() {
                *c = rng.below(256) as u8;
            }
            let in_zone: Vec<bool> = (0..n).map(|c| c % 5 != 2 && c != 69).collect();
            let mut kernels = vec![Kernel::Scalar];
            if Kernel::best(&shape) != Kernel::Scalar {
                kernels.push(Kernel::best(&shape));
            }
            for retrievals in [1, 4, 6, 9, 17] {
                let table_len = shape.n_blocks * N_CENTROIDS;
                // levels skewed to the top so that counts reach the lane's limit
                let levels: Vec<u8> = (0..retrievals * table_len)
                    .map(|i| if i % 3 == 0 { N_TIERS as u8 } else { rng.below(N_TIERS + 1) as u8 })
                    .collect();
                for &kernel in &kernels {
                    for range in [0..n, 3..n - 5, 100..164, 0..0] {
                        let mut g = GroupCounts::default();
                        g.prepare(&shape, n, &levels);
                        let mut planes = vec![vec![7u16; range.len()]; retrievals];
                        let mut shares: Vec<&mut [u16]> = planes.iter_mut().map(|p| &mut p[..]).collect();
                        let mut hist = vec![0u32; g.hist_size()];
                        g.count_range(
                            kernel,
                            &shape,
                            &store.as_ref(),
                            range.clone(),
                            &in_zone,
                            &mut shares,
                            &mut hist,
                        );
                        for (r, lv) in levels.chunks_exact(table_len).enumerate() {
                            let mut want = Vec::new();
                            collision_counts(
                                &shape,
                                &store.as_ref(),
                                range.clone(),
                                |c| in_zone[c],
                                lv,
                                &mut want,
                            );
                            let want: Vec<u16> = want
                                .iter()
                                .map(|&x| if x == NOT_IN_ZONE { NOT_COUNTED } else { x })
                                .collect();
                            assert_eq!(
                                planes[r], want,
                                "d {d}, {kernel:?}, retrieval {r} of {retrievals}, {range:?}"
                            );
                            let mut h = vec![0u32; shape.max_collisions() + 1];
                            for &x in want.iter().filter(|&&x| x != NOT_COUNTED) {
                                h[x as usize] += 1;
                            }
                            assert_eq!(&hist[r * h.len()..][..h.len()], &h[..], "histogram {r}");
                        }
                    }
                }
            }
        }
    }
}
