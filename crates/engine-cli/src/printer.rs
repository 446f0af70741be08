//! The one place that writes to the terminal: data to stdout, messages to stderr.
#![expect(clippy::print_stderr, reason = "the printer module prints messages")]

use std::io::Write as _;

use crate::render::{Message, color_enabled, printable, render_human};

/// Writes data (the run's result) to stdout, as it is.
pub(crate) fn stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes a message for a person to stderr.
///
/// Its texts may hold a vendor's words (an error message, a body): control characters are
/// escaped ([`printable`]) so that none can move the cursor, recolour or clear the terminal.
pub(crate) fn error(message: &Message<'_>) {
    let title = printable(message.title);
    let help = message.help.map(printable);
    let escaped = Message {
        title: &title,
        help: help.as_deref(),
        causes: message
            .causes
            .iter()
            .map(|cause| printable(cause).into_owned())
            .collect(),
        ..message.clone()
    };
    eprint!("{}", render_human(&escaped, color_enabled()));
}

/// Writes a `-v` line (or a progress line) to stderr, control characters escaped as for
/// [`error`].
pub(crate) fn verbose(line: &str) {
    eprintln!("{}", printable(line));
}

/// Writes a text for a person, as it is, to stderr.
pub(crate) fn message(text: &str) {
    eprint!("{text}");
}

/// Writes each warning of an operation that succeeded anyway, as `-v` lines.
pub(crate) fn warnings(warnings: &[engine_service::Warning]) {
    for warning in warnings {
        verbose(&format!("warning: {warning}"));
    }
}
