//! Encode on an engine, for interaction logs past one machine's memory: DataFusion plans over
//! ingest's canonical `interactions.parquet` (Ballista, for a cluster, runs the same plans).
//!
//! The in-memory encode (`recall-features`) is the oracle: every plan here must give its rows
//! exactly (the same values, indices, counts and tie order), which the differential tests in
//! `tests/` check on generated data, on inputs built to hit ties, and on ML-1M when present.
//!
//! Built only with the `datafusion` cargo feature: DataFusion adds about ten minutes to a cold
//! build on two cores (MEASUREMENTS.md), so the default build leaves it out, and CI builds and
//! tests it on its own (`cargo test -p recall-engine --features datafusion`).
//!
//! Planned so far: the id vocabularies under leave-last-out roles
//! ([`datafusion::id_vocabularies`]). Not yet: the split rows and sequences (a spilling sort on
//! user, order and source row, each sequence cut while streaming), side features and buckets,
//! time cuts, warm-start growth; nor the pipeline key that chooses the engine.

#[cfg(feature = "datafusion")]
pub mod datafusion;
