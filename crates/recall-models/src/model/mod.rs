//! The two-tower network shared by DSSM and YoutubeDNN.
//!
//! User tower input, concatenated: pooled history (item table, `embedding_dim`), one
//! `feature_dim` embedding per encoded user feature, the user id and the example-age bucket
//! when enabled. DSSM item tower input: the item's own embedding and its pooled genres. Dense
//! layers are candle `Linear`s over `Var`s initialised from the seed; every embedding table is a
//! [`SparseTable`] gathered per batch.

pub mod input_op;
pub mod sequence;
pub mod sparse;
pub mod tables;
pub mod tower;

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::config::ModelConfig;
use crate::data::EncodedData;
use crate::error::Result;
use crate::model::input_op::InputPlan;
use crate::model::sequence::{Padded, SequenceEncoder, SequenceSpec};
use crate::model::sparse::{Distinct, SparseTable};
use crate::model::tables::dense_values;
pub use crate::model::tables::{ItemFeatureSource, StepTables, Tables};
use crate::model::tower::TowerSpec;
pub use crate::model::tower::{MaskSource, Params, Pass, Tower};
pub use crate::ops::fused::l2_normalize;

/// DSSM, YoutubeDNN or SASRec.
#[derive(Debug, Clone)]
pub struct TwoTower {
    pub config: ModelConfig,
    pub tables: Tables,
    /// The MLP over the user input (DSSM, YoutubeDNN; empty for SASRec).
    pub user_tower: Tower,
    pub item_tower: Option<Tower>,
    /// SASRec's self-attention over the history.
    pub sequence: Option<SequenceEncoder>,
    pub params: Params,
    pub device: Device,
    /// Input widths of the user and item towers.
    dims: (usize, usize),
    /// Sources of `tables.history_features`, in the same order.
    pub(crate) history_sources: Vec<ItemFeatureSource>,
    /// Sources of `tables.item_features` (DSSM), in the same order.
    pub(crate) item_sources: Vec<ItemFeatureSource>,
    /// SASRec's encoder settings (to rebuild it from a checkpoint).
    sequence_spec: Option<SequenceSpec>,
}

/// The spec of tower `name` of a model with `config`.
pub(crate) fn tower_spec<'a>(
    config: &ModelConfig,
    name: &'a str,
    input: usize,
    widths: &'a [usize],
) -> TowerSpec<'a> {
    // SASRec's (empty) user tower takes the defaults.
    let mlp = config.mlp().copied().unwrap_or_default();
    TowerSpec {
        name,
        input,
        widths,
        activation: mlp.activation,
        batch_norm: mlp.batch_norm,
        last_layer: mlp.last_layer,
    }
}

/// Freshly initialised dense parts of a model, with their named parameters.
pub(crate) struct Towers {
    pub user: Tower,
    pub item: Option<Tower>,
    pub sequence: Option<SequenceEncoder>,
    pub params: Params,
}

/// The rows of one forward pass on the user side.
#[derive(Debug, Clone, Copy)]
pub struct UserRows<'a> {
    pub users: &'a [u32],
    pub histories: &'a [&'a [u32]],
    pub ages: &'a [u32],
}

