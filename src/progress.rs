//! Progress for long jobs: a bar with rate and ETA on a terminal, periodic log lines otherwise,
//! and per-stage wall time and peak memory for the build summary.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

/// How progress is shown; decided once, from whether stderr is a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    bars: bool,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn detect() -> Self {
        Self {
            bars: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// No output at all (tests, library callers).
    pub fn hidden() -> Self {
        Self {
            bars: false,
            quiet: true,
        }
    }

    /// A stage with `total` units of work (0 when unknown).
    pub fn stage(&self, name: &str, total: u64) -> StageProgress {
        let bar = self.bars.then(|| {
            let bar = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::new_spinner()
            };
            let template = if total > 0 {
                "{msg:>28} [{bar:30}] {percent:>3}% {per_sec:>12} eta {eta}"
            } else {
                "{msg:>28} {spinner} {pos} {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(shorten(name));
            bar
        });
        StageProgress {
            bar,
            name: name.to_owned(),
            total,
            quiet: self.quiet,
            started: Instant::now(),
            done: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
        }
    }
}

fn shorten(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= 28 {
        name.to_owned()
    } else {
        format!("…{}", chars[chars.len() - 27..].iter().collect::<String>())
    }
}

/// One stage's progress.
#[derive(Debug)]
pub struct StageProgress {
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
    quiet: bool,
    started: Instant,
    /// Work done, for `add` from several threads.
    done: AtomicU64,
    last_log: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl StageProgress {
    /// Sets the work done so far.
    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.report(done);
    }

    /// Adds to the work done; callable from worker threads.
    pub fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.report(done);
    }

    fn report(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.quiet {
            return;
        }
        // try_lock: a thread that finds another one logging just skips.
        let Ok(mut last) = self.last_log.try_lock() else {
            return;
        };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / elapsed.max(1e-9);
        let eta_s = if self.total > done && rate > 0.0 {
            (self.total - done) as f64 / rate
        } else {
            0.0
        };
        tracing::info!(stage = %self.name, done, total = self.total, rate = rate as u64, eta_s = eta_s as u64, "progress");
    }

    /// Ends the stage; `units` is what it processed (rows, items), for the log line.
    pub fn finish(self, units: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            tracing::info!(stage = %self.name, units, seconds = self.started.elapsed().as_secs_f64(), "stage done");
        }
    }
}

/// Wall time and peak memory of one build stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
    /// Peak resident memory of the process during the stage, in MiB (0 when unknown).
    pub peak_rss_mib: f64,
}

/// Times stages and records the peak memory of each.
#[derive(Debug, Default)]
pub struct StageClock {
    pub timings: Vec<StageTiming>,
}

impl StageClock {
    /// Runs `f` as the stage `name`, with a tracing span around it.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let span = tracing::info_span!("build_stage", stage = name);
        let _entered = span.enter();
        reset_peak_rss();
        let started = Instant::now();
        let out = f();
        self.timings.push(StageTiming {
            stage: name.to_owned(),
            seconds: started.elapsed().as_secs_f64(),
            peak_rss_mib: peak_rss_mib(),
        });
        out
    }
}

/// Linux: writing 5 to clear_refs resets the peak-RSS watermark, so each stage reports its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size (VmHWM) in MiB, or 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    read_status_kib("VmHWM:").map_or(0.0, |kib| kib as f64 / 1024.0)
}

fn read_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
