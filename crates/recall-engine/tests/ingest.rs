//! Generic-log ingest on DataFusion against the in-memory ingest, the oracle: the same
//! `interactions.parquet` (and side tables) byte for byte and the same counts, on raw logs built
//! to hit the ordering rules (rows out of order, ties in source order, exact duplicates dropped,
//! rewatches kept), string ids, a directory of part files, a separate order column with
//! nullable timestamps, a spilling sort, and ML-1M when the shared copy is present; bad logs
//! fail with the file and column named. With the `ballista` feature every comparison runs the
//! plans on an in-process Ballista cluster too.
#![cfg(feature = "datafusion")]

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use recall_data::{GenericSource, IngestConfig, SyntheticConfig, ingest};
use recall_engine::datafusion::Options;
use recall_engine::datafusion::ingest::{ingest_generic, plans};

mod common;

/// Ingests `source` in memory and on each engine this build has (DataFusion in this process,
/// and with the `ballista` feature an in-process Ballista cluster) and checks all write the
/// same files, byte for byte, with the same counts; returns DataFusion's sorted rows and
/// spilled bytes.
fn same_ingest(source: &GenericSource, options: &Options) -> (u64, u64) {
    let a = tempfile::tempdir().unwrap();
    let dataset = ingest(&IngestConfig::Generic(source.clone())).unwrap();
    let written = dataset.write(a.path()).unwrap();
    let mut runs = Vec::new();
    for options in &common::engines(options) {
        let b = tempfile::tempdir().unwrap();
        let (name, planned, stats, run) = ingest_generic(source, b.path(), options).unwrap();
        assert_eq!(name, dataset.name);
        assert_eq!(stats, dataset.stats);
        let what = format!("{source:?}, {:?}", options.cluster);
        common::assert_same_files(&written, &planned, b.path(), &what);
        runs.push(run);
    }
    (runs[0].sorted_rows, runs[0].spilled_bytes)
}

fn write(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    recall_core::write::write_parquet(path, &batch, &[]).unwrap();
}

/// A raw log made from the synthetic generator's events: rows in a scrambled order, times on a
/// coarse grid (so a user has ties of several items, kept in file order), and every 20th row
/// written twice (an exact duplicate) or again an hour later (a rewatch).
struct RawLog {
    users: Vec<i64>,
    items: Vec<i64>,
    times: Vec<i64>,
    ratings: Vec<f32>,
}

fn raw_log(users: usize, items: usize, seed: u64) -> RawLog {
    let dataset = ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        users, items, 30, seed,
    )))
    .unwrap();
    let batch = dataset.interactions.to_batch().unwrap();
    let table = recall_core::Table::from_batch(Path::new("synthetic"), batch);
    let (u, i) = (
        table.ints("user_id").unwrap(),
        table.ints("item_id").unwrap(),
    );
    let t = table.ints("timestamp").unwrap();
    let n = u.len();
    let mut log = RawLog {
        users: Vec::new(),
        items: Vec::new(),
        times: Vec::new(),
        ratings: Vec::new(),
    };
    for k in 0..n {
        let r = (k * 7919) % n;
        let copies = match r % 20 {
            0 => vec![0, 0],
            1 => vec![0, 3600],
            _ => vec![0],
        };
        for shift in copies {
            log.users.push(u[r]);
            log.items.push(i[r]);
            log.times.push(t[r] / 86_400 * 86_400 + shift);
            log.ratings.push((r % 5) as f32 + 0.5);
        }
    }
    log
}

impl RawLog {
    fn columns(
        &self,
        rows: std::ops::Range<usize>,
        strings: bool,
    ) -> Vec<(&'static str, ArrayRef)> {
        let ids = |v: &[i64], prefix: &str| -> ArrayRef {
            if strings {
                Arc::new(StringArray::from_iter_values(
                    v[rows.clone()].iter().map(|x| format!("{prefix}{x}")),
                ))
            } else {
                Arc::new(Int64Array::from(v[rows.clone()].to_vec()))
            }
        };
        vec![
            ("user_id", ids(&self.users, "u")),
            ("item_id", ids(&self.items, "i")),
            (
                "timestamp",
                Arc::new(Int64Array::from(self.times[rows.clone()].to_vec())),
            ),
            (
                "rating",
                Arc::new(Float32Array::from(self.ratings[rows.clone()].to_vec())),
            ),
        ]
    }
}

fn two_partitions() -> Options {
    Options {
        target_partitions: Some(2),
        ..Options::default()
    }
}

#[test]
fn raw_logs_give_the_in_memory_files() {
    let dir = tempfile::tempdir().unwrap();
    let log = raw_log(300, 200, 5);
    let n = log.users.len();
    for strings in [false, true] {
        let file = dir.path().join(format!("log-{strings}.parquet"));
        write(&file, log.columns(0..n, strings));
        let mut source = GenericSource::new(&file);
        assert!(plans(&source).unwrap());
        same_ingest(&source, &two_partitions());
        source.rating_column = Some(String::from("rating"));
        let (sorted, _) = same_ingest(&source, &two_partitions());
        assert_eq!(sorted as usize, n);
    }
    // A directory of part files, read in name order (ties across parts keep that order).
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    for (p, rows) in [(0, 0..n / 3), (1, n / 3..n / 2), (2, n / 2..n)] {
        write(
            &parts.join(format!("part-{p:05}.parquet")),
            log.columns(rows, false),
        );
    }
    std::fs::write(parts.join("_SUCCESS"), "").unwrap();
    same_ingest(&GenericSource::new(&parts), &two_partitions());
}

