//! The hand-written CPU kernels of a training step: candle `CustomOp`s with their backward
//! passes, each tested forward and backward against the generic candle ops it replaces (what
//! other devices run). `kernel` holds what they share; nothing here imports the model or the
//! training loop.

pub mod adam;
pub mod fused;
pub(crate) mod kernel;
pub mod mlp_op;
pub mod norm_op;
pub(crate) mod par;
pub mod score_op;
pub mod seq_op;
