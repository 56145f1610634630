//! The encode plans on DataFusion.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, StringViewArray};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use recall_core::{Error, RawIds, Result, columns as col};

/// A vocabulary as encode writes it (`vocab_<name>.parquet`): the known raw values in index
/// order (the first has index 2; 0 is padding, 1 out of vocabulary) and each one's training
/// count.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    pub raw: RawIds,
    pub counts: Vec<u64>,
}

/// The user and item vocabularies.
#[derive(Debug, Clone)]
pub struct IdVocabularies {
    pub users: Vocabulary,
    pub items: Vocabulary,
}

/// How the plans run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Partitions (and worker threads) a plan runs on.
    pub target_partitions: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The user and item vocabularies encode fits on `interactions` (ingest's
/// `interactions.parquet`) under leave-last-out roles: of a user's `n` interactions ordered by
/// `seq`, the last is the test target when `n >= 2`, and with `validation` the one before it
/// is the validation target when `n >= 3`; the rest are training interactions. Each vocabulary
/// counts training interactions, leaves out items seen fewer than `item_min_count` times (users
/// need one), and orders by count descending, then raw value ascending.
///
/// ```
/// use recall_data::{IngestConfig, SyntheticConfig, ingest};
/// use recall_engine::datafusion::{Options, id_vocabularies};
///
/// let dir = tempfile::tempdir()?;
/// ingest(&IngestConfig::Synthetic(SyntheticConfig::new(200, 100, 20, 7)))?.write(dir.path())?;
/// let vocabularies =
///     id_vocabularies(&dir.path().join("interactions.parquet"), true, 1, Options::default())?;
/// // Index 2 is the most frequent training item; counts never rise down the list.
/// assert!(vocabularies.items.counts.windows(2).all(|w| w[0] >= w[1]));
/// assert_eq!(vocabularies.users.raw.len(), 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn id_vocabularies(
    interactions: &Path,
    validation: bool,
    item_min_count: u64,
    options: Options,
) -> Result<IdVocabularies> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.target_partitions.max(1))
        .build()
        .map_err(|e| Error::io("cannot start the DataFusion runtime for", interactions, e))?;
    let engine_error = |step: &str, e: datafusion::error::DataFusionError| {
        Error::invalid(
            format!("{} (DataFusion, {step})", interactions.display()),
            e.to_string(),
        )
    };
    runtime.block_on(async {
        let config = SessionConfig::new()
            .with_target_partitions(options.target_partitions.max(1))
            // Plain Utf8 ids, as the in-memory path reads them.
            .set_bool(
                "datafusion.execution.parquet.schema_force_view_types",
                false,
            );
        let ctx = SessionContext::new_with_config(config);
        let path = interactions.to_str().ok_or_else(|| {
            Error::config(
                "ingest output",
                format!(
                    "{} is not a UTF-8 path, which DataFusion needs",
                    interactions.display()
                ),
            )
        })?;
        ctx.register_parquet("interactions", path, ParquetReadOptions::default())
            .await
            .map_err(|e| engine_error("reading", e))?;
        let (user, item, seq) = (col::USER_ID, col::ITEM_ID, col::SEQ);
        // `seq` numbers a user's interactions uniquely (ingest's contract); the roles below
        // depend on it, so a violation is refused as the in-memory encode refuses it.
        let repeated = ctx
            .sql(&format!(
                "SELECT CAST({user} AS VARCHAR) AS u, {seq} AS s FROM interactions \
                 GROUP BY {user}, {seq} HAVING COUNT(*) > 1 ORDER BY u, s LIMIT 1"
            ))
            .await
            .map_err(|e| engine_error("planning the seq check", e))?
            .collect()
            .await
            .map_err(|e| engine_error("the seq check", e))?;
        if let Some(batch) = repeated.iter().find(|b| b.num_rows() > 0) {
            return Err(Error::invalid(
                format!("{}, column `{seq}`", interactions.display()),
                format!(
                    "user {} has two rows with seq {}; seq must number each user's \
                     interactions uniquely: re-run ingest",
                    strings(batch.column(0)).map_or_else(String::new, |s| s[0].clone()),
                    ints(batch.column(1)).map_or(0, |v| v[0]),
                ),
            ));
        }
        let training = format!(
            "WITH positioned AS (\
               SELECT {user}, {item}, \
                 ROW_NUMBER() OVER (PARTITION BY {user} ORDER BY {seq} DESC) AS from_end, \
                 COUNT(*) OVER (PARTITION BY {user}) AS n \
               FROM interactions) \
             SELECT {user}, {item} FROM positioned \
             WHERE NOT ((n >= 2 AND from_end = 1) OR ({validation} AND n >= 3 AND from_end = 2))"
        );
        ctx.sql(&format!("CREATE VIEW training AS {training}"))
            .await
            .map_err(|e| engine_error("planning the roles", e))?;
        let fit = async |column: &str, min_count: u64| -> Result<Vocabulary> {
            let batches = ctx
                .sql(&format!(
                    "SELECT {column} AS raw, COUNT(*) AS count FROM training GROUP BY {column} \
                     HAVING COUNT(*) >= {min_count} ORDER BY count DESC, raw ASC"
                ))
                .await
                .map_err(|e| engine_error("planning a vocabulary", e))?
                .collect()
                .await
                .map_err(|e| engine_error(&format!("the `{column}` vocabulary"), e))?;
            vocabulary(&batches, interactions, column)
        };
        let users = fit(user, 1).await?;
        let items = fit(item, item_min_count.max(1)).await?;
        Ok(IdVocabularies { users, items })
    })
}

/// The (raw, count) batches of a vocabulary plan as a [`Vocabulary`].
fn vocabulary(batches: &[RecordBatch], origin: &Path, column: &str) -> Result<Vocabulary> {
    let mut int_raw = Vec::new();
    let mut str_raw: Vec<String> = Vec::new();
    let mut counts = Vec::new();
    for batch in batches {
        let raw = batch.column(0);
        if let Some(v) = ints(raw) {
            int_raw.extend(v);
        } else if let Some(v) = strings(raw) {
            str_raw.extend(v);
        } else {
            return Err(Error::invalid(
                format!("{}, column `{column}`", origin.display()),
                format!(
                    "ids are {}; they must be integers or strings",
                    raw.data_type()
                ),
            ));
        }
        counts.extend(
            ints(batch.column(1))
                .unwrap_or_default()
                .iter()
                .map(|&c| c as u64),
        );
    }
    let raw = if str_raw.is_empty() {
        RawIds::Int(int_raw)
    } else {
        RawIds::Str(StringArray::from(str_raw))
    };
    Ok(Vocabulary { raw, counts })
}

fn ints(array: &Arc<dyn Array>) -> Option<Vec<i64>> {
    let a = array.as_any().downcast_ref::<Int64Array>()?;
    Some(a.iter().map(|v| v.unwrap_or_default()).collect())
}

fn strings(array: &Arc<dyn Array>) -> Option<Vec<String>> {
    if let Some(a) = array.as_any().downcast_ref::<StringArray>() {
        return Some(a.iter().map(|v| v.unwrap_or_default().to_owned()).collect());
    }
    let a = array.as_any().downcast_ref::<StringViewArray>()?;
    Some(a.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
}
