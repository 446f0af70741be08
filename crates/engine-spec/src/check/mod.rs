//! Semantic checks that run on a decoded connector, one file per family. Each pushes
//! [`Diagnostic`]s; none stops the others.
//!
//! Building the model ([`crate::validate()`]) reports only what stops a part from being built:
//! a schema problem or unknown kind (E0002, E0003), a template or JSONPath that does not compile
//! (E0103, E0104), a `nextResource` naming nothing (E0302), and the fallbacks it takes (W0509,
//! W0510). Every default is decided there, once; every other check runs here, on the model:
//!
//! | file | codes |
//! | --- | --- |
//! | [`keys`] | E0101 `undeclared-key`, W0503 `unknown-key`, W0508 `unknown-function` |
//! | [`lifecycle`] | E0201 `no-refresh`, E0203 `session-timeout-missing`, W0505 `token-on-provision` |
//! | [`auth`] | E0204 `auth-incomplete` |
//! | [`resources`] | E0301 `duplicate-resource` |
//! | [`chains`] | E0303 `chain-cycle`, E0304 `chain-too-long` |
//! | [`paths`] | W0504 `unfilled-placeholder` |
//! | [`secrets`] | W0506 `secret-in-value`, W0507 `password-default` |
//! | [`unsupported`] | W0501 `not-executed` |
//! | [`paths`] | W0511 `unused-path-parameter` |
//! | [`hooks`] | E0105 `invalid-hook` |
//! | [`fields`] | E0004 `not-a-connector`, E0005 `misspelled-field`, W0502 `unknown-field` |

use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::model::{Connector, NotExecuted};
use crate::raw::RawConnector;

mod auth;
pub(crate) mod chains;
mod fields;
mod hooks;
mod keys;
mod lifecycle;
mod paths;
mod resources;
mod secrets;
mod unsupported;

pub(crate) use secrets::literal_credential;

/// What every check reads: the wire types as written, the model built from them, and the file.
pub(crate) struct Input<'a> {
    /// The connector as written.
    pub(crate) raw: &'a RawConnector,
    /// The model built from it (possibly with errors already reported).
    pub(crate) connector: &'a Connector,
    /// The file, for locations.
    pub(crate) file: &'a Path,
}

/// Runs every check. `connector` is the model built so far (`None` when building failed).
/// Returns what the engine will not execute as the platform did ([`NotExecuted`]), for the
/// model to keep.
pub(crate) fn run(
    text: &str,
    raw: &RawConnector,
    connector: Option<&Connector>,
    file: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<NotExecuted> {
    // Unknown fields need only the wire types (and, rarely, the text).
    fields::check(text, raw, file, diagnostics);
    let Some(connector) = connector else {
        return Vec::new();
    };
    let input = Input {
        raw,
        connector,
        file,
    };
    keys::check(&input, diagnostics);
    lifecycle::check(&input, diagnostics);
    auth::check(&input, diagnostics);
    resources::check(&input, diagnostics);
    chains::check(&input, diagnostics);
    paths::check(&input, diagnostics);
    secrets::check(&input, diagnostics);
    let not_executed = unsupported::check(&input, diagnostics);
    hooks::check(text, &input, diagnostics);
    not_executed
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Runs the whole pipeline on a text and keeps the codes, for the checks' unit tests.

    use crate::diagnostic::{Code, Diagnostic};
    use crate::source::SourceFile;

    /// Every diagnostic of `text`, but E0004: the checks' tests use connectors cut down to what
    /// they check, often without resources.
    pub(crate) fn diagnostics(text: &str) -> Vec<Diagnostic> {
        crate::validate(SourceFile::new("c.json", text))
            .diagnostics()
            .iter()
            .filter(|diagnostic| diagnostic.code != Code::NotAConnector)
            .cloned()
            .collect()
    }

    /// The diagnostics of `text` with `code`.
    pub(crate) fn with_code(text: &str, code: Code) -> Vec<Diagnostic> {
        diagnostics(text)
            .into_iter()
            .filter(|diagnostic| diagnostic.code == code)
            .collect()
    }
}
