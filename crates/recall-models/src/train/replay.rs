//! Incremental training after a warm start (`train.init_from.replay`): which training units
//! the earlier model already trained on, and each epoch's units (every new one plus a replay
//! sample of the earlier ones).

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_core::encoded::Sequences;
use serde::{Deserialize, Serialize};

/// What the earlier model trained on, per user of this encoding: the length of its training
/// prefix in the earlier encoding (0 for a user the earlier run did not have, or whose
/// sequence here does not begin with that prefix, so all of their examples count as new).
#[derive(Debug, Clone)]
pub struct EarlierExamples {
    trained_prefix: Vec<u32>,
    /// Users whose sequence here does not begin with their earlier training prefix (their
    /// history was rewritten, not extended): all of their examples are treated as new.
    pub diverged_users: usize,
}

impl EarlierExamples {
    /// Compares this encoding's sequences (`current`) with the earlier run's (`earlier`, the
    /// encoding this one grew from, so a user and an item keep their index).
    pub fn new(current: &Sequences, earlier: &Sequences) -> Self {
        let mut diverged_users = 0;
        let trained_prefix = (0..current.users() as u32)
            .map(|u| {
                if (u as usize) >= earlier.users() {
                    return 0;
                }
                let before = earlier.training(u);
                if current.sequence(u).starts_with(before) {
                    before.len() as u32
                } else {
                    diverged_users += 1;
                    0
                }
            })
            .collect();
        EarlierExamples {
            trained_prefix,
            diverged_users,
        }
    }

    /// Whether the earlier model trained on the target at `position` of `user`'s sequence.
    pub(crate) fn trained(&self, user: u32, position: u32) -> bool {
        self.trained_prefix
            .get(user as usize)
            .is_some_and(|&len| position < len)
    }
}

/// How the training units divide between the earlier model's and new ones (the report's
/// figures).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplaySplit {
    /// Units (rows, or the sequence kinds' windows) with a target the earlier model never
    /// trained on: every epoch trains on all of them.
    pub new_units: usize,
    /// Units the earlier model trained on.
    pub earlier_units: usize,
    /// How many of those each epoch replays.
    pub replayed_per_epoch: usize,
    /// Users whose history was rewritten rather than extended (see [`EarlierExamples`]).
    pub diverged_users: usize,
}

/// The units of every epoch: all of them, or the new ones plus `replay` of the earlier ones
/// drawn anew each epoch.
#[derive(Debug, Clone)]
pub(crate) enum EpochUnits {
    /// Every unit, every epoch: only their count is kept (at 100 M rows a second index list
    /// beside the epoch's order would be 0.8 GB).
    All(usize),
    Split {
        new: Vec<usize>,
        earlier: Vec<usize>,
        replayed: usize,
    },
}

impl EpochUnits {
    /// Divides `units` units by `is_new`, replaying `replay` of the earlier ones.
    pub(crate) fn new(units: usize, is_new: impl Fn(usize) -> bool, replay: f64) -> Self {
        let (new, earlier): (Vec<usize>, Vec<usize>) = (0..units).partition(|&u| is_new(u));
        let replayed = ((earlier.len() as f64) * replay).round() as usize;
        EpochUnits::Split {
            new,
            earlier,
            replayed,
        }
    }

    /// Units an epoch trains on.
    pub(crate) fn per_epoch(&self) -> usize {
        match self {
            EpochUnits::All(units) => *units,
            EpochUnits::Split { new, replayed, .. } => new.len() + replayed,
        }
    }

    /// The report's figures (none without a replay split).
    pub(crate) fn split(&self, diverged_users: usize) -> Option<ReplaySplit> {
        match self {
            EpochUnits::All(_) => None,
            EpochUnits::Split {
                new,
                earlier,
                replayed,
            } => Some(ReplaySplit {
                new_units: new.len(),
                earlier_units: earlier.len(),
                replayed_per_epoch: *replayed,
                diverged_users,
            }),
        }
    }

