//! `recall-fetch ml-1m|ml-100k [--dir DIR] [--url URL] [--sha256 HEX] [--force]`: what
//! `cargo xtask fetch-data` runs (see the library's documentation).

use anyhow::Result;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask fetch-data",
    about = "Download a MovieLens release from GroupLens into data/, verify it and convert it to the layout the shipped pipelines read"
)]
struct Cli {
    #[command(flatten)]
    args: recall_fetch::Args,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    recall_fetch::run(&Cli::parse().args)
}
