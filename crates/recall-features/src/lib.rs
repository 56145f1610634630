//! Feature encoding for recall models, usable on its own over any Parquet interactions table.
//!
//! - [`vocab`]: raw ids to dense indices (0 padding, 1 out-of-vocabulary, frequency ordered,
//!   min count), saved as Parquet and reloadable.
//! - [`bucket`]: numeric features into quantile or explicit buckets.
//! - [`split`]: leave-last-out splits and history sequences without future leakage.
//! - [`encode`]: the stage that ties them together and writes the encoded Parquet files.
//!
//! ```
//! use recall_data::{IngestConfig, SyntheticConfig, ingest};
//! use recall_features::encode::{EncodeConfig, EncodeInput, encode};
//!
//! let dir = std::env::temp_dir().join("recall-features-doctest");
//! ingest(&IngestConfig::Synthetic(SyntheticConfig::new(300, 200, 30, 1)))?.write(&dir)?;
//! let encoded = encode(&EncodeInput::read_dir(&dir)?, &EncodeConfig::default())?;
//! // One test row per user, and histories never longer than max_len (50).
//! assert_eq!(encoded.test.len(), 300);
//! let train = &encoded.train;
//! assert!((0..train.len()).all(|i| {
//!     encoded.sequences.history(train.user[i], train.position[i], 50).len() <= 50
//! }));
//! encoded.write(&dir.join("encoded"))?;
//! # Ok::<(), recall_core::Error>(())
//! ```

pub mod bucket;
pub mod encode;
pub mod split;
pub mod vocab;

pub use encode::{
    EarlierEncoding, EncodeConfig, EncodeInput, Encoded, GroupedInteractions, SideInputs,
    SourceCounts, encode, encode_grouped, finish_vocabularies,
};
pub use vocab::Vocabulary;
