//! The JSON Schema of connector files: generated from the wire types in [`crate::raw`], checked in
//! as `schemas/connector.schema.json` for editors, and used by [`crate::validate`] to report every
//! structural problem at once, by pointer.

use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::{
    AuthenticationType, ConfigType, Grant, ParameterKind, RefreshIn, ResourceType,
    SessionManagement, Source, VendorKind,
};
use crate::pointer::JsonPointer;
use crate::raw::RawConnector;
use crate::source::Location;
use crate::suggest;

/// The `$id` of the published schema.
pub const SCHEMA_ID: &str =
    "https://github.com/connector-engine/engine/raw/main/schemas/connector.schema.json";

/// The JSON Schema (draft 2020-12) of a connector file.
pub fn connector_schema() -> Value {
    let mut schema = schemars::schema_for!(RawConnector).to_value();
    if let Value::Object(object) = &mut schema {
        object.insert("$id".into(), Value::String(SCHEMA_ID.into()));
        object.insert(
            "description".into(),
            Value::String(
                "A connector for the declarative connector engine, in the style of Cloud \
                 Elements' element.json. See docs/connector-format.md."
                    .into(),
            ),
        );
    }
    schema
}

/// The schema as the checked-in file holds it: pretty JSON with a trailing newline.
pub fn connector_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&connector_schema())
        .expect("a serde_json::Value always serialises");
    text.push('\n');
    text
}

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::validator_for(&connector_schema())
        .expect("the generated schema is valid draft 2020-12 (tested)")
});

/// Checks `document` against the schema; one diagnostic per problem, none when it conforms.
pub(crate) fn check(document: &Value, file: &std::path::Path) -> Vec<Diagnostic> {
    VALIDATOR
        .iter_errors(document)
        .map(|error| diagnose(&error, file))
        .collect()
}

/// One schema error as a diagnostic. An `anyOf` error (an optional field is `anyOf [T, null]`)
/// is explained by the branch that says most: an unknown enum value if there is one.
fn diagnose(error: &jsonschema::ValidationError<'_>, file: &std::path::Path) -> Diagnostic {
    let pointer = JsonPointer::parse(error.instance_path().as_str());
    let location = Location::new(file, pointer.clone());
    match error.kind() {
        ValidationErrorKind::AnyOf { context } => {
            let branches = || context.iter().flatten();
            let best = branches()
                .find(|inner| matches!(inner.kind(), ValidationErrorKind::Enum { .. }))
                .or_else(|| {
                    branches()
                        .find(|inner| !matches!(inner.kind(), ValidationErrorKind::Type { .. }))
                });
            match best {
                Some(inner) => diagnose(inner, file),
                None => Diagnostic::new(Code::Schema, location, error.to_string())
                    .with_label("wrong type"),
            }
        }
        ValidationErrorKind::Enum { .. } => {
            let tokens: Vec<String> = pointer.tokens().collect();
            let (what, spellings) = spellings_of(&tokens);
            let value = error.instance().as_str().unwrap_or_default().to_owned();
            Diagnostic::new(
                Code::UnknownKind,
                location,
                format!("unknown {what} `{value}`"),
            )
            .with_label("not a known value")
            .with_help_opt(
                suggest::hint(&value, spellings.iter().copied())
                    .or_else(|| Some(format!("expected one of: {}", spellings.join(", ")))),
            )
        }
        ValidationErrorKind::Required { property } => Diagnostic::new(
            Code::Schema,
            location,
            format!(
                "missing required field `{}`",
                property.as_str().unwrap_or_default()
            ),
        )
        .with_label("in this object"),
        ValidationErrorKind::AdditionalProperties { unexpected } => Diagnostic::new(
            Code::Schema,
            location,
            format!("unknown field `{}`", unexpected.join("`, `")),
        )
        .with_label("not allowed here"),
        _ => Diagnostic::new(Code::Schema, location, error.to_string()).with_label("wrong value"),
    }
}

/// What a field holding an enum is called in messages, and its accepted spellings, from the
/// pointer's tokens (`type` needs the name of the array it sits in).
fn spellings_of(tokens: &[String]) -> (&'static str, &'static [&'static str]) {
    let field = tokens.last().map_or("", String::as_str);
    let array = tokens
        .len()
        .checked_sub(3)
        .map_or("", |index| tokens[index].as_str());
    match (field, array) {
        ("type", _) if tokens.len() == 2 => ("authentication type", AuthenticationType::SPELLINGS),
        ("type", "resources") => ("resource type", ResourceType::SPELLINGS),
        ("type", "configuration") => ("configuration type", ConfigType::SPELLINGS),
        ("type", _) => ("parameter type", ParameterKind::SPELLINGS),
        ("grant", _) => ("grant", Grant::SPELLINGS),
        ("refreshIn", _) => ("refresh placement", RefreshIn::SPELLINGS),
        ("management", _) => ("session management", SessionManagement::SPELLINGS),
        ("vendorType", _) => ("vendor type", VendorKind::SPELLINGS),
        ("source", _) => ("parameter source", Source::SPELLINGS),
        _ => ("value", &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_draft_2020_12_and_compiles() {
        let schema = connector_schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let _ = &*VALIDATOR;
    }

    /// The checked-in schema is generated from the wire types; `ENGINE_BLESS=1` rewrites it.
    #[test]
    fn checked_in_schema_has_not_drifted() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../schemas/connector.schema.json");
        let expected = connector_schema_text();
        if std::env::var_os("ENGINE_BLESS").is_some() {
            fs_err::write(&path, &expected).unwrap();
        }
        let actual = fs_err::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "`schemas/connector.schema.json` is out of date: run `ENGINE_BLESS=1 cargo test -p engine-spec schema` and commit it"
        );
    }
}
