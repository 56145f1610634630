//! The towers as ONNX graphs, built from the input layout that `tensors.json` states (the
//! same description the Python reference follows) and the checkpoint's tensors.
//!
//! Inputs are encoded indices, as the encode stage writes them (`encoding/vocab_*.parquet`:
//! 0 padding, 1 out of vocabulary), so the graph holds no vocabulary of strings:
//! - `history` `int64 [batch, H]`: the user's newest `H` history items (item rows through
//!   `item_embeddings.parquet`'s `index_key`), oldest first, right-aligned: a shorter history
//!   is padded with 0 on the left.
//! - `user_id`, `user_feature.<name>` `int64 [batch]`; `user_dense` `float [batch, n]`.
//! - `item` `int64 [batch]` (1 for an item the vocabulary lacks: a new item, whose vector then
//!   comes from its features alone), `item_feature.<name>` `int64 [batch]` for a categorical or
//!   bucketed feature and `int64 [batch, bag]` for a bag (0-padded), `item_dense`
//!   `float [batch, n]`.
//!
//! A history item's own features (pooled over the history by the MLP towers) are constants of
//! the graph, one row of values per item row, so the caller passes item rows only.

use std::collections::HashMap;

use candle_core::Tensor;
use serde_json::Value;

use recall_models::data::EncodedData;
use recall_models::model::tables::ItemFeatureSource;

use super::graph::{self, Dim, Elem, Graph, float, int, ints};
use crate::error::{Error, Result};

const BATCH: Dim = Dim::Named("batch");
/// The additive score of a key a query may not see: finite, so that padded positions (which
/// see nothing) stay finite instead of spreading NaN through the products.
const HIDDEN_SCORE: f32 = -1e9;

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "the input layout cannot be written as ONNX: {what}"
    ))
}

fn field<'v>(v: &'v Value, key: &str) -> Result<&'v Value> {
    v.get(key)
        .filter(|x| !x.is_null())
        .ok_or_else(|| bad(format!("no `{key}` in {v}")))
}

fn text<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| bad(format!("`{key}` is not a string in {v}")))
}

fn count(v: &Value, key: &str) -> Result<usize> {
    field(v, key)?
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| bad(format!("`{key}` is not a count in {v}")))
}

/// A graph over one model's tensors and encoded data.
struct Tower<'a> {
    g: Graph,
    tensors: &'a HashMap<String, Tensor>,
    data: &'a EncodedData,
    /// A `[batch, ...]` input, whose first dimension broadcasts constants to the batch.
    anchor: Option<String>,
}

impl<'a> Tower<'a> {
    fn new(
        name: &str,
        doc: &str,
        tensors: &'a HashMap<String, Tensor>,
        data: &'a EncodedData,
    ) -> Self {
        Tower {
            g: Graph::new(name, doc),
            tensors,
            data,
            anchor: None,
        }
    }

