//! Progress bars on stderr. indicatif draws nothing when stderr is not a terminal, so logs and
//! CI output stay clean; [`note`] lines are printed either way.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `len` requests of a measurement.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>24} [{bar:30}] {pos:>7}/{len:7} {per_sec:>13} {elapsed_precise}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// A spinner for open-ended work (a wait, traffic until an event, a computation).
pub fn spinner(label: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{prefix:>24} {spinner} {pos} {msg} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_prefix(label.to_owned());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// Print a line on stderr (call it when no bar is being drawn).
pub fn note(message: &str) {
    eprintln!("{message}");
}
