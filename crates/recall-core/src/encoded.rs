//! The encode stage's outputs (`encode/`), owned here and nowhere else: their file names,
//! column names, the `features.json` types, and a reader and a writer for every file.
//! `recall-features` writes through this module; models, evaluation and export read through it.
//!
//! Contract version 2 (see `ARCHITECTURE.md`): each user's chronological item sequence is
//! written once (`sequences.parquet`) and the splits are references into it
//! (`train/valid/test.parquet`: user, position of the target, example-age bucket). A row's
//! history is `sequence[max(0, p - max_len)..p]` and its target `sequence[p]`, handed out as
//! borrowed slices: nothing is copied per example.
//!
//! ```
//! use recall_core::encoded::{Sequences, SplitRows};
//! // User index 2 watched items 5, 6, 7, 8; the first three are training interactions.
//! let seqs = Sequences::new(vec![0, 0, 0, 4], vec![5, 6, 7, 8], vec![0, 0, 3], None)?;
//! let mut train = SplitRows::default();
//! train.push(2, 2, 0); // the example whose target is position 2
//! assert_eq!(seqs.history(train.user[0], train.position[0], 50), &[5, 6]);
//! assert_eq!(seqs.target(2, 2), 7);
//! assert_eq!(seqs.training(2), &[5, 6, 7]);
//! # Ok::<(), recall_core::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::RawIds;
use crate::table::Table;

/// Version of this contract, in `features.json` and in every Parquet file's footer metadata
/// (key [`CONTRACT_KEY`]). Version 1 (no marker) carried a copy of each history in every row.
pub const CONTRACT_VERSION: u32 = 2;
/// Footer metadata key holding [`CONTRACT_VERSION`].
pub const CONTRACT_KEY: &str = "recall.encode_contract";

/// File names inside an encode output directory.
pub mod files {
    pub const SEQUENCES: &str = "sequences.parquet";
    pub const TRAIN: &str = "train.parquet";
    pub const VALID: &str = "valid.parquet";
    pub const TEST: &str = "test.parquet";
    pub const USERS: &str = "users.parquet";
    pub const ITEMS: &str = "items.parquet";
    pub const FEATURES: &str = "features.json";
    /// With `encode.test_targets = "after-cut"`: each test user's later targets.
    pub const LATER_TARGETS: &str = "later_targets.parquet";

    /// `vocab_<name>.parquet`.
    pub fn vocab(name: &str) -> String {
        format!("vocab_{name}.parquet")
    }
}

/// Column names of the encode outputs.
pub mod columns {
    pub use crate::columns::{
        EXAMPLE_AGE_BUCKET, ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, VOCAB_COUNT, VOCAB_INDEX,
        VOCAB_RAW,
    };
    /// `sequences.parquet`: the user's item indices in time order, List<Int32>.
    pub const ITEMS: &str = "items";
    /// `sequences.parquet`: the timestamp of each position, List<Int64> with null values.
    pub const TIMESTAMPS: &str = "timestamps";
    /// `sequences.parquet`: how many leading positions are training interactions, Int32.
    pub const TRAIN_LEN: &str = "train_len";
    /// Splits: position of the target in the user's sequence, Int32.
    pub const POSITION: &str = "position";

    /// Side tables: the encoded index column of feature `name` (`<name>_idx`).
    pub fn feature_index(name: &str) -> String {
        crate::columns::encoded(name)
    }
    /// Side tables: the standardised value column of dense feature `name` (`<name>_dense`).
    pub fn feature_dense(name: &str) -> String {
        format!("{name}_dense")
    }
}

fn contract_metadata() -> Vec<(&'static str, String)> {
    vec![(CONTRACT_KEY, CONTRACT_VERSION.to_string())]
}

/// What to tell a reader that met a file of another contract version.
fn rerun_hint() -> &'static str {
    "rerun the encode stage with this build (`cargo xtask pipeline --from encode`)"
}

/// Fails unless `table` carries this contract version in its footer.
pub fn check_version(table: &Table) -> Result<()> {
    match table.metadata(CONTRACT_KEY) {
        Some(v) if v == CONTRACT_VERSION.to_string() => Ok(()),
        found => Err(Error::invalid(
            table.path().display().to_string(),
            format!(
                "written by encode contract version {}, this build reads version {CONTRACT_VERSION}: {}",
                found.unwrap_or("1 (no version marker)"),
                rerun_hint()
            ),
        )),
    }
}

