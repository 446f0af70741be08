//! Sending a [`PreparedRequest`] with reqwest (rustls), and reading the response whole.

use serde_json::Value;

use crate::body::PartContent;
use crate::request::{PreparedRequest, RequestBody};

/// A vendor response, read whole.
#[derive(Debug, Clone)]
pub struct VendorResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    headers: reqwest::header::HeaderMap,
    /// The body: parsed JSON when it is JSON, a string otherwise, `null` when empty.
    pub body: Value,
}

impl VendorResponse {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// A short problem description from an error body: OAuth2's `error` and
    /// `error_description`, problem+json's `title`/`detail`, or a `message`.
    pub fn problem(&self) -> Option<String> {
        let body = &self.body;
        let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        if let Some(error) = field("error") {
            return Some(
                match field("error_description").or_else(|| field("message")) {
                    Some(description) => format!("{error}: {description}"),
                    None => error,
                },
            );
        }
        if let Some(title) = field("title") {
            return Some(match field("detail") {
                Some(detail) => format!("{title}: {detail}"),
                None => title,
            });
        }
        field("message").or_else(|| {
            body.as_str()
                .map(|text| text.chars().take(200).collect::<String>())
                .filter(|text| !text.trim().is_empty())
        })
    }

    /// The body as text, for messages.
    pub fn body_text(&self) -> String {
        match &self.body {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// Sends `request` and reads the whole response.
///
/// Fails on connect, TLS, timeout or a reset connection.
pub(crate) async fn send(
    client: &reqwest::Client,
    request: &PreparedRequest,
) -> Result<VendorResponse, reqwest::Error> {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut builder = client.request(method, request.url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let has_content_type = request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    builder = match &request.body {
        RequestBody::Empty => builder,
        RequestBody::Json(body) if has_content_type => {
            builder.body(serde_json::to_vec(body).unwrap_or_default())
        }
        RequestBody::Json(body) => builder.json(body),
        RequestBody::Form(fields) => builder.form(fields),
        RequestBody::Text(text) => builder.body(text.clone()),
        RequestBody::Multipart(parts) => {
            let mut form = reqwest::multipart::Form::new();
            for part in parts {
                form = match &part.content {
                    PartContent::Text(text) => form.text(part.name.clone(), text.clone()),
                    PartContent::File { file_name, bytes } => form.part(
                        part.name.clone(),
                        reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.clone()),
                    ),
                };
            }
            builder.multipart(form)
        }
    };
    let mut response = builder.send().await?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let bytes = response.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(VendorResponse {
        status,
        headers,
        body,
    })
}

/// The error and its causes on one line: `error sending request: connection refused`.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    // Never `error.to_string()`: reqwest puts the whole URL in it, query string included.
    let mut message = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "could not read the response"
    } else if error.is_redirect() {
        "too many redirects"
    } else {
        "the request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    let mut seen = vec![message.clone()];
    while let Some(cause) = source {
        let text = cause.to_string();
        if !seen.iter().any(|known| known.contains(&text)) {
            message.push_str(": ");
            message.push_str(&text);
            seen.push(text);
        }
        source = cause.source();
    }
    message
}
