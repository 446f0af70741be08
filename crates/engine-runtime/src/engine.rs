//! [`Engine::run`]: one resource of a connector against one instance, with the whole token
//! lifecycle (docs/running.md, "The token lifecycle"). The I/O around the pure parts: the [`Scheme`] decides,
//! the [`Transport`] sends, the [`InstanceStore`] keeps.
//!
//! 1. load the instance, apply defaults, refuse to start when required keys are missing;
//! 2. an API resource first makes sure the token is fresh: when it is stale, take the
//!    in-process single-flight lock of the instance, then the store's lock, re-read, re-check
//!    (another task or process may have refreshed), run the scheme's steps, write with the
//!    version read under the lock (compare-and-swap), release;
//! 3. build and send; a status in `session.refreshOnStatus` (401) with the token still the one
//!    the request carried forces one refresh and one retry; never a loop;
//! 4. extract, follow `nextResource`, and write every saved value before returning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use engine_spec::kinds::ResourceType;
use engine_spec::{AuthKind, Connector, Protocol, Resource};
use engine_store::{
    InstanceLock, InstanceStore, SCHEDULE_KEY, Schedule, ScheduleStatus, State, StoreErrorKind,
};
use serde_json::Value;

use crate::auth::custom::{PROVISIONED, provisioning, resource_step};
use crate::auth::{Expiry, Freshness, Scheme, Step, oauth1, oauth2};
use crate::body::{Body, redact_json};
use crate::clock::{Clock, SystemClock};
use crate::configuration::Configuration;
use crate::differences::{changes_the_request, differences, of_resource, plan};
use crate::egress::Egress;
use crate::extract::{Extracted, extract};
use crate::hooks::exchange;
use crate::observer::{Event, Observer, RefreshReason, RefreshReport};
use crate::origins::Origins;
use crate::prepared_request::{PreparedRequest, SecretSlot};
use crate::redact::Redactor;
use crate::request::{BuildContext, Inputs, build, request_parameters};
use crate::run_error::{MissingKey, RunError, RunErrorKind};
use crate::snapshot::Snapshot;
use crate::transport::{
    DEFAULT_MAX_BODY, Deadline, HttpTransport, RetryPolicy, Sending, Transport, VendorResponse,
    send_with_policy,
};

/// Runs connectors. Build one per process and share it (it is cheap to clone): it holds the
/// transport (one HTTP connection pool) and the in-process single-flight of refreshes.
#[derive(Clone)]
pub struct Engine {
    transport: Arc<dyn Transport>,
    /// The same transport when it is the engine's own HTTP one: its exchange is then awaited
    /// directly, not through the trait's boxed future (an allocation per request).
    http: Option<Arc<HttpTransport>>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    policy: RetryPolicy,
    lock_timeout: Option<Duration>,
    hook_budget: Duration,
    flights: Arc<Flights>,
    strict: bool,
}

/// Builds an [`Engine`].
#[must_use]
pub struct EngineBuilder {
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    lock_timeout: Option<Duration>,
    hook_budget: Duration,
    transport: Option<Arc<dyn Transport>>,
    strict: bool,
    egress: Egress,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// Defaults: 30 s for a whole run, 10 s connect timeout per request, response bodies up to
    /// 16 MiB, the system clock, the default [`RetryPolicy`], instance locks waited for at most
    /// 30 s, and HTTP to any address ([`Egress::Any`]).
    pub fn new() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body: DEFAULT_MAX_BODY,
            clock: Arc::new(SystemClock),
            policy: RetryPolicy::default(),
            lock_timeout: Some(Duration::from_secs(30)),
            hook_budget: crate::hooks::DEFAULT_BUDGET,
            transport: None,
            strict: false,
            egress: Egress::Any,
        }
    }

    /// Refuses a run, before anything is sent, when it would not do as the platform did: a
    /// hook or converter of what it executes ([`crate::differences()`]), a lifecycle resource it
    /// would skip. Without it the run goes on and tells the observer
    /// ([`Event::NotExecuted`], [`Event::LifecycleSkipped`]).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// The bound on one whole [`Engine::run`] or [`Engine::refresh`]: every request, attempt,
    /// retry pause and refresh it makes ends within it, timed by the engine's clock (waiting for
    /// another task's or process's refresh, or an instance's lock, is bounded by
    /// [`EngineBuilder::lock_timeout`] instead and does not count). Past it, the
    /// request in flight is cut and the run fails with [`RunErrorKind::TimedOut`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body read, in bytes; a larger one fails the request.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The clock the token lifecycle reads.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many times a transient failure is retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.policy.retries = retries;
        self
    }

    /// The first backoff between retries (jittered; it doubles each time, up to 10 s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.policy.base = backoff;
        self
    }

    /// The longest `Retry-After` the engine waits for; a longer one fails at once.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.policy.max_retry_after = max;
        self
    }

    /// How long to wait for an instance's lock (`None`: as long as it takes).
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How long one JavaScript hook may run (250 ms by default); past it, the run fails naming
    /// the hook (docs/hooks.md).
    pub fn hook_budget(mut self, budget: Duration) -> Self {
        self.hook_budget = budget;
        self
    }

    /// Which addresses HTTP requests may connect to ([`Egress`]): a name is resolved to the
    /// addresses it allows only, and a URL whose host is a refused address fails the run with
    /// [`RunErrorKind::AddressRefused`] before anything is sent. Not for a
    /// [`EngineBuilder::transport`] of the caller's.
    pub fn egress(mut self, egress: Egress) -> Self {
        self.egress = egress;
        self
    }

    /// Sends through `transport` instead of HTTP: a [`crate::RecordingTransport`] for a dry
    /// run, a replaying one for tests. The connect timeout and body limit then do not apply;
    /// the run's timeout does.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Builds the engine.
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn build(self) -> Result<Engine, RunError> {
        let (transport, http) = if let Some(transport) = self.transport {
            (transport, None)
        } else {
            let http = Arc::new(
                HttpTransport::with_egress(None, self.connect_timeout, self.max_body, self.egress)
                    .map_err(|error| RunErrorKind::Transport {
                        url: String::new(),
                        message: error.message,
                    })?,
            );
            (Arc::clone(&http) as Arc<dyn Transport>, Some(http))
        };
        Ok(Engine {
            transport,
            http,
            clock: self.clock,
            timeout: self.timeout,
            policy: self.policy,
            lock_timeout: self.lock_timeout,
            hook_budget: self.hook_budget,
            flights: Arc::default(),
            strict: self.strict,
        })
    }
}

