//! Fused CPU ops for the towers' element-wise tails, each with a hand-written backward.
//!
//! candle builds `z + bias` then PReLU (`max(x, 0) + a * min(x, 0)`) and row-wise L2
//! normalisation out of several generic ops, each with a full-size temporary forward and more
//! in its backward (broadcast reductions, comparison masks). On CPU that made a DSSM step at
//! torch-rechub's sizes spend about 60 of its 80 ms in the backward pass (measured). These ops
//! do one pass forward and one backward. On other devices the same maths runs through
//! generic candle ops (what the tests compare against).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};

use crate::error::Result;
pub use crate::ops::kernel::bias_activation_generic;
use crate::ops::kernel::{contiguous, fast_exp, inputs3, lane_max, lane_sum, wide_kernel};
use crate::ops::norm_op::{Affine, activate, activate_backward};
use crate::ops::par::for_rows;

/// `y = act(z + bias)` with `act(v) = v` for `v > 0`, else `alpha[c] * v` per column `c`:
/// alpha 0 is ReLU, alpha 1 the identity, a learned alpha PReLU.
#[derive(Debug, Clone, Copy)]
struct BiasActivation;

impl CustomOp3 for BiasActivation {
    fn name(&self) -> &'static str {
        "bias-activation"
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
        let ((n, c), [z, bias, alpha]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if bias.len() != c || alpha.len() != c {
            candle_core::bail!(
                "bias-activation: {c} columns, bias {}, alpha {}",
                bias.len(),
                alpha.len()
            )
        }
        let out = activate(z, &Affine::bias(bias), alpha);
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    fn bwd(
        &self,
        z: &Tensor,
        bias: &Tensor,
        alpha: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = z.dim(0)?;
        // One op reads the storages in place (no copies out of candle) and returns the three
        // gradients stacked as rows: `[N, C]` for z, then bias, then alpha.
        let bias_alpha = Tensor::stack(&[bias, alpha], 0)?;
        let all = z.apply_op3_no_bwd(&grad.contiguous()?, &bias_alpha, &BiasActivationGrad)?;
        Ok((
            Some(all.narrow(0, 0, n)?),
            Some(all.get(n)?),
            Some(all.get(n + 1)?),
        ))
    }
}

/// The backward pass of [`BiasActivation`]: inputs `z [N, C]`, the incoming gradient
/// `[N, C]` and `[bias; alpha]` as `[2, C]`; output `[N + 2, C]`: dz, then dbias, then dalpha.
#[derive(Debug, Clone, Copy)]
struct BiasActivationGrad;

impl CustomOp3 for BiasActivationGrad {
    fn name(&self) -> &'static str {
        "bias-activation-grad"
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
        let ((n, c), [z, g, bias_alpha]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if g.len() != n * c || bias_alpha.len() != 2 * c {
            candle_core::bail!(
                "bias-activation-grad: z [{n}, {c}], gradient {}, bias and alpha {}",
                g.len(),
                bias_alpha.len()
            )
        }
        let (bias, alpha) = bias_alpha.split_at(c);
        let t = activate_backward(z, g, &Affine::bias(bias), alpha, None);
        let mut out = t.dz;
        out.reserve(2 * c);
        out.extend(t.dbias);
        out.extend(t.dalpha);
        Ok((CpuStorage::F32(out), Shape::from((n + 2, c))))
    }
}

/// `act(z + bias)` (see `BiasActivation`); `z` is `[N, C]`, `bias` and `alpha` `[C]`.
pub fn bias_activation(z: &Tensor, bias: &Tensor, alpha: &Tensor) -> Result<Tensor> {
    if super::fused_kernels(z.device()) {
        let z = z.contiguous()?;
        return Ok(z.apply_op3(bias, alpha, BiasActivation)?);
    }
    bias_activation_generic(z, bias, alpha)
}

/// Row-wise `x / sqrt(sum(x^2) + eps)`.
#[derive(Debug, Clone, Copy)]
struct L2Normalize;

const L2_EPS: f32 = 1e-12;

impl CustomOp1 for L2Normalize {
    fn name(&self) -> &'static str {
        "l2-normalize"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, d) = layout.shape().dims2()?;
        let x = contiguous(storage, layout, self.name())?;
        let mut out = Vec::with_capacity(n * d);
        for row in x.chunks_exact(d) {
            let norm = (row.iter().map(|v| v * v).sum::<f32>() + L2_EPS).sqrt();
            out.extend(row.iter().map(|v| v / norm));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, d))))
    }

    /// With `y = x / r`, `r = sqrt(|x|^2 + eps)`: `dx = (g - y * (g . y)) / r`.
    fn bwd(
        &self,
        arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let out = arg.apply_op3_no_bwd(res, &grad.contiguous()?, &L2NormalizeGrad)?;
        Ok(Some(out))
    }
}

