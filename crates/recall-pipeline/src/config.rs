//! Pipeline files (`pipelines/*.toml`): the schema of every section, typed, with unknown keys
//! rejected and every impossible setting refused at load with the key as the file spells it;
//! the data directory taken from the environment. Stages receive their sections as values.

use std::path::Path;

use anyhow::{Context, Result};
use recall_data::IngestConfig;
use recall_engine::DataConfig;
use recall_eval::split::{SeenFilter, SeenView};
use recall_features::EncodeConfig;
use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;

/// Environment variable naming the directory that holds datasets (default `data`).
pub const DATA_DIR_VAR: &str = "RECALL_DATA_DIR";

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Names the run directory `runs/<name>/`.
    pub name: String,
    /// Seed of everything random after ingest (sampling, training). Required.
    pub seed: u64,
    pub ingest: IngestConfig,
    /// `[data]`: the engine that runs encode (`"memory"`, the default, `"datafusion"` or
    /// `"ballista"`) and its memory, spill and partition limits.
    #[serde(default, skip_serializing_if = "DataConfig::is_default")]
    pub data: DataConfig,
    #[serde(default)]
    pub encode: EncodeConfig,
    /// Models to train and evaluate (`[[models]]`); none runs the baselines only.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub evaluate: EvaluateConfig,
    /// `[export]`: candidates per user, seen filtering, the serving index.
    #[serde(default)]
    pub export: recall_export::ExportConfig,
    /// The candle device the computing stages (train, export, evaluate) use: `"cpu"`
    /// (default), `"cuda"` or `"cuda:N"`.
    #[serde(default, skip_serializing_if = "DeviceChoice::is_cpu")]
    pub device: DeviceChoice,
    /// The old name of `device`'s section (`[engine] device = ...`): refused with the new key
    /// named, so the word is free for a data engine.
    #[serde(default, skip_serializing)]
    pub engine: Option<toml::Value>,
    /// `[ablation]`: the grid `cargo xtask ablate` runs (ignored by `pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation: Option<AblationConfig>,
}

/// One model of a pipeline (`[[models]]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Names the output folder and the row in the report (`dssm`, `youtubednn`, ...).
    pub name: String,
    pub model: recall_models::ModelConfig,
    pub train: recall_models::TrainConfig,
    /// The scheduled job fails when this model's test HitRate@50 (unfiltered) falls below.
    #[serde(default)]
    pub min_hit_rate_at_50: Option<f64>,
}

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
    /// Rank a sample of this many rows of each split, the same rows for every model, view,
    /// seed and run on the encoding (`recall_eval::split::fixed_sample_rows`): exact evaluation of a
    /// million users against ten million items takes hours on two cores, of 10,000 minutes.
    /// Default every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<usize>,
    /// An item-age prior beside each model (`recall_eval::freshness`), reported as model
    /// `<name>+age-prior`, its weight chosen on the validation split. Needs
    /// `encode.item_release`, timestamps and `evaluate.validation`. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_age_prior: Option<AgePriorConfig>,
}

/// `evaluate.item_age_prior`: `{ age_edges_days = [0, 365.25, 730.5], betas = [0.5, 1, 2] }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgePriorConfig {
    /// Age bucket edges in days, ascending from 0 (the last bucket open-ended; items not yet
    /// released and items without a date have buckets of their own).
    pub age_edges_days: Vec<f64>,
    /// The weights tried on validation besides 0 (the model alone), at HitRate@50 (or the
    /// largest K below it), unfiltered: the best is reported on test. Default 0.25 to 4.
    #[serde(default = "default_prior_betas")]
    pub betas: Vec<f64>,
}

fn default_prior_betas() -> Vec<f64> {
    vec![0.25, 0.5, 1.0, 2.0, 4.0]
}

