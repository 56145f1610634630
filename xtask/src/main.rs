//! `cargo xtask`: the orchestrator of the recall workspace.
//!
//! - `cargo xtask pipeline [--config pipelines/NAME.toml] [--from STAGE | --only STAGE] [--force]`
//!   runs the stages of a pipeline file into `runs/<name>/<stage>/`, skipping stages whose
//!   inputs and config are unchanged.
//! - `cargo xtask fetch-data ml-1m|ml-100k` downloads, verifies and converts a MovieLens
//!   release into `data/`.
//! - `cargo xtask ci` runs what CI runs: format check, the test suite and a small pipeline.
//!
//! Only this crate knows the run-directory layout.

use std::path::PathBuf;

use anyhow::Result;
use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};
use recall_pipeline::device::DeviceChoice;
use recall_pipeline::layout::{Layout, Stage};
use recall_pipeline::{ablate, config, runner};
use xtask::{bar::Bars, ci, pages::KeepPagesWhileTraining, project_root};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Run recall pipelines and project checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline: stages ingest, encode, train, export, evaluate, report (in that order),
    /// over Parquet files in runs/<pipeline>/<stage>/.
    Pipeline(PipelineArgs),
    /// Run the project's checks as CI does: rustfmt, tests (nextest when installed), doc tests.
    Ci,
    /// Download a MovieLens release from GroupLens into data/, verify it and convert it to the
    /// layout the shipped pipelines read (`cargo xtask fetch-data --help` for the options).
    /// Runs the `recall-fetch` binary, built on first use.
    #[command(disable_help_flag = true)]
    FetchData {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Train a declared grid of variants of a pipeline's model (its [ablation] section), choose
    /// on the validation split, and write runs/<pipeline>/ablation/report.md with differences
    /// and their intervals.
    Ablate(AblateArgs),
}

fn stage_names() -> PossibleValuesParser {
    PossibleValuesParser::new(Stage::ALL.map(Stage::name))
}

#[derive(Debug, clap::Args)]
struct PipelineArgs {
    /// Pipeline file.
    #[arg(long, default_value = "pipelines/default.toml")]
    config: PathBuf,
    /// Rerun this stage and every later one; earlier stages must be complete.
    #[arg(long, value_parser = stage_names(), conflicts_with = "only")]
    from: Option<String>,
    /// Rerun only this stage; earlier stages must be complete.
    #[arg(long, value_parser = stage_names())]
    only: Option<String>,
    /// Rerun every stage even when its manifest is current.
    #[arg(long)]
    force: bool,
    /// Root of run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// When another run holds the run directory, wait for it instead of failing.
    #[arg(long)]
    wait: bool,
    /// Device of the computing stages for this run (`cpu`, `cuda`, `cuda:N`), instead of the
    /// file's `device`.
    #[arg(long)]
    device: Option<DeviceChoice>,
}

#[derive(Debug, clap::Args)]
struct AblateArgs {
    /// Pipeline file with an `[ablation]` section.
    #[arg(long)]
    config: PathBuf,
    /// Root of run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Only the variants whose name contains this (repeatable); the baseline always runs.
    #[arg(long)]
    only: Vec<String>,
}

fn pipeline(args: &PipelineArgs) -> Result<()> {
    let mut config = config::load(&args.config)?;
    if let Some(device) = args.device {
        config.device = device;
    }
    let stage = |name: &Option<String>| name.as_deref().and_then(Stage::from_name);
    runner::execute_with(
        &config,
        &Layout::new(&args.runs.join(&config.name)),
        &runner::Options {
            start: stage(&args.from).or(stage(&args.only)),
            only: args.only.is_some(),
            force: args.force,
            wait: args.wait,
            progress: &KeepPagesWhileTraining(Bars),
        },
    )?;
    Ok(())
}

// candle's many short-lived temporaries make glibc malloc fault fresh pages in on every step;
// mimalloc reuses them (../shared/notes/candle-on-cpu.md; 2.4x faster steps measured here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // SAFETY: first thing in main, no other thread yet.
    #[allow(unsafe_code)]
    unsafe {
        recall_models::tune_candle_cpu()
    };
    xtask::pages::keep_freed_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // Evaluation's and export's long loops log at the same interval as training.
    recall_eval::progress::set_interval(recall_pipeline::progress::log_interval());
    let cli = Cli::parse();
    std::env::set_current_dir(project_root())?;
    match cli.command {
        Command::Pipeline(args) => pipeline(&args),
        Command::Ci => ci::run(),
        Command::FetchData { args } => xtask::fetch_data(&args),
        Command::Ablate(args) => ablate::run(&ablate::Args {
            config: args.config,
            runs: args.runs,
            only: args.only,
            progress: &KeepPagesWhileTraining(Bars),
        }),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use recall_pipeline::layout::Stage;

    /// `cargo xtask --help` lists the stages in the order a run executes them.
    #[test]
    fn the_help_lists_the_stages_in_run_order() {
        let cli = super::Cli::command();
        let about = cli
            .find_subcommand("pipeline")
            .and_then(|c| c.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        let order: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert!(about.contains(&order.join(", ")), "{about}");
    }
}
