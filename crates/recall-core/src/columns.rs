//! Canonical column names shared by the stages. The full column contracts (types, nullability,
//! sort order) are documented in `ARCHITECTURE.md` at the workspace root; these constants keep
//! the code and that document spelling the names the same way.

/// Raw user id (Int64 or Utf8) in ingest outputs and vocabularies' source data.
pub const USER_ID: &str = "user_id";
/// Raw item id (Int64 or Utf8).
pub const ITEM_ID: &str = "item_id";
/// Explicit rating, Float32, nullable (implicit-feedback data has none).
pub const RATING: &str = "rating";
/// Event time in seconds since the Unix epoch, Int64, nullable.
pub const TIMESTAMP: &str = "timestamp";
/// 0-based position of the event in its user's chronological sequence, Int32, never null.
pub const SEQ: &str = "seq";

/// Item title (Utf8) in the item side table.
pub const TITLE: &str = "title";
/// Item genres, List<Utf8>, in the item side table.
pub const GENRES: &str = "genres";
/// A MovieLens movie's release year (Int32, nullable), read from its title's `(1995)`.
pub const YEAR: &str = "year";
/// When an item was released, Unix seconds (Int64, nullable), in the item side table: ml-100k's
/// release day, the synthetic generator's arrival time of a late item. `encode.item_release`
/// takes it (or a year column) into `items.parquet`'s `release_time`.
pub const RELEASED: &str = "released";
/// `items.parquet` with `encode.item_release`: when each item was released, Unix seconds
/// (Int64, nullable: no date known), what the evaluate stage's item-age prior measures ages from.
pub const RELEASE_TIME: &str = "release_time";

/// Dense user index (Int32) after encoding: 0 padding, 1 out-of-vocabulary, 2.. known users.
pub const USER_IDX: &str = "user_idx";
/// Dense item index (Int32) after encoding: 0 padding, 1 out-of-vocabulary, 2.. known items.
pub const ITEM_IDX: &str = "item_idx";
/// Dense index of the example's target item (Int32).
pub const TARGET_IDX: &str = "target_idx";
/// Item indices of the history before the target, oldest first, List<Int32>.
pub const HISTORY: &str = "history";
/// Example age in days relative to the end of the training window, Float32, nullable.
pub const EXAMPLE_AGE_DAYS: &str = "example_age_days";
/// Bucketed example age (Int32): 0 unknown, 1.. buckets.
pub const EXAMPLE_AGE_BUCKET: &str = "example_age_bucket";

/// Vocabulary files: the raw value (Int64 or Utf8).
pub const VOCAB_RAW: &str = "raw";
/// Vocabulary files: the dense index (Int32).
pub const VOCAB_INDEX: &str = "index";
/// Vocabulary files: the training-data frequency of the value (Int64).
pub const VOCAB_COUNT: &str = "count";

/// Reserved index of the padding slot in every vocabulary.
pub const PAD_INDEX: i32 = 0;
/// Reserved index of the out-of-vocabulary slot in every vocabulary.
pub const OOV_INDEX: i32 = 1;
/// First index given to a known value.
pub const FIRST_KNOWN_INDEX: i32 = 2;
/// The first row of an item table that is a real item (rows 0 and 1 are the padding and
/// out-of-vocabulary slots): [`FIRST_KNOWN_INDEX`] as the models and rankings index items.
pub const FIRST_ITEM: u32 = FIRST_KNOWN_INDEX as u32;

/// The column name holding the encoded index of a feature column `name`.
pub fn encoded(name: &str) -> String {
    format!("{name}_idx")
}