/// Reads an encode output Parquet file (optionally projected), checked for this contract
/// version.
pub fn read_table(path: &Path, columns: Option<&[&str]>) -> Result<Table> {
    let table = Table::read_columns(path, columns)?;
    check_version(&table)?;
    Ok(table)
}

/// Writes an encode output Parquet file with this contract version in its footer.
pub fn write_table(path: &Path, batch: &RecordBatch) -> Result<()> {
    crate::write::write_parquet(path, batch, &contract_metadata())
}

/// Indices as the Int32 column the contract stores them in (what [`to_u32`] reads back).
fn int32_column(v: &[u32]) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(v.iter().map(|&x| x as i32)))
}

fn to_u32(path: &Path, column: &str, v: Vec<i64>) -> Result<Vec<u32>> {
    v.into_iter()
        .enumerate()
        .map(|(row, x)| {
            u32::try_from(x).map_err(|_| {
                Error::invalid(
                    format!("{}, column `{column}`, row {row}", path.display()),
                    format!("{x} is not a valid index (negative or too large)"),
                )
            })
        })
        .collect()
}

/// Every user's chronological item sequence, indexed by user index over the whole user table
/// (the reserved rows 0 and 1 are empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sequences {
    /// User `u`'s positions are `items[offsets[u]..offsets[u + 1]]`.
    offsets: Vec<usize>,
    items: Vec<u32>,
    /// Per user, how many leading positions are training interactions (the rest are the
    /// validation and test targets).
    train_len: Vec<u32>,
    /// Per position, where the file has them (read on request). An Arrow array (8 bytes and a
    /// validity bit a position) rather than `Vec<Option<i64>>` (16 bytes): at 100 M positions
    /// that is 0.8 GB saved, and the file's column is this array, written and read uncopied.
    timestamps: Option<Int64Array>,
}

impl Sequences {
    /// From CSR parts: `offsets` has one more entry than `train_len`; every user's training
    /// prefix fits its sequence; `timestamps` (when given) has one per item.
    pub fn new(
        offsets: Vec<usize>,
        items: Vec<u32>,
        train_len: Vec<u32>,
        timestamps: Option<Int64Array>,
    ) -> Result<Self> {
        let bad = |m: String| Err(Error::Internal(format!("sequences: {m}")));
        if offsets.len() != train_len.len() + 1
            || offsets.first() != Some(&0)
            || offsets.last() != Some(&items.len())
            || offsets.windows(2).any(|w| w[0] > w[1])
        {
            return bad("offsets do not partition the items".into());
        }
        if let Some(u) =
            (0..train_len.len()).find(|&u| train_len[u] as usize > offsets[u + 1] - offsets[u])
        {
            return bad(format!(
                "user {u} has a training prefix longer than its sequence"
            ));
        }
        if timestamps.as_ref().is_some_and(|t| t.len() != items.len()) {
            return bad("one timestamp per position expected".into());
        }
        Ok(Sequences {
            offsets,
            items,
            train_len,
            timestamps,
        })
    }

    /// Rows of the user table the sequences cover (reserved rows included).
    pub fn users(&self) -> usize {
        self.train_len.len()
    }

    /// Positions over all users.
    pub fn total_len(&self) -> usize {
        self.items.len()
    }

