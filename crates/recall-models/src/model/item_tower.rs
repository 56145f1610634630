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
use recall_core::columns::OOV_INDEX;
use recall_core::mix::{GOLDEN_GAMMA, mix64};

/// A uniform draw in [0, 1) from (seed, position, item): splitmix64's mix of them.
fn unit_draw(seed: u64, position: u64, item: u32) -> f32 {
    let z = mix64(
        seed ^ position.wrapping_mul(GOLDEN_GAMMA)
            ^ u64::from(item).wrapping_mul(0xC2B2_AE3D_27D4_EB4F),
    );
    (z >> 40) as f32 / (1u64 << 24) as f32
}

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
    /// Probability that a training candidate's id row is the OOV row (`item_id_dropout`).
    id_dropout: f32,
}

impl ItemTower {
    pub(crate) fn new(
        tower: Tower,
        mean: bool,
        item_dense: bool,
        item_sources: Vec<ItemFeatureSource>,
        id_dropout: f32,
    ) -> Self {
        ItemTower {
            tower,
            mean,
            item_dense,
            item_sources,
            id_dropout,
        }
    }

    /// Whether the tower ever reads the OOV row in place of an item's own: with id dropout, or
    /// with cold items (whose own rows are never trained).
    pub(crate) fn reads_oov_row(&self, data: &EncodedData) -> bool {
        self.id_dropout > 0.0 || data.first_cold_item.is_some()
    }

    /// The id row each candidate reads: its own, or the OOV row for a cold item and, while
    /// training, for a candidate its id dropout drops (a seeded choice per step, position and
    /// item, so a step is repeatable).
    fn id_rows(&self, data: &EncodedData, candidates: &[u32], pass: &Pass<'_>) -> Vec<u32> {
        let cold_from = data.first_cold_item.unwrap_or(u32::MAX);
        let seed = match pass {
            Pass::Train { seed, .. } if self.id_dropout > 0.0 => Some(*seed),
            _ => None,
        };
        candidates
            .iter()
            .enumerate()
            .map(|(j, &c)| {
                let dropped = seed.is_some_and(|s| unit_draw(s, j as u64, c) < self.id_dropout);
                if c >= cold_from || dropped {
                    OOV_INDEX as u32
                } else {
                    c
                }
            })
            .collect()
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
        let id_dropout = pass.is_training() && self.id_dropout > 0.0;
        if !pass.dropout_active() && !id_dropout {
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

    /// Vectors `[N, out]` of `candidates` from their features alone: every id row is the OOV
    /// row, as a cold item's is (`step` must have gathered it).
    pub(crate) fn forward_features_only(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
    ) -> Result<Tensor> {
        let oov = vec![OOV_INDEX as u32; candidates.len()];
        self.forward_with_ids(data, step, candidates, &oov, &mut Pass::Infer, None)
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
        let ids = self.id_rows(data, candidates, pass);
        self.forward_with_ids(data, step, candidates, &ids, pass, row_weights)
    }

    /// The tower over `candidates`, each reading id row `id_rows[i]`.
    fn forward_with_ids(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
        id_rows: &[u32],
        pass: &mut Pass<'_>,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mean = self.mean;
        let mut plan = InputPlan::new(candidates.len());
        let items = plan.table(&step.item);
        plan.lookup(items, id_rows.iter().copied());
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
