//! The encode plans on DataFusion.
//!
//! Encode is three plans and one stream over ingest's `interactions.parquet`, none of which
//! holds the rows in memory: (1) a one-partition scan of the user column that numbers users in
//! order of first appearance (the in-memory path's group order); (2) the leave-last-out roles
//! from per-user aggregates (count, last and second-to-last `seq`; aggregates spill, window
//! functions would not) and the id vocabularies counted over the training rows; (3) a sort on
//! (user's group, `seq`) joined with the final item vocabulary, which spills past
//! `memory_limit` and is read as a stream, each user's sequence cut as it passes. What the
//! stream yields (item indices and timestamps, 20 bytes a row) goes to `recall-features`'
//! [`encode_grouped`], which writes the same files as the in-memory encode. A time split
//! (`encode.test_from`) is one more per-user aggregate (the first `seq` at or after the cut)
//! that every plan's input view is filtered by.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::Int64Builder;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use recall_core::encoded::{LaterTargets, TimeSplitStats};
use recall_core::{Error, RawIds, Result, Table, columns as col, ingested};
use recall_features::encode::TestTargets;
use recall_features::{
    EarlierEncoding, EncodeConfig, Encoded, GroupedInteractions, SideInputs, SourceCounts,
    Vocabulary, encode_grouped, finish_vocabularies,
};

use crate::config::{DataConfig, Engine};
use crate::run::EngineRun;

pub mod cluster;
pub mod ingest;

pub use cluster::Cluster;
use cluster::SharedTables;

/// A vocabulary as the plans count it: the known raw values (count descending, then raw value
/// ascending) and each one's training count.
#[derive(Debug, Clone)]
pub struct CountedIds {
    pub raw: RawIds,
    pub counts: Vec<u64>,
}

/// The user and item vocabularies.
#[derive(Debug, Clone)]
pub struct IdVocabularies {
    pub users: CountedIds,
    pub items: CountedIds,
}

/// How the plans run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Partitions (and worker threads) a plan runs on; `None`: one per core.
    pub target_partitions: Option<usize>,
    /// The memory pool past which sorts and aggregates spill; `None`: unbounded.
    pub memory_limit: Option<u64>,
    /// Where spill files go; `None`: the system's temporary directory. On a cluster, also
    /// where the plans' small tables go for the executors to read.
    pub spill_dir: Option<PathBuf>,
    /// The Ballista cluster that runs the plans; `None`: DataFusion in this process.
    pub cluster: Option<Cluster>,
}

impl Options {
    /// The options `[data]` sets.
    pub fn from_config(data: &DataConfig) -> Result<Self> {
        data.validate()?;
        Ok(Options {
            target_partitions: data.target_partitions,
            memory_limit: data.memory_limit_bytes()?,
            spill_dir: data.spill_dir.clone(),
            cluster: (data.engine == Engine::Ballista).then(|| match &data.scheduler {
                Some(url) => Cluster::Scheduler(url.clone()),
                None => Cluster::InProcess,
            }),
        })
    }

