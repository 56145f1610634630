//! DSSM, YoutubeDNN, SASRec and HSTU-style recall models on candle, in three rooms and a few files:
//!
//! - [`config`]: `ModelConfig` (architecture, per kind) and `TrainConfig` (loss, negatives,
//!   optimiser, schedule, seen filter); impossible settings are refused naming the key.
//! - [`data`]: the encoded splits and side features a model trains on (read through
//!   `recall-core` from the encode stage's Parquet, never from raw data).
//! - [`model`]: the network: embedding tables updated row by row (`model::sparse`,
//!   `model::tables`), MLP towers (`model::tower`), the sequence encoders
//!   (SASRec's `model::sequence`, HSTU's `model::hstu`), and `TwoTower`, which gathers a batch's rows and runs the towers.
//! - [`ops`]: the hand-written CPU kernels the towers and losses run on (candle `CustomOp`s with
//!   their backward passes; other devices run the generic candle form each is tested
//!   against), what they share (`ops::kernel`), and the Adam kernel.
//! - [`train`]: batch draws and losses (`train::batch`, `train::loss`), hard-negative mining
//!   (`train::hard`), the epoch loop with validation and early stopping.
//! - `embed` (user and item vectors, validation HitRate), `layout` (the towers' input layout
//!   a serving system needs), [`checkpoint`] (safetensors + config, reloadable bit for bit).
//!
//! The candle `Device` is always a parameter: a CUDA build is the `cuda` feature away.
//!
//! Training on CPU: a binary should call [`tune_candle_cpu`] first thing in `main` (candle's
//! element-wise pool otherwise spins on the cores the step's matrix products use; about 10 %
//! of a DSSM step on 2 cores) and use mimalloc as its global allocator, as `cargo xtask` and
//! the examples do. Training uses `TrainConfig::threads` threads (default: the cores, at most
//! 4) plus one that draws the next batch's negatives.

pub mod checkpoint;
pub mod config;
pub mod data;
mod embed;
pub mod error;
mod layout;
pub mod model;
pub mod ops;
#[cfg(test)]
mod testing;
pub mod train;

pub use config::{ModelConfig, ModelKind, TrainConfig};
pub use data::EncodedData;
pub use error::{Error, Result};
pub use model::TwoTower;

/// Turns candle's CPU element-wise thread pool off (`CANDLE_NUM_THREADS=1`) unless the user
/// set it. That pool pins a worker that spins between ops on the cores the training step's
/// matrix products use; on 2 cores a DSSM step at torch-rechub's sizes ran about 10 % faster
/// without it (measured side by side). Matrix products keep their threads (they follow
/// `RAYON_NUM_THREADS`, not this variable).
///
/// # Safety
/// It sets an environment variable: call it first thing in `main`, before any other thread
/// exists (as `cargo xtask` and this crate's examples do).
#[allow(unsafe_code)]
pub unsafe fn tune_candle_cpu() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees no other thread is running.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}