impl TwoTower {
    /// A freshly initialised model sized by `data`.
    pub fn new(
        config: &ModelConfig,
        data: &EncodedData,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let common = config.common();
        let (d, fd, std) = (common.embedding_dim, common.feature_dim, common.init_std);
        let no_features = Vec::new();
        let history_feature_names = config
            .pooled_user()
            .map_or(&no_features, |u| &u.history_features);
        let dssm_item_features = config.dssm().is_some_and(|c| c.item_features);
        let item = SparseTable::new(data.item_table_size, d, std, rng).with_zero_padding();
        let user_id = common
            .user_id
            .then(|| SparseTable::new(data.user_table_size, fd, std, rng));
        let user_features: Vec<(String, SparseTable)> = if common.user_features {
            data.user_features
                .iter()
                .map(|f| (f.name.clone(), SparseTable::new(f.table_size, fd, std, rng)))
                .collect()
        } else {
            Vec::new()
        };
        // Example age is per training example; SASRec trains every position of a window at
        // once and leaves it out.
        let age = (config.example_age() && data.age_table_size > 0)
            .then(|| SparseTable::new(data.age_table_size, fd, std, rng));
        let mut history_sources = Vec::new();
        let mut history_features = Vec::new();
        for name in history_feature_names {
            let source = ItemFeatureSource::find(data, name).ok_or_else(|| {
                recall_core::Error::config(
                    "model.history_features",
                    format!(
                        "no encoded item feature {name:?} (encode it under encode.item_features first)"
                    ),
                )
            })?;
            history_sources.push(source);
            history_features.push((
                name.clone(),
                SparseTable::new(source.table_size(data), fd, std, rng).with_zero_padding(),
            ));
        }
        let item_sources = if dssm_item_features {
            ItemFeatureSource::all(data)
        } else {
            Vec::new()
        };
        let item_features: Vec<(String, SparseTable)> = item_sources
            .iter()
            .map(|s| {
                let table = SparseTable::new(s.table_size(data), fd, std, rng);
                (s.name(data).to_owned(), table.with_zero_padding())
            })
            .collect();
        // Whole-history pooling, the optional recent-items pooling, then the side features.
        let recent_items = config.pooled_user().map_or(0, |u| u.recent_items);
        let pooled = 1 + usize::from(recent_items > 0);
        let user_dense = if common.user_features {
            data.user_dense.len()
        } else {
            0
        };
        let item_dense = if dssm_item_features {
            data.item_dense.len()
        } else {
            0
        };
        let user_in = d * pooled
            + fd * (user_features.len()
                + history_features.len()
                + usize::from(user_id.is_some())
                + usize::from(age.is_some()))
            + user_dense;
        let item_in = d + fd * item_features.len() + item_dense;
        let sequence_spec = if let Some(sasrec) = config.sasrec() {
            let max_len = sasrec.max_len.unwrap_or(data.max_len);
            if max_len > data.max_len {
                return Err(recall_core::Error::config(
                    "model.max_len",
                    format!(
                        "{max_len} is longer than the histories the encode stage keeps (encode.max_len = {}): raise encode.max_len",
                        data.max_len
                    ),
                )
                .into());
            }
            Some(SequenceSpec {
                dim: d,
                blocks: sasrec.blocks,
                heads: sasrec.heads,
                max_len,
                ffn: sasrec.ffn_width.unwrap_or(d),
                // The user's side inputs (no history pooling): ids, features, dense values.
                side: user_in - d * pooled - fd * history_features.len(),
                dropout: common.dropout,
            })
        } else {
            None
        };
        let towers = Self::fresh_towers(config, (user_in, item_in), sequence_spec, rng, device)?;
        Ok(TwoTower {
            config: config.clone(),
            tables: Tables {
                item,
                user_id,
                user_features,
                age,
                history_features,
                item_features,
            },
            user_tower: towers.user,
            item_tower: towers.item,
            sequence: towers.sequence,
            params: towers.params,
            device: device.clone(),
            dims: (user_in, item_in),
            history_sources,
            item_sources,
            sequence_spec,
        })
    }

