//! Ranking metrics at several K, per user and averaged, with bootstrap intervals. The exact
//! definitions are in the crate documentation.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::topk::{Lists, TopK};

/// The metrics of one K, averaged over users with non-empty truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsAtK {
    pub k: usize,
    pub recall: f64,
    pub hit_rate: f64,
    pub ndcg: f64,
    pub mrr: f64,
    pub precision: f64,
    /// Distinct recommended items over rankable items.
    pub coverage: f64,
    /// Mean training popularity of recommended items (when popularity was given).
    pub mean_popularity: Option<f64>,
}

/// Per-user values at one K (NaN-free; users without truth are absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PerUser {
    pub recall: Vec<f64>,
    pub hit: Vec<f64>,
    pub ndcg: Vec<f64>,
    pub mrr: Vec<f64>,
    pub precision: Vec<f64>,
}

/// Metrics at every requested K, with the per-user values they average.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Users that have truth (the denominator of every average).
    pub users: usize,
    /// Query rows of each evaluated user, parallel to the per-user vectors.
    pub user_rows: Vec<usize>,
    pub at_k: Vec<MetricsAtK>,
    pub per_user: Vec<PerUser>,
}

impl Report {
    pub fn at(&self, k: usize) -> Option<&MetricsAtK> {
        self.at_k.iter().find(|m| m.k == k)
    }

    fn per_user_at(&self, k: usize) -> Option<&PerUser> {
        self.at_k
            .iter()
            .position(|m| m.k == k)
            .map(|i| &self.per_user[i])
    }

    /// A seeded percentile-bootstrap interval (`level`, e.g. 0.95) of a headline metric at K:
    /// users are resampled with replacement `resamples` times.
    pub fn bootstrap(
        &self,
        k: usize,
        metric: Metric,
        resamples: usize,
        level: f64,
        seed: u64,
    ) -> Option<(f64, f64)> {
        let values = metric.pick(self.per_user_at(k)?);
        bootstrap_mean(values, resamples, level, seed)
    }

    /// A headline metric at K over the users whose query row `in_group` says, with its
    /// percentile-bootstrap interval: (users, mean, interval). `None` when K was not computed;
    /// a group without users has mean 0 and no interval.
    pub fn over_group(
        &self,
        k: usize,
        metric: Metric,
        in_group: impl Fn(usize) -> bool,
        resamples: usize,
        level: f64,
        seed: u64,
    ) -> Option<GroupMetric> {
        let values = metric.pick(self.per_user_at(k)?);
        let picked: Vec<f64> = self
            .user_rows
            .iter()
            .zip(values)
            .filter(|&(&row, _)| in_group(row))
            .map(|(_, &v)| v)
            .collect();
        Some(GroupMetric::of(&picked, resamples, level, seed))
    }

    /// Per-user values as a table: `user_row` then `<metric>@<k>` columns (Float32).
    pub fn per_user_batch(&self) -> Result<RecordBatch> {
        let mut fields = vec![Field::new("user_row", DataType::Int64, false)];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
            self.user_rows.iter().map(|&r| r as i64),
        ))];
        for (m, pu) in self.at_k.iter().zip(&self.per_user) {
            for metric in Metric::ALL {
                fields.push(Field::new(
                    format!("{}@{}", metric.name(), m.k),
                    DataType::Float32,
                    false,
                ));
                columns.push(Arc::new(Float32Array::from_iter_values(
                    metric.pick(pu).iter().map(|&v| v as f32),
                )));
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| Error::arrow("per-user metrics", e))
    }
}

/// The per-user metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Recall,
    HitRate,
    Ndcg,
    Mrr,
    Precision,
}

