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

use crate::sampler::ItemSampler;

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

/// How [`StreamingFrequency`] maps items to its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slots {
    /// One slot per item index `0..n`: exact, for catalogues that fit in memory (24 bytes per
    /// item).
    Direct(usize),
    /// Items hashed into this many slots (fixed memory; colliding items share an estimate).
    Hashed(usize),
}

/// Streaming estimate of each item's expected count per training step, after the frequency
/// estimator of Yi et al. (2019).
///
/// Per slot: the step the item was last seen (`A` in the paper), a moving average of the gap in
/// steps between two sightings (`B`) and a moving average of how many times the item occurs at a
/// sighting (`C`, the extension for batches in which an item occurs more than once). The
/// expected count per step is `C / B`. The paper's `1 / B` estimates the probability that the
/// item occurs at all, which cannot exceed 1: an item expected several times per batch got too
/// little correction, and repeats within a step (gap 0) drove its estimate towards 1 whatever
/// its frequency. Each slot averages with rate `max(alpha, 1 / sightings)`: a plain mean over
/// its first `1 / alpha` sightings (no start-up bias from an arbitrary initial value), then an
/// exponential moving average that follows a drifting distribution.
#[derive(Debug, Clone)]
pub struct StreamingFrequency {
    slots: Slots,
    last_seen: Vec<u64>,
    gap: Vec<f64>,
    count: Vec<f64>,
    /// Sightings that have updated the averages (the first only sets `last_seen`).
    updates: Vec<u32>,
    alpha: f64,
    step: u64,
    /// Occurrences of each slot in the current step, and the slots touched (scratch).
    in_step: Vec<u32>,
    touched: Vec<usize>,
}

impl StreamingFrequency {
    /// An estimator over `slots` with averaging rate `alpha` (the paper uses 0.01).
    pub fn new(slots: Slots, alpha: f64) -> Self {
        let n = match slots {
            Slots::Direct(n) | Slots::Hashed(n) => n.max(1),
        };
        StreamingFrequency {
            slots,
            last_seen: vec![0; n],
            gap: vec![0.0; n],
            count: vec![0.0; n],
            updates: vec![0; n],
            alpha,
            step: 0,
            in_step: vec![0; n],
            touched: Vec::new(),
        }
    }

    fn slot(&self, item: u32) -> usize {
        match self.slots {
            // Items outside the declared range share the last slot rather than panic.
            Slots::Direct(_) => (item as usize).min(self.gap.len() - 1),
            Slots::Hashed(n) => {
                (u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) as usize % n.max(1)
            }
        }
    }

    /// Records one training step whose targets are `items` (repeats included).
    pub fn update(&mut self, items: &[u32]) {
        self.step += 1;
        for &item in items {
            let h = self.slot(item);
            if self.in_step[h] == 0 {
                self.touched.push(h);
            }
            self.in_step[h] += 1;
        }
        let t = self.step;
        for &h in &self.touched {
            let occurrences = f64::from(std::mem::take(&mut self.in_step[h]));
            if self.last_seen[h] > 0 {
                self.updates[h] = self.updates[h].saturating_add(1);
                let rate = self.alpha.max(1.0 / f64::from(self.updates[h]));
                let gap = (t - self.last_seen[h]) as f64;
                self.gap[h] += rate * (gap - self.gap[h]);
                self.count[h] += rate * (occurrences - self.count[h]);
            }
            self.last_seen[h] = t;
        }
        self.touched.clear();
    }

