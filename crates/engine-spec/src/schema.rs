//! The JSON Schema of connector files: generated from the wire types in [`crate::raw`], checked in
//! as `schemas/connector.schema.json` for editors, and used by [`crate::validate()`] to report
//! every structural problem at once, by pointer.

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

use crate::borrowed_json::{Borrowed, BorrowedJson};
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

static SCHEMA: LazyLock<Value> = LazyLock::new(connector_schema);

/// The one validator: documents borrow their strings from the text (or from a [`Value`]).
static VALIDATOR: LazyLock<jsonschema::Validator<Borrowed>> = LazyLock::new(|| {
    jsonschema::options_for::<Borrowed>()
        .build(&SCHEMA)
        .expect("the generated schema is valid draft 2020-12 (tested)")
});

/// The wire types of `text` when it is JSON, conforms to the schema and decodes: the common
/// case, checked without building a [`Value`]. `None` otherwise: the caller takes the path that
/// reports why ([`check`] on the [`Value`], then decoding it), which gives the same wire types
/// for every text this accepts.
pub(crate) fn decode_conforming(text: &str) -> Option<RawConnector> {
    let document = BorrowedJson::parse(text)?;
    if !VALIDATOR.is_valid(&document) {
        return None;
    }
    serde::Deserialize::deserialize(&document).ok()
}

/// An object of a connector file that has a fixed set of fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// The document.
    Connector,
    /// `authentication`.
    Authentication,
    /// `session`.
    Session,
    /// An element of `configuration`.
    Configuration,
    /// An element of `parameters` (global or a resource's).
    Parameter,
    /// An element of `resources`.
    Resource,
}

impl ObjectKind {
    /// What the object is called in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Connector => "the connector",
            Self::Authentication => "`authentication`",
            Self::Session => "`session`",
            Self::Configuration => "a configuration property",
            Self::Parameter => "a parameter",
            Self::Resource => "a resource",
        }
    }

    /// The object a pointer addresses, when it is one of these.
    pub(crate) fn at(pointer: &JsonPointer) -> Option<Self> {
        let tokens: Vec<String> = pointer.tokens().collect();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let is_index = |token: &str| token.parse::<usize>().is_ok();
        Some(match tokens.as_slice() {
            [] => Self::Connector,
            ["authentication"] => Self::Authentication,
            ["session"] => Self::Session,
            ["configuration", index] if is_index(index) => Self::Configuration,
            ["parameters", index] if is_index(index) => Self::Parameter,
            ["resources", index] if is_index(index) => Self::Resource,
            ["resources", index, "parameters", position]
                if is_index(index) && is_index(position) =>
            {
                Self::Parameter
            }
            _ => return None,
        })
    }

    /// The fields the schema declares for this object, read from the generated schema (the one
    /// source of truth: the wire types in [`crate::raw`]).
    pub(crate) fn known_fields(self) -> &'static [String] {
        static FIELDS: LazyLock<Vec<(ObjectKind, Vec<String>)>> = LazyLock::new(|| {
            use schemars::JsonSchema;

            use crate::raw::{
                RawAuthentication, RawConfiguration, RawParameter, RawResource, RawSession,
            };
            let properties = |object: &Value| -> Vec<String> {
                object
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|properties| properties.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let definition = |name: &str| properties(&SCHEMA["$defs"][name]);
            vec![
                (ObjectKind::Connector, properties(&SCHEMA)),
                (
                    ObjectKind::Authentication,
                    definition(&RawAuthentication::schema_name()),
                ),
                (ObjectKind::Session, definition(&RawSession::schema_name())),
                (
                    ObjectKind::Configuration,
                    definition(&RawConfiguration::schema_name()),
                ),
                (
                    ObjectKind::Parameter,
                    definition(&RawParameter::schema_name()),
                ),
                (
                    ObjectKind::Resource,
                    definition(&RawResource::schema_name()),
                ),
            ]
        });
        FIELDS
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or(&[], |(_, fields)| fields.as_slice())
    }
}