    /// User `user`'s whole sequence (empty for an unknown index).
    pub fn sequence(&self, user: u32) -> &[u32] {
        let u = user as usize;
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(&s), Some(&e)) => &self.items[s..e],
            _ => &[],
        }
    }

    /// The training interactions of `user`: the leading positions before any held-out target.
    pub fn training(&self, user: u32) -> &[u32] {
        let len = self.train_len.get(user as usize).copied().unwrap_or(0) as usize;
        &self.sequence(user)[..len]
    }

    /// The history of the row at `position`: the newest `max_len` items before it. `position`
    /// may be the sequence's length (a serving row: everything the user did).
    pub fn history(&self, user: u32, position: u32, max_len: usize) -> &[u32] {
        let seq = self.sequence(user);
        let p = (position as usize).min(seq.len());
        &seq[p.saturating_sub(max_len)..p]
    }

    /// The item at `position` of `user`'s sequence.
    pub fn target(&self, user: u32, position: u32) -> u32 {
        self.sequence(user)[position as usize]
    }

    /// The timestamp of a position, when the file has timestamps and the position one.
    pub fn timestamp(&self, user: u32, position: u32) -> Option<i64> {
        let t = self.timestamps.as_ref()?;
        let i = *self.offsets.get(user as usize)? + position as usize;
        (i < t.len() && t.is_valid(i)).then(|| t.value(i))
    }

    /// Writes `sequences.parquet`: one row per known user, in index order.
    pub fn write(&self, path: &Path) -> Result<()> {
        let first = crate::columns::FIRST_KNOWN_INDEX as usize;
        let users = first..self.users();
        let base = self.offsets.get(first).copied().unwrap_or(0);
        let offsets: Vec<i32> = self.offsets[first.min(self.offsets.len())..]
            .iter()
            .map(|&o| (o - base) as i32)
            .collect();
        // Shared by the item and timestamp lists (a cheap clone of one buffer).
        let offsets = OffsetBuffer::new(offsets.into());
        let values = Int32Array::from_iter_values(self.items[base..].iter().map(|&i| i as i32));
        let item_field = Arc::new(Field::new("item", DataType::Int32, false));
        let items = ListArray::try_new(item_field, offsets.clone(), Arc::new(values), None)
            .map_err(|e| Error::arrow("sequence lists", e))?;
        let mut columns: Vec<(&str, ArrayRef, bool)> = vec![
            (
                columns::USER_IDX,
                Arc::new(Int32Array::from_iter_values(
                    users.clone().map(|u| u as i32),
                )),
                false,
            ),
            (columns::ITEMS, Arc::new(items), false),
            (
                columns::TRAIN_LEN,
                Arc::new(Int32Array::from_iter_values(
                    users.map(|u| self.train_len[u] as i32),
                )),
                false,
            ),
        ];
        if let Some(ts) = &self.timestamps {
            let times = ListArray::try_new(
                Arc::new(Field::new("item", DataType::Int64, true)),
                offsets,
                Arc::new(ts.slice(base, ts.len() - base)),
                None,
            )
            .map_err(|e| Error::arrow("sequence timestamps", e))?;
            columns.push((columns::TIMESTAMPS, Arc::new(times), false));
        }
        write_table(path, &crate::table::batch(columns)?)
    }

    /// Reads `sequences.parquet` for a user table of `user_table_size` rows and items below
    /// `item_table_size`; timestamps only when `with_timestamps`.
    pub fn read(
        path: &Path,
        user_table_size: usize,
        item_table_size: usize,
        with_timestamps: bool,
    ) -> Result<Self> {
        let mut wanted = vec![columns::USER_IDX, columns::ITEMS, columns::TRAIN_LEN];
        if with_timestamps {
            wanted.push(columns::TIMESTAMPS);
        }
        let t = read_table(path, Some(&wanted))?;
        let at =
            |row: usize, column: &str| format!("{}, column `{column}`, row {row}", path.display());
        let user_idx = t.ints(columns::USER_IDX)?;
        let first = crate::columns::FIRST_KNOWN_INDEX as i64;
        if let Some(row) = (0..user_idx.len()).find(|&r| user_idx[r] != first + r as i64) {
            return Err(Error::invalid(
                at(row, columns::USER_IDX),
                format!(
                    "user {} out of order: rows are users {first}, {}, ... in index order; {}",
                    user_idx[row],
                    first + 1,
                    rerun_hint()
                ),
            ));
        }
        if user_idx.len() + first as usize != user_table_size {
            return Err(Error::invalid(
                path.display().to_string(),
                format!(
                    "{} users, features.json says {}: the files come from different encode runs; {}",
                    user_idx.len(),
                    user_table_size.saturating_sub(first as usize),
                    rerun_hint()
                ),
            ));
        }
        let (list_offsets, values) = t.int_lists(columns::ITEMS)?;
        let train_len = to_u32(path, columns::TRAIN_LEN, t.ints(columns::TRAIN_LEN)?)?;
        let mut items = Vec::with_capacity(values.len());
        for (i, &v) in values.iter().enumerate() {
            if v < 0 || v as usize >= item_table_size {
                let row = list_offsets.partition_point(|&o| o <= i) - 1;
                return Err(Error::invalid(
                    at(row, columns::ITEMS),
                    format!("item index {v} outside the item table of {item_table_size}"),
                ));
            }
            items.push(v as u32);
        }
        // Rows 0 and 1 of the user table (padding, OOV) have empty sequences.
        let mut offsets = vec![0, 0];
        offsets.extend_from_slice(&list_offsets);
        let mut lens = vec![0, 0];
        lens.extend_from_slice(&train_len);
        if let Some(row) = (0..train_len.len())
            .find(|&r| train_len[r] as usize > list_offsets[r + 1] - list_offsets[r])
        {
            return Err(Error::invalid(
                at(row, columns::TRAIN_LEN),
                "longer than the user's sequence",
            ));
        }
        let timestamps = if with_timestamps && t.has_column(columns::TIMESTAMPS) {
            Some(nullable_int_list_values(&t, columns::TIMESTAMPS)?)
        } else {
            None
        };
        Sequences::new(offsets, items, lens, timestamps)
    }
}

