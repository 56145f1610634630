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

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use recall_eval::split::SeenView;

use crate::config::PipelineConfig;
use crate::manifest::Manifest;
use crate::pipeline::{Layout, Stage};
use crate::stages::evaluate::{ResultRow, SEEN_FILTER_VIEWS, view_title};

fn manifest(layout: &Layout, stage: Stage) -> Option<Manifest> {
    Manifest::read(layout.dir(stage))
}

/// Writes metrics.json and report.md into `out`.
pub fn write(
    config: &PipelineConfig,
    run_dir: &Layout,
    out: &Path,
) -> Result<(Vec<PathBuf>, serde_json::Value)> {
    let results_path = run_dir.dir(Stage::Evaluate).join("results.json");
    let results: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&results_path)
            .with_context(|| format!("reading {}", results_path.display()))?,
    )?;
    let ingest = manifest(run_dir, Stage::Ingest)
        .map(|m| m.stats)
        .unwrap_or_default();
    let encode = manifest(run_dir, Stage::Encode)
        .map(|m| m.stats)
        .unwrap_or_default();
    let train = manifest(run_dir, Stage::Train)
        .map(|m| m.stats)
        .unwrap_or_default();
    let mut timings = serde_json::Map::new();
    let export = manifest(run_dir, Stage::Export)
        .map(|m| m.stats)
        .unwrap_or_default();
    for stage in Stage::ALL.iter().filter(|s| **s != Stage::Report) {
        if let Some(m) = manifest(run_dir, *stage) {
            timings.insert(stage.name().to_owned(), serde_json::json!(m.seconds));
        }
    }
    let mut throughput = serde_json::Map::new();
    if let Some(models) = train.as_object() {
        for (name, s) in models {
            throughput.insert(name.clone(), serde_json::json!({ "train_examples_per_second": s["examples_per_second"], "train_seconds": s["train_seconds"], "best_epoch": s["best_epoch"] }));
        }
    }
    let dataset_name = match &config.ingest {
        recall_data::IngestConfig::Synthetic(_) => "synthetic".to_owned(),
        recall_data::IngestConfig::Generic(g) => g.name.clone().unwrap_or_else(|| "generic".into()),
        other => format!("{other:?}")
            .split_whitespace()
            .next()
            .unwrap_or("movielens")
            .to_lowercase(),
    };
    let doc = serde_json::json!({
        "pipeline": config.name,
        "dataset": { "name": dataset_name, "users": ingest["users"], "items": ingest["items"], "interactions": ingest["interactions"] },
        "protocol": { "split": "leave-last-out per user by seq; last item is the test target", "ranking": "exact over every item in the training vocabulary", "train_examples": encode["train_examples"], "test_users": results["test_users"], "valid_users": results["valid_users"], "rankable_items": results["rankable_items"], "seen_filter": SEEN_FILTER_VIEWS },
        "results": results["results"],
        "timings_s": timings,
        "throughput": throughput,
        "export": export,
    });
    let metrics_path = out.join("metrics.json");
    recall_core::write::write_bytes(&metrics_path, &serde_json::to_vec_pretty(&doc)?)?;

    let rows: Vec<ResultRow> = serde_json::from_value(results["results"].clone())
        .with_context(|| format!("reading the result rows of {}", results_path.display()))?;
    let mut md = String::new();
    let _ = writeln!(md, "# Recall report: `{}`\n", config.name);
    let _ = writeln!(
        md,
        "Dataset `{dataset_name}`: {} users, {} items, {} interactions; {} training examples, {} test users.\n",
        ingest["users"],
        ingest["items"],
        ingest["interactions"],
        encode["train_examples"],
        results["test_users"]
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
        results["rankable_items"]
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
    let _ = writeln!(
        md,
        "Definitions (per query user with target set T and ranked list L, ranks from 1; averaged over users): \
         HR@K = 1 if T meets L[..K]; Recall@K = |T ∩ L[..K]| / |T|; NDCG@K = Σ over hits 1/log2(rank+1) divided by the \
         ideal Σ_(r=1..min(|T|,K)) 1/log2(r+1); MRR@K = 1/rank of the first hit within K, else 0. With one target per \
         user, Recall equals HR. Ties in score rank by item index."
    );
    let svg = crate::chart::draw(&chart_series(&rows, ks), ks)?;
    let svg_path = out.join("metrics.svg");
    recall_core::write::write_bytes(&svg_path, svg.as_bytes())?;
    let _ = writeln!(
        md,
        "\n![HitRate@K and NDCG@K of every model and baseline on the test split, one row of panels per seen-filter view](metrics.svg)"
    );
    if let Some(models) = export.as_object().filter(|m| !m.is_empty()) {
        let _ = writeln!(
            md,
            "\n## Export and serving index\n\nEmbeddings, candidates, weights and the HNSW index are in `export/<model>/`. \
             The index is compared with the exact ranking on the first test users (unfiltered top-K); `+hnsw` rows above \
             rank every test user through it.\n\n\
             | model | users | items | candidates/user | index recall@K | K | index queries/s | exact queries/s | index build s |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for (name, s) in models {
            let idx = &s["index"];
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {:.4} | {} | {:.0} | {:.0} | {:.2} |",
                s["users"],
                s["items"],
                s["top_k"],
                idx["recall"].as_f64().unwrap_or(f64::NAN),
                idx["k"],
                idx["index_queries_per_second"].as_f64().unwrap_or(f64::NAN),
                idx["exact_queries_per_second"].as_f64().unwrap_or(f64::NAN),
                idx["build_seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let _ = writeln!(md, "\n## Timings\n\n| stage | seconds |\n|---|---|");
    for (stage, s) in &timings {
        let _ = writeln!(md, "| {stage} | {:.1} |", s.as_f64().unwrap_or(f64::NAN));
    }
    if !throughput.is_empty() {
        let _ = writeln!(
            md,
            "\n## Training\n\n| model | examples/s | train seconds | best epoch |\n|---|---|---|---|"
        );
        for (name, t) in &throughput {
            let _ = writeln!(
                md,
                "| {name} | {:.0} | {:.1} | {} |",
                t["train_examples_per_second"].as_f64().unwrap_or(f64::NAN),
                t["train_seconds"].as_f64().unwrap_or(f64::NAN),
                t["best_epoch"]
            );
        }
    }
    let md_path = out.join("report.md");
    recall_core::write::write_bytes(&md_path, md.as_bytes())?;
    let cards = crate::card::write_all(
        &crate::card::RunFacts {
            config,
            dataset: &dataset_name,
            ingest: &ingest,
            encode: &encode,
            train: &train,
            results: &results,
            pipeline_hash: &crate::pipeline::config_hash(config)?,
        },
        run_dir.dir(Stage::Export),
    )?;
    let mut written = vec![metrics_path, md_path, svg_path];
    written.extend(cards);
    Ok((
        written,
        serde_json::json!({ "models": config.models.len() }),
    ))
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
                let v = row
                    .metrics
                    .get(&format!("{key}@{k}"))
                    .and_then(|v| v.as_f64());
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
fn chart_series(rows: &[ResultRow], ks: &[usize]) -> Vec<crate::chart::Series> {
    rows.iter()
        .filter(|row| row.search != "hnsw" && row.split == "test")
        .map(|row| crate::chart::Series {
            name: row.model.clone(),
            view: row.seen_filter,
            view_label: row.view_label(),
            metrics: crate::chart::METRICS
                .iter()
                .map(|(m, _)| {
                    let points = ks
                        .iter()
                        .filter_map(|&k| {
                            row.metrics
                                .get(&format!("{m}@{k}"))
                                .and_then(|v| v.as_f64())
                                .map(|v| (k, v))
                        })
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
            .and_then(|r| r.metrics.get("hit_rate@50").and_then(|v| v.as_f64()))
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
