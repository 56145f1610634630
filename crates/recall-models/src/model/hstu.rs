//! An HSTU-style sequence user tower (Zhai et al. 2024, "Actions Speak Louder than Words";
//! the block of facebookresearch/generative-recommenders' `SequentialTransductionUnitJagged`):
//! SASRec's windows, positions and training, with each block one fused layer in place of
//! softmax attention plus a feed-forward net.
//!
//! Per block, on `x` `[slots, dim]`: `[u | v | q | k] = silu(LN(x) W^T + b)`; per head,
//! `A[i, j] = silu(q_i . k_j + bias[i - j]) / max_len` over the keys of the slot's own window
//! up to itself (pointwise aggregated attention: no softmax, a relative position bias learned
//! per distance, normalised by the window span rather than by the weights' sum, so a popular
//! context is not diluted by a long history); `x = x + W_o (LN(A v) * u) + b_o` (the gate `u`
//! decides what of the attended context each dimension takes). A final layer norm; the user
//! vector is the newest slot's, L2-normalised. Time-delta buckets are not used: about half of
//! the ML-1M copy's rows lack timestamps, so the position bias stands alone.
//!
//! On CPU the attention weights and the projection's bias and SiLU each run as one fused op
//! (`ops::seq_op::silu_attention`, `ops::seq_op::bias_silu`), forward and backward; other
//! devices run their generic forms.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::error::Result;
use crate::model::sequence::{
    Linear, Norm, SequenceSpec, WindowInputs, dropout, heads_apart, heads_together, linear_names,
    position_table, steps,
};
use crate::model::sparse::Gathered;
use crate::model::tower::{Params, Pass};
use crate::model::window::{Padded, WindowEncoder};
use crate::ops::product_op::matmul;
use crate::ops::seq_op::silu_attention;

// Checkpoint names of the encoder's parts: `new` registers them, `describe` lists them.
const POSITIONS: &str = "hstu.position_embedding";
const FINAL_NORM: &str = "hstu.final";
const SIDE: &str = "hstu.side";
const INPUT_NORM: &str = "input";
const UVQK: &str = "uvqk";
const RELATIVE_BIAS: &str = "relative_bias";
const ATTENTION_NORM: &str = "attention";
const OUTPUT: &str = "output";

fn block_part(block: usize, part: &str) -> String {
    format!("hstu.{block}.{part}")
}

#[derive(Debug, Clone)]
struct Block {
    input_norm: Norm,
    /// Gate, values, queries and keys in one product (`[4 dim, dim]`), SiLU after.
    uvqk: Linear,
    /// `[max_len]`, or `[buckets]` read through `HstuEncoder::bias_bucket`: the value a key
    /// `d` slots before its query adds to its score.
    relative_bias: Tensor,
    attention_norm: Norm,
    output: Linear,
}

/// The HSTU-style user tower.
#[derive(Debug, Clone)]
pub struct HstuEncoder {
    spec: SequenceSpec,
    /// `[max_len, dim]`: row `max_len - 1` is the newest item's position.
    positions: Tensor,
    blocks: Vec<Block>,
    final_norm: Norm,
    /// Projects the user side features onto every position (`side > 0`).
    side: Option<Linear>,
    /// Activation slopes of the fused bias op (identity) for `dim` outputs.
    identity: Tensor,
    /// Each distance's entry of a bucketed bias (`HstuOptions::bias_buckets`): as the layout
    /// lists it, and as the `[max_len]` u32 index the forward pass gathers with.
    bias_bucket: Option<(Vec<u32>, Tensor)>,
}

/// What an HSTU tower has beyond a sequence tower's shape (`HstuConfig`'s own keys).
#[derive(Debug, Clone, Copy, Default)]
pub struct HstuOptions {
    /// Each block's output projection starts at zero (`HstuConfig::identity_init`).
    pub identity_init: bool,
    /// The relative bias's values per block, `None` for one per distance
    /// (`HstuConfig::bias_buckets`).
    pub bias_buckets: Option<usize>,
}

