//! Ingest of a generic Parquet log on DataFusion: the canonical `interactions.parquet` that
//! `recall_data::generic::read` + `Dataset::write` make in memory, byte for byte, without
//! holding the log.
//!
//! Each part file is read as one partition in file order and its rows numbered
//! (`ROW_NUMBER() OVER ()`, a streaming window); one spilling sort on (user, order key, part,
//! row) puts every user's events in the in-memory path's order (users by ascending id, ties in
//! source order), and the sorted stream is cut into users, exact duplicates (same user, order
//! key and item) dropped and `seq` numbered while it is written, a row group at a time. One
//! aggregate pass per part first checks what the in-memory reader checks (complete ids and
//! order keys, no NaN rating), naming the file, column and row. CSV stays on the in-memory
//! reader: its errors name the line, which DataFusion's CSV reader does not.

use std::path::{Path, PathBuf};

use arrow_array::{Array, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use recall_core::write::{ROW_GROUP_ROWS, write_parquet_batches};
use recall_core::{Error, RawIds, Result, ingested};
use recall_data::dataset::write_side_tables;
use recall_data::generic::{GenericSource, data_files, dataset_name, is_csv, read_side_tables};
use recall_data::{IngestStats, Interactions};

use super::{Options, add_spills, engine_error, id_kind, id_type_message, ints_of, start};
use crate::run::EngineRun;

/// Whether [`ingest_generic`] plans `source`: its interactions are Parquet (a file or a
/// directory of part files). A CSV log is read in memory.
pub fn plans(source: &GenericSource) -> Result<bool> {
    Ok(!data_files(&source.interactions)?.iter().any(|f| is_csv(f)))
}

/// Ingests the generic Parquet log `source` into `dir` on DataFusion: the files and counts the
/// in-memory ingest gives (checked byte for byte by `tests/ingest.rs`), and what the engine
/// did.
///
/// ```
/// use recall_data::{GenericSource, IngestConfig, SyntheticConfig, ingest};
/// use recall_engine::datafusion::Options;
/// use recall_engine::datafusion::ingest::ingest_generic;
///
/// // A raw log in Parquet: the synthetic generator's canonical file will do.
/// let raw = tempfile::tempdir()?;
/// ingest(&IngestConfig::Synthetic(SyntheticConfig::new(100, 50, 10, 7)))?.write(raw.path())?;
/// let source = GenericSource::new(raw.path().join("interactions.parquet"));
/// let out = tempfile::tempdir()?;
/// let (_, files, stats, run) = ingest_generic(&source, out.path(), &Options::default())?;
/// assert_eq!(files.len(), 1);
/// assert_eq!(run.sorted_rows as usize, stats.rows_read);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn ingest_generic(
    source: &GenericSource,
    dir: &Path,
    options: &Options,
) -> Result<(String, Vec<PathBuf>, IngestStats, EngineRun)> {
    let files = data_files(&source.interactions)?;
    if let Some(csv) = files.iter().find(|f| is_csv(f)) {
        return Err(Error::config(
            "data.engine",
            format!(
                "{} is CSV, which ingest reads in memory (its errors name the line); the engine \
                 plans Parquet logs",
                csv.display()
            ),
        ));
    }
    let partitions = options.partitions();
    let (runtime, ctx) = start(&source.interactions, options, partitions, true)?;
    let name = dataset_name(source);
    let path = dir.join(ingested::INTERACTIONS);
    let parts = runtime.block_on(Parts::register(&ctx, source, &files))?;
    let rows_read = runtime.block_on(parts.check(&ctx))?;
    let items = runtime.block_on(parts.distinct_items(&ctx))?;
    let (mut stats, spills) = parts.write_sorted(&runtime, &ctx, &name, &path)?;
    stats.rows_read = rows_read;
    stats.duplicates_dropped = rows_read - stats.interactions;
    stats.items = items;
    drop(ctx);
    drop(runtime);
    let (users, items) = read_side_tables(source)?;
    let mut written = vec![path];
    written.extend(write_side_tables(
        dir,
        &name,
        users.as_ref(),
        items.as_ref(),
    )?);
    let run = EngineRun {
        target_partitions: partitions,
        memory_limit: options.memory_limit,
        spilled_bytes: spills.0,
        spill_files: spills.1,
        sorted_rows: stats.rows_read as u64,
        cluster: options.cluster.as_ref().map(|c| c.name().to_owned()),
    };
    Ok((name, written, stats, run))
}

