//! Bucketing of numeric features into small integer indices for embedding lookup.
//!
//! Index 0 means missing (null or NaN); a value `x` goes to `1 + #{b in boundaries : b <= x}`,
//! so `k` boundaries give buckets `1..=k+1`. Boundaries are either given (MovieLens age codes,
//! days of example age) or fitted as quantiles of the training values.

use recall_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Sorted, distinct, finite boundaries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    boundaries: Vec<f64>,
}

impl Buckets {
    /// Explicit boundaries; they must be finite and strictly increasing. `key` names the config
    /// entry in errors.
    pub fn fixed(boundaries: Vec<f64>, key: &str) -> Result<Self> {
        if boundaries.iter().any(|b| !b.is_finite()) {
            return Err(Error::config(key, "boundaries must be finite numbers"));
        }
        if boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::config(key, "boundaries must be strictly increasing"));
        }
        Ok(Buckets { boundaries })
    }

    /// Boundaries at the `1/n, 2/n, ... (n-1)/n` quantiles of the present values, with
    /// duplicates merged (so heavily tied data yields fewer buckets rather than empty ones).
    /// No present value gives no boundaries: everything lands in bucket 1.
    pub fn quantiles(values: impl Iterator<Item = f64>, n: usize, key: &str) -> Result<Self> {
        if n < 2 {
            return Err(Error::config(
                key,
                "quantile bucketing needs at least 2 buckets",
            ));
        }
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        v.sort_unstable_by(f64::total_cmp);
        let mut boundaries: Vec<f64> = Vec::with_capacity(n - 1);
        if !v.is_empty() {
            for q in 1..n {
                let b = v[(q * v.len() / n).min(v.len() - 1)];
                // A boundary equal to the minimum would leave bucket 1 empty.
                if b > v[0] && boundaries.last().is_none_or(|&last| b > last) {
                    boundaries.push(b);
                }
            }
        }
        Ok(Buckets { boundaries })
    }

    pub fn boundaries(&self) -> &[f64] {
        &self.boundaries
    }

    /// Number of indices used, including 0 for missing: the embedding table size.
    pub fn table_size(&self) -> usize {
        self.boundaries.len() + 2
    }

    /// The bucket index of a value (0 for missing or NaN).
    pub fn bucket(&self, x: Option<f64>) -> i32 {
        match x {
            Some(x) if !x.is_nan() => 1 + self.boundaries.partition_point(|&b| b <= x) as i32,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn movielens_age_codes_bucket_real_ages() {
        // ML-1M codes: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
        let b = Buckets::fixed(vec![18.0, 25.0, 35.0, 45.0, 50.0, 56.0], "age").unwrap();
        let got: Vec<i32> = [7.0, 18.0, 24.0, 25.0, 49.0, 50.0, 73.0]
            .iter()
            .map(|&a| b.bucket(Some(a)))
            .collect();
        assert_eq!(got, vec![1, 2, 2, 3, 5, 6, 7]);
        assert_eq!(b.bucket(None), 0);
        assert_eq!(b.bucket(Some(f64::NAN)), 0);
        assert_eq!(b.table_size(), 8);
    }

    #[test]
    fn unsorted_or_non_finite_boundaries_are_config_errors() {
        assert!(
            Buckets::fixed(vec![2.0, 1.0], "k")
                .unwrap_err()
                .to_string()
                .contains("`k`")
        );
        assert!(Buckets::fixed(vec![f64::INFINITY], "k").is_err());
        assert!(Buckets::quantiles([1.0].into_iter(), 1, "k").is_err());
    }

    #[test]
    fn quantiles_split_evenly_and_merge_ties() {
        let b = Buckets::quantiles((0..100).map(f64::from), 4, "k").unwrap();
        assert_eq!(b.boundaries(), &[25.0, 50.0, 75.0]);
        let tied = Buckets::quantiles([1.0; 50].into_iter().chain([2.0]), 4, "k").unwrap();
        assert_eq!(tied.boundaries(), &[] as &[f64]);
    }

    proptest! {
        #[test]
        fn buckets_are_monotone_and_in_range(mut xs in proptest::collection::vec(-1e6f64..1e6, 1..100), n in 2usize..12) {
            let b = Buckets::quantiles(xs.iter().copied(), n, "k").unwrap();
            xs.sort_by(f64::total_cmp);
            let idx: Vec<i32> = xs.iter().map(|&x| b.bucket(Some(x))).collect();
            prop_assert!(idx.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(idx.iter().all(|&i| i >= 1 && (i as usize) < b.table_size()));
        }
    }
}
