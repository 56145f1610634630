//! The evaluate stage: every trained model and the baselines, ranked exactly over the whole
//! catalogue on the test split (and, with `evaluate.validation`, the validation split), in the
//! unfiltered view and each configured view of the seen filter (`recall_eval::split`); writes
//! `evaluate/results.json` and per-user Parquet (`<model>/per_user_<split>_<view>.parquet`;
//! with cold items also `per_user_<split>_cold_<view>` and `_warm_`, over each group's targets,
//! and `per_user_<split>_among_cold`, the cold items ranked alone). With
//! `evaluate.item_age_prior`, each model again with the item-age prior, `<model>+age-prior`
//! ([`age_prior`]).

mod age_prior;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use recall_core::columns::FIRST_ITEM;
use recall_eval::Embeddings;
use recall_eval::baselines;
use recall_eval::metrics::{self, GroupMetric, Metric};
use recall_eval::split::{EvalSplit, SeenFilter, SeenView};
use recall_eval::topk::{self, Lists, Options, TopK};
use recall_export::export::INDEX_FILE;
use recall_export::index::ApproximateIndex;
use recall_models::{EncodedData, checkpoint};
use serde::{Deserialize, Serialize};

use crate::config::{EvaluateConfig, ModelEntry};

/// One row of `results.json` (and `metrics.json`) results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// `<metric>@<k>` (recall, hit_rate, ndcg, mrr, precision, coverage, mean_popularity;
    /// `index_recall@<k>` on `hnsw` rows).
    pub metrics: BTreeMap<String, f64>,
    /// 95 % bootstrap interval of HitRate@50 (or of the largest K below 50).
    pub hit_rate_ci95: Option<(f64, f64)>,
    /// With cold items (`encode.cold_items`): HitRate at the same K over the users with a
    /// cold-item target, counting those targets alone, and over the users with a warm one,
    /// counting those (with `encode.test_targets = "after-cut"` a user can be in both), each
    /// with its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_target: Option<ColdWarm>,
    /// On the validation split of a model with a feature-only item path (DSSM): HitRate at
    /// the same K with each target scored by its vector from features alone against every
    /// other item's own, as if it were a cold item (`recall_eval::topk::hits_as_cold`): how
    /// settings of the cold path are chosen on validation, where targets are rarely cold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_cold: Option<GroupMetric>,
    /// With cold items, on the unfiltered row of a model or the random baseline: HitRate at
    /// the same K over the users with a cold-item target, ranking the cold items alone (a
    /// fresh-items recall channel beside the main one): how well the feature path tells one new
    /// item from another for a user, apart from how its vectors compete with the warm
    /// catalogue's in `by_target`. Absent where there are no more cold items than K.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub among_cold: Option<GroupMetric>,
    /// On `<model>+age-prior` rows: the item-age prior's weight, chosen on the validation
    /// split (`evaluate.item_age_prior`; 0 where the model alone was best there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_prior: Option<f64>,
}

/// HitRate@`k` over cold-item targets and over warm ones ([`ResultRow::by_target`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ColdWarm {
    pub k: usize,
    pub cold: GroupMetric,
    pub warm: GroupMetric,
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
    /// Each row's truth restricted to cold items and to warm ones (with `encode.cold_items`).
    cold: Option<&'a (Lists, Lists)>,
}

/// A scored ranking: its results row, its per-user report and, with cold items, the per-user
/// reports over cold-item and over warm targets.
struct Scoring {
    row: ResultRow,
    report: metrics::Report,
    by_target: Option<(metrics::Report, metrics::Report)>,
}

fn score(
    name: &str,
    top: &TopK,
    split: &EvalSplit,
    at: Scored<'_>,
    config: &EvaluateConfig,
    seed: u64,
) -> Result<Scoring> {
    let report = metrics::evaluate(top, &split.truth, &config.ks, Some(&split.popularity))?;
    let mut m = BTreeMap::new();
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
            m.insert(format!("{key}@{k}"), v);
        }
        if let Some(p) = at.mean_popularity {
            m.insert(format!("mean_popularity@{k}"), p);
        }
    }
    let ci_k = ci_k(config);
    let ci = report.bootstrap(ci_k, Metric::HitRate, config.bootstrap, 0.95, seed);
    // Each group ranks the same list against its part of the truth: a row with a cold and a
    // warm target counts in both.
    let groups = match at.cold {
        Some((cold, warm)) => Some((
            metrics::evaluate(top, cold, &config.ks, None)?,
            metrics::evaluate(top, warm, &config.ks, None)?,
        )),
        None => None,
    };
    let hit_rate = |r: &metrics::Report| {
        let all = |_| true;
        r.over_group(ci_k, Metric::HitRate, all, config.bootstrap, 0.95, seed)
    };
    let by_target = groups.as_ref().and_then(|(cold, warm)| {
        Some(ColdWarm {
            k: ci_k,
            cold: hit_rate(cold)?,
            warm: hit_rate(warm)?,
        })
    });
    let row = ResultRow {
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
        by_target,
        as_cold: None,
        among_cold: None,
        age_prior: None,
    };
    Ok(Scoring {
        row,
        report,
        by_target: groups,
    })
}

