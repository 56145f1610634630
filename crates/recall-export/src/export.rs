//! The export stage for one trained model: everything a serving system and a downstream ranker
//! need, in `out/`:
//!
//! | file | content |
//! |---|---|
//! | `item_embeddings.parquet` | `item_id`, `index_key`, (`cold` with cold items), (`release_time` with `encode.item_release`), `embedding` for every known item |
//! | `user_embeddings.parquet` | `user_id`, `embedding`: the user tower at the user's full history (test item included) and example age 0 |
//! | `candidates.parquet` | `user_id`, `rank`, `item_id`, `score`: top-K per user, seen items filtered when configured |
//! | `model.safetensors`, `config.json` | the checkpoint, unchanged |
//! | `tensors.json` | every tensor's name, shape and its PyTorch counterpart; `layout`: how the towers' inputs are assembled |
//! | `encoding/` | `features.json` and the side features' vocabularies: raw inputs to table rows |
//! | `item_index.usearch`, `item_index.usearch.json` | the HNSW serving index and its sidecar |
//! | `user_tower.onnx`, `item_tower.onnx` (with an item tower) | the towers for onnxruntime, over encoded inputs ([`crate::onnx`]) |
//! | `manifest.json` | every file above with rows, bytes, SHA-256; model, config hash, versions, index quality |
//!
//! Every file is written atomically and `manifest.json` last, so a directory with a manifest is
//! complete.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use recall_core::columns::{FIRST_ITEM, FIRST_KNOWN_INDEX};
use recall_core::columns::{ITEM_ID, USER_ID};
use recall_core::encoded::{self, files};
use recall_eval::Embeddings;
use recall_eval::split::{SeenFilter, SeenView};
use recall_eval::topk::{self, Lists, Options, TopK};
use recall_models::data::SplitRows;

/// The serving index's file in a model's export directory (its sidecar adds `.json`).
pub const INDEX_FILE: &str = "item_index.usearch";

use recall_models::{EncodedData, TwoTower, checkpoint};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{self, ApproximateIndex, IndexConfig};
use crate::vectors::{self, TableInfo};

fn default_top_k() -> usize {
    100
}
fn default_true() -> bool {
    true
}
fn default_probe_users() -> usize {
    2000
}

/// How `candidates.parquet` is ranked (defined beside the file it describes).
pub use crate::candidates::CandidateSearch;

/// `[export]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Candidates per user. Default 100.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// The seen filter's view applied to the candidates (`recall_eval::split::SeenView`):
    /// `"all"` leaves out every item the user has interacted with (the default), `"recent"`
    /// only the newest the model reads (its `max_len`), `"none"` nothing.
    #[serde(default = "default_seen_filter")]
    pub seen_filter: SeenView,
    /// The old name of `seen_filter`: refused with a message naming the new key.
    #[serde(default, skip_serializing)]
    pub filter_seen: Option<serde_json::Value>,
    /// Build the HNSW serving index. Default true.
    #[serde(default = "default_true")]
    pub build_index: bool,
    #[serde(default)]
    pub index: IndexConfig,
    /// Users (the first ones) on which the index is compared with the exact ranking. Default
    /// 2000.
    #[serde(default = "default_probe_users")]
    pub probe_users: usize,
    /// `"exact"` (default) or `"index"`: how the candidates are ranked.
    #[serde(default, skip_serializing_if = "is_exact")]
    pub candidates: CandidateSearch,
    /// Write the towers as ONNX (`user_tower.onnx`, and `item_tower.onnx` for a model with an item tower). Default
    /// true.
    #[serde(default = "default_true")]
    pub onnx: bool,
    /// Where the ONNX towers' large constants go (`crate::onnx::ExternalData`): `"auto"`
    /// (default: a `<model>.data` file beside the model once they pass 1 GiB), `"always"`,
    /// `"never"`.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub onnx_external_data: crate::onnx::ExternalData,
    /// Extend the serving index of the model this one was warm-started from (the earlier
    /// run's export) with the items it lacks, instead of building one: the refresh that adds
    /// new items without retraining (`train.epochs = 0`). Refused when the items the earlier
    /// index holds have moved (the model was trained since). The earlier index keeps its own
    /// graph settings (its sidecar's `config`; `index` here is not applied). Default false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub extend_index: bool,
}

