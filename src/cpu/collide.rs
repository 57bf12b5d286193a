//! Collision counts of every retrieval of a group in one pass over the zone's codes.
//!
//! A retrieval's count for a cell is the sum over blocks of its tier level of the cell's
//! code (`search::collision_counts`). Levels are at most `N_TIERS`, so with few enough
//! blocks a count fits in a byte: the levels of up to eight retrievals are packed into one
//! u64 per (block, centroid), and one u64 addition per block counts them all without
//! carries between lanes. Larger head dims use 16-bit lanes (four retrievals a word).
//! Retrievals beyond one word take further passes.

use crate::algorithm::encode::Codes;
use crate::shape::{Shape, N_CENTROIDS, N_TIERS};

/// How retrievals are packed into u64 words for a shape.
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

    /// The top bit of each lane.
    #[inline]
    fn high(&self) -> u64 {
        if self.bits == 8 {
            0x8080_8080_8080_8080
        } else {
            0x8000_8000_8000_8000
        }
    }

    /// Lane by lane, whether `a >= b` and whether `a == b`, as the top bit of each lane
    /// (no carry crosses a lane: each lane's low bits are compared with the top bit set
    /// aside).
    #[inline]
    pub fn at_least_and_equal(&self, a: u64, b: u64) -> (u64, u64) {
        let h = self.high();
        let low_ge = (a | h).wrapping_sub(b & !h); // top bit: a's low bits >= b's
        let ge = ((a & !b) | (!(a ^ b) & low_ge)) & h;
        let x = a ^ b;
        let nonzero = ((x & !h).wrapping_add(!h) | x) & h;
        (ge, !nonzero & h)
    }

    /// The lanes whose top bit `mask` sets, lowest first.
    #[inline]
    pub fn set_lanes(&self, mut mask: u64) -> impl Iterator<Item = usize> {
        let bits = self.bits;
        std::iter::from_fn(move || {
            (mask != 0).then(|| {
                let bit = mask.trailing_zeros();
                mask &= mask - 1;
                (bit / bits) as usize
            })
        })
    }

    /// Whether lane l's top bit is set in `mask`.
    #[inline]
    pub fn lane_set(&self, mask: u64, l: usize) -> bool {
        mask >> ((l as u32 + 1) * self.bits - 1) & 1 == 1
    }
}

/// Counts of every retrieval for the cells of a zone.
#[derive(Clone, Debug, Default)]
pub struct GroupCounts {
    pub lanes: Option<Lanes>,
    pub retrievals: usize,
    /// `[word][block][centroid]`: packed tier levels.
    table: Vec<u64>,
    /// `[word][cell]`: packed counts; cells outside the zone hold 0 and are never read.
    pub counts: Vec<u64>,
    /// `[retrieval][count]`: how many zone cells have each count.
    pub hist: Vec<u32>,
    n_cells: usize,
    hist_len: usize,
}

impl GroupCounts {
    /// Words per cell.
    pub fn words(&self) -> usize {
        self.retrievals.div_ceil(self.lanes.map_or(1, |l| l.per_word))
    }

    /// Retrieval r's count of cell `cell`.
    #[inline]
    pub fn count(&self, r: usize, cell: usize) -> u16 {
        let lanes = self.lanes.expect("counted");
        lanes.get(self.counts[(r / lanes.per_word) * self.n_cells + cell], r)
    }

    /// Retrieval r's histogram of counts (`max_collisions + 1` entries).
    pub fn histogram(&self, r: usize) -> &[u32] {
        &self.hist[r * self.hist_len..][..self.hist_len]
    }

    /// Entries of the histograms of all retrievals (`[retrieval][count]`).
    pub fn hist_size(&self) -> usize {
        self.retrievals * self.hist_len
    }

    /// Packs the tier levels of the retrievals `levels` holds back to back
    /// (`[retrieval][block][centroid]`, as `search::tier_levels` writes them) for counting
    /// `n_cells` cells, and sizes the counts.
    pub fn prepare(&mut self, shape: &Shape, n_cells: usize, levels: &[u8]) {
        let table_len = shape.n_blocks * N_CENTROIDS;
        let lanes = Lanes::for_shape(shape);
        debug_assert!(N_TIERS * shape.n_blocks < 1 << lanes.bits);
        self.lanes = Some(lanes);
        self.retrievals = levels.len() / table_len;
        self.n_cells = n_cells;
        self.hist_len = shape.max_collisions() + 1;
        let words = self.words();
        self.table.clear();
        self.table.resize(words * table_len, 0);
        for (r, lv) in levels.chunks_exact(table_len).enumerate() {
            let (word, shift) = (r / lanes.per_word, (r % lanes.per_word) as u32 * lanes.bits);
            for (t, &l) in self.table[word * table_len..][..table_len].iter_mut().zip(lv) {
                *t |= (l as u64) << shift;
            }
        }
        self.counts.clear();
        self.counts.resize(words * n_cells, 0);
        self.hist.clear();
        self.hist.resize(self.hist_size(), 0);
    }