/// The backward pass of [`L2Normalize`]: inputs x, y and the incoming gradient, all `[N, D]`.
#[derive(Debug, Clone, Copy)]
struct L2NormalizeGrad;

impl CustomOp3 for L2NormalizeGrad {
    fn name(&self) -> &'static str {
        "l2-normalize-grad"
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
        let ((n, d), [x, y, g]) = inputs3(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        if y.len() != n * d || g.len() != n * d {
            candle_core::bail!(
                "l2-normalize-grad: x [{n}, {d}], y {}, gradient {}",
                y.len(),
                g.len()
            )
        }
        let mut out = vec![0f32; n * d];
        for (((o, x), y), g) in out
            .chunks_exact_mut(d)
            .zip(x.chunks_exact(d))
            .zip(y.chunks_exact(d))
            .zip(g.chunks_exact(d))
        {
            let norm = (x.iter().map(|v| v * v).sum::<f32>() + L2_EPS).sqrt();
            let dot: f32 = g.iter().zip(y).map(|(a, b)| a * b).sum();
            for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                *o = (g - y * dot) / norm;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, d))))
    }
}

/// Row-wise L2 normalisation of a `[N, D]` tensor.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    if super::fused_kernels(x.device()) && x.rank() == 2 {
        return Ok(x.contiguous()?.apply_op1(L2Normalize)?);
    }
    l2_normalize_generic(x)
}

/// The same from generic candle ops.
pub fn l2_normalize_generic(x: &Tensor) -> Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + f64::from(L2_EPS))?.sqrt()?;
    Ok(x.broadcast_div(&norm)?)
}

/// `scores[b, j] = scale * users[b] · items[b * c + j]`: each row's own `c` candidates, as a
/// sampled loss scores them. Generic ops broadcast the users over `[B, c, d]`, multiply and
/// sum (three passes over that size forward, more backward); this is one each way.
#[derive(Debug, Clone, Copy)]
struct RowScores {
    candidates: usize,
    scale: f32,
}

impl CustomOp2 for RowScores {
    fn name(&self) -> &'static str {
        "row-scores"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, d) = l1.shape().dims2()?;
        let c = self.candidates;
        let users = contiguous(s1, l1, self.name())?;
        let items = contiguous(s2, l2, self.name())?;
        if items.len() != b * c * d {
            candle_core::bail!(
                "row-scores: users [{b}, {d}], {} item values for {c} each",
                items.len()
            )
        }
        let out: Vec<f32> = users
            .chunks_exact(d)
            .zip(items.chunks_exact(c * d))
            .flat_map(|(u, row)| {
                row.chunks_exact(d)
                    .map(move |v| self.scale * u.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from((b, c))))
    }

    fn bwd(
        &self,
        users: &Tensor,
        items: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, d) = users.dims2()?;
        let c = self.candidates;
        let u: Vec<f32> = users.flatten_all()?.to_vec1()?;
        let v: Vec<f32> = items.flatten_all()?.to_vec1()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let mut du = vec![0f32; b * d];
        let mut dv = vec![0f32; b * c * d];
        for r in 0..b {
            let ur = &u[r * d..(r + 1) * d];
            let dur = &mut du[r * d..(r + 1) * d];
            for j in 0..c {
                let k = self.scale * g[r * c + j];
                let at = (r * c + j) * d;
                dur.iter_mut()
                    .zip(&v[at..at + d])
                    .for_each(|(o, x)| *o += k * x);
                dv[at..at + d]
                    .iter_mut()
                    .zip(ur)
                    .for_each(|(o, x)| *o = k * x);
            }
        }
        Ok((
            Some(Tensor::from_vec(du, (b, d), users.device())?),
            Some(Tensor::from_vec(dv, items.shape(), items.device())?),
        ))
    }
}

