//! Signing an instance in through a browser: OAuth2's authorization code grant, with PKCE S256
//! when the connector enables it. For every front end: whether a connector signs in so
//! ([`check_code_flow`]), and the exchange of the code that comes back, recorded in the
//! instance's history, its `needs-reauth` mark cleared ([`complete`]).
//!
//! For a service, whose callback may reach any of its processes, the flow waits in the store
//! between the two halves: [`begin`] answers the vendor's authorization URL and keeps a record
//! of the flow (10 minutes, [`STATE_LIFETIME`]); [`take`] consumes it when the callback
//! arrives, once. The record keeps no secret in clear: it is found by the SHA-256 of the
//! `state` (the state itself is not stored), and the PKCE verifier is not stored either but
//! derived from the state under a key derived from `ENGINE_SECRET_KEY` ([`FlowKeys`]), so that
//! reading the store gives nothing to finish a sign-in with.
//!
//! OAuth 1.0a has no `state`: the vendor's request token is the flow's, and the callback brings
//! it back as `oauth_token` with the `oauth_verifier`. The record is found by the SHA-256 of the
//! request token, and keeps the request token's secret (which signs the exchange) encrypted
//! with `ENGINE_SECRET_KEY`, bound to the record.

use std::fmt::Write as _;
use std::time::Duration;

use engine_runtime::{
    AuthorizationFlow, AuthorizationRequest, Engine, Observer, RunError, RunErrorKind,
};
use engine_spec::Connector;
use engine_spec::kinds::Grant;
use engine_store::InstanceStore;
use engine_stores_sql::SecretKey;
use hmac::Mac as _;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::error::Warning;
use crate::history::{self, Trigger};
use crate::keys::KeyMac;
use crate::status::DEFAULT_KEEP;
use crate::{Error, ErrorKind, Recorder, SecretKeys};

/// The namespace of the records of flows under way, by the SHA-256 of their `state`.
pub const STATES_NAMESPACE: &str = "oauth-states";

/// How long a flow waits for its callback.
pub const STATE_LIFETIME: Duration = Duration::from_mins(10);

/// What [`SecretKeys`]' keys are told the verifier key is for.
const VERIFIER_PURPOSE: &str = "oauth-pkce";

/// Checks that `connector` signs in through a browser: built-in OAuth2 with the
/// `authorization_code` grant, or OAuth 1.0a. `name` names it in the error.
///
/// Fails with [`ErrorKind::NoBrowserSignIn`], which says how it authenticates instead.
pub fn check_code_flow(connector: &Connector, name: &str) -> Result<(), Error> {
    let authentication = connector.authentication();
    let signs_in = match authentication.kind() {
        engine_spec::AuthKind::Oauth2 => authentication.grant() == Grant::AuthorizationCode,
        engine_spec::AuthKind::Oauth1 => true,
        _ => false,
    };
    if signs_in {
        return Ok(());
    }
    let scheme = match authentication.kind() {
        engine_spec::AuthKind::Oauth2 => {
            format!("OAuth2 with the `{}` grant", authentication.grant())
        }
        engine_spec::AuthKind::Custom => "`custom` (its own lifecycle resources)".to_owned(),
        engine_spec::AuthKind::Basic => "`basic`".to_owned(),
        engine_spec::AuthKind::ApiKey => "`apiKey`".to_owned(),
        engine_spec::AuthKind::None => "`none`".to_owned(),
        engine_spec::AuthKind::Oauth1 => "`oauth1`".to_owned(),
    };
    Err(ErrorKind::NoBrowserSignIn {
        connector: name.to_owned(),
        scheme,
    }
    .into())
}

