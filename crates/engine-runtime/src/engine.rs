//! [`Engine::run`]: one resource of a connector against one instance, with the whole token
//! lifecycle (docs/token-lifecycle.md):
//!
//! 1. load the instance, apply defaults, refuse to start when required keys are missing;
//! 2. an API resource first makes sure the token is fresh: when it is stale, take the instance
//!    lock, re-read, re-check (another process may have refreshed), refresh, persist atomically,
//!    release;
//! 3. build and send; a status in `session.refreshOnStatus` (401) with the token still the one
//!    the request carried forces one refresh and one retry; never a loop;
//! 4. extract, follow `nextResource`, and persist every saved value before returning.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_spec::kinds::ResourceType;
use engine_spec::{AuthKind, Connector, Protocol, Resource};
use engine_store::{State, StateLock, StateStore, StoreErrorKind};
use serde_json::Value;

use crate::auth;
use crate::clock::{Clock, SystemClock};
use crate::configuration::Configuration;
use crate::extract::{Extracted, extract};
use crate::lifecycle::{Freshness, Lifecycle, check_fresh};
use crate::observer::{Event, Observer, RefreshReason};
use crate::redact::Redactor;
use crate::request::{BuildContext, Inputs, PreparedRequest, build, missing_required};
use crate::run_error::{RunError, RunErrorKind};
use crate::send::{VendorResponse, describe, send};

/// Runs connectors. Build one per process and reuse it: it holds the HTTP connection pool.
#[derive(Clone)]
pub struct Engine {
    pub(crate) client: reqwest::Client,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) max_retry_after: Duration,
}

/// Builds an [`Engine`].
#[must_use]
pub struct EngineBuilder {
    timeout: Duration,
    connect_timeout: Duration,
    clock: Arc<dyn Clock>,
    retries: u32,
    backoff: Duration,
    max_retry_after: Duration,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// Defaults: 30 s total timeout, 10 s connect timeout, the system clock, 2 retries of
    /// transient failures starting at a 200 ms pause, `Retry-After` honoured up to 30 s.
    pub fn new() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            retries: 2,
            backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(30),
        }
    }

    /// The total timeout of one request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The clock the token lifecycle reads.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How many times a transient failure is retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The first pause between retries; it doubles each time.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest `Retry-After` the engine waits for; a longer one fails at once.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Builds the engine.
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn build(self) -> Result<Engine, RunError> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("connector-engine/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| RunErrorKind::Transport {
                url: String::new(),
                message: describe(&error),
            })?;
        Ok(Engine {
            client,
            clock: self.clock,
            retries: self.retries,
            backoff: self.backoff,
            max_retry_after: self.max_retry_after,
        })
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
    /// Build the requests, send nothing.
    pub dry_run: bool,
}

/// What a run gave.
#[derive(Debug)]
pub struct RunOutput {
    /// The last response's status (`None` in a dry run).
    pub status: Option<u16>,
    /// The last response's body after `rootKey`, secrets masked.
    pub body: Value,
    /// In a dry run, the requests the run would send, in order.
    pub planned: Vec<PreparedRequest>,
    /// Masks every secret the run knows of; use it on anything shown to a person.
    pub redactor: Redactor,
}

impl Engine {
    /// An engine with the defaults of [`EngineBuilder::new`].
    ///
    /// Fails when the TLS backend cannot be initialised.
    pub fn new() -> Result<Self, RunError> {
        EngineBuilder::new().build()
    }

