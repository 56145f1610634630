//! Batch normalisation, bias and activation of one tower layer as a single CPU op with a
//! hand-written backward.
//!
//! torch-rechub's towers put `BatchNorm1d` after every `Linear`. From generic candle ops that
//! is a mean, a centred copy, a square, a second mean, a square root, a division, a product
//! and a sum, each a full-size temporary forward and more in the backward (broadcast
//! reductions); then the bias and activation op. Here it is two passes over the layer's
//! output forward (the statistics, then the normalised and activated values) and two
//! backward, for every parameter at once. On other devices the same maths runs through
//! generic candle ops (what the tests compare against).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use crate::error::Result;
use crate::ops::kernel::{contiguous, inputs3, leaky, leaky_slope};

/// The numerical guard of the variance, as `torch.nn.BatchNorm1d`'s default.
pub const BN_EPS: f64 = 1e-5;

/// Per-column statistics of one forward pass: the mean and the biased variance the batch was
/// normalised with (weighted by row counts when rows stand for several), and the total weight.
#[derive(Debug, Clone, Default)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub n: f64,
}

/// `y = act(gamma * (z - mean) / sqrt(var + eps) + beta + bias)`, `act(v) = v` for `v > 0`
/// else `alpha * v` per column; with `batch` the statistics are the batch's (weighted by
/// `weights` when set), else the given running statistics. Inputs: `z [N, C]` and the
/// parameters stacked as `[gamma; beta; bias; alpha]` (`[4, C]`).
#[derive(Debug)]
struct BatchNormActivation {
    /// `Some` in training: the batch's statistics are computed (and kept in `stats`).
    batch: bool,
    /// Running mean and variance (inference).
    running: Option<(Vec<f32>, Vec<f32>)>,
    /// How many batch rows each row of `z` stands for (a tower run once per distinct input).
    weights: Option<Vec<f32>>,
    /// The statistics the forward pass used, for the backward pass and the running update.
    stats: Arc<Mutex<BatchStats>>,
}

impl BatchNormActivation {
    fn stats(&self) -> candle_core::Result<std::sync::MutexGuard<'_, BatchStats>> {
        self.stats.lock().map_err(|_| {
            candle_core::Error::Msg("batch-norm: a panic poisoned the statistics".into())
        })
    }
}

/// Column means and biased variances of `z` (`n` rows of `c`), rows weighted by `weights`.
pub(crate) fn column_stats(z: &[f32], c: usize, weights: Option<&[f32]>) -> BatchStats {
    let rows = z.len() / c.max(1);
    let mut sum = vec![0f64; c];
    let n: f64 = weights.map_or(rows as f64, |w| w.iter().map(|&x| f64::from(x)).sum());
    // f32 accumulation per row block keeps the inner loop vectorised; the block sums go to
    // f64 so that thousands of rows lose no precision.
    let block = 256;
    let mut acc = vec![0f32; c];
    for (b, chunk) in z.chunks(block * c).enumerate() {
        acc.fill(0.0);
        for (r, row) in chunk.chunks_exact(c).enumerate() {
            let w = weights.map_or(1.0, |w| w[b * block + r]);
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += w * x;
            }
        }
        for (s, &a) in sum.iter_mut().zip(&acc) {
            *s += f64::from(a);
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n.max(1e-12)) as f32).collect();
    let mut sq = vec![0f64; c];
    for (b, chunk) in z.chunks(block * c).enumerate() {
        acc.fill(0.0);
        for (r, row) in chunk.chunks_exact(c).enumerate() {
            let w = weights.map_or(1.0, |w| w[b * block + r]);
            for ((a, &x), &m) in acc.iter_mut().zip(row).zip(&mean) {
                let d = x - m;
                *a += w * d * d;
            }
        }
        for (s, &a) in sq.iter_mut().zip(&acc) {
            *s += f64::from(a);
        }
    }
    let var = sq.iter().map(|s| (s / n.max(1e-12)) as f32).collect();
    BatchStats { mean, var, n }
}

fn inverse_std(var: &[f32]) -> Vec<f32> {
    var.iter()
        .map(|&v| 1.0 / (f64::from(v) + BN_EPS).sqrt() as f32)
        .collect()
}

