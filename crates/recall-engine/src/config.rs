//! `[data]` in a pipeline file: which engine runs the encode stage, and how it may use memory,
//! disk and cores. Built in every build, so a pipeline that asks for an engine this build
//! lacks is refused before any stage runs, with the command that builds it.

use std::path::PathBuf;

use recall_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The engine that runs encode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Every row in memory (`recall-features`): the fastest path for data that fits, and the
    /// oracle the engines are checked against.
    #[default]
    Memory,
    /// DataFusion plans with a spilling sort (cargo feature `datafusion`).
    Datafusion,
}

impl Engine {
    /// The name a pipeline file uses.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Datafusion => "datafusion",
        }
    }

    /// Whether this build can run the engine.
    pub fn is_built(self) -> bool {
        match self {
            Engine::Memory => true,
            Engine::Datafusion => cfg!(feature = "datafusion"),
        }
    }
}

/// `[data]`: the engine and its limits.
///
/// ```
/// use recall_engine::config::{DataConfig, Engine};
///
/// let data: DataConfig = toml::from_str(
///     "engine = \"datafusion\"\nmemory_limit = \"4GiB\"\ntarget_partitions = 2",
/// )?;
/// assert_eq!(data.engine, Engine::Datafusion);
/// assert_eq!(data.memory_limit_bytes()?, Some(4 << 30));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `"memory"` (default) or `"datafusion"`.
    #[serde(default)]
    pub engine: Engine,
    /// The engine's memory pool (`"4GiB"`, `"512MiB"`, or bytes): past it, sorts and
    /// aggregates spill to disk. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Where the engine spills. Default: the system's temporary directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    /// Partitions (and threads) a plan runs on. Default: the machine's cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_partitions: Option<usize>,
}

impl DataConfig {
    /// Whether every key is at its default (the in-memory path).
    pub fn is_default(&self) -> bool {
        *self == DataConfig::default()
    }

    /// Checks the keys: each limit parses, and the engine's own keys are not set for the
    /// in-memory path (which would ignore them).
    pub fn validate(&self) -> Result<()> {
        self.memory_limit_bytes()?;
        if self.target_partitions == Some(0) {
            return Err(Error::config(
                "data.target_partitions",
                "must be at least 1 (leave it out for one per core)",
            ));
        }
        if self.engine == Engine::Memory {
            let set = [
                ("memory_limit", self.memory_limit.is_some()),
                ("spill_dir", self.spill_dir.is_some()),
                ("target_partitions", self.target_partitions.is_some()),
            ];
            if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                return Err(Error::config(
                    format!("data.{key}"),
                    "only the engines read it, and `data.engine` is \"memory\": set \
                     `engine = \"datafusion\"` or leave the key out",
                ));
            }
        }
        Ok(())
    }

    /// `memory_limit` in bytes.
    pub fn memory_limit_bytes(&self) -> Result<Option<u64>> {
        self.memory_limit
            .as_deref()
            .map(|text| {
                parse_bytes(text).ok_or_else(|| {
                    Error::config(
                        "data.memory_limit",
                        format!(
                            "{text:?} is not a size: write bytes or a number with KiB, MiB, \
                             GiB or TiB (\"4GiB\")"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// Why this build cannot run the configured engine, with the command that builds one
    /// that can; `None` when it can.
    pub fn unbuilt(&self) -> Option<String> {
        (!self.engine.is_built()).then(|| {
            format!(
                "`[data] engine = \"{}\"` needs a build with the `{}` cargo feature, which the \
                 default build leaves out: run the pipeline with `cargo xtask-engine pipeline ...` \
                 (the same command line; its first build takes about ten more minutes on two \
                 cores), or set `engine = \"memory\"`",
                self.engine.name(),
                self.engine.name()
            )
        })
    }
}

/// `"4GiB"`, `"512 MiB"`, `"1048576"`: binary units only, so a size means one thing.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units_only() {
        assert_eq!(parse_bytes("4GiB"), Some(4 << 30));
        assert_eq!(parse_bytes("1.5 MiB"), Some(3 << 19));
        assert_eq!(parse_bytes("1024"), Some(1024));
        for bad in ["4GB", "GiB", "-1GiB", "0", "4 gib", ""] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn engine_keys_on_the_memory_path_are_refused_by_name() {
        let data = DataConfig {
            spill_dir: Some("/tmp".into()),
            ..DataConfig::default()
        };
        let e = data.validate().unwrap_err().to_string();
        assert!(e.contains("data.spill_dir"), "{e}");
        let data = DataConfig {
            engine: Engine::Datafusion,
            memory_limit: Some("lots".into()),
            ..DataConfig::default()
        };
        let e = data.validate().unwrap_err().to_string();
        assert!(e.contains("data.memory_limit") && e.contains("lots"), "{e}");
    }

    #[test]
    fn an_engine_this_build_lacks_names_the_build_command() {
        let data = DataConfig {
            engine: Engine::Datafusion,
            ..DataConfig::default()
        };
        match data.unbuilt() {
            Some(message) => {
                assert!(!cfg!(feature = "datafusion"));
                assert!(message.contains("cargo xtask-engine pipeline"), "{message}");
            }
            None => assert!(cfg!(feature = "datafusion")),
        }
        assert_eq!(DataConfig::default().unbuilt(), None);
    }
}