/// The bucket of each distance `0..span` when a relative bias has `buckets` values (at most
/// `span - 1`), T5's scheme: distances below `buckets / 2` have one each, longer ones share
/// the other buckets, each logarithmically wider than the one before, the last reaching
/// `span - 1`. One bucket holds every distance.
pub(crate) fn distance_buckets(buckets: usize, span: usize) -> Vec<u32> {
    let exact = buckets / 2;
    if exact == 0 {
        return vec![0; span];
    }
    let wide = buckets - exact;
    let growth = (span as f64 / exact as f64).ln();
    (0..span)
        .map(|d| {
            if d < exact {
                return d as u32;
            }
            let step = ((d as f64 / exact as f64).ln() / growth * wide as f64) as usize;
            (exact + step.min(wide - 1)) as u32
        })
        .collect()
}

impl HstuEncoder {
    /// A freshly initialised encoder (`spec.ffn` is not used: the block has no feed-forward
    /// net). A bucket count not under `spec.max_len` is an error naming `model.bias_buckets`.
    pub fn new(
        spec: SequenceSpec,
        init_std: f32,
        options: HstuOptions,
        rng: &mut impl Rng,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        let d = spec.dim;
        let (bias_len, bias_bucket) = match options.bias_buckets {
            Some(n) if n >= spec.max_len => {
                return Err(recall_core::Error::config(
                    "model.bias_buckets",
                    format!(
                        "{n} is not fewer than the distances the bias spans (max_len = {}): lower it, or leave the key out for one value per distance",
                        spec.max_len
                    ),
                )
                .into());
            }
            Some(n) => {
                let bucket = distance_buckets(n, spec.max_len);
                let index = Tensor::from_vec(bucket.clone(), spec.max_len, device)?;
                (n, Some((bucket, index)))
            }
            None => (spec.max_len, None),
        };
        let positions = position_table(POSITIONS, spec, init_std, rng, device, params)?;
        let mut blocks = Vec::with_capacity(spec.blocks);
        for i in 0..spec.blocks {
            let name = |part: &str| block_part(i, part);
            let input_norm = Norm::new(&name(INPUT_NORM), d, device, params)?;
            let uvqk = Linear::new(&name(UVQK), d, 4 * d, rng, device, params)?;
            // Zero: every distance starts alike, as without a bias.
            let bias = Var::from_tensor(&Tensor::zeros(bias_len, DType::F32, device)?)?;
            params.push((name(RELATIVE_BIAS), bias.clone()));
            let attention_norm = Norm::new(&name(ATTENTION_NORM), d, device, params)?;
            let output = Linear::new(&name(OUTPUT), d, d, rng, device, params)?;
            if options.identity_init {
                // Drawn and then zeroed, so every other tensor starts as it would without
                // the option (the same random draws in the same order). Found by name, so
                // a change to what `Linear::new` registers cannot zero another tensor.
                let (weight, bias) = linear_names(&name(OUTPUT));
                for (_, var) in params.iter().filter(|(n, _)| *n == weight || *n == bias) {
                    var.set(&var.zeros_like()?)?;
                }
            }
            blocks.push(Block {
                input_norm,
                uvqk,
                relative_bias: bias.as_tensor().clone(),
                attention_norm,
                output,
            });
        }
        let final_norm = Norm::new(FINAL_NORM, d, device, params)?;
        let side = if spec.side > 0 {
            Some(Linear::new(SIDE, spec.side, d, rng, device, params)?)
        } else {
            None
        };
        Ok(HstuEncoder {
            spec,
            positions,
            blocks,
            final_norm,
            side,
            identity: Tensor::ones(d, DType::F32, device)?,
            bias_bucket,
        })
    }

    pub fn spec(&self) -> &SequenceSpec {
        &self.spec
    }
}

