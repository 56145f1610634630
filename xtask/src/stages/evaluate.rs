//! The evaluate stage: every trained model and the baselines, ranked exactly over the whole
//! catalogue on the test split, without and with seen-item filtering; writes
//! `evaluate/metrics.json`, per-user Parquet, and the report (`report/report.md`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use recall_eval::baselines;
use recall_eval::metrics::{self, Metric};
use recall_eval::split::EvalSplit;
use recall_eval::topk::{self, Options, TopK};
use recall_export::export::INDEX_FILE;
use recall_export::index::ApproximateIndex;
use recall_models::{EncodedData, checkpoint, train::FIRST_ITEM};
use serde::{Deserialize, Serialize};

use super::train::ModelEntry;

fn default_ks() -> Vec<usize> {
    vec![10, 50, 100]
}
fn default_bootstrap() -> usize {
    1000
}

/// `[evaluate]` settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Cut-offs. Default [10, 50, 100].
    #[serde(default = "default_ks")]
    pub ks: Vec<usize>,
    /// Bootstrap resamples for the confidence intervals. Default 1000.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Also rank through the HNSW serving index that export saved (`export/<model>/
    /// item_index.usearch`, the file users get), reported as model `<name>+hnsw`, so the cost
    /// of the approximation shows in HitRate. Needs `export.build_index`. Default true.
    #[serde(default = "default_index")]
    pub index: bool,
}

fn default_index() -> bool {
    true
}

impl Default for EvaluateConfig {
    fn default() -> Self {
        EvaluateConfig {
            ks: default_ks(),
            bootstrap: default_bootstrap(),
            index: default_index(),
        }
    }
}

/// One row of `metrics.json` results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    pub model: String,
    /// `exact` (full-catalogue ranking) or `hnsw` (the serving index).
    pub search: String,
    pub filter_seen: bool,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// 95 % bootstrap interval of HitRate@50 (or of the largest K below 50).
    pub hit_rate_ci95: Option<(f64, f64)>,
}

fn score(
    name: &str,
    top: &TopK,
    split: &EvalSplit,
    config: &EvaluateConfig,
    filter: bool,
    seed: u64,
) -> Result<(ResultRow, metrics::Report)> {
    let report = metrics::evaluate(top, &split.truth, &config.ks, Some(&split.popularity))?;
    let mut m = serde_json::Map::new();
    for at in &report.at_k {
        let k = at.k;
        for (key, v) in [
            ("recall", at.recall),
            ("hit_rate", at.hit_rate),
            ("ndcg", at.ndcg),
            ("mrr", at.mrr),
            ("precision", at.precision),
            ("coverage", at.coverage),
        ] {
            m.insert(format!("{key}@{k}"), serde_json::json!(v));
        }
        if let Some(p) = at.mean_popularity {
            m.insert(format!("mean_popularity@{k}"), serde_json::json!(p));
        }
    }
    let ci_k = config
        .ks
        .iter()
        .copied()
        .filter(|&k| k <= 50)
        .max()
        .unwrap_or(config.ks[0]);
    let ci = report.bootstrap(ci_k, Metric::HitRate, config.bootstrap, 0.95, seed);
    Ok((
        ResultRow {
            model: name.to_owned(),
            search: if name.ends_with("+hnsw") {
                "hnsw"
            } else {
                "exact"
            }
            .to_owned(),
            filter_seen: filter,
            metrics: m,
            hit_rate_ci95: ci,
        },
        report,
    ))
}

/// The stage directories evaluation reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub encode_dir: &'a Path,
    pub train_dir: &'a Path,
    /// Export's directory when the `+hnsw` rows are wanted: each model's saved index is scored.
    pub index_dir: Option<&'a Path>,
}

