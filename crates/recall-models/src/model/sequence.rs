//! The sequence user tower (SASRec, Kang and McAuley 2018): causal multi-head self-attention
//! over the item history, pre-layer-norm blocks (attention, then a two-layer feed-forward
//! net, each with a residual and dropout), learned position embeddings counted from the
//! newest item, and a final layer norm. The user vector at a position is the block stack's
//! output there; the item side is the item table itself (shared with the history, as in
//! YoutubeDNN), so score = cosine / temperature after L2 normalisation.
//!
//! Windows are laid out in rows of slots ([`Padded`]): one per row, left-padded, for inference;
//! packed several to a row for training. A slot attends only to its own window's earlier
//! slots; padding slots are never attended to and their outputs are never read. On CPU the element-wise parts run as fused ops (`seq_op.rs`,
//! `fused.rs`), the products through candle's (batched) matmul.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::Result;
use crate::model::sparse::Gathered;
use crate::model::tower::{Params, Pass};
use crate::model::window::{Padded, WindowEncoder};
use crate::ops::fused::bias_activation;
use crate::ops::product_op::matmul;
use crate::ops::seq_op::{bias_silu, causal_softmax, layer_norm};

/// What the encoder is built from.
#[derive(Debug, Clone, Copy)]
pub struct SequenceSpec {
    /// Width of item embeddings and of every block.
    pub dim: usize,
    pub blocks: usize,
    pub heads: usize,
    /// Longest window (position embeddings).
    pub max_len: usize,
    /// Hidden width of the feed-forward net.
    pub ffn: usize,
    /// Width of the user side features added to every position (0: none).
    pub side: usize,
    pub dropout: f32,
    /// Multiplies each history item's row before its position is added (the model
    /// configuration's `input_scale`).
    pub input_scale: f32,
}

// Checkpoint names of the encoder's parts: `new` registers them, `describe` lists them.
const POSITIONS: &str = "sequence.position_embedding";
const FINAL_NORM: &str = "sequence.final";
const SIDE: &str = "sequence.side";
const ATTENTION_NORM: &str = "attention";
const QKV: &str = "attention.qkv";
const OUTPUT: &str = "attention.output";
const FFN_NORM: &str = "ffn";
const FFN_IN: &str = "ffn.0";
const FFN_OUT: &str = "ffn.1";

fn block_part(block: usize, part: &str) -> String {
    format!("sequence.{block}.{part}")
}

pub(crate) fn linear_names(name: &str) -> (String, String) {
    (format!("{name}.weight"), format!("{name}.bias"))
}

pub(crate) fn norm_names(name: &str) -> (String, String) {
    (format!("{name}.ln_weight"), format!("{name}.ln_bias"))
}

impl SequenceSpec {
    /// The encoder's structure with its checkpoint tensor names and the computation, for
    /// readers outside Rust (the `encoder` of the exported input layout): the shared front, and
    /// each block as [`steps`].
    pub(crate) fn describe(&self) -> serde_json::Value {
        let scale = 1.0 / ((self.dim / self.heads) as f64).sqrt();
        let blocks = (0..self.blocks)
            .map(|i| {
                let name = |part: &str| block_part(i, part);
                vec![
                    steps::layer_norm("x", "h", &name(ATTENTION_NORM)),
                    steps::linear("h", "qkv", &name(QKV), "identity"),
                    steps::split("qkv", &["q", "k", "v"]),
                    steps::attention(
                        ["q", "k", "v"],
                        "a",
                        serde_json::json!({ "weighting": "softmax", "scale": scale }),
                    ),
                    steps::linear("a", "a", &name(OUTPUT), "identity"),
                    steps::join("add", "x", "a", "x"),
                    steps::layer_norm("x", "h", &name(FFN_NORM)),
                    steps::linear("h", "h", &name(FFN_IN), "relu"),
                    steps::linear("h", "h", &name(FFN_OUT), "identity"),
                    steps::join("add", "x", "h", "x"),
                ]
            })
            .collect();
        steps::sequence(
            "sasrec",
            self,
            POSITIONS,
            (self.side > 0).then_some(SIDE),
            FINAL_NORM,
            blocks,
            "per block, pre-layer-norm: h = LN(x); [q | k | v] = h W_qkv^T + b; a = softmax(q k^T / \
             sqrt(dim/heads)) v per head with position t attending to positions <= t; x = x + a W_o^T + \
             b_o; x = x + ffn_out(relu(ffn_in(LN(x))))",
        )
    }
}

