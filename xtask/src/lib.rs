//! The orchestrator as a library: pipeline configuration, stages, manifests, reports, data
//! fetching and the CI checks. `src/main.rs` is the `cargo xtask` command line over it; the
//! fuzz targets (`fuzz/`) load pipeline files through [`config::parse`].

pub mod ablate;
pub mod chart;
pub mod ci;
pub mod config;
pub mod fetch;
pub mod manifest;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod stages;
mod tidy;

use std::path::PathBuf;

/// The workspace root, so `pipelines/` and `runs/` resolve the same from any directory.
pub fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}