/// The affine map a layer applies before its activation, per column: `v = z * scale + shift`.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl Affine {
    /// No normalisation: `v = z + bias`.
    pub(crate) fn bias(bias: &[f32]) -> Self {
        Affine {
            scale: vec![1.0; bias.len()],
            shift: bias.to_vec(),
        }
    }

    /// Batch normalisation with `stats` then the bias: `scale = gamma / sqrt(var + eps)`,
    /// `shift = beta + bias - mean * scale`.
    pub(crate) fn normalised(
        gamma: &[f32],
        beta: &[f32],
        bias: &[f32],
        stats: &BatchStats,
    ) -> Self {
        let scale: Vec<f32> = gamma
            .iter()
            .zip(inverse_std(&stats.var))
            .map(|(g, r)| g * r)
            .collect();
        let shift = (0..gamma.len())
            .map(|j| beta[j] + bias[j] - stats.mean[j] * scale[j])
            .collect();
        Affine { scale, shift }
    }
}

/// `y = leaky(z * scale + shift, alpha)` over the rows of `z` (as wide as `affine`).
pub(crate) fn activate(z: &[f32], affine: &Affine, alpha: &[f32]) -> Vec<f32> {
    let c = affine.scale.len();
    let mut out = Vec::with_capacity(z.len());
    for z_row in z.chunks_exact(c) {
        out.extend(
            z_row
                .iter()
                .zip(&affine.scale)
                .zip(&affine.shift)
                .zip(alpha)
                .map(|(((&z, &s), &t), &a)| leaky(z * s + t, a)),
        );
    }
    out
}

/// What the backward pass of a normalised layer needs besides its affine map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NormGrad<'a> {
    pub stats: &'a BatchStats,
    /// Batch statistics (every row's gradient depends on every other row) or running ones.
    pub batch: bool,
    pub weights: Option<&'a [f32]>,
}

/// Gradients of a layer's tail (normalisation, bias, activation): `dz` `[N, C]`, and per
/// column the bias's (also beta's), alpha's and gamma's (empty without normalisation).
#[derive(Debug, Clone)]
pub(crate) struct TailGrads {
    pub dz: Vec<f32>,
    pub dbias: Vec<f32>,
    pub dalpha: Vec<f32>,
    pub dgamma: Vec<f32>,
}