/// The part files registered as tables `part_0`, `part_1`, ..., and the column expressions
/// every plan reads them with.
struct Parts<'a> {
    files: &'a [PathBuf],
    source: &'a GenericSource,
    /// `BIGINT` or `VARCHAR`: how user and item ids are read from every part.
    user_kind: &'static str,
    item_kind: &'static str,
}

impl<'a> Parts<'a> {
    /// Registers every file and checks its columns exist with usable types, the same id type
    /// in every part.
    async fn register(
        ctx: &SessionContext,
        source: &'a GenericSource,
        files: &'a [PathBuf],
    ) -> Result<Parts<'a>> {
        let mut kinds: Vec<(&'static str, &'static str)> = Vec::with_capacity(files.len());
        for (p, file) in files.iter().enumerate() {
            let text = file.to_str().ok_or_else(|| {
                Error::config(
                    "ingest.generic.interactions",
                    format!(
                        "{} is not a UTF-8 path, which DataFusion needs",
                        file.display()
                    ),
                )
            })?;
            ctx.register_parquet(format!("part_{p}"), text, ParquetReadOptions::default())
                .await
                .map_err(|e| engine_error(file, "reading", e))?;
            let schema = ctx
                .table(format!("part_{p}"))
                .await
                .map_err(|e| engine_error(file, "reading", e))?
                .schema()
                .as_arrow()
                .clone();
            let column_type = |name: &str| -> Result<DataType> {
                match schema.field_with_name(name) {
                    Ok(field) => Ok(field.data_type().clone()),
                    Err(_) => Err(Error::MissingColumn {
                        path: file.clone(),
                        column: name.to_owned(),
                        available: schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        hint: String::from(
                            "name the right column in [ingest.generic] (user_column, \
                             item_column, order_column, rating_column, timestamp_column)",
                        ),
                    }),
                }
            };
            let id = |name: &str| -> Result<&'static str> {
                let found = column_type(name)?;
                id_kind(&found).ok_or_else(|| {
                    Error::invalid(
                        format!("{}, column `{name}`", file.display()),
                        id_type_message(&found),
                    )
                })
            };
            let (user, item) = (id(&source.user_column)?, id(&source.item_column)?);
            let numeric = |name: &str, integer: bool, expected: &'static str| -> Result<()> {
                let found = column_type(name)?;
                if found.is_integer() || (!integer && found.is_floating()) {
                    Ok(())
                } else {
                    Err(Error::ColumnType {
                        path: file.clone(),
                        column: name.to_owned(),
                        found,
                        expected,
                    })
                }
            };
            numeric(&source.order_column, true, "an integer type")?;
            if let Some(rating) = &source.rating_column {
                numeric(rating, false, "a numeric type")?;
            }
            if let Some(timestamp) = &source.timestamp_column {
                numeric(timestamp, true, "an integer type")?;
            }
            kinds.push((user, item));
        }
        // Part files of one log share column types (what the in-memory reader requires too).
        for (p, &(user, item)) in kinds.iter().enumerate() {
            for (kind, first, column) in [
                (user, kinds[0].0, &source.user_column),
                (item, kinds[0].1, &source.item_column),
            ] {
                if kind != first {
                    let word = |k: &str| if k == "BIGINT" { "integer" } else { "string" };
                    return Err(Error::config(
                        "ingest.generic.interactions",
                        format!(
                            "column `{column}` of {} holds {} ids but {} holds {} ids; every \
                             part file needs the same column types",
                            files[p].display(),
                            word(kind),
                            files[0].display(),
                            word(first)
                        ),
                    ));
                }
            }
        }
        Ok(Parts {
            files,
            source,
            user_kind: kinds[0].0,
            item_kind: kinds[0].1,
        })
    }

    /// Part `p`'s rows as the plans read them: `u`, `i`, `o` (order key), `r` (rating), `t`
    /// (timestamp: the order key unless a timestamp column is named), `n` (row in the file).
    fn numbered(&self, p: usize) -> String {
        let source = self.source;
        let quoted = |c: &str| format!("\"{}\"", c.replace('"', "\"\""));
        let order = format!("CAST({} AS BIGINT)", quoted(&source.order_column));
        let rating = source.rating_column.as_deref().map_or_else(
            || String::from("CAST(NULL AS FLOAT)"),
            |c| format!("CAST({} AS FLOAT)", quoted(c)),
        );
        let time = source.timestamp_column.as_deref().map_or_else(
            || order.clone(),
            |c| format!("CAST({} AS BIGINT)", quoted(c)),
        );
        format!(
            "SELECT CAST({user} AS {uk}) AS u, CAST({item} AS {ik}) AS i, {order} AS o, \
             {rating} AS r, {time} AS t, {p} AS f, CAST(ROW_NUMBER() OVER () AS BIGINT) - 1 AS n \
             FROM part_{p}",
            user = quoted(&source.user_column),
            item = quoted(&source.item_column),
            uk = self.user_kind,
            ik = self.item_kind,
        )
    }

    /// Checks every part as the in-memory reader does: ids and order keys present on every
    /// row, no NaN rating. Returns the rows read.
    async fn check(&self, ctx: &SessionContext) -> Result<usize> {
        let mut rows = 0;
        for (p, file) in self.files.iter().enumerate() {
            let sql = format!(
                "SELECT COUNT(*), \
                 COUNT(*) - COUNT(u), MIN(CASE WHEN u IS NULL THEN n END), \
                 COUNT(*) - COUNT(i), MIN(CASE WHEN i IS NULL THEN n END), \
                 COUNT(*) - COUNT(o), MIN(CASE WHEN o IS NULL THEN n END), \
                 MIN(CASE WHEN isnan(r) THEN n END) \
                 FROM ({})",
                self.numbered(p)
            );
            let batches = collect(ctx, &sql, file, "checking the columns").await?;
            let value = |c: usize| -> Option<i64> {
                batches
                    .iter()
                    .find(|b| b.num_rows() > 0)
                    .and_then(|b| ints_of(b.column(c)).filter(|_| !b.column(c).is_null(0)))
                    .map(|v| v[0])
            };
            let source = self.source;
            for (column, nulls, first) in [
                (&source.user_column, 1, 2),
                (&source.item_column, 3, 4),
                (&source.order_column, 5, 6),
            ] {
                if let (Some(count), Some(first_row)) =
                    (value(nulls).filter(|&n| n > 0), value(first))
                {
                    return Err(Error::NullValues {
                        path: file.clone(),
                        column: column.clone(),
                        count: count as usize,
                        first_row: first_row as usize,
                    });
                }
            }
            if let (Some(rating), Some(row)) = (&source.rating_column, value(7)) {
                return Err(Error::invalid(
                    format!("{}, column `{rating}`, row {row}", file.display()),
                    "the rating is NaN",
                ));
            }
            rows += value(0).unwrap_or(0) as usize;
        }
        if rows == 0 {
            return Err(Interactions::none_in(&self.source.interactions));
        }
        Ok(rows)
    }

    /// Distinct items over every part (a grouping, which spills).
    async fn distinct_items(&self, ctx: &SessionContext) -> Result<usize> {
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT i FROM ({}) GROUP BY i)",
            self.all_parts()
        );
        let batches = collect(ctx, &sql, &self.source.interactions, "counting items").await?;
        Ok(batches
            .iter()
            .find(|b| b.num_rows() > 0)
            .and_then(|b| ints_of(b.column(0)))
            .map_or(0, |v| v[0] as usize))
    }

    fn all_parts(&self) -> String {
        (0..self.files.len())
            .map(|p| self.numbered(p))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    }

    /// Sorts every row on (user, order key, part, row), drops exact duplicates, numbers `seq`
    /// and writes `path` as the stream passes. Returns the counts (all but `rows_read`,
    /// `duplicates_dropped` and `items`) and the sort's spills.
    fn write_sorted(
        &self,
        runtime: &tokio::runtime::Runtime,
        ctx: &SessionContext,
        name: &str,
        path: &Path,
    ) -> Result<(IngestStats, (u64, u64))> {
        let origin = &self.source.interactions;
        let sql = format!(
            "SELECT u, i, r, t, o FROM ({}) ORDER BY u, o, f, n",
            self.all_parts()
        );
        let plan = runtime.block_on(async { ctx.sql(&sql).await?.create_physical_plan().await });
        let plan = plan.map_err(|e| engine_error(origin, "planning the sort", e))?;
        // The stream's tasks are spawned on this runtime; the file is written from this thread.
        let _entered = runtime.enter();
        let mut stream = execute_stream(plan.clone(), ctx.task_ctx())
            .map_err(|e| engine_error(origin, "the sort", e))?;
        let (strings, item_strings) = (self.user_kind == "VARCHAR", self.item_kind == "VARCHAR");
        let mut chunk = Chunk::new(strings, item_strings);
        let schema = chunk.take()?.schema();
        let meta = [(ingested::DATASET_KEY, name.to_owned())];
        let mut cutter = Cutter::default();
        write_parquet_batches(path, schema, &meta, |sink| {
            while let Some(batch) = runtime.block_on(stream.next()) {
                let batch = batch.map_err(|e| engine_error(origin, "the sort", e))?;
                let column = |c: usize| batch.column(c);
                let users = Ids::of(column(0), strings)?;
                let items = Ids::of(column(1), item_strings)?;
                let ratings = column(2)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(|| Error::Internal("the sort's ratings are not Float32".into()))?;
                let (times, orders) = (int64(column(3))?, int64(column(4))?);
                for r in 0..batch.num_rows() {
                    if let Some(seq) = cutter.next(&users, &items, r, orders.value(r)) {
                        chunk.push(&users, &items, r, ratings, times, seq);
                    }
                }
                if chunk.len() >= ROW_GROUP_ROWS {
                    sink.write(&chunk.take()?)?;
                }
            }
            sink.write(&chunk.take()?)
        })?;
        let mut spills = (0, 0);
        add_spills(&plan, &mut spills);
        Ok((cutter.finish(), spills))
    }
}

