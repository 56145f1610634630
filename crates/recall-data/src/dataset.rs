//! The canonical dataset every reader produces: interactions ordered per user, plus optional
//! user and item side tables. See `ARCHITECTURE.md` for the column contract.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use recall_core::{Error, RawIds, Result, columns as col, ingested};
use serde::{Deserialize, Serialize};

/// Interactions as read, before ordering. `order` is the key that sorts a user's events in time
/// (a timestamp or a given sequence number); ties keep their order in the source.
#[derive(Debug, Clone)]
pub struct Events {
    pub user_id: RawIds,
    pub item_id: RawIds,
    pub rating: Vec<Option<f32>>,
    pub timestamp: Vec<Option<i64>>,
    pub order: Vec<i64>,
}

/// Interactions grouped by user (ascending raw id) and, within a user, in chronological order,
/// with `seq` the 0-based position in that order.
#[derive(Debug, Clone)]
pub struct Interactions {
    pub user_id: RawIds,
    pub item_id: RawIds,
    pub rating: Vec<Option<f32>>,
    pub timestamp: Vec<Option<i64>>,
    pub seq: Vec<i32>,
}

/// What ingest saw, for the manifest and the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IngestStats {
    pub rows_read: usize,
    /// Rows dropped because an identical (user, item, order key) row came earlier.
    pub duplicates_dropped: usize,
    pub interactions: usize,
    pub users: usize,
    pub items: usize,
    /// Users with one interaction: they yield neither training examples nor a test row.
    pub users_with_one_interaction: usize,
}

/// A dataset in canonical form, ready to be written by [`Dataset::write`].
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub interactions: Interactions,
    /// `user_id` plus user feature columns, one row per user.
    pub users: Option<RecordBatch>,
    /// `item_id` plus item feature columns (`title`, `genres`, ...), one row per item.
    pub items: Option<RecordBatch>,
    pub stats: IngestStats,
}

fn ranks(ids: &RawIds) -> (Vec<u32>, usize) {
    match ids {
        RawIds::Int(v) => {
            let mut distinct = v.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let map: std::collections::HashMap<i64, u32> = distinct
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, i as u32))
                .collect();
            (v.iter().map(|x| map[x]).collect(), distinct.len())
        }
        RawIds::Str(a) => {
            let mut distinct: Vec<&str> = a.iter().flatten().collect();
            distinct.sort_unstable();
            distinct.dedup();
            let map: std::collections::HashMap<&str, u32> = distinct
                .iter()
                .enumerate()
                .map(|(i, &x)| (x, i as u32))
                .collect();
            (
                a.iter().map(|x| map[x.unwrap_or_default()]).collect(),
                distinct.len(),
            )
        }
    }
}

impl Interactions {
    /// Orders `events` per user by (order key, source position), drops exact duplicates and
    /// numbers each user's events. `origin` names the source in errors.
    pub fn from_events(origin: &Path, events: Events) -> Result<(Interactions, IngestStats)> {
        let n = events.user_id.len();
        if n == 0 {
            return Err(Interactions::none_in(origin));
        }
        let (user_rank, users) = ranks(&events.user_id);
        let (item_rank, items) = ranks(&events.item_id);
        let mut rows: Vec<usize> = (0..n).collect();
        rows.sort_unstable_by_key(|&r| (user_rank[r], events.order[r], r));

        // Exact duplicates share user and order key, so they sit in one tie group; the groups
        // are tiny, so a scan of the kept rows of the group is enough.
        let mut kept: Vec<usize> = Vec::with_capacity(n);
        let mut group_start = 0;
        for (i, &r) in rows.iter().enumerate() {
            if i > 0 {
                let p = rows[i - 1];
                if user_rank[p] != user_rank[r] || events.order[p] != events.order[r] {
                    group_start = kept.len();
                }
            }
            if kept[group_start..]
                .iter()
                .any(|&k| item_rank[k] == item_rank[r])
            {
                continue;
            }
            kept.push(r);
        }

        let mut seq = Vec::with_capacity(kept.len());
        let mut users_with_one = 0;
        let mut run = 0i32;
        for (i, &r) in kept.iter().enumerate() {
            if i > 0 && user_rank[kept[i - 1]] == user_rank[r] {
                run += 1;
            } else {
                if i > 0 && run == 0 {
                    users_with_one += 1;
                }
                run = 0;
            }
            seq.push(run);
        }
        if run == 0 {
            users_with_one += 1;
        }

        let stats = IngestStats {
            rows_read: n,
            duplicates_dropped: n - kept.len(),
            interactions: kept.len(),
            users,
            items,
            users_with_one_interaction: users_with_one,
        };
        let interactions = Interactions {
            user_id: events.user_id.take(&kept),
            item_id: events.item_id.take(&kept),
            rating: kept.iter().map(|&r| events.rating[r]).collect(),
            timestamp: kept.iter().map(|&r| events.timestamp[r]).collect(),
            seq,
        };
        Ok((interactions, stats))
    }

