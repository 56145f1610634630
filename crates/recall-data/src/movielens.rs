//! Readers for the official MovieLens releases. Each returns the canonical [`Dataset`].
//!
//! | release | files | separator | encoding |
//! |---|---|---|---|
//! | ml-1m | `ratings.dat` (or `.dat.gz`), `users.dat`, `movies.dat` | `::` | latin-1 |
//! | ml-100k | `u.data`, `u.user`, `u.item`, `u.genre` | tab, `\|` | latin-1 (`u.item`) |
//! | ml-latest(-small), ml-20m, ml-25m | `ratings.csv`, `movies.csv` | `,` with header | UTF-8 |
//!
//! Interactions are ordered by timestamp; ties keep file order, which is how the releases list a
//! user's ratings given at the same second. The item table has the canonical columns and
//! `year`, the release year every release writes at the end of a title (`Heat (1995)`; null
//! where a title has none): the one item feature besides genres a cold-start model can use.
//! ml-100k's items also have `released`, the release day of `u.item` (Unix seconds at 00:00
//! UTC; null where blank). 1,097 of its 1,682 films are dated 1 January, most of them likely a
//! year known without its day (taken as given), so a recent film's age is to the day and most
//! older ones' to the year.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray};
use recall_core::{Error, RawIds, Result, columns as col};

use crate::csv_log::{ColumnNames, csv_error, csv_reader, read_csv_events};
use crate::dataset::{Dataset, IngestStats};
use crate::dataset::{Events, Interactions, batch, check_unique_ids, items_batch};
use crate::text::{Encoding, fields, for_each_line, parse};

/// Reads ml-1m from `dir`: `ratings.dat` (or `ratings.dat.gz`), `users.dat`, `movies.dat`.
pub fn read_ml_1m(dir: &Path) -> Result<Dataset> {
    let ratings = first_existing(dir, &["ratings.dat", "ratings.dat.gz"])?;
    let events = read_ml_1m_ratings(&ratings)?;
    let (interactions, stats) = Interactions::from_events(&ratings, events)?;
    Ok(Dataset {
        name: String::from("ml-1m"),
        interactions,
        users: Some(read_ml_1m_users(&dir.join("users.dat"))?),
        items: Some(read_ml_1m_movies(&dir.join("movies.dat"))?),
        stats,
    })
}