    /// Newly initialised towers for inputs of widths `dims` (user, item), and SASRec's
    /// encoder for `sequence`.
    pub(crate) fn fresh_towers(
        config: &ModelConfig,
        dims: (usize, usize),
        sequence: Option<SequenceSpec>,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Towers> {
        let mut params = Vec::new();
        let spec = |name, input, widths| tower_spec(config, name, input, widths);
        let user_widths: &[usize] = config.pooled_user().map_or(&[], |u| &u.user_tower);
        let user_tower = Tower::new(
            &spec("user_tower", dims.0, user_widths),
            rng,
            device,
            &mut params,
        )?;
        let sequence = match sequence {
            Some(spec) => Some(SequenceEncoder::new(
                spec,
                config.common().init_std,
                rng,
                device,
                &mut params,
            )?),
            None => None,
        };
        let item_tower = if let Some(dssm) = config.dssm() {
            Some(Tower::new(
                &spec("item_tower", dims.1, &dssm.item_tower),
                rng,
                device,
                &mut params,
            )?)
        } else {
            None
        };
        Ok(Towers {
            user: user_tower,
            item: item_tower,
            sequence,
            params,
        })
    }

    pub(crate) fn sequence_spec(&self) -> Option<SequenceSpec> {
        self.sequence_spec
    }

    /// Input widths of the user and item towers (the item's is that of the embedding alone
    /// for YoutubeDNN, which has no item tower).
    pub fn input_widths(&self) -> (usize, usize) {
        self.dims
    }

    /// Gathers, for one step, the item rows of histories and `candidates` plus the side tables'
    /// rows.
    pub fn gather(
        &self,
        data: &EncodedData,
        rows: &UserRows,
        candidates: &[u32],
    ) -> Result<StepTables> {
        let dev = &self.device;
        let items = rows
            .histories
            .iter()
            .flat_map(|h| h.iter().copied())
            .chain(candidates.iter().copied())
            .chain([0]);
        let user_values = |values: &[u32]| -> Vec<u32> {
            rows.users.iter().map(|&u| values[u as usize]).collect()
        };
        // Values of an item feature over the histories (or the candidates), plus the padding
        // row so that an empty list still gathers something.
        let item_values = |source: ItemFeatureSource, lists: &mut dyn Iterator<Item = u32>| {
            let mut v: Vec<u32> = lists
                .flat_map(|i| source.values(data, i).iter().copied())
                .collect();
            v.push(0);
            v
        };
        Ok(StepTables {
            item: self.tables.item.gather(items, dev)?,
            user_id: match &self.tables.user_id {
                Some(t) => Some(t.gather(rows.users.iter().copied(), dev)?),
                None => None,
            },
            user_features: self
                .tables
                .user_features
                .iter()
                .zip(&data.user_features)
                .map(|((_, t), f)| t.gather(user_values(&f.values), dev))
                .collect::<Result<_>>()?,
            age: match &self.tables.age {
                Some(t) => Some(t.gather(rows.ages.iter().copied(), dev)?),
                None => None,
            },
            history_features: self
                .history_sources
                .iter()
                .zip(&self.tables.history_features)
                .map(|(&source, (_, t))| {
                    let mut all = rows.histories.iter().flat_map(|h| h.iter().copied());
                    t.gather(item_values(source, &mut all), dev)
                })
                .collect::<Result<_>>()?,
            item_features: self
                .item_sources
                .iter()
                .zip(&self.tables.item_features)
                .map(|(&source, (_, t))| {
                    t.gather(item_values(source, &mut candidates.iter().copied()), dev)
                })
                .collect::<Result<_>>()?,
        })
    }

    /// User vectors `[B, out]`, L2-normalised.
    pub fn users(
        &self,
        data: &EncodedData,
        step: &StepTables,
        rows: &UserRows,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        if self.sequence.is_some() {
            return self.sequence_users(data, step, rows, pass);
        }
        let mean = self.config.pools_by_mean();
        let mut plan = InputPlan::new(rows.users.len());
        let items = plan.table(&step.item);
        plan.pool(items, rows.histories.iter().copied(), mean);
        let recent = self.config.pooled_user().map_or(0, |u| u.recent_items);
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
        if self.config.common().user_features && !data.user_dense.is_empty() {
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
        l2_normalize(&self.user_tower.forward(&plan.assemble()?, pass, None)?)
    }

    /// The user's side inputs (user id, features, dense values) as SASRec adds them to every
    /// position: `[B, side]`, or `None` when the model has none.
    pub(crate) fn side_inputs(
        &self,
        data: &EncodedData,
        step: &StepTables,
        users: &[u32],
    ) -> Result<Option<Tensor>> {
        let mut plan = InputPlan::new(users.len());
        let mut any = false;
        if let Some(g) = &step.user_id {
            let t = plan.table(g);
            plan.lookup(t, users.iter().copied());
            any = true;
        }
        for (g, f) in step.user_features.iter().zip(&data.user_features) {
            let t = plan.table(g);
            plan.lookup(t, users.iter().map(|&u| f.values[u as usize]));
            any = true;
        }
        if self.config.common().user_features && !data.user_dense.is_empty() {
            plan.values(data.user_dense.len(), dense_values(&data.user_dense, users));
            any = true;
        }
        Ok(if any { Some(plan.assemble()?) } else { None })
    }

    /// How many of a user's newest items the user side reads: SASRec's `max_len`, else the
    /// encode stage's. The seen filter's `recent` view leaves out as many by default.
    pub fn history_len(&self, data: &EncodedData) -> usize {
        match &self.sequence {
            Some(encoder) => encoder.spec().max_len,
            None => data.max_len,
        }
    }

    /// SASRec's encoder and its input windows: each row's newest `max_len` history items.
    fn sequence_windows<'r>(
        &self,
        rows: &UserRows<'r>,
    ) -> Result<(&SequenceEncoder, Vec<&'r [u32]>)> {
        let encoder = self.sequence.as_ref().ok_or_else(|| {
            crate::error::Error::Training(format!(
                "a {:?} model has no sequence encoder",
                self.config.kind()
            ))
        })?;
        let max_len = encoder.spec().max_len;
        let windows = rows
            .histories
            .iter()
            .map(|h| &h[h.len().saturating_sub(max_len)..])
            .collect();
        Ok((encoder, windows))
    }

    /// SASRec's hidden states `[B, len, dim]`: the encoder over each row's newest `max_len`
    /// history items, left-padded to the longest (`len`), the newest at `len - 1`.
    pub fn sequence_hidden(
        &self,
        data: &EncodedData,
        step: &StepTables,
        rows: &UserRows,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (encoder, windows) = self.sequence_windows(rows)?;
        let layout = Padded::new(windows);
        let side = self.side_inputs(data, step, rows.users)?;
        let hidden = encoder.forward(&step.item, &layout, side.as_ref(), pass)?;
        Ok(hidden.reshape((layout.rows(), layout.len, ()))?)
    }

    /// SASRec's user vectors: the hidden state at each row's newest position, L2-normalised.
    fn sequence_users(
        &self,
        data: &EncodedData,
        step: &StepTables,
        rows: &UserRows,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (encoder, windows) = self.sequence_windows(rows)?;
        // Packed several to a row (the same vectors as one window per row, `sequence_hidden`,
        // on fewer slots); each user's vector is its window's newest slot.
        let layout = Padded::packed(windows.iter().copied(), encoder.spec().max_len);
        let side = self.side_inputs(data, step, rows.users)?;
        let hidden = encoder.forward(&step.item, &layout, side.as_ref(), pass)?;
        let newest: Vec<u32> = (0..windows.len())
            .map(|w| layout.newest(w) as u32)
            .collect();
        let newest = Tensor::from_vec(newest, windows.len(), &self.device)?;
        l2_normalize(&hidden.index_select(&newest, 0)?)
    }

    /// Item vectors `[N, out]` for `candidates`, L2-normalised.
    pub fn items(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let n = candidates.len();
        let dev = &self.device;
        let Some(tower) = &self.item_tower else {
            return l2_normalize(&step.item.lookup(candidates, &[n], dev)?);
        };
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
                let weights = if pass.is_training() && tower.has_batch_norm() {
                    let mut copies = vec![0f32; distinct.ids.len()];
                    for &p in &positions {
                        copies[p as usize] += 1.0;
                    }
                    Some(copies)
                } else {
                    None
                };
                let vectors = self.item_tower_forward(
                    data,
                    step,
                    tower,
                    &distinct.ids,
                    pass,
                    weights.as_deref(),
                )?;
                let positions = Tensor::from_vec(positions, n, dev)?;
                return Ok(vectors.index_select(&positions, 0)?);
            }
        }
        self.item_tower_forward(data, step, tower, candidates, pass, None)
    }

    /// The DSSM item tower over `candidates`, L2-normalised.
    fn item_tower_forward(
        &self,
        data: &EncodedData,
        step: &StepTables,
        tower: &Tower,
        candidates: &[u32],
        pass: &mut Pass<'_>,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mean = self.config.pools_by_mean();
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
        if self.config.dssm().is_some_and(|c| c.item_features) && !data.item_dense.is_empty() {
            plan.values(
                data.item_dense.len(),
                dense_values(&data.item_dense, candidates),
            );
        }
        l2_normalize(&tower.forward(&plan.assemble()?, pass, row_weights)?)
    }
}
