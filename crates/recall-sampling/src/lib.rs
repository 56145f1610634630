//! Negative sampling for recall training, on dense item indices (as `recall-features` encodes
//! them: items `first..n`, with the reserved padding/OOV slots below `first` never drawn).
//!
//! - [`ItemSampler`]: the one small trait: draw an item, and say with what probability (the
//!   `q` of the sampling-bias correction).
//! - [`Uniform`] and [`Popularity`] (`count^alpha`, or `ln(1 + count)`; O(1) draws by the alias
//!   method).
//! - [`exclude::draw_excluding`]: draws that never return a user's own positives, with a defined
//!   fallback when the positives cover most of the catalogue.
//! - [`hard::HardNegatives`]: negatives from a rank band of a trained model's ranking.
//! - [`inbatch`]: in-batch negatives with logQ correction (from counts or the streaming
//!   frequency estimator of Yi et al. 2019), accidental-hit masks, and mixed negatives
//!   (Yang et al. 2020).
//!
//! ```
//! use rand::SeedableRng;
//! use recall_sampling::{ItemSampler, Popularity, exclude::draw_excluding};
//! // Items 2..6 with training counts; slots 0 and 1 are reserved.
//! let counts = [0, 0, 50, 20, 20, 10];
//! let sampler = Popularity::new(&counts, 2, 0.75)?;
//! let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
//! let mut negatives = Vec::new();
//! // Five negatives for a user whose positives are items 2 and 4.
//! draw_excluding(&sampler, &mut rng, &[2, 4], 5, &mut negatives)?;
//! assert!(negatives.iter().all(|&i| i == 3 || i == 5));
//! assert!((sampler.probability(2) - 50f64.powf(0.75) / sampler.total_weight()).abs() < 1e-12);
//! # Ok::<(), recall_core::Error>(())
//! ```

pub mod exclude;
pub mod hard;
pub mod inbatch;
mod popularity;
mod sampler;

pub use popularity::{Popularity, Uniform};
pub use sampler::ItemSampler;
