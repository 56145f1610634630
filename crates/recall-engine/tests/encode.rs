//! The DataFusion encode against the in-memory encode, the oracle: every output file the same
//! byte for byte (sequences, splits, vocabularies, side tables, `features.json`) on generated
//! data, on logs built to hit the tie rule, the leave-last-out edge cases, OOV rows, caps,
//! cold items and growth from an earlier encoding, under a memory limit small enough to
//! spill, and on ML-1M (with `pipelines/ml-1m.toml`'s settings) when the shared copy is present.
//! With the `ballista` feature every comparison runs the plans on an in-process Ballista
//! cluster too.
#![cfg(feature = "datafusion")]

use std::path::Path;

use recall_core::RawIds;
use recall_data::generic::GenericSource;
use recall_data::{IngestConfig, SyntheticConfig, ingest};
use recall_engine::EngineRun;
use recall_engine::datafusion::{Cluster, Options, encode, id_vocabularies};
use recall_features::encode::{EarlierEncoding, EncodeConfig, EncodeInput, TestTargets};

mod common;
use common::{assert_same_files, engines};

fn values(ids: &RawIds) -> Vec<String> {
    (0..ids.len()).map(|i| ids.display(i)).collect()
}

/// Encodes `ingest_dir` in memory and on each engine and checks that all write the same
/// files, byte for byte; returns DataFusion's run and the number of known items.
fn same_encoding(
    ingest_dir: &Path,
    config: &EncodeConfig,
    grow_from: Option<&Path>,
    options: &Options,
) -> (EngineRun, usize) {
    let earlier = grow_from.map(|d| EarlierEncoding::read_dir(d).unwrap());
    let mut input = EncodeInput::read_dir(ingest_dir).unwrap();
    input.grow_from = earlier.clone();
    let oracle = recall_features::encode(&input, config).unwrap();
    let a = tempfile::tempdir().unwrap();
    let written = oracle.write(a.path()).unwrap();
    let mut runs = Vec::new();
    for options in engines(options) {
        let (planned, run) = encode(ingest_dir, config, earlier.as_ref(), &options).unwrap();
        let b = tempfile::tempdir().unwrap();
        let planned_written = planned.write(b.path()).unwrap();
        let what = format!("{config:?}, {:?}", options.cluster);
        assert_same_files(&written, &planned_written, b.path(), &what);
        assert_eq!(
            run.cluster.as_deref(),
            options.cluster.as_ref().map(Cluster::name)
        );
        runs.push(run);
    }
    (runs.swap_remove(0), oracle.items.known_len())
}

/// The messages of each engine's encode failing on `ingest_dir` under `config`.
fn engine_errors(ingest_dir: &Path, config: &EncodeConfig) -> Vec<String> {
    engines(&Options::default())
        .iter()
        .map(|options| {
            encode(ingest_dir, config, None, options)
                .unwrap_err()
                .to_string()
        })
        .collect()
}

fn two_partitions() -> Options {
    Options {
        target_partitions: Some(2),
        ..Options::default()
    }
}

fn synthetic(dir: &Path, users: usize, items: usize, seed: u64) {
    ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        users, items, 30, seed,
    )))
    .unwrap()
    .write(dir)
    .unwrap();
}

#[test]
fn generated_data_gives_the_same_files_under_each_setting() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 400, 300, 5);
    let settings = [
        EncodeConfig::default(),
        EncodeConfig {
            validation: false,
            ..EncodeConfig::default()
        },
        // Items under the minimum become OOV rows in histories and targets.
        EncodeConfig {
            item_min_count: 3,
            max_len: 7,
            ..EncodeConfig::default()
        },
        EncodeConfig {
            max_examples_per_user: Some(toml::from_str("count = 4\npick = \"random\"").unwrap()),
            ..EncodeConfig::default()
        },
    ];
    for config in &settings {
        let (_, items) = same_encoding(dir.path(), config, None, &two_partitions());
        assert!(items > 100);
    }
}

