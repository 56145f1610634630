//! Integration tests of the encode stage: ML-1M counts, leakage, round trips, bad input.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use recall_core::{Table, testing::movielens_dir};
use recall_data::generic::GenericSource;
use recall_data::{IngestConfig, SyntheticConfig, ingest};
use recall_features::Vocabulary;
use recall_features::encode::{EncodeConfig, EncodeInput, FeatureKind, FeatureSpec, encode, files};

fn ml_1m_input() -> Option<EncodeInput> {
    let dir = movielens_dir("ml-1m")?;
    let source = GenericSource::ml_1m_parquet_layout(&dir);
    let out = tempfile::tempdir().unwrap().keep();
    ingest(&IngestConfig::Generic(source))
        .unwrap()
        .write(&out)
        .unwrap();
    Some(EncodeInput::read_dir(&out).unwrap())
}

fn spec(column: &str, kind: FeatureKind) -> FeatureSpec {
    FeatureSpec {
        column: column.into(),
        kind,
        min_count: 1,
        buckets: None,
        boundaries: None,
    }
}

/// torch-rechub's convention: n interactions give n-2 training examples and 1 test row.
#[test]
fn ml_1m_gives_988129_training_examples_and_6040_test_rows() {
    let Some(input) = ml_1m_input() else { return };
    let config = EncodeConfig {
        validation: false,
        user_features: vec![
            spec("gender", FeatureKind::Categorical),
            spec("age", FeatureKind::Categorical),
        ],
        item_features: vec![spec("genres", FeatureKind::Bag)],
        ..EncodeConfig::default()
    };
    let e = encode(&input, &config).unwrap();
    assert_eq!(e.train.len(), 988_129);
    assert_eq!(e.test.len(), 6_040);
    assert!(e.valid.is_empty());
    // Every target has at least one item of history, at most 50.
    assert!((0..e.train.len()).all(|i| (1..=50).contains(&e.train.history_of(i).len())));
    // 2 gender values + 2 reserved; 7 age codes + 2; 18 genres + 2.
    let sizes: Vec<usize> = e
        .manifest
        .user_features
        .iter()
        .map(|f| f.table_size)
        .collect();
    assert_eq!(sizes, vec![4, 9]);
    assert_eq!(e.manifest.item_features[0].table_size, 20);
    // Half the shared copy has no timestamps: those examples have a null age, bucket 0.
    let ages = &e.ages.as_ref().unwrap()[0];
    let missing = ages.iter().filter(|a| a.is_none()).count();
    assert_eq!(missing, e.manifest.stats.train_rows_without_timestamp);
    assert!(missing > 400_000 && missing < 600_000, "{missing}");

    let with_validation = encode(&input, &EncodeConfig::default()).unwrap();
    assert_eq!(with_validation.train.len(), 988_129 - 6_040);
    assert_eq!(with_validation.valid.len(), 6_040);
    assert_eq!(with_validation.test.len(), 6_040);
}

fn synthetic_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        300, 200, 25, 3,
    )))
    .unwrap()
    .write(dir.path())
    .unwrap();
    dir
}

/// Leakage check on the written files: every history is exactly the user's items before the
/// target, and every example age comes from the target's own (past) timestamp; with and
/// without a per-user cap on training examples.
#[test]
fn written_histories_hold_only_events_before_their_target() {
    use recall_features::split::{CapPick, ExampleCap};
    for cap in [
        None,
        Some(ExampleCap {
            count: 5,
            pick: CapPick::Recent,
            seed: 0,
        }),
        Some(ExampleCap {
            count: 5,
            pick: CapPick::Random,
            seed: 3,
        }),
    ] {
        check_no_leakage(cap);
    }
}

