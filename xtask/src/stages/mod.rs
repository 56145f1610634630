//! Stage bodies that need more than a call into one crate: training every configured model,
//! and evaluating them against baselines into `metrics.json` and `report.md`.

pub mod evaluate;
pub mod export;
pub mod train;
