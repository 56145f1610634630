//! Exact top-100 against a plain matrix product of the same shape, in one run, so the ratio is
//! what selection and filtering cost. Throughput is reported in FLOP/s (`elem/s` = FLOP/s).
//!
//! The plain product is `gemm` with rayon parallelism over the whole user x item matrix, which
//! is what candle's CPU matmul runs for f32; top-K computes the same FLOPs block by block and
//! selects as it goes. Shapes (`RECALL_BENCH_USERS`, `RECALL_BENCH_ITEMS`, default 2,048 x
//! 100,000 x 64) keep the arithmetic intensity (dimension 64) at a size whose full
//! score matrix fits in memory for the plain product.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use recall_eval::{Embeddings, topk};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn matrix(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    // A cheap deterministic generator: values in [-1, 1).
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dim = 64;
    for (label, n_users, n_items) in [
        (
            "synthetic",
            env("RECALL_BENCH_USERS", 2_048),
            env("RECALL_BENCH_ITEMS", 100_000),
        ),
        ("ml-1m-shape", 6_040, 3_706),
    ] {
        let users = matrix(n_users, dim, 1);
        let items = matrix(n_items, dim, 2);
        let flops = 2 * n_users as u64 * n_items as u64 * dim as u64;
        let mut group = c.benchmark_group(format!("{label}_{n_users}x{n_items}x{dim}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(flops));
        let mut out = vec![0f32; n_users * n_items];
        group.bench_function("plain_matmul", |b| {
            b.iter(|| {
                topk::inner_products(&users, &items, dim, &mut out, rayon::current_num_threads())
            })
        });
        drop(out);
        let ue = Embeddings::new(dim, users.clone()).unwrap();
        let ie = Embeddings::new(dim, items.clone()).unwrap();
        let blocks: Vec<(usize, usize)> = std::env::var("RECALL_BENCH_BLOCKS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|p| p.split_once('x'))
                    .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        let defaults = topk::Options::default();
        for (ub, ib) in std::iter::once((defaults.user_block, defaults.item_block)).chain(blocks) {
            let opts = topk::Options {
                user_block: ub,
                item_block: ib,
                ..topk::Options::default()
            };
            let name = if (ub, ib) == (defaults.user_block, defaults.item_block) {
                "exact_top100".to_owned()
            } else {
                format!("exact_top100_blocks_{ub}x{ib}")
            };
            group.bench_function(name, |b| {
                b.iter(|| topk::exact(&ue, &ie, 100, &opts).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