/// Exchanges the `code` the browser brought back for `request` and writes the tokens into
/// `instance` (under its lock, with the version read: the runtime's write), provisioning it
/// when it never was; records the exchange in the instance's history (trigger `sign-in`) and,
/// once signed in, clears its rejection count and `needs-reauth` mark and publishes that it
/// recovered when it had failed ([`crate::events`]). Returns what could not be written beside,
/// as warnings.
///
/// Fails with the run's error: the exchange failed (the vendor's error, masked), or the tokens
/// could not be written.
pub async fn complete(
    engine: &Engine,
    connector: &Connector,
    store: &dyn InstanceStore,
    instance: &str,
    observer: &dyn Observer,
    request: &AuthorizationRequest,
    code: &str,
) -> Result<Vec<Warning>, RunError> {
    // Read before the exchange's own entry becomes the history's last word.
    let had_failed = crate::events::failed_before(store, instance).await;
    let recorder = Recorder::new(observer);
    let result = engine
        .complete_authorization(connector, store, instance, &recorder, request, code)
        .await;
    let mut warnings = history::record(
        store,
        instance,
        &recorder.take(),
        recorder.superseded(),
        Trigger::SignIn,
        DEFAULT_KEEP,
    )
    .await;
    result?;
    match cleared(connector, store, instance).await {
        Ok(before) => {
            if let Some(from) = before.or(had_failed)
                && let Err(warning) =
                    crate::events::publish_recovered(store, instance, from, "sign-in", false).await
            {
                warnings.push(warning);
            }
        }
        Err(error) => warnings.push(Warning::FailuresKept {
            instance: instance.to_owned(),
            error,
        }),
    }
    Ok(warnings)
}

/// Clears the rejection count and `needs-reauth` mark of `instance` after a sign-in, with the
/// next refresh computed from the new token (a cleared schedule alone is due at once, and a
/// scheduler would refresh the token just obtained). Returns the status it cleared; `None`
/// when there was nothing to clear.
async fn cleared(
    connector: &Connector,
    store: &dyn InstanceStore,
    instance: &str,
) -> Result<Option<engine_store::ScheduleStatus>, engine_store::StoreError> {
    let read = store.load(instance).await?;
    if !engine_store::Schedule::read(&read.state).has_failures() {
        return Ok(None);
    }
    let mut before = None;
    let quiet = || {};
    crate::update(store, instance, &quiet, |state| {
        let schedule = engine_store::Schedule::read(state);
        if !schedule.has_failures() {
            return Ok(false);
        }
        before = Some(schedule.status);
        engine_runtime::schedule_of(connector, instance, state, &schedule.cleared()).put(state);
        Ok(true)
    })
    .await?;
    Ok(before)
}

/// The keys PKCE verifiers are derived under: one per `ENGINE_SECRET_KEY` key (the current one
/// and the old ones), each derived from it for this use only (as API keys' MACs are, under
/// another purpose); and the keys themselves, that encrypt an OAuth 1.0a request token's secret
/// while its flow waits.
#[derive(Clone)]
pub struct FlowKeys {
    macs: KeyMac,
    /// The current key first.
    secrets: Vec<SecretKey>,
}

/// Names the keys by id, never their bytes.
impl std::fmt::Debug for FlowKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_tuple("FlowKeys").field(&self.macs).finish()
    }
}

impl FlowKeys {
    /// The keys derived from `keys` (the environment's, [`SecretKeys::from_env`]).
    ///
    /// Fails with [`ErrorKind::NoKeySecret`] without a key.
    pub fn new(keys: Option<&SecretKeys>) -> Result<Self, Error> {
        let macs = KeyMac::for_purpose(keys, VERIFIER_PURPOSE)?;
        let secrets = keys
            .map(|keys| {
                std::iter::once(&keys.current)
                    .chain(&keys.old)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self { macs, secrets })
    }

    /// `secret` encrypted with the current key, bound to the record `id` of a flow of
    /// `instance`.
    fn seal(&self, secret: &str, id: &str, instance: &str) -> Result<String, Error> {
        let current = self.secrets.first().ok_or(ErrorKind::NoKeySecret)?;
        current
            .seal(secret, &sealing_context(id))
            .map_err(|message| {
                engine_store::StoreError::from(engine_store::StoreErrorKind::Secret {
                    instance: instance.to_owned(),
                    message: format!("cannot encrypt the request token's secret: {message}"),
                })
                .into()
            })
    }

    /// The secret `sealed` holds for the record `id`; `None` when no key given opens it.
    fn open(&self, sealed: &str, id: &str) -> Option<String> {
        let key_id = engine_stores_sql::sealed_with(sealed)?;
        let key = self.secrets.iter().find(|key| key.id() == key_id)?;
        key.open(sealed, &sealing_context(id)).ok()
    }

    /// The verifier of `state` under the key `id` (64 hex digits, a valid PKCE verifier);
    /// `None` without that key.
    fn verifier(&self, id: &str, state: &str) -> Option<String> {
        let mac = self.macs.mac_of(id, state)?;
        Some(to_hex(&mac.finalize().into_bytes()))
    }

    /// The id of the current key.
    fn current(&self) -> &str {
        self.macs.current()
    }
}

/// A sign-in to start through a service: the instance, its connector, and the callback the
/// vendor sends the browser back to.
pub struct Start<'a> {
    /// The engine that runs the connector's `oauthOnAuthorizeUrl` resource, when it has one.
    pub engine: &'a Engine,
    /// The instance's connector.
    pub connector: &'a Connector,
    /// Its name, as the instance records it (for errors).
    pub connector_name: &'a str,
    /// The store, with the connector's encryption rule: the instance and the flow's record.
    pub store: &'a dyn InstanceStore,
    /// The instance to sign in.
    pub instance: &'a str,
    /// The service's callback, as the vendor sees it (`https://HOST/v1/oauth/callback`).
    pub redirect_uri: &'a str,
    /// Now, epoch milliseconds.
    pub now_ms: u64,
    /// Told of the run of an `oauthOnAuthorizeUrl` resource.
    pub observer: &'a dyn Observer,
}

