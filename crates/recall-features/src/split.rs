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
//!
//! Rows are references into the sequences (`recall_core::encoded`): user and target position;
//! a row's history is read from the sequence, never copied.

use recall_core::columns::OOV_INDEX;
use recall_core::encoded::SplitRows;
pub use recall_core::encoded::{CapPick, ExampleCap};
use recall_core::mix::{GOLDEN_GAMMA, mix64};

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

/// The role of position `p` in a sequence of `n` interactions that ends in a test target
/// (`has_test`) or not: a time split's user with nothing after the cut has no test row, and
/// its last interaction is the validation target, as if the test came next.
pub fn role_in(p: usize, n: usize, validation: bool, has_test: bool) -> Role {
    if has_test {
        role(p, n, validation)
    } else {
        role(p, n + 1, validation)
    }
}

/// Training positions of a user's sequence of `n` interactions: `0..training_len(n)`.
pub fn training_len(n: usize, validation: bool) -> usize {
    training_len_in(n, validation, true)
}

/// [`training_len`] of a sequence with or without a test target (see [`role_in`]).
pub fn training_len_in(n: usize, validation: bool, has_test: bool) -> usize {
    (0..n)
        .take_while(|&p| role_in(p, n, validation, has_test) == Role::Train)
        .count()
}

/// The per-user cap of [`build_capped`]: which of `candidates` (ascending positions) user row
/// `u` keeps, ascending.
fn keep(cap: &ExampleCap, u: usize, candidates: &[usize]) -> Vec<usize> {
    if candidates.len() <= cap.count {
        return candidates.to_vec();
    }
    match cap.pick {
        CapPick::Recent => candidates[candidates.len() - cap.count..].to_vec(),
        CapPick::Random => {
            // Partial Fisher-Yates with a per-user generator: the choice for one user does not
            // depend on any other user's data.
            let mut state = cap.seed ^ (u as u64).wrapping_mul(GOLDEN_GAMMA);
            let mut next = move || {
                // splitmix64
                state = state.wrapping_add(GOLDEN_GAMMA);
                mix64(state)
            };
            let mut pool = candidates.to_vec();
            for i in 0..cap.count {
                let j = i + (next() % (pool.len() - i) as u64) as usize;
                pool.swap(i, j);
            }
            let mut kept = pool[..cap.count].to_vec();
            kept.sort_unstable();
            kept
        }
    }
}

/// The three splits as references into the users' sequences (age buckets still 0: the
/// encoder fills them in).
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: SplitRows,
    /// Empty when validation is off.
    pub valid: SplitRows,
    pub test: SplitRows,
    /// Training positions left out because their target is out of vocabulary (an item rarer
    /// than `item_min_count`): a model would learn them as positives of the shared OOV row.
    pub train_targets_oov: usize,
}

/// Builds the splits from sequences grouped by user: group `g` (user index `users[g]`) owns
/// positions `starts[g]..starts[g+1]` of `items`, in chronological order. Rows come out group
/// by group, positions ascending.
pub fn build(users: &[u32], starts: &[usize], items: &[i32], validation: bool) -> Splits {
    build_capped(users, starts, items, validation, None)
}

/// [`build`] keeping at most `cap.count` training examples per user. Histories are unchanged:
/// a kept example still sees every earlier interaction, dropped ones included.
pub fn build_capped(
    users: &[u32],
    starts: &[usize],
    items: &[i32],
    validation: bool,
    cap: Option<&ExampleCap>,
) -> Splits {
    build_split(
        users,
        starts,
        items,
        validation,
        cap,
        &vec![true; users.len()],
    )
}

