//! A Parquet file read whole into one Arrow batch, with typed column access whose errors name the
//! file and the column.
//!
//! Stage inputs here are tables of at most tens of millions of narrow rows, so reading them whole
//! is simpler and faster than streaming; projection keeps unused columns off the heap.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, RecordBatchReader, StringArray};
use arrow_schema::{DataType, Schema, SchemaRef};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::ids::RawIds;

/// A whole table in memory, remembering the file it came from for error messages.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    /// The file's full schema, kept to list what is there when a column is missing.
    file_schema: SchemaRef,
    batch: RecordBatch,
}

impl Table {
    /// Reads every column of a Parquet file.
    pub fn read(path: &Path) -> Result<Table> {
        Self::read_columns(path, None)
    }

    /// Reads a Parquet file, only the named top-level columns when `columns` is given. Columns
    /// that the file lacks are reported by the accessor that asks for them, not here, so optional
    /// columns can be listed too.
    pub fn read_columns(path: &Path, columns: Option<&[&str]>) -> Result<Table> {
        let file = std::fs::File::open(path).map_err(|e| {
            let action = if e.kind() == std::io::ErrorKind::NotFound {
                "input file not found (check the path in the pipeline config):"
            } else {
                "cannot open"
            };
            Error::io(action, path, e)
        })?;
        let parquet_err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Parquet {
            path: path.to_owned(),
            source: e,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_err(Box::new(e)))?;
        // The whole table is wanted in memory: one batch of every row, so nothing is copied
        // again to concatenate batches (which also held the table twice at the peak).
        let rows = builder.metadata().file_metadata().num_rows().max(1);
        let builder = builder.with_batch_size(usize::try_from(rows).unwrap_or(usize::MAX));
        let file_schema = builder.schema().clone();
        let builder = match columns {
            Some(names) => {
                let indices: Vec<usize> = file_schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| names.contains(&f.name().as_str()))
                    .map(|(i, _)| i)
                    .collect();
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                builder.with_projection(mask)
            }
            None => builder,
        };
        let reader = builder.build().map_err(|e| parquet_err(Box::new(e)))?;
        let schema = reader.schema();
        let mut batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| parquet_err(Box::new(e)))?;
        let batch = if batches.len() == 1 {
            batches.swap_remove(0)
        } else {
            arrow_select::concat::concat_batches(&schema, &batches)
                .map_err(|e| Error::arrow("concatenating record batches", e))?
        };
        Ok(Table {
            path: path.to_owned(),
            file_schema,
            batch,
        })
    }

    /// Wraps a batch built in memory; `origin` stands in for the file name in errors.
    pub fn from_batch(origin: impl Into<PathBuf>, batch: RecordBatch) -> Table {
        Table {
            path: origin.into(),
            file_schema: batch.schema(),
            batch,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    pub fn schema(&self) -> Arc<Schema> {
        self.batch.schema()
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Fails with [`Error::EmptyTable`] when the table has no rows.
    pub fn require_rows(&self) -> Result<()> {
        if self.num_rows() == 0 {
            return Err(Error::EmptyTable {
                path: self.path.clone(),
                detail: String::from(": the stage needs at least one row"),
            });
        }
        Ok(())
    }

    /// A key-value entry of the file's footer metadata (what `write_parquet` writes; pyarrow's
    /// `schema.metadata`).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.file_schema.metadata().get(key).map(String::as_str)
    }

    pub fn has_column(&self, name: &str) -> bool {
        self.batch.column_by_name(name).is_some()
    }

    /// The named column, or [`Error::MissingColumn`] listing the columns the file does have.
    pub fn column(&self, name: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).ok_or_else(|| {
            let available = self
                .file_schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Error::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
                available,
                hint: String::from(
                    "rename the column in the file, or set the column name in the pipeline config",
                ),
            }
        })
    }

    fn type_error(&self, name: &str, found: &DataType, expected: &'static str) -> Error {
        Error::ColumnType {
            path: self.path.clone(),
            column: name.to_owned(),
            found: found.clone(),
            expected,
        }
    }

    fn null_error(&self, name: &str, array: &dyn Array) -> Error {
        let first_row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
        Error::NullValues {
            path: self.path.clone(),
            column: name.to_owned(),
            count: array.null_count(),
            first_row,
        }
    }

    /// Raw ids (integers of any width, or strings); nulls are an error.
    pub fn ids(&self, name: &str) -> Result<RawIds> {
        let array = self.column(name)?;
        if array.null_count() > 0 {
            return Err(self.null_error(name, array.as_ref()));
        }
        match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(RawIds::Str(to_string_array(array)))
            }
            _ => self.ints(name).map(RawIds::Int),
        }
    }

    /// A complete Boolean column.
    pub fn bools(&self, name: &str) -> Result<Vec<bool>> {
        let array = self.column(name)?;
        if array.null_count() > 0 {
            return Err(self.null_error(name, array.as_ref()));
        }
        let values = array
            .as_any()
            .downcast_ref::<arrow_array::BooleanArray>()
            .ok_or_else(|| self.type_error(name, array.data_type(), "Boolean"))?;
        Ok(values.values().iter().collect())
    }

    /// A complete integer column of any integer width, widened to i64.
    pub fn ints(&self, name: &str) -> Result<Vec<i64>> {
        let array = self.column(name)?;
        if array.null_count() > 0 {
            return Err(self.null_error(name, array.as_ref()));
        }
        let values = self.nullable_ints(name)?;
        Ok(values.into_iter().map(|v| v.unwrap_or(0)).collect())
    }

    /// An integer column of any width that may have nulls.
    pub fn nullable_ints(&self, name: &str) -> Result<Vec<Option<i64>>> {
        let array = self.column(name)?;
        macro_rules! widen {
            ($t:ty) => {
                array
                    .as_primitive::<$t>()
                    .iter()
                    .map(|v| v.map(|x| x as i64))
                    .collect()
            };
        }
        use arrow_array::types::*;
        Ok(match array.data_type() {
            DataType::Int8 => widen!(Int8Type),
            DataType::Int16 => widen!(Int16Type),
            DataType::Int32 => widen!(Int32Type),
            DataType::Int64 => widen!(Int64Type),
            DataType::UInt8 => widen!(UInt8Type),
            DataType::UInt16 => widen!(UInt16Type),
            DataType::UInt32 => widen!(UInt32Type),
            DataType::UInt64 => {
                let a = array.as_primitive::<UInt64Type>();
                let mut out = Vec::with_capacity(a.len());
                for (row, v) in a.iter().enumerate() {
                    out.push(match v {
                        Some(x) => Some(i64::try_from(x).map_err(|_| {
                            Error::invalid(
                                format!("{}, column `{name}`, row {row}", self.path.display()),
                                format!("value {x} does not fit in a signed 64-bit integer"),
                            )
                        })?),
                        None => None,
                    });
                }
                out
            }
            other => return Err(self.type_error(name, other, "an integer type")),
        })
    }

    /// A numeric column (float or integer) as f32, nulls kept. NaN is reported as invalid data
    /// because no stage has a meaning for it.
    pub fn nullable_floats(&self, name: &str) -> Result<Vec<Option<f32>>> {
        let array = self.column(name)?;
        let values: Vec<Option<f32>> = match array.data_type() {
            DataType::Float32 => array.as_primitive::<Float32Type>().iter().collect(),
            DataType::Float64 => array
                .as_primitive::<Float64Type>()
                .iter()
                .map(|v| v.map(|x| x as f32))
                .collect(),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => self
                .nullable_ints(name)?
                .into_iter()
                .map(|v| v.map(|x| x as f32))
                .collect(),
            other => return Err(self.type_error(name, other, "a numeric type")),
        };
        if let Some(row) = values.iter().position(|v| v.is_some_and(f32::is_nan)) {
            return Err(Error::invalid(
                format!("{}, column `{name}`, row {row}", self.path.display()),
                "NaN is not a valid value: drop the row or fill it with a number",
            ));
        }
        Ok(values)
    }

    /// A string column, nulls kept.
    pub fn nullable_strings(&self, name: &str) -> Result<StringArray> {
        let array = self.column(name)?;
        match array.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(to_string_array(array)),
            other => Err(self.type_error(name, other, "a string type (Utf8)")),
        }
    }

    /// A column of string lists (List<Utf8>, e.g. genres), nulls read as empty lists.
    pub fn string_lists(&self, name: &str) -> Result<StringBags> {
        let array = self.column(name)?;
        let DataType::List(field) = array.data_type() else {
            return Err(self.type_error(name, array.data_type(), "List<Utf8>"));
        };
        if !matches!(field.data_type(), DataType::Utf8) {
            return Err(self.type_error(name, array.data_type(), "List<Utf8>"));
        }
        let list = array.as_list::<i32>();
        let mut bags = StringBags::default();
        for i in 0..list.len() {
            if !list.is_null(i) {
                let values = list.value(i);
                bags.extend_row(values.as_string::<i32>().iter().flatten());
            }
            bags.end_row();
        }
        Ok(bags)
    }

    /// A column of equal-length float vectors (FixedSizeList<Float32> or List<Float32>) as
    /// `(dim, values)` with `values` row-major `[rows * dim]`. Nulls, ragged lists and
    /// non-finite values are errors naming the row.
    pub fn float_vectors(&self, name: &str) -> Result<(usize, Vec<f32>)> {
        let array = self.column(name)?;
        if array.null_count() > 0 {
            return Err(self.null_error(name, array.as_ref()));
        }
        let (values, offsets): (ArrayRef, Vec<usize>) = match array.data_type() {
            DataType::FixedSizeList(f, d) if f.data_type() == &DataType::Float32 => {
                let list = array.as_fixed_size_list();
                let d = *d as usize;
                let start = list.offset() * d;
                let values = list.values().slice(start, list.len() * d);
                (values, (0..=list.len()).map(|i| i * d).collect())
            }
            DataType::List(f) if f.data_type() == &DataType::Float32 => {
                let list = array.as_list::<i32>();
                let base = list.value_offsets()[0] as usize;
                let end = list.value_offsets()[list.len()] as usize;
                let offsets = list
                    .value_offsets()
                    .iter()
                    .map(|&o| o as usize - base)
                    .collect();
                (list.values().slice(base, end - base), offsets)
            }
            other => {
                return Err(self.type_error(
                    name,
                    other,
                    "FixedSizeList<Float32> or List<Float32>",
                ));
            }
        };
        let at = |row: usize| format!("{}, column `{name}`, row {row}", self.path.display());
        let dim = offsets.get(1).copied().unwrap_or(0);
        if let Some(row) = offsets.windows(2).position(|w| w[1] - w[0] != dim) {
            return Err(Error::invalid(
                at(row),
                format!(
                    "vector has {} values where earlier rows have {dim}",
                    offsets[row + 1] - offsets[row]
                ),
            ));
        }
        let values = values.as_primitive::<Float32Type>();
        if values.null_count() > 0 {
            let i = (0..values.len()).find(|&i| values.is_null(i)).unwrap_or(0);
            return Err(Error::invalid(
                at(i / dim.max(1)),
                "vector has a null value",
            ));
        }
        let values = values.values().to_vec();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                at(i / dim.max(1)),
                format!(
                    "vector has a non-finite value ({}); fix the model or drop the row",
                    values[i]
                ),
            ));
        }
        Ok((dim, values))
    }

    /// A List<Int32> column as (offsets, values): row `i` is `values[offsets[i]..offsets[i+1]]`.
    pub fn int_lists(&self, name: &str) -> Result<(Vec<usize>, Vec<i32>)> {
        let array = self.column(name)?;
        let list: &ListArray = match array.data_type() {
            DataType::List(f) if f.data_type() == &DataType::Int32 => array.as_list::<i32>(),
            other => return Err(self.type_error(name, other, "List<Int32>")),
        };
        if list.null_count() > 0 {
            return Err(self.null_error(name, list));
        }
        let base = list.value_offsets()[0] as usize;
        let offsets = list
            .value_offsets()
            .iter()
            .map(|&o| o as usize - base)
            .collect();
        let end = list.value_offsets()[list.len()] as usize;
        let values = list.values().as_primitive::<Int32Type>().values()[base..end].to_vec();
        Ok((offsets, values))
    }
}

