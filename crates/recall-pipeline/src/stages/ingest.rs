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
    let dataset = recall_data::ingest(config)?;
    tracing::info!(
        interactions = dataset.stats.interactions,
        users = dataset.stats.users,
        items = dataset.stats.items,
        duplicates_dropped = dataset.stats.duplicates_dropped,
        "ingested {}",
        dataset.name
    );
    let files = dataset.write(out)?;
    Ok((
        files,
        IngestReport {
            dataset: dataset.name,
            stats: dataset.stats,
        },
    ))
}
