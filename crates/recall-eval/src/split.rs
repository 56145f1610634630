//! The evaluation view of an encoded split, read from the encode stage's Parquet files by their
//! column contract (see `ARCHITECTURE.md`): which user each query row is, its truth, the items
//! the user saw before it (for seen-item filtering) and training popularity.

use std::path::Path;

use recall_core::columns::{HISTORY, TARGET_IDX, USER_IDX, VOCAB_COUNT, VOCAB_INDEX};
use recall_core::{Error, Result, Table};

use crate::topk::Lists;

/// Query rows of one split with their truth and seen items.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSplit {
    /// `user_idx` of each query row.
    pub user_idx: Vec<i32>,
    /// The held-out target(s) of each query row.
    pub truth: Lists,
    /// Items each query row's user interacted with before the target (training positions, and
    /// for test rows the validation target too).
    pub seen: Lists,
    /// Training count of each item index (0 and 1, the reserved slots, count 0).
    pub popularity: Vec<u64>,
}

fn rows_by_user(table: &Table) -> Result<(Vec<i64>, Vec<i64>, Vec<usize>, Vec<i32>)> {
    let users = table.ints(USER_IDX)?;
    let targets = table.ints(TARGET_IDX)?;
    let (offsets, history) = table.int_lists(HISTORY)?;
    Ok((users, targets, offsets, history))
}

impl EvalSplit {
    /// Reads `query` (`test.parquet` or `valid.parquet`) from an encode output directory.
    /// Seen items come from `train.parquet` and, for the test split, `valid.parquet` when it
    /// exists; popularity from `vocab_item_id.parquet`.
    pub fn read(encode_dir: &Path, query: &str) -> Result<Self> {
        let q = Table::read(&encode_dir.join(query))?;
        q.require_rows()?;
        let (q_users, q_targets, _, _) = rows_by_user(&q)?;

        let vocab = Table::read_columns(
            &encode_dir.join("vocab_item_id.parquet"),
            Some(&[VOCAB_INDEX, VOCAB_COUNT]),
        )?;
        let index = vocab.ints(VOCAB_INDEX)?;
        let counts = vocab.ints(VOCAB_COUNT)?;
        let size = index.iter().max().map_or(2, |&m| m as usize + 1);
        let mut popularity = vec![0u64; size];
        for (&i, &c) in index.iter().zip(&counts) {
            popularity[i as usize] = c.max(0) as u64;
        }

        let n_users = q_users.iter().chain(&[0]).max().copied().unwrap_or(0) as usize + 1;
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); n_users];
        let mut sources = vec![encode_dir.join("train.parquet")];
        let valid = encode_dir.join("valid.parquet");
        if query == "test.parquet" && valid.exists() {
            sources.push(valid);
        }
        for path in sources {
            let t = Table::read(&path)?;
            let (users, targets, offsets, history) = rows_by_user(&t)?;
            for (row, (&u, &target)) in users.iter().zip(&targets).enumerate() {
                let Some(list) = seen.get_mut(u as usize) else {
                    continue;
                };
                list.push(target as u32);
                list.extend(
                    history[offsets[row]..offsets[row + 1]]
                        .iter()
                        .map(|&i| i as u32),
                );
            }
        }
        for list in &mut seen {
            list.sort_unstable();
            list.dedup();
        }
        let user_idx: Vec<i32> = q_users.iter().map(|&u| u as i32).collect();
        if let Some(row) = user_idx.iter().position(|&u| u < 0) {
            return Err(Error::invalid(
                format!("{}, row {row}", q.path().display()),
                "negative user_idx",
            ));
        }
        let seen_rows: Vec<Vec<u32>> = user_idx.iter().map(|&u| seen[u as usize].clone()).collect();
        let truth_rows: Vec<Vec<u32>> = q_targets.iter().map(|&t| vec![t as u32]).collect();
        Ok(EvalSplit {
            user_idx,
            truth: Lists::from_rows(&truth_rows),
            seen: Lists::from_rows(&seen_rows),
            popularity,
        })
    }

    pub fn rows(&self) -> usize {
        self.user_idx.len()
    }
}
