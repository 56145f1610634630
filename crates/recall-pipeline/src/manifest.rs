//! Stage manifests: a stage is complete only when `manifest.json` exists in its directory, and
//! it is skipped when that manifest records the same config hash, the same input checksums and
//! outputs that are still there unchanged.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use recall_core::checksum::{sha256_bytes, sha256_file};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";

/// The hash a manifest records of a stage's config section: SHA-256 of its JSON and the
/// project version.
pub fn config_hash<T: Serialize>(section: &T) -> Result<String> {
    let mut bytes = serde_json::to_vec(section)?;
    bytes.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    Ok(sha256_bytes(&bytes))
}

/// One file a stage read or wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    /// Rows, for Parquet files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl FileEntry {
    pub fn of(path: &Path) -> Result<FileEntry> {
        let bytes = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        let rows = if path.extension().is_some_and(|e| e == "parquet") {
            Some(recall_core::table::parquet_row_count(path)?)
        } else {
            None
        };
        Ok(FileEntry {
            path: path.to_owned(),
            sha256: sha256_file(path)?,
            bytes,
            rows,
        })
    }
}

/// What a finished stage records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub stage: String,
    /// Version of the project that wrote the outputs.
    pub version: String,
    /// SHA-256 of the stage's resolved config section (and the version).
    pub config_hash: String,
    pub inputs: Vec<FileEntry>,
    pub outputs: Vec<FileEntry>,
    pub seconds: f64,
    /// Stage-specific counts (rows read, examples written, ...).
    pub stats: serde_json::Value,
}

impl Manifest {
    /// The stage report as the stage's type (`None` when it has another shape).
    pub fn report<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.stats.clone()).ok()
    }

    pub fn read(stage_dir: &Path) -> Option<Manifest> {
        let text = std::fs::read(stage_dir.join(MANIFEST_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn write(&self, stage_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        recall_core::write::write_bytes(&stage_dir.join(MANIFEST_FILE), &json)?;
        Ok(())
    }

    /// Whether this manifest still describes the stage for these inputs and config.
    pub fn is_current(&self, config_hash: &str, inputs: &[FileEntry]) -> bool {
        self.config_hash == config_hash
            && self.version == env!("CARGO_PKG_VERSION")
            && self.inputs == inputs
            && self
                .outputs
                .iter()
                .all(|o| sha256_file(&o.path).is_ok_and(|s| s == o.sha256))
    }
}
