//! The evaluation view of an encoded split, read through `recall_core::encoded` (the owner of
//! the encode stage's contract): which user each query row is, its truth, every item the user
//! saw before it (for seen-item filtering) and training popularity.

use std::path::Path;

use recall_core::Result;
use recall_core::columns::ITEM_ID;
use recall_core::encoded::{self, FeatureManifest, Sequences, SplitRows, files};

use crate::topk::Lists;

/// Query rows of one split with their truth and seen items.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSplit {
    /// `user_idx` of each query row.
    pub user_idx: Vec<i32>,
    /// The held-out target(s) of each query row.
    pub truth: Lists,
    /// Items each query row's user interacted with before the target: the whole sequence up
    /// to it (every training interaction, and for test rows the validation target too).
    pub seen: Lists,
    /// Training interactions of each item index, as `vocab_item_id.parquet` counts them (0 and
    /// 1, the reserved slots, count 0).
    pub popularity: Vec<u64>,
}

impl EvalSplit {
    /// Reads `query` (`test.parquet` or `valid.parquet`) from an encode output directory.
    pub fn read(encode_dir: &Path, query: &str) -> Result<Self> {
        let m = FeatureManifest::read(encode_dir)?;
        let sequences = Sequences::read(
            &encode_dir.join(files::SEQUENCES),
            m.user_table_size,
            m.item_table_size,
            false,
        )?;
        let path = encode_dir.join(query);
        let rows = SplitRows::read(&path, &sequences)?;
        if rows.is_empty() {
            return Err(recall_core::Error::EmptyTable {
                path,
                detail: String::from(": the stage needs at least one row"),
            });
        }
        let vocab = encoded::read_vocabulary(&encode_dir.join(files::vocab(ITEM_ID)))?;
        let first = recall_core::columns::FIRST_KNOWN_INDEX as usize;
        let mut popularity = vec![0u64; first + vocab.counts.len()];
        popularity[first..].copy_from_slice(&vocab.counts);

        let truth: Vec<Vec<u32>> = (0..rows.len())
            .map(|r| vec![sequences.target(rows.user[r], rows.position[r])])
            .collect();
        Ok(EvalSplit {
            user_idx: rows.user.iter().map(|&u| u as i32).collect(),
            truth: Lists::from_rows(&truth),
            seen: seen_before_targets(&sequences, &rows),
            popularity,
        })
    }

    pub fn rows(&self) -> usize {
        self.user_idx.len()
    }
}

/// The seen-item filter's lists: for each query row, every item its user interacted with before
/// the row's target (the whole sequence up to it), sorted and unique. The one definition the
/// evaluate stage and training's filtered validation (`exclude_seen`) share.
pub fn seen_before_targets(sequences: &Sequences, rows: &SplitRows) -> Lists {
    let seen: Vec<Vec<u32>> = (0..rows.len())
        .map(|r| {
            let mut before = sequences
                .history(rows.user[r], rows.position[r], usize::MAX)
                .to_vec();
            before.sort_unstable();
            before.dedup();
            before
        })
        .collect();
    Lists::from_rows(&seen)
}
