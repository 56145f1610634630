//! Export of what a recall model is for: user and item embeddings and per-user candidate lists
//! as Parquet keyed by the original ids, weights as safetensors, and an approximate
//! nearest-neighbour index for serving.
//!
//! Not built yet.
