//! The one way requests leave the engine: the [`Transport`] trait, its implementations, and the
//! retry policy.
//!
//! - [`HttpTransport`] sends with one shared reqwest client (rustls, connection reuse; the
//!   platform's roots loaded on the first `https://` handshake, see `tls.rs`) and reads
//!   each response body up to a limit (16 MiB by default): a larger one is an error naming the
//!   limit, never an out-of-memory.
//! - [`RecordingTransport`] sends nothing: it records each request and answers an empty `200`
//!   marked [`VendorResponse::is_recorded`]. `--dry-run` is a run over it.
//! - [`RetryPolicy`] decides whether and how long to wait before another attempt: bounded
//!   attempts, exponential backoff with full jitter, `Retry-After` in seconds or as an HTTP date,
//!   capped. [`send_with_policy`] is the only retry loop.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_store::BoxFuture;
use serde_json::Value;

use crate::body::Body;
use crate::egress::{AddressRefused, Egress, EgressResolver};
use crate::observer::{Event, Observer};
use crate::prepared_request::{PartContent, PreparedRequest, RequestBody};
use crate::redact::Redactor;
use crate::run_error::{RunError, RunErrorKind};

/// The default limit of a response body: 16 MiB.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// A vendor response, read whole.
#[derive(Debug, Clone)]
pub struct VendorResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    headers: reqwest::header::HeaderMap,
    /// The body: read as JSON on first use ([`Body::value`]).
    pub body: Body,
    /// True when no vendor answered: a [`RecordingTransport`] made it up.
    recorded: bool,
}

