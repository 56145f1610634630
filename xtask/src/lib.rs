//! `cargo xtask`: the command line over `recall-pipeline` (which runs pipelines) and the
//! project's chores: the CI checks, the tidy tests, fetching MovieLens. `src/main.rs` parses
//! the arguments.

pub mod bar;
pub mod ci;
pub mod pages;
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
