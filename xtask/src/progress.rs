//! Progress bars for long stages, drawn only when stderr is a terminal; in CI and in logs the
//! per-epoch tracing lines say the same in plain text.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use recall_models::train::{EpochLog, Progress};

/// A bar per training epoch, with the running mean loss.
#[derive(Debug)]
pub struct TrainBar {
    model: String,
    bar: Option<ProgressBar>,
    loss: std::sync::Mutex<(f64, u64)>,
}

impl TrainBar {
    /// A bar when stderr is a terminal, otherwise a silent observer.
    pub fn for_terminal(model: &str) -> Self {
        let enabled = std::io::stderr().is_terminal();
        TrainBar {
            model: model.to_owned(),
            bar: enabled.then(ProgressBar::hidden),
            loss: std::sync::Mutex::new((0.0, 0)),
        }
    }
}

impl Progress for TrainBar {
    fn epoch_started(&self, epoch: usize, batches: usize) {
        let Some(bar) = &self.bar else { return };
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
        if let Ok(mut loss) = self.loss.lock() {
            *loss = (0.0, 0);
        }
    }

    fn batch_done(&self, loss: f64) {
        let Some(bar) = &self.bar else { return };
        let Ok(mut running) = self.loss.lock() else {
            return;
        };
        running.0 += loss;
        running.1 += 1;
        bar.inc(1);
        if running.1 % 20 == 1 {
            bar.set_message(format!("loss {:.4}", running.0 / running.1 as f64));
        }
    }

    fn epoch_finished(&self, _log: &EpochLog) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