    fn checkpoint_tensor(&self, name: &str) -> Result<&'a Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| bad(format!("the checkpoint has no tensor `{name}`")))
    }

    fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.checkpoint_tensor(name)?;
        let values = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(recall_models::Error::from)?;
        Ok((t.dims().to_vec(), values))
    }

    /// The checkpoint tensor `name` as a constant (named `w.<name>`: an input may have the
    /// checkpoint name of the table it indexes, `user_feature.<name>`), read from the
    /// checkpoint once however often the graph uses it.
    fn weight(&mut self, name: &str) -> Result<String> {
        let constant = format!("w.{name}");
        if !self.g.has_constant(&constant) {
            let t = self.checkpoint_tensor(name)?;
            let raw = le_bytes(t).map_err(recall_models::Error::from)?;
            self.g.f32_bytes(&constant, t.dims(), raw);
        }
        Ok(constant)
    }

    /// A `[out, in]` weight transposed to `[in, out]`, for `x W^T` as one MatMul.
    fn weight_t(&mut self, name: &str) -> Result<String> {
        let constant = format!("w.{name}^T");
        if self.g.has_constant(&constant) {
            return Ok(constant);
        }
        let (dims, values) = self.tensor(name)?;
        let [rows, cols] = dims[..] else {
            return Err(bad(format!("`{name}` is not a matrix: {dims:?}")));
        };
        let mut t = vec![0.0; values.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = values[r * cols + c];
            }
        }
        Ok(self.g.f32s(&constant, &[cols, rows], &t))
    }

    /// The item-row input (the item tower's, and DSSM's id lookup).
    fn item_input(&mut self) -> String {
        self.input(
            "item",
            Elem::I64,
            &[BATCH],
            "the item's row (item_embeddings.parquet index_key; 1 for an item the vocabulary \
             lacks, whose vector then comes from its features)",
        )
    }

    /// The graph: `v` L2-normalised as its one output `name` (`[batch, dim]`).
    fn into_graph(mut self, v: &str, name: &str, what: &str) -> Graph {
        let out = self.l2_normalize(v);
        self.g
            .output(&out, name, Elem::F32, &[BATCH, Dim::Named("dim")], what);
        self.g
    }

    fn input(&mut self, name: &str, elem: Elem, dims: &[Dim], doc: &str) -> String {
        if !self.g.has_input(name) {
            self.g.input(name, elem, dims, doc);
        }
        if self.anchor.is_none() {
            self.anchor = Some(name.to_owned());
        }
        name.to_owned()
    }

    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.g.node(op, inputs, Vec::new())
    }

    /// `x W^T + b` over the last axis (`spec`: `weight`, `bias` names).
    fn linear(&mut self, x: &str, spec: &Value) -> Result<String> {
        let w = self.weight_t(text(spec, "weight")?)?;
        let b = self.weight(text(spec, "bias")?)?;
        let xw = self.op("MatMul", &[x, &w]);
        Ok(self.op("Add", &[&xw, &b]))
    }

    fn layer_norm(&mut self, x: &str, spec: &Value, eps: f32) -> Result<String> {
        let w = self.weight(text(spec, "weight")?)?;
        let b = self.weight(text(spec, "bias")?)?;
        Ok(self.g.node(
            "LayerNormalization",
            &[x, &w, &b],
            vec![int("axis", -1), float("epsilon", eps)],
        ))
    }

    fn silu(&mut self, x: &str) -> String {
        let s = self.op("Sigmoid", &[x]);
        self.op("Mul", &[x, &s])
    }

    fn sum(&mut self, x: &str, axes: &[i64], keep: bool) -> String {
        let axes = self.g.ints(&[axes.len()], axes);
        self.g.node(
            "ReduceSum",
            &[x, &axes],
            vec![int("keepdims", i64::from(keep))],
        )
    }

    /// `v / sqrt(sum(v^2) + 1e-12)` over the last axis.
    fn l2_normalize(&mut self, v: &str) -> String {
        let squares = self.op("Mul", &[v, v]);
        let total = self.sum(&squares, &[-1], true);
        let eps = self.g.scalar(1e-12);
        let total = self.op("Add", &[&total, &eps]);
        let norm = self.op("Sqrt", &[&total]);
        self.op("Div", &[v, &norm])
    }

    /// Boolean: true where `indices` is not 0 (padding).
    fn not_padding(&mut self, indices: &str) -> String {
        let zero = self.g.ints(&[], &[0]);
        let padding = self.op("Equal", &[indices, &zero]);
        self.op("Not", &[&padding])
    }

    /// 1.0 where `indices` is not 0 (padding), else 0.0.
    fn present(&mut self, indices: &str) -> String {
        let present = self.not_padding(indices);
        self.g.node("Cast", &[&present], vec![int("to", 1)])
    }

    /// Sum (or mean) over `axes` of the table rows `rows` (`[..., width]`) weighted by `mask`
    /// (the rows' shape without `width`); a mean divides by the mask's sum, at least 1, so an
    /// empty list gives zeros.
    fn pool_rows(&mut self, rows: &str, mask: &str, axes: &[i64], mean: bool) -> String {
        let last = self.g.ints(&[1], &[-1]);
        let weights = self.op("Unsqueeze", &[mask, &last]);
        let weighted = self.op("Mul", &[rows, &weights]);
        let total = self.sum(&weighted, axes, false);
        if !mean {
            return total;
        }
        let n = self.sum(mask, axes, false);
        let one = self.g.scalar(1.0);
        let n = self.op("Max", &[&n, &one]);
        let n = self.op("Unsqueeze", &[&n, &last]);
        self.op("Div", &[&total, &n])
    }

    /// `row` (`[1, width]`) repeated for every batch row.
    fn broadcast(&mut self, row: &str, width: usize) -> Result<String> {
        let anchor = self
            .anchor
            .clone()
            .ok_or_else(|| bad("a tower without inputs"))?;
        let batch = self
            .g
            .node("Shape", &[&anchor], vec![int("start", 0), int("end", 1)]);
        let width = self.g.ints(&[1], &[width as i64]);
        let shape = self
            .g
            .node("Concat", &[&batch, &width], vec![int("axis", 0)]);
        Ok(self.op("Expand", &[row, &shape]))
    }

    /// Item feature `name`'s values per item row as constants: `[items, longest]` values
    /// (0-padded) and the matching `[items, longest]` 1.0/0.0 mask; row 0 (history padding)
    /// has none.
    fn item_value_table(&mut self, name: &str) -> Result<(String, String)> {
        let source = ItemFeatureSource::find(self.data, name)
            .ok_or_else(|| bad(format!("the encoding has no item feature `{name}`")))?;
        let items = self.data.item_table_size;
        let lists: Vec<&[u32]> = (0..items as u32)
            .map(|i| {
                if i == 0 {
                    &[][..]
                } else {
                    source.values(self.data, i)
                }
            })
            .collect();
        let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0).max(1);
        let mut values = vec![0i64; items * longest];
        let mut mask = vec![0f32; items * longest];
        for (i, list) in lists.iter().enumerate() {
            for (j, &v) in list.iter().enumerate() {
                values[i * longest + j] = i64::from(v);
                mask[i * longest + j] = 1.0;
            }
        }
        let v = self
            .g
            .i64s(&format!("item_values.{name}"), &[items, longest], &values);
        let m = self.g.f32s(
            &format!("item_values.{name}.mask"),
            &[items, longest],
            &mask,
        );
        Ok((v, m))
    }

    /// The `[batch, newest]` history input.
    fn history(&mut self, newest: usize) -> String {
        self.input(
            "history",
            Elem::I64,
            &[BATCH, Dim::Fixed(newest)],
            "the user's newest history items as item rows (item_embeddings.parquet index_key), \
             oldest first, right-aligned: padded with 0 on the left",
        )
    }

    /// The layout's parts of `entity`'s tower (`user` or `item`), each `[batch, width]`.
    fn parts(&mut self, parts: &Value, entity: &str, newest: usize) -> Result<Vec<String>> {
        let parts = field(parts, "parts")?
            .as_array()
            .ok_or_else(|| bad("`parts` is not a list"))?;
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let width = count(part, "width")?;
            out.push(match text(part, "op")? {
                "pool" => self.pool_part(part, text(part, "table")?, newest)?,
                "lookup" => self.lookup_part(part, text(part, "table")?, width)?,
                "dense" => {
                    let features = field(part, "features")?;
                    self.input(
                        &format!("{entity}_dense"),
                        Elem::F32,
                        &[BATCH, Dim::Fixed(width)],
                        &format!("the {entity}'s standardised dense features {features}"),
                    )
                }
                other => return Err(bad(format!("unknown part op `{other}`"))),
            });
        }
        Ok(out)
    }

    fn pool_part(&mut self, part: &Value, table: &str, newest: usize) -> Result<String> {
        let mean = text(part, "pooling")? == "mean";
        let rows_table = self.weight(table)?;
        let over = text(part, "over")?;
        if over == "item" {
            // A bag of the item itself, given as an input.
            let name = text(part, "feature")?;
            let values = self.input(
                &format!("item_feature.{name}"),
                Elem::I64,
                &[BATCH, Dim::Named("bag")],
                &format!("the item's `{name}` values (encoding/vocab_{name}.parquet), 0-padded"),
            );
            let mask = self.present(&values);
            let rows = self
                .g
                .node("Gather", &[&rows_table, &values], vec![int("axis", 0)]);
            return Ok(self.pool_rows(&rows, &mask, &[1], mean));
        }
        let mut history = self.history(newest);
        if let Some(n) = part.get("newest").and_then(Value::as_u64) {
            let n = (n as usize).min(newest);
            let starts = self.g.ints(&[1], &[(newest - n) as i64]);
            let ends = self.g.ints(&[1], &[newest as i64]);
            let axes = self.g.ints(&[1], &[1]);
            history = self.op("Slice", &[&history, &starts, &ends, &axes]);
        }
        match part.get("feature").and_then(Value::as_str) {
            None => {
                let mask = self.present(&history);
                let rows = self
                    .g
                    .node("Gather", &[&rows_table, &history], vec![int("axis", 0)]);
                Ok(self.pool_rows(&rows, &mask, &[1], mean))
            }
            Some(name) => {
                let (values, value_mask) = self.item_value_table(name)?;
                let gather = |t: &mut Self, table: &str, idx: &str| {
                    t.g.node("Gather", &[table, idx], vec![int("axis", 0)])
                };
                let values = gather(self, &values, &history);
                let mask = gather(self, &value_mask, &history);
                let rows = gather(self, &rows_table, &values);
                Ok(self.pool_rows(&rows, &mask, &[1, 2], mean))
            }
        }
    }

    fn lookup_part(&mut self, part: &Value, table: &str, width: usize) -> Result<String> {
        let rows_table = self.weight(table)?;
        let index = field(part, "index")?;
        let indices = match index.as_str() {
            Some("user_id") => self.input(
                "user_id",
                Elem::I64,
                &[BATCH],
                "the user's row (encoding/vocab_user_id.parquet)",
            ),
            Some("user_feature") => {
                let name = text(part, "feature")?;
                self.input(
                    &format!("user_feature.{name}"),
                    Elem::I64,
                    &[BATCH],
                    &format!("the user's `{name}` (encoding/vocab_{name}.parquet, or its bucket)"),
                )
            }
            Some("item_feature") => {
                let name = text(part, "feature")?;
                self.input(
                    &format!("item_feature.{name}"),
                    Elem::I64,
                    &[BATCH],
                    &format!("the item's `{name}` (encoding/vocab_{name}.parquet, or its bucket)"),
                )
            }
            Some("item_id") => {
                let item = self.item_input();
                match (
                    part.get("cold_from").and_then(Value::as_i64),
                    part.get("cold_row").and_then(Value::as_i64),
                ) {
                    // A cold item's own row was never trained: it reads `cold_row`.
                    (Some(from), Some(row)) => {
                        let from = self.g.ints(&[], &[from]);
                        let row = self.g.ints(&[], &[row]);
                        let warm = self.op("Less", &[&item, &from]);
                        self.op("Where", &[&warm, &item, &row])
                    }
                    _ => item,
                }
            }
            _ => {
                // A fixed row (the example-age bucket at serving time).
                let row = index
                    .as_i64()
                    .ok_or_else(|| bad(format!("unknown lookup index {index}")))?;
                let row = self.g.ints(&[1], &[row]);
                let gathered = self
                    .g
                    .node("Gather", &[&rows_table, &row], vec![int("axis", 0)]);
                return self.broadcast(&gathered, width);
            }
        };
        Ok(self
            .g
            .node("Gather", &[&rows_table, &indices], vec![int("axis", 0)]))
    }

    fn concat(&mut self, parts: &[String]) -> Result<String> {
        match parts {
            [] => Err(bad("a tower without input parts")),
            [one] => Ok(one.clone()),
            _ => {
                let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                Ok(self.g.node("Concat", &refs, vec![int("axis", 1)]))
            }
        }
    }

    fn mlp(&mut self, encoder: &Value, mut x: String) -> Result<String> {
        let layers = field(encoder, "layers")?
            .as_array()
            .ok_or_else(|| bad("`layers` is not a list"))?;
        for layer in layers {
            let w = self.weight(text(layer, "weight")?)?;
            let mut z = self.g.node("Gemm", &[&x, &w], vec![int("transB", 1)]);
            if let Some(bn) = layer.get("batch_norm").filter(|b| !b.is_null()) {
                let eps = field(bn, "eps")?.as_f64().unwrap_or(1e-5) as f32;
                let mean = self.weight(text(bn, "running_mean")?)?;
                let var = self.weight(text(bn, "running_var")?)?;
                let gamma = self.weight(text(bn, "weight")?)?;
                let beta = self.weight(text(bn, "bias")?)?;
                let eps = self.g.scalar(eps);
                let centred = self.op("Sub", &[&z, &mean]);
                let var = self.op("Add", &[&var, &eps]);
                let std = self.op("Sqrt", &[&var]);
                let scaled = self.op("Div", &[&centred, &std]);
                let scaled = self.op("Mul", &[&scaled, &gamma]);
                z = self.op("Add", &[&scaled, &beta]);
            }
            let b = self.weight(text(layer, "bias")?)?;
            z = self.op("Add", &[&z, &b]);
            x = match text(layer, "activation")? {
                "identity" => z,
                "relu" => self.op("Relu", &[&z]),
                "prelu" => {
                    let alpha = self.weight(text(layer, "prelu")?)?;
                    self.op("PRelu", &[&z, &alpha])
                }
                other => return Err(bad(format!("unknown activation `{other}`"))),
            };
        }
        Ok(x)
    }

    /// `[batch, len, dim]` -> `[batch, heads, len, dim / heads]` (`keys`: `[.., dim / heads, len]`).
    fn heads_apart(&mut self, x: &str, len: usize, heads: usize, dh: usize, keys: bool) -> String {
        let shape = self.g.ints(&[4], &[0, len as i64, heads as i64, dh as i64]);
        let split = self.op("Reshape", &[x, &shape]);
        let perm: &[i64] = if keys { &[0, 2, 3, 1] } else { &[0, 2, 1, 3] };
        self.g
            .node("Transpose", &[&split], vec![ints("perm", perm)])
    }

    fn heads_together(&mut self, x: &str, len: usize, dim: usize) -> String {
        let joined = self
            .g
            .node("Transpose", &[x], vec![ints("perm", &[0, 2, 1, 3])]);
        let shape = self.g.ints(&[3], &[0, len as i64, dim as i64]);
        self.op("Reshape", &[&joined, &shape])
    }

    /// Columns `part * dim .. (part + 1) * dim` of the last axis.
    fn columns(&mut self, x: &str, part: usize, dim: usize) -> String {
        let starts = self.g.ints(&[1], &[(part * dim) as i64]);
        let ends = self.g.ints(&[1], &[((part + 1) * dim) as i64]);
        let axes = self.g.ints(&[1], &[-1]);
        self.op("Slice", &[x, &starts, &ends, &axes])
    }

    /// The sequence encoders' shared front: `x` `[batch, len, dim]` (item rows plus positions,
    /// plus the side layer on every position) and the `[batch, 1, len, len]` visibility of
    /// each key to each query: itself and earlier items, never padding, except that the
    /// newest position is always visible (an empty history reads the padding row there, as
    /// the tower does for an empty window).
    fn sequence_front(
        &mut self,
        encoder: &Value,
        side: &[String],
        len: usize,
    ) -> Result<(String, String)> {
        let dim = count(encoder, "dim")?;
        let max_len = count(encoder, "max_len")?;
        if len > max_len {
            return Err(bad(format!(
                "history of {len} items for a window of {max_len}"
            )));
        }
        let history = self.history(len);
        let items = self.weight("item_embedding")?;
        let mut x = self
            .g
            .node("Gather", &[&items, &history], vec![int("axis", 0)]);
        // Absent from layouts written before the option existed: 1, and no node.
        let scale = encoder
            .get("input_scale")
            .and_then(Value::as_f64)
            .unwrap_or(1.0) as f32;
        if scale != 1.0 {
            let scale = self.g.f32s("input_scale", &[], &[scale]);
            x = self.op("Mul", &[&x, &scale]);
        }
        let (_, positions) = self.tensor(text(encoder, "positions")?)?;
        let newest_rows = &positions[(max_len - len) * dim..max_len * dim];
        let positions = self.g.f32s("positions.newest", &[len, dim], newest_rows);
        let mut x = self.op("Add", &[&x, &positions]);
        if let Some(spec) = encoder.get("side").filter(|s| !s.is_null()) {
            let side = self.concat(side)?;
            let side = self.linear(&side, spec)?;
            let axis = self.g.ints(&[1], &[1]);
            let side = self.op("Unsqueeze", &[&side, &axis]);
            x = self.op("Add", &[&x, &side]);
        }
        let real = self.not_padding(&history);
        let newest: Vec<bool> = (0..len).map(|t| t + 1 == len).collect();
        let newest = self.bools("newest_position", &[len], &newest);
        let key = self.op("Or", &[&real, &newest]);
        let key_shape = self.g.ints(&[4], &[-1, 1, 1, len as i64]);
        let key = self.op("Reshape", &[&key, &key_shape]);
        let causal: Vec<bool> = (0..len * len).map(|i| i % len <= i / len).collect();
        let causal = self.bools("causal", &[len, len], &causal);
        Ok((x, self.op("And", &[&key, &causal])))
    }

    fn bools(&mut self, name: &str, dims: &[usize], values: &[bool]) -> String {
        let ones: Vec<i64> = values.iter().map(|&b| i64::from(b)).collect();
        let t = self.g.i64s(name, dims, &ones);
        self.g.node("Cast", &[&t], vec![int("to", 9)])
    }

    /// The newest position's state `[batch, dim]` after the final norm.
    fn newest(&mut self, x: &str, encoder: &Value, len: usize, eps: f32) -> Result<String> {
        let last = self.g.ints(&[], &[len as i64 - 1]);
        let x = self.g.node("Gather", &[x, &last], vec![int("axis", 1)]);
        self.layer_norm(&x, field(encoder, "final_norm")?, eps)
    }

    /// A sequence encoder: the front, then each block's steps (the layout's step vocabulary,
    /// `recall_models::model::sequence::steps`), the final norm at the newest position.
    fn sequence(&mut self, encoder: &Value, side: &[String], len: usize) -> Result<String> {
        let eps = field(encoder, "layer_norm_eps")?.as_f64().unwrap_or(1e-5) as f32;
        let heads = count(encoder, "heads")?;
        let (x, visible) = self.sequence_front(encoder, side, len)?;
        let mut values: HashMap<String, (String, usize)> = HashMap::new();
        values.insert("x".into(), (x, count(encoder, "dim")?));
        let blocks = field(encoder, "blocks")?
            .as_array()
            .ok_or_else(|| bad("`blocks` is not a list"))?;
        for (b, block) in blocks.iter().enumerate() {
            let steps = field(block, "steps")?
                .as_array()
                .ok_or_else(|| bad("`steps` is not a list"))?;
            for step in steps {
                self.step(step, &mut values, (b, heads, len, eps), &visible)?;
            }
        }
        let x = values
            .remove("x")
            .ok_or_else(|| bad("no `x` after the blocks"))?
            .0;
        self.newest(&x, encoder, len, eps)
    }

    /// One step on `values` (name -> graph value and width); `at`: block number, heads,
    /// positions, layer norm eps.
    fn step(
        &mut self,
        step: &Value,
        values: &mut HashMap<String, (String, usize)>,
        at: (usize, usize, usize, f32),
        visible: &str,
    ) -> Result<()> {
        let (block, heads, len, eps) = at;
        let get =
            |values: &HashMap<String, (String, usize)>, key: &str| -> Result<(String, usize)> {
                let name = text(step, key)?;
                values
                    .get(name)
                    .cloned()
                    .ok_or_else(|| bad(format!("step reads `{name}` before it is made: {step}")))
            };
        let out =
            |values: &mut HashMap<String, (String, usize)>, v: (String, usize)| -> Result<()> {
                values.insert(text(step, "out")?.to_owned(), v);
                Ok(())
            };
        match text(step, "op")? {
            "layer_norm" => {
                let (x, width) = get(values, "in")?;
                let y = self.layer_norm(&x, step, eps)?;
                out(values, (y, width))
            }
            "linear" => {
                let (x, _) = get(values, "in")?;
                let out_width = self.checkpoint_tensor(text(step, "weight")?)?.dims()[0];
                let y = self.linear(&x, step)?;
                let y = match text(step, "activation")? {
                    "identity" => y,
                    "relu" => self.op("Relu", &[&y]),
                    "silu" => self.silu(&y),
                    other => return Err(bad(format!("unknown activation `{other}`"))),
                };
                out(values, (y, out_width))
            }
            "split" => {
                let (x, width) = get(values, "in")?;
                let names = field(step, "out")?
                    .as_array()
                    .ok_or_else(|| bad(format!("`out` of a split is not a list: {step}")))?;
                let part = width / names.len().max(1);
                for (i, name) in names.iter().enumerate() {
                    let name = name
                        .as_str()
                        .ok_or_else(|| bad("a split's outputs are names"))?;
                    let y = self.columns(&x, i, part);
                    values.insert(name.to_owned(), (y, part));
                }
                Ok(())
            }
            op @ ("add" | "mul") => {
                let names: Vec<&str> = field(step, "in")?
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let [a, b] = names[..] else {
                    return Err(bad(format!("`{op}` takes two inputs: {step}")));
                };
                let lookup = |n: &str| {
                    values
                        .get(n)
                        .cloned()
                        .ok_or_else(|| bad(format!("step reads `{n}` before it is made")))
                };
                let ((a, width), (b, _)) = (lookup(a)?, lookup(b)?);
                let y = self.op(if op == "add" { "Add" } else { "Mul" }, &[&a, &b]);
                out(values, (y, width))
            }
            "attention" => {
                let (q, width) = get(values, "q")?;
                let (k, _) = get(values, "k")?;
                let (v, _) = get(values, "v")?;
                let y = self.attention(step, [&q, &k, &v], (block, heads, len, width), visible)?;
                out(values, (y, width))
            }
            other => Err(bad(format!("unknown step `{other}`"))),
        }
    }

    /// Multi-head attention of one step (`weighting` softmax or silu) over the visible keys.
    fn attention(
        &mut self,
        step: &Value,
        [q, k, v]: [&str; 3],
        (block, heads, len, dim): (usize, usize, usize, usize),
        visible: &str,
    ) -> Result<String> {
        let dh = dim / heads.max(1);
        let q = self.heads_apart(q, len, heads, dh, false);
        let k = self.heads_apart(k, len, heads, dh, true);
        let v = self.heads_apart(v, len, heads, dh, false);
        let scores = self.op("MatMul", &[&q, &k]);
        let weights = match text(step, "weighting")? {
            "softmax" => {
                let scale = field(step, "scale")?
                    .as_f64()
                    .ok_or_else(|| bad("`scale` is not a number"))?;
                let scale = self.g.scalar(scale as f32);
                let scores = self.op("Mul", &[&scores, &scale]);
                let zero = self.g.scalar(0.0);
                let hidden = self.g.scalar(HIDDEN_SCORE);
                let mask = self.op("Where", &[visible, &zero, &hidden]);
                let scores = self.op("Add", &[&scores, &mask]);
                self.g.node("Softmax", &[&scores], vec![int("axis", -1)])
            }
            "silu" => {
                // bias[t, s] = relative_bias[t - s], or relative_bias[bias_bucket[t - s]] for a
                // bucketed bias (0 where s > t; masked out anyway).
                let (_, relative) = self.tensor(text(step, "relative_bias")?)?;
                let relative: Vec<f32> = match step.get("bias_bucket") {
                    None => relative.to_vec(),
                    Some(buckets) => {
                        let buckets = buckets
                            .as_array()
                            .ok_or_else(|| bad("`bias_bucket` is not a list"))?;
                        buckets
                            .iter()
                            .map(|b| {
                                b.as_u64()
                                    .and_then(|b| relative.get(b as usize).copied())
                                    .ok_or_else(|| {
                                        bad(format!(
                                            "`bias_bucket` entry {b} is not a bucket of the bias"
                                        ))
                                    })
                            })
                            .collect::<Result<_, _>>()?
                    }
                };
                if relative.len() < len {
                    return Err(bad(format!(
                        "the relative bias spans {} distances, the window {len}",
                        relative.len()
                    )));
                }
                let bias: Vec<f32> = (0..len * len)
                    .map(|i| {
                        let (t, s) = (i / len, i % len);
                        if s <= t { relative[t - s] } else { 0.0 }
                    })
                    .collect();
                let bias =
                    self.g
                        .f32s(&format!("relative_bias.{block}.square"), &[len, len], &bias);
                let divide_by = count(step, "divide_by")?;
                let scores = self.op("Add", &[&scores, &bias]);
                let a = self.silu(&scores);
                let mask = self.g.node("Cast", &[visible], vec![int("to", 1)]);
                let a = self.op("Mul", &[&a, &mask]);
                let span = self.g.scalar(divide_by as f32);
                self.op("Div", &[&a, &span])
            }
            other => return Err(bad(format!("unknown attention weighting `{other}`"))),
        };
        let a = self.op("MatMul", &[&weights, &v]);
        Ok(self.heads_together(&a, len, dim))
    }
}

