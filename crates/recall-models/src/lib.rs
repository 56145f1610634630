//! DSSM and YoutubeDNN recall models on candle, with pointwise, pairwise and listwise losses,
//! the training loop and safetensors checkpoints.
//!
//! Not built yet: candle is deliberately not a dependency until the models land, to keep the
//! build of the foundation fast. Models will never read files: they take encoded batches.