fn to_string_array(array: &ArrayRef) -> StringArray {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().clone(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().collect(),
        _ => array.as_string_view().iter().collect(),
    }
}

/// Number of rows of a Parquet file, read from its footer only.
pub fn parquet_row_count(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::new(file).map_err(|e| {
            Error::Parquet {
                path: path.to_owned(),
                source: Box::new(e),
            }
        })?;
    use parquet::file::reader::FileReader;
    Ok(reader.metadata().file_metadata().num_rows() as u64)
}

/// A batch from `(name, array, nullable)` columns, in that order: the one place stages build
/// the record batches they write.
pub fn batch(columns: Vec<(&str, ArrayRef, bool)>) -> Result<RecordBatch> {
    let fields: Vec<arrow_schema::Field> = columns
        .iter()
        .map(|(name, array, nullable)| {
            arrow_schema::Field::new(*name, array.data_type().clone(), *nullable)
        })
        .collect();
    let arrays = columns.into_iter().map(|(_, a, _)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| Error::arrow("building a record batch", e))
}

/// `batch` with one more column at the end (its schema's metadata is not kept).
pub fn with_column(
    batch: &RecordBatch,
    name: &str,
    array: ArrayRef,
    nullable: bool,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut columns: Vec<(&str, ArrayRef, bool)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, a)| (f.name().as_str(), a.clone(), f.is_nullable()))
        .collect();
    columns.push((name, array, nullable));
    self::batch(columns)
}