const USER_DOC: &str = "The user tower: a user's unit vector from the newest history items and the \
user's features, all as encoded indices (see the inputs' doc strings). Scores against \
item_embeddings.parquet's vectors by dot product.";

const ITEM_DOC: &str = "The item tower: an item's unit vector from its row and features. A new item \
(row 1, out of vocabulary) gets its vector from its features alone.";

/// The user tower of `layout` (`tensors.json`'s `layout`) as an ONNX graph.
pub fn user_tower(
    layout: &Value,
    tensors: &HashMap<String, Tensor>,
    data: &EncodedData,
) -> Result<Graph> {
    let user = field(layout, "user_input")?;
    let newest = count(field(user, "history")?, "newest")?;
    let encoder = field(user, "encoder")?;
    let mut t = Tower::new("user_tower", USER_DOC, tensors, data);
    let v = match text(encoder, "kind")? {
        "mlp" => {
            let parts = t.parts(user, "user", newest)?;
            let x = t.concat(&parts)?;
            t.mlp(encoder, x)?
        }
        "sequence" => {
            // The history first, so that it is the first input and the batch anchor.
            t.history(newest);
            let side = t.parts(user, "user", newest)?;
            t.sequence(encoder, &side, newest)?
        }
        other => return Err(bad(format!("unknown user encoder `{other}`"))),
    };
    Ok(t.into_graph(&v, "user_vector", "the user's unit vector"))
}

