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
    check_views(a, b);
    assert_eq!(c.len(), a.rows * b.cols, "matmul: output buffer size");
    if c.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    // SAFETY: `check_views` and the length assert keep every index inside the inputs and
    // `c`; `c` is borrowed mutably, so it overlaps neither input.
    unsafe { gemm_into(a, b, c.as_mut_ptr(), accumulate, threads) }
}

/// `a b` into a new row-major buffer, which the kernel writes without reading: no pass to
/// zero it first (on a training step's activations and gradients those passes were a
/// measurable share of the memory traffic). A batch of one [`products`].
pub fn product(a: Matrix<'_>, b: Matrix<'_>, threads: usize) -> Vec<f32> {
    products(&[(a, b)], threads)
}

/// `a_i b_i` for every pair, one after another into a new row-major buffer (`[pairs, a.rows,
/// b.cols]`), which the kernel writes without reading: a batch of products (attention's scores
/// and their gradients) without a pass to zero their output first.
///
/// # Panics
/// When the pairs differ in shape or a pair fails [`matmul`]'s checks.
#[allow(unsafe_code)]
pub fn products(pairs: &[(Matrix<'_>, Matrix<'_>)], threads: usize) -> Vec<f32> {
    let Some(&(first_a, first_b)) = pairs.first() else {
        return Vec::new();
    };
    let each = first_a.rows * first_b.cols;
    for &(a, b) in pairs {
        check_views(a, b);
        assert!(
            (a.rows, a.cols, b.cols) == (first_a.rows, first_a.cols, first_b.cols),
            "products: the pairs differ in shape"
        );
    }
    let len = each * pairs.len();
    let mut c: Vec<f32> = Vec::with_capacity(len);
    if first_a.cols == 0 || each == 0 {
        c.resize(len, 0.0);
        return c;
    }
    // With at least as many products as threads, one task per product, each on one thread:
    // a batch of small products (a batch's attention blocks, 200 x 64 x 200) split between
    // threads one by one spent its time waking them. gemm never splits a sum between threads,
    // so either way gives the same bits.
    if threads > 1 && pairs.len() >= threads {
        c.spare_capacity_mut()[..len]
            .par_chunks_mut(each)
            .zip(pairs)
            .for_each(|(out, &(a, b))| {
                // SAFETY: the pair passed `check_views`; `out` is this pair's own `each`
                // values of the capacity, overlapping no other pair's or an input.
                unsafe { gemm_into(a, b, out.as_mut_ptr().cast::<f32>(), false, 1) }
            });
    } else {
        for (out, &(a, b)) in c.spare_capacity_mut()[..len].chunks_mut(each).zip(pairs) {
            // SAFETY: as above.
            unsafe { gemm_into(a, b, out.as_mut_ptr().cast::<f32>(), false, threads) }
        }
    }
    // SAFETY: gemm with `read_dst = false` wrote each of the `len` values once without
    // reading any (alpha is not applied to an unread destination), so all are initialised.
    unsafe { c.set_len(len) };
    c
}

/// The shapes chain and both views stay inside their slices (a caller's bug otherwise).
fn check_views(a: Matrix<'_>, b: Matrix<'_>) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert!(
        a.in_bounds() && b.in_bounds(),
        "matmul: view outside its data"
    );
}

/// The one call into gemm: `dst = a b`, or `dst += a b` with `read_dst`, `dst` row-major
/// `a.rows x b.cols`.
///
/// # Safety
/// `a` and `b` pass [`check_views`], `a.cols > 0`, and `dst` is valid for writes (and, with
/// `read_dst`, reads) of `a.rows * b.cols` values and overlaps neither input.
#[allow(unsafe_code)]
unsafe fn gemm_into(a: Matrix<'_>, b: Matrix<'_>, dst: *mut f32, read_dst: bool, threads: usize) {
    // SAFETY: the caller's contract above; gemm derives every index from these dimensions
    // and strides (dst: row stride b.cols, column stride 1).
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            b.cols as isize,
            read_dst,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if read_dst { 1.0 } else { 0.0 },
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
            assert_eq!(product(xm, wm.t(), threads), c);
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

    /// A batch of products is each pair's product, one after another (views of one buffer
    /// at two offsets, the second transposed).
    #[test]
    fn a_batch_of_products_is_each_pair_in_turn() {
        let x: Vec<f32> = (0..24).map(|v| (v as f32 * 0.37).sin()).collect();
        let a0 = Matrix::row_major(&x, 3, 4);
        let a1 = Matrix::row_major(&x[12..], 3, 4);
        let b0 = Matrix::row_major(&x[4..], 2, 4).t();
        let b1 = Matrix::row_major(&x[10..], 2, 4).t();
        for threads in [1, 2] {
            let batch = products(&[(a0, b0), (a1, b1)], threads);
            let mut expected = product(a0, b0, threads);
            expected.extend(product(a1, b1, threads));
            assert_eq!(batch, expected);
            assert!(
                batch
                    .iter()
                    .zip(naive(a0, b0).iter().chain(&naive(a1, b1)))
                    .all(|(p, q)| (p - q).abs() < 1e-5)
            );
        }
        assert!(products(&[], 1).is_empty());
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