    /// Runs `request` against the instance state in `store`, telling `observer` each step.
    ///
    /// Fails with a [`RunError`] whose kind says what to do: invalid input or configuration
    /// (nothing was sent), a vendor error status, failed authentication, a transport failure, or
    /// a state that could not be written. The instance is left as it was by a failed refresh.
    pub async fn run(
        &self,
        request: &RunRequest<'_>,
        store: &dyn StateStore,
        observer: &dyn Observer,
    ) -> Result<RunOutput, RunError> {
        let mut run = Run::start(self, request, store, observer)?;
        let result = run.go(request).await;
        match result {
            Ok((status, body)) => {
                run.persist_pending()?;
                Ok(RunOutput {
                    status,
                    body: redact_json(body, &run.redactor),
                    planned: std::mem::take(&mut run.planned),
                    redactor: run.redactor,
                })
            }
            Err(error) => {
                // Values saved before the failure (a chain's first step) are still kept; a
                // failed refresh never reaches `pending`.
                run.persist_pending()?;
                Err(error)
            }
        }
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
/// a protocol other than HTTP (`jdbc`, `odata`...), and OAuth 1.0a (requests would go out
/// unsigned).
fn refuse_unexecutable(connector: &Connector) -> Result<(), RunError> {
    if let Protocol::NotExecuted(protocol) = connector.protocol() {
        return Err(RunErrorKind::ProtocolNotExecuted {
            connector: connector.name().to_owned(),
            protocol: protocol.clone(),
        }
        .into());
    }
    if connector.authentication().kind() == AuthKind::Oauth1 {
        return Err(RunErrorKind::Oauth1 {
            connector: connector.name().to_owned(),
        }
        .into());
    }
    Ok(())
}

/// `value` with known secrets masked in every string, in place: only a string that holds one is
/// rewritten.
fn redact_json(mut value: Value, redactor: &Redactor) -> Value {
    fn walk(value: &mut Value, redactor: &Redactor) {
        match value {
            Value::String(text) if redactor.finds_secret(text) => *text = redactor.redact(text),
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, redactor)),
            Value::Object(map) => map.values_mut().for_each(|item| walk(item, redactor)),
            _ => {}
        }
    }
    walk(&mut value, redactor);
    value
}

/// How a refresh decides, after taking the lock, that another process already refreshed.
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
    pub(crate) engine: &'a Engine,
    pub(crate) connector: &'a Connector,
    store: &'a dyn StateStore,
    instance: &'a str,
    pub(crate) observer: &'a dyn Observer,
    /// The stored state, the defaults, and the values this run saved that are not persisted
    /// yet. Save with [`Run::save`].
    configuration: Configuration<'a>,
    pub(crate) redactor: Redactor,
    pub(crate) plan_only: bool,
    planned: Vec<PreparedRequest>,
}

impl<'a> Run<'a> {
    fn start(
        engine: &'a Engine,
        request: &RunRequest<'a>,
        store: &'a dyn StateStore,
        observer: &'a dyn Observer,
    ) -> Result<Self, RunError> {
        let run = Self::new(
            engine,
            request.connector,
            store,
            request.instance,
            observer,
            request.dry_run,
        )?;
        let missing = missing_required(run.connector, &run.configuration);
        if !missing.is_empty() {
            return Err(RunErrorKind::MissingConfiguration { missing }.into());
        }
        Ok(run)
    }

    /// A run over the stored state of `instance`, without the required-key check.
    pub(crate) fn new(
        engine: &'a Engine,
        connector: &'a Connector,
        store: &'a dyn StateStore,
        instance: &'a str,
        observer: &'a dyn Observer,
        plan_only: bool,
    ) -> Result<Self, RunError> {
        let state = store.load(instance)?;
        let redactor = Redactor::for_state(connector, &state);
        Ok(Self {
            engine,
            connector,
            store,
            instance,
            observer,
            configuration: Configuration::new(connector, state),
            redactor,
            plan_only,
            planned: Vec::new(),
        })
    }

