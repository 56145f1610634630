//! The ml-100k release (`u.data` tab-separated, `u.user` and `u.item` `|`-separated latin-1),
//! read as a whole dataset.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::write_parts(data, &["u.data", "u.user", "u.item"]);
    let _ = recall_data::movielens::read_ml_100k(&dir);
});
