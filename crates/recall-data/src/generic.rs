//! A generic interactions table (Parquet or CSV) with configurable column names, and optional
//! user and item side tables (Parquet, CSV, or the ml-1m `users.dat` / `movies.dat` layouts).
//!
//! The shared ML-1M copy loads through this path:
//!
//! ```toml
//! [ingest.generic]
//! interactions = "data/ml-1m/interactions.parquet"
//! item_column = "movie_id"
//! order_column = "seq"
//! rating_column = "rating"
//! timestamp_column = "timestamp"
//! users = { path = "data/ml-1m/users.dat" }
//! items = { path = "data/ml-1m/movies.dat" }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use recall_core::{Error, RawIds, Result, Table, columns as col};
use serde::{Deserialize, Serialize};

use crate::csv_log::{
    ColumnNames, csv_error, csv_reader, header_index, ids_from_strings, read_csv_events,
};
use crate::dataset::Dataset;
use crate::dataset::{Events, Interactions, batch, check_unique_ids, string_list_array};
use crate::movielens::{read_ml_1m_movies, read_ml_1m_users};

fn default_user() -> String {
    col::USER_ID.to_owned()
}
fn default_item() -> String {
    col::ITEM_ID.to_owned()
}
fn default_order() -> String {
    col::TIMESTAMP.to_owned()
}
fn default_delimiter() -> char {
    ','
}

/// A generic interactions source. Only `interactions` is required.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GenericSource {
    /// The interactions file, `.parquet` or `.csv` (`.csv.gz` too), or a directory of such
    /// files in one format (what Spark, Hive and warehouse exports write: `part-00000.parquet`,
    /// ...), read in file-name order; entries starting with `.` or `_` (`_SUCCESS`, checksums)
    /// are left out.
    pub interactions: PathBuf,
    /// Name written into the outputs' metadata and the report (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Column of user ids (integers or strings). Default `user_id`.
    #[serde(default = "default_user")]
    pub user_column: String,
    /// Column of item ids (integers or strings). Default `item_id`.
    #[serde(default = "default_item")]
    pub item_column: String,
    /// Integer column that orders a user's events in time: a timestamp or a sequence number.
    /// Ties keep file order. Default `timestamp`.
    #[serde(default = "default_order")]
    pub order_column: String,
    /// Optional explicit rating column.
    #[serde(default)]
    pub rating_column: Option<String>,
    /// Optional column of real timestamps in seconds (nulls allowed) when `order_column` is a
    /// sequence number; when `order_column` is itself the timestamp, leave this unset.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// CSV field delimiter. Default `,`.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default)]
    pub users: Option<SideTable>,
    #[serde(default)]
    pub items: Option<SideTable>,
}

impl GenericSource {
    /// `interactions` with every other key at its default (what a pipeline file with only
    /// `interactions = "..."` gives): columns `user_id`, `item_id`, ordered by `timestamp`.
    pub fn new(interactions: impl Into<PathBuf>) -> Self {
        GenericSource {
            interactions: interactions.into(),
            name: None,
            user_column: default_user(),
            item_column: default_item(),
            order_column: default_order(),
            rating_column: None,
            timestamp_column: None,
            delimiter: default_delimiter(),
            users: None,
            items: None,
        }
    }

    /// The ML-1M layout `dir/interactions.parquet` (columns `user_id`, `movie_id`, `rating`,
    /// `timestamp`, `seq`; ordered by `seq`) with `users.dat` and `movies.dat` beside it: what
    /// `pipelines/ml-1m*.toml` describe in TOML.
    pub fn ml_1m_parquet_layout(dir: &Path) -> Self {
        let side = |name: &str| {
            Some(SideTable {
                path: dir.join(name),
                format: SideFormat::Auto,
                id_column: None,
                genres_column: None,
            })
        };
        GenericSource {
            interactions: dir.join("interactions.parquet"),
            name: Some(String::from("ml-1m")),
            user_column: col::USER_ID.to_owned(),
            item_column: String::from("movie_id"),
            order_column: col::SEQ.to_owned(),
            rating_column: Some(col::RATING.to_owned()),
            timestamp_column: Some(col::TIMESTAMP.to_owned()),
            delimiter: ',',
            users: side("users.dat"),
            items: side("movies.dat"),
        }
    }
}

/// A user or item side table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SideTable {
    pub path: PathBuf,
    /// Layout; by default guessed from the name: `users.dat` / `movies.dat` are the ml-1m
    /// layouts, otherwise the extension decides between Parquet and CSV.
    #[serde(default)]
    pub format: SideFormat,
    /// Id column for Parquet and CSV tables (default: `user_id` / `item_id`).
    #[serde(default)]
    pub id_column: Option<String>,
    /// A Utf8 column of `|`-separated genres (or tags) to turn into a `genres` list column.
    #[serde(default)]
    pub genres_column: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SideFormat {
    #[default]
    Auto,
    Parquet,
    Csv,
    Ml1mUsers,
    Ml1mMovies,
}

