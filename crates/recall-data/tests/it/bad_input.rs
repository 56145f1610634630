//! Every bad input gets an error that names the file and the line, column or key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use recall_data::generic::GenericSource;
use recall_data::{IngestConfig, ingest};

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn generic(path: PathBuf) -> IngestConfig {
    IngestConfig::Generic(GenericSource::new(path))
}

pub(crate) fn error(config: &IngestConfig) -> String {
    ingest(config).unwrap_err().to_string()
}

fn ml_1m_dir(ratings: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ratings.dat", ratings);
    write(dir.path(), "users.dat", b"1::F::1::10::48067\n");
    write(
        dir.path(),
        "movies.dat",
        b"1::Toy Story (1995)::Animation\n",
    );
    dir
}

#[test]
fn a_malformed_ratings_dat_line_is_named_by_number() {
    let dir = ml_1m_dir(b"1::1::5::978300760\n1::1::5::978300761\n1::1:5::978300762\n");
    let msg = error(&IngestConfig::Movielens1m {
        dir: dir.path().to_owned(),
    });
    assert!(msg.contains("ratings.dat, line 3"), "{msg}");
    assert!(msg.contains("expected 4 fields"), "{msg}");
}

#[test]
fn a_ratings_dat_in_another_encoding_fails_on_its_first_line() {
    // UTF-16LE with BOM: every other byte is NUL, so no field parses.
    let text: Vec<u8> = "\u{feff}1::1::5::978300760\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let dir = ml_1m_dir(&text);
    let msg = error(&IngestConfig::Movielens1m {
        dir: dir.path().to_owned(),
    });
    assert!(msg.contains("ratings.dat, line 1"), "{msg}");
}

#[test]
fn a_non_numeric_rating_names_line_and_field() {
    let dir = ml_1m_dir(b"1::1::five::978300760\n");
    let msg = error(&IngestConfig::Movielens1m {
        dir: dir.path().to_owned(),
    });
    assert!(msg.contains("line 1") && msg.contains("`Rating`"), "{msg}");
}

#[test]
fn a_malformed_ml_100k_release_date_names_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "u.data",
        b"1\t1\t5\t881250949\n1\t2\t3\t881250950\n",
    );
    write(dir.path(), "u.user", b"1|24|M|technician|85711\n");
    write(dir.path(), "u.genre", b"unknown|0\nAction|1\n");
    write(
        dir.path(),
        "u.item",
        b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n2|Heat (1995)|1995-12-15||http://x|0|1\n",
    );
    let msg = error(&IngestConfig::Movielens100k {
        dir: dir.path().to_owned(),
    });
    assert!(msg.contains("u.item, line 2"), "{msg}");
    assert!(
        msg.contains("\"1995-12-15\" is not a DD-Mon-YYYY date"),
        "{msg}"
    );
}

#[test]
fn a_csv_with_the_wrong_delimiter_says_to_check_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "i.csv", b"user_id;item_id;timestamp\n1;2;3\n");
    let msg = error(&generic(path));
    assert!(msg.contains("i.csv has no column `user_id`"), "{msg}");
    assert!(msg.contains("check the `delimiter`"), "{msg}");
}

#[test]
fn a_ragged_csv_row_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "i.csv",
        b"user_id,item_id,timestamp\n1,2,3\n1,3\n",
    );
    let msg = error(&generic(path));
    assert!(msg.contains("i.csv, line 3"), "{msg}");
}

#[test]
fn an_empty_id_in_csv_is_named_by_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "i.csv",
        b"user_id,item_id,timestamp\n1,2,3\n,3,4\n",
    );
    let msg = error(&generic(path));
    assert!(
        msg.contains("line 3") && msg.contains("`user_id` is empty"),
        "{msg}"
    );
}

#[test]
fn string_ids_are_kept_as_strings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "i.csv",
        b"user_id,item_id,timestamp\nalice,B00X,3\nalice,B00Y,1\nbob,B00X,2\n",
    );
    let d = ingest(&generic(path)).unwrap();
    let recall_core::RawIds::Str(items) = &d.interactions.item_id else {
        panic!("expected string ids")
    };
    // alice's events ordered by time: B00Y (t=1) then B00X (t=3).
    assert_eq!(items.value(0), "B00Y");
    assert_eq!(items.value(1), "B00X");
}

fn parquet(dir: &Path, columns: Vec<(&str, arrow_array::ArrayRef)>) -> PathBuf {
    let path = dir.join("i.parquet");
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    recall_core::write::write_parquet(&path, &batch, &[]).unwrap();
    path
}

#[test]
fn a_missing_parquet_column_lists_the_columns_present() {
    let dir = tempfile::tempdir().unwrap();
    let path = parquet(
        dir.path(),
        vec![
            ("user_id", Arc::new(Int64Array::from(vec![1])) as _),
            ("item", Arc::new(Int64Array::from(vec![1])) as _),
            ("timestamp", Arc::new(Int64Array::from(vec![1])) as _),
        ],
    );
    let msg = error(&generic(path));
    assert!(msg.contains("i.parquet has no column `item_id`"), "{msg}");
    assert!(
        msg.contains("columns present: user_id, item, timestamp"),
        "{msg}"
    );
}

#[test]
fn a_wrong_column_type_names_column_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let path = parquet(
        dir.path(),
        vec![
            ("user_id", Arc::new(Float64Array::from(vec![1.5])) as _),
            ("item_id", Arc::new(Int64Array::from(vec![1])) as _),
            ("timestamp", Arc::new(Int64Array::from(vec![1])) as _),
        ],
    );
    let msg = error(&generic(path));
    assert!(
        msg.contains("column `user_id` has type Float64, expected an integer type"),
        "{msg}"
    );
}

#[test]
fn null_ids_are_named_with_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = parquet(
        dir.path(),
        vec![
            ("user_id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            (
                "item_id",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])) as _,
            ),
            ("timestamp", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
        ],
    );
    let msg = error(&generic(path));
    assert!(
        msg.contains("column `item_id` has 1 null value(s), the first at row 1"),
        "{msg}"
    );
}

#[test]
fn an_empty_table_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let empty: Vec<i64> = Vec::new();
    let path = parquet(
        dir.path(),
        vec![
            ("user_id", Arc::new(Int64Array::from(empty.clone())) as _),
            ("item_id", Arc::new(Int64Array::from(empty.clone())) as _),
            ("timestamp", Arc::new(Int64Array::from(empty)) as _),
        ],
    );
    let msg = error(&generic(path));
    assert!(msg.contains("i.parquet has no rows"), "{msg}");
}

#[test]
fn a_missing_file_is_named() {
    let msg = error(&generic(PathBuf::from("/no/such/dir/i.parquet")));
    assert!(
        msg.contains("not found") && msg.contains("/no/such/dir/i.parquet"),
        "{msg}"
    );
}

#[test]
fn a_truncated_parquet_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = parquet(
        dir.path(),
        vec![
            ("user_id", Arc::new(Int64Array::from(vec![1; 1000])) as _),
            ("item_id", Arc::new(Int64Array::from(vec![1; 1000])) as _),
            ("timestamp", Arc::new(Int64Array::from(vec![1; 1000])) as _),
        ],
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let msg = error(&generic(path));
    assert!(
        msg.contains("i.parquet is not a readable Parquet file"),
        "{msg}"
    );
}