/// `[B, c]` scores of each user against its own `c` candidates (`items` `[B * c, d]`, row
/// `b`'s first), times `scale`.
pub fn row_scores(users: &Tensor, items: &Tensor, candidates: usize, scale: f64) -> Result<Tensor> {
    if super::fused_kernels(users.device()) {
        let op = RowScores {
            candidates,
            scale: scale as f32,
        };
        return Ok(users.contiguous()?.apply_op2(&items.contiguous()?, op)?);
    }
    row_scores_generic(users, items, candidates, scale)
}

/// The same from generic candle ops.
pub fn row_scores_generic(
    users: &Tensor,
    items: &Tensor,
    candidates: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, d) = users.dims2()?;
    let v = items.reshape((b, candidates, d))?;
    Ok((v.broadcast_mul(&users.unsqueeze(1)?)?.sum(D::Minus1)? * scale)?)
}

/// Softmax cross-entropy over candidates the rows share, row `i`'s label in column
/// `labels[i]` (in-batch: column `i`): per row `logsumexp_j(x_ij) - x_i,label` with
/// `x_ij = scale * l_ij + column_bias[j]`, where columns other than the label that hold row
/// `i`'s own target (accidental hits) are left out. Output: the per-row losses `[B]`.
///
/// Built from generic ops this was a bias matrix, an add, a scaled copy, candle's log-softmax
/// (max, subtract, exp, sum, log, subtract), a gather and the backward of each: a dozen passes
/// over `[B, C]` (1M values at batch 1,024). Here it is one pass forward and one backward; the
/// forward keeps the softmax for the backward, so `exp` runs once per value.
#[derive(Debug)]
struct InBatchSoftmax {
    columns: SoftmaxColumns,
    /// The forward pass's softmax, taken by the backward pass.
    softmax: std::sync::Mutex<Vec<f32>>,
}

/// What a softmax loss over shared candidates is over: the scale, each column's item and
/// correction, each row's own target and label column. The one owner of the loss's row
/// kernel, for the op over logits ([`softmax_loss`]) and the op over vectors
/// (`score_op::vector_softmax_loss`).
#[derive(Debug)]
pub(crate) struct SoftmaxColumns {
    pub(crate) scale: f32,
    pub(crate) row_targets: Vec<u32>,
    pub(crate) column_items: Vec<u32>,
    pub(crate) column_bias: Vec<f32>,
    pub(crate) labels: Vec<u32>,
    /// Columns each row leaves out besides its target's duplicates (none when empty).
    pub(crate) excluded: RowExclusions,
}

/// Columns each row of a softmax loss leaves out of its denominator: the items its user
/// interacted with before the row's target, when training matches evaluation with the seen
/// filter (`TrainConfig::exclude_seen`). A row's label column is never left out. Rows share
/// one buffer: rows of one window read longer and longer prefixes of its user's history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowExclusions {
    /// Row `i`'s columns are `columns[spans[i].0 ..][.. spans[i].1]`; no spans: nothing left out.
    spans: Vec<(u32, u32)>,
    columns: Vec<u32>,
}

impl RowExclusions {
    /// Appends `columns` to the shared buffer and returns where they start, for [`Self::push_row`].
    pub fn extend(&mut self, columns: impl IntoIterator<Item = u32>) -> u32 {
        let start = self.columns.len() as u32;
        self.columns.extend(columns);
        start
    }

    /// Adds the next row: it leaves out the `len` columns from `start` of the shared buffer
    /// (which must hold them: `row` slices it).
    pub fn push_row(&mut self, start: u32, len: u32) {
        assert!(
            (start as usize + len as usize) <= self.columns.len(),
            "a row's exclusions must lie inside the shared buffer"
        );
        self.spans.push((start, len));
    }

    /// Rows given (0 when nothing is left out).
    pub fn rows(&self) -> usize {
        self.spans.len()
    }

    /// The columns row `i` leaves out (its label may be among them; it is kept).
    pub fn row(&self, i: usize) -> &[u32] {
        match self.spans.get(i) {
            Some(&(start, len)) => &self.columns[start as usize..(start + len) as usize],
            None => &[],
        }
    }
}