/// The flattened values of a List<Int64> column with nullable values.
fn nullable_int_list_values(t: &Table, column: &str) -> Result<Int64Array> {
    use arrow_array::cast::AsArray;
    let array = t.column(column)?;
    let DataType::List(f) = array.data_type() else {
        return Err(Error::ColumnType {
            path: t.path().to_owned(),
            column: column.to_owned(),
            found: array.data_type().clone(),
            expected: "List<Int64>",
        });
    };
    if f.data_type() != &DataType::Int64 {
        return Err(Error::ColumnType {
            path: t.path().to_owned(),
            column: column.to_owned(),
            found: array.data_type().clone(),
            expected: "List<Int64>",
        });
    }
    let list = array.as_list::<i32>();
    let (s, e) = (
        list.value_offsets()[0] as usize,
        list.value_offsets()[list.len()] as usize,
    );
    let values = list
        .values()
        .as_primitive::<arrow_array::types::Int64Type>();
    Ok(values.slice(s, e - s))
}

/// The rows of one split, as references into [`Sequences`]: row `i` is user `user[i]` at
/// position `position[i]` of its sequence (the target; its history is everything before it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitRows {
    pub user: Vec<u32>,
    pub position: Vec<u32>,
    /// Example-age bucket (0 when unknown or when example age is off).
    pub age_bucket: Vec<u32>,
}

impl SplitRows {
    pub fn len(&self) -> usize {
        self.user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    pub fn push(&mut self, user: u32, position: u32, age_bucket: u32) {
        self.user.push(user);
        self.position.push(position);
        self.age_bucket.push(age_bucket);
    }

    /// The rows `rows` of this split, in that order.
    pub fn select(&self, rows: &[usize]) -> SplitRows {
        SplitRows {
            user: rows.iter().map(|&r| self.user[r]).collect(),
            position: rows.iter().map(|&r| self.position[r]).collect(),
            age_bucket: rows.iter().map(|&r| self.age_bucket[r]).collect(),
        }
    }

    /// Writes a split file; the age bucket column only `with_age` (example age on).
    pub fn write(&self, path: &Path, with_age: bool) -> Result<()> {
        let mut columns = vec![
            (columns::USER_IDX, int32_column(&self.user), false),
            (columns::POSITION, int32_column(&self.position), false),
        ];
        if with_age {
            columns.push((
                columns::EXAMPLE_AGE_BUCKET,
                int32_column(&self.age_bucket),
                false,
            ));
        }
        write_table(path, &crate::table::batch(columns)?)
    }

    /// Reads a split file, checking that every row refers to a position of `sequences`.
    pub fn read(path: &Path, sequences: &Sequences) -> Result<Self> {
        let t = read_table(path, None)?;
        let user = to_u32(path, columns::USER_IDX, t.ints(columns::USER_IDX)?)?;
        let position = to_u32(path, columns::POSITION, t.ints(columns::POSITION)?)?;
        let age_bucket = if t.has_column(columns::EXAMPLE_AGE_BUCKET) {
            to_u32(
                path,
                columns::EXAMPLE_AGE_BUCKET,
                t.ints(columns::EXAMPLE_AGE_BUCKET)?,
            )?
        } else {
            vec![0; user.len()]
        };
        if let Some(row) =
            (0..user.len()).find(|&r| position[r] as usize >= sequences.sequence(user[r]).len())
        {
            return Err(Error::invalid(
                format!("{}, row {row}", path.display()),
                format!(
                    "user {} position {} is past the end of its sequence ({} positions): the files come from different encode runs; {}",
                    user[row],
                    position[row],
                    sequences.sequence(user[row]).len(),
                    rerun_hint()
                ),
            ));
        }
        Ok(SplitRows {
            user,
            position,
            age_bucket,
        })
    }
}

/// A time split's later test targets (`encode.test_targets = "after-cut"`): every
/// interaction of a test user after its first one at or after the cut, as (user, item) pairs
/// in the user's order. They are not in `sequences.parquet` (no model reads them as history);
/// the test row's truth is its target and these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaterTargets {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
}

