//! The input layout of a model's towers, written beside its exported weights (`tensors.json`)
//! so that code outside Rust can compute the same vectors from raw inputs: which embedding
//! table each input slice comes from, in which order the slices are concatenated, what is
//! pooled and over which items, and the layers after it with their tensor names.
//!
//! This file restates the order `TwoTower::users` / `items` assemble their `InputPlan`s in;
//! the Python reference (`python/recall_outputs/reference.py`) interprets it, and CI checks
//! that it reproduces the exported user and item vectors, so the two cannot drift apart
//! unnoticed.

use serde_json::{Value, json};

use crate::data::EncodedData;
use crate::model::tables::ItemFeatureSource;
use crate::model::tower::{LayerActivation, TowerSpec, layer_tensor};
use crate::model::{TwoTower, tower_spec};

/// How raw values become the table rows the parts look up (the encode stage's rules).
const ENCODING: &str = "Every table row is an encoded index: 0 is padding, 1 out-of-vocabulary. Raw ids \
and categorical values map through encoding/vocab_<name>.parquet (columns raw, index), item ids \
through item_embeddings.parquet (item_id, index_key); a value not there, or missing, is 1. A categorical feature with first_of_list takes the first value of a list (a string \
is a list split on '|'). A bag maps every value of its list (empty parts dropped). Quantile and \
boundaries features are bucketed: 1 + the number of boundaries <= x, 0 when missing or NaN. Dense \
features are (x - mean) / std with (mean, std) = `scaling`, 0 when missing. A user or item absent from \
its side table has missing values. Feature kinds, source columns, boundaries and scaling are in \
encoding/features.json.";

const POOLING: &str = "pool: the rows of `table` for a list of indices, summed, divided by the \
list's length for pooling = mean (out-of-vocabulary rows included; an empty list gives zeros). \
over = history: the user's history items (the newest `newest` of them when set); over = item: the \
item itself. With `feature`, the list is that item feature's values of every listed item, \
concatenated.";

const MLP: &str = "Each layer: z = x W^T; with batch_norm, z = (z - running_mean) / sqrt(running_var + eps) \
* bn_weight + bn_bias; then y = act(z + bias): identity, relu, or prelu (v if v > 0 else alpha * v, \
alpha per column from the `prelu` tensor). The output is L2-normalised: v / sqrt(sum(v^2) + 1e-12).";

impl TwoTower {
    /// The layout of the user tower (`user_input`) and of the item side (`item_input`), as
    /// JSON for `tensors.json`.
    pub fn input_layout(&self, data: &EncodedData) -> Value {
        json!({
            "encoding": ENCODING,
            "pooling": POOLING,
            "user_input": self.user_layout(data),
            "item_input": self.item_layout(data),
        })
    }

