//! Training: seeded shuffled mini-batches, the four losses, Adam (dense layers) plus lazy
//! row-wise Adam (embedding tables), validation HitRate@K with exact top-K after every epoch,
//! early stopping that keeps the best epoch's weights.

use std::time::Instant;

use candle_core::{D, Tensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_eval::topk::{self, Lists};
use recall_eval::{Embeddings, metrics};
use recall_sampling::exclude::{draw_excluding_with_mass, excluded_mass};
use recall_sampling::hard::HardNegatives;
use recall_sampling::inbatch::{Slots, StreamingFrequency};
use recall_sampling::{ItemSampler, Popularity, Uniform};
use serde::Serialize;

use crate::adam::{AdamSettings, DenseAdam};
use crate::config::{LogqSource, Loss, NegativeSampler, TrainConfig};
use crate::data::{EncodedData, SplitRows};
use crate::model::{Pass, StepTables, TwoTower, UserRows};
use crate::{Error, Result};

/// First item index that is a real item (0 padding, 1 out-of-vocabulary).
pub const FIRST_ITEM: u32 = 2;

/// What one epoch did.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub seconds: f64,
    pub examples_per_second: f64,
    /// Validation HitRate@K (None without a validation split).
    pub valid_hit_rate: Option<f64>,
}

/// The outcome of training.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
}

/// Stable binary cross-entropy on logits: `relu(x) - x*y + ln(1 + exp(-|x|))`, mean.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let loss = (logits.relu()? - logits.mul(labels)?)?
        .add(&logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    Ok(loss.mean_all()?)
}

/// Softmax cross-entropy with the label in column 0: `-mean(log_softmax(logits)[:, 0])`.
pub fn softmax_first(logits: &Tensor) -> Result<Tensor> {
    let ls = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(ls.narrow(1, 0, 1)?.mean_all()?.neg()?)
}

/// BPR: `mean(softplus(-(s_pos - s_neg)))` with the positive in column 0.
pub fn bpr(logits: &Tensor) -> Result<Tensor> {
    let n = logits.dim(1)?;
    let diff = logits
        .narrow(1, 0, 1)?
        .broadcast_sub(&logits.narrow(1, 1, n - 1)?)?;
    // softplus(-d) = relu(-d) + ln(1 + exp(-|d|)), stable for large |d|.
    let neg = diff.neg()?;
    let sp = (neg.relu()? + diff.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    Ok(sp.mean_all()?)
}

fn sampler(config: &TrainConfig, data: &EncodedData) -> Result<Box<dyn ItemSampler>> {
    let end = data.item_table_size as u32;
    Ok(match config.sampler {
        NegativeSampler::Uniform => Box::new(Uniform::new(FIRST_ITEM, end)?),
        NegativeSampler::Popularity { alpha } => {
            Box::new(Popularity::new(&data.item_counts, FIRST_ITEM, alpha)?)
        }
    })
}

/// Histories (borrowed from the sequences), users and age buckets of some rows of a split.
fn user_rows<'a>(
    data: &'a EncodedData,
    split: &SplitRows,
    rows: &[usize],
) -> (Vec<&'a [u32]>, Vec<u32>, Vec<u32>) {
    (
        rows.iter().map(|&r| data.history(split, r)).collect(),
        rows.iter().map(|&r| split.user[r]).collect(),
        rows.iter().map(|&r| split.age_bucket[r]).collect(),
    )
}

