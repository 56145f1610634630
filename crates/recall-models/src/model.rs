//! The two-tower network shared by DSSM and YoutubeDNN.
//!
//! User tower input, concatenated: pooled history (item table, `embedding_dim`), one
//! `feature_dim` embedding per encoded user feature, the user id and the example-age bucket
//! when enabled. DSSM item tower input: the item's own embedding and its pooled genres. Dense
//! layers are candle `Linear`s over `Var`s initialised from the seed; every embedding table is a
//! [`SparseTable`] gathered per batch.

use candle_core::{Device, Tensor, Var};
use rand::Rng;

use crate::Result;
use crate::config::{Activation, ModelConfig, ModelKind, Pooling};
use crate::data::EncodedData;
use crate::fused::bias_activation;
use crate::pool_op::{SegmentPool, pool_rows};
use crate::sparse::{Distinct, Gathered, SparseTable};

/// A dense layer with its activation (none on a tower's last layer): `act(x W^T + b)` with
/// `act(v) = v` for `v > 0`, else `alpha * v` per output column, so one fused op serves PReLU
/// (alpha learned), ReLU (alpha 0) and the identity (alpha 1).
#[derive(Debug, Clone)]
struct Layer {
    weight: Tensor,
    bias: Tensor,
    alpha: Tensor,
    /// Batch normalisation of `x W^T` before the bias and activation (hidden layers only).
    norm: Option<BatchNorm>,
}

/// Batch normalisation (as `torch.nn.BatchNorm1d`): batch statistics while training, which
/// also move the running ones (momentum 0.1, unbiased variance), the running statistics at
/// inference. The running statistics are `Var`s without gradients, so they live with the
/// parameters (checkpoints, snapshots) and the optimiser leaves them alone.
#[derive(Debug, Clone)]
struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    /// `row_weights` (`[n, 1]`, training only) count how many batch rows each row of `z`
    /// stands for, when a tower runs once per distinct input: the batch statistics are then
    /// those of the full batch, repeats included.
    fn forward(&self, z: &Tensor, training: bool, row_weights: Option<&Tensor>) -> Result<Tensor> {
        let (mean, var) = if training {
            let (mean, var, n) = match row_weights {
                None => {
                    let mean = z.mean_keepdim(0)?;
                    let var = z.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
                    (mean, var, z.dim(0)? as f64)
                }
                Some(w) => {
                    let n = f64::from(w.sum_all()?.to_scalar::<f32>()?);
                    let mean = (z.broadcast_mul(w)?.sum_keepdim(0)? / n)?;
                    let var = (z
                        .broadcast_sub(&mean)?
                        .sqr()?
                        .broadcast_mul(w)?
                        .sum_keepdim(0)?
                        / n)?;
                    (mean, var, n)
                }
            };
            // Running statistics follow the batch (no gradient flows into them).
            let unbiased = (var.detach() * (n / (n.max(2.0) - 1.0)))?.squeeze(0)?;
            let m = BN_MOMENTUM;
            self.running_mean.set(
                &((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach().squeeze(0)? * m)?)?,
            )?;
            self.running_var
                .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().unsqueeze(0)?,
                self.running_var.as_tensor().unsqueeze(0)?,
            )
        };
        let normed = z
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.gamma)?
            .broadcast_add(&self.beta)?)
    }
}

/// What a tower is built from.
struct TowerSpec<'a> {
    name: &'a str,
    input: usize,
    widths: &'a [usize],
    activation: Activation,
    batch_norm: bool,
}

/// An MLP with named parameters.
#[derive(Debug, Clone)]
pub struct Tower {
    layers: Vec<Layer>,
}

impl Tower {
    fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(|l| l.norm.is_some())
    }
}

/// A source of dropout keep/scale masks of a given shape.
pub type MaskSource<'a> = &'a mut dyn FnMut(&[usize]) -> Result<Tensor>;

/// How a forward pass runs, as candle's `ModuleT` train flag: inference uses batch
/// normalisation's running statistics and no dropout; training uses batch statistics (moving
/// the running ones) and dropout masks at `dropout` (none at 0).
pub enum Pass<'a> {
    Infer,
    Train { dropout: f32, mask: MaskSource<'a> },
}