/// The item tower of `layout` as an ONNX graph, for models whose item side is a
/// tower over features (DSSM, a sequence kind with `item_tower`); `None` for an item side that is the item's embedding row alone.
pub fn item_tower(
    layout: &Value,
    tensors: &HashMap<String, Tensor>,
    data: &EncodedData,
) -> Result<Option<Graph>> {
    let item = field(layout, "item_input")?;
    let encoder = field(item, "encoder")?;
    if text(encoder, "kind")? != "mlp" {
        return Ok(None);
    }
    let mut t = Tower::new("item_tower", ITEM_DOC, tensors, data);
    // The item input first, so that it is the batch anchor.
    t.item_input();
    let parts = t.parts(item, "item", 0)?;
    let x = t.concat(&parts)?;
    let v = t.mlp(encoder, x)?;
    Ok(Some(t.into_graph(
        &v,
        "item_vector",
        "the item's unit vector",
    )))
}

/// `t`'s values as ONNX's little-endian `raw_data`, converted a block at a time: a whole copy
/// of the values first would put a second item table in memory (1.26 GB at 10 M items).
fn le_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    const BLOCK: usize = 1 << 20;
    let flat = t.flatten_all()?;
    let n = flat.elem_count();
    let mut raw = Vec::with_capacity(n * 4);
    for start in (0..n).step_by(BLOCK) {
        let values = flat
            .narrow(0, start, BLOCK.min(n - start))?
            .to_vec1::<f32>()?;
        graph::extend_le_bytes(&mut raw, &values);
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of more than two blocks, and one whose size is not a multiple of the block,
    /// gives the bytes a whole copy of its values gives.
    #[test]
    fn block_by_block_bytes_are_the_whole_tables() {
        for (rows, cols) in [(1300, 2017), (3, 5)] {
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| (i as f32 * 0.37).sin() * 1e3)
                .collect();
            let t =
                Tensor::from_vec(values.clone(), (rows, cols), &candle_core::Device::Cpu).unwrap();
            let whole: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(le_bytes(&t).unwrap(), whole);
        }
    }
}