/// The step vocabulary the exported layout states a sequence encoder's blocks in, which the
/// Python reference and the ONNX writer each interpret once: a block built from these steps
/// needs no change in either. Steps read and write named values of `[positions, width]`;
/// `x` is the residual stream, the block's input and output.
pub(crate) mod steps {
    use serde_json::{Value, json};

    use crate::model::sequence::{SequenceSpec, linear_names, norm_names};

    /// Every step `op` the readers of the layout interpret.
    pub const OPS: [&str; 6] = ["layer_norm", "linear", "split", "attention", "add", "mul"];

    /// `out = LN(in)` over the last axis with the tensors of `name`.
    pub fn layer_norm(input: &str, out: &str, name: &str) -> Value {
        let (weight, bias) = norm_names(name);
        json!({ "op": "layer_norm", "in": input, "out": out, "weight": weight, "bias": bias })
    }

    /// `out = act(in W^T + b)`: `identity`, `relu` or `silu`.
    pub fn linear(input: &str, out: &str, name: &str, activation: &str) -> Value {
        let (weight, bias) = linear_names(name);
        json!({ "op": "linear", "in": input, "out": out, "weight": weight, "bias": bias,
                "activation": activation })
    }

    /// `in` cut into equal parts along the last axis, in order.
    pub fn split(input: &str, outs: &[&str]) -> Value {
        json!({ "op": "split", "in": input, "out": outs })
    }

    /// `out = a (op) b`, element-wise: `add` or `mul`.
    pub fn join(op: &str, a: &str, b: &str, out: &str) -> Value {
        json!({ "op": op, "in": [a, b], "out": out })
    }

    /// Multi-head attention of `q`, `k`, `v` (head j: columns j*dim/heads .. (j+1)*dim/heads)
    /// over the positions up to the query's, heads concatenated into `out`. `weighting`:
    /// `{ weighting: "softmax", scale }` (softmax of the scaled scores), or
    /// `{ weighting: "silu", relative_bias, divide_by }` (silu(score + relative_bias[t - s]) /
    /// divide_by, 0 for later positions; with `bias_bucket`, a list of each distance's entry,
    /// relative_bias[bias_bucket[t - s]]).
    pub fn attention(qkv: [&str; 3], out: &str, weighting: Value) -> Value {
        let mut step =
            json!({ "op": "attention", "q": qkv[0], "k": qkv[1], "v": qkv[2], "out": out });
        if let (Some(step), Value::Object(w)) = (step.as_object_mut(), weighting) {
            step.extend(w);
        }
        step
    }

    /// A sequence encoder's layout: `x[t] = item_embedding[window[t]] + positions[max_len -
    /// L + t]` (plus `side` on every position), the blocks' steps, `final_norm` at the newest
    /// position.
    #[allow(clippy::too_many_arguments)]
    pub fn sequence(
        block: &str,
        spec: &SequenceSpec,
        positions: &str,
        side: Option<&str>,
        final_norm: &str,
        blocks: Vec<Vec<Value>>,
        block_computation: &str,
    ) -> Value {
        let (norm_weight, norm_bias) = norm_names(final_norm);
        let side = side.map(|name| {
            let (weight, bias) = linear_names(name);
            json!({ "weight": weight, "bias": bias, "activation": "identity" })
        });
        debug_assert!(
            blocks
                .iter()
                .flatten()
                .all(|step| step["op"].as_str().is_some_and(|op| OPS.contains(&op))),
            "a step outside the vocabulary the layout's readers interpret"
        );
        let blocks: Vec<Value> = blocks
            .into_iter()
            .map(|steps| json!({ "steps": steps }))
            .collect();
        json!({
            "kind": "sequence",
            "block": block,
            "dim": spec.dim,
            "heads": spec.heads,
            "max_len": spec.max_len,
            "layer_norm_eps": crate::ops::seq_op::LN_EPS,
            "positions": positions,
            "input_scale": spec.input_scale,
            "side": side,
            "blocks": blocks,
            "final_norm": { "weight": norm_weight, "bias": norm_bias },
            "computation": format!(
                "x[t] = input_scale * item_embedding[window[t]] + positions[max_len - L + t] for the window's L items, \
                 oldest first (row max_len - 1 is the newest item's position), plus side W^T + b on every \
                 position when `side` is set (the side parts concatenated); then each block's `steps` in \
                 order ({block_computation}); the user vector is final_norm(x) at the newest position, then \
                 L2-normalised. LN(v) = (v - mean) / sqrt(var + eps) * weight + bias, var the biased \
                 variance over the last axis; silu(z) = z / (1 + exp(-z)). No dropout at inference."
            ),
        })
    }
}

