//! Dense f32 matrix products through `gemm` (the kernel candle runs on CPU), for code that
//! works on plain slices: exact top-K here, and the fused training ops of `recall-models`.
//! This is the workspace's one call into the unsafe kernel; every view is bounds-checked
//! before it.

use rayon::prelude::*;

/// A matrix view over a slice: element `(i, j)` is `data[i * row_stride + j * col_stride]`, so
/// a row-major matrix and its transpose are both views of the same data.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// `rows x cols`, row-major.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (the same data read column-wise).
    pub fn t(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Rows `skip..skip + len` (past the end: an empty view, which the bounds check refuses
    /// if it is used).
    fn rows(self, skip: usize, len: usize) -> Self {
        let start = (skip * self.row_stride).min(self.data.len());
        Matrix {
            data: &self.data[start..],
            rows: len,
            ..self
        }
    }

    /// Columns `skip..skip + len`.
    fn columns(self, skip: usize, len: usize) -> Self {
        let start = (skip * self.col_stride).min(self.data.len());
        Matrix {
            data: &self.data[start..],
            cols: len,
            ..self
        }
    }

    /// Whether every element the view addresses lies inside `data`.
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `c = a b` (or `c += a b` with `accumulate`), `c` row-major `a.rows x b.cols`, on `threads`
/// threads of the current rayon pool (1: the calling thread only).
///
/// # Panics
/// When the shapes do not chain, `c` has the wrong length, or a view addresses outside its
/// slice: a caller's bug, checked before the kernel runs.
#[allow(unsafe_code)]
pub fn matmul(a: Matrix<'_>, b: Matrix<'_>, c: &mut [f32], accumulate: bool, threads: usize) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(c.len(), a.rows * b.cols, "matmul: output buffer size");
    assert!(
        a.in_bounds() && b.in_bounds(),
        "matmul: view outside its data"
    );
    if c.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above keep every index gemm derives from these dimensions and
    // strides inside the three slices (c is a.rows x b.cols row-major: row stride b.cols,
    // column stride 1); `c` is borrowed mutably, so it overlaps neither input.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            c.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            if threads > 1 {
                gemm::Parallelism::Rayon(threads)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// [`matmul`] with the work split by rows of `a` (and `c`) across the current rayon pool,
/// each part on one thread; with `split_inner`, the inner dimension is split instead and the
/// parts' products summed (for a small `c` over a long inner dimension, such as a weight
/// gradient `dz^T x` over a batch). For the tall, narrow products of a training step this
/// kept both cores busier than gemm's own parallelism, which splits the narrow output.
pub fn matmul_split(a: Matrix<'_>, b: Matrix<'_>, c: &mut [f32], split_inner: bool) {
    let threads = rayon::current_num_threads();
    let (rows, inner) = (a.rows, a.cols);
    let parts = threads
        .min(if split_inner { inner } else { rows } / 256)
        .max(1);
    if parts == 1 {
        matmul(a, b, c, false, 1);
        return;
    }
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(c.len(), a.rows * b.cols, "matmul: output buffer size");
    if split_inner {
        // c = the sum over parts of a[:, part] b[part, :].
        let chunk = inner.div_ceil(parts);
        let partials: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|p| {
                let start = p * chunk;
                let len = chunk.min(inner - start);
                let mut out = vec![0f32; a.rows * b.cols];
                matmul(
                    a.columns(start, len),
                    b.rows(start, len),
                    &mut out,
                    false,
                    1,
                );
                out
            })
            .collect();
        c.copy_from_slice(&partials[0]);
        for part in &partials[1..] {
            c.iter_mut().zip(part).for_each(|(x, y)| *x += y);
        }
    } else {
        let chunk = rows.div_ceil(parts);
        c.par_chunks_mut(chunk * b.cols)
            .enumerate()
            .for_each(|(p, out)| {
                let len = out.len() / b.cols;
                matmul(a.rows(p * chunk, len), b, out, false, 1);
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Matrix<'_>, b: Matrix<'_>) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|k| {
                        a.data[i * a.row_stride + k * a.col_stride]
                            * b.data[k * b.row_stride + j * b.col_stride]
                    })
                    .sum();
            }
        }
        c
    }

    /// Plain, transposed and accumulated products equal the naive loops.
    #[test]
    fn products_of_views_equal_the_naive_loops() {
        let x: Vec<f32> = (0..12).map(|v| v as f32 * 0.5 - 2.0).collect(); // 3 x 4
        let w: Vec<f32> = (0..8).map(|v| 1.0 - v as f32 * 0.25).collect(); // 2 x 4
        let (xm, wm) = (Matrix::row_major(&x, 3, 4), Matrix::row_major(&w, 2, 4));
        for threads in [1, 2] {
            let mut c = vec![0f32; 6];
            matmul(xm, wm.t(), &mut c, false, threads); // x w^T: 3 x 2
            assert_eq!(c, naive(xm, wm.t()));
            let mut d = vec![0f32; 8];
            let cm = Matrix::row_major(&c, 3, 2);
            matmul(cm.t(), xm, &mut d, false, threads); // c^T x: 2 x 4
            assert_eq!(d, naive(cm.t(), xm));
            let before = d.clone();
            matmul(cm.t(), xm, &mut d, true, threads);
            assert!(
                d.iter()
                    .zip(&before)
                    .all(|(a, b)| (a - 2.0 * b).abs() < 1e-5)
            );
        }
    }

    /// Split by rows or by the inner dimension, on two threads, the product is the same.
    #[test]
    fn split_products_equal_the_whole() {
        let (n, k, m) = (1000, 7, 5);
        let x: Vec<f32> = (0..n * k)
            .map(|v| ((v * 13 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..m * k).map(|v| (v as f32 - 10.0) / 10.0).collect();
        let g: Vec<f32> = (0..n * m)
            .map(|v| ((v * 7 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let (xm, wm, gm) = (
            Matrix::row_major(&x, n, k),
            Matrix::row_major(&w, m, k),
            Matrix::row_major(&g, n, m),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let mut whole = vec![0f32; n * m];
            matmul(xm, wm.t(), &mut whole, false, 1);
            let mut split = vec![0f32; n * m];
            matmul_split(xm, wm.t(), &mut split, false);
            assert_eq!(whole, split);
            // dW = g^T x over the 1,000 rows, split in two.
            let mut whole = vec![0f32; m * k];
            matmul(gm.t(), xm, &mut whole, false, 1);
            let mut split = vec![0f32; m * k];
            matmul_split(gm.t(), xm, &mut split, true);
            assert!(whole.iter().zip(&split).all(|(a, b)| (a - b).abs() < 1e-3));
        });
    }

    #[test]
    #[should_panic(expected = "outside its data")]
    fn a_view_past_its_slice_is_refused() {
        let x = vec![0f32; 5];
        let mut c = vec![0f32; 4];
        matmul(
            Matrix::row_major(&x, 2, 3),
            Matrix::row_major(&x, 3, 2),
            &mut c,
            false,
            1,
        );
    }
}
