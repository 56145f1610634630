//! What the differential tests share.

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
