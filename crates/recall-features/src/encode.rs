//! The encode stage: canonical interactions (and side tables) in, model-ready Parquet out.
//!
//! Vocabularies and bucket boundaries are fitted on training interactions only (every position
//! that is not a validation or test target), so nothing about held-out targets leaks into the
//! encoding. Outputs are written through `recall_core::encoded`, which owns their contract
//! (listed in `ARCHITECTURE.md`): each user's sequence once, the splits as positions in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, ListBuilder};
use arrow_array::{Array, ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::DataType;
use recall_core::columns::{self as col, OOV_INDEX};
use recall_core::encoded::{LaterTargets, Sequences, SplitRows};
use recall_core::{Error, RawIds, Result, StringBags, Table, ingested};
use serde::{Deserialize, Serialize};

use crate::bucket::Buckets;
use crate::split::{self, Role};
use crate::vocab::{VocabOf, Vocabulary};

const SECONDS_PER_DAY: f64 = 86_400.0;

fn default_max_len() -> usize {
    50
}
fn default_true() -> bool {
    true
}
fn default_min_count() -> u64 {
    1
}
fn default_age_buckets() -> usize {
    10
}

/// Settings of the encode stage (`[encode]` in a pipeline file).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// Longest history kept per example (newest items). Default 50.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Hold out each user's second-to-last interaction for validation. Default true.
    #[serde(default = "default_true")]
    pub validation: bool,
    /// Items seen fewer times in training become out-of-vocabulary. Default 1.
    #[serde(default = "default_min_count")]
    pub item_min_count: u64,
    #[serde(default)]
    pub example_age: ExampleAgeConfig,
    /// User side-table columns to encode.
    #[serde(default)]
    pub user_features: Vec<FeatureSpec>,
    /// Item side-table columns to encode.
    #[serde(default)]
    pub item_features: Vec<FeatureSpec>,
    /// At most this many training examples per user (`{ count = 100, pick = "random" |
    /// "recent", seed = 0 }`), so heavy users do not dominate the loss. Default: no cap.
    #[serde(default)]
    pub max_examples_per_user: Option<split::ExampleCap>,
    /// Only interactions before this time (Unix seconds) are encoded: the data as it stood at
    /// a refresh's cut, such as the end of a day. Every row needs a timestamp. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// A time split instead of leave-last-out: each user's first interaction at or after this
    /// time (Unix seconds) is the test target, with everything before it as history; later
    /// interactions are left out, and so are users with nothing before it. A user with nothing
    /// after it has no test row. Validation is each user's last interaction before the cut.
    /// Every row needs a timestamp. Default: leave-last-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_from: Option<i64>,
    /// With `test_from`: which interactions after the cut are the test row's targets.
    /// `first` (default): the first alone. `after-cut`: every one of them (the query still at
    /// the first, its history everything before the cut), written to `later_targets.parquet`
    /// and never read as history: MovieLens's time-split protocol, which gives a cold-start
    /// measurement enough cold targets where one per user leaves a handful.
    #[serde(default, skip_serializing_if = "TestTargets::is_first")]
    pub test_targets: TestTargets,
    /// Also index the items of the item side table that the vocabulary lacks (cold items:
    /// no training interaction, or fewer than `item_min_count`), after every known item, so
    /// their features can give them a vector and a held-out target among them can be ranked.
    /// A rare item that training histories hold then appears there at its cold index instead
    /// of the OOV row. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cold_items: bool,
    /// The item side-table column that dates each item's release, written to `items.parquet`
    /// as `release_time` (Unix seconds): what an item-age prior measures ages from
    /// (`evaluate.item_age_prior`). Not a model feature. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_release: Option<ItemRelease>,
}

/// `encode.item_release`: `{ column = "year", unit = "year" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ItemRelease {
    /// An integer column of the item side table (null: no date known).
    pub column: String,
    /// What its values are: `seconds` (Unix time, the default) or `year` (a calendar year,
    /// taken as 1 July of it, UTC: the middle of the year a MovieLens title names).
    #[serde(default)]
    pub unit: ReleaseUnit,
}

/// The unit of [`ItemRelease::column`].
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseUnit {
    #[default]
    Seconds,
    Year,
}

impl ReleaseUnit {
    /// A value of the column as Unix seconds; `None` for a year outside 1 to 9999.
    fn seconds(self, value: i64) -> Option<i64> {
        match self {
            ReleaseUnit::Seconds => Some(value),
            ReleaseUnit::Year => (1..=9999).contains(&value).then(|| {
                recall_core::time::days_from_civil(value, 7, 1) * recall_core::time::SECONDS_PER_DAY
            }),
        }
    }
}

/// `table` (the encoded item table, rows in index order) with `release_time` appended: each
/// known item's value of `release.column` in the item side table, in seconds.
fn with_release_times(
    table: RecordBatch,
    items: Option<&Table>,
    vocab: &Vocabulary,
    release: &ItemRelease,
) -> Result<RecordBatch> {
    let key = format!("encode.item_release ({})", release.column);
    let Some(items) = items else {
        return Err(Error::config(
            key,
            "a release column is configured but the ingest output has no item table",
        ));
    };
    let values = items.nullable_ints(&release.column)?;
    let rows = side_rows(&items.ids(col::ITEM_ID)?, vocab);
    let mut times = Vec::with_capacity(rows.len());
    for row in rows {
        let value = row.and_then(|r| values[r]);
        times.push(match value {
            Some(v) => Some(release.unit.seconds(v).ok_or_else(|| {
                Error::config(
                    key.clone(),
                    format!(
                        "{}: {v} is not a year from 1 to 9999 (unit = \"year\"); \
                         use unit = \"seconds\" for Unix times",
                        items.path().display()
                    ),
                )
            })?),
            None => None,
        });
    }
    let times: ArrayRef = Arc::new(Int64Array::from(times));
    recall_core::table::with_column(&table, col::RELEASE_TIME, times, true)
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            max_len: default_max_len(),
            validation: true,
            item_min_count: 1,
            example_age: ExampleAgeConfig::default(),
            user_features: Vec::new(),
            item_features: Vec::new(),
            max_examples_per_user: None,
            before: None,
            test_from: None,
            test_targets: TestTargets::First,
            cold_items: false,
            item_release: None,
        }
    }
}