fn first_existing(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::io(
                "input file not found (expected one of the release's files):",
                dir.join(names[0]),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
}

/// `UserID::MovieID::Rating::Timestamp`, latin-1, optionally gzipped.
pub fn read_ml_1m_ratings(path: &Path) -> Result<Events> {
    let mut users = Vec::new();
    let mut items = Vec::new();
    let mut ratings = Vec::new();
    let mut times = Vec::new();
    for_each_line(path, Encoding::Latin1, |n, line| {
        let [u, i, r, t] = fields(path, n, line, "::", "UserID::MovieID::Rating::Timestamp")?;
        users.push(parse::<i64>(path, n, "UserID", u)?);
        items.push(parse::<i64>(path, n, "MovieID", i)?);
        ratings.push(Some(parse::<f32>(path, n, "Rating", r)?));
        times.push(parse::<i64>(path, n, "Timestamp", t)?);
        Ok(())
    })?;
    Ok(Events {
        user_id: RawIds::Int(users),
        item_id: RawIds::Int(items),
        rating: ratings,
        timestamp: times.iter().map(|&t| Some(t)).collect(),
        order: times,
    })
}

/// `UserID::Gender::Age::Occupation::Zip-code` into `user_id`, `gender`, `age` (the release's
/// age code: 1, 18, 25, 35, 45, 50, 56), `occupation` (code 0..20), `zip`.
pub fn read_ml_1m_users(path: &Path) -> Result<RecordBatch> {
    let (mut ids, mut gender, mut age, mut occupation, mut zip) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for_each_line(path, Encoding::Latin1, |n, line| {
        let [u, g, a, o, z] = fields(path, n, line, "::", "UserID::Gender::Age::Occupation::Zip")?;
        ids.push(parse::<i64>(path, n, "UserID", u)?);
        gender.push(g.to_owned());
        age.push(parse::<i32>(path, n, "Age", a)?);
        occupation.push(parse::<i32>(path, n, "Occupation", o)?);
        zip.push(z.to_owned());
        Ok(())
    })?;
    let ids = RawIds::Int(ids);
    check_unique_ids(path, "UserID", &ids)?;
    batch(vec![
        (col::USER_ID, ids.to_array(), false),
        ("gender", Arc::new(StringArray::from(gender)), false),
        ("age", Arc::new(Int32Array::from(age)), false),
        ("occupation", Arc::new(Int32Array::from(occupation)), false),
        ("zip", Arc::new(StringArray::from(zip)), false),
    ])
}

/// `MovieID::Title::Genres` (genres `|`-separated) into `item_id`, `title`, `genres`.
pub fn read_ml_1m_movies(path: &Path) -> Result<RecordBatch> {
    let (mut ids, mut titles, mut genres) = (Vec::new(), Vec::new(), Vec::new());
    for_each_line(path, Encoding::Latin1, |n, line| {
        let [i, t, g] = fields(path, n, line, "::", "MovieID::Title::Genres")?;
        ids.push(parse::<i64>(path, n, "MovieID", i)?);
        titles.push(Some(t.to_owned()));
        genres.push(split_genres(g));
        Ok(())
    })?;
    let ids = RawIds::Int(ids);
    check_unique_ids(path, "MovieID", &ids)?;
    movie_items(ids, titles, &genres)
}

/// The canonical item table with each title's release year (`year`).
fn movie_items(
    ids: RawIds,
    titles: Vec<Option<String>>,
    genres: &[Vec<String>],
) -> Result<RecordBatch> {
    let years: Int32Array = titles
        .iter()
        .map(|t| t.as_deref().and_then(title_year))
        .collect();
    let items = items_batch(ids, titles, genres)?;
    let schema = items.schema();
    let mut columns: Vec<(&str, arrow_array::ArrayRef, bool)> = schema
        .fields()
        .iter()
        .zip(items.columns())
        .map(|(f, c)| (f.name().as_str(), c.clone(), f.is_nullable()))
        .collect();
    columns.push((col::YEAR, Arc::new(years), true));
    batch(columns)
}

/// The year a MovieLens title ends with: `Toy Story (1995)` gives 1995; ml-latest also writes
/// ranges (`(2007-)`, `(1993-1995)`), whose first year counts.
fn title_year(title: &str) -> Option<i32> {
    let open = title.trim_end().rfind('(')?;
    let digits = title.get(open + 1..open + 5)?;
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
}

/// Splits a `|`-separated genre list; the ml-latest marker `(no genres listed)` means none.
fn split_genres(g: &str) -> Vec<String> {
    g.split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "(no genres listed)")
        .map(str::to_owned)
        .collect()
}

