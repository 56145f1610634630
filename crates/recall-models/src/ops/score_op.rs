//! The softmax loss straight from the vectors: `mean_i CE(softmax(scale * u_i V^T + bias), label_i)`
//! for position (or row) vectors `u` `[N, d]` and candidate vectors `V` `[C, d]`, without the
//! `[N, C]` logits ever becoming a tensor.
//!
//! A SASRec step scores about 7,300 positions against the whole ML-1M catalogue (3,704 items):
//! as candle tensors that was a 108 MB product, its softmax, its gradient, and, in candle's
//! backward pass, a zeroed gradient buffer plus a sum for each, every step. Page zeroing, memset
//! and those sums were a quarter of the step in a profile (MEASUREMENTS.md, issue 17). Here the
//! rows go in blocks through one reused buffer: the block's logits, its softmax and loss, then
//! its gradient, which goes straight into `du` (this block's rows) and `dv` (accumulated over
//! blocks in order). The loss is the graph's last node, so the gradient is computed in the
//! forward pass and scaled by the incoming gradient in the backward pass.
//!
//! The same row kernel as [`crate::ops::fused::softmax_loss`] over `u.matmul(v.t())` (masking,
//! correction, `fast_exp`: `fused::SoftmaxColumns`); the tests compare the two, values and
//! gradients. Other devices take the generic path.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;
use recall_eval::matmul::{Matrix, matmul};

use crate::error::Result;
use crate::ops::fused::{RowExclusions, SoftmaxColumns};
use crate::ops::kernel::contiguous;

/// Rows per block: a `[256, C]` buffer (3.8 MB at ML-1M's catalogue) stays in cache between the
/// product that writes it and the two that read it.
const BLOCK_ROWS: usize = 256;

/// What the loss is over, besides the two vector tensors.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// Each row's own target item (a column holding it is masked unless it is the label).
    pub row_targets: &'a [u32],
    /// The item of each column.
    pub column_items: &'a [u32],
    /// Added to each column's scaled logit (e.g. `-log q`).
    pub column_bias: &'a [f32],
    /// The label column of each row.
    pub labels: &'a [u32],
    /// Columns each row also leaves out (the items its user saw before its target).
    pub excluded: Option<&'a RowExclusions>,
}

/// Mean softmax cross-entropy of `scale * u v^T + bias` against the label columns, with every
/// other column holding a row's own target masked out. `u` `[N, d]`, `v` `[C, d]`.
pub fn vector_softmax_loss(
    u: &Tensor,
    v: &Tensor,
    scale: f64,
    columns: Columns<'_>,
) -> Result<Tensor> {
    if super::fused_kernels(u.device()) {
        let op = VectorSoftmax {
            columns: SoftmaxColumns::new(
                scale,
                columns.row_targets,
                columns.column_items,
                columns.column_bias,
                columns.labels,
            )
            .excluding(columns.excluded),
            grads: Mutex::new(None),
        };
        return Ok(u.contiguous()?.apply_op2(&v.contiguous()?, op)?);
    }
    crate::ops::fused::softmax_loss_generic(
        &u.matmul(&v.t()?)?,
        scale,
        columns.row_targets,
        columns.column_items,
        columns.column_bias,
        columns.labels,
        columns.excluded,
    )
}

#[derive(Debug)]
struct VectorSoftmax {
    columns: SoftmaxColumns,
    /// `d loss / d u` and `d loss / d v` from the forward pass, taken by the backward pass.
    grads: Mutex<Option<Grads>>,
}

/// `d loss / d u`, `d loss / d v`.
type Grads = (Vec<f32>, Vec<f32>);

impl VectorSoftmax {
    fn cache(&self) -> candle_core::Result<std::sync::MutexGuard<'_, Option<Grads>>> {
        self.grads.lock().map_err(|_| {
            candle_core::Error::Msg("vector-softmax: a panic poisoned the gradient cache".into())
        })
    }

    /// Turns one row of logits into `scale / n * (softmax - onehot(label))` and returns the
    /// row's loss.
    fn row(&self, i: usize, x: &mut [f32], inverse_n: f32) -> f32 {
        let loss = self.columns.softmax_row(i, x);
        let g = self.columns.scale * inverse_n;
        x.iter_mut().for_each(|v| *v *= g);
        x[self.columns.labels[i] as usize] -= g;
        loss
    }
}

