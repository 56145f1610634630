//! The ml-latest family (`ratings.csv`, `movies.csv` with headers), read as a whole dataset.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::write_parts(data, &["ratings.csv", "movies.csv"]);
    let _ = recall_data::movielens::read_ml_latest(&dir);
});
