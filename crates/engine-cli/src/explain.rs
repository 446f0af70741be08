//! `engine explain CODE`: the section of docs/diagnostics.md for a diagnostic code, as
//! `rustc --explain` prints its error index.

use engine_spec::Code;

use crate::exit::Exit;
use crate::printer;
use crate::render::{Level, Message};

/// docs/diagnostics.md, built into the binary so that it explains what it reports.
const DIAGNOSTICS: &str = include_str!("../../../docs/diagnostics.md");

/// Codes that no longer exist, with the code that replaced them (if any).
const RETIRED: &[(&str, Option<&str>)] = &[
    ("E0102", Some("W0504")),
    ("E0202", Some("W0505")),
    ("E0305", None),
    ("E0401", Some("W0506")),
    ("E0402", Some("W0507")),
];

#[derive(Debug, clap::Args)]
pub(crate) struct ExplainArgs {
    /// A diagnostic code (`E0101`) or its name (`undeclared-key`).
    code: String,
}

pub(crate) fn explain(args: &ExplainArgs) -> Exit {
    let wanted = args.code.trim();
    let code = Code::ALL.iter().copied().find(|code| {
        code.as_str().eq_ignore_ascii_case(wanted) || code.slug().eq_ignore_ascii_case(wanted)
    });
    if let Some(code) = code
        && let Some(section) = section(code)
    {
        printer::stdout(&crate::markdown::render(
            &section,
            crate::render::stdout_color_enabled(),
        ));
        return Exit::Success;
    }
    let retired = RETIRED
        .iter()
        .find(|(old, _)| old.eq_ignore_ascii_case(wanted));
    let help = match retired {
        Some((old, Some(new))) => {
            format!("`{old}` was retired: it is now `{new}`; run `engine explain {new}`")
        }
        Some((old, None)) => format!(
            "`{old}` was retired: what it reported (a query string in `vendorPath`) is supported now"
        ),
        None => engine_spec::suggest::hint(
            wanted,
            Code::ALL
                .iter()
                .map(|code| code.as_str())
                .chain(Code::ALL.iter().map(|code| code.slug())),
        )
        .unwrap_or_else(|| "the codes are listed in docs/diagnostics.md".to_owned()),
    };
    let title = format!("unknown diagnostic code `{wanted}`");
    let mut message = Message::new(Level::Error, &title);
    message.help = Some(&help);
    printer::error(&message);
    Exit::Usage
}

/// The section `### CODE slug` of the diagnostics page, up to the next heading.
fn section(code: Code) -> Option<String> {
    let heading = format!("### {} {}\n", code.as_str(), code.slug());
    let start = DIAGNOSTICS.find(&heading)?;
    let rest = &DIAGNOSTICS[start..];
    let end = rest[heading.len()..]
        .find("\n#")
        .map_or(rest.len(), |end| heading.len() + end + 1);
    Some(rest[..end].trim_end().to_owned() + "\n")
}

/// The line that ends `engine validate`'s human output when it reported anything.
pub(crate) fn pointer(codes: &[Code]) -> Option<String> {
    if codes.is_empty() {
        return None;
    }
    let listed: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    Some(format!(
        "for more about a code, run `engine explain CODE` ({})\n",
        listed.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_section_that_starts_with_its_heading() {
        for &code in Code::ALL {
            let section = section(code).unwrap_or_else(|| panic!("no section for {code}"));
            assert!(section.starts_with(&format!("### {code} ")), "{section}");
            assert!(section.contains("**Fix.**"), "{code}: {section}");
            assert!(
                !section.contains("\n### "),
                "{code} runs into the next section"
            );
        }
    }
}
