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

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The user tower's file in an export directory.
pub const USER_TOWER: &str = "user_tower.onnx";
/// The item tower's file (kinds with an item tower).
pub const ITEM_TOWER: &str = "item_tower.onnx";

/// `[export] onnx_external_data`: where the towers' large constants (the embedding tables a
/// tower looks rows up in) are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExternalData {
    /// Inside the model file while the constants stay under [`AUTO_EXTERNAL_BYTES`], in a
    /// `<model>.data` file beside it past that.
    #[default]
    Auto,
    /// Always in `<model>.data` (every constant of at least 1 KiB).
    Always,
    /// Always inside the model file; refused past protobuf's 2 GiB.
    Never,
}

/// Past this many bytes of constants (`auto`) they go to external data: half of protobuf's
/// 2 GiB limit, which a 64-dimension item table reaches at about 8 M items.
pub const AUTO_EXTERNAL_BYTES: usize = 1 << 30;
/// The largest protobuf message readers accept.
const PROTOBUF_LIMIT: usize = (2 << 30) - 1;

/// Writes the towers into `out`; returns the files written (each model's data file before it).
pub fn write(
    out: &Path,
    layout: &Value,
    tensors: &HashMap<String, Tensor>,
    data: &EncodedData,
    external: ExternalData,
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let user = towers::user_tower(layout, tensors, data)?;
    write_model(out, USER_TOWER, user, external, &mut files)?;
    if let Some(item) = towers::item_tower(layout, tensors, data)? {
        write_model(out, ITEM_TOWER, item, external, &mut files)?;
    }
    Ok(files)
}

/// The data file of model `file` with external data.
pub fn data_file(file: &str) -> String {
    format!("{file}.data")
}

fn write_model(
    out: &Path,
    file: &str,
    graph: graph::Graph,
    external: ExternalData,
    files: &mut Vec<String>,
) -> Result<()> {
    let data_name = data_file(file);
    let outside = match external {
        ExternalData::Always => true,
        ExternalData::Never => false,
        ExternalData::Auto => graph.constant_bytes() > AUTO_EXTERNAL_BYTES,
    };
    let serialised = graph.serialise(outside.then_some(data_name.as_str()));
    if serialised.model.len() > PROTOBUF_LIMIT {
        return Err(Error::Config(format!(
            "{file} would be {} bytes, past protobuf's 2 GiB limit: set export.onnx_external_data = \"auto\" \
             (the default) or \"always\", which writes the embedding tables to {data_name} beside it",
            serialised.model.len()
        )));
    }
    if let Some(data) = &serialised.data {
        let path = out.join(&data_name);
        recall_core::write::write_atomic(&path, |w| {
            data.write_to(w)
                .map_err(|e| recall_core::Error::io("cannot write", &path, e))
        })?;
        files.push(data_name);
    }
    recall_core::write::write_bytes(&out.join(file), &serialised.model)?;
    files.push(file.to_owned());
    Ok(())
}