fn is_auto(e: &crate::onnx::ExternalData) -> bool {
    *e == crate::onnx::ExternalData::Auto
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_seen_filter() -> SeenView {
    SeenView::All
}

// Left out of the serialised config at its default, so existing pipelines keep their config
// hash (and cached export stages).
fn is_exact(c: &CandidateSearch) -> bool {
    *c == CandidateSearch::Exact
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            top_k: default_top_k(),
            seen_filter: default_seen_filter(),
            filter_seen: None,
            build_index: true,
            index: IndexConfig::default(),
            probe_users: default_probe_users(),
            candidates: CandidateSearch::Exact,
            onnx: true,
            onnx_external_data: crate::onnx::ExternalData::Auto,
            extend_index: false,
        }
    }
}

impl ExportConfig {
    /// Checks what can be checked without the data (the catalogue bounds `top_k` later).
    pub fn validate(&self) -> Result<()> {
        if let Some(old) = &self.filter_seen {
            let new = if old == &serde_json::Value::Bool(false) {
                "\"none\""
            } else {
                "\"all\""
            };
            return Err(Error::Config(format!(
                "export.filter_seen was renamed: write `seen_filter = {new}` instead of `filter_seen = {old}`"
            )));
        }
        if self.top_k == 0 {
            return Err(Error::Config("export.top_k must be at least 1".into()));
        }
        if self.extend_index && !self.build_index {
            return Err(Error::Config(
                "export.extend_index = true extends the earlier run's serving index, but \
                 export.build_index = false: set build_index = true or drop extend_index"
                    .into(),
            ));
        }
        if self.candidates == CandidateSearch::Index && !self.build_index {
            return Err(Error::Config(
                "export.candidates = \"index\" ranks through the serving index, but export.build_index = false: \
                 build the index or rank exactly (candidates = \"exact\")"
                    .into(),
            ));
        }
        self.index.validate()
    }
}

/// One output file in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// File name inside the export directory.
    pub file: String,
    /// Rows for Parquet files, tensors for safetensors, absent otherwise.
    pub rows: Option<u64>,
    pub bytes: u64,
    pub sha256: String,
}

/// How the serving index compares with the exact ranking on the probe users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexQuality {
    pub k: usize,
    pub probe_users: usize,
    /// Mean |index top-k ∩ exact top-k| / k.
    pub recall: f64,
    pub build_seconds: f64,
    pub index_queries_per_second: f64,
    pub exact_queries_per_second: f64,
    /// When the index extends an earlier one (`export.extend_index`): the items it held and
    /// the items added (`build_seconds` is then the load and the adding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended: Option<Extended>,
}

/// An index extended rather than built.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Extended {
    pub earlier_items: usize,
    pub added: usize,
}

/// The export manifest (`manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportSummary {
    pub model: String,
    pub model_kind: String,
    pub dim: usize,
    /// Hash of the configuration that produced the model and this export (from the caller).
    pub config_hash: String,
    pub versions: serde_json::Value,
    pub top_k: usize,
    /// The seen filter's view on the candidates (`none`, `all`, `recent`).
    pub seen_filter: SeenView,
    /// With `recent`: how many of each user's newest items it left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_window: Option<usize>,
    /// How the candidates were ranked (`exact` or `index`).
    pub candidates: CandidateSearch,
    pub users: usize,
    pub items: usize,
    /// Test rows whose user is not in the vocabulary (no training data): no embedding.
    pub users_skipped_unknown: usize,
    pub index: Option<IndexQuality>,
    pub files: Vec<FileRecord>,
}

/// The serving view of the test split: every test user at the end of its sequence (the test
/// item included, an out-of-vocabulary one as row 1 like any other in a history, so the rule
/// a serving system follows is simply "every interaction"; `max_len` newest kept, as the
/// history reader cuts), at the test rows' example-age bucket, which encode sets to age 0
/// ("now").
pub fn serving_split(data: &EncodedData) -> (SplitRows, usize) {
    let test = &data.test;
    let mut out = SplitRows::default();
    let mut skipped = 0;
    for row in 0..test.len() {
        let user = test.user[row];
        if user < FIRST_KNOWN_INDEX as u32 {
            skipped += 1;
            continue;
        }
        out.push(user, test.position[row] + 1, test.age_bucket[row]);
    }
    (out, skipped)
}

