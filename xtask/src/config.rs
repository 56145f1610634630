//! Pipeline files (`pipelines/*.toml`): typed, with unknown keys rejected, and the data
//! directory taken from the environment.

use std::path::Path;

use anyhow::{Context, Result};
use recall_data::IngestConfig;
use recall_features::EncodeConfig;
use serde::{Deserialize, Serialize};

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
    #[serde(default)]
    pub encode: EncodeConfig,
    /// Models to train and evaluate (`[[models]]`); none runs the baselines only.
    #[serde(default)]
    pub models: Vec<crate::stages::train::ModelEntry>,
    #[serde(default)]
    pub evaluate: crate::stages::evaluate::EvaluateConfig,
    /// `[export]`: candidates per user, seen filtering, the serving index.
    #[serde(default)]
    pub export: recall_export::ExportConfig,
    /// `[engine]`: where the computing stages run (`device`). Default: the CPU.
    #[serde(
        default,
        skip_serializing_if = "crate::engine::EngineConfig::is_default"
    )]
    pub engine: crate::engine::EngineConfig,
    /// `[ablation]`: the grid `cargo xtask ablate` runs (ignored by `pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation: Option<crate::ablate::AblationConfig>,
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
    if config.name.is_empty() || config.name.contains(['/', '\\']) || config.name.starts_with('.') {
        anyhow::bail!(
            "{}: key `name` must be a plain directory name, got {:?}",
            origin.display(),
            config.name
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
                load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
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

    #[test]
    fn an_unknown_source_lists_the_known_ones() {
        let text = "name = \"x\"\nseed = 1\n[ingest.ml-2m]\nseed = 1\n";
        let err = format!("{:#}", parse(text, Path::new("p.toml")).unwrap_err());
        assert!(err.contains("ml-2m") && err.contains("synthetic"), "{err}");
    }
}
