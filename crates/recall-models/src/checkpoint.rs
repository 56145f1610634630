//! Checkpoints: every tensor of a model in one safetensors file plus the model config as JSON
//! beside it; loading gives bit-identical embeddings.
//!
//! Tensor names, for mapping onto a PyTorch module: `item_embedding` `[items, dim]` (row = the
//! encoder's item index, rows 0 and 1 padding and OOV), `user_id_embedding`,
//! `user_feature.<name>`, `example_age_embedding`, `item_feature.<name>` (all `[rows, dim]`,
//! like `nn.Embedding.weight`), and `user_tower.<i>.weight` `[out, in]` / `.bias` / `.prelu`,
//! `item_tower.<i>.*` (like `nn.Linear` weights); `history_feature.<name>` (an item feature
//! pooled over the history); with batch normalisation `<tower>.<i>.bn_weight`, `.bn_bias`,
//! `.bn_running_mean`, `.bn_running_var` (`nn.BatchNorm1d`, applied to `x W^T` before the
//! Linear bias). SASRec: `sequence.position_embedding` `[max_len, dim]` (row `max_len - 1` is
//! the newest item's position), per block `i` `sequence.<i>.attention.ln_weight` / `ln_bias`
//! (the pre-attention `nn.LayerNorm`), `sequence.<i>.attention.qkv.weight` `[3 dim, dim]` and
//! `.bias` (queries, keys, values stacked, as `nn.MultiheadAttention.in_proj_*`),
//! `sequence.<i>.attention.output.*`, `sequence.<i>.ffn.ln_*`, `sequence.<i>.ffn.0.*` and
//! `sequence.<i>.ffn.1.*` (the feed-forward `nn.Linear`s, ReLU between), `sequence.final.ln_*`
//! and, with user features, `sequence.side.*` (their projection, added at every position).
//! HSTU: `hstu.position_embedding` as SASRec's, per block `i` `hstu.<i>.input.ln_*`,
//! `hstu.<i>.uvqk.weight` `[4 dim, dim]` and `.bias` (gate, values, queries, keys stacked),
//! `hstu.<i>.relative_bias` `[max_len]` (entry `d`: a key `d` positions before its query; with
//! `bias_buckets`, `[bias_buckets]`, the layout's `bias_bucket` naming each distance's entry),
//! `hstu.<i>.attention.ln_*`, `hstu.<i>.output.*`, `hstu.final.ln_*`, `hstu.side.*`. The
//! exported `tensors.json` layout spells out each kind's computation.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::ModelConfig;
use crate::data::EncodedData;
use crate::error::{Error, Result};
use crate::model::TwoTower;
use crate::model::sparse::SparseTable;

/// Writes `model.safetensors` and `config.json` into `dir`, each through
/// `recall_core::write` (temporary file, fsync, rename) like every other output.
pub fn save(model: &TwoTower, dir: &Path) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, table) in model.tables().named() {
        tensors.insert(name, table.to_tensor(&Device::Cpu)?);
    }
    for (name, var) in model.params() {
        tensors.insert(name.clone(), var.as_tensor().to_device(&Device::Cpu)?);
    }
    let path = dir.join("model.safetensors");
    let bytes = safetensors::serialize(&tensors, None)
        .map_err(|e| Error::Training(format!("{}: cannot serialise: {e}", path.display())))?;
    recall_core::write::write_bytes(&path, &bytes)?;
    let json =
        serde_json::to_vec_pretty(&model.config()).map_err(|e| Error::Training(e.to_string()))?;
    recall_core::write::write_bytes(&dir.join("config.json"), &json)?;
    Ok(())
}

/// Reads the model configuration saved beside a checkpoint's weights.
fn read_config(dir: &Path) -> Result<ModelConfig> {
    let config_path = dir.join("config.json");
    let text = std::fs::read(&config_path)
        .map_err(|e| recall_core::Error::io("cannot read", &config_path, e))?;
    Ok(serde_json::from_slice(&text).map_err(|e| {
        recall_core::Error::invalid(config_path.display().to_string(), e.to_string())
    })?)
}

/// What a warm start took from an earlier checkpoint (see [`warm_start`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmStart {
    /// The checkpoint's directory.
    pub from: String,
    /// Tensors copied whole (dense layers, tables whose vocabulary did not grow).
    pub tensors_loaded: usize,
    /// Embedding rows copied from the checkpoint, all tables together.
    pub rows_carried: usize,
    /// Rows of new ids (appended by the grown encoding): initialised as a fresh model's.
    pub rows_new: usize,
    /// Tensors this model has and the checkpoint lacks (a new feature): fresh.
    pub fresh_tensors: Vec<String>,
    /// The blend of carried weights: `shrink * earlier + perturb * fresh`.
    pub shrink: f64,
    pub perturb: f64,
}

