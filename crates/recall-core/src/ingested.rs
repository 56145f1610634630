//! The ingest stage's outputs, the contract between ingest and encode: their one owner.
//!
//! - `interactions.parquet`: `user_id`, `item_id` (Int64 or Utf8, as the source had them),
//!   `rating` (Float32, nullable), `timestamp` (Int64 seconds, nullable), `seq` (Int32: the
//!   0-based position in the user's chronological order, ties in source order); grouped by
//!   user, `seq` ascending.
//! - `users.parquet` (optional): `user_id` plus user feature columns, one row per user.
//! - `items.parquet` (optional): `item_id` plus item feature columns (`title`, `genres` as a
//!   list of strings, ...), one row per item.
//!
//! Every file carries the key-value metadata `recall.dataset` (the dataset's name). Column
//! names are [`crate::columns`]; any tool may write these files, `recall-features` reads them.

/// The interactions, one row per (user, item, order) event.
pub const INTERACTIONS: &str = "interactions.parquet";
/// The user side table.
pub const USERS: &str = "users.parquet";
/// The item side table.
pub const ITEMS: &str = "items.parquet";
/// Every ingest output, interactions first (the side tables may be absent).
pub const FILES: [&str; 3] = [INTERACTIONS, USERS, ITEMS];
/// The key-value metadata key naming the dataset.
pub const DATASET_KEY: &str = "recall.dataset";
