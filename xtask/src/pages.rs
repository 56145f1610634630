//! When the allocator hands freed memory back to the OS. The binaries own the allocator
//! (mimalloc), so this policy lives here, not in the libraries.
//!
//! mimalloc purges freed pages (gives them back, and the next use faults them in zeroed) a
//! while after they empty. Between stages that is what keeps one stage's peak from stacking on
//! another's. Inside a training run it is waste: a step frees and reallocates the same buffers
//! every few milliseconds, and a purge (it fires for everything free when its timer runs out,
//! mid-step included) makes the next steps fault them in again.

use recall_models::train::{EpochLog, Progress, StepPhases};
use recall_pipeline::progress::ProgressFor;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3), in milliseconds.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The delay between stages: a second. mimalloc's default of 10 ms purged a step's buffers
/// between steps (at torch-rechub's YoutubeDNN sizes about 7,000 page faults per 400 steps and
/// a tenth of the step time, issue 18); never purging made a later stage's peak stack on an
/// earlier one's (the 10 M pipeline: 3.36 GB peak never purging, 2.21 GB with the delay;
/// MEASUREMENTS.md).
const BETWEEN_STAGES_MS: std::ffi::c_long = 1_000;

/// The delay while a model trains: an hour, so no purge fires during training. Freed pages are
/// still marked for purging (a delay of -1 would not mark them), so the forced collection when
/// the model is done gives them back.
const WHILE_TRAINING_MS: std::ffi::c_long = 3_600_000;

fn set_purge_delay(ms: std::ffi::c_long) {
    // SAFETY: sets one option value; mimalloc reads options at every purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, ms)
    }
}

/// Sets the between-stages purge delay; call it first thing in `main`.
pub fn keep_freed_pages() {
    set_purge_delay(BETWEEN_STAGES_MS);
}

/// A [`ProgressFor`] that, besides showing progress through `inner`, keeps freed pages while
/// each model trains and gives them back when it is done (a model's progress observer lives
/// exactly as long as its training).
#[derive(Debug, Clone, Copy)]
pub struct KeepPagesWhileTraining<P>(pub P);

impl<P: ProgressFor> ProgressFor for KeepPagesWhileTraining<P> {
    fn model(&self, name: &str) -> Box<dyn Progress + '_> {
        set_purge_delay(WHILE_TRAINING_MS);
        Box::new(Training(self.0.model(name)))
    }
}

struct Training<'a>(Box<dyn Progress + 'a>);

impl Drop for Training<'_> {
    fn drop(&mut self) {
        set_purge_delay(BETWEEN_STAGES_MS);
        // SAFETY: a collection of this thread's heap with a forced purge of every arena's
        // freed pages; no pointer is passed.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_collect(true)
        }
    }
}

impl Progress for Training<'_> {
    fn epoch_started(&self, epoch: usize, batches: usize) {
        self.0.epoch_started(epoch, batches);
    }
    fn batch_done(&self, loss: f64, examples: usize) {
        self.0.batch_done(loss, examples);
    }
    fn batch_phases(&self, phases: &StepPhases) {
        self.0.batch_phases(phases);
    }
    fn epoch_finished(&self, log: &EpochLog) {
        self.0.epoch_finished(log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl Progress for &Recorded {
        fn epoch_started(&self, epoch: usize, batches: usize) {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {epoch} {batches}"));
        }
        fn batch_done(&self, _loss: f64, examples: usize) {
            self.0.lock().unwrap().push(format!("batch {examples}"));
        }
    }

    impl ProgressFor for &Recorded {
        fn model(&self, name: &str) -> Box<dyn Progress + '_> {
            self.0.lock().unwrap().push(format!("model {name}"));
            Box::new(*self)
        }
    }

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads one option value.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_get(PURGE_DELAY)
        }
    }

    /// While a model's observer lives no purge is due; after it the between-stages delay is
    /// back; every call reaches the wrapped observer.
    #[test]
    fn pages_are_kept_exactly_while_a_model_trains() {
        let recorded = Recorded::default();
        keep_freed_pages();
        let wrapped = KeepPagesWhileTraining(&recorded);
        {
            let progress = wrapped.model("m");
            assert_eq!(purge_delay(), WHILE_TRAINING_MS);
            progress.epoch_started(1, 3);
            progress.batch_done(0.5, 16);
        }
        assert_eq!(purge_delay(), BETWEEN_STAGES_MS);
        assert_eq!(
            *recorded.0.lock().unwrap(),
            ["model m", "start 1 3", "batch 16"]
        );
    }
}
