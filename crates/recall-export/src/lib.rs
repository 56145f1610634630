//! Export of what a recall model is for: user and item embeddings and per-user candidate lists
//! as Parquet keyed by the original ids, weights as safetensors with a tensor map for PyTorch
//! users, a manifest, and an approximate-nearest-neighbour (HNSW) index for serving.
//!
//! - [`vectors`]: embedding tables as Parquet (`FixedSizeList<Float32>`, model and dimension in
//!   the file's key-value metadata), checked for NaN and zero vectors before anything is written.
//! - [`candidates`]: per-user top-K lists as Parquet (`user_id, rank, item_id, score`).
//! - [`index`]: the HNSW serving index (the `usearch` crate), its sidecar, and its recall
//!   against the exact ranking.
//! - [`onnx`]: the user tower (and DSSM's item tower) as ONNX models for onnxruntime.
//! - [`export`]: the export stage over an encode directory and a checkpoint.
//!
//! The index alone, on any embeddings:
//! ```
//! use recall_eval::Embeddings;
//! use recall_export::index::{ApproximateIndex, IndexConfig};
//!
//! // Four unit item vectors in 2-D; row 0 is a reserved (padding) row that is not indexed.
//! let items = Embeddings::new(2, vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.6, 0.8])?;
//! let index = ApproximateIndex::build(&items, 1, IndexConfig::default())?;
//! let best = index.search(&[0.0, 1.0], 2, &[])?;
//! assert_eq!(best.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 3]);
//! assert!((best[0].1 - 1.0).abs() < 1e-6);
//! # Ok::<(), recall_export::Error>(())
//! ```

pub mod candidates;
pub mod error;
pub mod export;
pub mod index;
pub mod onnx;
pub mod vectors;

pub use error::{Error, Result};
pub use export::{ExportConfig, ExportSummary, ModelExport, export_model};
pub use index::{ApproximateIndex, IndexConfig};
