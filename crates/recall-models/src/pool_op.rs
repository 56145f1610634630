//! Pooling of variable-length lists of embedding rows as one fused candle op.
//!
//! The generic path (`index_select` of a padded `[B, L]` id matrix, then `sum` over `L`)
//! materialises a `[B, L, d]` tensor forward and again backward (the broadcast of the pooled
//! gradient, then `index_add` into the table rows): with a 50-item history that was most of a
//! YoutubeDNN training step on CPU. This op reads the rows in place and writes `[B, d]`
//! directly; its backward scatters `weight * grad` into the rows, `O(B * L * d)` with no
//! temporaries. CPU only: on other devices [`pool_rows`] falls back to the generic ops.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::Result;

/// `out[b] = weight[b] * sum(rows[ids[offsets[b]..offsets[b + 1]]])` over a `[R, d]` tensor.
#[derive(Debug, Clone)]
pub struct SegmentPool {
    offsets: Vec<usize>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    mean: bool,
}

impl SegmentPool {
    /// `lists` of row indices into the pooled tensor; `mean` divides by each list's length
    /// (an empty list pools to zeros either way).
    pub fn new(lists: &[Vec<u32>], mean: bool) -> Self {
        Self::from_lists(lists.iter().map(|l| l.iter().copied()), mean)
    }

    /// [`new`](Self::new) from any lists, without collecting them first.
    pub fn from_lists<L: IntoIterator<Item = u32>>(
        lists: impl IntoIterator<Item = L>,
        mean: bool,
    ) -> Self {
        let mut offsets = vec![0];
        let mut ids = Vec::new();
        let mut weights = Vec::new();
        for l in lists {
            ids.extend(l);
            let len = ids.len() - offsets[offsets.len() - 1];
            offsets.push(ids.len());
            weights.push(if mean && len > 0 {
                1.0 / len as f32
            } else {
                1.0
            });
        }
        SegmentPool {
            offsets,
            ids,
            weights,
            mean,
        }
    }

    fn lists(&self) -> usize {
        self.weights.len()
    }
}

impl CustomOp1 for SegmentPool {
    fn name(&self) -> &'static str {
        "segment-pool"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, dim) = layout.shape().dims2()?;
        let table = crate::fused::contiguous(storage, layout, self.name())?;
        if let Some(&bad) = self.ids.iter().find(|&&i| i as usize >= rows) {
            candle_core::bail!("segment-pool: row {bad} outside a table of {rows}")
        }
        let mut out = vec![0f32; self.lists() * dim];
        for (b, acc) in out.chunks_exact_mut(dim).enumerate() {
            for &i in &self.ids[self.offsets[b]..self.offsets[b + 1]] {
                let row = &table[i as usize * dim..(i as usize + 1) * dim];
                acc.iter_mut().zip(row).for_each(|(a, r)| *a += r);
            }
            let w = self.weights[b];
            if w != 1.0 {
                acc.iter_mut().for_each(|a| *a *= w);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((self.lists(), dim))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (rows, dim) = arg.dims2()?;
        let grad: Vec<f32> = grad_res.flatten_all()?.to_vec1()?;
        let mut out = vec![0f32; rows * dim];
        for b in 0..self.lists() {
            let w = self.weights[b];
            let g = &grad[b * dim..(b + 1) * dim];
            for &i in &self.ids[self.offsets[b]..self.offsets[b + 1]] {
                let row = &mut out[i as usize * dim..(i as usize + 1) * dim];
                row.iter_mut().zip(g).for_each(|(o, g)| *o += w * g);
            }
        }
        Ok(Some(Tensor::from_vec(out, (rows, dim), arg.device())?))
    }
}

/// Pools with `op` over `rows` (`[R, d]`): the fused op on CPU, generic tensor ops elsewhere.
pub fn pool_rows(rows: &Tensor, op: SegmentPool) -> Result<Tensor> {
    if rows.device().is_cpu() {
        return Ok(rows.apply_op1(op)?);
    }
    let lists: Vec<Vec<u32>> = (0..op.lists())
        .map(|b| op.ids[op.offsets[b]..op.offsets[b + 1]].to_vec())
        .collect();
    pool_generic(rows, &lists, op.mean)
}

/// The same pooling from generic candle ops (`index_select`, a mask, `sum`): what
/// non-CPU devices run, and the reference the fused op is tested against.
pub fn pool_generic(rows: &Tensor, lists: &[Vec<u32>], mean: bool) -> Result<Tensor> {
    let b = lists.len();
    let width = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let (_, dim) = rows.dims2()?;
    let mut ids = vec![0u32; b * width];
    let mut weights = Vec::with_capacity(b);
    let mut mask = vec![0f32; b * width];
    for (r, l) in lists.iter().enumerate() {
        ids[r * width..r * width + l.len()].copy_from_slice(l);
        mask[r * width..r * width + l.len()].fill(1.0);
        weights.push(if mean {
            1.0 / (l.len().max(1) as f32)
        } else {
            1.0
        });
    }
    let dev = rows.device();
    let picked = rows
        .index_select(&Tensor::from_vec(ids, b * width, dev)?, 0)?
        .reshape((b, width, dim))?;
    let masked = picked.broadcast_mul(&Tensor::from_vec(mask, (b, width, 1), dev)?)?;
    Ok(masked
        .sum(1)?
        .broadcast_mul(&Tensor::from_vec(weights, (b, 1), dev)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward values and gradients against hand computation, and against the generic path.
    #[test]
    fn pooled_values_and_gradients_match_hand_computation() {
        let dev = Device::Cpu;
        let table =
            Var::from_tensor(&Tensor::new(&[[1f32, 2.0], [3.0, 4.0], [5.0, 6.0]], &dev).unwrap())
                .unwrap();
        let lists = vec![vec![0, 2], vec![1], vec![], vec![2, 2, 1]];
        let mean = table
            .as_tensor()
            .apply_op1(SegmentPool::new(&lists, true))
            .unwrap();
        assert_eq!(
            mean.to_vec2::<f32>().unwrap(),
            vec![
                vec![3.0, 4.0],
                vec![3.0, 4.0],
                vec![0.0, 0.0],
                vec![13.0 / 3.0, 16.0 / 3.0]
            ]
        );
        // loss = sum(pooled * c) with c = [1, -1]: row 2 gets 1/2 (list 0) + 2/3 (list 3).
        let c = Tensor::new(&[1f32, -1.0], &dev).unwrap();
        let grads = mean
            .broadcast_mul(&c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads
            .get(table.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let expect = [0.5f32, 1.0 + 1.0 / 3.0, 0.5 + 2.0 / 3.0];
        for (row, e) in g.iter().zip(expect) {
            assert!(
                (row[0] - e).abs() < 1e-6 && (row[1] + e).abs() < 1e-6,
                "{g:?}"
            );
        }
        let sum = table
            .as_tensor()
            .apply_op1(SegmentPool::new(&lists, false))
            .unwrap();
        assert_eq!(sum.to_vec2::<f32>().unwrap()[3], vec![13.0, 16.0]);
        for mean in [false, true] {
            let fused = table
                .as_tensor()
                .apply_op1(SegmentPool::new(&lists, mean))
                .unwrap();
            let generic = pool_generic(table.as_tensor(), &lists, mean).unwrap();
            assert_eq!(
                fused.to_vec2::<f32>().unwrap(),
                generic.to_vec2::<f32>().unwrap()
            );
        }
    }
}
