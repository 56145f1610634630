//! Runs a recall pipeline: a pipeline file (`pipelines/*.toml`) in, a run directory of Parquet,
//! safetensors, JSON and Markdown out, one stage after another.
//!
//! - [`config`]: the pipeline file's schema; every key is parsed and checked here, once.
//! - [`layout`]: the stages, where each writes (`runs/<pipeline>/<stage>/`), the run lock.
//! - [`manifest`]: what a finished stage records (inputs and outputs with SHA-256, its config
//!   hash, its typed report), and when it is current.
//! - [`runner`]: runs the stages in order, skipping the current ones.
//! - [`stages`]: one module per stage, each a function from typed inputs to its outputs and a
//!   typed stage report, which the next stage, the report, the model cards and the ablation
//!   read as values.
//! - [`ablate`]: a grid of variants of a pipeline's first model, chosen on validation.
//! - [`device`]: the candle device the computing stages use.
//! - [`progress`]: training progress as log lines, and the hook a command line uses to draw
//!   bars instead.
//!
//! ```no_run
//! use std::path::Path;
//! use recall_pipeline::{config, runner};
//!
//! let config = config::load(Path::new("pipelines/default.toml"))?;
//! let reports = runner::execute(&config, Path::new("runs/default"), None, false, false)?;
//! for r in &reports {
//!     println!("{}: {:.1} s{}", r.stage.name(), r.manifest.seconds, if r.skipped { " (current)" } else { "" });
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Errors are `anyhow::Error` with the stage, file and key in their context chain: they end
//! a run and are read by a person, while the crates below return typed errors.

pub mod ablate;
pub mod config;
pub mod device;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod runner;
pub mod stages;

/// The workspace root of this checkout (for the shipped pipeline files in tests).
#[cfg(test)]
pub(crate) fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| std::path::PathBuf::from("."))
}
