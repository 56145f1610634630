//! `cargo xtask pipeline`: runs the stages of a pipeline file in order, each into
//! `runs/<name>/<stage>/`, skipping the ones whose manifest is current.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use recall_core::checksum::sha256_bytes;
use serde::Serialize;

use crate::config::{self, PipelineConfig};
use crate::manifest::{FileEntry, Manifest};

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
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

/// Deletes `.<name>.tmp-<pid>` files under `dir`: what an atomic write leaves when its process
/// is killed before the rename (the destination itself is never half-written).
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_stale_temporaries(&path);
        } else if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
        {
            tracing::debug!("removing {} left by an interrupted run", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Every file listed as an output in a stage's manifest (the next stage's inputs).
fn outputs_of(dir: &Path) -> Vec<PathBuf> {
    Manifest::read(dir)
        .map(|m| m.outputs.into_iter().map(|o| o.path).collect())
        .unwrap_or_default()
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline file.
    #[arg(long, default_value = "pipelines/default.toml")]
    config: PathBuf,
    /// Rerun this stage and every later one; earlier stages must be complete.
    #[arg(long, value_enum, conflicts_with = "only")]
    from: Option<Stage>,
    /// Rerun only this stage; earlier stages must be complete.
    #[arg(long, value_enum)]
    only: Option<Stage>,
    /// Rerun every stage even when its manifest is current.
    #[arg(long)]
    force: bool,
    /// Root of run directories.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// When another run holds the run directory, wait for it instead of failing.
    #[arg(long)]
    wait: bool,
    /// Device of the computing stages for this run (`cpu`, `cuda`, `cuda:N`), instead of the
    /// file's `engine.device`.
    #[arg(long)]
    device: Option<crate::engine::DeviceChoice>,
}

pub fn config_hash<T: Serialize>(section: &T) -> Result<String> {
    let mut bytes = serde_json::to_vec(section)?;
    bytes.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    Ok(sha256_bytes(&bytes))
}

/// The hash of a computing stage's config `section`: as [`config_hash`] on the CPU (so existing
/// runs stay current), with the device beside it on any other (results there are not
/// bit-identical to the CPU's).
fn device_hash<T: Serialize>(engine: &crate::engine::EngineConfig, section: &T) -> Result<String> {
    if engine.is_default() {
        config_hash(section)
    } else {
        config_hash(&(section, engine.device))
    }
}

/// The fault-injection variable (see `run_stage`).
pub const ABORT_BEFORE_MANIFEST: &str = "RECALL_ABORT_BEFORE_MANIFEST";

/// What happened to one stage in a run.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: Stage,
    /// True when the manifest was current and nothing ran.
    pub skipped: bool,
    pub manifest: Manifest,
}

/// Runs one stage unless its manifest is current; returns its manifest and whether it ran.
fn run_stage(
    stage: Stage,
    dir: &Path,
    hash: String,
    inputs: &[PathBuf],
    force: bool,
    body: impl FnOnce(&Path) -> Result<(Vec<PathBuf>, serde_json::Value)>,
) -> Result<StageReport> {
    let _span = tracing::info_span!("stage", stage = stage.name()).entered();
    let inputs = inputs
        .iter()
        .map(|p| FileEntry::of(p))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("stage {}: reading its inputs", stage.name()))?;
    if !force {
        if let Some(m) = Manifest::read(dir).filter(|m| m.is_current(&hash, &inputs)) {
            tracing::info!("up to date, skipped ({})", dir.display());
            return Ok(StageReport {
                stage,
                skipped: true,
                manifest: m,
            });
        }
    }
    // The stage is incomplete from here until its new manifest is written.
    let _ = std::fs::remove_file(dir.join(crate::manifest::MANIFEST_FILE));
    remove_stale_temporaries(dir);
    let start = Instant::now();
    let (outputs, stats) = body(dir).with_context(|| format!("stage {} failed", stage.name()))?;
    let seconds = start.elapsed().as_secs_f64();
    // Fault injection for tests/kill_and_resume.rs: with `RECALL_ABORT_BEFORE_MANIFEST=<stage>`
    // the process ends on the spot (no unwinding, no destructors: what SIGKILL leaves, without
    // the core file an abort could write) when that stage has written its outputs but not its
    // manifest, the moment a resumed run must not trust them.
    if std::env::var(ABORT_BEFORE_MANIFEST).is_ok_and(|s| s == stage.name()) {
        std::process::exit(137);
    }
    let manifest = Manifest {
        stage: stage.name().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config_hash: hash,
        inputs,
        outputs: outputs
            .iter()
            .map(|p| FileEntry::of(p))
            .collect::<Result<Vec<_>>>()?,
        seconds,
        stats,
    };
    manifest.write(dir)?;
    tracing::info!(
        seconds = format!("{seconds:.2}"),
        "done ({})",
        dir.display()
    );
    Ok(StageReport {
        stage,
        skipped: false,
        manifest,
    })
}