/// Runs the evaluation; returns written files and the metrics document.
pub fn run(
    inputs: Inputs<'_>,
    out: &Path,
    models: &[ModelEntry],
    config: &EvaluateConfig,
    seed: u64,
    device: &Device,
) -> Result<(Vec<PathBuf>, serde_json::Value)> {
    let Inputs {
        encode_dir,
        train_dir,
        index_dir,
    } = inputs;
    let split = EvalSplit::read(encode_dir, "test.parquet").context("reading the test split")?;
    let k = config.ks.iter().copied().max().unwrap_or(50);
    let n_items = split.popularity.len();
    let rankable = n_items.saturating_sub(FIRST_ITEM as usize);
    if config.ks.is_empty() || config.ks.contains(&0) || k > rankable {
        anyhow::bail!(
            "configuration key `evaluate.ks`: every K must be between 1 and the {rankable} rankable items, got {:?}",
            config.ks
        );
    }
    let mut rows = Vec::new();
    let mut written = Vec::new();
    let mut eval_seconds = serde_json::Map::new();
    let data = if models.is_empty() {
        None
    } else {
        Some(EncodedData::read_dir(encode_dir)?)
    };
    // Each model's test-user and item embeddings (and serving index), computed once for both
    // the unfiltered and the filtered pass.
    let mut embedded = Vec::new();
    for entry in models {
        let data = data.as_ref().context("encoded data")?;
        let model = checkpoint::load(&train_dir.join(&entry.name), data, device)
            .with_context(|| format!("loading model `{}`", entry.name))?;
        let start = std::time::Instant::now();
        let users = model.embed_split(data, &data.test)?;
        let items = model.embed_items(data)?;
        let embed_seconds = start.elapsed().as_secs_f64();
        let index = match index_dir {
            Some(dir) => {
                let path = dir.join(&entry.name).join(INDEX_FILE);
                let index = ApproximateIndex::load(&path).with_context(|| {
                    format!(
                        "loading the serving index of `{}` that the export stage saved (rerun with --from export)",
                        entry.name
                    )
                })?;
                if index.sidecar().items != items.rows().saturating_sub(FIRST_ITEM as usize) {
                    anyhow::bail!(
                        "{} indexes {} items, the model embeds {}: it belongs to another run (rerun with --from export)",
                        path.display(),
                        index.sidecar().items,
                        items.rows().saturating_sub(FIRST_ITEM as usize)
                    );
                }
                Some(index)
            }
            None => None,
        };
        // Unfiltered and seen-filtered top-K from one pass over the score blocks.
        let start = std::time::Instant::now();
        let exact = topk::exact_views(
            &users,
            &items,
            k,
            &Options {
                first_item: FIRST_ITEM,
                ..Options::default()
            },
            &[None, Some(&split.seen)],
        )?;
        eval_seconds.insert(
            format!("{}_exact", entry.name),
            serde_json::json!(start.elapsed().as_secs_f64()),
        );
        eval_seconds.insert(
            format!("{}_embed", entry.name),
            serde_json::json!(embed_seconds),
        );
        embedded.push((entry, users, exact, index));
    }
    for filter in [false, true] {
        let options = Options {
            first_item: FIRST_ITEM,
            exclude: filter.then(|| split.seen.clone()),
            ..Options::default()
        };
        let pop = baselines::most_popular(&split.popularity, split.rows(), k, &options)?;
        rows.push(score("popularity", &pop, &split, config, filter, seed)?.0);
        let random = baselines::random(n_items, split.rows(), k, &options, seed)?;
        rows.push(score("random", &random, &split, config, filter, seed)?.0);
        let suffix = if filter { "_filtered" } else { "" };
        for (entry, users, exact, index) in &embedded {
            let top = &exact[usize::from(filter)];
            let (row, report) = score(&entry.name, top, &split, config, filter, seed)?;
            let path = out.join(format!("{}/per_user{suffix}.parquet", entry.name));
            recall_core::write::write_parquet(&path, &report.per_user_batch()?, &[])?;
            written.push(path);
            rows.push(row);
            if let Some(index) = index {
                let start = std::time::Instant::now();
                let approximate = index.top_k(users, k, options.exclude.as_ref())?;
                eval_seconds.insert(
                    format!("{}+hnsw{suffix}", entry.name),
                    serde_json::json!(start.elapsed().as_secs_f64()),
                );
                let name = format!("{}+hnsw", entry.name);
                let (mut row, _) = score(&name, &approximate, &split, config, filter, seed)?;
                row.metrics.insert(
                    format!("index_recall@{k}"),
                    serde_json::json!(recall_export::index::recall_at(&approximate, top, k)),
                );
                rows.push(row);
            }
        }
    }
    let doc = serde_json::json!({ "results": rows, "evaluation_seconds": eval_seconds, "test_users": split.rows(), "rankable_items": n_items.saturating_sub(FIRST_ITEM as usize) });
    let path = out.join("results.json");
    recall_core::write::write_bytes(&path, &serde_json::to_vec_pretty(&doc)?)?;
    written.push(path);
    Ok((written, doc))
}