/// Whether `path` is read as CSV (`.csv`, `.csv.gz`, `.tsv`) rather than Parquet.
pub fn is_csv(path: &Path) -> bool {
    let name = path.to_string_lossy().to_ascii_lowercase();
    name.ends_with(".csv") || name.ends_with(".csv.gz") || name.ends_with(".tsv")
}

/// Reads a generic source into the canonical dataset.
pub fn read(source: &GenericSource) -> Result<Dataset> {
    let path = &source.interactions;
    let names = ColumnNames {
        user: source.user_column.clone(),
        item: source.item_column.clone(),
        order: source.order_column.clone(),
        rating: source.rating_column.clone(),
        timestamp: source.timestamp_column.clone(),
    };
    let delimiter = u8::try_from(source.delimiter)
        .map_err(|_| Error::config("ingest.delimiter", "must be a single ASCII character"))?;
    let events = read_events(path, delimiter, &names)?;
    let (interactions, stats) = Interactions::from_events(path, events)?;
    let (users, items) = read_side_tables(source)?;
    Ok(Dataset {
        name: dataset_name(source),
        interactions,
        users,
        items,
        stats,
    })
}

/// The name `source`'s files carry: `name`, or the interactions file's stem.
pub fn dataset_name(source: &GenericSource) -> String {
    source.name.clone().unwrap_or_else(|| {
        source
            .interactions
            .file_stem()
            .map(|s| s.to_string_lossy().trim_end_matches(".csv").to_owned())
            .unwrap_or_default()
    })
}

/// `source`'s user and item side tables in canonical form (`user_id` / `item_id` first), where
/// it names them.
pub fn read_side_tables(
    source: &GenericSource,
) -> Result<(Option<RecordBatch>, Option<RecordBatch>)> {
    let read = |table: &Option<SideTable>, id_name: &str| {
        table
            .as_ref()
            .map(|t| read_side_table(t, id_name))
            .transpose()
    };
    Ok((
        read(&source.users, col::USER_ID)?,
        read(&source.items, col::ITEM_ID)?,
    ))
}

/// The data files `path` names: itself, or a directory's part files by name (see
/// [`GenericSource::interactions`]), all CSV or all Parquet.
pub fn data_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::io("cannot list the interactions directory", path, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io("cannot list the interactions directory", path, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') || entry.path().is_dir() {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    let Some(first) = files.first() else {
        return Err(Error::EmptyTable {
            path: path.to_owned(),
            detail: String::from(
                ": the interactions directory holds no data files (.parquet, .csv, .csv.gz); \
                 point ingest.generic.interactions at a file or a directory of part files",
            ),
        });
    };
    if let Some(other) = files.iter().find(|f| is_csv(f) != is_csv(first)) {
        return Err(Error::config(
            "ingest.generic.interactions",
            format!(
                "{} mixes formats: {} is {} but {} is {}; keep one format per directory",
                path.display(),
                first.display(),
                if is_csv(first) { "CSV" } else { "Parquet" },
                other.display(),
                if is_csv(other) { "CSV" } else { "Parquet" },
            ),
        ));
    }
    Ok(files)
}

/// The events of `path` (a file or a directory of part files), the files' rows one after
/// another in file-name order (which is the order ties keep).
fn read_events(path: &Path, delimiter: u8, names: &ColumnNames) -> Result<Events> {
    let files = data_files(path)?;
    let mut parts = Vec::with_capacity(files.len());
    for file in &files {
        parts.push(if is_csv(file) {
            read_csv_events(file, delimiter, names)?
        } else {
            read_parquet_events(file, names)?
        });
    }
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    let (mut users, mut items) = (Vec::new(), Vec::new());
    let (mut rating, mut timestamp, mut order) = (Vec::new(), Vec::new(), Vec::new());
    for part in parts {
        users.push(part.user_id);
        items.push(part.item_id);
        rating.extend(part.rating);
        timestamp.extend(part.timestamp);
        order.extend(part.order);
    }
    // Part files of one log share column types; `concat` names the first that does not.
    let joined = |ids: Vec<RawIds>, column: &str| {
        let kind = |ids: &RawIds| match ids {
            RawIds::Int(_) => "integer",
            RawIds::Str(_) => "string",
        };
        let kinds: Vec<&str> = ids.iter().map(kind).collect();
        RawIds::concat(ids).map_err(|i| {
            Error::config(
                "ingest.generic.interactions",
                format!(
                    "column `{column}` of {} holds {} ids but {} holds {} ids; every part file \
                     needs the same column types",
                    files[i].display(),
                    kinds[i],
                    files[0].display(),
                    kinds[0]
                ),
            )
        })
    };
    Ok(Events {
        user_id: joined(users, &names.user)?,
        item_id: joined(items, &names.item)?,
        rating,
        timestamp,
        order,
    })
}

