//! A tower's input row, assembled from the embedding rows a step gathered, as one fused CPU op.
//!
//! A tower reads, per batch row, blocks side by side: pooled lists of table rows (the watch
//! history, its newest items, the genres of an item), single table rows (the user id, a user
//! feature, the example-age bucket, an item's own embedding) and given values (dense
//! features). An [`InputPlan`] lists those blocks once; on CPU one op builds the whole
//! `[B, width]` input from all the tables' gathered rows and scatters its gradient back in one
//! pass, where generic candle ops took a gather or an index-select per block, a concatenation,
//! and in the backward pass a zeroed gradient per block and per table added into. Other devices
//! run the same plan through generic ops ([`InputPlan::assemble_generic`]), which the tests
//! compare the fused op against.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::Result;
use crate::model::sparse::Gathered;

/// One block of every input row.
#[derive(Debug, Clone)]
pub enum Block {
    /// Per batch row, the sum of its list of rows of table `table` (`offsets`, one more than
    /// there are batch rows, into `rows`: local rows of the gathered table), times the row's
    /// `weights` entry (1 / length for a mean; an empty list pools to zeros).
    Pool {
        table: usize,
        offsets: Vec<usize>,
        rows: Vec<u32>,
        weights: Vec<f32>,
    },
    /// Per batch row, one local row of table `table`.
    Lookup { table: usize, rows: Vec<u32> },
    /// Given values, `width` per batch row (no gradient flows to them).
    Values { width: usize, values: Vec<f32> },
}

/// The blocks of a tower's input over the tables they read.
#[derive(Debug)]
pub struct InputPlan<'a> {
    batch: usize,
    tables: Vec<&'a Gathered>,
    blocks: Vec<Block>,
}

