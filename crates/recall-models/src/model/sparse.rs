//! Embedding tables updated row by row.
//!
//! candle's gradient of an embedding lookup is a dense tensor the size of the whole table, and
//! a dense optimiser then touches every row: seconds per step for a million-row table. Here a
//! table lives on the host; each step gathers only the rows the batch uses into a small `Var`,
//! the model indexes that, and after the backward pass a lazy (row-wise) Adam updates just
//! those rows, each with its own step count. Cost per step is proportional to the batch, not
//! the catalogue.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use candle_core::{Device, Tensor, Var};
use rand::Rng;

use crate::error::Result;

pub use crate::ops::adam::AdamSettings;

/// A host-side embedding table with lazy Adam state.
#[derive(Debug, Clone)]
pub struct SparseTable {
    pub rows: usize,
    pub dim: usize,
    pub weights: Vec<f32>,
    // Adam's moments and per-row step counts, allocated at the first update: a table loaded
    // for inference (export, evaluate) holds only its weights, a third of the memory.
    m: Vec<f32>,
    v: Vec<f32>,
    steps: Vec<u32>,
    /// Row 0 is padding: kept at zero and never updated, so sums over padded sequences need no
    /// mask (the padded positions add zeros and receive no update).
    pub zero_padding: bool,
}

/// A hasher for dense u32 ids: one multiply (Fibonacci hashing). SipHash, the std default,
/// cost a few milliseconds per training step over the ~100k history ids of a batch.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap = HashMap<u32, u32, BuildHasherDefault<IdHasher>>;

/// Distinct ids in first-seen order and each one's position among them.
///
/// Ids of a small universe (a table of at most [`Distinct::DENSE_FACTOR`] rows per id looked
/// up) are indexed by a plain array, larger ones by a hash map: a batch of ~100k history ids
/// into a 3.7k-row table spent most of its gather time hashing.
#[derive(Debug, Clone)]
pub struct Distinct {
    pub ids: Vec<u32>,
    index: DistinctIndex,
}

#[derive(Debug, Clone)]
enum DistinctIndex {
    /// `position[id]`, `u32::MAX` for absent ids.
    Dense(Vec<u32>),
    Hashed(IdMap),
}

impl Distinct {
    /// Below this many universe rows per looked-up id the array index is used.
    pub const DENSE_FACTOR: usize = 16;

    /// The distinct values of `ids`, all below `universe`.
    pub fn new(ids: impl IntoIterator<Item = u32>, universe: usize) -> Self {
        let ids = ids.into_iter();
        let hint = ids.size_hint().0;
        let mut distinct = Vec::new();
        if universe <= hint.max(1024).saturating_mul(Self::DENSE_FACTOR) {
            let mut position = vec![u32::MAX; universe];
            for id in ids {
                let p = &mut position[id as usize];
                if *p == u32::MAX {
                    *p = distinct.len() as u32;
                    distinct.push(id);
                }
            }
            return Distinct {
                ids: distinct,
                index: DistinctIndex::Dense(position),
            };
        }
        let mut index = IdMap::with_capacity_and_hasher(hint, Default::default());
        for id in ids {
            index.entry(id).or_insert_with(|| {
                distinct.push(id);
                distinct.len() as u32 - 1
            });
        }
        Distinct {
            ids: distinct,
            index: DistinctIndex::Hashed(index),
        }
    }

    /// The position of `id` among the distinct ids (it must be one of them).
    pub fn position(&self, id: u32) -> u32 {
        match &self.index {
            DistinctIndex::Dense(position) => {
                let p = position[id as usize];
                assert!(p != u32::MAX, "id {id} was not among the distinct ids");
                p
            }
            DistinctIndex::Hashed(index) => index[&id],
        }
    }
}

/// The rows of one batch: `var` holds them (`[unique, dim]`) and `local` maps each requested
/// id to its row in `var`.
#[derive(Debug)]
pub struct Gathered {
    pub var: Var,
    index: Distinct,
}

impl Gathered {
    /// The distinct ids gathered, in the order of `var`'s rows.
    pub fn ids(&self) -> &[u32] {
        &self.index.ids
    }

    /// The row of `id` in `var` (it must have been gathered).
    pub fn local_index(&self, id: u32) -> u32 {
        self.index.position(id)
    }

    /// Local indices of `ids` as a u32 tensor of `shape`.
    pub fn local(&self, ids: &[u32], shape: &[usize], device: &Device) -> Result<Tensor> {
        let local: Vec<u32> = ids.iter().map(|&i| self.local_index(i)).collect();
        Ok(Tensor::from_vec(local, shape, device)?)
    }

    /// Embeddings of `ids`, shape `shape ++ [dim]`.
    pub fn lookup(&self, ids: &[u32], shape: &[usize], device: &Device) -> Result<Tensor> {
        let local = self.local(ids, &[ids.len()], device)?;
        let rows = self.var.as_tensor().index_select(&local, 0)?;
        let mut full = shape.to_vec();
        full.push(rows.dim(1)?);
        Ok(rows.reshape(full)?)
    }
}

