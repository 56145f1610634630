//! Embedding tables as Parquet: an id column (the original ids, Int64 or Utf8), an optional
//! `index_key` (Int64, the key of the serving index), and `embedding`
//! (`FixedSizeList<Float32, dim>`); the model name, entity and dimension go into the file's
//! key-value metadata (`recall.model`, `recall.entity`, `recall.dim`, `recall.normalized`).
//!
//! [`check`] refuses what a serving system would silently mis-rank: a NaN or infinite value,
//! an all-zero vector, ids and rows of different counts, duplicate ids. Nothing is written
//! unless the whole table passes. Read a table back with
//! [`recall_eval::Embeddings::read_parquet`].

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array};
use arrow_schema::{DataType, Field};
use recall_core::RawIds;
use recall_eval::Embeddings;

use crate::error::{Error, Result};

/// Column of the vectors.
pub const EMBEDDING: &str = "embedding";
/// Column of the serving-index key (item tables only).
pub const INDEX_KEY: &str = "index_key";
/// With cold items: whether each item is one (indexed from the item side table, no training
/// interaction; its vector comes from its features alone where the model has that path).
pub const COLD: &str = "cold";
/// Items' release times (Int64 Unix seconds, null undated) with `encode.item_release`: what an
/// item-age prior ages items from at serving time.
pub const RELEASE_TIME: &str = recall_core::columns::RELEASE_TIME;

/// Checks a table before export; `what` names it in errors ("item embeddings of `dssm`").
pub fn check(what: &str, ids: &RawIds, vectors: &[f32], dim: usize) -> Result<()> {
    if dim == 0 || !vectors.len().is_multiple_of(dim) {
        return Err(Error::Invalid(format!(
            "{what}: {} values do not form vectors of dimension {dim}",
            vectors.len()
        )));
    }
    let rows = vectors.len() / dim;
    if rows != ids.len() {
        return Err(Error::Invalid(format!(
            "{what}: {} ids for {rows} vectors",
            ids.len()
        )));
    }
    if rows == 0 {
        return Err(Error::Invalid(format!("{what}: the table is empty")));
    }
    for (row, v) in vectors.chunks_exact(dim).enumerate() {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            return Err(Error::Invalid(format!(
                "{what}: id {} has a non-finite value ({x}); the model diverged: retrain with a \
                 lower learning rate",
                ids.display(row)
            )));
        }
        if v.iter().all(|&x| x == 0.0) {
            return Err(Error::Invalid(format!(
                "{what}: id {} has an all-zero vector, which ties every score; it is a padding \
                 or untrained row that should not be exported",
                ids.display(row)
            )));
        }
    }
    let mut sorted: Vec<String> = (0..rows).map(|r| ids.display(r)).collect();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid(format!("{what}: id {} appears twice", w[0])));
    }
    Ok(())
}

/// The vectors as a `FixedSizeList<Float32, dim>` array.
pub fn vector_array(vectors: &Embeddings) -> Result<ArrayRef> {
    let dim = i32::try_from(vectors.dim())
        .map_err(|_| Error::Invalid(format!("dimension {} is too large", vectors.dim())))?;
    let values = Arc::new(Float32Array::from(vectors.as_slice().to_vec()));
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(field, dim, values, None)
        .map_err(|e| Error::Invalid(format!("building the vector column: {e}")))?;
    Ok(Arc::new(list))
}

/// What is written with a table.
#[derive(Debug, Clone, Copy)]
pub struct TableInfo<'a> {
    /// Model name (`dssm`, `youtubednn`, ...).
    pub model: &'a str,
    /// `"item"` or `"user"`.
    pub entity: &'a str,
    /// Name of the id column (`item_id`, `user_id`).
    pub id_column: &'a str,
    /// True when every vector has unit length (both models L2-normalise).
    pub normalized: bool,
}

