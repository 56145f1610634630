//! The crate's errors: bad input or configuration (from `recall-core`), tensor errors, and
//! training failures such as a non-finite loss.

/// Errors of this crate: bad input or configuration (from `recall-core`), tensor errors, and
/// training failures such as a non-finite loss.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] recall_core::Error),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("training failed: {0}")]
    Training(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