async fn collect(
    ctx: &SessionContext,
    sql: &str,
    file: &Path,
    step: &str,
) -> Result<Vec<RecordBatch>> {
    ctx.sql(sql)
        .await
        .map_err(|e| engine_error(file, &format!("planning {step}"), e))?
        .collect()
        .await
        .map_err(|e| engine_error(file, step, e))
}

fn int64(array: &dyn Array) -> Result<&Int64Array> {
    array
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::Internal(format!("the sort gave {}, not Int64", array.data_type())))
}

/// One sorted batch's ids: integers or strings.
enum Ids {
    Int(Vec<i64>),
    Str(StringArray),
}

impl Ids {
    fn of(array: &std::sync::Arc<dyn Array>, strings: bool) -> Result<Ids> {
        let found = array.data_type().clone();
        let wrong = || Error::Internal(format!("the sort gave ids of type {found}"));
        if strings {
            let text = arrow_cast::cast(array, &DataType::Utf8).map_err(|_| wrong())?;
            Ok(Ids::Str(
                text.as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(wrong)?
                    .clone(),
            ))
        } else {
            ints_of(array).map(Ids::Int).ok_or_else(wrong)
        }
    }
}

/// An owned id, for comparing across batches.
#[derive(Debug, Clone, PartialEq)]
enum Id {
    Int(i64),
    Str(String),
}

