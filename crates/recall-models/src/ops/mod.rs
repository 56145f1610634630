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
pub mod product_op;
pub mod score_op;
pub mod seq_op;

/// Whether the hand-written CPU kernels run for tensors on `device`, else the generic candle
/// form each is tested against: the one place that makes the choice (today: on the CPU).
pub fn fused_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu()
}
