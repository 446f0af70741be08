//! The configuration keys and functions templates and parameters refer to:
//! - E0101: a `vendorPath` of an executed resource refers to a key that nothing declares,
//!   reserves or saves: its URL cannot be built;
//! - W0503: a parameter reads (or saves) such a key: it is skipped while the key has no value;
//! - W0508: a template calls a `CE.*` function the engine does not know.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::{ParameterKind, Source};
use crate::model::RESERVED_KEYS;
use crate::pointer::JsonPointer;
use crate::source::Location;
use crate::suggest;
use crate::template::{FUNCTIONS, Template};

/// How a key is used where it is referred to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// The request cannot be built without a value (a `vendorPath`).
    Required,
    /// The parameter is skipped while the key has no value.
    Optional,
    /// A response parameter saves into the key.
    Saved,
}

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    let mut check = Checker { input, diagnostics };
    for parameter in connector.all_parameters() {
        let pointer = &parameter.location().pointer;
        if let Some(template) = parameter.template() {
            check.template(
                template,
                &pointer.field(parameter.template_field()),
                Use::Optional,
            );
        }
        if parameter.kind() == ParameterKind::Configuration {
            let use_ = match parameter.source() {
                Source::Request => Use::Optional,
                Source::Response => Use::Saved,
            };
            check.key(parameter.name(), pointer.field("name"), None, use_);
        }
    }
    for resource in connector.resources() {
        let use_ = if resource.kind().is_never_executed() {
            Use::Optional
        } else {
            Use::Required
        };
        let pointer = resource.location().pointer.field("vendorPath");
        check.template(resource.vendor_path(), &pointer, use_);
    }
}

struct Checker<'a, 'b> {
    input: &'a Input<'b>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl Checker<'_, '_> {
    fn template(&mut self, template: &Template, pointer: &JsonPointer, use_: Use) {
        for reference in template.key_references() {
            let inner = Some((reference.start, reference.end));
            self.key(&reference.name, pointer.clone(), inner, use_);
        }
        for call in template.unknown_functions() {
            let known: Vec<String> = FUNCTIONS
                .iter()
                .map(|name| format!("`CE.{name}`"))
                .collect();
            self.diagnostics.push(
                Diagnostic::new(
                    Code::UnknownFunction,
                    Location::new(self.input.file, pointer.clone()).narrow(call.start, call.end),
                    format!("unknown function `CE.{}`", call.name),
                )
                .with_label("the engine cannot run this function")
                .with_help_opt(
                    suggest::hint(&call.name, FUNCTIONS.iter().copied()).or_else(|| {
                        Some(format!(
                            "the engine knows {}; a run that needs this value fails",
                            known.join(", ")
                        ))
                    }),
                ),
            );
        }
    }

    /// A key must be declared, reserved or (unless it is being saved) saved by a response
    /// parameter.
    fn key(&mut self, key: &str, pointer: JsonPointer, inner: Option<(usize, usize)>, use_: Use) {
        let connector = self.input.connector;
        let known = connector.property(key).is_some()
            || RESERVED_KEYS.contains(&key)
            || (use_ != Use::Saved
                && connector.all_parameters().any(|parameter| {
                    parameter.saves_to_configuration() && parameter.name() == key
                }));
        if known {
            return;
        }
        let candidates = connector
            .configuration()
            .iter()
            .map(crate::ConfigProperty::key)
            .chain(RESERVED_KEYS.iter().copied());
        let mut location = Location::new(self.input.file, pointer);
        if let Some((start, end)) = inner {
            location = location.narrow(start, end);
        }
        let (code, label) = match use_ {
            Use::Required => (
                Code::UndeclaredKey,
                "not declared in `configuration`: the request cannot be built",
            ),
            Use::Optional => (
                Code::UnknownKey,
                "not declared in `configuration`: sent only when the instance has a value",
            ),
            Use::Saved => (
                Code::UnknownKey,
                "saved, but not declared in `configuration`",
            ),
        };
        self.diagnostics.push(
            Diagnostic::new(code, location, format!("unknown configuration key `{key}`"))
                .with_label(label)
                .with_help_opt(suggest::hint(key, candidates).or_else(|| {
                    Some(format!(
                        "declare it: add `{{\"key\": \"{key}\", \"type\": \"TEXTFIELD_1000\"}}` to \
                         `configuration`"
                    ))
                })),
        );
    }
}
