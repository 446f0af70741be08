//! `engine run --record FILE`: a transport that sends over HTTP and keeps every exchange, and
//! the cassette it appends to, with secrets replaced by stable placeholders: `<secret:KEY>` for
//! the instance's secret values, `<token:N>` for the Nth distinct token the run obtained,
//! `<config:base.url>` for the instance's base URL in URLs, and, in requests, `<any>` for any
//! other credential (a computed `Basic` header) that no placeholder names.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use engine_runtime::{
    HttpTransport, PreparedRequest, Transport, TransportError, VendorResponse, is_secret_name,
};
use engine_spec::Connector;
use engine_store::{BoxFuture, State};
use serde_json::Value;

use super::file::{Cassette, RecordedExchange, RecordedRun, RequestSpec, ResponseSpec};
use super::replay::body_value;

/// The `$schema` a new cassette points at.
const CASSETTE_SCHEMA: &str =
    "https://github.com/connector-engine/engine/raw/main/schemas/cassette.schema.json";

/// Response headers worth keeping in a cassette: the ones lifecycles and retries read.
const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "retry-after",
    "location",
    "www-authenticate",
];

/// Sends over HTTP and keeps each exchange. Clones share the record.
#[derive(Clone)]
pub(crate) struct RecordingHttp {
    inner: HttpTransport,
    exchanges: Arc<Mutex<Vec<(PreparedRequest, VendorResponse, u64)>>>,
}

impl RecordingHttp {
    pub(crate) fn new(inner: HttpTransport) -> Self {
        Self {
            inner,
            exchanges: Arc::default(),
        }
    }

    /// Appends the recorded run to the cassette at `path` (created when absent), secrets
    /// replaced: `before` and `after` are the instance before and after the run.
    pub(crate) fn append(
        &self,
        path: &Path,
        resource: &str,
        started: jiff::Timestamp,
        connector: &Connector,
        before: &State,
        after: &State,
    ) -> Result<(), String> {
        let mut cassette = match crate::input::read_text(path) {
            Ok(text) => serde_json::from_str::<Cassette>(&text).map_err(|error| {
                format!("cannot append to cassette `{}`: {error}", path.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Cassette {
                schema: Some(CASSETTE_SCHEMA.to_owned()),
                runs: Vec::new(),
            },
            Err(error) => return Err(error.to_string()),
        };
        // Tokens are numbered across the whole cassette, so that replays tell them apart.
        let offset = max_token(&serde_json::to_string(&cassette).unwrap_or_default());
        let masker = Masker::new(connector, before, after, offset);
        let base_url = before
            .get("base.url")
            .and_then(Value::as_str)
            .map(|base| base.trim_end_matches('/').to_owned())
            .filter(|base| !base.is_empty());
        let exchanges = self
            .exchanges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut tokens: Vec<String> = Vec::new();
        let exchanges = exchanges
            .iter()
            .map(|(request, response, elapsed_ms)| {
                let headers = request
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.clone(),
                            masker.text(value, is_secret_name(name), &mut tokens),
                        )
                    })
                    .collect();
                let mut url = request.url.clone();
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(name, value)| {
                        let replaced = masker.text(&value, is_secret_name(&name), &mut tokens);
                        (name.into_owned(), replaced)
                    })
                    .collect();
                if !pairs.is_empty() {
                    url.query_pairs_mut().clear().extend_pairs(&pairs);
                }
                let body = masker.value(&body_value(&request.body), false, &mut tokens);
                RecordedExchange {
                    request: RequestSpec {
                        method: request.method.to_string(),
                        url: {
                            let url = url
                                .to_string()
                                .replace("%3C", "<")
                                .replace("%3E", ">")
                                .replace("%3A", ":");
                            match &base_url {
                                Some(base) if url.starts_with(base.as_str()) => {
                                    format!("<config:base.url>{}", &url[base.len()..])
                                }
                                _ => url,
                            }
                        },
                        headers,
                        body: (!body.is_null()).then_some(body),
                        exact_body: false,
                    },
                    response: ResponseSpec {
                        status: response.status,
                        headers: response
                            .headers()
                            .filter(|(name, _)| KEPT_HEADERS.contains(name))
                            .map(|(name, value)| {
                                (name.to_owned(), masker.text(value, false, &mut tokens))
                            })
                            .collect(),
                        body: masker.response_value(&response.body, &mut tokens),
                    },
                    elapsed_ms: *elapsed_ms,
                }
            })
            .collect();
        cassette.runs.push(RecordedRun {
            resource: resource.to_owned(),
            started: crate::time::format(started),
            exchanges,
        });
        let mut text =
            serde_json::to_string_pretty(&cassette).map_err(|error| error.to_string())?;
        text.push('\n');
        fs_err::write(path, text).map_err(|error| error.to_string())
    }
}

