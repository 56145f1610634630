//! Trains a model on an encode output directory and prints test HitRate@50.
//!
//! ```sh
//! cargo run --release -p recall-models --example train_encoded -- runs/default/encode youtubednn 5
//! ```

use std::path::PathBuf;

use candle_core::Device;
use rand::SeedableRng;
use recall_eval::split::SeenFilter;
use recall_models::config::{Loss, ModelConfig, ModelKind, TrainConfig};
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
    let dir =
        PathBuf::from(args.first().ok_or(
            "usage: train_encoded ENCODE_DIR [dssm|youtubednn|sasrec|hstu] [EPOCHS] [LOSS]",
        )?);
    // Any kind by its pipeline-file name (an unknown one is refused, listing the kinds).
    let kind: ModelKind = match args.get(1) {
        Some(name) => serde_json::from_value(serde_json::json!(name))?,
        None => ModelKind::Youtubednn,
    };
    let epochs = args.get(2).map(|e| e.parse()).transpose()?.unwrap_or(5);
    let loss: Loss = match args.get(3) {
        Some(l) => serde_json::from_str(&format!("\"{l}\""))?,
        None => Loss::InBatch,
    };
    let data = EncodedData::read_dir(&dir)?;
    let model_config: ModelConfig = serde_json::from_value(serde_json::json!({ "kind": kind }))?;
    let train_config: TrainConfig =
        serde_json::from_value(serde_json::json!({ "epochs": epochs, "loss": loss }))?;
    // Settings that cannot train together fail here, naming the key.
    train_config.validate_for(&model_config)?;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(42);
    let mut model = TwoTower::new(&model_config, &data, &mut rng, &Device::Cpu)?;
    let report = train::train(&mut model, &data, &train_config, 42)?;
    for e in &report.epochs {
        eprintln!("{e:?}");
    }
    let hr = model.hit_rate(&data, &data.test, 50, SeenFilter::None)?;
    eprintln!(
        "test HitRate@50 = {hr:.4} (best epoch {})",
        report.best_epoch
    );
    Ok(())
}
