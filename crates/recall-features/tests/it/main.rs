//! Integration tests of the encode stage: ML-1M counts, leakage, round trips, bad input.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use recall_core::encoded::{FeatureManifest, Sequences, SplitRows};
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
        name: None,
        first_of_list: false,
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
    let history = |r: usize| {
        e.sequences
            .history(e.train.user[r], e.train.position[r], 50)
    };
    assert!((0..e.train.len()).all(|r| (1..=50).contains(&history(r).len())));
    // Each user's sequence is written once: 1,000,209 positions, not a history per example.
    assert_eq!(e.sequences.total_len(), 1_000_209);
    // 2 gender values + 2 reserved; 7 age codes + 2; 18 genres + 2.
    let sizes: Vec<usize> = e
        .manifest
        .user_features
        .iter()
        .map(|f| f.table_size)
        .collect();
    assert_eq!(sizes, vec![4, 9]);
    assert_eq!(e.manifest.item_features[0].table_size, 20);
    // Half the shared copy has no timestamps: those examples have an unknown age, bucket 0.
    let missing = e.train.age_bucket.iter().filter(|&&b| b == 0).count();
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
    let manifest = FeatureManifest::read(&out).unwrap();
    let sequences = Sequences::read(
        &out.join(files::SEQUENCES),
        manifest.user_table_size,
        manifest.item_table_size,
        true,
    )
    .unwrap();
    let boundaries = manifest
        .example_age
        .as_ref()
        .unwrap()
        .boundaries
        .clone()
        .unwrap();
    let end = manifest.train_window_end.unwrap();
    for split in [files::TRAIN, files::VALID, files::TEST] {
        let rows = SplitRows::read(&out.join(split), &sequences).unwrap();
        for row in 0..rows.len() {
            let (u, position) = (rows.user[row], rows.position[row]);
            let user = *uv.raw(u as i32).unwrap();
            let first = users.iter().position(|&x| x == user).unwrap();
            let p = first + position as usize;
            let h = sequences.history(u, position, 8);
            let expected: Vec<u32> = items[p - h.len()..p]
                .iter()
                .map(|i| iv.get(i) as u32)
                .collect();
            assert_eq!(h, expected.as_slice(), "{split} row {row}");
            assert!(
                h.len() == 8 || p - h.len() == first,
                "history must be the newest 8"
            );
            assert_eq!(sequences.target(u, position), iv.get(&items[p]) as u32);
            assert_eq!(sequences.timestamp(u, position), times[p]);
            assert!(times[p - h.len()..p].iter().all(|&t0| t0 <= times[p]));
            // Training ages are measured back from the end of the training window (never
            // negative); validation and test rows stand for now (age 0).
            let age = if split == files::TRAIN {
                ((end - times[p].unwrap()) as f64 / 86_400.0) as f32
            } else {
                0.0
            };
            let bucket = 1 + boundaries.iter().filter(|&&b| f64::from(age) >= b).count() as u32;
            assert_eq!(
                rows.age_bucket[row], bucket,
                "{split} row {row} age {age} {boundaries:?}"
            );
        }
    }
}

/// Encode round-trips through the contract: for random per-user sequences (any order in the
/// file, repeated items, items only ever held out), with and without validation and a per-user
/// cap, the rows, histories and targets read back from the written files are the ones built
/// from the raw interactions, and each sequence is the user's whole history.
mod round_trip {
    use super::*;
    use proptest::prelude::*;
    use recall_features::split::{CapPick, ExampleCap};