    /// The error for a source with no interactions, `origin` naming it.
    pub fn none_in(origin: &Path) -> Error {
        Error::EmptyTable {
            path: origin.to_owned(),
            detail: String::from(": there are no interactions to read"),
        }
    }

    /// No rows, integer ids: the start of a chunk built with [`Interactions::push_user`].
    pub fn empty() -> Self {
        Interactions {
            user_id: RawIds::Int(Vec::new()),
            item_id: RawIds::Int(Vec::new()),
            rating: Vec::new(),
            timestamp: Vec::new(),
            seq: Vec::new(),
        }
    }

    /// Appends one user's rows, already in chronological order with no exact duplicate (what
    /// [`Interactions::from_events`] would make of them), numbering them from 0. For writers
    /// that produce canonical rows user by user (the synthetic generator).
    ///
    /// # Panics
    /// If the ids are strings (a chunk from [`Interactions::empty`] has integer ids) or the
    /// slices differ in length.
    pub fn push_user(&mut self, user: i64, items: &[i64], ratings: &[Option<f32>], times: &[i64]) {
        assert!(items.len() == ratings.len() && items.len() == times.len());
        let (RawIds::Int(users), RawIds::Int(item_ids)) = (&mut self.user_id, &mut self.item_id)
        else {
            panic!("push_user needs integer ids");
        };
        users.extend(std::iter::repeat_n(user, items.len()));
        item_ids.extend_from_slice(items);
        self.rating.extend_from_slice(ratings);
        self.timestamp.extend(times.iter().map(|&t| Some(t)));
        self.seq.extend(0..items.len() as i32);
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// The canonical `interactions.parquet` batch.
    pub fn to_batch(&self) -> Result<RecordBatch> {
        let columns: Vec<(&str, ArrayRef, bool)> = vec![
            (col::USER_ID, self.user_id.to_array(), false),
            (col::ITEM_ID, self.item_id.to_array(), false),
            (
                col::RATING,
                Arc::new(Float32Array::from(self.rating.clone())),
                true,
            ),
            (
                col::TIMESTAMP,
                Arc::new(Int64Array::from(self.timestamp.clone())),
                true,
            ),
            (
                col::SEQ,
                Arc::new(Int32Array::from(self.seq.clone())),
                false,
            ),
        ];
        batch(columns)
    }
}

/// Builds a batch from (name, array, nullable) triples.
pub use recall_core::table::batch;

/// A List<Utf8> array from per-row string lists (genres, tags).
pub fn string_list_array(rows: &[Vec<String>]) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for value in row {
            builder.values().append_value(value);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// The canonical item side table: `item_id`, `title`, `genres` (List<Utf8>).
pub fn items_batch(
    ids: RawIds,
    titles: Vec<Option<String>>,
    genres: &[Vec<String>],
) -> Result<RecordBatch> {
    batch(vec![
        (col::ITEM_ID, ids.to_array(), false),
        (col::TITLE, Arc::new(StringArray::from(titles)), true),
        (col::GENRES, string_list_array(genres), false),
    ])
}

/// Fails when a side table lists the same id twice: features would be ambiguous.
pub fn check_unique_ids(origin: &Path, column: &str, ids: &RawIds) -> Result<()> {
    let (ranks, distinct) = ranks(ids);
    if distinct == ids.len() {
        return Ok(());
    }
    let mut seen = vec![false; distinct];
    for (row, &r) in ranks.iter().enumerate() {
        if std::mem::replace(&mut seen[r as usize], true) {
            return Err(Error::invalid(
                format!("{}, column `{column}`", origin.display()),
                format!(
                    "id {} appears more than once (again at row {row}); a side table needs one \
                     row per id",
                    ids.display(row)
                ),
            ));
        }
    }
    Ok(())
}

impl Dataset {
    /// Writes the canonical files into `dir` (atomically, one by one) and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let meta = [(ingested::DATASET_KEY, self.name.clone())];
        let path = dir.join(ingested::INTERACTIONS);
        recall_core::write::write_parquet(&path, &self.interactions.to_batch()?, &meta)?;
        let mut written = vec![path];
        written.extend(write_side_tables(
            dir,
            &self.name,
            self.users.as_ref(),
            self.items.as_ref(),
        )?);
        Ok(written)
    }
}

/// Writes the side tables a dataset named `name` has into `dir` (`users.parquet`,
/// `items.parquet`), as [`Dataset::write`] does; returns their paths. For writers that stream
/// `interactions.parquet` themselves.
pub fn write_side_tables(
    dir: &Path,
    name: &str,
    users: Option<&RecordBatch>,
    items: Option<&RecordBatch>,
) -> Result<Vec<PathBuf>> {
    let meta = [(ingested::DATASET_KEY, name.to_owned())];
    let mut written = Vec::new();
    for (file, table) in [(ingested::USERS, users), (ingested::ITEMS, items)] {
        if let Some(table) = table {
            let path = dir.join(file);
            recall_core::write::write_parquet(&path, table, &meta)?;
            written.push(path);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(users: Vec<i64>, items: Vec<i64>, order: Vec<i64>) -> Events {
        let n = users.len();
        Events {
            user_id: RawIds::Int(users),
            item_id: RawIds::Int(items),
            rating: vec![None; n],
            timestamp: order.iter().map(|&o| Some(o)).collect(),
            order,
        }
    }

    #[test]
    fn orders_by_user_then_time_keeping_source_order_on_ties() {
        let e = events(
            vec![2, 1, 2, 1, 2],
            vec![10, 11, 12, 13, 14],
            vec![5, 9, 5, 1, 3],
        );
        let (i, stats) = Interactions::from_events(Path::new("t"), e).unwrap();
        let RawIds::Int(items) = &i.item_id else {
            panic!()
        };
        // user 1: item 13 (t=1), item 11 (t=9); user 2: 14 (t=3), 10 (t=5), 12 (t=5, later row).
        assert_eq!(items, &vec![13, 11, 14, 10, 12]);
        assert_eq!(i.seq, vec![0, 1, 0, 1, 2]);
        assert_eq!(stats.users, 2);
        assert_eq!(stats.users_with_one_interaction, 0);
    }

    #[test]
    fn exact_duplicates_are_dropped_and_counted_but_rewatches_are_kept() {
        let e = events(
            vec![1, 1, 1, 1, 2],
            vec![7, 8, 7, 7, 7],
            vec![1, 1, 1, 2, 1],
        );
        let (i, stats) = Interactions::from_events(Path::new("t"), e).unwrap();
        let RawIds::Int(items) = &i.item_id else {
            panic!()
        };
        assert_eq!(items, &vec![7, 8, 7, 7]);
        assert_eq!(stats.duplicates_dropped, 1);
        assert_eq!(stats.users_with_one_interaction, 1);
    }

    #[test]
    fn no_events_is_an_empty_table_error() {
        let e = events(vec![], vec![], vec![]);
        let msg = Interactions::from_events(Path::new("x.csv"), e)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("x.csv has no rows"), "{msg}");
    }

    #[test]
    fn duplicate_side_table_ids_are_rejected_with_the_id() {
        let msg = check_unique_ids(
            Path::new("users.dat"),
            "user_id",
            &RawIds::Int(vec![1, 2, 1]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("id 1 appears more than once") && msg.contains("row 2"),
            "{msg}"
        );
    }
}