impl LaterTargets {
    pub fn len(&self) -> usize {
        self.user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_table(
            path,
            &crate::table::batch(vec![
                (columns::USER_IDX, int32_column(&self.user), false),
                (columns::ITEM_IDX, int32_column(&self.item), false),
            ])?,
        )
    }

    /// Reads the file, checking every index against the tables' sizes.
    pub fn read(path: &Path, user_table_size: usize, item_table_size: usize) -> Result<Self> {
        let t = read_table(path, None)?;
        let user = to_u32(path, columns::USER_IDX, t.ints(columns::USER_IDX)?)?;
        let item = to_u32(path, columns::ITEM_IDX, t.ints(columns::ITEM_IDX)?)?;
        for (column, values, size) in [
            (columns::USER_IDX, &user, user_table_size),
            (columns::ITEM_IDX, &item, item_table_size),
        ] {
            if let Some(row) = values.iter().position(|&x| x as usize >= size) {
                return Err(Error::invalid(
                    format!("{}, column `{column}`, row {row}", path.display()),
                    format!(
                        "index {} is past the table's {size} rows: the files come from different encode runs; {}",
                        values[row],
                        rerun_hint()
                    ),
                ));
            }
        }
        Ok(LaterTargets { user, item })
    }
}

/// Which training examples a user keeps when they have more than a cap (the YoutubeDNN design
/// gives every user the same number of examples so heavy users do not dominate the loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapPick {
    /// A seeded uniform choice among the user's training positions (kept in time order).
    Random,
    /// The newest positions.
    Recent,
}

/// `encode.max_examples_per_user`: at most `count` training examples per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleCap {
    pub count: usize,
    #[serde(default = "default_pick")]
    pub pick: CapPick,
    /// Seed of the random choice. Default 0.
    #[serde(default)]
    pub seed: u64,
}

fn default_pick() -> CapPick {
    CapPick::Random
}

/// Feature encodings.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    /// One value per row (integer or string) through a vocabulary.
    Categorical,
    /// A list of values (List<Utf8>, or a `|`-separated string) through one vocabulary.
    Bag,
    /// A number into quantile buckets fitted on training data.
    Quantile,
    /// A number into explicit buckets.
    Boundaries,
    /// A number fed as it is, standardised with the mean and standard deviation of the known
    /// entities' values (missing values become 0, the mean), as Float32 column `<name>_dense`.
    Dense,
}

/// Description of an encoded feature, as the models need it to size embedding tables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncodedFeature {
    pub name: String,
    /// Column holding the encoded values (`<name>_idx`, or `<name>_dense`).
    pub column: String,
    pub kind: FeatureKind,
    /// Rows an embedding table for this feature needs (reserved slots included).
    pub table_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boundaries: Option<Vec<f64>>,
    /// Dense features: the (mean, standard deviation) they were standardised with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<(f64, f64)>,
    /// The side-table column the feature was encoded from, where it differs from `name`
    /// (absent in files written before it was recorded: then it is `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Categorical over a list column: the list's first value was encoded (a `|`-separated
    /// string is a list; an empty list is missing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_of_list: bool,
}

/// Counts for the manifest and the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EncodeStats {
    pub interactions: usize,
    pub users: usize,
    pub items: usize,
    pub train_examples: usize,
    pub valid_rows: usize,
    pub test_rows: usize,
    /// Users with a single interaction (no examples, no test row).
    pub users_without_test: usize,
    /// Test rows whose target is out of vocabulary (only ever seen as a held-out target).
    pub test_targets_oov: usize,
    pub valid_targets_oov: usize,
    /// Training positions left out as examples because their target is out of vocabulary
    /// (rarer than `item_min_count`).
    #[serde(default)]
    pub train_targets_oov: usize,
    /// Training rows without a timestamp (their example age is unknown, bucket 0).
    pub train_rows_without_timestamp: usize,
    /// The per-user cap applied (`encode.max_examples_per_user`), if any.
    #[serde(default)]
    pub max_examples_per_user: Option<ExampleCap>,
    /// Interactions left out by the time cut (`encode.before`).
    #[serde(default)]
    pub rows_after_cut: usize,
    /// With `encode.test_from`: what the time split kept and left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_split: Option<TimeSplitStats>,
    /// Items of the item side table without a training interaction, indexed after every
    /// known item (`encode.cold_items`): the last `cold_items` indices of the item table.
    #[serde(default)]
    pub cold_items: usize,
    /// With a warm start: how the earlier run's vocabularies were grown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grown: Option<GrownVocabularies>,
}

