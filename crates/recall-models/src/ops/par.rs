//! Row-parallel loops for the fused ops whose rows are long: the softmax losses over shared
//! candidates (a SASRec batch scores ten thousand positions against the whole catalogue).
//! Ops over a tower's narrow rows (widths 16 to 256) stay sequential: split the same way at
//! torch-rechub's sizes they measured no faster on 2 cores (MEASUREMENTS.md, issue 18). The
//! exception is HSTU's bias and SiLU (an exponential a value, 3,200 rows a step), parallel
//! since it was fused; sequential against parallel was not measured for it alone.
//!
//! The split never depends on the number of threads, and partial sums over rows are added in
//! task order, so an op gives the same bits on one thread or two (the step's weights stay
//! bit-identical across thread counts, as its matrix products do).

use rayon::prelude::*;

/// Rows per task: a few hundred rows amortise rayon's dispatch (microseconds) over the tens of
/// microseconds a task of a typical layer takes.
pub(crate) const ROWS_PER_TASK: usize = 256;

/// Calls `f(first_row, rows)` on consecutive chunks of `out` (`width` values a row), in
/// parallel.
pub(crate) fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let width = width.max(1);
    out.par_chunks_mut(ROWS_PER_TASK * width)
        .enumerate()
        .for_each(|(k, chunk)| f(k * ROWS_PER_TASK, chunk));
}

/// Calls `f(k, chunk, sums)` on consecutive `chunk_len`-value chunks of `out` in parallel, each
/// task adding into its own zeroed `sums` (as long as `total`), then adds the tasks' sums into
/// `total` in task order: the same bits on any number of threads.
pub(crate) fn for_chunks_summing(
    out: &mut [f32],
    chunk_len: usize,
    total: &mut [f32],
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let partial: Vec<Vec<f32>> = out
        .par_chunks_mut(chunk_len.max(1))
        .enumerate()
        .map(|(k, chunk)| {
            let mut sums = vec![0f32; total.len()];
            f(k, chunk, &mut sums);
            sums
        })
        .collect();
    for sums in partial {
        for (t, s) in total.iter_mut().zip(sums) {
            *t += s;
        }
    }
}