/// Which interactions after a time split's cut are the test row's targets
/// (`encode.test_targets`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TestTargets {
    /// Each user's first interaction at or after the cut.
    #[default]
    First,
    /// Every interaction at or after the cut.
    AfterCut,
}

impl TestTargets {
    fn is_first(&self) -> bool {
        *self == TestTargets::First
    }
}

/// Example age: how old a training example is relative to the end of the training window.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExampleAgeConfig {
    /// Compute it (needs timestamps; rows without one get a null age and bucket 0). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Number of quantile buckets fitted on training ages. Default 10.
    #[serde(default = "default_age_buckets")]
    pub buckets: usize,
    /// Explicit boundaries in days instead of quantiles.
    #[serde(default)]
    pub boundaries: Option<Vec<f64>>,
}

impl Default for ExampleAgeConfig {
    fn default() -> Self {
        ExampleAgeConfig {
            enabled: true,
            buckets: default_age_buckets(),
            boundaries: None,
        }
    }
}

/// How one side-table column is encoded.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Column in the side table.
    pub column: String,
    pub kind: FeatureKind,
    /// Name of the encoded feature (its `<name>_idx` column, `vocab_<name>.parquet`, the
    /// model's table). Default: the column's name. Lets one column be encoded twice, such as
    /// genres as a bag and its first value as a category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For `categorical` over a list column (List<Utf8> or a `|`-separated string): encode the
    /// list's first value (torch-rechub's `cate_id`, a movie's first genre); an empty list is
    /// missing (OOV). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_of_list: bool,
    /// For `categorical` and `bag`: values rarer than this become OOV. Default 1.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// For `quantile`: number of buckets.
    #[serde(default)]
    pub buckets: Option<usize>,
    /// For `boundaries`: the explicit boundaries.
    #[serde(default)]
    pub boundaries: Option<Vec<f64>>,
}

pub use recall_core::encoded::{
    EncodeStats, EncodedFeature, FeatureKind, FeatureManifest, GrownVocabularies, TimeSplitStats,
    files,
};

/// Everything the stage produces, in memory: the users' sequences, the splits as references
/// into them (age buckets filled in), vocabularies, encoded side tables, `features.json`.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub users: Vocabulary,
    pub items: Vocabulary,
    /// Vocabularies of categorical and bag features, by feature name.
    pub feature_vocabs: Vec<(String, Vocabulary)>,
    pub sequences: Sequences,
    pub train: SplitRows,
    pub valid: SplitRows,
    pub test: SplitRows,
    /// With `encode.test_targets = "after-cut"`: each test user's targets after its first.
    pub later_targets: Option<LaterTargets>,
    pub age_buckets: Option<Buckets>,
    /// Encoded user table: `user_idx`, `user_id`, `<feature>_idx`..., one row per known user.
    pub user_table: RecordBatch,
    /// Encoded item table: `item_idx`, `item_id`, `<feature>_idx`..., one row per known item.
    pub item_table: RecordBatch,
    pub manifest: FeatureManifest,
}

/// Interactions and optional side tables.
#[derive(Debug, Clone)]
pub struct EncodeInput {
    pub interactions: Table,
    pub users: Option<Table>,
    pub items: Option<Table>,
    /// An earlier run's encoding to grow (a warm start): see [`EarlierEncoding`].
    pub grow_from: Option<EarlierEncoding>,
}

/// What an earlier encode fitted, read back so a new encode grows it instead of fitting anew
/// (a warm start, whose model keeps the earlier model's rows): every user, item and feature
/// value keeps its index and new ones are appended; bucket boundaries (example age included)
/// and dense scalings are kept as they were.
#[derive(Debug, Clone)]
pub struct EarlierEncoding {
    pub dir: PathBuf,
    pub users: Vocabulary,
    pub items: Vocabulary,
    pub feature_vocabs: Vec<(String, Vocabulary)>,
    pub manifest: FeatureManifest,
}

impl EarlierEncoding {
    /// Reads the vocabularies and `features.json` of an encode output directory.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let manifest = FeatureManifest::read(dir)?;
        let vocab = |name: &str| Vocabulary::load(&dir.join(files::vocab(name)));
        let feature_vocabs = manifest
            .user_features
            .iter()
            .chain(&manifest.item_features)
            .filter(|f| matches!(f.kind, FeatureKind::Categorical | FeatureKind::Bag))
            .map(|f| Ok((f.name.clone(), vocab(&f.name)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(EarlierEncoding {
            dir: dir.to_owned(),
            users: vocab(col::USER_ID)?,
            items: vocab(col::ITEM_ID)?,
            feature_vocabs,
            manifest,
        })
    }

    fn feature(&self, side: &str, name: &str) -> Option<&EncodedFeature> {
        let features = if side == "user" {
            &self.manifest.user_features
        } else {
            &self.manifest.item_features
        };
        features.iter().find(|f| f.name == name)
    }

    fn feature_vocab(&self, name: &str) -> Option<&Vocabulary> {
        self.feature_vocabs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// `fresh` grown from the earlier vocabulary `earlier` (named `name` in errors).
    fn grow(&self, earlier: &Vocabulary, fresh: Vocabulary, name: &str) -> Result<Vocabulary> {
        let file = self.dir.join(files::vocab(name));
        earlier.grown(&fresh, &file.display().to_string())
    }
}

impl EncodeInput {
    /// Reads `interactions.parquet` and, where present, `users.parquet` and `items.parquet`
    /// from an ingest output directory (`recall_core::ingested`).
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let interactions = Table::read_columns(
            &dir.join(ingested::INTERACTIONS),
            Some(&[col::USER_ID, col::ITEM_ID, col::SEQ, col::TIMESTAMP]),
        )?;
        let side = |name: &str| -> Result<Option<Table>> {
            let path = dir.join(name);
            path.exists().then(|| Table::read(&path)).transpose()
        };
        Ok(EncodeInput {
            interactions,
            users: side(ingested::USERS)?,
            items: side(ingested::ITEMS)?,
            grow_from: None,
        })
    }
}

impl FeatureSpec {
    /// The encoded feature's name: `name`, else the column's.
    pub fn feature_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.column)
    }
}

