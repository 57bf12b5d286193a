//! The GPU row cache's step protocol replayed on the CPU (part of `--reuse`): what share of a
//! decode step's rows a slot table in GPU memory serves, and the rows that still cross PCIe,
//! under offload. One table per layer and KV head, `WAYS`-way set associative like the
//! device's (kernels/row_cache.cuh), a step taking its rows in two stages:
//! - the refine reads the K rows of its shortlists (`Retrieved::shortlists`, 2 x k cells at
//!   the default refine 2);
//! - the attention reads the K and V rows of sink, top-k and window.
//!
//! A row found in its set is a hit and is pinned for the step; a miss that may claim takes
//! the least recently used slot of its set not taken this step and is filled, or reads host
//! memory when every slot of its set is taken. Two protocols:
//! - `attention`: only the attention claims; the refine reads hits and otherwise host
//!   memory, without pinning (the device's code until the refine's fills);
//! - `refine fills`: the refine's first retrieval claims too and copies a claimed cell's K
//!   and V rows in, so that the attention finds the top-k it picks there; the group's other
//!   retrievals (per-head) take hits and otherwise read host memory.
//!
//! Rows over PCIe count K rows and V rows alike (one row each): without a cache a step reads
//! every shortlist's K rows and the attention's K and V rows. Steps run in order; the
//! device takes a stage's rows in parallel, so which claim gets a contended slot may differ.

/// Slots of a set of a slot table.
pub const WAYS: usize = 4;

/// The protocols compared, in report order: their names, and whether the refine fills slots.
pub const PROTOCOLS: [(&str, bool); 2] = [("attention", false), ("refine fills", true)];

/// What taking a row cost.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Take {
    Hit,
    /// claimed a slot: the row is read from host memory and copied in
    Fill,
    Host,
}

/// A set-associative table of cells, as the GPU row cache keeps one per layer and KV head:
/// WAYS slots a set, the set from a multiplicative hash of the cell (neighbouring cells
/// spread over the sets), each slot tagged by its cell and stamped with the step that last
/// used it. The rules that take and evict slots are the users'.
#[derive(Clone)]
pub struct Slots {
    tags: Vec<u32>,
    /// the step that last used each slot (0: never)
    used: Vec<u32>,
}

impl Slots {
    const EMPTY: u32 = u32::MAX;

    pub fn new(slots: usize) -> Slots {
        let slots = slots.div_ceil(WAYS).max(1) * WAYS;
        Slots { tags: vec![Self::EMPTY; slots], used: vec![0; slots] }
    }

    pub fn clear(&mut self) {
        self.tags.fill(Self::EMPTY);
        self.used.fill(0);
    }

    /// The tags and stamps of `cell`'s set.
    pub fn set(&mut self, cell: u32) -> (&mut [u32], &mut [u32]) {
        let sets = self.tags.len() / WAYS;
        let set = (((cell as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % sets as u64) as usize;
        (&mut self.tags[set * WAYS..][..WAYS], &mut self.used[set * WAYS..][..WAYS])
    }
}

/// One layer's and KV head's slot table under one protocol: a slot taken this step is
/// neither evicted nor claimed again.
#[derive(Clone)]
pub struct StepTable {
    refine_fills: bool,
    slots: Slots,
}

/// Rows a step took and where from, summed over measured steps.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct StepRows {
    pub refine: f64,
    pub refine_hits: f64,
    pub attention: f64,
    pub attention_hits: f64,
    /// K and V rows read from host memory
    pub pcie: f64,
    /// the same without a cache
    pub pcie_uncached: f64,
}

impl StepRows {
    pub fn add(&mut self, o: &StepRows) {
        self.refine += o.refine;
        self.refine_hits += o.refine_hits;
        self.attention += o.attention;
        self.attention_hits += o.attention_hits;
        self.pcie += o.pcie;
        self.pcie_uncached += o.pcie_uncached;
    }

    pub fn refine_hit_rate(&self) -> f64 {
        self.refine_hits / self.refine.max(1.0)
    }

    pub fn attention_hit_rate(&self) -> f64 {
        self.attention_hits / self.attention.max(1.0)
    }

    /// Rows over PCIe as a share of the rows without a cache.
    pub fn pcie_share(&self) -> f64 {
        self.pcie / self.pcie_uncached.max(1.0)
    }
}

impl StepTable {
    pub fn new(slots: usize, refine_fills: bool) -> StepTable {
        StepTable { refine_fills, slots: Slots::new(slots) }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
    }