/// A memory pool far smaller than the sort's input makes the sort spill, and the streamed
/// result is still the oracle's. The pool is 64 MiB: the final merge of each partition's
/// spill files cannot spill (it holds a 256 KB batch per file) and fails when the two
/// partitions' race for a fair pool left one too many files; 8 MiB failed one run in six, 32
/// MiB one in 25 (beside a training run), 64 MiB none of 40 whole runs of this file, still
/// spilling.
#[test]
fn a_spilling_sort_gives_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 40_000, 5_000, 11);
    let options = Options {
        target_partitions: Some(2),
        memory_limit: Some(64 << 20),
        spill_dir: Some(dir.path().join("spill")),
        cluster: None,
    };
    let (run, _) = same_encoding(dir.path(), &EncodeConfig::default(), None, &options);
    assert!(run.spilled_bytes > 0 && run.spill_files > 0, "{run:?}");
    assert!(run.sorted_rows > 300_000, "{run:?}");
}

/// Growing an earlier encoding (a warm start) and cold items from the side table: the final
/// vocabularies come from `recall-features` on both paths, and the sort joins them.
#[test]
fn growth_and_cold_items_give_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let (day1, day2) = (dir.path().join("day1"), dir.path().join("day2"));
    synthetic(&day1, 300, 200, 1);
    synthetic(&day2, 350, 260, 2);
    let earlier = dir.path().join("encode1");
    let config = EncodeConfig::default();
    recall_features::encode(&EncodeInput::read_dir(&day1).unwrap(), &config)
        .unwrap()
        .write(&earlier)
        .unwrap();
    same_encoding(&day2, &config, Some(&earlier), &two_partitions());
    let cold = EncodeConfig {
        cold_items: true,
        item_min_count: 4,
        ..EncodeConfig::default()
    };
    same_encoding(&day2, &cold, None, &two_partitions());
}

fn generic_log(dir: &Path, csv_text: &str) -> std::path::PathBuf {
    let csv = dir.join("log.csv");
    std::fs::write(&csv, csv_text).unwrap();
    let ingest_dir = dir.join("ingest");
    ingest(&IngestConfig::Generic(GenericSource::new(csv)))
        .unwrap()
        .write(&ingest_dir)
        .unwrap();
    ingest_dir
}

/// String ids with tied counts (broken by raw value in byte order: `B` before `a`), users of
/// one, two and three interactions (one: a training interaction, no test; two: no validation
/// target), an item seen only as test targets (OOV), a repeated item, and users whose rows
/// are out of order in the file.
#[test]
fn ties_short_users_and_string_ids_follow_the_in_memory_rules() {
    let dir = tempfile::tempdir().unwrap();
    let ingest_dir = generic_log(
        dir.path(),
        "user_id,item_id,timestamp\n\
         u3,a,3\nu3,B,1\nu3,c,2\nu3,only-test,9\n\
         u1,a,1\n\
         u2,c,1\nu2,only-test,2\n\
         u4,c,1\nu4,a,2\nu4,B,3\nu4,d,4\nu4,d,5\nu4,only-test,6\n",
    );
    for validation in [true, false] {
        let config = EncodeConfig {
            validation,
            ..EncodeConfig::default()
        };
        same_encoding(&ingest_dir, &config, None, &Options::default());
    }
    let engine = id_vocabularies(
        &ingest_dir.join("interactions.parquet"),
        true,
        1,
        &Options::default(),
    )
    .unwrap();
    // Training: u1 a; u2 c; u3 B c (a valid, only-test test); u4 c a B d (d valid).
    assert_eq!(
        values(&engine.items.raw),
        ["\"c\"", "\"B\"", "\"a\"", "\"d\""]
    );
    assert_eq!(engine.items.counts, [3, 2, 2, 1]);
}

