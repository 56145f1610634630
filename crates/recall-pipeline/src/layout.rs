//! The stages of a run, where each writes (`runs/<pipeline>/<stage>/`, or shared directories
//! for an ablation's data stages), and the run directory's lock. Only this crate knows the
//! layout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Raw data (or the synthetic generator) to canonical interactions/users/items Parquet.
    Ingest,
    /// Vocabularies, leave-last-out splits, histories, example age, encoded side tables.
    Encode,
    /// Every `[[models]]` entry trained (negative sampling happens here) and checkpointed.
    Train,
    /// Embeddings, candidates, weights and the serving index of every model.
    Export,
    /// Exact full-catalogue ranking of the test split for models and baselines (and, with
    /// `evaluate.index`, the same through the serving index export saved: the file users get).
    Evaluate,
    /// metrics.json, report.md and metrics.svg.
    Report,
}

impl Stage {
    /// Every stage, in the order a run executes them.
    pub const ALL: [Stage; 6] = [
        Stage::Ingest,
        Stage::Encode,
        Stage::Train,
        Stage::Export,
        Stage::Evaluate,
        Stage::Report,
    ];

    /// The stage of this name (`ingest`, ..., `report`).
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Encode => "encode",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Export => "export",
            Stage::Report => "report",
        }
    }
}

/// The lock file inside a run directory (not an output; it holds the owner's pid).
pub const LOCK_FILE: &str = ".lock";

/// An advisory lock (`flock`) on a run directory for as long as a pipeline runs in it, so a
/// scheduled job and a person cannot interleave their stages. The operating system releases it
/// when the process ends, however it ends (a kill included): a leftover file locks nothing.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(run_dir: &Path, wait: bool) -> Result<RunLock> {
        use std::io::Write as _;
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process"
                } else {
                    holder
                };
                if !wait {
                    bail!(
                        "{} is in use by another pipeline run ({holder}): wait for it to finish, \
                         or pass --wait to queue behind it",
                        run_dir.display()
                    );
                }
                tracing::info!(
                    "{} is in use by another pipeline run ({holder}); waiting for it",
                    run_dir.display()
                );
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let owner = format!(
            "pid {}: {}\n",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        file.set_len(0)
            .and_then(|()| file.write_all(owner.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(RunLock { _file: file })
    }
}

/// Where each stage writes, and which stages a run leaves out.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    dirs: [PathBuf; 6],
    /// Stages neither run nor required (the ablation skips export).
    pub skip: Vec<Stage>,
}

impl Layout {
    /// `root/<stage>/` for every stage.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_owned(),
            dirs: Stage::ALL.map(|s| root.join(s.name())),
            skip: Vec::new(),
        }
    }

    pub fn dir(&self, stage: Stage) -> &Path {
        &self.dirs[stage as usize]
    }

    /// The same layout with `stage` written to (or read from) `dir`: several runs can share
    /// their ingest and encode outputs this way.
    pub fn with_dir(mut self, stage: Stage, dir: PathBuf) -> Self {
        self.dirs[stage as usize] = dir;
        self
    }
}

/// An earlier run that a warm start (`train.init_from`) reads: its encode outputs, grown by
/// this run's encode, and its models' checkpoints.
#[derive(Debug, Clone)]
pub struct EarlierRun {
    layout: Layout,
}

impl EarlierRun {
    /// Opens `run` for the run in `this_run`, checking that it is another directory and that
    /// its encode and train stages completed (their manifests are written last).
    pub fn open(run: &Path, this_run: &Path) -> Result<Self> {
        let same = match (run.canonicalize(), this_run.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => run == this_run,
        };
        if same {
            bail!(
                "train.init_from.run = {}: that is this run's own directory, whose encode and \
                 train outputs this run replaces; give each refresh a run directory of its own \
                 (another pipeline `name`, or another --runs directory)",
                run.display()
            );
        }
        let layout = Layout::new(run);
        for stage in [Stage::Encode, Stage::Train] {
            let manifest = layout.dir(stage).join(crate::manifest::MANIFEST_FILE);
            if !manifest.is_file() {
                bail!(
                    "train.init_from.run = {}: its {} stage has not completed ({} is missing); \
                     run the earlier pipeline to the end first",
                    run.display(),
                    stage.name(),
                    manifest.display()
                );
            }
        }
        Ok(EarlierRun { layout })
    }

    /// The earlier run's encode outputs.
    pub fn encode_dir(&self) -> &Path {
        self.layout.dir(Stage::Encode)
    }

    /// The export of the earlier run's model `name` (its serving index is what
    /// `export.extend_index` extends), checked to be complete, with the files it reads.
    pub fn export_dir(&self, name: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
        let dir = self.layout.dir(Stage::Export).join(name);
        let index = dir.join(recall_export::export::INDEX_FILE);
        let files = vec![
            index.clone(),
            dir.join(format!("{}.json", recall_export::export::INDEX_FILE)),
            dir.join("item_embeddings.parquet"),
        ];
        if !dir.join(crate::manifest::MANIFEST_FILE).is_file() || !index.is_file() {
            bail!(
                "export.extend_index: the earlier run's export of {name:?} ({}) is not complete or has \
                 no serving index; run the earlier pipeline to the end with export.build_index = true",
                dir.display()
            );
        }
        Ok((dir, files))
    }

    /// The checkpoint of the earlier run's model `name`, checked to exist.
    pub fn model_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.layout.dir(Stage::Train).join(name);
        if !dir.join("model.safetensors").is_file() {
            bail!(
                "train.init_from.model = {name:?}: {} has no model.safetensors; the earlier run \
                 trained {}",
                dir.display(),
                std::fs::read_dir(self.layout.dir(Stage::Train))
                    .map(|entries| {
                        let mut names: Vec<String> = entries
                            .flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect();
                        names.sort();
                        format!("{names:?}")
                    })
                    .unwrap_or_else(|_| String::from("nothing readable"))
            );
        }
        Ok(dir)
    }
}
