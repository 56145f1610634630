//! A generic interactions CSV through the generic source, as a pipeline file declares it.
#![no_main]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = common::write_parts(data, &["events.csv"]);
    let text = format!(
        "[generic]\ninteractions = {:?}\nuser_column = \"u\"\nitem_column = \"i\"\norder_column = \"t\"\ntimestamp_column = \"t\"\n",
        dir.join("events.csv").display().to_string()
    );
    if let Ok(config) = toml::from_str::<recall_data::IngestConfig>(&text) {
        let _ = recall_data::ingest(&config);
    }
});
