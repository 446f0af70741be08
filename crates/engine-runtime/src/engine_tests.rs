//! The token lifecycle driven by an injected clock against wiremock: expiry without sleeping.

use std::sync::Arc;

use engine_spec::{Connector, SourceFile, validate};
use engine_store::{InstanceStore, MemoryStore, State};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{EngineBuilder, Inputs, ManualClock, NoObserver, RunErrorKind, RunRequest};

const NOW: u64 = 1_800_000_000_000;

fn oauth2_connector(authentication: &str) -> Connector {
    let text = format!(
        r#"{{"authentication": {authentication},
            "configuration": [{{"key": "oauth.token.url", "type": "TEXTFIELD_1000", "required": true}}],
            "resources": [{{"name": "me", "type": "api", "vendorPath": "/me"}}]}}"#
    );
    validate(SourceFile::new("c.json", text))
        .into_connector()
        .expect("valid")
}

fn instance(server: &MockServer, extra: &Value) -> State {
    let mut state = json!({
        "base.url": server.uri(),
        "oauth.token.url": format!("{}/token", server.uri()),
        "oauth.api.key": "client-id",
        "oauth.api.secret": "client-secret",
    });
    for (key, value) in extra.as_object().expect("an object") {
        state[key] = value.clone();
    }
    match state {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

async fn run(
    connector: &Connector,
    store: &MemoryStore,
    clock: &ManualClock,
) -> Result<Value, crate::RunError> {
    let engine = EngineBuilder::new()
        .clock(Arc::new(clock.clone()))
        .backoff(std::time::Duration::from_millis(1))
        .build()?;
    let inputs = Inputs::default();
    let request = RunRequest {
        connector,
        selector: "me",
        inputs: &inputs,
        instance: "i",
    };
    engine
        .run(&request, store, &NoObserver)
        .await
        .map(|output| output.body.into_value())
}

async fn me_answers(server: &MockServer, token: &str) {
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": token})))
        .mount(server)
        .await;
}

fn token_response(token: &str, extra: &Value) -> ResponseTemplate {
    let mut body = json!({"access_token": token, "token_type": "Bearer"});
    for (key, value) in extra.as_object().expect("an object") {
        body[key] = value.clone();
    }
    ResponseTemplate::new(200).set_body_json(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_token_is_reused_until_the_clock_passes_expiry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token_response("t1", &json!({"expires_in": "120"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t2", &json!({"expires_in": 120})))
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    me_answers(&server, "t2").await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    store.insert("i", instance(&server, &json!({})));
    let clock = ManualClock::new(NOW);

    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t1"})
    );
    let state = store.get("i").unwrap();
    assert_eq!(state["oauth.user.refresh_time"], NOW.to_string());
    assert_eq!(state["oauth.user.refresh_interval"], "120");
    // 89 s later (the skew is 30 s): still fresh, no token request.
    clock.advance(89_000);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t1"})
    );
    // 90 s: within the skew, refreshed first.
    clock.advance(1_000);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t2"})
    );
    let token_requests = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.path() == "/token")
        .count();
    assert_eq!(token_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_a_response_without_refresh_token_keeps_the_old_one() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=r1"))
        .respond_with(token_response(
            "t2",
            &json!({"expires_in": 60, "refresh_token": "r2"}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("refresh_token=r2"))
        .respond_with(token_response("t3", &json!({"expires_in": 60})))
        .mount(&server)
        .await;
    me_answers(&server, "t2").await;
    me_answers(&server, "t3").await;
    let connector = oauth2_connector(r#"{"type": "oauth2"}"#);
    let store = MemoryStore::new();
    store.insert(
        "i",
        instance(
            &server,
            &json!({"oauth.user.token": "t1", "oauth.user.refresh_token": "r1",
                    "oauth.user.refresh_time": (NOW - 3_600_000).to_string(),
                    "oauth.user.refresh_interval": "3600"}),
        ),
    );
    let clock = ManualClock::new(NOW);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t2"})
    );
    assert_eq!(store.get("i").unwrap()["oauth.user.refresh_token"], "r2");
    clock.advance(60_000);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t3"})
    );
    assert_eq!(store.get("i").unwrap()["oauth.user.refresh_token"], "r2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_from_expires_at_jwt_or_the_declared_default() {
    let server = MockServer::start().await;
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        format!(r#"{{"exp": {}}}"#, NOW / 1000 + 300),
    );
    let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.x");
    let cases = [
        (
            json!({"expires_at": "2027-01-15T08:01:40Z"}),
            (1_800_000_100_000 - NOW) / 1000,
        ),
        (json!({"expires_on": (NOW / 1000 + 200).to_string()}), 200),
        (json!({"jwt": true}), 300),
        (json!({}), 900),
    ];
    let connector = validate(SourceFile::new(
        "c.json",
        r#"{"authentication": {"type": "oauth2", "grant": "client_credentials"},
            "session": {"defaultExpiresIn": 900},
            "configuration": [{"key": "oauth.token.url", "type": "TEXTFIELD_1000", "required": true}],
            "resources": [{"name": "me", "type": "api", "vendorPath": "/me"}]}"#,
    ))
    .into_connector()
    .unwrap();
    for (extra, expected) in cases {
        server.reset().await;
        let token = if extra.get("jwt").is_some() {
            jwt.clone()
        } else {
            "opaque".to_owned()
        };
        let mut response = extra.clone();
        if let Some(object) = response.as_object_mut() {
            object.remove("jwt");
        }
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(token_response(&token, &response))
            .mount(&server)
            .await;
        me_answers(&server, &token).await;
        let store = MemoryStore::new();
        store.insert("i", instance(&server, &json!({})));
        run(&connector, &store, &ManualClock::new(NOW))
            .await
            .unwrap();
        assert_eq!(
            store.get("i").unwrap()["oauth.user.refresh_interval"],
            expected.to_string(),
            "{extra}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_client_authentication_and_refresh_parameters_in_the_query() {
    let server = MockServer::start().await;
    // base64("client-id:client-secret")
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header(
            "authorization",
            "Basic Y2xpZW50LWlkOmNsaWVudC1zZWNyZXQ=",
        ))
        .and(query_param("grant_type", "refresh_token"))
        .and(query_param("refresh_token", "r1"))
        .respond_with(token_response("t2", &json!({"expires_in": 60})))
        .mount(&server)
        .await;
    me_answers(&server, "t2").await;
    let connector = oauth2_connector(r#"{"type": "oauth2", "refreshIn": "query"}"#);
    let store = MemoryStore::new();
    store.insert(
        "i",
        instance(
            &server,
            &json!({"oauth.basic.header": "true", "oauth.user.refresh_token": "r1"}),
        ),
    );
    assert_eq!(
        run(&connector, &store, &ManualClock::new(NOW))
            .await
            .unwrap(),
        json!({"ok": "t2"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_token_errors_are_retried_and_invalid_grant_is_not() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t1", &json!({"expires_in": 60})))
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    store.insert("i", instance(&server, &json!({})));
    assert_eq!(
        run(&connector, &store, &ManualClock::new(NOW))
            .await
            .unwrap(),
        json!({"ok": "t1"})
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "invalid_grant", "error_description": "refresh token revoked"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let connector = oauth2_connector(r#"{"type": "oauth2"}"#);
    let store = MemoryStore::new();
    let before = instance(&server, &json!({"oauth.user.refresh_token": "r-old"}));
    store.insert("i", before.clone());
    let error = run(&connector, &store, &ManualClock::new(NOW))
        .await
        .unwrap_err();
    match error.kind() {
        RunErrorKind::AuthFailed { problem, .. } => assert_eq!(
            problem.as_deref(),
            Some("invalid_grant: refresh token revoked")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(*store.load("i").await.unwrap().state, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_without_tokens_asks_for_engine_authorize() {
    let server = MockServer::start().await;
    let connector = oauth2_connector(r#"{"type": "oauth2"}"#);
    let store = MemoryStore::new();
    store.insert("i", instance(&server, &json!({})));
    let error = run(&connector, &store, &ManualClock::new(NOW))
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), RunErrorKind::NotAuthorized { .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_mapped_elsewhere_gets_no_bearer_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(query_param("access_token", "t1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    let connector = validate(SourceFile::new(
        "c.json",
        r#"{"authentication": {"type": "oauth2"},
            "configuration": [{"key": "oauth.token.url", "type": "TEXTFIELD_1000", "required": true}],
            "resources": [{"name": "me", "type": "api", "vendorPath": "/me", "parameters": [
              {"name": "${configuration.oauth.user.token}", "type": "value",
               "vendorName": "access_token", "vendorType": "query"}]}]}"#,
    ))
    .into_connector()
    .unwrap();
    let store = MemoryStore::new();
    store.insert(
        "i",
        instance(
            &server,
            &json!({"oauth.user.token": "t1", "oauth.user.refresh_time": NOW.to_string(),
                    "oauth.user.refresh_interval": "3600"}),
        ),
    );
    run(&connector, &store, &ManualClock::new(NOW))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
}

/// Runs `me` with `engine` on instance `i` of `store`.
async fn run_with(
    engine: &crate::Engine,
    connector: &Connector,
    store: &dyn InstanceStore,
) -> Result<Value, crate::RunError> {
    let inputs = Inputs::default();
    let request = RunRequest {
        connector,
        selector: "me",
        inputs: &inputs,
        instance: "i",
    };
    engine
        .run(&request, store, &NoObserver)
        .await
        .map(|output| output.body.into_value())
}

/// Many tasks of one process on one expired instance share one refresh: the first takes the
/// in-process single-flight and refreshes, the others wait on it (an async wait, no thread)
/// and find the token fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_in_one_process_share_one_refresh() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            token_response("t1", &json!({"expires_in": 3600}))
                .set_delay(std::time::Duration::from_millis(100)),
        )
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    let connector = Arc::new(oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.json");
    fs_err::write(
        &file,
        serde_json::to_string(&instance(&server, &json!({}))).unwrap(),
    )
    .unwrap();
    let store = Arc::new(engine_store::FileStore::for_file(&file));
    let engine = EngineBuilder::new()
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (engine, connector, store) =
                (engine.clone(), Arc::clone(&connector), Arc::clone(&store));
            tokio::spawn(async move { run_with(&engine, &connector, &*store).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), json!({"ok": "t1"}));
    }
    let token_requests = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|request| request.url.path() == "/token")
        .count();
    assert_eq!(token_requests, 1);
}

/// The runtime works on a current-thread tokio runtime: no `block_in_place` anywhere (it
/// panics there), file locks waited for without blocking the only thread.
#[tokio::test(flavor = "current_thread")]
async fn a_refresh_with_a_file_store_runs_on_a_current_thread_runtime() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t1", &json!({"expires_in": 3600})))
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("i.json");
    fs_err::write(
        &file,
        serde_json::to_string(&instance(&server, &json!({}))).unwrap(),
    )
    .unwrap();
    let store = engine_store::FileStore::for_file(&file);
    let engine = EngineBuilder::new().build().unwrap();
    let (first, second) = tokio::join!(
        run_with(&engine, &connector, &store),
        run_with(&engine, &connector, &store)
    );
    assert_eq!(
        (first.unwrap(), second.unwrap()),
        (json!({"ok": "t1"}), json!({"ok": "t1"}))
    );
    let stored = store.load("i").await.unwrap();
    assert_eq!(
        (stored.state["oauth.user.token"].as_str(), stored.version),
        (Some("t1"), 1)
    );
}

/// A response body over the limit is an error naming the limit, never read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_an_error_naming_it() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(4096)))
        .mount(&server)
        .await;
    let connector = validate(SourceFile::new(
        "c.json",
        r#"{"resources": [{"name": "me", "type": "api", "vendorPath": "/me"}]}"#,
    ))
    .into_connector()
    .unwrap();
    let store = MemoryStore::new();
    store.insert("i", instance(&server, &json!({})));
    let engine = EngineBuilder::new().max_body(1024).build().unwrap();
    let error = run_with(&engine, &connector, &store).await.unwrap_err();
    assert!(
        matches!(error.kind(), RunErrorKind::BodyTooLarge { limit: 1024, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("larger than the limit of 1024 bytes"),
        "{error}"
    );
    // Under the limit, the same answer is read.
    let engine = EngineBuilder::new().max_body(4096).build().unwrap();
    assert_eq!(
        run_with(&engine, &connector, &store).await.unwrap(),
        json!("x".repeat(4096))
    );
}

/// The engine's timeout bounds the whole run: a retry whose pause would pass it is not made.
/// The clock is virtual: the `Retry-After` pauses move it, nothing sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_would_pass_the_run_timeout_is_not_made() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "25"))
        .mount(&server)
        .await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    store.insert("i", instance(&server, &json!({})));
    let clock = ManualClock::new(NOW);
    let engine = EngineBuilder::new()
        .clock(Arc::new(clock.clone()))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let error = run_with(&engine, &connector, &store).await.unwrap_err();
    assert!(
        matches!(error.kind(), RunErrorKind::AuthFailed { status: 503, .. }),
        "{error:?}"
    );
    // One pause of 25 s fits in 30 s, a second does not: two attempts, not three.
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(crate::Clock::now_ms(&clock), NOW + 25_000);
}

/// A transport that never answers, counting the requests it got.
#[derive(Default)]
struct Silent(std::sync::atomic::AtomicUsize);

impl crate::Transport for Silent {
    fn send<'a>(
        &'a self,
        _: &'a crate::PreparedRequest,
    ) -> engine_store::BoxFuture<'a, Result<crate::VendorResponse, crate::TransportError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

/// An attempt still running when the run's timeout ends is cut: one attempt, an error naming
/// the timeout, though a lifecycle request's timeout would be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_running_past_the_run_timeout_is_cut() {
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    let server = MockServer::start().await;
    store.insert("i", instance(&server, &json!({})));
    let silent = Arc::new(Silent::default());
    let engine = EngineBuilder::new()
        .transport(silent.clone())
        .timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let error = run_with(&engine, &connector, &store).await.unwrap_err();
    assert!(
        matches!(error.kind(), RunErrorKind::TimedOut { attempts: 1, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "no answer from `{}/token` within the run's timeout of 0.05 s (every attempt, pause and refresh included; 1 attempt)",
            server.uri()
        )
    );
    assert_eq!(silent.0.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An instance the vendor's rejections marked `needs-reauth` answers at once, without a token
/// request, however long ago that was; once the mark is cleared (new credentials, a sign-in)
/// the refresh goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_marked_needs_reauth_fails_at_once_until_the_mark_is_cleared() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t1", &json!({"expires_in": 3600})))
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    let mut state = instance(&server, &json!({}));
    let marked = engine_store::Schedule {
        status: engine_store::ScheduleStatus::NeedsReauth,
        consecutive_failures: 3,
        ..engine_store::Schedule::default()
    };
    marked.put(&mut state);
    store.insert("i", state.clone());
    let clock = ManualClock::new(NOW);

    for _ in 0..2 {
        let error = run(&connector, &store, &clock).await.unwrap_err();
        assert!(
            matches!(
                error.kind(),
                RunErrorKind::NeedsReauth { rejections: 3, .. }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "instance `i` needs to be signed in again: the vendor rejected its last 3 token \
             requests, and none is sent until its credentials change"
        );
        clock.advance(24 * 3_600_000);
    }
    assert!(server.received_requests().await.unwrap().is_empty());

    engine_store::Schedule::default().put(&mut state);
    store.insert("i", state);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t1"})
    );
}

/// An instance cooling down after failed refreshes answers at once, without a token request;
/// once the cooldown ends the refresh goes through and clears the failure state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooling_down_instance_fails_at_once_and_refreshes_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response("t1", &json!({"expires_in": 3600})))
        .mount(&server)
        .await;
    me_answers(&server, "t1").await;
    let connector = oauth2_connector(r#"{"type": "oauth2ClientCredentials"}"#);
    let store = MemoryStore::new();
    let mut state = instance(&server, &json!({}));
    let failed = engine_store::Schedule {
        status: engine_store::ScheduleStatus::Retrying,
        consecutive_failures: 2,
        next_refresh_at_ms: Some(NOW + 30_000),
        cooldown_until_ms: Some(NOW + 30_000),
        ..engine_store::Schedule::default()
    };
    failed.put(&mut state);
    store.insert("i", state);
    let clock = ManualClock::new(NOW);

    let error = run(&connector, &store, &clock).await.unwrap_err();
    assert!(
        matches!(
            error.kind(),
            RunErrorKind::CoolingDown {
                retry_in_ms: 30_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "instance `i` is cooling down after failed refreshes: its next refresh is due in 30 s"
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    clock.advance(30_000);
    assert_eq!(
        run(&connector, &store, &clock).await.unwrap(),
        json!({"ok": "t1"})
    );
    let schedule = engine_store::Schedule::of(&store.get("i").unwrap()).unwrap();
    assert_eq!(
        schedule,
        engine_store::Schedule {
            next_refresh_at_ms: Some(NOW + 30_000 + 2_880_000 - crate::jitter_ms("i", 3_600_000)),
            expires_at_ms: Some(NOW + 30_000 + 3_600_000),
            ..engine_store::Schedule::default()
        }
    );
}
