//! Interactions and side tables from CSV files with a header (the generic source's CSV
//! layout, ml-latest's `ratings.csv`): the reader, the column lookup by header name, and CSV
//! errors with the file and line. Below `generic` and `movielens`, which both read CSV.

use std::path::Path;

use arrow_array::StringArray;
use recall_core::{Error, RawIds, Result};

use crate::dataset::Events;

/// The interactions columns to read from a CSV file.
#[derive(Debug, Clone)]
pub(crate) struct ColumnNames {
    pub user: String,
    pub item: String,
    pub order: String,
    pub rating: Option<String>,
    pub timestamp: Option<String>,
}

/// The events of a CSV interactions file: the named columns, the order column as `i64`.
pub(crate) fn read_csv_events(path: &Path, delimiter: u8, names: &ColumnNames) -> Result<Events> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(crate::text::open(path)?);
    let header = reader.headers().map_err(|e| csv_error(path, 1, e))?.clone();
    let ui = header_index(path, &header, &names.user)?;
    let ii = header_index(path, &header, &names.item)?;
    let oi = header_index(path, &header, &names.order)?;
    let ri = names
        .rating
        .as_ref()
        .map(|n| header_index(path, &header, n))
        .transpose()?;
    let ti = names
        .timestamp
        .as_ref()
        .map(|n| header_index(path, &header, n))
        .transpose()?;
    let (mut users, mut items, mut order, mut rating, mut timestamp) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut record = csv::StringRecord::new();
    let mut line = 1u64;
    loop {
        line += 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, line, e)),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(line);
        let field = |i: usize, name: &str| -> Result<&str> {
            let v = record[i].trim();
            if v.is_empty() {
                return Err(Error::Parse {
                    path: path.to_owned(),
                    line,
                    message: format!("column `{name}` is empty; every row needs a value"),
                });
            }
            Ok(v)
        };
        users.push(field(ui, &names.user)?.to_owned());
        items.push(field(ii, &names.item)?.to_owned());
        order.push(crate::text::parse::<i64>(
            path,
            line,
            &names.order,
            field(oi, &names.order)?,
        )?);
        rating.push(match ri {
            Some(i) if !record[i].trim().is_empty() => Some(crate::text::parse::<f32>(
                path,
                line,
                names.rating.as_deref().unwrap_or_default(),
                &record[i],
            )?),
            _ => None,
        });
        timestamp.push(match ti {
            Some(i) if !record[i].trim().is_empty() => Some(crate::text::parse::<i64>(
                path,
                line,
                names.timestamp.as_deref().unwrap_or_default(),
                &record[i],
            )?),
            Some(_) => None,
            None => order.last().copied(),
        });
    }
    if let Some(row) = rating.iter().position(|r| r.is_some_and(f32::is_nan)) {
        return Err(Error::invalid(
            format!("{}, data row {}", path.display(), row + 1),
            "rating is NaN",
        ));
    }
    Ok(Events {
        user_id: ids_from_strings(users),
        item_id: ids_from_strings(items),
        rating,
        timestamp,
        order,
    })
}

/// The index of column `name` in a CSV header, or an error listing the header's columns.
pub(crate) fn header_index(path: &Path, header: &csv::StringRecord, name: &str) -> Result<usize> {
    header.iter().position(|h| h.trim() == name).ok_or_else(|| {
        let available = header.iter().collect::<Vec<_>>().join(", ");
        let hint = if header.len() == 1 {
            "the header has a single field: check the `delimiter` setting".to_owned()
        } else {
            "set the column name in the pipeline config".to_owned()
        };
        Error::MissingColumn {
            path: path.to_owned(),
            column: name.to_owned(),
            available,
            hint,
        }
    })
}

/// A CSV reader with a header over a (maybe gzipped) file.
pub(crate) fn csv_reader(path: &Path) -> Result<csv::Reader<Box<dyn std::io::BufRead>>> {
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(crate::text::open(path)?))
}

/// A CSV error as a parse error with the file and line.
pub(crate) fn csv_error(path: &Path, line: u64, e: csv::Error) -> Error {
    let line = e
        .position()
        .map(|p| p.line())
        .filter(|&l| l > 0)
        .unwrap_or(line);
    Error::Parse {
        path: path.to_owned(),
        line,
        message: e.to_string(),
    }
}

/// Strings of one CSV column, or integers when every value parses as one.
pub(crate) fn ids_from_strings(values: Vec<String>) -> RawIds {
    match values.iter().map(|v| v.trim().parse::<i64>()).collect() {
        Ok(ints) => RawIds::Int(ints),
        Err(_) => RawIds::Str(StringArray::from(values)),
    }
}
