//! Matrix products that write their output once: `a b` for `[M, K] x [K, N]` or a batch
//! `[B, M, K] x [B, K, N]`, any strides gemm takes (a transposed or narrowed view is read in
//! place), forward and backward.
//!
//! candle's CPU product allocates its output zeroed and then has gemm overwrite it without
//! reading: in a profile of the HSTU step that zeroing was 4.8 % of the samples (memset under
//! candle's `MatMul`, the largest single source of it), and the backward pass's two products
//! per product paid it again. Here the output is allocated uninitialised and written by the
//! same gemm call with the same arguments candle makes, so the values are candle's bit for bit
//! (tested); the backward pass is `da = g b^T`, `db = a^T g` through this op too. A batch
//! runs one product per task (candle splits each small product between the threads in turn).
//! Other devices, and ranks other than 2 and 3, take candle's product.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use recall_eval::matmul::{Matrix, products};

use crate::error::Result;

/// `a b` over the last two dimensions (`a` `[.., M, K]`, `b` `[.., K, N]`, the same batch).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(product(a, b)?)
}

fn product(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let rank = a.rank();
    if !super::fused_kernels(a.device()) || !(2..=3).contains(&rank) || b.rank() != rank {
        return a.matmul(b);
    }
    a.apply_op2(b, Product)
}

#[derive(Debug, Clone, Copy)]
struct Product;

/// The matrices of one operand, batch by batch, as views of its storage.
fn views<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<Vec<Matrix<'a>>> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("product: only f32 is supported")
    };
    let (dims, stride) = (layout.dims(), layout.stride());
    let (batch, batch_stride) = match dims.len() {
        2 => (1, 0),
        3 => (dims[0], stride[0]),
        n => candle_core::bail!("product: rank {n}, not 2 or 3"),
    };
    let (rows, cols) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let (row_stride, col_stride) = (stride[dims.len() - 2], stride[dims.len() - 1]);
    let start = layout.start_offset();
    Ok((0..batch)
        .map(|i| {
            let from = (start + i * batch_stride).min(data.len());
            Matrix {
                data: &data[from..],
                rows,
                cols,
                row_stride,
                col_stride,
            }
        })
        .collect())
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "product"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (views(s1, l1)?, views(s2, l2)?);
        let last_two = |l: &Layout| {
            let d = l.dims();
            (d[d.len() - 2], d[d.len() - 1])
        };
        let ((m, k), (k_b, n)) = (last_two(l1), last_two(l2));
        let batch = a.len();
        if batch != b.len() || k != k_b {
            candle_core::bail!(
                "product: {:?} times {:?} do not chain",
                l1.dims(),
                l2.dims()
            )
        }
        let pairs: Vec<_> = a.into_iter().zip(b).collect();
        // gemm splits each product's output between threads, never its sums: the same bits
        // on any number of threads, and candle's (it makes the same call).
        let out = products(&pairs, rayon::current_num_threads());
        let shape = if l1.dims().len() == 2 {
            Shape::from((m, n))
        } else {
            Shape::from((batch, m, n))
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let last = a.rank() - 1;
        let da = product(grad, &b.transpose(last - 1, last)?)?;
        let db = product(&a.transpose(last - 1, last)?, grad)?;
        Ok((Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn var(n: usize, shape: &[usize], phase: f32) -> Var {
        let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        crate::testing::bits(&crate::testing::values(t))
    }

    /// The product and both gradients are candle's bit for bit, for the layouts the towers use:
    /// rows times a transposed weight, a narrowed weight, batched queries times transposed
    /// keys (after a transpose of heads), and weights times values; on one thread and two.
    #[test]
    fn values_and_gradients_are_candles_bit_for_bit() {
        let w = var(6 * 5, &[6, 5], 0.3);
        let x = var(7 * 5, &[7, 5], 1.1);
        let q = var(2 * 4 * 3 * 2, &[2, 4, 3, 2], 0.7);
        let k = var(2 * 4 * 3 * 2, &[2, 4, 3, 2], 2.0);
        let v = var(4 * 4 * 3, &[4, 4, 3], -0.4);
        type Case<'a> = (
            &'a str,
            Box<dyn Fn(&dyn Fn(&Tensor, &Tensor) -> Tensor) -> Tensor + Sync>,
        );
        let (wt, xt) = (w.as_tensor().clone(), x.as_tensor().clone());
        let (qt, kt, vt) = (
            q.as_tensor().clone(),
            k.as_tensor().clone(),
            v.as_tensor().clone(),
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "x w^T",
                Box::new({
                    let (x, w) = (xt.clone(), wt.clone());
                    move |mm| mm(&x, &w.t().unwrap())
                }),
            ),
            (
                "x (narrowed w)^T",
                Box::new({
                    let (x, w) = (xt.clone(), wt.clone());
                    move |mm| mm(&x, &w.narrow(0, 2, 3).unwrap().t().unwrap())
                }),
            ),
            (
                "q k^T per head, then weights times values",
                Box::new({
                    let (q, k, v) = (qt.clone(), kt.clone(), vt.clone());
                    move |mm| {
                        // [2, 4, 3, 2] -> heads apart: [2, 3, 4, 2] -> [6, 4, 2]
                        let apart = |t: &Tensor| {
                            t.transpose(1, 2)
                                .unwrap()
                                .contiguous()
                                .unwrap()
                                .reshape((6, 4, 2))
                                .unwrap()
                        };
                        let scores = mm(&apart(&q), &apart(&k).t().unwrap());
                        let values = v.reshape((6, 4, 2)).unwrap();
                        mm(&scores, &values)
                    }
                }),
            ),
        ];
        let candle_mm = |a: &Tensor, b: &Tensor| a.matmul(b).unwrap();
        let ours = |a: &Tensor, b: &Tensor| matmul(a, b).unwrap();
        let vars = [&w, &x, &q, &k, &v];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for (name, case) in &cases {
                    let expected = case(&candle_mm);
                    let got = case(&ours);
                    assert_eq!(bits(&got), bits(&expected), "{name}: values");
                    // A weighted sum, so every output position has its own gradient.
                    let weights = var(expected.elem_count(), expected.dims(), 0.9);
                    let loss = |y: &Tensor| (y * weights.as_tensor()).unwrap().sum_all().unwrap();
                    let (ge, gg) = (
                        loss(&expected).backward().unwrap(),
                        loss(&got).backward().unwrap(),
                    );
                    for (i, var) in vars.iter().enumerate() {
                        match (ge.get(var.as_tensor()), gg.get(var.as_tensor())) {
                            (Some(e), Some(g)) => {
                                assert_eq!(bits(g), bits(e), "{name}: gradient of input {i}")
                            }
                            (None, None) => {}
                            _ => panic!("{name}: input {i} has a gradient one way only"),
                        }
                    }
                }
            });
        }
    }

    /// Shapes that do not chain are refused, not read past.
    #[test]
    fn shapes_that_do_not_chain_are_refused() {
        let a = var(6, &[2, 3], 0.0);
        let b = var(8, &[4, 2], 0.0);
        assert!(matmul(a.as_tensor(), b.as_tensor()).is_err());
    }
}
