//! The encode stage: the ingested tables into vocabularies, user sequences, leave-last-out
//! splits as positions, example-age buckets and encoded side features (`recall_core::encoded`,
//! written by `recall_features::encode`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use recall_core::encoded::EncodeStats;
use recall_features::EncodeConfig;

/// The encode stage's report: rows, users, items and examples of each split.
pub type EncodeReport = EncodeStats;

/// The ingest outputs encode reads (those present: side tables are optional).
pub fn inputs(ingest_dir: &Path) -> Vec<PathBuf> {
    recall_core::ingested::FILES
        .iter()
        .map(|f| ingest_dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Encodes the ingested tables of `ingest_dir` into `out`.
pub fn run(
    ingest_dir: &Path,
    config: &EncodeConfig,
    out: &Path,
) -> Result<(Vec<PathBuf>, EncodeReport)> {
    let input = recall_features::EncodeInput::read_dir(ingest_dir)?;
    let encoded = recall_features::encode(&input, config)?;
    let stats = encoded.manifest.stats.clone();
    Ok((encoded.write(out)?, stats))
}
