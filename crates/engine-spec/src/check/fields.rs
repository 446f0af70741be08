//! W0502: an unknown field that is probably a typo of a known one.
//!
//! element.json exports carry many fields the engine does not use (`id`, `hub`, `createdDate`,
//! `paginationType`, ...); they are accepted and ignored silently. Only a field within a few edits
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

pub(super) fn check(raw: &RawConnector, file: &Path, diagnostics: &mut Vec<Diagnostic>) {
    let root = JsonPointer::root();
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
            let Some(hint) = suggest::hint(field, known.iter().map(String::as_str)) else {
                continue;
            };
            diagnostics.push(
                Diagnostic::new(
                    Code::UnknownField,
                    Location::new(file, pointer.field(field)),
                    format!("unknown field `{field}` in {}", kind.describe()),
                )
                .with_label("ignored")
                .with_help(hint),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::{compat, with_code};
    use crate::diagnostic::Code;

    #[test]
    fn near_misses_are_reported_with_the_known_field() {
        let text = r#"{"nmae": "x", "authentication": {"type": "custom", "refreshin": "query"},
            "configuration": [{"key": "a", "defaultvalue": "b"}],
            "parameters": [{"name": "a", "type": "value", "vendor_name": "X"}],
            "resources": [{"type": "api", "vendor_path": "/x", "parameters": [{"name": "b", "type": "query", "dataTyp": "string"}]}]}"#;
        let found = with_code(text, Code::UnknownField);
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
        for (name, text) in compat() {
            let found = with_code(&text, Code::UnknownField);
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }

    #[test]
    fn unknown_session_fields_are_schema_errors_with_a_hint() {
        let text = r#"{"session": {"managment": "auto"}}"#;
        let found = with_code(text, Code::Schema);
        assert_eq!(found[0].location.pointer.as_str(), "/session/managment");
        assert_eq!(found[0].help.as_deref(), Some("did you mean `management`?"));
    }
}
