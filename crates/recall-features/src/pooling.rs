//! Padding and pooling of variable-length sequences: the reference for what the models do.
//!
//! Histories are stored as lists (oldest first). A model batch pads them to a fixed width with
//! index 0 and keeps the lengths, and pooling then ignores padded positions: `mean` divides by
//! the true length (an empty history pools to zeros), never by the padded width.

use serde::{Deserialize, Serialize};

/// How a sequence of embeddings is reduced to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Sum,
}

/// A batch of sequences padded to `width` with index 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Padded {
    /// `[rows * width]` indices, row-major, padding 0 after the valid positions.
    pub indices: Vec<i32>,
    /// Valid positions per row.
    pub lengths: Vec<usize>,
    pub width: usize,
}

impl Padded {
    /// Pads the lists `values[offsets[i]..offsets[i + 1]]` for `rows`, keeping the newest
    /// `width` entries of longer lists.
    pub fn from_lists(offsets: &[usize], values: &[i32], rows: &[usize], width: usize) -> Self {
        let mut indices = vec![0i32; rows.len() * width];
        let mut lengths = Vec::with_capacity(rows.len());
        for (out_row, &r) in rows.iter().enumerate() {
            let list = &values[offsets[r]..offsets[r + 1]];
            let list = &list[list.len().saturating_sub(width)..];
            indices[out_row * width..out_row * width + list.len()].copy_from_slice(list);
            lengths.push(list.len());
        }
        Padded {
            indices,
            lengths,
            width,
        }
    }

    /// 1.0 at valid positions and 0.0 at padding, `[rows * width]`.
    pub fn mask(&self) -> Vec<f32> {
        let mut m = vec![0f32; self.indices.len()];
        for (row, &len) in self.lengths.iter().enumerate() {
            m[row * self.width..row * self.width + len].fill(1.0);
        }
        m
    }
}

/// Pools rows of an embedding `table` (`[table_rows * dim]`, row-major) over each padded
/// sequence; returns `[rows * dim]`.
pub fn pool(table: &[f32], dim: usize, batch: &Padded, mode: Pooling) -> Vec<f32> {
    let mut out = vec![0f32; batch.lengths.len() * dim];
    for (row, &len) in batch.lengths.iter().enumerate() {
        let acc = &mut out[row * dim..(row + 1) * dim];
        for &idx in &batch.indices[row * batch.width..row * batch.width + len] {
            let e = &table[idx as usize * dim..(idx as usize + 1) * dim];
            acc.iter_mut().zip(e).for_each(|(a, x)| *a += x);
        }
        if mode == Pooling::Mean && len > 0 {
            acc.iter_mut().for_each(|a| *a /= len as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_is_masked_out_of_mean_and_sum() {
        // Lists: [2, 3] and [4]; width 3.
        let batch = Padded::from_lists(&[0, 2, 3], &[2, 3, 4], &[0, 1], 3);
        assert_eq!(batch.indices, vec![2, 3, 0, 4, 0, 0]);
        assert_eq!(batch.mask(), vec![1., 1., 0., 1., 0., 0.]);
        // Table rows (dim 2): row 0 (padding) is deliberately non-zero, so a pooling that let
        // padding in would show it.
        let table = [100., 100., 0., 0., 1., 2., 3., 4., 5., 6.];
        assert_eq!(pool(&table, 2, &batch, Pooling::Sum), vec![4., 6., 5., 6.]);
        assert_eq!(pool(&table, 2, &batch, Pooling::Mean), vec![2., 3., 5., 6.]);
    }

    #[test]
    fn long_lists_keep_the_newest_and_empty_lists_pool_to_zero() {
        let batch = Padded::from_lists(&[0, 4, 4], &[2, 3, 4, 5], &[0, 1], 2);
        assert_eq!(batch.indices, vec![4, 5, 0, 0]);
        // dim 1: row k holds k - 2 for k >= 2, so rows 4 and 5 hold 2 and 3: mean 2.5.
        let table = [9., 9., 0., 1., 2., 3.];
        assert_eq!(pool(&table, 1, &batch, Pooling::Mean), vec![2.5, 0.0]);
    }
}