    /// Estimated occurrences of `item` per step; `None` before its second sighting.
    pub fn expected_count(&self, item: u32) -> Option<f64> {
        let h = self.slot(item);
        (self.updates[h] > 0 && self.gap[h] > 0.0).then(|| self.count[h] / self.gap[h])
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

/// The candidates a batch's rows share, each item once: the batch's targets and the shared
/// draws, with the log of each item's probability of being in the set.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCandidates {
    pub items: Vec<u32>,
    /// `ln pi_j`, `pi_j = 1 - (1 - q_j)^T (1 - s_j)^D`: the chance that `T` target draws with
    /// probability `q_j` or `D` sampler draws with probability `s_j` brought item `j` in.
    pub log_inclusion: Vec<f32>,
    /// Column of each target (in the order given).
    pub target_columns: Vec<u32>,
}

/// The distinct candidates of a batch of `targets` (training targets, drawn with probability
/// `q` each) and `drawn` items from `sampler` (none for in-batch only), for a softmax whose
/// rows share one candidate set (a sequence model scores every position of its batch against
/// the same columns). Removing an item's duplicates changes its proposal from an expected
/// count to an inclusion probability `pi`, so its correction is `-ln pi` (sampled softmax with
/// a candidate set drawn by inclusion, Bengio and Senecal 2008): close to `-ln(T q)` for rare
/// items, close to 0 for items nearly every batch contains.
pub fn shared_candidates(
    targets: &[u32],
    q: impl Fn(u32) -> f64,
    sampler: Option<&dyn ItemSampler>,
    drawn: &[u32],
) -> SharedCandidates {
    let mut column: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let mut items = Vec::new();
    let mut target_columns = Vec::with_capacity(targets.len());
    for &i in targets.iter().chain(drawn) {
        let next = items.len() as u32;
        let c = *column.entry(i).or_insert_with(|| {
            items.push(i);
            next
        });
        if target_columns.len() < targets.len() {
            target_columns.push(c);
        }
    }
    let (t, d) = (targets.len() as f64, drawn.len() as f64);
    let log_inclusion = items
        .iter()
        .map(|&i| {
            // ln(1 - exp(T ln(1 - q) + D ln(1 - s))), computed without cancellation.
            let mut log_miss = t * (-q(i).clamp(0.0, 1.0)).ln_1p();
            if let Some(s) = sampler {
                log_miss += d * (-s.probability(i).clamp(0.0, 1.0)).ln_1p();
            }
            (-(log_miss.exp_m1())).max(f64::MIN_POSITIVE).ln() as f32
        })
        .collect();
    SharedCandidates {
        items,
        log_inclusion,
        target_columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::popularity::Uniform;
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

    /// Each item once, targets mapped to their columns; the inclusion probability of a rare
    /// item is about its expected count, of an item certain to be drawn 1 (no correction).
    #[test]
    fn shared_candidates_are_distinct_with_inclusion_probabilities() {
        let q = |i: u32| if i == 9 { 1.0 } else { 1e-6 };
        let sampler = Uniform::new(0, 100).unwrap();
        let c = shared_candidates(&[9, 4, 9], q, Some(&sampler), &[4, 50]);
        assert_eq!(c.items, vec![9, 4, 50]);
        assert_eq!(c.target_columns, vec![0, 1, 0]);
        // Item 9 is certain: ln 1 = 0.
        assert!(c.log_inclusion[0].abs() < 1e-6);
        // Item 50: 3 target draws at 1e-6 and 2 uniform draws at 1/100: about 0.0199.
        let expected = 1.0 - (1.0f64 - 1e-6).powi(3) * (1.0f64 - 0.01).powi(2);
        assert!((f64::from(c.log_inclusion[2]) - expected.ln()).abs() < 1e-5);
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
        // Item 3 appears every 4th step, item 9 three times every step.
        let mut f = StreamingFrequency::new(Slots::Direct(16), 0.05);
        assert_eq!(f.expected_count(3), None);
        for step in 0..2000 {
            let mut items = vec![9, 9, 9];
            if step % 4 == 0 {
                items.push(3);
            }
            f.update(&items);
        }
        let three = f.expected_count(3).unwrap();
        assert!((three - 0.25).abs() < 1e-9, "{three}");
        let nine = f.expected_count(9).unwrap();
        assert!((nine - 3.0).abs() < 1e-9, "{nine}");
    }

    /// A seeded Zipf stream of batches, as in-batch training sees its targets: the estimate
    /// follows each item's count per batch over the stream (what `logq_source = "counts"`
    /// uses) within 10 % for every item seen at least 100 times, and the generating
    /// distribution's expected count within 10 % for items expected at least once per batch
    /// (the old estimator stopped at 1, and hashed 39 % of a dense catalogue onto shared slots).
    #[test]
    fn streaming_estimate_tracks_a_zipf_stream() {
        let n = 2_000usize;
        let (batch, steps) = (512usize, 20_000u64);
        let weights: Vec<f64> = (0..n).map(|i| 1.0 / (i + 1) as f64).collect();
        let total: f64 = weights.iter().sum();
        let zipf = crate::popularity::Popularity::from_weights(weights.clone(), 0).unwrap();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
        let mut f = StreamingFrequency::new(Slots::Direct(n), 0.001);
        let mut seen = vec![0u64; n];
        let mut items = Vec::with_capacity(batch);
        for _ in 0..steps {
            items.clear();
            items.extend((0..batch).map(|_| zipf.draw_with(&mut rng)));
            for &i in &items {
                seen[i as usize] += 1;
            }
            f.update(&items);
        }
        let mut checked = 0;
        for (i, &count) in seen.iter().enumerate().filter(|(_, c)| **c >= 100) {
            let estimate = f.expected_count(i as u32).unwrap();
            let observed = count as f64 / steps as f64;
            assert!(
                (estimate / observed - 1.0).abs() < 0.10,
                "item {i}: {estimate} per batch, the stream had {observed}"
            );
            let expected = batch as f64 * weights[i] / total;
            if expected >= 1.0 {
                assert!(
                    (estimate / expected - 1.0).abs() < 0.10,
                    "item {i}: {estimate} per batch, expected {expected}"
                );
            }
            checked += 1;
        }
        assert!(checked > 1_500, "{checked} items checked");
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
