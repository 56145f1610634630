//! The towers as ONNX models, so that a serving system (onnxruntime, Triton) computes a user's
//! vector from the latest history at request time, and a new item's vector from its features,
//! without this project's code.
//!
//! - [`towers`]: the graphs, built from the input layout (`tensors.json`) and the checkpoint.
//! - [`graph`]: a small graph builder; [`proto`]: the ONNX messages it writes (prost).
//!
//! `user_tower.onnx` for every kind; `item_tower.onnx` where the item side is a tower over
//! features (DSSM; SASRec and HSTU with `item_tower`), with the cold-start path (an item without a trained row reads the
//! out-of-vocabulary row beside its features). Both have a dynamic batch dimension. CI runs
//! them with onnxruntime and compares with `user_embeddings.parquet` and
//! `item_embeddings.parquet` (`python/check_reference.py`).

pub mod graph;
pub mod proto;
pub mod towers;

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::Value;

use recall_models::data::EncodedData;

use crate::error::Result;

/// The user tower's file in an export directory.
pub const USER_TOWER: &str = "user_tower.onnx";
/// The item tower's file (kinds with an item tower).
pub const ITEM_TOWER: &str = "item_tower.onnx";

/// Writes the towers into `out`; returns the files written.
pub fn write(
    out: &Path,
    layout: &Value,
    tensors: &HashMap<String, Tensor>,
    data: &EncodedData,
) -> Result<Vec<&'static str>> {
    let mut files = vec![USER_TOWER];
    recall_core::write::write_bytes(
        &out.join(USER_TOWER),
        &towers::user_tower(layout, tensors, data)?,
    )?;
    if let Some(item) = towers::item_tower(layout, tensors, data)? {
        recall_core::write::write_bytes(&out.join(ITEM_TOWER), &item)?;
        files.push(ITEM_TOWER);
    }
    Ok(files)
}