/// A time split's counts (`encode.test_from`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimeSplitStats {
    /// The cut (Unix seconds): each user's first interaction at or after it is the test target.
    pub test_from: i64,
    /// Users with no interaction before the cut: left out (no history to rank from).
    pub users_only_after: usize,
    /// Users with no interaction after the cut: training and validation only.
    pub users_only_before: usize,
    /// Interactions after each user's test target, and those of the users left out (later
    /// targets not counted).
    pub rows_left_out: usize,
    /// With `encode.test_targets = "after-cut"`: the interactions after each user's test
    /// target kept as more targets of its test row (`later_targets.parquet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub later_targets: Option<usize>,
}

/// A grown encoding's counts: the values each kind of vocabulary carried from the earlier
/// run (at their old indices) and the new ones appended after them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct GrownVocabularies {
    /// The earlier run's encode directory.
    pub from: String,
    pub users_carried: usize,
    pub users_new: usize,
    pub items_carried: usize,
    pub items_new: usize,
    /// Values of the categorical and bag side features, all features together.
    pub feature_values_carried: usize,
    pub feature_values_new: usize,
}

/// `features.json`: everything a model needs to know about the encoded files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureManifest {
    /// [`CONTRACT_VERSION`] of the files beside it.
    #[serde(default)]
    pub contract_version: u32,
    pub user_table_size: usize,
    pub item_table_size: usize,
    /// Longest history a row sees (its newest items).
    pub max_len: usize,
    pub validation: bool,
    /// `None` when example age is off or no timestamps exist.
    pub example_age: Option<EncodedFeature>,
    /// The example-age bucket of age 0, which validation and test rows carry: where a user is
    /// embedded when the model serves (0 without example age).
    #[serde(default)]
    pub serving_age_bucket: u32,
    /// End of the training window (seconds) that ages are measured from.
    pub train_window_end: Option<i64>,
    pub user_features: Vec<EncodedFeature>,
    pub item_features: Vec<EncodedFeature>,
    pub stats: EncodeStats,
}

impl FeatureManifest {
    /// Reads `features.json` from an encode output directory, refusing other contract versions.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(files::FEATURES);
        let text = std::fs::read(&path).map_err(|e| {
            let action = if e.kind() == std::io::ErrorKind::NotFound {
                "no encode output here (run the encode stage first):"
            } else {
                "cannot read"
            };
            Error::io(action, &path, e)
        })?;
        let version = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("contract_version")
                    .and_then(serde_json::Value::as_u64)
            });
        if version != Some(u64::from(CONTRACT_VERSION)) {
            return Err(Error::invalid(
                path.display().to_string(),
                format!(
                    "written by encode contract version {}, this build reads version {CONTRACT_VERSION}: {}",
                    version.map_or_else(|| "1 (no version field)".to_owned(), |v| v.to_string()),
                    rerun_hint()
                ),
            ));
        }
        serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(
                path.display().to_string(),
                format!("not a features manifest: {e}"),
            )
        })
    }

    /// Writes `features.json` into `dir`, with this contract version.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let mut m = self.clone();
        m.contract_version = CONTRACT_VERSION;
        let json = serde_json::to_vec_pretty(&m)
            .map_err(|e| Error::Internal(format!("features.json: {e}")))?;
        let path = dir.join(files::FEATURES);
        crate::write::write_bytes(&path, &json)?;
        Ok(path)
    }
}

/// A vocabulary file read back: raw values in index order (index `FIRST_KNOWN_INDEX + i` is
/// `raw[i]`) and their training counts.
#[derive(Debug, Clone)]
pub struct VocabularyFile {
    pub raw: RawIds,
    pub counts: Vec<u64>,
}