impl VendorResponse {
    /// A response with these parts (header names are compared case-insensitively; a pair that is
    /// not a valid header is left out).
    pub fn new(status: u16, headers: Vec<(String, String)>, body: Value) -> Self {
        let headers = headers
            .into_iter()
            .filter_map(|(name, value)| {
                Some((
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    reqwest::header::HeaderValue::from_str(&value).ok()?,
                ))
            })
            .collect();
        Self {
            status,
            headers,
            body: Body::from(body),
            recorded: false,
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// True when the response was made up by a [`RecordingTransport`]: nothing was sent, and
    /// nothing is to be learnt from it.
    pub fn is_recorded(&self) -> bool {
        self.recorded
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// [`VendorResponse::header`] by a name known in advance: not parsed again for every
    /// response (`elements-next-page-token`, looked for in every answer: 400 instructions).
    pub(crate) fn header_named(&self, name: &reqwest::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Takes the headers as reqwest holds them, leaving none: a run keeps its last answer's
    /// without copying them.
    pub(crate) fn take_headers(&mut self) -> reqwest::header::HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// Every header, in the order received (values that are not text are left out).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
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
        match self.body.value() {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The connection could not be made (refused, DNS, TLS handshake).
    Connect,
    /// The request or the response took longer than allowed.
    Timeout,
    /// The response body is larger than the limit.
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The [`Egress`] policy refused the address: nothing was sent.
    Refused,
    /// Anything else (a reset connection, an unreadable body).
    Other,
}

/// A request that got no response; the message never holds the URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// What failed, with its causes on one line.
    pub message: String,
}

impl TransportError {
    fn retryable(&self, lifecycle: bool) -> bool {
        match self.kind {
            TransportErrorKind::Connect => true,
            TransportErrorKind::Timeout => lifecycle,
            TransportErrorKind::BodyTooLarge { .. }
            | TransportErrorKind::Refused
            | TransportErrorKind::Other => false,
        }
    }
}

/// Sends one request and reads its response: one attempt, no retry.
pub trait Transport: Send + Sync {
    /// Sends `request`.
    ///
    /// Fails when no response could be read (see [`TransportErrorKind`]).
    fn send<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<VendorResponse, TransportError>>;
}

/// The [`Transport`] over HTTP: reqwest clients shared by every request (connection reuse),
/// response bodies read up to `max_body` bytes.
///
/// Redirects: an API call follows at most 10, each to the same origin (scheme, host and port)
/// as the request: a redirect to another host, another port or from https to http is not
/// followed, and the `3xx` answer is the response (the request's credentials never reach
/// another origin). A [`PreparedRequest::lifecycle`] request (it carries client secrets,
/// passwords or refresh tokens) follows none.
///
/// Addresses: under an [`Egress`] policy other than [`Egress::Any`], names are resolved to the
/// addresses it allows only (`egress.rs`), and a URL whose host is a refused address is refused
/// before connecting ([`TransportErrorKind::Refused`]).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    lifecycle_client: reqwest::Client,
    max_body: usize,
    egress: Egress,
}

/// The most redirects an API call follows.
const MAX_REDIRECTS: usize = 10;

/// Follows a redirect only within the origin of the first request.
fn same_origin_redirects(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    if attempt.previous().len() > MAX_REDIRECTS {
        return attempt.error("too many redirects");
    }
    if attempt.url().origin() == first.origin() {
        attempt.follow()
    } else {
        attempt.stop()
    }
}

impl HttpTransport {
    /// A transport with these timeouts and body limit: `timeout` bounds each request (`None`:
    /// no bound here; an [`crate::Engine`] bounds its whole run itself, every attempt included).
    /// It connects to any address ([`Egress::Any`]).
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn new(
        timeout: Option<Duration>,
        connect_timeout: Duration,
        max_body: usize,
    ) -> Result<Self, TransportError> {
        Self::with_egress(timeout, connect_timeout, max_body, Egress::Any)
    }

    /// [`HttpTransport::new`], connecting only to the addresses `egress` allows.
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn with_egress(
        timeout: Option<Duration>,
        connect_timeout: Duration,
        max_body: usize,
        egress: Egress,
    ) -> Result<Self, TransportError> {
        let resolver = (egress != Egress::Any).then(|| EgressResolver::new(egress));
        Self::build(
            timeout,
            connect_timeout,
            max_body,
            egress,
            resolver.as_ref(),
        )
    }

    /// The transport, resolving names with `resolver` when there is one.
    fn build(
        timeout: Option<Duration>,
        connect_timeout: Duration,
        max_body: usize,
        egress: Egress,
        resolver: Option<&EgressResolver>,
    ) -> Result<Self, TransportError> {
        // One TLS configuration (and so one set of roots, loaded once) for both clients.
        let tls = crate::tls::client_config().map_err(|error| TransportError {
            kind: TransportErrorKind::Other,
            message: format!("TLS could not be set up: {error}"),
        })?;
        let client = |redirects: reqwest::redirect::Policy| {
            let builder = reqwest::Client::builder();
            let builder = match timeout {
                Some(timeout) => builder.timeout(timeout),
                None => builder,
            };
            let builder = match resolver {
                Some(resolver) => builder.dns_resolver(resolver.clone()),
                None => builder,
            };
            builder
                .connect_timeout(connect_timeout)
                .user_agent(concat!("connector-engine/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .tls_backend_preconfigured(tls.clone())
                .build()
                .map_err(|error| describe(&error))
        };
        Ok(Self {
            client: client(reqwest::redirect::Policy::custom(same_origin_redirects))?,
            lifecycle_client: client(reqwest::redirect::Policy::none())?,
            max_body,
            egress,
        })
    }

    /// The client for `request` and the request reqwest sends. Built in place, not through
    /// `RequestBuilder`, which is moved (a few hundred bytes) at every header, and outside
    /// [`HttpTransport::exchange`], so that its future (allocated for every request) does not
    /// hold it; `form` and `multipart` bodies still use the builder.
    fn request_of(
        &self,
        request: &PreparedRequest,
    ) -> Result<(&reqwest::Client, reqwest::Request), TransportError> {
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| TransportError {
                kind: TransportErrorKind::Other,
                message: format!("`{}` is not an HTTP method", request.method),
            })?;
        let client = if request.lifecycle {
            &self.lifecycle_client
        } else {
            &self.client
        };
        let mut sent = reqwest::Request::new(method, request.url.clone());
        let headers = sent.headers_mut();
        for (name, value) in &request.headers {
            // `check_headers` refused any header HTTP would misread before the request got
            // here; the message names neither the header nor its value, which may be a secret.
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|error| refused(&error))?;
            let value =
                reqwest::header::HeaderValue::from_str(value).map_err(|error| refused(&error))?;
            headers.append(name, value);
        }
        // The body's own `Content-Type` when the request has none: the one `--dry-run` shows.
        if let Some(implied) = request.body.implied_content_type()
            && !headers.contains_key(reqwest::header::CONTENT_TYPE)
        {
            headers.append(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static(implied),
            );
        }
        let sent = match &request.body {
            RequestBody::Empty => sent,
            RequestBody::Json(body) => {
                *sent.body_mut() = Some(serde_json::to_vec(body).unwrap_or_default().into());
                sent
            }
            RequestBody::Text(text) => {
                *sent.body_mut() = Some(text.clone().into());
                sent
            }
            RequestBody::Form(fields) => reqwest::RequestBuilder::from_parts(client.clone(), sent)
                .form(fields)
                .build()
                .map_err(|error| describe(&error))?,
            RequestBody::Multipart(parts) => {
                let mut form = reqwest::multipart::Form::new();
                for part in parts {
                    form = match &part.content {
                        PartContent::Text(text) => form.text(part.name.clone(), text.clone()),
                        PartContent::File { file_name, bytes } => form.part(
                            part.name.clone(),
                            reqwest::multipart::Part::bytes(bytes.clone())
                                .file_name(file_name.clone()),
                        ),
                    };
                }
                reqwest::RequestBuilder::from_parts(client.clone(), sent)
                    .multipart(form)
                    .build()
                    .map_err(|error| describe(&error))?
            }
        };
        Ok((client, sent))
    }

    async fn exchange(&self, request: &PreparedRequest) -> Result<VendorResponse, TransportError> {
        if self.egress != Egress::Any {
            self.egress
                .check_url(&request.url)
                .map_err(|refused| TransportError {
                    kind: TransportErrorKind::Refused,
                    message: refused.to_string(),
                })?;
        }
        let pending = {
            let (client, sent) = self.request_of(request)?;
            client.execute(sent)
        };
        let mut response = pending.await.map_err(|error| describe(&error))?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let too_large = || TransportError {
            kind: TransportErrorKind::BodyTooLarge {
                limit: self.max_body,
            },
            message: format!(
                "the response body is larger than the limit of {} bytes",
                self.max_body
            ),
        };
        let body = match response.content_length() {
            Some(length) if length > self.max_body as u64 => return Err(too_large()),
            // A declared length within the limit (hyper enforces it): read at once.
            Some(_) => {
                let bytes = response.bytes().await.map_err(|error| describe(&error))?;
                Body::received(bytes, content_type)
            }
            // Chunked: read chunk by chunk, stopping at the limit.
            None => {
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|error| describe(&error))? {
                    if bytes.len() + chunk.len() > self.max_body {
                        return Err(too_large());
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Body::received(bytes.into(), content_type)
            }
        };
        Ok(VendorResponse {
            status,
            headers,
            body,
            recorded: false,
        })
    }
}

impl Transport for HttpTransport {
    fn send<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<VendorResponse, TransportError>> {
        Box::pin(self.exchange(request))
    }
}

/// A [`Transport`] that sends nothing: it keeps every request, in order, and answers each with
/// an empty `200` marked [`VendorResponse::is_recorded`]. Clones share the record.
#[derive(Debug, Clone, Default)]
pub struct RecordingTransport {
    requests: Arc<Mutex<Vec<PreparedRequest>>>,
}

impl RecordingTransport {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests recorded so far, in order.
    pub fn requests(&self) -> Vec<PreparedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Transport for RecordingTransport {
    fn send<'a>(
        &'a self,
        request: &'a PreparedRequest,
    ) -> BoxFuture<'a, Result<VendorResponse, TransportError>> {
        Box::pin(async move {
            self.requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request.clone());
            Ok(VendorResponse {
                status: 200,
                headers: reqwest::header::HeaderMap::new(),
                body: Body::default(),
                recorded: true,
            })
        })
    }
}

/// When and how long to wait before trying a request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a failed attempt is retried (2: at most three attempts).
    pub retries: u32,
    /// The first backoff; each later one doubles, up to `cap`.
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
    /// The longest `Retry-After` the engine waits for; a longer one is not retried.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 2 retries, backoff from 200 ms capped at 10 s, `Retry-After` up to 30 s.
    fn default() -> Self {
        Self {
            retries: 2,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The pause before attempt `attempt` (2 for the first retry), or `None` when no attempt
    /// is left or the vendor asks to wait longer than `max_retry_after`. `retry_after` is the
    /// vendor's `Retry-After` (already turned into a duration); without it the pause is full
    /// jitter: `fraction` (in `[0, 1)`) of the exponential backoff, capped.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        fraction: f64,
    ) -> Option<Duration> {
        if attempt < 2 || attempt - 1 > self.retries {
            return None;
        }
        if let Some(after) = retry_after {
            return (after <= self.max_retry_after).then_some(after);
        }
        let exponent = (attempt - 2).min(31);
        let backoff = self.base.saturating_mul(1_u32 << exponent).min(self.cap);
        Some(backoff.mul_f64(fraction.clamp(0.0, 1.0)))
    }
}

/// A `Retry-After` value as a duration from `now`: delay seconds, or an HTTP date (a date in the
/// past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// A random fraction in `[0, 1)` for the jitter; 0.5 when the system has no randomness.
fn random_fraction() -> f64 {
    let mut bytes = [0_u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits: every value of the fraction is exact.
    let bits = u64::from_le_bytes(bytes) >> 11;
    #[expect(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
    let fraction = bits as f64 / (1_u64 << 53) as f64;
    fraction
}

/// What a sending needs besides the request.
pub(crate) struct Sending<'a> {
    /// Where requests go.
    pub(crate) transport: &'a dyn Transport,
    /// `transport` itself when it is an [`HttpTransport`]: awaited without boxing its future.
    pub(crate) http: Option<&'a HttpTransport>,
    /// When to retry.
    pub(crate) policy: &'a RetryPolicy,
    /// Told each attempt and retry.
    pub(crate) observer: &'a dyn Observer,
    /// Masks URLs and messages.
    pub(crate) redactor: &'a Redactor,
    /// Waits between attempts, and tells the time the deadline is judged by.
    pub(crate) clock: &'a dyn crate::Clock,
    /// The bound on the whole run.
    pub(crate) deadline: Deadline,
    /// Signs each attempt anew (OAuth 1.0a), with a nonce and a time of its own: a retry that
    /// repeated a nonce would be refused as a replay.
    pub(crate) signer: Option<&'a crate::auth::oauth1::Signer>,
}

/// The bound on a whole run: every attempt, retry pause and refresh must end by `at_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// When, in the clock's epoch milliseconds.
    pub(crate) at_ms: u64,
    /// The bound it came from (`--timeout`), for messages.
    pub(crate) timeout: Duration,
}

impl Deadline {
    /// The time left at `now_ms` (zero once past).
    fn remaining(self, now_ms: u64) -> Duration {
        Duration::from_millis(self.at_ms.saturating_sub(now_ms))
    }