    /// Takes `cell` at `step` (> 0): a hit pins its slot when `pin`, a miss claims a slot
    /// when `claim`.
    fn take(&mut self, cell: u32, step: u32, pin: bool, claim: bool) -> Take {
        let (tags, used) = self.slots.set(cell);
        if let Some(w) = tags.iter().position(|&t| t == cell) {
            if pin {
                used[w] = step;
            }
            return Take::Hit;
        }
        if !claim {
            return Take::Host;
        }
        match (0..WAYS).filter(|&w| used[w] < step).min_by_key(|&w| used[w]) {
            Some(w) => {
                tags[w] = cell;
                used[w] = step;
                Take::Fill
            }
            None => Take::Host,
        }
    }

    /// One step at `step` (> 0): the refine's `shortlists`, then the attention's `rows`
    /// (sink, top-k and window, each once).
    pub fn step(&mut self, step: u32, shortlists: &[Vec<u32>], rows: impl Iterator<Item = u32>) -> StepRows {
        let mut r = StepRows::default();
        for (i, list) in shortlists.iter().enumerate() {
            let claim = self.refine_fills && i == 0;
            for &cell in list {
                r.refine += 1.0;
                r.pcie_uncached += 1.0;
                match self.take(cell, step, self.refine_fills, claim) {
                    Take::Hit => r.refine_hits += 1.0,
                    Take::Fill => r.pcie += 2.0, // its K row, and the V row copied in
                    Take::Host => r.pcie += 1.0,
                }
            }
        }
        for cell in rows {
            r.attention += 1.0;
            r.pcie_uncached += 2.0;
            match self.take(cell, step, true, true) {
                Take::Hit => r.attention_hits += 1.0,
                Take::Fill | Take::Host => r.pcie += 2.0,
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refine_fills_serve_the_attention_of_the_same_step() {
        // a shortlist of 8 cells, the attention's top 4 of them and 2 window rows
        let shortlist = vec![(0..8).collect::<Vec<u32>>()];
        let rows = || [0u32, 1, 2, 3, 100, 101].into_iter();
        let mut old = StepTable::new(64, false);
        let mut new = StepTable::new(64, true);
        // first step, empty tables: the old refine reads 8 K rows from host, its attention
        // fills 6 rows (K and V); the new refine fills 8 (K and V), its attention misses only
        // the window
        let o = old.step(1, &shortlist, rows());
        assert_eq!((o.refine_hits, o.attention_hits, o.pcie, o.pcie_uncached), (0.0, 0.0, 8.0 + 12.0, 20.0));
        let n = new.step(1, &shortlist, rows());
        assert_eq!((n.refine_hits, n.attention_hits, n.pcie), (0.0, 4.0, 16.0 + 4.0));
        // the same rows again: the old refine still misses the 4 cells the attention did not
        // read; the new table holds all
        let o = old.step(2, &shortlist, rows());
        assert_eq!((o.refine_hits, o.attention_hits, o.pcie), (4.0, 6.0, 4.0));
        let n = new.step(2, &shortlist, rows());
        assert_eq!((n.refine_hits, n.attention_hits, n.pcie, n.pcie_share()), (8.0, 6.0, 0.0, 0.0));
    }

    #[test]
    fn a_slot_taken_this_step_is_not_evicted() {
        // one set: WAYS slots, all taken by the shortlist; the attention's other rows read host
        let mut t = StepTable::new(WAYS, true);
        let list = vec![(0..WAYS as u32).collect::<Vec<_>>()];
        let r = t.step(1, &list, [0u32, 50, 51].into_iter());
        assert_eq!((r.refine_hits, r.attention_hits, r.attention), (0.0, 1.0, 3.0));
        assert_eq!(r.pcie, 2.0 * WAYS as f64 + 4.0);
        // the next step: row 50 evicts a least recently used slot (all taken at step 1: the
        // first, cell 0's)
        let r = t.step(2, &[], [50u32].into_iter());
        assert_eq!(r.pcie, 2.0);
        assert_eq!(t.step(3, &[], [50u32, 1].into_iter()).attention_hits, 2.0);
        // per-head: the second retrieval's shortlist reads host memory for its misses
        let mut t = StepTable::new(64, true);
        let r = t.step(1, &[vec![1, 2], vec![2, 3]], std::iter::empty());
        assert_eq!((r.refine_hits, r.pcie), (1.0, 4.0 + 1.0));
    }
}
