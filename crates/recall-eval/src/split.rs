//! The evaluation view of an encoded split, read through `recall_core::encoded` (the owner of
//! the encode stage's contract): which user each query row is, its truth, what the user saw
//! before it (for the seen filter's views) and training popularity.
//!
//! The seen filter has one definition here, [`seen_before_targets`], and three views, named the
//! same in configuration, `metrics.json` and reports ([`SeenFilter`]):
//! - `none`: nothing is left out of the ranking;
//! - `all`: every item the user interacted with before the target (the whole history);
//! - `recent`: only the newest `n` of them, the protocol of the published HSTU/SASRec numbers
//!   (generative-recommenders' `filter_invalid_ids` over `past_ids` cut to
//!   `max_sequence_length`), which leaves older items in the ranking.
//!
//! In every view the target itself stays rankable: an earlier occurrence of it (a repeat
//! interaction) is not left out, so a repeat target can be hit.

use std::path::Path;

use recall_core::Result;
use recall_core::columns::ITEM_ID;
use recall_core::encoded::{self, FeatureManifest, LaterTargets, Sequences, SplitRows, files};
use serde::{Deserialize, Serialize};

use crate::topk::Lists;

/// A view of the seen filter by name, as configuration spells it (`"none"`, `"all"`,
/// `"recent"`); [`SeenView::with_recent_window`] makes it a [`SeenFilter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeenView {
    /// Nothing left out: the unfiltered view.
    #[default]
    None,
    /// Every item before the target.
    All,
    /// The newest items before the target (how many is the caller's setting).
    Recent,
}

impl SeenView {
    pub fn is_none(&self) -> bool {
        *self == SeenView::None
    }

    /// The filter itself; `recent_window` is how many of the newest items the `recent` view
    /// leaves out.
    pub fn with_recent_window(self, recent_window: usize) -> SeenFilter {
        match self {
            SeenView::None => SeenFilter::None,
            SeenView::All => SeenFilter::All,
            SeenView::Recent => SeenFilter::Recent(recent_window),
        }
    }
}

/// Which of a user's earlier items the seen filter leaves out of a query's ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeenFilter {
    /// Nothing: the unfiltered view.
    None,
    /// Every item before the target.
    All,
    /// The newest `n` items before the target.
    Recent(usize),
}

impl SeenFilter {
    /// The view's name in configuration and reports: `none`, `all` or `recent`.
    pub fn name(self) -> &'static str {
        match self {
            SeenFilter::None => "none",
            SeenFilter::All => "all",
            SeenFilter::Recent(_) => "recent",
        }
    }

    pub fn view(self) -> SeenView {
        match self {
            SeenFilter::None => SeenView::None,
            SeenFilter::All => SeenView::All,
            SeenFilter::Recent(_) => SeenView::Recent,
        }
    }

    /// How many of the newest history items are left out (`None`: every one, or none at all).
    pub fn recent_window(self) -> Option<usize> {
        match self {
            SeenFilter::Recent(n) => Some(n),
            _ => None,
        }
    }
}

/// Query rows of one split with their truth and what their users saw.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSplit {
    /// `user_idx` of each query row.
    pub user_idx: Vec<i32>,
    /// The held-out target(s) of each query row.
    pub truth: Lists,
    /// Training interactions of each item index, as `vocab_item_id.parquet` counts them (0 and
    /// 1, the reserved slots, count 0).
    pub popularity: Vec<u64>,
    /// The encode stage's `max_len`: the newest items a model reads by default.
    pub history_len: usize,
    sequences: Sequences,
    rows: SplitRows,
}

impl EvalSplit {
    /// Reads `query` (`test.parquet` or `valid.parquet`) from an encode output directory.
    pub fn read(encode_dir: &Path, query: &str) -> Result<Self> {
        Self::read_sequences(encode_dir, query, false)
    }

    /// As [`EvalSplit::read`], with the sequences' timestamps, for [`EvalSplit::query_times`]
    /// and [`EvalSplit::training_events`] (8 bytes more a position).
    pub fn read_timed(encode_dir: &Path, query: &str) -> Result<Self> {
        Self::read_sequences(encode_dir, query, true)
    }

