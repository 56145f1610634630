//! Embedding matrices: `rows x dim` float32, row-major, every value finite.

use std::path::Path;

use recall_core::{Error, RawIds, Result, Table};

/// A dense row-major matrix of embeddings.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    /// Wraps `data` (`[rows * dim]`); fails on a ragged length, zero dimension or a non-finite
    /// value (which would make every ranking meaningless).
    pub fn new(dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "embeddings",
                format!("{} values do not form rows of dimension {dim}", data.len()),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                format!("embeddings, row {}", i / dim),
                format!("non-finite value {}", data[i]),
            ));
        }
        Ok(Embeddings { dim, data })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Rows `range` (clamped to the rows there are) as a matrix of their own.
    pub fn select_rows(&self, range: std::ops::Range<usize>) -> Embeddings {
        let end = range.end.min(self.rows());
        let start = range.start.min(end);
        Embeddings {
            dim: self.dim,
            data: self.data[start * self.dim..end * self.dim].to_vec(),
        }
    }

    /// Reads `(ids, embeddings)` from a Parquet table with an id column and a vector column
    /// (FixedSizeList<Float32> or List<Float32>), as the export stage writes them.
    pub fn read_parquet(
        path: &Path,
        id_column: &str,
        vector_column: &str,
    ) -> Result<(RawIds, Self)> {
        let table = Table::read_columns(path, Some(&[id_column, vector_column]))?;
        table.require_rows()?;
        let ids = table.ids(id_column)?;
        let (dim, data) = table.float_vectors(vector_column)?;
        Ok((ids, Embeddings::new(dim, data)?))
    }
}
