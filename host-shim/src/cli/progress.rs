//! A progress line on stderr for long sends and listens: drawn by
//! `indicatif` when a person watches stderr, nothing at all otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::time::Duration;

/// Counts shown on stderr; a no-op when it is hidden.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A counter of documents that `verb` (`sent`, `received`), drawn only
    /// when `show`.
    pub fn new(show: bool, verb: &str) -> Self {
        let bar = show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = format!("{{spinner}} {verb} {{pos}} ({{rate}}, {{elapsed}})");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                // A whole number per second: indicatif's own `per_sec`
                // shows four decimals.
                bar.set_style(style.with_key(
                    "rate",
                    |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                        let _ = write!(out, "{:.0}/s", state.per_sec());
                    },
                ));
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar }
    }

    /// Sets the count.
    pub fn set(&self, count: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(count);
        }
    }

    /// Prints a line on stderr above the progress line.
    pub fn eprintln(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
