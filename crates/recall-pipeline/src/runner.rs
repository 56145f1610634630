//! Runs the stages of a pipeline in order, each into its directory of the [`Layout`],
//! skipping the ones whose manifest is current; knows no stage's internals (each is a call
//! into [`crate::stages`] returning its files and typed report).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::device::DeviceChoice;
use crate::layout::{EarlierRun, Layout, RunLock, Stage};
use crate::manifest::{FileEntry, Manifest, config_hash};
use crate::progress::{LogLines, ProgressFor};
use crate::stages;

/// Every file listed as an output in a stage's manifest (the next stage's inputs).
fn outputs_of(dir: &Path) -> Vec<PathBuf> {
    Manifest::read(dir)
        .map(|m| m.outputs.into_iter().map(|o| o.path).collect())
        .unwrap_or_default()
}

/// The hash of a computing stage's config `section`: as [`config_hash`] on the CPU (so existing
/// runs stay current), with the device beside it on any other (results there are not
/// bit-identical to the CPU's).
fn device_hash<T: Serialize>(device: DeviceChoice, section: &T) -> Result<String> {
    if device == DeviceChoice::Cpu {
        config_hash(section)
    } else {
        config_hash(&(section, device))
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
fn run_stage<R: Serialize>(
    stage: Stage,
    dir: &Path,
    hash: String,
    inputs: &[PathBuf],
    force: bool,
    body: impl FnOnce(&Path) -> Result<(Vec<PathBuf>, R)>,
) -> Result<StageReport> {
    let _span = tracing::info_span!("stage", stage = stage.name()).entered();
    let inputs = inputs
        .iter()
        .map(|p| FileEntry::of(p))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("stage {}: reading its inputs", stage.name()))?;
    if !force && let Some(m) = Manifest::read(dir).filter(|m| m.is_current(&hash, &inputs)) {
        tracing::info!("up to date, skipped ({})", dir.display());
        return Ok(StageReport {
            stage,
            skipped: true,
            manifest: m,
        });
    }
    // The stage is incomplete from here until its new manifest is written. (What a killed
    // run left under the run directory was removed when this run took its lock.)
    let _ = std::fs::remove_file(dir.join(crate::manifest::MANIFEST_FILE));
    let start = Instant::now();
    let (outputs, report) = body(dir).with_context(|| format!("stage {} failed", stage.name()))?;
    let stats = serde_json::to_value(&report)?;
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

/// How a run goes: where it starts, what it forces, whether it waits for another run of the
/// same directory, how training shows its progress.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Stages before it must be complete; it (and, unless `only`, every later stage) reruns.
    pub start: Option<Stage>,
    pub only: bool,
    /// Rerun every stage even when its manifest is current.
    pub force: bool,
    /// Queue behind another run of the same directory instead of failing.
    pub wait: bool,
    pub progress: &'a dyn ProgressFor,
}

impl std::fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("start", &self.start)
            .field("only", &self.only)
            .field("force", &self.force)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            start: None,
            only: false,
            force: false,
            wait: false,
            progress: &LogLines,
        }
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
/// makes this fail at once.
pub fn execute_in(
    config: &PipelineConfig,
    layout: &Layout,
    start: Option<Stage>,
    only: bool,
    force: bool,
) -> Result<Vec<StageReport>> {
    execute_with(
        config,
        layout,
        &Options {
            start,
            only,
            force,
            ..Options::default()
        },
    )
}

