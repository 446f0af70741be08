//! The replay transport of `engine test`: it answers each outgoing request with the next scripted
//! exchange after checking that the request is the one the test expects, and keeps what went
//! wrong. Placeholders: `<any>` matches anything, `<config:KEY>` and `<secret:KEY>` are the
//! instance's value of `KEY` (the latter for secrets), `<token:N>` a stable fake token
//! (`FAKE-token-N`) in answers and requests alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use engine_runtime::{
    PartContent, PreparedRequest, RequestBody, Transport, TransportError, TransportErrorKind,
    VendorResponse,
};
use engine_store::BoxFuture;
use serde_json::Value;

use super::file::{Exchange, RequestSpec};

/// Replaces `<config:KEY>`, `<secret:KEY>` and `<token:N>` placeholders with their values.
/// Failures show what was sent as it is: every value is the test's own fake.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placeholders {
    /// Every text value of the instance, by key.
    values: BTreeMap<String, String>,
}

impl Placeholders {
    /// The placeholders of an instance: its text values.
    pub(crate) fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// `text` with its placeholders filled.
    pub(crate) fn fill(&self, text: &str) -> String {
        if !text.contains('<') {
            return text.to_owned();
        }
        let mut filled = text.to_owned();
        for (key, value) in &self.values {
            filled = filled
                .replace(&format!("<secret:{key}>"), value)
                .replace(&format!("<config:{key}>"), value);
        }
        let mut output = String::with_capacity(filled.len());
        let mut rest = filled.as_str();
        while let Some(start) = rest.find("<token:") {
            output.push_str(&rest[..start]);
            let after = &rest[start + "<token:".len()..];
            match after.find('>') {
                Some(end) if after[..end].bytes().all(|byte| byte.is_ascii_digit()) => {
                    output.push_str("FAKE-token-");
                    output.push_str(&after[..end]);
                    rest = &after[end + 1..];
                }
                _ => {
                    output.push_str("<token:");
                    rest = after;
                }
            }
        }
        output.push_str(rest);
        output
    }

    /// `value` with the placeholders of every string filled.
    pub(crate) fn fill_value(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.fill(text)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| self.fill_value(item)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| (key.clone(), self.fill_value(item)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// What went wrong with the requests of a step.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The run sent a request the test did not expect (no exchange was left).
    Unexpected {
        /// The request, secrets masked.
        actual: String,
    },
    /// The run sent a request other than the expected one.
    Mismatch {
        /// Which exchange (from 0).
        index: usize,
        /// What the test expected.
        expected: String,
        /// What was sent, secrets masked.
        actual: String,
        /// Each difference.
        differences: Vec<String>,
    },
}

/// Answers requests from a script of exchanges.
pub(crate) struct ReplayTransport {
    script: Vec<Exchange>,
    placeholders: Placeholders,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: usize,
    failures: Vec<Failure>,
}

impl ReplayTransport {
    pub(crate) fn new(script: Vec<Exchange>, placeholders: Placeholders) -> Self {
        Self {
            script,
            placeholders,
            state: Mutex::default(),
        }
    }

    /// The failures, and the expected exchanges never sent (as their expectation).
    pub(crate) fn finish(&self) -> (Vec<Failure>, Vec<String>) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let unsent = self.script[state.next.min(self.script.len())..]
            .iter()
            .map(|exchange| describe_spec(&exchange.request))
            .collect();
        (state.failures.clone(), unsent)
    }

    fn answer(&self, request: &PreparedRequest) -> Result<VendorResponse, TransportError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let actual = describe(request);
        let Some(exchange) = self.script.get(state.next) else {
            state.failures.push(Failure::Unexpected { actual });
            return Err(refused("the test expects no more requests"));
        };
        let index = state.next;
        state.next += 1;
        let differences = differences(&exchange.request, request, &self.placeholders);
        if !differences.is_empty() {
            state.failures.push(Failure::Mismatch {
                index,
                expected: describe_spec(&exchange.request),
                actual,
                differences,
            });
            return Err(refused("the request is not the one the test expects"));
        }
        let response = &exchange.response;
        let headers = response
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), self.placeholders.fill(value)))
            .collect();
        Ok(VendorResponse::new(
            response.status,
            headers,
            self.placeholders.fill_value(&response.body),
        ))
    }
}