/// What the evaluate stage reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub encode_dir: &'a Path,
    pub train_dir: &'a Path,
    /// Export's directory when the `+hnsw` rows are wanted: each model's saved index is scored.
    pub index_dir: Option<&'a Path>,
    pub models: &'a [ModelEntry],
    pub config: &'a EvaluateConfig,
    /// The seed of the random baseline and the bootstrap.
    pub seed: u64,
    pub device: &'a Device,
}

/// The evaluate stage's report, written as `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvaluateReport {
    /// Every model and baseline in every view of every split ranked.
    pub results: Vec<ResultRow>,
    /// Seconds of each model's embedding and ranking (`<model>_<split>_embed`, `_exact`, ...).
    pub evaluation_seconds: BTreeMap<String, f64>,
    pub test_users: usize,
    /// With `evaluate.users`: the test rows the sample was drawn from (each split is sampled
    /// alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_users_sampled_from: Option<usize>,
    /// With `evaluate.validation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_users: Option<usize>,
    pub rankable_items: usize,
}

impl EvaluateReport {
    /// The file the report is written to in the evaluate directory.
    pub const FILE: &'static str = "results.json";

    pub fn read(evaluate_dir: &Path) -> Result<EvaluateReport> {
        let path = evaluate_dir.join(Self::FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not an evaluate report of this version: rerun with --from evaluate",
                path.display()
            )
        })
    }
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

