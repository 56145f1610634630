//! The ingest stage: raw data (MovieLens files, a generic CSV/Parquet log, or the synthetic
//! generator) into the canonical `interactions.parquet`, `users.parquet`, `items.parquet`
//! (`recall_core::ingested`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use recall_data::{IngestConfig, IngestStats};
use serde::{Deserialize, Serialize};

/// The ingest stage's report: the dataset's name and counts of what was read and kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestReport {
    /// The name the dataset's files carry (`ml-1m`, `synthetic`, a generic source's `name`).
    pub dataset: String,
    #[serde(flatten)]
    pub stats: IngestStats,
}

/// Ingests `config` into `out`.
pub fn run(config: &IngestConfig, out: &Path) -> Result<(Vec<PathBuf>, IngestReport)> {
    let (dataset, files, stats) = recall_data::ingest_into(config, out)?;
    tracing::info!(
        interactions = stats.interactions,
        users = stats.users,
        items = stats.items,
        duplicates_dropped = stats.duplicates_dropped,
        "ingested {dataset}"
    );
    Ok((files, IngestReport { dataset, stats }))
}
