//! The one renderer of messages for people: validation diagnostics and runtime errors alike.
//!
//! Build a [`Message`] and call [`render_human`]; print the result to stderr. The output follows
//! rustc, Hurl and just:
//!
//! ```text
//! error[E0101]: unknown configuration key `authenticaton.time`
//!   --> connectors/acme.json:14:34
//!    |
//! 14 |       "name": "${configuration.authenticaton.time}",
//!    |                                  ^^^^^^^^^^^^^^^^^^ not declared in `configuration`
//!    |
//! hint: did you mean `authentication.time`?
//! caused by: …
//! ```
//!
//! A message without a location prints its title, one indented `caused by: …` line per cause,
//! then its hint. Only the line where the span starts is shown (a span running over several
//! lines is underlined to the end of its first line), so a diagnostic on a large object stays
//! short.
//! Colour is the caller's decision ([`color_enabled`] for stderr).
//!
//! `annotate-snippets` does the drawing; its types stay in this module.

use std::io::IsTerminal;
use std::ops::Range;
use std::path::Path;

use annotate_snippets::{AnnotationKind, Group, Level as SnippetLevel, Renderer, Snippet};
use engine_spec::{Diagnostic, Report, Severity};

/// How bad a [`Message`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// `error`.
    Error,
    /// `warning`.
    Warning,
}

/// A place in a source file a [`Message`] points at.
#[derive(Debug, Clone)]
pub(crate) struct Source<'a> {
    /// The whole text of the file.
    pub(crate) text: &'a str,
    /// The path as shown after `-->`.
    pub(crate) path: &'a Path,
    /// The byte range the carets underline.
    pub(crate) span: Range<usize>,
    /// The note printed after the carets.
    pub(crate) label: Option<&'a str>,
}

/// `text` with every control character but newline and tab written as an escape (`\u{1b}`,
/// `\r`): text that came from a vendor cannot move the cursor, recolour or clear the terminal.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Something to tell a person: a diagnostic, or an error of another command.
#[derive(Debug, Clone)]
pub(crate) struct Message<'a> {
    /// Error or warning.
    pub(crate) level: Level,
    /// A stable code such as `E0101`, printed as `error[E0101]`.
    pub(crate) code: Option<&'a str>,
    /// What is wrong: lowercase, no trailing period.
    pub(crate) title: &'a str,
    /// Where, when known.
    pub(crate) source: Option<Source<'a>>,
    /// What to do, printed as `hint: …`.
    pub(crate) help: Option<&'a str>,
    /// The causal chain, outermost first, printed as `caused by: …`.
    pub(crate) causes: Vec<String>,
}

impl<'a> Message<'a> {
    /// A message with nothing but a level and a text.
    pub(crate) fn new(level: Level, title: &'a str) -> Self {
        Self {
            level,
            code: None,
            title,
            source: None,
            help: None,
            causes: Vec::new(),
        }
    }

    /// The message of diagnostic `index` of `report`.
    pub(crate) fn from_diagnostic(report: &'a Report, index: usize) -> Self {
        let diagnostic: &'a Diagnostic = &report.diagnostics()[index];
        let source = report.span(index).map(|span| Source {
            text: report.source().text(),
            path: report.source().path(),
            span: span.start..span.end,
            label: diagnostic.label.as_deref(),
        });
        Self {
            level: match diagnostic.severity {
                Severity::Error => Level::Error,
                Severity::Warning => Level::Warning,
            },
            code: Some(diagnostic.code.as_str()),
            title: &diagnostic.message,
            source,
            help: diagnostic.help.as_deref(),
            causes: Vec::new(),
        }
    }
}

/// True when messages on stderr may be coloured: never with `NO_COLOR` set (non-empty); always
/// with `CLICOLOR_FORCE` set (non-empty, not `0`); otherwise when stderr is a terminal.
pub(crate) fn color_enabled() -> bool {
    color_on(std::io::stderr().is_terminal())
}

/// Whether what goes to stdout gets colour: as [`color_enabled`], for stdout.
pub(crate) fn stdout_color_enabled() -> bool {
    color_on(std::io::stdout().is_terminal())
}

fn color_on(terminal: bool) -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    let forced =
        std::env::var_os("CLICOLOR_FORCE").is_some_and(|value| !value.is_empty() && value != "0");
    forced || terminal
}

/// Renders `message` for people, with ANSI colours when `color` is true. The text ends with a
/// newline.
pub(crate) fn render_human(message: &Message<'_>, color: bool) -> String {
    render(message, color, true)
}

/// Lines longer than this (minified exports are one line of megabytes) are cut around the span
/// before `annotate-snippets` draws them: it measures the display width of every character of
/// the line, for every message.
const LONG_LINE: usize = 16 * 1024;

/// Bytes of plain ASCII kept on each side of the span when a long line is cut: more than the
/// renderer ever shows beside a span (its terminal width is 140 columns), so that the drawing is
/// the same as the whole line's.
const CONTEXT: usize = 1024;

