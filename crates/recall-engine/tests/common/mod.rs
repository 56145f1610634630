//! What the differential tests share.

use std::path::{Path, PathBuf};

use recall_engine::datafusion::{Cluster, Options};

/// `options` for each engine this build has: DataFusion in this process, and with the
/// `ballista` feature the same plans on an in-process Ballista cluster.
pub fn engines(options: &Options) -> Vec<Options> {
    let mut all = vec![options.clone()];
    if cfg!(feature = "ballista") {
        all.push(Options {
            cluster: Some(Cluster::InProcess),
            ..options.clone()
        });
    }
    all
}

/// Checks that `planned` (what an engine wrote into `dir`) is `written` (the oracle's files),
/// file for file and byte for byte; `what` says which run, in the failure.
pub fn assert_same_files(written: &[PathBuf], planned: &[PathBuf], dir: &Path, what: &str) {
    assert_eq!(written.len(), planned.len(), "{what}");
    for path in written {
        let name = path.file_name().unwrap();
        let (x, y) = (
            std::fs::read(path).unwrap(),
            std::fs::read(dir.join(name)).unwrap(),
        );
        assert!(x == y, "{name:?} differs ({what})");
    }
}