impl SoftmaxColumns {
    pub(crate) fn new(
        scale: f64,
        row_targets: &[u32],
        column_items: &[u32],
        column_bias: &[f32],
        labels: &[u32],
    ) -> Self {
        SoftmaxColumns {
            scale: scale as f32,
            row_targets: row_targets.to_vec(),
            column_items: column_items.to_vec(),
            column_bias: column_bias.to_vec(),
            labels: labels.to_vec(),
            excluded: RowExclusions::default(),
        }
    }

    /// The same, with each row leaving out `excluded`'s columns for it.
    pub(crate) fn excluding(mut self, excluded: Option<&RowExclusions>) -> Self {
        self.excluded = excluded.cloned().unwrap_or_default();
        self
    }

    /// Fails unless there are `rows` targets and labels, `columns` items and corrections, and
    /// every label is a column.
    pub(crate) fn check(&self, op: &str, rows: usize, columns: usize) -> candle_core::Result<()> {
        if self.row_targets.len() != rows
            || self.labels.len() != rows
            || self.column_items.len() != columns
            || self.column_bias.len() != columns
            || self.labels.iter().any(|&l| l as usize >= columns)
            || (self.excluded.rows() != 0 && self.excluded.rows() != rows)
            || self.excluded.columns.iter().any(|&c| c as usize >= columns)
        {
            candle_core::bail!(
                "{op}: scores of {rows} rows x {columns} columns, {} targets, {} labels, {} candidates, {} corrections",
                self.row_targets.len(),
                self.labels.len(),
                self.column_items.len(),
                self.column_bias.len()
            )
        }
        Ok(())
    }

    /// Row `i`'s raw scores `x` in place into its softmax; returns the row's loss.
    #[inline]
    pub(crate) fn softmax_row(&self, i: usize, x: &mut [f32]) -> f32 {
        softmax_row(self, i, x)
    }
}

wide_kernel! {
    /// [`SoftmaxColumns::softmax_row`].
    fn softmax_row / softmax_row_portable(columns: &SoftmaxColumns, i: usize, x: &mut [f32]) -> f32 {
        let (target, label) = (columns.row_targets[i], columns.labels[i] as usize);
        let raw_label = x[label];
        // Branch-free over the row; the label column is never a hit and is set after.
        for (x, (&bias, &item)) in x
            .iter_mut()
            .zip(columns.column_bias.iter().zip(&columns.column_items))
        {
            *x = if item == target {
                f32::NEG_INFINITY
            } else {
                columns.scale * *x + bias
            };
        }
        for &c in columns.excluded.row(i) {
            x[c as usize] = f32::NEG_INFINITY;
        }
        x[label] = columns.scale * raw_label + columns.column_bias[label];
        let max = lane_max(x);
        let label_logit = x[label] - max;
        x.iter_mut().for_each(|v| *v = fast_exp(*v - max));
        let sum = lane_sum(x);
        let inverse = 1.0 / sum;
        x.iter_mut().for_each(|v| *v *= inverse);
        // loss = logsumexp - x_label = ln(sum) + max - x_label.
        sum.ln() - label_logit
    }
}

impl InBatchSoftmax {
    fn cache(&self) -> candle_core::Result<std::sync::MutexGuard<'_, Vec<f32>>> {
        self.softmax.lock().map_err(|_| {
            candle_core::Error::Msg("in-batch-softmax: a panic poisoned the softmax cache".into())
        })
    }
}

