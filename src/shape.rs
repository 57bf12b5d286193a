//! Constants of the algorithm and the shape rules that follow from a head dimension.
//! Every other module asks this one; no size is computed anywhere else.

use crate::error::{Error, Result};

pub use crate::constants::{BLOCK, MAX_HEAD_DIM, N_CENTROIDS, N_LEVELS, N_TIERS, TIER_FRACTIONS};

/// Sizes derived from one head dimension. Head dims that are not a power of two are
/// zero-padded up to one for the Walsh-Hadamard transform; codes cover the padded dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Head dimension of the model (d).
    pub head_dim: usize,
    /// `head_dim` rounded up to a power of two (at least one block).
    pub padded_dim: usize,
    /// Blocks per key: `padded_dim / BLOCK`.
    pub n_blocks: usize,
}

impl Shape {
    /// Shape for a head dimension: a multiple of 8 in `8..=512`.
    pub fn new(head_dim: usize) -> Result<Shape> {
        if head_dim == 0 || !head_dim.is_multiple_of(BLOCK) || head_dim > MAX_HEAD_DIM {
            return Err(Error::unsupported(format!(
                "head_dim {head_dim} is not supported: it must be a multiple of {BLOCK} \
                 between {BLOCK} and {MAX_HEAD_DIM}"
            )));
        }
        let padded_dim = head_dim.next_power_of_two();
        Ok(Shape { head_dim, padded_dim, n_blocks: padded_dim / BLOCK })
    }

    /// Bytes of centroid codes per key: one byte per block.
    pub fn code_bytes(&self) -> usize {
        self.n_blocks
    }

    /// Bytes of packed 4-bit codes per key: two coordinates per byte.
    pub fn nibble_bytes(&self) -> usize {
        self.padded_dim / 2
    }

    /// Weights per key: one per block.
    pub fn n_weights(&self) -> usize {
        self.n_blocks
    }

    /// Index bytes per key and KV head (codes + 4-bit codes + f16 weights).
    pub fn index_bytes_per_key(&self) -> usize {
        self.code_bytes() + self.nibble_bytes() + 2 * self.n_weights()
    }

    /// Highest collision count a key can reach: every block in every tier.
    pub fn max_collisions(&self) -> usize {
        N_TIERS * self.n_blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_sizes() {
        let s = Shape::new(128).unwrap();
        assert_eq!((s.padded_dim, s.n_blocks), (128, 16));
        // docs/DESIGN.md §1.1: 112 bytes per key and KV head at d = 128.
        assert_eq!(s.index_bytes_per_key(), 112);
        assert_eq!(s.max_collisions(), 96);
    }

    #[test]
    fn padding_and_limits() {
        assert_eq!(Shape::new(96).unwrap().padded_dim, 128);
        assert_eq!(Shape::new(8).unwrap().n_blocks, 1);
        assert_eq!(Shape::new(512).unwrap().n_blocks, 64);
        for bad in [0, 4, 100, 520, 1024] {
            assert!(Shape::new(bad).is_err(), "head_dim {bad} accepted");
        }
    }
}
