//! Callers of `/v1`: each request presents an API key (`Authorization: Bearer KEY`, see
//! engine-service's `keys`), which needs the scope of the endpoint, may see only the instances
//! it owns (or no key owns), and is held to a rate ([`Rate`]). `/healthz` and `/readyz` stay
//! open, and so do a sign-in's callback and the API's description under `/v1`. Keys are looked up in the store at most once per [`KEY_CACHE_SECONDS`] per key id, so
//! a call costs no store read for its key; a revocation is refused by every server within that
//! time.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::convert::Infallible;
use std::pin::Pin;
use std::str::Utf8Error;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use engine_runtime::Clock;
use engine_service::keys::{self, ApiKey, KeyMac, Scope, StoredKey};
use engine_store::InstanceStore;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::app::App;
use crate::problem::{Failure, Problem};

/// How long a key looked up in the store is trusted, in seconds: a revoked key is refused by
/// every server at most this long after its revocation.
pub const KEY_CACHE_SECONDS: u64 = 5;

/// At most this many key ids are cached; past it, the expired entries are dropped (and all of
/// them when none has expired), so that made-up keys cannot grow the cache without bound.
const MAX_CACHED: usize = 10_000;

/// The key a request was made with, in the request's extensions once it is authenticated: a
/// handler that creates an instance records it as the owner ([`keys::set_owner`]). Shared with
/// the key cache, not copied per request.
#[derive(Debug, Clone)]
pub struct Caller(Arc<StoredKey>);

impl Caller {
    /// The key.
    pub fn key(&self) -> &ApiKey {
        &self.0.key
    }
}

/// A rate of requests per key: `per_second` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second on average.
    pub per_second: f64,
    /// Requests allowed at once after a pause (the bucket's size).
    pub burst: u32,
}

impl Default for Rate {
    /// 100 requests a second, bursts of 100.
    fn default() -> Self {
        Self {
            per_second: 100.0,
            burst: 100,
        }
    }
}

impl Rate {
    /// Parses `N/s` or `N/m` (requests per second or per minute; `N` alone: per second); the
    /// burst is a second's worth, at least 1.
    ///
    /// Fails with what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (count, per) = text.split_once('/').unwrap_or((text, "s"));
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|count| *count > 0)
            .ok_or_else(|| {
                format!("expected `N/s` or `N/m` with N a whole number above 0, not `{text}`")
            })?;
        // The burst is a second's worth, rounded up: `30/m` still lets one request through.
        let (per_second, burst) = match per.trim() {
            "s" => (f64::from(count), count),
            "m" => (f64::from(count) / 60.0, count.div_ceil(60)),
            other => return Err(format!("unknown unit `{other}`: expected `s` or `m`")),
        };
        Ok(Self { per_second, burst })
    }
}

/// Requests whose key is missing or not valid, per caller address: a burst of 20, then one a
/// second. Past it, the address is answered 429 before its key is looked up, so that made-up
/// keys cannot turn into a store read each.
const FAILED_AUTHENTICATIONS: Rate = Rate {
    per_second: 1.0,
    burst: 20,
};

/// A map keyed by what callers send (key ids, addresses): foldhash's `quality` hasher, seeded at
/// random per process, which callers cannot predict; the maps are bounded besides
/// ([`MAX_BUCKETS`], [`MAX_CACHED`]). Faster than the standard library's `SipHash` on every call.
type CallerMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// At most this many buckets are kept; past it they all start again full (a limit is then lost
/// for the addresses and keys that had spent theirs, which takes this many addresses to cause).
const MAX_BUCKETS: usize = 10_000;

/// A token bucket per key id (or caller address: `K`), on the server's clock.
#[derive(Debug)]
pub(crate) struct Limiter<K = String> {
    rate: Rate,
    /// Key → (tokens left, when they were counted, epoch ms). A key without a bucket has a
    /// full one.
    buckets: Mutex<CallerMap<K, (f64, u64)>>,
}

