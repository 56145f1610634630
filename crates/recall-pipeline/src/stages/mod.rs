//! One module per stage, in run order. Each is a function from typed inputs (its config
//! section, the directories of the stages it reads) to the files it wrote and a typed stage
//! report, which the runner stores in the stage's manifest and later stages read back as
//! that type ([`crate::manifest::Manifest::report`]).

pub mod encode;
pub mod evaluate;
pub mod export;
pub mod ingest;
pub mod report;
pub mod train;
