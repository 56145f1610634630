//! What an engine run did, for the encode stage's report.

/// What an engine did, for the encode stage's report (in every build, so the report is typed
/// whichever engines a build has).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineRun {
    pub target_partitions: usize,
    pub memory_limit: Option<u64>,
    /// Bytes the plans wrote to spill files, over all plans.
    pub spilled_bytes: u64,
    pub spill_files: u64,
    /// Rows the sort streamed.
    pub sorted_rows: u64,
    /// The Ballista cluster that ran the plans (`in-process`, or its scheduler's address);
    /// absent for DataFusion in this process. The spill counts above do not see a cluster's
    /// executors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}