impl SparseTable {
    /// A table with rows drawn from N(0, std²) by `rng`.
    pub fn new(rows: usize, dim: usize, std: f32, rng: &mut impl Rng) -> Self {
        let weights = (0..rows * dim)
            .map(|_| {
                // Box-Muller: two uniforms to one normal.
                let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect();
        Self::from_weights(rows, dim, weights)
    }

    /// The same table with row 0 zeroed and frozen (see [`SparseTable::zero_padding`]).
    pub fn with_zero_padding(mut self) -> Self {
        let n = self.dim.min(self.weights.len());
        self.weights[..n].fill(0.0);
        self.zero_padding = true;
        self
    }

    /// A table with the given weights (checkpoint load).
    pub fn from_weights(rows: usize, dim: usize, weights: Vec<f32>) -> Self {
        SparseTable {
            rows,
            dim,
            weights,
            m: Vec::new(),
            v: Vec::new(),
            steps: Vec::new(),
            zero_padding: false,
        }
    }

    /// Gathers the distinct rows among `ids` into a fresh `Var`.
    pub fn gather(&self, ids: impl IntoIterator<Item = u32>, device: &Device) -> Result<Gathered> {
        let index = Distinct::new(ids, self.rows);
        let mut data = Vec::with_capacity(index.ids.len() * self.dim);
        for &id in &index.ids {
            let r = id as usize * self.dim;
            data.extend_from_slice(&self.weights[r..r + self.dim]);
        }
        let tensor = Tensor::from_vec(data, (index.ids.len(), self.dim), device)?;
        Ok(Gathered {
            var: Var::from_tensor(&tensor)?,
            index,
        })
    }

    /// Lazy Adam on the gathered rows, given the gradient of the gathered `Var`: each row
    /// steps with its own count of updates.
    pub fn apply(&mut self, gathered: &Gathered, grad: &Tensor, adam: AdamSettings) -> Result<()> {
        let grad: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let d = self.dim;
        if self.steps.is_empty() {
            self.m = vec![0.0; self.rows * d];
            self.v = vec![0.0; self.rows * d];
            self.steps = vec![0; self.rows];
        }
        for (local, &id) in gathered.ids().iter().enumerate() {
            if id == 0 && self.zero_padding {
                continue;
            }
            let row = id as usize;
            self.steps[row] += 1;
            let span = row * d..(row + 1) * d;
            crate::ops::adam::step(
                &mut self.weights[span.clone()],
                &mut self.m[span.clone()],
                &mut self.v[span],
                &grad[local * d..(local + 1) * d],
                self.steps[row] as i32,
                adam,
            );
        }
        Ok(())
    }

    /// The whole table as a tensor (inference, checkpoints).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.weights.clone(),
            (self.rows, self.dim),
            device,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The array index (small universe) and the hash index (large universe) agree.
    #[test]
    fn distinct_ids_keep_first_seen_order_with_either_index() {
        let ids = [7u32, 3, 7, 0, 3, 9];
        for universe in [10, 10_000_000] {
            let d = Distinct::new(ids, universe);
            assert!(matches!(
                (&d.index, universe),
                (DistinctIndex::Dense(_), 10) | (DistinctIndex::Hashed(_), 10_000_000)
            ));
            assert_eq!(d.ids, vec![7, 3, 0, 9]);
            let positions: Vec<u32> = ids.iter().map(|&i| d.position(i)).collect();
            assert_eq!(positions, vec![0, 1, 0, 2, 1, 3]);
        }
    }

    /// One Adam step moves each touched weight by lr * sign(grad) (bias-corrected first step)
    /// and leaves untouched rows alone.
    #[test]
    fn first_lazy_adam_step_moves_touched_rows_by_lr() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut t = SparseTable::new(4, 2, 0.1, &mut rng);
        let before = t.weights.clone();
        let dev = Device::Cpu;
        let g = t.gather([3, 1, 3], &dev).unwrap();
        assert_eq!(g.ids(), [3, 1]);
        let x = g.lookup(&[3, 1, 3], &[3], &dev).unwrap();
        // loss = sum(x * c): gradient of row 3 is 2c (used twice), of row 1 is c.
        let c = Tensor::new(&[1f32, -2.0], &dev).unwrap();
        let loss = x.broadcast_mul(&c).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let grad = grads.get(g.var.as_tensor()).unwrap();
        assert_eq!(
            grad.to_vec2::<f32>().unwrap(),
            vec![vec![2.0, -4.0], vec![1.0, -2.0]]
        );
        t.apply(&g, grad, AdamSettings::new(0.01, 0.0)).unwrap();
        for row in 0..4 {
            for k in 0..2 {
                let d = t.weights[row * 2 + k] - before[row * 2 + k];
                let expected = if row == 1 || row == 3 {
                    if k == 0 { -0.01 } else { 0.01 }
                } else {
                    0.0
                };
                assert!((d - expected).abs() < 1e-6, "row {row} col {k}: {d}");
            }
        }
    }
}
