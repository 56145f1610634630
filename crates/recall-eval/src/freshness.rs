//! An item-age prior: `score + beta * log lift(age bucket)`, where an item's age is the query's
//! time minus the item's release time (`release_time` in `items.parquet`, written with
//! `encode.item_release`), and the lift of a bucket is how much more often training
//! interactions went to items of that age than the catalogue's share of such items at the
//! interaction's time would give (YoutubeDNN's freshness argument, as a non-personal prior).
//!
//! The lift is fitted on training interactions only. Its catalogue side is exact: at each
//! interaction's time, the share of the rankable items (cold ones included: their release is
//! known before anyone rates them) in each bucket, from the sorted release times. An item's
//! bucket moves with the query's time, so the prior is a per-(query, item) bias rather than a
//! static one: a serving system recomputes each item's bias once a day (one more dimension of
//! the item vector, 1 on the user side) or re-ranks; the evaluate stage adds it block by block
//! through [`crate::topk::ScoreBias`].

use std::path::Path;
use std::sync::Arc;

use recall_core::columns::{ITEM_IDX, RELEASE_TIME};
use recall_core::encoded::{self, files};
use recall_core::{Error, Result};

const SECONDS_PER_DAY: f64 = recall_core::time::SECONDS_PER_DAY as f64;
/// A bucket's lift is never taken below this (a bucket training never reached would otherwise
/// be `ln 0`).
const MIN_LIFT: f64 = 1e-3;
/// Interactions whose catalogue shares are counted at most (evenly spaced over all of them):
/// the shares change slowly with time, and each costs a binary search per bucket.
const MAX_CATALOGUE_SAMPLES: usize = 1_000_000;

/// Age buckets: `[edge_j, edge_j+1)` days for each edge (the last open-ended), then "not yet
/// released" (a negative age) and "no date".
#[derive(Debug, Clone, PartialEq)]
pub struct AgeBuckets {
    edges_days: Vec<f64>,
}

impl AgeBuckets {
    /// `edges_days` ascending, finite, the first 0 (an age under a first edge above 0 would
    /// land in "not yet released"); `key` names them in errors.
    pub fn new(edges_days: Vec<f64>, key: &str) -> Result<Self> {
        let ascending = edges_days.windows(2).all(|w| w[0] < w[1]);
        if edges_days.first() != Some(&0.0)
            || !ascending
            || edges_days.iter().any(|e| !e.is_finite())
        {
            return Err(Error::config(
                key,
                format!(
                    "age edges must be finite days, ascending from 0 (for example [0, 30, 365]), got {edges_days:?}"
                ),
            ));
        }
        Ok(AgeBuckets { edges_days })
    }

