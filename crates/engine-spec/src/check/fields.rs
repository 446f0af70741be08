//! Fields of the document:
//! - E0004: a document that is not a connector (no `resources`, or none at all);
//! - E0005: an unknown field that is a typo of a known one which the object lacks (`vendorPth`
//!   without `vendorPath`, `resource` without `resources`): the value the author meant is lost;
//! - W0502: the same typo next to the field it resembles (probably a leftover).
//!
//! element.json exports carry many fields the engine does not use (`id`, `hub`, `createdDate`,
//! `ownerAccountId`, ...); they are accepted and ignored silently. Only a field within a few edits
//! of a field the engine knows for that object is reported, with "did you mean". The known fields
//! come from the generated schema ([`ObjectKind::known_fields`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic};
use crate::pointer::JsonPointer;
use crate::raw::RawConnector;
use crate::schema::ObjectKind;
use crate::source::Location;
use crate::suggest;

pub(super) fn check(
    text: &str,
    raw: &RawConnector,
    file: &Path,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // The document is parsed again only when a check needs to know whether a field is present
    // (a near miss, or no resources): rare, so a file that conforms is never parsed twice.
    let document = std::cell::OnceCell::new();
    let document =
        || document.get_or_init(|| serde_json::from_str::<Value>(text).unwrap_or_default());
    let root = JsonPointer::root();
    let misspelled_resources = raw
        .extra
        .keys()
        .any(|field| suggest::did_you_mean(field, ["resources"]).is_some());
    if raw.resources.is_empty() && !misspelled_resources {
        let has_field = document().get("resources").is_some();
        diagnostics.push(
            Diagnostic::new(
                Code::NotAConnector,
                Location::new(file, if has_field { root.field("resources") } else { root.clone() }),
                if has_field {
                    "a connector needs at least one resource"
                } else {
                    "not a connector: there is no `resources`"
                },
            )
            .with_label(if has_field { "empty" } else { "a connector is an object with `resources`" })
            .with_help(
                "add a resource (`{\"name\": \"me\", \"type\": \"API\", \"vendorPath\": \"/me\"}`); \
                 instance files, tests and request bodies are not connectors",
            ),
        );
    }
    let mut objects: Vec<(ObjectKind, JsonPointer, &BTreeMap<String, Value>)> =
        vec![(ObjectKind::Connector, root.clone(), &raw.extra)];
    if let Some(authentication) = &raw.authentication {
        objects.push((
            ObjectKind::Authentication,
            root.field("authentication"),
            &authentication.extra,
        ));
    }
    for (index, property) in raw.configuration.iter().enumerate() {
        objects.push((
            ObjectKind::Configuration,
            root.field("configuration").index(index),
            &property.extra,
        ));
    }
    for (index, parameter) in raw.parameters.iter().enumerate() {
        objects.push((
            ObjectKind::Parameter,
            root.field("parameters").index(index),
            &parameter.extra,
        ));
    }
    for (index, resource) in raw.resources.iter().enumerate() {
        let pointer = root.field("resources").index(index);
        for (position, parameter) in resource.parameters.iter().enumerate() {
            objects.push((
                ObjectKind::Parameter,
                pointer.field("parameters").index(position),
                &parameter.extra,
            ));
        }
        objects.push((ObjectKind::Resource, pointer, &resource.extra));
    }
    for (kind, pointer, extra) in objects {
        let known = kind.known_fields();
        for field in extra.keys() {
            let Some(meant) = suggest::did_you_mean(field, known.iter().map(String::as_str)) else {
                continue;
            };
            let lost = document()
                .pointer(pointer.as_str())
                .is_some_and(|object| object.get(meant).is_none());
            let (code, label) = if lost {
                (
                    Code::MisspelledField,
                    format!("ignored: `{meant}` is missing"),
                )
            } else {
                (Code::UnknownField, "ignored".to_owned())
            };
            diagnostics.push(
                Diagnostic::new(
                    code,
                    Location::new(file, pointer.field(field)),
                    format!("unknown field `{field}` in {}", kind.describe()),
                )
                .with_label(label)
                .with_help(format!("did you mean `{meant}`?")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::with_code;
    use crate::diagnostic::Code;

    #[test]
    fn a_document_without_resources_is_not_a_connector() {
        let report = crate::validate(crate::SourceFile::new("i.json", r#"{"client.id": "x"}"#));
        assert!(report.is_not_a_connector());
        let report = crate::validate(crate::SourceFile::new("c.json", r#"{"resources": []}"#));
        assert_eq!(report.diagnostics()[0].code, Code::NotAConnector);
        assert!(
            !report.is_not_a_connector(),
            "an empty list is reported where it is"
        );
        let report = crate::validate(crate::SourceFile::new("c.json", r#"{"resource": []}"#));
        let codes: Vec<Code> = report.diagnostics().iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::MisspelledField]);
    }

    #[test]
    fn a_typo_is_an_error_when_the_field_it_means_is_missing() {
        let text = r#"{"resources": [{"type": "api", "vendorPth": "/a"}, {"type": "api", "vendorPath": "/b", "vendorPth": "/a"}]}"#;
        assert_eq!(with_code(text, Code::MisspelledField).len(), 1);
        assert_eq!(with_code(text, Code::UnknownField).len(), 1);
    }

    #[test]
    fn near_misses_are_reported_with_the_known_field() {
        // Every object lacks the field its typo means: each is lost, an error.
        let text = r#"{"nmae": "x", "authentication": {"type": "custom", "refreshin": "query"},
            "configuration": [{"key": "a", "defaultvalue": "b"}],
            "parameters": [{"name": "a", "type": "value", "vendor_name": "X"}],
            "resources": [{"type": "api", "vendor_path": "/x", "parameters": [{"name": "b", "type": "query", "dataTyp": "string"}]}]}"#;
        let found = with_code(text, Code::MisspelledField);
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|d| (d.location.pointer.as_str(), d.help.as_deref().unwrap()))
            .collect();
        assert_eq!(
            found,
            [
                ("/nmae", "did you mean `name`?"),
                ("/authentication/refreshin", "did you mean `refreshIn`?"),
                (
                    "/configuration/0/defaultvalue",
                    "did you mean `defaultValue`?"
                ),
                ("/parameters/0/vendor_name", "did you mean `vendorName`?"),
                ("/resources/0/vendor_path", "did you mean `vendorPath`?"),
                (
                    "/resources/0/parameters/0/dataTyp",
                    "did you mean `dataType`?"
                ),
            ]
        );
    }

    #[test]
    fn export_fields_are_ignored_silently() {
        let text = r#"{"id": 1, "hub": "crm", "hookName": "x", "resources": [{"type": "api",
            "kind": "eb", "model": {}, "nextPageKey": "", "paginationType": "VENDOR_SUPPORTED"}]}"#;
        assert!(with_code(text, Code::UnknownField).is_empty());
    }

    #[test]
    fn unknown_session_fields_are_schema_errors_with_a_hint() {
        let text = r#"{"session": {"managment": "auto"}}"#;
        let found = with_code(text, Code::Schema);
        assert_eq!(found[0].location.pointer.as_str(), "/session/managment");
        assert_eq!(found[0].help.as_deref(), Some("did you mean `management`?"));
    }
}