impl TwoTower {
    /// Embeddings of every row of `split` (the user side at that row's history and age).
    pub fn embed_split(&self, data: &EncodedData, split: &SplitRows) -> Result<Embeddings> {
        let mut out = Vec::with_capacity(split.len() * self.output_dim());
        for chunk in (0..split.len()).collect::<Vec<_>>().chunks(4096) {
            let (hist, users, ages) = user_rows(data, split, chunk);
            let rows = UserRows {
                users: &users,
                histories: &hist,
                ages: &ages,
            };
            let step = self.gather(data, &rows, &[])?;
            let u = self.users(data, &step, &rows, &mut Pass::Infer)?;
            out.extend(u.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Embeddings::new(self.output_dim(), out)?)
    }

    /// Embeddings of every item index (rows 0 and 1 are the reserved slots; skip them when
    /// ranking).
    pub fn embed_items(&self, data: &EncodedData) -> Result<Embeddings> {
        let all: Vec<u32> = (0..data.item_table_size as u32).collect();
        let mut out = Vec::with_capacity(all.len() * self.output_dim());
        for chunk in all.chunks(8192) {
            let rows = UserRows {
                users: &[],
                histories: &[],
                ages: &[],
            };
            let step = self.gather(data, &rows, chunk)?;
            out.extend(
                self.items(data, &step, chunk, &mut Pass::Infer)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        Ok(Embeddings::new(self.output_dim(), out)?)
    }

    pub fn output_dim(&self) -> usize {
        self.config
            .user_tower
            .last()
            .copied()
            .unwrap_or(self.config.embedding_dim)
    }

    /// HitRate@k of `split` (exact full-catalogue ranking, nothing filtered).
    pub fn hit_rate(&self, data: &EncodedData, split: &SplitRows, k: usize) -> Result<f64> {
        let users = self.embed_split(data, split)?;
        let items = self.embed_items(data)?;
        let top = topk::exact(
            &users,
            &items,
            k,
            &topk::Options {
                first_item: FIRST_ITEM,
                ..Default::default()
            },
        )?;
        let truth = Lists::from_rows(
            &(0..split.len())
                .map(|r| vec![data.target(split, r)])
                .collect::<Vec<_>>(),
        );
        let report = metrics::evaluate(&top, &truth, &[k], None)?;
        Ok(report.at(k).map_or(0.0, |m| m.hit_rate))
    }
}

/// Each item's share of the training examples' targets (an item never a target gets the
/// share of one, so its logQ stays finite).
pub fn example_target_q(data: &EncodedData) -> Vec<f64> {
    let mut counts = vec![0u64; data.item_table_size];
    for r in 0..data.train.len() {
        counts[data.target(&data.train, r) as usize] += 1;
    }
    let total = data.train.len().max(1) as f64;
    counts.iter().map(|&c| c.max(1) as f64 / total).collect()
}

/// Where a batch's negatives come from.
struct Negatives<'a> {
    sampler: &'a dyn ItemSampler,
    /// Sampler mass of each user's positives (see `draw_excluding_with_mass`).
    user_mass: &'a [f64],
    hard: Option<&'a HardRound>,
}

/// Everything random about one batch, drawn ahead of the step that trains on it: the rows,
/// the sampled negatives and a seed for the dropout masks. Drawing does not depend on the
/// model, so a second thread draws batch t + 1 while batch t trains (sampling was about a
/// seventh of a YoutubeDNN step at torch-rechub's sizes).
struct BatchDraw {
    rows: Vec<usize>,
    /// Sampled losses: `negatives` items per row, row after row (a row's hard negatives
    /// first). Mixed: the draws the whole batch shares. In-batch: none.
    negatives: Vec<u32>,
    /// How many of each row's negatives are hard ones (empty without a hard round).
    hard_counts: Vec<usize>,
    dropout_seed: u64,
}

/// Draws a batch's negatives (never one of the user's training positives for per-row
/// negatives; mixed negatives are shared by the batch and masked where they hit a target).
fn draw_batch(
    data: &EncodedData,
    config: &TrainConfig,
    rows: &[usize],
    negatives: &Negatives<'_>,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<BatchDraw> {
    let dropout_seed = rng.random();
    let mut hard_counts = Vec::new();
    let drawn = match config.loss {
        Loss::InBatch => Vec::new(),
        Loss::Mixed => (0..config.negatives)
            .map(|_| negatives.sampler.draw(rng))
            .collect(),
        _ => {
            let n = config.negatives;
            let mut all = Vec::with_capacity(rows.len() * n);
            let mut negs = Vec::with_capacity(n);
            for &r in rows {
                negs.clear();
                let user = data.train.user[r] as usize;
                let positives = &data.user_positives[user];
                // Hard negatives first (users the mining model ranked), the rest from the sampler.
                if let Some(h) = negatives.hard.filter(|h| h.has_ranking(user)) {
                    h.negatives
                        .draw(user, rng, positives, h.count.min(n), &mut negs)?;
                }
                if negatives.hard.is_some() {
                    hard_counts.push(negs.len());
                }
                let rest = n - negs.len();
                draw_excluding_with_mass(
                    negatives.sampler,
                    rng,
                    positives,
                    negatives.user_mass[user],
                    rest,
                    &mut negs,
                )?;
                all.extend_from_slice(&negs);
            }
            all
        }
    };
    Ok(BatchDraw {
        rows: rows.to_vec(),
        negatives: drawn,
        hard_counts,
        dropout_seed,
    })
}

/// Loss of one drawn batch.
fn batch_loss(
    model: &TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    draw: &BatchDraw,
    sampler: &dyn ItemSampler,
    target_q: &dyn Fn(u32) -> f64,
    hard: Option<&HardRound>,
) -> Result<(Tensor, StepTables)> {
    let rows = &draw.rows[..];
    let split = &data.train;
    let dev = &model.device;
    let (hist, users, ages) = user_rows(data, split, rows);
    let targets: Vec<u32> = rows.iter().map(|&r| data.target(split, r)).collect();
    let b = rows.len();
    let temperature = model.config.temperature;
    let dropout_rate = model.config.dropout;
    let mut dropout_rng = Xoshiro256PlusPlus::seed_from_u64(draw.dropout_seed);
    let mut mask = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let keep = 1.0 / (1.0 - dropout_rate);
        let m: Vec<f32> = (0..n)
            .map(|_| {
                if dropout_rng.random::<f32>() < dropout_rate {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        Ok(Tensor::from_vec(m, shape, dev)?)
    };
    let urows = UserRows {
        users: &users,
        histories: &hist,
        ages: &ages,
    };

    if matches!(config.loss, Loss::InBatch | Loss::Mixed) {
        // Candidates: the batch's targets and, for mixed negatives, `negatives` items drawn
        // for the whole batch. Each column is corrected by its log expected count (logQ), and
        // a column holding row i's own target elsewhere is an accidental hit, masked.
        let batch = recall_sampling::inbatch::mixed_from_draws(
            &targets,
            target_q,
            sampler,
            &draw.negatives,
        );
        let c = batch.items.len();
        let step = model.gather(data, &urows, &batch.items)?;
        let mut pass = Pass::Train {
            dropout: dropout_rate,
            mask: &mut mask,
        };
        let u = model.users(data, &step, &urows, &mut pass)?;
        let v = model.items(data, &step, &batch.items, &mut pass)?;
        let logits = u.matmul(&v.t()?)?;
        let column_bias: Vec<f32> = if config.logq_correction {
            batch.log_expected_count.iter().map(|c| -c).collect()
        } else {
            vec![0.0; c]
        };
        let loss = crate::fused::in_batch_softmax_loss(
            &logits,
            1.0 / temperature,
            &targets,
            &batch.items,
            &column_bias,
        )?;
        return Ok((loss, step));
    }

    // Each row's positive, then its sampled negatives.
    let n = config.negatives;
    let mut candidates = Vec::with_capacity(b * (n + 1));
    for (k, &target) in targets.iter().enumerate() {
        candidates.push(target);
        candidates.extend_from_slice(&draw.negatives[k * n..(k + 1) * n]);
    }
    let step = model.gather(data, &urows, &candidates)?;
    let mut pass = Pass::Train {
        dropout: dropout_rate,
        mask: &mut mask,
    };
    let u = model.users(data, &step, &urows, &mut pass)?;
    let v = model.items(data, &step, &candidates, &mut pass)?;
    let mut logits = crate::fused::row_scores(&u, &v, n + 1, 1.0 / temperature)?;
    if config.logq_correction && matches!(config.loss, Loss::SampledSoftmax) {
        let q = sampled_log_q(data, draw, &candidates, n, sampler, hard)?;
        logits = (logits + Tensor::from_vec(q, (b, n + 1), dev)?)?;
    }
    let loss = match config.loss {
        Loss::SampledSoftmax => softmax_first(&logits)?,
        Loss::Pairwise => bpr(&logits)?,
        _ => {
            let mut labels = vec![0f32; b * (n + 1)];
            (0..b).for_each(|i| labels[i * (n + 1)] = 1.0);
            bce_with_logits(&logits, &Tensor::from_vec(labels, (b, n + 1), dev)?)?
        }
    };
    Ok((loss, step))
}

/// `-ln q` of every candidate of a sampled-softmax batch (`n + 1` per row: the positive, then
/// the row's negatives), where `q` is the candidate's probability per draw under the row's
/// whole proposal. Without hard negatives that is the sampler's `q`. With `h` of the row's `n`
/// negatives drawn uniformly from the user's hard pool (rank band minus positives) and the rest
/// from the sampler, an item's expected count among the negatives is
/// `(n - h) q_sampler + h [in pool] / |pool|`; divided by `n - h` (a constant per row, which
/// the softmax ignores) so rows without hard negatives keep exactly the sampler's `q`. The
/// positive column gets the same formula at its own item, as in any sampled softmax.
fn sampled_log_q(
    data: &EncodedData,
    draw: &BatchDraw,
    candidates: &[u32],
    n: usize,
    sampler: &dyn ItemSampler,
    hard: Option<&HardRound>,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(candidates.len());
    for (k, (&r, row)) in draw.rows.iter().zip(candidates.chunks(n + 1)).enumerate() {
        let h = draw.hard_counts.get(k).copied().unwrap_or(0);
        let pool = match hard {
            Some(round) if h > 0 => {
                let user = data.train.user[r] as usize;
                let mut pool = round.negatives.pool(user, &data.user_positives[user])?;
                pool.sort_unstable();
                pool
            }
            _ => Vec::new(),
        };
        out.extend(row.iter().map(|&c| {
            -(proposal_q(sampler.probability(c), &pool, h, n, c)
                .max(1e-12)
                .ln() as f32)
        }));
    }
    Ok(out)
}

/// The per-draw probability of `item` for a row whose `n` negatives are `h` uniform draws from
/// `pool` (sorted) and `n - h` draws from a sampler giving it `sampler_q`, scaled by
/// `1 / (n - h)` (see [`sampled_log_q`]).
fn proposal_q(sampler_q: f64, pool: &[u32], h: usize, n: usize, item: u32) -> f64 {
    if h == 0 || pool.binary_search(&item).is_err() {
        return sampler_q;
    }
    // Validation keeps at least one sampler draw per row when logQ is on.
    let from_sampler = n.saturating_sub(h).max(1) as f64;
    sampler_q + h as f64 / pool.len() as f64 / from_sampler
}

/// Hard negatives of a second training round: rankings mined from another model (one per
/// user index) and how many of each example's `negatives` come from them.
#[derive(Debug, Clone)]
pub struct HardRound {
    pub negatives: HardNegatives,
    pub count: usize,
    ranked_users: Vec<bool>,
}

impl HardRound {
    fn has_ranking(&self, user: usize) -> bool {
        self.ranked_users.get(user).copied().unwrap_or(false)
    }
}

/// Mines hard negatives with a trained `model`: each user is embedded at its last training
/// example (no validation or test information), ranked exactly against the catalogue without
/// its training positives, and ranks `band.0..band.1` become that user's hard-negative pool.
pub fn mine_hard_negatives(
    model: &TwoTower,
    data: &EncodedData,
    band: (usize, usize),
    count: usize,
) -> Result<HardRound> {
    let _span = tracing::info_span!("mine_hard_negatives", lo = band.0, hi = band.1).entered();
    let rankable = data.item_table_size.saturating_sub(FIRST_ITEM as usize);
    // Validate the band before the expensive part.
    HardNegatives::new(Vec::new(), band.0, band.1, rankable)?;
    let sub = mining_split(data);
    let users = model.embed_split(data, &sub)?;
    let items = model.embed_items(data)?;
    let exclude = Lists::from_rows(
        &sub.user
            .iter()
            .map(|&u| data.user_positives[u as usize].clone())
            .collect::<Vec<_>>(),
    );
    let top = topk::exact(
        &users,
        &items,
        band.1,
        &topk::Options {
            first_item: FIRST_ITEM,
            exclude: Some(exclude),
            ..Default::default()
        },
    )?;
    let mut rankings = vec![Vec::new(); data.user_table_size];
    let mut ranked_users = vec![false; data.user_table_size];
    for (i, &u) in sub.user.iter().enumerate() {
        rankings[u as usize] = top.list(i).to_vec();
        ranked_users[u as usize] = top.list(i).len() > band.0;
    }
    Ok(HardRound {
        negatives: HardNegatives::new(rankings, band.0, band.1, rankable)?,
        count,
        ranked_users,
    })
}

/// The rows a miner embeds: each user at its last training example (no validation or test
/// information), at the serving example-age bucket (age 0, as the user is embedded when the
/// model serves).
pub fn mining_split(data: &EncodedData) -> SplitRows {
    let train = &data.train;
    let mut last: Vec<Option<usize>> = vec![None; data.user_table_size];
    for r in 0..train.len() {
        let u = train.user[r] as usize;
        if last[u].is_none_or(|p| train.position[p] < train.position[r]) {
            last[u] = Some(r);
        }
    }
    let rows: Vec<usize> = last.iter().flatten().copied().collect();
    let mut sub = train.select(&rows);
    sub.age_bucket.fill(data.serving_age_bucket);
    sub
}

/// Trains `model` on `data.train`, validating on `data.valid` after each epoch.
pub fn train(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
) -> Result<TrainReport> {
    train_with(model, data, config, seed, None)
}

/// Observes training as it goes (the orchestrator draws a progress bar with it); every method
/// defaults to doing nothing, and the library itself draws nothing.
pub trait Progress: Sync {
    /// An epoch of `batches` batches begins.
    fn epoch_started(&self, _epoch: usize, _batches: usize) {}
    /// A batch of `examples` training examples finished with this loss.
    fn batch_done(&self, _loss: f64, _examples: usize) {}
    /// Where that batch's time went (called just before `batch_done`).
    fn batch_phases(&self, _phases: &StepPhases) {}
    /// An epoch (and its validation) finished.
    fn epoch_finished(&self, _log: &EpochLog) {}
}

/// Seconds one training step spent in each phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepPhases {
    /// Waiting for the drawing thread's batch (rows and negatives): 0 when it keeps ahead.
    pub waiting: f64,
    /// Gathering the rows of the embedding tables and the forward pass to the loss.
    pub forward: f64,
    /// The backward pass.
    pub backward: f64,
    /// Adam on the dense parameters and the lazy row-wise Adam on the gathered rows.
    pub update: f64,
}

/// The [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// [`train`] with hard negatives from [`mine_hard_negatives`] (a second round).
pub fn train_with(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
    hard: Option<&HardRound>,
) -> Result<TrainReport> {
    train_observed(model, data, config, seed, hard, &Silent)
}

/// [`train_with`], reporting progress to `progress`.
pub fn train_observed(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
    hard: Option<&HardRound>,
    progress: &dyn Progress,
) -> Result<TrainReport> {
    config.validate()?;
    // The step's tensor ops run in a pool of their own: whole-catalogue work (evaluation,
    // export) keeps the global pool. At torch-rechub's sizes on 2 cores, two threads here (with
    // candle's element-wise pool off, see `tune_candle_cpu`) made DSSM steps about 10 % and
    // YoutubeDNN steps about 5 % faster than one; with candle's pool spinning on the same
    // cores, one thread had been faster.
    let threads = config.training_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Training(format!("cannot start {threads} training threads: {e}")))?;
    pool.install(|| train_in_pool(model, data, config, seed, hard, progress))
}

fn train_in_pool(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
    hard: Option<&HardRound>,
    progress: &dyn Progress,
) -> Result<TrainReport> {
    let _span = tracing::info_span!("train", model = ?model.config.kind).entered();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let sampler = sampler(config, data)?;
    let mut adam = AdamSettings::new(config.lr, config.weight_decay);
    let steps_per_epoch = data
        .train
        .len()
        .div_ceil(config.batch_size)
        .min(config.max_batches_per_epoch.unwrap_or(usize::MAX));
    let total_steps = steps_per_epoch * config.epochs;
    let mut step_index = 0usize;
    let mut opt = DenseAdam::new(model.params.iter().map(|(_, v)| v.clone()));
    // q of every item as an in-batch candidate: its share of the training examples' targets,
    // the distribution in-batch candidates are drawn from (and what the streaming estimator
    // converges to). Not `item_counts`, the training interactions: those also count each
    // user's first item and, under a per-user cap, the positions the cap dropped.
    let target_q = example_target_q(data);
    // With the streaming source, q follows the estimator of Yi et al. (2019) as batches go by
    // (the counts stand in until an item has been seen twice).
    let mut streaming = (config.logq_source == LogqSource::Streaming).then(|| {
        let slots = match config.logq_streaming.buckets {
            Some(n) => Slots::Hashed(n),
            None => Slots::Direct(data.item_table_size),
        };
        StreamingFrequency::new(slots, config.logq_streaming.alpha)
    });
    // Each user's positives' share of the sampler, once (not per draw: heavy users hold
    // most training rows and hundreds of positives).
    let user_mass: Vec<f64> = data
        .user_positives
        .iter()
        .map(|p| excluded_mass(sampler.as_ref(), p))
        .collect();
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, TwoTower)> = None;
    let mut trained_examples = 0usize;
    let mut train_seconds = 0.0;
    for epoch in 1..=config.epochs {
        let _span = tracing::info_span!("epoch", epoch).entered();
        let start = Instant::now();
        // Fisher-Yates with the training generator: the same seed gives the same batches.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let (mut loss_sum, mut batches) = (0f64, 0usize);
        let examples_before = trained_examples;
        let limit = config.max_batches_per_epoch.unwrap_or(usize::MAX);
        progress.epoch_started(epoch, order.len().div_ceil(config.batch_size).min(limit));
        // The drawing thread's generator is seeded from the training generator, so the
        // batches depend on the seed only, never on how the two threads interleave.
        let mut draw_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        let negatives = Negatives {
            sampler: sampler.as_ref(),
            user_mass: &user_mass,
            hard,
        };
        let order = &order;
        let mut train_batch = |draw: BatchDraw, waiting: f64| -> Result<()> {
            let started = Instant::now();
            let rows = &draw.rows;
            // q per draw of an in-batch candidate: the estimator's expected count per batch
            // over the batch size, or its share of training targets.
            let b = rows.len() as f64;
            let stream = streaming.as_ref();
            let q = |t: u32| match stream.and_then(|s| s.expected_count(t)) {
                Some(count) => count / b,
                None => target_q[t as usize],
            };
            let (loss, step) = batch_loss(model, data, config, &draw, sampler.as_ref(), &q, hard)?;
            if let Some(stream) = streaming.as_mut() {
                stream.update(
                    &rows
                        .iter()
                        .map(|&r| data.target(&data.train, r))
                        .collect::<Vec<_>>(),
                );
            }
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::Training(format!(
                    "loss became {value} at epoch {epoch}, batch {batches}: lower the learning rate or raise the temperature \
                 (nothing is saved by this run; earlier checkpoints stay as they were)"
                )));
            }
            let forward = started.elapsed().as_secs_f64();
            let grads = loss.backward()?;
            let backward = started.elapsed().as_secs_f64() - forward;
            let lr = config.lr
                * config
                    .lr_schedule
                    .factor(step_index, total_steps, config.warmup_steps);
            step_index += 1;
            adam.lr = lr;
            opt.step(&grads, adam)?;
            model.tables.apply(&step, &grads, adam)?;
            progress.batch_phases(&StepPhases {
                waiting,
                forward,
                backward,
                update: started.elapsed().as_secs_f64() - forward - backward,
            });
            loss_sum += value;
            batches += 1;
            progress.batch_done(value, rows.len());
            trained_examples += rows.len();
            Ok(())
        };
        std::thread::scope(|scope| -> Result<()> {
            // Two batches in flight are enough to hide the drawing; the bound keeps memory flat.
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<BatchDraw>>(2);
            let negatives = &negatives;
            scope.spawn(move || {
                for rows in order.chunks(config.batch_size).take(limit) {
                    if rows.len() < 2 {
                        continue;
                    }
                    let draw = draw_batch(data, config, rows, negatives, &mut draw_rng);
                    let failed = draw.is_err();
                    // A closed channel means training stopped early (an error): stop too.
                    if sender.send(draw).is_err() || failed {
                        return;
                    }
                }
            });
            let mut waited_from = Instant::now();
            for draw in receiver {
                let waiting = waited_from.elapsed().as_secs_f64();
                train_batch(draw?, waiting)?;
                waited_from = Instant::now();
            }
            Ok(())
        })?;
        let seconds = start.elapsed().as_secs_f64();
        train_seconds += seconds;
        let valid_hit_rate = if data.valid.is_empty() {
            None
        } else {
            Some(model.hit_rate(data, &data.valid, config.validate_k)?)
        };
        let log = EpochLog {
            epoch,
            loss: loss_sum / batches.max(1) as f64,
            seconds,
            examples_per_second: (trained_examples - examples_before) as f64 / seconds.max(1e-9),
            valid_hit_rate,
        };
        progress.epoch_finished(&log);
        tracing::info!(epoch, loss = format!("{:.4}", log.loss), seconds = format!("{seconds:.1}"), examples_per_second = format!("{:.0}", log.examples_per_second), valid_hit_rate = ?valid_hit_rate.map(|h| format!("{h:.4}")), "epoch done");
        epochs.push(log);
        let score = valid_hit_rate.unwrap_or(epoch as f64);
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, epoch, model.snapshot()?));
        } else if best
            .as_ref()
            .is_some_and(|(_, e, _)| epoch - e >= config.patience)
        {
            tracing::info!(
                epoch,
                "early stop: no better validation HitRate@{} for {} epochs",
                config.validate_k,
                config.patience
            );
            break;
        }
    }
    let best_epoch = best.as_ref().map_or(0, |b| b.1);
    if let Some((_, _, snapshot)) = best {
        *model = snapshot;
    }
    Ok(TrainReport {
        epochs,
        best_epoch,
        train_seconds,
        examples_per_second: trained_examples as f64 / train_seconds.max(1e-9),
    })
}

