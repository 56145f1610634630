//! Per-user candidate lists as Parquet, one row per (user, rank):
//! `user_id` (original id), `rank` (Int32, 1 = best), `item_id` (original id), `score`
//! (Float32, the inner product of the user and item embeddings), sorted by user then rank.
//! Key-value metadata: `recall.k`, and `recall.search` (`exact` or `index`: how they were
//! ranked).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float32Array, Int32Array, RecordBatch};
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
/// is `item_ids[i - first_item]`. Returns the number of rows written. The rows are built and
/// written a few thousand users at a time: at a million users and K = 100 the whole table at
/// once was 100 M rows of row numbers, ids and scores (several GB) beside the ranking itself.
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
    // Every item index has an id before anything is written.
    let known = first_item as usize..first_item as usize + item_ids.len();
    if let Some(&item) = (0..top.users())
        .flat_map(|u| top.list(u))
        .find(|&&item| !known.contains(&(item as usize)))
    {
        return Err(Error::Invalid(format!(
            "candidates: item index {item} has no id ({} known items from index {first_item})",
            item_ids.len()
        )));
    }
    let search = match search {
        CandidateSearch::Exact => "exact",
        CandidateSearch::Index => "index",
    };
    let users_per_batch = (recall_core::write::ROW_GROUP_ROWS / top.k.max(1)).max(1);
    let schema = rows(user_ids, item_ids, first_item, top, 0..0)?.schema();
    let mut written = 0;
    recall_core::write::write_parquet_batches(
        path,
        schema,
        &[
            ("recall.k", top.k.to_string()),
            ("recall.search", search.to_owned()),
        ],
        |sink| {
            for first in (0..top.users()).step_by(users_per_batch) {
                let end = (first + users_per_batch).min(top.users());
                let batch = rows(user_ids, item_ids, first_item, top, first..end)?;
                written += batch.num_rows();
                sink.write(&batch)?;
            }
            Ok(())
        },
    )?;
    Ok(written)
}

/// The candidate rows of the users `users` (rows of `top`), in user then rank order; every
/// item index has an id (checked by [`write`]).
fn rows(
    user_ids: &RawIds,
    item_ids: &RawIds,
    first_item: u32,
    top: &TopK,
    users: std::ops::Range<usize>,
) -> recall_core::Result<RecordBatch> {
    let (mut user_rows, mut item_rows, mut ranks, mut scores) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for u in users {
        for (r, (&item, &score)) in top.list(u).iter().zip(top.scores(u)).enumerate() {
            user_rows.push(u);
            item_rows.push(item as usize - first_item as usize);
            ranks.push(r as i32 + 1);
            scores.push(score);
        }
    }
    recall_core::table::batch(vec![
        ("user_id", user_ids.take(&user_rows).to_array(), false),
        ("rank", Arc::new(Int32Array::from(ranks)), false),
        ("item_id", item_ids.take(&item_rows).to_array(), false),
        ("score", Arc::new(Float32Array::from(scores)), false),
    ])
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

    #[test]
    fn many_users_are_written_in_batches_as_one_table() {
        // 30,000 users x 3 candidates: two batches of users and two row groups.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.parquet");
        let users = 30_000;
        let lists = (0..users)
            .map(|u| {
                (0..3)
                    .map(|r| (((u + r) % 5 + 2) as u32, 1.0 - r as f32 / 4.0))
                    .collect()
            })
            .collect();
        let top = TopK::from_ranked(3, 5, lists);
        let user_ids = RawIds::Int((0..users as i64).map(|u| u * 10).collect());
        let item_ids = RawIds::Int(vec![70, 71, 72, 73, 74]);
        let rows = write(&path, &user_ids, &item_ids, 2, &top, CandidateSearch::Index).unwrap();
        assert_eq!(rows, 3 * users);
        let t = Table::read(&path).unwrap();
        assert_eq!(t.metadata("recall.search"), Some("index"));
        let (u, r, i) = (
            t.ints("user_id").unwrap(),
            t.ints("rank").unwrap(),
            t.ints("item_id").unwrap(),
        );
        for row in [0usize, 1, 65_535, 65_536, 65_537, 3 * users - 1] {
            let (user, rank) = (row / 3, row % 3);
            assert_eq!(u[row], user as i64 * 10, "row {row}");
            assert_eq!(r[row], rank as i64 + 1, "row {row}");
            assert_eq!(i[row], 70 + ((user + rank) % 5) as i64, "row {row}");
        }
    }
}
