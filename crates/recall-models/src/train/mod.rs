//! Training: seeded shuffled mini-batches, the four losses, Adam (dense layers) plus lazy
//! row-wise Adam (embedding tables), validation HitRate@K with exact top-K after every epoch,
//! early stopping that keeps the best epoch's weights.

pub(crate) mod batch;
pub(crate) mod hard;
pub mod loss;
pub mod replay;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_core::encoded::SplitRows;
use recall_sampling::exclude::excluded_mass;
use recall_sampling::inbatch::{Slots, StreamingFrequency};
use serde::Serialize;

use crate::config::{LogqSource, Loss, TrainConfig};
use crate::data::EncodedData;
use crate::error::{Error, Result};
use crate::model::{TrainingUnit, TwoTower};
use crate::ops::adam::{AdamSettings, DenseAdam};
pub use crate::train::batch::example_target_q;
use crate::train::batch::{BatchDraw, Negatives, Windows, batch_loss, draw_batch, sampler};
pub use crate::train::hard::{HardRound, mine_hard_negatives, mining_split};
pub use crate::train::loss::{bce_with_logits, bpr, softmax_first};
use crate::train::replay::EpochUnits;
pub use crate::train::replay::{EarlierExamples, ReplaySplit};

/// First item index that is a real item (0 padding, 1 out-of-vocabulary); its owner is
/// `recall_core::columns`.
pub use recall_core::columns::FIRST_ITEM;

/// What one epoch did.
#[derive(Debug, Clone, Serialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub seconds: f64,
    pub examples_per_second: f64,
    /// Validation HitRate@K (None without a validation split).
    pub valid_hit_rate: Option<f64>,
    /// Passes over the training examples when this validation ran (with
    /// `train.validations_per_epoch` above 1, when each entry is a part of an epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passes: Option<f64>,
}

/// Training since the last validation (an epoch, or a part of one).
struct Part {
    started: Instant,
    loss_sum: f64,
    batches: usize,
    examples: usize,
}

impl Part {
    fn start() -> Self {
        Part {
            started: Instant::now(),
            loss_sum: 0.0,
            batches: 0,
            examples: 0,
        }
    }

    fn add(&mut self, loss: f64, examples: usize) {
        self.loss_sum += loss;
        self.batches += 1;
        self.examples += examples;
    }
}

/// The outcome of training.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochLog>,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    /// How the units divided between new and replayed ones (`train.init_from.replay`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySplit>,
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
    train_observed(model, data, config, seed, hard, None, &Silent)
}

/// [`train_with`], reporting progress to `progress`. `earlier` is what a warm-started model's
/// earlier run trained on: with `train.init_from.replay` set, epochs train on the rest of the
/// examples and a replay sample of those.
pub fn train_observed(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
    hard: Option<&HardRound>,
    earlier: Option<&EarlierExamples>,
    progress: &dyn Progress,
) -> Result<TrainReport> {
    config.validate_for(model.config())?;
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
    pool.install(|| train_in_pool(model, data, config, seed, hard, earlier, progress))
}

/// The validation rows each epoch ranks: all of them, or `sample` of them drawn once with a
/// generator of their own (the training generator's draws, and so the batches, are the same
/// with or without a sample), in file order.
fn validation_rows(
    valid: &SplitRows,
    sample: Option<usize>,
    seed: u64,
) -> std::borrow::Cow<'_, SplitRows> {
    match sample {
        Some(n) if n < valid.len() => {
            let own_seed = recall_core::mix::mix64(seed ^ recall_core::mix::GOLDEN_GAMMA);
            let rows = recall_eval::split::sample_rows(valid.len(), n, own_seed);
            std::borrow::Cow::Owned(valid.select(&rows))
        }
        _ => std::borrow::Cow::Borrowed(valid),
    }
}