/// Runs the evaluation into `out`.
pub fn run(inputs: Inputs<'_>, out: &Path) -> Result<(Vec<PathBuf>, EvaluateReport)> {
    let Inputs {
        encode_dir,
        train_dir,
        index_dir,
        models,
        config,
        seed,
        device,
    } = inputs;
    // Cold items are the item table's last rows (`encode.cold_items`).
    let manifest = recall_core::encoded::FeatureManifest::read(encode_dir)?;
    let first_cold = (manifest.stats.cold_items > 0)
        .then(|| (manifest.item_table_size - manifest.stats.cold_items) as u32);
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
    let prior_config = config.item_age_prior.as_ref();
    if prior_config.is_some() {
        // Validation first: the prior is fitted and its weight chosen there, then test is
        // ranked with it.
        splits.reverse();
    }
    let mut prior = None;
    let mut chosen_beta = BTreeMap::new();
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
        // Vectors from features alone, for the validation split's as-if-cold ranking.
        let from_features = if config.validation {
            model.embed_items_from_features(data)?
        } else {
            None
        };
        loaded.push((entry, model, items, from_features));
    }
    let mut rows = Vec::new();
    let mut written = Vec::new();
    let mut eval_seconds = BTreeMap::new();
    let mut report = EvaluateReport {
        results: Vec::new(),
        evaluation_seconds: BTreeMap::new(),
        test_users: 0,
        test_users_sampled_from: None,
        valid_users: None,
        rankable_items: 0,
    };
    for (split_name, file) in splits {
        let split = if prior_config.is_some() {
            EvalSplit::read_timed(encode_dir, file)
        } else {
            EvalSplit::read(encode_dir, file)
        }
        .with_context(|| format!("reading the {split_name} split"))?;
        if let Some(c) = prior_config.filter(|_| split_name == VALID.0) {
            // On the training interactions the sequences just read hold.
            prior = Some(age_prior::Prior::fit(encode_dir, c, &split)?);
        }
        let split_rows = split.rows();
        // With `evaluate.users`, the sampled rows of the split (the models' query rows too).
        let sample = config
            .users
            .filter(|&n| n < split_rows)
            .map(|n| recall_eval::split::fixed_sample_rows(split_rows, n));
        let split = match &sample {
            Some(rows) => split.select(rows),
            None => split,
        };
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
        let cold = first_cold.map(|first| {
            (
                split.truth_among(first, true),
                split.truth_among(first, false),
            )
        });
        let alone = first_cold
            .zip(cold.as_ref())
            .and_then(|(first, (truth, _))| ColdAlone::new(first, truth, n_items, config));
        let at = |filter| Scored {
            split: split_name,
            filter,
            cold: cold.as_ref(),
        };
        for filter in config.views(split.history_len) {
            let options = Options {
                first_item: FIRST_ITEM,
                exclude: seen.get(filter).cloned(),
                ..Options::default()
            };
            let pop = baselines::most_popular(&split.popularity, split.rows(), k, &options)?;
            rows.push(score("popularity", &pop, &split, at(filter), config, seed)?.row);
            let random = baselines::random(n_items, split.rows(), k, &options, seed)?;
            let mut row = score("random", &random, &split, at(filter), config, seed)?.row;
            if let Some(alone) = alone.as_ref().filter(|_| filter == SeenFilter::None) {
                let random =
                    baselines::random(n_items, split.rows(), ci_k(config), &alone.options, seed)?;
                row.among_cold = Some(alone.score(&random, config, seed)?.0);
            }
            rows.push(row);
        }
        let data = data.as_ref();
        // The models' query rows: the split's, or the sample of them.
        let all_rows = data.map(|d| {
            if split_name == TEST.0 {
                &d.test
            } else {
                &d.valid
            }
        });
        let sampled_rows = all_rows
            .zip(sample.as_ref())
            .map(|(all, rows)| all.select(rows));
        for (entry, model, items, from_features) in &loaded {
            let data = data.context("encoded data")?;
            let query_rows = sampled_rows.as_ref().or(all_rows).context("encoded data")?;
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
                start.elapsed().as_secs_f64(),
            );
            eval_seconds.insert(format!("{}_{split_name}_embed", entry.name), embed_seconds);
            // The serving index answers test queries (the file users get).
            let index = match index_dir.filter(|_| split_name == TEST.0) {
                Some(dir) => Some(load_index(dir, &entry.name, items)?),
                None => None,
            };
            for ((&filter, top), exclude) in views.iter().zip(&exact).zip(&exclusions) {
                let Scoring {
                    mut row,
                    report,
                    by_target,
                } = score(&entry.name, top, &split, at(filter), config, seed)?;
                if let Some(cold) = from_features.as_ref().filter(|_| split_name == VALID.0) {
                    row.as_cold =
                        Some(as_cold(&users, items, cold, &split, exclude, config, seed)?);
                }
                if let Some(alone) = alone.as_ref().filter(|_| filter == SeenFilter::None) {
                    let top =
                        topk::exact_views(&users, items, alone.depth, &alone.options, &[None])?;
                    let (metric, report) = alone.score(&top[0], config, seed)?;
                    row.among_cold = Some(metric);
                    let file = format!("per_user_{split_name}_among_cold.parquet");
                    let path = out.join(&entry.name).join(file);
                    recall_core::write::write_parquet(&path, &report.per_user_batch()?, &[])?;
                    written.push(path);
                }
                let view = filter.view();
                written.extend(write_per_user(
                    out,
                    &entry.name,
                    split_name,
                    view,
                    &report,
                    &by_target,
                )?);
                rows.push(row);
                if let Some(index) = &index {
                    let start = std::time::Instant::now();
                    let approximate = index.top_k(&users, k, exclude.as_ref())?;
                    eval_seconds.insert(
                        format!("{}+hnsw_{}", entry.name, filter.name()),
                        start.elapsed().as_secs_f64(),
                    );
                    let name = format!("{}+hnsw", entry.name);
                    let mut row = score(&name, &approximate, &split, at(filter), config, seed)?.row;
                    row.metrics.insert(
                        format!("index_recall@{k}"),
                        recall_export::index::recall_at(&approximate, top, k),
                    );
                    rows.push(row);
                }
            }
            if let Some(prior) = &prior {
                let times = split.query_times();
                if split_name == VALID.0 {
                    // The prior is on the training logits' scale: score / temperature.
                    let temperature = model.config().common().temperature;
                    let choice =
                        prior.choose(&users, items, &split, &times, temperature, ci_k(config))?;
                    let path = out.join(&entry.name).join(age_prior::CHOICE_FILE);
                    recall_core::write::write_bytes(&path, &serde_json::to_vec_pretty(&choice)?)?;
                    written.push(path);
                    chosen_beta.insert(entry.name.clone(), (choice.beta, temperature));
                }
                let (beta, temperature) = *chosen_beta
                    .get(&entry.name)
                    .context("the age prior's weight, chosen on validation")?;
                let name = format!("{}+age-prior", entry.name);
                let exact = topk::exact_views(
                    &users,
                    items,
                    k,
                    &prior.options(beta, temperature, times),
                    &exclusions.iter().map(Option::as_ref).collect::<Vec<_>>(),
                )?;
                for (&filter, top) in views.iter().zip(&exact) {
                    let Scoring {
                        mut row,
                        report,
                        by_target,
                    } = score(&name, top, &split, at(filter), config, seed)?;
                    row.age_prior = Some(beta);
                    let view = filter.view();
                    written.extend(write_per_user(
                        out, &name, split_name, view, &report, &by_target,
                    )?);
                    rows.push(row);
                }
            }
        }
        if split_name == TEST.0 {
            report.test_users = split.rows();
            report.test_users_sampled_from = sample.is_some().then_some(split_rows);
        } else {
            report.valid_users = Some(split.rows());
        }
        report.rankable_items = rankable;
    }
    report.results = rows;
    report.evaluation_seconds = eval_seconds;
    let path = out.join(EvaluateReport::FILE);
    recall_core::write::write_bytes(&path, &serde_json::to_vec_pretty(&report)?)?;
    written.push(path);
    Ok((written, report))
}

