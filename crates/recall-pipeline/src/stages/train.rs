//! The train stage: each configured model is trained on `encode/` and checkpointed into
//! `train/<model>/`: `model.safetensors` and `config.json` (the checkpoint), `history.json`
//! (every epoch's loss, time and validation HitRate) and `train.json` (the training config and
//! the seed that produced the weights).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use rand::SeedableRng;
use recall_models::{EncodedData, TwoTower, checkpoint, train};
use serde::{Deserialize, Serialize};

use crate::config::ModelEntry;
use crate::progress::ProgressFor;

/// What training one model did, as the report and the model cards read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trained {
    pub best_epoch: usize,
    pub epochs_run: usize,
    /// Training time without per-epoch validation.
    pub train_seconds: f64,
    pub examples_per_second: f64,
    /// The best validation HitRate@`validate_k` (none without a validation split).
    pub best_valid_hit_rate: Option<f64>,
    /// What a warm start (`train.init_from`) took from the earlier model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<checkpoint::WarmStart>,
    /// How incremental training (`train.init_from.replay`) divided the examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<train::ReplaySplit>,
}

/// The train stage's report: each model by name.
pub type TrainReport = BTreeMap<String, Trained>;

/// The file beside a model's weights that records how they were trained.
pub const TRAIN_FILE: &str = "train.json";

/// What the train stage reads.
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)] // `progress` is a trait object without Debug
pub struct Inputs<'a> {
    pub encode_dir: &'a Path,
    pub models: &'a [ModelEntry],
    /// The earlier checkpoint each warm-started model starts from, by model name.
    pub init_dirs: &'a [(String, PathBuf)],
    /// The earlier run's encode outputs (a warm start's): what its models trained on.
    pub earlier_encode: Option<&'a Path>,
    /// The seed of each model's initialisation, shuffles, negatives and dropout.
    pub seed: u64,
    pub device: &'a Device,
    /// How each model's training shows its progress.
    pub progress: &'a dyn ProgressFor,
}

/// Trains every model into `out/<name>/`.
pub fn run(inputs: Inputs<'_>, out: &Path) -> Result<(Vec<PathBuf>, TrainReport)> {
    let Inputs {
        encode_dir,
        models,
        init_dirs,
        earlier_encode,
        seed,
        device,
        progress,
    } = inputs;
    let mut report = TrainReport::new();
    if models.is_empty() {
        // A baselines-only pipeline: nothing to read (10 s and GBs on a 10M-row encode).
        return Ok((Vec::new(), report));
    }
    let data = EncodedData::read_dir(encode_dir).context("reading the encoded data")?;
    // What the earlier run trained on, read once when a model trains incrementally.
    let earlier = match earlier_encode {
        Some(dir) if models.iter().any(|m| m.train.replay().is_some()) => {
            let sequences = recall_models::data::read_sequences(dir).with_context(|| {
                format!(
                    "reading what the earlier run trained on ({})",
                    dir.display()
                )
            })?;
            Some(train::EarlierExamples::new(&data.sequences, &sequences))
        }
        _ => None,
    };
    let mut written = Vec::new();
    // Models trained so far, for mining hard negatives in a later round.
    let mut trained: Vec<(&str, TwoTower)> = Vec::new();
    for entry in models {
        let _span = tracing::info_span!("model", name = entry.name.as_str()).entered();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut model = TwoTower::new(&entry.model, &data, &mut rng, device)
            .with_context(|| format!("model `{}`", entry.name))?;
        let warm_start = init_dirs
            .iter()
            .find(|(name, _)| *name == entry.name)
            .zip(entry.train.init_from.as_ref())
            .map(|((_, dir), init)| {
                checkpoint::warm_start(&mut model, dir, init.shrink, init.perturb)
            })
            .transpose()
            .with_context(|| format!("model `{}`", entry.name))?;
        let hard = match &entry.train.hard_negatives {
            Some(h) => {
                let (_, miner) = trained.iter().find(|(n, _)| *n == h.from).with_context(|| {
                    format!("train.hard_negatives.from = {:?} in `{}`: no earlier model has that name", h.from, entry.name)
                })?;
                Some(train::mine_hard_negatives(miner, &data, h.band, h.count)?)
            }
            None => None,
        };
        let bar = progress.model(&entry.name);
        let log = train::train_observed(
            &mut model,
            &data,
            &entry.train,
            seed,
            hard.as_ref(),
            earlier.as_ref(),
            bar.as_ref(),
        )
        .with_context(|| format!("training `{}`", entry.name))?;
        let dir = out.join(&entry.name);
        checkpoint::save(&model, &dir)?;
        recall_core::write::write_bytes(
            &dir.join("history.json"),
            &serde_json::to_vec_pretty(&log)?,
        )?;
        recall_core::write::write_bytes(
            &dir.join(TRAIN_FILE),
            &serde_json::to_vec_pretty(&serde_json::json!({ "train": entry.train, "seed": seed }))?,
        )?;
        written.extend(
            [
                "model.safetensors",
                "config.json",
                "history.json",
                TRAIN_FILE,
            ]
            .map(|f| dir.join(f)),
        );
        report.insert(
            entry.name.clone(),
            Trained {
                best_epoch: log.best_epoch,
                epochs_run: log.epochs.len(),
                train_seconds: log.train_seconds,
                examples_per_second: log.examples_per_second,
                best_valid_hit_rate: log
                    .epochs
                    .iter()
                    .filter_map(|e| e.valid_hit_rate)
                    .reduce(f64::max),
                warm_start,
                replay: log.replay,
            },
        );
        trained.push((entry.name.as_str(), model));
    }
    Ok((written, report))
}
