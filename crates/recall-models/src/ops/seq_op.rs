//! The sequence tower's element-wise ops as fused CPU ops with hand-written backward passes:
//! layer normalisation over the last dimension, the causal, padding-aware attention
//! softmax (SASRec's), and HSTU's pointwise SiLU attention with a relative position bias and
//! its projection's bias-plus-SiLU tail.
//!
//! candle's own `layer_norm` and `softmax_last_dim` return no gradient for their inputs
//! (`../shared/notes/candle-on-cpu.md`), and building them from generic ops costs a temporary
//! per step forward and more backward. Each op here is one pass forward and one or two
//! backward; other devices run the generic form, which the tests compare against.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
use crate::ops::kernel::{contiguous, fast_exp, inputs3, lane_max, lane_sum, wide_kernel};
use crate::ops::par::{ROWS_PER_TASK, for_chunks_summing, for_rows};

/// The first key of a padding slot (the sequence encoder's `Padded::first`): it attends to nothing
/// and is never read.
pub const PADDING: u32 = u32::MAX;

/// The variance guard of layer normalisation (torch's default).
pub const LN_EPS: f32 = 1e-5;

/// Per-row layer normalisation: `y = (x - mean) / sqrt(var + eps) * gamma + beta` over the
/// last dimension of a `[N, D]` input.
#[derive(Debug, Default)]
struct LayerNorm {
    /// Per row, the mean and inverse standard deviation the forward pass used.
    stats: Mutex<Vec<(f32, f32)>>,
}

fn row_stats(row: &[f32]) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = row.iter().sum::<f32>() / d;
    let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + LN_EPS).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
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
        let ((n, d), [x, gamma, beta]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if gamma.len() != d || beta.len() != d {
            candle_core::bail!(
                "layer-norm: rows of {d}, gamma {}, beta {}",
                gamma.len(),
                beta.len()
            )
        }
        let mut out = Vec::with_capacity(n * d);
        let mut stats = Vec::with_capacity(n);
        for row in x.chunks_exact(d) {
            let (mean, rstd) = row_stats(row);
            stats.push((mean, rstd));
            out.extend(
                row.iter()
                    .zip(gamma)
                    .zip(beta)
                    .map(|((&x, &g), &b)| (x - mean) * rstd * g + b),
            );
        }
        *self.stats.lock().map_err(|_| poisoned("layer-norm"))? = stats;
        Ok((CpuStorage::F32(out), Shape::from((n, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, _) = x.dims2()?;
        let stats = std::mem::take(&mut *self.stats.lock().map_err(|_| poisoned("layer-norm"))?);
        if stats.len() != n {
            candle_core::bail!("layer-norm: backward without its forward pass")
        }
        let all = x.apply_op3_no_bwd(&grad.contiguous()?, gamma, &LayerNormGrad { stats })?;
        Ok((
            Some(all.narrow(0, 0, n)?),
            Some(all.get(n)?),
            Some(all.get(n + 1)?),
        ))
    }
}

fn poisoned(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: a panic poisoned its cache"))
}

/// The backward pass of [`LayerNorm`]: inputs x, the gradient, gamma; output `[N + 2, D]`:
/// dx, then dgamma, then dbeta.
#[derive(Debug)]
struct LayerNormGrad {
    stats: Vec<(f32, f32)>,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
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
        let ((n, d), [x, g, gamma]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let mut out = vec![0f32; (n + 2) * d];
        let (dx, sums) = out.split_at_mut(n * d);
        let (dgamma, dbeta) = sums.split_at_mut(d);
        let inv_d = 1.0 / d as f32;
        for (((dx_row, x_row), g_row), &(mean, rstd)) in dx
            .chunks_exact_mut(d)
            .zip(x.chunks_exact(d))
            .zip(g.chunks_exact(d))
            .zip(&self.stats)
        {
            // dxhat = g * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
            let (mut sum, mut dot) = (0f32, 0f32);
            for j in 0..d {
                let xhat = (x_row[j] - mean) * rstd;
                let dxhat = g_row[j] * gamma[j];
                sum += dxhat;
                dot += dxhat * xhat;
                dgamma[j] += g_row[j] * xhat;
                dbeta[j] += g_row[j];
            }
            let (sum, dot) = (sum * inv_d, dot * inv_d);
            for j in 0..d {
                let xhat = (x_row[j] - mean) * rstd;
                dx_row[j] = rstd * (g_row[j] * gamma[j] - sum - xhat * dot);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n + 2, d))))
    }
}

/// Layer normalisation of the rows of `x` (`[..., D]`), with `gamma` and `beta` (`[D]`).
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    if !super::fused_kernels(x.device()) {
        return layer_norm_generic(x, gamma, beta);
    }
    let dims = x.dims().to_vec();
    let d = *dims.last().unwrap_or(&1);
    let rows = x.contiguous()?.reshape(((), d))?;
    let y = rows.apply_op3(gamma, beta, LayerNorm::default())?;
    Ok(y.reshape(dims)?)
}