/// Writes a ranking's per-user metrics: over every target, and (with cold items) over each
/// group's targets, so seeds can be pooled and models paired on cold targets as on all of them.
/// A group without users, such as validation's cold targets, has no file.
fn write_per_user(
    out: &Path,
    model: &str,
    split_name: &str,
    view: SeenView,
    report: &metrics::Report,
    by_target: &Option<(metrics::Report, metrics::Report)>,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let path = out.join(per_user_file(model, split_name, view));
    recall_core::write::write_parquet(&path, &report.per_user_batch()?, &[])?;
    written.push(path);
    let groups = by_target
        .iter()
        .flat_map(|(c, w)| [("cold", c), ("warm", w)]);
    for (group, report) in groups.filter(|(_, r)| r.users > 0) {
        let path = out.join(per_user_file(model, &format!("{split_name}_{group}"), view));
        recall_core::write::write_parquet(&path, &report.per_user_batch()?, &[])?;
        written.push(path);
    }
    Ok(written)
}

/// HitRate at the interval's K of `split`'s targets scored as if cold (see
/// [`ResultRow::as_cold`]), with its bootstrap interval.
fn as_cold(
    users: &Embeddings,
    items: &Embeddings,
    from_features: &Embeddings,
    split: &EvalSplit,
    exclude: &Option<Lists>,
    config: &EvaluateConfig,
    seed: u64,
) -> Result<GroupMetric> {
    let k = ci_k(config);
    let targets: Vec<u32> = (0..split.rows())
        .map(|r| split.truth.get(r).first().copied().unwrap_or(0))
        .collect();
    let hits = topk::hits_as_cold(
        users,
        items,
        from_features,
        &targets,
        exclude.as_ref(),
        k,
        &Options {
            first_item: FIRST_ITEM,
            ..Options::default()
        },
    )?;
    let values: Vec<f64> = hits.iter().map(|&h| f64::from(u8::from(h))).collect();
    Ok(GroupMetric::of(&values, config.bootstrap, 0.95, seed))
}

/// The cold items ranked alone against each row's cold targets ([`ResultRow::among_cold`]).
struct ColdAlone<'a> {
    /// Ranks only the item table's last rows, the cold items.
    options: Options,
    /// The deepest ranking: the largest configured K below the number of cold items.
    depth: usize,
    truth: &'a Lists,
}

impl<'a> ColdAlone<'a> {
    /// `None` unless there are more cold items than the interval's K and some row has a cold
    /// target.
    fn new(
        first_cold: u32,
        truth: &'a Lists,
        n_items: usize,
        config: &EvaluateConfig,
    ) -> Option<Self> {
        let cold = n_items - first_cold as usize;
        let any_target = (0..truth.users()).any(|r| !truth.get(r).is_empty());
        if cold <= ci_k(config) || !any_target {
            return None;
        }
        let depth = config.ks.iter().copied().filter(|&k| k < cold).max()?;
        let options = Options {
            first_item: first_cold,
            ..Options::default()
        };
        Some(ColdAlone {
            options,
            depth,
            truth,
        })
    }

    /// HitRate at the interval's K of `top` (a ranking of the cold items) and its per-user
    /// report at every configured K it reaches.
    fn score(
        &self,
        top: &TopK,
        config: &EvaluateConfig,
        seed: u64,
    ) -> Result<(GroupMetric, metrics::Report)> {
        let ks: Vec<usize> = config.ks.iter().copied().filter(|&k| k <= top.k).collect();
        let report = metrics::evaluate(top, self.truth, &ks, None)?;
        let all = |_| true;
        let metric = report
            .over_group(
                ci_k(config),
                Metric::HitRate,
                all,
                config.bootstrap,
                0.95,
                seed,
            )
            .context("no row has a cold-item target")?;
        Ok((metric, report))
    }
}

/// The K of the reported intervals: 50, or the largest configured K below it.
fn ci_k(config: &EvaluateConfig) -> usize {
    config
        .ks
        .iter()
        .copied()
        .filter(|&k| k <= 50)
        .max()
        .unwrap_or(config.ks[0])
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
