//! The ablation grid (`cargo xtask ablate --config PIPELINE`): trains a declared grid of variants of the
//! pipeline's first model (`[ablation]` in the pipeline file), each with the given seeds,
//! sharing ingest and encode outputs between variants with the same data settings, and writes
//! `runs/<pipeline>/ablation/report.md` and `ablation.json`.
//!
//! Each variant overrides parts of the baseline (`model`, `train`, `encode` tables, merged key
//! by key). Choices are made on validation, never on test: the decision tables rank the
//! validation split (each user's second-to-last item, at the history before it) in every view
//! of the seen filter, with each variant's difference to the baseline and a paired bootstrap
//! 95 % interval over users (the same users rank under both, so the pairing removes the
//! spread between users); a difference whose interval excludes zero is marked as an effect,
//! the rest as noise. Test numbers appear only for the baseline and the variant named
//! `shipped`, in a section of their own that says it was not used to choose. The grid holds
//! the validation item out even where the pipeline file trains on it (`encode.validation =
//! false`: the shipped run refits the settings chosen here); a variant that sets it false is
//! refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use recall_eval::split::SeenView;

use crate::config::{self, AblationConfig, EvaluateConfig, ModelEntry, PipelineConfig, Variant};
use crate::layout::{Layout, Stage};
use crate::manifest::{Manifest, config_hash};
use crate::runner::{Options, execute_with};
use crate::stages::evaluate::{SEEN_FILTER_VIEWS, per_user_file};
use crate::stages::train::TrainReport;

/// What to run of a pipeline file's grid.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // `progress` is a trait object without Debug
pub struct Args<'a> {
    /// Pipeline file with an `[ablation]` section.
    pub config: PathBuf,
    /// Root of run directories (`<runs>/<pipeline>/ablation/`).
    pub runs: PathBuf,
    /// Only the variants whose name contains one of these; the baseline always runs.
    pub only: Vec<String>,
    /// How each run's training shows its progress.
    pub progress: &'a dyn crate::progress::ProgressFor,
}

