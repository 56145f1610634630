//! A whole MLP tower (every layer's matrix product, batch normalisation, bias and activation)
//! as one CPU op with a hand-written backward.
//!
//! Built layer by layer from candle ops, a torch-rechub-sized tower at batch 2,048 spent more
//! time in candle's bookkeeping than in its matrix products: every op allocates its output,
//! and the backward pass starts each gradient as a zero tensor and adds into it (measured:
//! 5.3 ms forward and backward for three matrix products taking 3.8 ms). Here the forward is
//! one matrix product and one pass per layer into buffers the backward reads; the backward is
//! two products and two passes per layer. Parameters come packed in one vector (candle's
//! `cat` routes each slice of its gradient back to its `Var`). Dropout and other devices take
//! the layer-by-layer path (`tower.rs`), which the tests compare this op against.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use recall_eval::matmul::{Matrix, matmul, product};

use crate::error::Result;
use crate::ops::kernel::{contiguous, inputs3};
use crate::ops::norm_op::{
    Affine, BatchStats, NormGrad, activate, activate_backward, column_stats,
};

/// Where one layer's parameters sit in the packed vector, and its widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerShape {
    pub input: usize,
    pub output: usize,
    /// Batch normalisation (its gamma and beta follow alpha in the packed vector).
    pub norm: bool,
    /// Offset of the weight `[output, input]`; bias, alpha, then gamma and beta follow, each
    /// `output` long.
    pub offset: usize,
}

impl LayerShape {
    fn weight(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.output * self.input
    }

    /// The `k`-th per-column vector after the weight: 0 bias, 1 alpha, 2 gamma, 3 beta.
    fn column(&self, k: usize) -> std::ops::Range<usize> {
        let start = self.weight().end + k * self.output;
        start..start + self.output
    }

    /// Length of this layer's slice of the packed vector.
    pub fn packed_len(&self) -> usize {
        self.output * (self.input + if self.norm { 4 } else { 2 })
    }
}

/// The statistics normalised layers use.
#[derive(Debug, Clone)]
pub(crate) enum Statistics {
    /// Training: each batch's own, rows weighted by how many batch rows they stand for.
    Batch { weights: Option<Vec<f32>> },
    /// Inference: the running statistics, one entry per layer (`None` for plain layers).
    Running(Vec<Option<BatchStats>>),
}

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Default)]
struct Cache {
    /// Outputs of every layer but the last (the inputs of layers 1..).
    hidden: Vec<Vec<f32>>,
    /// Every layer's matrix product `x W^T`, before normalisation.
    pre: Vec<Vec<f32>>,
    /// Every normalised layer's statistics.
    stats: Vec<Option<BatchStats>>,
}

#[derive(Debug)]
struct FusedMlp {
    layers: Vec<LayerShape>,
    statistics: Statistics,
    cache: Mutex<Cache>,
    /// The statistics each normalised layer used, for the caller's running update.
    used: Arc<Mutex<Vec<Option<BatchStats>>>>,
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("fused-mlp: a panic poisoned its cache".into())
}

impl FusedMlp {
    fn check(&self, n: usize, input: usize, params: usize) -> candle_core::Result<()> {
        let packed: usize = self.layers.iter().map(LayerShape::packed_len).sum();
        let chained = self.layers.windows(2).all(|w| w[0].output == w[1].input);
        let weights_ok = match &self.statistics {
            Statistics::Batch { weights } => weights.as_ref().is_none_or(|w| w.len() == n),
            Statistics::Running(s) => s.len() == self.layers.len(),
        };
        if self.layers.first().is_none_or(|l| l.input != input)
            || packed != params
            || !chained
            || !weights_ok
        {
            candle_core::bail!(
                "fused-mlp: input [{n}, {input}] and {params} parameters do not fit layers {:?}",
                self.layers
            )
        }
        Ok(())
    }

    /// The affine map of layer `l` with the statistics it uses.
    fn affine(&self, l: &LayerShape, params: &[f32], stats: Option<&BatchStats>) -> Affine {
        let bias = &params[l.column(0)];
        match stats {
            Some(s) => Affine::normalised(&params[l.column(2)], &params[l.column(3)], bias, s),
            None => Affine::bias(bias),
        }
    }
}