    /// Counts the zone cells (`in_zone`) of `cells` into `counts`, word w's counts of these
    /// cells at `counts[w]` (`[word][cell of the range]`), and adds their histograms to
    /// `hist` (`[retrieval][count]`). Ranges may be counted on different threads.
    pub fn count_range(
        &self,
        shape: &Shape,
        codes: &Codes,
        cells: std::ops::Range<usize>,
        in_zone: &[bool],
        counts: &mut [&mut [u64]],
        hist: &mut [u32],
    ) {
        let lanes = self.lanes.expect("prepared");
        let (nb, table_len) = (shape.n_blocks, shape.n_blocks * N_CENTROIDS);
        for (w, counts) in counts.iter_mut().enumerate() {
            let table: &[[u64; N_CENTROIDS]] = as_blocks(&self.table[w * table_len..][..table_len]);
            let first = w * lanes.per_word;
            let (lo, hi) = (first, self.retrievals.min(first + lanes.per_word));
            let hist = &mut hist[lo * self.hist_len..hi * self.hist_len];
            let rows = codes.codes[cells.start * nb..cells.end * nb].chunks_exact(nb);
            for ((count, row), _) in
                counts.iter_mut().zip(rows).zip(&in_zone[cells.clone()]).filter(|(_, &z)| z)
            {
                let mut sum = 0u64;
                for (t, &c) in table.iter().zip(row) {
                    sum += t[c as usize];
                }
                *count = sum;
                for (r, h) in hist.chunks_exact_mut(self.hist_len).enumerate() {
                    h[lanes.get(sum, r) as usize] += 1;
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
        let mut hist = std::mem::take(&mut self.hist);
        let mut counts = std::mem::take(&mut self.counts);
        let mut words: Vec<&mut [u64]> = counts.chunks_exact_mut(n_cells.max(1)).take(self.words()).collect();
        self.count_range(shape, codes, 0..n_cells, in_zone, &mut words, &mut hist);
        self.hist = hist;
        self.counts = counts;
    }
}

/// `[block][centroid]` tables as fixed-size rows, so that a code byte indexes without checks.
fn as_blocks(table: &[u64]) -> &[[u64; N_CENTROIDS]] {
    let (rows, rest) = table.as_chunks::<N_CENTROIDS>();
    debug_assert!(rest.is_empty());
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::encode::CodeStore;
    use crate::algorithm::search::{collision_counts, NOT_IN_ZONE};
    use crate::eval::synth::Rng;

    /// The lane comparisons against plain ones, over every pair of 8-bit values and a
    /// sweep of 16-bit ones, in every lane.
    #[test]
    fn lane_comparisons_are_exact() {
        for lanes in [Lanes { bits: 8, per_word: 8 }, Lanes { bits: 16, per_word: 4 }] {
            let max: u64 = if lanes.bits == 8 { 255 } else { 65535 };
            let step = if lanes.bits == 8 { 1 } else { 257 };
            let mut rng = Rng::new(lanes.bits as u64);
            for a in (0..=max).step_by(step) {
                for b in (0..=max).step_by(step) {
                    for l in 0..lanes.per_word {
                        // the other lanes random: no carry may reach lane l
                        let mut wa = rng.next_u64();
                        let mut wb = rng.next_u64();
                        let shift = l as u32 * lanes.bits;
                        let m = max << shift;
                        wa = (wa & !m) | a << shift;
                        wb = (wb & !m) | b << shift;
                        let (ge, eq) = lanes.at_least_and_equal(wa, wb);
                        assert_eq!(lanes.lane_set(ge, l), a >= b, "{a} >= {b}, lane {l}");
                        assert_eq!(lanes.lane_set(eq, l), a == b, "{a} == {b}, lane {l}");
                        assert!(lanes.set_lanes(ge).all(|x| x < lanes.per_word));
                    }
                }
            }
        }
    }

    #[test]
    fn packed_counts_equal_one_retrieval_at_a_time() {
        let mut rng = Rng::new(3);
        for d in [8, 64, 128, 256, 512] {
            let shape = Shape::new(d).unwrap();
            let n = 500;
            let mut store = CodeStore::default();
            store.grow(&shape, n).unwrap();
            for c in store.codes.iter_mut() {
                *c = rng.below(256) as u8;
            }
            let in_zone: Vec<bool> = (0..n).map(|c| c % 5 != 2).collect();
            for retrievals in [1, 4, 6, 9, 17] {
                let table_len = shape.n_blocks * N_CENTROIDS;
                // levels skewed to the top so that counts reach the lane's limit
                let levels: Vec<u8> = (0..retrievals * table_len)
                    .map(|i| if i % 3 == 0 { N_TIERS as u8 } else { rng.below(N_TIERS + 1) as u8 })
                    .collect();
                let mut g = GroupCounts::default();
                g.count_all(&shape, &store.as_ref(), n, &in_zone, &levels);
                for (r, lv) in levels.chunks_exact(table_len).enumerate() {
                    let mut want = Vec::new();
                    collision_counts(&shape, &store.as_ref(), 0..n, |c| in_zone[c], lv, &mut want);
                    let mut hist = vec![0u32; shape.max_collisions() + 1];
                    for c in 0..n {
                        if want[c] != NOT_IN_ZONE {
                            assert_eq!(
                                g.count(r, c),
                                want[c],
                                "d {d}, retrieval {r} of {retrievals}, cell {c}"
                            );
                            hist[want[c] as usize] += 1;
                        }
                    }
                    assert_eq!(g.histogram(r), &hist[..]);
                }
            }
        }
    }
}