/// Names the instance and the callback.
impl std::fmt::Debug for Start<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Start")
            .field("connector", &self.connector_name)
            .field("instance", &self.instance)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// A sign-in started: the URL to send the person to, and until when its callback is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begun {
    /// The vendor's authorization URL, with `state` (and PKCE's challenge).
    pub url: String,
    /// The redirect URI it names.
    pub redirect_uri: String,
    /// When the flow expires, epoch milliseconds.
    pub expires_at_ms: u64,
}

/// Starts a sign-in of `start.instance` through a service: a random `state`, the PKCE verifier
/// derived from it under `keys`' current key, the authorization URL (or the connector's
/// `oauthOnAuthorizeUrl` resource's), and a record of the flow that [`take`] consumes. For
/// OAuth 1.0a, the vendor's request token (asked for with the service's callback) and the
/// address where a person approves it; the record keeps the token's secret, encrypted.
///
/// Fails with [`ErrorKind::NoBrowserSignIn`] for a connector that does not sign in through a
/// browser, [`ErrorKind::Run`] when the instance cannot be read, a key of the connector's is
/// missing, the resource fails or the vendor refuses a request token, and the store's error
/// when the record cannot be written.
pub async fn begin(start: &Start<'_>, keys: &FlowKeys) -> Result<Begun, Error> {
    check_code_flow(start.connector, start.connector_name)?;
    if start.connector.authentication().kind() == engine_spec::AuthKind::Oauth1 {
        return begin_oauth1(start, keys).await;
    }
    let state = to_hex(&random::<32>());
    let key = keys.current();
    let flow = AuthorizationFlow {
        redirect_uri: Some(start.redirect_uri.to_owned()),
        state: Some(state.clone()),
        verifier: keys.verifier(key, &state),
    };
    let request = start
        .engine
        .begin_authorization_with(
            start.connector,
            start.store,
            start.instance,
            start.observer,
            &flow,
        )
        .await
        .map_err(ErrorKind::Run)?;
    let expires_at_ms = start.now_ms.saturating_add(lifetime_ms());
    let record = json!({
        "instance": start.instance,
        "redirect_uri": request.redirect_uri,
        "pkce": request.verifier.is_some(),
        "key": key,
    });
    start
        .store
        .put_record(
            STATES_NAMESPACE,
            &record_id(&state),
            record,
            Some(expires_at_ms),
            0,
            start.now_ms,
        )
        .await?;
    Ok(Begun {
        url: request.url,
        redirect_uri: request.redirect_uri,
        expires_at_ms,
    })
}

