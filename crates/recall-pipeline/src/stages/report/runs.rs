//! What the earlier stages of a run reported, read back from their manifests as their types:
//! what the report and the model cards are written from.

use crate::layout::{Layout, Stage};
use crate::manifest::Manifest;
use crate::stages::encode::EncodeReport;
use crate::stages::export::ExportReport;
use crate::stages::ingest::IngestReport;
use crate::stages::train::TrainReport;

/// What the earlier stages of a run reported, read back from their manifests as their types.
#[derive(Debug, Clone, Default)]
pub struct RunReports {
    pub ingest: Option<IngestReport>,
    pub encode: Option<EncodeReport>,
    pub train: TrainReport,
    pub export: ExportReport,
    /// Seconds of each stage that has a manifest, in run order.
    pub seconds: Vec<(Stage, f64)>,
}

impl RunReports {
    pub fn read(layout: &Layout) -> RunReports {
        let manifest = |stage| Manifest::read(layout.dir(stage));
        RunReports {
            ingest: manifest(Stage::Ingest).and_then(|m| m.report()),
            encode: manifest(Stage::Encode).and_then(|m| m.report()),
            train: manifest(Stage::Train)
                .and_then(|m| m.report())
                .unwrap_or_default(),
            export: manifest(Stage::Export)
                .and_then(|m| m.report())
                .unwrap_or_default(),
            seconds: Stage::ALL
                .into_iter()
                .filter(|s| *s != Stage::Report)
                .filter_map(|s| manifest(s).map(|m| (s, m.seconds)))
                .collect(),
        }
    }
}