impl CustomOp1 for InBatchSoftmax {
    fn name(&self) -> &'static str {
        "in-batch-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c) = layout.shape().dims2()?;
        let logits = contiguous(storage, layout, self.name())?;
        self.columns.check(self.name(), b, c)?;
        // The softmax is computed in place over a copy of the logits.
        let mut softmax = logits.to_vec();
        let losses: Vec<f32> = {
            use rayon::prelude::*;
            softmax
                .par_chunks_mut(c)
                .enumerate()
                .with_min_len(crate::ops::par::ROWS_PER_TASK)
                .map(|(i, x)| self.columns.softmax_row(i, x))
                .collect()
        };
        *self.cache()? = softmax;
        Ok((CpuStorage::F32(losses), Shape::from(b)))
    }

    /// `d loss_i / d l_ij = scale * (softmax_ij - [i == j])`, times the incoming `grad_i`.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, c) = arg.dims2()?;
        let mut d = std::mem::take(&mut *self.cache()?);
        if d.len() != b * c {
            candle_core::bail!("in-batch-softmax: backward without its forward pass")
        }
        let g: Vec<f32> = grad.to_vec1()?;
        for_rows(&mut d, c, |first, chunk| {
            for (k, row) in chunk.chunks_exact_mut(c).enumerate() {
                let i = first + k;
                row[self.columns.labels[i] as usize] -= 1.0;
                let s = g[i] * self.columns.scale;
                row.iter_mut().for_each(|v| *v *= s);
            }
        });
        Ok(Some(Tensor::from_vec(d, (b, c), arg.device())?))
    }
}

/// Mean in-batch softmax cross-entropy of `logits [B, C]` (user-candidate dot products):
/// row `i`'s label is column `i`, `row_targets[i]` its item; `column_items[j]` is column `j`'s
/// item and `column_bias[j]` its correction (minus log q, or 0). Scores are `logits * scale`
/// plus the correction; columns holding a row's own target elsewhere are masked.
pub fn in_batch_softmax_loss(
    logits: &Tensor,
    scale: f64,
    row_targets: &[u32],
    column_items: &[u32],
    column_bias: &[f32],
) -> Result<Tensor> {
    let labels: Vec<u32> = (0..row_targets.len() as u32).collect();
    softmax_loss(
        logits,
        scale,
        row_targets,
        column_items,
        column_bias,
        &labels,
    )
}

/// [`in_batch_softmax_loss`] with row `i`'s label in column `labels[i]`: the form for a
/// candidate set the rows share (the whole catalogue, the batch's distinct targets plus
/// sampled items).
pub fn softmax_loss(
    logits: &Tensor,
    scale: f64,
    row_targets: &[u32],
    column_items: &[u32],
    column_bias: &[f32],
    labels: &[u32],
) -> Result<Tensor> {
    if super::fused_kernels(logits.device()) {
        let op = InBatchSoftmax {
            columns: SoftmaxColumns::new(scale, row_targets, column_items, column_bias, labels),
            softmax: Default::default(),
        };
        return Ok(logits.contiguous()?.apply_op1(op)?.mean_all()?);
    }
    softmax_loss_generic(
        logits,
        scale,
        row_targets,
        column_items,
        column_bias,
        labels,
        None,
    )
}

/// The same from generic candle ops, each row also leaving out `excluded`'s columns for it
/// (none: only the duplicates of its target).
pub fn softmax_loss_generic(
    logits: &Tensor,
    scale: f64,
    row_targets: &[u32],
    column_items: &[u32],
    column_bias: &[f32],
    labels: &[u32],
    excluded: Option<&RowExclusions>,
) -> Result<Tensor> {
    let (b, c) = logits.dims2()?;
    let mut bias = Vec::with_capacity(b * c);
    for (i, (&target, &label)) in row_targets.iter().zip(labels).enumerate() {
        let row = bias.len();
        for (j, (&item, &correction)) in column_items.iter().zip(column_bias).enumerate() {
            let hit = j != label as usize && item == target;
            bias.push(if hit { f32::NEG_INFINITY } else { correction });
        }
        for &j in excluded.map_or(&[][..], |e| e.row(i)) {
            if j != label {
                bias[row + j as usize] = f32::NEG_INFINITY;
            }
        }
    }
    let dev = logits.device();
    let x = ((logits * scale)? + Tensor::from_vec(bias, (b, c), dev)?)?;
    let labels = Tensor::from_slice(labels, (b, 1), dev)?;
    let ls = candle_nn::ops::log_softmax(&x, D::Minus1)?;
    Ok(ls.gather(&labels, 1)?.mean_all()?.neg()?)
}

