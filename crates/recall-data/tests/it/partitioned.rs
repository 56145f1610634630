//! An interactions directory of part files (what Spark and warehouse exports write) reads as
//! the one file they would make together, and its mistakes are named by file.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use recall_core::RawIds;
use recall_data::ingest;

use crate::bad_input::{error, generic};

fn part(path: &Path, users: Vec<i64>, items: Vec<i64>, times: Vec<i64>) {
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Int64Array::from(users)) as ArrayRef),
        ("item_id", Arc::new(Int64Array::from(items)) as ArrayRef),
        ("timestamp", Arc::new(Int64Array::from(times)) as ArrayRef),
    ])
    .unwrap();
    recall_core::write::write_parquet(path, &batch, &[]).unwrap();
}

/// A part of one interaction (user 1, item 1, time 1).
fn one_row(path: &Path) {
    part(path, vec![1], vec![1], vec![1]);
}

fn ints(ids: &RawIds) -> Vec<i64> {
    match ids {
        RawIds::Int(v) => v.clone(),
        RawIds::Str(_) => panic!("expected integer ids"),
    }
}

/// Three parts (in an order their names sort differently from their creation), Spark's
/// `_SUCCESS` and a hidden checksum beside them: the same interactions, sequence positions and
/// duplicates dropped as the single file of their rows in name order. User 1 has two items at
/// time 5, one in the first part and one in the last: the tie keeps file order, as a tie
/// inside one file keeps row order.
#[test]
fn a_directory_of_parts_reads_as_their_rows_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let parts = dir.path().join("events");
    std::fs::create_dir(&parts).unwrap();
    let rows = [
        (vec![1, 2, 1], vec![10, 20, 11], vec![5, 1, 3]),
        (vec![2, 3, 3], vec![21, 30, 30], vec![2, 7, 7]),
        (vec![1, 3], vec![12, 31], vec![5, 8]),
    ];
    for (name, (u, i, t)) in [
        "part-00002.parquet",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    .iter()
    .zip([rows[2].clone(), rows[0].clone(), rows[1].clone()])
    {
        part(&parts.join(name), u, i, t);
    }
    std::fs::write(parts.join("_SUCCESS"), b"").unwrap();
    std::fs::write(parts.join(".part-00000.parquet.crc"), b"crc").unwrap();
    let single = dir.path().join("events.parquet");
    let concat = |k: usize| -> Vec<i64> {
        rows.iter()
            .flat_map(|r| [&r.0, &r.1, &r.2][k].clone())
            .collect()
    };
    part(&single, concat(0), concat(1), concat(2));

    let from_dir = ingest(&generic(parts)).unwrap();
    let from_file = ingest(&generic(single)).unwrap();
    let (a, b) = (&from_dir.interactions, &from_file.interactions);
    assert_eq!(ints(&a.user_id), ints(&b.user_id));
    assert_eq!(ints(&a.item_id), ints(&b.item_id));
    assert_eq!(a.timestamp, b.timestamp);
    assert_eq!(a.seq, b.seq);
    assert_eq!(from_dir.stats, from_file.stats);
    // The duplicate (3, 30, 7) is dropped once; user 1 reads 11, then 10 before 12 (the tie).
    assert_eq!(from_dir.stats.duplicates_dropped, 1);
    assert_eq!(&ints(&a.item_id)[..3], &[11, 10, 12]);
}

#[test]
fn an_empty_directory_says_it_holds_no_data_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("_SUCCESS"), b"").unwrap();
    let msg = error(&generic(dir.path().to_owned()));
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("no data files"), "{msg}");
}

#[test]
fn mixed_formats_in_one_directory_are_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    one_row(&dir.path().join("a.parquet"));
    std::fs::write(
        dir.path().join("b.csv"),
        b"user_id,item_id,timestamp\n1,2,3\n",
    )
    .unwrap();
    let msg = error(&generic(dir.path().to_owned()));
    assert!(msg.contains("a.parquet") && msg.contains("b.csv"), "{msg}");
    assert!(msg.contains("ingest.generic.interactions"), "{msg}");
}

#[test]
fn a_part_with_string_ids_after_integer_ones_is_named() {
    let dir = tempfile::tempdir().unwrap();
    one_row(&dir.path().join("part-0.parquet"));
    let batch = RecordBatch::try_from_iter([
        ("user_id", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
        (
            "item_id",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        ),
        ("timestamp", Arc::new(Int64Array::from(vec![2])) as ArrayRef),
    ])
    .unwrap();
    recall_core::write::write_parquet(&dir.path().join("part-1.parquet"), &batch, &[]).unwrap();
    let msg = error(&generic(dir.path().to_owned()));
    assert!(msg.contains("part-1.parquet"), "{msg}");
    assert!(msg.contains("`item_id`") && msg.contains("string"), "{msg}");
}

#[test]
fn a_bad_part_is_named_by_its_own_file() {
    let dir = tempfile::tempdir().unwrap();
    one_row(&dir.path().join("part-0.parquet"));
    let bytes = std::fs::read(dir.path().join("part-0.parquet")).unwrap();
    std::fs::write(dir.path().join("part-1.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let msg = error(&generic(dir.path().to_owned()));
    assert!(msg.contains("part-1.parquet"), "{msg}");
}
