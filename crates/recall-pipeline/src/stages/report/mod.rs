//! The report stage: `report/metrics.json` (machine-readable, shape below) and
//! `report/report.md` (for people), built from the manifests and results of earlier stages.
//!
//! `metrics.json`: `{"pipeline", "dataset": {"name", "users", "items", "interactions"},
//! "protocol": {...}, "results": [{"model", "split": "test"|"valid", "search": "exact"|"hnsw",
//! "seen_filter": "none"|"all"|"recent", "recent_window", "metrics": {"recall@50",
//! "hit_rate@50", ...}, "hit_rate_ci95"}], "timings_s": {"<stage>": s}, "throughput":
//! {"<model>": {"train_examples_per_second"}}, "export": {"<model>": {"users", "items",
//! "index": {"recall", ...}}}}`; `report/metrics.svg`: HitRate@K and NDCG@K over K in each
//! view of the test split, linked from `report.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use recall_eval::split::SeenView;
use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::layout::{Layout, Stage};
use crate::manifest::config_hash;
use crate::stages::evaluate::{EvaluateReport, ResultRow, SEEN_FILTER_VIEWS, view_title};
use crate::stages::ingest::IngestReport;

pub mod card;
pub mod chart;
pub mod runs;

pub use runs::RunReports;

/// The report stage's own report: how many model cards it wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportReport {
    pub models: usize,
    pub cards: usize,
}

