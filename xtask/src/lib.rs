//! The orchestrator as a library: pipeline configuration, stages, manifests, reports and the
//! CI checks. `src/main.rs` is the `cargo xtask` command line over it; the
//! fuzz targets (`fuzz/`) load pipeline files through [`config::parse`].

pub mod ablate;
pub mod card;
pub mod chart;
pub mod ci;
pub mod config;
pub mod engine;
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

/// `cargo xtask fetch-data ARGS`: runs the `recall-fetch` binary through cargo, in the profile
/// this binary was built with. A package of its own, so the HTTPS client and zip extraction are
/// compiled only by those who fetch, not by every first `cargo xtask pipeline`.
pub fn fetch_data(args: &[String]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["run", "--quiet", "--package", "recall-fetch"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let status = command.arg("--").args(args).status()?;
    if !status.success() {
        anyhow::bail!("fetch-data failed ({status})");
    }
    Ok(())
}
