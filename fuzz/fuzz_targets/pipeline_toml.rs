//! The pipeline-file loader: any text is a pipeline or an error naming what is wrong.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = recall_pipeline::config::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