    fn check(
        lengths: &[usize],
        item_seed: u64,
        validation: bool,
        max_len: usize,
        cap: Option<usize>,
    ) {
        // Raw interactions: user u has lengths[u] events; items from a small catalogue so
        // repeats and rare items occur; rows shuffled so encode must group and sort.
        let mut state = item_seed | 1;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let (mut users, mut items, mut seq) = (Vec::new(), Vec::new(), Vec::new());
        for (u, &n) in lengths.iter().enumerate() {
            for p in 0..n {
                users.push(100 + u as i64);
                items.push(next(12) as i64);
                seq.push(p as i64);
            }
        }
        let mut order: Vec<usize> = (0..users.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, next(i as u64 + 1) as usize);
        }
        let pick = |v: &[i64]| order.iter().map(|&r| v[r]).collect::<Vec<_>>();
        let dir = tempfile::tempdir().unwrap();
        let input = interactions_table(dir.path(), pick(&users), pick(&items), pick(&seq));
        let config = EncodeConfig {
            max_len,
            validation,
            max_examples_per_user: cap.map(|count| ExampleCap {
                count,
                pick: CapPick::Random,
                seed: 1,
            }),
            ..EncodeConfig::default()
        };
        let out = dir.path().join("encode");
        encode(&input, &config).unwrap().write(&out).unwrap();
        let m = FeatureManifest::read(&out).unwrap();
        let seqs = Sequences::read(
            &out.join(files::SEQUENCES),
            m.user_table_size,
            m.item_table_size,
            false,
        )
        .unwrap();
        let Vocabulary::Int(uv) = Vocabulary::load(&out.join(files::vocab("user_id"))).unwrap()
        else {
            panic!()
        };
        let Vocabulary::Int(iv) = Vocabulary::load(&out.join(files::vocab("item_id"))).unwrap()
        else {
            panic!()
        };
        let raw_of = |u: usize| -> Vec<i64> {
            let start: usize = lengths[..u].iter().sum();
            items[start..start + lengths[u]].to_vec()
        };
        let enc = |x: &i64| iv.get(x) as u32;
        // Every user's sequence is its whole raw sequence, encoded.
        for u in 0..lengths.len() {
            let idx = uv.get(&(100 + u as i64)) as u32;
            let want: Vec<u32> = raw_of(u).iter().map(enc).collect();
            assert_eq!(seqs.sequence(idx), want.as_slice());
        }
        let mut train_rows = 0;
        for (name, want) in [
            (files::TRAIN, Role::Train),
            (files::VALID, Role::Valid),
            (files::TEST, Role::Test),
        ] {
            if name == files::VALID && !validation {
                assert!(!out.join(name).exists());
                continue;
            }
            let rows = SplitRows::read(&out.join(name), &seqs).unwrap();
            let mut per_user = std::collections::HashMap::<u32, Vec<usize>>::new();
            for r in 0..rows.len() {
                let (idx, p) = (rows.user[r], rows.position[r] as usize);
                let u = (*uv.raw(idx as i32).unwrap() - 100) as usize;
                let raw = raw_of(u);
                assert_eq!(role(p, raw.len(), validation), want);
                assert_eq!(seqs.target(idx, p as u32), enc(&raw[p]));
                let h: Vec<u32> = raw[p.saturating_sub(max_len)..p].iter().map(enc).collect();
                assert_eq!(seqs.history(idx, p as u32, max_len), h.as_slice());
                per_user.entry(idx).or_default().push(p);
            }
            if want == Role::Train {
                train_rows = rows.len();
                for (idx, positions) in &per_user {
                    let u = (*uv.raw(*idx as i32).unwrap() - 100) as usize;
                    let raw = raw_of(u);
                    // The training positions with a known target, all or capped.
                    let eligible = (1..raw.len())
                        .filter(|&p| {
                            role(p, raw.len(), validation) == Role::Train && enc(&raw[p]) != 1
                        })
                        .count();
                    assert_eq!(positions.len(), cap.map_or(eligible, |c| eligible.min(c)));
                }
            }
        }
        assert_eq!(train_rows, m.stats.train_examples);
    }

    use recall_features::split::{Role, role};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn written_rows_read_back_as_built_from_the_raw_interactions(
            lengths in proptest::collection::vec(1usize..25, 1..12),
            item_seed: u64,
            validation: bool,
            max_len in 1usize..8,
            cap in proptest::option::of(1usize..6),
        ) {
            check(&lengths, item_seed, validation, max_len, cap);
        }
    }
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

