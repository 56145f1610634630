//! The DataFusion plans against the in-memory encode, the oracle: identical vocabulary files
//! (raw values, index order, counts) on generated data, on a log built to hit the tie rule and
//! the leave-last-out edge cases, and on ML-1M when the shared copy is present.
#![cfg(feature = "datafusion")]

use std::path::Path;

use recall_core::RawIds;
use recall_core::encoded::{files, read_vocabulary};
use recall_data::generic::GenericSource;
use recall_data::{IngestConfig, SyntheticConfig, ingest};
use recall_engine::datafusion::{Options, id_vocabularies};
use recall_features::encode::{EncodeConfig, EncodeInput, encode};

fn values(ids: &RawIds) -> Vec<String> {
    (0..ids.len()).map(|i| ids.display(i)).collect()
}

/// Encodes `ingest_dir` in memory and on DataFusion with each setting, and compares the
/// vocabulary files row for row; returns how many items the largest vocabulary held.
fn same_vocabularies(ingest_dir: &Path) -> usize {
    let mut largest = 0;
    for (validation, item_min_count) in [(true, 1), (false, 1), (true, 3)] {
        let out = tempfile::tempdir().unwrap();
        let config = EncodeConfig {
            validation,
            item_min_count,
            ..EncodeConfig::default()
        };
        let input = EncodeInput::read_dir(ingest_dir).unwrap();
        encode(&input, &config).unwrap().write(out.path()).unwrap();
        let engine = id_vocabularies(
            &ingest_dir.join("interactions.parquet"),
            validation,
            item_min_count,
            Options {
                target_partitions: 2,
            },
        )
        .unwrap();
        for (name, planned) in [("user_id", &engine.users), ("item_id", &engine.items)] {
            let oracle = read_vocabulary(&out.path().join(files::vocab(name))).unwrap();
            let what = format!("{name}, validation {validation}, min count {item_min_count}");
            assert_eq!(values(&planned.raw), values(&oracle.raw), "{what}");
            assert_eq!(planned.counts, oracle.counts, "{what}");
            largest = largest.max(oracle.counts.len());
        }
    }
    largest
}

#[test]
fn generated_data_gives_the_same_vocabularies() {
    let dir = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        400, 300, 30, 5,
    )))
    .unwrap()
    .write(dir.path())
    .unwrap();
    assert!(same_vocabularies(dir.path()) > 100);
}

/// String ids with tied counts (broken by raw value in byte order: `B` before `a`), users of
/// one, two and three interactions (one: a training interaction, no test; two: no validation
/// target), an item seen only as test targets (absent), and rows out of order in the file.
#[test]
fn ties_short_users_and_string_ids_follow_the_in_memory_rules() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("log.csv");
    std::fs::write(
        &csv,
        "user_id,item_id,timestamp\n\
         u3,a,3\nu3,B,1\nu3,c,2\nu3,only-test,9\n\
         u1,a,1\n\
         u2,c,1\nu2,only-test,2\n\
         u4,c,1\nu4,a,2\nu4,B,3\nu4,d,4\nu4,d,5\nu4,only-test,6\n",
    )
    .unwrap();
    let source = GenericSource {
        interactions: csv,
        name: None,
        user_column: "user_id".into(),
        item_column: "item_id".into(),
        order_column: "timestamp".into(),
        rating_column: None,
        timestamp_column: None,
        delimiter: ',',
        users: None,
        items: None,
    };
    let ingest_dir = dir.path().join("ingest");
    ingest(&IngestConfig::Generic(source))
        .unwrap()
        .write(&ingest_dir)
        .unwrap();
    same_vocabularies(&ingest_dir);
    let engine = id_vocabularies(
        &ingest_dir.join("interactions.parquet"),
        true,
        1,
        Options::default(),
    )
    .unwrap();
    // Training: u1 a; u2 c; u3 B c (a valid, only-test test); u4 c a B d (d valid).
    assert_eq!(
        values(&engine.items.raw),
        ["\"c\"", "\"B\"", "\"a\"", "\"d\""]
    );
    assert_eq!(engine.items.counts, [3, 2, 2, 1]);
}

#[test]
fn ml_1m_gives_the_same_vocabularies() {
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
    assert_eq!(same_vocabularies(dir.path()), 6_040);
}