impl AgePriorConfig {
    /// The buckets, checked.
    pub fn buckets(&self) -> Result<recall_eval::freshness::AgeBuckets> {
        Ok(recall_eval::freshness::AgeBuckets::new(
            self.age_edges_days.clone(),
            "evaluate.item_age_prior.age_edges_days",
        )?)
    }
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
        if self.users == Some(0) {
            anyhow::bail!(
                "configuration key `evaluate.users`: must be at least 1 (leave it out to rank every user)"
            );
        }
        if self.recent_window == Some(0) {
            anyhow::bail!(
                "configuration key `evaluate.recent_window`: must be at least 1 (leave it out for each model's history length)"
            );
        }
        if let Some(prior) = &self.item_age_prior {
            prior.buckets()?;
            if prior.betas.is_empty() || prior.betas.iter().any(|b| !b.is_finite() || *b <= 0.0) {
                anyhow::bail!(
                    "configuration key `evaluate.item_age_prior.betas`: give one or more finite weights above 0 \
                     (0, the model alone, is always tried), got {:?}",
                    prior.betas
                );
            }
            if !self.validation {
                anyhow::bail!(
                    "configuration key `evaluate.item_age_prior`: its weight is chosen on the validation split: \
                     set `evaluate.validation = true` (and `encode.validation = true`)"
                );
            }
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
            users: None,
            item_age_prior: None,
        }
    }
}

/// `[ablation]` of a pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AblationConfig {
    /// Seeds every variant is trained with. Default: the pipeline's seed.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Training overrides for every run of the grid (e.g. fewer epochs).
    #[serde(default)]
    pub train: serde_json::Map<String, serde_json::Value>,
    /// Cut-off of the reported metrics. Default 50.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Bootstrap resamples of the paired differences. Default 1000.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
    /// The variant shipped instead of the baseline, when validation picked one: its test
    /// numbers are reported beside the baseline's. Default: none (the baseline is shipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped: Option<String>,
    pub variants: Vec<Variant>,
}

fn default_k() -> usize {
    50
}
fn default_resamples() -> usize {
    1000
}

/// One row of the grid: what it changes against the baseline.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub model: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub train: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub encode: serde_json::Map<String, serde_json::Value>,
}

/// Checks that `name` is a plain directory name (it names a folder under the run directory):
/// not empty, no path separator, not starting with a dot (`.`, `..`, hidden names), no control
/// characters.
pub fn plain_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains(['/', '\\'])
        || name.starts_with('.')
        || name.chars().any(char::is_control)
    {
        anyhow::bail!("must be a plain directory name (no `/`, `\\` or leading `.`), got {name:?}");
    }
    Ok(())
}

/// Fails when an input of the ingest stage is missing, saying where data paths come from
/// (`RECALL_DATA_DIR`, or `data/` when it is unset) and, for the MovieLens releases
/// `cargo xtask fetch-data` knows, the command that downloads them.
pub fn check_data_present(ingest: &IngestConfig) -> Result<()> {
    let paths: Vec<std::path::PathBuf> = match ingest {
        IngestConfig::Movielens1m { dir }
        | IngestConfig::Movielens100k { dir }
        | IngestConfig::MovielensLatest { dir } => vec![dir.clone()],
        IngestConfig::Generic(g) => std::iter::once(g.interactions.clone())
            .chain(g.users.iter().map(|t| t.path.clone()))
            .chain(g.items.iter().map(|t| t.path.clone()))
            .collect(),
        IngestConfig::Synthetic(_) => Vec::new(),
    };
    match paths.iter().find(|p| !p.exists()) {
        Some(missing) => Err(anyhow::anyhow!(missing_data(missing))),
        None => Ok(()),
    }
}

fn missing_data(path: &Path) -> String {
    let set = std::env::var(DATA_DIR_VAR).ok();
    let root = std::path::PathBuf::from(set.clone().unwrap_or_else(|| String::from("data")));
    let origin = match &set {
        Some(dir) => format!("{DATA_DIR_VAR} (set to {dir:?})"),
        None => format!("{DATA_DIR_VAR}, which is unset, so `data/`"),
    };
    let mut message = format!(
        "{} does not exist. The shipped pipelines read their datasets under {origin}: set {DATA_DIR_VAR} to the \
         directory that holds the dataset's folder",
        path.display()
    );
    let dataset = path
        .strip_prefix(&root)
        .ok()
        .and_then(|rest| rest.components().next())
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    if let Some(name) = dataset.filter(|n| ["ml-1m", "ml-100k"].contains(&n.as_str())) {
        message.push_str(&format!(
            ", or run `cargo xtask fetch-data {name}` to download it from GroupLens (checked, converted) into {}",
            root.join(&name).display()
        ));
    }
    message
}