fn read_parquet_events(path: &Path, names: &ColumnNames) -> Result<Events> {
    let mut wanted = vec![
        names.user.as_str(),
        names.item.as_str(),
        names.order.as_str(),
    ];
    wanted.extend(names.rating.as_deref());
    wanted.extend(names.timestamp.as_deref());
    let table = Table::read_columns(path, Some(&wanted))?;
    table.require_rows()?;
    let order = table.ints(&names.order)?;
    let timestamp = match &names.timestamp {
        Some(c) => table.nullable_ints(c)?,
        // The order column is the timestamp unless a separate one is named.
        None => order.iter().map(|&t| Some(t)).collect(),
    };
    let rating = match &names.rating {
        Some(c) => table.nullable_floats(c)?,
        None => vec![None; table.num_rows()],
    };
    Ok(Events {
        user_id: table.ids(&names.user)?,
        item_id: table.ids(&names.item)?,
        rating,
        timestamp,
        order,
    })
}

fn read_side_table(table: &SideTable, id_name: &str) -> Result<RecordBatch> {
    let path = &table.path;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = match table.format {
        SideFormat::Auto if file_name == "users.dat" => SideFormat::Ml1mUsers,
        SideFormat::Auto if file_name == "movies.dat" => SideFormat::Ml1mMovies,
        SideFormat::Auto if is_csv(path) => SideFormat::Csv,
        SideFormat::Auto => SideFormat::Parquet,
        f => f,
    };
    let id_column = table
        .id_column
        .clone()
        .unwrap_or_else(|| id_name.to_owned());
    let batch = match format {
        SideFormat::Ml1mUsers => read_ml_1m_users(path)?,
        SideFormat::Ml1mMovies => read_ml_1m_movies(path)?,
        SideFormat::Parquet | SideFormat::Auto => {
            let t = Table::read(path)?;
            t.require_rows()?;
            let ids = t.ids(&id_column)?;
            check_unique_ids(path, &id_column, &ids)?;
            let mut columns: Vec<(String, ArrayRef)> = vec![(id_name.to_owned(), ids.to_array())];
            for (field, array) in t.schema().fields().iter().zip(t.batch().columns()) {
                if field.name() != &id_column {
                    columns.push((field.name().clone(), array.clone()));
                }
            }
            to_batch(columns)?
        }
        SideFormat::Csv => read_csv_side_table(path, &id_column, id_name)?,
    };
    match &table.genres_column {
        Some(g) => split_genres_column(path, batch, g),
        None => Ok(batch),
    }
}

fn to_batch(columns: Vec<(String, ArrayRef)>) -> Result<RecordBatch> {
    batch(
        columns
            .iter()
            .enumerate()
            .map(|(i, (n, a))| (n.as_str(), a.clone(), i > 0))
            .collect(),
    )
}

fn read_csv_side_table(path: &Path, id_column: &str, id_name: &str) -> Result<RecordBatch> {
    let mut reader = csv_reader(path)?;
    let header = reader.headers().map_err(|e| csv_error(path, 1, e))?.clone();
    let id_index = header_index(path, &header, id_column)?;
    let mut columns: Vec<Vec<String>> = vec![Vec::new(); header.len()];
    for (k, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(path, k as u64 + 2, e))?;
        for (c, value) in record.iter().enumerate() {
            columns[c].push(value.to_owned());
        }
    }
    if columns[id_index].is_empty() {
        return Err(Error::EmptyTable {
            path: path.to_owned(),
            detail: String::from(": a side table needs one row per id"),
        });
    }
    let ids = ids_from_strings(std::mem::take(&mut columns[id_index]));
    check_unique_ids(path, id_column, &ids)?;
    let mut out: Vec<(String, ArrayRef)> = vec![(id_name.to_owned(), ids.to_array())];
    for (c, values) in columns.into_iter().enumerate() {
        if c == id_index {
            continue;
        }
        // A column whose every present value is an integer becomes Int64, else Utf8.
        let ints: Option<Vec<Option<i64>>> = values
            .iter()
            .map(|v| match v.trim() {
                "" => Some(None),
                s => s.parse().ok().map(Some),
            })
            .collect();
        let array: ArrayRef = match ints {
            Some(ints) => Arc::new(Int64Array::from(ints)),
            None => Arc::new(StringArray::from(values)),
        };
        out.push((header[c].trim().to_owned(), array));
    }
    to_batch(out)
}

fn split_genres_column(path: &Path, batch: RecordBatch, column: &str) -> Result<RecordBatch> {
    let table = Table::from_batch(path, batch);
    let schema = table.schema();
    let mut out: Vec<(String, ArrayRef)> = Vec::new();
    let lists = match table.column(column)?.data_type() {
        arrow_schema::DataType::List(_) => table.column(column)?.clone(),
        _ => {
            let strings = table.nullable_strings(column)?;
            let rows: Vec<Vec<String>> = strings
                .iter()
                .map(|s| {
                    s.map(|s| {
                        s.split('|')
                            .map(str::trim)
                            .filter(|g| !g.is_empty() && *g != "(no genres listed)")
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
                })
                .collect();
            string_list_array(&rows)
        }
    };
    for (field, array) in schema.fields().iter().zip(table.batch().columns()) {
        if field.name() == column {
            out.push((col::GENRES.to_owned(), lists.clone()));
        } else if field.name() != col::GENRES {
            out.push((field.name().clone(), array.clone()));
        }
    }
    to_batch(out)
}
