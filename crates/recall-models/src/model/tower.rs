//! MLP towers: dense layers with optional batch normalisation, an activation (ReLU, PReLU or
//! none) and dropout, over candle `Var`s initialised from the seed and named for checkpoints.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

use crate::config::{Activation, LastLayer};
use crate::error::Result;
use crate::ops::fused::bias_activation;
use crate::ops::mlp_op::{LayerShape, Statistics, fused_mlp};
use crate::ops::norm_op::{BatchStats, batch_norm_activation};

/// A dense layer: `act(x W^T + b)` with `act(v) = v` for `v > 0`, else `alpha * v` per output
/// column, so one fused op serves PReLU (alpha learned), ReLU (alpha 0) and the identity
/// (alpha 1, a plain linear last layer); with batch normalisation `act(BN(x W^T) + b)`.
#[derive(Debug, Clone)]
struct Layer {
    weight: Tensor,
    bias: Tensor,
    alpha: Tensor,
    norm: Option<BatchNorm>,
}

/// Batch normalisation (as `torch.nn.BatchNorm1d`): batch statistics while training, which
/// also move the running ones (momentum 0.1, unbiased variance), the running statistics at
/// inference. The running statistics are `Var`s without gradients, so they live with the
/// parameters (checkpoints, snapshots) and the optimiser leaves them alone.
#[derive(Debug, Clone)]
struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
}

const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm {
    /// The running statistics, as inference normalises with them.
    fn running(&self) -> Result<BatchStats> {
        Ok(BatchStats {
            mean: self.running_mean.as_tensor().to_vec1()?,
            var: self.running_var.as_tensor().to_vec1()?,
            n: 0.0,
        })
    }

    /// Moves the running statistics towards a training batch's (unbiased variance, as torch).
    fn update_running(&self, stats: &BatchStats) -> Result<()> {
        let m = BN_MOMENTUM as f32;
        let n = stats.n;
        let unbiased = (n / (n.max(2.0) - 1.0)) as f32;
        let dev = self.running_mean.device();
        let mean = self.running_mean.as_tensor().to_vec1::<f32>()?;
        let var = self.running_var.as_tensor().to_vec1::<f32>()?;
        let mean: Vec<f32> = mean
            .iter()
            .zip(&stats.mean)
            .map(|(r, b)| (1.0 - m) * r + m * b)
            .collect();
        let var: Vec<f32> = var
            .iter()
            .zip(&stats.var)
            .map(|(r, b)| (1.0 - m) * r + m * b * unbiased)
            .collect();
        let c = mean.len();
        self.running_mean.set(&Tensor::from_vec(mean, c, dev)?)?;
        self.running_var.set(&Tensor::from_vec(var, c, dev)?)?;
        Ok(())
    }
}

/// What a tower is built from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TowerSpec<'a> {
    pub name: &'a str,
    pub input: usize,
    pub widths: &'a [usize],
    pub activation: Activation,
    pub batch_norm: bool,
    pub last_layer: LastLayer,
}

/// A layer's activation, as the tower applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerActivation {
    Identity,
    Relu,
    Prelu,
}

/// What layer `i` of a tower is: its activation and whether batch norm precedes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerForm {
    pub activation: LayerActivation,
    pub batch_norm: bool,
}

impl TowerSpec<'_> {
    /// Layer `i`'s form: the last layer is plain (no batch norm, identity) unless
    /// `last_layer = "like-hidden"`. [`Tower::new`] and the exported layout both read it.
    pub(crate) fn layer_form(&self, i: usize) -> LayerForm {
        let plain = i + 1 == self.widths.len() && self.last_layer == LastLayer::Linear;
        LayerForm {
            activation: match self.activation {
                _ if plain => LayerActivation::Identity,
                Activation::Relu => LayerActivation::Relu,
                Activation::Prelu => LayerActivation::Prelu,
            },
            batch_norm: self.batch_norm && !plain,
        }
    }
}

/// The checkpoint name of `part` (`weight`, `bias`, `prelu`, `bn_weight`, ...) of layer
/// `layer` of tower `tower`: [`Tower::new`] registers them, the exported layout lists them.
pub(crate) fn layer_tensor(tower: &str, layer: usize, part: &str) -> String {
    format!("{tower}.{layer}.{part}")
}

/// An MLP with named parameters.
#[derive(Debug, Clone)]
pub struct Tower {
    layers: Vec<Layer>,
}

/// A source of dropout keep/scale masks of a given shape.
pub type MaskSource<'a> = &'a mut dyn FnMut(&[usize]) -> Result<Tensor>;

