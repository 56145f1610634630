//! The pipeline path of the engine features, through the command line a user runs (`cargo
//! xtask-engine pipeline`, the binary built with `datafusion`; `cargo xtask-cluster pipeline`
//! with `ballista`): the default pipeline's ingest and encode in memory, then again with
//! `[data] engine = "datafusion"` (and `"ballista"`, an in-process cluster), whose encode
//! files must be the in-memory run's byte for byte.
//!
//! CI runs it in the same `cargo test` invocation as recall-engine's own tests (`-p
//! recall-engine -p xtask --features xtask/ballista`): one feature resolution, so DataFusion
//! and the arrow stack under it are compiled once for both (MEASUREMENTS.md).
#![cfg(feature = "datafusion")]

use std::path::Path;
use std::process::Command;

/// `xtask pipeline --config <config> --runs <runs> --only <stage>`, which must succeed.
fn stage(config: &Path, runs: &Path, only: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--config"])
        .arg(config)
        .arg("--runs")
        .arg(runs)
        .args(["--only", only])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {only} failed: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The engines this build has, as `[data] engine` names them.
fn engines() -> Vec<&'static str> {
    let mut all = vec!["datafusion"];
    if cfg!(feature = "ballista") {
        all.push("ballista");
    }
    all
}

#[test]
fn the_default_pipeline_encodes_the_same_files_on_each_engine() {
    let dir = tempfile::tempdir().unwrap();
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/default.toml");
    let text = std::fs::read_to_string(&default).unwrap();
    assert!(text.contains("name = \"default\""), "{text}");
    let runs = dir.path().join("runs");
    stage(&default, &runs, "ingest");
    stage(&default, &runs, "encode");
    let expected = runs.join("default/encode");
    for engine in engines() {
        let name = format!("default-{engine}");
        let engine_text = text.replacen("name = \"default\"", &format!("name = \"{name}\""), 1)
            + &format!("\n[data]\nengine = \"{engine}\"\ntarget_partitions = 2\n");
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, engine_text).unwrap();
        stage(&config, &runs, "ingest");
        stage(&config, &runs, "encode");
        let planned = runs.join(&name).join("encode");
        let mut compared = 0;
        for entry in std::fs::read_dir(&expected).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap();
            if file == recall_pipeline::manifest::MANIFEST_FILE {
                continue;
            }
            let other = planned.join(file);
            assert!(
                std::fs::read(&path).unwrap() == std::fs::read(&other).unwrap(),
                "{} differs from {}: the {engine} encode must write the in-memory encode's files",
                other.display(),
                path.display()
            );
            compared += 1;
        }
        // The encode contract's files: the splits, sequences, items, users and vocabularies.
        assert!(compared >= 6, "only {compared} files compared");
        let report =
            std::fs::read_to_string(planned.join(recall_pipeline::manifest::MANIFEST_FILE))
                .unwrap();
        assert!(report.contains(&format!("\"{engine}\"")), "{report}");
    }
}