/// The same from generic candle ops.
pub fn layer_norm_generic(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + f64::from(LN_EPS))?.sqrt()?)?;
    Ok(normed.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// The causal attention softmax: for scores `[B * H, L, L]` (query rows, key columns) of `B`
/// rows of `L` slots with `H` heads each, query `i` of row `b` is `softmax(scale * s)` over
/// keys `first[b * L + i] <= j <= i` (its own segment up to itself); everything else is 0, and
/// a padding query (`first` past `i`) is all 0.
#[derive(Debug, Clone)]
struct CausalSoftmax {
    visible: Visible,
    scale: f32,
}

/// Which keys each query of the attention ops may see: the keys of its own segment up to
/// itself, for scores `[B * H, L, L]` of `B` rows of `L` slots with `H` heads each.
#[derive(Debug, Clone)]
struct Visible {
    heads: usize,
    /// Per slot, the first key it may see ([`PADDING`]: none).
    first: Vec<u32>,
}

impl Visible {
    fn new(heads: usize, first: &[u32]) -> Self {
        Visible {
            heads,
            first: first.to_vec(),
        }
    }

    /// The keys query `i` of attention row block `n` (of `l` slots) may see.
    fn keys(&self, n: usize, i: usize, l: usize) -> std::ops::Range<usize> {
        let first = self.first[(n / self.heads) * l + i] as usize;
        if first > i { 0..0 } else { first..i + 1 }
    }

    /// Scores `[n, l, l2]` must be square blocks over these slots and heads; `what` names the
    /// op in the error.
    fn check(&self, what: &str, n: usize, l: usize, l2: usize) -> candle_core::Result<()> {
        if l != l2 || n * l != self.first.len() * self.heads {
            candle_core::bail!(
                "{what}: scores [{n}, {l}, {l2}] for {} slots of {} heads",
                self.first.len(),
                self.heads
            )
        }
        Ok(())
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, l, l2) = layout.shape().dims3()?;
        let s = contiguous(storage, layout, self.name())?;
        self.visible.check(self.name(), n, l, l2)?;
        let mut out = vec![0f32; n * l * l];
        for (m, (o_block, s_block)) in out
            .chunks_exact_mut(l * l)
            .zip(s.chunks_exact(l * l))
            .enumerate()
        {
            for (i, (o, row)) in o_block
                .chunks_exact_mut(l)
                .zip(s_block.chunks_exact(l))
                .enumerate()
            {
                let keys = self.visible.keys(m, i, l);
                if keys.is_empty() {
                    continue;
                }
                causal_softmax_row(&mut o[keys.clone()], &row[keys], self.scale);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, l, l))))
    }

    /// `ds = scale * p * (dp - sum_j dp_j p_j)` on each row's visible keys.
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n, l, _) = arg.dims3()?;
        let p: Vec<f32> = res.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let mut out = vec![0f32; n * l * l];
        for m in 0..n {
            for i in 0..l {
                let keys = self.visible.keys(m, i, l);
                if keys.is_empty() {
                    continue;
                }
                let at = (m * l + i) * l;
                let visible = at + keys.start..at + keys.end;
                causal_softmax_grad_row(
                    &mut out[visible.clone()],
                    &p[visible.clone()],
                    &g[visible],
                    self.scale,
                );
            }
        }
        Ok(Some(Tensor::from_vec(out, (n, l, l), arg.device())?))
    }
}

wide_kernel! {
    /// One query's softmax over its visible keys' scores `row`, times `scale`, into `o`.
    fn causal_softmax_row / causal_softmax_row_portable(o: &mut [f32], row: &[f32], scale: f32) {
        o.iter_mut().zip(row).for_each(|(o, &x)| *o = scale * x);
        let max = lane_max(o);
        o.iter_mut().for_each(|v| *v = fast_exp(*v - max));
        let inverse = 1.0 / lane_sum(o);
        o.iter_mut().for_each(|v| *v *= inverse);
    }
}

wide_kernel! {
    /// One query's `ds = scale * p * (dp - sum_j dp_j p_j)` over its visible keys.
    fn causal_softmax_grad_row / causal_softmax_grad_row_portable(
        out: &mut [f32],
        p: &[f32],
        g: &[f32],
        scale: f32,
    ) {
        let dot: f32 = p.iter().zip(g).map(|(a, b)| a * b).sum();
        out.iter_mut()
            .zip(p.iter().zip(g))
            .for_each(|(o, (&p, &g))| *o = scale * p * (g - dot));
    }
}