/// The in-process single-flight: one async mutex per stored instance (by
/// [`InstanceStore::identity`]), held while its token is refreshed. Waiting tasks park on the
/// mutex, not on a thread.
#[derive(Default)]
struct Flights(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl Flights {
    /// The mutex of `key`, made on first use; entries nobody holds any more are dropped.
    fn of(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(&key).and_then(Weak::upgrade) {
            return flight;
        }
        flights.retain(|_, flight| flight.strong_count() > 0);
        let flight = Arc::new(tokio::sync::Mutex::new(()));
        flights.insert(key, Arc::downgrade(&flight));
        flight
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct RunRequest<'a> {
    /// The connector.
    pub connector: &'a Connector,
    /// A resource name, a lifecycle type, or `METHOD:/path`.
    pub selector: &'a str,
    /// The caller's inputs.
    pub inputs: &'a Inputs,
    /// The instance id in the store.
    pub instance: &'a str,
}

/// What [`Engine::refresh`] refreshes.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    /// The connector of the instance.
    pub connector: &'a Connector,
    /// The instance id in the store.
    pub instance: &'a str,
    /// Refresh when the token expires within this (zero: only an expired or missing token).
    pub ahead: Duration,
}

/// What a run gave.
#[derive(Debug)]
pub struct RunOutput {
    /// The last response's status.
    pub status: u16,
    /// The last response's body after `rootKey`, secrets masked; the bytes as received when
    /// nothing changed them ([`Body::json_bytes`]).
    pub body: Body,
    /// Masks every secret the run knows of; use it on anything shown to a person.
    pub redactor: Redactor,
    /// How to ask for the next page, when the vendor's answer says there is one
    /// ([`NextPage`](crate::NextPage)).
    pub next_page: Option<crate::pagination::NextPage>,
    /// The output parameters (`"source": "response"` of type `header` or `bodyField`) the body
    /// has no field for, since it is not an object (a list after `rootKey`): by name, in order,
    /// secrets masked.
    pub outputs: Vec<(String, Value)>,
    /// The last response's headers, as received: [`RunOutput::headers`] masks them. Kept whole
    /// (moved from the answer, not copied) and masked only when asked, so that a run whose caller
    /// does not show them (the command line) pays nothing for it.
    response_headers: ResponseHeaders,
}

impl RunOutput {
    /// The last response's headers that `keep` keeps, in the order received, a value that
    /// holds a secret masked (values that are not text left out). Only those kept are looked
    /// at for secrets.
    pub fn headers(
        &self,
        keep: impl Fn(&reqwest::header::HeaderName) -> bool,
    ) -> reqwest::header::HeaderMap {
        let received = &self.response_headers.0;
        let mut masked = reqwest::header::HeaderMap::new();
        for (name, value) in received {
            if !keep(name) {
                continue;
            }
            let Ok(text) = value.to_str() else {
                continue;
            };
            if !self.redactor.finds_secret(text) {
                masked.append(name, value.clone());
            } else if let Ok(value) =
                reqwest::header::HeaderValue::from_str(&self.redactor.redact(text))
            {
                masked.append(name, value);
            }
        }
        masked
    }
}

/// A response's headers, unmasked: their `Debug` shows the names only.
#[derive(Default)]
struct ResponseHeaders(reqwest::header::HeaderMap);

impl std::fmt::Debug for ResponseHeaders {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.0.keys()).finish()
    }
}

impl Engine {
    /// An engine with the defaults of [`EngineBuilder::new`].
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn new() -> Result<Self, RunError> {
        EngineBuilder::new().build()
    }

    /// Runs `request` against the instance in `store`, telling `observer` each step.
    ///
    /// Fails with a [`RunError`] whose kind says what happened: invalid input or configuration
    /// (nothing was sent), a vendor error status, failed authentication, a transport failure, or
    /// a state that could not be written. The instance is left as it was by a failed refresh.
    pub async fn run(
        &self,
        request: &RunRequest<'_>,
        store: &dyn InstanceStore,
        observer: &dyn Observer,
    ) -> Result<RunOutput, RunError> {
        let mut run = Run::new(self, request.connector, store, request.instance, observer).await?;
        let missing = std::mem::take(&mut run.missing);
        if !missing.is_empty() {
            return Err(RunErrorKind::MissingConfiguration { missing }.into());
        }
        let result = run.go(request).await;
        // Values saved before a failure (a chain's first step) are kept; a failed refresh never
        // reaches the pending values.
        run.persist_pending().await?;
        let (status, body) = result?;
        let outputs = std::mem::take(&mut run.outputs)
            .into_iter()
            .map(|(name, value)| (name, redact_json(value, &run.redactor)))
            .collect();
        let response_headers = ResponseHeaders(std::mem::take(&mut run.last_headers));
        Ok(RunOutput {
            status,
            body: body.masked(&run.redactor),
            response_headers,
            redactor: run.redactor,
            next_page: run.next_page,
            outputs,
        })
    }

    /// Refreshes the token of `request.instance` if it expires within `request.ahead` (or is
    /// missing), under the same single-flight, lock, re-read and re-check as a run, and sends
    /// nothing else. Returns true when the refresh path was taken (by this process, or found done
    /// by another while waiting for the lock), false when the token was fresh.
    ///
    /// Fails like [`Engine::run`]: failed authentication, a transport failure, a state that
    /// could not be written. The instance is left as it was by a failed refresh.
    pub async fn refresh(
        &self,
        request: &RefreshRequest<'_>,
        store: &dyn InstanceStore,
        observer: &dyn Observer,
    ) -> Result<bool, RunError> {
        refuse_unexecutable(request.connector)?;
        let mut run = Run::new(self, request.connector, store, request.instance, observer).await?;
        run.ahead_ms = u64::try_from(request.ahead.as_millis()).unwrap_or(u64::MAX);
        let refreshed = run.ensure_fresh().await?;
        run.persist_pending().await?;
        if !refreshed {
            run.persist_schedule().await?;
        }
        Ok(refreshed)
    }

    /// The time by the engine's clock ([`EngineBuilder::clock`]), epoch milliseconds: what
    /// expiry, cooldowns and schedules are judged by.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// The HTTP status a failed step got, when it got one.
fn status_of(error: &RunError) -> Option<u16> {
    match error.kind() {
        RunErrorKind::AuthFailed { status, .. } | RunErrorKind::VendorStatus { status, .. } => {
            Some(*status)
        }
        _ => None,
    }
}

/// The vendor's body (already redacted) a failed step got, when it got one.
fn response_of(error: &RunError) -> Option<String> {
    match error.kind() {
        RunErrorKind::AuthFailed { body, .. }
        | RunErrorKind::VendorStatus { body, .. }
        | RunErrorKind::NoToken { body, .. }
            if !body.is_empty() =>
        {
            Some(body.clone())
        }
        _ => None,
    }
}

/// The location of a resource's `vendorPath`, where a vendor error points.
fn vendor_path_of(resource: &Resource) -> engine_spec::Location {
    field_of(resource, "vendorPath")
}

/// The location of the field `name` of a resource.
fn field_of(resource: &Resource, name: &str) -> engine_spec::Location {
    let mut location = resource.location().clone();
    location.pointer = location.pointer.field(name);
    location
}

/// Refuses connectors the engine loads but cannot execute faithfully, before anything is sent:
/// a protocol other than HTTP (`jdbc`, `odata`...).
fn refuse_unexecutable(connector: &Connector) -> Result<(), RunError> {
    if let Protocol::NotExecuted(protocol) = connector.protocol() {
        return Err(RunErrorKind::ProtocolNotExecuted {
            connector: connector.name().to_owned(),
            protocol: protocol.clone(),
        }
        .into());
    }
    Ok(())
}

/// The inputs of a chain's later links, which take none from the caller.
static NO_INPUTS: Inputs = Inputs {
    params: Vec::new(),
    headers: Vec::new(),
    body: None,
    body_text: None,
    files: Vec::new(),
};

/// How a refresh decides, after taking the lock, that another task or process already
/// refreshed.
enum Recheck {
    /// The re-read token is fresh.
    Freshness,
    /// The stored token is no longer the one a vendor rejected (its marker changed).
    Marker(Option<String>),
}

/// A request built by [`Run::check_inputs`], with the events building it reported.
struct Checked {
    request: PreparedRequest,
    events: Vec<Event>,
}

impl Checked {
    /// Tells `observer` what building the request reported, as [`Run::prepare`] would have,
    /// and gives the request.
    fn replay(self, observer: &dyn Observer) -> PreparedRequest {
        for event in &self.events {
            observer.event(event);
        }
        self.request
    }
}

/// Keeps the events it is told, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Observer for Recorder {
    fn event(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
    }
}