impl EncodeConfig {
    /// Refuses settings that contradict each other, naming the key (every encode path calls
    /// it first).
    pub fn validate(&self) -> Result<()> {
        if self.max_len == 0 {
            return Err(Error::config("encode.max_len", "must be at least 1"));
        }
        if self.test_targets == TestTargets::AfterCut && self.test_from.is_none() {
            return Err(Error::config(
                "encode.test_targets",
                "\"after-cut\" needs a time split: set `test_from` (the cut) or leave \
                 `test_targets` out",
            ));
        }
        for (side, specs) in [
            ("user_features", &self.user_features),
            ("item_features", &self.item_features),
        ] {
            let mut names = std::collections::HashSet::new();
            for (i, spec) in specs.iter().enumerate() {
                let key = format!("encode.{side}[{i}] ({})", spec.column);
                if !names.insert(spec.feature_name()) {
                    return Err(Error::config(
                        key,
                        format!(
                            "a second feature named {:?}: give one of them another `name`",
                            spec.feature_name()
                        ),
                    ));
                }
                if spec.first_of_list && spec.kind != FeatureKind::Categorical {
                    return Err(Error::config(
                        key,
                        "`first_of_list` needs kind = \"categorical\"",
                    ));
                }
                match spec.kind {
                    FeatureKind::Quantile if spec.buckets.is_none_or(|b| b < 2) => {
                        return Err(Error::config(
                            key,
                            "kind = \"quantile\" needs `buckets` >= 2",
                        ));
                    }
                    FeatureKind::Boundaries if spec.boundaries.is_none() => {
                        return Err(Error::config(
                            key,
                            "kind = \"boundaries\" needs `boundaries`",
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Groups rows by user (first-appearance order) and orders each group by `seq`; returns the
/// row order, the group starts and the row of each group's first row.
fn group_rows(table: &Table, users: &RawIds, seq: &[i64]) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut group_of_row = Vec::with_capacity(users.len());
    match users {
        RawIds::Int(v) => {
            let mut map: HashMap<i64, u32> = HashMap::new();
            for x in v {
                let next = map.len() as u32;
                group_of_row.push(*map.entry(*x).or_insert(next));
            }
        }
        RawIds::Str(a) => {
            let mut map: HashMap<&str, u32> = HashMap::new();
            for x in a.iter() {
                let next = map.len() as u32;
                group_of_row.push(*map.entry(x.unwrap_or_default()).or_insert(next));
            }
        }
    }
    let mut order: Vec<usize> = (0..users.len()).collect();
    let key = |r: usize| (group_of_row[r], seq[r]);
    // Canonical ingest output is already grouped and ordered; only sort when it is not.
    if !order.windows(2).all(|w| key(w[0]) <= key(w[1])) {
        order.sort_unstable_by_key(|&r| key(r));
    }
    let mut starts = vec![0];
    for i in 1..order.len() {
        let (a, b) = (key(order[i - 1]), key(order[i]));
        if a == b {
            return Err(Error::invalid(
                format!("{}, column `{}`", table.path().display(), col::SEQ),
                format!(
                    "user {} has two rows with seq {} (rows {} and {}); seq must number each \
                     user's interactions uniquely: re-run ingest",
                    users.display(order[i]),
                    a.1,
                    order[i - 1],
                    order[i]
                ),
            ));
        }
        if a.0 != b.0 {
            starts.push(i);
        }
    }
    starts.push(order.len());
    Ok((order, starts))
}

/// Values of a categorical side column, integers or strings, nulls kept.
enum Categorical {
    Int(Vec<Option<i64>>),
    Str(Vec<Option<String>>),
}

fn categorical(table: &Table, column: &str, first_of_list: bool) -> Result<Categorical> {
    if first_of_list {
        return Ok(Categorical::Str({
            let bags = bag(table, column)?;
            (0..bags.len())
                .map(|r| bags.row(r).next().map(str::to_owned))
                .collect()
        }));
    }
    match table.column(column)?.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(Categorical::Str(
            table
                .nullable_strings(column)?
                .iter()
                .map(|s| s.map(str::to_owned))
                .collect(),
        )),
        _ => Ok(Categorical::Int(table.nullable_ints(column)?)),
    }
}

fn bag(table: &Table, column: &str) -> Result<StringBags> {
    match table.column(column)?.data_type() {
        DataType::List(_) => table.string_lists(column),
        _ => {
            let mut bags = StringBags::default();
            for s in table.nullable_strings(column)?.iter() {
                bags.extend_row(
                    s.into_iter()
                        .flat_map(|s| s.split('|'))
                        .filter(|g| !g.is_empty()),
                );
                bags.end_row();
            }
            Ok(bags)
        }
    }
}

/// The side table's row of each known entity (its first, where the id repeats), `None` where
/// the table lacks it. Ids compare as `Vocabulary::encode` compares them against the side
/// table's ids: the same type by value, integer entities against string side ids as text, and
/// string entities never equal to integer side ids. Memory: one lookup of the side table's
/// ids against the vocabulary's own index, no second index (10 M items).
fn side_rows(side_ids: &RawIds, vocab: &Vocabulary) -> Vec<Option<usize>> {
    match (side_ids, vocab) {
        (RawIds::Str(side), Vocabulary::Int(known)) => {
            let mut first: HashMap<&str, usize> = HashMap::with_capacity(side.len());
            for r in 0..side.len() {
                first.entry(side.value(r)).or_insert(r);
            }
            known
                .known()
                .iter()
                .map(|x| first.get(x.to_string().as_str()).copied())
                .collect()
        }
        (RawIds::Int(_), Vocabulary::Str(_)) => vec![None; vocab.known_len()],
        _ => {
            let mut rows = vec![None; vocab.known_len()];
            for (r, idx) in vocab.encode(side_ids).into_iter().enumerate() {
                if idx != OOV_INDEX {
                    rows[(idx - col::FIRST_KNOWN_INDEX) as usize].get_or_insert(r);
                }
            }
            rows
        }
    }
}

/// Encodes the configured columns of a side table for the known entities of `vocab`, whose
/// rows come out in index order. Entities missing from the side table get OOV (categorical),
/// an empty bag, or bucket 0.
fn encode_side(
    table: Option<&Table>,
    vocab: &Vocabulary,
    specs: &[FeatureSpec],
    side: &str,
    earlier: Option<&EarlierEncoding>,
    feature_vocabs: &mut Vec<(String, Vocabulary)>,
) -> Result<(RecordBatch, Vec<EncodedFeature>)> {
    let (id_column, idx_column) = if side == "user" {
        (col::USER_ID, col::USER_IDX)
    } else {
        (col::ITEM_ID, col::ITEM_IDX)
    };
    let known = vocab.raw_ids();
    let n = known.len();
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            idx_column.to_owned(),
            Arc::new(Int32Array::from_iter_values(
                col::FIRST_KNOWN_INDEX..n as i32 + col::FIRST_KNOWN_INDEX,
            )),
        ),
        (id_column.to_owned(), known.to_array()),
    ];
    let mut described = Vec::new();
    let Some(table) = table else {
        if let Some(spec) = specs.first() {
            return Err(Error::config(
                format!("encode.{side}_features ({})", spec.column),
                format!("features are configured but the ingest output has no {side} table"),
            ));
        }
        return Ok((to_batch(columns)?, described));
    };
    table.require_rows()?;
    let rows = side_rows(&table.ids(id_column)?, vocab);

    for spec in specs {
        let name = spec.feature_name().to_owned();
        let column = spec.column.as_str();
        let out_col = col::encoded(&name);
        let key = format!("encode.{side}_features ({name})");
        // With an earlier encoding to grow, the feature as it encoded it.
        let before = earlier.and_then(|e| e.feature(side, &name));
        if let Some(b) = before.filter(|b| b.kind != spec.kind) {
            return Err(Error::config(
                key,
                format!(
                    "kind {:?} here, but the earlier run grown from ({}) encoded it as {:?}: \
                     keep its kind, or give the feature another `name`",
                    spec.kind,
                    earlier.map_or_else(String::new, |e| e.dir.display().to_string()),
                    b.kind
                ),
            ));
        }
        let grow = |fresh: Vocabulary| -> Result<Vocabulary> {
            match earlier.and_then(|e| e.feature_vocab(&name).map(|v| (e, v))) {
                Some((e, v)) => e.grow(v, fresh, &name),
                None => Ok(fresh),
            }
        };
        let mut out_col = out_col;
        let mut scaling = None;
        let (array, table_size, boundaries): (ArrayRef, usize, Option<Vec<f64>>) = match spec.kind {
            FeatureKind::Dense => {
                let values = table.nullable_floats(column)?;
                let present: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.and_then(|r| values[r]).map(f64::from))
                    .collect();
                if let Some(bad) = present.iter().find(|v| !v.is_finite()) {
                    return Err(Error::config(
                        key,
                        format!("dense values must be finite numbers, found {bad}"),
                    ));
                }
                let (mean, std) = before.and_then(|f| f.scaling).unwrap_or_else(|| {
                    let n = present.len().max(1) as f64;
                    let mean = present.iter().sum::<f64>() / n;
                    let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
                });
                scaling = Some((mean, std));
                out_col = format!("{name}_dense");
                let standardised: Vec<f32> = rows
                    .iter()
                    .map(|r| {
                        r.and_then(|r| values[r])
                            .map_or(0.0, |v| ((f64::from(v) - mean) / std) as f32)
                    })
                    .collect();
                (Arc::new(Float32Array::from(standardised)), 0, None)
            }
            FeatureKind::Categorical => {
                let values = categorical(table, column, spec.first_of_list)?;
                let fresh = match &values {
                    Categorical::Int(values) => Vocabulary::Int(VocabOf::fit(
                        rows.iter().flatten().filter_map(|&r| values[r].as_ref()),
                        spec.min_count,
                    )),
                    Categorical::Str(values) => Vocabulary::Str(VocabOf::fit(
                        rows.iter().flatten().filter_map(|&r| values[r].as_deref()),
                        spec.min_count,
                    )),
                };
                let v = grow(fresh)?;
                let encoded: Vec<i32> = rows
                    .iter()
                    .map(|r| match &values {
                        Categorical::Int(values) => r
                            .and_then(|r| values[r])
                            .map_or(OOV_INDEX, |x| v.index_of_int(x)),
                        Categorical::Str(values) => r
                            .and_then(|r| values[r].as_deref())
                            .map_or(OOV_INDEX, |x| v.index_of_str(x)),
                    })
                    .collect();
                let size = v.table_size();
                feature_vocabs.push((name.clone(), v));
                (Arc::new(Int32Array::from(encoded)), size, None)
            }
            FeatureKind::Bag => {
                let values = bag(table, column)?;
                let fresh = Vocabulary::Str(VocabOf::fit(
                    rows.iter().flatten().flat_map(|&r| values.row(r)),
                    spec.min_count,
                ));
                let v = grow(fresh)?;
                let mut builder = ListBuilder::new(Int32Builder::new());
                for r in &rows {
                    for g in r.iter().flat_map(|&r| values.row(r)) {
                        builder.values().append_value(v.index_of_str(g));
                    }
                    builder.append(true);
                }
                let size = v.table_size();
                feature_vocabs.push((name.clone(), v));
                (Arc::new(builder.finish()), size, None)
            }
            FeatureKind::Quantile | FeatureKind::Boundaries => {
                let values = table.nullable_floats(column)?;
                let present = || {
                    rows.iter()
                        .map(|r| r.and_then(|r| values[r]).map(f64::from))
                };
                let buckets = match before.and_then(|f| f.boundaries.clone()) {
                    Some(kept) => Buckets::fixed(kept, &key)?,
                    None if spec.kind == FeatureKind::Quantile => {
                        Buckets::quantiles(present().flatten(), spec.buckets.unwrap_or(0), &key)?
                    }
                    None => Buckets::fixed(spec.boundaries.clone().unwrap_or_default(), &key)?,
                };
                let encoded: Vec<i32> = present().map(|x| buckets.bucket(x)).collect();
                (
                    Arc::new(Int32Array::from(encoded)),
                    buckets.table_size(),
                    Some(buckets.boundaries().to_vec()),
                )
            }
        };
        columns.push((out_col.clone(), array));
        let source = (column != name).then(|| column.to_owned());
        described.push(EncodedFeature {
            name,
            column: out_col,
            kind: spec.kind,
            table_size,
            boundaries,
            scaling,
            source,
            first_of_list: spec.first_of_list,
        });
    }
    Ok((to_batch(columns)?, described))
}

/// A time split of grouped rows (`encode.test_from`): each group is cut after its first row
/// at or after `cut` (its test target), a group with no row before `cut` is left out, and a
/// group with none after it keeps every row and has no test target. Rows follow `seq` order,
/// so a row after the test target is left out even if its timestamp is earlier. With
/// `keep_later` the rows after each test target are returned as (kept group, row) pairs
/// instead of left out ([`TestTargets::AfterCut`]).
fn time_split(
    order: Vec<usize>,
    starts: &[usize],
    timestamps: &[Option<i64>],
    cut: i64,
    keep_later: bool,
) -> TimeSplit {
    let mut kept = Vec::with_capacity(order.len());
    let mut new_starts = vec![0];
    let mut has_test = Vec::new();
    let mut later = Vec::new();
    let mut stats = TimeSplitStats {
        test_from: cut,
        ..TimeSplitStats::default()
    };
    for g in 0..starts.len() - 1 {
        let rows = &order[starts[g]..starts[g + 1]];
        let first_after = rows
            .iter()
            .position(|&r| timestamps[r].is_some_and(|t| t >= cut));
        match first_after {
            Some(0) => {
                stats.users_only_after += 1;
                stats.rows_left_out += rows.len();
                continue;
            }
            Some(p) => {
                kept.extend_from_slice(&rows[..=p]);
                if keep_later {
                    let group = has_test.len();
                    later.extend(rows[p + 1..].iter().map(|&r| (group, r)));
                } else {
                    stats.rows_left_out += rows.len() - p - 1;
                }
                has_test.push(true);
            }
            None => {
                kept.extend_from_slice(rows);
                stats.users_only_before += 1;
                has_test.push(false);
            }
        }
        new_starts.push(kept.len());
    }
    stats.later_targets = keep_later.then_some(later.len());
    TimeSplit {
        order: kept,
        starts: new_starts,
        has_test,
        later,
        stats: Some(stats),
    }
}

/// The grouped rows encode goes on with: which groups have a test row, the later targets
/// (kept group, source row) and, with a time split, its counts.
struct TimeSplit {
    order: Vec<usize>,
    starts: Vec<usize>,
    has_test: Vec<bool>,
    later: Vec<(usize, usize)>,
    stats: Option<TimeSplitStats>,
}

fn to_batch(columns: Vec<(String, ArrayRef)>) -> Result<RecordBatch> {
    recall_core::table::batch(
        columns
            .iter()
            .map(|(n, a)| (n.as_str(), a.clone(), false))
            .collect(),
    )
}

/// The error for a time cut (`key`: `encode.before` or `encode.test_from`) on `file`, whose
/// rows do not all have a timestamp; `what` says where (`has none at row 7`). One wording for
/// the in-memory path and the engines.
pub fn no_timestamp(key: &str, file: &Path, what: &str) -> Error {
    Error::config(
        key,
        format!(
            "a time cut needs a timestamp on every row, but {} {what} (column `{}`); leave `{}` \
             out for this data",
            file.display(),
            col::TIMESTAMP,
            key.trim_start_matches("encode.")
        ),
    )
}

/// Runs the encode stage in memory.
pub fn encode(input: &EncodeInput, config: &EncodeConfig) -> Result<Encoded> {
    let _span = tracing::info_span!("encode").entered();
    config.validate()?;
    let table = &input.interactions;
    table.require_rows()?;
    let mut users_raw = table.ids(col::USER_ID)?;
    let mut items_raw = table.ids(col::ITEM_ID)?;
    let mut seq = table.ints(col::SEQ)?;
    let mut timestamps = if table.has_column(col::TIMESTAMP) {
        table.nullable_ints(col::TIMESTAMP)?
    } else {
        vec![None; table.num_rows()]
    };
    let require_timestamps = |key: &str| match timestamps.iter().position(Option::is_none) {
        Some(row) => Err(no_timestamp(
            key,
            table.path(),
            &format!("has none at row {row}"),
        )),
        None => Ok(()),
    };
    if config.test_from.is_some() {
        require_timestamps("encode.test_from")?;
    }
    let mut rows_after_cut = 0;
    if let Some(cut) = config.before {
        require_timestamps("encode.before")?;
        let kept: Vec<usize> = (0..timestamps.len())
            .filter(|&r| timestamps[r].is_some_and(|t| t < cut))
            .collect();
        if kept.is_empty() {
            return Err(Error::config(
                "encode.before",
                format!(
                    "no interaction of {} is before {cut}: the cut is earlier than the data",
                    table.path().display()
                ),
            ));
        }
        rows_after_cut = timestamps.len() - kept.len();
        users_raw = users_raw.take(&kept);
        items_raw = items_raw.take(&kept);
        seq = kept.iter().map(|&r| seq[r]).collect();
        timestamps = kept.iter().map(|&r| timestamps[r]).collect();
    }
    let interactions = seq.len();

    let (order, starts) = group_rows(table, &users_raw, &seq)?;
    let keep_later = config.test_targets == TestTargets::AfterCut;
    let TimeSplit {
        order,
        starts,
        has_test,
        later,
        stats: time_split,
    } = match config.test_from {
        Some(cut) => time_split(order, &starts, &timestamps, cut, keep_later),
        None => TimeSplit {
            has_test: vec![true; starts.len() - 1],
            order,
            starts,
            later: Vec::new(),
            stats: None,
        },
    };
    let n_users = starts.len() - 1;
    // Role of every row, in grouped order.
    let mut train_rows = Vec::with_capacity(order.len());
    for u in 0..n_users {
        let n = starts[u + 1] - starts[u];
        for p in 0..n {
            if split::role_in(p, n, config.validation, has_test[u]) == Role::Train {
                train_rows.push(order[starts[u] + p]);
            }
        }
    }
    let users_fitted = Vocabulary::fit(&users_raw, train_rows.iter().copied(), 1);
    let items_fitted = Vocabulary::fit(
        &items_raw,
        train_rows.iter().copied(),
        config.item_min_count,
    );
    drop(train_rows);
    let sides = input.sides();
    let (user_vocab, item_vocab, cold_items) =
        finish_vocabularies(users_fitted, items_fitted, &sides, config)?;
    let items_enc = item_vocab.encode(&items_raw.take(&order));
    let group_first: Vec<usize> = starts[..n_users].iter().map(|&s| order[s]).collect();
    let users_enc = user_vocab.encode(&users_raw.take(&group_first));
    // Later targets: the group's user, the item as the final vocabulary has it.
    let later_rows: Vec<usize> = later.iter().map(|&(_, r)| r).collect();
    let later_targets = keep_later.then(|| LaterTargets {
        user: later.iter().map(|&(g, _)| users_enc[g] as u32).collect(),
        item: item_vocab
            .encode(&items_raw.take(&later_rows))
            .iter()
            .map(|&i| i as u32)
            .collect(),
    });
    let grouped = GroupedInteractions {
        users: users_enc.iter().map(|&u| u as u32).collect(),
        timestamps: order.iter().map(|&r| timestamps[r]).collect(),
        starts,
        items: items_enc,
        has_test,
    };
    let source = SourceCounts {
        interactions,
        rows_after_cut,
        time_split,
        cold_items,
    };
    let mut encoded = encode_grouped(grouped, user_vocab, item_vocab, source, &sides, config)?;
    encoded.later_targets = later_targets;
    Ok(encoded)
}

/// Interactions grouped by user, each group in `seq` order, encoded with the final
/// vocabularies: what the in-memory grouping (and an engine's sort, `recall-engine`) hands
/// the rest of encode, [`encode_grouped`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupedInteractions {
    /// User index of each group; groups in the order of each user's first row in the source.
    pub users: Vec<u32>,
    /// Group `g`'s rows are `starts[g]..starts[g + 1]` (one more entry than `users`).
    pub starts: Vec<usize>,
    /// Item index of each row ([`OOV_INDEX`] for an item the vocabulary lacks).
    pub items: Vec<i32>,
    /// Timestamp of each row, where the source has one (null where not).
    pub timestamps: Int64Array,
    /// Whether each group has a test target (false only for users a time split left without
    /// one).
    pub has_test: Vec<bool>,
}

impl Default for GroupedInteractions {
    fn default() -> Self {
        GroupedInteractions {
            users: Vec::new(),
            starts: Vec::new(),
            items: Vec::new(),
            timestamps: Int64Array::from(Vec::<i64>::new()),
            has_test: Vec::new(),
        }
    }
}

/// What the source's rows came to before grouping, for the stage report.
#[derive(Debug, Clone, Default)]
pub struct SourceCounts {
    /// Interactions encoded (after `encode.before`'s cut).
    pub interactions: usize,
    /// Interactions `encode.before` left out.
    pub rows_after_cut: usize,
    pub time_split: Option<TimeSplitStats>,
    /// Items [`finish_vocabularies`] appended from the item side table.
    pub cold_items: usize,
}

/// The side tables and an earlier encoding to grow: the inputs of encode other than the
/// interactions.
#[derive(Debug, Clone, Copy, Default)]
pub struct SideInputs<'a> {
    pub users: Option<&'a Table>,
    pub items: Option<&'a Table>,
    pub grow_from: Option<&'a EarlierEncoding>,
}

impl EncodeInput {
    /// The inputs besides the interactions.
    pub fn sides(&self) -> SideInputs<'_> {
        SideInputs {
            users: self.users.as_ref(),
            items: self.items.as_ref(),
            grow_from: self.grow_from.as_ref(),
        }
    }
}