    /// How many buckets there are: one per edge, then "not yet released" and "no date".
    pub fn len(&self) -> usize {
        self.edges_days.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn unreleased(&self) -> usize {
        self.edges_days.len()
    }

    fn undated(&self) -> usize {
        self.edges_days.len() + 1
    }

    /// The bucket of an item released at `released` (seconds) for a query at `at`.
    pub fn bucket(&self, at: i64, released: Option<i64>) -> usize {
        let Some(released) = released else {
            return self.undated();
        };
        let age_days = (at - released) as f64 / SECONDS_PER_DAY;
        match self.edges_days.partition_point(|&e| e <= age_days) {
            0 => self.unreleased(),
            j => j - 1,
        }
    }

    /// The ages in days an age bucket holds, `[from, to)` (`to` `None` for the last, open-ended
    /// one); `None` for "not yet released" (a negative age) and "no date" (no release time).
    pub fn days(&self, bucket: usize) -> Option<(f64, Option<f64>)> {
        let e = &self.edges_days;
        (bucket < e.len()).then(|| (e[bucket], e.get(bucket + 1).copied()))
    }

    /// A bucket's name in reports: `0-365 days`, `7305+ days`, `not yet released`, `no date`.
    pub fn name(&self, bucket: usize) -> String {
        let e = &self.edges_days;
        match bucket {
            b if b == self.unreleased() => "not yet released".to_owned(),
            b if b + 1 == e.len() => format!("{}+ days", e[b]),
            b if b < e.len() => format!("{}-{} days", e[b], e[b + 1]),
            _ => "no date".to_owned(),
        }
    }
}

/// Each item's release time (seconds, `None` without a date) by item index, from
/// `items.parquet`; `None` when the encode stage wrote no release column.
pub fn read_release_times(encode_dir: &Path) -> Result<Option<Vec<Option<i64>>>> {
    let manifest = encoded::FeatureManifest::read(encode_dir)?;
    let path = encode_dir.join(files::ITEMS);
    let table = encoded::read_table(&path, None)?;
    if !table.has_column(RELEASE_TIME) {
        return Ok(None);
    }
    let index = table.ints(ITEM_IDX)?;
    let times = table.nullable_ints(RELEASE_TIME)?;
    let mut out = vec![None; manifest.item_table_size];
    for (row, (&i, t)) in index.iter().zip(times).enumerate() {
        let slot = usize::try_from(i).ok().and_then(|i| out.get_mut(i));
        let Some(slot) = slot else {
            return Err(Error::invalid(
                format!("{}, column `{ITEM_IDX}`, row {row}", path.display()),
                format!(
                    "index {i} outside the item table of {}",
                    manifest.item_table_size
                ),
            ));
        };
        *slot = t;
    }
    Ok(Some(out))
}

/// The fitted prior: each bucket's log lift over the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct AgePrior {
    buckets: AgeBuckets,
    /// By item index (the reserved rows `None`).
    released: Vec<Option<i64>>,
    log_lift: Vec<f64>,
    /// Per bucket: its share of the training interactions, and the catalogue's mean share.
    shares: Vec<(f64, f64)>,
}

impl AgePrior {
    /// Fits the lift on `events` (item index, time) against the catalogue of items
    /// `first_item..released.len()`.
    pub fn fit(
        buckets: AgeBuckets,
        released: Vec<Option<i64>>,
        first_item: usize,
        events: impl Iterator<Item = (u32, i64)>,
    ) -> Result<Self> {
        let nb = buckets.len();
        let events: Vec<(u32, i64)> = events
            .filter(|&(i, _)| (i as usize) >= first_item && (i as usize) < released.len())
            .collect();
        if events.is_empty() {
            return Err(Error::invalid(
                "item-age prior",
                "no training interaction has a timestamp to measure ages at",
            ));
        }
        let catalogue = &released[first_item.min(released.len())..];
        let mut dated: Vec<i64> = catalogue.iter().flatten().copied().collect();
        dated.sort_unstable();
        let undated = catalogue.len() - dated.len();
        let mut counts = vec![0f64; nb];
        for &(item, t) in &events {
            counts[buckets.bucket(t, released[item as usize])] += 1.0;
        }
        let stride = events.len().div_ceil(MAX_CATALOGUE_SAMPLES);
        let mut catalogue_share = vec![0f64; nb];
        let mut sampled = 0f64;
        // Items released at or before `t - days`: the dated prefix up to that time.
        let released_by = |t: i64, days: f64| {
            let cut = t as f64 - days * SECONDS_PER_DAY;
            dated.partition_point(|&r| r as f64 <= cut)
        };
        let edges = &buckets.edges_days;
        let mut by_edge = vec![0usize; edges.len()];
        for &(_, t) in events.iter().step_by(stride) {
            // Bucket j holds the items released by edge j's time and not by edge j + 1's.
            for (n, &e) in by_edge.iter_mut().zip(edges) {
                *n = released_by(t, e);
            }
            for j in 0..edges.len() {
                let past_bucket = by_edge.get(j + 1).copied().unwrap_or(0);
                catalogue_share[j] += (by_edge[j] - past_bucket) as f64;
            }
            catalogue_share[buckets.unreleased()] += (dated.len() - released_by(t, 0.0)) as f64;
            catalogue_share[buckets.undated()] += undated as f64;
            sampled += 1.0;
        }
        let (total, items) = (events.len() as f64, catalogue.len() as f64);
        let mut shares = Vec::with_capacity(nb);
        let mut log_lift = Vec::with_capacity(nb);
        for b in 0..nb {
            let (interactions, items_share) =
                (counts[b] / total, catalogue_share[b] / sampled / items);
            shares.push((interactions, items_share));
            log_lift.push(if items_share > 0.0 {
                (interactions / items_share).max(MIN_LIFT).ln()
            } else {
                0.0
            });
        }
        Ok(AgePrior {
            buckets,
            released,
            log_lift,
            shares,
        })
    }

