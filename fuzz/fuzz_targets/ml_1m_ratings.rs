//! `ratings.dat` (`UserID::MovieID::Rating::Timestamp`, latin-1): any bytes give events or an
//! error, never a panic.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::write_parts(data, &["ratings.dat"]);
    let _ = recall_data::movielens::read_ml_1m_ratings(&dir.join("ratings.dat"));
});
