//! The evaluate stage: every trained model and the baselines, ranked exactly over the whole
//! catalogue on the test split (and, with `evaluate.validation`, the validation split), in the
//! unfiltered view and each configured view of the seen filter (`recall_eval::split`); writes
//! `evaluate/results.json` and per-user Parquet (`<model>/per_user_<split>_<view>.parquet`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use recall_eval::Embeddings;
use recall_eval::baselines;
use recall_eval::metrics::{self, Metric};
use recall_eval::split::{EvalSplit, SeenFilter, SeenView};
use recall_eval::topk::{self, Lists, Options, TopK};
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
    /// The seen filter's views reported beside the unfiltered one: `"all"` (every item the user
    /// saw before the target left out) and `"recent"` (only the newest `recent_window`: the
    /// published HSTU/SASRec protocol). Default both.
    #[serde(default = "default_views")]
    pub seen_filter: Vec<SeenView>,
    /// How many of the newest earlier items the `recent` view leaves out. Default: each model's
    /// own history length (SASRec's `max_len`, else `encode.max_len`), and `encode.max_len`
    /// for the baselines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_window: Option<usize>,
    /// Also rank the validation split (`encode.validation`), reported apart from test:
    /// what settings are chosen on (`cargo xtask ablate` turns it on). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validation: bool,
}

fn default_views() -> Vec<SeenView> {
    vec![SeenView::All, SeenView::Recent]
}

impl EvaluateConfig {
    /// The views ranked for a model (or baseline) whose history length is `history_len`:
    /// the unfiltered one first, then the configured ones, each once.
    pub fn views(&self, history_len: usize) -> Vec<SeenFilter> {
        let mut views = vec![SeenFilter::None];
        for v in &self.seen_filter {
            let f = v.with_recent_window(self.recent_window.unwrap_or(history_len));
            if !views.contains(&f) {
                views.push(f);
            }
        }
        views
    }

    /// Checks what needs no data: the keys as a pipeline file spells them.
    pub fn validate(&self) -> Result<()> {
        if self.recent_window == Some(0) {
            anyhow::bail!(
                "configuration key `evaluate.recent_window`: must be at least 1 (leave it out for each model's history length)"
            );
        }
        Ok(())
    }
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
            seen_filter: default_views(),
            recent_window: None,
            validation: false,
        }
    }
}

/// One row of `results.json` (and `metrics.json`) results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    pub model: String,
    /// `test`, or `valid` (with `evaluate.validation`).
    pub split: String,
    /// `exact` (full-catalogue ranking) or `hnsw` (the serving index).
    pub search: String,
    /// The seen filter's view: `none` (unfiltered), `all` or `recent`.
    pub seen_filter: SeenView,
    /// With `recent`: how many of the newest earlier items it left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_window: Option<usize>,
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// 95 % bootstrap interval of HitRate@50 (or of the largest K below 50).
    pub hit_rate_ci95: Option<(f64, f64)>,
}

/// What the seen filter's views are, for a report, card or ablation reader.
pub const SEEN_FILTER_VIEWS: &str = "Seen filter views: `none` ranks every item; `all` leaves out every item the user \
     interacted with before the target; `recent` leaves out only the newest N of them (N per row), the protocol \
     of the published HSTU and SASRec full-ranking numbers (generative-recommenders: `past_ids` cut to \
     `max_sequence_length`). The target itself is never left out.";

/// A view's heading in a report.
pub fn view_title(view: SeenView) -> &'static str {
    match view {
        SeenView::None => "Unfiltered (seen filter `none`)",
        SeenView::All => "Seen filter `all`: every earlier item left out",
        SeenView::Recent => {
            "Seen filter `recent`: the newest N earlier items left out (the published protocol)"
        }
    }
}