impl Id {
    fn of(ids: &Ids, r: usize) -> Id {
        match ids {
            Ids::Int(v) => Id::Int(v[r]),
            Ids::Str(a) => Id::Str(a.value(r).to_owned()),
        }
    }

    fn is(&self, ids: &Ids, r: usize) -> bool {
        match (self, ids) {
            (Id::Int(x), Ids::Int(v)) => *x == v[r],
            (Id::Str(x), Ids::Str(a)) => x == a.value(r),
            _ => false,
        }
    }
}

/// Cuts the sorted rows into users and tie groups (one user, one order key), as
/// `Interactions::from_events` does: a row whose item already appeared in its tie group is an
/// exact duplicate and dropped; the others are numbered within their user.
#[derive(Default)]
struct Cutter {
    user: Option<Id>,
    order: i64,
    /// Items of the current tie group.
    tie_items: Vec<Id>,
    /// Rows kept for the current user.
    kept_in_user: i32,
    stats: IngestStats,
}

impl Cutter {
    /// The `seq` of row `r`, or `None` when it is an exact duplicate.
    fn next(&mut self, users: &Ids, items: &Ids, r: usize, order: i64) -> Option<i32> {
        let same_user = self.user.as_ref().is_some_and(|u| u.is(users, r));
        if !same_user {
            self.close_user();
            self.user = Some(Id::of(users, r));
            self.stats.users += 1;
            self.tie_items.clear();
        } else if order != self.order {
            self.tie_items.clear();
        }
        self.order = order;
        if self.tie_items.iter().any(|item| item.is(items, r)) {
            return None;
        }
        self.tie_items.push(Id::of(items, r));
        let seq = self.kept_in_user;
        self.kept_in_user += 1;
        self.stats.interactions += 1;
        Some(seq)
    }

