//! Writes the splits of an encode output directory with their histories materialised, one
//! list per row, for tools that want them spelled out (another trainer, a notebook): the
//! layout of encode contract version 1.
//!
//! ```sh
//! cargo run -p recall-core --example materialize_histories -- runs/default/encode /tmp/histories
//! ```
//! Writes `<split>.parquet` into the output directory with `user_idx`, `target_idx`,
//! `history` (List<Int32>, oldest first, at most `max_len` of features.json), `position` and,
//! where the split has it, `example_age_bucket`. Every value is read through
//! `recall_core::encoded`, so the histories are exactly the ones the models train on.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::{ArrayRef, Int32Array};
use recall_core::encoded::{FeatureManifest, Sequences, SplitRows, files};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        return Err("usage: materialize_histories ENCODE_DIR OUT_DIR".into());
    };
    let (input, output) = (PathBuf::from(input), PathBuf::from(output));
    let m = FeatureManifest::read(&input)?;
    let sequences = Sequences::read(
        &input.join(files::SEQUENCES),
        m.user_table_size,
        m.item_table_size,
        false,
    )?;
    for name in [files::TRAIN, files::VALID, files::TEST] {
        if !input.join(name).exists() {
            continue;
        }
        let rows = SplitRows::read(&input.join(name), &sequences)?;
        let mut histories = ListBuilder::new(Int32Builder::new());
        let mut targets = Vec::with_capacity(rows.len());
        for r in 0..rows.len() {
            let (u, p) = (rows.user[r], rows.position[r]);
            for &i in sequences.history(u, p, m.max_len) {
                histories.values().append_value(i as i32);
            }
            histories.append(true);
            targets.push(sequences.target(u, p) as i32);
        }
        let int = |v: &[u32]| {
            Arc::new(Int32Array::from_iter_values(v.iter().map(|&x| x as i32))) as ArrayRef
        };
        let mut columns: Vec<(&str, ArrayRef, bool)> = vec![
            ("user_idx", int(&rows.user), false),
            ("target_idx", Arc::new(Int32Array::from(targets)), false),
            ("history", Arc::new(histories.finish()), false),
            ("position", int(&rows.position), false),
        ];
        if m.example_age.is_some() {
            columns.push(("example_age_bucket", int(&rows.age_bucket), false));
        }
        let path = output.join(name);
        recall_core::write::write_parquet(&path, &recall_core::table::batch(columns)?, &[])?;
        eprintln!("wrote {} ({} rows)", path.display(), rows.len());
    }
    Ok(())
}
