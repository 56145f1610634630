//! Training progress on a terminal: a bar per epoch (indicatif); elsewhere the library's log
//! lines (`recall_pipeline::progress`).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use recall_models::train::{EpochLog, Progress};
use recall_pipeline::progress::{EpochState, ModelLines, ProgressFor};

/// Bars when stderr is a terminal, log lines otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bars;

impl ProgressFor for Bars {
    fn model(&self, name: &str) -> Box<dyn Progress + '_> {
        if std::io::stderr().is_terminal() {
            Box::new(TrainBar {
                model: name.to_owned(),
                bar: ProgressBar::hidden(),
                state: Mutex::new(None),
            })
        } else {
            Box::new(ModelLines::new(name))
        }
    }
}

/// Training progress of one model: a bar per epoch.
#[derive(Debug)]
struct TrainBar {
    model: String,
    bar: ProgressBar,
    state: Mutex<Option<EpochState>>,
}

impl Progress for TrainBar {
    fn epoch_started(&self, epoch: usize, batches: usize) {
        if let Ok(mut state) = self.state.lock() {
            *state = Some(EpochState::new(epoch, batches, Instant::now()));
        }
        let bar = &self.bar;
        bar.reset();
        bar.set_length(batches as u64);
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} batches {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{} epoch {epoch}", self.model));
    }

    fn batch_done(&self, loss: f64, examples: usize) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let Some(state) = guard.as_mut() else { return };
        state.record(loss, examples);
        self.bar.inc(1);
        if state.done() % 20 == 1 {
            self.bar
                .set_message(format!("loss {:.4}", state.mean_loss()));
        }
    }

    fn epoch_finished(&self, _log: &EpochLog) {
        self.bar.finish_and_clear();
    }
}