/// Items each serving row's user has interacted with, the newest `newest` of them
/// (`usize::MAX`: the whole sequence: training interactions, the validation and test targets),
/// sorted and unique.
fn seen_items(data: &EncodedData, serving: &SplitRows, newest: usize) -> Lists {
    let rows: Vec<Vec<u32>> = serving
        .user
        .iter()
        .map(|&u| {
            let sequence = data.sequences.sequence(u);
            let mut seen = sequence[sequence.len().saturating_sub(newest)..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            seen
        })
        .collect();
    Lists::from_rows(&rows)
}

/// Where export puts what turns raw inputs into table rows (see [`copy_encoding`]).
pub const ENCODING_DIR: &str = "encoding";

/// Copies into `out/encoding/` what a reader outside Rust needs to turn raw inputs into the
/// tables' rows: `features.json` (kinds, source columns, boundaries, scaling) and the
/// vocabularies of the side features (and of user ids when the model embeds them). Item ids
/// need no copy: `item_embeddings.parquet` maps them (`index_key`).
fn copy_encoding(encode_dir: &Path, out: &Path, user_ids: bool) -> Result<Vec<FileRecord>> {
    let manifest = encoded::FeatureManifest::read(encode_dir)?;
    let mut names = vec![files::FEATURES.to_owned()];
    if user_ids {
        names.push(files::vocab(USER_ID));
    }
    names.extend(
        manifest
            .user_features
            .iter()
            .chain(&manifest.item_features)
            .filter(|f| {
                matches!(
                    f.kind,
                    encoded::FeatureKind::Categorical | encoded::FeatureKind::Bag
                )
            })
            .map(|f| files::vocab(&f.name)),
    );
    std::fs::create_dir_all(out.join(ENCODING_DIR)).map_err(|e| {
        recall_core::Error::io(
            "cannot create the export directory",
            out.join(ENCODING_DIR),
            e,
        )
    })?;
    names
        .iter()
        .map(|name| {
            let file = format!("{ENCODING_DIR}/{name}");
            copy_file(&encode_dir.join(name), &out.join(&file))?;
            let rows = if name.ends_with(".parquet") {
                Some(recall_core::table::parquet_row_count(&out.join(&file))?)
            } else {
                None
            };
            record(out, &file, rows)
        })
        .collect()
}

/// Copies `from` to `to` atomically, streamed (a checkpoint is the size of its item table).
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut source =
        std::fs::File::open(from).map_err(|e| recall_core::Error::io("cannot read", from, e))?;
    recall_core::write::write_atomic(to, |w| {
        std::io::copy(&mut source, w)
            .map(|_| ())
            .map_err(|e| recall_core::Error::io("cannot copy into", to, e))
    })?;
    Ok(())
}

fn record(dir: &Path, file: &str, rows: Option<u64>) -> Result<FileRecord> {
    let path = dir.join(file);
    let bytes = std::fs::metadata(&path)
        .map_err(|e| recall_core::Error::io("cannot stat", &path, e))?
        .len();
    Ok(FileRecord {
        file: file.to_owned(),
        rows,
        bytes,
        sha256: recall_core::checksum::sha256_file(&path)?,
    })
}

/// Compares the index with the exact unfiltered ranking of the first users (`exact`, one
/// list per probe user; exact ranking ran at `exact_rate` queries per second).
fn measure_index(
    index: &ApproximateIndex,
    users: &Embeddings,
    exact: &TopK,
    exact_rate: f64,
    build_seconds: f64,
) -> Result<IndexQuality> {
    let n = exact.users();
    let probe_users = users.select_rows(0..n);
    let k = exact.k;
    let start = Instant::now();
    let approximate = index.top_k(&probe_users, k, None)?;
    let index_seconds = start.elapsed().as_secs_f64();
    Ok(IndexQuality {
        k,
        probe_users: n,
        recall: index::recall_at(&approximate, exact, k),
        build_seconds,
        index_queries_per_second: n as f64 / index_seconds.max(1e-9),
        exact_queries_per_second: exact_rate,
        extended: None,
    })
}

/// Exact top-K of every row of `users` over `items` (item indices from [`FIRST_ITEM`]).
pub fn exact_candidates(
    users: &Embeddings,
    items: &Embeddings,
    k: usize,
    exclude: Option<Lists>,
) -> Result<TopK> {
    Ok(topk::exact(
        users,
        items,
        k,
        &Options {
            first_item: FIRST_ITEM,
            exclude,
            ..Options::default()
        },
    )?)
}

