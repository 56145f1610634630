//! The export stage: every trained model's embeddings, candidates, weights and serving index
//! into `export/<model>/` (see `recall_export::export` for the files).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use recall_export::ExportConfig;
use recall_export::export::IndexQuality;
use recall_export::export::ModelExport;
use serde::{Deserialize, Serialize};

use crate::config::ModelEntry;

/// What exporting one model wrote, as the report and the model cards read it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Exported {
    /// The model's kind (`dssm`, `youtubednn`, `sasrec`, `hstu`).
    pub kind: String,
    pub dim: usize,
    /// Serving users embedded, items embedded.
    pub users: usize,
    pub items: usize,
    /// Candidates per user.
    pub top_k: usize,
    /// The seen filter's view on the candidates (`none`, `all`, `recent`).
    pub seen_filter: recall_eval::split::SeenView,
    /// The serving index against the exact ranking (none when it is not built).
    pub index: Option<IndexQuality>,
}

/// The export stage's report: each model by name.
pub type ExportReport = BTreeMap<String, Exported>;

/// What the export stage reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub encode_dir: &'a Path,
    pub train_dir: &'a Path,
    pub models: &'a [ModelEntry],
    pub config: &'a ExportConfig,
    /// Recorded in each model's export manifest.
    pub config_hash: &'a str,
    pub device: &'a Device,
    /// The earlier export of each warm-started model (by model name) whose serving index
    /// `export.extend_index` extends.
    pub earlier_exports: &'a [(String, PathBuf)],
}

/// Exports every model into `out/<name>/`.
pub fn run(inputs: Inputs<'_>, out: &Path) -> Result<(Vec<PathBuf>, ExportReport)> {
    let mut written = Vec::new();
    let mut report = ExportReport::new();
    for entry in inputs.models {
        let _span = tracing::info_span!("model", name = entry.name.as_str()).entered();
        let dir = out.join(&entry.name);
        let earlier = inputs
            .earlier_exports
            .iter()
            .find(|(name, _)| *name == entry.name)
            .map(|(_, dir)| dir.as_path());
        let summary = ModelExport {
            encode_dir: inputs.encode_dir,
            model_dir: &inputs.train_dir.join(&entry.name),
            name: &entry.name,
            config: inputs.config,
            config_hash: inputs.config_hash,
            device: inputs.device,
            earlier,
        }
        .run(&dir)
        .with_context(|| format!("exporting `{}`", entry.name))?;
        written.extend(recall_export::export::written_files(&dir, &summary));
        report.insert(
            entry.name.clone(),
            Exported {
                kind: summary.model_kind.clone(),
                dim: summary.dim,
                users: summary.users,
                items: summary.items,
                top_k: summary.top_k,
                seen_filter: summary.seen_filter,
                index: summary.index.clone(),
            },
        );
    }
    Ok((written, report))
}
