//! The encoded data a model trains on, read from the encode stage's Parquet files (through
//! `recall-core`, by the column contract in `ARCHITECTURE.md`), and the batches cut from it.

use std::path::Path;

use recall_core::columns::{EXAMPLE_AGE_BUCKET, HISTORY, TARGET_IDX, USER_IDX};
use recall_core::{Error, Result, Table};
use serde::Deserialize;

/// One split: query rows with user, target, history (CSR) and example-age bucket.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub user: Vec<u32>,
    pub target: Vec<u32>,
    pub history_offsets: Vec<usize>,
    pub history: Vec<u32>,
    /// Bucket of the example age (0 when unknown or absent).
    pub age_bucket: Vec<u32>,
    /// Position of the target in its user's sequence.
    pub target_seq: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    pub fn history_of(&self, row: usize) -> &[u32] {
        &self.history[self.history_offsets[row]..self.history_offsets[row + 1]]
    }

    fn read(path: &Path) -> Result<Split> {
        let t = Table::read(path)?;
        let to_u32 = |v: Vec<i64>| v.into_iter().map(|x| x.max(0) as u32).collect::<Vec<_>>();
        let (history_offsets, history) = t.int_lists(HISTORY)?;
        Ok(Split {
            user: to_u32(t.ints(USER_IDX)?),
            target: to_u32(t.ints(TARGET_IDX)?),
            history_offsets,
            history: history.into_iter().map(|x| x.max(0) as u32).collect(),
            age_bucket: if t.has_column(EXAMPLE_AGE_BUCKET) {
                to_u32(t.ints(EXAMPLE_AGE_BUCKET)?)
            } else {
                vec![0; t.num_rows()]
            },
            target_seq: to_u32(t.ints("target_seq")?),
        })
    }
}

/// A categorical side feature: one value per entity row (`values[idx]`), table size.
#[derive(Debug, Clone)]
pub struct SideFeature {
    pub name: String,
    pub table_size: usize,
    pub values: Vec<u32>,
}

/// A dense (numeric, standardised) side feature: one value per entity row.
#[derive(Debug, Clone)]
pub struct DenseFeature {
    pub name: String,
    pub values: Vec<f32>,
}

/// A bag side feature: a list per entity row.
#[derive(Debug, Clone)]
pub struct BagFeature {
    pub name: String,
    pub table_size: usize,
    pub offsets: Vec<usize>,
    pub values: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct Described {
    name: String,
    column: String,
    kind: String,
    table_size: usize,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    user_table_size: usize,
    item_table_size: usize,
    max_len: usize,
    example_age: Option<Described>,
    user_features: Vec<Described>,
    item_features: Vec<Described>,
}

/// Everything training and inference need from `encode/`.
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
    pub train: Split,
    pub valid: Split,
    pub test: Split,
    /// Training count per item index (for popularity sampling and logQ).
    pub item_counts: Vec<u64>,
    /// Sorted training positives per user index (for excluding them from negatives).
    pub user_positives: Vec<Vec<u32>>,
}

/// Side features of one entity table.
type Sides = (Vec<SideFeature>, Vec<BagFeature>, Vec<DenseFeature>);

fn side_features(
    path: &Path,
    idx_column: &str,
    described: &[Described],
    table_size: usize,
) -> Result<Sides> {
    if described.is_empty() {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let t = Table::read(path)?;
    let idx: Vec<usize> = t
        .ints(idx_column)?
        .into_iter()
        .map(|i| i.max(0) as usize)
        .collect();
    if let Some(&bad) = idx.iter().find(|&&i| i >= table_size) {
        return Err(Error::invalid(
            path.display().to_string(),
            format!("index {bad} outside the table of {table_size}"),
        ));
    }
    let (mut scalars, mut bags, mut dense) = (Vec::new(), Vec::new(), Vec::new());
    for d in described {
        if d.kind == "dense" {
            let col = t.nullable_floats(&d.column)?;
            let mut values = vec![0f32; table_size];
            for (row, &i) in idx.iter().enumerate() {
                values[i] = col[row].unwrap_or(0.0);
            }
            dense.push(DenseFeature {
                name: d.name.clone(),
                values,
            });
        } else if d.kind == "bag" {
            let (offsets, values) = t.int_lists(&d.column)?;
            let mut rows: Vec<Vec<u32>> = vec![Vec::new(); table_size];
            for (row, &i) in idx.iter().enumerate() {
                rows[i] = values[offsets[row]..offsets[row + 1]]
                    .iter()
                    .map(|&v| v.max(0) as u32)
                    .collect();
            }
            let mut off = vec![0];
            let mut vals = Vec::new();
            for r in rows {
                vals.extend(r);
                off.push(vals.len());
            }
            bags.push(BagFeature {
                name: d.name.clone(),
                table_size: d.table_size,
                offsets: off,
                values: vals,
            });
        } else {
            let col = t.ints(&d.column)?;
            let mut values = vec![0u32; table_size];
            for (row, &i) in idx.iter().enumerate() {
                values[i] = col[row].max(0) as u32;
            }
            scalars.push(SideFeature {
                name: d.name.clone(),
                table_size: d.table_size,
                values,
            });
        }
    }
    Ok((scalars, bags, dense))
}

impl EncodedData {
    /// Reads an encode output directory.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join("features.json");
        let text = std::fs::read(&manifest_path)
            .map_err(|e| Error::io("cannot read", &manifest_path, e))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
            Error::invalid(
                manifest_path.display().to_string(),
                format!("not a features manifest: {e}"),
            )
        })?;
        let train = Split::read(&dir.join("train.parquet"))?;
        if train.is_empty() {
            return Err(Error::EmptyTable {
                path: dir.join("train.parquet"),
                detail: ": nothing to train on".into(),
            });
        }
        let valid_path = dir.join("valid.parquet");
        let valid = if valid_path.exists() {
            Split::read(&valid_path)?
        } else {
            Split::default()
        };
        let test = Split::read(&dir.join("test.parquet"))?;
        let (user_features, _, user_dense) = side_features(
            &dir.join("users.parquet"),
            USER_IDX,
            &m.user_features,
            m.user_table_size,
        )?;
        let (item_scalar_features, item_bags, item_dense) = side_features(
            &dir.join("items.parquet"),
            "item_idx",
            &m.item_features,
            m.item_table_size,
        )?;

        let mut item_counts = vec![0u64; m.item_table_size];
        let mut user_positives: Vec<Vec<u32>> = vec![Vec::new(); m.user_table_size];
        for row in 0..train.len() {
            let u = train.user[row] as usize;
            item_counts[train.target[row] as usize] += 1;
            user_positives[u].push(train.target[row]);
            // Position 0 of each user is only ever seen in histories.
            if train.target_seq[row] == 1 {
                let first = train.history_of(row)[0];
                item_counts[first as usize] += 1;
                user_positives[u].push(first);
            }
        }
        for p in &mut user_positives {
            p.sort_unstable();
            p.dedup();
        }
        Ok(EncodedData {
            user_table_size: m.user_table_size,
            item_table_size: m.item_table_size,
            max_len: m.max_len,
            age_table_size: m.example_age.map_or(0, |a| a.table_size),
            serving_age_bucket: test.age_bucket.first().copied().unwrap_or(0),
            user_features,
            item_scalar_features,
            item_bags,
            user_dense,
            item_dense,
            train,
            valid,
            test,
            item_counts,
            user_positives,
        })
    }
}
