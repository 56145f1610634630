//! The serving index: an HNSW graph over item embeddings (the `usearch` crate), saved to disk,
//! reloadable, queried for the top-K items of a user embedding by inner product.
//!
//! Keys are item indices (the `index_key` column of `item_embeddings.parquet`), so a result maps
//! back to the original item id through that file. Scores are inner products, the same numbers
//! the exact ranking of `recall-eval` computes, so both can be compared list for list
//! ([`recall_at`]).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use recall_eval::Embeddings;
use recall_eval::progress::RateLog;
use recall_eval::topk::{Lists, TopK};
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result};

fn default_connectivity() -> usize {
    16
}
fn default_expansion_add() -> usize {
    32
}
fn default_expansion_search() -> usize {
    256
}
fn default_build_threads() -> usize {
    1
}

/// HNSW settings (`[export.index]`). The defaults were chosen on trained embeddings of a
/// 994,433-item catalogue (`MEASUREMENTS.md`, issue 21): recall@100 0.998 against the exact
/// ranking with a one-thread build of 120 s, where `expansion_add` 128 took four times as long
/// for 0.9999. Raise `expansion_search` for more recall at lower query speed (it can be
/// changed after loading), `expansion_add` for a better graph at a slower build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Graph degree (HNSW `M`). Default 16.
    #[serde(default = "default_connectivity")]
    pub connectivity: usize,
    /// Candidate list size while inserting (`efConstruction`). Default 32: build time grows
    /// about linearly with it.
    #[serde(default = "default_expansion_add")]
    pub expansion_add: usize,
    /// Candidate list size while searching (`ef`); at least K is used. Default 256.
    #[serde(default = "default_expansion_search")]
    pub expansion_search: usize,
    /// Threads inserting items. Default 1: items go in in key order and the same embeddings
    /// give the same graph, file and `+hnsw` metrics on every run. More threads build
    /// proportionally faster (994,433 trained items: 120 s on one thread, 63 s on 2) but the
    /// graph then depends on thread timing.
    #[serde(default = "default_build_threads")]
    pub build_threads: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            connectivity: default_connectivity(),
            expansion_add: default_expansion_add(),
            expansion_search: default_expansion_search(),
            build_threads: default_build_threads(),
        }
    }
}

