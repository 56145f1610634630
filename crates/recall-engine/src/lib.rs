//! Encode on an engine, for interaction logs past one machine's memory: DataFusion plans over
//! ingest's canonical `interactions.parquet` (Ballista, for a cluster, would run the same plans;
//! not built yet).
//!
//! The in-memory encode (`recall-features`) is the oracle: every plan here must give its rows
//! exactly (the same values, indices, counts and tie order), which the differential tests in
//! `tests/` check on generated data, on inputs built to hit ties, and on ML-1M when present.
//!
//! Built only with the `datafusion` cargo feature: DataFusion adds about ten minutes to a cold
//! build on two cores (MEASUREMENTS.md), so the default build leaves it out, and CI builds and
//! tests it on its own (`cargo test -p recall-engine --features datafusion`).
//!
//! [`config`] (`[data]` of a pipeline file) is in every build; [`datafusion::encode`] with the
//! feature. Not yet on the engine: ingest of a generic log, part files per user, Ballista.

pub mod config;
#[cfg(feature = "datafusion")]
pub mod datafusion;
pub mod run;

pub use config::{DataConfig, Engine};
pub use run::EngineRun;