/// Every timestamp of ingest's `interactions.parquet` in `dir`, ascending.
fn sorted_times(dir: &Path) -> Vec<i64> {
    let table = recall_core::Table::read(&dir.join("interactions.parquet")).unwrap();
    let mut times: Vec<i64> = table
        .nullable_ints("timestamp")
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        times.len(),
        table.num_rows(),
        "synthetic rows all have a time"
    );
    times.sort_unstable();
    times
}

/// `encode.before` (the data as it stood at a refresh's cut): the same files, the rows after
/// the cut counted the same; a cut before the data, or rows without a timestamp, refused with
/// the key.
#[test]
fn a_refresh_cut_gives_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 400, 300, 9);
    let times = sorted_times(dir.path());
    let cut = times[times.len() / 2];
    let config = EncodeConfig {
        before: Some(cut),
        ..EncodeConfig::default()
    };
    same_encoding(dir.path(), &config, None, &two_partitions());
    let early = EncodeConfig {
        before: Some(times[0]),
        ..EncodeConfig::default()
    };
    for e in engine_errors(dir.path(), &early) {
        assert!(
            e.contains("encode.before") && e.contains("earlier than the data"),
            "{e}"
        );
    }
}

/// `encode.test_from` (a time split: each user's first interaction at or after the cut is the
/// test target): the same files and counts as in memory, alone, without validation, and under
/// a refresh cut (`before`) as well.
#[test]
fn a_time_split_gives_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 400, 300, 13);
    let times = sorted_times(dir.path());
    let at = |q: f64| times[(times.len() as f64 * q) as usize];
    let settings = [
        EncodeConfig {
            test_from: Some(at(0.6)),
            ..EncodeConfig::default()
        },
        EncodeConfig {
            test_from: Some(at(0.3)),
            validation: false,
            ..EncodeConfig::default()
        },
        EncodeConfig {
            test_from: Some(at(0.5)),
            before: Some(at(0.8)),
            ..EncodeConfig::default()
        },
        // Every row after the cut a target (`later_targets.parquet` byte for byte too).
        EncodeConfig {
            test_from: Some(at(0.5)),
            test_targets: TestTargets::AfterCut,
            ..EncodeConfig::default()
        },
        EncodeConfig {
            test_from: Some(at(0.4)),
            before: Some(at(0.9)),
            test_targets: TestTargets::AfterCut,
            cold_items: true,
            ..EncodeConfig::default()
        },
    ];
    for config in &settings {
        same_encoding(dir.path(), config, None, &two_partitions());
        let (planned, _) = encode(dir.path(), config, None, &two_partitions()).unwrap();
        let split = planned.manifest.stats.time_split.clone().unwrap();
        // The split has each kind of user to get right.
        assert!(
            split.users_only_after > 0 && split.users_only_before > 0 && split.rows_left_out > 0,
            "{split:?}"
        );
        let after_cut = config.test_targets == TestTargets::AfterCut;
        assert_eq!(
            split.later_targets.is_some_and(|n| n > 0),
            after_cut,
            "{split:?}"
        );
    }
}