    pub fn buckets(&self) -> &AgeBuckets {
        &self.buckets
    }

    /// Each bucket's log lift (0 for a bucket no rankable item ever fell in).
    pub fn log_lift(&self) -> &[f64] {
        &self.log_lift
    }

    /// Each bucket's share of the training interactions and the catalogue's mean share.
    pub fn shares(&self) -> &[(f64, f64)] {
        &self.shares
    }

    /// The bias `beta * log lift` for query rows served at `times` (a row without a time gets
    /// none), to rank with ([`crate::topk::Options::score_bias`]).
    pub fn bias(self: &Arc<Self>, beta: f64, times: Vec<Option<i64>>) -> Arc<AgeBias> {
        Arc::new(AgeBias {
            prior: Arc::clone(self),
            weighted_lift: self.log_lift.iter().map(|l| (beta * l) as f32).collect(),
            times,
        })
    }
}

/// [`AgePrior`]'s bias at a weight, for each query row at its time.
#[derive(Debug)]
pub struct AgeBias {
    prior: Arc<AgePrior>,
    /// `beta * log lift` per bucket, computed once rather than per row and block.
    weighted_lift: Vec<f32>,
    times: Vec<Option<i64>>,
}

impl crate::topk::ScoreBias for AgeBias {
    fn add(&self, row: usize, first: usize, scores: &mut [f32]) {
        let Some(t) = self.times.get(row).copied().flatten() else {
            return;
        };
        let p = &self.prior;
        for (j, s) in scores.iter_mut().enumerate() {
            let released = p.released.get(first + j).copied().flatten();
            *s += self.weighted_lift[p.buckets.bucket(t, released)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topk::ScoreBias;

    const DAY: i64 = 86_400;

    #[test]
    fn buckets_are_half_open_with_their_own_unreleased_and_undated() {
        let b = AgeBuckets::new(vec![0.0, 30.0, 365.0], "k").unwrap();
        assert_eq!(b.len(), 5);
        let at = 1000 * DAY;
        assert_eq!(b.bucket(at, Some(at)), 0);
        assert_eq!(b.bucket(at, Some(at - 29 * DAY)), 0);
        assert_eq!(b.bucket(at, Some(at - 30 * DAY)), 1);
        assert_eq!(b.bucket(at, Some(at - 400 * DAY)), 2);
        assert_eq!(b.bucket(at, Some(at + 1)), 3);
        assert_eq!(b.bucket(at, None), 4);
        let days: Vec<_> = (0..5).map(|i| b.days(i)).collect();
        assert_eq!(
            days,
            [
                Some((0.0, Some(30.0))),
                Some((30.0, Some(365.0))),
                Some((365.0, None)),
                None,
                None
            ]
        );
        let names: Vec<String> = (0..5).map(|i| b.name(i)).collect();
        assert_eq!(
            names,
            [
                "0-30 days",
                "30-365 days",
                "365+ days",
                "not yet released",
                "no date"
            ]
        );
        let bad_edges = [
            vec![],
            vec![30.0, 0.0],
            vec![-1.0],
            vec![0.0, f64::NAN],
            vec![7.0, 30.0],
        ];
        for bad in bad_edges {
            let err = AgeBuckets::new(bad, "evaluate.item_age_prior.age_edges_days").unwrap_err();
            assert!(
                err.to_string()
                    .contains("evaluate.item_age_prior.age_edges_days")
            );
        }
    }

    /// Four rankable items: two new at the interactions' time, two old; training goes three
    /// times in four to a new one, so the new bucket's lift is 0.75 / 0.5 and the old one's
    /// 0.25 / 0.5, computed by hand.
    #[test]
    fn the_lift_is_the_interactions_share_over_the_catalogues() {
        let t = 10_000 * DAY;
        let released = vec![
            None,
            None,
            Some(t - DAY),
            Some(t - 2 * DAY),
            Some(t - 900 * DAY),
            Some(t - 1000 * DAY),
        ];
        let events = [(2u32, t), (3, t), (2, t), (4, t), (1, t)]; // the OOV row's event is not counted
        let b = AgeBuckets::new(vec![0.0, 365.0], "k").unwrap();
        let p = Arc::new(AgePrior::fit(b, released, 2, events.into_iter()).unwrap());
        let lift: Vec<f64> = p.log_lift().iter().map(|l| l.exp()).collect();
        assert!(
            (lift[0] - 1.5).abs() < 1e-12 && (lift[1] - 0.5).abs() < 1e-12,
            "{lift:?}"
        );
        assert_eq!((lift[2], lift[3]), (1.0, 1.0)); // no item unreleased or undated: no bias
        // The bias: beta times the log lift of each item's bucket at the row's time.
        let bias = p.bias(2.0, vec![Some(t), None]);
        let mut scores = vec![0f32; 4];
        bias.add(0, 2, &mut scores);
        let want = [
            2.0 * 1.5f64.ln(),
            2.0 * 1.5f64.ln(),
            2.0 * 0.5f64.ln(),
            2.0 * 0.5f64.ln(),
        ];
        for (s, w) in scores.iter().zip(want) {
            assert!((f64::from(*s) - w).abs() < 1e-6);
        }
        // A row without a time is left as it is; a later row sees the items older.
        let mut scores = vec![0f32; 4];
        bias.add(1, 2, &mut scores);
        assert_eq!(scores, [0.0; 4]);
        let later = p.bias(1.0, vec![Some(t + 400 * DAY)]);
        let mut scores = vec![0f32; 4];
        later.add(0, 2, &mut scores);
        assert!(
            scores
                .iter()
                .all(|&s| (f64::from(s) - 0.5f64.ln()).abs() < 1e-6)
        );

        // Ranked with it: the user's vector prefers the old item 4, the prior the new item 3.
        let users = crate::Embeddings::new(2, vec![1.0, 0.0]).unwrap();
        let items = crate::Embeddings::new(
            2,
            vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.0, 1.0, 0.0, 0.0, 0.0],
        )
        .unwrap();
        let rank = |score_bias: Option<Arc<dyn ScoreBias>>| {
            let options = crate::topk::Options {
                first_item: 2,
                score_bias,
                ..Default::default()
            };
            crate::topk::exact(&users, &items, 2, &options)
                .unwrap()
                .list(0)
                .to_vec()
        };
        assert_eq!(rank(None), [4, 3]);
        assert_eq!(rank(Some(p.bias(1.0, vec![Some(t)]))), [3, 2]);
    }

    #[test]
    fn without_timed_interactions_there_is_nothing_to_fit() {
        let b = AgeBuckets::new(vec![0.0], "k").unwrap();
        let err = AgePrior::fit(b, vec![None, None, Some(0)], 2, std::iter::empty()).unwrap_err();
        assert!(err.to_string().contains("timestamp"), "{err}");
    }
}