impl ResultRow {
    /// The row's view in a few words: `none`, `all`, `recent (newest 200)`.
    pub fn view_label(&self) -> String {
        match (self.seen_filter, self.recent_window) {
            (SeenView::Recent, Some(n)) => format!("recent (newest {n})"),
            (SeenView::Recent, None) => "recent".to_owned(),
            (SeenView::All, _) => "all".to_owned(),
            (SeenView::None, _) => "none".to_owned(),
        }
    }
}

/// The two splits evaluation can rank.
const TEST: (&str, &str) = ("test", "test.parquet");
const VALID: (&str, &str) = ("valid", "valid.parquet");

/// The per-user metrics file of a model on one split and view, under the evaluate directory.
pub fn per_user_file(model: &str, split: &str, view: SeenView) -> PathBuf {
    let view = serde_json::to_value(view)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    PathBuf::from(model).join(format!("per_user_{split}_{view}.parquet"))
}

struct Scored<'a> {
    split: &'a str,
    filter: SeenFilter,
}

fn score(
    name: &str,
    top: &TopK,
    split: &EvalSplit,
    at: Scored<'_>,
    config: &EvaluateConfig,
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
            split: at.split.to_owned(),
            search: if name.ends_with("+hnsw") {
                "hnsw"
            } else {
                "exact"
            }
            .to_owned(),
            seen_filter: at.filter.view(),
            recent_window: at.filter.recent_window(),
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

/// Each view's exclusion lists of a split, computed once per distinct filter.
struct SeenLists<'s> {
    split: &'s EvalSplit,
    lists: Vec<(SeenFilter, Option<Lists>)>,
}

impl<'s> SeenLists<'s> {
    fn new(split: &'s EvalSplit) -> Self {
        SeenLists {
            split,
            lists: Vec::new(),
        }
    }

