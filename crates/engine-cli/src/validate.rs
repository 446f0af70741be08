//! `engine validate PATH...`: checks connector files and reports every problem.
//!
//! Each path is a file, or a directory searched recursively for `*.json` (hidden directories and
//! `node_modules` are skipped), in sorted order. Diagnostics go to stderr for people (`human`, the
//! default, followed by a summary line), or to stdout as data (`json`: one object per line;
//! `github`: workflow annotations). The exit code is 0 without errors, 3 with errors (or with
//! warnings under `--deny-warnings`), 3 when a path cannot be read.
//!
//! A problem repeated in a file is one diagnostic with a count, and at most 100 diagnostics are
//! shown per file (a note says how many more there are). A directory walk skips `*.json` entries
//! that are not regular files (FIFOs, sockets, devices), with a note.
//!
//! Files are checked on every core; the output is in file order whatever the number of threads.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use engine_spec::{Report, Severity};

use crate::Exit;
use crate::render::{self, Level, Message};

#[derive(Debug, clap::Args)]
pub(crate) struct ValidateArgs {
    /// Connector files, or directories searched recursively for `*.json`.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// How to report diagnostics: `human` on stderr, or as data on stdout: `json` (one object per
    /// line) or `github` (workflow annotations).
    #[arg(long, value_enum, default_value_t = Format::Human, value_name = "FORMAT")]
    format: Format,

    /// Exit with 3 when there are warnings, not only errors.
    #[arg(long)]
    deny_warnings: bool,
}

/// The output formats of `engine validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// rustc-style messages with the source line and a caret, on stderr.
    Human,
    /// One JSON object per diagnostic and line, on stdout.
    Json,
    /// GitHub Actions workflow commands (`::error file=...`), on stdout.
    Github,
}

/// What was found over all files.
#[derive(Debug, Default)]
struct Tally {
    files: usize,
    errors: usize,
    warnings: usize,
    /// Files found by a directory walk that are not connectors (instance files, tests).
    skipped: usize,
}

pub(crate) fn validate(args: &ValidateArgs) -> Exit {
    let color = args.format == Format::Human && render::color_enabled();
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let mut tally = Tally::default();
    let mut codes: Vec<engine_spec::Code> = Vec::new();
    for path in &args.paths {
        let mut unreadable = Vec::new();
        let mut special = Vec::new();
        let files = discover(path, &mut unreadable, &mut special);
        for (path, error) in &unreadable {
            tally.errors += 1;
            let _ = stderr.write_all(unreadable_message(path, error, color).as_bytes());
        }
        for path in &special {
            let _ = writeln!(
                stderr,
                "note: skipped `{}`: not a regular file",
                path.display()
            );
        }
        let walked = files.len() != 1 || files[0] != *path;
        for checked in check_all(&files, walked, args.format, color) {
            tally.files += usize::from(checked.read && !checked.skipped);
            tally.skipped += usize::from(checked.skipped);
            tally.errors += checked.errors;
            tally.warnings += checked.warnings;
            codes.extend(&checked.codes);
            // A closed pipe is not ours to report; the exit code still tells.
            let _ = stdout.write_all(checked.stdout.as_bytes());
            let _ = stderr.write_all(checked.stderr.as_bytes());
        }
    }
    let _ = stdout.flush();
    codes.sort();
    codes.dedup();
    if let (Format::Human, Some(pointer)) = (args.format, crate::explain::pointer(&codes)) {
        let _ = stderr.write_all(pointer.as_bytes());
    }
    let _ = writeln!(stderr, "{}", summary(&tally));
    if tally.errors > 0 || (args.deny_warnings && tally.warnings > 0) {
        Exit::Invalid
    } else {
        Exit::Success
    }
}

