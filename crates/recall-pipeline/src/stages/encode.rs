//! The encode stage: the ingested tables into vocabularies, user sequences, leave-last-out
//! splits as positions, example-age buckets and encoded side features (`recall_core::encoded`,
//! written by `recall_features::encode`), in memory or on the engine `[data] engine` names
//! (`recall-engine`, which writes the same files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use recall_core::encoded::EncodeStats;
use recall_engine::{DataConfig, Engine, EngineRun};
use recall_features::{EarlierEncoding, EncodeConfig, Encoded};
use serde::{Deserialize, Serialize};

/// The encode stage's report: rows, users, items and examples of each split, and which engine
/// wrote them (with its spills).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncodeReport {
    #[serde(flatten)]
    pub stats: EncodeStats,
    /// `"memory"`, `"datafusion"` or `"ballista"` (absent in reports written before engines).
    #[serde(default)]
    pub engine: Option<Engine>,
    /// What the engine did (spills, partitions); absent for the in-memory path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_run: Option<EngineRun>,
}

/// The ingest outputs encode reads (those present: side tables are optional).
pub fn inputs(ingest_dir: &Path) -> Vec<PathBuf> {
    recall_core::ingested::FILES
        .iter()
        .map(|f| ingest_dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

/// Encodes the ingested tables of `ingest_dir` into `out` on the engine `data` names; with
/// `grow_from` (an earlier run's encode outputs, for a warm start) its vocabularies and
/// boundaries are grown, not refitted.
pub fn run(
    ingest_dir: &Path,
    config: &EncodeConfig,
    data: &DataConfig,
    grow_from: Option<&Path>,
    out: &Path,
) -> Result<(Vec<PathBuf>, EncodeReport)> {
    let earlier = grow_from
        .map(|dir| {
            EarlierEncoding::read_dir(dir)
                .with_context(|| format!("reading the earlier run's encoding in {}", dir.display()))
        })
        .transpose()?;
    let (encoded, engine_run) = match data.engine {
        Engine::Memory => {
            let mut input = recall_features::EncodeInput::read_dir(ingest_dir)?;
            input.grow_from = earlier;
            (recall_features::encode(&input, config)?, None)
        }
        Engine::Datafusion | Engine::Ballista => {
            on_datafusion(ingest_dir, config, data, earlier.as_ref())?
        }
    };
    let report = EncodeReport {
        stats: encoded.manifest.stats.clone(),
        engine: Some(data.engine),
        engine_run,
    };
    Ok((encoded.write(out)?, report))
}

#[cfg(feature = "datafusion")]
fn on_datafusion(
    ingest_dir: &Path,
    config: &EncodeConfig,
    data: &DataConfig,
    earlier: Option<&EarlierEncoding>,
) -> Result<(Encoded, Option<EngineRun>)> {
    use recall_engine::datafusion::{Options, encode};
    let options = Options::from_config(data)?;
    let (encoded, run) = encode(ingest_dir, config, earlier, &options)?;
    tracing::info!(?run, "encoded on {}", data.engine.name());
    Ok((encoded, Some(run)))
}

/// Unreachable: `config::parse` refuses an engine this build lacks before any stage.
#[cfg(not(feature = "datafusion"))]
fn on_datafusion(
    _: &Path,
    _: &EncodeConfig,
    data: &DataConfig,
    _: Option<&EarlierEncoding>,
) -> Result<(Encoded, Option<EngineRun>)> {
    anyhow::bail!(data.unbuilt().unwrap_or_default())
}
