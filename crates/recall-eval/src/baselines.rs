//! Baselines computed on the same split as the models: most-popular (by training counts) and
//! uniformly random, both honouring the same exclusions, so a model's numbers have a floor to
//! be read against.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_core::{Error, Result};

use crate::topk::{Lists, Options, TopK};

fn check(k: usize, n_items: usize, options: &Options) -> Result<usize> {
    let rankable = n_items.saturating_sub(options.first_item as usize);
    if k == 0 || k > rankable {
        return Err(Error::config(
            "k",
            format!("must be between 1 and the number of rankable items ({rankable}), got {k}"),
        ));
    }
    Ok(rankable)
}

fn excluded(options: &Options) -> Option<Lists> {
    options.exclude.as_ref().map(Lists::sorted_unique)
}

/// Most-popular: every user gets the items with the highest `popularity` (ties by index),
/// minus their exclusions; the score is the count.
pub fn most_popular(popularity: &[u64], users: usize, k: usize, options: &Options) -> Result<TopK> {
    let rankable = check(k, popularity.len(), options)?;
    let mut order: Vec<u32> = (options.first_item..popularity.len() as u32).collect();
    order.sort_by(|&a, &b| {
        popularity[b as usize]
            .cmp(&popularity[a as usize])
            .then(a.cmp(&b))
    });
    let ex = excluded(options);
    let rows = (0..users)
        .map(|u| {
            let skip = ex.as_ref().map(|e| e.get(u)).unwrap_or(&[]);
            order
                .iter()
                .filter(|i| skip.binary_search(i).is_err())
                .take(k)
                .map(|&i| (i, popularity[i as usize] as f32))
                .collect()
        })
        .collect();
    Ok(TopK::from_ranked(k, rankable, rows))
}

/// Random: every user gets `k` distinct rankable items drawn uniformly (minus exclusions),
/// from a generator seeded by (`seed`, user).
pub fn random(
    n_items: usize,
    users: usize,
    k: usize,
    options: &Options,
    seed: u64,
) -> Result<TopK> {
    let rankable = check(k, n_items, options)?;
    let first = options.first_item;
    let ex = excluded(options);
    let rows = (0..users)
        .map(|u| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                seed ^ (u as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let skip = ex.as_ref().map(|e| e.get(u)).unwrap_or(&[]);
            // Small draws from a large catalogue: rejection sampling, O(k) per user instead of
            // building the whole pool (100k users x 100k items took 75 s the other way).
            if (k + skip.len()) * 4 <= rankable {
                let mut chosen: Vec<u32> = Vec::with_capacity(k);
                while chosen.len() < k {
                    let i = rng.random_range(first..n_items as u32);
                    if skip.binary_search(&i).is_err() && !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
                return chosen
                    .into_iter()
                    .enumerate()
                    .map(|(r, i)| (i, -(r as f32)))
                    .collect();
            }
            let mut pool: Vec<u32> = (first..n_items as u32)
                .filter(|i| skip.binary_search(i).is_err())
                .collect();
            let take = k.min(pool.len());
            // Partial Fisher-Yates: the first `take` slots become a uniform sample.
            for i in 0..take {
                let j = rng.random_range(i..pool.len());
                pool.swap(i, j);
            }
            pool.truncate(take);
            pool.into_iter()
                .enumerate()
                .map(|(r, i)| (i, -(r as f32)))
                .collect()
        })
        .collect();
    Ok(TopK::from_ranked(k, rankable, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_popular_skips_reserved_and_seen_items() {
        let pop = [100, 100, 5, 9, 9, 1];
        let opts = Options {
            first_item: 2,
            exclude: Some(Lists::from_rows(&[vec![3], vec![]])),
            ..Options::default()
        };
        let top = most_popular(&pop, 2, 3, &opts).unwrap();
        assert_eq!(top.list(0), &[4, 2, 5]);
        assert_eq!(top.list(1), &[3, 4, 2]);
    }

    #[test]
    fn random_is_seeded_distinct_and_respects_exclusions() {
        let opts = Options {
            first_item: 2,
            exclude: Some(Lists::from_rows(&[vec![2, 3, 4]])),
            ..Options::default()
        };
        let a = random(50, 1, 10, &opts, 7).unwrap();
        assert_eq!(a, random(50, 1, 10, &opts, 7).unwrap());
        let mut l = a.list(0).to_vec();
        assert!(l.iter().all(|&i| i >= 5));
        l.sort();
        l.dedup();
        assert_eq!(l.len(), 10);
    }

    #[test]
    fn random_from_a_large_catalogue_rejects_duplicates_and_exclusions() {
        let excluded: Vec<u32> = (2..400).step_by(3).collect();
        let opts = Options {
            first_item: 2,
            exclude: Some(Lists::from_rows(&[excluded.clone(), vec![]])),
            ..Options::default()
        };
        let a = random(5_000, 2, 100, &opts, 9).unwrap();
        assert_eq!(a, random(5_000, 2, 100, &opts, 9).unwrap());
        for u in 0..2 {
            let mut l = a.list(u).to_vec();
            assert!(
                l.iter()
                    .all(|i| *i >= 2 && (u == 1 || excluded.binary_search(i).is_err()))
            );
            l.sort();
            l.dedup();
            assert_eq!(l.len(), 100);
        }
    }
}