/// What checking one file gives: its counts and its rendered output.
#[derive(Debug, Default)]
struct Checked {
    /// False when the file could not be read.
    read: bool,
    /// True when a directory walk found it and it is not a connector.
    skipped: bool,
    errors: usize,
    warnings: usize,
    /// The codes reported, for the `engine explain` pointer.
    codes: Vec<engine_spec::Code>,
    stdout: String,
    stderr: String,
}

/// Checks `files` on every core, and returns the results in the order of `files` (the output is
/// the same whatever the number of threads).
fn check_all(files: &[PathBuf], walked: bool, format: Format, color: bool) -> Vec<Checked> {
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(files.len());
    if workers <= 1 {
        return files
            .iter()
            .map(|file| check_file(file, walked, format, color))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut checked: Vec<(usize, Checked)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(index) else {
                            break done;
                        };
                        done.push((index, check_file(file, walked, format, color)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    checked.sort_by_key(|(index, _)| *index);
    checked.into_iter().map(|(_, checked)| checked).collect()
}

/// Loads and validates one file, and renders its diagnostics in `format`. A file a directory walk
/// found (`walked`) that is not a connector is skipped, with a note.
fn check_file(file: &Path, walked: bool, format: Format, color: bool) -> Checked {
    let name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".test.json") || name.ends_with(".cassette.json") {
        return check_test_file(file, name.ends_with(".cassette.json"), format, color);
    }
    let report = match engine_spec::load(file) {
        Ok(report) => report,
        Err(error) => {
            return Checked {
                errors: 1,
                stderr: unreadable_message(file, &error, color),
                ..Checked::default()
            };
        }
    };
    if walked && report.is_not_a_connector() {
        let stderr = if format == Format::Human {
            format!(
                "note: skipped `{}`: not a connector (no `resources`)\n",
                file.display()
            )
        } else {
            String::new()
        };
        return Checked {
            read: true,
            skipped: true,
            stderr,
            ..Checked::default()
        };
    }
    let mut checked = Checked {
        read: true,
        ..Checked::default()
    };
    for diagnostic in report.diagnostics() {
        match diagnostic.severity {
            Severity::Error => checked.errors += 1,
            Severity::Warning => checked.warnings += 1,
        }
        if !checked.codes.contains(&diagnostic.code) {
            checked.codes.push(diagnostic.code);
        }
    }
    match format {
        Format::Human => checked.stderr = human(&report, color),
        Format::Json => checked.stdout = json(&report),
        Format::Github => checked.stdout = github(&report),
    }
    let omitted = report.diagnostics().len().saturating_sub(MAX_SHOWN);
    if omitted > 0 {
        let _ = writeln!(
            checked.stderr,
            "note: {omitted} more {} in `{}` not shown (at most {MAX_SHOWN} per file)\n",
            if omitted == 1 { "problem" } else { "problems" },
            file.display()
        );
    }
    checked
}

/// The most diagnostics shown for one file; the summary still counts them all.
const MAX_SHOWN: usize = 100;

/// Checks a test file or a cassette of `engine test` against its wire types.
fn check_test_file(file: &Path, cassette: bool, format: Format, color: bool) -> Checked {
    let text = match engine_spec::SourceFile::load(file) {
        Ok(source) => source.text().to_owned(),
        Err(error) => {
            return Checked {
                errors: 1,
                stderr: unreadable_message(file, &error, color),
                ..Checked::default()
            };
        }
    };
    let mut checked = Checked {
        read: true,
        ..Checked::default()
    };
    let Some((message, span)) = crate::test::check_text(&text, cassette) else {
        return checked;
    };
    checked.errors = 1;
    checked.codes.push(engine_spec::Code::Schema);
    let what = if cassette { "cassette" } else { "test file" };
    let title = format!("invalid {what}: {message}");
    let source = engine_spec::SourceFile::new(file, text.clone());
    let position = span.map_or(engine_spec::Position { line: 1, column: 1 }, |span| {
        source.position(span.start)
    });
    match format {
        Format::Human => {
            let mut rendered = crate::render::Message::new(crate::render::Level::Error, &title);
            rendered.code = Some(engine_spec::Code::Schema.as_str());
            if let Some(span) = span {
                rendered.source = Some(crate::render::Source {
                    text: &text,
                    path: file,
                    span: span.start..span.end,
                    label: Some("here"),
                });
            }
            checked.stderr = crate::render::render_human(&rendered, color);
        }
        Format::Json => {
            let line = serde_json::json!({
                "file": file.display().to_string(), "line": position.line, "column": position.column,
                "pointer": "", "code": "E0002", "severity": "error", "message": title, "hint": null,
            });
            checked.stdout = format!("{line}\n");
        }
        Format::Github => {
            checked.stdout = format!(
                "::error file={},line={},col={},title=E0002::{}\n",
                file.display(),
                position.line,
                position.column,
                escape_data(&title)
            );
        }
    }
    checked
}

/// The files to check under `path`: the path itself when it is not a directory, else every
/// `*.json` below it, sorted. Paths that cannot be read are added to `unreadable`.
fn discover(
    path: &Path,
    unreadable: &mut Vec<(PathBuf, io::Error)>,
    special: &mut Vec<PathBuf>,
) -> Vec<PathBuf> {
    match fs_err::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            let mut files = Vec::new();
            walk(path, &mut files, unreadable, special);
            special.sort();
            files.sort();
            files
        }
        Ok(_) => vec![path.to_owned()],
        Err(error) => {
            unreadable.push((path.to_owned(), error));
            Vec::new()
        }
    }
}