/// Writes metrics.json, report.md, metrics.svg and the model cards into `out`.
pub fn run(
    config: &PipelineConfig,
    layout: &Layout,
    out: &Path,
) -> Result<(Vec<PathBuf>, ReportReport)> {
    let results = EvaluateReport::read(layout.dir(Stage::Evaluate))?;
    let runs = RunReports::read(layout);
    let dataset_name = runs
        .ingest
        .as_ref()
        .map_or_else(|| "?".to_owned(), |i| i.dataset.clone());
    let count = |f: fn(&IngestReport) -> usize| runs.ingest.as_ref().map(f);
    let train_examples = runs.encode.as_ref().map(|e| e.stats.train_examples);
    let timings: BTreeMap<&str, f64> = runs
        .seconds
        .iter()
        .map(|(s, secs)| (s.name(), *secs))
        .collect();
    let throughput: BTreeMap<&String, serde_json::Value> = runs
        .train
        .iter()
        .map(|(name, t)| {
            (
                name,
                serde_json::json!({ "train_examples_per_second": t.examples_per_second,
                    "train_seconds": t.train_seconds, "best_epoch": t.best_epoch }),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "pipeline": config.name,
        "dataset": { "name": dataset_name, "users": count(|i| i.stats.users),
            "items": count(|i| i.stats.items), "interactions": count(|i| i.stats.interactions) },
        "protocol": { "split": "leave-last-out per user by seq; last item is the test target",
            "ranking": "exact over every item in the training vocabulary", "train_examples": train_examples,
            "test_users": results.test_users, "test_users_sampled_from": results.test_users_sampled_from,
            "valid_users": results.valid_users,
            "rankable_items": results.rankable_items, "seen_filter": SEEN_FILTER_VIEWS,
            "before": config.encode.before },
        "results": results.results,
        "timings_s": timings,
        "throughput": throughput,
        "warm_start": warm_start_json(&runs),
        "export": runs.export,
    });
    let metrics_path = out.join("metrics.json");
    recall_core::write::write_bytes(&metrics_path, &serde_json::to_vec_pretty(&doc)?)?;

    let shown = |v: Option<usize>| v.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let rows = &results.results;
    let mut md = String::new();
    let _ = writeln!(md, "# Recall report: `{}`\n", config.name);
    let _ = writeln!(
        md,
        "Dataset `{dataset_name}`: {} users, {} items, {} interactions; {} training examples, {} test users{}.\n",
        shown(count(|i| i.stats.users)),
        shown(count(|i| i.stats.items)),
        shown(count(|i| i.stats.interactions)),
        shown(train_examples),
        results.test_users,
        results
            .test_users_sampled_from
            .map_or_else(String::new, |n| format!(
                " (a fixed sample of {n}: `evaluate.users`)"
            ))
    );
    let _ = writeln!(
        md,
        "Protocol: leave-last-out per user (the last interaction is the test target{}), exact ranking over all {} \
         rankable items, metrics averaged over query users. {SEEN_FILTER_VIEWS} HitRate@50 has a 95 % bootstrap \
         interval over users.\n",
        if config.encode.validation {
            ", the one before it validation"
        } else {
            ""
        },
        results.rankable_items
    );
    let ks = &config.evaluate.ks;
    for (split, heading) in [
        ("test", "## Test"),
        (
            "valid",
            "## Validation\n\nThe second-to-last item of each user, ranked at the history before it: what settings are \
             chosen on (the ablation tool reads these).",
        ),
    ] {
        let of_split: Vec<&ResultRow> = rows.iter().filter(|r| r.split == split).collect();
        if of_split.is_empty() {
            continue;
        }
        let _ = writeln!(md, "{heading}\n");
        for view in [SeenView::None, SeenView::All, SeenView::Recent] {
            let of_view: Vec<&&ResultRow> =
                of_split.iter().filter(|r| r.seen_filter == view).collect();
            if of_view.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {}\n", view_title(view));
            md.push_str(&metrics_table(&of_view, ks));
            md.push('\n');
        }
    }
    let weights: Vec<String> = rows
        .iter()
        .filter(|r| r.split == "test" && r.seen_filter == SeenView::None)
        .filter_map(|r| Some(format!("`{}` {}", r.model, r.age_prior?)))
        .collect();
    if !weights.is_empty() {
        let _ = writeln!(
            md,
            "`<model>+age-prior` rows rank by the model's logits (score / temperature) plus weight x log lift of the \
             item's age at the query's time (`evaluate.item_age_prior`: the lift of each age bucket over the catalogue's \
             share, fitted on training interactions; the weight chosen on validation HitRate, unfiltered; \
             `evaluate/<model>/age_prior.json` has both). Weights: {}.\n",
            weights.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "Definitions (per query user with target set T and ranked list L, ranks from 1; averaged over users): \
         HR@K = 1 if T meets L[..K]; Recall@K = |T ∩ L[..K]| / |T|; NDCG@K = Σ over hits 1/log2(rank+1) divided by the \
         ideal Σ_(r=1..min(|T|,K)) 1/log2(r+1); MRR@K = 1/rank of the first hit within K, else 0. With one target per \
         user, Recall equals HR. Ties in score rank by item index."
    );
    let svg = chart::draw(&chart_series(rows, ks), ks)?;
    let svg_path = out.join("metrics.svg");
    recall_core::write::write_bytes(&svg_path, svg.as_bytes())?;
    let _ = writeln!(
        md,
        "\n![HitRate@K and NDCG@K of every model and baseline on the test split, one row of panels per seen-filter view](metrics.svg)"
    );
    if !runs.export.is_empty() {
        let _ = writeln!(
            md,
            "\n## Export and serving index\n\nEmbeddings, candidates, weights and the HNSW index are in `export/<model>/`. \
             The index is compared with the exact ranking on the first test users (unfiltered top-K); `+hnsw` rows above \
             rank every test user through it.\n\n\
             | model | users | items | candidates/user | index recall@K | K | index queries/s | exact queries/s | index build s |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for (name, e) in &runs.export {
            let _ = write!(md, "| {name} | {} | {} | {} |", e.users, e.items, e.top_k);
            match &e.index {
                Some(i) => {
                    let _ = writeln!(
                        md,
                        " {:.4} | {} | {:.0} | {:.0} | {:.2} |",
                        i.recall,
                        i.k,
                        i.index_queries_per_second,
                        i.exact_queries_per_second,
                        i.build_seconds
                    );
                }
                None => md.push_str(" - | - | - | - | - |\n"),
            }
        }
        // Indexes extended rather than built (`export.extend_index`): the refresh that adds
        // new items to yesterday's index, measured against exact search like a built one.
        for (name, e) in &runs.export {
            if let Some(x) = e.index.as_ref().and_then(|i| i.extended) {
                let _ = writeln!(
                    md,
                    "
`{name}`'s index extends the warm-start run's: it held {} items and took {} new ones \
                     without a rebuild (load and add: the build seconds above); its recall above is the \
                     extended index's.",
                    x.earlier_items, x.added
                );
            }
        }
    }
    let _ = writeln!(md, "\n## Timings\n\n| stage | seconds |\n|---|---|");
    for (stage, s) in &runs.seconds {
        let _ = writeln!(md, "| {} | {s:.1} |", stage.name());
    }
    if !runs.train.is_empty() {
        // A run without a validation split keeps its last epoch: "best" would claim a
        // validation HitRate that was never measured.
        let kept = if config.encode.validation {
            "kept epoch (best validation HitRate)"
        } else {
            "kept epoch (the last: no validation split)"
        };
        let _ = writeln!(
            md,
            "\n## Training\n\n| model | examples/s | train seconds | {kept} |\n|---|---|---|---|"
        );
        for (name, t) in &runs.train {
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {:.1} | {} |",
                t.examples_per_second, t.train_seconds, t.best_epoch
            );
        }
    }
    write_cold_targets(&mut md, rows);
    write_as_cold(&mut md, rows);
    write_warm_start(&mut md, &runs);
    let md_path = out.join("report.md");
    recall_core::write::write_bytes(&md_path, md.as_bytes())?;
    let cards = card::write_all(
        &card::RunFacts {
            config,
            dataset: &dataset_name,
            runs: &runs,
            results: &results,
            pipeline_hash: &config_hash(config)?,
        },
        layout.dir(Stage::Export),
    )?;
    let report = ReportReport {
        models: config.models.len(),
        cards: cards.len(),
    };
    let mut written = vec![metrics_path, md_path, svg_path];
    written.extend(cards);
    Ok((written, report))
}

/// A Markdown table of result rows: model, view, HR/NDCG/MRR/Recall at each K, the interval.
fn metrics_table(rows: &[&&ResultRow], ks: &[usize]) -> String {
    let mut md = String::new();
    let mut header = String::from("| model | seen filter |");
    let mut rule = String::from("|---|---|");
    for k in ks {
        let _ = write!(header, " HR@{k} | NDCG@{k} | MRR@{k} | Recall@{k} |");
        rule.push_str("---|---|---|---|");
    }
    header.push_str(" HR@50 95% CI |");
    rule.push_str("---|");
    let _ = writeln!(md, "{header}\n{rule}");
    for row in rows {
        let mut line = format!("| {} | {} |", row.model, row.view_label());
        for k in ks {
            for key in ["hit_rate", "ndcg", "mrr", "recall"] {
                let v = row.metrics.get(&format!("{key}@{k}")).copied();
                let _ = write!(line, " {:.4} |", v.unwrap_or(f64::NAN));
            }
        }
        match row.hit_rate_ci95 {
            Some((lo, hi)) => {
                let _ = write!(line, " {lo:.4} - {hi:.4} |");
            }
            None => line.push_str(" |"),
        }
        let _ = writeln!(md, "{line}");
    }
    md
}

/// The chart's lines: every exactly ranked test row (models and baselines) at each K.
fn chart_series(rows: &[ResultRow], ks: &[usize]) -> Vec<chart::Series> {
    rows.iter()
        .filter(|row| row.search != "hnsw" && row.split == "test")
        .map(|row| chart::Series {
            name: row.model.clone(),
            view: row.seen_filter,
            view_label: row.view_label(),
            metrics: chart::METRICS
                .iter()
                .map(|(m, _)| {
                    let points = ks
                        .iter()
                        .filter_map(|&k| row.metrics.get(&format!("{m}@{k}")).map(|&v| (k, v)))
                        .collect();
                    (*m, points)
                })
                .collect(),
        })
        .collect()
}

/// Fails when a model's HitRate@50 on the test split's unfiltered view (seen filter `none`)
/// is below the `min_hit_rate_at_50` of its entry.
pub fn check_thresholds(config: &PipelineConfig, report_dir: &Path) -> Result<()> {
    let wanted: Vec<_> = config
        .models
        .iter()
        .filter_map(|m| m.min_hit_rate_at_50.map(|t| (&m.name, t)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let path = report_dir.join("metrics.json");
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let rows: Vec<ResultRow> = serde_json::from_value(doc["results"].clone())
        .with_context(|| format!("reading the result rows of {}", path.display()))?;
    for (name, threshold) in wanted {
        let value = rows
            .iter()
            .find(|r| {
                r.model == *name
                    && r.split == "test"
                    && r.search == "exact"
                    && r.seen_filter == SeenView::None
            })
            .and_then(|r| r.metrics.get("hit_rate@50").copied())
            .with_context(|| {
                format!(
                    "no unfiltered (seen filter `none`) test hit_rate@50 for model `{name}` in {}",
                    path.display()
                )
            })?;
        if value < threshold {
            bail!(
                "regression: model `{name}` HitRate@50 = {value:.4} (test split, seen filter `none`) is below \
                 min_hit_rate_at_50 = {threshold} (see {})",
                path.display()
            );
        }
        tracing::info!(
            model = name.as_str(),
            value,
            threshold,
            "HitRate@50 (test, seen filter none) threshold met"
        );
    }
    Ok(())
}

/// A warm start in `metrics.json`: the grown vocabularies, what each model took and how an
/// incremental one divided its examples.
fn warm_start_json(runs: &RunReports) -> serde_json::Value {
    let grown = runs.encode.as_ref().and_then(|e| e.stats.grown.as_ref());
    let models: BTreeMap<&String, _> = runs
        .train
        .iter()
        .filter_map(|(name, t)| t.warm_start.as_ref().map(|w| (name, w)))
        .collect();
    if grown.is_none() && models.is_empty() {
        return serde_json::Value::Null;
    }
    // Incremental training's split of the examples, by model.
    let replay: BTreeMap<&String, _> = runs
        .train
        .iter()
        .filter_map(|(name, t)| t.replay.map(|r| (name, r)))
        .collect();
    serde_json::json!({ "vocabularies": grown, "models": models, "replay": replay })
}

/// The report's warm-start section: ids carried and new, rows each model took.
fn write_warm_start(md: &mut String, runs: &RunReports) {
    let Some(grown) = runs.encode.as_ref().and_then(|e| e.stats.grown.as_ref()) else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Warm start\n\nVocabularies grown from `{}`: every earlier id keeps its index.\n\n\
         | | carried | new |\n|---|---|---|\n| users | {} | {} |\n| items | {} | {} |\n\
         | side-feature values | {} | {} |\n",
        grown.from,
        grown.users_carried,
        grown.users_new,
        grown.items_carried,
        grown.items_new,
        grown.feature_values_carried,
        grown.feature_values_new
    );
    let started: Vec<_> = runs
        .train
        .iter()
        .filter_map(|(name, t)| t.warm_start.as_ref().map(|w| (name, w, t.replay)))
        .collect();
    if started.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "| model | started from | shrink, perturb | tensors loaded | embedding rows carried | new rows (fresh) | examples an epoch |\n\
         |---|---|---|---|---|---|---|"
    );
    for (name, w, replay) in started {
        // Incremental training: the new examples and the replayed share of the earlier ones.
        let examples = match replay {
            Some(r) => format!(
                "{} new + {} of {} earlier replayed{}",
                r.new_units,
                r.replayed_per_epoch,
                r.earlier_units,
                match r.diverged_users {
                    0 => String::new(),
                    n => format!(" ({n} users' histories rewritten: all theirs new)"),
                }
            ),
            None => "all".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {name} | `{}` | {}, {} | {} | {} | {} | {examples} |",
            w.from, w.shrink, w.perturb, w.tensors_loaded, w.rows_carried, w.rows_new
        );
    }
    let _ = writeln!(
        md,
        "\nCarried weights are `shrink * earlier + perturb * fresh` (Ash and Adams 2020); the optimiser starts \
         fresh (Adam's moments at zero); models without `init_from` train from scratch on the same grown encoding."
    );
}

/// The report's cold-start section: HitRate over test targets that are cold items (indexed
/// from the item side table, no training interaction) and over the others.
fn write_cold_targets(md: &mut String, rows: &[crate::stages::evaluate::ResultRow]) {
    let split: Vec<_> = rows
        .iter()
        .filter(|r| r.split == "test" && r.search == "exact")
        .filter_map(|r| r.by_target.map(|b| (r, b)))
        .collect();
    let Some((_, first)) = split.first() else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## Cold-item targets\n\nTest users with a cold-item target (listed in the item side table, \
         never a training interaction: {} users), counting those targets alone, and users with a warm one \
         ({} users), counting those (with `encode.test_targets = \"after-cut\"` a user can have both), \
         HitRate@{} with its 95 % bootstrap interval.\n\n| model | seen filter | cold targets | warm targets |\n|---|---|---|---|",
        first.cold.users, first.warm.users, first.k
    );
    let shown = |g: &recall_eval::metrics::GroupMetric| match g.ci95 {
        Some((lo, hi)) => format!("{:.4} ({lo:.4}-{hi:.4})", g.mean),
        None => format!("{:.4}", g.mean),
    };
    for (row, b) in &split {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row.model,
            row.view_label(),
            shown(&b.cold),
            shown(&b.warm)
        );
    }
    let alone: Vec<_> = split
        .iter()
        .filter_map(|(r, _)| r.among_cold.map(|a| (r, a)))
        .collect();
    if alone.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe cold items ranked alone (a fresh-items recall channel beside the main one), against the same \
         users' cold targets, HitRate@{}: how well a model tells one new item from another, apart from how its \
         cold vectors compete with the warm items above.\n\n| model | cold items alone |\n|---|---|",
        first.k
    );
    for (row, a) in alone {
        let _ = writeln!(md, "| {} | {} |", row.model, shown(&a));
    }
}

/// The validation split's targets ranked as if cold (models with a feature-only item path).
fn write_as_cold(md: &mut String, rows: &[crate::stages::evaluate::ResultRow]) {
    let picked: Vec<_> = rows
        .iter()
        .filter(|r| r.split == "valid")
        .filter_map(|r| r.as_cold.map(|c| (r, c)))
        .collect();
    if picked.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Validation targets as if cold\n\nEach validation target scored by its vector from features alone \
         against every other item's own (where the cold path's settings are chosen), HitRate@50 (with `evaluate.ks` \
         holding 50) and its 95 % bootstrap interval, beside the same rows ranked as they are.\n\n\
         | model | seen filter | as if cold | as they are |\n|---|---|---|---|"
    );
    for (row, c) in picked {
        let (lo, hi) = c.ci95.unwrap_or((f64::NAN, f64::NAN));
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} ({lo:.4}-{hi:.4}) | {:.4} |",
            row.model,
            row.view_label(),
            c.mean,
            row.metrics.get("hit_rate@50").copied().unwrap_or(f64::NAN)
        );
    }
}