    fn partitions(&self) -> usize {
        self.target_partitions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// Encodes ingest's outputs in `ingest_dir` on DataFusion: the same [`Encoded`] as
/// `recall_features::encode` gives (checked row for row by `tests/`). `grow_from` is an
/// earlier encoding to grow (a warm start). A refresh's cut (`encode.before`) filters every
/// plan's input; a time split (`encode.test_from`) cuts each user's rows after its first one
/// at or after the cut, from per-user aggregates, as the in-memory `time_split` does.
///
/// ```
/// use recall_data::{IngestConfig, SyntheticConfig, ingest};
/// use recall_engine::datafusion::{Options, encode};
/// use recall_features::EncodeConfig;
///
/// let dir = tempfile::tempdir()?;
/// ingest(&IngestConfig::Synthetic(SyntheticConfig::new(200, 100, 20, 7)))?.write(dir.path())?;
/// let options = Options { memory_limit: Some(64 << 20), ..Options::default() };
/// let (encoded, run) = encode(dir.path(), &EncodeConfig::default(), None, &options)?;
/// assert_eq!(encoded.test.len(), 200);
/// assert_eq!(run.sorted_rows as usize, encoded.manifest.stats.interactions);
/// encoded.write(&dir.path().join("encode"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(
    ingest_dir: &Path,
    config: &EncodeConfig,
    grow_from: Option<&EarlierEncoding>,
    options: &Options,
) -> Result<(Encoded, EngineRun)> {
    config.validate()?;
    let interactions = ingest_dir.join(ingested::INTERACTIONS);
    let side = |name: &str| -> Result<Option<Table>> {
        let path = ingest_dir.join(name);
        path.exists().then(|| Table::read(&path)).transpose()
    };
    let (users_side, items_side) = (side(ingested::USERS)?, side(ingested::ITEMS)?);
    let sides = SideInputs {
        users: users_side.as_ref(),
        items: items_side.as_ref(),
        grow_from,
    };
    let cuts = Cuts {
        before: config.before,
        test_from: config.test_from,
    };
    let engine = Session::open(&interactions, options, cuts)?;
    let (grouped, users, items, source, later) = engine.runtime.block_on(async {
        let UserScan {
            order,
            rows,
            rows_after_cut,
        } = engine.first_appearance().await?;
        let (order, has_test, time_split) = match config.test_from {
            Some(cut) => {
                let split = engine.time_split(&order, cut).await?;
                (split.order, Some(split.has_test), Some(split.stats))
            }
            None => (order, None, None),
        };
        let counted = engine
            .vocabularies(config.validation, config.item_min_count)
            .await?;
        let (users, items, cold_items) = finish_vocabularies(
            Vocabulary::from_counted(&counted.users.raw, &counted.users.counts, 1),
            Vocabulary::from_counted(
                &counted.items.raw,
                &counted.items.counts,
                config.item_min_count.max(1),
            ),
            &sides,
            config,
        )?;
        let mut grouped = engine.sorted_groups(&order, &items, rows).await?;
        grouped.users = users.encode(&order).iter().map(|&u| u as u32).collect();
        let later = if config.test_targets == TestTargets::AfterCut {
            Some(engine.later_targets(&items, &grouped.users).await?)
        } else {
            None
        };
        let time_split = time_split.map(|mut stats| {
            stats.later_targets = later.as_ref().map(LaterTargets::len);
            stats.rows_left_out =
                rows - grouped.items.len() - stats.later_targets.unwrap_or_default();
            stats
        });
        if let Some(has_test) = has_test {
            grouped.has_test = has_test;
        }
        let source = SourceCounts {
            interactions: rows,
            rows_after_cut,
            time_split,
            cold_items,
        };
        Ok::<_, Error>((grouped, users, items, source, later))
    })?;
    let run = engine.run_report(grouped.items.len() as u64);
    // The engine goes before the rest of encode runs in memory: its runtime's worker threads
    // exit, and with them what the allocator kept for them (at 100 M rows, GBs of the sort's
    // buffers stayed resident while the sequences were built beside them).
    drop(engine);
    let mut encoded = encode_grouped(grouped, users, items, source, &sides, config)?;
    encoded.later_targets = later;
    Ok((encoded, run))
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
///     id_vocabularies(&dir.path().join("interactions.parquet"), true, 1, &Options::default())?;
/// // Index 2 is the most frequent training item; counts never rise down the list.
/// assert!(vocabularies.items.counts.windows(2).all(|w| w[0] >= w[1]));
/// assert_eq!(vocabularies.users.raw.len(), 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn id_vocabularies(
    interactions: &Path,
    validation: bool,
    item_min_count: u64,
    options: &Options,
) -> Result<IdVocabularies> {
    let engine = Session::open(interactions, options, Cuts::default())?;
    engine.runtime.block_on(async {
        // The seq check rides on the first-appearance scan (a repeated `seq` is refused by
        // the sort's stream in `encode`; here there is no sort, so check it on its own).
        engine.first_appearance().await?;
        engine.check_unique_seq().await?;
        engine.vocabularies(validation, item_min_count).await
    })
}

/// What the one-partition scan found: the users in order of first appearance and how many
/// rows encode keeps and `encode.before` leaves out.
struct UserScan {
    order: RawIds,
    rows: usize,
    rows_after_cut: usize,
}

/// The time cuts of `[encode]` every plan's input follows.
#[derive(Debug, Clone, Copy, Default)]
struct Cuts {
    /// `encode.before`: only rows with a timestamp before it are encoded.
    before: Option<i64>,
    /// `encode.test_from`: each user's first row at or after it is the test target, the rows
    /// after that left out.
    test_from: Option<i64>,
}

impl Cuts {
    /// The key a row without a timestamp is refused under (the in-memory path checks
    /// `test_from` first).
    fn timestamp_key(&self) -> Option<&'static str> {
        if self.test_from.is_some() {
            Some("encode.test_from")
        } else if self.before.is_some() {
            Some("encode.before")
        } else {
            None
        }
    }
}

/// What [`Session::time_split`] decided for the users of the first-appearance scan.
struct TimeSplit {
    /// The users kept, in first-appearance order: those with an interaction before the cut.
    order: RawIds,
    /// Whether each kept user has a test target (an interaction at or after the cut).
    has_test: Vec<bool>,
    /// The counts, `rows_left_out` still to be filled from the sort.
    stats: TimeSplitStats,
}

/// Per-row flag column of a time split's input view: whether the row's user has a test target
/// (none of ingest's columns is named so).
const HAS_TEST: &str = "recall_has_test";