/// How a forward pass runs, as candle's `ModuleT` train flag: inference uses batch
/// normalisation's running statistics and no dropout; training uses batch statistics (moving
/// the running ones) and dropout masks at `dropout` (none at 0).
pub enum Pass<'a> {
    Infer,
    /// `seed` is the step's: what a random choice other than a dropout mask (the item id
    /// dropout) draws from, so a step is repeatable.
    Train {
        dropout: f32,
        mask: MaskSource<'a>,
        seed: u64,
    },
}

impl Pass<'_> {
    pub fn is_training(&self) -> bool {
        matches!(self, Pass::Train { .. })
    }

    pub(crate) fn dropout_active(&self) -> bool {
        matches!(self, Pass::Train { dropout, .. } if *dropout > 0.0)
    }
}

impl std::fmt::Debug for Pass<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pass::Infer => f.write_str("Infer"),
            Pass::Train { dropout, .. } => {
                f.debug_struct("Train").field("dropout", dropout).finish()
            }
        }
    }
}

/// Named dense parameters, for the optimiser and checkpoints.
pub type Params = Vec<(String, Var)>;

impl Tower {
    pub(crate) fn new(
        spec: &TowerSpec<'_>,
        rng: &mut impl Rng,
        device: &Device,
        params: &mut Params,
    ) -> Result<Self> {
        let TowerSpec {
            name,
            input,
            widths,
            ..
        } = *spec;
        let mut layers = Vec::new();
        let mut fan_in = input;
        for (i, &w) in widths.iter().enumerate() {
            // Kaiming-uniform bounds as in torch's Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            let bound = 1.0 / (fan_in as f32).sqrt();
            let weight: Vec<f32> = (0..w * fan_in)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let bias: Vec<f32> = (0..w).map(|_| rng.random_range(-bound..bound)).collect();
            let wv = Var::from_tensor(&Tensor::from_vec(weight, (w, fan_in), device)?)?;
            let bv = Var::from_tensor(&Tensor::from_vec(bias, w, device)?)?;
            params.push((layer_tensor(name, i, "weight"), wv.clone()));
            params.push((layer_tensor(name, i, "bias"), bv.clone()));
            let form = spec.layer_form(i);
            let alpha = match form.activation {
                LayerActivation::Identity => Tensor::ones(w, DType::F32, device)?,
                LayerActivation::Relu => Tensor::zeros(w, DType::F32, device)?,
                LayerActivation::Prelu => {
                    let a = Var::from_tensor(&Tensor::full(0.25f32, w, device)?)?;
                    params.push((layer_tensor(name, i, "prelu"), a.clone()));
                    a.as_tensor().clone()
                }
            };
            let norm = if form.batch_norm {
                let var = |what: &str, value: f32, params: &mut Params| -> Result<Var> {
                    let v = Var::from_tensor(&Tensor::full(value, w, device)?)?;
                    params.push((layer_tensor(name, i, &format!("bn_{what}")), v.clone()));
                    Ok(v)
                };
                Some(BatchNorm {
                    gamma: var("weight", 1.0, params)?.as_tensor().clone(),
                    beta: var("bias", 0.0, params)?.as_tensor().clone(),
                    running_mean: var("running_mean", 0.0, params)?,
                    running_var: var("running_var", 1.0, params)?,
                })
            } else {
                None
            };
            layers.push(Layer {
                weight: wv.as_tensor().clone(),
                bias: bv.as_tensor().clone(),
                alpha,
                norm,
            });
            fan_in = w;
        }
        Ok(Tower { layers })
    }