/// Checks and writes an embedding table atomically; `keys` adds the `index_key` column, `cold`
/// the [`COLD`] one and `released` the [`RELEASE_TIME`] one. Returns the number of rows written.
pub fn write(
    path: &Path,
    info: TableInfo<'_>,
    ids: &RawIds,
    vectors: &Embeddings,
    keys: Option<&[i64]>,
    cold: Option<&[bool]>,
    released: Option<&[Option<i64>]>,
) -> Result<usize> {
    let what = format!("{} embeddings of `{}`", info.entity, info.model);
    check(&what, ids, vectors.as_slice(), vectors.dim())?;
    // A per-row column must have a value for every row.
    let one_per_row = |n: usize, values: &str| {
        if n == ids.len() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what}: {n} {values} for {} rows",
                ids.len()
            )))
        }
    };
    let mut columns: Vec<(&str, ArrayRef, bool)> = vec![(info.id_column, ids.to_array(), false)];
    if let Some(keys) = keys {
        one_per_row(keys.len(), "index keys")?;
        columns.push((INDEX_KEY, Arc::new(Int64Array::from(keys.to_vec())), false));
    }
    if let Some(cold) = cold {
        one_per_row(cold.len(), "cold flags")?;
        columns.push((
            COLD,
            Arc::new(arrow_array::BooleanArray::from(cold.to_vec())),
            false,
        ));
    }
    if let Some(released) = released {
        one_per_row(released.len(), "release times")?;
        columns.push((
            RELEASE_TIME,
            Arc::new(Int64Array::from(released.to_vec())),
            true,
        ));
    }
    columns.push((EMBEDDING, vector_array(vectors)?, false));
    let batch = recall_core::table::batch(columns)?;
    let metadata = [
        ("recall.model", info.model.to_owned()),
        ("recall.entity", info.entity.to_owned()),
        ("recall.dim", vectors.dim().to_string()),
        ("recall.normalized", info.normalized.to_string()),
    ];
    recall_core::write::write_parquet(path, &batch, &metadata)?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TableInfo<'static> {
        TableInfo {
            model: "m",
            entity: "item",
            id_column: "item_id",
            normalized: false,
        }
    }

    #[test]
    fn a_table_round_trips_with_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let ids = RawIds::Int(vec![10, 20]);
        let v = Embeddings::new(3, vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0]).unwrap();
        assert_eq!(
            write(&path, info(), &ids, &v, Some(&[2, 3]), None, None).unwrap(),
            2
        );
        let (back_ids, back) = Embeddings::read_parquet(&path, "item_id", EMBEDDING).unwrap();
        assert_eq!(back, v);
        assert!(matches!(back_ids, RawIds::Int(ref x) if x == &[10, 20]));
        let table = recall_core::Table::read(&path).unwrap();
        assert_eq!(table.ints(INDEX_KEY).unwrap(), [2, 3]);
        assert!(!table.has_column(RELEASE_TIME));
        // Release times, nulls kept; one per row or refused.
        write(&path, info(), &ids, &v, None, None, Some(&[Some(5), None])).unwrap();
        let table = recall_core::Table::read(&path).unwrap();
        assert_eq!(table.nullable_ints(RELEASE_TIME).unwrap(), [Some(5), None]);
        let err = write(&path, info(), &ids, &v, None, None, Some(&[Some(5)])).unwrap_err();
        assert!(
            err.to_string().contains("1 release times for 2 rows"),
            "{err}"
        );
    }

    #[test]
    fn bad_tables_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let ids = RawIds::Int(vec![10, 20]);
        let zero = Embeddings::new(2, vec![1.0, 0.0, 0.0, 0.0]).unwrap();
        let err = write(&path, info(), &ids, &zero, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("id 20 has an all-zero vector"), "{err}");
        let err = check("t", &ids, &[1.0, f32::NAN, 1.0, 1.0], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("id 10 has a non-finite value"), "{err}");
        let err = check("t", &ids, &[1.0, 1.0], 2).unwrap_err().to_string();
        assert!(err.contains("2 ids for 1 vectors"), "{err}");
        let dup = RawIds::Int(vec![7, 7]);
        let err = check("t", &dup, &[1.0, 1.0, 1.0, 2.0], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("id 7 appears twice"), "{err}");
        assert!(!path.exists());
    }
}
