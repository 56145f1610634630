//! The export stage: every trained model's embeddings, candidates, weights and serving index
//! into `export/<model>/` (see `recall_export::export` for the files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use recall_export::{ExportConfig, export_model};

use super::train::ModelEntry;

/// Exports every model; returns the files written and per-model summaries.
pub fn run(
    encode_dir: &Path,
    train_dir: &Path,
    out: &Path,
    models: &[ModelEntry],
    config: &ExportConfig,
    config_hash: &str,
    device: &Device,
) -> Result<(Vec<PathBuf>, serde_json::Value)> {
    let mut written = Vec::new();
    let mut stats = serde_json::Map::new();
    for entry in models {
        let _span = tracing::info_span!("model", name = entry.name.as_str()).entered();
        let dir = out.join(&entry.name);
        let summary = export_model(
            encode_dir,
            &train_dir.join(&entry.name),
            &dir,
            &entry.name,
            config,
            config_hash,
            device,
        )
        .with_context(|| format!("exporting `{}`", entry.name))?;
        written.extend(recall_export::export::written_files(&dir, &summary));
        stats.insert(
            entry.name.clone(),
            serde_json::json!({
                "users": summary.users,
                "items": summary.items,
                "top_k": summary.top_k,
                "filter_seen": summary.filter_seen,
                "index": summary.index,
            }),
        );
    }
    Ok((written, serde_json::Value::Object(stats)))
}