fn train_in_pool(
    model: &mut TwoTower,
    data: &EncodedData,
    config: &TrainConfig,
    seed: u64,
    hard: Option<&HardRound>,
    earlier: Option<&EarlierExamples>,
    progress: &dyn Progress,
) -> Result<TrainReport> {
    let _span = tracing::info_span!("train", model = model.config().kind().name()).entered();
    let rankable = data.item_table_size.saturating_sub(FIRST_ITEM as usize);
    if !data.valid.is_empty() && config.validate_k > rankable {
        return Err(recall_core::Error::config(
            "train.validate_k",
            format!(
                "validation ranks the top {} of {rankable} rankable items: set validate_k to at most {rankable} \
                 (the default is 50), or add items",
                config.validate_k
            ),
        )
        .into());
    }
    let valid = validation_rows(&data.valid, config.validate_users, seed);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let sampler = sampler(config, data)?;
    let mut adam = AdamSettings::new(config.lr, config.weight_decay);
    // What an epoch shuffles and batches: the split's rows, or SASRec's windows of them.
    let windows = match model.training_unit() {
        TrainingUnit::Windows { max_len } => Some(Windows::new(data, max_len)),
        TrainingUnit::Rows => None,
    };
    let units = windows.as_ref().map_or(data.train.len(), Windows::len);
    let mut epoch_units = match (config.replay(), earlier) {
        (None, _) => EpochUnits::All(units),
        (Some(replay), Some(earlier)) => EpochUnits::new(
            units,
            |u| {
                // A window is new when its newest target is (windows are cut from the newest
                // back, so only a user's newest window holds new targets).
                let (user, position) = match &windows {
                    Some(w) => w.newest_target(u),
                    None => (data.train.user[u], data.train.position[u]),
                };
                !earlier.trained(user, position)
            },
            replay,
        ),
        (Some(_), None) => {
            return Err(recall_core::Error::config(
                "train.init_from.replay",
                "needs what the earlier run trained on (its encoding's sequences), which the caller did not pass",
            )
            .into());
        }
    };
    if epoch_units.per_epoch() == 0 {
        return Err(recall_core::Error::config(
            "train.init_from.replay",
            "leaves nothing to train on: no example is new since the earlier run; raise replay above 0",
        )
        .into());
    }
    let steps_per_epoch = epoch_units
        .per_epoch()
        .div_ceil(config.batch_size)
        .min(config.max_batches_per_epoch.unwrap_or(usize::MAX));
    let total_steps = steps_per_epoch * config.epochs;
    let mut step_index = 0usize;
    // Under `full_softmax_last`, the steps from `from` on score the whole catalogue. The
    // drawing thread keeps `config`: the full softmax reads none of a draw's negatives.
    let full_softmax = config.full_softmax_from(total_steps).map(|from| {
        let full = TrainConfig {
            loss: Loss::FullSoftmax,
            ..config.clone()
        };
        (from, full)
    });
    let mut opt = DenseAdam::new(model.params().iter().map(|(_, v)| v.clone()));
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
    let mut order: Vec<usize> = Vec::new();
    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, TwoTower)> = None;
    let mut trained_examples = 0usize;
    let mut train_seconds = 0.0;
    let parts = config.validations_per_epoch.max(1);
    // Validation after an epoch or a part of one: logs it, keeps the best model, and says
    // whether training stops (patience counts validations).
    let mut validate = |model: &TwoTower, part: &Part, passes: f64| -> Result<(EpochLog, bool)> {
        let seconds = part.started.elapsed().as_secs_f64();
        train_seconds += seconds;
        let valid_hit_rate = if valid.is_empty() {
            None
        } else {
            let filter = config
                .seen_filter
                .with_recent_window(model.history_len(data));
            Some(model.hit_rate(data, &valid, config.validate_k, filter)?)
        };
        let epoch = epochs.len() + 1;
        let log = EpochLog {
            epoch,
            loss: part.loss_sum / part.batches.max(1) as f64,
            seconds,
            examples_per_second: part.examples as f64 / seconds.max(1e-9),
            valid_hit_rate,
            passes: (parts > 1).then_some(passes),
        };
        tracing::info!(epoch, loss = format!("{:.4}", log.loss), seconds = format!("{seconds:.1}"), examples_per_second = format!("{:.0}", log.examples_per_second), valid_hit_rate = ?valid_hit_rate.map(|h| format!("{h:.4}")), passes = ?log.passes, "epoch done");
        epochs.push(log.clone());
        let score = valid_hit_rate.unwrap_or(epoch as f64);
        let mut stop = false;
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, epoch, model.snapshot()?));
        } else if best
            .as_ref()
            .is_some_and(|(_, e, _)| epoch - e >= config.patience)
        {
            tracing::info!(
                epoch,
                "early stop: no better validation HitRate@{} for {} validations",
                config.validate_k,
                config.patience
            );
            stop = true;
        }
        Ok((log, stop))
    };
    for epoch in 1..=config.epochs {
        let _span = tracing::info_span!("epoch", epoch).entered();
        let mut part = Part::start();
        // Fisher-Yates with the training generator: the same seed gives the same batches.
        epoch_units.shuffle_into(&mut order, &mut rng);
        let limit = config.max_batches_per_epoch.unwrap_or(usize::MAX);
        let epoch_batches = order.len().div_ceil(config.batch_size).min(limit);
        progress.epoch_started(epoch, epoch_batches);
        // The batches after which a part of the epoch is validated (none with one part: the
        // epoch's end is validated below).
        let part_ends: Vec<usize> = (1..parts).map(|k| k * epoch_batches / parts).collect();
        // The drawing thread's generator is seeded from the training generator, so the
        // batches depend on the seed only, never on how the two threads interleave.
        let mut draw_rng = Xoshiro256PlusPlus::seed_from_u64(rng.random());
        let negatives = Negatives {
            sampler: sampler.as_ref(),
            user_mass: &user_mass,
            hard,
        };
        let order = &order;
        // One step (the epoch's batch `index`, from 0); returns the batch's loss and examples.
        let mut train_batch = |model: &mut TwoTower,
                               draw: BatchDraw,
                               index: usize,
                               waiting: f64|
         -> Result<(f64, usize)> {
            let started = Instant::now();
            let rows = &draw.rows;
            // q per draw of an in-batch candidate: the estimator's expected count per
            // batch over the batch size, or its share of training targets.
            let b = rows.len() as f64;
            let stream = streaming.as_ref();
            let q = |t: u32| match stream.and_then(|s| s.expected_count(t)) {
                Some(count) => count / b,
                None => target_q[t as usize],
            };
            let step_config = match &full_softmax {
                Some((from, full)) if step_index >= *from => full,
                _ => config,
            };
            let (loss, step, examples) = batch_loss(
                model,
                data,
                step_config,
                &draw,
                sampler.as_ref(),
                &q,
                hard,
                windows.as_ref(),
            )?;
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
                    "loss became {value} at epoch {epoch}, batch {index}: lower the learning rate or raise the temperature \
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
            model.tables_mut().apply(&step, &grads, adam)?;
            progress.batch_phases(&StepPhases {
                waiting,
                forward,
                backward,
                update: started.elapsed().as_secs_f64() - forward - backward,
            });
            progress.batch_done(value, examples);
            Ok((value, examples))
        };
        let stopped = std::thread::scope(|scope| -> Result<bool> {
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
            for (done, draw) in (1..).zip(receiver) {
                let waiting = waited_from.elapsed().as_secs_f64();
                let (value, examples) = train_batch(model, draw?, done - 1, waiting)?;
                part.add(value, examples);
                trained_examples += examples;
                if part_ends.contains(&done) {
                    let passes = (epoch - 1) as f64 + done as f64 / epoch_batches as f64;
                    if validate(model, &part, passes)?.1 {
                        // Dropping the receiver ends the drawing thread.
                        return Ok(true);
                    }
                    part = Part::start();
                }
                waited_from = Instant::now();
            }
            Ok(false)
        })?;
        if stopped {
            break;
        }
        let (log, stop) = validate(model, &part, epoch as f64)?;
        progress.epoch_finished(&log);
        if stop {
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
        replay: epoch_units.split(earlier.map_or(0, |e| e.diverged_users)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample is that many distinct rows in file order, the same for a seed, other rows for
    /// another seed; no sample (or one as large as the split) is the split itself.
    #[test]
    fn validation_sample_is_seeded_distinct_and_ordered() {
        let mut valid = SplitRows::default();
        for u in 0..1_000 {
            valid.push(u + 2, 3, 0);
        }
        let a = validation_rows(&valid, Some(100), 7);
        assert_eq!(a.len(), 100);
        assert!(a.user.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, validation_rows(&valid, Some(100), 7));
        assert_ne!(a, validation_rows(&valid, Some(100), 8));
        assert_eq!(*validation_rows(&valid, None, 7), valid);
        assert_eq!(*validation_rows(&valid, Some(1_000), 7), valid);
    }
}
