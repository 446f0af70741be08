//! JSONPath: how response values are found, compiled once at load.
//!
//! Three forms are accepted: a top-level name (`access_token`), a dotted path
//! (`data.session.token`) and an RFC 9535 JSONPath starting with `$` (`$.items[0].id`). A path
//! starting with `.` (`.workers[*]`, as element.json exports write `rootKey`) is a JSONPath
//! relative to the document: `$.workers[*]`.
//!
//! ```
//! use engine_spec::jsonpath::JsonPath;
//!
//! let body = serde_json::json!({"data": {"session": {"token": "t"}}});
//! let path = JsonPath::compile("data.session.token")?;
//! assert_eq!(path.find(&body), Some(&serde_json::json!("t")));
//! let path = JsonPath::compile("$.data.session.token")?;
//! assert_eq!(path.find(&body), Some(&serde_json::json!("t")));
//! # Ok::<(), engine_spec::jsonpath::JsonPathError>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// A compiled path into a JSON document. Cloning is cheap: the compiled query is shared.
#[derive(Clone)]
pub struct JsonPath {
    inner: Arc<Parts>,
}

/// What [`JsonPath::compile`] makes of a text.
struct Parts {
    source: String,
    query: Option<JpQuery>,
    /// True when the query may select several values (wildcards, descendants, filters,
    /// slices, unions).
    plural: bool,
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("JsonPath").field(&self.inner.source).finish()
    }
}

/// How many distinct texts [`JsonPath::compile`] remembers per thread; past that it starts again
/// from none.
pub const CACHED_PATHS: usize = 4096;

/// A JSONPath that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonPathError {
    /// What the parser said.
    pub message: String,
    /// The byte offset in the path where the parser stopped, when it says.
    pub offset: Option<usize>,
}

impl JsonPath {
    /// Compiles `text`.
    ///
    /// Fails when a path starting with `$` is not valid RFC 9535 JSONPath, or a dotted path is
    /// empty or has an empty segment.
    ///
    /// The same text compiled again on the same thread gives the first result back, shared:
    /// connectors repeat the same paths across resources and files. Each thread remembers up to
    /// [`CACHED_PATHS`] texts.
    pub fn compile(text: &str) -> Result<Self, JsonPathError> {
        thread_local! {
            static CACHE: RefCell<foldhash::HashMap<String, Result<JsonPath, JsonPathError>>> =
                RefCell::default();
        }
        if let Some(found) = CACHE.with_borrow(|cache| cache.get(text).cloned()) {
            return found;
        }
        let compiled = Self::compile_uncached(text).map(|compiled| Self {
            inner: Arc::new(compiled),
        });
        CACHE.with_borrow_mut(|cache| {
            if cache.len() >= CACHED_PATHS {
                cache.clear();
            }
            cache.insert(text.to_owned(), compiled.clone());
        });
        compiled
    }

    fn compile_uncached(text: &str) -> Result<Parts, JsonPathError> {
        if text.starts_with('$') || text.starts_with('.') {
            let absolute = if text.starts_with('.') {
                format!("${text}")
            } else {
                text.to_owned()
            };
            let shift = absolute.len() - text.len();
            let query = parse_json_path(&absolute).map_err(|error| {
                let mut error = parse_error(&absolute, &error.to_string());
                error.offset = error.offset.map(|offset| offset.saturating_sub(shift));
                error
            })?;
            let plural = absolute.contains('*')
                || absolute.contains("..")
                || absolute.contains('?')
                || absolute.split('[').skip(1).any(|inside| {
                    inside
                        .split(']')
                        .next()
                        .is_some_and(|inside| inside.contains(':') || inside.contains(','))
                });
            return Ok(Parts {
                source: text.to_owned(),
                query: Some(query),
                plural,
            });
        }
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(JsonPathError {
                message: format!("`{text}` is not a name, a dotted path or a JSONPath"),
                offset: None,
            });
        }
        Ok(Parts {
            source: text.to_owned(),
            query: None,
            plural: false,
        })
    }

    /// What the path selects in `document`: the one value of a singular path, or every value
    /// (as an array) of a path that may select several (`$.items[*]`). `None` when it finds
    /// nothing.
    pub fn select(&self, document: &Value) -> Option<Value> {
        match &self.inner.query {
            Some(query) if self.inner.plural => {
                let found: Vec<Value> = js_path_process(query, document)
                    .ok()?
                    .into_iter()
                    .map(|found| found.val.clone())
                    .collect();
                (!found.is_empty()).then_some(Value::Array(found))
            }
            _ => self.find(document).cloned(),
        }
    }

    /// The path as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The first value the path finds in `document`, if any. A dotted path first tries the whole
    /// text as one key (`"access.token"`), then walks the segments.
    pub fn find<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        match &self.inner.query {
            Some(query) => js_path_process(query, document)
                .ok()?
                .into_iter()
                .next()
                .map(|found| found.val),
            None => document.get(&self.inner.source).or_else(|| {
                self.inner
                    .source
                    .split('.')
                    .try_fold(document, |node, segment| match node {
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
                        _ => node.get(segment),
                    })
            }),
        }
    }
}

/// The parser's report as one short message and an offset. Its text reads
/// `Failed to parse rule:  --> 1:22 | ... | = expected int`: keep the `expected ...` line and the
/// column.
fn parse_error(text: &str, report: &str) -> JsonPathError {
    let expected = report
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("= "))
        .next_back();
    let offset = report
        .split_once("--> ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|position| position.split_once(':'))
        .and_then(|(_, column)| column.parse::<usize>().ok())
        .map(|column| {
            text.char_indices()
                .nth(column.saturating_sub(1))
                .map_or(text.len(), |(index, _)| index)
        });
    let message = match (expected, offset) {
        (Some(expected), Some(offset)) => format!("{expected} at column {}", offset + 1),
        (Some(expected), None) => expected.to_owned(),
        _ => report.lines().next().unwrap_or_default().to_owned(),
    };
    JsonPathError { message, offset }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_names_dotted_paths_and_jsonpaths() {
        let body = json!({"access_token": "a", "a.b": 1, "a": {"b": 2}, "items": [{"id": 7}]});
        let find = |path: &str| JsonPath::compile(path).unwrap().find(&body).cloned();
        assert_eq!(find("access_token"), Some(json!("a")));
        assert_eq!(find("a.b"), Some(json!(1)));
        assert_eq!(find("items.0.id"), Some(json!(7)));
        assert_eq!(find("$.items[0].id"), Some(json!(7)));
        assert_eq!(find("$.a.b"), Some(json!(2)));
        assert_eq!(find("missing"), None);
    }

    #[test]
    fn a_leading_dot_is_relative_to_the_document_and_wildcards_select_all() {
        let body = json!({"workers": [{"id": 1}, {"id": 2}], "one": {"id": 3}});
        let path = JsonPath::compile(".workers[*]").unwrap();
        assert_eq!(path.select(&body), Some(json!([{"id": 1}, {"id": 2}])));
        let path = JsonPath::compile(".one").unwrap();
        assert_eq!(path.select(&body), Some(json!({"id": 3})));
        assert_eq!(JsonPath::compile(".workers[").unwrap_err().offset, Some(9));
    }

    #[test]
    fn rejects_bad_paths() {
        let error = JsonPath::compile("$.items[").unwrap_err();
        assert_eq!(error.message, "expected selector at column 9");
        assert_eq!(error.offset, Some(8));
        assert!(JsonPath::compile("a..b").is_err());
    }
}