/// A DataFusion session over one interactions file, and the spills its plans made.
struct Session {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
    interactions: PathBuf,
    partitions: usize,
    memory_limit: Option<u64>,
    /// The Ballista cluster that runs the plans, and where their small tables go for its
    /// executors (in memory without a cluster).
    cluster: Option<(Cluster, SharedTables)>,
    spills: std::sync::Mutex<(u64, u64)>,
    cuts: Cuts,
    /// How ids are compared in joins (`CAST(user_id AS ...)`), set by the first scan.
    user_type: std::sync::OnceLock<&'static str>,
    item_type: std::sync::OnceLock<&'static str>,
}

impl Session {
    fn open(interactions: &Path, options: &Options, cuts: Cuts) -> Result<Self> {
        let partitions = options.partitions();
        let (runtime, ctx) = start(interactions, options, partitions, false)?;
        if !interactions.is_file() {
            return Err(Error::invalid(
                interactions.display().to_string(),
                "missing: run the ingest stage first",
            ));
        }
        let path = interactions.to_str().ok_or_else(|| {
            Error::config(
                "ingest output",
                format!(
                    "{} is not a UTF-8 path, which DataFusion needs",
                    interactions.display()
                ),
            )
        })?;
        runtime
            .block_on(ctx.register_parquet("source", path, ParquetReadOptions::default()))
            .map_err(|e| engine_error(interactions, "reading", e))?;
        // Every plan reads `interactions`: the file, or its rows before `encode.before`'s cut
        // (the first scan has checked that every row has a timestamp), with a time split each
        // user's rows up to its first one at or after `encode.test_from` (users with none
        // before it left out), and whether the user has that test target.
        let (user, seq, time) = (col::USER_ID, col::SEQ, col::TIMESTAMP);
        let encoded_rows = match cuts.before {
            Some(cut) => format!("SELECT * FROM source WHERE {time} < {cut}"),
            None => String::from("SELECT * FROM source"),
        };
        let views = match cuts.test_from {
            None => vec![format!("CREATE VIEW interactions AS {encoded_rows}")],
            Some(cut) => vec![
                format!("CREATE VIEW encoded_rows AS {encoded_rows}"),
                // The per-user table on the join's left (build) side, as in every plan.
                format!(
                    "CREATE VIEW time_cuts AS SELECT {user} AS u, MIN({seq}) AS first, \
                     MIN(CASE WHEN CAST({time} AS BIGINT) >= {cut} THEN {seq} END) AS cut_seq \
                     FROM encoded_rows GROUP BY {user}"
                ),
                format!(
                    "CREATE VIEW interactions AS SELECT i.*, c.cut_seq IS NOT NULL AS {HAS_TEST} \
                     FROM time_cuts c JOIN encoded_rows i ON c.u = i.{user} \
                     WHERE c.cut_seq IS NULL OR (c.cut_seq > c.first AND i.{seq} <= c.cut_seq)"
                ),
            ],
        };
        for view in &views {
            runtime
                .block_on(ctx.sql(view))
                .map_err(|e| engine_error(interactions, "reading", e))?;
        }
        Ok(Session {
            runtime,
            ctx,
            interactions: interactions.to_owned(),
            partitions,
            memory_limit: options.memory_limit,
            cluster: options
                .cluster
                .as_ref()
                .map(|c| {
                    Ok::<_, Error>((
                        c.clone(),
                        SharedTables::create(options.spill_dir.as_deref())?,
                    ))
                })
                .transpose()?,
            cuts,
            spills: std::sync::Mutex::new((0, 0)),
            user_type: std::sync::OnceLock::new(),
            item_type: std::sync::OnceLock::new(),
        })
    }

    fn error(&self, step: &str, e: datafusion::error::DataFusionError) -> Error {
        match &self.cluster {
            Some((cluster, _)) => engine_error(
                &self.interactions,
                &format!("{step}, on the Ballista cluster {}", cluster.name()),
                e,
            ),
            None => engine_error(&self.interactions, step, e),
        }
    }

    fn invalid(&self, column: &str, message: String) -> Error {
        Error::invalid(
            format!("{}, column `{column}`", self.interactions.display()),
            message,
        )
    }

    /// Plans and runs `sql`, adding its spills to the session's.
    async fn collect(&self, sql: &str, step: &str) -> Result<Vec<RecordBatch>> {
        let plan = self.plan(sql, step).await?;
        let batches = datafusion::physical_plan::collect(plan.clone(), self.ctx.task_ctx())
            .await
            .map_err(|e| self.error(step, e))?;
        self.add_spills(&plan);
        Ok(batches)
    }