/// The earlier export's serving index (`earlier`: `<run>/export/<model>`), checked against
/// this model's vectors of the items it holds, with the items it lacks added.
fn extend_index(earlier: &Path, items: &Embeddings) -> Result<(ApproximateIndex, Extended)> {
    let path = earlier.join(INDEX_FILE);
    let mut index = ApproximateIndex::load(&path).map_err(|e| {
        Error::Config(format!(
            "export.extend_index: cannot load the earlier run's index {} ({e}); export that run with \
             build_index = true, or drop extend_index",
            path.display()
        ))
    })?;
    let held = index.sidecar().items;
    let first = FIRST_ITEM as usize;
    if index.sidecar().dim != items.dim() || first + held > items.rows() {
        return Err(Error::Config(format!(
            "export.extend_index: the earlier index {} holds {held} items of dimension {}, this model has {} of \
             dimension {}: not the same model; drop extend_index",
            path.display(),
            index.sidecar().dim,
            items.rows() - first,
            items.dim()
        )));
    }
    // The earlier index is only this model's if the items it holds kept their vectors.
    let earlier_vectors = earlier.join("item_embeddings.parquet");
    let table = recall_core::Table::read_columns(
        &earlier_vectors,
        Some(&[vectors::INDEX_KEY, vectors::EMBEDDING]),
    )?;
    let keys = table.ints(vectors::INDEX_KEY)?;
    let (dim, values) = table.float_vectors(vectors::EMBEDDING)?;
    if dim != items.dim() {
        return Err(Error::Config(format!(
            "export.extend_index: {} has vectors of dimension {dim}, this model's are {}: not the \
             same model; drop extend_index",
            earlier_vectors.display(),
            items.dim()
        )));
    }
    let mut moved = 0f32;
    for (row, &key) in keys.iter().enumerate() {
        let key = key as usize;
        if key >= first + held {
            continue;
        }
        let before = &values[row * dim..(row + 1) * dim];
        for (a, b) in before.iter().zip(items.row(key)) {
            moved = moved.max((a - b).abs());
        }
    }
    if moved > 1e-5 {
        return Err(Error::Config(format!(
            "export.extend_index: the items of the earlier index moved by up to {moved:.2e} since {} \
             (the model was trained since): extending that index would mix two models' vectors; \
             build a new index (drop extend_index), or warm-start with train.epochs = 0",
            earlier_vectors.display()
        )));
    }
    let added = index.add(items, first + held..items.rows())?;
    Ok((
        index,
        Extended {
            earlier_items: held,
            added,
        },
    ))
}

/// Exports model `name` (checkpoint in `model_dir`, trained on `encode_dir`) into `out`: a
/// [`ModelExport`] without an earlier export to extend.
pub fn export_model(
    encode_dir: &Path,
    model_dir: &Path,
    out: &Path,
    name: &str,
    config: &ExportConfig,
    config_hash: &str,
    device: &Device,
) -> Result<ExportSummary> {
    ModelExport {
        encode_dir,
        model_dir,
        name,
        config,
        config_hash,
        device,
        earlier: None,
    }
    .run(out)
}

/// One model's export: what it reads and how its manifest records it.
#[derive(Debug, Clone, Copy)]
pub struct ModelExport<'a> {
    /// The encode stage's directory the model was trained on.
    pub encode_dir: &'a Path,
    /// The model's checkpoint directory (`train/<model>`).
    pub model_dir: &'a Path,
    pub name: &'a str,
    pub config: &'a ExportConfig,
    /// The pipeline's config hash, recorded in the manifest.
    pub config_hash: &'a str,
    pub device: &'a Device,
    /// The earlier export (`<run>/export/<model>`) whose serving index `export.extend_index`
    /// extends.
    pub earlier: Option<&'a Path>,
}

impl ModelExport<'_> {
    /// Writes the export into `out`.
    pub fn run(&self, out: &Path) -> Result<ExportSummary> {
        export(self, out)
    }
}

