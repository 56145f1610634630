//! Every input kept under `tests/fuzz_regressions/` goes through its fuzz target's parser the
//! way the target feeds it (see `fuzz/fuzz_targets/`): an error is fine, a panic is a failure.

use std::path::{Path, PathBuf};

fn write_parts(dir: &Path, data: &[u8], names: &[&str]) {
    let mut parts = data.split(|&b| b == 0);
    for name in names {
        std::fs::write(dir.join(name), parts.next().unwrap_or(&[])).unwrap();
    }
}

fn run(target: &str, data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    match target {
        "ml_1m_ratings" => {
            write_parts(d, data, &["ratings.dat"]);
            let _ = recall_data::movielens::read_ml_1m_ratings(&d.join("ratings.dat"));
        }
        "ml_1m_side_tables" => {
            write_parts(d, data, &["users.dat", "movies.dat"]);
            let _ = recall_data::movielens::read_ml_1m_users(&d.join("users.dat"));
            let _ = recall_data::movielens::read_ml_1m_movies(&d.join("movies.dat"));
        }
        "ml_100k" => {
            write_parts(d, data, &["u.data", "u.user", "u.item"]);
            let _ = recall_data::movielens::read_ml_100k(d);
        }
        "ml_latest_csv" => {
            write_parts(d, data, &["ratings.csv", "movies.csv"]);
            let _ = recall_data::movielens::read_ml_latest(d);
        }
        "generic_csv" => {
            write_parts(d, data, &["events.csv"]);
            let text = format!(
                "[generic]\ninteractions = {:?}\nuser_column = \"u\"\nitem_column = \"i\"\norder_column = \"t\"\ntimestamp_column = \"t\"\n",
                d.join("events.csv").display().to_string()
            );
            let config: recall_data::IngestConfig = toml::from_str(&text).unwrap();
            let _ = recall_data::ingest(&config);
        }
        other => panic!("fuzz regression for an unknown target {other:?}"),
    }
}

#[test]
fn kept_fuzz_inputs_give_results_or_errors_never_panics() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((target, _)) = name.split_once('-') else {
            continue; // README.md
        };
        run(target, &std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "expected the kept inputs in {}", dir.display());
}
