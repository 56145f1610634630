//! A seeded, MovieLens-shaped synthetic dataset with structure a recall model can learn.
//!
//! What is planted, so that a working model beats popularity and a broken one does not:
//! - every item has a primary genre (plus up to two more for its `genres` bag) and a Zipf
//!   popularity within that genre, so popularity alone is a real but weak baseline;
//! - every user has two or three favourite genres, the first often fixed by the user's
//!   (gender, age) group, so user features carry signal for cold users;
//! - a user's sequence moves between genres as a sticky Markov chain: the next item's genre is
//!   most often the genre of the last item, so the recent history predicts the next item;
//! - timestamps come in sessions (minutes apart) separated by days, so example age is real.
//!
//! Every user draws from its own generator seeded by (seed, user), so the output is identical
//! for a given config whatever the order of generation.

use std::sync::Arc;

use std::path::{Path, PathBuf};

use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use recall_core::write::{ROW_GROUP_ROWS, write_parquet_batches};
use recall_core::{Error, RawIds, Result, columns as col, ingested};
use serde::{Deserialize, Serialize};

use crate::dataset::{Dataset, Events, IngestStats, Interactions, batch, items_batch};

const GENRE_NAMES: [&str; 18] = [
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];
/// MovieLens-1M age codes and their shares of users in that release.
const AGE_CODES: [(i32, f64); 7] = [
    (1, 0.037),
    (18, 0.183),
    (25, 0.347),
    (35, 0.197),
    (45, 0.091),
    (50, 0.082),
    (56, 0.063),
];

fn default_users() -> usize {
    2_000
}
fn default_items() -> usize {
    1_000
}
fn default_per_user() -> usize {
    60
}
fn default_genres() -> usize {
    18
}
fn default_zipf() -> f64 {
    1.0
}
fn default_stickiness() -> f64 {
    0.6
}
fn default_focus() -> f64 {
    0.85
}
fn default_start() -> i64 {
    // 2000-12-01, near the start of the ML-1M window.
    975_628_800
}

/// Size and shape of the synthetic data. Only `seed` has no default.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of users. Default 2,000.
    #[serde(default = "default_users")]
    pub users: usize,
    /// Number of items. Default 1,000.
    #[serde(default = "default_items")]
    pub items: usize,
    /// Mean interactions per user (at least 5 each, long-tailed above). Default 60.
    #[serde(default = "default_per_user")]
    pub interactions_per_user: usize,
    /// Number of genres (taste clusters). Default 18, MovieLens's count.
    #[serde(default = "default_genres")]
    pub genres: usize,
    /// Zipf exponent of item popularity within a genre. Default 1.0.
    #[serde(default = "default_zipf")]
    pub popularity_exponent: f64,
    /// Probability that the next item keeps the genre of the previous one. Default 0.6.
    #[serde(default = "default_stickiness")]
    pub stickiness: f64,
    /// Probability that a genre change goes to a favourite genre rather than any genre.
    /// Default 0.85.
    #[serde(default = "default_focus")]
    pub focus: f64,
    /// First possible timestamp (seconds since the epoch).
    #[serde(default = "default_start")]
    pub start_timestamp: i64,
    /// Share of items that arrive over time instead of being there from the start: each gets
    /// an arrival time, uniform over the two years in which users start, and nobody interacts
    /// with it before then (for time splits with cold items). Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arriving_items: f64,
    /// With arriving items: the probability that a draw picks, instead of a Zipf draw, one of
    /// the current genre's items that arrived in the last 30 days (when there is one), as new
    /// releases draw attention. Default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub new_item_boost: f64,
    /// Longest gap between two sessions of a user, in days (gaps are uniform between an hour
    /// and this): larger values spread each user's activity over a longer time, so more users
    /// span a time split's cut. Default 10.
    #[serde(default = "default_session_gap_days")]
    pub max_session_gap_days: u32,
    /// Seed of everything random here.
    pub seed: u64,
}

impl SyntheticConfig {
    /// A config of the given size with every other setting at its default.
    pub fn new(users: usize, items: usize, interactions_per_user: usize, seed: u64) -> Self {
        SyntheticConfig {
            users,
            items,
            interactions_per_user,
            genres: default_genres(),
            popularity_exponent: default_zipf(),
            stickiness: default_stickiness(),
            focus: default_focus(),
            start_timestamp: default_start(),
            arriving_items: 0.0,
            new_item_boost: 0.0,
            max_session_gap_days: default_session_gap_days(),
            seed,
        }
    }

    fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, msg: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(format!("ingest.{key}"), msg))
            }
        };
        check(self.users >= 1, "users", "must be at least 1")?;
        check(self.items >= 10, "items", "must be at least 10")?;
        check(self.genres >= 1, "genres", "must be at least 1")?;
        check(
            self.genres <= self.items,
            "genres",
            "must not exceed the number of items",
        )?;
        check(
            self.interactions_per_user >= 5,
            "interactions_per_user",
            "must be at least 5",
        )?;
        let prob = |x: f64| (0.0..=1.0).contains(&x);
        check(prob(self.stickiness), "stickiness", "must be in [0, 1]")?;
        check(prob(self.focus), "focus", "must be in [0, 1]")?;
        check(
            prob(self.arriving_items),
            "arriving_items",
            "must be in [0, 1]",
        )?;
        check(
            prob(self.new_item_boost),
            "new_item_boost",
            "must be in [0, 1]",
        )?;
        check(
            self.max_session_gap_days >= 1,
            "max_session_gap_days",
            "must be at least 1",
        )?;
        check(
            self.popularity_exponent.is_finite() && self.popularity_exponent >= 0.0,
            "popularity_exponent",
            "must be a finite number >= 0",
        )
    }
}

/// SplitMix64 step: decorrelates per-user seeds derived from one config seed.
fn mix(z: u64) -> u64 {
    recall_core::mix::mix64(z.wrapping_add(recall_core::mix::GOLDEN_GAMMA))
}

fn rng_for(seed: u64, stream: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(mix(seed ^ mix(stream)))
}

/// Draws an index from cumulative weights by binary search.
fn draw(cumulative: &[f64], rng: &mut impl Rng) -> usize {
    let total = cumulative.last().copied().unwrap_or(0.0);
    let u = rng.random::<f64>() * total;
    cumulative
        .partition_point(|&c| c <= u)
        .min(cumulative.len() - 1)
}

fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

fn genre_name(g: usize) -> String {
    GENRE_NAMES
        .get(g)
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| format!("Genre-{g}"))
}

/// Users start within two years of `start_timestamp` (and items arrive within them).
const USER_START_SPAN: i64 = 2 * 365 * 86_400;

fn default_session_gap_days() -> u32 {
    10
}

/// How long an arrived item counts as new for `new_item_boost`.
const NEW_FOR: i64 = 30 * 86_400;

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The entries of `late` (sorted by arrival) that arrived in `(from, to]`.
fn arrived_between(late: &[(i64, u32)], from: i64, to: i64) -> &[(i64, u32)] {
    let start = late.partition_point(|&(t, _)| t <= from);
    let end = late.partition_point(|&(t, _)| t <= to);
    &late[start..end.max(start)]
}

/// The catalogue and everything drawn once for it. Users are then drawn from it one at a
/// time, each from a generator of its own, so a user's rows can be written as soon as they
/// are drawn ([`write`]) or collected ([`generate`]) with the same result.
struct World<'a> {
    config: &'a SyntheticConfig,
    /// Each item's primary genre.
    primary: Vec<u32>,
    /// Each item's genres (primary first), CSR over `genre_offsets`: indices, not names, so a
    /// 10 M-item catalogue holds 0.1 GB here rather than a GB of strings.
    genres: Vec<u32>,
    genre_offsets: Vec<usize>,
    by_genre: Vec<Vec<u32>>,
    genre_cumulative: Vec<Vec<f64>>,
    genre_sizes: Vec<f64>,
    group_genre: Vec<usize>,
    age_cumulative: Vec<f64>,
    arrival: Option<Vec<i64>>,
    /// Each genre's late arrivals as (arrival, item), by arrival time.
    arrivals_by_genre: Option<Vec<Vec<(i64, u32)>>>,
    /// The last user that drew each item (`u32::MAX`: none yet).
    seen: Vec<u32>,
}

/// One user's draw: profile and rows.
#[derive(Default)]
struct UserRows {
    gender: &'static str,
    age: i32,
    occupation: i32,
    items: Vec<i64>,
    ratings: Vec<Option<f32>>,
    times: Vec<i64>,
}