fn export(job: &ModelExport<'_>, out: &Path) -> Result<ExportSummary> {
    let ModelExport {
        encode_dir,
        model_dir,
        name,
        config,
        config_hash,
        device,
        earlier,
    } = *job;
    config.validate()?;
    let earlier = match (config.extend_index, earlier) {
        (false, _) => None,
        (true, Some(dir)) => Some(dir),
        (true, None) => {
            return Err(Error::Config(
                "export.extend_index = true needs an earlier run to extend: warm-start the model \
                 (train.init_from)"
                    .into(),
            ));
        }
    };
    let rankable = |n: usize| n.saturating_sub(FIRST_ITEM as usize);
    let data = EncodedData::read_dir(encode_dir)?;
    if config.top_k == 0 || config.top_k > rankable(data.item_table_size) {
        return Err(Error::Config(format!(
            "export.top_k must be between 1 and the {} items of the catalogue, got {}",
            rankable(data.item_table_size),
            config.top_k
        )));
    }
    let model: TwoTower = checkpoint::load(model_dir, &data, device)?;

    // Check the output directory before spending time: nothing is half-written either way.
    std::fs::create_dir_all(out)
        .map_err(|e| recall_core::Error::io("cannot create the export directory", out, e))?;

    // The weights and their map first, while nothing else big is in memory; the model goes
    // once `serve` has embedded every item and user.
    copy_file(
        &model_dir.join("model.safetensors"),
        &out.join("model.safetensors"),
    )?;
    copy_file(&model_dir.join("config.json"), &out.join("config.json"))?;
    let load_weights = || {
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu)
            .map_err(recall_models::Error::from)
    };
    let tensors = load_weights()?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let layout = model.input_layout(&data);
    let tensor_map: Vec<serde_json::Value> = names
        .iter()
        .map(|n| {
            let shape = tensors[*n].dims().to_vec();
            serde_json::json!({
                "name": n,
                "shape": shape,
                "dtype": format!("{:?}", tensors[*n].dtype()),
                "pytorch": model.torch_counterpart(n, &shape),
            })
        })
        .collect();
    let json = |v: &serde_json::Value| {
        serde_json::to_vec_pretty(v).map_err(|e| Error::Invalid(e.to_string()))
    };
    recall_core::write::write_bytes(
        &out.join("tensors.json"),
        &json(&serde_json::json!({
            "format": "safetensors, row-major float32",
            "note": "Linear weights are [out, in] like torch.nn.Linear; embedding rows are the encoder's indices (vocab_*.parquet), 0 padding and 1 out-of-vocabulary",
            "tensors": tensor_map,
            "layout": layout,
        }))?,
    )?;
    let encoding = copy_encoding(encode_dir, out, model.tables().user_id.is_some())?;
    let model_kind = model.config().kind().name().to_owned();
    let tensor_count = tensors.len();
    drop(tensors);

    let served = serve(job, &data, model, earlier, out)?;

    // The towers read the checkpoint's tables, loaded again: the model and every vector are
    // gone by now.
    let onnx = if config.onnx {
        crate::onnx::write(
            out,
            &layout,
            &load_weights()?,
            &data,
            config.onnx_external_data,
        )?
    } else {
        Vec::new()
    };

    let mut files = vec![
        record(
            out,
            "item_embeddings.parquet",
            Some(served.item_rows as u64),
        )?,
        record(
            out,
            "user_embeddings.parquet",
            Some(served.user_rows as u64),
        )?,
        record(
            out,
            "candidates.parquet",
            Some(served.candidate_rows as u64),
        )?,
        record(out, "model.safetensors", Some(tensor_count as u64))?,
        record(out, "config.json", None)?,
        record(out, "tensors.json", None)?,
    ];
    files.extend(encoding);
    for file in &onnx {
        files.push(record(out, file, None)?);
    }
    if let Some((_, items)) = &served.index {
        files.push(record(out, INDEX_FILE, Some(*items as u64))?);
        files.push(record(out, &format!("{INDEX_FILE}.json"), None)?);
    }

    let summary = ExportSummary {
        model: name.to_owned(),
        model_kind,
        dim: served.dim,
        config_hash: config_hash.to_owned(),
        versions: serde_json::json!({
            "recall-export": env!("CARGO_PKG_VERSION"),
            "usearch": usearch::version(),
        }),
        top_k: config.top_k,
        seen_filter: config.seen_filter,
        recent_window: served.recent_window,
        candidates: config.candidates,
        users: served.user_rows,
        items: served.item_rows,
        users_skipped_unknown: served.users_skipped_unknown,
        index: served.index.map(|(quality, _)| quality),
        files,
    };
    recall_core::write::write_bytes(
        &out.join("manifest.json"),
        &serde_json::to_vec_pretty(&summary).map_err(|e| Error::Invalid(e.to_string()))?,
    )?;
    Ok(summary)
}