/// Runs `config` into `layout` as `options` say.
pub fn execute_with(
    config: &PipelineConfig,
    layout: &Layout,
    options: &Options<'_>,
) -> Result<Vec<StageReport>> {
    let Options {
        start,
        only,
        force,
        wait,
        progress,
    } = *options;
    let run_dir = layout.root.as_path();
    let _lock = RunLock::acquire(run_dir, wait)?;
    // Under the lock nothing else writes here: every temporary is what a killed run left,
    // wherever it was writing (a stage's directory, the model cards in export/, config.toml).
    recall_core::write::remove_stale_temporaries(run_dir);
    // Opened before any stage runs: a CUDA device a CPU build cannot use fails here.
    let device = config.device.open()?;
    let resolved = toml::to_string(config)?;
    recall_core::write::write_bytes(&run_dir.join("config.toml"), resolved.as_bytes())?;
    let ingest_dir = layout.dir(Stage::Ingest).to_owned();
    let encode_dir = layout.dir(Stage::Encode).to_owned();
    let train_dir = layout.dir(Stage::Train).to_owned();
    let evaluate_dir = layout.dir(Stage::Evaluate).to_owned();
    let export_dir = layout.dir(Stage::Export).to_owned();
    let report_dir = layout.dir(Stage::Report).to_owned();
    // A warm start's earlier run, checked before any stage runs.
    let earlier = config
        .warm_start_run()?
        .map(|run| EarlierRun::open(run, run_dir))
        .transpose()?;
    // The earlier exports whose indexes `export.extend_index` extends, by model: checked here,
    // before any stage runs.
    let mut earlier_exports = Vec::new();
    let mut earlier_files = Vec::new();
    if config.export.extend_index {
        for entry in &config.models {
            if let (Some(init), Some(run)) = (&entry.train.init_from, &earlier) {
                let (dir, files) = run.export_dir(&init.model)?;
                earlier_exports.push((entry.name.clone(), dir));
                earlier_files.extend(files);
            }
        }
    }
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
                if stage < start.unwrap_or(stage) && Manifest::read(dir).is_none() {
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
                    |dir| stages::ingest::run(&config.ingest, &config.data, dir),
                )?
            }
            Stage::Encode => {
                let grow_from = earlier.as_ref().map(EarlierRun::encode_dir);
                run_stage(
                    stage,
                    &encode_dir,
                    // The contract version too: a run directory encoded by a build of another
                    // version is encoded again, never misread. A grown encoding's inputs
                    // include the earlier run's files, so it is redone when they change.
                    config_hash(&(
                        &config.encode,
                        recall_core::encoded::CONTRACT_VERSION,
                        grow_from,
                    ))?,
                    &[
                        stages::encode::inputs(&ingest_dir),
                        grow_from.map(outputs_of).unwrap_or_default(),
                    ]
                    .concat(),
                    forced,
                    |dir| {
                        stages::encode::run(
                            &ingest_dir,
                            &config.encode,
                            &config.data,
                            grow_from,
                            dir,
                        )
                    },
                )?
            }
            Stage::Train => {
                // The earlier checkpoint of each warm-started model, by model name.
                let mut init_dirs = Vec::new();
                for entry in &config.models {
                    if let (Some(init), Some(run)) = (&entry.train.init_from, &earlier) {
                        init_dirs.push((entry.name.clone(), run.model_dir(&init.model)?));
                    }
                }
                let checkpoints = init_dirs
                    .iter()
                    .flat_map(|(_, d)| [d.join("model.safetensors"), d.join("config.json")]);
                run_stage(
                    stage,
                    &train_dir,
                    device_hash(config.device, &(&config.models, config.seed))?,
                    &outputs_of(&encode_dir)
                        .into_iter()
                        .chain(checkpoints)
                        .collect::<Vec<_>>(),
                    forced,
                    |dir| {
                        stages::train::run(
                            stages::train::Inputs {
                                encode_dir: &encode_dir,
                                models: &config.models,
                                init_dirs: &init_dirs,
                                earlier_encode: earlier.as_ref().map(EarlierRun::encode_dir),
                                seed: config.seed,
                                device: &device,
                                progress,
                            },
                            dir,
                        )
                    },
                )?
            }
            Stage::Export => {
                let hash = device_hash(
                    config.device,
                    &(&config.export, &config.models, config.seed),
                )?;
                run_stage(
                    stage,
                    &export_dir,
                    hash.clone(),
                    &[
                        outputs_of(&encode_dir),
                        outputs_of(&train_dir),
                        earlier_files.clone(),
                    ]
                    .concat(),
                    forced,
                    |dir| {
                        stages::export::run(
                            stages::export::Inputs {
                                encode_dir: &encode_dir,
                                train_dir: &train_dir,
                                models: &config.models,
                                config: &config.export,
                                config_hash: &hash,
                                device: &device,
                                earlier_exports: &earlier_exports,
                            },
                            dir,
                        )
                    },
                )?
            }
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
                        config.device,
                        &(&config.evaluate, &config.models, config.seed),
                    )?,
                    &[outputs_of(&encode_dir), outputs_of(&train_dir), indexes].concat(),
                    forced,
                    |dir| {
                        stages::evaluate::run(
                            stages::evaluate::Inputs {
                                encode_dir: &encode_dir,
                                train_dir: &train_dir,
                                index_dir,
                                models: &config.models,
                                config: &config.evaluate,
                                seed: config.seed,
                                device: &device,
                            },
                            dir,
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
                |dir| stages::report::run(config, layout, dir),
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
        stages::report::check_thresholds(config, &report_dir)?;
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
    use crate::layout::RunLock;

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
        let text = "name = \"t\"\nseed = 1\ndevice = \"cuda\"\n\
                    [ingest.synthetic]\nusers = 60\nitems = 40\nseed = 5\n";
        let config = crate::config::parse(text, Path::new("d.toml")).unwrap();
        let run = dir.path().join("t");
        let err = execute(&config, &run, None, false, false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("device = \"cuda:0\"") && msg.contains("scripts/build-cuda.sh"),
            "{msg}"
        );
        assert!(!run.join("ingest").exists(), "nothing ran");
        let bad = "name = \"t\"\nseed = 1\ndevice = \"gpu\"\n[ingest.synthetic]\nusers = 6\n";
        let err = format!(
            "{:#}",
            crate::config::parse(bad, Path::new("d.toml")).unwrap_err()
        );
        assert!(
            err.contains("d.toml") && err.contains("unknown device \"gpu\""),
            "{err}"
        );
        // The old section is refused with the new key spelled out.
        let old =
            "name = \"t\"\nseed = 1\n[engine]\ndevice = \"cuda:1\"\n[ingest.synthetic]\nseed = 6\n";
        let err = format!(
            "{:#}",
            crate::config::parse(old, Path::new("d.toml")).unwrap_err()
        );
        assert!(
            err.contains("`[engine]` was renamed") && err.contains("device = \"cuda:1\""),
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

    /// A daily refresh: day 1 encodes the data before a cut and trains; day 2 encodes all of
    /// it, grown from day 1's files, and starts one model from day 1's weights beside one
    /// trained from scratch. The report counts carried and new ids; a retrained day 1 redoes
    /// day 2's training; its own directory, a run that never trained, or an unknown model name
    /// are refused naming the key.
    #[test]
    fn a_warm_start_grows_the_earlier_run_and_reports_what_it_carried() {
        let dir = tempfile::tempdir().unwrap();
        let model = "model = { kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }";
        let day = |name: &str, before: &str, models: &str| {
            format!(
                "name = \"{name}\"\nseed = 1\n[ingest.synthetic]\nusers = 120\nitems = 80\nseed = 5\n\
                 [encode]\n{before}\n[evaluate]\nks = [5, 10]\nbootstrap = 20\nindex = false\n\
                 [export]\ntop_k = 10\nbuild_index = false\n{models}"
            )
        };
        // The synthetic users start over the two years from 2000-12-01: cut at 2002-01-01.
        let day1 = day(
            "day1",
            "before = 1009843200",
            &format!(
                "[[models]]\nname = \"ytdnn\"\n{model}\ntrain = {{ epochs = 1, batch_size = 64 }}\n"
            ),
        );
        let config = crate::config::parse(&day1, Path::new("day1.toml")).unwrap();
        execute(&config, &dir.path().join("day1"), None, false, false).unwrap();
        let run1 = dir.path().join("day1");
        let day2 = |init_run: &Path, init_model: &str| {
            day(
                "day2",
                "",
                &format!(
                    "[[models]]\nname = \"warm\"\n{model}\ntrain = {{ epochs = 1, batch_size = 64, \
                     init_from = {{ run = {:?}, model = \"{init_model}\" }} }}\n\
                     [[models]]\nname = \"incremental\"\n{model}\ntrain = {{ epochs = 1, batch_size = 64, \
                     init_from = {{ run = {:?}, model = \"{init_model}\", replay = 0.2 }} }}\n\
                     [[models]]\nname = \"scratch\"\n{model}\ntrain = {{ epochs = 1, batch_size = 64 }}\n",
                    init_run.display().to_string(),
                    init_run.display().to_string()
                ),
            )
        };
        let config = crate::config::parse(&day2(&run1, "ytdnn"), Path::new("day2.toml")).unwrap();
        let run2 = dir.path().join("day2");
        execute(&config, &run2, None, false, false).unwrap();
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run2.join("report/metrics.json")).unwrap())
                .unwrap();
        let warm = &metrics["warm_start"];
        let grown = &warm["vocabularies"];
        let day1_encode = Manifest::read(&run1.join("encode")).unwrap();
        assert_eq!(grown["users_carried"], day1_encode.stats["users"], "{warm}");
        assert!(
            grown["items_new"].as_u64().unwrap() + grown["users_new"].as_u64().unwrap() > 0,
            "{warm}"
        );
        assert!(
            warm["models"]["warm"]["rows_carried"].as_u64().unwrap() > 0,
            "{warm}"
        );
        assert!(warm["models"].get("scratch").is_none(), "{warm}");
        // The incremental model trains each epoch on the examples day 1 never trained on (the
        // new users' and the targets past each user's day-1 training prefix) and a fifth of
        // the others; the warm model, on every example.
        let replay = &warm["replay"]["incremental"];
        let (new, earlier) = (
            replay["new_units"].as_u64().unwrap(),
            replay["earlier_units"].as_u64().unwrap(),
        );
        let day2_train = Manifest::read(&run2.join("encode")).unwrap().stats["train_examples"]
            .as_u64()
            .unwrap();
        assert!(
            new > 0 && earlier > 0 && new + earlier == day2_train,
            "{warm} {day2_train}"
        );
        assert_eq!(
            replay["replayed_per_epoch"].as_u64().unwrap(),
            (earlier as f64 * 0.2).round() as u64,
            "{warm}"
        );
        assert!(warm["replay"].get("warm").is_none(), "{warm}");
        let history = |m: &str| -> serde_json::Value {
            serde_json::from_slice(
                &std::fs::read(run2.join("train").join(m).join("history.json")).unwrap(),
            )
            .unwrap()
        };
        let speed = |m: &str| {
            let h = history(m);
            h["examples_per_second"].as_f64().unwrap() * h["train_seconds"].as_f64().unwrap()
        };
        // Examples trained (speed x time): the incremental model's epoch is its share only.
        assert!(
            (speed("incremental") - (new + replay["replayed_per_epoch"].as_u64().unwrap()) as f64)
                .abs()
                < 1.0,
            "{}",
            history("incremental")
        );
        assert!(
            (speed("warm") - day2_train as f64).abs() < 1.0,
            "{}",
            history("warm")
        );
        let report = std::fs::read_to_string(run2.join("report/report.md")).unwrap();
        assert!(report.contains("## Warm start"), "{report}");
        assert!(report.contains(" new + "), "{report}");

        // Day 1 trained longer: day 2's training is redone (its encoding, the same, is not).
        let longer = day1.replace("epochs = 1", "epochs = 2");
        let config1 = crate::config::parse(&longer, Path::new("day1.toml")).unwrap();
        execute(&config1, &run1, None, false, false).unwrap();
        let reports = execute(&config, &run2, None, false, false).unwrap();
        assert_eq!(
            ran(&reports)[..2],
            ["train", "export"],
            "{:?}",
            ran(&reports)
        );

        for (text, needle) in [
            (day2(&run2, "ytdnn"), "own directory"),
            (
                day2(&dir.path().join("nowhere"), "ytdnn"),
                "has not completed",
            ),
            (day2(&run1, "other"), "\"ytdnn\""),
        ] {
            let config = crate::config::parse(&text, Path::new("day2.toml")).unwrap();
            let err = format!(
                "{:#}",
                execute(&config, &run2, None, false, false).unwrap_err()
            );
            assert!(err.contains("init_from") && err.contains(needle), "{err}");
        }
    }

    /// `evaluate.users` ranks a fixed sample: those users' per-user results are the full
    /// evaluation's for the same users, and the report says it is a sample.
    #[test]
    fn a_user_sample_scores_its_users_as_the_full_evaluation_does() {
        let dir = tempfile::tempdir().unwrap();
        let text = |users: &str| {
            format!(
                "name = \"s\"\nseed = 1\n[ingest.synthetic]\nusers = 150\nitems = 400\nseed = 5\n\
                 [evaluate]\nks = [10, 50]\nbootstrap = 20\nindex = false\n{users}\n\
                 [export]\ntop_k = 10\nbuild_index = false\n\
                 [[models]]\nname = \"ytdnn\"\nmodel = {{ kind = \"youtubednn\", embedding_dim = 8, user_tower = [8] }}\n\
                 train = {{ epochs = 1, batch_size = 64 }}\n"
            )
        };
        let per_user = |run: &str| {
            let path = dir
                .path()
                .join(run)
                .join("s/evaluate/ytdnn/per_user_test_none.parquet");
            recall_core::Table::read(&path)
                .unwrap()
                .nullable_floats("hit_rate@50")
                .unwrap()
        };
        for (run, users) in [("full", ""), ("sample", "users = 40")] {
            let config = crate::config::parse(&text(users), Path::new("s.toml")).unwrap();
            execute(&config, &dir.path().join(run).join("s"), None, false, false).unwrap();
        }
        let (full, sample) = (per_user("full"), per_user("sample"));
        assert_eq!(sample.len(), 40);
        let rows = recall_eval::split::fixed_sample_rows(full.len(), 40);
        let picked: Vec<_> = rows.iter().map(|&r| full[r]).collect();
        assert_eq!(sample, picked);
        let results =
            crate::stages::evaluate::EvaluateReport::read(&dir.path().join("sample/s/evaluate"))
                .unwrap();
        assert_eq!(
            (results.test_users, results.test_users_sampled_from),
            (40, Some(full.len()))
        );
        let report = std::fs::read_to_string(dir.path().join("sample/s/report/report.md")).unwrap();
        assert!(report.contains("a fixed sample of 150"), "{report}");
    }

    /// A DSSM pipeline with id dropout on synthetic data whose items arrive over time, cut at
    /// 2002-01-01 with cold items indexed; `encode` and `evaluate` are added to those sections.
    /// Runs it into `dir/t` and returns the evaluate report.
    fn run_time_split(
        dir: &Path,
        encode: &str,
        evaluate: &str,
    ) -> crate::stages::evaluate::EvaluateReport {
        let text = format!(
            "name = \"t\"\nseed = 1\n[ingest.synthetic]\nusers = 150\nitems = 400\nseed = 5\narriving_items = 0.3\n\
             [encode]\ntest_from = 1009843200\ncold_items = true\n{encode}\
             [evaluate]\nbootstrap = 20\nindex = false\n{evaluate}\
             [export]\ntop_k = 10\nbuild_index = false\n\
             [[models]]\nname = \"dssm\"\nmodel = {{ kind = \"dssm\", embedding_dim = 8, user_tower = [8], item_tower = [8], item_id_dropout = 0.3 }}\n\
             train = {{ epochs = 1, batch_size = 64 }}\n"
        );
        let config = crate::config::parse(&text, Path::new("cold.toml")).unwrap();
        execute(&config, &dir.join("t"), None, false, false).unwrap();
        crate::stages::evaluate::EvaluateReport::read(&dir.join("t/evaluate")).unwrap()
    }

    /// A time split with cold items: the report has the cold-item section, its cold and warm
    /// users add up to the test users, and DSSM's validation targets are ranked as if cold.
    #[test]
    fn a_time_split_reports_cold_and_warm_targets_apart() {
        let dir = tempfile::tempdir().unwrap();
        let results = run_time_split(dir.path(), "", "ks = [10, 50]\nvalidation = true\n");
        let encode = Manifest::read(&dir.path().join("t/encode")).unwrap();
        assert!(
            encode.stats["cold_items"].as_u64().unwrap() > 0,
            "{}",
            encode.stats
        );
        for row in results.results.iter().filter(|r| r.split == "test") {
            let b = row.by_target.unwrap();
            assert_eq!(b.cold.users + b.warm.users, results.test_users, "{row:?}");
        }
        // Validation ranks DSSM's targets as if cold too (the baselines have no such path).
        for row in results.results.iter().filter(|r| r.split == "valid") {
            assert_eq!(row.as_cold.is_some(), row.model == "dssm", "{row:?}");
        }
        let report = std::fs::read_to_string(dir.path().join("t/report/report.md")).unwrap();
        assert!(report.contains("## Cold-item targets"), "{report}");
        assert!(
            report.contains("## Validation targets as if cold"),
            "{report}"
        );
        // Export marks the cold items.
        let path = dir.path().join("t/export/dssm/item_embeddings.parquet");
        let items = recall_core::Table::read(&path).unwrap();
        let cold = items
            .bools("cold")
            .unwrap()
            .into_iter()
            .filter(|&c| c)
            .count();
        assert_eq!(cold as u64, encode.stats["cold_items"].as_u64().unwrap());
    }

    /// The item-age prior: the synthetic items that arrive over time carry their arrival as
    /// `released`; the evaluate stage fits the lift on training interactions, chooses the
    /// weight on validation (the best of those tried, ties to the smaller) and ranks both
    /// splits with it as `dssm+age-prior`, in every view, with per-user files. Nobody interacts
    /// with an item before it arrives, so the "not yet released" bucket's lift is the floor.
    /// Without release times, or without validation, the key is refused by name.
    #[test]
    fn an_item_age_prior_is_chosen_on_validation_and_ranked_beside_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let prior = "item_age_prior = { age_edges_days = [0, 30, 365] }\n";
        let results = run_time_split(
            dir.path(),
            "item_release = { column = \"released\" }\n",
            &format!("ks = [10, 50]\nvalidation = true\n{prior}"),
        );
        let path = dir.path().join("t/evaluate/dssm/age_prior.json");
        let choice: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let tried: Vec<(f64, f64)> = serde_json::from_value(choice["validation"].clone()).unwrap();
        assert_eq!(tried.len(), 6, "{choice}");
        assert_eq!(tried[0].0, 0.0);
        let beta = choice["beta"].as_f64().unwrap();
        let best = tried.iter().map(|t| t.1).fold(f64::MIN, f64::max);
        let first_best = tried.iter().find(|t| t.1 == best).unwrap().0;
        assert_eq!(beta, first_best, "{choice}");
        let buckets = choice["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 5, "{choice}");
        assert_eq!(buckets[3]["name"], "not yet released");
        assert!((buckets[3]["log_lift"].as_f64().unwrap() - 1e-3f64.ln()).abs() < 1e-9);
        for split in ["valid", "test"] {
            let rows: Vec<_> = results
                .results
                .iter()
                .filter(|r| r.split == split && r.model == "dssm+age-prior")
                .collect();
            assert_eq!(rows.len(), 3, "{split}: one a view");
            for row in rows {
                assert_eq!(row.age_prior, Some(beta), "{row:?}");
                let model = results
                    .results
                    .iter()
                    .find(|r| {
                        r.split == split && r.model == "dssm" && r.seen_filter == row.seen_filter
                    })
                    .unwrap();
                if beta == 0.0 {
                    assert_eq!(row.metrics, model.metrics, "{row:?}");
                }
                let file =
                    crate::stages::evaluate::per_user_file(&row.model, split, row.seen_filter);
                assert!(dir.path().join("t/evaluate").join(file).exists());
            }
        }
        assert_eq!(
            tried[tried.iter().position(|t| t.0 == beta).unwrap()].1,
            results
                .results
                .iter()
                .find(|r| r.split == "valid"
                    && r.model == "dssm+age-prior"
                    && r.seen_filter == recall_eval::split::SeenView::None)
                .unwrap()
                .metrics["hit_rate@50"]
        );

        let report = std::fs::read_to_string(dir.path().join("t/report/report.md")).unwrap();
        assert!(
            report.contains(&format!("`dssm+age-prior` {beta}")),
            "{report}"
        );
        // Export gives each item's release time beside its vector, for serving the prior.
        let items =
            recall_core::Table::read(&dir.path().join("t/export/dssm/item_embeddings.parquet"))
                .unwrap();
        let released = items.nullable_ints("release_time").unwrap();
        assert!(released.iter().any(Option::is_some) && released.iter().any(Option::is_none));

        let run = |encode: &str, evaluate: &str| {
            let text = format!(
                "name = \"e\"\nseed = 1\n[ingest.synthetic]\nusers = 60\nitems = 100\nseed = 5\narriving_items = 0.3\n\
                 [encode]\n{encode}[evaluate]\nindex = false\n{evaluate}{prior}\
                 [[models]]\nname = \"pop\"\nmodel = {{ kind = \"dssm\", embedding_dim = 4, user_tower = [4], item_tower = [4] }}\n\
                 train = {{ epochs = 1 }}\n"
            );
            let config = crate::config::parse(&text, Path::new("prior.toml"))?;
            execute(&config, &dir.path().join("e"), None, false, false)
        };
        let err = format!("{:#}", run("", "validation = true\n").unwrap_err());
        assert!(
            err.contains("evaluate.item_age_prior") && err.contains("encode.item_release"),
            "{err}"
        );
        let err = format!("{:#}", run("", "").unwrap_err());
        assert!(
            err.contains("evaluate.item_age_prior") && err.contains("evaluate.validation = true"),
            "{err}"
        );
    }

    /// Every rating after the cut a target (`test_targets = "after-cut"`), so test users have
    /// cold-item targets: the unfiltered rows of the model and of random rank the cold items
    /// alone too, over the same users as the cold targets; the model's per-user file is
    /// written; and with the same scores, a cold target in the whole catalogue's top K is in
    /// the cold items' top K, so ranking them alone never scores lower.
    #[test]
    fn cold_items_are_also_ranked_alone() {
        let dir = tempfile::tempdir().unwrap();
        let results = run_time_split(
            dir.path(),
            "test_targets = \"after-cut\"\n",
            "ks = [5, 20]\n",
        );
        // The model's users ranked alone, seen on exactly one row.
        let mut dssm_users = None;
        for row in &results.results {
            let unfiltered = row.seen_filter == recall_eval::split::SeenView::None;
            let alone = row.model != "popularity" && unfiltered;
            assert_eq!(row.among_cold.is_some(), alone, "{row:?}");
            let (Some(a), Some(b)) = (row.among_cold, row.by_target) else {
                continue;
            };
            assert!(b.cold.users > 0, "{row:?}");
            assert_eq!(a.users, b.cold.users, "{row:?}");
            if row.model == "dssm" {
                assert!(a.mean >= b.cold.mean, "{row:?}");
                assert!(dssm_users.replace(a.users).is_none(), "{row:?}");
            }
        }
        let path = dir
            .path()
            .join("t/evaluate/dssm/per_user_test_among_cold.parquet");
        let per_user = recall_core::Table::read(&path).unwrap();
        assert_eq!(Some(per_user.num_rows()), dssm_users);
        let report = std::fs::read_to_string(dir.path().join("t/report/report.md")).unwrap();
        assert!(report.contains("The cold items ranked alone"), "{report}");
    }

    /// New items between retrains: day 1 trains DSSM on the interactions before a cut; the
    /// refresh keeps the cut, lists the side table's other items as cold, takes day 1's model
    /// as it is (`epochs = 0`) and extends day 1's serving index with the new items' vectors.
    /// The known items keep their vectors bit for bit, the index grows by the cold items and is
    /// measured against exact search; extending after training (moved vectors) is refused, and
    /// so is `epochs = 0` without an earlier model.
    #[test]
    fn new_items_join_the_earlier_index_without_training() {
        let dir = tempfile::tempdir().unwrap();
        let model = "model = { kind = \"dssm\", embedding_dim = 8, user_tower = [8], item_tower = [8], item_id_dropout = 0.3 }";
        let run = |name: &str, encode: &str, export: &str, train: &str| {
            let text = format!(
                "name = \"{name}\"\nseed = 1\n[ingest.synthetic]\nusers = 150\nitems = 400\nseed = 5\narriving_items = 0.3\n\
                 [encode]\nbefore = 1009843200\n{encode}\n[evaluate]\nks = [10]\nbootstrap = 20\nindex = false\n\
                 [export]\ntop_k = 10\n{export}\n[[models]]\nname = \"dssm\"\n{model}\ntrain = {{ batch_size = 64, {train} }}\n"
            );
            let config = crate::config::parse(&text, Path::new("refresh.toml"))?;
            execute(&config, &dir.path().join(name), None, false, false)
        };
        run("day1", "", "", "epochs = 1").unwrap();
        let day1 = dir.path().join("day1");
        let init = format!(
            "init_from = {{ run = {:?}, model = \"dssm\" }}",
            day1.display().to_string()
        );
        run(
            "refresh",
            "cold_items = true",
            "extend_index = true",
            &format!("epochs = 0, {init}"),
        )
        .unwrap();
        let refresh = dir.path().join("refresh");
        let encode = Manifest::read(&refresh.join("encode")).unwrap();
        let cold = encode.stats["cold_items"].as_u64().unwrap();
        assert!(cold > 0, "{}", encode.stats);
        let summary: recall_export::ExportSummary = serde_json::from_slice(
            &std::fs::read(refresh.join("export/dssm/manifest.json")).unwrap(),
        )
        .unwrap();
        let index = summary.index.unwrap();
        let extended = index.extended.unwrap();
        let earlier: recall_export::ExportSummary =
            serde_json::from_slice(&std::fs::read(day1.join("export/dssm/manifest.json")).unwrap())
                .unwrap();
        assert_eq!(extended.earlier_items, earlier.items);
        assert_eq!(extended.added as u64, cold);
        assert_eq!(summary.items, earlier.items + extended.added);
        assert!(index.recall > 0.5, "{index:?}");
        let vectors = |run: &Path| {
            let path = run.join("export/dssm/item_embeddings.parquet");
            recall_core::Table::read(&path)
                .unwrap()
                .float_vectors("embedding")
                .unwrap()
        };
        let ((dim, before), (_, after)) = (vectors(&day1), vectors(&refresh));
        assert_eq!(before[..], after[..earlier.items * dim]);
        let report = std::fs::read_to_string(refresh.join("report/report.md")).unwrap();
        assert!(report.contains("extends the warm-start run's"), "{report}");

        // Trained since day 1: the index would mix two models' vectors.
        let err = run(
            "trained",
            "cold_items = true",
            "extend_index = true",
            &format!("epochs = 1, {init}"),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("moved"), "{err:#}");
        let err = run("none", "", "", "epochs = 0").unwrap_err();
        assert!(format!("{err:#}").contains("init_from"), "{err:#}");
        // An earlier run without a serving index is refused before any stage, naming it.
        run("noindex", "", "build_index = false", "epochs = 1").unwrap();
        let no_index = format!(
            "init_from = {{ run = {:?}, model = \"dssm\" }}",
            dir.path().join("noindex").display().to_string()
        );
        let err = run(
            "fromnoindex",
            "cold_items = true",
            "extend_index = true",
            &format!("epochs = 0, {no_index}"),
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("extend_index") && err.contains("noindex") && err.contains("build_index"),
            "{err}"
        );
        assert!(!dir.path().join("fromnoindex/ingest").exists(), "{err}");
        // Without an earlier run the file is refused when it is read, before any stage.
        let err = run("none", "", "extend_index = true", "epochs = 1").unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("extend_index") && err.contains("\"dssm\""),
            "{err}"
        );
        assert!(!dir.path().join("none").exists(), "{err}");
    }
}
