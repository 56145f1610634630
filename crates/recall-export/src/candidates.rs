//! Per-user candidate lists as Parquet, one row per (user, rank):
//! `user_id` (original id), `rank` (Int32, 1 = best), `item_id` (original id), `score`
//! (Float32, the inner product of the user and item embeddings), sorted by user then rank.
//! Key-value metadata: `recall.k`, and `recall.search` (`exact` or `index`: how they were
//! ranked).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float32Array, Int32Array};
use recall_core::RawIds;
use recall_eval::TopK;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How `candidates.parquet` is ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateSearch {
    /// Exact full-catalogue ranking (blocked matrix products over every item). The default:
    /// at a few thousand items it is faster than the index.
    #[default]
    Exact,
    /// Through the serving index this stage builds (what a serving system returns): at a
    /// million items about 6x faster than the exact pass, which then runs only on the probe
    /// users to measure the index's recall (`MEASUREMENTS.md`). Needs `build_index`.
    Index,
}

/// Writes `top` atomically. Row `u` of `top` belongs to `user_ids[u]`; an item index `i` in it
/// is `item_ids[i - first_item]`. Returns the number of rows written.
pub fn write(
    path: &Path,
    user_ids: &RawIds,
    item_ids: &RawIds,
    first_item: u32,
    top: &TopK,
    search: CandidateSearch,
) -> Result<usize> {
    if user_ids.len() != top.users() {
        return Err(Error::Invalid(format!(
            "candidates: {} user ids for {} ranked users",
            user_ids.len(),
            top.users()
        )));
    }
    let (mut user_rows, mut item_rows, mut ranks, mut scores) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for u in 0..top.users() {
        for (r, (&item, &score)) in top.list(u).iter().zip(top.scores(u)).enumerate() {
            let row = (item as usize)
                .checked_sub(first_item as usize)
                .filter(|&row| row < item_ids.len())
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "candidates: item index {item} has no id ({} known items from index {first_item})",
                        item_ids.len()
                    ))
                })?;
            user_rows.push(u);
            item_rows.push(row);
            ranks.push(r as i32 + 1);
            scores.push(score);
        }
    }
    let rows = ranks.len();
    let batch = recall_core::table::batch(vec![
        ("user_id", user_ids.take(&user_rows).to_array(), false),
        ("rank", Arc::new(Int32Array::from(ranks)), false),
        ("item_id", item_ids.take(&item_rows).to_array(), false),
        ("score", Arc::new(Float32Array::from(scores)), false),
    ])?;
    let search = match search {
        CandidateSearch::Exact => "exact",
        CandidateSearch::Index => "index",
    };
    recall_core::write::write_parquet(
        path,
        &batch,
        &[
            ("recall.k", top.k.to_string()),
            ("recall.search", search.to_owned()),
        ],
    )?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recall_core::Table;

    #[test]
    fn lists_are_written_with_original_ids_and_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        let top = TopK::from_ranked(2, 3, vec![vec![(3, 0.9), (2, 0.5)], vec![(4, 0.7)]]);
        let users = RawIds::Int(vec![100, 200]);
        let items = RawIds::Int(vec![7, 8, 9]);
        assert_eq!(
            write(&path, &users, &items, 2, &top, CandidateSearch::Exact).unwrap(),
            3
        );
        let t = Table::read(&path).unwrap();
        assert_eq!(t.ints("user_id").unwrap(), [100, 100, 200]);
        assert_eq!(t.ints("rank").unwrap(), [1, 2, 1]);
        assert_eq!(t.ints("item_id").unwrap(), [8, 7, 9]);
        let bad = TopK::from_ranked(2, 3, vec![vec![(9, 0.9)], vec![]]);
        let err = write(&path, &users, &items, 2, &bad, CandidateSearch::Exact)
            .unwrap_err()
            .to_string();
        assert!(err.contains("item index 9 has no id"), "{err}");
    }
}