impl Metric {
    pub const ALL: [Metric; 5] = [
        Metric::Recall,
        Metric::HitRate,
        Metric::Ndcg,
        Metric::Mrr,
        Metric::Precision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Recall => "recall",
            Metric::HitRate => "hit_rate",
            Metric::Ndcg => "ndcg",
            Metric::Mrr => "mrr",
            Metric::Precision => "precision",
        }
    }

    fn pick(self, p: &PerUser) -> &[f64] {
        match self {
            Metric::Recall => &p.recall,
            Metric::HitRate => &p.hit,
            Metric::Ndcg => &p.ndcg,
            Metric::Mrr => &p.mrr,
            Metric::Precision => &p.precision,
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// A metric averaged over a group of users ([`Report::over_group`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupMetric {
    pub users: usize,
    pub mean: f64,
    /// Percentile-bootstrap interval at the requested level (`None` for no users).
    pub ci95: Option<(f64, f64)>,
}

impl GroupMetric {
    /// The mean of per-user `values` (0 for none) and its percentile-bootstrap interval.
    pub fn of(values: &[f64], resamples: usize, level: f64, seed: u64) -> Self {
        GroupMetric {
            users: values.len(),
            mean: mean(values),
            ci95: bootstrap_mean(values, resamples, level, seed),
        }
    }
}

/// Percentile bootstrap of the mean; `None` for no values.
pub fn bootstrap_mean(
    values: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    if values.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    let at = |q: f64| means[((q * resamples as f64) as usize).min(resamples - 1)];
    Some((at(tail), at(1.0 - tail)))
}

/// Paired comparison of two runs over the same users: the mean of `a[i] - b[i]` and its
/// percentile-bootstrap interval (`level`), resampling users, so what the two runs share per
/// user (hard users stay hard) cancels. The interval is `None` for no users or no resamples
/// (the mean is 0 for no users).
pub fn paired_bootstrap(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> (f64, Option<(f64, f64)>) {
    let diff: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    let mean = diff.iter().sum::<f64>() / diff.len().max(1) as f64;
    (mean, bootstrap_mean(&diff, resamples, level, seed))
}

/// Evaluates `top` (one ranking per query row) against `truth` (one set per query row) at
/// each K in `ks` (each at most `top.k`). `popularity[i]` is item `i`'s training count.
pub fn evaluate(
    top: &TopK,
    truth: &Lists,
    ks: &[usize],
    popularity: Option<&[u64]>,
) -> Result<Report> {
    if truth.users() != top.users() {
        return Err(Error::invalid(
            "evaluation",
            format!(
                "{} truth lists for {} ranked users",
                truth.users(),
                top.users()
            ),
        ));
    }
    if let Some(&bad) = ks.iter().find(|&&k| k == 0 || k > top.k) {
        return Err(Error::config(
            "k",
            format!(
                "metric K = {bad} must be between 1 and the retrieved K ({})",
                top.k
            ),
        ));
    }
    let user_rows: Vec<usize> = (0..top.users())
        .filter(|&u| !truth.get(u).is_empty())
        .collect();
    let mut at_k = Vec::with_capacity(ks.len());
    let mut per_user = Vec::with_capacity(ks.len());
    for &k in ks {
        let mut p = PerUser::default();
        let mut distinct: HashSet<u32> = HashSet::new();
        let (mut pop_sum, mut pop_n) = (0f64, 0usize);
        for &u in &user_rows {
            let t: HashSet<u32> = truth.get(u).iter().copied().collect();
            let list = &top.list(u)[..top.list(u).len().min(k)];
            let (mut hits, mut dcg, mut first) = (0usize, 0f64, None);
            for (r, item) in list.iter().enumerate() {
                if t.contains(item) {
                    hits += 1;
                    dcg += 1.0 / ((r + 2) as f64).log2();
                    first.get_or_insert(r + 1);
                }
            }
            let idcg: f64 = (1..=t.len().min(k))
                .map(|r| 1.0 / ((r + 1) as f64).log2())
                .sum();
            p.recall.push(hits as f64 / t.len() as f64);
            p.hit.push(if hits > 0 { 1.0 } else { 0.0 });
            p.ndcg.push(dcg / idcg);
            p.mrr.push(first.map_or(0.0, |r| 1.0 / r as f64));
            p.precision.push(hits as f64 / k as f64);
        }
        // Coverage and popularity over every ranked user (truth or not): what the system shows.
        for u in 0..top.users() {
            let list = &top.list(u)[..top.list(u).len().min(k)];
            distinct.extend(list.iter().copied());
            if let Some(pop) = popularity {
                pop_sum += list
                    .iter()
                    .map(|&i| pop.get(i as usize).copied().unwrap_or(0) as f64)
                    .sum::<f64>();
                pop_n += list.len();
            }
        }
        at_k.push(MetricsAtK {
            k,
            recall: mean(&p.recall),
            hit_rate: mean(&p.hit),
            ndcg: mean(&p.ndcg),
            mrr: mean(&p.mrr),
            precision: mean(&p.precision),
            coverage: distinct.len() as f64 / top.rankable_items.max(1) as f64,
            mean_popularity: popularity.map(|_| {
                if pop_n == 0 {
                    0.0
                } else {
                    pop_sum / pop_n as f64
                }
            }),
        });
        per_user.push(p);
    }
    Ok(Report {
        users: user_rows.len(),
        user_rows,
        at_k,
        per_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranked(rows: &[&[u32]], k: usize, rankable: usize) -> TopK {
        TopK::from_ranked(
            k,
            rankable,
            rows.iter()
                .map(|r| r.iter().map(|&i| (i, 0.0)).collect())
                .collect(),
        )
    }

    /// Hand-worked: user 0 has truth {3, 7}, ranking [3, 5, 7, 9]; user 1 truth {4}, ranking
    /// [1, 2] (only two candidates left); user 2 has no truth and is ignored.
    #[test]
    fn hand_worked_values() {
        let top = ranked(&[&[3, 5, 7, 9], &[1, 2], &[4, 4]], 4, 10);
        let truth = Lists::from_rows(&[vec![3, 7], vec![4], vec![]]);
        let r = evaluate(
            &top,
            &truth,
            &[1, 3],
            Some(&[0, 10, 10, 5, 0, 1, 0, 2, 0, 1]),
        )
        .unwrap();
        assert_eq!(r.users, 2);
        let m1 = r.at(1).unwrap();
        // K=1: user 0 hits 3 at rank 1: recall 1/2, hit 1, ndcg 1, mrr 1, precision 1.
        assert_eq!(
            (m1.recall, m1.hit_rate, m1.ndcg, m1.mrr, m1.precision),
            (0.25, 0.5, 0.5, 0.5, 0.5)
        );
        let m3 = r.at(3).unwrap();
        // K=3: user 0 hits at ranks 1 and 3: recall 1, dcg = 1 + 1/log2(4) = 1.5,
        // idcg = 1 + 1/log2(3) = 1.6309; ndcg = 0.91972; precision 2/3. User 1: all 0.
        assert_eq!(m3.recall, 0.5);
        assert!((m3.ndcg - 0.5 * 1.5 / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-12);
        assert_eq!(m3.mrr, 0.5);
        assert!((m3.precision - 1.0 / 3.0).abs() < 1e-12);
        // Coverage at 3: distinct {3, 5, 7, 1, 2, 4} over 10 rankable items.
        assert_eq!(m3.coverage, 0.6);
        // Mean popularity at 1 over users 0, 1, 2: (5 + 10 + 0) / 3.
        assert_eq!(m1.mean_popularity, Some(5.0));
    }

    #[test]
    fn k_beyond_the_retrieved_list_is_an_error() {
        let top = ranked(&[&[1]], 1, 5);
        let msg = evaluate(&top, &Lists::from_rows(&[vec![1]]), &[2], None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("K = 2"), "{msg}");
    }

    #[test]
    fn paired_intervals_separate_an_effect_from_noise() {
        let base: Vec<f64> = (0..2000).map(|i| f64::from(i % 3 == 0)).collect();
        // A variant that gains a hit for one user in ten: a clear effect.
        let better: Vec<f64> = base
            .iter()
            .enumerate()
            .map(|(i, &b)| if i % 10 == 1 { 1.0 } else { b })
            .collect();
        let (d, Some((lo, hi))) = paired_bootstrap(&better, &base, 500, 0.95, 1) else {
            panic!("no interval")
        };
        // One in ten gains a hit unless it had one (one in thirty): +1/10 - 1/30.
        assert!(
            (d - 1.0 / 15.0).abs() < 1e-3 && lo > 0.0 && hi > lo,
            "{d} {lo} {hi}"
        );
        // Swapping hits between users leaves the mean alone: the interval straddles zero.
        let shuffled: Vec<f64> = (0..2000).map(|i| f64::from(i % 3 == 1)).collect();
        let (d, Some((lo, hi))) = paired_bootstrap(&shuffled, &base, 500, 0.95, 1) else {
            panic!("no interval")
        };
        assert!(d.abs() < 0.01 && lo < 0.0 && hi > 0.0, "{d} {lo} {hi}");
        assert_eq!(paired_bootstrap(&[], &[], 500, 0.95, 1), (0.0, None));
        // No resamples: the mean difference without an interval.
        let (d, ci) = paired_bootstrap(&better, &base, 0, 0.95, 1);
        assert!((d - 1.0 / 15.0).abs() < 1e-3 && ci.is_none(), "{d} {ci:?}");
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_is_seeded() {
        let v: Vec<f64> = (0..200)
            .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
            .collect();
        let (lo, hi) = bootstrap_mean(&v, 500, 0.95, 1).unwrap();
        assert!(lo < 0.25 && 0.25 < hi && hi - lo < 0.2, "{lo} {hi}");
        assert_eq!(bootstrap_mean(&v, 500, 0.95, 1), Some((lo, hi)));
    }

    fn arb_case() -> impl Strategy<Value = (Vec<Vec<u32>>, Vec<Vec<u32>>)> {
        (1usize..15).prop_flat_map(|users| {
            (
                proptest::collection::vec(
                    proptest::collection::hash_set(0u32..30, 10)
                        .prop_map(|s| s.into_iter().collect::<Vec<_>>()),
                    users,
                ),
                proptest::collection::vec(proptest::collection::vec(0u32..30, 0..4), users),
            )
        })
    }

    proptest! {
        #[test]
        fn recall_and_hit_rate_never_fall_as_k_grows((rank, truth) in arb_case()) {
            let top = TopK::from_ranked(10, 30, rank.iter().map(|r| r.iter().map(|&i| (i, 0.0)).collect()).collect());
            let truth: Vec<Vec<u32>> = truth.into_iter().map(|mut t| { t.sort(); t.dedup(); t }).collect();
            let r = evaluate(&top, &Lists::from_rows(&truth), &[1, 2, 5, 10], None).unwrap();
            for w in r.at_k.windows(2) {
                prop_assert!(w[0].recall <= w[1].recall + 1e-12);
                prop_assert!(w[0].hit_rate <= w[1].hit_rate + 1e-12);
            }
        }

        #[test]
        fn hit_rate_equals_recall_with_one_truth_item_and_user_order_does_not_matter(
            (rank, truth) in arb_case(), rotate in 0usize..15,
        ) {
            let truth: Vec<Vec<u32>> = truth.iter().map(|t| t.iter().take(1).copied().collect()).collect();
            let top = TopK::from_ranked(10, 30, rank.iter().map(|r| r.iter().map(|&i| (i, 0.0)).collect()).collect());
            let r = evaluate(&top, &Lists::from_rows(&truth), &[3, 10], None).unwrap();
            for m in &r.at_k {
                prop_assert!((m.recall - m.hit_rate).abs() < 1e-12);
            }
            let n = rank.len();
            let rot = rotate % n;
            let rank2: Vec<_> = rank.iter().cycle().skip(rot).take(n).cloned().collect();
            let truth2: Vec<_> = truth.iter().cycle().skip(rot).take(n).cloned().collect();
            let top2 = TopK::from_ranked(10, 30, rank2.iter().map(|r| r.iter().map(|&i| (i, 0.0)).collect()).collect());
            let r2 = evaluate(&top2, &Lists::from_rows(&truth2), &[3, 10], None).unwrap();
            for (a, b) in r.at_k.iter().zip(&r2.at_k) {
                prop_assert!((a.ndcg - b.ndcg).abs() < 1e-9 && (a.mrr - b.mrr).abs() < 1e-9 && (a.recall - b.recall).abs() < 1e-9);
                prop_assert_eq!(a.coverage, b.coverage);
            }
        }
    }
}
