//! The encode stage: the ingested tables into vocabularies, user sequences, leave-last-out
//! splits as positions, example-age buckets and encoded side features (`recall_core::encoded`,
//! written by `recall_features::encode`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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

/// Encodes the ingested tables of `ingest_dir` into `out`; with `grow_from` (an earlier run's
/// encode outputs, for a warm start) its vocabularies and boundaries are grown, not refitted.
pub fn run(
    ingest_dir: &Path,
    config: &EncodeConfig,
    grow_from: Option<&Path>,
    out: &Path,
) -> Result<(Vec<PathBuf>, EncodeReport)> {
    let mut input = recall_features::EncodeInput::read_dir(ingest_dir)?;
    if let Some(dir) = grow_from {
        input.grow_from = Some(
            recall_features::EarlierEncoding::read_dir(dir).with_context(|| {
                format!("reading the earlier run's encoding in {}", dir.display())
            })?,
        );
    }
    let encoded = recall_features::encode(&input, config)?;
    let stats = encoded.manifest.stats.clone();
    Ok((encoded.write(out)?, stats))
}
