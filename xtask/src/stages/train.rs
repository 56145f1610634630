//! The train stage: each configured model is trained on `encode/` and checkpointed into
//! `train/<model>/` (`model.safetensors`, `config.json`, `history.json`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use rand::SeedableRng;
use recall_models::{EncodedData, TwoTower, checkpoint, train};
use serde::{Deserialize, Serialize};

/// One model of a pipeline (`[[models]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Names the output folder and the row in the report (`dssm`, `youtubednn`, ...).
    pub name: String,
    pub model: recall_models::ModelConfig,
    pub train: recall_models::TrainConfig,
    /// The scheduled job fails when this model's test HitRate@50 (unfiltered) falls below.
    #[serde(default)]
    pub min_hit_rate_at_50: Option<f64>,
}

/// Trains every model; returns the files written and per-model stats.
pub fn run(
    encode_dir: &Path,
    out: &Path,
    models: &[ModelEntry],
    seed: u64,
    device: &Device,
) -> Result<(Vec<PathBuf>, serde_json::Value)> {
    if models.is_empty() {
        // A baselines-only pipeline: nothing to read (10 s and GBs on a 10M-row encode).
        return Ok((Vec::new(), serde_json::json!({})));
    }
    let data = EncodedData::read_dir(encode_dir).context("reading the encoded data")?;
    let mut written = Vec::new();
    let mut stats = serde_json::Map::new();
    // Models trained so far, for mining hard negatives in a later round.
    let mut trained: Vec<(&str, TwoTower)> = Vec::new();
    for entry in models {
        let _span = tracing::info_span!("model", name = entry.name.as_str()).entered();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut model = TwoTower::new(&entry.model, &data, &mut rng, device)
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
        let bar = crate::progress::TrainBar::for_terminal(&entry.name);
        let report =
            train::train_observed(&mut model, &data, &entry.train, seed, hard.as_ref(), &bar)
                .with_context(|| format!("training `{}`", entry.name))?;
        let dir = out.join(&entry.name);
        checkpoint::save(&model, &dir)?;
        let history = serde_json::to_vec_pretty(&report)?;
        recall_core::write::write_bytes(&dir.join("history.json"), &history)?;
        written.extend(["model.safetensors", "config.json", "history.json"].map(|f| dir.join(f)));
        stats.insert(entry.name.clone(), serde_json::json!({
            "best_epoch": report.best_epoch,
            "epochs_run": report.epochs.len(),
            "train_seconds": report.train_seconds,
            "examples_per_second": report.examples_per_second,
            "best_valid_hit_rate": report.epochs.iter().filter_map(|e| e.valid_hit_rate).fold(None, |m: Option<f64>, h| Some(m.map_or(h, |m| m.max(h)))),
        }));
        trained.push((entry.name.as_str(), model));
    }
    Ok((written, serde_json::Value::Object(stats)))
}