fn check_no_leakage(cap: Option<recall_features::split::ExampleCap>) {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let config = EncodeConfig {
        max_len: 8,
        max_examples_per_user: cap,
        ..EncodeConfig::default()
    };
    let encoded = encode(&input, &config).unwrap();
    if let Some(cap) = cap {
        let mut per_user = std::collections::HashMap::new();
        for &u in &encoded.train.user {
            *per_user.entry(u).or_insert(0usize) += 1;
        }
        assert!(per_user.values().all(|&n| n <= cap.count), "{cap:?}");
        assert_eq!(encoded.manifest.stats.max_examples_per_user, Some(cap));
    }
    let out = dir.path().join("encoded");
    encoded.write(&out).unwrap();

    let interactions = Table::read(&dir.path().join("interactions.parquet")).unwrap();
    let users = interactions.ints("user_id").unwrap();
    let items = interactions.ints("item_id").unwrap();
    let times = interactions.nullable_ints("timestamp").unwrap();
    let user_vocab = Vocabulary::load(&out.join(files::vocab("user_id"))).unwrap();
    let item_vocab = Vocabulary::load(&out.join(files::vocab("item_id"))).unwrap();
    let (Vocabulary::Int(uv), Vocabulary::Int(iv)) = (&user_vocab, &item_vocab) else {
        panic!("integer vocabularies expected")
    };
    for split in [files::TRAIN, files::VALID, files::TEST] {
        let t = Table::read(&out.join(split)).unwrap();
        let user_idx = t.ints("user_idx").unwrap();
        let target_seq = t.ints("target_seq").unwrap();
        let (offsets, history) = t.int_lists("history").unwrap();
        let ts = t.nullable_ints("timestamp").unwrap();
        for row in 0..t.num_rows() {
            let user = *uv.raw(user_idx[row] as i32).unwrap();
            let first = users.iter().position(|&u| u == user).unwrap();
            let p = first + target_seq[row] as usize;
            let h = &history[offsets[row]..offsets[row + 1]];
            let expected: Vec<i32> = items[p - h.len()..p].iter().map(|i| iv.get(i)).collect();
            assert_eq!(h, expected.as_slice(), "{split} row {row}");
            assert!(
                h.len() == 8 || p - h.len() == first,
                "history must be the newest 8"
            );
            assert_eq!(ts[row], times[p]);
            assert!(times[p - h.len()..p].iter().all(|&t0| t0 <= ts[row]));
        }
    }
    // Training ages are measured back from the end of the training window, never negative.
    let train = Table::read(&out.join(files::TRAIN)).unwrap();
    let ages = train.nullable_floats("example_age_days").unwrap();
    assert!(ages.iter().all(|a| a.is_some_and(|a| a >= 0.0)));
    let test = Table::read(&out.join(files::TEST)).unwrap();
    assert!(
        test.nullable_floats("example_age_days")
            .unwrap()
            .iter()
            .all(|a| *a == Some(0.0))
    );
}

#[test]
fn encoded_side_tables_follow_vocabulary_order() {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let config = EncodeConfig {
        user_features: vec![FeatureSpec {
            boundaries: Some(vec![18.0, 25.0, 35.0, 45.0, 50.0, 56.0]),
            ..spec("age", FeatureKind::Boundaries)
        }],
        item_features: vec![spec("genres", FeatureKind::Bag)],
        ..EncodeConfig::default()
    };
    let e = encode(&input, &config).unwrap();
    let users = Table::from_batch("users", e.user_table.clone());
    let idx = users.ints("user_idx").unwrap();
    assert_eq!(idx, (2..2 + idx.len() as i64).collect::<Vec<_>>());
    // The ages are ML-1M codes 1..56: code 1 -> bucket 1, code 56 -> bucket 7.
    let ages = users.ints("age_idx").unwrap();
    assert!(ages.iter().all(|&a| (1..=7).contains(&a)));
    let items = Table::from_batch("items", e.item_table.clone());
    let (offsets, genres) = items.int_lists("genres_idx").unwrap();
    assert_eq!(offsets.len(), items.num_rows() + 1);
    assert!(genres.iter().all(|&g| g >= 2));
}