/// The part of `line` to draw for a span at `start..end` of it: the whole line, or for a long
/// line a window around the span when the output is provably the same. It is when the line
/// starts with a non-blank (the renderer trims the smallest indentation, 0 both ways), the window
/// starts on a non-blank and at least [`CONTEXT`] printable ASCII bytes (one column each) lie
/// between each cut and the span: every position the renderer computes moves by the same number
/// of columns, the window is wider than what it shows, and both sides still get their `...`.
fn window(line: &str, start: usize, end: usize) -> Range<usize> {
    let whole = 0..line.len();
    if line.len() <= LONG_LINE || line.starts_with(char::is_whitespace) {
        return whole;
    }
    let bytes = line.as_bytes();
    let plain = |range: Range<usize>| bytes[range].iter().all(|byte| (b' '..=b'~').contains(byte));
    let mut left = start.saturating_sub(CONTEXT);
    while left > 0 && bytes[left] == b' ' {
        left -= 1;
    }
    if left > 0 && !plain(left..start) {
        return whole;
    }
    let right = end.saturating_add(CONTEXT).min(line.len());
    if !plain(end..right) {
        return whole;
    }
    left..right
}

fn render(message: &Message<'_>, color: bool, windowed: bool) -> String {
    let level = match message.level {
        Level::Error => SnippetLevel::ERROR,
        Level::Warning => SnippetLevel::WARNING,
    };
    let mut title = level.primary_title(message.title);
    if let Some(code) = message.code {
        title = title.id(code);
    }
    let mut group = Group::with_title(title);
    // The `path:line:column` the renderer prints for a cut line, and the one to print instead.
    let mut origin = None;
    // Only the first line of the span is shown; `line_text` borrows it from the whole text.
    if let Some(source) = &message.source {
        let (line, line_start, line_text) = first_line(source.text, source.span.start);
        // Any byte offsets are drawn: they are moved to the character boundaries around them.
        let mut start = floor_boundary(line_text, source.span.start.saturating_sub(line_start));
        let mut end = ceil_boundary(
            line_text,
            source
                .span
                .end
                .saturating_sub(line_start)
                .clamp(start, line_text.len()),
        );
        let cut = if windowed {
            window(line_text, start, end)
        } else {
            0..line_text.len()
        };
        let line_text = if cut.start > 0 || cut.end < line_text.len() {
            let path = source.path.display();
            let column = |text: &str| text.chars().count() + 1;
            origin = Some((
                format!("{path}:{line}:{}", column(&line_text[cut.start..start])),
                format!("{path}:{line}:{}", column(&line_text[..start])),
            ));
            start -= cut.start;
            end -= cut.start;
            &line_text[cut]
        } else {
            line_text
        };
        let mut annotation = AnnotationKind::Primary.span(start..end);
        if let Some(label) = source.label {
            annotation = annotation.label(label);
        }
        group = group.element(
            Snippet::source(line_text)
                .line_start(line)
                .path(source.path.display().to_string())
                .annotation(annotation),
        );
    }
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let hint = message
        .help
        .map(|help| Group::with_title(SnippetLevel::HELP.with_name("hint").secondary_title(help)));
    let mut text = if message.source.is_some() {
        // The hint follows the snippet's closing gutter line, at the left margin.
        let mut groups = vec![group];
        groups.extend(hint);
        groups.extend(message.causes.iter().map(|cause| {
            Group::with_title(
                SnippetLevel::NOTE
                    .with_name("caused by")
                    .secondary_title(cause.as_str()),
            )
        }));
        renderer.render(&groups)
    } else {
        // Without a snippet there is no gutter: one line each, causes indented under the title.
        let mut text = renderer.render(&[group]);
        for cause in &message.causes {
            let cause = Group::with_title(
                SnippetLevel::NOTE
                    .with_name("caused by")
                    .secondary_title(cause.as_str()),
            );
            text.push_str("\n  ");
            text.push_str(&renderer.render(&[cause]));
        }
        if let Some(hint) = hint {
            text.push('\n');
            text.push_str(&renderer.render(&[hint]));
        }
        text
    };
    if let Some((drawn, actual)) = origin {
        text = text.replacen(&drawn, &actual, 1);
    }
    text.push('\n');
    text
}

/// The largest character boundary of `text` at or before `offset` (clamped to the text).
fn floor_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The smallest character boundary of `text` at or after `offset` (clamped to the text).
fn ceil_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset += 1;
    }
    offset
}