impl TwoTower {
    /// A deep copy whose dense `Var`s are independent of this model's (candle `Var`s share
    /// storage when cloned).
    pub fn snapshot(&self) -> Result<TwoTower> {
        let mut copy = self.clone();
        let data = self
            .params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<Vec<_>>>()?;
        copy.rebuild_dense(&data)?;
        Ok(copy)
    }

    /// Replaces dense parameters by the given tensors (by name), rebuilding the towers.
    pub fn rebuild_dense(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let dev = self.device.clone();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let fresh = TwoTower::fresh_towers(&self.config, self.input_widths(), &mut rng, &dev)?;
        // Fresh Vars (then overwritten) so the copy shares no storage with the original.
        self.user_tower = fresh.0;
        self.item_tower = fresh.1;
        self.params = fresh.2;
        for (name, var) in &self.params {
            let t = tensors
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::Training(format!("checkpoint lacks tensor `{name}`")))?;
            var.set(&t.1.to_device(&dev)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t(v: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    /// BCE on logits [2, -1, 40] with labels [1, 0, 0]: ln(1+e^-2) = 0.126928,
    /// ln(1+e^-1) = 0.313262, 40 + ln(1+e^-40) = 40.0 (the naive form overflows); mean 13.480063.
    #[test]
    fn bce_matches_hand_values_and_survives_large_logits() {
        let loss =
            bce_with_logits(&t(&[2.0, -1.0, 40.0], (1, 3)), &t(&[1.0, 0.0, 0.0], (1, 3))).unwrap();
        assert!(close(
            loss.to_scalar::<f32>().unwrap(),
            (0.126928 + 0.313262 + 40.0) / 3.0
        ));
    }

    /// Softmax CE with the label first: logits [1, 2, 3]: -ln(e^1 / (e^1+e^2+e^3)) = 2.407606;
    /// its gradient is softmax - onehot = [0.090031 - 1, 0.244728, 0.665241].
    #[test]
    fn softmax_loss_and_gradient_match_hand_values() {
        let x = Var::from_tensor(&t(&[1.0, 2.0, 3.0], (1, 3))).unwrap();
        let loss = softmax_first(x.as_tensor()).unwrap();
        assert!(close(loss.to_scalar::<f32>().unwrap(), 2.407606));
        let g = loss.backward().unwrap();
        let grad = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (a, b) in grad[0].iter().zip([0.090031 - 1.0, 0.244728, 0.665241]) {
            assert!(close(*a, b), "{a} vs {b}");
        }
    }

    /// BPR with s_pos = 3 and negatives [1, 3]: softplus(-2) = 0.126928, softplus(0) = 0.693147.
    #[test]
    fn bpr_matches_hand_values() {
        let loss = bpr(&t(&[3.0, 1.0, 3.0], (1, 3))).unwrap();
        assert!(close(
            loss.to_scalar::<f32>().unwrap(),
            (0.126928 + 0.693147) / 2.0
        ));
    }

    /// Hard negatives are corrected by their own proposal (a uniform draw from the pool), not
    /// by the sampler's probability alone: 2 of 4 negatives from a pool of 4 items give a pool
    /// item `2/4` expected draws on top of the sampler's 2 q, so per sampler draw q + 0.25.
    #[test]
    fn hard_negatives_are_corrected_by_their_own_proposal() {
        let pool = [5, 7, 9, 11];
        assert!((proposal_q(0.01, &pool, 2, 4, 7) - 0.26).abs() < 1e-12);
        assert_eq!(proposal_q(0.01, &pool, 2, 4, 6), 0.01);
        // Rows without hard draws keep the sampler's q exactly.
        assert_eq!(proposal_q(0.01, &pool, 0, 4, 7), 0.01);
    }

    #[test]
    fn l2_normalize_gives_unit_rows() {
        let n = crate::model::l2_normalize(&t(&[3.0, 4.0, 0.0, 2.0], (2, 2))).unwrap();
        assert_eq!(
            n.to_vec2::<f32>().unwrap(),
            vec![vec![0.6, 0.8], vec![0.0, 1.0]]
        );
    }
}
