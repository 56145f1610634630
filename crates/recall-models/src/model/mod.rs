//! The two-tower network shared by DSSM and YoutubeDNN.
//!
//! User tower input, concatenated: pooled history (item table, `embedding_dim`), one
//! `feature_dim` embedding per encoded user feature, the user id and the example-age bucket
//! when enabled. DSSM item tower input: the item's own embedding and its pooled genres. Dense
//! layers are candle `Linear`s over `Var`s initialised from the seed; every embedding table is a
//! [`SparseTable`] gathered per batch.

pub mod hstu;
pub mod input_op;
pub mod item_tower;
pub mod pooled;
pub mod sequence;
pub mod sparse;
pub mod tables;
pub mod tower;
pub mod window;

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::config::{ModelConfig, ModelKind};
use crate::data::EncodedData;
pub use crate::data::UserRows;
use crate::error::Result;
use crate::model::hstu::{HstuEncoder, HstuOptions};
use crate::model::input_op::InputPlan;
use crate::model::item_tower::ItemTower;
use crate::model::pooled::PooledTower;
use crate::model::sequence::{SequenceEncoder, SequenceSpec};
use crate::model::sparse::SparseTable;
use crate::model::tables::dense_values;
pub use crate::model::tables::{ItemFeatureSource, StepTables, Tables};
use crate::model::tower::TowerSpec;
pub use crate::model::tower::{MaskSource, Params, Pass, Tower};
use crate::model::window::WindowEncoder;
pub use crate::ops::fused::l2_normalize;

/// DSSM, YoutubeDNN or SASRec: the embedding tables, the kind's user encoder and item side.
#[derive(Debug, Clone)]
pub struct TwoTower {
    config: ModelConfig,
    tables: Tables,
    user: UserEncoder,
    item: ItemEncoder,
    params: Params,
    device: Device,
    /// What the encoders were built from (widths, specs, feature sources).
    inputs: EncoderInputs,
}

/// Each kind's user side: the pooling MLP tower (DSSM, YoutubeDNN), trained on rows, or an
/// encoder of windows (SASRec), trained at every position.
#[derive(Debug, Clone)]
pub(crate) enum UserEncoder {
    Pooled(PooledTower),
    Windows(Arc<dyn WindowEncoder>),
}

/// Each kind's item side: the item table itself (YoutubeDNN, SASRec) or DSSM's item tower.
#[derive(Debug, Clone)]
pub(crate) enum ItemEncoder {
    Table,
    Tower(ItemTower),
}

/// What a model trains on: one example per (user, position) row, or windows of a user's
/// sequence trained at every position (with their `max_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainingUnit {
    Rows,
    Windows { max_len: usize },
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
pub(crate) struct Encoders {
    pub user: UserEncoder,
    pub item: ItemEncoder,
    pub params: Params,
}

