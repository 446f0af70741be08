//! E0105: every JavaScript hook (the connector's and each resource's, `event` hooks included)
//! is parsed by the engine that runs it; a syntax error is reported where it is in the file,
//! inside the JSON string.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::hook::{Hook, SyntaxChecker, written_offset};
use crate::model::Resource;

pub(super) fn check(text: &str, input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    let hooks: Vec<&Hook> = connector
        .hooks()
        .iter()
        .chain(connector.resources().iter().flat_map(Resource::hooks))
        .collect();
    if hooks.is_empty() {
        return;
    }
    let Some(checker) = SyntaxChecker::new() else {
        return;
    };
    for hook in hooks {
        let Err(error) = checker.check(hook.body()) else {
            continue;
        };
        let offset = written_offset(text, hook.location(), error.line, error.column);
        diagnostics.push(
            Diagnostic::new(
                Code::InvalidHook,
                hook.location().clone().narrow(offset, offset + 1),
                format!(
                    "the `{}` hook does not parse: {} (line {}, column {} of its script)",
                    hook.kind().as_str(),
                    error.message,
                    error.line,
                    error.column
                ),
            )
            .with_label(error.message)
            .with_help("fix the script; `engine run` would stop at this hook"),
        );
    }
}
