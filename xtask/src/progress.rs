//! Progress of long stages: a bar when stderr is a terminal, otherwise a plain log line at a
//! steady interval (CI logs, the scheduled job, `nohup`), so a long epoch is never silent.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use recall_models::train::{EpochLog, Progress};

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
struct EpochState {
    epoch: usize,
    batches: usize,
    done: usize,
    examples: usize,
    loss_sum: f64,
    started: Instant,
    last_line: Instant,
}

impl EpochState {
    fn new(epoch: usize, batches: usize, now: Instant) -> Self {
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
    fn line_due(&mut self, model: &str, now: Instant, interval: Duration) -> Option<String> {
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

/// Training progress of one model: a bar per epoch on a terminal, log lines elsewhere.
#[derive(Debug)]
pub struct TrainBar {
    model: String,
    bar: Option<ProgressBar>,
    interval: Duration,
    state: Mutex<Option<EpochState>>,
}

impl TrainBar {
    /// A bar when stderr is a terminal, otherwise a line every `RECALL_PROGRESS_SECONDS`.
    pub fn for_terminal(model: &str) -> Self {
        let enabled = std::io::stderr().is_terminal();
        TrainBar {
            model: model.to_owned(),
            bar: enabled.then(ProgressBar::hidden),
            interval: log_interval(),
            state: Mutex::new(None),
        }
    }
}

impl Progress for TrainBar {
    fn epoch_started(&self, epoch: usize, batches: usize) {
        if let Ok(mut state) = self.state.lock() {
            *state = Some(EpochState::new(epoch, batches, Instant::now()));
        }
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
    }

    fn batch_done(&self, loss: f64, examples: usize) {
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let Some(state) = guard.as_mut() else { return };
        state.done += 1;
        state.examples += examples;
        state.loss_sum += loss;
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                if state.done % 20 == 1 {
                    bar.set_message(format!("loss {:.4}", state.loss_sum / state.done as f64));
                }
            }
            None => {
                if let Some(line) = state.line_due(&self.model, Instant::now(), self.interval) {
                    tracing::info!("{line}");
                }
            }
        }
    }

    fn epoch_finished(&self, _log: &EpochLog) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
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