    async fn plan(&self, sql: &str, step: &str) -> Result<Arc<dyn ExecutionPlan>> {
        let frame = self
            .ctx
            .sql(sql)
            .await
            .map_err(|e| self.error(&format!("planning {step}"), e))?;
        let plan = frame
            .create_physical_plan()
            .await
            .map_err(|e| self.error(&format!("planning {step}"), e))?;
        tracing::debug!(
            step,
            plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(true),
            "planned"
        );
        Ok(plan)
    }

    fn add_spills(&self, plan: &Arc<dyn ExecutionPlan>) {
        if let Ok(mut totals) = self.spills.lock() {
            add_spills(plan, &mut totals);
        }
    }

    fn run_report(&self, sorted_rows: u64) -> EngineRun {
        let (spilled_bytes, spill_files) = self.spills.lock().map_or((0, 0), |s| *s);
        EngineRun {
            target_partitions: self.partitions,
            memory_limit: self.memory_limit,
            spilled_bytes,
            spill_files,
            sorted_rows,
            cluster: self.cluster.as_ref().map(|(c, _)| c.name().to_owned()),
        }
    }

    /// Every user once, in order of first appearance in the file (the in-memory path's group
    /// order, which the split files follow), read in one partition so file order holds; checks
    /// that ids are complete integers or strings and, under a time cut, that every row has a
    /// timestamp, leaving out the rows at or after `encode.before` (returns how many).
    /// Memory: one entry per user.
    async fn first_appearance(&self) -> Result<UserScan> {
        let (user, item, timestamp) = (col::USER_ID, col::ITEM_ID, col::TIMESTAMP);
        let single = SessionContext::new_with_config(
            SessionConfig::new()
                .with_target_partitions(1)
                .with_repartition_file_scans(false)
                .set_bool(
                    "datafusion.execution.parquet.schema_force_view_types",
                    false,
                ),
        );
        let path = self.interactions.to_string_lossy();
        single
            .register_parquet("interactions", path.as_ref(), ParquetReadOptions::default())
            .await
            .map_err(|e| self.error("reading", e))?;
        let time = if self.cuts.timestamp_key().is_some() {
            let schema = single
                .table("interactions")
                .await
                .map_err(|e| self.error("reading", e))?
                .schema()
                .clone();
            if !schema.has_column_with_unqualified_name(timestamp) {
                return Err(self.no_timestamp("has no timestamp column"));
            }
            format!(", CAST({timestamp} AS BIGINT)")
        } else {
            String::new()
        };
        let frame = single
            .sql(&format!("SELECT {user}, {item}{time} FROM interactions"))
            .await
            .map_err(|e| self.error("planning the user scan", e))?;
        let mut stream = frame
            .execute_stream()
            .await
            .map_err(|e| self.error("the user scan", e))?;
        let mut ints: HashSet<i64> = HashSet::new();
        let mut strs: HashSet<String> = HashSet::new();
        let (mut int_order, mut str_order) = (Vec::new(), Vec::new());
        let (mut row, mut after_cut) = (0usize, 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.error("the user scan", e))?;
            // Under a cut, only the rows before it count (and every row needs a time).
            let times = match self.cuts.timestamp_key() {
                Some(_) => {
                    let times = batch
                        .column(2)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| Error::Internal("timestamps are not Int64".into()))?;
                    if let Some(r) = (0..times.len()).find(|&r| times.is_null(r)) {
                        return Err(self.no_timestamp(&format!("has none at row {}", row + r)));
                    }
                    Some(times)
                }
                None => None,
            };
            let kept: Option<Vec<bool>> = self
                .cuts
                .before
                .zip(times)
                .map(|(cut, times)| times.values().iter().map(|&t| t < cut).collect());
            let keep = |r: usize| kept.as_ref().is_none_or(|k| k[r]);
            after_cut += (0..batch.num_rows()).filter(|&r| !keep(r)).count();
            for (i, name, slot) in [(0, user, &self.user_type), (1, item, &self.item_type)] {
                let column = batch.column(i);
                if let Some(r) = (0..column.len()).find(|&r| column.is_null(r)) {
                    return Err(Error::invalid(
                        format!(
                            "{}, column `{name}`, row {}",
                            self.interactions.display(),
                            row + r
                        ),
                        "the id is missing: every interaction needs a user and an item".to_owned(),
                    ));
                }
                let kind = id_kind(column.data_type())
                    .ok_or_else(|| self.invalid(name, id_type_message(column.data_type())))?;
                slot.get_or_init(|| kind);
            }
            let users = batch.column(0);
            if let Some(values) = ints_of(users) {
                for (r, v) in values.into_iter().enumerate() {
                    if keep(r) && ints.insert(v) {
                        int_order.push(v);
                    }
                }
            } else if let Some(values) = strings_of(users) {
                for (r, v) in values.into_iter().enumerate() {
                    if keep(r) && !strs.contains(&v) {
                        strs.insert(v.clone());
                        str_order.push(v);
                    }
                }
            }
            row += batch.num_rows();
        }
        if row == 0 {
            return Err(Error::invalid(
                self.interactions.display().to_string(),
                "has no rows: the ingest source was empty",
            ));
        }
        if let Some(cut) = self.cuts.before.filter(|_| after_cut == row) {
            return Err(Error::config(
                "encode.before",
                format!(
                    "no interaction of {} is before {cut}: the cut is earlier than the data",
                    self.interactions.display()
                ),
            ));
        }
        let order = if str_order.is_empty() {
            RawIds::Int(int_order)
        } else {
            RawIds::Str(StringArray::from(str_order))
        };
        Ok(UserScan {
            order,
            rows: row - after_cut,
            rows_after_cut: after_cut,
        })
    }

    /// A time cut on rows without a timestamp, as the in-memory encode words it.
    fn no_timestamp(&self, what: &str) -> Error {
        let key = self.cuts.timestamp_key().unwrap_or("encode.before");
        recall_features::encode::no_timestamp(key, &self.interactions, what)
    }

    /// `encode.test_from`'s split of the scanned users (`order`, first-appearance order): a
    /// user whose first row is at or after the cut is left out, one with no row after it keeps
    /// every row and has no test target. Memory: a few bytes per user.
    async fn time_split(&self, order: &RawIds, cut: i64) -> Result<TimeSplit> {
        let kind = self.user_type.get().copied().unwrap_or("BIGINT");
        self.register_order("scan_order", order).await?;
        let batches = self
            .collect(
                &format!(
                    "SELECT o.grp, CAST(c.cut_seq IS NULL AS BIGINT) AS only_before, \
                     CAST(COALESCE(c.cut_seq = c.first, false) AS BIGINT) AS only_after \
                     FROM scan_order o JOIN time_cuts c ON CAST(o.u AS {kind}) = CAST(c.u AS {kind}) \
                     ORDER BY o.grp"
                ),
                "the time split",
            )
            .await?;
        let mut kept = Vec::with_capacity(order.len());
        let mut has_test = Vec::with_capacity(order.len());
        let mut stats = TimeSplitStats {
            test_from: cut,
            ..TimeSplitStats::default()
        };
        for batch in &batches {
            let column = |i: usize| ints_of(batch.column(i)).unwrap_or_default();
            let (groups, only_before, only_after) = (column(0), column(1), column(2));
            for ((&g, &before), &after) in groups.iter().zip(&only_before).zip(&only_after) {
                if after == 1 {
                    stats.users_only_after += 1;
                    continue;
                }
                stats.users_only_before += before as usize;
                kept.push(g as usize);
                has_test.push(before == 0);
            }
        }
        if kept.len() + stats.users_only_after != order.len() {
            return Err(Error::Internal(format!(
                "the time split saw {} users, the scan {}",
                kept.len() + stats.users_only_after,
                order.len()
            )));
        }
        Ok(TimeSplit {
            order: order.take(&kept),
            has_test,
            stats,
        })
    }

    /// `i.item_id` as a join against `items` (table `item_index`) compares it: an integer id
    /// against a string vocabulary (an earlier run's) compares as text, as
    /// `Vocabulary::encode` does.
    fn item_key(&self, items: &Vocabulary) -> String {
        match items {
            Vocabulary::Str(_) => format!("CAST(i.{} AS VARCHAR)", col::ITEM_ID),
            Vocabulary::Int(_) => self.key("i", col::ITEM_ID),
        }
    }

    /// `user_id` or `item_id` as the joins compare it.
    fn key(&self, table: &str, column: &str) -> String {
        let kind = if column == col::USER_ID {
            self.user_type.get()
        } else {
            self.item_type.get()
        };
        format!(
            "CAST({table}.{column} AS {})",
            kind.copied().unwrap_or("BIGINT")
        )
    }

    /// Refuses a user with two rows of one `seq` (what the sort's stream checks in `encode`).
    async fn check_unique_seq(&self) -> Result<()> {
        let (user, seq) = (col::USER_ID, col::SEQ);
        let repeated = self
            .collect(
                &format!(
                    "SELECT CAST({user} AS VARCHAR) AS u, CAST({seq} AS BIGINT) AS s FROM interactions \
                     GROUP BY {user}, {seq} HAVING COUNT(*) > 1 ORDER BY u, s LIMIT 1"
                ),
                "the seq check",
            )
            .await?;
        match repeated.iter().find(|b| b.num_rows() > 0) {
            Some(batch) => Err(self.repeated_seq(
                &strings_of(batch.column(0)).map_or_else(String::new, |s| s[0].clone()),
                ints_of(batch.column(1)).map_or(0, |v| v[0]),
            )),
            None => Ok(()),
        }
    }

    fn repeated_seq(&self, user: &str, seq: i64) -> Error {
        self.invalid(
            col::SEQ,
            format!(
                "user {user} has two rows with seq {seq}; seq must number each user's \
                 interactions uniquely: re-run ingest"
            ),
        )
    }

    /// The id vocabularies over the training rows (see [`id_vocabularies`]), with the roles
    /// from per-user aggregates: `n`, the last `seq` and the one before it.
    async fn vocabularies(&self, validation: bool, item_min_count: u64) -> Result<IdVocabularies> {
        let (user, item, seq) = (col::USER_ID, col::ITEM_ID, col::SEQ);
        // `t`: whether the user has a test target (false only for those a time split left
        // without one: their last row is the validation target, as if a test came after).
        // Without a time split every user has one, and nothing is aggregated for it.
        let has_test = if self.cuts.test_from.is_some() {
            format!("BOOL_AND({HAS_TEST})")
        } else {
            String::from("TRUE")
        };
        let statements = [
            format!(
                "CREATE OR REPLACE VIEW lengths AS SELECT {user} AS u, COUNT(*) AS n, \
                 MAX({seq}) AS last, {has_test} AS t FROM interactions GROUP BY {user}"
            ),
            // Every join below puts the per-user table on the left: a hash join holds its
            // left (build) side in memory, and the interactions must only stream past it.
            format!(
                "CREATE OR REPLACE VIEW before_last AS SELECT l.u, MAX(i.{seq}) AS prev \
                 FROM lengths l JOIN interactions i ON l.u = i.{user} WHERE i.{seq} < l.last \
                 GROUP BY l.u"
            ),
            String::from(
                "CREATE OR REPLACE VIEW roles AS SELECT l.u, l.n, l.last, l.t, b.prev \
                 FROM lengths l LEFT JOIN before_last b ON l.u = b.u",
            ),
            format!(
                "CREATE OR REPLACE VIEW training AS SELECT i.{user}, i.{item} \
                 FROM roles r JOIN interactions i ON r.u = i.{user} \
                 WHERE NOT ((r.t AND r.n >= 2 AND i.{seq} = r.last) \
                   OR ({validation} AND r.t AND r.n >= 3 AND COALESCE(i.{seq} = r.prev, false)) \
                   OR ({validation} AND NOT r.t AND r.n >= 2 AND i.{seq} = r.last))"
            ),
        ];
        for statement in &statements {
            self.ctx
                .sql(statement)
                .await
                .map_err(|e| self.error("planning the roles", e))?;
        }
        let users = self.counted(user, 1).await?;
        let items = self.counted(item, item_min_count.max(1)).await?;
        Ok(IdVocabularies { users, items })
    }

    async fn counted(&self, column: &str, min_count: u64) -> Result<CountedIds> {
        let batches = self
            .collect(
                &format!(
                    "SELECT {column} AS raw, COUNT(*) AS count FROM training GROUP BY {column} \
                     HAVING COUNT(*) >= {min_count} ORDER BY count DESC, raw ASC"
                ),
                &format!("the `{column}` vocabulary"),
            )
            .await?;
        let mut int_raw = Vec::new();
        let mut str_raw: Vec<String> = Vec::new();
        let mut counts = Vec::new();
        for batch in &batches {
            let raw = batch.column(0);
            if let Some(v) = ints_of(raw) {
                int_raw.extend(v);
            } else if let Some(v) = strings_of(raw) {
                str_raw.extend(v);
            } else {
                return Err(self.invalid(column, id_type_message(raw.data_type())));
            }
            counts.extend(
                ints_of(batch.column(1))
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
        Ok(CountedIds { raw, counts })
    }

    /// The interactions sorted by (the user's place in `order`, `seq`), each item as its index
    /// in `items`, cut into one group per user as the sorted stream passes. `users` is left
    /// empty for the caller.
    async fn sorted_groups(
        &self,
        order: &RawIds,
        items: &Vocabulary,
        rows: usize,
    ) -> Result<GroupedInteractions> {
        let (seq, timestamp) = (col::SEQ, col::TIMESTAMP);
        self.register_order("user_order", order).await?;
        let known = items.raw_ids();
        let first = col::FIRST_KNOWN_INDEX as i64;
        self.register(
            "item_index",
            vec![
                ("v", known.to_array()),
                (
                    "idx",
                    Arc::new(Int64Array::from_iter_values(
                        first..first + known.len() as i64,
                    )),
                ),
            ],
        )
        .await?;
        let has_timestamp = self
            .ctx
            .table("interactions")
            .await
            .map_err(|e| self.error("reading", e))?
            .schema()
            .has_column_with_unqualified_name(timestamp);
        let time = if has_timestamp {
            format!("CAST(i.{timestamp} AS BIGINT)")
        } else {
            String::from("CAST(NULL AS BIGINT)")
        };
        let item_key = self.item_key(items);
        let sql = format!(
            "SELECT o.grp, CAST(i.{seq} AS BIGINT) AS s, COALESCE(x.idx, {oov}) AS item, {time} AS t \
             FROM item_index x RIGHT JOIN \
               (user_order o JOIN interactions i ON o.u = {user_key}) ON x.v = {item_key} \
             ORDER BY o.grp, s",
            oov = col::OOV_INDEX,
            user_key = self.key("i", col::USER_ID),
        );
        let plan = self.plan(&sql, "the sort").await?;
        let mut stream = execute_stream(plan.clone(), self.ctx.task_ctx())
            .map_err(|e| self.error("the sort", e))?;
        // Sized from the scan's count: growing by doubling would hold two copies at the last
        // step (1.2 GB of the two columns at 100 M rows).
        let mut grouped = GroupedInteractions {
            starts: Vec::with_capacity(order.len() + 1),
            items: Vec::with_capacity(rows),
            ..GroupedInteractions::default()
        };
        grouped.starts.push(0);
        let mut timestamps = Int64Builder::with_capacity(rows);
        let mut last: Option<(i64, i64)> = None;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| self.error("the sort", e))?;
            let column = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| {
                        Error::Internal(format!(
                            "the sort's column {i} is {}, not Int64",
                            batch.column(i).data_type()
                        ))
                    })
            };
            let (groups, seqs, item_idx, times) = (column(0)?, column(1)?, column(2)?, column(3)?);
            for r in 0..batch.num_rows() {
                let (g, s) = (groups.value(r), seqs.value(r));
                match last {
                    Some((lg, ls)) if lg == g && ls == s => {
                        return Err(self.repeated_seq(&order.display(g as usize), s));
                    }
                    Some((lg, _)) if lg == g => {}
                    Some(_) => grouped.starts.push(grouped.items.len()),
                    None => {}
                }
                last = Some((g, s));
                grouped.items.push(item_idx.value(r) as i32);
            }
            timestamps.append_array(times);
        }
        grouped.timestamps = timestamps.finish();
        self.add_spills(&plan);
        grouped.starts.push(grouped.items.len());
        let groups = grouped.starts.len() - 1;
        if groups != order.len() {
            return Err(Error::Internal(format!(
                "the sort gave {groups} users, the scan {}",
                order.len()
            )));
        }
        grouped.has_test = vec![true; groups];
        Ok(grouped)
    }

    /// A time split's later targets (`encode.test_targets = "after-cut"`): each test user's
    /// rows after its first one at or after the cut, in the order of [`Self::sorted_groups`]
    /// (whose `user_order` and `item_index` tables it reads), the user as `users` encodes each
    /// group and the item as the vocabulary indexes it.
    async fn later_targets(&self, items: &Vocabulary, users: &[u32]) -> Result<LaterTargets> {
        let (user, seq) = (col::USER_ID, col::SEQ);
        let item_key = self.item_key(items);
        let sql = format!(
            "SELECT o.grp, COALESCE(x.idx, {oov}) AS item, CAST(i.{seq} AS BIGINT) AS s \
             FROM item_index x RIGHT JOIN \
               (user_order o JOIN encoded_rows i ON o.u = {user_key} \
                JOIN time_cuts c ON c.u = i.{user}) ON x.v = {item_key} \
             WHERE c.cut_seq > c.first AND i.{seq} > c.cut_seq \
             ORDER BY o.grp, s",
            oov = col::OOV_INDEX,
            user_key = self.key("i", col::USER_ID),
        );
        let batches = self.collect(&sql, "the later targets").await?;
        let mut later = LaterTargets::default();
        for batch in &batches {
            let column = |i: usize| ints_of(batch.column(i)).unwrap_or_default();
            for (&g, &item) in column(0).iter().zip(&column(1)) {
                later.user.push(users[g as usize]);
                later.item.push(item as u32);
            }
        }
        Ok(later)
    }

    /// Registers `order` as table `name`: `u` (the raw id) and `grp` (its place in `order`).
    async fn register_order(&self, name: &str, order: &RawIds) -> Result<()> {
        let places = Int64Array::from_iter_values(0..order.len() as i64);
        self.register(
            name,
            vec![("u", order.to_array()), ("grp", Arc::new(places))],
        )
        .await
    }

    /// Registers `columns` as table `name`: in memory, or on a cluster as a Parquet file the
    /// executors read.
    async fn register(&self, name: &str, columns: Vec<(&str, ArrayRef)>) -> Result<()> {
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .map_err(|e| Error::Internal(format!("table {name}: {e}")))?;
        let step = format!("registering {name}");
        match &self.cluster {
            None => {
                let table = MemTable::try_new(schema, vec![vec![batch]])
                    .map_err(|e| self.error(&step, e))?;
                self.ctx
                    .register_table(name, Arc::new(table))
                    .map_err(|e| self.error(&step, e))?;
            }
            Some((_, tables)) => {
                let path = tables.write(name, &batch)?;
                self.ctx
                    .register_parquet(
                        name,
                        path.to_string_lossy().as_ref(),
                        ParquetReadOptions::default(),
                    )
                    .await
                    .map_err(|e| self.error(&step, e))?;
            }
        }
        Ok(())
    }
}