/// A list column encoded twice: as a bag, and its first value as a category under another
/// name (torch-rechub's `cate_id`), each with a vocabulary of its own; a name used twice and
/// `first_of_list` on another kind are refused with the key.
#[test]
fn the_first_value_of_a_list_is_a_category_of_its_own() {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let first = FeatureSpec {
        name: Some("cate_id".into()),
        first_of_list: true,
        ..spec("genres", FeatureKind::Categorical)
    };
    let config = EncodeConfig {
        item_features: vec![spec("genres", FeatureKind::Bag), first.clone()],
        ..EncodeConfig::default()
    };
    let e = encode(&input, &config).unwrap();
    let items = Table::from_batch("items", e.item_table.clone());
    let (offsets, bags) = items.int_lists("genres_idx").unwrap();
    let cate = items.ints("cate_id_idx").unwrap();
    let vocab = |name: &str| {
        e.feature_vocabs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (genre_names, cate_names) = (vocab("genres").raw_ids(), vocab("cate_id").raw_ids());
    for (row, &c) in cate.iter().enumerate() {
        let bag = &bags[offsets[row]..offsets[row + 1]];
        let Some(&g) = bag.first() else {
            assert_eq!(c, 1, "an item without genres has an OOV category");
            continue;
        };
        // Both vocabularies name the same genre for this item.
        assert_eq!(
            genre_names.display(g as usize - 2),
            cate_names.display(c as usize - 2)
        );
    }
    let twice = EncodeConfig {
        item_features: vec![
            spec("genres", FeatureKind::Bag),
            spec("genres", FeatureKind::Categorical),
        ],
        ..EncodeConfig::default()
    };
    let err = encode(&input, &twice).unwrap_err().to_string();
    assert!(
        err.contains("encode.item_features[1]") && err.contains("name"),
        "{err}"
    );
    let wrong_kind = EncodeConfig {
        item_features: vec![FeatureSpec {
            kind: FeatureKind::Bag,
            ..first
        }],
        ..EncodeConfig::default()
    };
    let err = encode(&input, &wrong_kind).unwrap_err().to_string();
    assert!(err.contains("first_of_list"), "{err}");
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
    let raw = |i: &u32| *items.raw(*i as i32).unwrap();
    let history = |r: usize| e.sequences.history(e.test.user[r], e.test.position[r], 50);
    // Users come in order of first appearance (2, then 1), each in seq order.
    assert_eq!(history(0).iter().map(raw).collect::<Vec<_>>(), vec![20]);
    assert_eq!(history(1).iter().map(raw).collect::<Vec<_>>(), vec![10, 11]);
    // Both test targets (21 and 12) occur only as held-out targets, so they are out of
    // vocabulary: fitted on training data only.
    let targets: Vec<u32> = (0..2)
        .map(|r| e.sequences.target(e.test.user[r], e.test.position[r]))
        .collect();
    assert_eq!(targets, vec![1, 1]);
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

/// A warm start's encoding: day 1 is the data before a cut, day 2 all of it, grown from day
/// 1's files. Every day-1 user, item and genre keeps its index, new ones come after, the
/// quantile boundaries (a user feature and example age) are day 1's, and the counts say so.
#[test]
fn a_grown_encoding_keeps_every_earlier_index_and_appends_new_ones() {
    let dir = synthetic_dir();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let times: Vec<i64> = input
        .interactions
        .nullable_ints("timestamp")
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let cut = sorted[sorted.len() * 7 / 10];
    let config = EncodeConfig {
        user_features: vec![FeatureSpec {
            buckets: Some(4),
            ..spec("age", FeatureKind::Quantile)
        }],
        item_features: vec![spec("genres", FeatureKind::Bag)],
        ..EncodeConfig::default()
    };
    let day1 = encode(
        &input,
        &EncodeConfig {
            before: Some(cut),
            ..config.clone()
        },
    )
    .unwrap();
    let kept = times.iter().filter(|&&t| t < cut).count();
    assert_eq!(day1.manifest.stats.interactions, kept);
    assert_eq!(day1.manifest.stats.rows_after_cut, times.len() - kept);
    let s = &day1.sequences;
    assert_eq!(s.total_len(), kept);
    assert!((0..s.users() as u32).all(|u| {
        (0..s.sequence(u).len() as u32).all(|p| s.timestamp(u, p).is_some_and(|t| t < cut))
    }));
    let day1_dir = tempfile::tempdir().unwrap();
    day1.write(day1_dir.path()).unwrap();

    let grown_input = EncodeInput {
        grow_from: Some(recall_features::EarlierEncoding::read_dir(day1_dir.path()).unwrap()),
        ..EncodeInput::read_dir(dir.path()).unwrap()
    };
    let day2 = encode(&grown_input, &config).unwrap();
    for (earlier, now) in [(&day1.users, &day2.users), (&day1.items, &day2.items)] {
        assert_eq!(
            &now.raw_ids().to_array().slice(0, earlier.known_len()),
            &earlier.raw_ids().to_array()
        );
        assert!(now.known_len() >= earlier.known_len());
    }
    let genres = |e: &recall_features::Encoded| {
        e.feature_vocabs
            .iter()
            .find(|(n, _)| n == "genres")
            .unwrap()
            .1
            .clone()
    };
    let (genres1, genres2) = (genres(&day1), genres(&day2));
    assert_eq!(
        &genres2.raw_ids().to_array().slice(0, genres1.known_len()),
        &genres1.raw_ids().to_array()
    );
    let boundaries = |m: &FeatureManifest| m.user_features[0].boundaries.clone();
    assert_eq!(boundaries(&day2.manifest), boundaries(&day1.manifest));
    assert_eq!(
        day2.manifest.example_age.as_ref().unwrap().boundaries,
        day1.manifest.example_age.as_ref().unwrap().boundaries
    );
    let grown = day2.manifest.stats.grown.clone().unwrap();
    assert_eq!(grown.users_carried, day1.users.known_len());
    assert_eq!(
        grown.items_carried + grown.items_new,
        day2.items.known_len()
    );
    assert!(grown.users_new + grown.items_new > 0, "{grown:?}");
    // Fitted anew instead, the same data orders its items by frequency alone.
    let fresh = encode(&EncodeInput::read_dir(dir.path()).unwrap(), &config).unwrap();
    assert_eq!(fresh.items.known_len(), day2.items.known_len());
}

/// A time cut on data where a row has no timestamp names the key, the file and the row.
#[test]
fn a_time_cut_without_timestamps_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = interactions_table(dir.path(), vec![1, 1, 1], vec![5, 6, 7], vec![0, 1, 2]);
    let config = EncodeConfig {
        before: Some(1_000),
        ..EncodeConfig::default()
    };
    let err = encode(&input, &config).unwrap_err().to_string();
    assert!(
        err.contains("encode.before") && err.contains("interactions.parquet"),
        "{err}"
    );
}

/// A time split (`test_from`): each user's first interaction at or after the cut is the test
/// target and everything later is left out; a user with nothing after the cut has validation
/// and training only, a user with nothing before it is left out. With `cold_items`, an item
/// that only appears after the cut (or nowhere) but is listed in the item table is indexed
/// after the known ones, so a test target among them is rankable, not OOV.
#[test]
fn a_time_split_tests_the_first_interaction_after_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    // user 1: items 10, 11, 12 before the cut, then 50 (new) and 13 after;
    // user 2: items 10, 11 before only; user 3: item 11 after only.
    let rows: [(i64, i64, i64, i64); 10] = [
        (1, 10, 0, 100),
        (1, 11, 1, 200),
        (1, 12, 2, 300),
        (1, 50, 3, 1_000),
        (1, 13, 4, 1_100),
        (2, 10, 0, 150),
        (2, 11, 1, 250),
        (2, 12, 2, 260),
        (3, 11, 0, 1_200),
        (2, 13, 3, 270),
    ];
    let column = |f: fn(&(i64, i64, i64, i64)) -> i64| {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>())) as _
    };
    let batch = RecordBatch::try_from_iter([
        ("user_id", column(|r| r.0)),
        ("item_id", column(|r| r.1)),
        ("seq", column(|r| r.2)),
        ("timestamp", column(|r| r.3)),
    ])
    .unwrap();
    recall_core::write::write_parquet(&dir.path().join("interactions.parquet"), &batch, &[])
        .unwrap();
    let items = RecordBatch::try_from_iter([(
        "item_id",
        Arc::new(Int64Array::from(vec![10, 11, 12, 13, 50, 99])) as _,
    )])
    .unwrap();
    recall_core::write::write_parquet(&dir.path().join("items.parquet"), &items, &[]).unwrap();
    let input = EncodeInput::read_dir(dir.path()).unwrap();
    let config = EncodeConfig {
        test_from: Some(500),
        cold_items: true,
        ..EncodeConfig::default()
    };
    let e = encode(&input, &config).unwrap();
    let split = e.manifest.stats.time_split.clone().unwrap();
    assert_eq!((split.users_only_after, split.users_only_before), (1, 1));
    assert_eq!(split.rows_left_out, 2); // user 1's item 13 and user 3's item 11
    // Training knows 10, 11 and 12 (2, 3, 4); 13 (only a validation target), 50 and 99 are
    // cold, after them in ascending order.
    assert_eq!(e.manifest.stats.cold_items, 3);
    let index = |raw: i64| e.items.encode(&recall_core::RawIds::Int(vec![raw]))[0];
    assert_eq!([10, 11, 12, 13, 50, 99].map(index), [2, 3, 4, 5, 6, 7]);
    // One test row: user 1 at position 3, target 50, history 10, 11, 12.
    assert_eq!(e.test.len(), 1);
    let (u, p) = (e.test.user[0], e.test.position[0]);
    assert_eq!((p, e.sequences.target(u, p)), (3, index(50) as u32));
    assert_eq!(e.sequences.sequence(u).len(), 4);
    // Validation: each user's last interaction before the cut (user 1's 12, user 2's 13).
    let mut valid: Vec<u32> = (0..e.valid.len())
        .map(|r| e.sequences.target(e.valid.user[r], e.valid.position[r]))
        .collect();
    valid.sort_unstable();
    let mut want = vec![index(12) as u32, index(13) as u32];
    want.sort_unstable();
    assert_eq!(valid, want);
    assert_eq!(e.manifest.stats.test_targets_oov, 0);
    assert_eq!(e.manifest.stats.users_without_test, 1);
    // Without cold items the new item is out of vocabulary.
    let plain = encode(
        &input,
        &EncodeConfig {
            cold_items: false,
            ..config.clone()
        },
    )
    .unwrap();
    assert_eq!(plain.manifest.stats.test_targets_oov, 1);

    // Every interaction after the cut as a target: user 1's 13 joins its test row's targets
    // in `later_targets.parquet`, never its sequence; the rest of the encoding is unchanged.
    let after_cut = EncodeConfig {
        test_targets: recall_features::encode::TestTargets::AfterCut,
        ..config.clone()
    };
    let a = encode(&input, &after_cut).unwrap();
    let later = a.later_targets.clone().unwrap();
    assert_eq!((later.user, later.item), (vec![u], vec![index(13) as u32]));
    let split = a.manifest.stats.time_split.clone().unwrap();
    assert_eq!((split.rows_left_out, split.later_targets), (1, Some(1)));
    assert_eq!(a.sequences, e.sequences);
    assert_eq!((&a.train, &a.valid, &a.test), (&e.train, &e.valid, &e.test));
    let out = dir.path().join("after-cut");
    std::fs::create_dir_all(&out).unwrap();
    let written = a.write(&out).unwrap();
    assert!(
        written.contains(&out.join(files::LATER_TARGETS)),
        "{written:?}"
    );
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    let written = e.write(&first).unwrap();
    assert!(!written.iter().any(|p| p.ends_with(files::LATER_TARGETS)));
    // Without a time split the key is refused, naming itself.
    let err = encode(
        &input,
        &EncodeConfig {
            test_from: None,
            ..after_cut
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("encode.test_targets") && err.contains("test_from"),
        "{err}"
    );
}