    /// Fills `order` with one epoch's units, shuffled with the training generator (the same
    /// seed gives the same epochs). For every unit this is a Fisher-Yates shuffle continuing
    /// from the previous epoch's order, as training always has.
    pub(crate) fn shuffle_into(&mut self, order: &mut Vec<usize>, rng: &mut Xoshiro256PlusPlus) {
        match self {
            EpochUnits::All(units) => {
                if order.len() != *units {
                    order.clear();
                    order.extend(0..*units);
                }
            }
            EpochUnits::Split {
                new,
                earlier,
                replayed,
            } => {
                // A partial Fisher-Yates draws the replay sample: the first `replayed` earlier
                // units after it are a uniform sample without replacement.
                let n = earlier.len();
                for i in 0..(*replayed).min(n) {
                    earlier.swap(i, rng.random_range(i..n));
                }
                order.clear();
                order.extend_from_slice(new);
                order.extend_from_slice(&earlier[..*replayed]);
            }
        }
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Every new unit trains every epoch; the replayed earlier units are `replay` of them,
    /// distinct, and another sample the next epoch; no earlier unit beyond them.
    #[test]
    fn an_epoch_is_every_new_unit_and_a_fresh_replay_sample() {
        let mut units = EpochUnits::new(100, |u| u % 10 == 0, 0.25);
        assert_eq!(units.per_epoch(), 10 + 23);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut order = Vec::new();
        let mut samples = Vec::new();
        for _ in 0..2 {
            units.shuffle_into(&mut order, &mut rng);
            assert_eq!(order.len(), 33);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 33, "no unit twice in an epoch");
            assert_eq!(sorted.iter().filter(|&&u| u % 10 == 0).count(), 10);
            samples.push(sorted);
        }
        assert_ne!(
            samples[0], samples[1],
            "each epoch draws its own replay sample"
        );
        let split = units.split(2).unwrap();
        assert_eq!((split.new_units, split.earlier_units), (10, 90));
        assert_eq!(split.replayed_per_epoch, 23);
    }

    /// Replay 0 trains on the new units alone; replay 1 on every unit.
    #[test]
    fn replay_bounds_are_new_only_and_everything() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut order = Vec::new();
        let mut none = EpochUnits::new(50, |u| u >= 40, 0.0);
        none.shuffle_into(&mut order, &mut rng);
        order.sort_unstable();
        assert_eq!(order, (40..50).collect::<Vec<_>>());
        let mut all = EpochUnits::new(50, |u| u >= 40, 1.0);
        all.shuffle_into(&mut order, &mut rng);
        order.sort_unstable();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
    }

    fn sequences(seqs: &[Vec<u32>], train_len: u32) -> Sequences {
        let mut offsets = vec![0];
        for s in seqs {
            offsets.push(offsets.last().unwrap() + s.len());
        }
        let train = seqs.iter().map(|s| train_len.min(s.len() as u32)).collect();
        Sequences::new(offsets, seqs.concat(), train, None).unwrap()
    }

    /// A user's examples are the earlier model's while their sequence extends its training
    /// prefix; a rewritten history or a new user makes all of theirs new.
    #[test]
    fn earlier_examples_follow_the_training_prefix() {
        // Rows 0 and 1 are the reserved (empty) users.
        let now = vec![vec![], vec![], vec![5, 6, 7, 8], vec![9, 5, 6], vec![7, 8]];
        let mut then = now[..4].to_vec();
        then[2].truncate(3);
        then[3] = vec![5, 9, 6];
        let e = EarlierExamples::new(&sequences(&now, 4), &sequences(&then, 2));
        assert!(e.trained(2, 1) && !e.trained(2, 2) && !e.trained(2, 3));
        assert!(
            !e.trained(3, 0) && !e.trained(3, 1),
            "rewritten history: every example is new"
        );
        assert!(!e.trained(4, 0), "a new user's examples are new");
        assert_eq!(e.diverged_users, 1);
    }
}