    /// The bound as a person reads it: `2 s`, `0.5 s`.
    fn shown(self) -> String {
        let seconds = self.timeout.as_secs_f64();
        let text = format!("{seconds:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text} s")
    }
}

/// Sends `request`, retrying what the policy allows: a failed connection always; with
/// `lifecycle` (token endpoints and lifecycle resources), also a timeout, a `429` and a `5xx`.
/// Within the run's [`Deadline`]: an attempt is cut when it passes, and a retry whose pause
/// would pass it is not made (the last failure is the answer).
///
/// Fails with [`RunErrorKind::Transport`] (or [`RunErrorKind::BodyTooLarge`]) when no attempt
/// got a response, [`RunErrorKind::TimedOut`] when the deadline cut one, or it had passed.
pub(crate) async fn send_with_policy(
    sending: &Sending<'_>,
    request: &PreparedRequest,
    lifecycle: bool,
) -> Result<VendorResponse, RunError> {
    // Every request passes here: one that HTTP would misread is refused before it leaves
    // (the engine's own headers too, a token with a line break from a vendor included).
    crate::request::check_headers(&request.headers, &[])?;
    let observer = sending.observer;
    let unsigned = request;
    let mut attempt = 1;
    loop {
        let signed = sending
            .signer
            .map(|signer| signer.sign(unsigned, sending.clock.now_ms() / 1000));
        let request = signed.as_ref().unwrap_or(unsigned);
        if observer.enabled() {
            observer.event(&Event::Sending {
                resource: request.resource.to_string(),
                method: request.method.to_string(),
                url: request.display_url(sending.redactor),
            });
        }
        // Timed only for an observer that listens: reading the clock is not free.
        let started = observer.enabled().then(Instant::now);
        attempt += 1;
        let deadline = sending.deadline;
        let remaining = deadline.remaining(sending.clock.now_ms());
        let sent = match sending.http {
            Some(http) => tokio::time::timeout(remaining, http.exchange(request)).await,
            None => tokio::time::timeout(remaining, sending.transport.send(request)).await,
        };
        let Ok(sent) = sent else {
            return Err(RunErrorKind::TimedOut {
                url: request.display_url(sending.redactor),
                timeout: deadline.shown(),
                attempts: attempt - 1,
            }
            .into());
        };
        let (pause, cause) = match sent {
            Ok(response) => {
                // A recorded answer (`--dry-run`) was made up: nothing was received.
                if let Some(started) = started.filter(|_| !response.is_recorded()) {
                    observer.event(&Event::Received {
                        status: response.status,
                        elapsed: started.elapsed(),
                    });
                }
                let transient = lifecycle && (response.status == 429 || response.status >= 500);
                if !transient {
                    return Ok(response);
                }
                let retry_after = response
                    .header("retry-after")
                    .and_then(|value| parse_retry_after(value, jiff::Timestamp::now()));
                match sending
                    .policy
                    .delay(attempt, retry_after, random_fraction())
                    .filter(|pause| fits(sending, *pause))
                {
                    Some(pause) => (pause, format!("status {}", response.status)),
                    None => return Ok(response),
                }
            }
            Err(error) => {
                let pause = error
                    .retryable(lifecycle)
                    .then(|| sending.policy.delay(attempt, None, random_fraction()))
                    .flatten()
                    .filter(|pause| fits(sending, *pause));
                let message = sending.redactor.redact(&error.message);
                let Some(pause) = pause else {
                    let url = request.display_url(sending.redactor);
                    return Err(match error.kind {
                        TransportErrorKind::BodyTooLarge { limit } => {
                            RunErrorKind::BodyTooLarge { url, limit }
                        }
                        TransportErrorKind::Refused => {
                            RunErrorKind::AddressRefused { url, message }
                        }
                        _ => RunErrorKind::Transport { url, message },
                    }
                    .into());
                };
                (pause, message)
            }
        };
        observer.event(&Event::Retrying {
            attempt,
            after: pause,
            cause,
        });
        sending.clock.sleep(pause).await;
    }
}

/// True when a pause of `pause` ends before the run's deadline.
fn fits(sending: &Sending<'_>, pause: Duration) -> bool {
    pause < sending.deadline.remaining(sending.clock.now_ms())
}

/// The error and its causes on one line: `could not connect: connection refused`.
/// A header the client cannot send, said as [`describe`] says a request reqwest refused.
fn refused(error: &dyn std::fmt::Display) -> TransportError {
    TransportError {
        kind: TransportErrorKind::Other,
        message: format!("the request failed: {error}"),
    }
}

fn describe(error: &reqwest::Error) -> TransportError {
    // A name the egress policy refused: said as such, and never retried.
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<AddressRefused>() {
            return TransportError {
                kind: TransportErrorKind::Refused,
                message: refused.to_string(),
            };
        }
        source = cause.source();
    }
    // Never `error.to_string()`: reqwest puts the whole URL in it, query string included.
    let (kind, summary) = if error.is_timeout() {
        (TransportErrorKind::Timeout, "timed out")
    } else if error.is_connect() {
        (TransportErrorKind::Connect, "could not connect")
    } else if error.is_body() || error.is_decode() {
        (TransportErrorKind::Other, "could not read the response")
    } else if error.is_redirect() {
        (TransportErrorKind::Other, "too many redirects")
    } else {
        (TransportErrorKind::Other, "the request failed")
    };
    let mut message = summary.to_owned();
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
    TransportError { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn full_jitter_stays_within_the_capped_exponential_backoff() {
        let policy = policy();
        for (attempt, ceiling) in [(2, 100), (3, 200), (4, 300)] {
            assert_eq!(policy.delay(attempt, None, 0.0), Some(Duration::ZERO));
            assert_eq!(
                policy.delay(attempt, None, 0.999_999),
                Some(Duration::from_millis(ceiling).mul_f64(0.999_999))
            );
            let half = policy.delay(attempt, None, 0.5).unwrap();
            assert!(
                half <= Duration::from_millis(ceiling),
                "{attempt}: {half:?}"
            );
        }
        assert_eq!(
            policy.delay(5, None, 0.5),
            None,
            "three retries, then no more"
        );
        assert_eq!(policy.delay(1, None, 0.5), None);
        // Random fractions stay in [0, 1).
        for _ in 0..1000 {
            let fraction = random_fraction();
            assert!((0.0..1.0).contains(&fraction), "{fraction}");
        }
    }

    #[test]
    fn retry_after_is_obeyed_up_to_the_cap() {
        let policy = policy();
        assert_eq!(
            policy.delay(2, Some(Duration::from_secs(7)), 0.5),
            Some(Duration::from_secs(7))
        );
        assert_eq!(policy.delay(2, Some(Duration::from_secs(31)), 0.5), None);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now: jiff::Timestamp = "2015-10-21T07:28:00Z".parse().unwrap();
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_mins(2))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:42 GMT", now),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn names_and_addresses_the_egress_policy_refuses_get_no_connection() {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let port = server.address().port();
        // Names as a resolver would answer them: one on loopback, one on a private network,
        // one on the cloud metadata address.
        let resolver = EgressResolver::answering(
            Egress::Public,
            vec![
                ("vendor.test".into(), "127.0.0.1".parse().unwrap()),
                ("internal.test".into(), "10.0.0.7".parse().unwrap()),
                ("metadata.test".into(), "169.254.169.254".parse().unwrap()),
            ],
        );
        let transport = HttpTransport::build(
            None,
            Duration::from_secs(5),
            DEFAULT_MAX_BODY,
            Egress::Public,
            Some(&resolver),
        )
        .unwrap();
        let send = |host: &str| {
            let request = PreparedRequest {
                resource: "me".into(),
                method: "GET".into(),
                url: url::Url::parse(&format!("http://{host}:{port}/me")).unwrap(),
                headers: Vec::new(),
                body: RequestBody::Empty,
                lifecycle: false,
                secrets: Vec::new(),
            };
            let transport = transport.clone();
            async move { transport.exchange(&request).await }
        };
        assert_eq!(send("vendor.test").await.unwrap().status, 200);
        for (host, message) in [
            (
                "internal.test",
                "`internal.test` resolves to 10.0.0.7, a private address, which the egress policy `public` refuses",
            ),
            (
                "metadata.test",
                "`metadata.test` resolves to 169.254.169.254, a link-local address, which the egress policy `public` refuses",
            ),
            (
                "169.254.169.254",
                "`169.254.169.254` is a link-local address, which the egress policy `public` refuses",
            ),
        ] {
            let error = send(host).await.unwrap_err();
            assert!(!error.retryable(true));
            assert_eq!(
                (error.kind, error.message.as_str()),
                (TransportErrorKind::Refused, message)
            );
        }
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_recording_transport_records_and_answers_an_empty_200() {
        let transport = RecordingTransport::new();
        let request = PreparedRequest {
            resource: "me".into(),
            method: "GET".into(),
            url: url::Url::parse("https://api.example/me").unwrap(),
            headers: Vec::new(),
            body: RequestBody::Empty,
            lifecycle: false,
            secrets: Vec::new(),
        };
        let response = transport.send(&request).await.unwrap();
        assert!(response.is_recorded() && response.is_success());
        assert_eq!(transport.clone().requests().len(), 1);
    }
}