/// The final vocabularies from the ones fitted on training interactions: grown from the
/// earlier encoding where there is one, then (with `encode.cold_items`) with the item side
/// table's unseen items appended. Returns them and the number of cold items.
pub fn finish_vocabularies(
    users: Vocabulary,
    items: Vocabulary,
    sides: &SideInputs<'_>,
    config: &EncodeConfig,
) -> Result<(Vocabulary, Vocabulary, usize)> {
    let (mut users, mut items) = (users, items);
    if let Some(earlier) = sides.grow_from {
        users = earlier.grow(&earlier.users, users, col::USER_ID)?;
        items = earlier.grow(&earlier.items, items, col::ITEM_ID)?;
    }
    let mut cold_items = 0;
    if config.cold_items {
        let side = sides.items.ok_or_else(|| {
            Error::config(
                "encode.cold_items",
                "cold items come from the item side table, and the ingest output has none",
            )
        })?;
        let listed = side.ids(col::ITEM_ID)?;
        let with_cold = items.with_unseen(&listed);
        cold_items = with_cold.known_len() - items.known_len();
        items = with_cold;
    }
    tracing::info!(
        users = users.known_len(),
        items = items.known_len(),
        cold_items,
        "vocabularies fitted"
    );
    Ok((users, items, cold_items))
}