/// Attention probabilities from `scores` (`[B * H, L, L]`, `H` heads per row of slots), each
/// query a softmax of `scale * scores` over the keys it may see (`first[slot]` up to itself,
/// see the sequence encoder's `Padded::first`); padding queries are 0.
pub fn causal_softmax(scores: &Tensor, heads: usize, first: &[u32], scale: f64) -> Result<Tensor> {
    if !super::fused_kernels(scores.device()) {
        return causal_softmax_generic(scores, heads, first, scale);
    }
    let op = CausalSoftmax {
        visible: Visible::new(heads, first),
        scale: scale as f32,
    };
    Ok(scores.contiguous()?.apply_op1(op)?)
}

/// The same from generic candle ops: a `-1e9` bias on hidden keys, candle's softmax (which
/// back-propagates), and the padded query rows zeroed.
pub fn causal_softmax_generic(
    scores: &Tensor,
    heads: usize,
    first: &[u32],
    scale: f64,
) -> Result<Tensor> {
    let (n, l, _) = scores.dims3()?;
    let visible = Visible::new(heads, first);
    let mut bias = vec![-1e9f32; n * l * l];
    let mut rows = vec![0f32; n * l];
    for m in 0..n {
        for i in 0..l {
            let keys = visible.keys(m, i, l);
            rows[m * l + i] = if keys.is_empty() { 0.0 } else { 1.0 };
            bias[(m * l + i) * l + keys.start..(m * l + i) * l + keys.end].fill(0.0);
        }
    }
    let dev = scores.device();
    let x = ((scores * scale)? + Tensor::from_vec(bias, (n, l, l), dev)?)?;
    let p = candle_nn::ops::softmax(&x, D::Minus1)?;
    Ok(p.broadcast_mul(&Tensor::from_vec(rows, (n, l, 1), dev)?)?)
}

/// HSTU's pointwise attention (Zhai et al. 2024): for scores `[B * H, L, L]` of `B` rows of
/// `L` slots with `H` heads each and a relative position bias `bias` (`[max_len]`, entry `d`
/// for a key `d` slots before its query), query `i` weighs key `j` by
/// `scale * silu(s[i, j] + bias[i - j])` over the keys `first[b * L + i] <= j <= i` it may see,
/// 0 elsewhere. No softmax: the weights are not normalised against each other, only scaled
/// (by `1 / max_len`, the published normalisation by sequence length, which does not depend on
/// how windows share a row).
#[derive(Debug, Clone)]
struct SiluAttention {
    visible: Visible,
    scale: f32,
}

impl SiluAttention {
    const NAME: &str = "silu-attention";

    /// The scores' shape against the slots, and rows no longer than the bias reaches.
    fn check(&self, n: usize, l: usize, l2: usize, positions: usize) -> candle_core::Result<()> {
        self.visible.check(Self::NAME, n, l, l2)?;
        if l > positions {
            candle_core::bail!(
                "{}: rows of {l} slots for {positions} bias positions",
                Self::NAME
            )
        }
        Ok(())
    }
}

/// `x * sigmoid(x)` and its derivative `sigmoid(x) * (1 + x * (1 - sigmoid(x)))`.
#[inline(always)]
fn silu_and_slope(x: f32) -> (f32, f32) {
    let sigmoid = 1.0 / (1.0 + fast_exp(-x));
    (x * sigmoid, sigmoid * (1.0 + x * (1.0 - sigmoid)))
}

impl CustomOp2 for SiluAttention {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, l, l_keys) = l1.shape().dims3()?;
        let s = contiguous(s1, l1, self.name())?;
        let bias = contiguous(s2, l2, self.name())?;
        self.check(n, l, l_keys, bias.len())?;
        let mut out = vec![0f32; n * l * l];
        // One task per window row and head: 16 of them in a shipped batch, each `l * l`.
        out.par_chunks_exact_mut(l * l)
            .zip(s.par_chunks_exact(l * l))
            .enumerate()
            .for_each(|(m, (o_block, s_block))| {
                silu_attention_block(self, m, o_block, s_block, bias, l);
            });
        Ok((CpuStorage::F32(out), Shape::from((n, l, l))))
    }

    /// `ds = scale * silu'(s + bias) * g` on each query's visible keys; the bias's gradient at
    /// distance `d` sums `ds` over the pairs `d` apart.
    fn bwd(
        &self,
        scores: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, l, _) = scores.dims3()?;
        // One op reads the storages in place and returns `ds` then `db` in one vector.
        let all =
            scores.apply_op3_no_bwd(&grad.contiguous()?, bias, &SiluAttentionGrad(self.clone()))?;
        Ok((
            Some(all.narrow(0, 0, n * l * l)?.reshape((n, l, l))?),
            Some(all.narrow(0, n * l * l, bias.dim(0)?)?),
        ))
    }
}