/// A runtime with `partitions` worker threads and a session under `options`' memory pool and
/// spill directory, whose plans run in this process or on `options.cluster`; `file` names
/// what the engine reads, in errors.
/// With `scans_in_file_order` each Parquet file is read as one partition, row groups in order
/// (what numbering rows in source order needs).
fn start(
    file: &Path,
    options: &Options,
    partitions: usize,
    scans_in_file_order: bool,
) -> Result<(tokio::runtime::Runtime, SessionContext)> {
    // The drivers the build has (Ballista's gRPC needs sockets and timers; DataFusion alone
    // builds neither).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(partitions)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the DataFusion runtime for", file, e))?;
    let mut env = RuntimeEnvBuilder::new();
    if let Some(limit) = options.memory_limit {
        env = env.with_memory_pool(Arc::new(FairSpillPool::new(limit as usize)));
    }
    if let Some(dir) = &options.spill_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the spill directory", dir, e))?;
        env = env.with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
        );
    }
    let env = env
        .build_arc()
        .map_err(|e| engine_error(file, "starting the engine", e))?;
    let mut config = SessionConfig::new();
    if let Some(limit) = options.memory_limit {
        // A sort sets aside this much per partition for merging its spill files; the
        // default (10 MB) is more than a small pool holds.
        let reserve = (limit / 16).min(10 << 20) as usize;
        config.options_mut().execution.sort_spill_reservation_bytes = reserve;
    }
    let config = config
        .with_target_partitions(partitions)
        .with_repartition_file_scans(!scans_in_file_order)
        // Plain Utf8 ids, as the in-memory path reads them.
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        // The plans put each per-user or per-item table on a join's build (left) side,
        // which a hash join holds in memory; the optimiser's swap, which guesses sizes from
        // statistics an aggregate does not have, would build on the interactions instead.
        .set_bool("datafusion.optimizer.join_reordering", false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(env)
        .with_default_features()
        .build();
    let ctx = match &options.cluster {
        None => SessionContext::new_with_state(state),
        Some(cluster) => runtime
            .block_on(cluster::context(cluster, state))
            .map_err(|e| {
                engine_error(
                    file,
                    &format!("connecting to the Ballista cluster ({})", cluster.name()),
                    e,
                )
            })?,
    };
    Ok((runtime, ctx))
}