impl WindowEncoder for HstuEncoder {
    fn max_len(&self) -> usize {
        self.spec.max_len
    }

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
        let scale = 1.0 / self.spec.max_len as f64;
        for block in &self.blocks {
            let normed = block.input_norm.forward(&x)?;
            // Each part is its own product over its rows of the weight: the backward pass of a
            // narrow pads its gradient with zeros to the narrowed tensor's size, so narrowing
            // the `[4 dim, dim]` weight costs little where narrowing the `[slots, 4 dim]`
            // output cost four full-size pads and sums a block (MEASUREMENTS.md).
            let part = |k: usize| block.uvqk.forward_silu_part(&normed, k * d, d);
            let split = |k: usize| heads_apart(&part(k)?, b, l, h);
            let (v, q, k) = (split(1)?, split(2)?, split(3)?);
            let scores = matmul(&q, &k.t()?)?;
            let bias = match &self.bias_bucket {
                Some((_, index)) => block.relative_bias.index_select(index, 0)?,
                None => block.relative_bias.clone(),
            };
            let weights = silu_attention(&scores, &bias, h, &windows.first, scale)?;
            let attended = heads_together(&matmul(&weights, &v)?, b, l, h)?;
            let gated = (block.attention_norm.forward(&attended)? * part(0)?)?;
            let o = block
                .output
                .forward(&dropout(gated, pass)?, &self.identity)?;
            x = (x + o)?;
        }
        self.final_norm.forward(&x)
    }

    fn describe(&self) -> serde_json::Value {
        let blocks = (0..self.spec.blocks)
            .map(|i| {
                let name = |part: &str| block_part(i, part);
                let mut weighting = serde_json::json!({ "weighting": "silu",
                    "relative_bias": name(RELATIVE_BIAS), "divide_by": self.spec.max_len });
                if let Some((bucket, _)) = &self.bias_bucket {
                    weighting["bias_bucket"] = serde_json::json!(bucket);
                }
                vec![
                    steps::layer_norm("x", "h", &name(INPUT_NORM)),
                    steps::linear("h", "uvqk", &name(UVQK), "silu"),
                    steps::split("uvqk", &["u", "v", "q", "k"]),
                    steps::attention(["q", "k", "v"], "a", weighting),
                    steps::layer_norm("a", "a", &name(ATTENTION_NORM)),
                    steps::join("mul", "a", "u", "g"),
                    steps::linear("g", "o", &name(OUTPUT), "identity"),
                    steps::join("add", "x", "o", "x"),
                ]
            })
            .collect();
        steps::sequence(
            "hstu",
            &self.spec,
            POSITIONS,
            self.side.as_ref().map(|_| SIDE),
            FINAL_NORM,
            blocks,
            "per block: [u | v | q | k] = silu(LN_input(x) W_uvqk^T + b); per head A[t, s] = \
             silu(q_t . k_s + relative_bias[t - s]) / max_len for s <= t, else 0 (with \
             bias_bucket: relative_bias[bias_bucket[t - s]]); a = A v, heads \
             concatenated; x = x + (LN_attention(a) * u) W_o^T + b_o",
        )
    }

    fn torch_counterpart(&self, name: &str, shape: &[usize]) -> Option<String> {
        let first = shape.first().copied().unwrap_or(0);
        if name == POSITIONS {
            return Some(format!(
                "nn.Embedding(num_embeddings={first}, embedding_dim={}).weight (positions counted from the newest item: row {} is the newest)",
                shape.get(1).copied().unwrap_or(0),
                first.saturating_sub(1)
            ));
        }
        if name.ends_with(RELATIVE_BIAS) {
            return Some(format!(
                "nn.Parameter([{first}]) (entry d, or with the layout's bias_bucket entry bias_bucket[d], is added to the score of a key d positions before its query; generative-recommenders' position bias, causal half)"
            ));
        }
        if let Some(part) = name.rsplit('.').next().and_then(|l| l.strip_prefix("ln_")) {
            return Some(format!("nn.LayerNorm({first}, eps=1e-5).{part}"));
        }
        if name.ends_with(".uvqk.weight") && shape.len() == 2 {
            return Some(format!(
                "nn.Linear({}, {first}).weight (gate, values, queries, keys stacked: [4 dim, dim]; SiLU after)",
                shape[1]
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sparse::SparseTable;
    use crate::model::window::assert_packing_changes_nothing;
    use crate::testing::values;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn encoder(spec: SequenceSpec, seed: u64) -> (HstuEncoder, SparseTable) {
        let dev = Device::Cpu;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = Params::new();
        let encoder = HstuEncoder::new(
            spec,
            0.5,
            HstuOptions::default(),
            &mut rng,
            &dev,
            &mut params,
        )
        .unwrap();
        // A non-zero position bias, so that the test exercises it.
        for (name, var) in &params {
            if name.ends_with(RELATIVE_BIAS) {
                let n = var.dim(0).unwrap();
                let v: Vec<f32> = (0..n).map(|k| ((k * 7 % 5) as f32 - 2.0) * 0.3).collect();
                var.set(&Tensor::from_vec(v, n, &dev).unwrap()).unwrap();
            }
        }
        (encoder, SparseTable::new(40, spec.dim, 0.5, &mut rng))
    }

    /// Both sequence encoders state their blocks in the step vocabulary alone (what the Python
    /// reference and the ONNX writer interpret), every tensor a step names is one of the
    /// encoder's, and every value a step reads was made before it (`x` is given).
    #[test]
    fn the_layout_states_every_block_in_known_steps() {
        use crate::model::sequence::{SequenceEncoder, steps};
        let spec = SequenceSpec {
            dim: 8,
            blocks: 2,
            heads: 2,
            max_len: 6,
            ffn: 8,
            side: 3,
            dropout: 0.0,
            input_scale: 1.0,
        };
        let dev = Device::Cpu;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (mut hstu_params, mut sasrec_params) = (Params::new(), Params::new());
        let hstu = HstuEncoder::new(
            spec,
            0.5,
            HstuOptions::default(),
            &mut rng,
            &dev,
            &mut hstu_params,
        )
        .unwrap();
        let sasrec = SequenceEncoder::new(spec, 0.5, &mut rng, &dev, &mut sasrec_params).unwrap();
        for (layout, params) in [
            (hstu.describe(), hstu_params),
            (sasrec.describe(), sasrec_params),
        ] {
            let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
            let blocks = layout["blocks"].as_array().unwrap();
            assert_eq!(blocks.len(), spec.blocks);
            for block in blocks {
                let mut made = vec!["x".to_owned()];
                for step in block["steps"].as_array().unwrap() {
                    let op = step["op"].as_str().unwrap();
                    assert!(steps::OPS.contains(&op), "{step}");
                    for key in ["weight", "bias", "relative_bias"] {
                        if let Some(t) = step[key].as_str() {
                            assert!(names.contains(&t), "{t} is not a tensor: {step}");
                        }
                    }
                    let reads: Vec<&str> = ["in", "q", "k", "v"]
                        .iter()
                        .flat_map(|k| match &step[*k] {
                            serde_json::Value::String(s) => vec![s.as_str()],
                            serde_json::Value::Array(a) => {
                                a.iter().filter_map(|v| v.as_str()).collect()
                            }
                            _ => vec![],
                        })
                        .collect();
                    for r in reads {
                        assert!(
                            made.iter().any(|m| m == r),
                            "{r} read before it is made: {step}"
                        );
                    }
                    match &step["out"] {
                        serde_json::Value::String(s) => made.push(s.clone()),
                        serde_json::Value::Array(a) => {
                            made.extend(a.iter().filter_map(|v| v.as_str()).map(str::to_owned))
                        }
                        other => panic!("a step's out is a name or names: {other}"),
                    }
                }
            }
        }
    }

    /// Packing windows into shared rows changes nothing a window computes (the normalisation
    /// is by `max_len`, not by what shares the row), with side features, two heads and two
    /// blocks.
    #[test]
    fn packed_windows_compute_what_separate_rows_do() {
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
        let (encoder, table) = encoder(spec, 11);
        assert_packing_changes_nothing(&encoder, &table, spec.dim, spec.side);
    }

    /// Width 8, two heads, windows of up to 10 items, no side features, no dropout.
    fn small_spec(blocks: usize) -> SequenceSpec {
        SequenceSpec {
            dim: 8,
            blocks,
            heads: 2,
            max_len: 10,
            ffn: 8,
            side: 0,
            dropout: 0.0,
            input_scale: 1.0,
        }
    }

    /// The encoder's output rows for one window, every position's flattened in order.
    fn encode_window(encoder: &HstuEncoder, items: &Gathered, window: &[u32]) -> Vec<f32> {
        let layout = Padded::packed([window], encoder.spec.max_len);
        values(
            &encoder
                .forward(items, &layout, None, &mut Pass::Infer)
                .unwrap(),
        )
    }

    /// Causality: changing the items after a position changes nothing at it or before it,
    /// and changing an earlier item does change it (the blocks do read the history).
    #[test]
    fn a_position_never_sees_later_items() {
        let spec = small_spec(2);
        let (encoder, table) = encoder(spec, 5);
        let items = table.gather(0..40u32, &Device::Cpu).unwrap();
        let run = |window: &[u32]| encode_window(&encoder, &items, window);
        let base = [3u32, 9, 14, 22, 7, 30, 18];
        let mut later = base;
        later[5] = 33;
        later[6] = 2;
        let mut earlier = base;
        earlier[1] = 25;
        let (a, b, c) = (run(&base), run(&later), run(&earlier));
        // Positions 0..=4 are identical when only 5 and 6 change.
        assert_eq!(&a[..5 * 8], &b[..5 * 8]);
        assert_ne!(&a[5 * 8..], &b[5 * 8..]);
        // Position 4 moves when position 1 changes.
        assert_ne!(&a[4 * 8..5 * 8], &c[4 * 8..5 * 8]);
        assert_eq!(&a[..8], &c[..8]);
    }

    /// `input_scale` multiplies the history's item rows and nothing else: the encoder with
    /// scale 3 over a table reads what the same draws at scale 1 read over the table times 3
    /// (and something else over the table itself).
    #[test]
    fn input_scale_multiplies_the_item_rows() {
        let dev = Device::Cpu;
        let plain_spec = small_spec(2);
        let scaled_spec = SequenceSpec {
            input_scale: 3.0,
            ..plain_spec
        };
        let (plain, table) = encoder(plain_spec, 9);
        let (scaled, _) = encoder(scaled_spec, 9);
        let weights = values(&table.to_tensor(&dev).unwrap());
        let tripled = SparseTable::from_weights(40, 8, weights.iter().map(|v| 3.0 * v).collect());
        let (items, tripled) = (
            table.gather(0..40u32, &dev).unwrap(),
            tripled.gather(0..40u32, &dev).unwrap(),
        );
        let window = [3u32, 9, 14, 22, 7];
        let (a, b) = (
            encode_window(&scaled, &items, &window),
            encode_window(&plain, &tripled, &window),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} against {y}");
        }
        assert_ne!(a, encode_window(&plain, &items, &window));
    }

    /// An encoder with `options`, its parameters and a 40-item table, all drawn from `seed`.
    fn drawn(
        spec: SequenceSpec,
        seed: u64,
        options: HstuOptions,
    ) -> (HstuEncoder, Params, SparseTable) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = Params::new();
        let encoder =
            HstuEncoder::new(spec, 0.5, options, &mut rng, &Device::Cpu, &mut params).unwrap();
        (
            encoder,
            params,
            SparseTable::new(40, spec.dim, 0.5, &mut rng),
        )
    }

    /// `identity_init` zeroes the blocks' output projections and nothing else (every other
    /// tensor is drawn as without it), so a fresh stack is the identity: a position reads its
    /// own item alone, and changing an earlier item changes nothing at it.
    #[test]
    fn identity_init_starts_every_block_as_the_identity() {
        let dev = Device::Cpu;
        let spec = small_spec(3);
        let fresh = |identity_init: bool| {
            let options = HstuOptions {
                identity_init,
                ..HstuOptions::default()
            };
            drawn(spec, 3, options)
        };
        let (plain, plain_params, _) = fresh(false);
        let (identity, identity_params, table) = fresh(true);
        let output_prefix = |name: &str| name.contains(&format!(".{OUTPUT}."));
        let mut zeroed = 0;
        for ((name, a), (_, b)) in plain_params.iter().zip(&identity_params) {
            let (a, b) = (values(a.as_tensor()), values(b.as_tensor()));
            if output_prefix(name) {
                assert!(b.iter().all(|&v| v == 0.0), "{name} is not zero");
                assert!(
                    a.iter().any(|&v| v != 0.0),
                    "{name} drawn as zero without the option"
                );
                zeroed += 1;
            } else {
                assert_eq!(a, b, "{name} differs");
            }
        }
        assert_eq!(zeroed, 2 * spec.blocks);

        let items = table.gather(0..40u32, &dev).unwrap();
        let run = |encoder: &HstuEncoder, window: &[u32]| encode_window(encoder, &items, window);
        let base = [3u32, 9, 14, 22, 7];
        let mut earlier = base;
        earlier[1] = 25;
        assert_eq!(
            run(&identity, &base)[4 * 8..],
            run(&identity, &earlier)[4 * 8..]
        );
        assert_ne!(run(&plain, &base)[4 * 8..], run(&plain, &earlier)[4 * 8..]);
    }

    /// T5's buckets: one per distance below half the count, then wider ones in order, the
    /// last at the longest distance; one bucket holds every distance.
    #[test]
    fn distances_fall_into_ordered_buckets() {
        let b = distance_buckets(32, 200);
        assert_eq!(b.len(), 200);
        assert_eq!(&b[..16], &(0..16).collect::<Vec<u32>>()[..]);
        assert!(b.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        assert_eq!(b[199], 31);
        // Wider with distance: the last bucket spans more distances than the first wide one.
        let width = |k: u32| b.iter().filter(|&&x| x == k).count();
        assert!(width(31) > width(16), "{} against {}", width(31), width(16));
        assert_eq!(distance_buckets(1, 12), vec![0; 12]);
        let two = distance_buckets(2, 12);
        assert_eq!((two[0], two[1], two[11]), (0, 1, 1));
        let small = distance_buckets(6, 10);
        assert_eq!(&small[..3], &[0, 1, 2]);
        assert_eq!(small[9], 5);
    }

    /// A bucketed bias is the per-distance bias its buckets spell out: the encoder with 4
    /// buckets computes, forward, what an encoder of the same draws computes with each
    /// distance's value copied from its bucket, and the gradient of a bucket is the sum of its
    /// distances' gradients.
    #[test]
    fn a_bucketed_bias_reads_and_learns_as_its_distances() {
        let dev = Device::Cpu;
        let spec = small_spec(2);
        let build = |bias_buckets: Option<usize>| {
            let options = HstuOptions {
                bias_buckets,
                ..HstuOptions::default()
            };
            drawn(spec, 21, options)
        };
        let (bucketed, bucketed_params, table) = build(Some(4));
        let (plain, plain_params, _) = build(None);
        let bucket = distance_buckets(4, spec.max_len);
        for ((name, a), (_, b)) in bucketed_params.iter().zip(&plain_params) {
            if name.ends_with(RELATIVE_BIAS) {
                assert_eq!(a.dims(), &[4]);
                let own: Vec<f32> = (0..4).map(|k| 0.4 * k as f32 - 0.7).collect();
                a.set(&Tensor::from_vec(own.clone(), 4, &dev).unwrap())
                    .unwrap();
                let spelled: Vec<f32> = bucket.iter().map(|&k| own[k as usize]).collect();
                b.set(&Tensor::from_vec(spelled, spec.max_len, &dev).unwrap())
                    .unwrap();
            } else {
                assert_eq!(
                    values(a.as_tensor()),
                    values(b.as_tensor()),
                    "{name} differs"
                );
            }
        }
        let items = table.gather(0..40u32, &dev).unwrap();
        let window = [3u32, 9, 14, 22, 7, 30, 18, 5, 11];
        let layout = Padded::packed([&window[..]], spec.max_len);
        let out = |encoder: &HstuEncoder| {
            encoder
                .forward(&items, &layout, None, &mut Pass::Infer)
                .unwrap()
        };
        let (a, b) = (out(&bucketed), out(&plain));
        for (x, y) in values(&a).iter().zip(&values(&b)) {
            assert!((x - y).abs() < 1e-6, "{x} against {y}");
        }
        let loss = |t: &Tensor| t.sqr().unwrap().sum_all().unwrap();
        let (ga, gb) = (loss(&a).backward().unwrap(), loss(&b).backward().unwrap());
        let mut checked = 0;
        for ((name, a), (_, b)) in bucketed_params.iter().zip(&plain_params) {
            if !name.ends_with(RELATIVE_BIAS) {
                continue;
            }
            let (ga, gb) = (values(ga.get(a).unwrap()), values(gb.get(b).unwrap()));
            let mut summed = vec![0f32; 4];
            for (d, &k) in bucket.iter().enumerate() {
                summed[k as usize] += gb[d];
            }
            assert!(summed.iter().any(|g| g.abs() > 1e-6), "{name}: no gradient");
            for (x, y) in ga.iter().zip(&summed) {
                assert!((x - y).abs() < 1e-5, "{name}: {x} against {y}");
            }
            checked += 1;
        }
        assert_eq!(checked, spec.blocks);
    }

    /// A bucket count that is not fewer than the distances is refused naming the key.
    #[test]
    fn too_many_buckets_are_refused_naming_the_key() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let options = HstuOptions {
            bias_buckets: Some(10),
            ..HstuOptions::default()
        };
        let err = HstuEncoder::new(
            small_spec(1),
            0.5,
            options,
            &mut rng,
            &Device::Cpu,
            &mut Params::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("model.bias_buckets") && err.contains("max_len = 10"),
            "{err}"
        );
    }
}