/// The learned position table `[max_len, dim]` of a sequence encoder (row `max_len - 1` is
/// the newest item's), drawn from N(0, `init_std`^2) and registered as `name`.
pub(crate) fn position_table(
    name: &str,
    spec: SequenceSpec,
    init_std: f32,
    rng: &mut impl Rng,
    device: &Device,
    params: &mut Params,
) -> Result<Tensor> {
    let values: Vec<f32> = (0..spec.max_len * spec.dim)
        .map(|_| {
            let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
            init_std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect();
    let table = Var::from_tensor(&Tensor::from_vec(values, (spec.max_len, spec.dim), device)?)?;
    params.push((name.into(), table.clone()));
    Ok(table.as_tensor().clone())
}

/// Dropout in a training pass (seeded masks), the identity otherwise.
pub(crate) fn dropout(x: Tensor, pass: &mut Pass<'_>) -> Result<Tensor> {
    match pass {
        Pass::Train { dropout, mask, .. } if *dropout > 0.0 => Ok(x.mul(&mask(x.dims())?)?),
        _ => Ok(x),
    }
}

/// What a sequence encoder's first block reads: each slot's item row plus its position
/// (counted from its window's newest item), plus the projected user side features.
pub(crate) struct WindowInputs<'a> {
    pub positions: &'a Tensor,
    /// Multiplies each item row (`SequenceSpec::input_scale`).
    pub input_scale: f32,
    pub side: Option<&'a Linear>,
    /// Ones of the model width (the fused bias op's identity slope).
    pub identity: &'a Tensor,
}

impl WindowInputs<'_> {
    /// `[slots, dim]` for the laid-out `windows`; a row longer than the position table is an
    /// error.
    pub(crate) fn embed(
        &self,
        items: &Gathered,
        windows: &Padded,
        side: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dev = self.positions.device();
        let max_len = self.positions.dim(0)?;
        if windows.len > max_len {
            return Err(crate::error::Error::Training(format!(
                "a window of {} items is longer than the model's max_len {max_len}",
                windows.len
            )));
        }
        let slots = windows.ids.len();
        let position_rows = Tensor::from_vec(windows.position_rows(max_len), slots, dev)?;
        let rows = items.lookup(&windows.ids, &[slots], dev)?;
        // Skipped at 1, so a model without the option runs the graph it always did.
        let rows = if self.input_scale == 1.0 {
            rows
        } else {
            rows.affine(self.input_scale as f64, 0.0)?
        };
        let x = (rows + self.positions.index_select(&position_rows, 0)?)?;
        Ok(match (self.side, side) {
            (Some(project), Some(s)) => {
                let owners = Tensor::from_slice(&windows.owners, slots, dev)?;
                (x + project
                    .forward(s, self.identity)?
                    .index_select(&owners, 0)?)?
            }
            _ => x,
        })
    }
}

/// `[b * l, d]` (slot rows) as `[b * h, l, d / h]`: each row's slots per head.
pub(crate) fn heads_apart(part: &Tensor, b: usize, l: usize, h: usize) -> Result<Tensor> {
    let d = part.dim(1)?;
    if h == 1 {
        return Ok(part.reshape((b, l, d))?);
    }
    Ok(part
        .reshape((b, l, h, d / h))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * h, l, d / h))?)
}

/// The inverse of [`heads_apart`]: `[b * h, l, dh]` back to slot rows `[b * l, h * dh]`.
pub(crate) fn heads_together(a: &Tensor, b: usize, l: usize, h: usize) -> Result<Tensor> {
    let dh = a.dim(2)?;
    let a = if h == 1 {
        a.clone()
    } else {
        a.reshape((b, h, l, dh))?.transpose(1, 2)?.contiguous()?
    };
    Ok(a.reshape((b * l, h * dh))?)
}