impl<K: Eq + std::hash::Hash> Limiter<K> {
    pub(crate) fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes a token of `key` at `now_ms`; when there is none, how long until there is.
    pub(crate) fn take<Q>(&self, key: &Q, now_ms: u64) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        self.count(key, now_ms, true)
    }

    /// How long until `key` has a token at `now_ms`, taking none: `Ok` when it has one.
    pub(crate) fn check<Q>(&self, key: &Q, now_ms: u64) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        self.count(key, now_ms, false)
    }

    /// The bucket of `key` refilled to `now_ms`; a token taken when `take` and there is one.
    /// A key is copied only when its bucket is made, which a check does not do.
    fn count<Q>(&self, key: &Q, now_ms: u64, take: bool) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + std::hash::Hash + ToOwned<Owned = K> + ?Sized,
    {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let burst = f64::from(self.rate.burst);
        if !buckets.contains_key(key) {
            if !take {
                return Ok(());
            }
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
            buckets.insert(key.to_owned(), (burst, now_ms));
        }
        let Some((tokens, at)) = buckets.get_mut(key) else {
            return Ok(());
        };
        // A day refills any bucket: longer pauses need not be counted exactly.
        let elapsed_ms =
            u32::try_from(now_ms.saturating_sub(*at)).map_or(86_400_000, |ms| ms.min(86_400_000));
        let elapsed = f64::from(elapsed_ms) / 1000.0;
        *tokens = (*tokens + elapsed * self.rate.per_second).min(burst);
        *at = now_ms.max(*at);
        if *tokens >= 1.0 {
            if take {
                *tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - *tokens) / self.rate.per_second,
            ))
        }
    }
}

/// What the key check needs: the store keys and instances are read from, the server keys,
/// the cache and the limiter.
pub(crate) struct Auth {
    pub(crate) store: Arc<dyn InstanceStore>,
    pub(crate) mac: KeyMac,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limiter: Limiter,
    /// Requests that presented no valid key, per caller address ([`FAILED_AUTHENTICATIONS`]).
    failures: Limiter<IpAddr>,
    cache: Mutex<CallerMap<String, Cached>>,
}

/// A key id's entry in the cache.
#[derive(Debug)]
struct Cached {
    /// When it was looked up in the store, epoch ms.
    at_ms: u64,
    /// The key, `None` when there is none.
    key: Option<Arc<StoredKey>>,
    /// The key as presented once its MAC verified, until the entry is looked up again: the same
    /// key presented again is compared with it (in constant time) instead of computing its
    /// HMAC-SHA-256 on every call.
    verified: Option<String>,
}

impl Auth {
    pub(crate) fn new(
        store: Arc<dyn InstanceStore>,
        mac: KeyMac,
        clock: Arc<dyn Clock>,
        rate: Rate,
    ) -> Self {
        Self {
            store,
            mac,
            clock,
            limiter: Limiter::new(rate),
            failures: Limiter::new(FAILED_AUTHENTICATIONS),
            cache: Mutex::default(),
        }
    }

