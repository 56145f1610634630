//! Uniform and popularity-weighted item distributions.
//!
//! Popularity draws use Vose's alias method: two tables of `n` entries built in O(n), then one
//! uniform index and one uniform float per draw, whatever the distribution.

use rand::{Rng, RngCore};
use recall_core::{Error, Result};

use crate::sampler::ItemSampler;

/// Uniform over items `first..end`.
#[derive(Debug, Clone)]
pub struct Uniform {
    first: u32,
    end: u32,
}

impl Uniform {
    pub fn new(first: u32, end: u32) -> Result<Self> {
        if end <= first {
            return Err(Error::config(
                "sampling",
                format!("empty item range {first}..{end}: the vocabulary has no items"),
            ));
        }
        Ok(Uniform { first, end })
    }
}

impl ItemSampler for Uniform {
    fn draw(&self, rng: &mut dyn RngCore) -> u32 {
        rng.random_range(self.first..self.end)
    }
    fn probability(&self, item: u32) -> f64 {
        if (self.first..self.end).contains(&item) {
            1.0 / f64::from(self.end - self.first)
        } else {
            0.0
        }
    }
    fn support(&self) -> std::ops::Range<u32> {
        self.first..self.end
    }
}

/// `p(i) ∝ weight(count_i)` over items `first..counts.len()`, by the alias method.
#[derive(Debug, Clone)]
pub struct Popularity {
    first: u32,
    /// Per slot: probability of keeping the slot's own item.
    keep: Vec<f64>,
    alias: Vec<u32>,
    weights: Vec<f64>,
    total: f64,
}

impl Popularity {
    /// `p(i) ∝ count_i ^ alpha`: alpha 0.75 as in word2vec, 1 proportional to popularity, 0
    /// uniform (over every item, even those with count 0: `0^0 = 1`).
    pub fn new(counts: &[u64], first: u32, alpha: f64) -> Result<Self> {
        if !alpha.is_finite() || alpha < 0.0 {
            return Err(Error::config(
                "sampling.alpha",
                format!("must be a finite number >= 0, got {alpha}"),
            ));
        }
        Self::from_weights(
            counts.iter().map(|&c| (c as f64).powf(alpha)).collect(),
            first,
        )
    }

    /// `p(i) ∝ ln(1 + count_i)`: a gentler suppression of hot items.
    pub fn log_count(counts: &[u64], first: u32) -> Result<Self> {
        Self::from_weights(counts.iter().map(|&c| (c as f64).ln_1p()).collect(), first)
    }

    /// From explicit non-negative weights; slots below `first` get weight 0.
    pub fn from_weights(mut weights: Vec<f64>, first: u32) -> Result<Self> {
        let first_us = first as usize;
        if weights.len() <= first_us {
            return Err(Error::config(
                "sampling",
                "the item vocabulary is empty: nothing to sample",
            ));
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
            return Err(Error::invalid(
                "sampling weights",
                format!("item {i} has weight {}", weights[i]),
            ));
        }
        weights[..first_us].fill(0.0);
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(Error::invalid(
                "sampling weights",
                "every item has weight 0 (all counts zero?): use uniform sampling or fit counts on training data",
            ));
        }
        let n = weights.len() - first_us;
        // Vose: scale to mean 1, pair each small slot with a large one.
        let mut scaled: Vec<f64> = weights[first_us..]
            .iter()
            .map(|w| w * n as f64 / total)
            .collect();
        let mut keep = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Left-overs are 1 up to rounding.
        for i in small.into_iter().chain(large) {
            keep[i] = 1.0;
        }
        Ok(Popularity {
            first,
            keep,
            alias: alias.into_iter().map(|a| a + first).collect(),
            weights,
            total,
        })
    }

    /// Sum of the weights (the normaliser of [`ItemSampler::probability`]).
    pub fn total_weight(&self) -> f64 {
        self.total
    }

    /// Draws many items quickly with a concrete generator (the hot path of training).
    #[inline]
    pub fn draw_with<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let slot = rng.random_range(0..self.keep.len());
        if rng.random::<f64>() < self.keep[slot] {
            slot as u32 + self.first
        } else {
            self.alias[slot]
        }
    }
}

impl ItemSampler for Popularity {
    fn draw(&self, rng: &mut dyn RngCore) -> u32 {
        self.draw_with(rng)
    }
    fn probability(&self, item: u32) -> f64 {
        self.weights
            .get(item as usize)
            .map_or(0.0, |w| w / self.total)
    }
    fn support(&self) -> std::ops::Range<u32> {
        self.first..self.weights.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn empirical(s: &dyn ItemSampler, n: usize, draws: usize, seed: u64) -> Vec<f64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut hist = vec![0f64; n];
        for _ in 0..draws {
            hist[s.draw(&mut rng) as usize] += 1.0;
        }
        hist.iter().map(|h| h / draws as f64).collect()
    }

    /// 10^6 draws from a skewed 100-item distribution: chi-square against the target with 98
    /// degrees of freedom (mean 98, sd 14) must stay under 98 + 5 sd, and the total variation
    /// distance under 0.01 (its expected value here is about 0.004).
    #[test]
    fn popularity_draws_match_count_to_the_alpha() {
        let counts: Vec<u64> = (0..101)
            .map(|i| if i < 2 { 0 } else { 1 + (1000 / i) as u64 })
            .collect();
        for alpha in [0.0, 0.75, 1.0] {
            let s = Popularity::new(&counts, 2, alpha).unwrap();
            let draws = 1_000_000;
            let p_hat = empirical(&s, counts.len(), draws, 42);
            let (mut chi2, mut tv) = (0.0, 0.0);
            for i in 2..counts.len() {
                let p = s.probability(i as u32);
                chi2 += (p_hat[i] - p).powi(2) * draws as f64 / p;
                tv += (p_hat[i] - p).abs() / 2.0;
            }
            assert!(chi2 < 98.0 + 5.0 * 14.0, "alpha {alpha}: chi2 {chi2}");
            assert!(tv < 0.01, "alpha {alpha}: tv {tv}");
            assert_eq!(p_hat[0] + p_hat[1], 0.0, "reserved slots are never drawn");
        }
    }

    #[test]
    fn log_count_and_uniform_probabilities() {
        let s = Popularity::log_count(&[0, 0, 1, 3], 2).unwrap();
        let z = 2f64.ln() + 4f64.ln();
        assert!((s.probability(3) - 4f64.ln() / z).abs() < 1e-12);
        let u = Uniform::new(2, 6).unwrap();
        assert_eq!(u.probability(3), 0.25);
        assert_eq!(u.probability(1), 0.0);
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        let msg = |r: Result<Popularity>| r.unwrap_err().to_string();
        assert!(msg(Popularity::new(&[0, 0, 1], 2, -1.0)).contains("sampling.alpha"));
        assert!(msg(Popularity::new(&[0, 0, 1], 2, f64::NAN)).contains("sampling.alpha"));
        assert!(msg(Popularity::new(&[0, 0], 2, 0.75)).contains("vocabulary is empty"));
        assert!(msg(Popularity::new(&[0, 0, 0, 0], 2, 0.75)).contains("every item has weight 0"));
        assert!(Uniform::new(2, 2).is_err());
    }
}
