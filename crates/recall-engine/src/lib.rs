//! Ingest and encode on an engine, for interaction logs past one machine's memory: DataFusion
//! plans over ingest's canonical `interactions.parquet` (and a generic Parquet log), run in
//! this process or, with Ballista, by a cluster's executors.
//!
//! The in-memory path (`recall-features`, `recall-data`) is the oracle: every plan here must
//! give its rows exactly (the same values, indices, counts and tie order), which the
//! differential tests in `tests/` check on generated data, on inputs built to hit ties, and on
//! ML-1M when present, on each engine the build has.
//!
//! Built only with cargo features: `datafusion` adds about ten minutes to a cold build on two
//! cores and `ballista` (which turns on `datafusion`) a few more (MEASUREMENTS.md), so the
//! default build leaves both out, and CI builds and tests them in one invocation (`cargo test
//! -p recall-engine -p xtask --features xtask/ballista`).
//!
//! [`config`] (`[data]` of a pipeline file) is in every build; [`datafusion::encode`] and
//! [`datafusion::ingest`] with the feature, [`datafusion::cluster`] on Ballista with
//! `ballista`. Not yet on the engine: part files per user.

pub mod config;
#[cfg(feature = "datafusion")]
pub mod datafusion;
pub mod run;

pub use config::{DataConfig, Engine};
pub use run::EngineRun;