impl<'a> InputPlan<'a> {
    /// An empty plan for `batch` rows.
    pub fn new(batch: usize) -> Self {
        InputPlan {
            batch,
            tables: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Registers a gathered table; returns its number for blocks.
    pub fn table(&mut self, gathered: &'a Gathered) -> usize {
        self.tables.push(gathered);
        self.tables.len() - 1
    }

    /// Adds a pooling block: per batch row, the rows of `table` for the ids of its list (mean
    /// or sum).
    pub fn pool<'l, L>(&mut self, table: usize, lists: impl IntoIterator<Item = L>, mean: bool)
    where
        L: IntoIterator<Item = &'l u32>,
    {
        let g = self.tables[table];
        let mut offsets = Vec::with_capacity(self.batch + 1);
        offsets.push(0);
        let mut rows = Vec::new();
        let mut weights = Vec::with_capacity(self.batch);
        for list in lists {
            rows.extend(list.into_iter().map(|&id| g.local_index(id)));
            let len = rows.len() - offsets[offsets.len() - 1];
            offsets.push(rows.len());
            weights.push(if mean && len > 0 {
                1.0 / len as f32
            } else {
                1.0
            });
        }
        self.blocks.push(Block::Pool {
            table,
            offsets,
            rows,
            weights,
        });
    }

    /// Adds a lookup block: per batch row, the row of `table` for its id.
    pub fn lookup(&mut self, table: usize, ids: impl IntoIterator<Item = u32>) {
        let g = self.tables[table];
        let rows = ids.into_iter().map(|id| g.local_index(id)).collect();
        self.blocks.push(Block::Lookup { table, rows });
    }

    /// Adds given values, `width` per batch row.
    pub fn values(&mut self, width: usize, values: Vec<f32>) {
        self.blocks.push(Block::Values { width, values });
    }

    fn dims(&self) -> Result<Vec<usize>> {
        self.tables
            .iter()
            .map(|g| Ok(g.var.as_tensor().dim(1)?))
            .collect()
    }

    /// The `[batch, width]` input: one fused op on CPU, generic ops elsewhere.
    pub fn assemble(self) -> Result<Tensor> {
        let Some(first) = self.tables.first() else {
            return self.assemble_generic();
        };
        if !crate::ops::fused_kernels(first.var.device()) {
            return self.assemble_generic();
        }
        // The op reads every table from one flat tensor; candle's `cat` routes each slice of
        // the gradient back to its table's Var.
        let flat = self
            .tables
            .iter()
            .map(|g| g.var.as_tensor().flatten_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let dims = self.dims()?;
        let mut starts = Vec::with_capacity(flat.len());
        let mut at = 0;
        for t in &flat {
            starts.push(at);
            at += t.elem_count();
        }
        let op = AssembleInput {
            batch: self.batch,
            dims,
            starts,
            blocks: self.blocks,
        };
        Ok(Tensor::cat(&flat, 0)?.apply_op1(op)?)
    }

    /// The same input from generic candle ops (an index-select per block, a concatenation).
    pub fn assemble_generic(self) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            parts.push(match block {
                Block::Pool {
                    table,
                    offsets,
                    rows,
                    weights,
                } => {
                    let t = self.tables[*table].var.as_tensor();
                    pool_generic(t, offsets, rows, weights)?
                }
                Block::Lookup { table, rows } => {
                    let t = self.tables[*table].var.as_tensor();
                    let ids = Tensor::from_slice(rows, rows.len(), t.device())?;
                    t.index_select(&ids, 0)?
                }
                Block::Values { width, values } => {
                    let dev = match self.tables.first() {
                        Some(g) => g.var.device().clone(),
                        None => candle_core::Device::Cpu,
                    };
                    Tensor::from_slice(values, (self.batch, *width), &dev)?
                }
            });
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// Pooling from generic candle ops: the rows of each list gathered into a padded
/// `[B, L, d]`, masked, summed and weighted.
fn pool_generic(
    table: &Tensor,
    offsets: &[usize],
    rows: &[u32],
    weights: &[f32],
) -> Result<Tensor> {
    let b = weights.len();
    let width = offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0)
        .max(1);
    let (_, dim) = table.dims2()?;
    let mut ids = vec![0u32; b * width];
    let mut mask = vec![0f32; b * width];
    for r in 0..b {
        let list = &rows[offsets[r]..offsets[r + 1]];
        ids[r * width..r * width + list.len()].copy_from_slice(list);
        mask[r * width..r * width + list.len()].fill(1.0);
    }
    let dev = table.device();
    let picked = table
        .index_select(&Tensor::from_vec(ids, b * width, dev)?, 0)?
        .reshape((b, width, dim))?;
    let masked = picked.broadcast_mul(&Tensor::from_vec(mask, (b, width, 1), dev)?)?;
    Ok(masked
        .sum(1)?
        .broadcast_mul(&Tensor::from_slice(weights, (b, 1), dev)?)?)
}

/// The fused op over the tables' gathered rows, flattened and concatenated (`starts`: where
/// each table begins, `dims`: its width).
#[derive(Debug)]
struct AssembleInput {
    batch: usize,
    dims: Vec<usize>,
    starts: Vec<usize>,
    blocks: Vec<Block>,
}

impl AssembleInput {
    fn width(&self, block: &Block) -> usize {
        match block {
            Block::Pool { table, .. } | Block::Lookup { table, .. } => self.dims[*table],
            Block::Values { width, .. } => *width,
        }
    }

    /// Rows of table `t` within the flat input (or its gradient).
    fn row_range(&self, t: usize, row: u32) -> std::ops::Range<usize> {
        let start = self.starts[t] + row as usize * self.dims[t];
        start..start + self.dims[t]
    }
}

impl CustomOp1 for AssembleInput {
    fn name(&self) -> &'static str {
        "assemble-input"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let flat = crate::ops::kernel::contiguous(storage, layout, self.name())?;
        let b = self.batch;
        // Every row an index names lies inside its table.
        for block in &self.blocks {
            let (table, rows) = match block {
                Block::Pool { table, rows, .. } | Block::Lookup { table, rows } => (*table, rows),
                Block::Values { width, values } => {
                    if values.len() != b * width {
                        candle_core::bail!(
                            "assemble-input: {} values for {b} rows of {width}",
                            values.len()
                        )
                    }
                    continue;
                }
            };
            let end = self.starts.get(table + 1).copied().unwrap_or(flat.len());
            let limit = (end - self.starts[table]) / self.dims[table].max(1);
            if let Some(&bad) = rows.iter().find(|&&r| r as usize >= limit) {
                candle_core::bail!("assemble-input: row {bad} outside table {table} of {limit}")
            }
        }
        let width: usize = self.blocks.iter().map(|k| self.width(k)).sum();
        let mut out = vec![0f32; b * width];
        let mut column = 0;
        for block in &self.blocks {
            let w = self.width(block);
            match block {
                Block::Pool {
                    table,
                    offsets,
                    rows,
                    weights,
                } => {
                    for r in 0..b {
                        let acc = &mut out[r * width + column..r * width + column + w];
                        for &row in &rows[offsets[r]..offsets[r + 1]] {
                            let v = &flat[self.row_range(*table, row)];
                            acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
                        }
                        if weights[r] != 1.0 {
                            acc.iter_mut().for_each(|a| *a *= weights[r]);
                        }
                    }
                }
                Block::Lookup { table, rows } => {
                    for (r, &row) in rows.iter().enumerate() {
                        out[r * width + column..r * width + column + w]
                            .copy_from_slice(&flat[self.row_range(*table, row)]);
                    }
                }
                Block::Values { values, .. } => {
                    for r in 0..b {
                        out[r * width + column..r * width + column + w]
                            .copy_from_slice(&values[r * w..(r + 1) * w]);
                    }
                }
            }
            column += w;
        }
        Ok((CpuStorage::F32(out), Shape::from((b, width))))
    }

    /// Each block's slice of the incoming gradient, scattered into the rows it read.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, width) = grad.dims2()?;
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let mut out = vec![0f32; arg.elem_count()];
        let mut column = 0;
        for block in &self.blocks {
            let w = self.width(block);
            match block {
                Block::Pool {
                    table,
                    offsets,
                    rows,
                    weights,
                } => {
                    for r in 0..b {
                        let gr = &g[r * width + column..r * width + column + w];
                        for &row in &rows[offsets[r]..offsets[r + 1]] {
                            let range = self.row_range(*table, row);
                            out[range]
                                .iter_mut()
                                .zip(gr)
                                .for_each(|(o, x)| *o += weights[r] * x);
                        }
                    }
                }
                Block::Lookup { table, rows } => {
                    for (r, &row) in rows.iter().enumerate() {
                        let gr = &g[r * width + column..r * width + column + w];
                        let range = self.row_range(*table, row);
                        out[range].iter_mut().zip(gr).for_each(|(o, x)| *o += x);
                    }
                }
                Block::Values { .. } => {}
            }
            column += w;
        }
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sparse::SparseTable;
    use candle_core::Device;

    use crate::testing::values;

    /// Pooled (mean and sum), looked-up and given blocks, forward and backward, by hand and
    /// against the generic ops, over two tables of different widths.
    #[test]
    fn the_fused_input_matches_hand_values_and_the_generic_ops() {
        let dev = Device::Cpu;
        let items = SparseTable::from_weights(4, 2, vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let users = SparseTable::from_weights(3, 3, (0..9).map(|v| v as f32).collect());
        let lists: Vec<Vec<u32>> = vec![vec![1, 3], vec![2], vec![], vec![3, 3, 2]];
        let run = |fused: bool| {
            let gi = items
                .gather(lists.iter().flatten().copied().chain([0]), &dev)
                .unwrap();
            let gu = users.gather([2, 0, 1, 2], &dev).unwrap();
            let mut plan = InputPlan::new(4);
            let (ti, tu) = (plan.table(&gi), plan.table(&gu));
            plan.pool(ti, &lists, true);
            plan.lookup(tu, [2, 0, 1, 2]);
            plan.values(1, vec![0.5, -0.5, 1.5, 2.5]);
            plan.pool(
                ti,
                lists.iter().map(|l| &l[l.len().saturating_sub(1)..]),
                false,
            );
            let x = if fused {
                plan.assemble().unwrap()
            } else {
                plan.assemble_generic().unwrap()
            };
            let w = Tensor::from_vec(
                (0..4 * 8).map(|v| v as f32 * 0.1).collect::<Vec<_>>(),
                (4, 8),
                &dev,
            )
            .unwrap();
            let grads = (x.clone() * w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                x.to_vec2::<f32>().unwrap(),
                values(grads.get(gi.var.as_tensor()).unwrap()),
                values(grads.get(gu.var.as_tensor()).unwrap()),
            )
        };
        let (fused, generic) = (run(true), run(false));
        // Row 3: mean of items 3, 3, 2 = [13/3, 16/3]; user 2 = [6, 7, 8]; 2.5; sum of item 2.
        let expect = [13.0 / 3.0, 16.0 / 3.0, 6.0, 7.0, 8.0, 2.5, 3.0, 4.0];
        assert!(
            fused.0[3]
                .iter()
                .zip(expect)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{:?}",
            fused.0[3]
        );
        // An empty list pools to zeros.
        assert_eq!(&fused.0[2][..2], &[0.0, 0.0]);
        for (a, b) in [
            (fused.0.concat(), generic.0.concat()),
            (fused.1.clone(), generic.1.clone()),
            (fused.2.clone(), generic.2.clone()),
        ] {
            assert!(
                a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5),
                "{a:?} vs {b:?}"
            );
        }
    }
}