/// Runs a pipeline file with the given options.
pub fn run(args: &Args) -> Result<()> {
    let mut config = config::load(&args.config)?;
    if let Some(device) = args.device {
        config.engine.device = device;
    }
    let run_dir = args.runs.join(&config.name);
    execute_locked(
        &config,
        &Layout::new(&run_dir),
        args.from.or(args.only),
        args.only.is_some(),
        args.force,
        args.wait,
    )?;
    Ok(())
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

/// Runs `config` into `run_dir`. With `start`, stages before it must be complete and `start`
/// (and, unless `only`, every later stage) is rerun.
pub fn execute(
    config: &PipelineConfig,
    run_dir: &Path,
    start: Option<Stage>,
    only: bool,
    force: bool,
) -> Result<Vec<StageReport>> {
    execute_in(config, &Layout::new(run_dir), start, only, force)
}

/// [`execute`] with explicit stage directories. Another run holding the run directory's lock
/// makes this fail at once, or, with `wait`, wait for it.
pub fn execute_in(
    config: &PipelineConfig,
    layout: &Layout,
    start: Option<Stage>,
    only: bool,
    force: bool,
) -> Result<Vec<StageReport>> {
    execute_locked(config, layout, start, only, force, false)
}

/// [`execute_in`], waiting for another run of the same directory to finish when `wait`.
pub fn execute_locked(
    config: &PipelineConfig,
    layout: &Layout,
    start: Option<Stage>,
    only: bool,
    force: bool,
    wait: bool,
) -> Result<Vec<StageReport>> {
    let run_dir = layout.root.as_path();
    let _lock = RunLock::acquire(run_dir, wait)?;
    // Opened before any stage runs: a CUDA device a CPU build cannot use fails here.
    let device = config.engine.device.open()?;
    let resolved = toml::to_string(config)?;
    recall_core::write::write_bytes(&run_dir.join("config.toml"), resolved.as_bytes())?;
    let ingest_dir = layout.dir(Stage::Ingest).to_owned();
    let encode_dir = layout.dir(Stage::Encode).to_owned();
    let train_dir = layout.dir(Stage::Train).to_owned();
    let evaluate_dir = layout.dir(Stage::Evaluate).to_owned();
    let export_dir = layout.dir(Stage::Export).to_owned();
    let report_dir = layout.dir(Stage::Report).to_owned();
    let mut reports = Vec::new();
    for stage in Stage::ALL {
        if layout.skip.contains(&stage) {
            continue;
        }
        let selected = match start {
            None => true,
            Some(s) if only => stage == s,
            Some(s) => stage >= s,
        };
        let forced = force || start.is_some_and(|s| stage >= s);
        let report = match stage {
            _ if !selected => {
                let dir = layout.dir(stage);
                if stage < start.unwrap_or(stage) && Manifest::read(&dir).is_none() {
                    bail!(
                        "stage {} has not completed in {}: run the pipeline without --from/--only first",
                        stage.name(),
                        run_dir.display()
                    );
                }
                continue;
            }
            Stage::Ingest => {
                crate::config::check_data_present(&config.ingest)?;
                run_stage(
                    stage,
                    &ingest_dir,
                    config_hash(&config.ingest)?,
                    &config.ingest.input_files(),
                    forced,
                    |dir| {
                        let dataset = recall_data::ingest(&config.ingest)?;
                        let stats = serde_json::to_value(&dataset.stats)?;
                        tracing::info!(
                            interactions = dataset.stats.interactions,
                            users = dataset.stats.users,
                            items = dataset.stats.items,
                            duplicates_dropped = dataset.stats.duplicates_dropped,
                            "ingested {}",
                            dataset.name
                        );
                        Ok((dataset.write(dir)?, stats))
                    },
                )?
            }
            Stage::Encode => {
                let inputs: Vec<PathBuf> =
                    ["interactions.parquet", "users.parquet", "items.parquet"]
                        .iter()
                        .map(|f| ingest_dir.join(f))
                        .filter(|p| p.exists())
                        .collect();
                run_stage(
                    stage,
                    &encode_dir,
                    // The contract version too: a run directory encoded by a build of another
                    // version is encoded again, never misread.
                    config_hash(&(&config.encode, recall_core::encoded::CONTRACT_VERSION))?,
                    &inputs,
                    forced,
                    |dir| {
                        let input = recall_features::EncodeInput::read_dir(&ingest_dir)?;
                        let encoded = recall_features::encode(&input, &config.encode)?;
                        let stats = serde_json::to_value(&encoded.manifest.stats)?;
                        Ok((encoded.write(dir)?, stats))
                    },
                )?
            }
            Stage::Train => run_stage(
                stage,
                &train_dir,
                device_hash(&config.engine, &(&config.models, config.seed))?,
                &outputs_of(&encode_dir),
                forced,
                |dir| {
                    crate::stages::train::run(
                        &encode_dir,
                        dir,
                        &config.models,
                        config.seed,
                        &device,
                    )
                },
            )?,
            Stage::Evaluate => {
                // With `evaluate.index` the inputs include the index files export saved, so the
                // manifest records (with checksums) which index was scored.
                let index_dir = (config.evaluate.index && !layout.skip.contains(&Stage::Export))
                    .then_some(export_dir.as_path());
                let indexes = index_dir
                    .map(|dir| {
                        outputs_of(dir)
                            .into_iter()
                            .filter(|p| {
                                p.file_name().is_some_and(|n| {
                                    n.to_string_lossy()
                                        .starts_with(recall_export::export::INDEX_FILE)
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                run_stage(
                    stage,
                    &evaluate_dir,
                    device_hash(
                        &config.engine,
                        &(&config.evaluate, &config.models, config.seed),
                    )?,
                    &[outputs_of(&encode_dir), outputs_of(&train_dir), indexes].concat(),
                    forced,
                    |dir| {
                        crate::stages::evaluate::run(
                            crate::stages::evaluate::Inputs {
                                encode_dir: &encode_dir,
                                train_dir: &train_dir,
                                index_dir,
                            },
                            dir,
                            &config.models,
                            &config.evaluate,
                            config.seed,
                            &device,
                        )
                    },
                )?
            }
            Stage::Export => {
                let hash = device_hash(
                    &config.engine,
                    &(&config.export, &config.models, config.seed),
                )?;
                run_stage(
                    stage,
                    &export_dir,
                    hash.clone(),
                    &[outputs_of(&encode_dir), outputs_of(&train_dir)].concat(),
                    forced,
                    |dir| {
                        crate::stages::export::run(
                            &encode_dir,
                            &train_dir,
                            dir,
                            &config.models,
                            &config.export,
                            &hash,
                            &device,
                        )
                    },
                )?
            }
            Stage::Report => run_stage(
                stage,
                &report_dir,
                config_hash(&(&config.name, &config.models))?,
                // The report also reads the earlier manifests (counts, timings).
                &Stage::ALL
                    .iter()
                    .filter(|s| **s != Stage::Report && !layout.skip.contains(s))
                    .map(|s| layout.dir(*s).join(crate::manifest::MANIFEST_FILE))
                    .chain(outputs_of(&evaluate_dir))
                    .collect::<Vec<_>>(),
                forced,
                |dir| crate::report::write(config, layout, dir),
            )?,
        };
        reports.push(report);
    }
    for r in &reports {
        let m = &r.manifest;
        tracing::info!(
            stage = r.stage.name(),
            skipped = r.skipped,
            seconds = format!("{:.2}", m.seconds),
            "summary"
        );
    }
    // The gate reads the report this invocation wrote or found current; after `--only` or
    // `--from` runs that stop short of it, `metrics.json` describes older models.
    if reports.iter().any(|r| r.stage == Stage::Report) {
        crate::report::check_thresholds(config, &report_dir)?;
    } else if config.models.iter().any(|m| m.min_hit_rate_at_50.is_some()) {
        tracing::warn!(
            "min_hit_rate_at_50 not checked: the report stage was not part of this run, so {} may describe older models",
            report_dir.join("metrics.json").display()
        );
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(max_len: usize) -> PipelineConfig {
        let text = format!(
            "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 60\nitems = 40\n\
             interactions_per_user = 12\nseed = 5\n[encode]\nmax_len = {max_len}\n\
             [evaluate]\nks = [5, 10]\nbootstrap = 50\n"
        );
        crate::config::parse(&text, Path::new("tiny.toml")).unwrap()
    }

    fn ran(reports: &[StageReport]) -> Vec<&'static str> {
        reports
            .iter()
            .filter(|r| !r.skipped)
            .map(|r| r.stage.name())
            .collect()
    }

    const ALL: [&str; 6] = ["ingest", "encode", "train", "export", "evaluate", "report"];

    fn run_ran(config: &PipelineConfig, run: &Path) -> Vec<&'static str> {
        ran(&execute(config, run, None, false, false).unwrap())
    }

    #[test]
    fn unchanged_stages_are_skipped_and_changed_ones_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("t");
        assert_eq!(run_ran(&tiny(5), &run), ALL);
        let train = std::fs::read(run.join("encode/train.parquet")).unwrap();
        assert!(run_ran(&tiny(5), &run).is_empty());
        // A changed encode setting reruns encode and every stage reading its outputs.
        assert_eq!(run_ran(&tiny(3), &run), ALL[1..]);
        // An interrupted stage (no manifest) is rerun and writes the same bytes again, so the
        // stages after it stay current (the report, which shows timings, is redrawn).
        run_ran(&tiny(5), &run);
        std::fs::remove_file(run.join("encode/manifest.json")).unwrap();
        assert_eq!(run_ran(&tiny(5), &run), ["encode", "report"]);
        assert_eq!(
            std::fs::read(run.join("encode/train.parquet")).unwrap(),
            train
        );
        // A damaged output makes its stage stale.
        std::fs::write(run.join("ingest/items.parquet"), b"junk").unwrap();
        assert_eq!(run_ran(&tiny(5), &run), ["ingest", "report"]);
    }

    #[test]
    fn only_and_from_need_earlier_stages_and_force_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("t");
        let err = execute(&tiny(5), &run, Some(Stage::Encode), true, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("stage ingest has not completed"),
            "{err:#}"
        );
        run_ran(&tiny(5), &run);
        let only = execute(&tiny(5), &run, Some(Stage::Encode), true, false).unwrap();
        assert_eq!(ran(&only), ["encode"]);
        let from = execute(&tiny(5), &run, Some(Stage::Train), false, false).unwrap();
        assert_eq!(ran(&from), ALL[2..]);
    }

    /// The HitRate gate fails a run whose model is below its threshold, and only checks a
    /// report written or found current by the same invocation (never a stale one).
    #[test]
    fn the_hit_rate_gate_fails_below_its_threshold_and_never_reads_a_stale_report() {
        let text = |threshold: f64, epochs: usize| {
            format!(
                "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 60\nitems = 100\nseed = 5\n\
                 [evaluate]\nks = [10, 50]\nbootstrap = 20\n[export]\ntop_k = 10\n\
                 [[models]]\nname = \"a\"\nmodel = {{ kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }}\n\
                 train = {{ epochs = {epochs}, batch_size = 64 }}\nmin_hit_rate_at_50 = {threshold}\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("t");
        let pass = crate::config::parse(&text(0.0, 1), Path::new("g.toml")).unwrap();
        execute(&pass, &run, None, false, false).unwrap();
        // Retraining alone leaves metrics.json behind the models: not a basis for the gate.
        let strict = crate::config::parse(&text(0.999, 2), Path::new("g.toml")).unwrap();
        execute(&strict, &run, Some(Stage::Train), true, false).unwrap();
        // A run that reaches the report does check it, and fails.
        let err = execute(&strict, &run, None, false, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("regression: model `a`") && msg.contains("min_hit_rate_at_50 = 0.999"),
            "{msg}"
        );
    }

    /// A second run of the same directory is refused while the first holds it, with the
    /// directory and the other process named; once the first ends, it runs.
    #[test]
    fn a_second_run_of_the_same_directory_is_refused_while_the_first_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("t");
        let first = RunLock::acquire(&run, false).unwrap();
        let err = execute(&tiny(5), &run, None, false, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&run.display().to_string())
                && msg.contains(&format!("pid {}", std::process::id()))
                && msg.contains("--wait"),
            "{msg}"
        );
        assert!(!run.join("ingest").exists(), "nothing ran");
        drop(first);
        assert_eq!(run_ran(&tiny(5), &run), ALL);
    }

    /// A pipeline asking for CUDA on a build without it fails before any stage runs, naming
    /// the key and the build script.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cuda_device_on_a_cpu_build_fails_before_any_stage() {
        let dir = tempfile::tempdir().unwrap();
        let text = "name = \"t\"\nseed = 1\n[engine]\ndevice = \"cuda\"\n\
                    [ingest.synthetic]\nusers = 60\nitems = 40\nseed = 5\n";
        let config = crate::config::parse(text, Path::new("d.toml")).unwrap();
        let run = dir.path().join("t");
        let err = execute(&config, &run, None, false, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("engine.device = \"cuda:0\"") && msg.contains("scripts/build-cuda.sh"),
            "{msg}"
        );
        assert!(!run.join("ingest").exists(), "nothing ran");
        let bad =
            "name = \"t\"\nseed = 1\n[engine]\ndevice = \"gpu\"\n[ingest.synthetic]\nusers = 6\n";
        let err = format!(
            "{:#}",
            crate::config::parse(bad, Path::new("d.toml")).unwrap_err()
        );
        assert!(
            err.contains("d.toml") && err.contains("unknown device \"gpu\""),
            "{err}"
        );
    }

    #[test]
    fn a_k_beyond_the_catalogue_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 60\nitems = 40\nseed = 5\n\
                    [evaluate]\nks = [50]\n";
        let config = crate::config::parse(text, Path::new("k.toml")).unwrap();
        let err = execute(&config, &dir.path().join("t"), None, false, false).unwrap_err();
        assert!(format!("{err:#}").contains("`evaluate.ks`"), "{err:#}");
    }

    /// A catalogue of one rankable item cannot be ranked at the default validation K: the
    /// error names the setting that asks for it (`train.validate_k`), not an internal `k`.
    #[test]
    fn one_rankable_item_names_the_setting_that_asks_for_more() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("log.csv");
        let mut rows = String::from("u,i,t\n");
        for u in 1..=6 {
            for t in 1..=5 {
                rows.push_str(&format!("{u},7,{t}\n"));
            }
        }
        std::fs::write(&csv, rows).unwrap();
        let text = format!(
            "name = \"t\"\nseed = 1\n[ingest.generic]\ninteractions = {:?}\nuser_column = \"u\"\n\
             item_column = \"i\"\norder_column = \"t\"\n[evaluate]\nks = [1]\nbootstrap = 10\n\
             [[models]]\nname = \"a\"\nmodel = {{ kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }}\n\
             train = {{ epochs = 1, batch_size = 4 }}\n",
            csv.display().to_string()
        );
        let config = crate::config::parse(&text, Path::new("one.toml")).unwrap();
        let err = execute(&config, &dir.path().join("t"), None, false, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("`train.validate_k`") && msg.contains("at most 1"),
            "{msg}"
        );
        assert!(!msg.contains("configuration key `k`"), "{msg}");
    }

    #[test]
    fn a_second_model_mines_hard_negatives_from_an_earlier_one() {
        let text = |from: &str| {
            format!(
                "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 80\nitems = 60\nseed = 5\n\
                 [evaluate]\nks = [5, 10]\nbootstrap = 20\n[export]\ntop_k = 10\n\
                 [[models]]\nname = \"a\"\nmodel = {{ kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }}\n\
                 train = {{ epochs = 1, batch_size = 64 }}\n\
                 [[models]]\nname = \"b\"\nmodel = {{ kind = \"dssm\", embedding_dim = 8, user_tower = [8], item_tower = [8] }}\n\
                 train = {{ loss = \"sampled-softmax\", negatives = 4, epochs = 1, batch_size = 64, \
                 hard_negatives = {{ from = \"{from}\", band = [2, 20], count = 2 }} }}\n"
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::parse(&text("a"), Path::new("h.toml")).unwrap();
        execute(&config, &dir.path().join("t"), None, false, false).unwrap();
        let metrics = std::fs::read_to_string(dir.path().join("t/report/metrics.json")).unwrap();
        assert!(metrics.contains("\"model\": \"b\""), "{metrics}");
        let config = crate::config::parse(&text("zzz"), Path::new("h.toml")).unwrap();
        let err = execute(&config, &dir.path().join("u"), None, false, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("no earlier model has that name"),
            "{err:#}"
        );
    }
}