/// The ML-1M layout: the order column is a sequence number, and a separate timestamp column
/// has nulls (copied through as they are).
#[test]
fn a_separate_order_column_and_nullable_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.parquet");
    write(
        &file,
        vec![
            (
                "uid",
                Arc::new(Int64Array::from(vec![3, 1, 3, 1, 3, 2])) as ArrayRef,
            ),
            (
                "movie",
                Arc::new(Int64Array::from(vec![7, 8, 9, 7, 7, 8])) as _,
            ),
            (
                "step",
                Arc::new(Int64Array::from(vec![2, 0, 1, 1, 2, 0])) as _,
            ),
            (
                "when",
                Arc::new(Int64Array::from(vec![
                    Some(5),
                    None,
                    None,
                    Some(2),
                    Some(5),
                    None,
                ])) as _,
            ),
            (
                "stars",
                Arc::new(Float64Array::from(vec![4.0, 3.5, 1.0, 2.0, 4.0, 5.0])) as _,
            ),
        ],
    );
    let source = GenericSource {
        user_column: String::from("uid"),
        item_column: String::from("movie"),
        order_column: String::from("step"),
        timestamp_column: Some(String::from("when")),
        rating_column: Some(String::from("stars")),
        ..GenericSource::new(&file)
    };
    same_ingest(&source, &Options::default());
}

/// Under a pool far smaller than the log the sort spills, and the file is still the oracle's.
#[test]
fn a_spilling_sort_gives_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = raw_log(30_000, 5_000, 11);
    let file = dir.path().join("log.parquet");
    write(&file, log.columns(0..log.users.len(), false));
    let options = Options {
        target_partitions: Some(2),
        memory_limit: Some(64 << 20),
        spill_dir: Some(dir.path().join("spill")),
        cluster: None,
    };
    let (sorted, spilled) = same_ingest(&GenericSource::new(&file), &options);
    assert!(
        sorted > 800_000 && spilled > 0,
        "{sorted} rows, {spilled} bytes spilled"
    );
}

#[test]
fn ml_1m_gives_the_same_files() {
    let Some(ml_1m) = recall_core::testing::movielens_dir("ml-1m") else {
        return;
    };
    let (sorted, _) = same_ingest(
        &GenericSource::ml_1m_parquet_layout(&ml_1m),
        &two_partitions(),
    );
    assert_eq!(sorted, 1_000_209);
}

/// A null id, ids of a type no vocabulary takes, a missing column, part files whose id types
/// differ and an empty log each name the file and column; a CSV log is left to the in-memory
/// reader.
#[test]
fn bad_logs_name_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.parquet");
    // The messages of each engine's ingest failing on `source`.
    let errors = |source: &GenericSource| -> Vec<String> {
        common::engines(&Options::default())
            .iter()
            .map(|options| {
                ingest_generic(source, &dir.path().join("out"), options)
                    .unwrap_err()
                    .to_string()
            })
            .collect()
    };
    let ints = |v: Vec<Option<i64>>| Arc::new(Int64Array::from(v)) as ArrayRef;
    write(
        &file,
        vec![
            ("user_id", ints(vec![Some(1), Some(2), None, None])),
            ("item_id", ints(vec![Some(5); 4])),
            ("timestamp", ints(vec![Some(1); 4])),
        ],
    );
    for e in errors(&GenericSource::new(&file)) {
        assert!(
            e.contains("log.parquet")
                && e.contains("`user_id`")
                && e.contains("2 null")
                && e.contains("row 2"),
            "{e}"
        );
    }

    write(
        &file,
        vec![
            (
                "user_id",
                Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
            ),
            ("item_id", ints(vec![Some(5)])),
            ("timestamp", ints(vec![Some(1)])),
        ],
    );
    for e in errors(&GenericSource::new(&file)) {
        assert!(
            e.contains("log.parquet") && e.contains("`user_id`") && e.contains("Float64"),
            "{e}"
        );
    }

    write(
        &file,
        vec![
            ("user_id", ints(vec![Some(1)])),
            ("item_id", ints(vec![Some(5)])),
            ("timestamp", ints(vec![Some(1)])),
        ],
    );
    for e in errors(&GenericSource {
        order_column: String::from("time"),
        ..GenericSource::new(&file)
    }) {
        assert!(
            e.contains("log.parquet") && e.contains("`time`") && e.contains("timestamp"),
            "{e}"
        );
    }

    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).unwrap();
    let strings = Arc::new(StringArray::from(vec!["a"])) as ArrayRef;
    write(
        &parts.join("part-0.parquet"),
        vec![
            ("user_id", ints(vec![Some(1)])),
            ("item_id", ints(vec![Some(5)])),
            ("timestamp", ints(vec![Some(1)])),
        ],
    );
    write(
        &parts.join("part-1.parquet"),
        vec![
            ("user_id", strings),
            ("item_id", ints(vec![Some(5)])),
            ("timestamp", ints(vec![Some(1)])),
        ],
    );
    for e in errors(&GenericSource::new(&parts)) {
        assert!(
            e.contains("part-1.parquet") && e.contains("string ids"),
            "{e}"
        );
    }

    write(
        &file,
        vec![
            ("user_id", ints(vec![])),
            ("item_id", ints(vec![])),
            ("timestamp", ints(vec![])),
        ],
    );
    for e in errors(&GenericSource::new(&file)) {
        assert!(
            e.contains("log.parquet") && e.contains("no interactions"),
            "{e}"
        );
    }

    let csv = dir.path().join("log.csv");
    std::fs::write(&csv, "user_id,item_id,timestamp\n1,5,1\n").unwrap();
    assert!(!plans(&GenericSource::new(&csv)).unwrap());
    for e in errors(&GenericSource::new(&csv)) {
        assert!(e.contains("log.csv") && e.contains("in memory"), "{e}");
    }
}