    /// The key `id` as stored, from the cache when looked up less than [`KEY_CACHE_SECONDS`]
    /// ago.
    async fn lookup(&self, id: &str, now_ms: u64) -> Result<Option<Arc<StoredKey>>, Problem> {
        let fresh_after = now_ms.saturating_sub(KEY_CACHE_SECONDS * 1000);
        if let Some(cached) = self.cache().get(id)
            && cached.at_ms > fresh_after
        {
            return Ok(cached.key.clone());
        }
        let key = keys::find_key(&*self.store, id, now_ms)
            .await
            .map_err(|_| unavailable())?
            .map(Arc::new);
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, cached| cached.at_ms > fresh_after);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            id.to_owned(),
            Cached {
                at_ms: now_ms,
                key: key.clone(),
                verified: None,
            },
        );
        Ok(key)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CallerMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key the request presents, when it is valid.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        now_ms: u64,
    ) -> Result<Arc<StoredKey>, Problem> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "send the key as `Authorization: Bearer KEY` (create one with `engine keys create`)",
            ));
        };
        // The scheme is case-insensitive (RFC 9110).
        let presented = value
            .to_str()
            .ok()
            .and_then(|text| text.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        let Some(id) = presented.and_then(keys::key_id_of) else {
            return Err(unauthorized(
                "the `Authorization` header is not `Bearer ek_...`",
            ));
        };
        let presented = presented.unwrap_or_default();
        let Some(stored) = self.lookup(id, now_ms).await? else {
            return Err(unauthorized("the key is not valid"));
        };
        let known = self.verified_before(id, presented);
        if !known && !stored.verify(&self.mac, presented) {
            return Err(unauthorized("the key is not valid"));
        }
        if stored.key.revoked_at_ms.is_some() {
            return Err(unauthorized(&format!(
                "the key `{}` is revoked",
                stored.key.prefix()
            )));
        }
        // Kept once, not copied again on every call that presents it.
        if !known && let Some(cached) = self.cache().get_mut(id) {
            cached.verified = Some(presented.to_owned());
        }
        Ok(stored)
    }

    /// True when `presented` is the key of `id` that verified since the cache's entry was looked
    /// up, compared in constant time.
    fn verified_before(&self, id: &str, presented: &str) -> bool {
        self.cache()
            .get(id)
            .and_then(|cached| cached.verified.as_deref())
            .is_some_and(|verified| {
                verified.len() == presented.len()
                    && verified
                        .as_bytes()
                        .iter()
                        .zip(presented.as_bytes())
                        .fold(0, |differ, (a, b)| differ | (a ^ b))
                        == 0
            })
    }
}

/// The scope a request needs: `resources` for a resource call; `instances:read` to read
/// (`GET`, `HEAD`); `instances:write` for anything else.
pub(crate) fn scope_for(method: &Method, path: &str) -> Scope {
    // `/v1/instances/{id}/resources` and below.
    let resource = under_instance(path)
        .and_then(|(_, rest)| rest)
        .is_some_and(|rest| rest == "resources" || rest.starts_with("resources/"));
    if resource {
        Scope::Resources
    } else if *method == Method::GET || *method == Method::HEAD {
        Scope::InstancesRead
    } else {
        Scope::InstancesWrite
    }
}

/// A path under `/v1/instances/`, taken apart: its first segment (an instance id, still
/// percent-encoded, maybe empty) and what follows the slash after it, if one does. The one
/// reading of such paths that the scope, the instance and the resource are told by.
fn under_instance(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix("/v1/instances/")?;
    Some(match rest.split_once('/') {
        Some((id, rest)) => (id, Some(rest)),
        None => (rest, None),
    })
}

/// The resource a resource call's path names: `{resource}` of
/// `/v1/instances/{id}/resources/{resource}`, one segment, still percent-encoded. `None` for any
/// other path (`.../resources`, `.../resources/a/b`: the router's `404`).
fn resource_of(path: &str) -> Option<&str> {
    let (id, rest) = under_instance(path)?;
    let resource = rest?.strip_prefix("resources/")?;
    (!id.is_empty() && !resource.is_empty() && !resource.contains('/')).then_some(resource)
}

/// The instance id a path names (`/v1/instances/{id}` and below), percent-decoded as the
/// router decodes it for the handlers (`acm%65` is `acme`): the instance the handler reads is
/// the one the key check read. `Err` when the segment is not UTF-8 once decoded.
fn instance_of(path: &str) -> Option<Result<Cow<'_, str>, Utf8Error>> {
    let (id, _) = under_instance(path)?;
    (!id.is_empty()).then(|| percent_encoding::percent_decode_str(id).decode_utf8())
}