/// The 1-based number, byte offset and text (without its newline) of the line holding `offset`.
fn first_line(text: &str, offset: usize) -> (usize, usize, &str) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |index| index + 1);
    let end = text[offset..]
        .find('\n')
        .map_or(text.len(), |index| offset + index);
    let line = text[..start].bytes().filter(|&byte| byte == b'\n').count() + 1;
    (line, start, text[start..end].trim_end_matches('\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_location_source_line_carets_hint_and_causes() {
        let text = "{\n  \"resources\": [\n    {\"name\": \"${configuration.authenticaton.time}\"}\n  ]\n}\n";
        let start = text.find("authenticaton").unwrap();
        let message = Message {
            level: Level::Error,
            code: Some("E0101"),
            title: "unknown configuration key `authenticaton.time`",
            source: Some(Source {
                text,
                path: Path::new("connectors/acme.json"),
                span: start..start + "authenticaton.time".len(),
                label: Some("not declared in `configuration`"),
            }),
            help: Some("did you mean `authentication.time`?"),
            causes: vec!["a cause".to_owned()],
        };
        assert_eq!(
            render_human(&message, false),
            r#"error[E0101]: unknown configuration key `authenticaton.time`
 --> connectors/acme.json:3:31
  |
3 |     {"name": "${configuration.authenticaton.time}"}
  |                               ^^^^^^^^^^^^^^^^^^ not declared in `configuration`
  |
hint: did you mean `authentication.time`?
caused by: a cause
"#
        );
    }

    #[test]
    fn renders_causes_and_hint_without_a_location() {
        let mut message = Message::new(Level::Error, "cannot read `missing.json`");
        message.help = Some("check the path");
        message.causes = vec!["No such file or directory (os error 2)".to_owned()];
        assert_eq!(
            render_human(&message, false),
            "error: cannot read `missing.json`\n  caused by: No such file or directory (os error 2)\nhint: check the path\n"
        );
    }

    #[test]
    fn multi_line_spans_show_their_first_line() {
        let text = "{\n  \"hooks\": [\n    {\"type\": \"event\"}\n  ]\n}";
        let start = text.find('[').unwrap();
        let message = Message {
            source: Some(Source {
                text,
                path: Path::new("c.json"),
                span: start..text.len() - 2,
                label: Some("not executed"),
            }),
            ..Message::new(Level::Warning, "hooks")
        };
        assert_eq!(
            render_human(&message, false),
            "warning: hooks\n --> c.json:2:12\n  |\n2 |   \"hooks\": [\n  |            ^ not executed\n"
        );
    }

    /// A long line is drawn from a window around the span, and the output is the whole
    /// line's, whatever the span, label and colour.
    #[test]
    fn long_lines_are_cut_without_changing_the_output() {
        use std::fmt::Write as _;

        let mut text = String::from("{\"a\": \"\u{e9}\u{4e2d}\t\",");
        for index in 0..2000 {
            write!(text, "\"key{index}\": {{\"v\": [1, 2, \"x y\"]}}, ").unwrap();
            if index == 700 {
                text.push_str("\"wide\": \"\u{4e2d}\u{6587}\u{e9}\", \"tab\": \"\t\", ");
            }
        }
        text.push_str("\"end\": 0}\n");
        let spans = [
            (5, 6),
            (
                text.find("key3\"").unwrap(),
                text.find("key3\"").unwrap() + 4,
            ),
            (
                text.find("key900").unwrap(),
                text.find("key900").unwrap() + 30,
            ),
            (text.find("key901").unwrap(), text.find("key990").unwrap()),
            (text.find("key1000").unwrap(), text.find("key1000").unwrap()),
            (
                text.find("\"wide").unwrap(),
                text.find("\"wide").unwrap() + 9,
            ),
            (text.find("key1999").unwrap(), text.len() - 1),
        ];
        let line = text.trim_end();
        let middle = text.find("key900").unwrap();
        assert_eq!(
            window(line, middle, middle + 30),
            middle - 1024..middle + 1054
        );
        let wide = text.find("\"wide").unwrap();
        assert_eq!(window(line, wide, wide + 9), 0..line.len());
        let labels = [None, Some("short"), Some(&*"a long label ".repeat(20))];
        for (start, end) in spans {
            for label in labels {
                for color in [false, true] {
                    let message = Message {
                        source: Some(Source {
                            text: &text,
                            path: Path::new("big.json"),
                            span: start..end,
                            label,
                        }),
                        ..Message::new(Level::Warning, "w")
                    };
                    assert_eq!(
                        render(&message, color, true),
                        render(&message, color, false),
                        "span {start}..{end}, label {label:?}, colour {color}"
                    );
                }
            }
        }
    }

    #[test]
    fn any_byte_range_is_drawn_on_character_boundaries() {
        let text = "{\"name\": \u{e9}\u{1f600}}\r\n\u{feff}x";
        for start in 0..=text.len() + 2 {
            for end in start..=text.len() + 2 {
                let message = Message {
                    source: Some(Source {
                        text,
                        path: Path::new("c.json"),
                        span: start..end,
                        label: Some("here"),
                    }),
                    ..Message::new(Level::Error, "e")
                };
                // No panic, whatever the offsets.
                assert!(render_human(&message, false).starts_with("error: e"));
            }
        }
    }

    #[test]
    fn colour_adds_escapes_only_when_asked() {
        let message = Message::new(Level::Warning, "w");
        assert!(!render_human(&message, false).contains('\x1b'));
        assert!(render_human(&message, true).contains('\x1b'));
    }
}
