//! The export stage end to end on a small synthetic dataset: files keyed by original ids,
//! candidates equal to the exact ranking of the exported embeddings, an index that reloads and
//! agrees with the exact ranking, and bad input refused without touching earlier output.

use std::path::{Path, PathBuf};

use candle_core::Device;
use rand::SeedableRng;
use recall_core::{RawIds, Table};
use recall_data::{IngestConfig, SyntheticConfig, ingest};
use recall_eval::Embeddings;
use recall_export::export::CandidateSearch;
use recall_export::index::{self, ApproximateIndex};
use recall_export::{ExportConfig, export_model};
use recall_features::encode::{EncodeConfig, EncodeInput, encode};
use recall_models::{EncodedData, TwoTower, checkpoint, train};

/// Encodes a synthetic dataset and trains a tiny YoutubeDNN; returns (encode dir, model dir).
fn trained() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        300, 200, 20, 3,
    )))
    .unwrap()
    .write(dir.path())
    .unwrap();
    let encoded = encode(
        &EncodeInput::read_dir(dir.path()).unwrap(),
        &EncodeConfig::default(),
    )
    .unwrap();
    let encode_dir = dir.path().join("encode");
    encoded.write(&encode_dir).unwrap();
    let data = EncodedData::read_dir(&encode_dir).unwrap();
    let model_config = serde_json::from_value(serde_json::json!({
        "kind": "youtubednn", "embedding_dim": 8, "user_tower": [16, 8]
    }))
    .unwrap();
    let train_config =
        serde_json::from_value(serde_json::json!({ "epochs": 1, "batch_size": 128 })).unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let mut model = TwoTower::new(&model_config, &data, &mut rng, &Device::Cpu).unwrap();
    train::train(&mut model, &data, &train_config, 1).unwrap();
    let model_dir = dir.path().join("model");
    checkpoint::save(&model, &model_dir).unwrap();
    (dir, encode_dir, model_dir)
}

fn ints(path: &Path, column: &str) -> Vec<i64> {
    Table::read(path).unwrap().ints(column).unwrap()
}