/// `base` with `patch` merged in, key by key (nested tables merged too, except a table whose
/// `kind` changes, which is replaced: `sampler = { kind = "uniform" }` drops the alpha).
fn merge(
    base: &serde_json::Value,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut out = base.clone();
    if let serde_json::Value::Object(map) = &mut out {
        for (k, v) in patch {
            match (map.get(k), v) {
                (Some(old @ serde_json::Value::Object(o)), serde_json::Value::Object(p))
                    if p.get("kind").is_none_or(|k| o.get("kind") == Some(k)) =>
                {
                    let merged = merge(old, p);
                    map.insert(k.clone(), merged);
                }
                _ => {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The model entries and encode settings of one variant.
fn variant_config(
    base: &PipelineConfig,
    ablation: &AblationConfig,
    variant: &Variant,
    seed: u64,
) -> Result<PipelineConfig> {
    let key = |what: &str| format!("ablation variant {:?}: {what}", variant.name);
    let baseline = base
        .models
        .first()
        .context("[ablation] needs a [[models]] entry to vary (the first one is the baseline)")?;
    let mut train = merge(&serde_json::to_value(&baseline.train)?, &ablation.train);
    let base_train = train.clone();
    train = merge(&train, &variant.train);
    // A variant of another kind keeps the baseline's keys that kind has (dimensions,
    // temperature, ...) and drops the rest.
    let mut base_model = serde_json::to_value(&baseline.model)?;
    if let Some(kind) = variant.model.get("kind") {
        let kind: recall_models::ModelKind =
            serde_json::from_value(kind.clone()).with_context(|| key("model.kind"))?;
        let keys = kind.keys();
        if let serde_json::Value::Object(map) = &mut base_model {
            map.retain(|k, _| k == "kind" || keys.contains(&k.as_str()));
        }
    }
    let entry = ModelEntry {
        name: "variant".into(),
        model: serde_json::from_value(merge(&base_model, &variant.model))
            .with_context(|| key("model"))?,
        train: serde_json::from_value(train).with_context(|| key("train"))?,
        min_hit_rate_at_50: None,
    };
    // Hard negatives come from a model trained first in the same run: the baseline.
    let mut models = Vec::new();
    if let Some(h) = &entry.train.hard_negatives {
        if h.from != "baseline" {
            bail!(
                "{}: hard_negatives.from must be \"baseline\" in an ablation",
                key("train")
            );
        }
        models.push(ModelEntry {
            name: "baseline".into(),
            model: baseline.model.clone(),
            train: serde_json::from_value(base_train).with_context(|| key("train"))?,
            min_hit_rate_at_50: None,
        });
    }
    models.push(entry);
    // The grid always holds the second-to-last item out, also for a file that trains on it
    // (`encode.validation = false`, a refit of settings chosen here); only a variant that
    // asks to train on it is refused, having no validation split to be ranked on.
    let mut base_encode = base.encode.clone();
    base_encode.validation = true;
    let encode: recall_features::EncodeConfig =
        serde_json::from_value(merge(&serde_json::to_value(&base_encode)?, &variant.encode))
            .with_context(|| key("encode"))?;
    if !encode.validation {
        bail!(
            "{}: the ablation chooses on the validation split, and `encode.validation = false` holds none out: \
             leave `validation` out of the variant",
            key("encode")
        );
    }
    let mut evaluate = base.evaluate.clone();
    evaluate.index = false;
    evaluate.validation = true;
    if !evaluate.ks.contains(&ablation.k) {
        evaluate.ks.push(ablation.k);
    }
    Ok(PipelineConfig {
        name: format!("{}-{}", base.name, slug(&variant.name)),
        seed,
        ingest: base.ingest.clone(),
        data: base.data.clone(),
        encode,
        models,
        evaluate,
        export: base.export.clone(),
        device: base.device,
        engine: None,
        ablation: None,
    })
}

/// Per-user values of `metric@k` of the `variant` model on one split and view.
fn per_user(evaluate_dir: &Path, split: &str, view: SeenView, column: &str) -> Result<Vec<f64>> {
    let path = evaluate_dir.join(per_user_file("variant", split, view));
    let t = recall_core::Table::read(&path)?;
    let rows = t.ints("user_row")?;
    let values = t.nullable_floats(column)?;
    let mut out = vec![0.0; rows.len()];
    for (r, v) in rows.iter().zip(values) {
        out[*r as usize] = f64::from(v.unwrap_or(0.0));
    }
    Ok(out)
}

const METRICS: [&str; 3] = ["hit_rate", "ndcg", "mrr"];
const SPLITS: [&str; 2] = ["valid", "test"];

/// Per-user values of one run: [metric] for each (split, view).
type PerUser = Vec<((&'static str, SeenView), [Vec<f64>; 3])>;

/// One measured run of a variant.
struct Measured {
    train_seconds: f64,
    /// Seconds of this run's own stages (train, evaluate, report) when they last ran.
    stage_seconds: f64,
    per_user: PerUser,
}

impl Measured {
    fn values(&self, split: &str, view: SeenView, metric: usize) -> &[f64] {
        self.per_user
            .iter()
            .find(|((s, v), _)| *s == split && *v == view)
            .map_or(&[][..], |(_, m)| &m[metric])
    }
}

/// The views every run reports: unfiltered first, then the pipeline's.
fn views(evaluate: &EvaluateConfig) -> Vec<SeenView> {
    let mut out = vec![SeenView::None];
    for v in &evaluate.seen_filter {
        if !out.contains(v) {
            out.push(*v);
        }
    }
    out
}

pub fn run(args: &Args<'_>) -> Result<()> {
    let base = config::load(&args.config)?;
    let ablation = base
        .ablation
        .clone()
        .with_context(|| format!("{} has no [ablation] section", args.config.display()))?;
    let seeds = if ablation.seeds.is_empty() {
        vec![base.seed]
    } else {
        ablation.seeds.clone()
    };
    if let Some(shipped) = &ablation.shipped
        && !ablation.variants.iter().any(|v| &v.name == shipped)
    {
        bail!(
            "{}: `ablation.shipped = {shipped:?}` names no variant of the grid",
            args.config.display()
        );
    }
    let views = views(&base.evaluate);
    let root = args.runs.join(&base.name).join("ablation");
    let mut variants = vec![Variant {
        name: "baseline".into(),
        model: Default::default(),
        train: Default::default(),
        encode: Default::default(),
    }];
    variants.extend(
        ablation
            .variants
            .iter()
            .filter(|v| args.only.is_empty() || args.only.iter().any(|o| v.name.contains(o)))
            .cloned(),
    );
    let started = Instant::now();
    let k = ablation.k;
    let mut measured: Vec<Vec<Measured>> = Vec::new();
    let mut data_seconds = std::collections::BTreeMap::new();
    for variant in &variants {
        let mut runs = Vec::new();
        for &seed in &seeds {
            let config = variant_config(&base, &ablation, variant, seed)?;
            // Variants with the same data settings share ingest and encode.
            let data_key = config_hash(&(&config.ingest, &config.encode))?;
            let data = root.join(format!("data-{}", &data_key[..12]));
            let dir = root.join(format!("{}-s{seed}", slug(&variant.name)));
            let mut layout = Layout::new(&dir)
                .with_dir(Stage::Ingest, data.join("ingest"))
                .with_dir(Stage::Encode, data.join("encode"));
            layout.skip = vec![Stage::Export];
            tracing::info!(variant = variant.name.as_str(), seed, "ablation run");
            let options = Options {
                progress: args.progress,
                ..Options::default()
            };
            execute_with(&config, &layout, &options)
                .with_context(|| format!("ablation variant {:?}, seed {seed}", variant.name))?;
            let train: TrainReport = Manifest::read(layout.dir(Stage::Train))
                .and_then(|m| m.report())
                .context("train manifest")?;
            // A second-round variant's time includes the first-round model it mines from.
            let train_seconds = train.values().map(|t| t.train_seconds).sum::<f64>();
            let stage_seconds = [Stage::Train, Stage::Evaluate, Stage::Report]
                .iter()
                .filter_map(|s| Manifest::read(layout.dir(*s)))
                .map(|m| m.seconds)
                .sum::<f64>();
            data_seconds.insert(
                data.clone(),
                [Stage::Ingest, Stage::Encode]
                    .iter()
                    .filter_map(|s| Manifest::read(layout.dir(*s)))
                    .map(|m| m.seconds)
                    .sum::<f64>(),
            );
            let evaluate = layout.dir(Stage::Evaluate);
            let mut values = Vec::new();
            for split in SPLITS {
                for &view in &views {
                    let pick =
                        |metric: &str| per_user(evaluate, split, view, &format!("{metric}@{k}"));
                    values.push((
                        (split, view),
                        [pick("hit_rate")?, pick("ndcg")?, pick("mrr")?],
                    ));
                }
            }
            runs.push(Measured {
                train_seconds,
                stage_seconds,
                per_user: values,
            });
        }
        measured.push(runs);
    }
    let wall = started.elapsed().as_secs_f64();
    // What the whole grid costs from scratch, whatever this invocation found cached.
    let compute = data_seconds.values().sum::<f64>()
        + measured
            .iter()
            .flatten()
            .map(|m| m.stage_seconds)
            .sum::<f64>();
    write_report(
        &root,
        &Grid {
            base: &base,
            ablation: &ablation,
            variants: &variants,
            seeds: &seeds,
            views: &views,
        },
        &measured,
        (wall, compute),
    )
}

/// Per-user values averaged over seeds.
fn seed_mean(runs: &[Measured], split: &str, view: SeenView, metric: usize) -> Vec<f64> {
    let n = runs[0].values(split, view, metric).len();
    (0..n)
        .map(|u| {
            runs.iter()
                .map(|r| r.values(split, view, metric).get(u).copied().unwrap_or(0.0))
                .sum::<f64>()
                / runs.len() as f64
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// What the grid was: the pipeline, its `[ablation]`, the variants run (baseline first).
struct Grid<'a> {
    base: &'a PipelineConfig,
    ablation: &'a AblationConfig,
    variants: &'a [Variant],
    seeds: &'a [u64],
    views: &'a [SeenView],
}

fn view_heading(view: SeenView, evaluate: &EvaluateConfig) -> String {
    match (view, evaluate.recent_window) {
        (SeenView::Recent, Some(n)) => format!("seen filter `recent` (newest {n})"),
        (SeenView::Recent, None) => {
            "seen filter `recent` (newest `max_len` of each variant's model)".to_owned()
        }
        (SeenView::All, _) => "seen filter `all`".to_owned(),
        (SeenView::None, _) => "unfiltered (seen filter `none`)".to_owned(),
    }
}

fn write_report(
    root: &Path,
    grid: &Grid<'_>,
    measured: &[Vec<Measured>],
    (wall, compute): (f64, f64),
) -> Result<()> {
    use std::fmt::Write as _;
    let Grid {
        base,
        ablation,
        variants,
        seeds,
        views,
    } = *grid;
    let k = ablation.k;
    let mut md = String::new();
    let _ = writeln!(md, "# Ablation: `{}`\n", base.name);
    let _ = writeln!(
        md,
        "Baseline: the pipeline's first model (`{}`) with the grid's training overrides {}; seeds {seeds:?}; \
         {} variants. The grid's stages took {:.1} min in all (sum of every run's stage times: what it costs from \
         scratch on this machine); this invocation ran {:.1} min (cached runs are skipped).\n\n\
         **Choices are made on the validation split** (each user's second-to-last item, ranked at the history before it, \
         exact ranking over the whole catalogue). Metrics @{k}. Δ is the variant minus the baseline with a paired \
         bootstrap 95 % interval over users ({} resamples; per-user values averaged over seeds). **effect** marks a \
         difference whose interval excludes zero; the others are within noise. {}\n",
        base.models.first().map_or("?", |m| m.name.as_str()),
        serde_json::Value::Object(ablation.train.clone()),
        variants.len(),
        compute / 60.0,
        wall / 60.0,
        ablation.resamples,
        SEEN_FILTER_VIEWS,
    );
    let mut rows = Vec::new();
    for (i, (v, runs)) in variants.iter().zip(measured).enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("variant".into(), serde_json::json!(v.name));
        row.insert(
            "overrides".into(),
            serde_json::json!({ "model": v.model, "train": v.train, "encode": v.encode }),
        );
        for &view in views {
            for (m, metric) in METRICS.iter().enumerate() {
                let values = seed_mean(runs, "valid", view, m);
                let baseline = seed_mean(&measured[0], "valid", view, m);
                let (d, ci) = recall_eval::metrics::paired_bootstrap(
                    &values,
                    &baseline,
                    ablation.resamples,
                    0.95,
                    17 + m as u64,
                );
                // Without resamples the interval collapses onto the difference.
                let (lo, hi) = ci.unwrap_or((d, d));
                let per_seed: Vec<f64> = runs
                    .iter()
                    .map(|r| mean(r.values("valid", view, m)))
                    .collect();
                row.insert(
                    format!("valid_{}_{metric}@{k}", view_name(view)),
                    serde_json::json!({ "value": mean(&values), "per_seed": per_seed,
                        "difference": d, "difference_ci95": [lo, hi],
                        "effect": i > 0 && (lo > 0.0 || hi < 0.0) }),
                );
            }
        }
        let train_seconds = mean(&runs.iter().map(|r| r.train_seconds).collect::<Vec<_>>());
        row.insert("train_seconds".into(), serde_json::json!(train_seconds));
        rows.push(serde_json::Value::Object(row));
    }
    let _ = writeln!(md, "## Validation: the decision tables\n");
    for &view in views {
        let _ = writeln!(md, "### {}\n", view_heading(view, &base.evaluate));
        let _ = writeln!(
            md,
            "| variant | HR@{k} | HR@{k} by seed | Δ HR (95 % CI) | NDCG@{k} | Δ NDCG (95 % CI) | MRR@{k} | Δ MRR (95 % CI) | train s |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for (i, (v, row)) in variants.iter().zip(&rows).enumerate() {
            let cell = |metric: &str| &row[format!("valid_{}_{metric}@{k}", view_name(view))];
            let delta = |c: &serde_json::Value| {
                if i == 0 {
                    return "-".to_owned();
                }
                let (d, lo, hi) = (
                    c["difference"].as_f64().unwrap_or(f64::NAN),
                    c["difference_ci95"][0].as_f64().unwrap_or(f64::NAN),
                    c["difference_ci95"][1].as_f64().unwrap_or(f64::NAN),
                );
                let mark = if c["effect"] == true {
                    " **effect**"
                } else {
                    ""
                };
                format!("{d:+.4} ({lo:+.4}, {hi:+.4}){mark}")
            };
            let value = |c: &serde_json::Value| c["value"].as_f64().unwrap_or(f64::NAN);
            let by_seed = cell("hit_rate")["per_seed"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| format!("{:.4}", x.as_f64().unwrap_or(f64::NAN)))
                .collect::<Vec<_>>()
                .join(" / ");
            let _ = writeln!(
                md,
                "| {} | {:.4} | {by_seed} | {} | {:.4} | {} | {:.4} | {} | {:.0} |",
                v.name,
                value(cell("hit_rate")),
                delta(cell("hit_rate")),
                value(cell("ndcg")),
                delta(cell("ndcg")),
                value(cell("mrr")),
                delta(cell("mrr")),
                row["train_seconds"].as_f64().unwrap_or(f64::NAN),
            );
        }
        md.push('\n');
    }
    // Test: the baseline and the shipped variant only, measured, never compared to choose.
    let mut test = Vec::new();
    let shipped = ablation.shipped.as_deref();
    let _ = writeln!(
        md,
        "## Test: not used to choose\n\nThe test split (each user's last item) for the baseline{} only: measured \
         once the choices above were made on validation, never compared to make them.\n\n\
         | run | seen filter | HR@{k} | NDCG@{k} | MRR@{k} | HR@{k} by seed |\n|---|---|---|---|---|---|",
        shipped.map_or_else(String::new, |s| format!(" and the shipped variant ({s})"))
    );
    for (v, runs) in variants.iter().zip(measured) {
        if !(v.name == "baseline" || Some(v.name.as_str()) == shipped) {
            continue;
        }
        let mut entry = serde_json::Map::new();
        entry.insert("variant".into(), serde_json::json!(v.name));
        for &view in views {
            let values: Vec<f64> = (0..METRICS.len())
                .map(|m| mean(&seed_mean(runs, "test", view, m)))
                .collect();
            let by_seed: Vec<f64> = runs
                .iter()
                .map(|r| mean(r.values("test", view, 0)))
                .collect();
            for (m, metric) in METRICS.iter().enumerate() {
                entry.insert(
                    format!("test_{}_{metric}@{k}", view_name(view)),
                    serde_json::json!(values[m]),
                );
            }
            let _ = writeln!(
                md,
                "| {} | {} | {:.4} | {:.4} | {:.4} | {} |",
                v.name,
                view_name(view),
                values[0],
                values[1],
                values[2],
                by_seed
                    .iter()
                    .map(|x| format!("{x:.4}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
        test.push(serde_json::Value::Object(entry));
    }
    let _ = writeln!(
        md,
        "\n`train s` is training time (per-epoch validation not included); for a second-round variant it adds the first-round model's.\n\nVariants (overrides of the baseline):\n"
    );
    for v in variants.iter().skip(1) {
        let _ = writeln!(
            md,
            "- **{}**: {}",
            v.name,
            serde_json::json!({ "model": v.model, "train": v.train, "encode": v.encode })
        );
    }
    let doc = serde_json::json!({
        "pipeline": base.name, "k": k, "seeds": seeds, "wall_seconds": wall, "stage_seconds": compute,
        "train_overrides": ablation.train, "chosen_on": "valid", "rows": rows,
        "test_not_used_to_choose": test,
    });
    for file in ["ablation.json", "report.md"] {
        recall_core::write::remove_stale_temporaries_of(&root.join(file));
    }
    recall_core::write::write_bytes(
        &root.join("ablation.json"),
        &serde_json::to_vec_pretty(&doc)?,
    )?;
    recall_core::write::write_bytes(&root.join("report.md"), md.as_bytes())?;
    tracing::info!("ablation report: {}", root.join("report.md").display());
    Ok(())
}

fn view_name(view: SeenView) -> &'static str {
    match view {
        SeenView::None => "none",
        SeenView::All => "all",
        SeenView::Recent => "recent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_overrides_nested_keys_only() {
        let base = serde_json::json!({ "loss": "in-batch", "sampler": { "kind": "popularity", "alpha": 0.75 }, "epochs": 8 });
        let patch = serde_json::json!({ "sampler": { "alpha": 0.5 }, "epochs": 2 });
        let merged = merge(&base, patch.as_object().unwrap());
        assert_eq!(
            merged,
            serde_json::json!({ "loss": "in-batch", "sampler": { "kind": "popularity", "alpha": 0.5 }, "epochs": 2 })
        );
        let uniform = serde_json::json!({ "sampler": { "kind": "uniform" } });
        assert_eq!(
            merge(&base, uniform.as_object().unwrap())["sampler"],
            serde_json::json!({ "kind": "uniform" })
        );
    }

    /// Every variant of every shipped grid resolves to valid model, training and encode
    /// settings (a typo fails here, not an hour into a run).
    #[test]
    fn shipped_grids_resolve() {
        let dir = crate::project_root().join("pipelines");
        let mut grids = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(config) = crate::config::load(&path) else {
                continue;
            };
            let Some(ablation) = &config.ablation else {
                continue;
            };
            for v in &ablation.variants {
                let resolved = variant_config(&config, ablation, v, 1)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                for m in &resolved.models {
                    // Against its model: a variant inherits the baseline's training keys
                    // (one meant for SASRec only reaching a YoutubeDNN variant fails here).
                    m.train
                        .validate_for(&m.model)
                        .unwrap_or_else(|e| panic!("{}, {}: {e}", path.display(), v.name));
                }
            }
            grids += 1;
        }
        assert!(grids >= 1);
    }

    #[test]
    fn a_tiny_grid_runs_end_to_end_sharing_the_encode_stage() {
        let text = "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 80\nitems = 60\nseed = 5\n\
                    [evaluate]\nks = [10]\nbootstrap = 20\n\
                    [[models]]\nname = \"m\"\nmodel = { kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }\n\
                    train = { epochs = 1, batch_size = 64 }\n\
                    [ablation]\nk = 10\nresamples = 50\ntrain = { epochs = 1 }\n\
                    [[ablation.variants]]\nname = \"sum pooling\"\nmodel = { pooling = \"sum\" }\n\
                    [[ablation.variants]]\nname = \"cap 3\"\nencode = { max_examples_per_user = { count = 3 } }\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, text).unwrap();
        run(&Args {
            config: path,
            runs: dir.path().join("runs"),
            only: Vec::new(),
            progress: &crate::progress::LogLines,
        })
        .unwrap();
        let root = dir.path().join("runs/t/ablation");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("ablation.json")).unwrap()).unwrap();
        let rows = doc["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(doc["chosen_on"], "valid");
        for view in ["none", "all", "recent"] {
            assert_eq!(
                rows[0][format!("valid_{view}_hit_rate@10")]["difference"],
                0.0
            );
            assert!(rows[1][format!("valid_{view}_hit_rate@10")]["value"].is_f64());
        }
        // Test numbers only for the baseline (no `shipped` variant), in their own section.
        let test = doc["test_not_used_to_choose"].as_array().unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(test[0]["variant"], "baseline");
        assert!(
            rows[1]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| !k.starts_with("test"))
        );
        // Baseline and sum pooling share one encode; the cap has its own.
        let data_dirs = std::fs::read_dir(&root)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("data-")
            })
            .count();
        assert_eq!(data_dirs, 2);
        let md = std::fs::read_to_string(root.join("report.md")).unwrap();
        assert!(
            md.contains("| sum pooling |") && md.contains("| cap 3 |"),
            "{md}"
        );
        let (choices, test) = md.split_once("## Test: not used to choose").unwrap();
        assert!(choices.contains("## Validation"), "{md}");
        assert!(
            !test.contains("| sum pooling |") && test.contains("| baseline |"),
            "{md}"
        );
    }

    /// A file that refits on the validation item (`encode.validation = false`) is ablated with
    /// it held out, every variant and the baseline alike; a variant that asks to train on it has
    /// nothing to be ranked on: refused, naming the variant and the key.
    #[test]
    fn the_grid_holds_validation_out_even_where_the_file_refits() {
        let text = "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 80\nitems = 60\nseed = 5\n\
                    [encode]\nvalidation = false\nmax_len = 9\n[evaluate]\nks = [10]\n\
                    [[models]]\nname = \"m\"\nmodel = { kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }\n\
                    train = { epochs = 1, batch_size = 64 }\n\
                    [ablation]\nk = 10\n[[ablation.variants]]\nname = \"sum\"\nmodel = { pooling = \"sum\" }\n\
                    [[ablation.variants]]\nname = \"refit\"\nencode = { validation = false }\n";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::load(&path).unwrap();
        assert!(!config.encode.validation);
        let ablation = config.ablation.as_ref().unwrap();
        let sum = variant_config(&config, ablation, &ablation.variants[0], 1).unwrap();
        assert!(sum.encode.validation, "held out for the grid");
        assert_eq!(sum.encode.max_len, 9, "the file's other encode keys kept");
        assert!(sum.evaluate.validation);
        let err = variant_config(&config, ablation, &ablation.variants[1], 1).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("\"refit\"") && msg.contains("encode.validation"),
            "{msg}"
        );
    }
}