/// Reads ml-100k from `dir`: `u.data`, `u.user`, `u.item`, `u.genre`.
pub fn read_ml_100k(dir: &Path) -> Result<Dataset> {
    let data = dir.join("u.data");
    let (mut users, mut items, mut ratings, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for_each_line(&data, Encoding::Latin1, |n, line| {
        let [u, i, r, t] = fields(&data, n, line, "\t", "user id, item id, rating, timestamp")?;
        users.push(parse::<i64>(&data, n, "user id", u)?);
        items.push(parse::<i64>(&data, n, "item id", i)?);
        ratings.push(Some(parse::<f32>(&data, n, "rating", r)?));
        times.push(parse::<i64>(&data, n, "timestamp", t)?);
        Ok(())
    })?;
    let events = Events {
        user_id: RawIds::Int(users),
        item_id: RawIds::Int(items),
        rating: ratings,
        timestamp: times.iter().map(|&t| Some(t)).collect(),
        order: times,
    };
    let (interactions, stats) = Interactions::from_events(&data, events)?;

    let user_path = dir.join("u.user");
    let (mut ids, mut age, mut gender, mut occupation, mut zip) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for_each_line(&user_path, Encoding::Latin1, |n, line| {
        let [u, a, g, o, z] = fields(
            &user_path,
            n,
            line,
            "|",
            "user id|age|gender|occupation|zip",
        )?;
        ids.push(parse::<i64>(&user_path, n, "user id", u)?);
        age.push(parse::<i32>(&user_path, n, "age", a)?);
        gender.push(g.to_owned());
        occupation.push(o.to_owned());
        zip.push(z.to_owned());
        Ok(())
    })?;
    let ids = RawIds::Int(ids);
    check_unique_ids(&user_path, "user id", &ids)?;
    let users = batch(vec![
        (col::USER_ID, ids.to_array(), false),
        ("gender", Arc::new(StringArray::from(gender)), false),
        ("age", Arc::new(Int32Array::from(age)), false),
        ("occupation", Arc::new(StringArray::from(occupation)), false),
        ("zip", Arc::new(StringArray::from(zip)), false),
    ])?;

    let genre_path = dir.join("u.genre");
    let mut genre_names: Vec<(usize, String)> = Vec::new();
    for_each_line(&genre_path, Encoding::Latin1, |n, line| {
        let [name, index] = fields(&genre_path, n, line, "|", "genre|index")?;
        genre_names.push((
            parse::<usize>(&genre_path, n, "index", index)?,
            name.to_owned(),
        ));
        Ok(())
    })?;
    genre_names.sort();
    let item_path = dir.join("u.item");
    let (mut ids, mut titles, mut genres, mut released) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for_each_line(&item_path, Encoding::Latin1, |n, line| {
        let parts: Vec<&str> = line.split('|').collect();
        if parts.len() != 5 + genre_names.len() {
            return Err(Error::Parse {
                path: item_path.clone(),
                line: n,
                message: format!(
                    "expected {} `|`-separated fields (id, title, dates, url and one flag per \
                     genre of u.genre), found {}",
                    5 + genre_names.len(),
                    parts.len()
                ),
            });
        }
        ids.push(parse::<i64>(&item_path, n, "movie id", parts[0])?);
        titles.push(Some(parts[1].to_owned()));
        let date = parts[2].trim();
        released.push(match date {
            "" => None,
            _ => Some(
                recall_core::time::dd_mon_yyyy(date).ok_or_else(|| Error::Parse {
                    path: item_path.clone(),
                    line: n,
                    message: format!(
                        "release date {date:?} is not a DD-Mon-YYYY date (for example 01-Jan-1995)"
                    ),
                })?,
            ),
        });
        let mut g = Vec::new();
        for (k, (_, name)) in genre_names.iter().enumerate() {
            if parse::<u8>(&item_path, n, name, parts[5 + k])? == 1 && name != "unknown" {
                g.push(name.clone());
            }
        }
        genres.push(g);
        Ok(())
    })?;
    let ids = RawIds::Int(ids);
    check_unique_ids(&item_path, "movie id", &ids)?;
    let items = recall_core::table::with_column(
        &movie_items(ids, titles, &genres)?,
        col::RELEASED,
        Arc::new(Int64Array::from(released)),
        true,
    )?;
    Ok(Dataset {
        name: String::from("ml-100k"),
        interactions,
        users: Some(users),
        items: Some(items),
        stats,
    })
}

/// Reads the ml-latest family from `dir`: `ratings.csv` and `movies.csv` (with headers).
pub fn read_ml_latest(dir: &Path) -> Result<Dataset> {
    let ratings = dir.join("ratings.csv");
    let events = read_csv_events(
        &ratings,
        b',',
        &ColumnNames {
            user: String::from("userId"),
            item: String::from("movieId"),
            order: String::from("timestamp"),
            rating: Some(String::from("rating")),
            timestamp: Some(String::from("timestamp")),
        },
    )?;
    let (interactions, stats): (Interactions, IngestStats) =
        Interactions::from_events(&ratings, events)?;
    let movies = dir.join("movies.csv");
    let mut reader = csv_reader(&movies)?;
    let (mut ids, mut titles, mut genres) = (Vec::new(), Vec::new(), Vec::new());
    for (k, record) in reader.records().enumerate() {
        let line = k as u64 + 2;
        let record = record.map_err(|e| csv_error(&movies, line, e))?;
        if record.len() != 3 {
            return Err(Error::Parse {
                path: movies.clone(),
                line,
                message: format!(
                    "expected 3 fields (movieId,title,genres), found {}",
                    record.len()
                ),
            });
        }
        ids.push(parse::<i64>(&movies, line, "movieId", &record[0])?);
        titles.push(Some(record[1].to_owned()));
        genres.push(split_genres(&record[2]));
    }
    let ids = RawIds::Int(ids);
    check_unique_ids(&movies, "movieId", &ids)?;
    Ok(Dataset {
        name: String::from("ml-latest"),
        interactions,
        users: None,
        items: Some(movie_items(ids, titles, &genres)?),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::title_year;

    #[test]
    fn a_title_gives_its_year_or_none() {
        assert_eq!(title_year("Toy Story (1995)"), Some(1995));
        assert_eq!(
            title_year("City of Lost Children, The (Cité des enfants perdus, La) (1995) "),
            Some(1995)
        );
        assert_eq!(title_year("Fawlty Towers (1975-1979)"), Some(1975));
        assert_eq!(title_year("Stranger Things"), None);
        assert_eq!(title_year("Babylon 5 (a.k.a. B5)"), None);
        assert_eq!(title_year("Short (19)"), None);
    }
}