/// What a model's encoders are built from besides its config: input widths, SASRec's spec,
/// and the item-feature sources of the history and item tower inputs.
#[derive(Debug, Clone)]
pub(crate) struct EncoderInputs {
    pub dims: (usize, usize),
    pub sequence: Option<SequenceSpec>,
    pub history_sources: Vec<ItemFeatureSource>,
    pub item_sources: Vec<ItemFeatureSource>,
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
        let item_tower_features = config.item_tower().is_some_and(|c| c.item_features);
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
        let item_sources = if item_tower_features {
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
        let item_dense = if item_tower_features {
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
        // The sequence kinds' blocks and heads (HSTU has no feed-forward net: its width is unused).
        let blocks = match config {
            ModelConfig::Sasrec(c) => {
                Some((c.blocks, c.heads, c.ffn_width.unwrap_or(d), c.input_scale))
            }
            ModelConfig::Hstu(c) => Some((c.blocks, c.heads, d, c.input_scale)),
            _ => None,
        };
        let sequence_spec = if let Some((blocks, heads, ffn, input_scale)) = blocks {
            let max_len = config.history_len(data.max_len);
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
                blocks,
                heads,
                max_len,
                ffn,
                // The user's side inputs (no history pooling): ids, features, dense values.
                side: user_in - d * pooled - fd * history_features.len(),
                dropout: common.dropout,
                input_scale,
            })
        } else {
            None
        };
        let inputs = EncoderInputs {
            dims: (user_in, item_in),
            sequence: sequence_spec,
            history_sources,
            item_sources,
        };
        let encoders = Self::fresh_encoders(config, &inputs, rng, device)?;
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
            user: encoders.user,
            item: encoders.item,
            params: encoders.params,
            device: device.clone(),
            inputs,
        })
    }

    /// Newly initialised encoders of each kind for `inputs`, their parameters named. The
    /// order of initialisation (user side, then item side) is the checkpoints' contract with
    /// the seed.
    pub(crate) fn fresh_encoders(
        config: &ModelConfig,
        inputs: &EncoderInputs,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Encoders> {
        let mut params = Vec::new();
        let spec = |name, input, widths| tower_spec(config, name, input, widths);
        let mean = config.pools_by_mean();
        let user_dense = config.common().user_features;
        let user = match (config.pooled_user(), inputs.sequence) {
            (Some(pooled), _) => {
                let tower = Tower::new(
                    &spec("user_tower", inputs.dims.0, &pooled.user_tower),
                    rng,
                    device,
                    &mut params,
                )?;
                UserEncoder::Pooled(PooledTower::new(
                    tower,
                    mean,
                    pooled.recent_items,
                    user_dense,
                    inputs.history_sources.clone(),
                ))
            }
            (None, Some(sequence)) => {
                let std = config.common().init_std;
                let encoder: Arc<dyn WindowEncoder> = match config.kind() {
                    ModelKind::Hstu => {
                        let options =
                            config
                                .hstu()
                                .map_or_else(HstuOptions::default, |c| HstuOptions {
                                    identity_init: c.identity_init,
                                    bias_buckets: c.bias_buckets,
                                });
                        Arc::new(HstuEncoder::new(
                            sequence,
                            std,
                            options,
                            rng,
                            device,
                            &mut params,
                        )?)
                    }
                    _ => Arc::new(SequenceEncoder::new(
                        sequence,
                        std,
                        rng,
                        device,
                        &mut params,
                    )?),
                };
                UserEncoder::Windows(encoder)
            }
            (None, None) => {
                return Err(crate::error::Error::Training(format!(
                    "a {} model without its sequence settings",
                    config.kind().name()
                )));
            }
        };
        let item = match config.item_tower() {
            Some(dssm) => {
                let tower = Tower::new(
                    &spec("item_tower", inputs.dims.1, &dssm.item_tower),
                    rng,
                    device,
                    &mut params,
                )?;
                ItemEncoder::Tower(ItemTower::new(
                    tower,
                    mean,
                    dssm.item_features,
                    inputs.item_sources.clone(),
                    dssm.item_id_dropout,
                ))
            }
            None => ItemEncoder::Table,
        };
        Ok(Encoders { user, item, params })
    }

    /// What the encoders were built from (to build them again from a checkpoint's tensors).
    pub(crate) fn encoder_inputs(&self) -> &EncoderInputs {
        &self.inputs
    }

    /// Replaces the encoders and their parameters (a snapshot, a checkpoint's weights).
    pub(crate) fn set_encoders(&mut self, encoders: Encoders) {
        self.user = encoders.user;
        self.item = encoders.item;
        self.params = encoders.params;
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The embedding tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub(crate) fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The dense parameters by name (towers, SASRec's blocks).
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The encoder of windows, for the kinds trained on them (SASRec).
    pub fn window_encoder(&self) -> Option<&dyn WindowEncoder> {
        match &self.user {
            UserEncoder::Windows(e) => Some(e.as_ref()),
            UserEncoder::Pooled(_) => None,
        }
    }

    /// The pooling user tower, for the kinds that have one.
    pub(crate) fn pooled_tower(&self) -> Option<&PooledTower> {
        match &self.user {
            UserEncoder::Pooled(p) => Some(p),
            UserEncoder::Windows(_) => None,
        }
    }

    /// DSSM's item tower.
    pub(crate) fn item_tower(&self) -> Option<&ItemTower> {
        match &self.item {
            ItemEncoder::Tower(t) => Some(t),
            ItemEncoder::Table => None,
        }
    }

    /// The PyTorch counterpart of one of this model's checkpoint tensors, for `tensors.json`:
    /// the kind's encoder names its own tensors, the dense layers and the embedding tables
    /// theirs.
    pub fn torch_counterpart(&self, name: &str, shape: &[usize]) -> String {
        let own = match &self.user {
            UserEncoder::Windows(e) => e.torch_counterpart(name, shape),
            UserEncoder::Pooled(_) => None,
        };
        own.or_else(|| tower::torch_counterpart(name, shape))
            .unwrap_or_else(|| {
                if shape.len() == 2 {
                    format!(
                        "nn.Embedding(num_embeddings={}, embedding_dim={}).weight (row = encoded index; 0 padding, 1 out-of-vocabulary)",
                        shape[0], shape[1]
                    )
                } else {
                    "tensor".into()
                }
            })
    }

    /// What this kind trains on.
    pub fn training_unit(&self) -> TrainingUnit {
        match &self.user {
            UserEncoder::Pooled(_) => TrainingUnit::Rows,
            UserEncoder::Windows(e) => TrainingUnit::Windows {
                max_len: e.max_len(),
            },
        }
    }

    /// Input widths of the user and item towers (the item's is that of the embedding alone
    /// for YoutubeDNN, which has no item tower).
    pub fn input_widths(&self) -> (usize, usize) {
        self.inputs.dims
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
            .chain([0])
            // The OOV row, for an item tower that reads it in place of an item's own.
            .chain(
                self.item_tower()
                    .filter(|t| t.reads_oov_row(data))
                    .map(|_| recall_core::columns::OOV_INDEX as u32),
            );
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
                .pooled_tower()
                .map_or(&[][..], |p| p.history_sources())
                .iter()
                .zip(&self.tables.history_features)
                .map(|(&source, (_, t))| {
                    let mut all = rows.histories.iter().flat_map(|h| h.iter().copied());
                    t.gather(item_values(source, &mut all), dev)
                })
                .collect::<Result<_>>()?,
            item_features: self
                .item_tower()
                .map_or(&[][..], |t| t.item_sources())
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
        match &self.user {
            UserEncoder::Pooled(tower) => tower.forward(data, step, rows, pass),
            UserEncoder::Windows(encoder) => {
                let side = self.side_inputs(data, step, rows.users)?;
                encoder.users(&step.item, rows.histories, side.as_ref(), pass)
            }
        }
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
        match self.training_unit() {
            TrainingUnit::Windows { max_len } => max_len,
            TrainingUnit::Rows => data.max_len,
        }
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
        let encoder = self.window_encoder().ok_or_else(|| {
            crate::error::Error::Training(format!(
                "a {} model has no sequence encoder",
                self.config.kind().name()
            ))
        })?;
        let side = self.side_inputs(data, step, rows.users)?;
        encoder.hidden(&step.item, rows.histories, side.as_ref(), pass)
    }

    /// Item vectors `[N, out]` for `candidates`, L2-normalised.
    pub fn items(
        &self,
        data: &EncodedData,
        step: &StepTables,
        candidates: &[u32],
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        match &self.item {
            ItemEncoder::Table => l2_normalize(&step.item.lookup(
                candidates,
                &[candidates.len()],
                &self.device,
            )?),
            ItemEncoder::Tower(tower) => tower.forward(data, step, candidates, pass, &self.device),
        }
    }
}
