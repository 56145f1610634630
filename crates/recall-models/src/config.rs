//! Model and training configuration (`[train]` in a pipeline file). Every field has a
//! documented default except the seed, which the pipeline passes in.

use recall_core::Error;
use recall_eval::split::SeenView;
use serde::{Deserialize, Serialize};

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Two towers: user features + pooled history into a user MLP, item id + item features
    /// into an item MLP; both L2-normalised; score = cosine / temperature.
    Dssm,
    /// User tower over user features, pooled watch history and example age; the item side is
    /// the item embedding table itself (shared with the history); L2-normalised.
    Youtubednn,
    /// SASRec: a causal self-attention user tower over the item history (`blocks`, `heads`,
    /// `max_len`, `ffn_width`, `dropout`), trained to predict the next item at every position;
    /// the item side is the item table, as YoutubeDNN's, or with `item_tower` an item tower as
    /// DSSM's (the cold path).
    Sasrec,
    /// An HSTU-style sequence tower (Zhai et al. 2024): SASRec's windows and training, with
    /// blocks of pointwise SiLU attention, a relative position bias and a gated output in
    /// place of softmax attention and the feed-forward net (`blocks`, `heads`, `max_len`,
    /// `dropout`).
    Hstu,
}

impl ModelKind {
    /// The kind as a pipeline file spells it (`dssm`, `youtubednn`, `sasrec`, `hstu`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Dssm => "dssm",
            ModelKind::Youtubednn => "youtubednn",
            ModelKind::Sasrec => "sasrec",
            ModelKind::Hstu => "hstu",
        }
    }

    /// Whether the kind is trained on windows of a user's sequence, every position a
    /// next-item target (the sequence towers), rather than on one row per example.
    pub fn trains_on_windows(self) -> bool {
        matches!(self, ModelKind::Sasrec | ModelKind::Hstu)
    }
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Prelu,
}

/// What a tower's last layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LastLayer {
    /// A plain linear layer (no batch norm, no activation) before the L2 normalisation. The
    /// default.
    #[default]
    Linear,
    /// Like every hidden layer: batch norm (when `batch_norm`) and the activation, then the L2
    /// normalisation, as torch-rechub's towers (its `MLP(output_layer=False)`).
    LikeHidden,
}

/// History pooling (padding is always masked out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Sum,
}

/// Training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax over the batch's targets, with logQ correction and accidental hits masked.
    #[default]
    InBatch,
    /// In-batch candidates plus `negatives` items drawn once for the whole batch from
    /// `sampler` (mixed negative sampling, Yang et al. 2020), each corrected by its own logQ.
    Mixed,
    /// Softmax over the positive and `negatives` sampled items (listwise).
    SampledSoftmax,
    /// Binary cross-entropy on the positive (label 1) and `negatives` sampled items (label 0).
    Pointwise,
    /// BPR: -log sigmoid(s_pos - s_neg) over `negatives` sampled items.
    Pairwise,
    /// Softmax over the whole catalogue (no sampling, no correction): exact, and affordable
    /// where the catalogue is a few thousand items (ML-1M); YoutubeDNN and SASRec.
    FullSoftmax,
}

/// Where the in-batch logQ correction takes q from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogqSource {
    /// Training-target frequencies counted once.
    #[default]
    Counts,
    /// The streaming frequency estimator (Yi et al. 2019), updated every batch.
    Streaming,
}

/// Settings of `logq_source = "streaming"` (`logq_streaming = { alpha = 0.01 }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamingLogq {
    /// Averaging rate of the estimator's moving averages (Yi et al. use 0.01): larger follows a
    /// drifting distribution faster, smaller is steadier. Default 0.01.
    #[serde(default = "default_streaming_alpha")]
    pub alpha: f64,
    /// Hash items into this many slots (fixed memory, colliding items share an estimate).
    /// Default: one slot per item, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<usize>,
}

fn default_streaming_alpha() -> f64 {
    0.01
}

impl Default for StreamingLogq {
    fn default() -> Self {
        StreamingLogq {
            alpha: default_streaming_alpha(),
            buckets: None,
        }
    }
}

impl StreamingLogq {
    fn is_default(&self) -> bool {
        *self == StreamingLogq::default()
    }
}

/// Hard negatives from an earlier model of the same pipeline (a second training round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardNegativeConfig {
    /// Name of the `[[models]]` entry, earlier in the file, that mines them.
    pub from: String,
    /// Rank band `[lo, hi)` of that model's ranking (0-based), e.g. [50, 200].
    pub band: (usize, usize),
    /// How many of each example's `negatives` are hard ones.
    pub count: usize,
}

/// The earlier model a warm start loads (`init_from = { run = "runs/day-1", model =
/// "youtubednn" }`). The pipeline resolves it (only it knows the run layout) and grows that
/// run's vocabularies in the encode stage, so every id keeps the row it was trained in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitFrom {
    /// The earlier run's directory (`runs/<name>` of the pipeline that trained it).
    pub run: std::path::PathBuf,
    /// The `[[models]]` name in that run.
    pub model: String,
    /// Shrink and perturb (Ash and Adams, "On warm-starting neural network training", 2020):
    /// each carried weight becomes `shrink * earlier + perturb * fresh`, where `fresh` is the
    /// value a new model would start from; new rows are fresh. Warm-started networks tend to
    /// generalise worse than ones trained anew, and this restores some of the fresh model's
    /// plasticity. Default 1 and 0: the earlier weights as they are.
    #[serde(default = "default_shrink", skip_serializing_if = "is_one")]
    pub shrink: f64,
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub perturb: f64,
    /// Incremental training: each epoch trains on the examples the earlier model never
    /// trained on (targets past its training prefix, and every example of a new user) plus
    /// this share of the ones it did, drawn anew each epoch (a replay sample, so the carried
    /// knowledge is rehearsed rather than forgotten). In [0, 1]; left out, every example
    /// trains each epoch, as a model trained anew would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<f64>,
}

fn default_shrink() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// How the learning rate moves over training: `lr` after `warmup_steps` linear steps from
/// zero, then constant or decayed to zero by the last step of the last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum LrSchedule {
    /// `lr` throughout (after any warmup). The default.
    #[default]
    Constant,
    /// Cosine decay to zero.
    Cosine,
    /// Linear decay to zero.
    Linear,
    /// Constant, then a linear decay to zero over the last `fraction` of the steps (after
    /// warmup): the long constant phase keeps the learning of an under-trained model (where
    /// a decay from the start lost, MEASUREMENTS.md), the cool-down ends it on the averaged
    /// weights a small learning rate settles on instead of the last noisy step.
    Cooldown { fraction: f64 },
}

/// The steps after warmup, the span every decay and the full-softmax switch
/// (`TrainConfig::full_softmax_from`) measure their fractions over: one definition, so a
/// cool-down and a switch of the same fraction start at the same step.
struct AfterWarmup {
    warmup: usize,
    span: f64,
}

impl AfterWarmup {
    fn new(total: usize, warmup: usize) -> Self {
        AfterWarmup {
            warmup,
            span: total.saturating_sub(warmup).max(1) as f64,
        }
    }

    /// The share of the after-warmup steps done at `step`, in [0, 1].
    fn progress(&self, step: usize) -> f64 {
        (step.saturating_sub(self.warmup) as f64 / self.span).clamp(0.0, 1.0)
    }