/// Replaces `${RECALL_DATA_DIR}` and `$RECALL_DATA_DIR` with the variable's value (or `data`).
fn expand_data_dir(text: &str) -> String {
    let dir = std::env::var(DATA_DIR_VAR).unwrap_or_else(|_| String::from("data"));
    text.replace("${RECALL_DATA_DIR}", &dir)
        .replace("$RECALL_DATA_DIR", &dir)
}

/// Parses pipeline text; `origin` names the file in errors.
pub fn parse(text: &str, origin: &Path) -> Result<PipelineConfig> {
    let config: PipelineConfig = toml::from_str(&expand_data_dir(text))
        .with_context(|| format!("{} is not a valid pipeline file", origin.display()))?;
    if let Some(engine) = &config.engine {
        let device = engine
            .get("device")
            .map_or_else(|| "\"cpu\"".to_owned(), ToString::to_string);
        anyhow::bail!(
            "{}: `[engine]` was renamed: write `device = {device}` at the top of the file (the candle device \
             of the computing stages)",
            origin.display()
        );
    }
    plain_name(&config.name).with_context(|| format!("{}: key `name`", origin.display()))?;
    config
        .data
        .validate()
        .with_context(|| format!("{}: [data]", origin.display()))?;
    // Before any stage: a pipeline that needs an engine this build lacks says how to build it.
    if let Some(why) = config.data.unbuilt() {
        anyhow::bail!("{}: {why}", origin.display());
    }
    // Each model writes train/<name>/, export/<name>/ and its result rows: a name must be a
    // directory name of its own, and one per entry.
    for (i, entry) in config.models.iter().enumerate() {
        plain_name(&entry.name).with_context(|| {
            format!(
                "{}: [[models]] entry {} key `name`",
                origin.display(),
                i + 1
            )
        })?;
        if let Some(j) = config.models[..i].iter().position(|m| m.name == entry.name) {
            anyhow::bail!(
                "{}: [[models]] entries {} and {} are both named {:?}: each model writes train/<name>/ and \
                 export/<name>/, so give each entry a name of its own",
                origin.display(),
                j + 1,
                i + 1,
                entry.name
            );
        }
    }
    config
        .evaluate
        .validate()
        .with_context(|| format!("{}: [evaluate]", origin.display()))?;
    if config.evaluate.validation && !config.encode.validation {
        anyhow::bail!(
            "{}: `evaluate.validation = true` ranks the validation split, but `encode.validation = false` \
             holds none out: set `encode.validation = true`",
            origin.display()
        );
    }
    if config.evaluate.index && !config.export.build_index {
        anyhow::bail!(
            "{}: `evaluate.index = true` (the default) scores the serving index the export stage builds, \
             but `export.build_index = false`: set `evaluate.index = false` or build the index",
            origin.display()
        );
    }
    config
        .export
        .validate()
        .with_context(|| format!("{}: [export]", origin.display()))?;
    config
        .warm_start_run()
        .with_context(|| format!("{}: [[models]] train.init_from", origin.display()))?;
    // Extending an earlier index needs every model to come from that run.
    if config.export.extend_index
        && let Some(entry) = config.models.iter().find(|m| m.train.init_from.is_none())
    {
        anyhow::bail!(
            "{}: `export.extend_index = true` adds new items to the serving index of the run \
             `train.init_from` names, but model {:?} has no `train.init_from`: warm-start every \
             model from the earlier run, or drop extend_index",
            origin.display(),
            entry.name
        );
    }
    // Impossible model settings fail here, before any stage runs, with the key as the file
    // spells it: `[[models]] "youtubednn": configuration key `model.temperature`: ...`.
    for entry in &config.models {
        entry.train.validate_for(&entry.model).with_context(|| {
            format!(
                "{}: [[models]] entry name = {:?}",
                origin.display(),
                entry.name
            )
        })?;
    }
    Ok(config)
}

