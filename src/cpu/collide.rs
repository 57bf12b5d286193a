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
    pub fn histogram(&self, r: usize, shape: &Shape) -> &[u32] {
        let len = shape.max_collisions() + 1;
        &self.hist[r * len..][..len]
    }

    /// Counts every zone cell (`in_zone`) of `0..n_cells` for the retrievals whose tier
    /// levels `levels` holds back to back (`[retrieval][block][centroid]`, as
    /// `search::tier_levels` writes them), and their histograms.
    pub fn count_all(
        &mut self,
        shape: &Shape,
        codes: &Codes,
        n_cells: usize,
        in_zone: &[bool],
        levels: &[u8],
    ) {
        let table_len = shape.n_blocks * N_CENTROIDS;
        let lanes = Lanes::for_shape(shape);
        debug_assert!(N_TIERS * shape.n_blocks < 1 << lanes.bits);
        self.lanes = Some(lanes);
        self.retrievals = levels.len() / table_len;
        self.n_cells = n_cells;
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
        let hist_len = shape.max_collisions() + 1;
        self.hist.clear();
        self.hist.resize(self.retrievals * hist_len, 0);
        let nb = shape.n_blocks;
        for w in 0..words {
            let table: &[[u64; N_CENTROIDS]] = as_blocks(&self.table[w * table_len..][..table_len]);
            let counts = &mut self.counts[w * n_cells..][..n_cells];
            let first = w * lanes.per_word;
            let (lo, hi) = (first, self.retrievals.min(first + lanes.per_word));
            let hist = &mut self.hist[lo * hist_len..hi * hist_len];
            let rows = codes.codes[..n_cells * nb].chunks_exact(nb);
            for ((count, row), _) in counts.iter_mut().zip(rows).zip(in_zone).filter(|(_, &z)| z) {
                let mut sum = 0u64;
                for (t, &c) in table.iter().zip(row) {
                    sum += t[c as usize];
                }
                *count = sum;
                for (r, h) in hist.chunks_exact_mut(hist_len).enumerate() {
                    h[lanes.get(sum, r) as usize] += 1;
                }
            }
        }
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
                    assert_eq!(g.histogram(r, &shape), &hist[..]);
                }
            }
        }
    }
}
