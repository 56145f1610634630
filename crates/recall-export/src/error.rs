//! The crate's errors.

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] recall_core::Error),
    #[error(transparent)]
    Model(#[from] recall_models::Error),
    /// Embeddings or ids that cannot be exported (NaN, zero vectors, mismatched dimensions).
    #[error("cannot export: {0}")]
    Invalid(String),
    #[error("configuration error: {0}")]
    Config(String),
    /// The native index library reported a failure.
    #[error("serving index: {0}")]
    Index(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