/// [`build_capped`] where group `g` ends in a test target only when `has_test[g]` (a time
/// split: see [`role_in`]).
pub fn build_split(
    users: &[u32],
    starts: &[usize],
    items: &[i32],
    validation: bool,
    cap: Option<&ExampleCap>,
    has_test: &[bool],
) -> Splits {
    let mut train = SplitRows::default();
    let mut valid = SplitRows::default();
    let mut test = SplitRows::default();
    let mut train_positions = Vec::new();
    let mut train_targets_oov = 0;
    for (g, &user) in users.iter().enumerate() {
        let items = &items[starts[g]..starts[g + 1]];
        let n = items.len();
        train_positions.clear();
        for (p, &item) in items.iter().enumerate().skip(1) {
            match role_in(p, n, validation, has_test[g]) {
                Role::Train if item == OOV_INDEX => train_targets_oov += 1,
                Role::Train => train_positions.push(p),
                Role::Valid => valid.push(user, p as u32, 0),
                Role::Test => test.push(user, p as u32, 0),
            }
        }
        let kept = match cap {
            Some(cap) => keep(cap, g, &train_positions),
            None => train_positions.clone(),
        };
        for p in kept {
            train.push(user, p as u32, 0);
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

    /// The targets and histories of a split over one group's `items` (user index 5).
    fn view(rows: &SplitRows, items: &[i32], max_len: usize) -> Vec<(i32, Vec<i32>)> {
        (0..rows.len())
            .map(|r| {
                let p = rows.position[r] as usize;
                (items[p], items[p.saturating_sub(max_len)..p].to_vec())
            })
            .collect()
    }

    #[test]
    fn a_cap_keeps_the_newest_or_a_seeded_choice_with_full_histories() {
        // One user with 10 interactions, no validation: training positions 1..=8.
        let items: Vec<i32> = (100..110).collect();
        let recent = ExampleCap {
            count: 3,
            pick: CapPick::Recent,
            seed: 0,
        };
        let s = build_capped(&[5], &[0, 10], &items, false, Some(&recent));
        assert_eq!(s.train.position, vec![6, 7, 8]);
        // The kept example at position 6 still sees positions 0..6.
        assert_eq!(
            view(&s.train, &items, 50)[0],
            (106, vec![100, 101, 102, 103, 104, 105])
        );
        assert_eq!(s.test.position, vec![9]);
        let random = ExampleCap {
            pick: CapPick::Random,
            seed: 9,
            ..recent
        };
        let a = build_capped(&[5], &[0, 10], &items, false, Some(&random));
        let b = build_capped(&[5], &[0, 10], &items, false, Some(&random));
        assert_eq!(a, b);
        assert_eq!(a.train.len(), 3);
        assert!(a.train.position.windows(2).all(|w| w[0] < w[1]));
        let other = ExampleCap { seed: 10, ..random };
        let picks = (0..20)
            .map(|seed| {
                build_capped(
                    &[5],
                    &[0, 10],
                    &items,
                    false,
                    Some(&ExampleCap { seed, ..other }),
                )
                .train
                .position
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
            build_capped(&[5], &[0, 10], &items, false, Some(&wide)),
            build(&[5], &[0, 10], &items, false)
        );
    }

    #[test]
    fn out_of_vocabulary_targets_are_no_training_examples() {
        // One user, no validation: positions 1..=4 train, 5 is the test target; items at
        // positions 2 and 4 are out of vocabulary (1).
        let items = [10, 11, 1, 12, 1, 13];
        let s = build(&[7], &[0, 6], &items, false);
        assert_eq!(s.train.position, vec![1, 3]);
        assert_eq!(s.train_targets_oov, 2);
        // Histories still hold them, as the OOV item.
        assert_eq!(view(&s.train, &items, 50)[1], (12, vec![10, 11, 1]));
        assert_eq!(view(&s.test, &items, 50)[0].1, vec![10, 11, 1, 12, 1]);
    }

    #[test]
    fn leave_last_out_with_and_without_validation() {
        // User 7: items 10..15 (6 interactions); user 8: one interaction; user 9: two.
        let items = [10, 11, 12, 13, 14, 15, 20, 30, 31];
        let starts = [0, 6, 7, 9];
        let s = build(&[7, 8, 9], &starts, &items, false);
        assert_eq!(s.train.user, vec![7, 7, 7, 7]);
        assert_eq!(s.train.position, vec![1, 2, 3, 4]);
        assert_eq!(s.test.user, vec![7, 9]);
        assert_eq!(s.test.position, vec![5, 1]);
        assert!(s.valid.is_empty());
        assert_eq!(training_len(6, false), 5);
        assert_eq!(training_len(1, false), 1);
        assert_eq!(training_len(2, true), 1);

        let s = build(&[7, 8, 9], &starts, &items, true);
        assert_eq!(s.train.position, vec![1, 2, 3]);
        assert_eq!(s.valid.position, vec![4]);
        assert_eq!(s.test.position, vec![5, 1]);
        assert_eq!(training_len(6, true), 4);
        assert_eq!(training_len(3, true), 1);
    }

    proptest! {
        /// Targets are training, validation or test positions as the roles say, never position
        /// 0, and the counts follow torch-rechub's convention.
        #[test]
        fn rows_are_the_positions_their_roles_give(
            lengths in proptest::collection::vec(1usize..30, 1..20),
            validation: bool,
        ) {
            let mut starts = vec![0];
            for n in &lengths { starts.push(starts.last().unwrap() + n); }
            let total = *starts.last().unwrap();
            let items: Vec<i32> = (2..total as i32 + 2).collect();
            let users: Vec<u32> = (0..lengths.len() as u32).map(|u| u + 2).collect();
            let s = build(&users, &starts, &items, validation);
            for (split, want) in [(&s.train, Role::Train), (&s.valid, Role::Valid), (&s.test, Role::Test)] {
                for row in 0..split.len() {
                    let n = lengths[(split.user[row] - 2) as usize];
                    let p = split.position[row] as usize;
                    prop_assert!(p >= 1 && p < n);
                    prop_assert_eq!(role(p, n, validation), want);
                    if want == Role::Train {
                        prop_assert!(p < training_len(n, validation));
                    }
                }
            }
            let expected_train: usize = lengths.iter().map(|&n| n.saturating_sub(if validation && n >= 3 { 3 } else { 2 })).sum();
            prop_assert_eq!(s.train.len(), expected_train);
            prop_assert_eq!(s.test.len(), lengths.iter().filter(|&&n| n >= 2).count());
        }
    }
}
