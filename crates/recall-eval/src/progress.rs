//! Progress lines for long loops over users or items (exact top-K over a million items, an
//! index build): a `tracing` info line at a steady interval with done/total, rate, elapsed and
//! ETA, so a long evaluation or export is never silent in a log. Nothing is logged by a loop
//! that ends before the first interval.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds between two lines, process-wide (the orchestrator sets it from its
/// configuration); default 30 s.
static INTERVAL_MS: AtomicU64 = AtomicU64::new(30_000);

/// Sets the interval between two progress lines of every later [`RateLog`].
pub fn set_interval(interval: Duration) {
    INTERVAL_MS.store(
        u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

fn interval() -> Duration {
    Duration::from_millis(INTERVAL_MS.load(Ordering::Relaxed))
}

/// Counts units done from any thread and logs a line when the interval has passed.
#[derive(Debug)]
pub struct RateLog {
    what: &'static str,
    unit: &'static str,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    last: Mutex<Instant>,
    interval: Duration,
}

impl RateLog {
    /// `what` names the loop ("exact top-K"), `unit` what is counted ("users").
    pub fn new(what: &'static str, unit: &'static str, total: usize) -> Self {
        let now = Instant::now();
        RateLog {
            what,
            unit,
            total,
            done: AtomicUsize::new(0),
            started: now,
            last: Mutex::new(now),
            interval: interval(),
        }
    }

    /// Records `n` more units done; logs when the interval has passed since the last line.
    pub fn add(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        // Counting one at a time, look at the clock on every 64th unit only.
        if n < 64 && !done.is_multiple_of(64) {
            return;
        }
        // A busy lock means another thread is logging right now: skip, never wait.
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(*last) < self.interval {
            return;
        }
        *last = now;
        drop(last);
        tracing::info!("{}", self.line(done, now.duration_since(self.started)));
    }

    /// The line for `done` units after `elapsed`.
    fn line(&self, done: usize, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = done as f64 / seconds.max(1e-9);
        let left = self.total.saturating_sub(done) as f64 / rate.max(1e-9);
        format!(
            "{}: {done}/{} {}, {rate:.0} {}/s, elapsed {}, eta {}",
            self.what,
            self.total,
            self.unit,
            self.unit,
            clock(seconds),
            clock(left)
        )
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_done_total_rate_and_eta() {
        let log = RateLog::new("exact top-K", "users", 1000);
        assert_eq!(
            log.line(250, Duration::from_secs(10)),
            "exact top-K: 250/1000 users, 25 users/s, elapsed 10s, eta 30s"
        );
        assert_eq!(
            log.line(100, Duration::from_secs(100)),
            "exact top-K: 100/1000 users, 1 users/s, elapsed 1m40s, eta 15m00s"
        );
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let log = RateLog::new("t", "x", 8000);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| (0..1000).for_each(|_| log.add(1)));
            }
        });
        assert_eq!(log.done.load(Ordering::Relaxed), 8000);
    }
}