/// [`in_batch_softmax_loss`] from generic candle ops.
pub fn in_batch_softmax_loss_generic(
    logits: &Tensor,
    scale: f64,
    row_targets: &[u32],
    column_items: &[u32],
    column_bias: &[f32],
) -> Result<Tensor> {
    let labels: Vec<u32> = (0..row_targets.len() as u32).collect();
    softmax_loss_generic(
        logits,
        scale,
        row_targets,
        column_items,
        column_bias,
        &labels,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::testing::{bits, values};

    fn close(a: &Tensor, b: &Tensor) -> bool {
        let (a, b) = (values(a), values(b));
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// Values and every gradient of the fused ops equal those of the generic candle ops.
    #[test]
    fn fused_ops_match_generic_ops_forward_and_backward() {
        let dev = Device::Cpu;
        let var = |v: &[f32], shape: &[usize]| {
            Var::from_tensor(&Tensor::from_vec(v.to_vec(), shape, &dev).unwrap()).unwrap()
        };
        let z = var(&[0.5, -1.0, 2.0, -0.2, 0.3, -3.0], &[2, 3]);
        let b = var(&[0.1, 0.4, -2.5], &[3]);
        let a = var(&[0.25, 0.0, 1.0], &[3]);
        let w = Tensor::new(&[[1f32, -2.0, 0.5], [3.0, 1.0, -1.0]], &dev).unwrap();
        let run = |fused: bool| {
            let y = if fused {
                bias_activation(z.as_tensor(), b.as_tensor(), a.as_tensor())
            } else {
                bias_activation_generic(z.as_tensor(), b.as_tensor(), a.as_tensor())
            }
            .unwrap();
            let n = if fused {
                l2_normalize(&y)
            } else {
                l2_normalize_generic(&y)
            }
            .unwrap();
            let grads = (n * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (y, g(&z), g(&b), g(&a))
        };
        let (y1, gz1, gb1, ga1) = run(true);
        let (y2, gz2, gb2, ga2) = run(false);
        assert!(close(&y1, &y2), "{y1} {y2}");
        assert!(close(&gz1, &gz2), "{gz1} {gz2}");
        assert!(close(&gb1, &gb2), "{gb1} {gb2}");
        assert!(close(&ga1, &ga2), "{ga1} {ga2}");
        // By hand: row 0 of z + b is [0.6, -0.6, -0.5]; PReLU with alpha [0.25, 0, 1].
        assert_eq!(y1.to_vec2::<f32>().unwrap()[0], vec![0.6, 0.0, -0.5]);
    }

    /// Row scores and their gradients equal the generic broadcast-multiply-sum.
    #[test]
    fn row_scores_match_generic_ops() {
        let dev = Device::Cpu;
        let (b, c, d) = (3, 4, 5);
        let var = |n: usize, k: usize| {
            let v: Vec<f32> = (0..n).map(|i| ((i * k % 13) as f32 - 6.0) / 5.0).collect();
            Var::from_tensor(&Tensor::from_vec(v, n, &dev).unwrap()).unwrap()
        };
        let (u, v) = (var(b * d, 7), var(b * c * d, 3));
        let w = Tensor::from_vec(
            (0..b * c).map(|i| i as f32 - 4.0).collect::<Vec<_>>(),
            (b, c),
            &dev,
        )
        .unwrap();
        let run = |fused: bool| {
            let (ut, vt) = (
                u.as_tensor().reshape((b, d)).unwrap(),
                v.as_tensor().reshape((b * c, d)).unwrap(),
            );
            let f = if fused {
                row_scores
            } else {
                row_scores_generic
            };
            let s = f(&ut, &vt, c, 20.0).unwrap();
            let g = (s.clone() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                values(&s),
                values(g.get(u.as_tensor()).unwrap()),
                values(g.get(v.as_tensor()).unwrap()),
            )
        };
        let (a, bb) = (run(true), run(false));
        for (x, y) in [(&a.0, &bb.0), (&a.1, &bb.1), (&a.2, &bb.2)] {
            assert!(
                x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-3),
                "{x:?} vs {y:?}"
            );
        }
    }

    /// `fast_exp` stays within 3e-7 of libm's `exp` (relative) over the range that does not
    /// flush to zero, and gives exactly 0 for -inf.
    #[test]
    fn fast_exp_is_accurate_and_zero_at_minus_infinity() {
        let mut worst = 0f64;
        for k in 0..=174_900 {
            let x = -87.0 + k as f32 * 0.001;
            let exact = f64::from(x).exp();
            let err = ((f64::from(fast_exp(x)) - exact) / exact).abs();
            worst = worst.max(err);
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-200.0), 0.0);
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(
            lane_max(&[1.0, 5.0, -3.0, 2.0, 0.0, 4.9, 1.0, 1.0, 1.0, 7.5]),
            7.5
        );
        assert_eq!(lane_sum(&[1.0; 11]), 11.0);
    }

    /// The softmax row's AVX2 copy (where this CPU runs it) gives its portable copy's bits
    /// and loss, on rows whose lengths are no multiple of a vector's lanes, with masked
    /// target duplicates and left-out columns.
    #[test]
    fn wide_softmax_row_gives_the_portable_bits() {
        for c in [1usize, 7, 8, 37, 3706] {
            let raw: Vec<f32> = (0..c)
                .map(|k| ((k * 7919 % 1013) as f32 - 506.0) / 97.0)
                .collect();
            let items: Vec<u32> = (0..c as u32).map(|k| 2 + k % 29).collect();
            let bias: Vec<f32> = (0..c).map(|k| (k % 5) as f32 * -0.3).collect();
            let mut excluded = RowExclusions::default();
            let start = excluded.extend((0..c as u32).step_by(3));
            excluded.push_row(start, c.div_ceil(3) as u32);
            let columns = SoftmaxColumns::new(
                20.0,
                &[2 + (c as u32 - 1) % 29],
                &items,
                &bias,
                &[c as u32 - 1],
            )
            .excluding(Some(&excluded));
            let (mut wide, mut portable) = (raw.clone(), raw);
            let loss = softmax_row(&columns, 0, &mut wide);
            let portable_loss = softmax_row_portable(&columns, 0, &mut portable);
            assert_eq!(loss.to_bits(), portable_loss.to_bits(), "{c} columns");
            assert_eq!(bits(&wide), bits(&portable), "{c} columns");
            assert!(loss.is_finite() && (wide.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
    }

    /// The fused in-batch softmax gives the generic ops' loss and gradient, with accidental
    /// hits among the targets (rows 0 and 2 share item 5) and among the extra columns.
    #[test]
    fn in_batch_softmax_matches_generic_ops_and_masks_hits() {
        let dev = Device::Cpu;
        let (b, c) = (4, 6);
        let raw: Vec<f32> = (0..b * c)
            .map(|k| ((k * 7 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let logits = Var::from_tensor(&Tensor::from_vec(raw, (b, c), &dev).unwrap()).unwrap();
        let targets = [5u32, 7, 5, 9];
        let items = [5u32, 7, 5, 9, 7, 3];
        let bias = [0.3f32, -0.2, 0.3, 0.1, -0.5, 0.0];
        // Weights per row so the incoming gradient is not uniform.
        let w = Tensor::new(&[1f32, 2.0, 0.5, 3.0], &dev).unwrap();
        let run = |fused: bool| {
            let f = if fused {
                in_batch_softmax_loss
            } else {
                in_batch_softmax_loss_generic
            };
            let loss = f(logits.as_tensor(), 20.0, &targets, &items, &bias).unwrap();
            let weighted = f(
                &logits
                    .as_tensor()
                    .broadcast_mul(&w.unsqueeze(1).unwrap())
                    .unwrap(),
                20.0,
                &targets,
                &items,
                &bias,
            )
            .unwrap();
            let grads = (loss.clone() + weighted).unwrap().backward().unwrap();
            (loss, grads.get(logits.as_tensor()).unwrap().clone())
        };
        let (l1, g1) = run(true);
        let (l2, g2) = run(false);
        let (l1, l2) = (
            l1.to_scalar::<f32>().unwrap(),
            l2.to_scalar::<f32>().unwrap(),
        );
        assert!((l1 - l2).abs() < 1e-4 * l2.abs().max(1.0), "{l1} vs {l2}");
        let (g1, g2) = (values(&g1), values(&g2));
        for (a, b) in g1.iter().zip(&g2) {
            assert!((a - b).abs() < 1e-4, "{g1:?} vs {g2:?}");
        }
        // Masked: row 0's column 2 (item 5 again), row 1's column 4 (item 7 again).
        assert_eq!(g1[2], 0.0);
        assert_eq!(g1[c + 4], 0.0);
    }
}
