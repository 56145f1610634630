//! Training throughput at torch-rechub's example sizes (../shared/notes/peers.md), on an
//! encode output directory (e.g. full ML-1M), for comparison with the peer's measured rates:
//! - YoutubeDNN: embedding 16, user tower [128, 64, 16], batch 2048, 3 popularity^0.75
//!   negatives, sampled softmax (listwise), temperature 0.02;
//! - DSSM: embedding 16, towers [256, 128, 64] PReLU, 3 negatives as label-0 rows (pointwise
//!   BCE), batch 4096 rows = 1024 examples x (1 positive + 3 negatives).
//!
//! ```sh
//! cargo run --release -p recall-models --example throughput -- runs/ml-1m-youtubednn/encode [MAX_BATCHES] [youtubednn|dssm|youtubednn-ml1m|dssm-ml1m]
//! ```
//! Prints examples (and rows) per second over one epoch (or its first MAX_BATCHES batches).
//! `youtubednn-ml1m` and `dssm-ml1m` are the shipped ML-1M pipelines' settings (embedding 64,
//! in-batch softmax with logQ, batch 1024), for the pipeline's own training speed.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use recall_models::train::Progress;
use recall_models::{EncodedData, TwoTower, train};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: first thing in main, no other thread yet.
    #[allow(unsafe_code)]
    unsafe {
        recall_models::tune_candle_cpu()
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: throughput ENCODE_DIR [MAX_BATCHES]")?,
    );
    let max_batches = args.get(1).map(|b| b.parse()).transpose()?;
    let only = args.get(2);
    let data = EncodedData::read_dir(&dir)?;
    let setups = [
        (
            "youtubednn",
            serde_json::json!({ "kind": "youtubednn", "embedding_dim": 16, "user_tower": [128, 64, 16], "temperature": 0.02 }),
            serde_json::json!({ "loss": "sampled-softmax", "negatives": 3, "batch_size": 2048, "epochs": 1 }),
            1usize,
        ),
        (
            "dssm",
            serde_json::json!({ "kind": "dssm", "embedding_dim": 16, "user_tower": [256, 128, 64], "item_tower": [256, 128, 64], "activation": "prelu" }),
            serde_json::json!({ "loss": "pointwise", "negatives": 3, "batch_size": 1024, "epochs": 1, "logq_correction": false }),
            4usize,
        ),
        // The shipped ML-1M pipelines' settings (pipelines/ml-1m-*.toml): in-batch softmax
        // with logQ over the batch's 1,024 targets.
        (
            "youtubednn-ml1m",
            serde_json::json!({ "kind": "youtubednn", "embedding_dim": 64, "user_tower": [256, 64], "temperature": 0.05, "recent_items": 5 }),
            serde_json::json!({ "loss": "in-batch", "batch_size": 1024, "epochs": 1, "lr": 0.002 }),
            1usize,
        ),
        (
            "dssm-ml1m",
            serde_json::json!({ "kind": "dssm", "embedding_dim": 64, "user_tower": [256, 64], "item_tower": [256, 64], "temperature": 0.05, "recent_items": 5 }),
            serde_json::json!({ "loss": "in-batch", "batch_size": 1024, "epochs": 1, "lr": 0.002 }),
            1usize,
        ),
    ];
    for (name, model, train_config, rows_per_example) in setups {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let model_config = serde_json::from_value(model)?;
        let mut train_config: recall_models::TrainConfig = serde_json::from_value(train_config)?;
        train_config.max_batches_per_epoch = max_batches;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut m = TwoTower::new(&model_config, &data, &mut rng, &Device::Cpu)?;
        let start = Instant::now();
        let steps = StepTimes::default();
        let report = train::train_observed(&mut m, &data, &train_config, 1, None, &steps)?;
        let eps = report.examples_per_second;
        // The median step is robust to a noisy neighbour; the epoch rate is what a user gets.
        let median = steps.median();
        let batch = train_config.batch_size as f64;
        println!(
            "{name}: {eps:.0} examples/s ({:.0} rows/s) over {:.1} s of training ({:.1} s with validation); \
             median step {:.2} ms = {:.0} examples/s ({:.0} rows/s)",
            eps * rows_per_example as f64,
            report.train_seconds,
            start.elapsed().as_secs_f64(),
            median * 1e3,
            batch / median,
            batch * rows_per_example as f64 / median,
        );
    }
    Ok(())
}

/// Seconds between consecutive `batch_done` calls within an epoch.
#[derive(Default)]
struct StepTimes {
    last: Mutex<Option<Instant>>,
    seconds: Mutex<Vec<f64>>,
}

impl StepTimes {
    fn median(&self) -> f64 {
        let mut s = self.seconds.lock().unwrap().clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

impl Progress for StepTimes {
    fn epoch_started(&self, _epoch: usize, _batches: usize) {
        *self.last.lock().unwrap() = Some(Instant::now());
    }

    fn batch_done(&self, _loss: f64, _examples: usize) {
        let now = Instant::now();
        if let Some(last) = self.last.lock().unwrap().replace(now) {
            self.seconds
                .lock()
                .unwrap()
                .push(now.duration_since(last).as_secs_f64());
        }
    }
}
