//! The ingest stage: raw data (MovieLens files, a generic CSV/Parquet log, or the synthetic
//! generator) into the canonical `interactions.parquet`, `users.parquet`, `items.parquet`
//! (`recall_core::ingested`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use recall_data::{IngestConfig, IngestStats};
use recall_engine::{DataConfig, Engine, EngineRun};
use serde::{Deserialize, Serialize};

/// The ingest stage's report: the dataset's name and counts of what was read and kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestReport {
    /// The name the dataset's files carry (`ml-1m`, `synthetic`, a generic source's `name`).
    pub dataset: String,
    #[serde(flatten)]
    pub stats: IngestStats,
    /// What the engine did (spills, partitions) when `[data] engine` planned the ingest (a
    /// generic Parquet log); absent for the in-memory path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_run: Option<EngineRun>,
}

/// Ingests `config` into `out`: a generic Parquet log on the engine `data` names, everything
/// else in memory (the synthetic generator streams user by user either way).
pub fn run(
    config: &IngestConfig,
    data: &DataConfig,
    out: &Path,
) -> Result<(Vec<PathBuf>, IngestReport)> {
    let planned = match (data.engine, config) {
        (Engine::Datafusion | Engine::Ballista, IngestConfig::Generic(source)) => {
            on_datafusion(source, data, out)?
        }
        _ => None,
    };
    let (dataset, files, stats, engine_run) = match planned {
        Some((dataset, files, stats, run)) => (dataset, files, stats, Some(run)),
        None => {
            let (dataset, files, stats) = recall_data::ingest_into(config, out)?;
            (dataset, files, stats, None)
        }
    };
    tracing::info!(
        interactions = stats.interactions,
        users = stats.users,
        items = stats.items,
        duplicates_dropped = stats.duplicates_dropped,
        "ingested {dataset}"
    );
    let report = IngestReport {
        dataset,
        stats,
        engine_run,
    };
    Ok((files, report))
}

type Planned = (String, Vec<PathBuf>, IngestStats, EngineRun);

/// The generic log ingested on DataFusion, or `None` when it is CSV (read in memory: its
/// errors name the line).
#[cfg(feature = "datafusion")]
fn on_datafusion(
    source: &recall_data::GenericSource,
    data: &DataConfig,
    out: &Path,
) -> Result<Option<Planned>> {
    use recall_engine::datafusion::Options;
    use recall_engine::datafusion::ingest::{ingest_generic, plans};
    if !plans(source)? {
        tracing::info!(
            "{} is CSV: ingest reads it in memory, encode runs on the engine",
            source.interactions.display()
        );
        return Ok(None);
    }
    let planned = ingest_generic(source, out, &Options::from_config(data)?)?;
    tracing::info!(run = ?planned.3, "ingested on {}", data.engine.name());
    Ok(Some(planned))
}

/// Unreachable: `config::parse` refuses an engine this build lacks before any stage.
#[cfg(not(feature = "datafusion"))]
fn on_datafusion(
    _: &recall_data::GenericSource,
    data: &DataConfig,
    _: &Path,
) -> Result<Option<Planned>> {
    anyhow::bail!(data.unbuilt().unwrap_or_default())
}