/// `x W^T + b` over the rows of `x`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    pub(crate) fn new(
        name: &str,
        input: usize,
        output: usize,
        rng: &mut impl Rng,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        // As torch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let bound = 1.0 / (input as f32).sqrt();
        let w: Vec<f32> = (0..input * output)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let b: Vec<f32> = (0..output)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let weight = Var::from_tensor(&Tensor::from_vec(w, (output, input), device)?)?;
        let bias = Var::from_tensor(&Tensor::from_vec(b, output, device)?)?;
        let (w_name, b_name) = linear_names(name);
        params.push((w_name, weight.clone()));
        params.push((b_name, bias.clone()));
        Ok(Linear {
            weight: weight.as_tensor().clone(),
            bias: bias.as_tensor().clone(),
        })
    }

    /// `act(x W^T + b)` for `[N, in]` rows; `alpha` 1 is the identity, 0 ReLU.
    pub(crate) fn forward(&self, x: &Tensor, alpha: &Tensor) -> Result<Tensor> {
        bias_activation(&matmul(x, &self.weight.t()?)?, &self.bias, alpha)
    }

    /// `silu(x W^T + b)` for `[N, in]` rows, output columns `start..start + len` only (HSTU's
    /// projection, one part of it at a time).
    pub(crate) fn forward_silu_part(&self, x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let weight = self.weight.narrow(0, start, len)?;
        bias_silu(&matmul(x, &weight.t()?)?, &self.bias.narrow(0, start, len)?)
    }
}

/// Layer norm parameters (gamma, beta).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    pub(crate) fn new(
        name: &str,
        dim: usize,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        let gamma = Var::from_tensor(&Tensor::ones(dim, DType::F32, device)?)?;
        let beta = Var::from_tensor(&Tensor::zeros(dim, DType::F32, device)?)?;
        let (g_name, b_name) = norm_names(name);
        params.push((g_name, gamma.clone()));
        params.push((b_name, beta.clone()));
        Ok(Norm {
            gamma: gamma.as_tensor().clone(),
            beta: beta.as_tensor().clone(),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.gamma, &self.beta)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attention_norm: Norm,
    /// Queries, keys and values in one product (`[3 dim, dim]`).
    qkv: Linear,
    output: Linear,
    ffn_norm: Norm,
    ffn_in: Linear,
    ffn_out: Linear,
}

/// The causal self-attention user tower.
#[derive(Debug, Clone)]
pub struct SequenceEncoder {
    spec: SequenceSpec,
    /// `[max_len, dim]`: row `max_len - 1` is the newest item's position.
    positions: Tensor,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// Projects the user side features onto every position (`side > 0`).
    side: Option<Linear>,
    /// Activation slopes of the fused bias op: 1 (identity) for `dim` and `3 dim` outputs, 0
    /// (ReLU) for the feed-forward hidden layer.
    identity: Tensor,
    identity_qkv: Tensor,
    relu: Tensor,
}

impl SequenceEncoder {
    pub fn new(
        spec: SequenceSpec,
        init_std: f32,
        rng: &mut impl Rng,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        let d = spec.dim;
        let positions = position_table(POSITIONS, spec, init_std, rng, device, params)?;
        let mut blocks = Vec::with_capacity(spec.blocks);
        for i in 0..spec.blocks {
            let name = |part: &str| block_part(i, part);
            blocks.push(Block {
                attention_norm: Norm::new(&name(ATTENTION_NORM), d, device, params)?,
                qkv: Linear::new(&name(QKV), d, 3 * d, rng, device, params)?,
                output: Linear::new(&name(OUTPUT), d, d, rng, device, params)?,
                ffn_norm: Norm::new(&name(FFN_NORM), d, device, params)?,
                ffn_in: Linear::new(&name(FFN_IN), d, spec.ffn, rng, device, params)?,
                ffn_out: Linear::new(&name(FFN_OUT), spec.ffn, d, rng, device, params)?,
            });
        }
        let final_norm = Norm::new(FINAL_NORM, d, device, params)?;
        let side = if spec.side > 0 {
            Some(Linear::new(SIDE, spec.side, d, rng, device, params)?)
        } else {
            None
        };
        Ok(SequenceEncoder {
            spec,
            positions,
            blocks,
            final_norm,
            side,
            identity: Tensor::ones(d, DType::F32, device)?,
            identity_qkv: Tensor::ones(3 * d, DType::F32, device)?,
            relu: Tensor::zeros(spec.ffn, DType::F32, device)?,
        })
    }

