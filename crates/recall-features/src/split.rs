//! Leave-last-out splits and history sequences, as in the YoutubeDNN design.
//!
//! Per user, in chronological order (positions `0..n`):
//! - the last position `n-1` is the test target (users with `n >= 2`);
//! - with validation on, position `n-2` is the validation target (users with `n >= 3`);
//! - every other position is training data, and each training position `p >= 1` is a training
//!   example whose history is the items at positions `p-max_len..p` (oldest first, newest kept).
//!
//! A training position whose target is out of vocabulary (index 1, an item rarer than the
//! vocabulary's minimum count) is no example: it is counted and left out, while histories
//! still show it as the OOV item.
//!
//! A history never contains its target or anything after it: the example at `p` sees only
//! positions `< p`. So a user with `n` interactions gives `n-2` training examples without
//! validation (torch-rechub's convention; 988,129 on ML-1M) and `n-3` with it. Validation and
//! test histories include every earlier position, the validation item too for the test row,
//! since at test time it is known. A user with one interaction gives nothing but its training
//! interaction (it still counts towards vocabularies).

use recall_core::columns::OOV_INDEX;

/// What an interaction position is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Train,
    Valid,
    Test,
}

/// The role of position `p` in a sequence of `n` interactions.
pub fn role(p: usize, n: usize, validation: bool) -> Role {
    if n >= 2 && p == n - 1 {
        Role::Test
    } else if validation && n >= 3 && p == n - 2 {
        Role::Valid
    } else {
        Role::Train
    }
}

/// Examples of one split. Row `i` has history `history[history_offsets[i]..history_offsets[i+1]]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Examples {
    pub user: Vec<i32>,
    pub target: Vec<i32>,
    /// Position of the target in its user's sequence.
    pub target_seq: Vec<i32>,
    pub timestamp: Vec<Option<i64>>,
    pub history_offsets: Vec<usize>,
    pub history: Vec<i32>,
}

impl Examples {
    fn new() -> Self {
        Examples {
            history_offsets: vec![0],
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.target.len()
    }

    pub fn is_empty(&self) -> bool {
        self.target.is_empty()
    }

    pub fn history_of(&self, row: usize) -> &[i32] {
        &self.history[self.history_offsets[row]..self.history_offsets[row + 1]]
    }

    fn push(&mut self, user: i32, items: &[i32], ts: &[Option<i64>], p: usize, max_len: usize) {
        self.user.push(user);
        self.target.push(items[p]);
        self.target_seq.push(p as i32);
        self.timestamp.push(ts[p]);
        self.history
            .extend_from_slice(&items[p.saturating_sub(max_len)..p]);
        self.history_offsets.push(self.history.len());
    }
}

/// Which training examples a user keeps when they have more than a cap (the YoutubeDNN design
/// gives every user the same number of examples so heavy users do not dominate the loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapPick {
    /// A seeded uniform choice among the user's training positions (kept in time order).
    Random,
    /// The newest positions.
    Recent,
}

/// `encode.max_examples_per_user`: at most `count` training examples per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleCap {
    pub count: usize,
    #[serde(default = "default_pick")]
    pub pick: CapPick,
    /// Seed of the random choice. Default 0.
    #[serde(default)]
    pub seed: u64,
}

fn default_pick() -> CapPick {
    CapPick::Random
}

impl ExampleCap {
    /// The positions of `candidates` (ascending) kept for user row `u`, ascending.
    fn keep(&self, u: usize, candidates: &[usize]) -> Vec<usize> {
        if candidates.len() <= self.count {
            return candidates.to_vec();
        }
        match self.pick {
            CapPick::Recent => candidates[candidates.len() - self.count..].to_vec(),
            CapPick::Random => {
                // Partial Fisher-Yates with a per-user generator: the choice for one user does
                // not depend on any other user's data.
                let mut state = self.seed ^ (u as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = move || {
                    // splitmix64
                    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^ (z >> 31)
                };
                let mut pool = candidates.to_vec();
                for i in 0..self.count {
                    let j = i + (next() % (pool.len() - i) as u64) as usize;
                    pool.swap(i, j);
                }
                let mut kept = pool[..self.count].to_vec();
                kept.sort_unstable();
                kept
            }
        }
    }
}

/// The three splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Examples,
    /// Empty when validation is off.
    pub valid: Examples,
    pub test: Examples,
    /// Training positions left out because their target is out of vocabulary (an item rarer
    /// than `item_min_count`): a model would learn them as positives of the shared OOV row.
    pub train_targets_oov: usize,
}

