//! The workspace error type. Variants are grouped by cause (bad input, configuration, resources,
//! internal bug) and carry the place where the problem is, so a user reading the message knows what
//! to fix without a debugger.

use std::path::PathBuf;

use arrow_schema::DataType;

/// `Result` with the workspace [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a stage, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- resources -------------------------------------------------------------------------
    /// A file could not be opened, read, written or renamed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- bad input -------------------------------------------------------------------------
    /// The file is not readable Parquet (truncated, corrupt, or another format).
    #[error(
        "{path} is not a readable Parquet file ({source}); it may be truncated or corrupt: \
         regenerate it, or rerun the stage that wrote it"
    )]
    Parquet {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A required column is absent.
    #[error("{path} has no column `{column}` (columns present: {available}); {hint}")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
        hint: String,
    },
    /// A column has a type the reader cannot use.
    #[error("{path}: column `{column}` has type {found}, expected {expected}")]
    ColumnType {
        path: PathBuf,
        column: String,
        found: DataType,
        expected: &'static str,
    },
    /// A column that must be complete has nulls.
    #[error(
        "{path}: column `{column}` has {count} null value(s), the first at row {first_row}; \
         ids must be present on every row: drop or fill those rows first"
    )]
    NullValues {
        path: PathBuf,
        column: String,
        count: usize,
        first_row: usize,
    },
    /// The table has no rows where rows are needed.
    #[error("{path} has no rows{detail}")]
    EmptyTable { path: PathBuf, detail: String },
    /// A line of a text file could not be parsed (line numbers start at 1).
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// Data that is readable but unusable (a bad value, an inconsistent table).
    #[error("{context}: {message}")]
    InvalidData { context: String, message: String },

    // ---- configuration ---------------------------------------------------------------------
    /// A configuration value is missing, malformed or impossible.
    #[error("configuration key `{key}`: {message}")]
    Config { key: String, message: String },

    // ---- internal --------------------------------------------------------------------------
    /// A broken invariant: a bug in this workspace, not in the input.
    #[error("internal error (please report it): {0}")]
    Internal(String),
}

impl Error {
    /// An I/O error with the file it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A configuration error at `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// Readable but unusable data, described by where it is (`context`) and what is wrong.
    pub fn invalid(context: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidData {
            context: context.into(),
            message: message.into(),
        }
    }

    /// An error from the arrow crates while building a batch: always our bug, since we build
    /// batches from columns whose lengths and types we control.
    pub fn arrow(context: &str, source: arrow_schema::ArrowError) -> Self {
        Error::Internal(format!("{context}: {source}"))
    }
}