/// Starts `model` from the checkpoint in `dir` (an earlier run's model, trained on an encoding
/// that this model's encoding grew): every tensor the two share is copied, an embedding table's
/// rows up to the earlier vocabulary's size included, and the rows of new ids keep the fresh
/// initialisation. The optimiser starts fresh (Adam's moments at zero): the earlier run saved
/// none, and the moments of a finished schedule would damp the new data's first steps. Another
/// kind or another width is refused with both values named, a tensor of another shape too.
///
/// `shrink` and `perturb` blend each carried weight with the fresh one (see
/// [`crate::config::InitFrom`]); 1 and 0 copy it as it is.
pub fn warm_start(
    model: &mut TwoTower,
    dir: &Path,
    shrink: f64,
    perturb: f64,
) -> Result<WarmStart> {
    let earlier = read_config(dir)?;
    let refuse = |what: &str, then: String, now: String| {
        Err(Error::Training(format!(
            "train.init_from = {}: the earlier model's {what} is {then}, this model's {now}; \
             a warm start needs the same architecture (leave `init_from` out to train anew)",
            dir.display()
        )))
    };
    let (then, now) = (earlier.kind(), model.config().kind());
    if then != now {
        return refuse("kind", then.name().to_owned(), now.name().to_owned());
    }
    for (key, a, b) in [
        (
            "embedding_dim",
            earlier.common().embedding_dim,
            model.config().common().embedding_dim,
        ),
        (
            "feature_dim",
            earlier.common().feature_dim,
            model.config().common().feature_dim,
        ),
    ] {
        if a != b {
            return refuse(&format!("model.{key}"), a.to_string(), b.to_string());
        }
    }
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let mut report = WarmStart {
        from: dir.display().to_string(),
        tensors_loaded: 0,
        rows_carried: 0,
        rows_new: 0,
        fresh_tensors: Vec::new(),
        shrink,
        perturb,
    };
    let shape_error = |name: &str, then: &[usize], now: &[usize]| {
        Error::Training(format!(
            "train.init_from: `{name}` is {then:?} in {} but {now:?} here: the earlier model was \
             built differently (a layer's width, a feature's buckets); keep its settings or \
             leave `init_from` out",
            path.display()
        ))
    };
    for (name, table) in model.tables_mut().named_mut() {
        let Some(t) = tensors.get(&name) else {
            report.fresh_tensors.push(name);
            report.rows_new += table.rows;
            continue;
        };
        let (rows, dim) = t.dims2()?;
        if dim != table.dim || rows > table.rows {
            return Err(shape_error(&name, &[rows, dim], &[table.rows, table.dim]));
        }
        let weights: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let (shrink, perturb) = (shrink as f32, perturb as f32);
        for (w, earlier) in table.weights[..rows * dim].iter_mut().zip(weights) {
            *w = shrink * earlier + perturb * *w;
        }
        report.rows_carried += rows;
        report.rows_new += table.rows - rows;
        if rows == table.rows {
            report.tensors_loaded += 1;
        }
    }
    for (name, var) in model.params() {
        let Some(t) = tensors.get(name) else {
            report.fresh_tensors.push(name.clone());
            continue;
        };
        if t.dims() != var.dims() {
            return Err(shape_error(name, t.dims(), var.dims()));
        }
        let earlier = t.to_device(var.device())?.to_dtype(var.dtype())?;
        let blended = if shrink == 1.0 && perturb == 0.0 {
            earlier
        } else {
            ((earlier * shrink)? + (var.as_tensor() * perturb)?)?
        };
        var.set(&blended)?;
        report.tensors_loaded += 1;
    }
    tracing::info!(?report, "warm start");
    Ok(report)
}

/// Loads a model saved by [`save`] for `data`'s encoding onto `device`.
pub fn load(dir: &Path, data: &EncodedData, device: &Device) -> Result<TwoTower> {
    let config = read_config(dir)?;
    let path = dir.join("model.safetensors");
    // The file's bytes, read once; each table's weights are converted straight from them, the
    // model's random initial table freed first, so a million-row table is never held three
    // times over (bytes, a tensor, a vector) while loading.
    let bytes = std::fs::read(&path)
        .map_err(|e| Error::Training(format!("cannot read {}: {e}", path.display())))?;
    let file = candle_core::safetensors::SliceSafetensors::new(&bytes)?;
    let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(0);
    let mut model = TwoTower::new(&config, data, &mut rng, device)?;
    for (name, table) in model.tables_mut().named_mut() {
        let view = file
            .get(&name)
            .map_err(|_| Error::Training(format!("checkpoint lacks `{name}`")))?;
        let (rows, dim) = match view.shape() {
            &[rows, dim] => (rows, dim),
            other => {
                return Err(Error::Training(format!(
                    "`{name}` has shape {other:?} in the checkpoint; an embedding table is 2-D"
                )));
            }
        };
        if (rows, dim) != (table.rows, table.dim) {
            return Err(Error::Training(format!(
                "`{name}` is {rows}x{dim} in the checkpoint but the encoding needs {}x{}",
                table.rows, table.dim
            )));
        }
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Training(format!(
                "`{name}` is {:?} in {}; checkpoints hold F32 tables",
                view.dtype(),
                path.display()
            )));
        }
        table.weights = Vec::new();
        let weights = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let zero_padding = table.zero_padding;
        *table = SparseTable::from_weights(rows, dim, weights);
        table.zero_padding = zero_padding;
    }
    // A parameter the file lacks is left to rebuild_dense; one it holds but cannot read is an
    // error, as it was when the whole file was loaded at once.
    let mut dense: Vec<(String, Tensor)> = Vec::new();
    for (name, _) in model.params() {
        if file.get(name).is_ok() {
            dense.push((name.clone(), file.load(name, &Device::Cpu)?));
        }
    }
    model.rebuild_dense(&dense)?;
    Ok(model)
}