fn refused(message: &str) -> TransportError {
    TransportError {
        kind: TransportErrorKind::Other,
        message: message.to_owned(),
    }
}

impl Transport for ReplayTransport {
    fn send<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<VendorResponse, TransportError>> {
        Box::pin(std::future::ready(self.answer(request)))
    }
}

/// A request's body as a value to match: JSON as it is, form and multipart fields as an object,
/// a text as a string, none as null.
pub(crate) fn body_value(body: &RequestBody) -> Value {
    match body {
        RequestBody::Empty => Value::Null,
        RequestBody::Json(value) => value.clone(),
        RequestBody::Form(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect(),
        ),
        RequestBody::Text(text) => Value::String(text.clone()),
        RequestBody::Multipart(parts) => Value::Object(
            parts
                .iter()
                .map(|part| {
                    let value = match &part.content {
                        PartContent::Text(text) => text.clone(),
                        PartContent::File { file_name, .. } => format!("<file {file_name}>"),
                    };
                    (part.name.clone(), Value::String(value))
                })
                .collect(),
        ),
    }
}

/// A request on one line plus its body: `POST https://x/token {"grant_type": ...}`.
pub(crate) fn describe(request: &PreparedRequest) -> String {
    let body = body_value(&request.body);
    let headers: Vec<String> = request
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect();
    let mut text = format!("{} {}", request.method, request.url);
    if !headers.is_empty() {
        let _ = write!(text, " [{}]", headers.join("; "));
    }
    if !body.is_null() {
        text.push(' ');
        text.push_str(&body.to_string());
    }
    text
}

fn describe_spec(spec: &RequestSpec) -> String {
    let mut text = format!("{} {}", spec.method, spec.url);
    if !spec.headers.is_empty() {
        let headers: Vec<String> = spec
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        let _ = write!(text, " [{}]", headers.join("; "));
    }
    if let Some(body) = &spec.body {
        text.push(' ');
        text.push_str(&body.to_string());
    }
    text
}

/// How `actual` differs from `expected`: empty when it matches.
pub(crate) fn differences(
    expected: &RequestSpec,
    actual: &PreparedRequest,
    placeholders: &Placeholders,
) -> Vec<String> {
    let mut differences = Vec::new();
    if !expected.method.eq_ignore_ascii_case(&actual.method) {
        differences.push(format!(
            "method: expected `{}`, sent `{}`",
            expected.method, actual.method
        ));
    }
    let wanted = placeholders.fill(&expected.url);
    match url::Url::parse(&wanted) {
        Ok(wanted) => {
            let base = |url: &url::Url| {
                let mut url = url.clone();
                url.set_query(None);
                url.to_string()
            };
            if base(&wanted) != base(&actual.url) {
                differences.push(format!(
                    "URL: expected `{}`, sent `{}`",
                    base(&wanted),
                    base(&actual.url)
                ));
            }
            let mut sent: Vec<(String, String)> = actual
                .url
                .query_pairs()
                .into_owned()
                .filter(|(name, _)| !UNREPEATABLE.contains(&name.as_str()))
                .collect();
            for (name, value) in wanted
                .query_pairs()
                .filter(|(name, _)| !UNREPEATABLE.contains(&name.as_ref()))
            {
                let found = sent.iter().position(|(sent_name, sent_value)| {
                    *sent_name == name && text_matches(&value, sent_value)
                });
                match found {
                    Some(position) => {
                        sent.remove(position);
                    }
                    None => differences.push(format!("query: expected `{name}={value}`")),
                }
            }
            for (name, value) in sent {
                differences.push(format!("query: `{name}={value}` was not expected"));
            }
        }
        Err(error) => differences.push(format!("the expected URL `{wanted}` is invalid: {error}")),
    }
    for (name, value) in &expected.headers {
        let wanted = placeholders.fill(value);
        let sent = actual
            .headers
            .iter()
            .find(|(sent, _)| sent.eq_ignore_ascii_case(name))
            .map(|(_, value)| value);
        match sent {
            Some(sent) if text_matches(&wanted, sent) => {}
            Some(sent) if oauth_matches(&wanted, sent) => {}
            Some(sent) => {
                differences.push(format!(
                    "header `{name}`: expected `{value}`, sent `{sent}`"
                ));
            }
            None => differences.push(format!("header `{name}`: not sent")),
        }
    }
    if let Some(body) = &expected.body {
        let wanted = placeholders.fill_value(body);
        let sent = body_value(&actual.body);
        if !value_matches(&wanted, &sent, !expected.exact_body) {
            differences.push(format!(
                "body: expected {}`{}`, sent `{}`",
                if expected.exact_body { "" } else { "at least " },
                body,
                sent
            ));
        }
    }
    differences
}