    fn read_sequences(encode_dir: &Path, query: &str, with_timestamps: bool) -> Result<Self> {
        let m = FeatureManifest::read(encode_dir)?;
        let sequences = Sequences::read(
            &encode_dir.join(files::SEQUENCES),
            m.user_table_size,
            m.item_table_size,
            with_timestamps,
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

        let mut truth: Vec<Vec<u32>> = (0..rows.len())
            .map(|r| vec![sequences.target(rows.user[r], rows.position[r])])
            .collect();
        let later = m.stats.time_split.as_ref().and_then(|t| t.later_targets);
        if query == files::TEST && later.is_some() {
            add_later_targets(encode_dir, &m, &rows, &mut truth)?;
        }
        Ok(EvalSplit {
            user_idx: rows.user.iter().map(|&u| u as i32).collect(),
            truth: Lists::from_rows(&truth),
            popularity,
            history_len: m.max_len,
            sequences,
            rows,
        })
    }

    pub fn rows(&self) -> usize {
        self.user_idx.len()
    }

    /// When each query row's (first) target happened, the time a query is served at; `None`
    /// where it has no timestamp or the split was read without them ([`EvalSplit::read`]).
    pub fn query_times(&self) -> Vec<Option<i64>> {
        (0..self.rows())
            .map(|r| {
                self.sequences
                    .timestamp(self.rows.user[r], self.rows.position[r])
            })
            .collect()
    }

    /// Every training interaction with a timestamp, as (item, time): the positions before each
    /// user's held-out targets ([`EvalSplit::read_timed`]; none without timestamps).
    pub fn training_events(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        (0..self.sequences.users() as u32).flat_map(move |u| {
            let items = self.sequences.training(u);
            items
                .iter()
                .enumerate()
                .filter_map(move |(p, &item)| Some((item, self.sequences.timestamp(u, p as u32)?)))
        })
    }

    /// The split's rows `rows` (indices into it), in that order (the sequences move along).
    pub fn select(self, rows: &[usize]) -> EvalSplit {
        let truth: Vec<Vec<u32>> = rows.iter().map(|&r| self.truth.get(r).to_vec()).collect();
        EvalSplit {
            user_idx: rows.iter().map(|&r| self.user_idx[r]).collect(),
            truth: Lists::from_rows(&truth),
            rows: self.rows.select(rows),
            popularity: self.popularity,
            history_len: self.history_len,
            sequences: self.sequences,
        }
    }

    /// Each query row's truth restricted to cold items (`cold`: at or above `first_cold`, the
    /// items indexed from the item side table without a training interaction;
    /// `encode.cold_items`) or to warm ones: a row without such a target has an empty set,
    /// which every metric leaves out.
    pub fn truth_among(&self, first_cold: u32, cold: bool) -> Lists {
        let rows: Vec<Vec<u32>> = (0..self.rows())
            .map(|r| {
                let t = self.truth.get(r).iter().copied();
                t.filter(|&t| (t >= first_cold) == cold).collect()
            })
            .collect();
        Lists::from_rows(&rows)
    }

    /// Each query row's items the view leaves out (`None` for the unfiltered view), never
    /// one of the row's targets.
    pub fn seen(&self, filter: SeenFilter) -> Option<Lists> {
        let newest = match filter {
            SeenFilter::None => return None,
            SeenFilter::All => usize::MAX,
            SeenFilter::Recent(n) => n,
        };
        let seen = seen_before_targets(&self.sequences, &self.rows, newest);
        if (0..self.rows()).all(|r| self.truth.get(r).len() <= 1) {
            // One target per row: `seen_before_targets` already keeps it rankable.
            return Some(seen);
        }
        let rows: Vec<Vec<u32>> = (0..self.rows())
            .map(|r| {
                let truth = self.truth.get(r);
                let s = seen.get(r).iter().copied();
                s.filter(|item| !truth.contains(item)).collect()
            })
            .collect();
        Some(Lists::from_rows(&rows))
    }
}

/// Adds `later_targets.parquet`'s items to the truth of each test user's row (after the row's
/// own target, each item once).
fn add_later_targets(
    encode_dir: &Path,
    m: &FeatureManifest,
    rows: &SplitRows,
    truth: &mut [Vec<u32>],
) -> Result<()> {
    let path = encode_dir.join(files::LATER_TARGETS);
    let later = LaterTargets::read(&path, m.user_table_size, m.item_table_size)?;
    let mut row_of_user = std::collections::HashMap::with_capacity(rows.len());
    for (r, &u) in rows.user.iter().enumerate() {
        row_of_user.insert(u, r);
    }
    for (i, (&user, &item)) in later.user.iter().zip(&later.item).enumerate() {
        let Some(&r) = row_of_user.get(&user) else {
            return Err(recall_core::Error::invalid(
                format!("{}, row {i}", path.display()),
                format!(
                    "user {user} has later targets but no test row: the files come from different \
                     encode runs; rerun the encode stage"
                ),
            ));
        };
        if !truth[r].contains(&item) {
            truth[r].push(item);
        }
    }
    Ok(())
}

/// The seen filter's lists: for each query row, the newest `newest` items its user interacted
/// with before the row's target (`usize::MAX`: the whole sequence up to it), sorted and unique,
/// without the target itself (a repeat target stays rankable). The one definition the evaluate
/// stage and training's filtered validation (`train.seen_filter`) share.
pub fn seen_before_targets(sequences: &Sequences, rows: &SplitRows, newest: usize) -> Lists {
    let seen: Vec<Vec<u32>> = (0..rows.len())
        .map(|r| {
            let (user, position) = (rows.user[r], rows.position[r]);
            let target = sequences.target(user, position);
            let mut before: Vec<u32> = sequences
                .history(user, position, newest)
                .iter()
                .copied()
                .filter(|&item| item != target)
                .collect();
            before.sort_unstable();
            before.dedup();
            before
        })
        .collect();
    Lists::from_rows(&seen)
}

/// `n` of a split's `len` rows, in file order, drawn by a generator seeded with `seed`; all
/// rows when `n >= len`.
pub fn sample_rows(len: usize, n: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    if n >= len {
        return (0..len).collect();
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rows = rand::seq::index::sample(&mut rng, len, n).into_vec();
    rows.sort_unstable();
    rows
}

/// [`sample_rows`] with a seed fixed by the split's size alone: every model, seed and run on
/// the same encoding evaluates the same users, so per-user results stay paired across runs
/// (the ablation's paired intervals).
pub fn fixed_sample_rows(len: usize, n: usize) -> Vec<usize> {
    sample_rows(len, n, 0x5eed_u64 ^ len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embeddings::Embeddings;
    use crate::metrics;
    use crate::topk::{self, Options};

    /// One user, sequence `[a, b, a, c]` (a = 2, b = 3, c = 4), queried at positions 2 (target
    /// a, a repeat) and 3 (target c).
    fn one_user() -> (Sequences, SplitRows) {
        let sequences =
            Sequences::new(vec![0, 0, 0, 4], vec![2, 3, 2, 4], vec![0, 0, 2], None).unwrap();
        let rows = SplitRows {
            user: vec![2, 2],
            position: vec![2, 3],
            age_bucket: vec![0, 0],
        };
        (sequences, rows)
    }

    #[test]
    fn the_target_is_never_filtered_and_recent_keeps_only_the_newest() {
        let (sequences, rows) = one_user();
        let all = seen_before_targets(&sequences, &rows, usize::MAX);
        // Target a at position 2: b is seen, the earlier a is not left out.
        assert_eq!(all.get(0), &[3]);
        assert_eq!(all.get(1), &[2, 3]);
        let recent = seen_before_targets(&sequences, &rows, 1);
        // Newest 1 before position 3 is a (position 2); b is older and stays rankable.
        assert_eq!(recent.get(1), &[2]);
        // Newest 1 before position 2 is b.
        assert_eq!(recent.get(0), &[3]);
    }

    /// Sequence `[a, b, a]` with a model that scores `a` first: the filtered HitRate@1 is 1
    /// (it was 0 while the earlier `a` was in the seen list).
    #[test]
    fn a_repeat_target_scored_first_is_a_hit_in_the_filtered_view() {
        let sequences =
            Sequences::new(vec![0, 0, 0, 3], vec![2, 3, 2], vec![0, 0, 2], None).unwrap();
        let rows = SplitRows {
            user: vec![2],
            position: vec![2],
            age_bucket: vec![0],
        };
        // Items 0..4 in 1-d: a (2) scores highest, b (3) next.
        let users = Embeddings::new(1, vec![1.0]).unwrap();
        let items = Embeddings::new(1, vec![0.0, 0.0, 1.0, 0.5]).unwrap();
        let truth = Lists::from_rows(&[vec![2]]);
        for newest in [usize::MAX, 2, 1] {
            let top = topk::exact(
                &users,
                &items,
                1,
                &Options {
                    first_item: 2,
                    exclude: Some(seen_before_targets(&sequences, &rows, newest)),
                    ..Options::default()
                },
            )
            .unwrap();
            let m = metrics::evaluate(&top, &truth, &[1], None).unwrap();
            assert_eq!(m.at(1).unwrap().hit_rate, 1.0, "newest {newest}");
        }
    }

    /// A test row with later targets (`encode.test_targets = "after-cut"`): sequence
    /// `[a, b, c]` queried at c (position 2) with later targets b (a repeat) and d (cold,
    /// index 5 and up): the seen filter keeps b rankable, and the truth splits into cold and
    /// warm parts.
    #[test]
    fn later_targets_stay_rankable_and_split_into_cold_and_warm() {
        let sequences =
            Sequences::new(vec![0, 0, 0, 3], vec![2, 3, 4], vec![0, 0, 2], None).unwrap();
        let rows = SplitRows {
            user: vec![2],
            position: vec![2],
            age_bucket: vec![0],
        };
        let split = EvalSplit {
            user_idx: vec![2],
            truth: Lists::from_rows(&[vec![4, 3, 5]]),
            popularity: vec![0; 6],
            history_len: 50,
            sequences,
            rows,
        };
        assert_eq!(split.seen(SeenFilter::All).unwrap().get(0), &[2]);
        assert_eq!(
            split.seen(SeenFilter::Recent(1)).unwrap().get(0),
            &[] as &[u32]
        );
        assert!(split.seen(SeenFilter::None).is_none());
        assert_eq!(split.truth_among(5, true).get(0), &[5]);
        assert_eq!(split.truth_among(5, false).get(0), &[4, 3]);
    }
}