/// True when `caller` may see the instance `id` of `store` (it owns it, or no key does); a
/// request that is not authenticated (`None`) sees every instance, and an instance that cannot
/// be read none.
pub(crate) async fn sees(store: &dyn InstanceStore, caller: Option<&Caller>, id: &str) -> bool {
    let Some(caller) = caller else {
        return true;
    };
    store
        .load(id)
        .await
        .is_ok_and(|read| keys::visible_to(&read.state, caller.key()))
}

/// A sign-in's callback: it needs no key, its `state` is the credential.
const CALLBACK: &str = "/v1/oauth/callback";

/// The paths under `/v1` that need no key: a sign-in's callback and the API's description.
const OPEN: [&str; 2] = [CALLBACK, "/v1/openapi.json"];

/// The check of every request: `/v1` and below need a valid key (401), within its rate
/// (429), with the scope (403), and see only the instances they may (404). An address that
/// presented too many keys that are not valid, or callbacks with a `state` no flow has, waits
/// (429) before anything is looked up. Then the request goes to the router, but for a resource
/// call, which is run here on the instance the check read ([`crate::api::resource`]).
async fn authorize(
    Gated { auth, app, router }: &Gated,
    peer: SocketAddr,
    mut request: Request,
) -> Response {
    let path = request.uri().path();
    let open = (path != "/v1" && !path.starts_with("/v1/")) || OPEN.contains(&path);
    let callback = path == CALLBACK;
    if open && !callback {
        // The caller's address, for what answers without a key (the status page answers
        // loopback callers only).
        request.extensions_mut().insert(ConnectInfo(peer));
        return run(router.clone(), request).await;
    }
    let now_ms = auth.clock.now_ms();
    let peer = peer.ip();
    if let Err(wait) = auth.failures.check(&peer, now_ms) {
        return failing(&peer, wait);
    }
    if callback {
        // A callback whose flow is unknown, expired or used (400) counts as a key that is not
        // valid: each costs a store read.
        let response = run(router.clone(), request).await;
        if response.status() == StatusCode::BAD_REQUEST {
            let _ = auth.failures.take(&peer, now_ms);
        }
        return response;
    }
    let stored = match auth.authenticate(request.headers(), now_ms).await {
        Ok(stored) => stored,
        Err(problem) => {
            if problem.status == StatusCode::UNAUTHORIZED.as_u16() {
                let _ = auth.failures.take(&peer, now_ms);
            }
            return with_challenge(problem);
        }
    };
    if let Err(wait) = auth.limiter.take(&stored.key.id, now_ms) {
        return rate_limited(&stored.key, wait);
    }
    let path = request.uri().path();
    let scope = scope_for(request.method(), path);
    if !stored.key.allows(scope) {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "the key lacks a scope",
            format!(
                "the key `{}` lacks the scope `{}`: create a key with `--scope {}`",
                stored.key.prefix(),
                scope.label(),
                scope.label()
            ),
        )
        .into_response();
    }
    let mut named = None;
    if let Some(id) = instance_of(path) {
        let Ok(id) = id.map(Cow::into_owned) else {
            return Failure::BadRequest(
                "the instance id in the path is not UTF-8 once percent-decoded: percent-encode its UTF-8 bytes (`%C3%A9` for `é`)".to_owned(),
            )
            .into_response();
        };
        match auth.store.load(&id).await {
            Ok(read) => {
                if !keys::visible_to(&read.state, &stored.key) {
                    // Another key's instance: as if it did not exist.
                    return Problem::new(
                        StatusCode::NOT_FOUND,
                        "instance-not-found",
                        "no such instance",
                        format!("instance `{id}` does not exist"),
                    )
                    .into_response();
                }
                named = Some((id, Ok(read)));
            }
            // No such instance: the handler says so, or makes it.
            Err(error) if error.kind().is_absent() => {
                named = Some((id, Err(error)));
            }
            // Whose it is cannot be told: nothing is done with it.
            Err(error) => return Failure::from(error).into_response(),
        }
    }
    // A resource call runs on the instance just read, its path taken apart here: the router
    // has no route for it (its matching, its path parameters and its boxed futures cost more
    // per call than the check).
    if scope == Scope::Resources
        && let Some((id, read)) = named
        && let Some(resource) = resource_of(path)
    {
        let Ok(resource) = percent_encoding::percent_decode_str(resource).decode_utf8() else {
            return Failure::BadRequest(
                "the resource in the path is not UTF-8 once percent-decoded: percent-encode its UTF-8 bytes (`%C3%A9` for `é`)".to_owned(),
            )
            .into_response();
        };
        let resource = resource.into_owned();
        return crate::api::resource(app, &id, &resource, read, request).await;
    }
    request.extensions_mut().insert(Caller(stored));
    run(router.clone(), request).await
}