impl<'a> World<'a> {
    fn new(config: &'a SyntheticConfig) -> Result<Self> {
        config.validate()?;
        let n_genres = config.genres;
        // Items: primary genre round-robin over a shuffled order (every genre non-empty), Zipf
        // popularity by a random rank within the genre.
        let mut rng = rng_for(config.seed, u64::MAX);
        let mut primary = vec![0u32; config.items];
        let mut by_genre: Vec<Vec<u32>> = vec![Vec::new(); n_genres];
        let mut genres = Vec::with_capacity(config.items * 2);
        let mut genre_offsets = Vec::with_capacity(config.items + 1);
        genre_offsets.push(0);
        for (item, p) in primary.iter_mut().enumerate() {
            // Genres have unequal sizes, as in MovieLens (Drama and Comedy dominate).
            let g = if item < n_genres {
                item
            } else {
                let r = rng.random::<f64>();
                ((r * r) * n_genres as f64) as usize % n_genres
            };
            *p = g as u32;
            by_genre[g].push(item as u32);
            let first = genres.len();
            genres.push(g as u32);
            for _ in 0..rng.random_range(0..3usize) {
                let extra = rng.random_range(0..n_genres) as u32;
                if !genres[first..].contains(&extra) {
                    genres.push(extra);
                }
            }
            genre_offsets.push(genres.len());
        }
        let mut genre_cumulative = Vec::with_capacity(n_genres);
        for items in by_genre.iter_mut() {
            // Shuffle so popularity rank is unrelated to the item id.
            for i in (1..items.len()).rev() {
                items.swap(i, rng.random_range(0..=i));
            }
            genre_cumulative.push(cumulative(
                (0..items.len()).map(|rank| (rank as f64 + 1.0).powf(-config.popularity_exponent)),
            ));
        }
        // Genres are chosen in proportion to their size when a user explores.
        let genre_sizes = cumulative(by_genre.iter().map(|v| v.len() as f64));
        // One preferred genre per (gender, age) group.
        let group_genre: Vec<usize> = (0..2 * AGE_CODES.len())
            .map(|_| draw(&genre_sizes, &mut rng))
            .collect();
        let age_cumulative = cumulative(AGE_CODES.iter().map(|&(_, p)| p));

        // Arrival times, from a generator of their own so the rest of the data is unchanged
        // when no item arrives late.
        let arrival: Option<Vec<i64>> = (config.arriving_items > 0.0).then(|| {
            let mut rng = rng_for(config.seed, u64::MAX - 1);
            (0..config.items)
                .map(|_| {
                    if rng.random::<f64>() < config.arriving_items {
                        config.start_timestamp + rng.random_range(0..USER_START_SPAN)
                    } else {
                        i64::MIN
                    }
                })
                .collect()
        });
        let arrivals_by_genre = arrival.as_ref().map(|a| {
            by_genre
                .iter()
                .map(|items| {
                    let mut late: Vec<(i64, u32)> = items
                        .iter()
                        .filter(|&&i| a[i as usize] > i64::MIN)
                        .map(|&i| (a[i as usize], i))
                        .collect();
                    late.sort_unstable();
                    late
                })
                .collect()
        });
        Ok(World {
            config,
            primary,
            genres,
            genre_offsets,
            by_genre,
            genre_cumulative,
            genre_sizes,
            group_genre,
            age_cumulative,
            arrival,
            arrivals_by_genre,
            seen: vec![u32::MAX; config.items],
        })
    }