impl Pass<'_> {
    pub fn is_training(&self) -> bool {
        matches!(self, Pass::Train { .. })
    }

    fn dropout_active(&self) -> bool {
        matches!(self, Pass::Train { dropout, .. } if *dropout > 0.0)
    }
}

impl std::fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pass::Infer => f.write_str("Infer"),
            Pass::Train { dropout, .. } => {
                f.debug_struct("Train").field("dropout", dropout).finish()
            }
        }
    }
}

/// Named dense parameters, for the optimiser and checkpoints.
pub type Params = Vec<(String, Var)>;

impl Tower {
    fn new(
        spec: &TowerSpec<'_>,
        rng: &mut impl Rng,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        let TowerSpec {
            name,
            input,
            widths,
            activation,
            batch_norm,
        } = *spec;
        let mut layers = Vec::new();
        let mut fan_in = input;
        for (i, &w) in widths.iter().enumerate() {
            // Kaiming-uniform bounds as in torch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            let bound = 1.0 / (fan_in as f32).sqrt();
            let weight: Vec<f32> = (0..w * fan_in)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let bias: Vec<f32> = (0..w).map(|_| rng.random_range(-bound..bound)).collect();
            let wv = Var::from_tensor(&Tensor::from_vec(weight, (w, fan_in), device)?)?;
            let bv = Var::from_tensor(&Tensor::from_vec(bias, w, device)?)?;
            params.push((format!("{name}.{i}.weight"), wv.clone()));
            params.push((format!("{name}.{i}.bias"), bv.clone()));
            let last = i + 1 == widths.len();
            let alpha = match activation {
                _ if last => Tensor::ones(w, candle_core::DType::F32, device)?,
                Activation::Relu => Tensor::zeros(w, candle_core::DType::F32, device)?,
                Activation::Prelu => {
                    let a = Var::from_tensor(&Tensor::full(0.25f32, w, device)?)?;
                    params.push((format!("{name}.{i}.prelu"), a.clone()));
                    a.as_tensor().clone()
                }
            };
            let norm = if batch_norm && !last {
                let var = |what: &str, value: f32, params: &mut Params| -> Result<Var> {
                    let v = Var::from_tensor(&Tensor::full(value, w, device)?)?;
                    params.push((format!("{name}.{i}.bn_{what}"), v.clone()));
                    Ok(v)
                };
                Some(BatchNorm {
                    gamma: var("weight", 1.0, params)?.as_tensor().clone(),
                    beta: var("bias", 0.0, params)?.as_tensor().clone(),
                    running_mean: var("running_mean", 0.0, params)?,
                    running_var: var("running_var", 1.0, params)?,
                })
            } else {
                None
            };
            layers.push(Layer {
                weight: wv.as_tensor().clone(),
                bias: bv.as_tensor().clone(),
                alpha,
                norm,
            });
            fan_in = w;
        }
        Ok(Tower { layers })
    }

    /// Applies the tower in `pass` mode. `row_weights` (`[n, 1]`): how many batch rows each
    /// input row stands for (see [`BatchNorm::forward`]); `None` when every row is one.
    fn forward(
        &self,
        x: &Tensor,
        pass: &mut Pass<'_>,
        row_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        let training = pass.is_training();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let mut z = x.matmul(&l.weight.t()?)?;
            if let Some(norm) = &l.norm {
                z = norm.forward(&z, training, row_weights)?;
            }
            x = bias_activation(&z, &l.bias, &l.alpha)?;
            if i + 1 < n {
                if let Pass::Train { dropout, mask } = pass {
                    if *dropout > 0.0 {
                        x = x.mul(&mask(x.dims())?)?;
                    }
                }
            }
        }
        Ok(x)
    }
}

pub use crate::fused::l2_normalize;

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

    fn table_size(self, data: &EncodedData) -> usize {
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
}

/// `[rows, features]` of dense feature values for entity indices `rows`.
fn dense_inputs(
    features: &[crate::data::DenseFeature],
    rows: &[u32],
    dev: &Device,
) -> Result<Tensor> {
    let mut v = Vec::with_capacity(rows.len() * features.len());
    for &r in rows {
        v.extend(features.iter().map(|f| f.values[r as usize]));
    }
    Ok(Tensor::from_vec(v, (rows.len(), features.len()), dev)?)
}