/// The router's answer to `request`.
async fn run(mut router: Router, request: Request) -> Response {
    match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// What every connection's [`Gate`] shares: the key check's state, the service's (for the
/// resource calls the check answers itself) and the routes.
struct Gated {
    auth: Arc<Auth>,
    app: Arc<App>,
    router: Router,
}

/// The service each connection is answered by: every request goes through [`authorize`] to the
/// router. One boxed future per request; no layer of the router's, which would clone its inner
/// service and box another future per request and per layer.
#[derive(Clone)]
pub(crate) struct Gate {
    gated: Arc<Gated>,
    /// The caller's address.
    peer: SocketAddr,
}

impl Gate {
    /// The services of `router`'s connections, each request checked against `auth`; the
    /// connection's address comes from `axum::serve`'s accepted stream.
    pub(crate) fn per_connection(auth: Arc<Auth>, app: Arc<App>, router: Router) -> PerConnection {
        PerConnection(Arc::new(Gated { auth, app, router }))
    }
}

impl Service<Request> for Gate {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let gate = self.clone();
        Box::pin(async move { Ok(authorize(&gate.gated, gate.peer, request).await) })
    }
}

/// Makes each accepted connection's [`Gate`].
#[derive(Clone)]
pub(crate) struct PerConnection(Arc<Gated>);

impl Service<IncomingStream<'_, TcpListener>> for PerConnection {
    type Response = Gate;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Gate, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'_, TcpListener>) -> Self::Future {
        std::future::ready(Ok(Gate {
            gated: Arc::clone(&self.0),
            peer: *stream.remote_addr(),
        }))
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "no valid API key",
        detail,
    )
}

fn with_challenge(problem: Problem) -> Response {
    let challenge = problem.status == StatusCode::UNAUTHORIZED.as_u16();
    let mut response = problem.into_response();
    if challenge {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store-unavailable",
        "the instance store does not answer",
        "the key could not be looked up in the store; try again",
    )
}

fn rate_limited(key: &ApiKey, wait: Duration) -> Response {
    let seconds = whole_seconds(wait);
    too_many(
        format!(
            "the key `{}` is over its rate; try again in {seconds} s",
            key.prefix()
        ),
        seconds,
    )
}

/// The answer to an address that presented too many keys (or sign-in states) that are not
/// valid.
fn failing(peer: &IpAddr, wait: Duration) -> Response {
    let seconds = whole_seconds(wait);
    too_many(
        format!(
            "too many requests from {peer} without a valid key or sign-in state; try again in {seconds} s"
        ),
        seconds,
    )
}

