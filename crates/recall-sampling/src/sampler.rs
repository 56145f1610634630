//! The one interface every negative sampler implements.

use rand::RngCore;

/// A distribution over item indices.
pub trait ItemSampler: Send + Sync {
    /// One draw.
    fn draw(&self, rng: &mut dyn RngCore) -> u32;
    /// The probability of drawing `item` (0 outside the support).
    fn probability(&self, item: u32) -> f64;
    /// The support: items `first..end`.
    fn support(&self) -> std::ops::Range<u32>;
}