    /// The step (rounded) at which `progress` reaches `share`.
    fn step_at(&self, share: f64) -> usize {
        self.warmup + (share * self.span).round() as usize
    }
}

// Options added after the first release are left out of the serialised config while they
// hold their defaults: the config hash of an existing pipeline (and so its cached stages)
// stays the same, and older readers still parse the file.
fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn is_one_usize(n: &usize) -> bool {
    *n == 1
}

fn default_one() -> usize {
    1
}

impl LrSchedule {
    fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }

    /// The factor on `lr` at `step` (0-based) of `total`, with `warmup` steps.
    pub fn factor(self, step: usize, total: usize, warmup: usize) -> f64 {
        if step < warmup {
            return (step + 1) as f64 / warmup as f64;
        }
        let t = AfterWarmup::new(total, warmup).progress(step);
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            LrSchedule::Linear => 1.0 - t,
            LrSchedule::Cooldown { fraction } => ((1.0 - t) / fraction).min(1.0),
        }
    }
}

/// Distribution of sampled negatives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum NegativeSampler {
    Uniform,
    /// `count^alpha`.
    Popularity {
        alpha: f64,
    },
}

fn default_dim() -> usize {
    64
}
fn default_feature_dim() -> usize {
    16
}
fn default_tower() -> Vec<usize> {
    vec![256, 64]
}
fn default_temperature() -> f64 {
    0.05
}
fn default_true() -> bool {
    true
}
fn default_negatives() -> usize {
    20
}
fn default_sampler() -> NegativeSampler {
    NegativeSampler::Popularity { alpha: 0.75 }
}
fn default_batch() -> usize {
    1024
}
fn default_epochs() -> usize {
    10
}
fn default_lr() -> f64 {
    1e-3
}
fn default_patience() -> usize {
    2
}
fn default_k() -> usize {
    50
}
fn default_std() -> f32 {
    0.05
}
fn default_blocks() -> usize {
    2
}

/// Architecture settings: one kind with its own keys (`kind = "dssm" | "youtubednn" |
/// "sasrec"` in a pipeline file). A key of another kind is refused with the key and the kind
/// named; the serialised form (`config.json`, config hashes) holds exactly the kind's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawModelConfig", into = "RawModelConfig")]
pub enum ModelConfig {
    /// Two towers: user features + pooled history into a user MLP, item id + item features
    /// into an item MLP; both L2-normalised; score = cosine / temperature.
    Dssm(DssmConfig),
    /// User tower over user features, pooled watch history and example age; the item side is
    /// the item embedding table itself (shared with the history); L2-normalised.
    Youtubednn(YoutubednnConfig),
    /// A causal self-attention user tower over the item history, trained to predict the next
    /// item at every position; the item side is the item table, as YoutubeDNN's, or an item
    /// tower (`item_tower`).
    Sasrec(SasrecConfig),
    /// SASRec's windows and training with HSTU-style blocks.
    Hstu(HstuConfig),
}

/// Keys every kind has.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// Dimension of item (and history) embeddings. Default 64.
    pub embedding_dim: usize,
    /// Dimension of every side-feature embedding (user features, genres, example age, user
    /// id). Default 16.
    pub feature_dim: usize,
    /// Dropout on hidden layers during training (seeded). Default 0.
    pub dropout: f32,
    /// Scores are cosine / temperature. Default 0.05.
    pub temperature: f64,
    /// Standard deviation of embedding initialisation. Default 0.05.
    pub init_std: f32,
    /// Feed the encoded user features. Default true.
    pub user_features: bool,
    /// Feed the user id embedding (memorises users seen in training). Default false.
    pub user_id: bool,
}

/// How the MLP towers' layers are built (DSSM's two towers, YoutubeDNN's user tower).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mlp {
    pub activation: Activation,
    /// Batch normalisation after each hidden layer's matrix product (before bias and
    /// activation), as `torch.nn.BatchNorm1d`. Default false.
    pub batch_norm: bool,
    /// The towers' last layer: `"linear"` (default) or `"like-hidden"`.
    pub last_layer: LastLayer,
}

/// The pooling user tower's keys (DSSM, YoutubeDNN).
#[derive(Debug, Clone, PartialEq)]
pub struct PooledUser {
    /// Layer widths of the user tower; the last is the output. Default [256, 64].
    pub user_tower: Vec<usize>,
    pub pooling: Pooling,
    /// Also pool the newest `recent_items` of the history into a second vector beside the
    /// whole-history one (0 = off, the default). Short-term interest is much of what predicts
    /// the next item in session-like logs such as MovieLens.
    pub recent_items: usize,
    /// Item features pooled over the history as sequences of their own, each with its own
    /// table (the genres of the watched items on MovieLens). Default none.
    pub history_features: Vec<String>,
    /// Feed the example-age bucket to the user tower (0 at serving). Default true.
    pub example_age: bool,
}

/// An item tower over the item's id row and its features: DSSM's item side, and SASRec's and
/// HSTU's when `item_tower` is set (in place of the bare item table on the candidate side).
/// It is the path a cold item takes.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemTowerConfig {
    /// Layer widths of the item tower; it must end where the user side does. Default (DSSM)
    /// [256, 64].
    pub item_tower: Vec<usize>,
    /// Feed item side features (genres) to the item tower. Default true.
    pub item_features: bool,
    /// Id dropout: during training each candidate's id row is replaced by the out-of-vocabulary
    /// row with this probability while its features stay, so the tower learns to place an item
    /// from its features alone, the path a cold item (`encode.cold_items`) takes: its own id
    /// row is never trained as a candidate, so on the item side it always reads the OOV row.
    /// Default 0.
    pub item_id_dropout: f32,
}

/// `kind = "dssm"`.
#[derive(Debug, Clone, PartialEq)]
pub struct DssmConfig {
    pub common: Common,
    pub mlp: Mlp,
    pub user: PooledUser,
    pub item: ItemTowerConfig,
}

/// `kind = "youtubednn"`.
#[derive(Debug, Clone, PartialEq)]
pub struct YoutubednnConfig {
    pub common: Common,
    pub mlp: Mlp,
    /// Its user tower must end at `embedding_dim` (it is scored against the item table).
    pub user: PooledUser,
}

/// `kind = "sasrec"`.
#[derive(Debug, Clone, PartialEq)]
pub struct SasrecConfig {
    pub common: Common,
    /// Attention blocks. Default 2.
    pub blocks: usize,
    /// Attention heads (`embedding_dim` must divide by it). Default 1.
    pub heads: usize,
    /// The newest items the attention sees (training windows and the history a user is
    /// embedded at). Default, and at most: the encode stage's `max_len`.
    pub max_len: Option<usize>,
    /// Hidden width of each block's feed-forward net. Default `embedding_dim`.
    pub ffn_width: Option<usize>,
    /// An item tower on the candidate side (`item_tower = [...]`, with `item_features` and
    /// `item_id_dropout`): cold items get vectors from their features. Default none: the
    /// item table, shared with the history.
    pub item: Option<ItemTowerConfig>,
    /// Multiplies each history item's embedding before the positions are added. Default 1;
    /// the published SASRec and HSTU code multiply by sqrt(embedding_dim) (8 at width 64).
    pub input_scale: f32,
}

