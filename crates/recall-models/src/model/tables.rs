//! A model's embedding tables, and the rows of them one training step gathered, by name.

use crate::data::EncodedData;
use crate::error::Result;
use crate::model::sparse::{AdamSettings, Gathered, SparseTable};

/// The embedding tables of a model.
#[derive(Debug, Clone)]
pub struct Tables {
    pub item: SparseTable,
    pub user_id: Option<SparseTable>,
    pub user_features: Vec<(String, SparseTable)>,
    pub age: Option<SparseTable>,
    /// Item features pooled over the history (`ModelConfig::history_features`).
    pub history_features: Vec<(String, SparseTable)>,
    /// DSSM item features (bags such as genres, then scalar item features).
    pub item_features: Vec<(String, SparseTable)>,
}

/// The rows one step gathered from each table (see [`SparseTable::gather`]), field for field
/// as in [`Tables`]; each is updated from its own gradient after the backward pass.
#[derive(Debug)]
pub struct StepTables {
    pub item: Gathered,
    pub user_id: Option<Gathered>,
    pub user_features: Vec<Gathered>,
    pub age: Option<Gathered>,
    pub history_features: Vec<Gathered>,
    pub item_features: Vec<Gathered>,
}

/// Where a history feature's per-item values come from in [`EncodedData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFeatureSource {
    /// `data.item_bags[i]`.
    Bag(usize),
    /// `data.item_scalar_features[i]`.
    Scalar(usize),
}

impl ItemFeatureSource {
    /// Finds the encoded item feature `name`.
    pub fn find(data: &EncodedData, name: &str) -> Option<Self> {
        if let Some(i) = data.item_bags.iter().position(|b| b.name == name) {
            return Some(Self::Bag(i));
        }
        data.item_scalar_features
            .iter()
            .position(|f| f.name == name)
            .map(Self::Scalar)
    }

    /// The DSSM item tower's features: every bag, then every scalar item feature.
    pub fn all(data: &EncodedData) -> Vec<Self> {
        (0..data.item_bags.len())
            .map(Self::Bag)
            .chain((0..data.item_scalar_features.len()).map(Self::Scalar))
            .collect()
    }

    /// The feature's name.
    pub fn name(self, data: &EncodedData) -> &str {
        match self {
            Self::Bag(i) => &data.item_bags[i].name,
            Self::Scalar(i) => &data.item_scalar_features[i].name,
        }
    }

    /// The feature's values for item index `item`.
    pub fn values(self, data: &EncodedData, item: u32) -> &[u32] {
        let item = item as usize;
        match self {
            Self::Bag(i) => {
                let b = &data.item_bags[i];
                &b.values[b.offsets[item]..b.offsets[item + 1]]
            }
            Self::Scalar(i) => std::slice::from_ref(&data.item_scalar_features[i].values[item]),
        }
    }

    /// Whether an item has exactly one value (pooled or looked up).
    pub fn is_scalar(self) -> bool {
        matches!(self, Self::Scalar(_))
    }

    pub(crate) fn table_size(self, data: &EncodedData) -> usize {
        match self {
            Self::Bag(i) => data.item_bags[i].table_size,
            Self::Scalar(i) => data.item_scalar_features[i].table_size,
        }
    }
}

impl Tables {
    /// Every table with its checkpoint name.
    pub fn named(&self) -> Vec<(String, &SparseTable)> {
        let mut v = vec![("item_embedding".to_owned(), &self.item)];
        if let Some(t) = &self.user_id {
            v.push(("user_id_embedding".to_owned(), t));
        }
        for (n, t) in &self.user_features {
            v.push((format!("user_feature.{n}"), t));
        }
        if let Some(t) = &self.age {
            v.push(("example_age_embedding".to_owned(), t));
        }
        for (n, t) in &self.history_features {
            v.push((format!("history_feature.{n}"), t));
        }
        for (n, t) in &self.item_features {
            v.push((format!("item_feature.{n}"), t));
        }
        v
    }

    pub fn named_mut(&mut self) -> Vec<(String, &mut SparseTable)> {
        let mut v = vec![("item_embedding".to_owned(), &mut self.item)];
        if let Some(t) = &mut self.user_id {
            v.push(("user_id_embedding".to_owned(), t));
        }
        for (n, t) in &mut self.user_features {
            v.push((format!("user_feature.{n}"), t));
        }
        if let Some(t) = &mut self.age {
            v.push(("example_age_embedding".to_owned(), t));
        }
        for (n, t) in &mut self.history_features {
            v.push((format!("history_feature.{n}"), t));
        }
        for (n, t) in &mut self.item_features {
            v.push((format!("item_feature.{n}"), t));
        }
        v
    }

    /// The lazy Adam update of every row `step` gathered, from the gradients of the backward
    /// pass (a table whose rows received no gradient is left alone).
    pub fn apply(
        &mut self,
        step: &StepTables,
        grads: &candle_core::backprop::GradStore,
        adam: AdamSettings,
    ) -> Result<()> {
        let update = |table: &mut SparseTable, rows: &Gathered| -> Result<()> {
            if let Some(grad) = grads.get(rows.var.as_tensor()) {
                table.apply(rows, grad, adam)?;
            }
            Ok(())
        };
        update(&mut self.item, &step.item)?;
        if let (Some(t), Some(g)) = (&mut self.user_id, &step.user_id) {
            update(t, g)?;
        }
        if let (Some(t), Some(g)) = (&mut self.age, &step.age) {
            update(t, g)?;
        }
        for (pairs, gathered) in [
            (&mut self.user_features, &step.user_features),
            (&mut self.history_features, &step.history_features),
            (&mut self.item_features, &step.item_features),
        ] {
            for ((_, t), g) in pairs.iter_mut().zip(gathered) {
                update(t, g)?;
            }
        }
        Ok(())
    }
}

/// Dense feature values for entity indices `rows`, row after row (`features.len()` each).
pub(crate) fn dense_values(features: &[crate::data::DenseFeature], rows: &[u32]) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows.len() * features.len());
    for &r in rows {
        v.extend(features.iter().map(|f| f.values[r as usize]));
    }
    v
}