fn text_matches(expected: &str, actual: &str) -> bool {
    expected == "<any>" || expected == actual
}

/// The OAuth 1.0a protocol parameters that differ at every signing (RFC 5849 3.3): a replay
/// compares a request without them, in the query and in `Authorization: OAuth ...`.
const UNREPEATABLE: &[&str] = &["oauth_nonce", "oauth_timestamp", "oauth_signature"];

/// True when two `Authorization: OAuth ...` values carry the same protocol parameters but the
/// [`UNREPEATABLE`] ones.
fn oauth_matches(expected: &str, actual: &str) -> bool {
    fn parameters(value: &str) -> Option<Vec<&str>> {
        let mut pairs: Vec<&str> = value
            .strip_prefix("OAuth ")?
            .split(',')
            .map(str::trim)
            .filter(|pair| {
                let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                !UNREPEATABLE.contains(&name)
            })
            .collect();
        pairs.sort_unstable();
        Some(pairs)
    }
    parameters(expected).is_some_and(|expected| parameters(actual) == Some(expected))
}

/// True when `actual` matches `expected`: `<any>` matches anything; with `subset`, an object
/// needs only the expected keys.
pub(crate) fn value_matches(expected: &Value, actual: &Value, subset: bool) -> bool {
    match (expected, actual) {
        (Value::String(expected), _) if expected == "<any>" => true,
        (Value::Object(expected), Value::Object(actual)) => {
            (subset || expected.len() == actual.len())
                && expected.iter().all(|(key, value)| {
                    actual
                        .get(key)
                        .is_some_and(|found| value_matches(value, found, subset))
                })
        }
        (Value::Array(expected), Value::Array(actual)) => {
            expected.len() == actual.len()
                && expected
                    .iter()
                    .zip(actual)
                    .all(|(expected, actual)| value_matches(expected, actual, subset))
        }
        // A form field is text: an expected number or boolean matches its text.
        (Value::Number(number), Value::String(actual)) => number.to_string() == *actual,
        (Value::Bool(truth), Value::String(actual)) => {
            actual == if *truth { "true" } else { "false" }
        }
        _ => expected == actual,
    }
}

/// An object from pairs, for tests.
#[cfg(test)]
fn object(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn oauth1_signatures_match_but_their_nonce_time_and_signature() {
        let header = |nonce: &str, token: &str| {
            format!(
                "OAuth oauth_consumer_key=\"c\", oauth_nonce=\"{nonce}\", oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"{nonce}\", oauth_token=\"{token}\", oauth_version=\"1.0\", oauth_signature=\"{nonce}%3D\""
            )
        };
        assert!(oauth_matches(&header("1", "t"), &header("2", "t")));
        assert!(!oauth_matches(&header("1", "t"), &header("1", "u")));
        assert!(!oauth_matches("Bearer x", "Bearer x"));
    }

    #[test]
    fn placeholders_fill() {
        let placeholders = Placeholders::new(BTreeMap::from([(
            "client.secret".to_owned(),
            "s3cret-value".to_owned(),
        )]));
        assert_eq!(
            placeholders.fill("a=<secret:client.secret>&t=<token:2>&<token:x>"),
            "a=s3cret-value&t=FAKE-token-2&<token:x>"
        );
    }

    #[test]
    fn bodies_match_as_subsets_unless_exact() {
        let sent = object(&[
            ("grant_type", json!("client_credentials")),
            ("scope", json!("read")),
        ]);
        assert!(value_matches(
            &json!({"grant_type": "client_credentials"}),
            &sent,
            true
        ));
        assert!(!value_matches(
            &json!({"grant_type": "client_credentials"}),
            &sent,
            false
        ));
        assert!(value_matches(&json!({"scope": "<any>"}), &sent, true));
        assert!(!value_matches(
            &json!({"grant_type": "password"}),
            &sent,
            true
        ));
        assert!(value_matches(&json!({"n": 2}), &json!({"n": "2"}), true));
    }
}
