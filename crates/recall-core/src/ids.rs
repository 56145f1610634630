//! Raw ids as the data has them: integers (MovieLens) or strings (most production logs).
//! Everything after the vocabulary works on dense `i32` indices instead.

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use std::sync::Arc;

/// A column of raw ids, never null.
#[derive(Debug, Clone)]
pub enum RawIds {
    Int(Vec<i64>),
    Str(StringArray),
}

impl RawIds {
    pub fn len(&self) -> usize {
        match self {
            RawIds::Int(v) => v.len(),
            RawIds::Str(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids picked by `rows`, in that order.
    pub fn take(&self, rows: &[usize]) -> RawIds {
        match self {
            RawIds::Int(v) => RawIds::Int(rows.iter().map(|&r| v[r]).collect()),
            RawIds::Str(a) => RawIds::Str(rows.iter().map(|&r| Some(a.value(r))).collect()),
        }
    }

    /// The ids as an Arrow array (Int64 or Utf8), for writing.
    pub fn to_array(&self) -> ArrayRef {
        match self {
            RawIds::Int(v) => Arc::new(Int64Array::from(v.clone())),
            RawIds::Str(a) => Arc::new(a.clone()),
        }
    }

    /// The parts one after another; `Err(i)` when part `i` holds the other kind of id
    /// (strings after integers, or the reverse) than the parts before it.
    pub fn concat(parts: Vec<RawIds>) -> std::result::Result<RawIds, usize> {
        let Some(first) = parts.first() else {
            return Ok(RawIds::Int(Vec::new()));
        };
        match first {
            RawIds::Int(_) => {
                let mut all = Vec::with_capacity(parts.iter().map(RawIds::len).sum());
                for (i, part) in parts.into_iter().enumerate() {
                    match part {
                        RawIds::Int(v) => all.extend(v),
                        RawIds::Str(_) => return Err(i),
                    }
                }
                Ok(RawIds::Int(all))
            }
            RawIds::Str(_) => {
                let mut arrays = Vec::with_capacity(parts.len());
                for (i, part) in parts.into_iter().enumerate() {
                    match part {
                        RawIds::Str(a) => arrays.push(a),
                        RawIds::Int(_) => return Err(i),
                    }
                }
                Ok(RawIds::Str(arrays.iter().flat_map(|a| a.iter()).collect()))
            }
        }
    }

    /// Row `i` formatted for messages.
    pub fn display(&self, i: usize) -> String {
        match self {
            RawIds::Int(v) => v[i].to_string(),
            RawIds::Str(a) => format!("{:?}", a.value(i)),
        }
    }
}