fn interactions_table(dir: &Path, users: Vec<i64>, items: Vec<i64>, seq: Vec<i64>) -> EncodeInput {
    let path = dir.join("interactions.parquet");
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Int64Array::from(users)) as _),
        ("item_id", Arc::new(Int64Array::from(items)) as _),
        ("seq", Arc::new(Int64Array::from(seq)) as _),
    ])
    .unwrap();
    recall_core::write::write_parquet(&path, &batch, &[]).unwrap();
    EncodeInput::read_dir(dir).unwrap()
}

#[test]
fn a_user_with_a_single_interaction_gives_no_rows_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(
        dir.path(),
        vec![1, 1, 1, 2],
        vec![10, 11, 12, 10],
        vec![0, 1, 2, 0],
    );
    let e = encode(
        &input,
        &EncodeConfig {
            validation: false,
            ..EncodeConfig::default()
        },
    )
    .unwrap();
    assert_eq!(e.train.len(), 1);
    assert_eq!(e.test.len(), 1);
    assert_eq!(e.manifest.stats.users_without_test, 1);
    // No timestamps at all: example age is off rather than invented.
    assert!(e.manifest.example_age.is_none());
}

#[test]
fn rows_out_of_order_are_sorted_by_user_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(
        dir.path(),
        vec![2, 1, 1, 2, 1],
        vec![20, 12, 10, 21, 11],
        vec![0, 2, 0, 1, 1],
    );
    let e = encode(
        &input,
        &EncodeConfig {
            validation: false,
            ..EncodeConfig::default()
        },
    )
    .unwrap();
    let Vocabulary::Int(items) = &e.items else {
        panic!()
    };
    let raw = |i: &i32| *items.raw(*i).unwrap();
    // Users come in order of first appearance (2, then 1), each in seq order.
    assert_eq!(
        e.test.history_of(0).iter().map(raw).collect::<Vec<_>>(),
        vec![20]
    );
    assert_eq!(
        e.test.history_of(1).iter().map(raw).collect::<Vec<_>>(),
        vec![10, 11]
    );
    // Both test targets (21 and 12) occur only as held-out targets, so they are out of
    // vocabulary: fitted on training data only.
    assert_eq!(e.test.target, vec![1, 1]);
    assert_eq!(e.manifest.stats.test_targets_oov, 2);
}

#[test]
fn a_repeated_seq_for_one_user_is_an_error_naming_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(dir.path(), vec![1, 1], vec![10, 11], vec![0, 0]);
    let msg = encode(&input, &EncodeConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("user 1 has two rows with seq 0"), "{msg}");
}

#[test]
fn features_without_a_side_table_are_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(dir.path(), vec![1, 1], vec![10, 11], vec![0, 1]);
    let config = EncodeConfig {
        user_features: vec![spec("gender", FeatureKind::Categorical)],
        ..EncodeConfig::default()
    };
    let msg = encode(&input, &config).unwrap_err().to_string();
    assert!(
        msg.contains("encode.user_features (gender)") && msg.contains("no user table"),
        "{msg}"
    );
}

#[test]
fn an_unknown_side_column_is_named() {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let config = EncodeConfig {
        user_features: vec![spec("zip_code", FeatureKind::Categorical)],
        ..EncodeConfig::default()
    };
    let msg = encode(&input, &config).unwrap_err().to_string();
    assert!(
        msg.contains("users.parquet has no column `zip_code`"),
        "{msg}"
    );
}

#[test]
fn quantile_features_without_buckets_are_rejected() {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let config = EncodeConfig {
        user_features: vec![spec("age", FeatureKind::Quantile)],
        ..EncodeConfig::default()
    };
    let msg = encode(&input, &config).unwrap_err().to_string();
    assert!(msg.contains("needs `buckets` >= 2"), "{msg}");
}

#[test]
fn an_empty_interactions_table_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(dir.path(), vec![], vec![], vec![]);
    let msg = encode(&input, &EncodeConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("interactions.parquet has no rows"), "{msg}");
}