    /// Draws user `user` (0-based) into `out` (cleared first): rows in strictly increasing
    /// time, no item twice.
    fn draw_user(&mut self, user: usize, out: &mut UserRows) {
        let config = self.config;
        out.items.clear();
        out.ratings.clear();
        out.times.clear();
        let mean_extra = config.interactions_per_user.saturating_sub(5) as f64;
        let max_per_user = config.items.saturating_mul(3) / 4;
        let mut rng = rng_for(config.seed, user as u64);
        let male = rng.random::<f64>() < 0.72;
        let age_group = draw(&self.age_cumulative, &mut rng);
        out.gender = if male { "M" } else { "F" };
        out.age = AGE_CODES[age_group].0;
        out.occupation = rng.random_range(0..21i32);
        let group = usize::from(male) * AGE_CODES.len() + age_group;
        let mut favourites = vec![if rng.random::<f64>() < 0.6 {
            self.group_genre[group]
        } else {
            draw(&self.genre_sizes, &mut rng)
        }];
        for _ in 0..rng.random_range(1..3usize) {
            favourites.push(draw(&self.genre_sizes, &mut rng));
        }

        // Long-tailed activity: at least 5, exponential above with the configured mean.
        let extra = -(1.0 - rng.random::<f64>()).ln() * mean_extra;
        let n = (5 + extra as usize).min(max_per_user).max(5);
        let mut t = config.start_timestamp + rng.random_range(0..USER_START_SPAN);
        let mut genre = favourites[0];
        let mut produced = 0;
        let mut attempts = 0;
        while produced < n && attempts < 20 * n {
            attempts += 1;
            if rng.random::<f64>() >= config.stickiness {
                genre = if rng.random::<f64>() < config.focus {
                    favourites[rng.random_range(0..favourites.len())]
                } else {
                    draw(&self.genre_sizes, &mut rng)
                };
            }
            // Sessions: mostly minutes apart, sometimes days.
            let max_gap = i64::from(config.max_session_gap_days) * 86_400;
            let gap = |rng: &mut Xoshiro256PlusPlus| {
                if rng.random::<f64>() < 0.8 {
                    rng.random_range(30..900)
                } else {
                    rng.random_range(3_600..max_gap)
                }
            };
            // With items arriving over time the choice is made at the interaction's own time
            // (its gap drawn first); without, the generator keeps its original order of draws.
            let ahead = self.arrival.as_ref().map(|_| gap(&mut rng));
            let now = t + ahead.unwrap_or(0);
            let recent = self.arrivals_by_genre.as_ref().map_or(&[][..], |by| {
                arrived_between(&by[genre], now - NEW_FOR, now)
            });
            let item = if !recent.is_empty() && rng.random::<f64>() < config.new_item_boost {
                recent[rng.random_range(0..recent.len())].1
            } else {
                self.by_genre[genre][draw(&self.genre_cumulative[genre], &mut rng)]
            } as usize;
            if self.seen[item] == user as u32
                || self.arrival.as_ref().is_some_and(|a| now < a[item])
            {
                continue;
            }
            self.seen[item] = user as u32;
            produced += 1;
            t += ahead.unwrap_or_else(|| gap(&mut rng));
            let liked = favourites.contains(&(self.primary[item] as usize));
            let rating = (3.0 + f64::from(u8::from(liked)) + rng.random_range(-1.5..1.5))
                .round()
                .clamp(1.0, 5.0);
            out.items.push(item as i64 + 1);
            out.ratings.push(Some(rating as f32));
            out.times.push(t);
        }
    }

    /// The item side table's rows `range` (ids `range.start + 1 ..`).
    fn items_batch(&self, range: std::ops::Range<usize>) -> Result<RecordBatch> {
        let titles = range
            .clone()
            .map(|i| {
                Some(format!(
                    "Item {} ({})",
                    i + 1,
                    genre_name(self.primary[i] as usize)
                ))
            })
            .collect();
        let genres: Vec<Vec<String>> = range
            .clone()
            .map(|i| {
                self.genres[self.genre_offsets[i]..self.genre_offsets[i + 1]]
                    .iter()
                    .map(|&g| genre_name(g as usize))
                    .collect()
            })
            .collect();
        let table = items_batch(
            RawIds::Int((range.start as i64 + 1..=range.end as i64).collect()),
            titles,
            &genres,
        )?;
        let Some(arrival) = &self.arrival else {
            return Ok(table);
        };
        // With items arriving over time, each late item's arrival as its release time (null for
        // the items there from the start), for `encode.item_release`.
        let released: Int64Array = range
            .map(|i| (arrival[i] != i64::MIN).then_some(arrival[i]))
            .collect();
        recall_core::table::with_column(&table, RELEASED, Arc::new(released), true)
    }
}

/// The users' profiles in user order: the user side table.
#[derive(Default)]
struct Profiles {
    genders: Vec<&'static str>,
    ages: Vec<i32>,
    occupations: Vec<i32>,
}

