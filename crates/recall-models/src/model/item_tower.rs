//! DSSM's item tower: the item's own embedding, its side features (pooled bags, looked-up
//! scalars, dense values), through an MLP, L2-normalised. The other kinds' item side is the
//! item table itself.

use candle_core::{Device, Tensor};

use crate::data::EncodedData;
use crate::error::Result;
use crate::model::input_op::InputPlan;
use crate::model::sparse::Distinct;
use crate::model::tables::{ItemFeatureSource, StepTables, dense_values};
use crate::model::tower::{Pass, Tower};
use crate::ops::fused::l2_normalize;

/// A model's item tower.
#[derive(Debug, Clone)]
pub struct ItemTower {
    tower: Tower,
    /// Bags pool by their mean (else their sum).
    mean: bool,
    /// Whether the items' dense features are an input.
    item_dense: bool,
    /// Sources of the step's `item_features`, in the same order.
    item_sources: Vec<ItemFeatureSource>,
}

impl ItemTower {
    pub(crate) fn new(
        tower: Tower,
        mean: bool,
        item_dense: bool,
        item_sources: Vec<ItemFeatureSource>,
    ) -> Self {
        ItemTower {
            tower,
            mean,
            item_dense,
            item_sources,
        }
    }

    pub(crate) fn item_sources(&self) -> &[ItemFeatureSource] {
        &self.item_sources
    }

    /// Item vectors `[N, out]` for `candidates`.
    pub(crate) fn forward(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
        pass: &mut Pass<'_>,
        device: &Device,
    ) -> Result<Tensor> {
        let n = candidates.len();
        // Candidate lists repeat items (popular positives, popularity-drawn negatives): without
        // dropout every copy has the same vector, so the tower runs once per distinct item and
        // the rows are copied out (on ML-1M at batch 4,096 about half the rows are repeats).
        // Batch normalisation still sees the whole batch: each distinct row is weighted by its
        // number of copies.
        if !pass.dropout_active() {
            let distinct = Distinct::new(candidates.iter().copied(), data.item_table_size);
            if distinct.ids.len() < n {
                let positions: Vec<u32> =
                    candidates.iter().map(|&c| distinct.position(c)).collect();
                let weights = if pass.is_training() && self.tower.has_batch_norm() {
                    let mut copies = vec![0f32; distinct.ids.len()];
                    for &p in &positions {
                        copies[p as usize] += 1.0;
                    }
                    Some(copies)
                } else {
                    None
                };
                let vectors =
                    self.forward_rows(data, step, &distinct.ids, pass, weights.as_deref())?;
                let positions = Tensor::from_vec(positions, n, device)?;
                return Ok(vectors.index_select(&positions, 0)?);
            }
        }
        self.forward_rows(data, step, candidates, pass, None)
    }

    /// The tower over `candidates` as given (one row each).
    fn forward_rows(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
        pass: &mut Pass<'_>,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mean = self.mean;
        let mut plan = InputPlan::new(candidates.len());
        let items = plan.table(&step.item);
        plan.lookup(items, candidates.iter().copied());
        for (g, &source) in step.item_features.iter().zip(&self.item_sources) {
            let t = plan.table(g);
            if source.is_scalar() {
                plan.lookup(t, candidates.iter().map(|&c| source.values(data, c)[0]));
            } else {
                plan.pool(t, candidates.iter().map(|&c| source.values(data, c)), mean);
            }
        }
        if self.item_dense && !data.item_dense.is_empty() {
            plan.values(
                data.item_dense.len(),
                dense_values(&data.item_dense, candidates),
            );
        }
        l2_normalize(&self.tower.forward(&plan.assemble()?, pass, row_weights)?)
    }
}
