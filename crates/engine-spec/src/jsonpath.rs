//! JSONPath: how response values are found, compiled once at load.
//!
//! Three forms are accepted: a top-level name (`access_token`), a dotted path
//! (`data.session.token`) and an RFC 9535 JSONPath starting with `$` (`$.items[0].id`). A path
//! starting with `.` (`.workers[*]`, as element.json exports write `rootKey`) is a JSONPath
//! relative to the document: `$.workers[*]`. A dotted path with brackets, the platform's own
//! documented form for response parameters (`data[0].access_token`), is the JSONPath
//! `$['data'][0]['access_token']`.
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
//!
//! Evaluation is bounded: a query may visit at most [`MAX_WORK`] nodes of the document (counting
//! the nodes each segment reads and the values it selects). A query that would go over, such as
//! `$..*..*..*` on a large response, stops with [`BudgetExceeded`] before doing the work:
//! [`JsonPath::try_select`] and [`JsonPath::try_find`] report it; [`JsonPath::select`] and
//! [`JsonPath::find`] then find nothing.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use jsonpath_rust::parser::model::{JpQuery, Segment};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::{QueryRef, js_path_process};
use serde_json::Value;

/// The most nodes one evaluation may visit: a million, far more than a token answer or a page of
/// records needs (a 1 MB response has about 50,000 nodes), and little enough to stay well under a
/// second and a few hundred megabytes.
pub const MAX_WORK: usize = 1_000_000;

/// The longest JSONPath starting with `$` or `.`, in bytes.
pub const MAX_LENGTH: usize = 4096;

/// The deepest a JSONPath may nest `[...]` and `(...)` (`$[?@.a[?@.b > 1]]` nests 2).
pub const MAX_NESTING: usize = 10;

/// The offset of the bracket or parenthesis that opens one level too many, if any.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0_usize;
    for (offset, byte) in text.bytes().enumerate() {
        match byte {
            b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(offset);
                }
            }
            b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The most segments a JSONPath may have (`$.a.b` has two).
pub const MAX_SEGMENTS: usize = 256;