/// Writes `vocab_<name>.parquet`: `raw`, `index` (2, 3, ...), `count`, in index order.
pub fn write_vocabulary(path: &Path, raw: &RawIds, counts: &[i64]) -> Result<()> {
    let n = raw.len();
    let first = crate::columns::FIRST_KNOWN_INDEX;
    let batch = crate::table::batch(vec![
        (columns::VOCAB_RAW, raw.to_array(), false),
        (
            columns::VOCAB_INDEX,
            Arc::new(Int32Array::from_iter_values(first..first + n as i32)),
            false,
        ),
        (
            columns::VOCAB_COUNT,
            Arc::new(arrow_array::Int64Array::from(counts.to_vec())),
            false,
        ),
    ])?;
    let mut metadata = contract_metadata();
    metadata.push((
        "recall.vocab.reserved",
        String::from("0=padding,1=out-of-vocabulary"),
    ));
    crate::write::write_parquet(path, &batch, &metadata)
}

/// Reads a vocabulary file, checked to hold the contiguous indices `2..` the tables use.
pub fn read_vocabulary(path: &Path) -> Result<VocabularyFile> {
    let t = read_table(path, None)?;
    let index = t.ints(columns::VOCAB_INDEX)?;
    let counts = t.ints(columns::VOCAB_COUNT)?;
    let mut order: Vec<usize> = (0..index.len()).collect();
    order.sort_by_key(|&r| index[r]);
    let first = i64::from(crate::columns::FIRST_KNOWN_INDEX);
    for (pos, &r) in order.iter().enumerate() {
        if index[r] != first + pos as i64 {
            return Err(Error::invalid(
                format!("{}, row {r}", path.display()),
                format!(
                    "index {} where {} was due: indices must run contiguously from {first}; {}",
                    index[r],
                    first + pos as i64,
                    rerun_hint()
                ),
            ));
        }
    }
    Ok(VocabularyFile {
        raw: t.ids(columns::VOCAB_RAW)?.take(&order),
        counts: order.iter().map(|&r| counts[r].max(0) as u64).collect(),
    })
}

/// A categorical side feature: one value per entity index (`values[idx]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SideFeature {
    pub name: String,
    pub table_size: usize,
    pub values: Vec<u32>,
}

/// A dense (standardised) side feature: one value per entity index.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseFeature {
    pub name: String,
    pub values: Vec<f32>,
}

/// A bag side feature: a list per entity index.
#[derive(Debug, Clone, PartialEq)]
pub struct BagFeature {
    pub name: String,
    pub table_size: usize,
    pub offsets: Vec<usize>,
    pub values: Vec<u32>,
}

impl BagFeature {
    /// The bag of entity index `idx`.
    pub fn of(&self, idx: u32) -> &[u32] {
        &self.values[self.offsets[idx as usize]..self.offsets[idx as usize + 1]]
    }
}

/// The encoded features of one side table (`users.parquet` or `items.parquet`), each as a
/// value per entity index (entities absent from the file get 0 / an empty bag / 0.0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityFeatures {
    pub categorical: Vec<SideFeature>,
    pub bags: Vec<BagFeature>,
    pub dense: Vec<DenseFeature>,
}

