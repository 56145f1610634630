//! DSSM and YoutubeDNN recall models on candle.
//!
//! - [`config`]: `ModelConfig` (architecture) and `TrainConfig` (loss, negatives, optimiser).
//! - [`data`]: the encoded splits and side features a model trains on (read through
//!   `recall-core` from the encode stage's Parquet, never from raw data).
//! - [`model`]: the two-tower network: pooled history with padding masked, side-feature
//!   embeddings, MLP towers (ReLU or PReLU, optional dropout), L2 normalisation.
//! - [`sparse`]: embedding tables updated row by row (lazy Adam over the rows a batch touches),
//!   so a step costs the batch, not the catalogue.
//! - [`train`]: losses (in-batch softmax with logQ, sampled softmax, pointwise BCE, BPR),
//!   the training loop, validation HitRate@K and early stopping; user-only and item-only
//!   inference (`embed_split`, `embed_items`).
//! - [`checkpoint`]: safetensors + config, reloadable bit for bit.
//!
//! The candle `Device` is always a parameter: a CUDA build is the `cuda` feature away.
//!
//! Training on CPU: a binary should call [`tune_candle_cpu`] first thing in `main` (candle's
//! element-wise pool otherwise spins on the cores the step's matrix products use; about 10 %
//! of a DSSM step on 2 cores) and use mimalloc as its global allocator, as `cargo xtask` and
//! the examples do. Training uses `TrainConfig::threads` threads (default: the cores, at most
//! 4) plus one that draws the next batch's negatives.

pub mod adam;
mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
mod embed;
pub mod fused;
mod hard;
pub mod input_op;
mod kernel;
mod layout;
pub mod loss;
mod mlp_op;
pub mod model;
pub mod norm_op;
mod par;
pub mod score_op;
pub mod seq_op;
pub mod sequence;
pub mod sparse;
pub mod tables;
#[cfg(test)]
mod testing;
pub mod tower;
pub mod train;

pub use config::{ModelConfig, ModelKind, TrainConfig};
pub use data::EncodedData;
pub use model::TwoTower;

/// Errors of this crate: bad input or configuration (from `recall-core`), tensor errors, and
/// training failures such as a non-finite loss.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] recall_core::Error),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("training failed: {0}")]
    Training(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
