//! Maps JSON Pointers to byte ranges of a connector file, for diagnostics with line and column.
//!
//! Built only when there is something to report: a clean file never pays for it.

use std::collections::HashMap;

use jsonc_parser::ast::{ObjectPropName, Value};
use jsonc_parser::{CollectOptions, ParseOptions};

use crate::pointer::JsonPointer;
use crate::source::{Location, Span};

/// Byte ranges of every node of one JSON document, by pointer.
#[derive(Debug, Default)]
pub struct SourceMap {
    values: HashMap<JsonPointer, Span>,
    /// The first of the values of a key an object repeats (`values` holds the last).
    first: HashMap<JsonPointer, Span>,
}

impl SourceMap {
    /// Parses `text`; a document that does not parse gives an empty map.
    pub fn new(text: &str) -> Self {
        let mut map = Self::default();
        // Lenient: the map only locates nodes of a document serde_json already accepted.
        let options = ParseOptions::default();
        if let Ok(result) = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options)
            && let Some(value) = result.value
        {
            map.walk(&value, JsonPointer::root());
        }
        map
    }

    fn walk(&mut self, value: &Value<'_>, pointer: JsonPointer) {
        let range = match value {
            Value::StringLit(node) => node.range,
            Value::NumberLit(node) => node.range,
            Value::BooleanLit(node) => node.range,
            Value::NullKeyword(node) => node.range,
            Value::Object(object) => {
                for property in &object.properties {
                    let name = match &property.name {
                        ObjectPropName::String(name) => name.value.as_ref(),
                        ObjectPropName::Word(name) => name.value,
                    };
                    self.walk(&property.value, pointer.field(name));
                }
                object.range
            }
            Value::Array(array) => {
                for (index, element) in array.elements.iter().enumerate() {
                    self.walk(element, pointer.index(index));
                }
                array.range
            }
        };
        let span = Span {
            start: range.start,
            end: range.end,
        };
        if let Some(earlier) = self.values.insert(pointer.clone(), span) {
            self.first.entry(pointer).or_insert(earlier);
        }
    }

    /// The first value of a key its object repeats (`None` when the key is not repeated).
    pub fn first_of_repeated(&self, pointer: &JsonPointer) -> Option<Span> {
        self.first.get(pointer).copied()
    }

    /// The byte range a [`Location`] points at: the node itself, narrowed inside its string when
    /// the location says so, or the nearest ancestor that exists (a missing field points at its
    /// object).
    pub fn span(&self, location: &Location) -> Option<Span> {
        let mut pointer = location.pointer.clone();
        let mut exact = true;
        loop {
            if let Some(span) = self.values.get(&pointer) {
                return Some(match location.inner {
                    // The string's content starts after its opening quote.
                    Some((start, end)) if exact => Span {
                        start: (span.start + 1 + start).min(span.end),
                        end: (span.start + 1 + end).min(span.end),
                    },
                    _ if exact => *span,
                    // An absent node: point at the opening brace of its parent.
                    _ => Span {
                        start: span.start,
                        end: span.start + 1,
                    },
                });
            }
            pointer = pointer.parent()?;
            exact = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nodes_inner_ranges_and_parents() {
        let text = r#"{"resources": [{"vendorPath": "/a/{id}"}]}"#;
        let map = SourceMap::new(text);
        let pointer = JsonPointer::parse("/resources/0/vendorPath");
        let span = map.span(&Location::new("f", pointer.clone())).unwrap();
        assert_eq!(&text[span.start..span.end], "\"/a/{id}\"");
        let inner = map.span(&Location::new("f", pointer).narrow(3, 7)).unwrap();
        assert_eq!(&text[inner.start..inner.end], "{id}");
        let missing = map
            .span(&Location::new("f", JsonPointer::parse("/resources/0/name")))
            .unwrap();
        assert_eq!(&text[missing.start..missing.end], "{");
    }
}