    fn get(&mut self, filter: SeenFilter) -> Option<&Lists> {
        let i = match self.lists.iter().position(|(f, _)| *f == filter) {
            Some(i) => i,
            None => {
                self.lists.push((filter, self.split.seen(filter)));
                self.lists.len() - 1
            }
        };
        self.lists[i].1.as_ref()
    }
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
    let mut splits = vec![TEST];
    if config.validation {
        if !encode_dir.join(VALID.1).exists() {
            anyhow::bail!(
                "configuration key `evaluate.validation`: the encode stage held out no validation split \
                 ({} is missing): set `encode.validation = true`",
                encode_dir.join(VALID.1).display()
            );
        }
        splits.push(VALID);
    }
    let data = if models.is_empty() {
        None
    } else {
        Some(EncodedData::read_dir(encode_dir)?)
    };
    let mut loaded = Vec::new();
    for entry in models {
        let data = data.as_ref().context("encoded data")?;
        let model = checkpoint::load(&train_dir.join(&entry.name), data, device)
            .with_context(|| format!("loading model `{}`", entry.name))?;
        let items = model.embed_items(data)?;
        loaded.push((entry, model, items));
    }
    let mut rows = Vec::new();
    let mut written = Vec::new();
    let mut eval_seconds = serde_json::Map::new();
    let mut summary = serde_json::Map::new();
    for (split_name, file) in splits {
        let split = EvalSplit::read(encode_dir, file)
            .with_context(|| format!("reading the {split_name} split"))?;
        let k = config.ks.iter().copied().max().unwrap_or(50);
        let n_items = split.popularity.len();
        let rankable = n_items.saturating_sub(FIRST_ITEM as usize);
        if config.ks.is_empty() || config.ks.contains(&0) || k > rankable {
            anyhow::bail!(
                "configuration key `evaluate.ks`: every K must be between 1 and the {rankable} rankable items, got {:?}",
                config.ks
            );
        }
        let mut seen = SeenLists::new(&split);
        let at = |filter| Scored {
            split: split_name,
            filter,
        };
        for filter in config.views(split.history_len) {
            let options = Options {
                first_item: FIRST_ITEM,
                exclude: seen.get(filter).cloned(),
                ..Options::default()
            };
            let pop = baselines::most_popular(&split.popularity, split.rows(), k, &options)?;
            rows.push(score("popularity", &pop, &split, at(filter), config, seed)?.0);
            let random = baselines::random(n_items, split.rows(), k, &options, seed)?;
            rows.push(score("random", &random, &split, at(filter), config, seed)?.0);
        }
        let data = data.as_ref();
        for (entry, model, items) in &loaded {
            let data = data.context("encoded data")?;
            let query_rows = if split_name == TEST.0 {
                &data.test
            } else {
                &data.valid
            };
            let start = std::time::Instant::now();
            let users = model.embed_split(data, query_rows)?;
            let embed_seconds = start.elapsed().as_secs_f64();
            let views = config.views(model.history_len(data));
            // Every view's top-K from one pass over the score blocks.
            let start = std::time::Instant::now();
            let exclusions: Vec<Option<Lists>> =
                views.iter().map(|&f| seen.get(f).cloned()).collect();
            let exact = topk::exact_views(
                &users,
                items,
                k,
                &Options {
                    first_item: FIRST_ITEM,
                    ..Options::default()
                },
                &exclusions.iter().map(Option::as_ref).collect::<Vec<_>>(),
            )?;
            eval_seconds.insert(
                format!("{}_{split_name}_exact", entry.name),
                serde_json::json!(start.elapsed().as_secs_f64()),
            );
            eval_seconds.insert(
                format!("{}_{split_name}_embed", entry.name),
                serde_json::json!(embed_seconds),
            );
            // The serving index answers test queries (the file users get).
            let index = match index_dir.filter(|_| split_name == TEST.0) {
                Some(dir) => Some(load_index(dir, &entry.name, items)?),
                None => None,
            };
            for ((&filter, top), exclude) in views.iter().zip(&exact).zip(&exclusions) {
                let (row, report) = score(&entry.name, top, &split, at(filter), config, seed)?;
                let path = out.join(per_user_file(&entry.name, split_name, filter.view()));
                recall_core::write::write_parquet(&path, &report.per_user_batch()?, &[])?;
                written.push(path);
                rows.push(row);
                if let Some(index) = &index {
                    let start = std::time::Instant::now();
                    let approximate = index.top_k(&users, k, exclude.as_ref())?;
                    eval_seconds.insert(
                        format!("{}+hnsw_{}", entry.name, filter.name()),
                        serde_json::json!(start.elapsed().as_secs_f64()),
                    );
                    let name = format!("{}+hnsw", entry.name);
                    let (mut row, _) =
                        score(&name, &approximate, &split, at(filter), config, seed)?;
                    row.metrics.insert(
                        format!("index_recall@{k}"),
                        serde_json::json!(recall_export::index::recall_at(&approximate, top, k)),
                    );
                    rows.push(row);
                }
            }
        }
        summary.insert(
            format!("{split_name}_users"),
            serde_json::json!(split.rows()),
        );
        summary.insert("rankable_items".into(), serde_json::json!(rankable));
    }
    let mut doc = serde_json::json!({ "results": rows, "evaluation_seconds": eval_seconds });
    if let Some(map) = doc.as_object_mut() {
        map.extend(summary);
    }
    let path = out.join("results.json");
    recall_core::write::write_bytes(&path, &serde_json::to_vec_pretty(&doc)?)?;
    written.push(path);
    Ok((written, doc))
}

/// The serving index export saved for `model`, checked against the model's item count.
fn load_index(dir: &Path, model: &str, items: &Embeddings) -> Result<ApproximateIndex> {
    let path = dir.join(model).join(INDEX_FILE);
    let index = ApproximateIndex::load(&path).with_context(|| {
        format!(
            "loading the serving index of `{model}` that the export stage saved (rerun with --from export)"
        )
    })?;
    let embedded = items.rows().saturating_sub(FIRST_ITEM as usize);
    if index.sidecar().items != embedded {
        anyhow::bail!(
            "{} indexes {} items, the model embeds {embedded}: it belongs to another run (rerun with --from export)",
            path.display(),
            index.sidecar().items,
        );
    }
    Ok(index)
}
