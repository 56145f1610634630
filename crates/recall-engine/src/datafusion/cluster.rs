//! Ballista: the same plans, run by a cluster's executors (cargo feature `ballista`).
//!
//! A Ballista session sends each plan to a scheduler as a logical plan (protobuf), and the
//! executors read every table themselves, so a table the plans build in memory (the users'
//! order, the item vocabulary) cannot travel as a `MemTable`, which has no serialised form:
//! on a cluster those go to Parquet files in a directory every executor reads at the same path
//! (`SharedTables`), and are registered from there. Everything else is the plans of
//! [`super`], unchanged: the same SQL, settings and streamed sort, whose rows the tests check
//! against the in-memory encode.
//!
//! Ballista's adaptive planner is turned off (in `context`): with it the sorted stream arrives
//! out of order. Not counted on a cluster: the executors' spills (they happen in the
//! executors' processes, not in the plan this process holds).

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use recall_core::{Error, Result};

/// Which Ballista cluster runs the plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// A scheduler and one executor started in this process, on localhost: a cluster of one
    /// machine, for tests and for trying the engine.
    InProcess,
    /// A running cluster's scheduler, `df://host:port`.
    Scheduler(String),
}

impl Cluster {
    /// What the report calls it: `in-process` or the scheduler's address.
    pub fn name(&self) -> &str {
        match self {
            Cluster::InProcess => "in-process",
            Cluster::Scheduler(url) => url,
        }
    }
}

/// A session whose plans `cluster` runs, under `state`'s settings and (in process) its memory
/// pool and spill directory.
#[cfg(feature = "ballista")]
pub(super) async fn context(
    cluster: &Cluster,
    state: SessionState,
) -> datafusion::error::Result<SessionContext> {
    use ballista::extension::SessionConfigExt;
    use ballista::prelude::SessionContextExt;
    // Ballista 55's adaptive planner (on by default) returns the sort's rows out of order
    // past a few batches: ML-1M's stream gave 6,162 user groups for 6,040 users. The static
    // planner keeps the merge of the sorted partitions in the last stage, as DataFusion does.
    // The in-process executor gets as many task slots as `data.target_partitions` asks of a
    // plan (Ballista's default is the machine's cores).
    let partitions = state.config().target_partitions();
    let config = state
        .config()
        .clone()
        .upgrade_for_ballista()
        .with_ballista_adaptive_query_planner(false)
        .with_ballista_standalone_parallelism(partitions);
    let state = datafusion::execution::session_state::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    match cluster {
        Cluster::InProcess => SessionContext::standalone_with_state(state).await,
        Cluster::Scheduler(url) => SessionContext::remote_with_state(url, state).await,
    }
}

/// Unreachable from a pipeline: `[data]` refuses `engine = "ballista"` in a build without it.
#[cfg(not(feature = "ballista"))]
pub(super) async fn context(
    _: &Cluster,
    _: SessionState,
) -> datafusion::error::Result<SessionContext> {
    Err(datafusion::error::DataFusionError::Configuration(
        "this build has no Ballista: build with the `ballista` cargo feature".into(),
    ))
}

/// A directory of the small tables the plans build (removed with it), under `parent` (the
/// spill directory, or the system's temporary one), so executors read them as Parquet.
#[derive(Debug)]
pub(super) struct SharedTables {
    dir: PathBuf,
}

impl SharedTables {
    pub(super) fn create(parent: Option<&Path>) -> Result<Self> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = parent.join(format!(
            "recall-engine-tables-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                "cannot create the directory of the cluster's tables",
                &dir,
                e,
            )
        })?;
        Ok(SharedTables { dir })
    }

    /// Writes `batch` as `<name>.parquet` and returns its path.
    pub(super) fn write(&self, name: &str, batch: &RecordBatch) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.parquet"));
        recall_core::write::write_parquet(&path, batch, &[])?;
        Ok(path)
    }
}

impl Drop for SharedTables {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "cannot remove the cluster's tables: {e}");
        }
    }
}