/// `kind = "hstu"`.
#[derive(Debug, Clone, PartialEq)]
pub struct HstuConfig {
    pub common: Common,
    /// HSTU blocks. Default 2.
    pub blocks: usize,
    /// Attention heads (`embedding_dim` must divide by it). Default 1.
    pub heads: usize,
    /// The newest items the attention sees (training windows, the history a user is embedded
    /// at, and the span of the relative position bias). Default, and at most: the encode
    /// stage's `max_len`.
    pub max_len: Option<usize>,
    /// An item tower on the candidate side, as SASRec's.
    pub item: Option<ItemTowerConfig>,
    /// As SASRec's `input_scale`.
    pub input_scale: f32,
    /// Each block's output projection starts at zero, so the stack starts as the identity and
    /// the item embeddings reach the final norm undiluted; otherwise (the default) it starts
    /// as torch's `Linear`, and each block adds its draws (about 0.3 per dimension by an
    /// estimate from the widths) to a stream whose items start at `init_std`. At 8 blocks on
    /// ML-1M it shortened a seed's plateau at the start but slowed the first epochs of both
    /// seeds and ended behind 6 blocks without it (MEASUREMENTS.md, "Eight blocks"); at 6
    /// blocks it put a seed that had none on a plateau (MEASUREMENTS.md, "The published
    /// code's sqrt(dim) input scale").
    pub identity_init: bool,
    /// How many learned values each block's relative position bias has. Absent (the
    /// default): one per distance up to `max_len`, as generative-recommenders' position bias.
    /// `n` (1 to `max_len - 1`): T5's buckets (Raffel et al. 2020), distances below `n / 2`
    /// one each and longer ones `n - n / 2` logarithmically wider ones up to `max_len`, so a
    /// rarely seen long distance shares its value with its neighbours; 1 gives every distance
    /// the same value (the bias then carries no position).
    pub bias_buckets: Option<usize>,
}

/// Every key of every kind, as a pipeline file spells them: what a `model = { ... }` table is
/// read into before it becomes its kind's type (so another kind's key can be named).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelConfig {
    kind: Option<ModelKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    feature_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropout: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_std: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_features: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_tower: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activation: Option<Activation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_layer: Option<LastLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pooling: Option<Pooling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recent_items: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_features: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    example_age: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_tower: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_features: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id_dropout: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_init: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bias_buckets: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_scale: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ffn_width: Option<usize>,
}

const COMMON_KEYS: [&str; 7] = [
    "embedding_dim",
    "feature_dim",
    "dropout",
    "temperature",
    "init_std",
    "user_features",
    "user_id",
];
const POOLED_KEYS: [&str; 8] = [
    "user_tower",
    "activation",
    "batch_norm",
    "last_layer",
    "pooling",
    "recent_items",
    "history_features",
    "example_age",
];
const ITEM_TOWER_KEYS: [&str; 3] = ["item_tower", "item_features", "item_id_dropout"];
const SASREC_KEYS: [&str; 5] = ["blocks", "heads", "max_len", "ffn_width", "input_scale"];
const HSTU_KEYS: [&str; 6] = [
    "blocks",
    "heads",
    "max_len",
    "identity_init",
    "input_scale",
    "bias_buckets",
];

impl ModelKind {
    /// The keys a `model = { ... }` table of this kind may have (besides `kind`).
    pub fn keys(self) -> Vec<&'static str> {
        let mut keys = COMMON_KEYS.to_vec();
        match self {
            ModelKind::Dssm => {
                keys.extend(POOLED_KEYS);
                keys.extend(ITEM_TOWER_KEYS);
            }
            ModelKind::Youtubednn => keys.extend(POOLED_KEYS),
            ModelKind::Sasrec => {
                keys.extend(SASREC_KEYS);
                keys.extend(ITEM_TOWER_KEYS);
            }
            ModelKind::Hstu => {
                keys.extend(HSTU_KEYS);
                keys.extend(ITEM_TOWER_KEYS);
            }
        }
        keys
    }
}

impl RawModelConfig {
    /// The keys the table set: what it serialises to, since every field is skipped when unset
    /// (so a key added to the struct is checked against the kinds without a second list).
    fn present(&self) -> Vec<String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k != "kind")
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `input_scale`, 1 unless set; a scale that is not a positive finite number is refused.
    fn input_scale(&self) -> Result<f32, String> {
        match self.input_scale {
            None => Ok(1.0),
            Some(s) if s.is_finite() && s > 0.0 => Ok(s),
            Some(s) => Err(format!(
                "`input_scale` = {s} is not a positive number (the published code's is sqrt(embedding_dim), 8 at width 64)"
            )),
        }
    }

    /// Whether a count fits `max_len` is checked where the model is built (the encode stage's
    /// `max_len` is the default).
    fn bias_buckets(&self) -> Result<Option<usize>, String> {
        match self.bias_buckets {
            Some(0) => Err(
                "`bias_buckets` = 0: the relative position bias needs at least one value (1 gives every distance the same; leave the key out for one per distance)".into(),
            ),
            n => Ok(n),
        }
    }

    /// Left out at 1, so a file without the key reads back as it was written.
    fn set_input_scale(&mut self, scale: f32) {
        self.input_scale = (scale != 1.0).then_some(scale);
    }

    fn common(&self) -> Common {
        Common {
            embedding_dim: self.embedding_dim.unwrap_or_else(default_dim),
            feature_dim: self.feature_dim.unwrap_or_else(default_feature_dim),
            dropout: self.dropout.unwrap_or(0.0),
            temperature: self.temperature.unwrap_or_else(default_temperature),
            init_std: self.init_std.unwrap_or_else(default_std),
            user_features: self.user_features.unwrap_or(true),
            user_id: self.user_id.unwrap_or(false),
        }
    }

    fn mlp(&self) -> Mlp {
        Mlp {
            activation: self.activation.unwrap_or_default(),
            batch_norm: self.batch_norm.unwrap_or(false),
            last_layer: self.last_layer.unwrap_or_default(),
        }
    }

    fn pooled(&self) -> PooledUser {
        PooledUser {
            user_tower: self.user_tower.clone().unwrap_or_else(default_tower),
            pooling: self.pooling.unwrap_or_default(),
            recent_items: self.recent_items.unwrap_or(0),
            history_features: self.history_features.clone().unwrap_or_default(),
            example_age: self.example_age.unwrap_or(true),
        }
    }

    /// The item tower keys: always a tower for DSSM (default widths), for the sequence kinds
    /// only when `item_tower` is set (the other two keys alone are refused).
    fn item_side(&self, kind: ModelKind) -> Result<Option<ItemTowerConfig>, String> {
        let widths = match (&self.item_tower, kind) {
            (Some(w), _) => w.clone(),
            (None, ModelKind::Dssm) => default_tower(),
            (None, _) => {
                if let Some(key) = [
                    ("item_features", self.item_features.is_some()),
                    ("item_id_dropout", self.item_id_dropout.is_some()),
                ]
                .into_iter()
                .find_map(|(k, set)| set.then_some(k))
                {
                    return Err(format!(
                        "`{key}` sets up an item tower, which kind \"{}\" has only with `item_tower` \
                         (its layer widths, ending at embedding_dim)",
                        kind.name()
                    ));
                }
                return Ok(None);
            }
        };
        Ok(Some(ItemTowerConfig {
            item_tower: widths,
            item_features: self.item_features.unwrap_or(true),
            item_id_dropout: self.item_id_dropout.unwrap_or(0.0),
        }))
    }

    fn set_item(&mut self, item: Option<&ItemTowerConfig>) {
        if let Some(c) = item {
            self.item_tower = Some(c.item_tower.clone());
            self.item_features = Some(c.item_features);
            self.item_id_dropout = (c.item_id_dropout != 0.0).then_some(c.item_id_dropout);
        }
    }

    fn set_common(&mut self, c: &Common) {
        self.embedding_dim = Some(c.embedding_dim);
        self.feature_dim = Some(c.feature_dim);
        self.dropout = Some(c.dropout);
        self.temperature = Some(c.temperature);
        self.init_std = Some(c.init_std);
        self.user_features = Some(c.user_features);
        self.user_id = Some(c.user_id);
    }

    fn set_mlp(&mut self, m: &Mlp, u: &PooledUser) {
        self.activation = Some(m.activation);
        self.batch_norm = Some(m.batch_norm);
        self.last_layer = Some(m.last_layer);
        self.user_tower = Some(u.user_tower.clone());
        self.pooling = Some(u.pooling);
        self.recent_items = Some(u.recent_items);
        self.history_features = Some(u.history_features.clone());
        self.example_age = Some(u.example_age);
    }
}