/// The backward pass of [`activate`] given the gradient `g` of its output.
pub(crate) fn activate_backward(
    z: &[f32],
    g: &[f32],
    affine: &Affine,
    alpha: &[f32],
    norm: Option<NormGrad<'_>>,
) -> TailGrads {
    let c = affine.scale.len();
    let mut t = TailGrads {
        dz: vec![0f32; z.len()],
        dbias: vec![0f32; c],
        dalpha: vec![0f32; c],
        dgamma: if norm.is_some() {
            vec![0f32; c]
        } else {
            Vec::new()
        },
    };
    let rstd = norm.map(|n| inverse_std(&n.stats.var));
    // Every slice below is re-sliced to exactly `c`, so the column loops run without bounds
    // checks and, branch-free, vectorise across the row.
    let (scale, shift, alpha) = (&affine.scale[..c], &affine.shift[..c], &alpha[..c]);
    {
        let (dbias, dalpha) = (&mut t.dbias[..c], &mut t.dalpha[..c]);
        // Pass 1: dv = g * act'(v), and the column sums of dv and g * min(v, 0) (and of
        // dv * xhat for a normalised layer).
        let rows =
            t.dz.chunks_exact_mut(c)
                .zip(z.chunks_exact(c))
                .zip(g.chunks_exact(c));
        match (norm, &rstd) {
            (Some(norm), Some(rstd)) => {
                let (mean, rstd) = (&norm.stats.mean[..c], &rstd[..c]);
                let dgamma = &mut t.dgamma[..c];
                for ((d_row, z_row), g_row) in rows {
                    let (d_row, z_row, g_row) = (&mut d_row[..c], &z_row[..c], &g_row[..c]);
                    for j in 0..c {
                        let v = z_row[j] * scale[j] + shift[j];
                        let dv = g_row[j] * leaky_slope(v, alpha[j]);
                        d_row[j] = dv;
                        dbias[j] += dv;
                        dgamma[j] += dv * (z_row[j] - mean[j]) * rstd[j];
                        dalpha[j] += g_row[j] * v.min(0.0);
                    }
                }
            }
            _ => {
                for ((d_row, z_row), g_row) in rows {
                    let (d_row, z_row, g_row) = (&mut d_row[..c], &z_row[..c], &g_row[..c]);
                    for j in 0..c {
                        let v = z_row[j] * scale[j] + shift[j];
                        let dv = g_row[j] * leaky_slope(v, alpha[j]);
                        d_row[j] = dv;
                        dbias[j] += dv;
                        dalpha[j] += g_row[j] * v.min(0.0);
                    }
                }
            }
        }
    }
    let (Some(norm), Some(rstd)) = (norm, &rstd) else {
        return t;
    };
    // Pass 2: dz = scale * (dv - w/n * (sum(dv) + xhat * sum(dv * xhat))) with batch
    // statistics (every row's gradient depends on every other row), scale * dv with running
    // ones (`scale = gamma * rstd`).
    let (mean, rstd) = (&norm.stats.mean[..c], &rstd[..c]);
    let (sum_dv, sum_dvx) = (&t.dbias[..c], &t.dgamma[..c]);
    let inv_n = (1.0 / norm.stats.n.max(1e-12)) as f32;
    for (r, (d_row, z_row)) in t.dz.chunks_exact_mut(c).zip(z.chunks_exact(c)).enumerate() {
        let (d_row, z_row) = (&mut d_row[..c], &z_row[..c]);
        if !norm.batch {
            for j in 0..c {
                d_row[j] *= scale[j];
            }
            continue;
        }
        let w = norm.weights.map_or(1.0, |w| w[r]) * inv_n;
        for j in 0..c {
            let xhat = (z_row[j] - mean[j]) * rstd[j];
            d_row[j] = scale[j] * (d_row[j] - w * (sum_dv[j] + xhat * sum_dvx[j]));
        }
    }
    t
}

impl CustomOp2 for BatchNormActivation {
    fn name(&self) -> &'static str {
        "batch-norm-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let z = contiguous(s1, l1, self.name())?;
        let params = contiguous(s2, l2, self.name())?;
        if params.len() != 4 * c || self.weights.as_ref().is_some_and(|w| w.len() != n) {
            candle_core::bail!(
                "batch-norm-activation: z [{n}, {c}], {} parameters, {:?} weights",
                params.len(),
                self.weights.as_ref().map(Vec::len)
            )
        }
        let stats = if self.batch {
            column_stats(z, c, self.weights.as_deref())
        } else {
            match &self.running {
                Some((mean, var)) if mean.len() == c && var.len() == c => BatchStats {
                    mean: mean.clone(),
                    var: var.clone(),
                    n: n as f64,
                },
                _ => candle_core::bail!(
                    "batch-norm-activation: running statistics of width {c} needed"
                ),
            }
        };
        let (gamma, rest) = params.split_at(c);
        let (beta, rest) = rest.split_at(c);
        let (bias, alpha) = rest.split_at(c);
        let out = activate(z, &Affine::normalised(gamma, beta, bias, &stats), alpha);
        *self.stats()? = stats;
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(
        &self,
        z: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = z.dim(0)?;
        let stats = self.stats()?.clone();
        let op = BatchNormActivationGrad {
            batch: self.batch,
            weights: self.weights.clone(),
            stats,
        };
        let all = z.apply_op3_no_bwd(&grad.contiguous()?, params, &op)?;
        Ok((Some(all.narrow(0, 0, n)?), Some(all.narrow(0, n, 4)?)))
    }
}

/// The backward pass of [`BatchNormActivation`]: inputs `z [N, C]`, the incoming gradient
/// `[N, C]` and the parameters `[4, C]`; output `[N + 4, C]`: dz, then dgamma, dbeta, dbias,
/// dalpha.
#[derive(Debug)]
struct BatchNormActivationGrad {
    batch: bool,
    weights: Option<Vec<f32>>,
    stats: BatchStats,
}

