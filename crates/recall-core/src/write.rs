//! Atomic output. Every file a stage writes goes to a temporary name beside its destination,
//! is flushed and synced, and only then renamed over the destination: a killed process leaves
//! either the old file or the new one, never half of one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::{Array, ArrayRef, RecordBatch, make_array};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// The temporary path used while `path` is being written.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is a temporary name [`temporary_path`] makes.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Deletes the temporaries under `dir` (recursively) that atomic writes leave when their
/// process is killed before the rename (the destinations themselves are never half-written).
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_stale_temporaries(&path);
        } else if entry.file_name().to_str().is_some_and(is_temporary) {
            tracing::debug!("removing {} left by an interrupted run", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Deletes the temporaries an interrupted write of `path` left beside it (any process's),
/// for a writer into a directory it does not own (the model cards in `export/<model>/`).
pub fn remove_stale_temporaries_of(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `path` atomically through `fill`, creating its parent directory if needed.
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io("cannot create output directory", parent, e))?;
    }
    let tmp = temporary_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        let mut writer = BufWriter::new(file);
        fill(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(|e| Error::io("cannot write", &tmp, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("cannot sync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot rename into place", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes atomically (JSON manifests, configs).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes)
            .map_err(|e| Error::io("cannot write", path, e))
    })
}

/// Rows per Parquet row group. The writer holds a whole row group's encoded pages in memory
/// until it closes: at parquet's default (1,048,576 rows) a million-item table of 64-float
/// vectors buffered about three quarters of a GB on top of the batch (MEASUREMENTS.md, the
/// 10 M pipeline's memory). Files under this many rows are unchanged.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// The writer settings of every Parquet file we write: zstd level 3, row groups of
/// [`ROW_GROUP_ROWS`], string key-value metadata in the footer.
fn writer_properties(metadata: &[(&str, String)]) -> Result<WriterProperties> {
    let kv = metadata
        .iter()
        .map(|(k, v)| KeyValue::new((*k).to_owned(), v.clone()))
        .collect::<Vec<_>>();
    let level = ZstdLevel::try_new(3).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_key_value_metadata((!kv.is_empty()).then_some(kv))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// `batch` with each top-level column's validity buffer dropped where it marks no null. The
/// writer cuts a nullable column's pages at other rows when its array carries a validity
/// buffer than when it does not (20,480 vs 20,000 rows), even with no null in it; whether a
/// row group's array has one depends on how the rows were chunked (a slice of a batch with
/// nulls elsewhere keeps the buffer, a concatenation of chunks without nulls has none). Without
/// the empty buffers the file depends on the rows alone. List children keep theirs.
fn without_empty_validity(batch: &RecordBatch) -> Result<RecordBatch> {
    if !batch
        .columns()
        .iter()
        .any(|a| a.null_count() == 0 && a.nulls().is_some())
    {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|array| {
            if array.null_count() > 0 || array.nulls().is_none() {
                return Ok(array.clone());
            }
            let data = array
                .to_data()
                .into_builder()
                .nulls(None)
                .build()
                .map_err(|e| Error::arrow("dropping an empty validity buffer", e))?;
            Ok(make_array(data))
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(batch.schema(), columns)
        .map_err(|e| Error::arrow("rebuilding a batch to write", e))
}

/// Writes one batch as a zstd-compressed Parquet file, atomically, with string key-value
/// metadata in the footer (readable as `schema.metadata` in pyarrow), in row groups of
/// [`ROW_GROUP_ROWS`].
pub fn write_parquet(path: &Path, batch: &RecordBatch, metadata: &[(&str, String)]) -> Result<()> {
    write_parquet_batches(path, batch.schema(), metadata, |sink| sink.write(batch))
}

/// Writes a Parquet file from batches `fill` hands the sink one at a time, atomically, holding
/// at most one row group of rows besides the batch being handed over: how a table too large
/// for memory is written. The file is byte for byte what [`write_parquet`] writes for the
/// concatenated batches.
pub fn write_parquet_batches(
    path: &Path,
    schema: SchemaRef,
    metadata: &[(&str, String)],
    fill: impl FnOnce(&mut BatchSink<'_>) -> Result<()>,
) -> Result<()> {
    let props = writer_properties(metadata)?;
    write_atomic(path, |w| {
        let writer = ArrowWriter::try_new(w, schema.clone(), Some(props))
            .map_err(|e| Error::Internal(format!("parquet writer for {}: {e}", path.display())))?;
        let mut sink = BatchSink {
            writer,
            schema,
            pending: Vec::new(),
            pending_rows: 0,
            path,
        };
        fill(&mut sink)?;
        sink.finish()
    })
}

/// Where [`write_parquet_batches`]'s batches go. Rows are handed to the Parquet writer a whole
/// row group at a time (the writer cuts one large batch the same way), so how the caller
/// chunks its batches does not change the file.
#[derive(Debug)]
pub struct BatchSink<'a> {
    writer: ArrowWriter<&'a mut BufWriter<File>>,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    path: &'a Path,
}

impl BatchSink<'_> {
    /// Adds `batch`'s rows to the file.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.pending.is_empty() && batch.num_rows() >= ROW_GROUP_ROWS {
            // Whole row groups straight through; only the tail waits.
            let whole = batch.num_rows() / ROW_GROUP_ROWS * ROW_GROUP_ROWS;
            self.write_now(&batch.slice(0, whole))?;
            return self.write(&batch.slice(whole, batch.num_rows() - whole));
        }
        if batch.num_rows() > 0 {
            self.pending.push(batch.clone());
            self.pending_rows += batch.num_rows();
        }
        while self.pending_rows >= ROW_GROUP_ROWS {
            let all = self.take_pending()?;
            self.write_now(&all.slice(0, ROW_GROUP_ROWS))?;
            let rest = all.slice(ROW_GROUP_ROWS, all.num_rows() - ROW_GROUP_ROWS);
            if rest.num_rows() > 0 {
                self.pending_rows = rest.num_rows();
                self.pending.push(rest);
            }
        }
        Ok(())
    }

    fn take_pending(&mut self) -> Result<RecordBatch> {
        let mut batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        if batches.len() == 1 {
            return Ok(batches.remove(0));
        }
        arrow_select::concat::concat_batches(&self.schema, &batches)
            .map_err(|e| Error::arrow(&self.path.display().to_string(), e))
    }

    /// Hands `batch` to the writer a row group at a time.
    fn write_now(&mut self, batch: &RecordBatch) -> Result<()> {
        for start in (0..batch.num_rows()).step_by(ROW_GROUP_ROWS) {
            let rows = ROW_GROUP_ROWS.min(batch.num_rows() - start);
            let group = without_empty_validity(&batch.slice(start, rows))?;
            self.writer.write(&group).map_err(|e| Error::Parquet {
                path: self.path.to_owned(),
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.pending_rows > 0 {
            let rest = self.take_pending()?;
            self.write_now(&rest)?;
        }
        self.writer.close().map_err(|e| Error::Parquet {
            path: self.path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use arrow_array::{Int32Array, RecordBatch};
    use std::sync::Arc;

    /// What a killed writer leaves is removed: a file's own temporaries beside it, or every
    /// temporary under a directory; other files stay.
    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("m");
        std::fs::create_dir_all(&sub).unwrap();
        for name in [
            ".README.md.tmp-1",
            ".other.json.tmp-2",
            "README.md",
            ".hidden",
        ] {
            std::fs::write(sub.join(name), b"x").unwrap();
        }
        remove_stale_temporaries_of(&sub.join("README.md"));
        let left = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left(&sub), [".hidden", ".other.json.tmp-2", "README.md"]);
        remove_stale_temporaries(dir.path());
        assert_eq!(left(&sub), [".hidden", "README.md"]);
    }

    #[test]
    fn parquet_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/t.parquet");
        let batch =
            RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![3, 1, 2])) as _)])
                .unwrap();
        write_parquet(&path, &batch, &[("k", "v".into())]).unwrap();
        let table = Table::read(&path).unwrap();
        assert_eq!(table.ints("x").unwrap(), vec![3, 1, 2]);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["t.parquet"]);
    }

    /// However the rows are chunked, the file is the one-batch file, byte for byte.
    #[test]
    fn batches_write_the_one_batch_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * ROW_GROUP_ROWS + 1_000;
        let values: Vec<i32> = (0..n as i32)
            .map(|i| i.wrapping_mul(7_919) % 1_000)
            .collect();
        // A nullable column too, with nulls only in the last row group: a chunk without nulls
        // has no validity buffer while the whole batch's slices do, and the writer cut pages
        // differently by that before `without_empty_validity`.
        let sparse: Vec<Option<i64>> = (0..n as i64)
            .map(|i| (i < 2 * ROW_GROUP_ROWS as i64 || i % 3 != 0).then_some(i * 31 % 997))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Int32Array::from(values)) as _),
            ("y", Arc::new(arrow_array::Int64Array::from(sparse)) as _),
        ])
        .unwrap();
        let meta = [("k", String::from("v"))];
        let whole = dir.path().join("whole.parquet");
        write_parquet(&whole, &batch, &meta).unwrap();
        for chunk in [1, 10_007, ROW_GROUP_ROWS, ROW_GROUP_ROWS + 1, n] {
            let parts = dir.path().join(format!("parts-{chunk}.parquet"));
            write_parquet_batches(&parts, batch.schema(), &meta, |sink| {
                let mut start = 0;
                while start < n {
                    let len = chunk.min(n - start);
                    sink.write(&batch.slice(start, len))?;
                    start += len;
                }
                Ok(())
            })
            .unwrap();
            assert!(
                std::fs::read(&parts).unwrap() == std::fs::read(&whole).unwrap(),
                "chunks of {chunk} rows wrote another file"
            );
        }
    }

    #[test]
    fn a_failed_write_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_bytes(&path, b"old").unwrap();
        let err = write_atomic(&path, |_| Err(Error::Internal("boom".into()))).unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_truncated_parquet_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int32Array::from((0..1000).collect::<Vec<_>>())) as _,
        )])
        .unwrap();
        write_parquet(&path, &batch, &[]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let msg = Table::read(&path).unwrap_err().to_string();
        assert!(msg.contains("t.parquet"), "{msg}");
        assert!(msg.contains("truncated or corrupt"), "{msg}");
    }

    #[test]
    fn a_missing_file_says_so_with_its_path() {
        let msg = Table::read(Path::new("/nonexistent/x.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not found") && msg.contains("/nonexistent/x.parquet"),
            "{msg}"
        );
    }
}