/// Adds the `*.json` files below `dir` to `files`. A `*.json` that is not a regular file (a FIFO,
/// a socket, a device: reading it may never end) goes to `special` instead.
fn walk(
    dir: &Path,
    files: &mut Vec<PathBuf>,
    unreadable: &mut Vec<(PathBuf, io::Error)>,
    special: &mut Vec<PathBuf>,
) {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            unreadable.push((dir.to_owned(), error));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                unreadable.push((dir.to_owned(), error));
                continue;
            }
        };
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_dir {
            if !name.starts_with('.') && name != "node_modules" {
                walk(&path, files, unreadable, special);
            }
        } else if path
            .extension()
            .is_some_and(|extension| extension == "json")
        {
            // Follows a symbolic link to what it names.
            match fs_err::metadata(&path) {
                Ok(metadata) if metadata.is_file() => files.push(path),
                Ok(_) => special.push(path),
                Err(error) => unreadable.push((path, error)),
            }
        }
    }
}

/// The diagnostics of `bytes` taken as a connector file, in every format (for fuzzing).
pub(crate) fn render_bytes(bytes: &[u8]) -> String {
    match engine_spec::SourceFile::from_bytes("fuzz.json", bytes.to_vec()) {
        Ok(source) => {
            let report = engine_spec::validate(source);
            let mut text = human(&report, false);
            text.push_str(&json(&report));
            text.push_str(&github(&report));
            text
        }
        Err(error) => unreadable_message(Path::new("fuzz.json"), &error, false),
    }
}

/// Every diagnostic of `report`, rendered for people, each followed by a blank line.
fn human(report: &Report, color: bool) -> String {
    let mut text = String::new();
    for index in 0..report.diagnostics().len().min(MAX_SHOWN) {
        text.push_str(&render::render_human(
            &Message::from_diagnostic(report, index),
            color,
        ));
        text.push('\n');
    }
    text
}

/// One JSON object per diagnostic, one per line.
fn json(report: &Report) -> String {
    let mut text = String::new();
    for (index, diagnostic) in report.diagnostics().iter().enumerate().take(MAX_SHOWN) {
        let position = report.position(index);
        let object = serde_json::json!({
            "file": report.source().path().display().to_string(),
            "line": position.line,
            "column": position.column,
            "pointer": diagnostic.location.pointer.as_str(),
            "code": diagnostic.code.as_str(),
            "severity": diagnostic.severity.as_str(),
            "message": diagnostic.message,
            "hint": diagnostic.help,
        });
        text.push_str(&object.to_string());
        text.push('\n');
    }
    text
}