impl CustomOp2 for FusedMlp {
    fn name(&self) -> &'static str {
        "fused-mlp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, input) = l1.shape().dims2()?;
        let x = contiguous(s1, l1, self.name())?;
        let params = contiguous(s2, l2, self.name())?;
        self.check(n, input, params.len())?;
        // gemm splits each product's output between the threads (never a sum), so the result
        // is the same on any number of them.
        let threads = rayon::current_num_threads();
        let mut cache = Cache::default();
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let layer_input: &[f32] = match cache.hidden.last() {
                Some(h) if i > 0 => h,
                _ => x,
            };
            let z = product(
                Matrix::row_major(layer_input, n, l.input),
                Matrix::row_major(&params[l.weight()], l.output, l.input).t(),
                threads,
            );
            let stats = match (&self.statistics, l.norm) {
                (_, false) => None,
                (Statistics::Batch { weights }, true) => {
                    Some(column_stats(&z, l.output, weights.as_deref()))
                }
                (Statistics::Running(s), true) => match &s[i] {
                    Some(s) => Some(s.clone()),
                    None => candle_core::bail!("fused-mlp: layer {i} needs running statistics"),
                },
            };
            let y = activate(
                &z,
                &self.affine(l, params, stats.as_ref()),
                &params[l.column(1)],
            );
            cache.pre.push(z);
            cache.stats.push(stats);
            if i + 1 == self.layers.len() {
                out = y;
            } else {
                cache.hidden.push(y);
            }
        }
        let last = self.layers.last().map_or(0, |l| l.output);
        *self.used.lock().map_err(poisoned)? = cache.stats.clone();
        *self.cache.lock().map_err(poisoned)? = cache;
        Ok((CpuStorage::F32(out), Shape::from((n, last))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, input) = x.dims2()?;
        let all =
            x.apply_op3_no_bwd(&grad.contiguous()?, params, &FusedMlpGrad { forward: self })?;
        let dx = all.narrow(0, 0, n * input)?.reshape((n, input))?;
        let dparams = all.narrow(0, n * input, params.dim(0)?)?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// The backward pass of [`FusedMlp`] over its cache: inputs `x`, the gradient of the output
/// and the packed parameters; output `[N * input + P]`: dx, then the packed gradients.
#[derive(Debug)]
struct FusedMlpGrad<'a> {
    forward: &'a FusedMlp,
}

impl CustomOp3 for FusedMlpGrad<'_> {
    fn name(&self) -> &'static str {
        "fused-mlp-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((n, input), [x, grad, params]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let f = self.forward;
        f.check(n, input, params.len())?;
        let cache = std::mem::take(&mut *f.cache.lock().map_err(poisoned)?);
        let layers = &f.layers;
        if cache.pre.len() != layers.len()
            || grad.len() != n * layers.last().map_or(0, |l| l.output)
        {
            candle_core::bail!("fused-mlp: backward without its forward pass")
        }
        let threads = rayon::current_num_threads();
        let mut out = vec![0f32; n * input + params.len()];
        let (dx, dparams) = out.split_at_mut(n * input);
        let mut g = grad.to_vec();
        for (i, l) in layers.iter().enumerate().rev() {
            let stats = cache.stats[i].as_ref();
            let norm = stats.map(|s| NormGrad {
                stats: s,
                batch: matches!(f.statistics, Statistics::Batch { .. }),
                weights: match &f.statistics {
                    Statistics::Batch { weights } => weights.as_deref(),
                    Statistics::Running(_) => None,
                },
            });
            let tail = activate_backward(
                &cache.pre[i],
                &g,
                &f.affine(l, params, stats),
                &params[l.column(1)],
                norm,
            );
            dparams[l.column(0)].copy_from_slice(&tail.dbias);
            dparams[l.column(1)].copy_from_slice(&tail.dalpha);
            if l.norm {
                dparams[l.column(2)].copy_from_slice(&tail.dgamma);
                // beta and the bias enter the same sum: equal gradients.
                dparams[l.column(3)].copy_from_slice(&tail.dbias);
            }
            let layer_input: &[f32] = if i == 0 { x } else { &cache.hidden[i - 1] };
            let dz = Matrix::row_major(&tail.dz, n, l.output);
            // dW = dz^T x.
            matmul(
                dz.t(),
                Matrix::row_major(layer_input, n, l.input),
                &mut dparams[l.weight()],
                false,
                threads,
            );
            // The gradient of the layer's input: dz W.
            let weight = Matrix::row_major(&params[l.weight()], l.output, l.input);
            if i == 0 {
                matmul(dz, weight, dx, false, threads);
            } else {
                g = product(dz, weight, threads);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n * input + params.len())))
    }
}

/// Applies the tower `layers` to `x [N, input]` with `params` packed as [`LayerShape`] says.
/// Returns the output and, per layer, the statistics a normalised layer used (for the running
/// update in training).
pub(crate) fn fused_mlp(
    x: &Tensor,
    params: &Tensor,
    layers: Vec<LayerShape>,
    statistics: Statistics,
) -> Result<(Tensor, Vec<Option<BatchStats>>)> {
    let used = Arc::new(Mutex::new(Vec::new()));
    let op = FusedMlp {
        layers,
        statistics,
        cache: Mutex::new(Cache::default()),
        used: used.clone(),
    };
    let y = x.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    let used = used
        .lock()
        .map_err(|_| crate::error::Error::Training("fused-mlp statistics poisoned".into()))?
        .clone();
    Ok((y, used))
}
