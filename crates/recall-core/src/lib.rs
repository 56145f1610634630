//! The bottom of the recall workspace: what every stage shares and nothing more.
//!
//! - [`error`]: one error type, grouped by cause, that always says which file, column, row or key
//!   was wrong and what to do about it.
//! - [`columns`]: the canonical column names of the Parquet files that pass between stages.
//! - [`table`]: reading a Parquet file into one in-memory batch with typed, checked column access.
//! - [`write`]: atomic output (temporary file, then rename) for Parquet, JSON and anything else.
//! - [`ids`]: raw ids as they come from the data (integers or strings).
//! - [`ingested`]: the ingest stage's outputs (interactions and side tables): their file names
//!   and columns.
//! - [`encoded`]: the encode stage's outputs (user sequences, splits as references into them,
//!   vocabularies, side tables, `features.json`): their one owner, reader and writer.
//! - [`mix`]: splitmix64's mixing function, for seeded per-user and per-candidate choices.
//!
//! This crate knows no dataset format, no model and no run-directory layout.

pub mod checksum;
pub mod columns;
pub mod encoded;
pub mod error;
pub mod ids;
pub mod ingested;
pub mod mix;
pub mod table;
pub mod testing;
pub mod time;
pub mod write;

pub use error::{Error, Result};
pub use ids::RawIds;
pub use table::{StringBags, Table};