/// Builds the splits from sequences grouped by user: user `u` owns positions
/// `starts[u]..starts[u+1]` of `items` and `timestamps`, in chronological order.
pub fn build(
    users: &[i32],
    starts: &[usize],
    items: &[i32],
    timestamps: &[Option<i64>],
    max_len: usize,
    validation: bool,
) -> Splits {
    build_capped(users, starts, items, timestamps, max_len, validation, None)
}

/// [`build`] keeping at most `cap.count` training examples per user. Histories are unchanged:
/// a kept example still sees every earlier interaction, dropped ones included.
pub fn build_capped(
    users: &[i32],
    starts: &[usize],
    items: &[i32],
    timestamps: &[Option<i64>],
    max_len: usize,
    validation: bool,
    cap: Option<&ExampleCap>,
) -> Splits {
    let mut train = Examples::new();
    let mut valid = Examples::new();
    let mut test = Examples::new();
    let mut train_positions = Vec::new();
    let mut train_targets_oov = 0;
    for (u, &user) in users.iter().enumerate() {
        let (s, e) = (starts[u], starts[u + 1]);
        let (items, ts) = (&items[s..e], &timestamps[s..e]);
        let n = items.len();
        train_positions.clear();
        for p in 1..n {
            match role(p, n, validation) {
                Role::Train if items[p] == OOV_INDEX => train_targets_oov += 1,
                Role::Train => train_positions.push(p),
                Role::Valid => valid.push(user, items, ts, p, max_len),
                Role::Test => test.push(user, items, ts, p, max_len),
            }
        }
        let kept = match cap {
            Some(cap) => cap.keep(u, &train_positions),
            None => train_positions.clone(),
        };
        for p in kept {
            train.push(user, items, ts, p, max_len);
        }
    }
    Splits {
        train,
        valid,
        test,
        train_targets_oov,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_cap_keeps_the_newest_or_a_seeded_choice_with_full_histories() {
        // One user with 10 interactions, no validation: training positions 1..=8.
        let items: Vec<i32> = (100..110).collect();
        let ts = [None; 10];
        let recent = ExampleCap {
            count: 3,
            pick: CapPick::Recent,
            seed: 0,
        };
        let s = build_capped(&[5], &[0, 10], &items, &ts, 50, false, Some(&recent));
        assert_eq!(s.train.target, vec![106, 107, 108]);
        // The kept example at position 6 still sees positions 0..6.
        assert_eq!(s.train.history_of(0), &[100, 101, 102, 103, 104, 105]);
        assert_eq!(s.test.target, vec![109]);
        let random = ExampleCap {
            pick: CapPick::Random,
            seed: 9,
            ..recent
        };
        let a = build_capped(&[5], &[0, 10], &items, &ts, 50, false, Some(&random));
        let b = build_capped(&[5], &[0, 10], &items, &ts, 50, false, Some(&random));
        assert_eq!(a, b);
        assert_eq!(a.train.len(), 3);
        assert!(a.train.target_seq.windows(2).all(|w| w[0] < w[1]));
        let other = ExampleCap { seed: 10, ..random };
        let picks = (0..20)
            .map(|seed| {
                build_capped(
                    &[5],
                    &[0, 10],
                    &items,
                    &ts,
                    50,
                    false,
                    Some(&ExampleCap { seed, ..other }),
                )
                .train
                .target
            })
            .collect::<std::collections::BTreeSet<_>>();
        assert!(
            picks.len() > 5,
            "the seed should change the choice: {picks:?}"
        );
        // Under the cap nothing changes.
        let wide = ExampleCap {
            count: 100,
            ..random
        };
        assert_eq!(
            build_capped(&[5], &[0, 10], &items, &ts, 50, false, Some(&wide)),
            build(&[5], &[0, 10], &items, &ts, 50, false)
        );
    }

    #[test]
    fn out_of_vocabulary_targets_are_no_training_examples() {
        // One user, no validation: positions 1..=4 train, 5 is the test target; items at
        // positions 2 and 4 are out of vocabulary (1).
        let items = [10, 11, 1, 12, 1, 13];
        let s = build(&[7], &[0, 6], &items, &[None; 6], 50, false);
        assert_eq!(s.train.target, vec![11, 12]);
        assert_eq!(s.train_targets_oov, 2);
        // Histories still hold them, as the OOV item.
        assert_eq!(s.train.history_of(1), &[10, 11, 1]);
        assert_eq!(s.test.history_of(0), &[10, 11, 1, 12, 1]);
    }

    #[test]
    fn leave_last_out_with_and_without_validation() {
        // User 7: items 10..15 (6 interactions); user 8: one interaction; user 9: two.
        let items = [10, 11, 12, 13, 14, 15, 20, 30, 31];
        let ts = [None; 9];
        let starts = [0, 6, 7, 9];
        let s = build(&[7, 8, 9], &starts, &items, &ts, 3, false);
        assert_eq!(s.train.target, vec![11, 12, 13, 14]);
        assert_eq!(s.train.history_of(0), &[10]);
        assert_eq!(s.train.history_of(3), &[11, 12, 13]);
        assert_eq!(s.test.target, vec![15, 31]);
        assert_eq!(s.test.history_of(0), &[12, 13, 14]);
        assert_eq!(s.test.history_of(1), &[30]);
        assert!(s.valid.is_empty());

        let s = build(&[7, 8, 9], &starts, &items, &ts, 50, true);
        assert_eq!(s.train.target, vec![11, 12, 13]);
        assert_eq!(s.valid.target, vec![14]);
        assert_eq!(s.valid.history_of(0), &[10, 11, 12, 13]);
        assert_eq!(s.test.target, vec![15, 31]);
        assert_eq!(s.test.history_of(0), &[10, 11, 12, 13, 14]);
    }

    proptest! {
        /// No future leakage: every history is exactly the `max_len` positions before its target,
        /// so it holds nothing at or after the target.
        #[test]
        fn histories_hold_only_earlier_positions(
            lengths in proptest::collection::vec(1usize..30, 1..20),
            max_len in 1usize..10,
            validation: bool,
        ) {
            let mut starts = vec![0];
            for n in &lengths { starts.push(starts.last().unwrap() + n); }
            let total = *starts.last().unwrap();
            // Item = global position + 2 (past the padding and OOV indices), so positions can
            // be read back from items.
            let items: Vec<i32> = (2..total as i32 + 2).collect();
            let ts = vec![None; total];
            let users: Vec<i32> = (0..lengths.len() as i32).collect();
            let s = build(&users, &starts, &items, &ts, max_len, validation);
            for split in [&s.train, &s.valid, &s.test] {
                for row in 0..split.len() {
                    let target = split.target[row];
                    let h = split.history_of(row);
                    prop_assert!(!h.is_empty() && h.len() <= max_len);
                    let user_start = starts[split.user[row] as usize] as i32 + 2;
                    let expected: Vec<i32> = ((target - h.len() as i32)..target).collect();
                    prop_assert_eq!(h, expected.as_slice());
                    prop_assert!(h[0] >= user_start);
                }
            }
            let expected_train: usize = lengths.iter().map(|&n| n.saturating_sub(if validation && n >= 3 { 3 } else { 2 })).sum();
            prop_assert_eq!(s.train.len(), expected_train);
            prop_assert_eq!(s.test.len(), lengths.iter().filter(|&&n| n >= 2).count());
        }
    }
}