    pub fn spec(&self) -> &SequenceSpec {
        &self.spec
    }
}

impl WindowEncoder for SequenceEncoder {
    fn max_len(&self) -> usize {
        self.spec.max_len
    }

    /// Hidden states `[rows * len, dim]` of the laid-out windows (slot by slot), from the
    /// gathered item rows and, with side features, `side` (`[windows, side]`).
    fn forward(
        &self,
        items: &Gathered,
        windows: &Padded,
        side: Option<&Tensor>,
        pass: &mut Pass<'_>,
    ) -> Result<Tensor> {
        let (b, l, d, h) = (windows.rows(), windows.len, self.spec.dim, self.spec.heads);
        let inputs = WindowInputs {
            positions: &self.positions,
            input_scale: self.spec.input_scale,
            side: self.side.as_ref(),
            identity: &self.identity,
        };
        let mut x = dropout(inputs.embed(items, windows, side)?, pass)?;
        let dh = d / h;
        let scale = 1.0 / (dh as f64).sqrt();
        for block in &self.blocks {
            // Attention: queries, keys and values of the normalised input, heads apart.
            let qkv = block
                .qkv
                .forward(&block.attention_norm.forward(&x)?, &self.identity_qkv)?;
            let split = |k: usize| heads_apart(&qkv.narrow(1, k * d, d)?, b, l, h);
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = matmul(&q, &k.t()?)?;
            let p = dropout(causal_softmax(&scores, h, &windows.first, scale)?, pass)?;
            let a = heads_together(&matmul(&p, &v)?, b, l, h)?;
            let o = block.output.forward(&a, &self.identity)?;
            x = (x + dropout(o, pass)?)?;
            // Feed-forward net on the normalised result.
            let f = block
                .ffn_in
                .forward(&block.ffn_norm.forward(&x)?, &self.relu)?;
            let f = block.ffn_out.forward(&dropout(f, pass)?, &self.identity)?;
            x = (x + dropout(f, pass)?)?;
        }
        self.final_norm.forward(&x)
    }

    fn describe(&self) -> serde_json::Value {
        self.spec.describe()
    }

    fn torch_counterpart(&self, name: &str, shape: &[usize]) -> Option<String> {
        torch_counterpart(name, shape)
    }
}

/// The PyTorch counterpart of one of this encoder's tensors (`sequence.*`), when its name says
/// it is one of SASRec's own (positions, LayerNorm, the stacked attention projection).
pub fn torch_counterpart(name: &str, shape: &[usize]) -> Option<String> {
    if name == "sequence.position_embedding" {
        return Some(format!(
            "nn.Embedding(num_embeddings={}, embedding_dim={}).weight (SASRec positions counted from the newest item: row {} is the newest)",
            shape.first().copied().unwrap_or(0),
            shape.get(1).copied().unwrap_or(0),
            shape.first().copied().unwrap_or(1).saturating_sub(1)
        ));
    }
    if let Some(part) = name.rsplit('.').next().and_then(|l| l.strip_prefix("ln_")) {
        return Some(format!(
            "nn.LayerNorm({}, eps=1e-5).{part}",
            shape.first().copied().unwrap_or(0)
        ));
    }
    if name.ends_with(".qkv.weight") && shape.len() == 2 {
        return Some(format!(
            "nn.MultiheadAttention(embed_dim={}).in_proj_weight (queries, keys, values stacked: [3 dim, dim])",
            shape[1]
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sparse::SparseTable;
    use crate::model::window::assert_packing_changes_nothing;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// Packing windows into shared rows changes nothing a window computes (with side
    /// features, two heads and two blocks).
    #[test]
    fn packed_windows_compute_what_separate_rows_do() {
        let dev = Device::Cpu;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let spec = SequenceSpec {
            dim: 8,
            blocks: 2,
            heads: 2,
            max_len: 12,
            ffn: 8,
            side: 3,
            dropout: 0.0,
            input_scale: 1.0,
        };
        let mut params = Params::new();
        let encoder = SequenceEncoder::new(spec, 0.5, &mut rng, &dev, &mut params).unwrap();
        let table = SparseTable::new(40, 8, 0.5, &mut rng);
        assert_packing_changes_nothing(&encoder, &table, spec.dim, spec.side);
    }
}