/// One GitHub Actions workflow command per diagnostic; the hint is a second line of the message.
fn github(report: &Report) -> String {
    let mut text = String::new();
    let file = report.source().path().display().to_string();
    for (index, diagnostic) in report.diagnostics().iter().enumerate().take(MAX_SHOWN) {
        let position = report.position(index);
        let mut message = diagnostic.message.clone();
        if let Some(help) = &diagnostic.help {
            message.push_str("\nhint: ");
            message.push_str(help);
        }
        // Writing to a `String` cannot fail.
        let _ = writeln!(
            text,
            "::{} file={},line={},col={},title={}::{}",
            diagnostic.severity.as_str(),
            escape_property(&file),
            position.line,
            position.column,
            diagnostic.code,
            escape_data(&message),
        );
    }
    text
}

/// Escapes the message of a workflow command.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value of a workflow command.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// `error: cannot read PATH` with the cause, for people, followed by a blank line.
fn unreadable_message(path: &Path, error: &io::Error, color: bool) -> String {
    let title = format!("cannot read `{}`", path.display());
    let mut message = Message::new(Level::Error, &title);
    message.causes = vec![root_cause(error, path)];
    let mut text = render::render_human(&message, color);
    text.push('\n');
    text
}

/// The innermost cause of an I/O error, without the path the title already names (fs-err
/// writes "failed to open file `PATH`: CAUSE").
fn root_cause(error: &io::Error, path: &Path) -> String {
    let mut cause: &dyn std::error::Error = error;
    if let Some(inner) = error.get_ref() {
        cause = inner;
    }
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    let marker = format!("`{}`: ", path.display());
    match text.find(&marker) {
        Some(index) => text[index + marker.len()..].to_owned(),
        None => text,
    }
}

/// `checked 7 files: 2 errors, 1 warning`, or `checked 7 files: no problems`.
fn summary(tally: &Tally) -> String {
    let plural = |count: usize, word: &str| {
        if count == 1 {
            format!("1 {word}")
        } else {
            format!("{count} {word}s")
        }
    };
    let files = plural(tally.files, "file");
    let problems = match (tally.errors, tally.warnings) {
        (0, 0) => "no problems".to_owned(),
        (errors, 0) => plural(errors, "error"),
        (0, warnings) => plural(warnings, "warning"),
        (errors, warnings) => format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        ),
    };
    if tally.skipped > 0 {
        let skipped = match tally.skipped {
            1 => "1 file that is not a connector".to_owned(),
            count => format!("{count} files that are not connectors"),
        };
        format!("checked {files} (skipped {skipped}): {problems}")
    } else {
        format!("checked {files}: {problems}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_skipped_files() {
        let tally = Tally {
            files: 3,
            skipped: 2,
            ..Tally::default()
        };
        assert_eq!(
            summary(&tally),
            "checked 3 files (skipped 2 files that are not connectors): no problems"
        );
    }

    #[test]
    fn summaries_count_and_pluralise() {
        let tally = |files, errors, warnings| Tally {
            files,
            errors,
            warnings,
            skipped: 0,
        };
        assert_eq!(
            summary(&tally(7, 2, 1)),
            "checked 7 files: 2 errors, 1 warning"
        );
        assert_eq!(summary(&tally(1, 0, 0)), "checked 1 file: no problems");
        assert_eq!(summary(&tally(0, 1, 0)), "checked 0 files: 1 error");
        assert_eq!(summary(&tally(2, 0, 3)), "checked 2 files: 3 warnings");
    }

    #[test]
    fn workflow_commands_are_escaped() {
        assert_eq!(escape_data("50% done\nhint: x"), "50%25 done%0Ahint: x");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }
}