impl IndexConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.connectivity < 2
            || self.expansion_add == 0
            || self.expansion_search == 0
            || self.build_threads == 0
        {
            return Err(Error::Config(format!(
                "export.index: connectivity must be at least 2, the expansions and build_threads at least 1, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// What is saved beside the index file (`<index>.json`): enough to reload and query it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexSidecar {
    /// Always `"usearch-hnsw"`.
    pub format: String,
    pub usearch_version: String,
    /// Always `"inner_product"`: score = dot(user, item).
    pub metric: String,
    pub dim: usize,
    pub items: usize,
    /// What a key is: `"item index (index_key column of item_embeddings.parquet)"`.
    pub keys: String,
    pub config: IndexConfig,
}

/// An HNSW index over item embeddings.
pub struct ApproximateIndex {
    inner: Index,
    sidecar: IndexSidecar,
}

impl std::fmt::Debug for ApproximateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApproximateIndex")
            .field("sidecar", &self.sidecar)
            .finish_non_exhaustive()
    }
}

fn native(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Index(format!("{what}: {e}"))
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    path.with_file_name(name)
}

impl ApproximateIndex {
    /// Indexes rows `first_row..` of `items` (rows before it are reserved slots such as padding
    /// and out-of-vocabulary), keyed by row number. Inserts in parallel on the rayon pool.
    pub fn build(items: &Embeddings, first_row: usize, config: IndexConfig) -> Result<Self> {
        config.validate()?;
        let rows = items.rows().saturating_sub(first_row);
        if rows == 0 {
            return Err(Error::Invalid(
                "cannot build an index over an empty catalogue".into(),
            ));
        }
        let options = IndexOptions {
            dimensions: items.dim(),
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let inner = Index::new(&options).map_err(|e| native("creating the index", e))?;
        // Set explicitly as well: measured recall showed the option alone not taking effect.
        inner.change_expansion_add(config.expansion_add);
        inner.change_expansion_search(config.expansion_search);
        let threads = config
            .build_threads
            .min(rayon::current_num_threads())
            .max(1);
        inner
            .reserve_capacity_and_threads(rows, threads.max(rayon::current_num_threads()))
            .map_err(|e| native("reserving the index", e))?;
        let progress = RateLog::new("index build", "items", rows);
        if threads == 1 {
            for row in first_row..items.rows() {
                inner
                    .add(row as u64, items.row(row))
                    .map_err(|e| native("adding an item", e))?;
                progress.add(1);
            }
        } else {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| native("starting the build threads", e))?;
            pool.install(|| {
                (first_row..items.rows())
                    .into_par_iter()
                    .try_for_each(|row| {
                        progress.add(1);
                        inner.add(row as u64, items.row(row))
                    })
            })
            .map_err(|e| native("adding an item", e))?;
        }
        Ok(ApproximateIndex {
            inner,
            sidecar: IndexSidecar {
                format: "usearch-hnsw".into(),
                usearch_version: usearch::version().into(),
                metric: "inner_product".into(),
                dim: items.dim(),
                items: rows,
                keys: "item index (index_key column of item_embeddings.parquet)".into(),
                config,
            },
        })
    }

    pub fn sidecar(&self) -> &IndexSidecar {
        &self.sidecar
    }

    /// Adds rows `rows` of `items` (keyed by row number, as [`build`](Self::build) keys them)
    /// to the index without rebuilding it: new items arriving after the index was built (a
    /// cold item's vector from its features, say). A key already in the index is refused, and
    /// so are vectors of another width. Returns how many were added.
    pub fn add(&mut self, items: &Embeddings, rows: std::ops::Range<usize>) -> Result<usize> {
        if items.dim() != self.sidecar.dim {
            return Err(Error::Invalid(format!(
                "adding vectors of dimension {} to an index of dimension {}",
                items.dim(),
                self.sidecar.dim
            )));
        }
        if rows.end > items.rows() {
            return Err(Error::Invalid(format!(
                "rows {rows:?} of {} vectors",
                items.rows()
            )));
        }
        if let Some(row) = rows.clone().find(|&r| self.inner.contains(r as u64)) {
            return Err(Error::Invalid(format!(
                "item {row} is already in the index: only new items can be added (rebuild to \
                 replace vectors)"
            )));
        }
        let n = rows.len();
        // The build's setting: a restored index forgets it (usearch keeps it out of the file).
        self.inner
            .change_expansion_add(self.sidecar.config.expansion_add);
        self.inner
            .reserve(self.inner.size() + n)
            .map_err(|e| native("reserving room for new items", e))?;
        for row in rows {
            self.inner
                .add(row as u64, items.row(row))
                .map_err(|e| native("adding an item", e))?;
        }
        self.sidecar.items += n;
        Ok(n)
    }

    /// Saves the index to `path` and its sidecar to `<path>.json`, each atomically.
    pub fn save(&self, path: &Path) -> Result<Vec<PathBuf>> {
        let mut bytes = vec![0u8; self.inner.serialized_length()];
        self.inner
            .save_to_buffer(&mut bytes)
            .map_err(|e| native("serialising the index", e))?;
        recall_core::write::write_bytes(path, &bytes)?;
        let side = sidecar_path(path);
        let json =
            serde_json::to_vec_pretty(&self.sidecar).map_err(|e| Error::Invalid(e.to_string()))?;
        recall_core::write::write_bytes(&side, &json)?;
        Ok(vec![path.to_owned(), side])
    }

    /// Loads an index saved by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self> {
        let side = sidecar_path(path);
        let text =
            std::fs::read(&side).map_err(|e| recall_core::Error::io("cannot read", &side, e))?;
        let sidecar: IndexSidecar = serde_json::from_slice(&text).map_err(|e| {
            Error::Invalid(format!("{} is not an index sidecar: {e}", side.display()))
        })?;
        // A missing or unreadable file is named as such before usearch sees it.
        std::fs::File::open(path).map_err(|e| recall_core::Error::io("cannot read", path, e))?;
        // Straight from the file where the path is UTF-8 (usearch takes `&str`): reading it
        // into a buffer first held the file twice while the graph was restored (0.4 GB more
        // at a million items, MEASUREMENTS.md, issue 32).
        let inner = match path.to_str() {
            Some(utf8) => Index::restore(utf8),
            None => {
                let bytes = std::fs::read(path)
                    .map_err(|e| recall_core::Error::io("cannot read", path, e))?;
                Index::restore_from_buffer(&bytes)
            }
        }
        .map_err(|e| native(&format!("loading {}", path.display()), e))?;
        if inner.dimensions() != sidecar.dim || inner.size() != sidecar.items {
            return Err(Error::Invalid(format!(
                "{} holds {} vectors of dimension {}, its sidecar says {} of {}: the files do not belong together",
                path.display(),
                inner.size(),
                inner.dimensions(),
                sidecar.items,
                sidecar.dim
            )));
        }
        inner.change_expansion_search(sidecar.config.expansion_search);
        Ok(ApproximateIndex { inner, sidecar })
    }

    /// Sets the search candidate list size (more recall, slower queries).
    pub fn set_expansion_search(&mut self, ef: usize) {
        self.sidecar.config.expansion_search = ef;
        self.inner.change_expansion_search(ef);
    }

    /// The `k` best (key, score) pairs for `query`, best first, skipping keys in `exclude`
    /// (sorted ascending).
    pub fn search(&self, query: &[f32], k: usize, exclude: &[u32]) -> Result<Vec<(u32, f32)>> {
        if query.len() != self.sidecar.dim {
            return Err(Error::Invalid(format!(
                "query of dimension {} against an index of dimension {}",
                query.len(),
                self.sidecar.dim
            )));
        }
        let matches = if exclude.is_empty() {
            self.inner.search(query, k)
        } else {
            self.inner.filtered_search(query, k, |key| {
                exclude.binary_search(&(key as u32)).is_err()
            })
        }
        .map_err(|e| native("searching", e))?;
        let mut found: Vec<(u32, f32)> = matches
            .keys
            .iter()
            .zip(&matches.distances)
            .map(|(&key, &d)| (key as u32, 1.0 - d))
            .collect();
        // usearch returns best first; ties are put in item order like the exact ranking.
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(found)
    }

    /// The top-`k` of every row of `users` (in parallel), optionally excluding each row's
    /// `exclude` list, as a [`TopK`] the evaluation metrics accept.
    pub fn top_k(&self, users: &Embeddings, k: usize, exclude: Option<&Lists>) -> Result<TopK> {
        if let Some(ex) = exclude
            && ex.users() != users.rows()
        {
            return Err(Error::Invalid(format!(
                "{} exclusion lists for {} users",
                ex.users(),
                users.rows()
            )));
        }
        let progress = RateLog::new("index queries", "users", users.rows());
        let rows = (0..users.rows())
            .into_par_iter()
            .map(|u| {
                progress.add(1);
                self.search(users.row(u), k, exclude.map_or(&[][..], |e| e.get(u)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TopK::from_ranked(k, self.sidecar.items, rows))
    }
}

/// Mean over users of |approximate ∩ exact| / |exact| (recall@k of the index against the exact
/// ranking; 1.0 when they agree).
pub fn recall_at(approximate: &TopK, exact: &TopK, k: usize) -> f64 {
    let users = exact.users().min(approximate.users());
    if users == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for u in 0..users {
        let truth = &exact.list(u)[..exact.list(u).len().min(k)];
        if truth.is_empty() {
            total += 1.0;
            continue;
        }
        let got = &approximate.list(u)[..approximate.list(u).len().min(k)];
        let hits = truth.iter().filter(|i| got.contains(i)).count();
        total += hits as f64 / truth.len() as f64;
    }
    total / users as f64
}