impl TryFrom<RawModelConfig> for ModelConfig {
    type Error = String;

    fn try_from(raw: RawModelConfig) -> Result<Self, String> {
        let kind = raw
            .kind
            .ok_or("missing key `kind` (\"dssm\", \"youtubednn\", \"sasrec\" or \"hstu\")")?;
        let keys = kind.keys();
        if let Some(key) = raw
            .present()
            .into_iter()
            .find(|k| !keys.contains(&k.as_str()))
        {
            return Err(format!(
                "`{key}` is not a key of kind \"{}\" (its keys: {})",
                kind.name(),
                keys.join(", ")
            ));
        }
        Ok(match kind {
            ModelKind::Dssm => ModelConfig::Dssm(DssmConfig {
                common: raw.common(),
                mlp: raw.mlp(),
                user: raw.pooled(),
                item: raw.item_side(kind)?.ok_or("DSSM without an item tower")?,
            }),
            ModelKind::Youtubednn => ModelConfig::Youtubednn(YoutubednnConfig {
                common: raw.common(),
                mlp: raw.mlp(),
                user: raw.pooled(),
            }),
            ModelKind::Sasrec => ModelConfig::Sasrec(SasrecConfig {
                common: raw.common(),
                blocks: raw.blocks.unwrap_or_else(default_blocks),
                heads: raw.heads.unwrap_or(1),
                max_len: raw.max_len,
                ffn_width: raw.ffn_width,
                item: raw.item_side(kind)?,
                input_scale: raw.input_scale()?,
            }),
            ModelKind::Hstu => ModelConfig::Hstu(HstuConfig {
                common: raw.common(),
                blocks: raw.blocks.unwrap_or_else(default_blocks),
                heads: raw.heads.unwrap_or(1),
                max_len: raw.max_len,
                item: raw.item_side(kind)?,
                identity_init: raw.identity_init.unwrap_or(false),
                input_scale: raw.input_scale()?,
                bias_buckets: raw.bias_buckets()?,
            }),
        })
    }
}

