//! Encodes a canonical interactions table (`interactions.parquet`, optionally `users.parquet`
//! and `items.parquet` beside it) into model-ready Parquet: vocabularies, each user's sequence,
//! train/valid/test rows as positions in it, encoded side tables and `features.json`.
//!
//! ```sh
//! cargo run -p recall-data --example ingest_movielens -- synthetic 42 /tmp/ingest
//! cargo run -p recall-features --example encode_parquet -- /tmp/ingest /tmp/encoded 50
//! ```

use std::path::PathBuf;

use recall_features::encode::{EncodeConfig, EncodeInput, encode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, output, max_len) = match args.as_slice() {
        [i, o] => (i, o, 50),
        [i, o, m] => (i, o, m.parse()?),
        _ => return Err("usage: encode_parquet INGEST_DIR OUT_DIR [MAX_LEN]".into()),
    };
    let config = EncodeConfig {
        max_len,
        ..EncodeConfig::default()
    };
    let encoded = encode(&EncodeInput::read_dir(&PathBuf::from(input))?, &config)?;
    for f in encoded.write(&PathBuf::from(output))? {
        eprintln!("wrote {}", f.display());
    }
    eprintln!("{:?}", encoded.manifest.stats);
    Ok(())
}
