//! Maps JSON Pointers to byte ranges of a connector file, for diagnostics with line and column.
//!
//! Built only when there is something to report: a clean file never pays for it.

use std::collections::{HashMap, HashSet};

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
        Self::build(text, None)
    }

    /// Parses `text`, keeping only the nodes on the way to `locations` (each node and its
    /// ancestors): [`SourceMap::span`] gives the same answer for those locations as with
    /// [`SourceMap::new`], without a pointer for every node of a large file.
    pub fn for_locations<'a>(
        text: &str,
        locations: impl IntoIterator<Item = &'a Location>,
    ) -> Self {
        // Every wanted pointer and its ancestors, as prefixes of the pointers' texts: one lookup
        // per node (comparing each node with every location was quadratic with many diagnostics).
        let mut wanted: HashSet<&str> = HashSet::new();
        for location in locations {
            let pointer = location.pointer.as_str();
            let mut end = pointer.len();
            while wanted.insert(&pointer[..end]) && end > 0 {
                end = pointer[..end].rfind('/').unwrap_or(0);
            }
        }
        Self::build(text, Some(&wanted))
    }

    fn build(text: &str, wanted: Option<&HashSet<&str>>) -> Self {
        let mut map = Self::default();
        // Lenient: the map only locates nodes of a document serde_json already accepted.
        let options = ParseOptions::default();
        if let Ok(result) = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options)
            && let Some(value) = result.value
        {
            map.walk(&value, JsonPointer::root(), wanted);
        }
        map
    }

    /// True when `pointer` is one of `wanted` or an ancestor of one (all when `wanted` is `None`).
    fn on_the_way(pointer: &JsonPointer, wanted: Option<&HashSet<&str>>) -> bool {
        wanted.is_none_or(|wanted| wanted.contains(pointer.as_str()))
    }

    fn walk(&mut self, value: &Value<'_>, pointer: JsonPointer, wanted: Option<&HashSet<&str>>) {
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
                    let child = pointer.field(name);
                    if Self::on_the_way(&child, wanted) {
                        self.walk(&property.value, child, wanted);
                    }
                }
                object.range
            }
            Value::Array(array) => {
                for (index, element) in array.elements.iter().enumerate() {
                    let child = pointer.index(index);
                    if Self::on_the_way(&child, wanted) {
                        self.walk(element, child, wanted);
                    }
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

    #[test]
    fn a_map_for_some_locations_answers_as_the_whole_map() {
        let text = r#"{"a": {"b/c": [1, {"d": "x~y"}], "e": 2}, "f": [true, null]}"#;
        let whole = SourceMap::new(text);
        let locations: Vec<Location> = [
            "",
            "/a/b~1c/1/d",
            "/a/e",
            "/a/missing/deeper",
            "/f/1",
            "/f/7",
            "/g",
        ]
        .iter()
        .map(|pointer| Location::new("f", JsonPointer::parse(pointer)))
        .chain([Location::new("f", JsonPointer::parse("/a/b~1c/1/d")).narrow(1, 2)])
        .collect();
        let some = SourceMap::for_locations(text, &locations);
        for location in &locations {
            assert_eq!(some.span(location), whole.span(location), "{location:?}");
        }
        assert!(some.values.len() < whole.values.len());
    }

    #[test]
    fn a_map_for_many_locations_agrees_with_the_whole_map() {
        let resources: Vec<String> = (0..300)
            .map(|index| {
                format!(
                    r#"{{"name": "r{}", "type": "api", "a": {{"b": [1, 2]}}}}"#,
                    index % 7
                )
            })
            .collect();
        let text = format!(
            r#"{{"resources": [{}], "x~y": {{"a/b": 1}}}}"#,
            resources.join(", ")
        );
        let pointers: Vec<JsonPointer> = (0..300)
            .step_by(3)
            .map(|index| {
                JsonPointer::root()
                    .field("resources")
                    .index(index)
                    .field("name")
            })
            .chain([
                JsonPointer::parse("/resources/7/a/b/1"),
                JsonPointer::parse("/x~0y/a~1b"),
                JsonPointer::parse("/resources/9/missing"),
                JsonPointer::root(),
            ])
            .collect();
        let locations: Vec<Location> = pointers
            .iter()
            .map(|pointer| Location::new("f", pointer.clone()))
            .collect();
        let whole = SourceMap::new(&text);
        let some = SourceMap::for_locations(&text, &locations);
        for location in &locations {
            assert_eq!(
                some.span(location),
                whole.span(location),
                "{:?}",
                location.pointer
            );
            assert!(some.span(location).is_some());
        }
        assert!(some.values.len() < whole.values.len() / 2);
    }
}