impl From<ModelConfig> for RawModelConfig {
    fn from(config: ModelConfig) -> Self {
        let mut raw = RawModelConfig {
            kind: Some(config.kind()),
            ..RawModelConfig::default()
        };
        raw.set_common(config.common());
        match &config {
            ModelConfig::Dssm(c) => {
                raw.set_mlp(&c.mlp, &c.user);
                raw.set_item(Some(&c.item));
            }
            ModelConfig::Youtubednn(c) => raw.set_mlp(&c.mlp, &c.user),
            ModelConfig::Sasrec(c) => {
                raw.blocks = Some(c.blocks);
                raw.heads = Some(c.heads);
                raw.max_len = c.max_len;
                raw.ffn_width = c.ffn_width;
                raw.set_item(c.item.as_ref());
                raw.set_input_scale(c.input_scale);
            }
            ModelConfig::Hstu(c) => {
                raw.blocks = Some(c.blocks);
                raw.heads = Some(c.heads);
                raw.max_len = c.max_len;
                raw.set_item(c.item.as_ref());
                // Left out when off, so a file without the key reads back as it was written.
                raw.identity_init = c.identity_init.then_some(true);
                raw.set_input_scale(c.input_scale);
                raw.bias_buckets = c.bias_buckets;
            }
        }
        raw
    }
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub loss: Loss,
    /// Sampled negatives per example (all losses but in-batch). Default 20.
    #[serde(default = "default_negatives")]
    pub negatives: usize,
    #[serde(default = "default_sampler")]
    pub sampler: NegativeSampler,
    /// Subtract ln q of each candidate from its logit (softmax losses). In-batch candidates:
    /// q is the item's share of the training examples' targets (`logq_source = "counts"`) or
    /// the streaming estimate; sampled negatives: their sampler's probability. Default true.
    #[serde(default = "default_true")]
    pub logq_correction: bool,
    /// SASRec: the seen filter's view (`recall_eval::split::SeenFilter`) training matches:
    /// each position's softmax leaves out the items the view filters before its target (the
    /// label is kept), and validation ranks with the same view. `"all"`: every earlier item;
    /// `"recent"`: the newest `max_len` (the model's) earlier items, the published protocol's
    /// view; `"none"`: nothing. For a model served with that filter: the loss then spends
    /// nothing on pushing already-seen items down. Default `"none"`.
    #[serde(default, skip_serializing_if = "SeenView::is_none")]
    pub seen_filter: SeenView,
    /// The old name of `seen_filter`: refused with a message naming the new key.
    #[serde(default, skip_serializing)]
    pub exclude_seen: Option<serde_json::Value>,
    /// Default 1024.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Maximum epochs. Default 10. 0 with `init_from`: no training, the earlier model as it
    /// is on the grown encoding (new items through the cold path).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Adam learning rate (dense layers and embedding rows). Default 1e-3.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// L2 penalty added to every gradient, as `torch.optim.Adam(weight_decay=...)` (coupled,
    /// not AdamW's decoupled decay); embedding rows decay when a batch touches them. Default 0.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub weight_decay: f64,
    /// Stop after this many epochs without a better validation HitRate@K. Default 2.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// K of the validation HitRate. Default 50.
    #[serde(default = "default_k")]
    pub validate_k: usize,
    /// Rank at most this many validation rows for the per-epoch HitRate (a seeded sample, the
    /// same rows every epoch). Default: every row. Each epoch's validation is exact over the
    /// whole catalogue, so at a million users and ten million items it would outlast the epoch
    /// (about an hour here); 10,000 rows give the HitRate to about +-0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_users: Option<usize>,
    /// q of the in-batch logQ correction (losses in-batch and mixed). Default counts.
    #[serde(default)]
    pub logq_source: LogqSource,
    /// The streaming estimator's settings (with `logq_source = "streaming"`).
    #[serde(default, skip_serializing_if = "StreamingLogq::is_default")]
    pub logq_streaming: StreamingLogq,
    /// Hard negatives mined by an earlier model (sampled losses only). With the sampled
    /// softmax's logQ correction each candidate is corrected by its probability under the
    /// row's whole proposal: the sampler's q, plus for items of the user's hard pool their
    /// share of the hard draws (uniform over the pool); see `train::sampled_log_q`.
    #[serde(default)]
    pub hard_negatives: Option<HardNegativeConfig>,
    /// Start from an earlier run's model instead of random weights (a warm start): see
    /// [`InitFrom`] and `checkpoint::warm_start`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// Stop each epoch after this many batches (smoke runs, throughput measurements).
    #[serde(default)]
    pub max_batches_per_epoch: Option<usize>,
    /// Validations per epoch: 2 validates after each half of an epoch's batches, and so on
    /// (a long epoch, or a warm start whose best comes early); the best model is kept across
    /// them. Each validation is then an entry of `history.json` (with `passes`), and
    /// `patience` and `best_epoch` count validations, not epochs. Default 1.
    #[serde(default = "default_one", skip_serializing_if = "is_one_usize")]
    pub validations_per_epoch: usize,
    /// Learning-rate schedule (`{ kind = "cosine" }`, `"linear"`, `{ kind = "cooldown",
    /// fraction = 0.25 }`, default constant).
    #[serde(default, skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// Steps of linear warmup from zero to `lr`. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_steps: usize,
    /// Train the last steps on the full softmax over the catalogue, the earlier ones on
    /// `loss` (a cheaper shared loss: "in-batch" or "mixed"): the same last fraction of the
    /// steps after warmup that `lr_schedule = { kind = "cooldown", fraction }` decays over, so
    /// `full_softmax_last = 0.25` beside a 0.25 cool-down spends the full softmax on the
    /// cool-down alone. The cheap loss buys epochs; the full softmax fits the final model to
    /// the catalogue it is ranked against. Default (and 0, which an ablation variant can set
    /// to undo it): `loss` throughout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_softmax_last: Option<f64>,
    /// Threads for the training step's matrix products. Default: the machine's cores, at
    /// most 4 (the step's matrices are batch x a few hundred; more threads mostly wait).
    /// Negatives are drawn on one more thread beside these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl ModelConfig {
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Dssm(_) => ModelKind::Dssm,
            ModelConfig::Youtubednn(_) => ModelKind::Youtubednn,
            ModelConfig::Sasrec(_) => ModelKind::Sasrec,
            ModelConfig::Hstu(_) => ModelKind::Hstu,
        }
    }

    /// The keys every kind has.
    pub fn common(&self) -> &Common {
        match self {
            ModelConfig::Dssm(c) => &c.common,
            ModelConfig::Youtubednn(c) => &c.common,
            ModelConfig::Sasrec(c) => &c.common,
            ModelConfig::Hstu(c) => &c.common,
        }
    }

    /// How the MLP towers are built (the pooling kinds).
    pub fn mlp(&self) -> Option<&Mlp> {
        match self {
            ModelConfig::Dssm(c) => Some(&c.mlp),
            ModelConfig::Youtubednn(c) => Some(&c.mlp),
            ModelConfig::Sasrec(_) | ModelConfig::Hstu(_) => None,
        }
    }

    /// The pooling user tower's keys (DSSM, YoutubeDNN).
    pub fn pooled_user(&self) -> Option<&PooledUser> {
        match self {
            ModelConfig::Dssm(c) => Some(&c.user),
            ModelConfig::Youtubednn(c) => Some(&c.user),
            ModelConfig::Sasrec(_) | ModelConfig::Hstu(_) => None,
        }
    }

    /// Whether the user side reads the example-age bucket.
    pub fn example_age(&self) -> bool {
        self.pooled_user().is_some_and(|u| u.example_age)
    }

    /// The keys every kind has, to change.
    pub fn common_mut(&mut self) -> &mut Common {
        match self {
            ModelConfig::Dssm(c) => &mut c.common,
            ModelConfig::Youtubednn(c) => &mut c.common,
            ModelConfig::Sasrec(c) => &mut c.common,
            ModelConfig::Hstu(c) => &mut c.common,
        }
    }

    /// The MLP settings of a pooling kind, to change.
    pub fn mlp_mut(&mut self) -> Option<&mut Mlp> {
        match self {
            ModelConfig::Dssm(c) => Some(&mut c.mlp),
            ModelConfig::Youtubednn(c) => Some(&mut c.mlp),
            ModelConfig::Sasrec(_) | ModelConfig::Hstu(_) => None,
        }
    }

    /// The pooling user tower's keys, to change.
    pub fn pooled_user_mut(&mut self) -> Option<&mut PooledUser> {
        match self {
            ModelConfig::Dssm(c) => Some(&mut c.user),
            ModelConfig::Youtubednn(c) => Some(&mut c.user),
            ModelConfig::Sasrec(_) | ModelConfig::Hstu(_) => None,
        }
    }

    /// DSSM's own keys.
    pub fn dssm(&self) -> Option<&DssmConfig> {
        match self {
            ModelConfig::Dssm(c) => Some(c),
            _ => None,
        }
    }

    /// The item tower's keys, for the kinds with one (DSSM; SASRec and HSTU with
    /// `item_tower`).
    pub fn item_tower(&self) -> Option<&ItemTowerConfig> {
        match self {
            ModelConfig::Dssm(c) => Some(&c.item),
            ModelConfig::Sasrec(c) => c.item.as_ref(),
            ModelConfig::Hstu(c) => c.item.as_ref(),
            ModelConfig::Youtubednn(_) => None,
        }
    }

    /// SASRec's own keys.
    pub fn sasrec(&self) -> Option<&SasrecConfig> {
        match self {
            ModelConfig::Sasrec(c) => Some(c),
            _ => None,
        }
    }

    /// HSTU's own keys.
    pub fn hstu(&self) -> Option<&HstuConfig> {
        match self {
            ModelConfig::Hstu(c) => Some(c),
            _ => None,
        }
    }

    /// How many of a user's newest items the user side reads, given the encode stage's
    /// `max_len`: a sequence tower's own `max_len` when set, else the encode stage's.
    pub fn history_len(&self, encode_max_len: usize) -> usize {
        let own = match self {
            ModelConfig::Sasrec(c) => c.max_len,
            ModelConfig::Hstu(c) => c.max_len,
            _ => None,
        };
        own.unwrap_or(encode_max_len)
    }

    /// Whether lists (histories, bags) pool by their mean (else by their sum).
    pub fn pools_by_mean(&self) -> bool {
        self.pooled_user()
            .is_none_or(|u| u.pooling == Pooling::Mean)
    }

    pub fn validate(&self) -> Result<(), Error> {
        // Keys as a pipeline file spells them inside a `[[models]]` entry (`model = { ... }`).
        let bad = |key: &str, msg: &str| Err(Error::config(format!("model.{key}"), msg));
        let common = self.common();
        if common.embedding_dim == 0 || common.feature_dim == 0 {
            return bad("embedding_dim", "dimensions must be at least 1");
        }
        if !(common.temperature.is_finite() && common.temperature > 0.0) {
            return bad("temperature", "must be a positive number");
        }
        if !(0.0..1.0).contains(&common.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if let Some(item) = self.item_tower() {
            if !(0.0..1.0).contains(&item.item_id_dropout) {
                return bad("item_id_dropout", "must be in [0, 1)");
            }
            // The item tower ends where the user side does: DSSM's user tower, the sequence
            // towers' embedding_dim.
            let user_width = match self.pooled_user() {
                Some(u) => u.user_tower.last().copied(),
                None => Some(common.embedding_dim),
            };
            if item.item_tower.is_empty()
                || item.item_tower.contains(&0)
                || item.item_tower.last().copied() != user_width
            {
                return bad(
                    "item_tower",
                    &format!(
                        "the item tower must end at the user side's width ({}), each layer at least 1 wide",
                        user_width.unwrap_or(0)
                    ),
                );
            }
        }
        if let Some(user) = self.pooled_user()
            && (user.user_tower.is_empty() || user.user_tower.contains(&0))
        {
            return bad(
                "user_tower",
                "needs at least one layer, each at least 1 wide",
            );
        }
        match self {
            ModelConfig::Youtubednn(c) => {
                if c.user.user_tower.last() != Some(&c.common.embedding_dim) {
                    return bad(
                        "user_tower",
                        "YoutubeDNN's user tower must end at embedding_dim (it is scored against the item table)",
                    );
                }
            }
            ModelConfig::Dssm(_) => {}
            ModelConfig::Sasrec(c) => {
                validate_blocks(
                    "SASRec",
                    c.blocks,
                    c.heads,
                    c.common.embedding_dim,
                    c.max_len,
                )?;
                if c.ffn_width == Some(0) {
                    return bad("ffn_width", "must be at least 1");
                }
            }
            ModelConfig::Hstu(c) => {
                validate_blocks("HSTU", c.blocks, c.heads, c.common.embedding_dim, c.max_len)?
            }
        }
        Ok(())
    }

    /// The width of user and item vectors.
    pub fn output_dim(&self) -> usize {
        match self.pooled_user() {
            Some(user) => user
                .user_tower
                .last()
                .copied()
                .unwrap_or(self.common().embedding_dim),
            None => self.common().embedding_dim,
        }
    }
}