    pub(crate) fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(|l| l.norm.is_some())
    }

    /// Applies the tower in `pass` mode. `row_weights`: how many batch rows each input row
    /// stands for, when the tower runs once per distinct input (batch normalisation then sees
    /// the statistics of the full batch, repeats included); `None` when every row is one.
    /// On CPU without dropout the whole tower is one fused op (`mlp_op`).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        pass: &mut Pass<'_>,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        if crate::ops::fused_kernels(x.device()) && !pass.dropout_active() {
            return self.forward_fused(x, pass.is_training(), row_weights);
        }
        self.forward_layered(x, pass, row_weights)
    }

    /// [`forward`](Self::forward) as one fused op: the parameters packed in one vector, the
    /// running statistics moved by the batch's in training.
    fn forward_fused(
        &self,
        x: &Tensor,
        training: bool,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mut parts = Vec::new();
        let mut shapes = Vec::with_capacity(self.layers.len());
        let mut offset = 0;
        for l in &self.layers {
            let (output, input) = l.weight.dims2()?;
            parts.extend([l.weight.flatten_all()?, l.bias.clone(), l.alpha.clone()]);
            if let Some(norm) = &l.norm {
                parts.extend([norm.gamma.clone(), norm.beta.clone()]);
            }
            let shape = LayerShape {
                input,
                output,
                norm: l.norm.is_some(),
                offset,
            };
            offset += shape.packed_len();
            shapes.push(shape);
        }
        let params = Tensor::cat(&parts, 0)?;
        let statistics = if training {
            Statistics::Batch {
                weights: row_weights.map(<[f32]>::to_vec),
            }
        } else {
            Statistics::Running(
                self.layers
                    .iter()
                    .map(|l| l.norm.as_ref().map(BatchNorm::running).transpose())
                    .collect::<Result<_>>()?,
            )
        };
        let (y, used) = fused_mlp(x, &params, shapes, statistics)?;
        if training {
            for (l, stats) in self.layers.iter().zip(&used) {
                if let (Some(norm), Some(stats)) = (&l.norm, stats) {
                    norm.update_running(stats)?;
                }
            }
        }
        Ok(y)
    }

    /// [`forward`](Self::forward) layer by layer from candle ops and the per-layer fused ops
    /// (dropout, other devices, and the fused tower's reference in tests).
    pub(crate) fn forward_layered(
        &self,
        x: &Tensor,
        pass: &mut Pass<'_>,
        row_weights: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        let training = pass.is_training();
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            let z = x.matmul(&l.weight.t()?)?;
            x = match &l.norm {
                Some(norm) => {
                    let params = Tensor::stack(&[&norm.gamma, &norm.beta, &l.bias, &l.alpha], 0)?;
                    let running = (!training)
                        .then(|| (norm.running_mean.as_tensor(), norm.running_var.as_tensor()));
                    let (y, stats) = batch_norm_activation(&z, &params, running, row_weights)?;
                    if training {
                        norm.update_running(&stats)?;
                    }
                    y
                }
                None => bias_activation(&z, &l.bias, &l.alpha)?,
            };
            if i + 1 < n
                && let Pass::Train { dropout, mask, .. } = pass
                && *dropout > 0.0
            {
                x = x.mul(&mask(x.dims())?)?;
            }
        }
        Ok(x)
    }
}