impl Profiles {
    fn push(&mut self, user: &UserRows) {
        self.genders.push(user.gender);
        self.ages.push(user.age);
        self.occupations.push(user.occupation);
    }

    fn into_batch(self) -> Result<RecordBatch> {
        batch(vec![
            (
                col::USER_ID,
                RawIds::Int((1..=self.genders.len() as i64).collect()).to_array(),
                false,
            ),
            ("gender", Arc::new(StringArray::from(self.genders)), false),
            ("age", Arc::new(Int32Array::from(self.ages)), false),
            (
                "occupation",
                Arc::new(Int32Array::from(self.occupations)),
                false,
            ),
        ])
    }
}

/// The dataset's name in its files.
pub const NAME: &str = "synthetic";
/// The item table's release-time column (Unix seconds) with `arriving_items`: each late item's
/// arrival, null for the items there from the start.
pub use recall_core::columns::RELEASED;
/// What errors name as the source.
const ORIGIN: &str = "synthetic generator";

/// Generates the dataset described by `config` in memory.
pub fn generate(config: &SyntheticConfig) -> Result<Dataset> {
    let mut world = World::new(config)?;
    let mut users = Vec::new();
    let mut items = Vec::new();
    let mut ratings = Vec::new();
    let mut times = Vec::new();
    let mut profiles = Profiles::default();
    let mut rows = UserRows::default();
    for user in 0..config.users {
        world.draw_user(user, &mut rows);
        profiles.push(&rows);
        users.extend(std::iter::repeat_n(user as i64 + 1, rows.items.len()));
        items.extend_from_slice(&rows.items);
        ratings.extend_from_slice(&rows.ratings);
        times.extend_from_slice(&rows.times);
    }
    let origin = Path::new(ORIGIN);
    let events = Events {
        user_id: RawIds::Int(users),
        item_id: RawIds::Int(items),
        rating: ratings,
        timestamp: times.iter().map(|&t| Some(t)).collect(),
        order: times,
    };
    let (interactions, stats) = Interactions::from_events(origin, events)?;
    Ok(Dataset {
        name: String::from(NAME),
        interactions,
        users: Some(profiles.into_batch()?),
        items: Some(world.items_batch(0..config.items)?),
        stats,
    })
}

