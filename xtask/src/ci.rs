//! `cargo xtask ci`: the checks CI runs, in one place so a developer runs exactly the same:
//! rustfmt, the default pipeline end to end into `target/ci-runs/` (forced, so it really
//! runs), its exports read back with pyarrow, doc tests, and the test suite (nextest when installed, else cargo test).

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

fn sh(program: &str, args: &[&str]) -> Result<()> {
    tracing::info!("running {program} {}", args.join(" "));
    let status = Command::new(program).args(args).status()?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn run() -> Result<()> {
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    let config = crate::config::load(Path::new("pipelines/default.toml"))?;
    let run_dir = Path::new("target/ci-runs").join(&config.name);
    crate::pipeline::execute(&config, &run_dir, None, false, true)?;
    // The exports as a Python user reads them (pyarrow + numpy, installed by .ci/run).
    let export_dir = run_dir.join("export");
    sh(
        "python3",
        &[
            "crates/recall-export/tests/read_with_pyarrow.py",
            &export_dir.to_string_lossy(),
        ],
    )
    .map_err(|e| e.context("reading the exports with pyarrow failed (needs `python3 -m pip install pyarrow numpy`)"))?;
    sh("cargo", &["test", "--workspace", "--doc"])?;
    // The test runner goes last, so its summary closes the output.
    if has_nextest() {
        sh(
            "cargo",
            &["nextest", "run", "--workspace", "--no-fail-fast"],
        )
    } else {
        sh(
            "cargo",
            &[
                "test",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ],
        )
    }
}