/// The keys the sequence kinds share: at least one block and head, heads dividing the width,
/// a window of at least one item.
fn validate_blocks(
    kind: &str,
    blocks: usize,
    heads: usize,
    dim: usize,
    max_len: Option<usize>,
) -> Result<(), Error> {
    if blocks == 0 {
        return Err(Error::config(
            "model.blocks",
            format!("{kind} needs at least one block"),
        ));
    }
    if heads == 0 || !dim.is_multiple_of(heads) {
        return Err(Error::config(
            "model.heads",
            format!("{kind} needs at least one head, and embedding_dim divisible by heads"),
        ));
    }
    if max_len == Some(0) {
        return Err(Error::config("model.max_len", "must be at least 1"));
    }
    Ok(())
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, msg: &str| Err(Error::config(format!("train.{key}"), msg));
        if let Some(old) = &self.exclude_seen {
            let new = if old == &serde_json::Value::Bool(true) {
                "\"all\" (or \"recent\")"
            } else {
                "\"none\""
            };
            return Err(Error::config(
                "train.exclude_seen",
                format!(
                    "was renamed: write `seen_filter = {new}` instead of `exclude_seen = {old}`"
                ),
            ));
        }
        if self.batch_size < 2 {
            return bad("batch_size", "must be at least 2");
        }
        if self.validations_per_epoch == 0 {
            return bad(
                "validations_per_epoch",
                "must be at least 1 (1 validates after each epoch)",
            );
        }
        // No training is a warm start's model as it was (new items then take their vectors
        // from the cold path and the index can be extended rather than rebuilt), so it needs
        // an earlier model, unblended.
        match &self.init_from {
            _ if self.epochs > 0 => {}
            None => {
                return bad(
                    "epochs",
                    "must be at least 1 (0 only with `init_from`: the earlier model as it is)",
                );
            }
            Some(init) if init.shrink != 1.0 || init.perturb != 0.0 => {
                return bad(
                    "epochs",
                    "is 0 (no training) with init_from.shrink / perturb blending the earlier weights: \
                     without training the blend only damages them; remove shrink and perturb",
                );
            }
            Some(_) => {}
        }
        if !matches!(self.loss, Loss::InBatch | Loss::FullSoftmax) && self.negatives == 0 {
            return bad("negatives", "sampled losses need at least 1 negative");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be a number >= 0");
        }
        if let LrSchedule::Cooldown { fraction } = self.lr_schedule
            && !(fraction > 0.0 && fraction <= 1.0)
        {
            return bad("lr_schedule.fraction", "must be in (0, 1]");
        }
        if let Some(fraction) = self.full_softmax_last {
            if !(0.0..=1.0).contains(&fraction) {
                return bad("full_softmax_last", "must be in [0, 1]");
            }
            if self.loss == Loss::FullSoftmax && fraction > 0.0 {
                return bad(
                    "full_softmax_last",
                    "switches a cheaper loss to the full softmax, but `loss` is already \"full-softmax\": remove one of them",
                );
            }
        }
        if let Some(h) = &self.hard_negatives {
            if matches!(self.loss, Loss::InBatch | Loss::Mixed | Loss::FullSoftmax)
                || h.count == 0
                || h.count > self.negatives
            {
                return bad(
                    "hard_negatives",
                    "needs a sampled loss and 1 <= count <= negatives",
                );
            }
            if h.count == self.negatives
                && self.logq_correction
                && self.loss == Loss::SampledSoftmax
            {
                return bad(
                    "hard_negatives.count",
                    "must leave at least one of `negatives` to the sampler when logq_correction is on \
                     (the correction needs a proposal that can draw every item, the positive included)",
                );
            }
        }
        if self.validate_k == 0 {
            return bad("validate_k", "must be at least 1");
        }
        if self.validate_users == Some(0) {
            return bad(
                "validate_users",
                "must be at least 1 (leave it out to validate on every row)",
            );
        }
        if let Some(init) = &self.init_from {
            if !(init.shrink.is_finite() && init.shrink > 0.0 && init.shrink <= 1.0) {
                return bad(
                    "init_from.shrink",
                    "must be in (0, 1] (1 keeps the earlier weights)",
                );
            }
            if !(init.perturb.is_finite() && init.perturb >= 0.0) {
                return bad("init_from.perturb", "must be a number >= 0");
            }
            if let Some(r) = init.replay
                && !(r.is_finite() && (0.0..=1.0).contains(&r))
            {
                return bad(
                    "init_from.replay",
                    "must be in [0, 1]: the share of the earlier model's examples replayed each epoch \
                     (leave it out to train on every example)",
                );
            }
        }
        if self.logq_source == LogqSource::Streaming {
            if !matches!(self.loss, Loss::InBatch | Loss::Mixed) {
                return bad(
                    "logq_source",
                    "the streaming estimator corrects in-batch candidates: it needs loss = \"in-batch\" or \"mixed\" (sampled losses take q from their sampler)",
                );
            }
            if !self.logq_correction {
                return bad(
                    "logq_source",
                    "\"streaming\" has no effect with logq_correction = false: drop one of the two",
                );
            }
        }
        let s = &self.logq_streaming;
        if !(s.alpha > 0.0 && s.alpha <= 1.0) {
            return bad("logq_streaming.alpha", "must be in (0, 1]");
        }
        if s.buckets == Some(0) {
            return bad(
                "logq_streaming.buckets",
                "must be at least 1 (leave it out for one slot per item)",
            );
        }
        if self.threads == Some(0) {
            return bad(
                "threads",
                "must be at least 1 (leave it out for the default)",
            );
        }
        Ok(())
    }

    /// Checks this training setting against the model it trains (`validate` checks each
    /// alone): SASRec predicts the next item at every position of a window against a candidate
    /// set the batch shares, so it takes the shared losses only; full softmax needs an item
    /// side that is the item table or a tower cheap enough to run over the catalogue.
    pub fn validate_for(&self, model: &ModelConfig) -> Result<(), Error> {
        self.validate()?;
        model.validate()?;
        if model.kind().trains_on_windows() {
            if !matches!(self.loss, Loss::InBatch | Loss::Mixed | Loss::FullSoftmax) {
                return Err(Error::config(
                    "train.loss",
                    "the sequence kinds (SASRec, HSTU) train every position against candidates its batch shares: use \"in-batch\", \"mixed\" or \"full-softmax\"",
                ));
            }
            if self.hard_negatives.is_some() {
                return Err(Error::config(
                    "train.hard_negatives",
                    "hard negatives need a per-row sampled loss, which the sequence kinds do not use",
                ));
            }
            if self.logq_source == LogqSource::Streaming {
                return Err(Error::config(
                    "train.logq_source",
                    "the sequence kinds correct their shared candidates by their inclusion probability from counts: leave logq_source at \"counts\"",
                ));
            }
        }
        if !self.seen_filter.is_none() && !model.kind().trains_on_windows() {
            return Err(Error::config(
                "train.seen_filter",
                "leaving seen items out of the softmax is implemented for the sequence kinds (\"sasrec\", \"hstu\"; the pooling kinds' sampled losses exclude positives through their sampler)",
            ));
        }
        Ok(())
    }

    /// The first step (counted from 0, of `total`) trained on the full softmax under
    /// `full_softmax_last`, if any: where a cool-down of that fraction starts.
    pub fn full_softmax_from(&self, total: usize) -> Option<usize> {
        self.full_softmax_last
            .filter(|&f| f > 0.0)
            .map(|fraction| AfterWarmup::new(total, self.warmup_steps).step_at(1.0 - fraction))
    }

    /// The replay share of an incremental warm start (`init_from.replay`), if any.
    pub fn replay(&self) -> Option<f64> {
        self.init_from.as_ref().and_then(|i| i.replay)
    }

    /// The threads a training run uses for its tensor ops (see [`TrainConfig::threads`]).
    pub fn training_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(4)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{LrSchedule, ModelConfig, TrainConfig};

    /// The error a `model = { ... }` table is refused with, as the user reads it.
    fn refusal(table: serde_json::Value) -> String {
        serde_json::from_value::<ModelConfig>(table)
            .unwrap_err()
            .to_string()
    }

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    /// A kind's config serialises to exactly its own keys and reads back the same.
    #[test]
    fn model_configs_round_trip_with_their_own_keys() {
        for v in [
            serde_json::json!({ "kind": "sasrec", "blocks": 3, "max_len": 50 }),
            serde_json::json!({ "kind": "hstu", "blocks": 8, "identity_init": true }),
            serde_json::json!({ "kind": "hstu", "blocks": 4, "identity_init": false }),
            serde_json::json!({ "kind": "hstu", "input_scale": 8.0 }),
            serde_json::json!({ "kind": "hstu", "bias_buckets": 32 }),
            serde_json::json!({ "kind": "sasrec", "input_scale": 1.0 }),
            serde_json::json!({ "kind": "youtubednn", "embedding_dim": 8, "user_tower": [8], "recent_items": 5 }),
            serde_json::json!({ "kind": "dssm", "item_tower": [32, 64], "batch_norm": true }),
        ] {
            let config: ModelConfig = parse(v);
            let written = serde_json::to_value(&config).unwrap();
            let keys: Vec<&str> = written
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "kind")
                .collect();
            assert!(
                keys.iter().all(|k| config.kind().keys().contains(k)),
                "{written}"
            );
            assert_eq!(parse::<ModelConfig>(written), config);
        }
    }

    /// Each impossible SASRec model setting is reported under its own key (`blocks = 0` was
    /// once reported as `model.heads`).
    #[test]
    fn sequence_model_settings_name_the_key_that_is_wrong() {
        let cases = [
            (
                "sasrec",
                serde_json::json!({ "blocks": 0 }),
                "`model.blocks`",
            ),
            ("sasrec", serde_json::json!({ "heads": 0 }), "`model.heads`"),
            ("sasrec", serde_json::json!({ "heads": 3 }), "`model.heads`"),
            (
                "sasrec",
                serde_json::json!({ "max_len": 0 }),
                "`model.max_len`",
            ),
            (
                "sasrec",
                serde_json::json!({ "ffn_width": 0 }),
                "`model.ffn_width`",
            ),
            ("hstu", serde_json::json!({ "blocks": 0 }), "`model.blocks`"),
            ("hstu", serde_json::json!({ "heads": 3 }), "`model.heads`"),
            (
                "hstu",
                serde_json::json!({ "max_len": 0 }),
                "`model.max_len`",
            ),
        ];
        for (kind, setting, key) in cases {
            let mut v = serde_json::json!({ "kind": kind, "embedding_dim": 64 });
            v.as_object_mut()
                .unwrap()
                .extend(setting.as_object().unwrap().clone());
            let err = parse::<ModelConfig>(v).validate().unwrap_err().to_string();
            assert!(err.contains(key), "{setting}: {err}");
        }
    }

    /// A warm start's blend and replay share out of range name their key.
    #[test]
    fn warm_start_settings_out_of_range_name_their_key() {
        for (init, key) in [
            (serde_json::json!({ "shrink": 0.0 }), "init_from.shrink"),
            (serde_json::json!({ "perturb": -1.0 }), "init_from.perturb"),
            (serde_json::json!({ "replay": 1.5 }), "init_from.replay"),
            (serde_json::json!({ "replay": -0.1 }), "init_from.replay"),
        ] {
            let mut from = serde_json::json!({ "run": "runs/day1", "model": "m" });
            from.as_object_mut()
                .unwrap()
                .extend(init.as_object().unwrap().clone());
            let config: TrainConfig = parse(serde_json::json!({ "init_from": from }));
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{init}: {err}");
        }
        let fine: TrainConfig = parse(serde_json::json!({
            "init_from": { "run": "runs/day1", "model": "m", "replay": 0.0 }
        }));
        fine.validate().unwrap();
    }

    /// SASRec's settings that cannot work fail with the key to change.
    #[test]
    fn sasrec_settings_that_cannot_work_name_their_key() {
        let model: ModelConfig = parse(serde_json::json!({ "kind": "sasrec" }));
        let ok: TrainConfig = parse(serde_json::json!({ "loss": "full-softmax" }));
        ok.validate_for(&model).unwrap();
        for (train, key) in [
            (
                serde_json::json!({ "loss": "sampled-softmax" }),
                "train.loss",
            ),
            (serde_json::json!({ "loss": "pointwise" }), "train.loss"),
            (
                serde_json::json!({ "loss": "mixed", "hard_negatives": { "from": "youtubednn", "band": [10, 50], "count": 4 } }),
                "train.hard_negatives",
            ),
            (
                serde_json::json!({ "loss": "in-batch", "logq_source": "streaming" }),
                "train.logq_source",
            ),
        ] {
            let err = parse::<TrainConfig>(train)
                .validate_for(&model)
                .unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        // Another kind's key is refused when the table is read, naming the key and the kind.
        for (key, value) in [
            ("recent_items", serde_json::json!(3)),
            ("user_tower", serde_json::json!([8])),
            ("example_age", serde_json::json!(false)),
            ("batch_norm", serde_json::json!(true)),
            ("identity_init", serde_json::json!(true)),
            ("bias_buckets", serde_json::json!(32)),
        ] {
            let mut table = serde_json::json!({ "kind": "sasrec" });
            table[key] = value;
            let err = refusal(table);
            assert!(
                err.contains(&format!("`{key}` is not a key of kind \"sasrec\"")),
                "{err}"
            );
        }
        // An input scale that is not a positive number is refused, naming the key; a pooled
        // kind has none.
        for scale in [0.0, -8.0] {
            let err = refusal(serde_json::json!({ "kind": "sasrec", "input_scale": scale }));
            assert!(err.contains("`input_scale`"), "{err}");
        }
        let err = refusal(serde_json::json!({ "kind": "hstu", "bias_buckets": 0 }));
        assert!(err.contains("`bias_buckets` = 0"), "{err}");
        let err = refusal(serde_json::json!({ "kind": "youtubednn", "input_scale": 8.0 }));
        assert!(
            err.contains("`input_scale` is not a key of kind \"youtubednn\""),
            "{err}"
        );
        // A sequence kind takes an item tower only with its widths, ending at embedding_dim.
        let err = refusal(serde_json::json!({ "kind": "sasrec", "item_id_dropout": 0.3 }));
        assert!(
            err.contains("`item_id_dropout`") && err.contains("item_tower"),
            "{err}"
        );
        let tower: ModelConfig = serde_json::from_value(
            serde_json::json!({ "kind": "hstu", "embedding_dim": 16, "item_tower": [32, 8] }),
        )
        .unwrap();
        let err = tower.validate().unwrap_err().to_string();
        assert!(
            err.contains("model.item_tower") && err.contains("(16)"),
            "{err}"
        );
        let tower: ModelConfig = serde_json::from_value(
            serde_json::json!({ "kind": "sasrec", "embedding_dim": 16, "item_tower": [32, 16], "item_id_dropout": 0.2 }),
        )
        .unwrap();
        tower.validate().unwrap();
        assert_eq!(tower.item_tower().unwrap().item_id_dropout, 0.2);
        let again: ModelConfig =
            serde_json::from_value(serde_json::to_value(&tower).unwrap()).unwrap();
        assert_eq!(again, tower);
        let err =
            refusal(serde_json::json!({ "kind": "youtubednn", "item_tower": [64], "blocks": 2 }));
        assert!(err.contains("not a key of kind \"youtubednn\""), "{err}");
        // HSTU's block has no feed-forward net, and it trains as SASRec does.
        let err = refusal(serde_json::json!({ "kind": "hstu", "ffn_width": 64 }));
        assert!(
            err.contains("`ffn_width` is not a key of kind \"hstu\""),
            "{err}"
        );
        let hstu: ModelConfig = parse(serde_json::json!({ "kind": "hstu" }));
        let sampled: TrainConfig = parse(serde_json::json!({ "loss": "sampled-softmax" }));
        assert!(
            sampled
                .validate_for(&hstu)
                .unwrap_err()
                .to_string()
                .contains("train.loss")
        );
        ok.validate_for(&hstu).unwrap();
        // Seen items leave the softmax of SASRec's shared losses only.
        for view in ["all", "recent"] {
            let seen: TrainConfig =
                parse(serde_json::json!({ "loss": "in-batch", "seen_filter": view }));
            seen.validate_for(&model).unwrap();
            let ydnn: ModelConfig = parse(serde_json::json!({ "kind": "youtubednn" }));
            let err = seen.validate_for(&ydnn).unwrap_err();
            assert!(err.to_string().contains("train.seen_filter"), "{err}");
        }
        // The old key is refused with the new one named.
        let old: TrainConfig =
            parse(serde_json::json!({ "loss": "in-batch", "exclude_seen": true }));
        let err = old.validate_for(&model).unwrap_err().to_string();
        assert!(
            err.contains("train.exclude_seen") && err.contains("seen_filter = \"all\""),
            "{err}"
        );
    }

    #[test]
    fn schedules_warm_up_then_hold_or_decay_to_zero() {
        let f = |s: LrSchedule, step| s.factor(step, 110, 10);
        assert!((f(LrSchedule::Constant, 0) - 0.1).abs() < 1e-12);
        assert_eq!(f(LrSchedule::Constant, 9), 1.0);
        assert_eq!(f(LrSchedule::Constant, 100), 1.0);
        assert_eq!(f(LrSchedule::Cosine, 10), 1.0);
        assert!((f(LrSchedule::Cosine, 60) - 0.5).abs() < 1e-12);
        assert!(f(LrSchedule::Cosine, 110).abs() < 1e-12);
        assert!((f(LrSchedule::Linear, 35) - 0.75).abs() < 1e-12);
        // Cool-down over the last quarter of the 100 steps after warmup: full rate up to step
        // 85, half way down at 97.5, zero at the end.
        let cool = LrSchedule::Cooldown { fraction: 0.25 };
        assert_eq!(f(cool, 10), 1.0);
        assert_eq!(f(cool, 85), 1.0);
        assert!((f(cool, 95) - 0.6).abs() < 1e-12);
        assert!(f(cool, 110).abs() < 1e-12);
        let with = |fraction: f64| -> TrainConfig {
            parse(
                serde_json::json!({ "lr_schedule": { "kind": "cooldown", "fraction": fraction } }),
            )
        };
        assert_eq!(with(0.25).lr_schedule, cool);
        assert!(with(0.25).validate().is_ok());
        assert!(with(0.0).validate().is_err());
        assert!(with(1.5).validate().is_err());
        // No warmup: the first step runs at the full rate.
        assert_eq!(LrSchedule::Linear.factor(0, 100, 0), 1.0);
    }

    #[test]
    fn the_full_softmax_takes_the_steps_a_cooldown_of_its_fraction_decays_over() {
        let with = |extra: serde_json::Value| -> TrainConfig {
            let mut v = serde_json::json!({ "loss": "in-batch", "warmup_steps": 10 });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse(v)
        };
        let t = with(serde_json::json!({ "full_softmax_last": 0.25 }));
        assert!(t.validate().is_ok());
        // 110 steps, 10 of warmup: the cool-down of 0.25 is at full rate up to step 85 and
        // decays from there; the full softmax starts there too.
        assert_eq!(t.full_softmax_from(110), Some(85));
        let cool = LrSchedule::Cooldown { fraction: 0.25 };
        assert_eq!(cool.factor(85, 110, 10), 1.0);
        assert!(cool.factor(86, 110, 10) < 1.0);
        assert_eq!(
            with(serde_json::json!({ "full_softmax_last": 1.0 })).full_softmax_from(110),
            Some(10)
        );
        assert_eq!(with(serde_json::json!({})).full_softmax_from(110), None);
        // 0 is the default's "never", so a variant of a file that sets it can undo it.
        let never = with(serde_json::json!({ "loss": "full-softmax", "full_softmax_last": 0.0 }));
        assert!(never.validate().is_ok());
        assert_eq!(never.full_softmax_from(110), None);
        for bad in [-0.5, 1.5] {
            let err = with(serde_json::json!({ "full_softmax_last": bad }))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains("train.full_softmax_last"), "{err}");
        }
        let err = with(serde_json::json!({ "loss": "full-softmax", "full_softmax_last": 0.25 }))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("already"), "{err}");
    }
}