/// Generates the dataset described by `config` straight into the canonical files in `dir`,
/// user by user, in memory bounded by the catalogue (a few tens of bytes an item) and the
/// user table, not by the interactions: how 100 M rows are made on one machine. The files
/// are [`generate`]'s written by [`Dataset::write`], byte for byte: each user's rows come
/// out in time order with no item twice, so the canonical ordering has nothing to change.
pub fn write(config: &SyntheticConfig, dir: &Path) -> Result<(Vec<PathBuf>, IngestStats)> {
    let mut world = World::new(config)?;
    let meta = [(ingested::DATASET_KEY, String::from(NAME))];
    let mut stats = IngestStats::default();
    let mut used = vec![false; config.items];
    let mut profiles = Profiles::default();
    let interactions_path = dir.join(ingested::INTERACTIONS);
    let schema = Interactions::empty().to_batch()?.schema();
    write_parquet_batches(&interactions_path, schema, &meta, |sink| {
        let mut rows = UserRows::default();
        let mut chunk = Interactions::empty();
        for user in 0..config.users {
            world.draw_user(user, &mut rows);
            profiles.push(&rows);
            let n = rows.items.len();
            stats.interactions += n;
            stats.users += usize::from(n > 0);
            stats.users_with_one_interaction += usize::from(n == 1);
            for &item in &rows.items {
                used[item as usize - 1] = true;
            }
            chunk.push_user(user as i64 + 1, &rows.items, &rows.ratings, &rows.times);
            if chunk.len() >= ROW_GROUP_ROWS {
                sink.write(&chunk.to_batch()?)?;
                chunk = Interactions::empty();
            }
        }
        if stats.interactions == 0 {
            return Err(Interactions::none_in(Path::new(ORIGIN)));
        }
        sink.write(&chunk.to_batch()?)
    })?;
    stats.rows_read = stats.interactions;
    stats.items = used.iter().filter(|&&u| u).count();
    let users_path = dir.join(ingested::USERS);
    recall_core::write::write_parquet(&users_path, &profiles.into_batch()?, &meta)?;
    let items_path = dir.join(ingested::ITEMS);
    let schema = world.items_batch(0..0)?.schema();
    write_parquet_batches(&items_path, schema, &meta, |sink| {
        for start in (0..config.items).step_by(ROW_GROUP_ROWS) {
            sink.write(&world.items_batch(start..(start + ROW_GROUP_ROWS).min(config.items))?)?;
        }
        Ok(())
    })?;
    Ok((vec![interactions_path, users_path, items_path], stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items that arrive over time are first seen later: with 60 % of them arriving, many more
    /// items have their first interaction in the second year than with none.
    #[test]
    fn arriving_items_are_first_seen_later() {
        let late_items = |share: f64| {
            let config = SyntheticConfig {
                arriving_items: share,
                ..SyntheticConfig::new(400, 300, 30, 3)
            };
            let d = generate(&config).unwrap();
            let RawIds::Int(items) = &d.interactions.item_id else {
                unreachable!()
            };
            let mut first = std::collections::HashMap::new();
            for (&item, t) in items.iter().zip(&d.interactions.timestamp) {
                let t = t.unwrap();
                first
                    .entry(item)
                    .and_modify(|f: &mut i64| *f = (*f).min(t))
                    .or_insert(t);
            }
            let year = config.start_timestamp + USER_START_SPAN / 2;
            first.values().filter(|&&t| t >= year).count()
        };
        let (without, with) = (late_items(0.0), late_items(0.6));
        assert!(
            with > without + 50,
            "first seen in year two: {with} vs {without}"
        );
    }

    /// The streaming writer writes what the in-memory generator's dataset writes, byte for
    /// byte, over more than one row group of interactions and of items, with and without
    /// items arriving over time.
    #[test]
    fn streamed_files_are_the_generated_dataset_files() {
        for arriving in [0.0, 0.4] {
            let config = SyntheticConfig {
                arriving_items: arriving,
                new_item_boost: arriving / 2.0,
                ..SyntheticConfig::new(1_500, 70_000, 60, 5)
            };
            let dir = tempfile::tempdir().unwrap();
            let (memory, streamed) = (dir.path().join("memory"), dir.path().join("streamed"));
            let dataset = generate(&config).unwrap();
            assert!(dataset.interactions.len() > ROW_GROUP_ROWS);
            let written = dataset.write(&memory).unwrap();
            let (files, stats) = write(&config, &streamed).unwrap();
            assert_eq!(stats, dataset.stats);
            assert_eq!(files.len(), written.len());
            for (a, b) in written.iter().zip(&files) {
                assert_eq!(a.file_name(), b.file_name());
                assert!(
                    std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
                    "{} differs (arriving {arriving})",
                    b.display()
                );
            }
        }
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = generate(&SyntheticConfig::new(50, 100, 20, 1)).unwrap();
        let b = generate(&SyntheticConfig::new(50, 100, 20, 1)).unwrap();
        let c = generate(&SyntheticConfig::new(50, 100, 20, 2)).unwrap();
        let items = |d: &Dataset| match &d.interactions.item_id {
            RawIds::Int(v) => v.clone(),
            RawIds::Str(_) => unreachable!(),
        };
        assert_eq!(items(&a), items(&b));
        assert_ne!(items(&a), items(&c));
    }

    #[test]
    fn every_user_has_at_least_five_distinct_items_in_time_order() {
        let d = generate(&SyntheticConfig::new(200, 300, 30, 9)).unwrap();
        assert_eq!(d.stats.users, 200);
        assert_eq!(d.stats.duplicates_dropped, 0);
        let i = &d.interactions;
        let RawIds::Int(users) = &i.user_id else {
            panic!()
        };
        let mut start = 0;
        while start < users.len() {
            let end = start
                + users[start..]
                    .iter()
                    .take_while(|&&u| u == users[start])
                    .count();
            assert!(end - start >= 5);
            let ts: Vec<i64> = i.timestamp[start..end].iter().map(|t| t.unwrap()).collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]));
            start = end;
        }
    }

    #[test]
    fn impossible_sizes_name_the_key() {
        let msg = generate(&SyntheticConfig::new(0, 100, 20, 1))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("ingest.users"), "{msg}");
    }
}
