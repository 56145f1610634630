//! `users.dat` and `movies.dat` of ml-1m.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::write_parts(data, &["users.dat", "movies.dat"]);
    let _ = recall_data::movielens::read_ml_1m_users(&dir.join("users.dat"));
    let _ = recall_data::movielens::read_ml_1m_movies(&dir.join("movies.dat"));
});