impl EntityFeatures {
    /// Reads the `described` features of a side table whose rows carry `idx_column`, for a
    /// table of `table_size` entities. Nothing is read when nothing is described.
    pub fn read(
        path: &Path,
        idx_column: &str,
        described: &[EncodedFeature],
        table_size: usize,
    ) -> Result<Self> {
        let mut out = EntityFeatures::default();
        if described.is_empty() {
            return Ok(out);
        }
        let t = read_table(path, None)?;
        let idx: Vec<usize> = to_u32(path, idx_column, t.ints(idx_column)?)?
            .into_iter()
            .map(|i| i as usize)
            .collect();
        if let Some(row) = idx.iter().position(|&i| i >= table_size) {
            return Err(Error::invalid(
                format!("{}, column `{idx_column}`, row {row}", path.display()),
                format!("index {} outside the table of {table_size}", idx[row]),
            ));
        }
        for d in described {
            match d.kind {
                FeatureKind::Dense => {
                    let col = t.nullable_floats(&d.column)?;
                    let mut values = vec![0f32; table_size];
                    for (row, &i) in idx.iter().enumerate() {
                        values[i] = col[row].unwrap_or(0.0);
                    }
                    out.dense.push(DenseFeature {
                        name: d.name.clone(),
                        values,
                    });
                }
                FeatureKind::Bag => {
                    let (offsets, values) = t.int_lists(&d.column)?;
                    let mut rows: Vec<&[i32]> = vec![&[]; table_size];
                    for (row, &i) in idx.iter().enumerate() {
                        rows[i] = &values[offsets[row]..offsets[row + 1]];
                    }
                    let mut off = vec![0];
                    let mut vals = Vec::new();
                    for r in rows {
                        vals.extend(r.iter().map(|&v| v.max(0) as u32));
                        off.push(vals.len());
                    }
                    out.bags.push(BagFeature {
                        name: d.name.clone(),
                        table_size: d.table_size,
                        offsets: off,
                        values: vals,
                    });
                }
                _ => {
                    let col = t.ints(&d.column)?;
                    let mut values = vec![0u32; table_size];
                    for (row, &i) in idx.iter().enumerate() {
                        values[i] = col[row].max(0) as u32;
                    }
                    out.categorical.push(SideFeature {
                        name: d.name.clone(),
                        table_size: d.table_size,
                        values,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sequences {
        // Users 2 and 3 (rows 0 and 1 reserved): [5, 6, 7, 8] with 2 training positions, [9, 5].
        Sequences::new(
            vec![0, 0, 0, 4, 6],
            vec![5, 6, 7, 8, 9, 5],
            vec![0, 0, 2, 1],
            Some(Int64Array::from(vec![
                Some(10),
                None,
                Some(30),
                Some(40),
                Some(1),
                Some(2),
            ])),
        )
        .unwrap()
    }

    #[test]
    fn files_round_trip_and_other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seqs = sample();
        let path = dir.path().join(files::SEQUENCES);
        seqs.write(&path).unwrap();
        assert_eq!(Sequences::read(&path, 4, 10, true).unwrap(), seqs);
        let no_times = Sequences::read(&path, 4, 10, false).unwrap();
        assert_eq!(no_times.timestamp(2, 0), None);
        assert_eq!(seqs.timestamp(2, 0), Some(10));
        assert_eq!(seqs.timestamp(2, 1), None);
        let mut rows = SplitRows::default();
        rows.push(2, 1, 3);
        rows.push(3, 1, 0);
        let split = dir.path().join(files::TRAIN);
        rows.write(&split, true).unwrap();
        assert_eq!(SplitRows::read(&split, &seqs).unwrap(), rows);
        // A reference past a sequence's end (another run's files) names the file and the row.
        let mut bad = rows.clone();
        bad.position[1] = 2;
        bad.write(&split, false).unwrap();
        let err = SplitRows::read(&split, &seqs).unwrap_err().to_string();
        assert!(
            err.contains("train.parquet, row 1") && err.contains("--from encode"),
            "{err}"
        );
        // A file without the version marker (contract 1) is refused with what to do.
        let old = dir.path().join("old.parquet");
        let batch = crate::table::batch(vec![(
            columns::USER_IDX,
            Arc::new(Int32Array::from(vec![2])) as ArrayRef,
            false,
        )])
        .unwrap();
        crate::write::write_parquet(&old, &batch, &[]).unwrap();
        let err = SplitRows::read(&old, &seqs).unwrap_err().to_string();
        assert!(
            err.contains("old.parquet")
                && err.contains("version 1")
                && err.contains("rerun the encode stage"),
            "{err}"
        );
        // features.json of version 1 (no field) likewise.
        std::fs::write(dir.path().join(files::FEATURES), "{\"user_table_size\": 3}").unwrap();
        let err = FeatureManifest::read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("features.json") && err.contains("version 1"),
            "{err}"
        );
    }

    #[test]
    fn histories_are_the_newest_items_before_the_position() {
        let seqs = sample();
        assert_eq!(seqs.history(2, 3, 2), &[6, 7]);
        assert_eq!(seqs.history(2, 0, 2), &[] as &[u32]);
        // A serving row sits one past the end.
        assert_eq!(seqs.history(2, 4, 50), &[5, 6, 7, 8]);
        assert_eq!(seqs.training(2), &[5, 6]);
        assert_eq!(seqs.training(3), &[9]);
        assert_eq!(seqs.sequence(0), &[] as &[u32]);
        assert_eq!(seqs.sequence(99), &[] as &[u32]);
    }
}