/// `encode.item_release` dates every indexed item, cold ones included, from a side-table
/// column (a year taken as 1 July of it); nulls stay null, and a bad value or a missing column
/// is named with the key.
#[test]
fn item_release_dates_each_item_from_its_side_table_column() {
    let dir = tempfile::tempdir().unwrap();
    let rows: [(i64, i64, i64); 6] = [
        (1, 10, 0),
        (1, 11, 1),
        (1, 12, 2),
        (2, 10, 0),
        (2, 11, 1),
        (2, 12, 2),
    ];
    let column = |f: fn(&(i64, i64, i64)) -> i64| {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>())) as _
    };
    let batch = RecordBatch::try_from_iter([
        ("user_id", column(|r| r.0)),
        ("item_id", column(|r| r.1)),
        ("seq", column(|r| r.2)),
    ])
    .unwrap();
    recall_core::write::write_parquet(&dir.path().join("interactions.parquet"), &batch, &[])
        .unwrap();
    let write_items = |years: Vec<Option<i32>>| {
        let items = RecordBatch::try_from_iter([
            (
                "item_id",
                Arc::new(Int64Array::from(vec![10, 11, 12, 99])) as _,
            ),
            ("year", Arc::new(arrow_array::Int32Array::from(years)) as _),
        ])
        .unwrap();
        recall_core::write::write_parquet(&dir.path().join("items.parquet"), &items, &[]).unwrap();
    };
    write_items(vec![Some(1995), None, Some(2000), Some(2010)]);
    let release = |column: &str| recall_features::encode::ItemRelease {
        column: column.to_owned(),
        unit: recall_features::encode::ReleaseUnit::Year,
    };
    let config = EncodeConfig {
        cold_items: true,
        item_release: Some(release("year")),
        ..EncodeConfig::default()
    };
    let e = encode(&EncodeInput::read_dir(dir.path()).unwrap(), &config).unwrap();
    let index = |raw: i64| e.items.encode(&recall_core::RawIds::Int(vec![raw]))[0];
    let table = Table::from_batch("items", e.item_table.clone());
    let times = table.nullable_ints("release_time").unwrap();
    let idx = table.ints("item_idx").unwrap();
    let time_of = |raw: i64| {
        times[idx
            .iter()
            .position(|&i| i == i64::from(index(raw)))
            .unwrap()]
    };
    assert_eq!(time_of(10), Some(804_556_800)); // 1995-07-01 UTC
    assert_eq!(time_of(11), None);
    assert_eq!(time_of(12), Some(962_409_600));
    assert_eq!(time_of(99), Some(1_277_942_400)); // cold: no interaction, still dated
    // Without the key the table has no such column.
    let plain = encode(
        &EncodeInput::read_dir(dir.path()).unwrap(),
        &EncodeConfig {
            item_release: None,
            ..config.clone()
        },
    )
    .unwrap();
    assert!(plain.item_table.column_by_name("release_time").is_none());

    let err = encode(
        &EncodeInput::read_dir(dir.path()).unwrap(),
        &EncodeConfig {
            item_release: Some(release("released")),
            ..config.clone()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("released"), "{err}");
    write_items(vec![Some(1995), Some(0), Some(2000), Some(2010)]);
    let err = encode(&EncodeInput::read_dir(dir.path()).unwrap(), &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encode.item_release (year)") && err.contains("items.parquet"),
        "{err}"
    );
}