impl PipelineConfig {
    /// The earlier run the models' `train.init_from` name (a warm start), whose encoding the
    /// encode stage grows: one run for the whole pipeline, since every model reads one
    /// encoding. Models without `init_from` train from scratch on the same grown encoding.
    pub fn warm_start_run(&self) -> Result<Option<&Path>> {
        let mut run: Option<(&str, &Path)> = None;
        for entry in &self.models {
            let Some(init) = &entry.train.init_from else {
                continue;
            };
            plain_name(&init.model)
                .with_context(|| format!("model {:?}: key `train.init_from.model`", entry.name))?;
            if init.run.as_os_str().is_empty() {
                anyhow::bail!(
                    "model {:?}: `train.init_from.run` is empty: name the earlier run's directory \
                     (runs/<its pipeline's name>)",
                    entry.name
                );
            }
            match run {
                Some((first, path)) if path != init.run => anyhow::bail!(
                    "models {first:?} and {:?} start from different runs ({} and {}): the \
                     pipeline grows one run's vocabularies, so start every model from the same \
                     run",
                    entry.name,
                    path.display(),
                    init.run.display()
                ),
                Some(_) => {}
                None => run = Some((&entry.name, &init.run)),
            }
        }
        Ok(run.map(|(_, path)| path))
    }
}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pipeline file {}", path.display()))?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_pipeline_parses() {
        let dir = crate::project_root().join("pipelines");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                match load(&path) {
                    Ok(_) => {}
                    // A pipeline for an engine this build leaves out is refused, with the
                    // command that builds it.
                    Err(e)
                        if (!cfg!(feature = "datafusion")
                            && format!("{e:#}").contains("cargo xtask-engine"))
                            || (!cfg!(feature = "ballista")
                                && format!("{e:#}").contains("cargo xtask-cluster")) => {}
                    Err(e) => panic!("{}: {e:#}", path.display()),
                }
                n += 1;
            }
        }
        assert!(
            n >= 3,
            "expected the shipped pipelines in {}",
            dir.display()
        );
    }

    #[test]
    fn an_engine_this_build_lacks_is_refused_before_any_stage_with_its_build_command() {
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[data]\nengine = \"datafusion\"\n";
        match parse(text, Path::new("p.toml")) {
            Ok(config) => {
                assert!(cfg!(feature = "datafusion"));
                assert_eq!(config.data.engine, recall_engine::Engine::Datafusion);
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(!cfg!(feature = "datafusion"));
                assert!(
                    e.contains("p.toml") && e.contains("cargo xtask-engine pipeline"),
                    "{e}"
                );
            }
        }
        let text =
            "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[data]\nengine = \"spark\"\n";
        let e = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(e.contains("spark") && e.contains("datafusion"), "{e}");
    }

    #[test]
    fn scoring_an_index_that_export_does_not_build_is_refused() {
        let text =
            "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[export]\nbuild_index = false\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(
            err.contains("p.toml")
                && err.contains("evaluate.index")
                && err.contains("export.build_index"),
            "{err}"
        );
        let text = format!("{text}[evaluate]\nindex = false\n");
        parse(&text, Path::new("p.toml")).unwrap();
        // Candidates through an index that is not built: refused at load, with the key.
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[evaluate]\nindex = false\n\
                    [export]\nbuild_index = false\ncandidates = \"index\"\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(
            err.contains("p.toml") && err.contains("export.candidates"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[encode]\nmax_lenn = 3\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("p.toml") && err.contains("max_lenn"), "{err}");
        assert!(err.contains("line 6"), "{err}");
    }

    #[test]
    fn a_wrong_type_and_a_missing_seed_are_named() {
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\nusers = \"many\"\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("line 5") && err.contains("\"many\""), "{err}");
        let text = "name = \"x\"\n[ingest.synthetic]\nseed = 1\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("seed"), "{err}");
    }

    #[test]
    fn an_impossible_model_setting_names_the_entry_and_the_key_as_written() {
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[[models]]\nname = \"yt\"\n\
                    model = { kind = \"youtubednn\", temperature = 0.0 }\ntrain = {}\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(
            err.contains("p.toml")
                && err.contains("[[models]]")
                && err.contains("\"yt\"")
                && err.contains("`model.temperature`")
                && !err.contains("train.model"),
            "{err}"
        );
        let text = text
            .replace("temperature = 0.0", "temperature = 0.1")
            .replace("train = {}", "train = { lr = -1.0 }");
        let err = format!("{:#}", parse(&text, Path::new("p.toml")).unwrap_err());
        assert!(
            err.contains("\"yt\"") && err.contains("`train.lr`"),
            "{err}"
        );
    }

    /// Two entries with one name would overwrite each other's train/, export/ and results;
    /// a name with a path in it would write outside the stage directory. Both are refused at
    /// load, with the entries named.
    #[test]
    fn model_names_must_be_unique_plain_directory_names() {
        let entry = |name: &str| {
            format!(
                "[[models]]\nname = {name:?}\nmodel = {{ kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }}\ntrain = {{}}\n"
            )
        };
        let head = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n";
        let text = format!("{head}{}{}{}", entry("a"), entry("b"), entry("a"));
        let err = format!("{:#}", parse(&text, Path::new("p.toml")).unwrap_err());
        assert!(
            err.contains("p.toml") && err.contains("entries 1 and 3") && err.contains("\"a\""),
            "{err}"
        );
        for bad in ["../escape", "a/b", ".hidden", "", "..", "a\\b"] {
            let text = format!("{head}{}", entry(bad));
            let err = format!("{:#}", parse(&text, Path::new("p.toml")).unwrap_err());
            assert!(
                err.contains("[[models]] entry 1 key `name`")
                    && err.contains("plain directory name"),
                "{bad}: {err}"
            );
        }
        parse(
            &format!("{head}{}{}", entry("a"), entry("b-2")),
            Path::new("p.toml"),
        )
        .unwrap();
    }

    #[test]
    fn validation_metrics_need_a_validation_split() {
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[encode]\nvalidation = false\n\
                    [evaluate]\nvalidation = true\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("encode.validation"), "{err}");
        let text = "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n[evaluate]\nseen_filter = [\"newest\"]\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("newest") && err.contains("recent"), "{err}");
    }

    /// A missing dataset says where the path came from and how to get the data, not only
    /// `cannot stat`.
    #[test]
    fn a_missing_dataset_names_the_variable_and_the_fetch_command() {
        let text = "name = \"x\"\nseed = 1\n[ingest.generic]\n\
                    interactions = \"${RECALL_DATA_DIR}/ml-1m/no-such-file.parquet\"\n\
                    user_column = \"u\"\nitem_column = \"i\"\norder_column = \"t\"\n";
        let config = parse(text, Path::new("p.toml")).unwrap();
        let err = format!("{:#}", check_data_present(&config.ingest).unwrap_err());
        assert!(
            err.contains("no-such-file.parquet does not exist")
                && err.contains(DATA_DIR_VAR)
                && err.contains("cargo xtask fetch-data ml-1m"),
            "{err}"
        );
        let synthetic = parse(
            "name = \"x\"\nseed = 1\n[ingest.synthetic]\nseed = 1\n",
            Path::new("p.toml"),
        )
        .unwrap();
        check_data_present(&synthetic.ingest).unwrap();
    }

    #[test]
    fn an_unknown_source_lists_the_known_ones() {
        let text = "name = \"x\"\nseed = 1\n[ingest.ml-2m]\nseed = 1\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("ml-2m") && err.contains("synthetic"), "{err}");
    }
}