/// Adds the bytes and files `plan` and its children spilled to `totals`.
fn add_spills(plan: &Arc<dyn ExecutionPlan>, totals: &mut (u64, u64)) {
    if let Some(metrics) = plan.metrics() {
        totals.0 += metrics.spilled_bytes().unwrap_or(0) as u64;
        totals.1 += metrics.spill_count().unwrap_or(0) as u64;
    }
    for child in plan.children() {
        add_spills(child, totals);
    }
}

/// An engine failure, with the file and the step it happened in.
fn engine_error(file: &Path, step: &str, e: datafusion::error::DataFusionError) -> Error {
    let what = format!("{} (DataFusion, {step})", file.display());
    match e.find_root() {
        datafusion::error::DataFusionError::ResourcesExhausted(why) => Error::config(
            "data.memory_limit",
            format!(
                "{what}: the engine ran out of its memory pool ({why}); a step that cannot \
                 spill needs more: raise the limit"
            ),
        ),
        _ => Error::invalid(what, e.to_string()),
    }
}

/// How an id column is compared in the joins: `BIGINT` for any integer width, `VARCHAR` for
/// strings; `None` for anything else.
fn id_kind(data_type: &DataType) -> Option<&'static str> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some("VARCHAR"),
        t if t.is_integer() => Some("BIGINT"),
        _ => None,
    }
}

fn id_type_message(data_type: &DataType) -> String {
    format!("ids are {data_type}; they must be integers or strings")
}

fn ints_of(array: &ArrayRef) -> Option<Vec<i64>> {
    if !array.data_type().is_integer() {
        return None;
    }
    let wide = arrow_cast::cast(array, &DataType::Int64).ok()?;
    let a = wide.as_any().downcast_ref::<Int64Array>()?;
    Some(a.iter().map(|v| v.unwrap_or_default()).collect())
}

fn strings_of(array: &ArrayRef) -> Option<Vec<String>> {
    if !matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return None;
    }
    let text = arrow_cast::cast(array, &DataType::Utf8).ok()?;
    let a = text.as_any().downcast_ref::<StringArray>()?;
    Some(a.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
}