/// Whole seconds, rounded up: never `0`, which would invite an immediate retry.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// 429 with `detail` and `Retry-After: seconds`.
fn too_many(detail: String, seconds: u64) -> Response {
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "too many requests",
        detail,
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_takes_no_token() {
        let limiter = Limiter::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        let now = 1_000_000;
        assert_eq!(limiter.check("a", now), Ok(()));
        assert_eq!(limiter.check("a", now), Ok(()));
        assert_eq!(limiter.take("a", now), Ok(()));
        assert_eq!(limiter.check("a", now), Err(Duration::from_secs(1)));
        assert_eq!(limiter.check("a", now + 1000), Ok(()));
    }

    #[test]
    fn a_bucket_lets_its_burst_through_then_refills_at_its_rate() {
        let limiter = Limiter::new(Rate {
            per_second: 2.0,
            burst: 3,
        });
        let now = 1_000_000;
        for _ in 0..3 {
            assert_eq!(limiter.take("a", now), Ok(()));
        }
        let wait = limiter.take("a", now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another key has its own bucket.
        assert_eq!(limiter.take("b", now), Ok(()));
        // Half a second later a token is back, and only one.
        assert_eq!(limiter.take("a", now + 500), Ok(()));
        assert!(limiter.take("a", now + 500).is_err());
        // A long pause refills up to the burst, no more.
        for _ in 0..3 {
            assert_eq!(limiter.take("a", now + 60_000), Ok(()));
        }
        assert!(limiter.take("a", now + 60_000).is_err());
    }

    #[test]
    fn rates_parse_per_second_and_per_minute() {
        assert_eq!(
            Rate::parse("20/s"),
            Ok(Rate {
                per_second: 20.0,
                burst: 20
            })
        );
        assert_eq!(
            Rate::parse("30/m"),
            Ok(Rate {
                per_second: 0.5,
                burst: 1
            })
        );
        assert_eq!(Rate::parse("5").map(|rate| rate.burst), Ok(5));
        for wrong in ["0/s", "-1/s", "x", "5/h", ""] {
            assert!(Rate::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn scopes_follow_the_endpoint_and_the_method() {
        let cases = [
            (Method::GET, "/v1/instances", Scope::InstancesRead),
            (Method::GET, "/v1/instances/a", Scope::InstancesRead),
            (Method::GET, "/v1/instances/a/history", Scope::InstancesRead),
            (
                Method::POST,
                "/v1/instances/a/refresh",
                Scope::InstancesWrite,
            ),
            (Method::POST, "/v1/instances", Scope::InstancesWrite),
            (Method::DELETE, "/v1/instances/a", Scope::InstancesWrite),
            (
                Method::GET,
                "/v1/instances/a/resources/list",
                Scope::Resources,
            ),
            (
                Method::POST,
                "/v1/instances/a/resources/x",
                Scope::Resources,
            ),
            (Method::GET, "/v1/instances/a/resources", Scope::Resources),
            (
                Method::GET,
                "/v1/instances/a/resourcesx",
                Scope::InstancesRead,
            ),
            (
                Method::PUT,
                "/v1/instances/a/b/resources",
                Scope::InstancesWrite,
            ),
            (
                Method::GET,
                "/v2/instances/a/resources",
                Scope::InstancesRead,
            ),
        ];
        for (method, path, scope) in cases {
            assert_eq!(scope_for(&method, path), scope, "{method} {path}");
        }
        let id = |path| instance_of(path).map(|id| id.map(Cow::into_owned));
        assert_eq!(id("/v1/instances/a/history"), Some(Ok("a".to_owned())));
        // Decoded as the router decodes it for the handlers.
        assert_eq!(
            id("/v1/instances/acm%65/history"),
            Some(Ok("acme".to_owned()))
        );
        assert_eq!(id("/v1/instances/a%2Fb"), Some(Ok("a/b".to_owned())));
        assert!(id("/v1/instances/%FF").is_some_and(|id| id.is_err()));
        assert_eq!(id("/v1/instances"), None);
        assert_eq!(id("/v1/instances/"), None);
        // A resource call's path: one segment after `resources/`, still encoded.
        assert_eq!(
            resource_of("/v1/instances/a/resources/GET%3A%2Fx"),
            Some("GET%3A%2Fx")
        );
        for path in [
            "/v1/instances/a/resources",
            "/v1/instances/a/resources/",
            "/v1/instances/a/resources/x/y",
            "/v1/instances//resources/x",
            "/v1/instances/a/history",
            "/v2/instances/a/resources/x",
        ] {
            assert_eq!(resource_of(path), None, "{path}");
        }
    }
}
