//! In-batch and mixed negatives with sampling-bias correction.
//!
//! With in-batch negatives, item `j` appears as a candidate in proportion to how often it is a
//! training target, so popular items are over-penalised. Yi et al. (2019) correct each logit:
//! `s(u, v_j) - ln q_j`, with `q_j` the item's sampling probability, from training counts or
//! from their streaming estimator. Another row whose target equals this row's positive is an
//! accidental hit: it must not count as a negative, so it is masked.
//!
//! Mixed negatives (Yang et al. 2020) add `B'` items drawn from a second distribution (uniform
//! or popularity) shared by the whole batch; their logits are corrected with that
//! distribution's expected count `B' q'_j`, the in-batch ones with `B q_j`.

use rand::RngCore;

use crate::ItemSampler;

/// `-ln q_j` for each item, given its sampling probability (for in-batch candidates, the
/// probability of being a training target). Items with `q = 0` get 0 (no correction).
pub fn logq_correction(items: &[u32], q: impl Fn(u32) -> f64) -> Vec<f32> {
    items
        .iter()
        .map(|&i| {
            let q = q(i);
            if q > 0.0 { -(q.ln()) as f32 } else { 0.0 }
        })
        .collect()
}

/// `[B * B]` row-major: `true` where column `j`'s target equals row `i`'s and `i != j`; those
/// logits are set to -inf before the softmax.
pub fn accidental_hits(targets: &[u32]) -> Vec<bool> {
    let b = targets.len();
    let mut mask = vec![false; b * b];
    for i in 0..b {
        for j in 0..b {
            mask[i * b + j] = i != j && targets[i] == targets[j];
        }
    }
    mask
}

/// The streaming frequency estimator of Yi et al. (2019): for a hashed item `h`, `A[h]` is the
/// step it was last seen and `B[h]` a moving average of the gap between sightings; the item's
/// probability per step is estimated as `1 / B[h]`.
#[derive(Debug, Clone)]
pub struct StreamingFrequency {
    last_seen: Vec<f64>,
    gap: Vec<f64>,
    alpha: f64,
    step: u64,
}

impl StreamingFrequency {
    /// `buckets` hash slots, learning rate `alpha` (the paper uses about 0.01).
    pub fn new(buckets: usize, alpha: f64) -> Self {
        let buckets = buckets.max(1);
        StreamingFrequency {
            last_seen: vec![0.0; buckets],
            gap: vec![0.0; buckets],
            alpha,
            step: 0,
        }
    }

    fn slot(&self, item: u32) -> usize {
        (u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) as usize % self.gap.len()
    }

    /// Records one training step whose targets are `items`.
    pub fn update(&mut self, items: &[u32]) {
        self.step += 1;
        let t = self.step as f64;
        for &item in items {
            let h = self.slot(item);
            if self.last_seen[h] > 0.0 {
                self.gap[h] =
                    (1.0 - self.alpha) * self.gap[h] + self.alpha * (t - self.last_seen[h]);
            }
            self.last_seen[h] = t;
        }
    }

    /// Estimated probability that `item` is in a batch at a step (0 before its second sighting).
    pub fn probability(&self, item: u32) -> f64 {
        let b = self.gap[self.slot(item)];
        if b > 0.0 { (1.0 / b).min(1.0) } else { 0.0 }
    }
}

/// Candidates of a mixed-negative batch: the `B` batch targets then `B'` shared extra items,
/// with the log expected count of each (subtract from the logit).
#[derive(Debug, Clone, PartialEq)]
pub struct MixedBatch {
    pub items: Vec<u32>,
    pub log_expected_count: Vec<f32>,
}

/// Builds the candidates of a mixed batch: `targets` (with their in-batch probability
/// `q_batch`) plus `extra` draws from `sampler` shared by the batch.
pub fn mixed(
    targets: &[u32],
    q_batch: impl Fn(u32) -> f64,
    sampler: &dyn ItemSampler,
    extra: usize,
    rng: &mut dyn RngCore,
) -> MixedBatch {
    let drawn: Vec<u32> = (0..extra).map(|_| sampler.draw(rng)).collect();
    mixed_from_draws(targets, q_batch, sampler, &drawn)
}

/// [`mixed`] with the shared draws made beforehand (a trainer draws them ahead, on another
/// thread, while the previous batch trains).
pub fn mixed_from_draws(
    targets: &[u32],
    q_batch: impl Fn(u32) -> f64,
    sampler: &dyn ItemSampler,
    drawn: &[u32],
) -> MixedBatch {
    let b = targets.len() as f64;
    let extra = drawn.len() as f64;
    let mut items = targets.to_vec();
    let mut log_expected_count: Vec<f32> = targets
        .iter()
        .map(|&i| (b * q_batch(i)).max(f64::MIN_POSITIVE).ln() as f32)
        .collect();
    for &i in drawn {
        items.push(i);
        log_expected_count
            .push((extra * sampler.probability(i)).max(f64::MIN_POSITIVE).ln() as f32);
    }
    MixedBatch {
        items,
        log_expected_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Uniform;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn correction_is_minus_log_q_for_known_q(qs in proptest::collection::vec(1e-6f64..1.0, 1..50)) {
            let items: Vec<u32> = (0..qs.len() as u32).collect();
            let c = logq_correction(&items, |i| qs[i as usize]);
            for (ci, q) in c.iter().zip(&qs) {
                prop_assert!((f64::from(*ci) + q.ln()).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn accidental_hits_mask_equal_targets_off_the_diagonal() {
        let m = accidental_hits(&[5, 7, 5]);
        assert_eq!(
            m,
            vec![false, false, true, false, false, false, true, false, false]
        );
    }

    #[test]
    fn streaming_estimate_converges_to_the_true_rate() {
        // Item 3 appears every 4th step, item 9 every step.
        let mut f = StreamingFrequency::new(1024, 0.05);
        for step in 0..2000 {
            let mut items = vec![9];
            if step % 4 == 0 {
                items.push(3);
            }
            f.update(&items);
        }
        assert!(
            (f.probability(3) - 0.25).abs() < 0.01,
            "{}",
            f.probability(3)
        );
        assert!((f.probability(9) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn mixed_batch_corrects_each_part_with_its_own_distribution() {
        let u = Uniform::new(2, 102).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let m = mixed(&[10, 11], |_| 0.01, &u, 4, &mut rng);
        assert_eq!(m.items.len(), 6);
        assert!((m.log_expected_count[0] - (2.0f64 * 0.01).ln() as f32).abs() < 1e-6);
        assert!((m.log_expected_count[5] - (4.0f64 / 100.0).ln() as f32).abs() < 1e-6);
    }
}
