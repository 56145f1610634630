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
    /// The same plans run by a Ballista cluster (cargo feature `ballista`): the one that
    /// `data.scheduler` names, or one started in this process (a scheduler and an executor).
    Ballista,
}

impl Engine {
    /// The name a pipeline file uses.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Datafusion => "datafusion",
            Engine::Ballista => "ballista",
        }
    }

    /// Whether this build can run the engine.
    pub fn is_built(self) -> bool {
        match self {
            Engine::Memory => true,
            Engine::Datafusion => cfg!(feature = "datafusion"),
            Engine::Ballista => cfg!(feature = "ballista"),
        }
    }

    /// The cargo alias whose build has the engine, and what its first build costs on two
    /// cores (MEASUREMENTS.md).
    fn build_command(self) -> (&'static str, &'static str) {
        match self {
            Engine::Ballista => ("cargo xtask-cluster", "about twenty"),
            Engine::Memory | Engine::Datafusion => ("cargo xtask-engine", "about ten"),
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
    /// `"memory"` (default), `"datafusion"` or `"ballista"`.
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
    /// With `engine = "ballista"`: the cluster's scheduler (`"df://host:50050"`). Default: a
    /// cluster in this process (a scheduler and one executor on localhost). Every executor
    /// must read the run directory and `spill_dir` (required with a scheduler) at the same
    /// paths as this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
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
        if let Some(url) = &self.scheduler {
            if self.engine != Engine::Ballista {
                return Err(Error::config(
                    "data.scheduler",
                    format!(
                        "only Ballista reads it, and `data.engine` is \"{}\": set `engine = \
                         \"ballista\"` or leave the key out",
                        self.engine.name()
                    ),
                ));
            }
            if scheduler_address(url).is_none() {
                return Err(Error::config(
                    "data.scheduler",
                    format!(
                        "{url:?} is not a scheduler address: write \"df://host:port\" \
                         (\"df://localhost:50050\"), or leave the key out for a cluster in \
                         this process"
                    ),
                ));
            }
            if self.spill_dir.is_none() {
                return Err(Error::config(
                    "data.spill_dir",
                    "with `data.scheduler` set, name a directory every executor reads at the \
                     same path (the plans' small tables go there; this machine's temporary \
                     directory is not theirs)",
                ));
            }
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
                     `engine = \"datafusion\"` (or \"ballista\") or leave the key out",
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
            let (command, minutes) = self.engine.build_command();
            format!(
                "`[data] engine = \"{}\"` needs a build with the `{}` cargo feature, which the \
                 default build leaves out: run the pipeline with `{command} pipeline ...` (the \
                 same command line; its first build takes {minutes} more minutes on two \
                 cores), or set `engine = \"memory\"`",
                self.engine.name(),
                self.engine.name()
            )
        })
    }
}

/// The scheduler's `host:port` in a `df://host:port` address (Ballista's form; the port is
/// required, so an address means one thing).
pub fn scheduler_address(url: &str) -> Option<(&str, u16)> {
    let (host, port) = url.strip_prefix("df://")?.split_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && !host.contains('/') && port > 0).then_some((host, port))
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
    fn a_scheduler_is_a_df_address_and_only_ballista_reads_it() {
        assert_eq!(
            scheduler_address("df://node-1:50050"),
            Some(("node-1", 50050))
        );
        for bad in [
            "node-1:50050",
            "df://node-1",
            "df://:50050",
            "df://h:0",
            "df://h:port",
        ] {
            assert_eq!(scheduler_address(bad), None, "{bad}");
        }
        let data = DataConfig {
            engine: Engine::Ballista,
            scheduler: Some("http://node-1:50050".into()),
            ..DataConfig::default()
        };
        let e = data.validate().unwrap_err().to_string();
        assert!(
            e.contains("data.scheduler") && e.contains("df://host:port"),
            "{e}"
        );
        let data = DataConfig {
            engine: Engine::Datafusion,
            scheduler: Some("df://node-1:50050".into()),
            ..DataConfig::default()
        };
        let e = data.validate().unwrap_err().to_string();
        assert!(
            e.contains("data.scheduler") && e.contains("ballista"),
            "{e}"
        );
        let data = DataConfig {
            engine: Engine::Ballista,
            scheduler: Some("df://node-1:50050".into()),
            ..DataConfig::default()
        };
        let e = data.validate().unwrap_err().to_string();
        assert!(
            e.contains("data.spill_dir") && e.contains("every executor"),
            "{e}"
        );
        let data = DataConfig {
            spill_dir: Some("/shared/spill".into()),
            ..data
        };
        assert!(data.validate().is_ok());
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
        let cluster = DataConfig {
            engine: Engine::Ballista,
            ..DataConfig::default()
        };
        match cluster.unbuilt() {
            Some(message) => {
                assert!(!cfg!(feature = "ballista"));
                assert!(
                    message.contains("cargo xtask-cluster pipeline"),
                    "{message}"
                );
            }
            None => assert!(cfg!(feature = "ballista")),
        }
        assert_eq!(DataConfig::default().unbuilt(), None);
    }
}