/// Lists of strings (genres, tags) with each distinct string stored once: row `r` holds
/// `names[values[offsets[r]..offsets[r + 1]]]`. A side table of 10 M items with a few genres
/// each is 0.2 GB this way; as `Vec<Vec<String>>` it was 1.3 GB.
#[derive(Debug, Clone, PartialEq)]
pub struct StringBags {
    offsets: Vec<usize>,
    values: Vec<u32>,
    names: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
}

impl Default for StringBags {
    fn default() -> Self {
        StringBags {
            offsets: vec![0],
            values: Vec::new(),
            names: Vec::new(),
            ids: std::collections::HashMap::new(),
        }
    }
}

impl StringBags {
    /// Appends strings to the row being built.
    pub fn extend_row<'a>(&mut self, strings: impl IntoIterator<Item = &'a str>) {
        for s in strings {
            let id = match self.ids.get(s) {
                Some(&id) => id,
                None => {
                    let id = self.names.len() as u32;
                    self.names.push(s.to_owned());
                    self.ids.insert(s.to_owned(), id);
                    id
                }
            };
            self.values.push(id);
        }
    }

    /// Closes the row being built (an empty row if nothing was added).
    pub fn end_row(&mut self) {
        self.offsets.push(self.values.len());
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `row`'s strings, in order.
    pub fn row(&self, row: usize) -> impl Iterator<Item = &str> + '_ {
        self.values[self.offsets[row]..self.offsets[row + 1]]
            .iter()
            .map(|&id| self.names[id as usize].as_str())
    }
}