#[test]
fn exports_are_keyed_by_original_ids_and_consistent_with_each_other() {
    let (dir, encode_dir, model_dir) = trained();
    let out = dir.path().join("export");
    let config = ExportConfig {
        top_k: 10,
        ..ExportConfig::default()
    };
    let summary = export_model(
        &encode_dir,
        &model_dir,
        &out,
        "ydnn",
        &config,
        "hash",
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(summary.users, 300);
    assert_eq!(summary.users_skipped_unknown, 0);

    // Items: original ids (the synthetic generator's item ids), unit vectors, metadata.
    let (item_ids, items) =
        Embeddings::read_parquet(&out.join("item_embeddings.parquet"), "item_id", "embedding")
            .unwrap();
    assert_eq!(items.rows(), summary.items);
    assert_eq!(items.dim(), 8);
    for r in 0..items.rows() {
        let norm: f32 = items.row(r).iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "row {r} has norm {norm}");
    }
    let vocab = Table::read(&encode_dir.join("vocab_item_id.parquet")).unwrap();
    let mut known = vocab.ints("raw").unwrap();
    let RawIds::Int(mut exported) = item_ids.clone() else {
        panic!("synthetic item ids are integers")
    };
    known.sort_unstable();
    exported.sort_unstable();
    assert_eq!(known, exported);

    // Candidates: K per user, ranks 1..K, scores equal to the dot products of the exported
    // vectors, none of them an item the user has seen.
    let (user_ids, users) =
        Embeddings::read_parquet(&out.join("user_embeddings.parquet"), "user_id", "embedding")
            .unwrap();
    let candidates = out.join("candidates.parquet");
    let c_users = ints(&candidates, "user_id");
    let c_items = ints(&candidates, "item_id");
    let c_ranks = ints(&candidates, "rank");
    assert_eq!(c_users.len(), 300 * 10);
    assert_eq!(&c_ranks[..10], &(1..=10).collect::<Vec<_>>()[..]);
    let scores = Table::read(&candidates)
        .unwrap()
        .nullable_floats("score")
        .unwrap();
    let RawIds::Int(user_ids) = user_ids else {
        panic!()
    };
    let RawIds::Int(item_ids) = item_ids else {
        panic!()
    };
    let user_row = |id: i64| user_ids.iter().position(|&u| u == id).unwrap();
    let item_row = |id: i64| item_ids.iter().position(|&i| i == id).unwrap();
    for row in (0..c_users.len()).step_by(37) {
        let (u, i) = (user_row(c_users[row]), item_row(c_items[row]));
        let dot: f32 = users
            .row(u)
            .iter()
            .zip(items.row(i))
            .map(|(a, b)| a * b)
            .sum();
        assert!((dot - scores[row].unwrap()).abs() < 1e-4);
    }
    let ingested = Table::read(&dir.path().join("interactions.parquet")).unwrap();
    let (iu, ii) = (
        ingested.ints("user_id").unwrap(),
        ingested.ints("item_id").unwrap(),
    );
    let seen: std::collections::HashSet<(i64, i64)> = iu.into_iter().zip(ii).collect();
    assert!(
        c_users
            .iter()
            .zip(&c_items)
            .all(|(u, i)| !seen.contains(&(*u, *i))),
        "a seen item was recommended"
    );

    // The index reloads and agrees with the exact ranking on this small catalogue.
    let loaded = ApproximateIndex::load(&out.join("item_index.usearch")).unwrap();
    assert_eq!(loaded.sidecar().items, summary.items);
    let quality = summary.index.unwrap();
    assert!(quality.recall > 0.99, "{quality:?}");
    let keys = ints(&out.join("item_embeddings.parquet"), "index_key");
    let best = loaded.search(users.row(0), 5, &[]).unwrap();
    let mut full = Vec::with_capacity(items.as_slice().len() + 16);
    full.extend([0.0; 16]); // the two reserved rows
    full.extend_from_slice(items.as_slice());
    let exact = recall_export::export::exact_candidates(
        &Embeddings::new(8, users.row(0).to_vec()).unwrap(),
        &Embeddings::new(8, full).unwrap(),
        5,
        None,
    )
    .unwrap();
    assert_eq!(best.iter().map(|p| p.0).collect::<Vec<_>>(), exact.list(0));
    assert!(best.iter().all(|p| keys.contains(&i64::from(p.0))));
    assert!(index::recall_at(&exact, &exact, 5) == 1.0);

    // A truncated or missing index file is an error naming the file, never a crash.
    let index_file = out.join("item_index.usearch");
    let whole = std::fs::read(&index_file).unwrap();
    let cut = dir.path().join("cut.usearch");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    std::fs::copy(
        out.join("item_index.usearch.json"),
        dir.path().join("cut.usearch.json"),
    )
    .unwrap();
    let err = ApproximateIndex::load(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.usearch"), "{err}");
    std::fs::copy(
        out.join("item_index.usearch.json"),
        dir.path().join("gone.usearch.json"),
    )
    .unwrap();
    let err = ApproximateIndex::load(&dir.path().join("gone.usearch"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gone.usearch"), "{err}");

    // The manifest lists every file with its checksum.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    // The eight outputs, the user tower as ONNX, and the encoding a reader outside Rust needs
    // (this encode has no side features, so features.json alone).
    assert_eq!(files.len(), 10);
    assert!(files.iter().any(|f| f["file"] == "user_tower.onnx"));
    assert!(files.iter().any(|f| f["file"] == "encoding/features.json"));
    for f in files {
        let path = out.join(f["file"].as_str().unwrap());
        assert_eq!(
            f["sha256"].as_str().unwrap(),
            recall_core::checksum::sha256_file(&path).unwrap()
        );
    }
    let tensors = std::fs::read_to_string(out.join("tensors.json")).unwrap();
    assert!(tensors.contains("\"item_embedding\"") && tensors.contains("nn.Embedding"));
    // The input layout names tensors the checkpoint has, and its widths add up.
    let tensors: serde_json::Value = serde_json::from_str(&tensors).unwrap();
    let names: Vec<&str> = tensors["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let user = &tensors["layout"]["user_input"];
    let parts = user["parts"].as_array().unwrap();
    assert!(!parts.is_empty());
    for part in parts {
        let table = part["table"].as_str().unwrap_or("item_embedding");
        assert!(names.contains(&table), "{table} is not a checkpoint tensor");
    }
    let width: u64 = parts.iter().map(|p| p["width"].as_u64().unwrap()).sum();
    assert_eq!(user["width"].as_u64(), Some(width));
    for layer in user["encoder"]["layers"].as_array().into_iter().flatten() {
        assert!(names.contains(&layer["weight"].as_str().unwrap()));
    }
}

#[test]
fn bad_settings_and_an_unwritable_directory_are_refused() {
    let (dir, encode_dir, model_dir) = trained();
    let run = |out: &Path, config: &ExportConfig| {
        export_model(&encode_dir, &model_dir, out, "m", config, "h", &Device::Cpu)
            .unwrap_err()
            .to_string()
    };
    let big = ExportConfig {
        top_k: 100_000,
        ..ExportConfig::default()
    };
    let err = run(&dir.path().join("a"), &big);
    assert!(err.contains("export.top_k"), "{err}");
    // A file where the directory should be.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"x").unwrap();
    let err = run(&blocked.join("sub"), &ExportConfig::default());
    assert!(err.contains("cannot create the export directory"), "{err}");
    // A checkpoint from another encoding.
    let other = dir.path().join("other_encode");
    std::fs::create_dir_all(&other).unwrap();
    for f in std::fs::read_dir(&encode_dir).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
    }
    let text = std::fs::read_to_string(other.join("features.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["item_table_size"] = serde_json::json!(json["item_table_size"].as_u64().unwrap() + 5);
    std::fs::write(other.join("features.json"), json.to_string()).unwrap();
    let err = export_model(
        &other,
        &model_dir,
        &dir.path().join("b"),
        "m",
        &ExportConfig::default(),
        "h",
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("item_embedding") || err.contains("vocabulary"),
        "{err}"
    );
}

/// With a per-user cap on training examples, exported candidates still leave out everything
/// the user has interacted with (the whole sequence), not only the kept examples' items.
#[test]
fn candidates_exclude_the_whole_history_under_a_per_user_cap() {
    let dir = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::Synthetic(SyntheticConfig::new(
        200, 60, 25, 4,
    )))
    .unwrap()
    .write(dir.path())
    .unwrap();
    let config: EncodeConfig = serde_json::from_value(serde_json::json!({
        "max_examples_per_user": { "count": 2 }, "max_len": 3
    }))
    .unwrap();
    let encode_dir = dir.path().join("encode");
    encode(&EncodeInput::read_dir(dir.path()).unwrap(), &config)
        .unwrap()
        .write(&encode_dir)
        .unwrap();
    let data = EncodedData::read_dir(&encode_dir).unwrap();
    let model_config = serde_json::from_value(serde_json::json!({
        "kind": "youtubednn", "embedding_dim": 8, "user_tower": [8]
    }))
    .unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let model = TwoTower::new(&model_config, &data, &mut rng, &Device::Cpu).unwrap();
    let model_dir = dir.path().join("model");
    checkpoint::save(&model, &model_dir).unwrap();
    let out = dir.path().join("export");
    let export = ExportConfig {
        top_k: 30,
        build_index: false,
        ..ExportConfig::default()
    };
    export_model(
        &encode_dir,
        &model_dir,
        &out,
        "m",
        &export,
        "h",
        &Device::Cpu,
    )
    .unwrap();
    let raw = Table::read(&dir.path().join("interactions.parquet")).unwrap();
    let (users, items) = (raw.ints("user_id").unwrap(), raw.ints("item_id").unwrap());
    let seen: std::collections::HashSet<(i64, i64)> =
        users.iter().copied().zip(items.iter().copied()).collect();
    let candidates = dir.path().join("export/candidates.parquet");
    let (cu, ci) = (ints(&candidates, "user_id"), ints(&candidates, "item_id"));
    assert!(!cu.is_empty());
    for (u, i) in cu.iter().zip(&ci) {
        assert!(
            !seen.contains(&(*u, *i)),
            "user {u} was offered item {i}, seen before"
        );
    }
}

/// Candidates through the serving index (`candidates = "index"`): the same files, marked as
/// such, seen items still left out, and on this small catalogue the same lists as the exact
/// ranking; asking for them without an index is refused before any work.
#[test]
fn candidates_through_the_index_match_the_exact_ones_on_a_small_catalogue() {
    let (dir, encode_dir, model_dir) = trained();
    let run = |out: &str, candidates| {
        let config = ExportConfig {
            top_k: 10,
            candidates,
            ..ExportConfig::default()
        };
        let out = dir.path().join(out);
        export_model(
            &encode_dir,
            &model_dir,
            &out,
            "m",
            &config,
            "h",
            &Device::Cpu,
        )
        .map(|s| (s, out))
    };
    let (exact, exact_dir) = run("exact", CandidateSearch::Exact).unwrap();
    let (indexed, index_dir) = run("index", CandidateSearch::Index).unwrap();
    assert_eq!(indexed.candidates, CandidateSearch::Index);
    assert_eq!(exact.candidates, CandidateSearch::Exact);
    let lists = |d: &Path| {
        let c = d.join("candidates.parquet");
        (ints(&c, "user_id"), ints(&c, "item_id"))
    };
    let (a, b) = (lists(&exact_dir), lists(&index_dir));
    assert_eq!(a.0, b.0);
    let same = a.1.iter().zip(&b.1).filter(|(x, y)| x == y).count();
    assert!(
        same as f64 >= 0.99 * a.1.len() as f64,
        "{same} of {}",
        a.1.len()
    );
    let metadata = |d: &Path| {
        Table::read(&d.join("candidates.parquet"))
            .unwrap()
            .metadata("recall.search")
            .map(str::to_owned)
    };
    assert_eq!(metadata(&exact_dir).as_deref(), Some("exact"));
    assert_eq!(metadata(&index_dir).as_deref(), Some("index"));
    // The probe's recall is measured on the same users either way.
    assert_eq!(
        exact.index.as_ref().unwrap().probe_users,
        indexed.index.as_ref().unwrap().probe_users
    );

    let no_index = ExportConfig {
        build_index: false,
        candidates: CandidateSearch::Index,
        ..ExportConfig::default()
    };
    let err = export_model(
        &encode_dir,
        &model_dir,
        &dir.path().join("never"),
        "m",
        &no_index,
        "h",
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("export.build_index"), "{err}");
    assert!(!dir.path().join("never").exists());
}

/// The candidates' seen filter by view: `none` keeps seen items (the popular ones come back),
/// `recent` leaves out the newest items the model reads and says how many in the manifest.
#[test]
fn the_candidates_seen_filter_follows_its_view() {
    let (dir, encode_dir, model_dir) = trained();
    let ingested = Table::read(&dir.path().join("interactions.parquet")).unwrap();
    let (iu, ii, seq) = (
        ingested.ints("user_id").unwrap(),
        ingested.ints("item_id").unwrap(),
        ingested.ints("seq").unwrap(),
    );
    let export = |view: &str| {
        let config: ExportConfig = serde_json::from_value(
            serde_json::json!({ "top_k": 20, "seen_filter": view, "build_index": false }),
        )
        .unwrap();
        let out = dir.path().join(format!("export-{view}"));
        let summary = export_model(
            &encode_dir,
            &model_dir,
            &out,
            "ydnn",
            &config,
            "hash",
            &Device::Cpu,
        )
        .unwrap();
        let candidates = out.join("candidates.parquet");
        let pairs: Vec<(i64, i64)> = ints(&candidates, "user_id")
            .into_iter()
            .zip(ints(&candidates, "item_id"))
            .collect();
        (summary, pairs)
    };
    let (none, unfiltered) = export("none");
    assert_eq!(none.recent_window, None);
    let seen: std::collections::HashSet<(i64, i64)> =
        iu.iter().copied().zip(ii.iter().copied()).collect();
    assert!(
        unfiltered.iter().any(|p| seen.contains(p)),
        "nothing seen came back unfiltered"
    );
    let (recent, filtered) = export("recent");
    let window = recent.recent_window.unwrap() as i64;
    // Each user's newest `window` interactions, by `seq`.
    let last: std::collections::HashMap<i64, i64> =
        iu.iter()
            .zip(&seq)
            .fold(Default::default(), |mut m, (&u, &s)| {
                let e = m.entry(u).or_insert(s);
                *e = (*e).max(s);
                m
            });
    let newest: std::collections::HashSet<(i64, i64)> = (0..iu.len())
        .filter(|&r| seq[r] > last[&iu[r]] - window)
        .map(|r| (iu[r], ii[r]))
        .collect();
    assert!(filtered.iter().all(|p| !newest.contains(p)));
    // The old key is refused with the new one named.
    let old: ExportConfig =
        serde_json::from_value(serde_json::json!({ "filter_seen": false })).unwrap();
    let err = old.validate().unwrap_err().to_string();
    assert!(err.contains("seen_filter = \"none\""), "{err}");
}

/// An index takes new items without a rebuild: built over the first 800 of 1,000 random unit
/// vectors, saved and reloaded (the serving index of yesterday), the other 200 added; the grown
/// index answers like one built at once (recall@10 against exact search), every added item is
/// its own nearest neighbour, and a key already in it is refused.
#[test]
fn an_index_takes_new_items_without_a_rebuild() {
    use rand::Rng;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    let unit = |rng: &mut rand_xoshiro::Xoshiro256PlusPlus, n: usize| {
        let mut v = Vec::with_capacity(n * 16);
        for _ in 0..n {
            let row: Vec<f32> = (0..16).map(|_| rng.random_range(-1.0..1.0)).collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.extend(row.iter().map(|x| x / norm));
        }
        Embeddings::new(16, v).unwrap()
    };
    let items = unit(&mut rng, 1000);
    let users = unit(&mut rng, 200);
    let config = index::IndexConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.usearch");
    ApproximateIndex::build(&items.select_rows(0..800), 0, config)
        .unwrap()
        .save(&path)
        .unwrap();
    let mut grown = ApproximateIndex::load(&path).unwrap();
    assert_eq!(grown.add(&items, 800..1000).unwrap(), 200);
    assert_eq!(grown.sidecar().items, 1000);
    let exact = recall_eval::topk::exact(&users, &items, 10, &Default::default()).unwrap();
    let recall = index::recall_at(&grown.top_k(&users, 10, None).unwrap(), &exact, 10);
    let at_once = ApproximateIndex::build(&items, 0, config).unwrap();
    let recall_at_once = index::recall_at(&at_once.top_k(&users, 10, None).unwrap(), &exact, 10);
    assert!(
        recall >= 0.95 && recall >= recall_at_once - 0.02,
        "{recall} vs {recall_at_once}"
    );
    for row in 800..1000 {
        assert_eq!(
            grown.search(items.row(row), 1, &[]).unwrap()[0].0,
            row as u32
        );
    }
    let err = grown.add(&items, 799..801).unwrap_err().to_string();
    assert!(err.contains("799") && err.contains("already"), "{err}");
}

/// The user tower is written as an ONNX graph onnxruntime can load: every value defined
/// before it is read, a dynamic batch dimension, the history input `H` wide, one unit-vector
/// output; without `onnx` nothing is written. (CI runs the graphs with onnxruntime and
/// compares their vectors with the exported ones: `python/check_reference.py`.)
#[test]
fn the_user_tower_is_a_well_formed_onnx_graph() {
    use prost::Message;
    use recall_export::onnx::{self, graph, proto};
    let (dir, encode_dir, model_dir) = trained();
    let out = dir.path().join("export");
    let summary = export_model(
        &encode_dir,
        &model_dir,
        &out,
        "ydnn",
        &ExportConfig::default(),
        "hash",
        &Device::Cpu,
    )
    .unwrap();
    assert!(summary.files.iter().any(|f| f.file == onnx::USER_TOWER));
    // YoutubeDNN's item side is the embedding row alone: no item tower.
    assert!(!out.join(onnx::ITEM_TOWER).exists());
    let bytes = std::fs::read(out.join(onnx::USER_TOWER)).unwrap();
    let model = proto::ModelProto::decode(&bytes[..]).unwrap();
    assert_eq!(model.opset_import[0].version, graph::OPSET);
    let g = model.graph.unwrap();
    graph::well_formed(&g).unwrap();
    let dims = |v: &proto::ValueInfoProto| -> Vec<String> {
        let shape = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        shape
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value.as_ref().unwrap() {
                proto::DimensionValue::DimValue(n) => n.to_string(),
                proto::DimensionValue::DimParam(s) => s.clone(),
            })
            .collect()
    };
    let history = g.input.iter().find(|i| i.name == "history").unwrap();
    let data = EncodedData::read_dir(&encode_dir).unwrap();
    assert_eq!(
        dims(history),
        ["batch".to_owned(), data.max_len.to_string()]
    );
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, "user_vector");
    assert_eq!(dims(&g.output[0])[0], "batch");
    // A graph reading a value nobody made is refused.
    let mut broken = g.clone();
    broken.node[0].input[0] = "nothing".into();
    assert!(graph::well_formed(&broken).unwrap_err().contains("nothing"));

    let without = dir.path().join("without");
    let config = ExportConfig {
        onnx: false,
        ..ExportConfig::default()
    };
    export_model(
        &encode_dir,
        &model_dir,
        &without,
        "ydnn",
        &config,
        "hash",
        &Device::Cpu,
    )
    .unwrap();
    assert!(!without.join(onnx::USER_TOWER).exists());
}

/// With `onnx_external_data = "always"` the tower's tables leave the model file for
/// `user_tower.onnx.data` (ONNX's external data: location, offset, length, 4 KiB aligned), the
/// manifest lists that file, and putting each range back gives exactly the constants of the
/// inline model.
#[test]
fn external_data_holds_the_same_constants_as_the_inline_model() {
    use prost::Message;
    use recall_export::onnx::{self, ExternalData, proto};
    let (dir, encode_dir, model_dir) = trained();
    let export = |name: &str, external: ExternalData| {
        let out = dir.path().join(name);
        let config = ExportConfig {
            onnx_external_data: external,
            build_index: false,
            ..ExportConfig::default()
        };
        let summary = export_model(
            &encode_dir,
            &model_dir,
            &out,
            "ydnn",
            &config,
            "hash",
            &Device::Cpu,
        )
        .unwrap();
        let bytes = std::fs::read(out.join(onnx::USER_TOWER)).unwrap();
        let model = proto::ModelProto::decode(&bytes[..]).unwrap();
        (out, summary, model.graph.unwrap())
    };
    let (_, inline_summary, inline) = export("inline", ExternalData::Auto);
    let data_name = onnx::data_file(onnx::USER_TOWER);
    assert!(!inline_summary.files.iter().any(|f| f.file == data_name));
    let (out, summary, outside) = export("outside", ExternalData::Always);
    assert!(summary.files.iter().any(|f| f.file == data_name));
    let data = std::fs::read(out.join(&data_name)).unwrap();
    let mut moved = 0;
    for (a, b) in inline.initializer.iter().zip(&outside.initializer) {
        assert_eq!(a.name, b.name);
        if b.data_location != proto::data_location::EXTERNAL {
            assert!(a.raw_data.len() < 1024, "{} stayed inline", a.name);
            assert_eq!(a.raw_data, b.raw_data);
            continue;
        }
        assert!(b.raw_data.is_empty());
        let entry = |key: &str| {
            b.external_data
                .iter()
                .find(|e| e.key == key)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(entry("location"), data_name);
        let offset: usize = entry("offset").parse().unwrap();
        let length: usize = entry("length").parse().unwrap();
        assert_eq!(offset % 4096, 0);
        assert_eq!(
            &data[offset..offset + length],
            &a.raw_data[..],
            "{}",
            a.name
        );
        moved += 1;
    }
    assert!(moved > 0, "no constant went to the data file");
    assert_eq!(inline.node, outside.node);
}
