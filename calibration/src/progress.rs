//! The progress bar (stderr, with rate and ETA) and the diagnostics printed beside it.
//!
//! The bar draws only when stderr is a terminal and showing it was asked for; diagnostics
//! always go to stderr, above the bar, so they are never lost or garbled.

use std::fmt::Display;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over clips, plus warnings.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `len` items; hidden unless `show` and stderr is a terminal.
    pub fn new(len: u64, show: bool, what: &'static str) -> Progress {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .expect("a valid progress template");
        bar.set_style(style);
        bar.set_prefix(what);
        Progress { bar }
    }

    /// A progress that shows nothing (library use, tests).
    pub fn hidden() -> Progress {
        Progress::new(0, false, "")
    }

    /// One more item done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Prints `caer-calibrate: warning: <message>` to stderr, above the bar.
    pub fn warn(&self, message: impl Display) {
        self.bar
            .suspend(|| eprintln!("caer-calibrate: warning: {message}"));
    }

    /// Prints `caer-calibrate: <message>` to stderr, above the bar.
    pub fn note(&self, message: impl Display) {
        self.bar.suspend(|| eprintln!("caer-calibrate: {message}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
