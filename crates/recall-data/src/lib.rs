//! Raw data in, canonical Parquet out: the only crate that knows dataset formats.
//!
//! - [`movielens`]: the official MovieLens layouts (ml-100k, ml-1m, ml-latest family).
//! - [`generic`]: any interactions table in Parquet or CSV with configurable column names, plus
//!   optional user and item side tables.
//! - [`synthetic`]: a seeded MovieLens-shaped generator with planted tastes, the default data of
//!   the pipeline, so it runs offline with nothing downloaded.
//! - [`dataset`]: the canonical form every reader produces and how it is ordered and written.
//!
//! Canonical output (`interactions.parquet`, `users.parquet`, `items.parquet`) is documented
//! column by column in `ARCHITECTURE.md`.
//!
//! ```
//! use recall_data::{IngestConfig, SyntheticConfig, ingest};
//! let config = IngestConfig::Synthetic(SyntheticConfig::new(500, 300, 40, 7));
//! let dataset = ingest(&config)?;
//! assert_eq!(dataset.stats.users, 500);
//! let out = std::env::temp_dir().join("recall-data-doctest");
//! let files = dataset.write(&out)?; // interactions.parquet, users.parquet, items.parquet
//! assert_eq!(files.len(), 3);
//! # Ok::<(), recall_core::Error>(())
//! ```

mod csv_log;
pub mod dataset;
pub mod generic;
pub mod movielens;
pub mod synthetic;
mod text;

use serde::Deserialize;

pub use dataset::{Dataset, IngestStats, Interactions};
pub use generic::GenericSource;
pub use synthetic::SyntheticConfig;

use recall_core::Result;

/// Where the raw data comes from. In a pipeline file the variant is the sub-table name, e.g.
/// `[ingest.synthetic]`, `[ingest.generic]`, `[ingest.movielens-1m]`: an externally tagged
/// enum, so TOML errors keep pointing at the offending key and line.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per run: a boxed variant would only add noise to every match"
)]
pub enum IngestConfig {
    /// The official ml-1m release: `ratings.dat` (or `ratings.dat.gz`), `users.dat`, `movies.dat`.
    #[serde(rename = "movielens-1m")]
    Movielens1m { dir: std::path::PathBuf },
    /// The official ml-100k release: `u.data`, `u.user`, `u.item`, `u.genre`.
    #[serde(rename = "movielens-100k")]
    Movielens100k { dir: std::path::PathBuf },
    /// ml-latest, ml-latest-small, ml-20m, ml-25m: `ratings.csv`, `movies.csv`.
    MovielensLatest { dir: std::path::PathBuf },
    /// A generic interactions table with configurable columns.
    Generic(GenericSource),
    /// The seeded synthetic generator.
    Synthetic(SyntheticConfig),
}

impl IngestConfig {
    /// The raw files this source reads (for change detection); empty for synthetic data, which
    /// its config alone determines.
    pub fn input_files(&self) -> Vec<std::path::PathBuf> {
        let existing = |dir: &std::path::Path, names: &[&str]| {
            names
                .iter()
                .map(|n| dir.join(n))
                .filter(|p| p.exists())
                .collect::<Vec<_>>()
        };
        match self {
            IngestConfig::Movielens1m { dir } => existing(
                dir,
                &["ratings.dat", "ratings.dat.gz", "users.dat", "movies.dat"],
            ),
            IngestConfig::Movielens100k { dir } => {
                existing(dir, &["u.data", "u.user", "u.item", "u.genre"])
            }
            IngestConfig::MovielensLatest { dir } => existing(dir, &["ratings.csv", "movies.csv"]),
            // A directory of part files is its files (ingest itself reports what is wrong
            // with a directory that has none).
            IngestConfig::Generic(g) => generic::data_files(&g.interactions)
                .unwrap_or_else(|_| vec![g.interactions.clone()])
                .into_iter()
                .chain(g.users.iter().map(|t| t.path.clone()))
                .chain(g.items.iter().map(|t| t.path.clone()))
                .collect(),
            IngestConfig::Synthetic(_) => Vec::new(),
        }
    }
}

/// Reads (or generates) the configured data into its canonical form.
pub fn ingest(config: &IngestConfig) -> Result<Dataset> {
    let _span = tracing::info_span!("ingest").entered();
    match config {
        IngestConfig::Movielens1m { dir } => movielens::read_ml_1m(dir),
        IngestConfig::Movielens100k { dir } => movielens::read_ml_100k(dir),
        IngestConfig::MovielensLatest { dir } => movielens::read_ml_latest(dir),
        IngestConfig::Generic(source) => generic::read(source),
        IngestConfig::Synthetic(config) => synthetic::generate(config),
    }
}

/// Ingests the configured data straight into its canonical files in `dir`: what [`ingest`]
/// then [`Dataset::write`] do, except that the synthetic generator writes user by user in
/// bounded memory ([`synthetic::write`]) instead of building the dataset first. Returns the
/// dataset's name, the files written and the ingest counts.
pub fn ingest_into(
    config: &IngestConfig,
    dir: &std::path::Path,
) -> Result<(String, Vec<std::path::PathBuf>, IngestStats)> {
    if let IngestConfig::Synthetic(synthetic) = config {
        let _span = tracing::info_span!("ingest").entered();
        let (files, stats) = synthetic::write(synthetic, dir)?;
        return Ok((String::from(synthetic::NAME), files, stats));
    }
    let dataset = ingest(config)?;
    let files = dataset.write(dir)?;
    Ok((dataset.name, files, dataset.stats))
}