impl CustomOp3 for BatchNormActivationGrad {
    fn name(&self) -> &'static str {
        "batch-norm-activation-grad"
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
        let ((n, c), [z, g, params]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if g.len() != n * c || params.len() != 4 * c || self.stats.mean.len() != c {
            candle_core::bail!(
                "batch-norm-activation-grad: z [{n}, {c}], gradient {}, parameters {}",
                g.len(),
                params.len()
            )
        }
        let (gamma, rest) = params.split_at(c);
        let (beta, rest) = rest.split_at(c);
        let (bias, alpha) = rest.split_at(c);
        let affine = Affine::normalised(gamma, beta, bias, &self.stats);
        let norm = NormGrad {
            stats: &self.stats,
            batch: self.batch,
            weights: self.weights.as_deref(),
        };
        let t = activate_backward(z, g, &affine, alpha, Some(norm));
        let mut out = t.dz;
        out.reserve(4 * c);
        out.extend(t.dgamma);
        // beta and the Linear bias enter the same sum, so their gradients are equal.
        out.extend_from_slice(&t.dbias);
        out.extend(t.dbias);
        out.extend(t.dalpha);
        Ok((CpuStorage::F32(out), Shape::from((n + 4, c))))
    }
}

/// One layer's batch norm, bias and activation: `act(BN(z) + bias)` with the parameters
/// `[gamma; beta; bias; alpha]` stacked as `[4, C]` (gradients flow back to each through the
/// stack). Training (`running = None`) normalises with the batch's statistics, rows weighted by
/// `weights`, and returns them for the running update; inference uses `running`.
pub fn batch_norm_activation(
    z: &Tensor,
    params: &Tensor,
    running: Option<(&Tensor, &Tensor)>,
    weights: Option<&[f32]>,
) -> Result<(Tensor, BatchStats)> {
    if !super::fused_kernels(z.device()) {
        return batch_norm_activation_generic(z, params, running, weights);
    }
    let stats = Arc::new(Mutex::new(BatchStats::default()));
    let op = BatchNormActivation {
        batch: running.is_none(),
        running: running
            .map(|(m, v)| -> Result<_> { Ok((m.to_vec1::<f32>()?, v.to_vec1::<f32>()?)) })
            .transpose()?,
        weights: weights.map(<[f32]>::to_vec),
        stats: stats.clone(),
    };
    let y = z.contiguous()?.apply_op2(&params.contiguous()?, op)?;
    let stats = stats
        .lock()
        .map_err(|_| crate::error::Error::Training("batch-norm statistics poisoned".into()))?
        .clone();
    Ok((y, stats))
}

