//! `cargo xtask ci`: the checks CI runs, in one place so a developer runs exactly the same:
//! rustfmt, the scheduled workflow against GitHub's schema, the default pipeline end to end
//! into `target/ci-runs/` (forced, so it really runs), its exports read back with pyarrow,
//! reproduced by the Python reference towers and the ONNX towers (onnxruntime), loaded into
//! FAISS and LanceDB (`python/`), the options-coverage pipeline and the daily refresh
//! (`synthetic-refresh-*`) through the reference towers, doc tests, and the test suite
//! (nextest when installed, else cargo test).
//!
//! The Python checks run in a virtual environment of their own under `target/ci-python/`,
//! created and filled from PyPI on first use: the user's own Python stays untouched and a
//! machine needs nothing but `python3` (with its standard `venv` module).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn sh(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<()> {
    let program = program.as_ref();
    tracing::info!("running {} {}", program.to_string_lossy(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
    if !status.success() {
        bail!(
            "`{} {}` failed ({status})",
            program.to_string_lossy(),
            args.join(" ")
        );
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What the Python checks import, and the PyPI packages that provide it.
const PYTHON_MODULES: &str = "import pyarrow, numpy, check_jsonschema, faiss, lancedb, onnxruntime";
const PYTHON_PACKAGES: &[&str] = &[
    "pyarrow",
    "numpy",
    "check-jsonschema",
    "faiss-cpu",
    "lancedb",
    "onnxruntime",
];

/// The interpreter of `target/ci-python/`, created with `python3 -m venv` and given
/// [`PYTHON_PACKAGES`] by pip when it lacks them (once; later runs find them installed).
fn python_env(target: &Path) -> Result<PathBuf> {
    let venv = target.join("ci-python");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        sh("python3", &["-m", "venv", &venv.to_string_lossy()]).context(
            "cannot create the checks' Python environment: CI needs python3 with its venv module \
             (Debian: apt install python3-venv)",
        )?;
    }
    let ready = Command::new(&python)
        .args(["-c", PYTHON_MODULES])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        let mut args = vec![
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ];
        args.extend_from_slice(PYTHON_PACKAGES);
        sh(&python, &args).with_context(|| {
            format!(
                "cannot install {} into {} (PyPI unreachable?)",
                PYTHON_PACKAGES.join(", "),
                venv.display()
            )
        })?;
    }
    Ok(python)
}

/// Runs a pipeline file end to end into `target/ci-runs/<name>/` (forced, so it really runs);
/// returns that run directory.
fn ci_pipeline(file: &str) -> Result<PathBuf> {
    let mut config = recall_pipeline::config::load(Path::new(file))?;
    let runs = Path::new("target/ci-runs");
    // A warm start names its earlier run as the shipped files do (`runs/<name>`): here that
    // run is under target/ci-runs/ too.
    for entry in &mut config.models {
        if let Some(init) = &mut entry.train.init_from
            && let Ok(name) = init.run.strip_prefix("runs")
        {
            init.run = runs.join(name);
        }
    }
    let run_dir = runs.join(&config.name);
    recall_pipeline::runner::execute(&config, &run_dir, None, false, true)?;
    Ok(run_dir)
}

/// The reference and ONNX towers against a run's exports (`python/check_reference.py`).
fn check_reference(python: &Path, run: &Path) -> Result<()> {
    sh(
        python,
        &[
            "python/check_reference.py",
            &run.join("export").to_string_lossy(),
            &run.join("ingest").to_string_lossy(),
        ],
    )
    .with_context(|| {
        format!(
            "the Python reference or ONNX towers do not reproduce the exports of {}",
            run.display()
        )
    })
}

pub fn run() -> Result<()> {
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    let python = python_env(Path::new("target"))?;
    // The scheduled workflow against GitHub's workflow schema. actionlint's PyPI wrapper
    // downloads its binary from GitHub at install time, which these machines cannot reach;
    // check-jsonschema ships the schema (vendor.github-workflows) and runs offline.
    let workflows: Vec<String> = std::fs::read_dir(".github/workflows")
        .context("reading .github/workflows")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut args = vec![
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.github-workflows",
    ];
    args.extend(workflows.iter().map(String::as_str));
    sh(&python, &args)?;

    // The default pipeline's exports as a Python user reads them: pyarrow, the reference
    // towers from raw inputs, FAISS and LanceDB against the exact candidates. Then the
    // options-coverage pipeline (every tower option a shipped pipeline uses) through the
    // reference towers.
    let default = ci_pipeline("pipelines/default.toml")?;
    let (export, ingest) = (default.join("export"), default.join("ingest"));
    let (export, ingest) = (export.to_string_lossy(), ingest.to_string_lossy());
    sh(
        &python,
        &["crates/recall-export/tests/read_with_pyarrow.py", &export],
    )
    .context("reading the exports with pyarrow failed")?;
    check_reference(&python, &default)?;
    sh(&python, &["python/check_vector_dbs.py", &export, &ingest])
        .context("FAISS / LanceDB do not return the exact candidates")?;
    check_reference(&python, &ci_pipeline("pipelines/options-coverage.toml")?)?;
    // The daily refresh of the README: day 1, new items joining day 1's index without
    // training (their vectors from features, also through the ONNX item tower), day 2 warm.
    for day in ["day1", "new-items", "day2"] {
        let run = ci_pipeline(&format!("pipelines/synthetic-refresh-{day}.toml"))?;
        check_reference(&python, &run)?;
        if day == "day2" {
            // Issue 34's measure read from day 2's two models, as MEASUREMENTS.md reads it:
            // fails here if history.json stops carrying what the script reads.
            let (warm, scratch) = (run.join("train/dssm-warm"), run.join("train/dssm"));
            sh(
                &python,
                &[
                    "scripts/analysis/warm_start.py",
                    &warm.to_string_lossy(),
                    &scratch.to_string_lossy(),
                ],
            )
            .context("scripts/analysis/warm_start.py cannot read day 2's training histories")?;
        }
    }
    sh("cargo", &["test", "--workspace", "--doc"])?;
    // The engine features (DataFusion and Ballista, never in the default build; `ballista`
    // turns on `datafusion`): the plans against the in-memory encode, in this process and on
    // an in-process Ballista cluster, and the default pipeline's ingest and encode through the
    // command line built with them (`cargo xtask-cluster`; xtask/tests/engine_pipeline.rs).
    // One invocation, one feature resolution: DataFusion is compiled once for all (as two
    // invocations it was compiled twice). About 22 minutes of a cold build on two cores.
    sh(
        "cargo",
        &[
            "test",
            "-p",
            "recall-engine",
            "-p",
            "xtask",
            "--features",
            "xtask/ballista",
        ],
    )?;
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