    fn close_user(&mut self) {
        if self.user.is_some() && self.kept_in_user == 1 {
            self.stats.users_with_one_interaction += 1;
        }
        self.kept_in_user = 0;
    }

    fn finish(mut self) -> IngestStats {
        self.close_user();
        self.stats
    }
}

/// Rows on their way to the file, a row group at a time.
struct Chunk {
    strings: bool,
    item_strings: bool,
    users: Vec<i64>,
    user_names: Vec<String>,
    items: Vec<i64>,
    item_names: Vec<String>,
    ratings: Vec<Option<f32>>,
    times: Vec<Option<i64>>,
    seq: Vec<i32>,
}

impl Chunk {
    fn new(strings: bool, item_strings: bool) -> Chunk {
        Chunk {
            strings,
            item_strings,
            users: Vec::new(),
            user_names: Vec::new(),
            items: Vec::new(),
            item_names: Vec::new(),
            ratings: Vec::new(),
            times: Vec::new(),
            seq: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.seq.len()
    }

    fn push(
        &mut self,
        users: &Ids,
        items: &Ids,
        r: usize,
        ratings: &Float32Array,
        times: &Int64Array,
        seq: i32,
    ) {
        match users {
            Ids::Int(v) => self.users.push(v[r]),
            Ids::Str(a) => self.user_names.push(a.value(r).to_owned()),
        }
        match items {
            Ids::Int(v) => self.items.push(v[r]),
            Ids::Str(a) => self.item_names.push(a.value(r).to_owned()),
        }
        self.ratings
            .push((!ratings.is_null(r)).then(|| ratings.value(r)));
        self.times.push((!times.is_null(r)).then(|| times.value(r)));
        self.seq.push(seq);
    }

    /// The rows so far as a canonical `interactions.parquet` batch; the chunk is left empty.
    fn take(&mut self) -> Result<RecordBatch> {
        let ids = |strings: bool, ints: &mut Vec<i64>, names: &mut Vec<String>| {
            if strings {
                RawIds::Str(StringArray::from(std::mem::take(names)))
            } else {
                RawIds::Int(std::mem::take(ints))
            }
        };
        Interactions {
            user_id: ids(self.strings, &mut self.users, &mut self.user_names),
            item_id: ids(self.item_strings, &mut self.items, &mut self.item_names),
            rating: std::mem::take(&mut self.ratings),
            timestamp: std::mem::take(&mut self.times),
            seq: std::mem::take(&mut self.seq),
        }
        .to_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutter_drops_exact_duplicates_within_a_tie_group_only() {
        let users = Ids::Int(vec![1, 1, 1, 1, 2]);
        let items = Ids::Int(vec![5, 5, 6, 5, 5]);
        let orders = [10, 10, 10, 11, 3];
        let mut cutter = Cutter::default();
        let seqs: Vec<Option<i32>> = (0..5)
            .map(|r| cutter.next(&users, &items, r, orders[r]))
            .collect();
        // Row 1 repeats (user 1, order 10, item 5); row 3 is a rewatch at another time.
        assert_eq!(seqs, [Some(0), None, Some(1), Some(2), Some(0)]);
        let stats = cutter.finish();
        assert_eq!(stats.users, 2);
        assert_eq!(stats.interactions, 4);
        assert_eq!(stats.users_with_one_interaction, 1);
    }
}
