//! The one place that writes to the terminal: data to stdout, messages to stderr.
#![expect(clippy::print_stderr, reason = "the printer module prints messages")]

use std::io::Write as _;

use crate::render::{Message, color_enabled, render_human};

/// Writes data (the run's result) to stdout, as it is.
pub(crate) fn stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes a message for a person to stderr.
pub(crate) fn error(message: &Message<'_>) {
    eprint!("{}", render_human(message, color_enabled()));
}

/// Writes a `-v` line to stderr.
pub(crate) fn verbose(line: &str) {
    eprintln!("{line}");
}

/// Writes a text for a person, as it is, to stderr.
pub(crate) fn message(text: &str) {
    eprint!("{text}");
}
