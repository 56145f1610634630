//! Helpers the fused ops' tests share.

use candle_core::Tensor;
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// A tensor's values, flattened.
pub(crate) fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The values' bit patterns, for comparing two computations bit for bit.
pub(crate) fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `len` values drawn uniformly from `[-bound, bound)`.
pub(crate) fn uniform(rng: &mut Xoshiro256PlusPlus, len: usize, bound: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-bound..bound)).collect()
}

/// Same length and every pair within `tol`.
pub(crate) fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

/// [`close`], or a panic at the caller's line that shows both.
#[track_caller]
pub(crate) fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert!(close(a, b, tol), "{a:?} vs {b:?}");
}
