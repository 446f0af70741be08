//! How `engine test` reports: human (stderr), JSON lines, GitHub workflow commands, `JUnit` XML.

use std::fmt::Write as _;

use super::FileOutcome;
use crate::printer;

/// The report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// For people, on stderr.
    Human,
    /// One JSON object per step (and per invalid file) on stdout.
    Json,
    /// GitHub Actions annotations on stdout.
    Github,
    /// `JUnit` XML on stdout.
    Junit,
}

/// Prints the outcomes in `format`, then (human) a summary line.
pub(crate) fn print(outcomes: &[FileOutcome], format: Format) {
    let mut out = String::new();
    let (mut passed, mut failed, mut invalid) = (0, 0, 0);
    for outcome in outcomes {
        if outcome.invalid.is_some() {
            invalid += 1;
        }
        for step in &outcome.steps {
            if step.failures.is_empty() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    match format {
        Format::Human => {
            for outcome in outcomes {
                let path = outcome.path.display();
                if let Some(message) = &outcome.invalid {
                    let _ = writeln!(out, "error: `{path}` cannot run: {message}");
                    continue;
                }
                let bad: Vec<_> = outcome
                    .steps
                    .iter()
                    .filter(|step| !step.failures.is_empty())
                    .collect();
                if bad.is_empty() {
                    let _ = writeln!(out, "ok: {path} ({} steps)", outcome.steps.len());
                }
                for step in bad {
                    let _ = writeln!(
                        out,
                        "FAILED: {path}: step {} `{}`\n  --> {path}:{}:{}",
                        step.index + 1,
                        step.name,
                        step.line,
                        step.column
                    );
                    for failure in &step.failures {
                        let _ = writeln!(out, "  {failure}");
                    }
                }
            }
            let _ = writeln!(
                out,
                "{passed} passed, {failed} failed{}",
                if invalid > 0 {
                    format!(", {invalid} invalid test files")
                } else {
                    String::new()
                }
            );
            printer::message(&out);
        }
        Format::Json => {
            for outcome in outcomes {
                let file = outcome.path.display().to_string();
                if let Some(message) = &outcome.invalid {
                    let line =
                        serde_json::json!({"file": file, "status": "invalid", "message": message});
                    let _ = writeln!(out, "{line}");
                }
                for step in &outcome.steps {
                    let line = serde_json::json!({
                        "file": file, "step": step.index + 1, "name": step.name,
                        "line": step.line, "column": step.column,
                        "status": if step.failures.is_empty() { "passed" } else { "failed" },
                        "failures": step.failures,
                    });
                    let _ = writeln!(out, "{line}");
                }
            }
            printer::stdout(&out);
        }
        Format::Github => {
            for outcome in outcomes {
                let file = outcome.path.display();
                if let Some(message) = &outcome.invalid {
                    let _ = writeln!(
                        out,
                        "::error file={file},title=engine test::{}",
                        escape(message)
                    );
                }
                for step in outcome
                    .steps
                    .iter()
                    .filter(|step| !step.failures.is_empty())
                {
                    let _ = writeln!(
                        out,
                        "::error file={file},line={},col={},title=engine test: {}::{}",
                        step.line,
                        step.column,
                        escape(&step.name),
                        escape(&step.failures.join("\n"))
                    );
                }
            }
            printer::stdout(&out);
        }
        Format::Junit => {
            let _ = writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            let _ = writeln!(
                out,
                "<testsuites name=\"engine test\" tests=\"{}\" failures=\"{failed}\" errors=\"{invalid}\">",
                passed + failed
            );
            for outcome in outcomes {
                let file = xml(&outcome.path.display().to_string());
                let failures = outcome
                    .steps
                    .iter()
                    .filter(|step| !step.failures.is_empty())
                    .count();
                let _ = writeln!(
                    out,
                    "  <testsuite name=\"{file}\" tests=\"{}\" failures=\"{failures}\" errors=\"{}\">",
                    outcome.steps.len(),
                    usize::from(outcome.invalid.is_some())
                );
                if let Some(message) = &outcome.invalid {
                    let _ = writeln!(
                        out,
                        "    <testcase name=\"(file)\" classname=\"{file}\"><error message=\"{}\"/></testcase>",
                        xml(message)
                    );
                }
                for step in &outcome.steps {
                    let name = xml(&format!("{}. {}", step.index + 1, step.name));
                    if step.failures.is_empty() {
                        let _ =
                            writeln!(out, "    <testcase name=\"{name}\" classname=\"{file}\"/>");
                    } else {
                        let _ = writeln!(
                            out,
                            "    <testcase name=\"{name}\" classname=\"{file}\"><failure message=\"{}\">{}</failure></testcase>",
                            xml(step.failures[0].lines().next().unwrap_or_default()),
                            xml(&step.failures.join("\n"))
                        );
                    }
                }
                let _ = writeln!(out, "  </testsuite>");
            }
            let _ = writeln!(out, "</testsuites>");
            printer::stdout(&out);
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// `text` as XML text or attribute value: the markup characters escaped, and the characters XML
/// 1.0 cannot hold at all, not even as a reference (NUL, ESC and the other controls but tab and
/// line ends; U+FFFE, U+FFFF), written as `\u{1b}`, so the report stays well-formed whatever a
/// step's name holds.
fn xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\t' | '\n' | '\r' => escaped.push(character),
            _ if character < ' ' || matches!(character, '\u{fffe}' | '\u{ffff}') => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(character));
            }
            _ => escaped.push(character),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::xml;

    #[test]
    fn xml_holds_no_character_xml_cannot() {
        assert_eq!(
            xml("a\0b\x1b[31m<c> & \"d\"\te\u{ffff}"),
            "a\\u{0}b\\u{1b}[31m&lt;c&gt; &amp; &quot;d&quot;\te\\u{ffff}"
        );
    }
}