/// The rest of encode once the interactions are grouped and indexed: the sequences, the
/// splits, example age, the side tables and the manifest.
pub fn encode_grouped(
    grouped: GroupedInteractions,
    user_vocab: Vocabulary,
    item_vocab: Vocabulary,
    source: SourceCounts,
    sides: &SideInputs<'_>,
    config: &EncodeConfig,
) -> Result<Encoded> {
    let GroupedInteractions {
        users: users_of_group,
        starts,
        items: items_enc,
        timestamps: ts_ordered,
        has_test,
    } = grouped;
    let n_users = users_of_group.len();
    let grown = sides.grow_from;
    if config
        .max_examples_per_user
        .is_some_and(|cap| cap.count == 0)
    {
        return Err(Error::config(
            "encode.max_examples_per_user.count",
            "must be at least 1 (leave the key out for no cap)",
        ));
    }
    tracing::debug!(rows = items_enc.len(), "grouped; splitting");
    let mut splits = split::build_split(
        &users_of_group,
        &starts,
        &items_enc,
        config.validation,
        config.max_examples_per_user.as_ref(),
        &has_test,
    );
    // Each user's sequence once, in user-index order (the vocabulary orders users by
    // frequency, not as the groups come), with its training prefix and timestamps.
    let table_size = user_vocab.table_size();
    let mut group_of_user = vec![usize::MAX; table_size];
    for (g, &u) in users_of_group.iter().enumerate() {
        if let Some(slot) = group_of_user.get_mut(u as usize) {
            *slot = g;
        }
    }
    let mut offsets = Vec::with_capacity(table_size + 1);
    let mut seq_items = Vec::with_capacity(items_enc.len());
    let mut seq_times = Int64Builder::with_capacity(items_enc.len());
    let mut train_len = Vec::with_capacity(table_size);
    offsets.push(0);
    for &g in &group_of_user {
        if g != usize::MAX {
            let (s, e) = (starts[g], starts[g + 1]);
            seq_items.extend(items_enc[s..e].iter().map(|&i| i as u32));
            seq_times.append_array(&ts_ordered.slice(s, e - s));
            train_len.push(split::training_len_in(e - s, config.validation, has_test[g]) as u32);
        } else {
            train_len.push(0);
        }
        offsets.push(seq_items.len());
    }
    // The grouped copies go before the next allocations: at 100 M rows each is 0.4-0.8 GB.
    drop(items_enc);
    drop(ts_ordered);
    let seq_times = seq_times.finish();
    let has_timestamps = seq_times.null_count() < seq_times.len();
    let sequences = Sequences::new(
        offsets,
        seq_items,
        train_len,
        has_timestamps.then_some(seq_times),
    )?;

    tracing::debug!(positions = sequences.total_len(), "sequences built");
    // Example age: days from the example's time to the end of the training window; 0 for the
    // validation and test rows, which stand for "now" at serving time.
    let seqs = &sequences;
    let train_window_end = (0..seqs.users() as u32)
        .flat_map(|u| (0..seqs.training(u).len()).filter_map(move |p| seqs.timestamp(u, p as u32)))
        .max();
    let train_rows_without_timestamp;
    let (age_buckets, age_feature, serving_age_bucket) =
        match (config.example_age.enabled, train_window_end) {
            (true, Some(end)) => {
                // Ages are bucketed as Float32, as version 1 wrote them. Computed where needed
                // rather than kept: one per training example (at 100 M rows the quantiles'
                // own copy is the peak of encode).
                let train = &mut splits.train;
                let (users, positions) = (&train.user, &train.position);
                let age = |r: usize| {
                    sequences
                        .timestamp(users[r], positions[r])
                        .map(|t| f64::from(((end - t) as f64 / SECONDS_PER_DAY).max(0.0) as f32))
                };
                let key = "encode.example_age";
                let kept = grown
                    .and_then(|e| e.manifest.example_age.as_ref())
                    .and_then(|f| f.boundaries.clone());
                let buckets = match kept.as_ref().or(config.example_age.boundaries.as_ref()) {
                    Some(b) => Buckets::fixed(b.clone(), key)?,
                    None => Buckets::quantiles(
                        (0..users.len()).filter_map(age),
                        config.example_age.buckets,
                        key,
                    )?,
                };
                for (r, slot) in train.age_bucket.iter_mut().enumerate() {
                    *slot = buckets.bucket(age(r)) as u32;
                }
                // Bucket 0 is "no timestamp": an age is a finite number of days.
                train_rows_without_timestamp = train.age_bucket.iter().filter(|&&b| b == 0).count();
                let serving = buckets.bucket(Some(0.0)) as u32;
                splits.valid.age_bucket.fill(serving);
                splits.test.age_bucket.fill(serving);
                let feature = EncodedFeature {
                    name: String::from("example_age"),
                    column: col::EXAMPLE_AGE_BUCKET.to_owned(),
                    kind: if config.example_age.boundaries.is_some() {
                        FeatureKind::Boundaries
                    } else {
                        FeatureKind::Quantile
                    },
                    table_size: buckets.table_size(),
                    boundaries: Some(buckets.boundaries().to_vec()),
                    scaling: None,
                    source: None,
                    first_of_list: false,
                };
                (Some(buckets), Some(feature), serving)
            }
            _ => {
                train_rows_without_timestamp = (0..splits.train.len())
                    .filter(|&r| {
                        sequences
                            .timestamp(splits.train.user[r], splits.train.position[r])
                            .is_none()
                    })
                    .count();
                (None, None, 0)
            }
        };

    tracing::debug!("example age bucketed");
    let mut feature_vocabs = Vec::new();
    let (user_table, user_features) = encode_side(
        sides.users,
        &user_vocab,
        &config.user_features,
        "user",
        grown,
        &mut feature_vocabs,
    )?;
    let (item_table, item_features) = encode_side(
        sides.items,
        &item_vocab,
        &config.item_features,
        "item",
        grown,
        &mut feature_vocabs,
    )?;
    let item_table = match &config.item_release {
        Some(release) => with_release_times(item_table, sides.items, &item_vocab, release)?,
        None => item_table,
    };

    let oov = |rows: &SplitRows| {
        (0..rows.len())
            .filter(|&r| sequences.target(rows.user[r], rows.position[r]) == OOV_INDEX as u32)
            .count()
    };
    let stats = EncodeStats {
        interactions: source.interactions,
        rows_after_cut: source.rows_after_cut,
        time_split: source.time_split,
        cold_items: source.cold_items,
        grown: grown.map(|e| {
            let feature_values = |vocabs: &[(String, Vocabulary)]| {
                vocabs.iter().map(|(_, v)| v.known_len()).sum::<usize>()
            };
            let carried_values = feature_values(&e.feature_vocabs);
            GrownVocabularies {
                from: e.dir.display().to_string(),
                users_carried: e.users.known_len(),
                users_new: user_vocab.known_len() - e.users.known_len(),
                items_carried: e.items.known_len(),
                items_new: item_vocab.known_len() - e.items.known_len(),
                feature_values_carried: carried_values,
                feature_values_new: feature_values(&feature_vocabs).saturating_sub(carried_values),
            }
        }),
        users: user_vocab.known_len(),
        items: item_vocab.known_len(),
        train_examples: splits.train.len(),
        valid_rows: splits.valid.len(),
        test_rows: splits.test.len(),
        users_without_test: (0..n_users)
            .filter(|&u| starts[u + 1] - starts[u] < 2 || !has_test[u])
            .count(),
        test_targets_oov: oov(&splits.test),
        valid_targets_oov: oov(&splits.valid),
        train_targets_oov: splits.train_targets_oov,
        train_rows_without_timestamp,
        max_examples_per_user: config.max_examples_per_user,
    };
    tracing::info!(?stats, "encoded");
    let manifest = FeatureManifest {
        contract_version: recall_core::encoded::CONTRACT_VERSION,
        user_table_size: user_vocab.table_size(),
        item_table_size: item_vocab.table_size(),
        max_len: config.max_len,
        validation: config.validation,
        example_age: age_feature,
        serving_age_bucket,
        train_window_end: train_window_end.filter(|_| config.example_age.enabled),
        user_features,
        item_features,
        stats,
    };
    Ok(Encoded {
        users: user_vocab,
        items: item_vocab,
        feature_vocabs,
        sequences,
        train: splits.train,
        valid: splits.valid,
        test: splits.test,
        later_targets: None,
        age_buckets,
        user_table,
        item_table,
        manifest,
    })
}