/// A query that would visit more than [`MAX_WORK`] nodes of the document it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "JSONPath `{path}` would visit more than {MAX_WORK} nodes of the response; \
     write a path without chained `..` or `*`"
)]
pub struct BudgetExceeded {
    /// The path as written.
    pub path: String,
}

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
            // The parser backtracks on unclosed nested filters: its time doubles every few
            // levels (a 1 KB path of 31 levels took minutes; found by fuzzing).
            if text.len() > MAX_LENGTH {
                return Err(JsonPathError {
                    message: format!("a JSONPath is at most {MAX_LENGTH} bytes long"),
                    offset: None,
                });
            }
            if let Some(offset) = too_deep(&absolute) {
                return Err(JsonPathError {
                    message: format!(
                        "a JSONPath nests brackets and parentheses at most {MAX_NESTING} deep"
                    ),
                    offset: Some(offset.saturating_sub(absolute.len() - text.len())),
                });
            }
            let shift = absolute.len() - text.len();
            let query = parse_json_path(&absolute).map_err(|error| {
                let mut error = parse_error(&absolute, &error.to_string());
                error.offset = error.offset.map(|offset| offset.saturating_sub(shift));
                error
            })?;
            if query.segments.len() > MAX_SEGMENTS {
                return Err(JsonPathError {
                    message: format!("a JSONPath has at most {MAX_SEGMENTS} segments"),
                    offset: None,
                });
            }
            return Ok(Parts {
                source: text.to_owned(),
                query: Some(query),
                plural: is_plural(&absolute),
            });
        }
        if let Some(bracketed) = bracketed_to_jsonpath(text) {
            let query = parse_json_path(&bracketed).map_err(|_| JsonPathError {
                message: format!("`{text}` is not a name, a dotted path or a JSONPath"),
                offset: None,
            })?;
            return Ok(Parts {
                source: text.to_owned(),
                plural: is_plural(&bracketed),
                query: Some(query),
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
    ///
    /// Finds nothing when the query goes over its budget; [`JsonPath::try_select`] tells.
    pub fn select(&self, document: &Value) -> Option<Value> {
        self.try_select(document).ok().flatten()
    }

    /// [`JsonPath::select`], failing when the query would visit more than [`MAX_WORK`] nodes.
    pub fn try_select(&self, document: &Value) -> Result<Option<Value>, BudgetExceeded> {
        match &self.inner.query {
            Some(query) if self.inner.plural => {
                let found: Vec<Value> = self
                    .evaluate(query, document)?
                    .into_iter()
                    .cloned()
                    .collect();
                Ok((!found.is_empty()).then_some(Value::Array(found)))
            }
            _ => Ok(self.try_find(document)?.cloned()),
        }
    }

    /// True when the path has two or more descendant segments (`$..a..b`): its cost grows with
    /// the size of the document to the power of their number.
    pub fn has_chained_descendants(&self) -> bool {
        self.inner.query.as_ref().is_some_and(|query| {
            query
                .segments
                .iter()
                .map(|segment| segment.to_string().matches("..").count())
                .sum::<usize>()
                >= 2
        })
    }

    /// Runs `query` on `document`, estimating the cost of each segment from what the segments
    /// before it selected, and stopping before the total would go over [`MAX_WORK`]. (The
    /// JSONPath crate evaluates whole queries only: each prefix is evaluated anew, and charged.)
    fn evaluate<'a>(
        &self,
        query: &JpQuery,
        document: &'a Value,
    ) -> Result<Vec<&'a Value>, BudgetExceeded> {
        let exceeded = || BudgetExceeded {
            path: self.inner.source.clone(),
        };
        let run = |segments: &[Segment]| -> Vec<&'a Value> {
            js_path_process(&JpQuery::new(segments.to_vec()), document)
                .map(|found| found.into_iter().map(QueryRef::val).collect())
                .unwrap_or_default()
        };
        if !self.inner.plural {
            // Names and indexes only: each segment selects at most one node.
            return Ok(run(&query.segments));
        }
        let mut left = MAX_WORK;
        let mut prefix_cost = 0_usize;
        let mut document_size = None;
        let mut current = vec![document];
        for (index, segment) in query.segments.iter().enumerate() {
            let mut cost = match segment {
                Segment::Descendant(_) => current
                    .iter()
                    .try_fold(0_usize, |total, value| {
                        let total = total + count_nodes(value, left.saturating_sub(total))?;
                        (total <= left).then_some(total)
                    })
                    .ok_or_else(exceeded)?,
                _ => current.iter().map(|value| children(value)).sum(),
            };
            // A filter holding descendant segments runs them on every candidate; a descendant
            // may start from the root, so each one is counted as the whole document.
            let text = segment.to_string();
            let nested = match segment {
                Segment::Descendant(inner) => inner.to_string().matches("..").count(),
                _ => text.matches("..").count(),
            };
            if nested > 0 && text.contains('?') {
                let size = *document_size
                    .get_or_insert_with(|| count_nodes(document, MAX_WORK).unwrap_or(MAX_WORK + 1));
                cost = (0..nested)
                    .try_fold(cost.max(1), |cost: usize, _| cost.checked_mul(size))
                    .unwrap_or(usize::MAX);
            }
            prefix_cost = prefix_cost.saturating_add(cost);
            left = left.checked_sub(prefix_cost).ok_or_else(exceeded)?;
            current = run(&query.segments[..=index]);
            prefix_cost = prefix_cost.saturating_add(current.len());
            left = left.checked_sub(current.len()).ok_or_else(exceeded)?;
        }
        Ok(current)
    }

    /// The path as written.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The first value the path finds in `document`, if any. A dotted path first tries the whole
    /// text as one key (`"access.token"`), then walks the segments.
    ///
    /// Finds nothing when the query goes over its budget; [`JsonPath::try_find`] tells.
    pub fn find<'a>(&self, document: &'a Value) -> Option<&'a Value> {
        self.try_find(document).ok().flatten()
    }

    /// [`JsonPath::find`], failing when the query would visit more than [`MAX_WORK`] nodes.
    pub fn try_find<'a>(&self, document: &'a Value) -> Result<Option<&'a Value>, BudgetExceeded> {
        match &self.inner.query {
            Some(query) => Ok(self.evaluate(query, document)?.into_iter().next()),
            None => Ok(document.get(&self.inner.source).or_else(|| {
                self.inner
                    .source
                    .split('.')
                    .try_fold(document, |node, segment| match node {
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
                        _ => node.get(segment),
                    })
            })),
        }
    }
}

/// True when the JSONPath `absolute` may select several values (wildcards, descendants,
/// filters, slices, unions).
fn is_plural(absolute: &str) -> bool {
    absolute.contains('*')
        || absolute.contains("..")
        || absolute.contains('?')
        || absolute.split('[').skip(1).any(|inside| {
            inside
                .split(']')
                .next()
                .is_some_and(|inside| inside.contains(':') || inside.contains(','))
        })
}