/// Users whose first row is after the cut (left out), with no row after it (no test target:
/// the last row is the validation target), cut at their second row, and string ids; a time cut
/// on rows without a timestamp is refused by its key.
#[test]
fn time_split_edge_cases_follow_the_in_memory_rules() {
    let dir = tempfile::tempdir().unwrap();
    let ingest_dir = generic_log(
        dir.path(),
        "user_id,item_id,timestamp\n\
         late,a,50\nlate,b,60\n\
         early,a,1\nearly,b,2\nearly,c,3\n\
         one,c,4\n\
         cut2,a,5\ncut2,b,20\ncut2,c,30\n\
         mid,b,6\nmid,c,7\nmid,d,8\nmid,a,21\nmid,e,40\n",
    );
    for validation in [true, false] {
        for test_targets in [TestTargets::First, TestTargets::AfterCut] {
            let config = EncodeConfig {
                test_from: Some(10),
                validation,
                test_targets,
                ..EncodeConfig::default()
            };
            same_encoding(&ingest_dir, &config, None, &Options::default());
        }
    }
    // ML-1M's copy has rows like these: no timestamp, order from `seq`.
    use arrow_array::{Int32Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let untimed = dir.path().join("untimed");
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Int64Array::from(vec![1, 1, 2])) as _),
        ("item_id", Arc::new(Int64Array::from(vec![5, 6, 5])) as _),
        (
            "timestamp",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as _,
        ),
        ("seq", Arc::new(Int32Array::from(vec![0, 1, 0])) as _),
    ])
    .unwrap();
    recall_core::write::write_parquet(&untimed.join("interactions.parquet"), &batch, &[]).unwrap();
    for config in [
        EncodeConfig {
            test_from: Some(2),
            ..EncodeConfig::default()
        },
        EncodeConfig {
            before: Some(2),
            ..EncodeConfig::default()
        },
    ] {
        let key = if config.test_from.is_some() {
            "encode.test_from"
        } else {
            "encode.before"
        };
        for e in engine_errors(&untimed, &config) {
            assert!(e.contains(key) && e.contains("timestamp"), "{e}");
        }
    }
}

#[test]
fn a_missing_ingest_output_names_the_file_and_the_stage() {
    let dir = tempfile::tempdir().unwrap();
    for e in engine_errors(dir.path(), &EncodeConfig::default()) {
        assert!(
            e.contains("interactions.parquet") && e.contains("run the ingest stage"),
            "{e}"
        );
    }
}

/// ML-1M with `pipelines/ml-1m.toml`'s `[encode]` (side features included).
#[test]
fn ml_1m_gives_the_same_files() {
    let Some(ml_1m) = recall_core::testing::movielens_dir("ml-1m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::Generic(GenericSource::ml_1m_parquet_layout(
        &ml_1m,
    )))
    .unwrap()
    .write(dir.path())
    .unwrap();
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/ml-1m.toml");
    let text: toml::Table = std::fs::read_to_string(pipeline).unwrap().parse().unwrap();
    let config: EncodeConfig = text["encode"].clone().try_into().unwrap();
    assert!(!config.user_features.is_empty());
    let (run, items) = same_encoding(dir.path(), &config, None, &two_partitions());
    assert_eq!(run.sorted_rows, 1_000_209);
    assert!(items > 3_000);
}

/// A truncated `interactions.parquet` and ids of a type no vocabulary takes fail with the
/// file (and the column) named, not a bare engine error.
#[test]
fn bad_ingest_outputs_name_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 50, 40, 3);
    let path = dir.path().join("interactions.parquet");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    for e in engine_errors(dir.path(), &EncodeConfig::default()) {
        assert!(
            e.contains("interactions.parquet") && e.contains("DataFusion"),
            "{e}"
        );
    }

    use arrow_array::{Float64Array, Int32Array, Int64Array, RecordBatch};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Float64Array::from(vec![1.0, 1.0])) as _),
        ("item_id", Arc::new(Int64Array::from(vec![5, 6])) as _),
        ("seq", Arc::new(Int32Array::from(vec![0, 1])) as _),
    ])
    .unwrap();
    recall_core::write::write_parquet(&path, &batch, &[]).unwrap();
    for e in engine_errors(dir.path(), &EncodeConfig::default()) {
        assert!(
            e.contains("interactions.parquet") && e.contains("`user_id`") && e.contains("Float64"),
            "{e}"
        );
    }
}

/// A scheduler nobody runs: the failure names the file, the step and the cluster.
#[cfg(feature = "ballista")]
#[test]
fn an_unreachable_scheduler_names_the_file_and_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    synthetic(dir.path(), 50, 40, 3);
    let options = Options {
        cluster: Some(Cluster::Scheduler("df://127.0.0.1:9".into())),
        ..two_partitions()
    };
    let e = encode(dir.path(), &EncodeConfig::default(), None, &options)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("interactions.parquet") && e.contains("df://127.0.0.1:9"),
        "{e}"
    );
}
