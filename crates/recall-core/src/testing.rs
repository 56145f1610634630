//! Where tests and benchmarks find the real MovieLens copies, which the licence keeps out of
//! the repository: `$RECALL_TEST_DATA` if set, else `../shared/data` beside the workspace root.
//! Tests that need a dataset skip (saying so) when neither has it, so the suite still runs for
//! an outside user; CI has the shared copy, so there they run.

use std::path::PathBuf;

/// The directory of dataset `name` (e.g. `ml-1m`), if present.
pub fn movielens_dir(name: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("RECALL_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    let dir = root.join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: dataset {name} not found under {} (set RECALL_TEST_DATA)",
            root.display()
        );
        None
    }
}