/// The state of one run.
pub(crate) struct Run<'a> {
    engine: &'a Engine,
    connector: &'a Connector,
    scheme: Scheme<'a>,
    store: &'a dyn InstanceStore,
    instance: &'a str,
    observer: &'a dyn Observer,
    /// The stored state, the defaults, and the values this run saved that are not written yet.
    /// Save with [`Run::save`].
    pub(crate) configuration: Configuration<'a>,
    pub(crate) redactor: Redactor,
    /// Where the instance's credentials may go ([`Origins`]): decided with the snapshot, and
    /// again when the run saves or reads a value they were decided from.
    origins: Arc<Origins>,
    /// The stored state the run started from, and what it says ([`Snapshot::of`]): while the
    /// configuration is that state with nothing saved over it, its freshness is judged from the
    /// expiry read once per snapshot.
    started_from: Arc<State>,
    expiry: Expiry,
    /// The required keys `started_from` lacks; [`Engine::run`] refuses to start without them.
    missing: Vec<MissingKey>,
    /// How far ahead of the clock freshness is judged: a token that expires within this is
    /// stale ([`Engine::refresh`]); 0 for a run.
    ahead_ms: u64,
    /// When the run must be over ([`EngineBuilder::timeout`]); time spent waiting for another
    /// refresh does not count ([`Run::not_counting_since`]).
    deadline: Deadline,
    /// The differences already told ([`Run::tell_differences`]), by position in
    /// [`Connector::not_executed`].
    told: Vec<usize>,
    /// The lifecycle resources this refresh (or requested lifecycle run) already sent, by
    /// index: a resource reached twice (a chain into `ON PROVISION`) is sent once.
    ran: Vec<usize>,
    /// The next page after the answer of an API resource ([`crate::pagination`]).
    next_page: Option<crate::pagination::NextPage>,
    /// The output parameters the answer gave that its body, a list, has no field for.
    outputs: Vec<(String, Value)>,
    /// The headers of the answer [`Run::go`] returns, as received.
    last_headers: reqwest::header::HeaderMap,
    /// The headers of the answer before the current link of a `nextResource` chain, for its
    /// hooks (`request_previous_response_headers`); set by the two chain loops.
    previous_headers: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    /// A run over the stored state of `instance`.
    pub(crate) async fn new(
        engine: &'a Engine,
        connector: &'a Connector,
        store: &'a dyn InstanceStore,
        instance: &'a str,
        observer: &'a dyn Observer,
    ) -> Result<Self, RunError> {
        let timeout_ms = u64::try_from(engine.timeout.as_millis()).unwrap_or(u64::MAX);
        let deadline = Deadline {
            at_ms: engine.now_ms().saturating_add(timeout_ms),
            timeout: engine.timeout,
        };
        let stored = store.load(instance).await?;
        let Snapshot {
            redactor,
            missing,
            expiry,
            origins,
        } = Snapshot::of(connector, &stored.state);
        Ok(Self {
            engine,
            connector,
            scheme: Scheme::of(connector),
            store,
            instance,
            observer,
            started_from: Arc::clone(&stored.state),
            configuration: Configuration::new(connector, stored.state),
            redactor,
            origins,
            expiry,
            missing,
            ahead_ms: 0,
            deadline,
            told: Vec::new(),
            ran: Vec::new(),
            next_page: None,
            outputs: Vec::new(),
            last_headers: reqwest::header::HeaderMap::new(),
            previous_headers: Vec::new(),
        })
    }

    /// The time freshness is judged at: the clock's, plus [`Run::ahead_ms`].
    fn judged_at(&self) -> u64 {
        self.engine.now_ms().saturating_add(self.ahead_ms)
    }

    async fn go(&mut self, request: &RunRequest<'_>) -> Result<(u16, Body), RunError> {
        let connector = self.connector;
        refuse_unexecutable(connector)?;
        if connector.authentication().kind() == AuthKind::Oauth1 {
            // Every request is signed: without the credentials, nothing is sent.
            oauth1::Credentials::of(connector, &self.configuration)?;
        }
        let Some(resource) = connector.find_resource(request.selector) else {
            return Err(RunErrorKind::UnknownResource {
                connector: connector.name().to_owned(),
                selector: request.selector.to_owned(),
                suggestion: engine_spec::suggest::did_you_mean(
                    request.selector,
                    connector.resource_names(),
                )
                .map(str::to_owned),
            }
            .into());
        };
        if resource.kind().is_never_executed() {
            return Err(RunError::from(RunErrorKind::NeverExecuted {
                resource: resource.display_name(),
                kind: resource.kind().label().to_owned(),
            })
            .at(&field_of(resource, "type")));
        }
        self.refuse_if_strict(resource)?;
        // `ON DELETE` (run by `engine instances delete`) is called as an API resource is: with
        // the instance's authentication, refreshed first when stale.
        if !resource.kind().is_api() && resource.kind() != ResourceType::OnDelete {
            return Box::pin(self.run_lifecycle_directly(resource, request.inputs)).await;
        }
        let bound = request
            .selector
            .split_once(':')
            .filter(|_| resource.name() != Some(request.selector))
            .map(|(_, path)| resource.bind_path(path))
            .unwrap_or_default();
        // Bad caller inputs are found before anything is sent, the refresh included. (In a block:
        // what is not kept across the awaits below stays out of this future.)
        let (sent, asked) = {
            let (sent, asked, unconverted) = crate::pagination::read_page(
                connector,
                resource,
                &self.configuration,
                request.inputs,
            );
            if let Some(warning) = unconverted {
                self.observer.event(&Event::NotExecuted(warning.clone()));
                if self.engine.strict {
                    return Err(RunError::from(RunErrorKind::NotFaithful {
                        resource: resource.display_name(),
                        count: 1,
                    })
                    .at(&warning.location));
                }
            }
            (sent, asked)
        };
        let mut checked = Some(self.check_inputs(resource, &sent, &bound)?);
        // Without a refresh the configuration is unchanged: that request is the one to send.
        if self.ensure_fresh().await? {
            checked = None;
        }
        let mut current = resource;
        let mut previous: Option<Value> = None;
        for _ in 0..=engine_spec::MAX_CHAIN {
            let (inputs, bound_now) = if previous.is_none() {
                (&*sent, bound.as_slice())
            } else {
                (&NO_INPUTS, &[][..])
            };
            let prepared = self.prepared(
                current,
                inputs,
                bound_now,
                previous.as_ref(),
                checked.take(),
            )?;
            let (mut response, extracted) = self
                .call(current, inputs, bound_now, previous.as_ref(), prepared)
                .await?;
            let Some(next) = connector.next_of(current) else {
                let asked = if previous.is_none() {
                    asked
                } else {
                    crate::pagination::Asked::default()
                };
                // The cursor is read from the whole answer, before `rootKey` unwraps it.
                let cursor = crate::pagination::cursor(
                    current,
                    &response,
                    extracted.output(crate::pagination::NEXT_PAGE_HEADER),
                );
                // The last answer's headers, moved, not copied: nothing reads them after this.
                self.last_headers = response.take_headers();
                let (output, outputs) = extracted.into_output(current, response.body)?;
                let (output, next_page) = crate::pagination::paged(
                    connector,
                    current,
                    &self.configuration,
                    cursor,
                    output,
                    &asked,
                );
                self.next_page = next_page;
                self.outputs = outputs;
                return Ok((response.status, output));
            };
            self.previous_headers = exchange::header_pairs(&response);
            previous = Some(response.body.into_value());
            current = next;
        }
        Err(RunErrorKind::ChainTooLong {
            max: engine_spec::MAX_CHAIN,
        }
        .into())
    }

    /// `engine run c.json provisionAuthValidation`: runs a lifecycle resource as the lifecycle
    /// would, with its `nextResource` chain, saving what it saves. `PROVISION AUTH VALIDATION`
    /// runs the whole provisioning: every `PROVISION AUTH VALIDATION` and `ON PROVISION`
    /// resource, in file order.
    async fn run_lifecycle_directly(
        &mut self,
        resource: &'a Resource,
        inputs: &Inputs,
    ) -> Result<(u16, Body), RunError> {
        self.ran.clear();
        let resources = if resource.kind() == ResourceType::ProvisionAuthValidation {
            provisioning(self.connector)
        } else {
            vec![resource]
        };
        let mut answer = None;
        for other in resources {
            let selected = other.index() == resource.index();
            let step = if selected {
                resource_step(self.connector, other, inputs.clone())
            } else {
                resource_step(self.connector, other, Inputs::default())
            };
            let offered = oauth2::offered(other.kind(), &self.configuration, &[]);
            let step = oauth2::offering(step, offered);
            if self.ran.contains(&other.index()) || (!selected && self.skips(&step, None)?) {
                continue;
            }
            let response = self.execute_requested(&step).await?;
            if selected {
                answer = Some(response);
            }
        }
        let Some(response) = answer else {
            return Ok((0, Body::default()));
        };
        let extracted = extract(self.connector, resource, &response)?;
        let (output, outputs) = extracted.into_output(resource, response.body)?;
        self.outputs = outputs;
        Ok((response.status, output))
    }

    /// Refuses to start a strict run that would not do as the platform did: tells each
    /// difference of what the run may execute, then fails. Does nothing for other runs.
    fn refuse_if_strict(&mut self, resource: &Resource) -> Result<(), RunError> {
        if !self.engine.strict {
            return Ok(());
        }
        let found = differences(self.connector, &plan(self.connector, resource));
        if found.is_empty() {
            return Ok(());
        }
        for difference in &found {
            self.observer
                .event(&Event::NotExecuted(difference.diagnostic.clone()));
        }
        Err(RunError::from(RunErrorKind::NotFaithful {
            resource: resource.display_name(),
            count: found.len(),
        })
        .at(&found[0].diagnostic.location))
    }

    /// Tells the observer, once per run, the differences of the connector and of `resource`
    /// (`None`: a token request of the engine's own, which only the connector's apply to).
    fn tell_differences(&mut self, resource: Option<&Resource>) {
        let all = self.connector.not_executed();
        if all.is_empty() {
            return;
        }
        let index = resource.map(Resource::index);
        for difference in differences(self.connector, index.as_slice()) {
            let Some(position) = all.iter().position(|d| std::ptr::eq(d, difference)) else {
                continue;
            };
            if !self.told.contains(&position) {
                self.told.push(position);
                self.observer
                    .event(&Event::NotExecuted(difference.diagnostic.clone()));
            }
        }
    }

    /// True when `step` is a lifecycle resource that does not obtain the token and cannot be
    /// executed faithfully: a `preRequest` hook or converter the engine does not run, or a
    /// request that cannot be built from the instance (an input no lifecycle step has, a path
    /// variable nothing fills). It is skipped with [`Event::LifecycleSkipped`], never sent
    /// half-built; a strict run fails instead.
    ///
    /// A step that obtains the token cannot be left out: when it cannot be executed faithfully
    /// (a `preRequest` hook whose script the export lacks, a converter the engine does not
    /// run), the run is refused before it is sent.
    fn skips(&self, step: &Step<'_>, previous: Option<&Value>) -> Result<bool, RunError> {
        let Step::Resource {
            resource,
            inputs,
            obtains_token,
            token_response,
            ..
        } = step
        else {
            return Ok(false);
        };
        let unfaithful = of_resource(self.connector, resource).find(|d| changes_the_request(d));
        if *obtains_token || *token_response {
            return match unfaithful {
                Some(difference) => Err(RunError::from(RunErrorKind::TokenStepNotFaithful {
                    resource: resource.display_name(),
                    reason: difference.diagnostic.message.clone(),
                })
                .at(resource.location())),
                None => Ok(false),
            };
        }
        let reason = match unfaithful {
            Some(difference) => Some(difference.diagnostic.message.clone()),
            None => self
                .build_with(resource, inputs, &[], previous, true, &Recorder::default())
                .err()
                .map(|error| error.to_string()),
        };
        let Some(reason) = reason else {
            return Ok(false);
        };
        if self.engine.strict {
            return Err(RunError::from(RunErrorKind::NotFaithful {
                resource: resource.display_name(),
                count: 1,
            })
            .at(resource.location()));
        }
        self.observer.event(&Event::LifecycleSkipped {
            resource: resource.display_name(),
            reason,
            location: resource.location().clone(),
        });
        Ok(true)
    }

    /// True when `error` is a `preRequest` hook of `step` that threw, `step` being a lifecycle
    /// resource that does not obtain the token (a webhook renewal in `ON REFRESH`): nothing was
    /// sent, so it is skipped with [`Event::LifecycleSkipped`] as [`Run::skips`] does, and the
    /// token the refresh obtained is kept. A strict run fails instead.
    fn skips_failed_hook(&self, step: &Step<'_>, error: &RunError) -> bool {
        let Step::Resource {
            resource,
            obtains_token: false,
            token_response: false,
            ..
        } = step
        else {
            return false;
        };
        if self.engine.strict || !exchange::threw_before_sending(error) {
            return false;
        }
        self.observer.event(&Event::LifecycleSkipped {
            resource: resource.display_name(),
            reason: error.to_string(),
            location: resource.location().clone(),
        });
        true
    }

    /// Executes a lifecycle step the caller asked for, and reports it
    /// ([`RefreshReason::Requested`]).
    pub(crate) async fn execute_requested(
        &mut self,
        step: &Step<'_>,
    ) -> Result<VendorResponse, RunError> {
        let started = Instant::now();
        let old_token = self.current_token();
        let result = self.execute(step).await;
        let status = result.as_ref().map(|response| response.status);
        self.report_requested(step.name(), started, old_token, status);
        result
    }

    /// The fingerprint of the instance's token now, for a [`RefreshReport`].
    pub(crate) fn current_token(&self) -> Option<String> {
        self.token_fingerprint_in(&self.configuration.to_map())
    }

    /// Reports a lifecycle step run at the caller's request (an exchange of a sign-in) that
    /// started at `started` with the token `old_token`: `result` is the status its request was
    /// answered with, or its error ([`Event::RefreshFinished`]).
    pub(crate) fn report_requested(
        &self,
        by: String,
        started: Instant,
        old_token: Option<String>,
        result: Result<u16, &RunError>,
    ) {
        self.observer.event(&Event::RefreshFinished(RefreshReport {
            reason: RefreshReason::Requested,
            by,
            status: match result {
                Ok(status) => Some(status),
                Err(error) => status_of(error),
            },
            elapsed: started.elapsed(),
            error: result
                .err()
                .map(|error| self.redactor.redact(&error.to_string())),
            response: result.err().and_then(response_of),
            retry: false,
            old_token,
            new_token: result.ok().and_then(|_| self.current_token()),
        }));
    }

    /// Step 2 of the cycle: makes sure the token is fresh before an API call. True when it took
    /// the refresh path (the state may have changed).
    pub(crate) async fn ensure_fresh(&mut self) -> Result<bool, RunError> {
        let now_ms = self.judged_at();
        let freshness = if self.configuration.pending().is_empty()
            && self.configuration.is_based_on(&self.started_from)
        {
            self.expiry.judge(now_ms)
        } else {
            self.scheme
                .check_fresh(self.connector, &self.configuration, now_ms)
        };
        match freshness {
            Freshness::Fresh(until_ms) => {
                self.observer.event(&Event::Fresh { until_ms });
                Ok(false)
            }
            // Boxed, as the refresh after a rejection: the futures of the usual path (a fresh
            // token) do not carry a refresh's state, which `engine serve` copies with them.
            Freshness::Stale(reason) => Box::pin(self.refresh(reason, Recheck::Freshness))
                .await
                .map(|()| true),
        }
    }

    /// Refreshes under the in-process single-flight and the store's lock, unless the re-read
    /// state shows that another task or process already did (see [`Recheck`]).
    ///
    /// An instance cooling down after failed refreshes ([`Schedule::cooling_down`]) fails at
    /// once with [`RunErrorKind::CoolingDown`], and one whose refreshes the vendor rejected until
    /// it was marked `needs-reauth` with [`RunErrorKind::NeedsReauth`]: nothing is sent, no lock
    /// is waited for. (Signing in again, new credentials, or the caller running a lifecycle
    /// resource itself is what clears the mark; none of them comes through here.)
    async fn refresh(&mut self, reason: RefreshReason, recheck: Recheck) -> Result<(), RunError> {
        let schedule = Schedule::read(self.configuration.stored());
        if schedule.status == ScheduleStatus::NeedsReauth {
            return Err(RunErrorKind::NeedsReauth {
                instance: self.instance.to_owned(),
                rejections: schedule.consecutive_failures,
            }
            .into());
        }
        if let Some(retry_in_ms) = schedule.cooling_down(self.engine.now_ms()) {
            return Err(RunErrorKind::CoolingDown {
                instance: self.instance.to_owned(),
                retry_in_ms,
            }
            .into());
        }
        let flight = self.engine.flights.of(self.store.identity(self.instance));
        let waiting_since = self.engine.now_ms();
        let _in_process = flight.lock().await;
        let mut lock = self.lock_instance().await?;
        self.not_counting_since(waiting_since);
        let read = lock.load().await?;
        self.redactor.learn_state(self.connector, &read.state);
        self.rebase(Arc::clone(&read.state));
        let done_elsewhere = match &recheck {
            Recheck::Marker(marker) => self.scheme.marker(&self.configuration) != *marker,
            Recheck::Freshness => matches!(
                self.scheme
                    .check_fresh(self.connector, &self.configuration, self.judged_at()),
                Freshness::Fresh(_)
            ),
        };
        if done_elsewhere {
            self.observer.event(&Event::RefreshedElsewhere);
            return Ok(());
        }
        let steps = self
            .scheme
            .steps(self.connector, &self.configuration, &reason)?;
        let by = match (self.scheme, steps.first()) {
            (Scheme::Oauth2, _) => "oauth2".to_owned(),
            (_, Some(step)) => step.name(),
            (_, None) => "nothing".to_owned(),
        };
        self.observer.event(&Event::Refreshing {
            by: by.clone(),
            reason: reason.clone(),
        });
        // One report per step; the last step's includes the write. A failed refresh leaves the
        // instance as it was: nothing it saved is kept.
        let before = self.configuration.pending().clone();
        let mut reports = Vec::with_capacity(steps.len());
        let mut old_token = self.token_fingerprint_in(&read.state);
        self.ran.clear();
        for step in &steps {
            if let Step::Resource { resource, .. } = step
                && self.ran.contains(&resource.index())
            {
                continue;
            }
            match self.skips(step, None) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    self.configuration.restore_pending(before);
                    return Err(error);
                }
            }
            let started = Instant::now();
            let result = self.execute(step).await;
            if let Err(error) = &result
                && self.skips_failed_hook(step, error)
            {
                continue;
            }
            let mut report = RefreshReport {
                reason: reason.clone(),
                by: step.name(),
                status: None,
                elapsed: started.elapsed(),
                error: None,
                response: None,
                retry: false,
                old_token: old_token.clone(),
                new_token: None,
            };
            match result {
                Ok(response) => {
                    report.status = Some(response.status);
                    let mut now = State::clone(&read.state);
                    now.extend(self.configuration.pending().clone());
                    report.new_token = self.token_fingerprint_in(&now);
                    old_token.clone_from(&report.new_token);
                    reports.push(report);
                }
                Err(error) => {
                    self.configuration.restore_pending(before);
                    report.status = status_of(&error);
                    report.error = Some(self.redactor.redact(&error.to_string()));
                    report.response = response_of(&error);
                    reports.push(report);
                    for report in reports {
                        self.observer.event(&Event::RefreshFinished(report));
                    }
                    return Err(error);
                }
            }
        }
        self.mark_provisioned(&steps);
        let started = Instant::now();
        let written = self
            .write_under(&mut *lock, read.version, &read.state, true)
            .await;
        if let Some(last) = reports.last_mut() {
            last.elapsed += started.elapsed();
            if let Err(error) = &written {
                last.error = Some(self.redactor.redact(&error.to_string()));
                last.new_token = None;
            }
        }
        for report in reports {
            self.observer.event(&Event::RefreshFinished(report));
        }
        written
    }

    /// Sets `authentication.time` once `steps` provisioned an instance whose steps did not set
    /// it (Basic, OAuth2, an `ON PROVISION` that saves nothing): provisioning runs once.
    fn mark_provisioned(&mut self, steps: &[Step<'_>]) {
        let provisioned = steps.iter().any(|step| {
            matches!(step, Step::Resource { resource, .. } if matches!(
                resource.kind(),
                ResourceType::ProvisionAuthValidation | ResourceType::OnProvision
            ))
        });
        if provisioned
            && self
                .configuration
                .get(PROVISIONED)
                .and_then(crate::value::text_of)
                .is_none()
        {
            let mut marker = State::new();
            marker.insert(
                PROVISIONED.to_owned(),
                Value::String(self.engine.now_ms().to_string()),
            );
            self.save(&marker);
        }
    }

    /// The [`fingerprint`](crate::fingerprint) of the access token in `state`
    /// ([`Run::token_key`]).
    fn token_fingerprint_in(&self, state: &State) -> Option<String> {
        Self::token_fingerprint(state, &self.token_key(state.keys()))
    }

    /// The key holding the access token among `keys`: a secret key with `access` in its name,
    /// else one with `token` (not a refresh token), else `oauth.user.token`.
    fn token_key<'k>(&self, keys: impl Iterator<Item = &'k String>) -> String {
        let secret: Vec<&String> = keys
            .filter(|key| self.connector.is_secret_key(key))
            .collect();
        secret
            .iter()
            .find(|key| key.contains("access"))
            .or_else(|| {
                secret
                    .iter()
                    .find(|key| key.contains("token") && !key.contains("refresh"))
            })
            .map_or_else(|| "oauth.user.token".to_owned(), |key| (*key).clone())
    }

    /// The fingerprint of the value of `key` in `state`, when it holds a token.
    fn token_fingerprint(state: &State, key: &str) -> Option<String> {
        state
            .get(key)
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .map(crate::observer::fingerprint)
    }

    /// Writes the pending values over `stored` (read at `version` under `lock`): a
    /// compare-and-swap. A conflict means another writer got there first. When it changed none
    /// of the keys this run writes (a rekey, the failure count, the status: writers that take the
    /// lock, or an older engine's that did not), this run's values are merged into the newer state
    /// and written again: a new refresh token is never dropped for a newer version alone. When it
    /// wrote those keys too (a store whose lock this run lost, and another process refreshed), the
    /// newer stored tokens win: this run re-reads them and goes on with them.
    ///
    /// The written state carries its schedule ([`Run::schedule`]); `refreshed` (the write of a
    /// successful refresh) clears the failure state.
    async fn write_under(
        &mut self,
        lock: &mut dyn InstanceLock,
        version: u64,
        stored: &State,
        refreshed: bool,
    ) -> Result<(), RunError> {
        if self.configuration.pending().is_empty() {
            return Ok(());
        }
        let pending = self.configuration.take_pending();
        let keys: Vec<String> = pending.keys().cloned().collect();
        let (mut version, mut base) = (version, stored.clone());
        let mut attempts = 0;
        loop {
            let mut state = base.clone();
            state.extend(pending.clone());
            // A successful refresh clears the failure state it read; a newer one another
            // writer left meanwhile is theirs to clear.
            if refreshed && base.get(SCHEDULE_KEY) == stored.get(SCHEDULE_KEY) {
                Schedule::read(&state).cleared().put(&mut state);
            }
            self.schedule(&mut state);
            let Err(error) = lock.write(state.clone(), version).await else {
                self.redactor.learn_state(self.connector, &state);
                self.rebase(Arc::new(state));
                self.observer.event(&Event::Saved { keys });
                return Ok(());
            };
            attempts += 1;
            if !matches!(error.kind(), StoreErrorKind::Conflict { .. }) || attempts == 10 {
                return Err(error.into());
            }
            let newer = lock.load().await?;
            if keys
                .iter()
                .any(|key| newer.state.get(key) != stored.get(key))
            {
                self.redactor.learn_state(self.connector, &newer.state);
                self.rebase(newer.state);
                self.observer.event(&Event::RefreshedElsewhere);
                return Ok(());
            }
            version = newer.version;
            base.clone_from(&newer.state);
        }
    }

    /// Puts the refresh schedule of `state` into it ([`crate::schedule_of`]): every write of the
    /// engine carries the schedule of what it writes, the failure state kept as stored.
    fn schedule(&self, state: &mut State) {
        let previous = Schedule::read(state);
        crate::schedule_of(self.connector, self.instance, state, &previous).put(state);
    }

    /// Writes the stored state's schedule when it is missing (an instance imported, or written
    /// before schedules) or no longer what the state says (a token written by another writer):
    /// lock, re-read, compute, write with the version read. A write that meets a newer version
    /// leaves it to that writer, which wrote its own schedule.
    pub(crate) async fn persist_schedule(&mut self) -> Result<(), RunError> {
        let stored = self.configuration.stored();
        let mut scheduled = stored.clone();
        self.schedule(&mut scheduled);
        if stored.get(SCHEDULE_KEY) == scheduled.get(SCHEDULE_KEY) {
            return Ok(());
        }
        let mut lock = self.lock_instance().await?;
        let read = lock.load().await?;
        let mut state = State::clone(&read.state);
        self.schedule(&mut state);
        if read.state.get(SCHEDULE_KEY) == state.get(SCHEDULE_KEY) {
            return Ok(());
        }
        match lock.write(state.clone(), read.version).await {
            Ok(_) => {
                self.rebase(Arc::new(state));
                Ok(())
            }
            Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes the pending values: lock, re-read, merge (keys this run did not touch keep their
    /// stored value), write with the version read.
    pub(crate) async fn persist_pending(&mut self) -> Result<(), RunError> {
        if self.configuration.pending().is_empty() {
            return Ok(());
        }
        let mut lock = self.lock_instance().await?;
        let read = lock.load().await?;
        self.write_under(&mut *lock, read.version, &read.state, false)
            .await
    }

    /// Moves the run's deadline by the time since `since_ms`: waiting for another task's or
    /// process's refresh (the in-process flight, the store's lock) is bounded by the lock
    /// timeout, not by the run's.
    fn not_counting_since(&mut self, since_ms: u64) {
        let waited = self.engine.now_ms().saturating_sub(since_ms);
        self.deadline.at_ms = self.deadline.at_ms.saturating_add(waited);
    }

    /// Takes the store's lock of the instance; when another holds it, says so and waits at most
    /// the engine's lock timeout.
    async fn lock_instance(&self) -> Result<Box<dyn InstanceLock>, RunError> {
        match self.store.lock(self.instance, Some(Duration::ZERO)).await {
            Ok(lock) => return Ok(lock),
            Err(error) if !matches!(error.kind(), StoreErrorKind::LockTimeout { .. }) => {
                return Err(error.into());
            }
            Err(_) => {}
        }
        self.observer.event(&Event::WaitingForLock {
            instance: self.store.identity(self.instance),
            timeout: self.engine.lock_timeout,
        });
        Ok(self
            .store
            .lock(self.instance, self.engine.lock_timeout)
            .await?)
    }

    /// The request [`Run::call`] sends first: the `checked` one built from the same state, or
    /// one built now.
    fn prepared(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        checked: Option<Checked>,
    ) -> Result<PreparedRequest, RunError> {
        self.tell_differences(Some(resource));
        Ok(match checked {
            Some(checked) => checked.replay(self.observer),
            None => self.prepare(resource, inputs, bound, previous, true)?,
        })
    }

    /// Sends `prepared` (retrying transient failures) and handles a token rejection by
    /// refreshing once and building and sending it once more.
    async fn call(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        prepared: PreparedRequest,
    ) -> Result<(VendorResponse, Extracted), RunError> {
        self.learn_sent(&prepared);
        let (prepared, mut response) = self
            .send_hooked(resource, inputs, bound, previous, prepared, false)
            .await?;
        let rejected = |response: &VendorResponse| {
            self.connector
                .session()
                .refresh_on_status()
                .contains(&response.status)
        };
        if rejected(&response) && self.scheme.obtains_tokens() {
            // The configuration has not changed since the request was built: its marker is the
            // one of the token the vendor rejected.
            let marker = self.scheme.marker(&self.configuration);
            Box::pin(self.refresh(
                RefreshReason::Rejected {
                    status: response.status,
                },
                Recheck::Marker(marker),
            ))
            .await?;
            let started = Instant::now();
            let prepared = self.prepare(resource, inputs, bound, previous, true)?;
            self.learn_sent(&prepared);
            let retried = self
                .send_hooked(resource, inputs, bound, previous, prepared, false)
                .await
                .map(|(_, response)| response);
            self.report_retry(resource, &retried, started.elapsed(), response.status);
            response = retried?;
            if rejected(&response) {
                return Err(RunErrorKind::TokenRejected {
                    resource: resource.display_name(),
                    status: response.status,
                }
                .into());
            }
        }
        if !response.is_success() {
            return Err(RunError::from(RunErrorKind::VendorStatus {
                resource: resource.display_name(),
                status: response.status,
                url: prepared.display_url(&self.redactor),
                problem: response
                    .problem()
                    .map(|problem| self.redactor.redact(&problem)),
                body: self.redactor.redact(&response.body_text()),
                headers: response
                    .headers()
                    .map(|(name, value)| (name.to_owned(), self.redactor.redact(value)))
                    .collect(),
            })
            .at(&vendor_path_of(resource)));
        }
        let extracted = extract(self.connector, resource, &response)?;
        self.tell_missing(resource, &extracted.missing, false);
        self.save(&extracted.saved);
        Ok((response, extracted))
    }

    /// Reports the call retried after the vendor rejected its token with `rejected_with`: its
    /// status, and the vendor's body when it failed again.
    fn report_retry(
        &self,
        resource: &Resource,
        retried: &Result<VendorResponse, RunError>,
        elapsed: Duration,
        rejected_with: u16,
    ) {
        let (status, error, response) = match retried {
            Ok(response) if response.is_success() => (Some(response.status), None, None),
            Ok(response) => (
                Some(response.status),
                Some(format!("the vendor answered {} again", response.status)),
                Some(self.redactor.redact(&response.body_text())).filter(|body| !body.is_empty()),
            ),
            Err(error) => (
                status_of(error),
                Some(self.redactor.redact(&error.to_string())),
                response_of(error),
            ),
        };
        self.observer.event(&Event::RefreshFinished(RefreshReport {
            reason: RefreshReason::Rejected {
                status: rejected_with,
            },
            by: resource.display_name(),
            status,
            elapsed,
            error,
            response,
            retry: true,
            old_token: None,
            new_token: self.token_fingerprint_in(&self.configuration.to_map()),
        }));
    }

    /// Learns the values `request` carries made from secrets ([`PreparedRequest::secret_values`]),
    /// before it is sent: whatever comes back masks them.
    fn learn_sent(&mut self, request: &PreparedRequest) {
        request.for_each_secret_value(|value| self.redactor.learn(value));
    }

    /// Tells the observer each response parameter of `resource` that found nothing.
    fn tell_missing(&self, resource: &Resource, missing: &[(String, String)], lifecycle: bool) {
        for (key, path) in missing {
            self.observer.event(&Event::NotFound {
                key: key.clone(),
                path: path.clone(),
                resource: resource.display_name(),
                lifecycle,
            });
        }
    }

    /// Records values a response saved, learning them as secrets (tokens) first.
    pub(crate) fn save(&mut self, saved: &State) {
        self.configuration.save(saved);
        self.redactor.learn_state(self.connector, saved);
        if self.origins.depends_on(saved.keys()) {
            self.decide_origins();
        }
    }

    /// Bases the configuration on a state just read from or written to the store, and decides
    /// the origins again: another writer may have changed `base.url`.
    fn rebase(&mut self, stored: Arc<State>) {
        self.configuration.rebase(stored);
        self.decide_origins();
    }

    /// Decides where the credentials may go from the configuration as it is now.
    fn decide_origins(&mut self) {
        self.origins = Origins::of(self.connector, &self.configuration);
    }

    /// Runs one step of obtaining a token (see [`Run::execute_one`]), then the `nextResource`
    /// chain of a lifecycle resource, each link built with the previous answer and saving what
    /// it saves. A link that cannot be executed faithfully ends the chain ([`Run::skips`]).
    pub(crate) async fn execute(&mut self, step: &Step<'_>) -> Result<VendorResponse, RunError> {
        let response = self.execute_one(step, None).await?;
        let Step::Resource { resource, .. } = step else {
            return Ok(response);
        };
        let mut previous = response.body.value().clone();
        self.previous_headers = exchange::header_pairs(&response);
        let mut current: &Resource = resource;
        for _ in 0..engine_spec::MAX_CHAIN {
            let Some(next) = self.connector.next_of(current) else {
                return Ok(response);
            };
            let link = resource_step(self.connector, next, Inputs::default());
            if self.ran.contains(&next.index()) || self.skips(&link, Some(&previous))? {
                return Ok(response);
            }
            let answer = self.execute_one(&link, Some(&previous)).await?;
            self.previous_headers = exchange::header_pairs(&answer);
            previous = answer.body.into_value();
            current = next;
        }
        Err(RunErrorKind::ChainTooLong {
            max: engine_spec::MAX_CHAIN,
        }
        .into())
    }

    /// Runs one step: builds its request from the configuration as it is now (and the answer
    /// before it in a chain, `previous`), sends it as a lifecycle request, and saves what the
    /// scheme reads from the answer (nothing from a recorded answer: nothing was sent).
    async fn execute_one(
        &mut self,
        step: &Step<'_>,
        previous: Option<&Value>,
    ) -> Result<VendorResponse, RunError> {
        // What the resource's hooks see as `request_parameters`: its inputs and what the
        // platform offered the OAuth2 resources.
        let seen;
        let (request, hooked) = match step {
            Step::Resource {
                resource,
                inputs,
                offered,
                obtains_token,
                ..
            } => {
                self.tell_differences(Some(resource));
                self.ran.push(resource.index());
                let request = self.prepare(resource, inputs, &[], previous, !obtains_token)?;
                let mut all = inputs.clone();
                for (name, value) in offered {
                    if !all.params.iter().any(|(known, _)| known == name) {
                        all.params.push((name.clone(), value.clone()));
                    }
                }
                seen = all;
                (request, Some((*resource, &seen)))
            }
            Step::Token(grant) => {
                self.tell_differences(None);
                (
                    oauth2::token_request(
                        self.connector,
                        &self.configuration,
                        grant,
                        &self.redactor,
                    )?,
                    None,
                )
            }
        };
        self.learn_sent(&request);
        let location = hooked.map(|(resource, _)| resource.location());
        let response = self
            .send_lifecycle(request, &step.name(), hooked, previous)
            .await
            .map_err(|error| match location {
                Some(location) => error.at(location),
                None => error,
            })?;
        if !response.is_recorded() {
            let missing = match step {
                Step::Resource { resource, .. } => Some((
                    *resource,
                    extract(self.connector, resource, &response)?.missing,
                )),
                Step::Token(_) => None,
            };
            let saved = Scheme::absorb(self.connector, step, &response, self.engine.now_ms())
                .map_err(|error| match error.kind() {
                    // The vendor's answer, masked, so that the caller sees what came instead.
                    RunErrorKind::NoToken { step, field, .. } => {
                        let error = RunError::from(RunErrorKind::NoToken {
                            step: step.clone(),
                            field: field.clone(),
                            body: self.redactor.redact(&response.body_text()),
                        });
                        match location {
                            Some(location) => error.at(location),
                            None => error,
                        }
                    }
                    _ => error,
                })?;
            if let Some((resource, missing)) = missing {
                self.tell_missing(resource, &missing, true);
            }
            if let Some(adjusted) = saved.adjusted {
                self.observer.event(&Event::LifetimeAdjusted(adjusted));
            }
            self.save(&saved.state);
        }
        Ok(response)
    }

    /// Builds the request of `resource` from the current configuration; an API request
    /// (`authenticate`) also gets the scheme's authentication.
    pub(crate) fn prepare(
        &self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        authenticate: bool,
    ) -> Result<PreparedRequest, RunError> {
        self.build_with(
            resource,
            inputs,
            bound,
            previous,
            authenticate,
            self.observer,
        )
    }

    fn build_with(
        &self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        authenticate: bool,
        observer: &dyn Observer,
    ) -> Result<PreparedRequest, RunError> {
        let mut request = build(
            &BuildContext {
                connector: self.connector,
                configuration: &self.configuration,
                inputs,
                bound_path: bound,
                previous,
                redactor: &self.redactor,
                observer,
                strict: self.engine.strict,
            },
            resource,
        )?;
        if authenticate {
            // Only OAuth2 reads them (whether a parameter maps the token itself).
            let parameters = if matches!(self.scheme, Scheme::Oauth2) {
                request_parameters(self.connector, resource)
            } else {
                Vec::new()
            };
            let before = request.headers.len();
            self.scheme
                .apply(&self.configuration, &parameters, &mut request.headers);
            // `Basic ...`/`Bearer ...`: the scheme word is the engine's, the rest a secret.
            for (name, value) in &request.headers[before..] {
                request.secrets.push(SecretSlot::header(name, value, value));
            }
        }
        Ok(request)
    }

    /// Builds the request of `resource` without sending it or telling the observer, so that a
    /// missing, unknown or unconvertible input fails the run before any request (a refresh
    /// included) is sent. The events the building would report are kept for [`Checked::replay`].
    fn check_inputs(
        &self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
    ) -> Result<Checked, RunError> {
        let recorder = Recorder::default();
        self.build_with(resource, inputs, bound, None, true, &recorder)
            .map(|request| Checked {
                request,
                events: recorder
                    .0
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner),
            })
    }

    /// Sends `request`, built for `resource`, between its JavaScript hooks and the connector's
    /// (docs/hooks.md): the `preRequest` hooks may change what is sent or, with
    /// `continue: false`, answer instead of the vendor; the `postRequest` hooks may change the
    /// answer (not a `--dry-run`'s made-up one). Configuration values they return are saved like
    /// a response's; what they compute from secrets is learnt as a secret. Gives the request as
    /// sent and the answer.
    async fn send_hooked(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        request: PreparedRequest,
        lifecycle: bool,
    ) -> Result<(PreparedRequest, VendorResponse), RunError> {
        if resource.hooks().is_empty() && self.connector.hooks().is_empty() {
            let response = self.send(&request, lifecycle).await?;
            return Ok((request, response));
        }
        // Boxed: the futures of a connector without hooks do not carry the hooks' state.
        Box::pin(async move {
            let previous_headers = previous.map(|_| self.previous_headers.clone());
            let mut site = exchange::Site {
                connector: self.connector,
                tenant: self.store.identity(self.instance),
                resource,
                inputs,
                bound,
                previous,
                previous_headers: previous_headers.as_deref(),
                configuration: self.hook_configuration(),
                now_ms: self.engine.now_ms(),
                budget: self.engine.hook_budget,
            };
            let before = exchange::before(&mut site, request, &self.redactor)?;
            self.absorb_hooks(resource, before.effects);
            let request = before.request;
            self.learn_sent(&request);
            let response = match before.skipped {
                Some(answer) => answer,
                None => self.send(&request, lifecycle).await?,
            };
            if response.is_recorded() {
                return Ok((request, response));
            }
            site.now_ms = self.engine.now_ms();
            let (response, effects) =
                exchange::after(&mut site, &request, response, &self.redactor)?;
            self.absorb_hooks(resource, effects);
            Ok((request, response))
        })
        .await
    }

    /// The configuration hooks see: the instance's values, and `null` for every declared key
    /// without one, as on the platform (exports test `configuration.token === null` to tell a
    /// new instance from one being updated).
    fn hook_configuration(&self) -> State {
        let mut configuration = self.configuration.to_map();
        for property in self.connector.configuration() {
            configuration
                .entry(property.key().to_owned())
                .or_insert(Value::Null);
        }
        configuration
    }

    /// Keeps what hooks gave besides the request and response: their log lines (masked, to the
    /// observer), the values they made from secrets (learnt), the configuration values they
    /// returned (saved; a lifecycle step that saves also sets `authentication.time`).
    fn absorb_hooks(&mut self, resource: &Resource, effects: exchange::Effects) {
        for (input, made) in &effects.derived {
            if self.redactor.finds_secret(input) {
                self.redactor.learn(made);
            }
        }
        let mut saved = effects.saved;
        if !saved.is_empty()
            && matches!(
                resource.kind(),
                ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
            )
            && !saved.contains_key("authentication.time")
        {
            saved.insert(
                "authentication.time".to_owned(),
                Value::String(self.engine.now_ms().to_string()),
            );
        }
        if !saved.is_empty() {
            self.save(&saved);
        }
        for line in effects.logs {
            self.observer.event(&Event::HookLog {
                resource: resource.display_name(),
                line: self.redactor.redact(&line),
            });
        }
    }

    /// Sends `request` through the engine's transport and retry policy; a request of an OAuth
    /// 1.0a connector signed as each attempt goes out (`auth/oauth1.rs`).
    async fn send(
        &self,
        request: &PreparedRequest,
        lifecycle: bool,
    ) -> Result<VendorResponse, RunError> {
        let signer = if self.connector.authentication().kind() == AuthKind::Oauth1 {
            let credentials = oauth1::Credentials::of(self.connector, &self.configuration)?;
            Some(oauth1::Signer::new(credentials))
        } else {
            None
        };
        self.send_signed(request, lifecycle, signer.as_ref()).await
    }

    /// [`Run::send`], each attempt signed by `signer` when there is one.
    async fn send_signed(
        &self,
        request: &PreparedRequest,
        lifecycle: bool,
        signer: Option<&oauth1::Signer>,
    ) -> Result<VendorResponse, RunError> {
        // After the hooks: the URL and credentials as they are to go out (a request an OAuth
        // 1.0a signer signs at each attempt carries its signature).
        self.origins
            .check(request, signer.is_some(), &self.redactor)?;
        let sending = Sending {
            transport: &*self.engine.transport,
            http: self.engine.http.as_deref(),
            policy: &self.engine.policy,
            observer: self.observer,
            redactor: &self.redactor,
            clock: &*self.engine.clock,
            deadline: self.deadline,
            signer,
        };
        send_with_policy(&sending, request, lifecycle).await
    }

    /// Sends one of the OAuth 1.0a sign-in's token requests, signed by `signer`, and gives the
    /// status, the token and its secret it answers, as [`Run::send`] sends, masked by the
    /// redactor from then on.
    ///
    /// Fails when the vendor answers an error status or no token.
    pub(crate) async fn oauth1_token(
        &mut self,
        request: PreparedRequest,
        signer: &oauth1::Signer,
        what: &str,
    ) -> Result<(u16, String, String), RunError> {
        self.learn_sent(&request);
        let response = self.send_signed(&request, true, Some(signer)).await?;
        if response.is_recorded() {
            return Ok((response.status, String::new(), String::new()));
        }
        if !response.is_success() {
            return Err(RunErrorKind::AuthFailed {
                step: format!("oauth1 {what}"),
                status: response.status,
                problem: response
                    .problem()
                    .map(|problem| self.redactor.redact(&problem)),
                body: self.redactor.redact(&response.body_text()),
                retry_after: None,
            }
            .into());
        }
        let (token, secret) = oauth1::token_answer(&response.body_text(), what)?;
        self.redactor.learn(&token);
        self.redactor.learn(&secret);
        Ok((response.status, token, secret))
    }

    /// Sends a lifecycle request (token endpoints, lifecycle resources) with the lifecycle's
    /// retries; an error status is an authentication failure of `step`, with the vendor's error.
    pub(crate) async fn send_lifecycle(
        &mut self,
        request: PreparedRequest,
        step: &str,
        hooked: Option<(&Resource, &Inputs)>,
        previous: Option<&Value>,
    ) -> Result<VendorResponse, RunError> {
        let response = match hooked {
            Some((resource, inputs)) => {
                self.send_hooked(resource, inputs, &[], previous, request, true)
                    .await?
                    .1
            }
            None => self.send(&request, true).await?,
        };
        if response.is_success() {
            return Ok(response);
        }
        Err(RunErrorKind::AuthFailed {
            step: step.to_owned(),
            status: response.status,
            problem: response
                .problem()
                .map(|problem| self.redactor.redact(&problem)),
            body: self.redactor.redact(&response.body_text()),
            retry_after: response.header("retry-after").and_then(|value| {
                crate::transport::parse_retry_after(value, jiff::Timestamp::now())
            }),
        }
        .into())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
