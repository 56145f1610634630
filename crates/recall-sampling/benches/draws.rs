//! Popularity draws per second on the ML-1M item distribution (counts^0.75), the figure to
//! compare with `numpy.random.choice(n, size, p=p)` (see `numpy_peer.py` beside this file,
//! which prints numpy's rate on the same distribution).
//!
//! Uses the real ML-1M counts when `../shared/data/ml-1m` (or `$RECALL_TEST_DATA`) is there,
//! else a Zipf distribution over 3,706 items.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use recall_sampling::Popularity;

fn ml_1m_counts() -> Vec<u64> {
    let from_data = recall_core::testing::movielens_dir("ml-1m").and_then(|dir| {
        let t = recall_core::Table::read_columns(
            &dir.join("interactions.parquet"),
            Some(&["movie_id"]),
        )
        .ok()?;
        let ids = t.ints("movie_id").ok()?;
        let mut counts = std::collections::HashMap::<i64, u64>::new();
        ids.iter().for_each(|i| *counts.entry(*i).or_default() += 1);
        let mut v: Vec<u64> = counts.into_values().collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        Some(v)
    });
    let counts = from_data.unwrap_or_else(|| (1..=3706u64).map(|r| 30_000 / r + 1).collect());
    // Two reserved slots in front, as the encoder lays out item indices.
    [0, 0].into_iter().chain(counts).collect()
}

fn bench(c: &mut Criterion) {
    let counts = ml_1m_counts();
    let sampler = Popularity::new(&counts, 2, 0.75).unwrap();
    let mut group = c.benchmark_group(format!("popularity_0.75_{}_items", counts.len() - 2));
    let n = 1_000_000u64;
    group.throughput(Throughput::Elements(n));
    group.bench_function("alias_draws", |b| {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut out = vec![0u32; n as usize];
        b.iter(|| {
            for o in out.iter_mut() {
                *o = sampler.draw_with(&mut rng);
            }
            std::hint::black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
