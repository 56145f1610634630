//! The encoded data a model trains on, read from the encode stage's files through
//! `recall_core::encoded` (the owner of their contract), never from raw data.

use std::path::Path;

pub use recall_core::encoded::{
    BagFeature, DenseFeature, EntityFeatures, FeatureManifest, Sequences, SideFeature, SplitRows,
};
use recall_core::encoded::{columns, files};
use recall_core::{Error, Result};

/// Everything training and inference need from `encode/`. Histories are borrowed slices of
/// the users' sequences: a split row is a user and a target position, nothing more.
#[derive(Debug, Clone)]
pub struct EncodedData {
    pub user_table_size: usize,
    pub item_table_size: usize,
    pub max_len: usize,
    /// Table size of the example-age buckets (0 when there is no example age).
    pub age_table_size: usize,
    /// The example-age bucket a user is embedded at when the model serves (age 0; what every
    /// validation and test row carries), 0 without example age.
    pub serving_age_bucket: u32,
    pub user_features: Vec<SideFeature>,
    pub item_scalar_features: Vec<SideFeature>,
    pub item_bags: Vec<BagFeature>,
    /// Numeric features fed as they are (encode kind `dense`).
    pub user_dense: Vec<DenseFeature>,
    pub item_dense: Vec<DenseFeature>,
    /// Every user's chronological item sequence.
    pub sequences: Sequences,
    pub train: SplitRows,
    pub valid: SplitRows,
    pub test: SplitRows,
    /// Training interactions per item index: every occurrence in a user's training prefix,
    /// the count `vocab_item_id.parquet` lists (index 1 counts the out-of-vocabulary ones).
    /// Popularity negatives and the popularity baseline both use it.
    pub item_counts: Vec<u64>,
    /// Each user's training interactions, sorted and unique (never drawn as its negatives).
    pub user_positives: Vec<Vec<u32>>,
    /// The first cold item (`encode.cold_items`: indexed from the item side table, no training
    /// interaction; every index from here on is one), `None` without cold items.
    pub first_cold_item: Option<u32>,
}

/// The rows of one forward pass on the user side.
#[derive(Debug, Clone, Copy)]
pub struct UserRows<'a> {
    pub users: &'a [u32],
    pub histories: &'a [&'a [u32]],
    pub ages: &'a [u32],
}

/// The users' sequences of an encode output directory, alone (a warm start's earlier run: what
/// its models trained on).
pub fn read_sequences(dir: &Path) -> Result<Sequences> {
    let m = FeatureManifest::read(dir)?;
    Sequences::read(
        &dir.join(files::SEQUENCES),
        m.user_table_size,
        m.item_table_size,
        false,
    )
}

impl EncodedData {
    /// Reads an encode output directory.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let m = FeatureManifest::read(dir)?;
        let sequences = read_sequences(dir)?;
        let split = |name: &str| SplitRows::read(&dir.join(name), &sequences);
        let train = split(files::TRAIN)?;
        if train.is_empty() {
            return Err(Error::EmptyTable {
                path: dir.join(files::TRAIN),
                detail: ": nothing to train on".into(),
            });
        }
        let valid = if m.validation {
            split(files::VALID)?
        } else {
            SplitRows::default()
        };
        let test = split(files::TEST)?;
        let users = EntityFeatures::read(
            &dir.join(files::USERS),
            columns::USER_IDX,
            &m.user_features,
            m.user_table_size,
        )?;
        let items = EntityFeatures::read(
            &dir.join(files::ITEMS),
            columns::ITEM_IDX,
            &m.item_features,
            m.item_table_size,
        )?;
        let mut item_counts = vec![0u64; m.item_table_size];
        let mut user_positives = Vec::with_capacity(m.user_table_size);
        for u in 0..m.user_table_size as u32 {
            let training = sequences.training(u);
            for &i in training {
                item_counts[i as usize] += 1;
            }
            let mut p = training.to_vec();
            p.sort_unstable();
            p.dedup();
            user_positives.push(p);
        }
        Ok(EncodedData {
            user_table_size: m.user_table_size,
            item_table_size: m.item_table_size,
            max_len: m.max_len,
            age_table_size: m.example_age.map_or(0, |a| a.table_size),
            serving_age_bucket: m.serving_age_bucket,
            user_features: users.categorical,
            item_scalar_features: items.categorical,
            item_bags: items.bags,
            user_dense: users.dense,
            item_dense: items.dense,
            sequences,
            train,
            valid,
            test,
            item_counts,
            user_positives,
            first_cold_item: (m.stats.cold_items > 0)
                .then(|| (m.item_table_size - m.stats.cold_items) as u32),
        })
    }

    /// Histories (borrowed from the sequences), users and age buckets of some rows of a split.
    pub(crate) fn user_rows(
        &self,
        split: &SplitRows,
        rows: &[usize],
    ) -> (Vec<&[u32]>, Vec<u32>, Vec<u32>) {
        (
            rows.iter().map(|&r| self.history(split, r)).collect(),
            rows.iter().map(|&r| split.user[r]).collect(),
            rows.iter().map(|&r| split.age_bucket[r]).collect(),
        )
    }

    /// The history of row `row` of `split`: the user's newest `max_len` items before the
    /// row's position, borrowed from the sequences.
    pub fn history(&self, split: &SplitRows, row: usize) -> &[u32] {
        self.sequences
            .history(split.user[row], split.position[row], self.max_len)
    }

    /// The target item of row `row` of `split`.
    pub fn target(&self, split: &SplitRows, row: usize) -> u32 {
        self.sequences.target(split.user[row], split.position[row])
    }
}