impl CustomOp2 for VectorSoftmax {
    fn name(&self) -> &'static str {
        "vector-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, d) = l1.shape().dims2()?;
        let (c, dv) = l2.shape().dims2()?;
        if d != dv {
            candle_core::bail!("vector-softmax: u [{n}, {d}] and v [{c}, {dv}] differ in width")
        }
        self.columns.check(self.name(), n, c)?;
        let u = contiguous(s1, l1, self.name())?;
        let v = contiguous(s2, l2, self.name())?;
        // gemm splits a product's output between threads, never its sums, and `dv` adds the
        // blocks in order: the same bits on any number of threads.
        let threads = rayon::current_num_threads();
        let inverse_n = 1.0 / n.max(1) as f32;
        let mut du = vec![0f32; n * d];
        let mut dv_sum = vec![0f32; c * d];
        let mut block = vec![0f32; BLOCK_ROWS.min(n) * c];
        let mut losses = Vec::with_capacity(n);
        let vm = Matrix::row_major(v, c, d);
        for first in (0..n).step_by(BLOCK_ROWS) {
            let rows = BLOCK_ROWS.min(n - first);
            let ub = Matrix::row_major(&u[first * d..(first + rows) * d], rows, d);
            let g = &mut block[..rows * c];
            matmul(ub, vm.t(), g, false, threads);
            let block_losses: Vec<f32> = g
                .par_chunks_mut(c)
                .enumerate()
                .with_min_len(crate::ops::par::ROWS_PER_TASK / 4)
                .map(|(k, x)| self.row(first + k, x, inverse_n))
                .collect();
            losses.extend(block_losses);
            let gm = Matrix::row_major(g, rows, c);
            matmul(
                gm,
                vm,
                &mut du[first * d..(first + rows) * d],
                false,
                threads,
            );
            matmul(gm.t(), ub, &mut dv_sum, true, threads);
        }
        let loss = losses.iter().map(|&l| f64::from(l)).sum::<f64>() * f64::from(inverse_n);
        *self.cache()? = Some((du, dv_sum));
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        u: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let Some((mut du, mut dv)) = self.cache()?.take() else {
            candle_core::bail!("vector-softmax: backward without its forward pass")
        };
        let g = grad.to_scalar::<f32>()?;
        if g != 1.0 {
            du.iter_mut().for_each(|x| *x *= g);
            dv.iter_mut().for_each(|x| *x *= g);
        }
        Ok((
            Some(Tensor::from_vec(du, u.shape(), u.device())?),
            Some(Tensor::from_vec(dv, v.shape(), v.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    use crate::testing::{uniform, values};

    /// `u` `[n, d]` and `v` `[c, d]`, uniform in [-1, 1), and the generator for more values.
    fn random_inputs(seed: u64, n: usize, c: usize, d: usize) -> (Var, Var, Xoshiro256PlusPlus) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut var = |rows: usize| {
            let values = uniform(&mut rng, rows * d, 1.0);
            Var::from_tensor(&Tensor::from_vec(values, (rows, d), &Device::Cpu).unwrap()).unwrap()
        };
        let (u, v) = (var(n), var(c));
        (u, v, rng)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (values(a), values(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Loss and both gradients equal the generic path's (candle's matmul, then the softmax
    /// loss built from generic ops), over more rows than a block, with masked duplicate
    /// targets, a bias and an incoming gradient other than 1; without and with columns left
    /// out per row (some rows listing their own label, which is kept).
    #[test]
    fn matches_generic_ops_forward_and_backward() {
        for with_exclusions in [false, true] {
            matches_generic(with_exclusions);
        }
    }

    fn matches_generic(with_exclusions: bool) {
        let (n, c, d) = (BLOCK_ROWS * 2 + 37, 53, 16);
        let (u, v, mut rng) = random_inputs(7, n, c, d);
        let column_bias = uniform(&mut rng, c, 1.0);
        // Columns hold items 10..10+c with item 12 twice (columns 2 and 7): a row whose target
        // is 12 and label column 2 has column 7 masked.
        let mut column_items: Vec<u32> = (10..10 + c as u32).collect();
        column_items[7] = 12;
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7) % c as u32).collect();
        let row_targets: Vec<u32> = labels.iter().map(|&l| column_items[l as usize]).collect();
        // Row i leaves out the first i % 40 columns of a shared random list (rows of one
        // window share a buffer the same way); some lists hold the row's label.
        let mut exclusions = RowExclusions::default();
        let shared: Vec<u32> = (0..40).map(|_| rng.random_range(0..c as u32)).collect();
        let start = exclusions.extend(shared);
        (0..n).for_each(|i| exclusions.push_row(start, (i % 40) as u32));
        assert!((0..n).any(|i| exclusions.row(i).contains(&labels[i])));
        let excluded = with_exclusions.then_some(&exclusions);
        let columns = Columns {
            row_targets: &row_targets,
            column_items: &column_items,
            column_bias: &column_bias,
            labels: &labels,
            excluded,
        };
        let fused = vector_softmax_loss(&u, &v, 20.0, columns).unwrap();
        let generic = crate::ops::fused::softmax_loss_generic(
            &u.matmul(&v.t().unwrap()).unwrap(),
            20.0,
            &row_targets,
            &column_items,
            &column_bias,
            &labels,
            excluded,
        )
        .unwrap();
        let (lf, lg) = (
            fused.to_scalar::<f32>().unwrap(),
            generic.to_scalar::<f32>().unwrap(),
        );
        assert!(
            (lf - lg).abs() < 1e-4 * lg.abs().max(1.0),
            "loss {lf} vs {lg}"
        );
        let gf = (fused * 3.0).unwrap().backward().unwrap();
        let gg = (generic * 3.0).unwrap().backward().unwrap();
        for var in [&u, &v] {
            let (a, b) = (gf.get(var).unwrap(), gg.get(var).unwrap());
            let diff = max_diff(a, b);
            assert!(diff < 1e-5, "gradient differs by {diff}");
        }
    }

    /// One thread or two: the same bits (the training step's determinism rests on it).
    #[test]
    fn same_bits_on_one_or_two_threads() {
        let (n, c, d) = (BLOCK_ROWS + 5, 300, 8);
        let (u, v, _) = random_inputs(3, n, c, d);
        let column_items: Vec<u32> = (0..c as u32).collect();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % c as u32).collect();
        let bias = vec![0.0; c];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let columns = Columns {
                    row_targets: &labels,
                    column_items: &column_items,
                    column_bias: &bias,
                    labels: &labels,
                    excluded: None,
                };
                let loss = vector_softmax_loss(&u, &v, 10.0, columns).unwrap();
                let grads = loss.backward().unwrap();
                let mut out = values(&loss);
                out.extend(values(grads.get(&u).unwrap()));
                out.extend(values(grads.get(&v).unwrap()));
                out.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
            })
        };
        assert_eq!(run(1), run(2));
    }
}