/// What [`serve`] wrote, for the manifest.
struct Served {
    dim: usize,
    item_rows: usize,
    user_rows: usize,
    users_skipped_unknown: usize,
    candidate_rows: usize,
    recent_window: Option<usize>,
    /// The serving index's quality and the items it holds, when it is built.
    index: Option<(IndexQuality, usize)>,
}

/// Writes what serving reads while the model's vectors are in memory: both embedding tables,
/// the serving index (measured against the exact ranking) and the candidates. The vectors, the
/// index, the ranking and the seen lists are dropped when it returns, before the weights and
/// the ONNX towers are written: at 100 M interactions they were all still resident beside the
/// towers' copies of the item table (MEASUREMENTS.md, issue 32).
fn serve(
    job: &ModelExport<'_>,
    data: &EncodedData,
    model: TwoTower,
    earlier: Option<&Path>,
    out: &Path,
) -> Result<Served> {
    let ModelExport {
        encode_dir,
        name,
        config,
        ..
    } = *job;
    let item_ids = encoded::read_vocabulary(&encode_dir.join(files::vocab(ITEM_ID)))?.raw;
    let user_vocab = encoded::read_vocabulary(&encode_dir.join(files::vocab(USER_ID)))?.raw;

    let all_items = model.embed_items(data)?;
    let dim = all_items.dim();
    let known_rows = FIRST_ITEM as usize..all_items.rows();
    if known_rows.len() != item_ids.len() {
        return Err(Error::Invalid(format!(
            "the item vocabulary has {} items but the model's table {}: the checkpoint was trained on another encoding",
            item_ids.len(),
            known_rows.len()
        )));
    }
    let (serving, users_skipped_unknown) = serving_split(data);
    if serving.is_empty() {
        return Err(Error::Invalid(
            "no test row has a known user: nothing to embed".into(),
        ));
    }
    let users = model.embed_split(data, &serving)?;
    let filter = config
        .seen_filter
        .with_recent_window(model.history_len(data));
    // Every vector is made: the model's tables (the item table is the size of `all_items`)
    // are not needed for the index and the ranking.
    drop(model);
    if users.dim() != dim {
        return Err(Error::Invalid(format!(
            "user embeddings have dimension {} and item embeddings {dim}: the towers' last widths must match",
            users.dim()
        )));
    }
    let user_rows: Vec<usize> = serving
        .user
        .iter()
        .map(|&u| (u - FIRST_KNOWN_INDEX as u32) as usize)
        .collect();
    if let Some(&bad) = user_rows.iter().find(|&&r| r >= user_vocab.len()) {
        return Err(Error::Invalid(format!(
            "user index {} is outside the user vocabulary of {}",
            bad + FIRST_KNOWN_INDEX as usize,
            user_vocab.len()
        )));
    }
    let user_ids = user_vocab.take(&user_rows);

    let item_info = TableInfo {
        model: name,
        entity: "item",
        id_column: recall_core::columns::ITEM_ID,
        normalized: true,
    };
    let keys: Vec<i64> = known_rows.clone().map(|r| r as i64).collect();
    // Cold items (`encode.cold_items`) are marked: their vectors come from their features.
    let cold: Option<Vec<bool>> = data
        .first_cold_item
        .map(|first| keys.iter().map(|&k| k >= i64::from(first)).collect());
    // With `encode.item_release`, each item's release time: what the item-age prior a serving
    // system applies (the evaluate stage's `<model>/age_prior.json`) ages items from.
    let released: Option<Vec<Option<i64>>> =
        recall_eval::freshness::read_release_times(encode_dir)?
            .map(|times| keys.iter().map(|&k| times[k as usize]).collect());
    let item_rows = vectors::write(
        &out.join("item_embeddings.parquet"),
        item_info,
        &item_ids,
        // A copy for the writer only: at a million items it is a quarter GB, gone before the
        // index is built.
        &all_items.select_rows(known_rows),
        Some(&keys),
        cold.as_deref(),
        released.as_deref(),
    )?;
    let user_info = TableInfo {
        entity: "user",
        id_column: recall_core::columns::USER_ID,
        ..item_info
    };
    let user_rows_written = vectors::write(
        &out.join("user_embeddings.parquet"),
        user_info,
        &user_ids,
        &users,
        None,
        None,
        None,
    )?;

    // The serving index first: with `candidates = "index"` the candidates come from it.
    let mut extended = None;
    let index = if config.build_index {
        let start = Instant::now();
        let index = match earlier {
            Some(dir) => {
                let (index, grown) = extend_index(dir, &all_items)?;
                tracing::info!(
                    earlier = grown.earlier_items,
                    added = grown.added,
                    "extended the serving index of {}",
                    dir.display()
                );
                extended = Some(grown);
                index
            }
            None => ApproximateIndex::build(&all_items, FIRST_ITEM as usize, config.index)?,
        };
        let build_seconds = start.elapsed().as_secs_f64();
        index.save(&out.join(INDEX_FILE))?;
        Some((index, build_seconds))
    } else {
        None
    };
    let exclude = match filter {
        SeenFilter::None => None,
        SeenFilter::All => Some(seen_items(data, &serving, usize::MAX)),
        SeenFilter::Recent(n) => Some(seen_items(data, &serving, n)),
    };
    let probe = config.probe_users.clamp(1, users.rows());
    // The candidates, and the exact unfiltered ranking of the probe users that the index is
    // measured against (`exact_rate`: exact queries per second).
    let (top, probe_exact, exact_rate) = match (config.candidates, &index) {
        (CandidateSearch::Index, Some((index, _))) => {
            let top = index.top_k(&users, config.top_k, exclude.as_ref())?;
            let probe_users = users.select_rows(0..probe);
            let start = Instant::now();
            let exact = exact_candidates(&probe_users, &all_items, config.top_k, None)?;
            (
                top,
                exact,
                probe as f64 / start.elapsed().as_secs_f64().max(1e-9),
            )
        }
        (CandidateSearch::Index, None) => {
            return Err(recall_core::Error::Internal(
                "export: candidates through an index that was not built (validate let it pass)"
                    .into(),
            )
            .into());
        }
        (CandidateSearch::Exact, _) => {
            // The candidates (seen items filtered when configured) and, for the index's
            // quality, the unfiltered ranking: one pass over the score blocks for both.
            let mut views = Vec::new();
            if index.is_some() || exclude.is_none() {
                views.push(None);
            }
            if let Some(seen) = &exclude {
                views.push(Some(seen));
            }
            let start = Instant::now();
            let mut ranked = topk::exact_views(
                &users,
                &all_items,
                config.top_k,
                &Options {
                    first_item: FIRST_ITEM,
                    ..Options::default()
                },
                &views,
            )?;
            let rate = users.rows() as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let top = ranked
                .pop()
                .ok_or_else(|| Error::Invalid("no ranking computed".into()))?;
            // Without seen filtering the candidates are the unfiltered ranking.
            let unfiltered = ranked.pop().unwrap_or_else(|| top.clone());
            (top, unfiltered.head(probe), rate)
        }
    };
    let candidate_rows = crate::candidates::write(
        &out.join("candidates.parquet"),
        &user_ids,
        &item_ids,
        FIRST_ITEM,
        &top,
        config.candidates,
    )?;

    let index = match &index {
        Some((index, build_seconds)) => {
            let mut quality =
                measure_index(index, &users, &probe_exact, exact_rate, *build_seconds)?;
            quality.extended = extended;
            tracing::info!(
                recall = format!("{:.4}", quality.recall),
                index_qps = format!("{:.0}", quality.index_queries_per_second),
                exact_qps = format!("{:.0}", quality.exact_queries_per_second),
                "serving index of `{name}` against the exact top-{}",
                quality.k
            );
            Some((quality, index.sidecar().items))
        }
        None => None,
    };
    Ok(Served {
        dim,
        item_rows,
        user_rows: user_rows_written,
        users_skipped_unknown,
        candidate_rows,
        recent_window: filter.recent_window(),
        index,
    })
}

/// The export directory's files, manifest last (for a caller's own manifest).
pub fn written_files(out: &Path, summary: &ExportSummary) -> Vec<PathBuf> {
    summary
        .files
        .iter()
        .map(|f| out.join(&f.file))
        .chain([out.join("manifest.json")])
        .collect()
}
