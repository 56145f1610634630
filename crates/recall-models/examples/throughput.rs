//! Training throughput at torch-rechub's architecture, exactly (issue 18;
//! `../shared/notes/peers.md`), and at our shipped ML-1M pipelines' settings, on an encode
//! output directory. For the peer's architecture use `pipelines/ml-1m-peer-*.toml`'s encode
//! (user_id, gender, age, occupation, zip and the history at 16 each; DSSM items: movie_id and
//! cate_id); the example checks the tower input widths (96; DSSM items 32):
//! - `youtubednn`: torch-rechub YoutubeDNN: user tower 96 -> 128 -> 64 -> 16, each layer Linear
//!   -> BatchNorm1d -> ReLU (the last included), then L2; cos / 0.02 over the positive and 3
//!   popularity^0.75 negatives, cross-entropy; batch 2,048; Adam lr 1e-4, weight decay 1e-6;
//! - `dssm`: torch-rechub DSSM: user 96 -> 256 -> 128 -> 64 and item 32 -> 256 -> 128 -> 64,
//!   each layer Linear -> BatchNorm1d -> PReLU, then L2; sigmoid(cos) with BCE on the positive
//!   and 3 negatives as label-0 rows; 4,096 rows a batch (1,024 examples x 4);
//! - `youtubednn-ml1m`, `dssm-ml1m`: the shipped ML-1M pipelines (embedding 64, in-batch softmax
//!   with logQ, batch 1,024; any encode dir).
//!
//! ```sh
//! cargo run --release -p recall-models --example throughput -- runs/ml-1m-peer-dssm/encode [MAX_BATCHES] [SETUP]
//! cargo run --release -p recall-models --example throughput -- ENCODE_DIR MAX_BATCHES '{model json}' '{train json}' ROWS_PER_EXAMPLE
//! ```
//! Prints examples (and rows) per second over one epoch (or its first MAX_BATCHES batches;
//! `all` for the whole epoch) and the median step. The second form measures any configuration.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use recall_models::train::{Progress, StepPhases};
use recall_models::{EncodedData, TwoTower, train};

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: first thing in main, no other thread yet.
    #[allow(unsafe_code)]
    unsafe {
        recall_models::tune_candle_cpu()
    };
    common::allocator::keep_freed_pages();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: throughput ENCODE_DIR [MAX_BATCHES]")?,
    );
    let max_batches = args
        .get(1)
        .filter(|b| *b != "all")
        .map(|b| b.parse())
        .transpose()?;
    let only = args.get(2);
    let data = EncodedData::read_dir(&dir)?;
    // torch-rechub's hyper-parameters shared by both of its models.
    let peer_train = serde_json::json!({ "negatives": 3, "sampler": { "kind": "popularity", "alpha": 0.75 },
        "logq_correction": false, "lr": 1e-4, "weight_decay": 1e-6, "epochs": 1 });
    let with = |base: &serde_json::Value, extra: serde_json::Value| {
        let mut v = base.clone();
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    };
    let peer_model = serde_json::json!({ "embedding_dim": 16, "feature_dim": 16, "batch_norm": true,
        "last_layer": "like-hidden", "user_id": true, "example_age": false, "init_std": 1e-4 });
    let mut setups = vec![
        (
            "youtubednn".to_owned(),
            "torch-rechub YoutubeDNN architecture",
            with(
                &peer_model,
                serde_json::json!({ "kind": "youtubednn", "user_tower": [128, 64, 16], "activation": "relu", "temperature": 0.02 }),
            ),
            with(
                &peer_train,
                serde_json::json!({ "loss": "sampled-softmax", "batch_size": 2048 }),
            ),
            1usize,
            Some((96, None)),
        ),
        (
            "dssm".to_owned(),
            "torch-rechub DSSM architecture",
            with(
                &peer_model,
                serde_json::json!({ "kind": "dssm", "user_tower": [256, 128, 64], "item_tower": [256, 128, 64], "activation": "prelu", "temperature": 1.0 }),
            ),
            with(
                &peer_train,
                serde_json::json!({ "loss": "pointwise", "batch_size": 1024 }),
            ),
            4usize,
            Some((96, Some(32))),
        ),
        // The shipped ML-1M pipelines' settings (pipelines/ml-1m-*.toml): in-batch softmax
        // with logQ over the batch's 1,024 targets.
        (
            "youtubednn-ml1m".to_owned(),
            "our ML-1M pipeline",
            serde_json::json!({ "kind": "youtubednn", "embedding_dim": 64, "user_tower": [256, 64], "temperature": 0.05, "recent_items": 5 }),
            serde_json::json!({ "loss": "in-batch", "batch_size": 1024, "epochs": 1, "lr": 0.002 }),
            1usize,
            None,
        ),
        (
            "dssm-ml1m".to_owned(),
            "our ML-1M pipeline",
            serde_json::json!({ "kind": "dssm", "embedding_dim": 64, "user_tower": [256, 64], "item_tower": [256, 64], "temperature": 0.05, "recent_items": 5 }),
            serde_json::json!({ "loss": "in-batch", "batch_size": 1024, "epochs": 1, "lr": 0.002 }),
            1usize,
            None,
        ),
    ];
    if let Some(model) = only.filter(|o| o.starts_with('{')) {
        let train = args
            .get(3)
            .ok_or("a model JSON needs a train JSON after it")?;
        let rows: usize = args.get(4).map_or(Ok(1), |r| r.parse())?;
        setups = vec![(
            "custom".to_owned(),
            "as given",
            serde_json::from_str(model)?,
            serde_json::from_str(train)?,
            rows,
            None,
        )];
    }
    let only = only.filter(|o| !o.starts_with('{'));
    for (name, architecture, model, train_config, rows_per_example, widths) in setups {
        if only.is_some_and(|o| *o != name) {
            continue;
        }
        let model_config = serde_json::from_value(model)?;
        let mut train_config: recall_models::TrainConfig = serde_json::from_value(train_config)?;
        train_config.max_batches_per_epoch = max_batches;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let mut m = TwoTower::new(&model_config, &data, &mut rng, &Device::Cpu)?;
        if let Some((user, item)) = widths {
            let (u, i) = m.input_widths();
            if u != user || item.is_some_and(|w| w != i) {
                return Err(format!(
                    "{name}: tower inputs {u} (user) and {i} (item) are not torch-rechub's {user} and {item:?}: \
                     use the encode directory of pipelines/ml-1m-peer-*.toml"
                )
                .into());
            }
        }
        let start = Instant::now();
        let steps = StepTimes::default();
        let report = train::train_observed(&mut m, &data, &train_config, 1, None, None, &steps)?;
        let eps = report.examples_per_second;
        // The median step is robust to a noisy neighbour; the epoch rate is what a user gets.
        let median = steps.median();
        let batch = train_config.batch_size as f64;
        println!(
            "{name} ({architecture}): {eps:.0} examples/s ({:.0} rows/s) over {:.1} s of training ({:.1} s with validation); \
             median step {:.2} ms = {:.0} examples/s ({:.0} rows/s)",
            eps * rows_per_example as f64,
            report.train_seconds,
            start.elapsed().as_secs_f64(),
            median * 1e3,
            batch / median,
            batch * rows_per_example as f64 / median,
        );
        println!("  per step: {}", steps.phases());
    }
    Ok(())
}

/// Seconds between consecutive `batch_done` calls within an epoch, and the phases summed.
#[derive(Default)]
struct StepTimes {
    last: Mutex<Option<Instant>>,
    seconds: Mutex<Vec<f64>>,
    phases: Mutex<(StepPhases, usize)>,
}

impl StepTimes {
    fn median(&self) -> f64 {
        let mut s = self.seconds.lock().unwrap().clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

impl StepTimes {
    /// Mean milliseconds per step in each phase.
    fn phases(&self) -> String {
        let (p, n) = *self.phases.lock().unwrap();
        let ms = |s: f64| s * 1e3 / n.max(1) as f64;
        format!(
            "waiting {:.2} ms, forward {:.2}, backward {:.2}, update {:.2}",
            ms(p.waiting),
            ms(p.forward),
            ms(p.backward),
            ms(p.update)
        )
    }
}

impl Progress for StepTimes {
    fn batch_phases(&self, phases: &StepPhases) {
        let mut sum = self.phases.lock().unwrap();
        sum.0.waiting += phases.waiting;
        sum.0.forward += phases.forward;
        sum.0.backward += phases.backward;
        sum.0.update += phases.update;
        sum.1 += 1;
    }

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