wide_kernel! {
    /// Attention block `m` (`l * l` scores `s_block`) of [`SiluAttention`] into `o_block`.
    fn silu_attention_block / silu_attention_block_portable(
        op: &SiluAttention,
        m: usize,
        o_block: &mut [f32],
        s_block: &[f32],
        bias: &[f32],
        l: usize,
    ) {
        for (i, (o, row)) in o_block
            .chunks_exact_mut(l)
            .zip(s_block.chunks_exact(l))
            .enumerate()
        {
            let keys = op.visible.keys(m, i, l);
            if keys.is_empty() {
                continue;
            }
            // Key `j`'s bias is entry `i - j`: the visible keys read `bias[..=i - first]` backwards.
            let bias = bias[..=i - keys.start].iter().rev();
            for ((o, &x), &b) in o[keys.clone()].iter_mut().zip(&row[keys]).zip(bias) {
                *o = op.scale * silu_and_slope(x + b).0;
            }
        }
    }
}

wide_kernel! {
    /// Attention block `m` of [`SiluAttentionGrad`]: `ds` into `d_block` from the block's
    /// scores `s` and incoming gradient `g`, each distance's sum of `ds` added into `sums`.
    #[allow(clippy::too_many_arguments)]
    fn silu_attention_grad_block / silu_attention_grad_block_portable(
        op: &SiluAttention,
        m: usize,
        d_block: &mut [f32],
        sums: &mut [f32],
        s: &[f32],
        g: &[f32],
        bias: &[f32],
        l: usize,
    ) {
        for (i, ((d_row, s_row), g_row)) in d_block
            .chunks_exact_mut(l)
            .zip(s.chunks_exact(l))
            .zip(g.chunks_exact(l))
            .enumerate()
        {
            let keys = op.visible.keys(m, i, l);
            if keys.is_empty() {
                continue;
            }
            // Key `j` is at distance `i - j`: bias and sums entries `..=i - first`, backwards.
            let back = ..=i - keys.start;
            let distances = bias[back].iter().rev().zip(sums[back].iter_mut().rev());
            for (((d, &x), &g), (&b, sum)) in d_row[keys.clone()]
                .iter_mut()
                .zip(&s_row[keys.clone()])
                .zip(&g_row[keys])
                .zip(distances)
            {
                *d = op.scale * silu_and_slope(x + b).1 * g;
                *sum += *d;
            }
        }
    }
}

/// The backward pass of [`SiluAttention`]: inputs the scores and the incoming gradient
/// (`[N, L, L]`) and the bias (`[max_len]`); output `N L L + max_len` values: `ds`, then `db`.
/// One task per attention block; the blocks' bias sums are added in block order, so the bits do
/// not depend on the thread count.
#[derive(Debug, Clone)]
struct SiluAttentionGrad(SiluAttention);

impl CustomOp3 for SiluAttentionGrad {
    fn name(&self) -> &'static str {
        "silu-attention-grad"
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
        let (n, l, l_keys) = l1.shape().dims3()?;
        let s = contiguous(s1, l1, self.name())?;
        let g = contiguous(s2, l2, self.name())?;
        let b = contiguous(s3, l3, self.name())?;
        let op = &self.0;
        op.check(n, l, l_keys, b.len())?;
        if g.len() != s.len() {
            candle_core::bail!(
                "{}: gradient {} for scores {}",
                self.name(),
                g.len(),
                s.len()
            )
        }
        let mut out = vec![0f32; n * l * l + b.len()];
        let (ds, db) = out.split_at_mut(n * l * l);
        for_chunks_summing(ds, l * l, db, |m, d_block, sums| {
            let block = m * l * l..(m + 1) * l * l;
            silu_attention_grad_block(op, m, d_block, sums, &s[block.clone()], &g[block], b, l);
        });
        Ok((CpuStorage::F32(out), Shape::from(n * l * l + b.len())))
    }
}

/// `y = silu(z + bias)` per column over the rows of `z` `[N, C]`: HSTU's projection tail. As
/// candle ops that was the bias op, a SiLU forward and a backward of six element-wise passes
/// plus the gradient sum, all over the block's widest tensor (`[slots, 4 dim]`) and on one
/// thread; here one pass each way, over row chunks in parallel.
#[derive(Debug, Clone, Copy)]
struct BiasSilu;

impl BiasSilu {
    const NAME: &str = "bias-silu";
}