    /// The effective configuration: defaults, the stored state, then this run's pending values.
    pub(crate) fn configuration(&self) -> &Configuration<'a> {
        &self.configuration
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.engine.clock.now_ms()
    }

    async fn go(&mut self, request: &RunRequest<'_>) -> Result<(Option<u16>, Value), RunError> {
        let connector = self.connector;
        refuse_unexecutable(connector)?;
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
        let bound = request
            .selector
            .split_once(':')
            .filter(|_| resource.name() != Some(request.selector))
            .map(|(_, path)| resource.bind_path(path))
            .unwrap_or_default();
        let mut checked = None;
        if resource.kind().is_api() {
            // Bad caller inputs are found before anything is sent, the refresh included.
            let built = self.check_inputs(resource, request.inputs, &bound)?;
            // Without a refresh the configuration is unchanged: that request is the one to send.
            if !self.ensure_fresh().await? {
                checked = Some(built);
            }
        } else {
            return self.run_lifecycle_directly(resource, request.inputs).await;
        }
        let mut current = resource;
        let mut previous: Option<Value> = None;
        for _ in 0..=engine_spec::MAX_CHAIN {
            let inputs = if previous.is_none() {
                request.inputs
            } else {
                &Inputs::default()
            };
            let bound_now = if previous.is_none() {
                bound.as_slice()
            } else {
                &[]
            };
            let Some((response, extracted)) = self
                .call(
                    current,
                    inputs,
                    bound_now,
                    previous.as_ref(),
                    checked.take(),
                )
                .await?
            else {
                return Ok((None, Value::Null));
            };
            let Some(next) = connector.next_of(current) else {
                let status = Some(response.status);
                return Ok((status, extracted.into_output(current, response.body)));
            };
            previous = Some(response.body);
            current = next;
        }
        Err(RunErrorKind::ChainTooLong {
            max: engine_spec::MAX_CHAIN,
        }
        .into())
    }

    /// `engine run c.json provisionAuthValidation`: runs a lifecycle resource as the lifecycle
    /// would, saving what it saves.
    async fn run_lifecycle_directly(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
    ) -> Result<(Option<u16>, Value), RunError> {
        if self.plan_only {
            self.plan(resource, inputs, None)?;
            return Ok((None, Value::Null));
        }
        let (response, extracted) = self.execute_lifecycle(resource, inputs).await?;
        self.save(&extracted.saved);
        if resource.kind() == ResourceType::ProvisionAuthValidation
            && let Some(on_provision) = self.connector.lifecycle(ResourceType::OnProvision)
        {
            let (_, extracted) = self
                .execute_lifecycle(on_provision, &Inputs::default())
                .await?;
            self.save(&extracted.saved);
        }
        Ok((
            Some(response.status),
            extracted.into_output(resource, response.body),
        ))
    }

    /// Step 2 of the cycle: makes sure the token is fresh before an API call. True when it took
    /// the refresh path (the state may have changed).
    async fn ensure_fresh(&mut self) -> Result<bool, RunError> {
        match check_fresh(self.connector, &self.configuration, self.now_ms()) {
            Freshness::Fresh(until_ms) => {
                self.observer.event(&Event::Fresh { until_ms });
                Ok(false)
            }
            Freshness::Stale(reason) => self
                .refresh(reason, Recheck::Freshness)
                .await
                .map(|()| true),
        }
    }

    /// Refreshes under the instance lock, unless the re-read state shows that another process
    /// already did (see [`Recheck`]).
    async fn refresh(&mut self, reason: RefreshReason, recheck: Recheck) -> Result<(), RunError> {
        let lifecycle = Lifecycle::of(self.connector);
        if self.plan_only {
            self.observer.event(&Event::Refreshing {
                by: auth::step_name(self.connector, lifecycle, &reason),
                reason,
            });
            return auth::plan(self, lifecycle);
        }
        let mut lock = tokio::task::block_in_place(|| self.store.lock(self.instance))?;
        let stored = lock.load()?;
        self.redactor.learn_state(self.connector, &stored);
        self.configuration.rebase(Arc::new(stored));
        let done_elsewhere = match &recheck {
            Recheck::Marker(marker) => lifecycle.marker(&self.configuration) != *marker,
            Recheck::Freshness => matches!(
                check_fresh(self.connector, &self.configuration, self.now_ms()),
                Freshness::Fresh(_)
            ),
        };
        if done_elsewhere {
            self.observer.event(&Event::RefreshedElsewhere);
            return Ok(());
        }
        self.observer.event(&Event::Refreshing {
            by: auth::step_name(self.connector, lifecycle, &reason),
            reason: reason.clone(),
        });
        // A failed refresh leaves the instance as it was: nothing it saved is kept.
        let before = self.configuration.pending().clone();
        if let Err(error) = auth::obtain(self, lifecycle, &reason).await {
            self.configuration.restore_pending(before);
            return Err(error);
        }
        self.persist_with(&mut *lock)
    }

    /// Writes pending values under a lock already held.
    fn persist_with(&mut self, lock: &mut dyn StateLock) -> Result<(), RunError> {
        if self.configuration.pending().is_empty() {
            return Ok(());
        }
        let mut state = match lock.load() {
            Ok(state) => state,
            Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => State::new(),
            Err(error) => return Err(error.into()),
        };
        let pending = self.configuration.take_pending();
        let keys: Vec<String> = pending.keys().cloned().collect();
        state.extend(pending);
        lock.persist(&state)?;
        self.redactor.learn_state(self.connector, &state);
        self.configuration.rebase(Arc::new(state));
        self.observer.event(&Event::Saved { keys });
        Ok(())
    }

    /// Writes pending values: lock, re-read, merge (keys this run did not touch keep their
    /// stored value), write atomically.
    pub(crate) fn persist_pending(&mut self) -> Result<(), RunError> {
        if self.configuration.pending().is_empty() || self.plan_only {
            return Ok(());
        }
        let store = self.store;
        let instance = self.instance;
        let mut lock = tokio::task::block_in_place(|| store.lock(instance))?;
        self.persist_with(&mut *lock)
    }

    /// Builds (or takes the `checked` request built from the same state), sends (retrying
    /// transient failures) and handles a token rejection by refreshing once and retrying once.
    /// `None` in a dry run.
    async fn call(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        checked: Option<Checked>,
    ) -> Result<Option<(VendorResponse, Extracted)>, RunError> {
        self.warn_hooks(resource);
        if self.plan_only {
            let prepared = self.prepare(resource, inputs, bound, previous, true)?;
            self.plan_request(prepared);
            return Ok(None);
        }
        let lifecycle = Lifecycle::of(self.connector);
        let prepared = match checked {
            Some(checked) => checked.replay(self.observer),
            None => self.prepare(resource, inputs, bound, previous, true)?,
        };
        let mut response = self.send_with_retries(&prepared, false).await?;
        let rejected = |response: &VendorResponse| {
            self.connector
                .session()
                .refresh_on_status()
                .contains(&response.status)
        };
        if rejected(&response) && !matches!(lifecycle, Lifecycle::None) {
            // The configuration has not changed since the request was built: its marker is the
            // one of the token the vendor rejected.
            let marker = lifecycle.marker(&self.configuration);
            self.refresh(
                RefreshReason::Rejected {
                    status: response.status,
                },
                Recheck::Marker(marker),
            )
            .await?;
            let prepared = self.prepare(resource, inputs, bound, previous, true)?;
            response = self.send_with_retries(&prepared, false).await?;
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
                url: crate::request::redact_url(&prepared.url, &self.redactor),
                problem: response
                    .problem()
                    .map(|problem| self.redactor.redact(&problem)),
                body: self.redactor.redact(&response.body_text()),
            })
            .at(&vendor_path_of(resource)));
        }
        let extracted = extract(self.connector, resource, &response);
        self.save(&extracted.saved);
        Ok(Some((response, extracted)))
    }

    /// Records values a response saved, learning them as secrets (tokens) first.
    pub(crate) fn save(&mut self, saved: &State) {
        self.configuration.save(saved);
        self.redactor.learn_state(self.connector, saved);
    }

    /// Runs a lifecycle resource (`PROVISION AUTH VALIDATION`, `ON REFRESH`, `ON PROVISION`,
    /// OAuth2 overrides): transient failures retried, an error status is an authentication
    /// failure. Sets `authentication.time` for the resources that obtain tokens.
    pub(crate) async fn execute_lifecycle(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
    ) -> Result<(VendorResponse, Extracted), RunError> {
        let obtains_token = matches!(
            resource.kind(),
            ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
        );
        self.warn_hooks(resource);
        let prepared = self.prepare(resource, inputs, &[], None, !obtains_token)?;
        let response = self
            .send_lifecycle(&prepared, resource.kind().label())
            .await
            .map_err(|error| error.at(resource.location()))?;
        let mut extracted = extract(self.connector, resource, &response);
        if obtains_token {
            extracted.saved.insert(
                "authentication.time".into(),
                Value::String(self.now_ms().to_string()),
            );
        }
        self.redactor.learn_state(self.connector, &extracted.saved);
        Ok((response, extracted))
    }

    pub(crate) fn prepare(
        &self,
        resource: &Resource,
        inputs: &Inputs,
        bound: &[(String, String)],
        previous: Option<&Value>,
        authenticate: bool,
    ) -> Result<PreparedRequest, RunError> {
        build(
            &BuildContext {
                connector: self.connector,
                configuration: &self.configuration,
                inputs,
                bound_path: bound,
                previous,
                authenticate,
                redactor: &self.redactor,
                observer: self.observer,
            },
            resource,
        )
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
        build(
            &BuildContext {
                connector: self.connector,
                configuration: &self.configuration,
                inputs,
                bound_path: bound,
                previous: None,
                authenticate: true,
                redactor: &self.redactor,
                observer: &recorder,
            },
            resource,
        )
        .map(|request| Checked {
            request,
            events: recorder
                .0
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
        })
    }

    /// Tells the observer when a `preRequest` hook of `resource` would have added headers or
    /// authentication: the engine runs no JavaScript.
    fn warn_hooks(&self, resource: &Resource) {
        if resource.hooks_may_authenticate() {
            self.observer.event(&Event::HookNotExecuted {
                resource: resource.display_name(),
            });
        }
    }

    /// Adds the request `resource` would send to the dry-run plan.
    pub(crate) fn plan(
        &mut self,
        resource: &Resource,
        inputs: &Inputs,
        previous: Option<&Value>,
    ) -> Result<(), RunError> {
        let authenticate = !matches!(
            resource.kind(),
            ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
        );
        self.warn_hooks(resource);
        let prepared = self.prepare(resource, inputs, &[], previous, authenticate)?;
        self.planned.push(prepared);
        Ok(())
    }

    /// Adds an already built request to the dry-run plan.
    pub(crate) fn plan_request(&mut self, request: PreparedRequest) {
        self.planned.push(request);
    }

    /// Sends a lifecycle request (token endpoints, lifecycle resources) with the lifecycle's
    /// retries; an error status is an authentication failure of `step`, with the vendor's error.
    pub(crate) async fn send_lifecycle(
        &self,
        request: &PreparedRequest,
        step: &str,
    ) -> Result<VendorResponse, RunError> {
        let response = self.send_with_retries(request, true).await?;
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
        }
        .into())
    }

    /// Sends with bounded retries: connection failures always; with `lifecycle`, also 429 and
    /// 5xx, honouring `Retry-After`.
    pub(crate) async fn send_with_retries(
        &self,
        request: &PreparedRequest,
        lifecycle: bool,
    ) -> Result<VendorResponse, RunError> {
        let mut attempt = 1;
        let mut pause = self.engine.backoff;
        loop {
            if self.observer.enabled() {
                self.observer.event(&Event::Sending {
                    resource: request.resource.clone(),
                    method: request.method.clone(),
                    url: crate::request::redact_url(&request.url, &self.redactor),
                });
            }
            let mut wait = pause;
            // Timed only for an observer that listens: reading the clock is not free.
            let started = self.observer.enabled().then(Instant::now);
            let cause = match send(&self.engine.client, request).await {
                Ok(response) => {
                    if let Some(started) = started {
                        self.observer.event(&Event::Received {
                            status: response.status,
                            elapsed: started.elapsed(),
                        });
                    }
                    let transient = lifecycle && (response.status == 429 || response.status >= 500);
                    if !transient || attempt > self.engine.retries {
                        return Ok(response);
                    }
                    if let Some(after) = response
                        .header("retry-after")
                        .and_then(|value| value.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                    {
                        if after > self.engine.max_retry_after {
                            return Ok(response);
                        }
                        wait = after;
                    }
                    format!("status {}", response.status)
                }
                Err(error) => {
                    let retryable = error.is_connect() || (lifecycle && error.is_timeout());
                    if !retryable || attempt > self.engine.retries {
                        return Err(RunErrorKind::Transport {
                            url: crate::request::redact_url(&request.url, &self.redactor),
                            message: self.redactor.redact(&describe(&error)),
                        }
                        .into());
                    }
                    self.redactor.redact(&describe(&error))
                }
            };
            attempt += 1;
            self.observer.event(&Event::Retrying {
                attempt,
                after: wait,
                cause,
            });
            tokio::time::sleep(wait).await;
            pause *= 2;
        }
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
