//! Training progress: a plain log line at a steady interval (CI logs, the scheduled job,
//! `nohup`), so a long epoch is never silent. A command line that draws bars passes its own
//! [`ProgressFor`] to the runner instead (`cargo xtask` does on a terminal).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use recall_models::train::{EpochLog, Progress};

/// Hands out the progress observer of each model a run trains.
pub trait ProgressFor: Sync {
    fn model(&self, name: &str) -> Box<dyn Progress + '_>;
}

/// Log lines every `RECALL_PROGRESS_SECONDS` for every model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogLines;

impl ProgressFor for LogLines {
    fn model(&self, name: &str) -> Box<dyn Progress + '_> {
        Box::new(ModelLines::new(name))
    }
}

/// Seconds between two progress lines when no bar is drawn (`RECALL_PROGRESS_SECONDS`
/// overrides; default 30).
pub const PROGRESS_SECONDS_VAR: &str = "RECALL_PROGRESS_SECONDS";

pub fn log_interval() -> Duration {
    let seconds = std::env::var(PROGRESS_SECONDS_VAR)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(seconds)
}

/// Where an epoch is: what a bar or a log line shows.
#[derive(Debug, Clone)]
pub struct EpochState {
    epoch: usize,
    batches: usize,
    done: usize,
    examples: usize,
    loss_sum: f64,
    started: Instant,
    last_line: Instant,
}

impl EpochState {
    /// A batch of `examples` finished with this loss.
    pub fn record(&mut self, loss: f64, examples: usize) {
        self.done += 1;
        self.examples += examples;
        self.loss_sum += loss;
    }

    /// The mean loss of the epoch so far.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.done.max(1) as f64
    }

    pub fn done(&self) -> usize {
        self.done
    }

    pub fn new(epoch: usize, batches: usize, now: Instant) -> Self {
        EpochState {
            epoch,
            batches,
            done: 0,
            examples: 0,
            loss_sum: 0.0,
            started: now,
            last_line: now,
        }
    }

    /// The log line due at `now`, if `interval` has passed since the last one.
    pub fn line_due(&mut self, model: &str, now: Instant, interval: Duration) -> Option<String> {
        if now.duration_since(self.last_line) < interval || self.done == 0 {
            return None;
        }
        self.last_line = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let rate = self.examples as f64 / elapsed.max(1e-9);
        let left = self.batches.saturating_sub(self.done) as f64;
        let eta = left * elapsed / self.done as f64;
        Some(format!(
            "training {model} epoch {}: {}/{} batches, {rate:.0} examples/s, loss {:.4}, elapsed {}, eta {}",
            self.epoch,
            self.done,
            self.batches,
            self.loss_sum / self.done as f64,
            clock(elapsed),
            clock(eta),
        ))
    }
}

/// `1h02m03s`, `2m03s` or `3s`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// One model's training as log lines.
#[derive(Debug)]
pub struct ModelLines {
    model: String,
    interval: Duration,
    state: Mutex<Option<EpochState>>,
}

impl ModelLines {
    pub fn new(model: &str) -> Self {
        ModelLines {
            model: model.to_owned(),
            interval: log_interval(),
            state: Mutex::new(None),
        }
    }
}

impl Progress for ModelLines {
    fn epoch_started(&self, epoch: usize, batches: usize) {
        if let Ok(mut state) = self.state.lock() {
            *state = Some(EpochState::new(epoch, batches, Instant::now()));
        }
    }

    fn batch_done(&self, loss: f64, examples: usize) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let Some(state) = guard.as_mut() else { return };
        state.record(loss, examples);
        if let Some(line) = state.line_due(&self.model, Instant::now(), self.interval) {
            tracing::info!("{line}");
        }
    }

    fn epoch_finished(&self, _log: &EpochLog) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_comes_once_per_interval_with_rate_and_eta() {
        let t0 = Instant::now();
        let mut s = EpochState::new(3, 100, t0);
        let interval = Duration::from_secs(30);
        s.done = 25;
        s.examples = 25 * 512;
        s.loss_sum = 25.0 * 2.5;
        assert_eq!(
            s.line_due("m", t0 + Duration::from_secs(10), interval),
            None
        );
        let line = s
            .line_due("m", t0 + Duration::from_secs(40), interval)
            .unwrap();
        // 12,800 examples in 40 s; 75 batches left at 1.6 s each.
        assert_eq!(
            line,
            "training m epoch 3: 25/100 batches, 320 examples/s, loss 2.5000, elapsed 40s, eta 2m00s"
        );
        // The next one waits a full interval from this one.
        assert_eq!(
            s.line_due("m", t0 + Duration::from_secs(60), interval),
            None
        );
        assert!(
            s.line_due("m", t0 + Duration::from_secs(71), interval)
                .is_some()
        );
        assert_eq!(clock(3725.0), "1h02m05s");
    }
}