impl Encoded {
    /// Writes every output into `dir` through `recall_core::encoded` (each file atomically,
    /// `features.json` last); returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let _span = tracing::info_span!("write_encoded").entered();
        let mut written = Vec::new();
        let path = dir.join(files::SEQUENCES);
        self.sequences.write(&path)?;
        written.push(path);
        let with_age = self.manifest.example_age.is_some();
        for (name, rows) in [
            (files::TRAIN, &self.train),
            (files::VALID, &self.valid),
            (files::TEST, &self.test),
        ] {
            if name == files::VALID && !self.manifest.validation {
                continue;
            }
            let path = dir.join(name);
            rows.write(&path, with_age)?;
            written.push(path);
        }
        if let Some(later) = &self.later_targets {
            let path = dir.join(files::LATER_TARGETS);
            later.write(&path)?;
            written.push(path);
        }
        for (name, batch) in [
            (files::USERS, &self.user_table),
            (files::ITEMS, &self.item_table),
        ] {
            let path = dir.join(name);
            recall_core::encoded::write_table(&path, batch)?;
            written.push(path);
        }
        let vocabs = [(col::USER_ID, &self.users), (col::ITEM_ID, &self.items)];
        for (name, vocab) in vocabs
            .into_iter()
            .chain(self.feature_vocabs.iter().map(|(n, v)| (n.as_str(), v)))
        {
            let path = dir.join(files::vocab(name));
            vocab.save(&path)?;
            written.push(path);
        }
        written.push(self.manifest.write(dir)?);
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each known entity finds its first row in the side table, by the rules
    /// `Vocabulary::encode` compares ids with.
    #[test]
    fn side_rows_find_each_entitys_first_row() {
        let vocab = Vocabulary::fit(&RawIds::Int(vec![7, 7, 3, 5]), 0..4, 1);
        assert!(matches!(vocab.raw_ids(), RawIds::Int(v) if v == [7, 3, 5]));
        // Integer side ids: 3 twice (the first row counts), 5 absent, 9 unknown.
        let side = RawIds::Int(vec![9, 3, 7, 3]);
        assert_eq!(side_rows(&side, &vocab), vec![Some(2), Some(1), None]);
        // String side ids against integer entities: compared as text.
        let side = RawIds::Str(arrow_array::StringArray::from(vec!["5", "07", "7"]));
        assert_eq!(side_rows(&side, &vocab), vec![Some(2), None, Some(0)]);
        // Integer side ids never equal string entities.
        let vocab = Vocabulary::fit(&RawIds::Str(vec!["7"].into()), 0..1, 1);
        assert_eq!(side_rows(&RawIds::Int(vec![7]), &vocab), vec![None]);
    }

    /// Bags from `|`-separated strings: empty parts and nulls give empty rows, each distinct
    /// string is stored once.
    #[test]
    fn bags_from_separated_strings() {
        let batch = recall_core::table::batch(vec![(
            "genres",
            Arc::new(arrow_array::StringArray::from(vec![
                Some("A|B"),
                None,
                Some("B||C"),
            ])) as ArrayRef,
            true,
        )])
        .unwrap();
        let table = Table::from_batch("items", batch);
        let bags = bag(&table, "genres").unwrap();
        let rows: Vec<Vec<&str>> = (0..bags.len()).map(|r| bags.row(r).collect()).collect();
        assert_eq!(rows, vec![vec!["A", "B"], vec![], vec!["B", "C"]]);
    }
}
