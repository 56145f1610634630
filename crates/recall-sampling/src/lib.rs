//! Negative sampling for recall training: global uniform, popularity with an exponent, hard
//! negatives mined from a trained model, in-batch negatives with sampling-bias (logQ)
//! correction, and mixed negatives; never a user's own positive unless asked.
//!
//! Not built yet: this crate is the place for it (issue "Negative sampling strategies crate").
//! It will depend on `recall-core` only and work on dense item indices as produced by
//! `recall-features`.