    fn pooling(&self) -> &'static str {
        if self.config().pools_by_mean() {
            "mean"
        } else {
            "sum"
        }
    }

    fn user_layout(&self, data: &EncodedData) -> Value {
        let common = self.config().common();
        let (d, fd) = (common.embedding_dim, common.feature_dim);
        let pooling = self.pooling();
        let recent_items = self.config().pooled_user().map_or(0, |u| u.recent_items);
        let mut parts = Vec::new();
        let sasrec = self.window_encoder().is_some();
        if !sasrec {
            parts.push(
                json!({ "op": "pool", "table": "item_embedding", "over": "history",
                "pooling": pooling, "width": d }),
            );
            if recent_items > 0 {
                parts.push(
                    json!({ "op": "pool", "table": "item_embedding", "over": "history",
                    "newest": recent_items, "pooling": pooling, "width": d }),
                );
            }
        }
        if self.tables().user_id.is_some() {
            parts.push(
                json!({ "op": "lookup", "table": "user_id_embedding", "index": "user_id",
                "vocabulary": "encoding/vocab_user_id.parquet", "width": fd }),
            );
        }
        for (name, _) in &self.tables().user_features {
            parts.push(
                json!({ "op": "lookup", "table": format!("user_feature.{name}"),
                "index": "user_feature", "feature": name, "width": fd }),
            );
        }
        if self.tables().age.is_some() {
            parts.push(json!({ "op": "lookup", "table": "example_age_embedding",
                "index": data.serving_age_bucket, "width": fd,
                "note": "example age at serving is 0 (now): this fixed bucket" }));
        }
        if common.user_features && !data.user_dense.is_empty() {
            let names: Vec<&str> = data.user_dense.iter().map(|f| f.name.as_str()).collect();
            parts.push(json!({ "op": "dense", "features": names, "width": names.len() }));
        }
        if !sasrec {
            let sources = self.pooled_tower().map_or(&[][..], |p| p.history_sources());
            for ((name, _), source) in self.tables().history_features.iter().zip(sources) {
                parts.push(
                    json!({ "op": "pool", "table": format!("history_feature.{name}"),
                    "over": "history", "feature": name, "feature_kind": feature_kind(*source),
                    "pooling": pooling, "width": fd }),
                );
            }
        }
        let width: usize = parts
            .iter()
            .filter_map(|p| p["width"].as_u64())
            .sum::<u64>() as usize;
        let encoder = match (self.window_encoder(), self.config().pooled_user()) {
            (Some(encoder), _) => encoder.describe(),
            (None, user) => mlp(&tower_spec(
                self.config(),
                "user_tower",
                width,
                user.map_or(&[], |u| &u.user_tower),
            )),
        };
        let newest = self.history_len(data);
        json!({
            "history": {
                "items": "the user's interactions, ordered by the interactions' `seq` (ties in source order), \
                          every one of them at serving (training, validation and test); item ids map to \
                          table rows through item_embeddings.parquet (item_id, index_key)",
                "newest": newest,
            },
            // SASRec adds the parts to every position through its `side` layer; the MLP towers
            // take them concatenated, in this order.
            "parts": parts,
            "width": width,
            "encoder": encoder,
        })
    }

    fn item_layout(&self, data: &EncodedData) -> Value {
        let common = self.config().common();
        let d = common.embedding_dim;
        let mut parts = vec![
            json!({ "op": "lookup", "table": "item_embedding", "index": "item_id",
            "vocabulary": "item_embeddings.parquet (item_id, index_key)", "width": d }),
        ];
        if let (Some(cold), Some(_)) = (data.first_cold_item, self.item_tower()) {
            // A cold item's own row is never trained: the tower reads the OOV row instead.
            parts[0]["cold_from"] = json!(cold);
            parts[0]["cold_row"] = json!(recall_core::columns::OOV_INDEX);
        }
        let Some(dssm) = self.config().item_tower() else {
            return json!({ "parts": parts, "width": d, "encoder": { "kind": "none",
                "computation": "the item's row of item_embedding, L2-normalised" } });
        };
        let fd = common.feature_dim;
        let sources = self.item_tower().map_or(&[][..], |t| t.item_sources());
        for ((name, _), source) in self.tables().item_features.iter().zip(sources) {
            parts.push(if source.is_scalar() {
                json!({ "op": "lookup", "table": format!("item_feature.{name}"),
                    "index": "item_feature", "feature": name, "width": fd })
            } else {
                json!({ "op": "pool", "table": format!("item_feature.{name}"), "over": "item",
                    "feature": name, "feature_kind": "bag", "pooling": self.pooling(), "width": fd })
            });
        }
        if dssm.item_features && !data.item_dense.is_empty() {
            let names: Vec<&str> = data.item_dense.iter().map(|f| f.name.as_str()).collect();
            parts.push(json!({ "op": "dense", "features": names, "width": names.len() }));
        }
        let width: usize = parts
            .iter()
            .filter_map(|p| p["width"].as_u64())
            .sum::<u64>() as usize;
        json!({
            "parts": parts,
            "width": width,
            "encoder": mlp(&tower_spec(self.config(), "item_tower", width, &dssm.item_tower)),
        })
    }
}

fn feature_kind(source: ItemFeatureSource) -> &'static str {
    if source.is_scalar() {
        "categorical"
    } else {
        "bag"
    }
}

/// An MLP tower's layers with their tensor names, from the same spec `Tower::new` builds.
fn mlp(spec: &TowerSpec<'_>) -> Value {
    let name = spec.name;
    let layers: Vec<Value> = (0..spec.widths.len())
        .map(|i| {
            let form = spec.layer_form(i);
            let t = |part: &str| layer_tensor(name, i, part);
            json!({
                "weight": t("weight"),
                "bias": t("bias"),
                "activation": match form.activation {
                    LayerActivation::Identity => "identity",
                    LayerActivation::Relu => "relu",
                    LayerActivation::Prelu => "prelu",
                },
                "prelu": (form.activation == LayerActivation::Prelu).then(|| t("prelu")),
                "batch_norm": form.batch_norm.then(|| json!({
                    "weight": t("bn_weight"), "bias": t("bn_bias"),
                    "running_mean": t("bn_running_mean"), "running_var": t("bn_running_var"),
                    "eps": crate::ops::norm_op::BN_EPS,
                })),
            })
        })
        .collect();
    json!({ "kind": "mlp", "layers": layers, "computation": MLP })
}
