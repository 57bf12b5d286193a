//! Key centring (docs/DESIGN.md §2): each KV head's keys are encoded minus a fixed centre c, the mean
//! of the first keys the head encodes. q·(k − c) = q·k − q·c moves every score of one query
//! by the same amount, so rankings and the softmax are unchanged; the codes then spend their
//! bits on what tells keys apart instead of what they share (on real models a large part of
//! every key: docs/FIDELITY.md). Attention and exact rescoring read the stored keys, never
//! the centre.
//!
//! Storage per KV head: [`len`] f32, the centre followed by the number of keys averaged,
//! 0 while it is not set. The first encode of a head sets it ([`init`]) and nothing changes
//! it afterwards, so every key of the head is encoded against the same centre. The CUDA
//! kernel `pk_center_init` computes it bitwise alike: f32 sums in the order the cells are
//! listed, one division.

use crate::constants::CENTER_ROWS;
use crate::rows::Rows;

/// f32 values stored per KV head: the centre, then the number of keys it averages.
pub fn len(head_dim: usize) -> usize {
    head_dim + 1
}

/// The centre to subtract (`head_dim` values), or `None` while it is not set.
pub fn offset(center: &[f32]) -> Option<&[f32]> {
    let (c, count) = center.split_at(center.len() - 1);
    (count[0] != 0.0).then_some(c)
}

/// Sets a centre that is not set yet to the mean of the keys of the first [`CENTER_ROWS`]
/// of `cells` (rows of `keys`); a coordinate whose mean is not finite becomes 0. Returns
/// whether it set it (not when it was set already or `cells` is empty).
pub fn init(keys: &Rows, cells: &[usize], center: &mut [f32], row: &mut Vec<f32>) -> bool {
    let d = keys.dim();
    debug_assert_eq!(center.len(), len(d));
    let cells = &cells[..cells.len().min(CENTER_ROWS)];
    if offset(center).is_some() || cells.is_empty() {
        return false;
    }
    let (sum, count) = center.split_at_mut(d);
    sum.fill(0.0);
    row.resize(d, 0.0);
    for &cell in cells {
        keys.load(cell, row);
        for (s, &x) in sum.iter_mut().zip(row.iter()) {
            *s += x;
        }
    }
    let n = cells.len() as f32;
    for s in sum.iter_mut() {
        let mean = *s / n;
        *s = if mean.is_finite() { mean } else { 0.0 };
    }
    count[0] = n;
    true
}

/// `key - centre`, in place (no-op when `center` is `None`).
pub fn subtract(key: &mut [f32], center: Option<&[f32]>) {
    if let Some(c) = center {
        for (x, &m) in key.iter_mut().zip(c) {
            *x -= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::RowData;

    fn rows(data: &[f32], d: usize) -> Rows<'_> {
        Rows::packed(RowData::F32(data), d).unwrap()
    }

    #[test]
    fn set_once_from_listed_cells() {
        let data = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut c = vec![0.0; len(2)];
        let mut row = Vec::new();
        assert!(offset(&c).is_none());
        assert!(!init(&rows(&data, 2), &[], &mut c, &mut row), "empty call must not set it");
        assert!(init(&rows(&data, 2), &[0, 1], &mut c, &mut row));
        assert_eq!(c, [2.0, 3.0, 2.0]);
        // Later calls leave it as it is.
        assert!(!init(&rows(&data, 2), &[2], &mut c, &mut row));
        assert_eq!(offset(&c), Some(&[2.0, 3.0][..]));
        let mut k = [5.0, 5.0];
        subtract(&mut k, offset(&c));
        assert_eq!(k, [3.0, 2.0]);
    }

    #[test]
    fn non_finite_coordinates_become_zero_and_rows_are_capped() {
        let data = [f32::NAN, 1.0, f32::MAX, 3.0, f32::MAX, 5.0];
        let mut c = vec![0.0; len(2)];
        assert!(init(&rows(&data, 2), &[0, 1, 2], &mut c, &mut Vec::new()));
        assert_eq!(c, [0.0, 3.0, 3.0]);
        let many: Vec<f32> = (0..CENTER_ROWS + 10).map(|i| i as f32).collect();
        let cells: Vec<usize> = (0..many.len()).collect();
        let mut c = vec![0.0; len(1)];
        init(&rows(&many, 1), &cells, &mut c, &mut Vec::new());
        assert_eq!(c, [(CENTER_ROWS - 1) as f32 / 2.0, CENTER_ROWS as f32]);
    }
}