/// The platform's dotted path with brackets (`data[0].access_token`, `items[*].id`) as a
/// JSONPath (`$['data'][0]['access_token']`); `None` for a text without brackets or with an
/// empty segment. Each name is quoted, so names JSONPath would not take bare (`access-token`)
/// keep working.
fn bracketed_to_jsonpath(text: &str) -> Option<String> {
    if !text.contains('[') {
        return None;
    }
    let mut path = String::from("$");
    for segment in text.split('.') {
        let (name, brackets) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        if name.is_empty() && brackets.is_empty() {
            return None;
        }
        if !name.is_empty() {
            let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
            path.push_str("['");
            path.push_str(&quoted);
            path.push_str("']");
        }
        path.push_str(brackets);
    }
    Some(path)
}

/// The number of direct children of `value`.
fn children(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len(),
        Value::Object(map) => map.len(),
        _ => 0,
    }
}

/// The number of nodes of `value` (itself included), or `None` once it passes `limit`: never
/// walks more than `limit + 1` nodes.
fn count_nodes(value: &Value, limit: usize) -> Option<usize> {
    let mut count = 0_usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        count += 1;
        if count > limit {
            return None;
        }
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Some(count)
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
    fn evaluation_is_bounded_by_a_work_budget() {
        // About 100 KB of nested objects: `..*` six times over would run for minutes.
        let leaf = json!({"a": [1, 2, 3], "b": {"c": "d", "e": [{"f": 1}, {"g": 2}]}});
        let document = json!({"items": vec![leaf; 2_000]});
        let path = JsonPath::compile("$..*..*..*..*..*..*").unwrap();
        assert!(path.has_chained_descendants());
        let error = path.try_select(&document).unwrap_err();
        assert_eq!(error.path, "$..*..*..*..*..*..*");
        assert!(
            error.to_string().contains("more than 1000000 nodes"),
            "{error}"
        );
        assert_eq!(path.select(&document), None);
        // A filter that walks the document for every candidate is counted as such.
        let path = JsonPath::compile("$..*[?$..*..*]").unwrap();
        assert!(path.try_select(&document).is_err());
        // One descendant segment on the same document is fine.
        let path = JsonPath::compile("$..g").unwrap();
        assert!(!path.has_chained_descendants());
        let found = path.try_select(&document).unwrap().unwrap();
        assert_eq!(found.as_array().unwrap().len(), 2_000);
        assert_eq!(
            JsonPath::compile("$.items[0].b.c")
                .unwrap()
                .try_find(&document),
            Ok(Some(&json!("d")))
        );
    }

    #[test]
    fn deeply_nested_filters_are_refused_before_parsing() {
        // Found by `cargo fuzz run jsonpath`: 1 KB of unclosed nested filters and function calls
        // kept the parser busy for minutes.
        let input = include_str!("../../../fuzz/regressions/jsonpath/timeout-nested-filters");
        let error = JsonPath::compile(input).unwrap_err();
        assert_eq!(
            error.message,
            "a JSONPath nests brackets and parentheses at most 10 deep"
        );
        let nested = format!("$[?@.a{}]", "[?@.a".repeat(12) + &"]".repeat(12));
        assert!(JsonPath::compile(&nested).is_err());
        let fine = format!("$[?@.a{}]", "[?@.a".repeat(8) + &"]".repeat(8));
        JsonPath::compile(&fine).unwrap();
        let long = format!("${}", ".a".repeat(MAX_LENGTH));
        assert_eq!(
            JsonPath::compile(&long).unwrap_err().message,
            "a JSONPath is at most 4096 bytes long"
        );
    }

    #[test]
    fn bracketed_dotted_paths_are_jsonpaths() {
        let body = json!({"data": [{"access_token": "t", "id": 1}, {"id": 2}], "a-b": [[5]]});
        let find = |path: &str| JsonPath::compile(path).unwrap().find(&body).cloned();
        let select = |path: &str| JsonPath::compile(path).unwrap().select(&body);
        assert_eq!(find("data[0].access_token"), Some(json!("t")));
        assert_eq!(find("data[1].id"), Some(json!(2)));
        assert_eq!(find("a-b[0][0]"), Some(json!(5)));
        assert_eq!(find("data[2].id"), None);
        assert_eq!(select("data[*].id"), Some(json!([1, 2])));
        assert_eq!(
            JsonPath::compile("data[0].access_token").unwrap().source(),
            "data[0].access_token"
        );
        assert!(JsonPath::compile("data[0]..id").is_err());
        assert!(JsonPath::compile("data[x").is_err());
    }

    #[test]
    fn rejects_bad_paths() {
        let error = JsonPath::compile("$.items[").unwrap_err();
        assert_eq!(error.message, "expected selector at column 9");
        assert_eq!(error.offset, Some(8));
        assert!(JsonPath::compile("a..b").is_err());
    }
}