/// Checks `document` against the schema; one diagnostic per problem, none when it conforms.
pub(crate) fn check(document: &Value, file: &std::path::Path) -> Vec<Diagnostic> {
    // Most files conform: a yes or no stops at nothing and builds no error, collecting does both.
    let document = BorrowedJson::of(document);
    if VALIDATOR.is_valid(&document) {
        return Vec::new();
    }
    VALIDATOR
        .iter_errors(&document)
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
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = ObjectKind::at(&pointer).map_or(&[][..], ObjectKind::known_fields);
            let first = unexpected.first().map_or("", String::as_str);
            Diagnostic::new(
                Code::Schema,
                Location::new(file, pointer.field(first)),
                format!("unknown field `{}`", unexpected.join("`, `")),
            )
            .with_label("not allowed here")
            .with_help_opt(
                suggest::hint(first, known.iter().map(String::as_str)).or_else(|| {
                    (!known.is_empty()).then(|| {
                        format!(
                            "expected one of: {}",
                            known
                                .iter()
                                .map(|field| format!("`{field}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                }),
            )
        }
        ValidationErrorKind::Type { kind } => {
            let expected: Vec<String> = match kind {
                TypeKind::Single(single) => vec![single.to_string()],
                TypeKind::Multiple(set) => set.iter().map(|one| one.to_string()).collect(),
            };
            let expected: Vec<String> = expected
                .iter()
                .filter(|name| *name != "null")
                .map(|name| with_article(name))
                .collect();
            let found = with_article(match error.instance().as_ref() {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            });
            Diagnostic::new(
                Code::Schema,
                location,
                format!(
                    "wrong type for `{}`: expected {}, found {found}",
                    field_name(&pointer),
                    expected.join(" or ")
                ),
            )
            .with_label("wrong type")
        }
        _ => Diagnostic::new(Code::Schema, location, error.to_string()).with_label("wrong value"),
    }
}

/// `a boolean`, `an object`.
fn with_article(name: &str) -> String {
    if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {name}")
    } else {
        format!("a {name}")
    }
}

/// The field a pointer ends at, as people write it: `required`, `resources[0]`, `(document)`.
fn field_name(pointer: &JsonPointer) -> String {
    let tokens: Vec<String> = pointer.tokens().collect();
    match tokens.as_slice() {
        [] => "(document)".to_owned(),
        [.., parent, index] if index.parse::<usize>().is_ok() => format!("{parent}[{index}]"),
        [.., last] => last.clone(),
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

    /// The path without a `Value` accepts exactly the conforming files, and decodes them to the
    /// same wire types as the `Value` path.
    #[test]
    fn conforming_files_decode_as_through_a_value() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        let mut directories = vec![root.join("tests/fixtures"), root.join("connectors")];
        while let Some(directory) = directories.pop() {
            for entry in fs_err::read_dir(&directory).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    directories.push(path);
                } else if path
                    .extension()
                    .is_some_and(|extension| extension == "json")
                {
                    files.push(path);
                }
            }
        }
        let mut conforming = 0;
        for file in &files {
            let text = fs_err::read_to_string(file).unwrap();
            let fast = decode_conforming(&text);
            // A field written twice is refused by the fast decoder (serde's `duplicate field`)
            // and taken, last value winning, by the slow path: W0512 reports it either way.
            if fast.is_none() && !crate::parse::duplicates(&text).is_empty() {
                continue;
            }
            let slow = serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|document| check(document, file).is_empty())
                .and_then(|document| serde_json::from_value::<RawConnector>(document).ok());
            assert_eq!(
                fast.as_ref().map(|raw| format!("{raw:?}")),
                slow.as_ref().map(|raw| format!("{raw:?}")),
                "{}",
                file.display()
            );
            conforming += usize::from(fast.is_some());
        }
        assert!(conforming > 50, "{conforming} of {} files", files.len());
    }

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