impl CustomOp2 for BiasSilu {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = l1.shape().dims2()?;
        let z = contiguous(s1, l1, Self::NAME)?;
        let bias = contiguous(s2, l2, Self::NAME)?;
        if bias.len() != c {
            candle_core::bail!("{}: {c} columns, bias {}", Self::NAME, bias.len())
        }
        let mut out = vec![0f32; n * c];
        for_rows(&mut out, c, |first, chunk| {
            bias_silu_rows(chunk, &z[first * c..first * c + chunk.len()], bias, c);
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(
        &self,
        z: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = z.dim(0)?;
        // One op reads the storages in place and returns `[N + 1, C]`: dz, then dbias.
        let all = z.apply_op3_no_bwd(&grad.contiguous()?, bias, &BiasSiluGrad)?;
        Ok((Some(all.narrow(0, 0, n)?), Some(all.get(n)?)))
    }
}

/// The backward pass of [`BiasSilu`]: inputs `z` and the incoming gradient (`[N, C]`) and the
/// bias; output `[N + 1, C]`: `dz = g * silu'(z + bias)`, then its column sums (dbias), summed
/// chunk by chunk in order so the bits do not depend on the thread count.
#[derive(Debug, Clone, Copy)]
struct BiasSiluGrad;

impl CustomOp3 for BiasSiluGrad {
    fn name(&self) -> &'static str {
        "bias-silu-grad"
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
        let ((n, c), [z, g, bias]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if g.len() != n * c || bias.len() != c {
            candle_core::bail!(
                "bias-silu-grad: z [{n}, {c}], gradient {}, bias {}",
                g.len(),
                bias.len()
            )
        }
        let mut out = vec![0f32; (n + 1) * c];
        let (dz, dbias) = out.split_at_mut(n * c);
        let chunk_len = ROWS_PER_TASK * c;
        for_chunks_summing(dz, chunk_len, dbias, |k, chunk, sums| {
            let at = k * chunk_len..k * chunk_len + chunk.len();
            bias_silu_grad_rows(chunk, sums, &z[at.clone()], &g[at], bias, c);
        });
        Ok((CpuStorage::F32(out), Shape::from((n + 1, c))))
    }
}

wide_kernel! {
    /// Rows of [`BiasSilu`]: `out = silu(z + bias)`, rows of `c`.
    fn bias_silu_rows / bias_silu_rows_portable(out: &mut [f32], z: &[f32], bias: &[f32], c: usize) {
        for (o_row, z_row) in out.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            for ((o, &z), &b) in o_row.iter_mut().zip(z_row).zip(bias) {
                *o = silu_and_slope(z + b).0;
            }
        }
    }
}

wide_kernel! {
    /// Rows of [`BiasSiluGrad`]: `dz = g * silu'(z + bias)` into `dz`, its column sums added
    /// into `sums`.
    fn bias_silu_grad_rows / bias_silu_grad_rows_portable(
        dz: &mut [f32],
        sums: &mut [f32],
        z: &[f32],
        g: &[f32],
        bias: &[f32],
        c: usize,
    ) {
        for ((d_row, z_row), g_row) in dz
            .chunks_exact_mut(c)
            .zip(z.chunks_exact(c))
            .zip(g.chunks_exact(c))
        {
            let (d_row, z_row, g_row, sums, bias) =
                (&mut d_row[..c], &z_row[..c], &g_row[..c], &mut sums[..c], &bias[..c]);
            for j in 0..c {
                let d = g_row[j] * silu_and_slope(z_row[j] + bias[j]).1;
                d_row[j] = d;
                sums[j] += d;
            }
        }
    }
}

/// `silu(z + bias)` (see `BiasSilu`); `z` is `[N, C]`, `bias` `[C]`.
pub fn bias_silu(z: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if super::fused_kernels(z.device()) {
        return Ok(z.contiguous()?.apply_op2(&bias.contiguous()?, BiasSilu)?);
    }
    bias_silu_generic(z, bias)
}

/// The same from generic candle ops.
pub fn bias_silu_generic(z: &Tensor, bias: &Tensor) -> Result<Tensor> {
    Ok(z.broadcast_add(bias)?.silu()?)
}

/// HSTU's attention weights from `scores` (`[B * H, L, L]`, `H` heads per row of slots) and
/// the relative position bias `bias` (`[max_len]`): `scale * silu(s + bias[i - j])` over the
/// keys each query may see (`first[slot]` up to itself, see the sequence encoder's
/// `Padded::first`), 0 elsewhere.
pub fn silu_attention(
    scores: &Tensor,
    bias: &Tensor,
    heads: usize,
    first: &[u32],
    scale: f64,
) -> Result<Tensor> {
    if !super::fused_kernels(scores.device()) {
        return silu_attention_generic(scores, bias, heads, first, scale);
    }
    let op = SiluAttention {
        visible: Visible::new(heads, first),
        scale: scale as f32,
    };
    Ok(scores.contiguous()?.apply_op2(&bias.contiguous()?, op)?)
}

/// The same from generic candle ops: the bias gathered into an `[L, L]` matrix of distances,
/// candle's SiLU, and a 0/1 mask of the visible keys.
pub fn silu_attention_generic(
    scores: &Tensor,
    bias: &Tensor,
    heads: usize,
    first: &[u32],
    scale: f64,
) -> Result<Tensor> {
    let (n, l, _) = scores.dims3()?;
    let op = SiluAttention {
        visible: Visible::new(heads, first),
        scale: scale as f32,
    };
    op.check(n, l, l, bias.dim(0)?)?;
    let distance: Vec<u32> = (0..l * l)
        .map(|k| (k / l).saturating_sub(k % l) as u32)
        .collect();
    let mut mask = vec![0f32; n * l * l];
    for m in 0..n {
        for i in 0..l {
            let keys = op.visible.keys(m, i, l);
            mask[(m * l + i) * l + keys.start..(m * l + i) * l + keys.end].fill(1.0);
        }
    }
    let dev = scores.device();
    let bias = bias
        .index_select(&Tensor::from_vec(distance, l * l, dev)?, 0)?
        .reshape((1, l, l))?;
    let weights = (scores.broadcast_add(&bias)?.silu()? * scale)?;
    Ok((weights * Tensor::from_vec(mask, (n, l, l), dev)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    use crate::testing::{assert_close, bits, uniform, values};

    /// Each sequence kernel's AVX2 copy (where this CPU runs it) gives its portable copy's
    /// bits, on rows whose lengths are no multiple of a vector's lanes, with padding slots and
    /// windows packed several to a row.
    #[test]
    fn wide_sequence_kernels_give_the_portable_bits() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut scattered = |len: usize| uniform(&mut rng, len, 6.0);
        let l = 13;
        // Per slot, the first slot of its row it may see: a row holding a window of 5 then
        // one of 8, and a row of a padding slot then a window of 12.
        let first: Vec<u32> = [[0; 5].as_slice(), &[5; 8], &[PADDING], &[1; 12]].concat();
        let op = SiluAttention {
            visible: Visible::new(1, &first),
            scale: 1.0 / 200.0,
        };
        let (s, g, bias) = (scattered(2 * l * l), scattered(2 * l * l), scattered(200));
        for m in 0..2 {
            let block = m * l * l..(m + 1) * l * l;
            let (mut wide, mut portable) = (vec![0f32; l * l], vec![0f32; l * l]);
            silu_attention_block(&op, m, &mut wide, &s[block.clone()], &bias, l);
            silu_attention_block_portable(&op, m, &mut portable, &s[block.clone()], &bias, l);
            assert_eq!(bits(&wide), bits(&portable));
            assert!(wide.iter().any(|&v| v != 0.0));
            let (mut sums_wide, mut sums_portable) = (vec![0f32; 200], vec![0f32; 200]);
            let (ss, gs) = (&s[block.clone()], &g[block]);
            silu_attention_grad_block(&op, m, &mut wide, &mut sums_wide, ss, gs, &bias, l);
            silu_attention_grad_block_portable(
                &op,
                m,
                &mut portable,
                &mut sums_portable,
                ss,
                gs,
                &bias,
                l,
            );
            assert_eq!(bits(&wide), bits(&portable));
            assert_eq!(bits(&sums_wide), bits(&sums_portable));
        }
        let (rows, c) = (7, 37);
        let (z, g, bias) = (scattered(rows * c), scattered(rows * c), scattered(c));
        let (mut wide, mut portable) = (vec![0f32; rows * c], vec![0f32; rows * c]);
        bias_silu_rows(&mut wide, &z, &bias, c);
        bias_silu_rows_portable(&mut portable, &z, &bias, c);
        assert_eq!(bits(&wide), bits(&portable));
        let (mut sums_wide, mut sums_portable) = (vec![0f32; c], vec![0f32; c]);
        bias_silu_grad_rows(&mut wide, &mut sums_wide, &z, &g, &bias, c);
        bias_silu_grad_rows_portable(&mut portable, &mut sums_portable, &z, &g, &bias, c);
        assert_eq!(bits(&wide), bits(&portable));
        assert_eq!(bits(&sums_wide), bits(&sums_portable));
        for len in [1, 7, 8, 29] {
            let (row, g) = (scattered(len), scattered(len));
            let (mut wide, mut portable) = (vec![0f32; len], vec![0f32; len]);
            causal_softmax_row(&mut wide, &row, 0.125);
            causal_softmax_row_portable(&mut portable, &row, 0.125);
            assert_eq!(bits(&wide), bits(&portable));
            let p = wide.clone();
            causal_softmax_grad_row(&mut wide, &p, &g, 0.125);
            causal_softmax_grad_row_portable(&mut portable, &p, &g, 0.125);
            assert_eq!(bits(&wide), bits(&portable));
        }
    }

    /// Layer norm: values and the gradients of x, gamma and beta equal the generic ops'.
    #[test]
    fn fused_layer_norm_matches_generic_ops() {
        let dev = Device::Cpu;
        let var = |v: Vec<f32>, shape: &[usize]| {
            Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
        };
        let x = var(
            (0..2 * 3 * 4)
                .map(|k| ((k * 7 % 11) as f32 - 5.0) / 3.0)
                .collect(),
            &[2, 3, 4],
        );
        let gamma = var(vec![1.5, 0.5, -1.0, 2.0], &[4]);
        let beta = var(vec![0.1, -0.2, 0.0, 0.3], &[4]);
        let w = Tensor::from_vec(
            (0..24).map(|k| k as f32 * 0.2 - 2.0).collect::<Vec<_>>(),
            (2, 3, 4),
            &dev,
        )
        .unwrap();
        let run = |fused: bool| {
            let f = if fused {
                layer_norm
            } else {
                layer_norm_generic
            };
            let y = f(x.as_tensor(), gamma.as_tensor(), beta.as_tensor()).unwrap();
            let g = (y.clone() * &w)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let mut all = vec![values(&y)];
            for v in [&x, &gamma, &beta] {
                all.push(values(g.get(v.as_tensor()).unwrap()));
            }
            all
        };
        for (a, b) in run(true).iter().zip(&run(false)) {
            assert_close(a, b, 1e-3);
        }
    }

    /// The causal softmax sees only itself and earlier non-padded keys, zeroes padded query
    /// rows, and its gradient equals the generic ops'.
    #[test]
    fn causal_softmax_masks_the_future_and_padding() {
        let (b, h, l) = (2, 2, 4);
        let (s, w) = scores_and_weights(b * h, l);
        // Row 0: one window of 4 slots; row 1: two padding slots, then a window of 2.
        let pad = PADDING;
        let first = [0, 0, 0, 0, pad, pad, 2, 2];
        let run = |fused: bool| {
            let f = if fused {
                causal_softmax
            } else {
                causal_softmax_generic
            };
            let p = f(s.as_tensor(), h, &first, 0.5).unwrap();
            let g = (p.clone() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (values(&p), values(g.get(s.as_tensor()).unwrap()))
        };
        let (fused, generic) = (run(true), run(false));
        assert_close(&fused.0, &generic.0, 1e-5);
        assert_close(&fused.1, &generic.1, 1e-4);
        let p = &fused.0;
        // Sequence 0, head 0, query 1: keys 0 and 1 only, summing to 1.
        let row = &p[l..2 * l];
        assert!(row[2] == 0.0 && row[3] == 0.0 && (row[0] + row[1] - 1.0).abs() < 1e-6);
        // Sequence 1 (two padded positions): query rows 0 and 1 are zero, query 2 sees key 2.
        let block = &p[2 * l * l..3 * l * l];
        assert!(block[..2 * l].iter().all(|&v| v == 0.0));
        assert_eq!(&block[2 * l..3 * l], &[0.0, 0.0, 1.0, 0.0]);
    }
    /// Attention scores for `n` blocks of `l x l` as a variable (both signs, neighbours
    /// unequal), and the weights `w` of the loss `sum(p * w)` whose gradient the tests compare.
    fn scores_and_weights(n: usize, l: usize) -> (Var, Tensor) {
        let dev = Device::Cpu;
        let at = |f: fn(usize) -> f32| {
            Tensor::from_vec((0..n * l * l).map(f).collect::<Vec<_>>(), (n, l, l), &dev).unwrap()
        };
        let scores = Var::from_tensor(&at(|k| ((k * 5 % 13) as f32 - 6.0) / 4.0)).unwrap();
        (scores, at(|k| (k % 7) as f32 - 3.0))
    }

    /// The values of `y`, and the gradients of `sum(y * w)` for the two inputs `a` and `b`.
    fn weighted_grads(y: &Tensor, w: &Tensor, a: &Var, b: &Var) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        (
            values(y),
            values(g.get(a.as_tensor()).unwrap()),
            values(g.get(b.as_tensor()).unwrap()),
        )
    }

    /// The bits of a fused op's value and gradients computed in a pool of `threads` (the
    /// parallel ops split their work the same way on any count).
    fn bits_on(
        threads: usize,
        run: impl FnOnce() -> (Vec<f32>, Vec<f32>, Vec<f32>) + Send,
    ) -> Vec<u32> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (y, a, b) = pool.install(run);
        bits(&[y, a, b].concat())
    }

    /// HSTU's projection tail: values and the gradients of z and the bias equal candle's
    /// `broadcast_add` then `silu`, over more rows than one parallel chunk holds (so the
    /// bias's gradient is summed across chunks), with large magnitudes of both signs.
    #[test]
    fn bias_silu_matches_generic_ops() {
        let dev = Device::Cpu;
        let (n, c) = (ROWS_PER_TASK * 2 + 37, 5);
        let z = Var::from_tensor(
            &Tensor::from_vec(
                (0..n * c)
                    .map(|k| ((k * 7 % 29) as f32 - 14.0) * 0.9)
                    .collect::<Vec<_>>(),
                (n, c),
                &dev,
            )
            .unwrap(),
        )
        .unwrap();
        let bias = Var::from_tensor(&Tensor::new(&[0.3f32, -2.0, 0.0, 1.5, -90.0], &dev).unwrap())
            .unwrap();
        let w = Tensor::from_vec(
            (0..n * c)
                .map(|k| (k % 11) as f32 * 0.25 - 1.0)
                .collect::<Vec<_>>(),
            (n, c),
            &dev,
        )
        .unwrap();
        let run = |fused: bool| {
            let f = if fused { bias_silu } else { bias_silu_generic };
            weighted_grads(&f(z.as_tensor(), bias.as_tensor()).unwrap(), &w, &z, &bias)
        };
        let (fused, generic) = (run(true), run(false));
        // The row chunks run in parallel: one thread or two give the same bits.
        assert_eq!(bits_on(1, || run(true)), bits_on(2, || run(true)));
        assert_close(&fused.0, &generic.0, 1e-5);
        assert_close(&fused.1, &generic.1, 1e-5);
        // Summed over 549 rows: the tolerance scales with the sum's magnitude.
        assert_close(&fused.2, &generic.2, 1e-3);
        // By hand: silu(0) = 0 with slope 1/2; far below zero the value and slope vanish.
        let z0 = values(z.as_tensor());
        let k = (0..n).find(|&r| z0[r * c + 2] == 0.0).unwrap();
        assert_eq!(fused.0[k * c + 2], 0.0);
        assert!(fused.0.iter().skip(4).step_by(c).all(|v| v.abs() < 1e-20));
    }

    /// HSTU's attention: only itself and earlier keys of its segment, padding rows zero, and
    /// the gradients of the scores and of the position bias equal the generic ops'.
    #[test]
    fn silu_attention_matches_generic_ops_and_masks() {
        let dev = Device::Cpu;
        let (b, h, l, max_len) = (2, 2, 4, 6);
        let (s, w) = scores_and_weights(b * h, l);
        let bias = Var::from_tensor(
            &Tensor::from_vec(vec![0.3f32, -0.2, 0.5, 0.1, -0.4, 0.7], max_len, &dev).unwrap(),
        )
        .unwrap();
        // Row 0: windows of 3 and 1 slots; row 1: two padding slots, then a window of 2.
        let pad = PADDING;
        let first = [0, 0, 0, 3, pad, pad, 2, 2];
        let run = |fused: bool| {
            let f = if fused {
                silu_attention
            } else {
                silu_attention_generic
            };
            let p = f(s.as_tensor(), bias.as_tensor(), h, &first, 0.25).unwrap();
            weighted_grads(&p, &w, &s, &bias)
        };
        let (fused, generic) = (run(true), run(false));
        // One task per attention block: one thread or two give the same bits.
        assert_eq!(bits_on(1, || run(true)), bits_on(2, || run(true)));
        assert_close(&fused.0, &generic.0, 1e-5);
        assert_close(&fused.1, &generic.1, 1e-4);
        assert_close(&fused.2, &generic.2, 1e-4);
        let p = &fused.0;
        let silu = |x: f32| x / (1.0 + (-x).exp());
        // Row 0, head 0, query 1 sees keys 0 and 1 (distances 1 and 0), nothing later.
        let s0: Vec<f32> = values(s.as_tensor());
        assert!((p[l] - 0.25 * silu(s0[l] - 0.2)).abs() < 1e-6);
        assert!((p[l + 1] - 0.25 * silu(s0[l + 1] + 0.3)).abs() < 1e-6);
        assert!(p[l + 2] == 0.0 && p[l + 3] == 0.0);
        // Query 3 is a window of its own: it sees only itself.
        assert!(p[3 * l..3 * l + 3].iter().all(|&v| v == 0.0) && p[3 * l + 3] != 0.0);
        // Row 1: padding queries are zero; query 2 sees key 2 only.
        let block = &p[2 * l * l..3 * l * l];
        assert!(block[..2 * l].iter().all(|&v| v == 0.0));
        assert!(
            block[2 * l..3 * l]
                .iter()
                .enumerate()
                .all(|(j, &v)| (j == 2) == (v != 0.0))
        );
        // The bias at distances the windows never reach gets no gradient.
        assert!(fused.2[4] == 0.0 && fused.2[5] == 0.0 && fused.2[0] != 0.0);
    }
}
