//! Recall and query throughput of the HNSW serving index against the exact top-K of
//! `recall-eval`, side by side in one run.
//!
//! On exported embeddings (e.g. a pipeline's `export/<model>/`):
//! ```text
//! cargo run --release -p recall-export --example ann_recall -- \
//!     --items runs/ml-1m-youtubednn/export/youtubednn/item_embeddings.parquet \
//!     --users runs/ml-1m-youtubednn/export/youtubednn/user_embeddings.parquet
//! ```
//! On a synthetic clustered catalogue of unit vectors (1,000,000 items, dimension 64):
//! ```text
//! cargo run --release -p recall-export --example ann_recall -- --synthetic 1000000 --dim 64
//! ```
//! Other options: `--queries N` (default 2000), `--k K` (default 100), `--ef N` (search
//! expansion, repeatable to sweep), `--connectivity M`, `--expansion-add N`,
//! `--build-threads N` (default 1, deterministic; the 1M figures used 2), `--add F` (also build
//! over the first 1 - F of the items, save, reload, add the rest, and measure that index too).

use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use recall_eval::Embeddings;
use recall_eval::topk::{self, Options};
use recall_export::index::{self, ApproximateIndex, IndexConfig};

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` unit vectors around `sqrt(n)` random centres (a catalogue with topical structure, like
/// trained item embeddings), plus `queries` vectors drawn the same way.
fn clustered(n: usize, queries: usize, dim: usize, seed: u64) -> (Embeddings, Embeddings) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut gauss = move || -> f32 {
        // Box-Muller; rand's normal distribution lives in another crate.
        let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    };
    let clusters = (n as f64).sqrt() as usize;
    let centres: Vec<f32> = (0..clusters * dim).map(|_| gauss()).collect();
    let mut draw = |count: usize| {
        let mut out = Vec::with_capacity(count * dim);
        for i in 0..count {
            let c = (i * 7919) % clusters;
            let mut v: Vec<f32> = (0..dim)
                .map(|j| centres[c * dim + j] + 0.6 * gauss())
                .collect();
            unit(&mut v);
            out.extend(v);
        }
        Embeddings::new(dim, out).map_err(|e| e.to_string())
    };
    let items = draw(n);
    let users = draw(queries);
    (
        items.unwrap_or_else(|e| panic!("{e}")),
        users.unwrap_or_else(|e| panic!("{e}")),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut items_path, mut users_path) = (None::<PathBuf>, None::<PathBuf>);
    let (mut synthetic, mut dim, mut queries, mut k) = (0usize, 64usize, 2000usize, 100usize);
    let mut config = IndexConfig::default();
    let mut efs = Vec::new();
    // With `--add F`: also build over the first (1 - F) of the items, save and reload that
    // index, add the rest to it, and measure the grown index as well.
    let mut add_fraction = None::<f64>;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--items" => items_path = Some(value()?.into()),
            "--users" => users_path = Some(value()?.into()),
            "--synthetic" => synthetic = value()?.parse()?,
            "--dim" => dim = value()?.parse()?,
            "--queries" => queries = value()?.parse()?,
            "--k" => k = value()?.parse()?,
            "--ef" => efs.push(value()?.parse()?),
            "--connectivity" => config.connectivity = value()?.parse()?,
            "--expansion-add" => config.expansion_add = value()?.parse()?,
            "--build-threads" => config.build_threads = value()?.parse()?,
            "--add" => add_fraction = Some(value()?.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let (items, users) = match (items_path, users_path) {
        (Some(i), Some(u)) => {
            let (_, items) = Embeddings::read_parquet(&i, "item_id", "embedding")?;
            let (_, users) = Embeddings::read_parquet(&u, "user_id", "embedding")?;
            (items, users.select_rows(0..queries))
        }
        _ if synthetic > 0 => clustered(synthetic, queries, dim, 7),
        _ => return Err("give --items and --users, or --synthetic N".into()),
    };
    println!(
        "catalogue {} x {}, {} queries, top-{k}, threads {}",
        items.rows(),
        items.dim(),
        users.rows(),
        rayon::current_num_threads()
    );
    let start = Instant::now();
    let exact = topk::exact(&users, &items, k, &Options::default())?;
    let exact_s = start.elapsed().as_secs_f64();
    println!(
        "exact (recall-eval, blocked gemm): {:.3} s, {:.0} queries/s",
        exact_s,
        users.rows() as f64 / exact_s
    );
    let start = Instant::now();
    let index = ApproximateIndex::build(&items, 0, config)?;
    println!(
        "index build (M={}, efConstruction={}): {:.1} s",
        config.connectivity,
        config.expansion_add,
        start.elapsed().as_secs_f64()
    );
    if efs.is_empty() {
        efs.push(config.expansion_search);
    }
    let mut indexes = vec![("built at once", index)];
    if let Some(f) = add_fraction {
        let first = ((1.0 - f) * items.rows() as f64) as usize;
        let start = Instant::now();
        let older = ApproximateIndex::build(&items.select_rows(0..first), 0, config)?;
        let dir = std::env::temp_dir().join(format!("ann-recall-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        older.save(&dir.join("index.usearch"))?;
        let built = start.elapsed().as_secs_f64();
        let mut grown = ApproximateIndex::load(&dir.join("index.usearch"))?;
        let start = Instant::now();
        let added = grown.add(&items, first..items.rows())?;
        println!(
            "index over the first {first} items: {built:.1} s; {added} added to it after a reload: {:.1} s",
            start.elapsed().as_secs_f64()
        );
        std::fs::remove_dir_all(&dir)?;
        indexes.push(("grown by adding", grown));
    }
    for (how, mut index) in indexes {
        for &ef in &efs {
            measure(how, &mut index, ef, &users, &exact, exact_s, k)?;
        }
    }
    Ok(())
}

/// Recall and speed of `index` at search expansion `ef` against the exact ranking.
fn measure(
    how: &str,
    index: &mut ApproximateIndex,
    ef: usize,
    users: &Embeddings,
    exact: &topk::TopK,
    exact_s: f64,
    k: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    {
        index.set_expansion_search(ef);
        let start = Instant::now();
        let approximate = index.top_k(&users, k, None)?;
        let s = start.elapsed().as_secs_f64();
        println!(
            "index {how}, ef={ef}: recall@{k} {:.4}, {:.3} s, {:.0} queries/s ({:.2}x exact)",
            index::recall_at(&approximate, exact, k),
            s,
            users.rows() as f64 / s,
            exact_s / s
        );
    }
    Ok(())
}