impl Transport for RecordingHttp {
    fn send<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<VendorResponse, TransportError>> {
        Box::pin(async move {
            let started = Instant::now();
            let response = self.inner.send(request).await?;
            let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.exchanges
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((request.clone(), response.clone(), elapsed));
            Ok(response)
        })
    }
}

/// Replaces secret values with placeholders.
struct Masker {
    /// The instance's secret values before the run → `<secret:KEY>`.
    secrets: Vec<(String, String)>,
    /// Values of secret keys the run obtained: tokens.
    tokens: Vec<String>,
    /// Tokens of earlier runs of the cassette: this run's are numbered after them.
    offset: usize,
}

/// The highest `N` of the `<token:N>` placeholders in `text`.
fn max_token(text: &str) -> usize {
    text.split("<token:")
        .skip(1)
        .filter_map(|rest| rest.split('>').next()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

impl Masker {
    fn new(connector: &Connector, before: &State, after: &State, offset: usize) -> Self {
        let text = |value: &Value| value.as_str().map(str::to_owned);
        let mut secrets: Vec<(String, String)> = before
            .iter()
            .filter(|(key, _)| connector.is_secret_key(key))
            .filter_map(|(key, value)| Some((text(value)?, format!("<secret:{key}>"))))
            .filter(|(value, _)| value.len() >= 4)
            .collect();
        let tokens: Vec<String> = after
            .iter()
            .filter(|(key, value)| connector.is_secret_key(key) && before.get(*key) != Some(value))
            .filter_map(|(_, value)| text(value))
            .filter(|value| value.len() >= 4)
            .collect();
        // Longest first, so that a value containing another is replaced whole.
        secrets.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        Self {
            secrets,
            tokens,
            offset,
        }
    }

    /// `text` with secrets and tokens replaced; a credential (`credential`) that none names is
    /// `<any>`.
    fn text(&self, text: &str, credential: bool, seen: &mut Vec<String>) -> String {
        let mut masked = text.to_owned();
        let mut tokens: Vec<&String> = self
            .tokens
            .iter()
            .filter(|token| masked.contains(token.as_str()))
            .collect();
        tokens.sort_by_key(|token| masked.find(token.as_str()));
        for token in tokens {
            let position = if let Some(position) = seen.iter().position(|known| known == token) {
                position + 1
            } else {
                seen.push(token.clone());
                seen.len()
            };
            let number = self.offset + position;
            masked = masked.replace(token.as_str(), &format!("<token:{number}>"));
        }
        for (value, placeholder) in &self.secrets {
            masked = masked.replace(value, placeholder);
        }
        if credential && !masked.contains('<') && !masked.is_empty() {
            return "<any>".to_owned();
        }
        masked
    }

    /// A response value: secrets and tokens replaced, never `<any>` (a replay answers with it).
    fn response_value(&self, value: &Value, seen: &mut Vec<String>) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text, false, seen)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.response_value(item, seen))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| (key.clone(), self.response_value(item, seen)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn value(&self, value: &Value, credential: bool, seen: &mut Vec<String>) -> Value {
        match value {
            Value::String(text) => Value::String(self.text(text, credential, seen)),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.value(item, credential, seen))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| {
                        (
                            key.clone(),
                            self.value(item, credential || is_secret_name(key), seen),
                        )
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}
