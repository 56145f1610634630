//! The pooling MLP user tower (DSSM, YoutubeDNN): the history pooled (and its newest items,
//! and item features over it) beside the user's side inputs, through an MLP, L2-normalised.
//! Trained on rows: one (user, position) example each.

use candle_core::Tensor;

use crate::data::{EncodedData, UserRows};
use crate::error::Result;
use crate::model::input_op::InputPlan;
use crate::model::tables::{ItemFeatureSource, StepTables, dense_values};
use crate::model::tower::{Pass, Tower};
use crate::ops::fused::l2_normalize;

/// The pooling user tower of a model.
#[derive(Debug, Clone)]
pub struct PooledTower {
    tower: Tower,
    /// Lists pool by their mean (else their sum).
    mean: bool,
    /// The newest items pooled a second time (0: off).
    recent_items: usize,
    /// Whether the user's dense features are an input.
    user_dense: bool,
    /// Sources of the step's `history_features`, in the same order.
    history_sources: Vec<ItemFeatureSource>,
}

impl PooledTower {
    pub(crate) fn new(
        tower: Tower,
        mean: bool,
        recent_items: usize,
        user_dense: bool,
        history_sources: Vec<ItemFeatureSource>,
    ) -> Self {
        PooledTower {
            tower,
            mean,
            recent_items,
            user_dense,
            history_sources,
        }
    }

    pub(crate) fn history_sources(&self) -> &[ItemFeatureSource] {
        &self.history_sources
    }

    /// User vectors `[B, out]`: the tower's input assembled in one op (pooled history, the
    /// newest items, user id, user features, example age, dense values, pooled history
    /// features: the order `layout` documents), then the MLP.
    pub(crate) fn forward(
        &self,
        data: &EncodedData,
        step: &StepTables,
        rows: &UserRows,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let mean = self.mean;
        let mut plan = InputPlan::new(rows.users.len());
        let items = plan.table(&step.item);
        plan.pool(items, rows.histories.iter().copied(), mean);
        let recent = self.recent_items;
        if recent > 0 {
            let newest = rows
                .histories
                .iter()
                .map(|h| &h[h.len().saturating_sub(recent)..]);
            plan.pool(items, newest, mean);
        }
        if let Some(g) = &step.user_id {
            let t = plan.table(g);
            plan.lookup(t, rows.users.iter().copied());
        }
        for (g, f) in step.user_features.iter().zip(&data.user_features) {
            let t = plan.table(g);
            plan.lookup(t, rows.users.iter().map(|&u| f.values[u as usize]));
        }
        if let Some(g) = &step.age {
            let t = plan.table(g);
            plan.lookup(t, rows.ages.iter().copied());
        }
        if self.user_dense && !data.user_dense.is_empty() {
            plan.values(
                data.user_dense.len(),
                dense_values(&data.user_dense, rows.users),
            );
        }
        for (g, &source) in step.history_features.iter().zip(&self.history_sources) {
            let t = plan.table(g);
            let lists = rows
                .histories
                .iter()
                .map(|h| h.iter().flat_map(move |&i| source.values(data, i)));
            plan.pool(t, lists, mean);
        }
        l2_normalize(&self.tower.forward(&plan.assemble()?, pass, None)?)
    }
}