/// The same from generic candle ops (other devices, and the reference of the tests).
pub fn batch_norm_activation_generic(
    z: &Tensor,
    params: &Tensor,
    running: Option<(&Tensor, &Tensor)>,
    weights: Option<&[f32]>,
) -> Result<(Tensor, BatchStats)> {
    let (rows, c) = z.dims2()?;
    let dev = z.device();
    let (mean, var, n) = match running {
        Some((m, v)) => (m.unsqueeze(0)?, v.unsqueeze(0)?, rows as f64),
        None => match weights {
            None => {
                let mean = z.mean_keepdim(0)?;
                let var = z.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
                (mean, var, rows as f64)
            }
            Some(w) => {
                let n: f64 = w.iter().map(|&x| f64::from(x)).sum();
                let w = Tensor::from_slice(w, (rows, 1), dev)?;
                let mean = (z.broadcast_mul(&w)?.sum_keepdim(0)? / n)?;
                let var = (z
                    .broadcast_sub(&mean)?
                    .sqr()?
                    .broadcast_mul(&w)?
                    .sum_keepdim(0)?
                    / n)?;
                (mean, var, n)
            }
        },
    };
    let stats = BatchStats {
        mean: mean.detach().flatten_all()?.to_vec1()?,
        var: var.detach().flatten_all()?.to_vec1()?,
        n,
    };
    let gamma = params.get(0)?;
    let shift = (params.get(1)? + params.get(2)?)?;
    let alpha = params.get(3)?;
    let normed = z
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + BN_EPS)?.sqrt()?)?
        .broadcast_mul(&gamma)?;
    let y = crate::ops::kernel::bias_activation_generic(&normed, &shift, &alpha)?;
    debug_assert_eq!(y.dims2()?, (rows, c));
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::testing::{close, values};

    /// Values, statistics and every gradient of the fused op equal those of the generic ops:
    /// in training with and without row weights, and at inference with running statistics.
    #[test]
    fn fused_batch_norm_matches_generic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let (n, c) = (5, 3);
        let z_values: Vec<f32> = (0..n * c)
            .map(|k| ((k * 7 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let z = Var::from_tensor(&Tensor::from_vec(z_values, (n, c), &dev).unwrap()).unwrap();
        let p = |v: &[f32]| Var::from_tensor(&Tensor::new(v, &dev).unwrap()).unwrap();
        let (gamma, beta, bias, alpha) = (
            p(&[1.5, 0.5, -1.0]),
            p(&[0.1, -0.2, 0.3]),
            p(&[0.05, 0.0, -0.1]),
            p(&[0.25, 0.0, 1.0]),
        );
        // A weight per output so the incoming gradient is not uniform.
        let w_out = Tensor::from_vec(
            (0..n * c).map(|k| (k % 5) as f32 - 1.5).collect::<Vec<_>>(),
            (n, c),
            &dev,
        )
        .unwrap();
        let running = (
            Tensor::new(&[0.2f32, -0.1, 0.4], &dev).unwrap(),
            Tensor::new(&[1.3f32, 0.7, 2.0], &dev).unwrap(),
        );
        let row_weights = [1.0f32, 3.0, 2.0, 1.0, 4.0];
        for (running, weights) in [
            (None, None),
            (None, Some(&row_weights[..])),
            (Some((&running.0, &running.1)), None),
        ] {
            let run = |fused: bool| {
                let params = Tensor::stack(
                    &[
                        gamma.as_tensor(),
                        beta.as_tensor(),
                        bias.as_tensor(),
                        alpha.as_tensor(),
                    ],
                    0,
                )
                .unwrap();
                let f = if fused {
                    batch_norm_activation
                } else {
                    batch_norm_activation_generic
                };
                let (y, stats) = f(z.as_tensor(), &params, running, weights).unwrap();
                let grads = (y.clone() * &w_out)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g: Vec<Vec<f32>> = [&z, &gamma, &beta, &bias, &alpha]
                    .iter()
                    .map(|v| values(grads.get(v.as_tensor()).unwrap()))
                    .collect();
                (values(&y), stats, g)
            };
            let (y1, s1, g1) = run(true);
            let (y2, s2, g2) = run(false);
            assert!(close(&y1, &y2, 1e-5), "{y1:?} vs {y2:?}");
            assert!(close(&s1.mean, &s2.mean, 1e-6) && close(&s1.var, &s2.var, 1e-5));
            assert!((s1.n - s2.n).abs() < 1e-9);
            for (a, b) in g1.iter().zip(&g2) {
                assert!(
                    close(a, b, 1e-4),
                    "{a:?} vs {b:?} ({running:?}, {weights:?})"
                );
            }
        }
    }

    /// The statistics by hand: column [1, 2, 6] has mean 3 and biased variance 14/3; with
    /// weights [2, 1, 1] mean 2.5 and variance (2 * 2.25 + 0.25 + 12.25) / 4 = 4.25.
    #[test]
    fn column_statistics_by_hand() {
        let s = column_stats(&[1.0, 2.0, 6.0], 1, None);
        assert!((s.mean[0] - 3.0).abs() < 1e-6 && (s.var[0] - 14.0 / 3.0).abs() < 1e-5);
        let s = column_stats(&[1.0, 2.0, 6.0], 1, Some(&[2.0, 1.0, 1.0]));
        assert!((s.mean[0] - 2.5).abs() < 1e-6 && (s.var[0] - 4.25).abs() < 1e-5);
        assert_eq!(s.n, 4.0);
    }
}
