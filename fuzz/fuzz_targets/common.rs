//! Shared by the fuzz targets: a scratch directory per process, and splitting one input into
//! several files at NUL bytes.

use std::path::PathBuf;

pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recall-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `parts` of `data` (split at 0x00) to `names` in the scratch directory.
pub fn write_parts(data: &[u8], names: &[&str]) -> PathBuf {
    let dir = scratch();
    let mut parts = data.split(|&b| b == 0);
    for name in names {
        std::fs::write(dir.join(name), parts.next().unwrap_or(&[])).expect("scratch file");
    }
    dir
}