/// [`begin`] for OAuth 1.0a: the request token is the flow's `state`, its secret kept in the
/// record, encrypted.
async fn begin_oauth1(start: &Start<'_>, keys: &FlowKeys) -> Result<Begun, Error> {
    let flow = AuthorizationFlow {
        redirect_uri: Some(start.redirect_uri.to_owned()),
        ..AuthorizationFlow::default()
    };
    let request = start
        .engine
        .begin_authorization_with(
            start.connector,
            start.store,
            start.instance,
            start.observer,
            &flow,
        )
        .await
        .map_err(ErrorKind::Run)?;
    let id = record_id(&request.state);
    let secret = request.request_token_secret.as_deref().unwrap_or_default();
    let record = json!({
        "instance": start.instance,
        "redirect_uri": request.redirect_uri,
        "oauth1": true,
        "secret": keys.seal(secret, &id, start.instance)?,
    });
    let expires_at_ms = start.now_ms.saturating_add(lifetime_ms());
    start
        .store
        .put_record(
            STATES_NAMESPACE,
            &id,
            record,
            Some(expires_at_ms),
            0,
            start.now_ms,
        )
        .await?;
    Ok(Begun {
        url: request.url,
        redirect_uri: request.redirect_uri,
        expires_at_ms,
    })
}

/// What encrypts a request token's secret is bound to: its record, so that a value copied to
/// another record does not decrypt.
fn sealing_context(id: &str) -> String {
    format!("{STATES_NAMESPACE}\0{id}")
}

fn lifetime_ms() -> u64 {
    u64::try_from(STATE_LIFETIME.as_millis()).unwrap_or(u64::MAX)
}

/// A flow whose callback arrived: the instance it signs in, and the request to finish it with
/// ([`complete`]).
pub struct Pending {
    /// The instance.
    pub instance: String,
    /// The flow: its `state`, redirect URI and verifier.
    pub request: AuthorizationRequest,
}

/// Names the instance, never the flow's secrets.
impl std::fmt::Debug for Pending {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pending")
            .field("instance", &self.instance)
            .field("request", &self.request)
            .finish()
    }
}

/// Consumes the flow `state` names, once: the record is deleted with the version read, so of
/// two callbacks with the same state one at most gets it, whichever process each reaches.
///
/// Fails with [`ErrorKind::UnknownState`] when no flow under way has this state (never
/// started, expired, used already, or started under a key no longer set), and the store's
/// error.
pub async fn take(
    store: &dyn InstanceStore,
    keys: &FlowKeys,
    state: &str,
    now_ms: u64,
) -> Result<Pending, Error> {
    let is_state = state.len() == 64 && state.bytes().all(|byte| byte.is_ascii_hexdigit());
    if !is_state {
        return Err(ErrorKind::UnknownState.into());
    }
    let (_, record) = taken(store, state, now_ms).await?;
    if record.get("oauth1").is_some() {
        return Err(ErrorKind::UnknownState.into());
    }
    let verifier = if record.get("pkce").and_then(Value::as_bool) == Some(true) {
        let key = record
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Some(keys.verifier(key, state).ok_or(ErrorKind::UnknownState)?)
    } else {
        None
    };
    pending(&record, state, verifier, None)
}

/// Consumes the OAuth 1.0a flow of the request token `token` (the callback's `oauth_token`),
/// once, as [`take`] does; the request has the token's secret, decrypted.
///
/// Fails with [`ErrorKind::UnknownState`] when no OAuth 1.0a flow under way has this request
/// token (never started, expired, used already, or its secret encrypted with a key no longer
/// set), and the store's error.
pub async fn take_oauth1(
    store: &dyn InstanceStore,
    keys: &FlowKeys,
    token: &str,
    now_ms: u64,
) -> Result<Pending, Error> {
    if token.is_empty() {
        return Err(ErrorKind::UnknownState.into());
    }
    let (id, record) = taken(store, token, now_ms).await?;
    let secret = record
        .get("oauth1")
        .and(record.get("secret"))
        .and_then(Value::as_str)
        .and_then(|sealed| keys.open(sealed, &id))
        .ok_or(ErrorKind::UnknownState)?;
    pending(&record, token, None, Some(secret))
}

/// Deletes the record of the flow whose `state` (or request token) is `state`, with the version
/// read: its id and value.
async fn taken(
    store: &dyn InstanceStore,
    state: &str,
    now_ms: u64,
) -> Result<(String, Value), Error> {
    let id = record_id(state);
    let record = store
        .get_record(STATES_NAMESPACE, &id, now_ms)
        .await?
        .ok_or(ErrorKind::UnknownState)?;
    if !store
        .delete_record(STATES_NAMESPACE, &id, Some(record.version))
        .await?
    {
        return Err(ErrorKind::UnknownState.into());
    }
    Ok((id, record.value))
}