/// The PyTorch counterpart of a dense layer's tensor (`<tower>.<i>.weight`, `bias`, `bn_*`,
/// `prelu`), when its name says it is one.
pub fn torch_counterpart(name: &str, shape: &[usize]) -> Option<String> {
    if name.ends_with(".weight") && shape.len() == 2 {
        Some(format!(
            "nn.Linear(in_features={}, out_features={}).weight (same [out, in] layout)",
            shape[1], shape[0]
        ))
    } else if name.ends_with(".bias") {
        Some("nn.Linear(...).bias".into())
    } else if let Some(part) = name.rsplit('.').next().and_then(|l| l.strip_prefix("bn_")) {
        Some(format!(
            "nn.BatchNorm1d(num_features={}).{part}",
            shape.first().copied().unwrap_or(0)
        ))
    } else if name.ends_with(".prelu") {
        Some("nn.PReLU(num_parameters=...).weight".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;

    use crate::testing::values;

    fn tower(batch_norm: bool, last_layer: LastLayer) -> (Tower, Params) {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let mut params = Vec::new();
        let spec = TowerSpec {
            name: "t",
            input: 3,
            widths: &[4, 2],
            activation: Activation::Prelu,
            batch_norm,
            last_layer,
        };
        let t = Tower::new(&spec, &mut rng, &Device::Cpu, &mut params).unwrap();
        (t, params)
    }

    /// The fused tower gives the layer-by-layer path's output, every gradient (input and
    /// parameters) and running statistics: with and without batch norm, PReLU and ReLU, a
    /// plain or activated last layer, rows weighted or not, and at inference.
    #[test]
    fn the_fused_tower_matches_the_layered_one() {
        let dev = Device::Cpu;
        let x_values: Vec<f32> = (0..6 * 3)
            .map(|k| ((k * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for (batch_norm, last_layer, activation) in [
            (true, LastLayer::LikeHidden, Activation::Prelu),
            (true, LastLayer::Linear, Activation::Relu),
            (false, LastLayer::Linear, Activation::Prelu),
            (false, LastLayer::LikeHidden, Activation::Relu),
        ] {
            for weights in [None, Some(&[1.0f32, 2.0, 1.0, 3.0, 1.0, 1.0][..])] {
                let make = || {
                    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(9);
                    let mut params = Vec::new();
                    let spec = TowerSpec {
                        name: "t",
                        input: 3,
                        widths: &[5, 4, 2],
                        activation,
                        batch_norm,
                        last_layer,
                    };
                    let t = Tower::new(&spec, &mut rng, &dev, &mut params).unwrap();
                    (t, params)
                };
                let run = |fused: bool| {
                    let (tower, params) = make();
                    let x = Var::from_tensor(
                        &Tensor::from_vec(x_values.clone(), (6, 3), &dev).unwrap(),
                    )
                    .unwrap();
                    let mut mask = |_: &[usize]| -> Result<Tensor> { unreachable!() };
                    let mut pass = Pass::Train {
                        dropout: 0.0,
                        mask: &mut mask,
                        seed: 0,
                    };
                    let y = if fused {
                        tower.forward(x.as_tensor(), &mut pass, weights).unwrap()
                    } else {
                        tower
                            .forward_layered(x.as_tensor(), &mut pass, weights)
                            .unwrap()
                    };
                    let w = Tensor::from_vec(
                        (0..y.elem_count())
                            .map(|k| k as f32 * 0.3 - 1.0)
                            .collect::<Vec<_>>(),
                        y.shape(),
                        &dev,
                    )
                    .unwrap();
                    let grads = (y.clone() * w)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    let mut all = vec![("y".to_owned(), values(&y))];
                    all.push(("dx".into(), values(grads.get(x.as_tensor()).unwrap())));
                    for (name, var) in &params {
                        all.push((name.clone(), values(var.as_tensor())));
                        if let Some(g) = grads.get(var.as_tensor()) {
                            all.push((format!("d {name}"), values(g)));
                        }
                    }
                    let inferred = if fused {
                        tower.forward(x.as_tensor(), &mut Pass::Infer, None)
                    } else {
                        tower.forward_layered(x.as_tensor(), &mut Pass::Infer, None)
                    };
                    all.push(("inference".into(), values(&inferred.unwrap())));
                    all
                };
                let (a, b) = (run(true), run(false));
                assert_eq!(a.len(), b.len());
                for ((name, p), (_, q)) in a.iter().zip(&b) {
                    let ok =
                        p.len() == q.len() && p.iter().zip(q).all(|(u, v)| (u - v).abs() < 1e-4);
                    assert!(
                        ok,
                        "{name} ({batch_norm}, {last_layer:?}, {activation:?}, {weights:?}): {p:?} vs {q:?}"
                    );
                }
            }
        }
    }

    /// The last layer is plain by default and like the hidden ones with `like-hidden`: its
    /// parameters are named as torch's would be.
    #[test]
    fn the_last_layer_gets_norm_and_activation_only_when_asked() {
        let names = |p: &Params| p.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let (_, linear) = tower(true, LastLayer::Linear);
        let (_, hidden) = tower(true, LastLayer::LikeHidden);
        assert!(names(&linear).contains(&"t.0.bn_weight".to_owned()));
        assert!(
            !names(&linear)
                .iter()
                .any(|n| n.starts_with("t.1.bn") || n == "t.1.prelu")
        );
        for n in ["t.1.bn_weight", "t.1.bn_running_var", "t.1.prelu"] {
            assert!(names(&hidden).contains(&n.to_owned()), "{n}");
        }
    }

    /// Distinct rows weighted by their copies normalise exactly as the batch with its repeats
    /// does, and move the running statistics the same way; inference leaves them alone.
    #[test]
    fn weighted_rows_equal_the_batch_with_repeats() {
        let dev = Device::Cpu;
        let distinct = Tensor::new(
            &[[1f32, 4.0, 0.5], [2.0, -1.0, 0.0], [5.0, 0.5, -2.0]],
            &dev,
        )
        .unwrap();
        let copies = Tensor::new(&[0u32, 1, 1, 2, 2, 2], &dev).unwrap();
        let repeated = distinct.index_select(&copies, 0).unwrap();
        let (a, pa) = tower(true, LastLayer::LikeHidden);
        let (b, pb) = tower(true, LastLayer::LikeHidden);
        let mut mask = |_: &[usize]| -> Result<Tensor> { unreachable!("no dropout") };
        let mut train = Pass::Train {
            dropout: 0.0,
            mask: &mut mask,
            seed: 0,
        };
        let full = a.forward(&repeated, &mut train, None).unwrap();
        let weighted = b
            .forward(&distinct, &mut train, Some(&[1.0, 2.0, 3.0]))
            .unwrap()
            .index_select(&copies, 0)
            .unwrap();
        let close = |x: Vec<f32>, y: Vec<f32>| x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(values(&full), values(&weighted)));
        for ((na, va), (_, vb)) in pa.iter().zip(&pb) {
            assert!(
                close(values(va.as_tensor()), values(vb.as_tensor())),
                "{na}"
            );
        }
        let before: Vec<Vec<f32>> = pa.iter().map(|(_, p)| values(p.as_tensor())).collect();
        a.forward(&distinct, &mut Pass::Infer, None).unwrap();
        let after: Vec<Vec<f32>> = pa.iter().map(|(_, p)| values(p.as_tensor())).collect();
        assert_eq!(before, after);
    }
}
