//! Reads a MovieLens release (or generates synthetic data) into canonical Parquet.
//!
//! ```sh
//! cargo run -p recall-data --example ingest_movielens -- ml-100k data/ml-100k out/ml-100k
//! cargo run -p recall-data --example ingest_movielens -- synthetic 42 out/synthetic
//! ```

use std::path::PathBuf;

use recall_data::{IngestConfig, SyntheticConfig, ingest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, source, out] = args.as_slice() else {
        return Err(
            "usage: ingest_movielens ml-1m|ml-100k|ml-latest|synthetic DIR|SEED OUT_DIR".into(),
        );
    };
    let dir = PathBuf::from(source);
    let config = match kind.as_str() {
        "ml-1m" => IngestConfig::Movielens1m { dir },
        "ml-100k" => IngestConfig::Movielens100k { dir },
        "ml-latest" => IngestConfig::MovielensLatest { dir },
        "synthetic" => {
            IngestConfig::Synthetic(SyntheticConfig::new(2_000, 1_000, 60, source.parse()?))
        }
        other => return Err(format!("unknown dataset kind {other:?}").into()),
    };
    let dataset = ingest(&config)?;
    let files = dataset.write(&PathBuf::from(out))?;
    eprintln!("{:?}", dataset.stats);
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
