//! Hard negatives: items a trained model ranks high for the user but that are not positives.
//!
//! The miner gets each query's ranking (best first, e.g. the exact top-`hi` from
//! `recall-eval`) and draws uniformly from ranks `lo..hi` (0-based), skipping the user's
//! positives. Ranks just below the top are the informative ones: the very top is often
//! unlabelled positives, far ranks are easy. Mine with model A, train model B.

use rand::{Rng, RngCore};
use recall_core::{Error, Result};

/// Rankings per query row and the rank band to draw from.
#[derive(Debug, Clone)]
pub struct HardNegatives {
    rankings: Vec<Vec<u32>>,
    lo: usize,
    hi: usize,
}

impl HardNegatives {
    /// `rankings[row]` is that row's ranking, best first; the band is ranks `lo..hi` and must
    /// fit the catalogue of `n_items` rankable items.
    pub fn new(rankings: Vec<Vec<u32>>, lo: usize, hi: usize, n_items: usize) -> Result<Self> {
        if lo >= hi {
            return Err(Error::config(
                "sampling.hard_band",
                format!("the band {lo}..{hi} is empty: use lo < hi"),
            ));
        }
        if hi > n_items {
            return Err(Error::config(
                "sampling.hard_band",
                format!("the band {lo}..{hi} reaches past the catalogue of {n_items} items"),
            ));
        }
        Ok(HardNegatives { rankings, lo, hi })
    }

    /// The items hard negatives of query `row` are drawn from: its ranks `lo..hi` without the
    /// `positives` (sorted), in rank order. Draws are uniform over this pool, so an item of it
    /// has probability `1 / pool.len()` per hard draw (what a logQ correction needs).
    pub fn pool(&self, row: usize, positives: &[u32]) -> Result<Vec<u32>> {
        let ranking = self.rankings.get(row).ok_or_else(|| {
            Error::invalid(
                "hard negatives",
                format!(
                    "no ranking for query row {row} ({} rows mined)",
                    self.rankings.len()
                ),
            )
        })?;
        let band = &ranking[self.lo.min(ranking.len())..self.hi.min(ranking.len())];
        let pool: Vec<u32> = band
            .iter()
            .copied()
            .filter(|i| positives.binary_search(i).is_err())
            .collect();
        if pool.is_empty() {
            return Err(Error::invalid(
                "hard negatives",
                format!(
                    "query row {row} has no non-positive item in ranks {}..{}",
                    self.lo, self.hi
                ),
            ));
        }
        Ok(pool)
    }

    /// Appends `n` hard negatives for query `row` to `out`, none in `positives` (sorted).
    pub fn draw(
        &self,
        row: usize,
        rng: &mut dyn RngCore,
        positives: &[u32],
        n: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let pool = self.pool(row, positives)?;
        out.extend((0..n).map(|_| pool[rng.random_range(0..pool.len())]));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_stay_in_the_band_and_skip_positives() {
        let h = HardNegatives::new(vec![(10..30).collect()], 5, 10, 100).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let mut out = Vec::new();
        h.draw(0, &mut rng, &[16, 17], 200, &mut out).unwrap();
        assert!(
            out.iter()
                .all(|&i| (15..20).contains(&i) && i != 16 && i != 17)
        );
        assert!(out.contains(&15) && out.contains(&19));
    }

    #[test]
    fn bands_outside_the_catalogue_or_empty_are_errors() {
        assert!(
            HardNegatives::new(vec![], 50, 200, 100)
                .unwrap_err()
                .to_string()
                .contains("past the catalogue")
        );
        assert!(HardNegatives::new(vec![], 5, 5, 100).is_err());
        let h = HardNegatives::new(vec![vec![1, 2, 3]], 0, 2, 10).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        assert!(
            h.draw(0, &mut rng, &[1, 2], 1, &mut Vec::new())
                .unwrap_err()
                .to_string()
                .contains("no non-positive")
        );
    }
}