/// DSSM or YoutubeDNN.
#[derive(Debug, Clone)]
pub struct TwoTower {
    pub config: ModelConfig,
    pub tables: Tables,
    pub user_tower: Tower,
    pub item_tower: Option<Tower>,
    pub params: Params,
    pub device: Device,
    /// Input widths of the user and item towers.
    dims: (usize, usize),
    /// Sources of `tables.history_features`, in the same order.
    history_sources: Vec<ItemFeatureSource>,
}

/// The rows of one forward pass on the user side.
#[derive(Debug, Clone, Copy)]
pub struct UserRows<'a> {
    pub users: &'a [u32],
    pub histories: &'a [&'a [u32]],
    pub ages: &'a [u32],
}

/// Gathered table rows of one step, kept for the sparse update.
#[derive(Debug)]
pub struct StepRows {
    pub gathered: Vec<(usize, Gathered)>,
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
        let (d, fd, std) = (config.embedding_dim, config.feature_dim, config.init_std);
        let item = SparseTable::new(data.item_table_size, d, std, rng).with_zero_padding();
        let user_id = config
            .user_id
            .then(|| SparseTable::new(data.user_table_size, fd, std, rng));
        let user_features: Vec<(String, SparseTable)> = if config.user_features {
            data.user_features
                .iter()
                .map(|f| (f.name.clone(), SparseTable::new(f.table_size, fd, std, rng)))
                .collect()
        } else {
            Vec::new()
        };
        let age = (config.example_age && data.age_table_size > 0)
            .then(|| SparseTable::new(data.age_table_size, fd, std, rng));
        let mut history_sources = Vec::new();
        let mut history_features = Vec::new();
        for name in &config.history_features {
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
        let item_features: Vec<(String, SparseTable)> =
            if config.kind == ModelKind::Dssm && config.item_features {
                data.item_bags
                    .iter()
                    .map(|b| (b.name.clone(), b.table_size))
                    .chain(
                        data.item_scalar_features
                            .iter()
                            .map(|f| (f.name.clone(), f.table_size)),
                    )
                    .map(|(n, size)| (n, SparseTable::new(size, fd, std, rng).with_zero_padding()))
                    .collect()
            } else {
                Vec::new()
            };
        // Whole-history pooling, the optional recent-items pooling, then the side features.
        let pooled = 1 + usize::from(config.recent_items > 0);
        let user_dense = if config.user_features {
            data.user_dense.len()
        } else {
            0
        };
        let item_dense = if config.kind == ModelKind::Dssm && config.item_features {
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
        let (user_tower, item_tower, params) =
            Self::fresh_towers(config, (user_in, item_in), rng, device)?;
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
            user_tower,
            item_tower,
            params,
            device: device.clone(),
            dims: (user_in, item_in),
            history_sources,
        })
    }

    /// Newly initialised towers for inputs of widths `dims` (user, item).
    pub(crate) fn fresh_towers(
        config: &ModelConfig,
        dims: (usize, usize),
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<(Tower, Option<Tower>, Params)> {
        let mut params = Vec::new();
        let spec = |name, input, widths| TowerSpec {
            name,
            input,
            widths,
            activation: config.activation,
            batch_norm: config.batch_norm,
        };
        let user_tower = Tower::new(
            &spec("user_tower", dims.0, &config.user_tower),
            rng,
            device,
            &mut params,
        )?;
        let item_tower = if config.kind == ModelKind::Dssm {
            Some(Tower::new(
                &spec("item_tower", dims.1, &config.item_tower),
                rng,
                device,
                &mut params,
            )?)
        } else {
            None
        };
        Ok((user_tower, item_tower, params))
    }

    pub(crate) fn tables_input_dims(&self) -> (usize, usize) {
        self.dims
    }

    /// Sum or mean of the embeddings of each list (the mean divides by the list's true length;
    /// there is no padding to mask), fused into one op on CPU (see `pool_op`).
    fn pool(&self, g: &Gathered, histories: &[&[u32]]) -> Result<Tensor> {
        let op = SegmentPool::from_lists(
            histories
                .iter()
                .map(|h| h.iter().map(|id| g.local_index(*id))),
            self.config.pooling == Pooling::Mean,
        );
        pool_rows(g.var.as_tensor(), op)
    }

    /// Gathers, for one step, the item rows of histories and `candidates` plus the side tables'
    /// rows. Returned indices: 0 is the item table, then the others in `Tables::named` order.
    pub fn gather(
        &self,
        data: &EncodedData,
        rows: &UserRows,
        candidates: &[u32],
    ) -> Result<StepRows> {
        let dev = &self.device;
        let mut gathered = Vec::new();
        let items = rows
            .histories
            .iter()
            .flat_map(|h| h.iter().copied())
            .chain(candidates.iter().copied())
            .chain([0]);
        gathered.push((0, self.tables.item.gather(items, dev)?));
        let mut slot = 1;
        if let Some(t) = &self.tables.user_id {
            gathered.push((slot, t.gather(rows.users.iter().copied(), dev)?));
            slot += 1;
        }
        for (k, (_, t)) in self.tables.user_features.iter().enumerate() {
            let values = &data.user_features[k].values;
            gathered.push((
                slot,
                t.gather(rows.users.iter().map(|&u| values[u as usize]), dev)?,
            ));
            slot += 1;
        }
        if let Some(t) = &self.tables.age {
            gathered.push((slot, t.gather(rows.ages.iter().copied(), dev)?));
            slot += 1;
        }
        for (source, (_, t)) in self
            .history_sources
            .iter()
            .zip(&self.tables.history_features)
        {
            let values = rows
                .histories
                .iter()
                .flat_map(|h| {
                    h.iter()
                        .flat_map(|&i| source.values(data, i).iter().copied())
                })
                .chain([0]);
            gathered.push((slot, t.gather(values, dev)?));
            slot += 1;
        }
        for (k, (_, t)) in self.tables.item_features.iter().enumerate() {
            let ids: Vec<u32> = match data.item_bags.get(k) {
                Some(bag) => candidates
                    .iter()
                    .flat_map(|&c| {
                        bag.values[bag.offsets[c as usize]..bag.offsets[c as usize + 1]]
                            .iter()
                            .copied()
                    })
                    .chain([0])
                    .collect(),
                None => {
                    let f = &data.item_scalar_features[k - data.item_bags.len()];
                    candidates.iter().map(|&c| f.values[c as usize]).collect()
                }
            };
            gathered.push((slot, t.gather(ids, dev)?));
            slot += 1;
        }
        Ok(StepRows { gathered })
    }

    /// User vectors `[B, out]`, L2-normalised.
    pub fn users(
        &self,
        data: &EncodedData,
        step: &StepRows,
        rows: &UserRows,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let b = rows.users.len();
        let dev = &self.device;
        let mut parts = vec![self.pool(&step.gathered[0].1, rows.histories)?];
        if self.config.recent_items > 0 {
            let recent: Vec<&[u32]> = rows
                .histories
                .iter()
                .map(|h| &h[h.len().saturating_sub(self.config.recent_items)..])
                .collect();
            parts.push(self.pool(&step.gathered[0].1, &recent)?);
        }
        let mut slot = 1;
        if self.tables.user_id.is_some() {
            parts.push(step.gathered[slot].1.lookup(rows.users, &[b], dev)?);
            slot += 1;
        }
        for k in 0..self.tables.user_features.len() {
            let values = &data.user_features[k].values;
            let ids: Vec<u32> = rows.users.iter().map(|&u| values[u as usize]).collect();
            parts.push(step.gathered[slot].1.lookup(&ids, &[b], dev)?);
            slot += 1;
        }
        if self.tables.age.is_some() {
            parts.push(step.gathered[slot].1.lookup(rows.ages, &[b], dev)?);
            slot += 1;
        }
        if self.config.user_features && !data.user_dense.is_empty() {
            parts.push(dense_inputs(&data.user_dense, rows.users, dev)?);
        }
        for source in &self.history_sources {
            let g = &step.gathered[slot].1;
            let op = SegmentPool::from_lists(
                rows.histories.iter().map(|h| {
                    h.iter()
                        .flat_map(|&i| source.values(data, i).iter().map(|v| g.local_index(*v)))
                }),
                self.config.pooling == Pooling::Mean,
            );
            parts.push(pool_rows(g.var.as_tensor(), op)?);
            slot += 1;
        }
        let x = Tensor::cat(&parts.iter().collect::<Vec<_>>(), 1)?;
        l2_normalize(&self.user_tower.forward(&x, pass, None)?)
    }

    /// Item vectors `[N, out]` for `candidates`, L2-normalised.
    pub fn items(
        &self,
        data: &EncodedData,
        step: &StepRows,
        candidates: &[u32],
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let n = candidates.len();
        let dev = &self.device;
        let Some(tower) = &self.item_tower else {
            return l2_normalize(&step.gathered[0].1.lookup(candidates, &[n], dev)?);
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
                    Some(Tensor::from_vec(copies, (distinct.ids.len(), 1), dev)?)
                } else {
                    None
                };
                let vectors = self.item_tower_forward(
                    data,
                    step,
                    tower,
                    &distinct.ids,
                    pass,
                    weights.as_ref(),
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
        step: &StepRows,
        tower: &Tower,
        candidates: &[u32],
        pass: &mut Pass<'_>,
        row_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let n = candidates.len();
        let dev = &self.device;
        let own = step.gathered[0].1.lookup(candidates, &[n], dev)?;
        let mut parts = vec![own];
        let first_item_slot = step.gathered.len() - self.tables.item_features.len();
        for k in 0..self.tables.item_features.len() {
            let g = &step.gathered[first_item_slot + k].1;
            match data.item_bags.get(k) {
                Some(bag) => {
                    let lists: Vec<&[u32]> = candidates
                        .iter()
                        .map(|&c| &bag.values[bag.offsets[c as usize]..bag.offsets[c as usize + 1]])
                        .collect();
                    parts.push(self.pool(g, &lists)?);
                }
                None => {
                    let f = &data.item_scalar_features[k - data.item_bags.len()];
                    let ids: Vec<u32> = candidates.iter().map(|&c| f.values[c as usize]).collect();
                    parts.push(g.lookup(&ids, &[n], dev)?);
                }
            }
        }
        if self.config.item_features && !data.item_dense.is_empty() {
            parts.push(dense_inputs(&data.item_dense, candidates, dev)?);
        }
        let x = Tensor::cat(&parts.iter().collect::<Vec<_>>(), 1)?;
        l2_normalize(&tower.forward(&x, pass, row_weights)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(dev: &Device) -> BatchNorm {
        let var = |v: f32| Var::from_tensor(&Tensor::full(v, 2, dev).unwrap()).unwrap();
        BatchNorm {
            gamma: Tensor::new(&[1.5f32, 0.5], dev).unwrap(),
            beta: Tensor::new(&[0.1f32, -0.2], dev).unwrap(),
            running_mean: var(0.0),
            running_var: var(1.0),
        }
    }

    /// Distinct rows weighted by their copies normalise exactly as the batch with its repeats
    /// does, and move the running statistics the same way.
    #[test]
    fn weighted_batch_norm_equals_the_batch_with_repeats() {
        let dev = Device::Cpu;
        let distinct = Tensor::new(&[[1f32, 4.0], [2.0, -1.0], [5.0, 0.5]], &dev).unwrap();
        // Rows 0, 1, 1, 2, 2, 2 of `distinct`.
        let repeated = distinct
            .index_select(&Tensor::new(&[0u32, 1, 1, 2, 2, 2], &dev).unwrap(), 0)
            .unwrap();
        let weights = Tensor::new(&[[1f32], [2.0], [3.0]], &dev).unwrap();
        let (a, b) = (norm(&dev), norm(&dev));
        let full = a.forward(&repeated, true, None).unwrap();
        let weighted = b.forward(&distinct, true, Some(&weights)).unwrap();
        let expanded = weighted
            .index_select(&Tensor::new(&[0u32, 1, 1, 2, 2, 2], &dev).unwrap(), 0)
            .unwrap();
        let close = |x: &Tensor, y: &Tensor| {
            let (x, y) = (
                x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-5)
        };
        assert!(close(&full, &expanded));
        assert!(close(
            a.running_mean.as_tensor(),
            b.running_mean.as_tensor()
        ));
        assert!(close(a.running_var.as_tensor(), b.running_var.as_tensor()));
        // Inference leaves the statistics alone.
        let before = a.running_mean.as_tensor().to_vec1::<f32>().unwrap();
        a.forward(&distinct, false, None).unwrap();
        assert_eq!(a.running_mean.as_tensor().to_vec1::<f32>().unwrap(), before);
    }
}