/// The flow a record holds, to finish with `state`, the PKCE `verifier` or the request token's
/// `secret`.
fn pending(
    record: &Value,
    state: &str,
    verifier: Option<String>,
    secret: Option<String>,
) -> Result<Pending, Error> {
    let text = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(ErrorKind::UnknownState)
    };
    Ok(Pending {
        instance: text("instance")?,
        request: AuthorizationRequest {
            url: String::new(),
            state: state.to_owned(),
            verifier,
            redirect_uri: text("redirect_uri")?,
            host: String::new(),
            port: 0,
            path: String::new(),
            request_token_secret: secret,
        },
    })
}

/// What the vendor's callback said instead of a code (`error`, `error_description`), in words.
pub fn declined_message(error: &str, description: Option<&str>) -> String {
    let description = description
        .map(|description| format!(": {description}"))
        .unwrap_or_default();
    format!("the vendor answered `{error}`{description}")
}

/// What the vendor's callback said instead of a code, as the error of the sign-in.
pub fn declined(error: &str, description: Option<&str>) -> RunError {
    RunErrorKind::Authorize {
        message: declined_message(error, description),
    }
    .into()
}

/// The record id of the flow of `state`: its SHA-256 in hex.
fn record_id(state: &str) -> String {
    to_hex(&sha2::Sha256::digest(state.as_bytes()))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use engine_runtime::{EngineBuilder, NoObserver};
    use engine_store::MemoryStore;
    use engine_stores_sql::SecretKey;

    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const CALLBACK: &str = "https://engine.example/v1/oauth/callback";
    const NOW: u64 = 1_800_000_000_000;

    fn keys(current: &str, old: &[&str]) -> FlowKeys {
        FlowKeys::new(Some(&SecretKeys {
            current: SecretKey::parse(current).unwrap(),
            old: old
                .iter()
                .map(|key| SecretKey::parse(key).unwrap())
                .collect(),
        }))
        .unwrap()
    }

    fn connector(name: &str) -> Connector {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(name);
        crate::load_connector(&path).unwrap()
    }

    fn store() -> MemoryStore {
        let store = MemoryStore::new();
        let values = serde_json::json!({
            "oauth.authorization.url": "https://idp.example/authorize",
            "oauth.token.url": "https://idp.example/token",
            "oauth.api.key": "client",
            "oauth.api.secret": "FAKE-secret",
        });
        store.insert("acme", values.as_object().cloned().unwrap_or_default());
        store
    }

    /// Begins a flow for `acme` at `NOW` under `keys`: its answer and the URL's query.
    async fn begun(store: &MemoryStore, keys: &FlowKeys) -> (Begun, Vec<(String, String)>) {
        let engine = EngineBuilder::new().build().unwrap();
        let connector = connector("tests/fixtures/oauth2/authorization-code.json");
        let start = Start {
            engine: &engine,
            connector: &connector,
            connector_name: "authorization-code",
            store,
            instance: "acme",
            redirect_uri: CALLBACK,
            now_ms: NOW,
            observer: &NoObserver,
        };
        let begun = begin(&start, keys).await.unwrap();
        let query = url::Url::parse(&begun.url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        (begun, query)
    }

    fn parameter(query: &[(String, String)], name: &str) -> String {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    fn is_unknown(error: &Error) -> bool {
        matches!(error.kind(), ErrorKind::UnknownState)
    }

    #[tokio::test]
    async fn a_flow_is_taken_once_and_its_record_keeps_no_secret() {
        let store = store();
        let keys = keys(K1, &[]);
        let (begun, query) = begun(&store, &keys).await;
        assert_eq!(begun.expires_at_ms, NOW + 600_000);
        assert_eq!(parameter(&query, "redirect_uri"), CALLBACK);
        assert_eq!(parameter(&query, "code_challenge_method"), "S256");
        let state = parameter(&query, "state");
        let records = store
            .list_records(STATES_NAMESPACE, None, 10, NOW)
            .await
            .unwrap();
        assert_eq!(records.len(), 1);
        let kept = format!("{:?}", records[0]);

        let pending = take(&store, &keys, &state, NOW + 1000).await.unwrap();
        assert_eq!(pending.instance, "acme");
        assert_eq!(pending.request.redirect_uri, CALLBACK);
        assert_eq!(pending.request.state, state);
        let verifier = pending.request.verifier.clone().unwrap();
        for secret in [&state, &verifier] {
            assert!(!kept.contains(secret.as_str()), "{kept}");
            assert!(!format!("{pending:?}").contains(secret.as_str()));
        }
        // The verifier is the one the URL's challenge was made from.
        let challenge = parameter(&query, "code_challenge");
        assert_eq!(challenge.len(), 43);
        assert!(!begun.url.contains(&verifier));

        let again = take(&store, &keys, &state, NOW + 2000).await.unwrap_err();
        assert!(is_unknown(&again), "{again}");
        let forged = take(&store, &keys, &"0".repeat(64), NOW).await.unwrap_err();
        assert!(is_unknown(&forged), "{forged}");
        let shapeless = take(&store, &keys, "../x", NOW).await.unwrap_err();
        assert!(is_unknown(&shapeless), "{shapeless}");
    }

    #[tokio::test]
    async fn a_flow_expires_after_ten_minutes() {
        let store = store();
        let keys = keys(K1, &[]);
        let (_, query) = begun(&store, &keys).await;
        let state = parameter(&query, "state");
        let late = take(&store, &keys, &state, NOW + 600_000)
            .await
            .unwrap_err();
        assert!(is_unknown(&late), "{late}");
    }

    #[tokio::test]
    async fn a_flow_survives_a_key_rotation_while_the_old_key_is_listed() {
        let store = store();
        let (_, query) = begun(&store, &keys(K1, &[])).await;
        let state = parameter(&query, "state");
        let expected = keys(K1, &[]).verifier("k1", &state);
        let rotated = take(&store, &keys(K2, &[K1]), &state, NOW + 1)
            .await
            .unwrap();
        assert_eq!(rotated.request.verifier, expected);

        let (_, query) = begun(&store, &keys(K1, &[])).await;
        let state = parameter(&query, "state");
        let dropped = take(&store, &keys(K2, &[]), &state, NOW + 1)
            .await
            .unwrap_err();
        assert!(is_unknown(&dropped), "{dropped}");
    }

    /// After a sign-in, the failure state goes and the next refresh is planned from the new
    /// token, a fifth of its lifetime ahead: not due at once, which would have a scheduler
    /// refresh the token just obtained.
    #[tokio::test]
    async fn a_sign_in_clears_needs_reauth_and_plans_the_next_refresh_from_its_token() {
        let store = MemoryStore::new();
        let mut values = serde_json::json!({
            "oauth.user.token": "FAKE-token",
            "oauth.user.refresh_time": NOW.to_string(),
            "oauth.user.refresh_interval": "3600",
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        engine_store::Schedule {
            status: engine_store::ScheduleStatus::NeedsReauth,
            consecutive_rejections: 3,
            next_refresh_at_ms: None,
            ..engine_store::Schedule::default()
        }
        .put(&mut values);
        store.insert("acme", values);
        let connector = connector("tests/fixtures/oauth2/authorization-code.json");
        let before = cleared(&connector, &store, "acme").await.unwrap();
        assert_eq!(before, Some(engine_store::ScheduleStatus::NeedsReauth));
        let read = store.load("acme").await.unwrap();
        let schedule = engine_store::Schedule::read(&read.state);
        assert!(!schedule.has_failures(), "{schedule:?}");
        assert_eq!(
            schedule.next_refresh_at_ms,
            Some(NOW + 3_600_000 - 720_000 - engine_runtime::jitter_ms("acme", 3_600_000))
        );
    }

    #[test]
    fn only_the_authorization_code_grant_signs_in_through_a_browser() {
        assert!(
            check_code_flow(
                &connector("tests/fixtures/oauth2/authorization-code.json"),
                "a"
            )
            .is_ok()
        );
        let error = check_code_flow(&connector("connectors/demo.json"), "connectors/demo.json")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "connector `connectors/demo.json` does not sign in through a browser: its authentication is `custom` (its own lifecycle resources)"
        );
    }
}
