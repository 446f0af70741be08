//! The token lifecycle of custom authentication, end to end: provisioning, refresh on expiry
//! (`ON REFRESH`, else provisioning again), session modes, refresh on 401, failed refreshes,
//! transient token-endpoint failures, and single-flight refresh across twenty processes.

use std::path::PathBuf;

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::run::{
    Outcome, TestContext, form_of, header_of, now_ms, received, received_at, run_snapshot,
    time_ago, token_response,
};

const CLIENT_SECRET: &str = "FAKE-client-secret-9f3a";
const OLD_TOKEN: &str = "FAKE-old-token-1111";
const NEW_TOKEN: &str = "FAKE-new-token-2222";
const OLD_REFRESH: &str = "FAKE-old-refresh-3333";
const NEW_REFRESH: &str = "FAKE-new-refresh-4444";

/// The custom connector's credentials, and the state of a token obtained `age` seconds ago that
/// lives an hour.
fn provisioned(server: &MockServer, age: u64) -> Value {
    json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": OLD_TOKEN,
        "refresh.token": OLD_REFRESH,
        "authentication.time": time_ago(age),
        "expires_in": "3600",
    })
}

/// `GET /contacts` answers 200 to `Bearer <token>`, `expect` times.
async fn contacts_for(server: &MockServer, token: &str, expect: u64) {
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"id": "c1", "name": "Ada"}]})),
        )
        .expect(expect)
        .mount(server)
        .await;
}

/// `POST /oauth/token` answers with `NEW_TOKEN` (and `NEW_REFRESH`), `expect` times.
async fn token_endpoint(server: &MockServer, expect: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(NEW_TOKEN, Some(NEW_REFRESH), json!(3600)))
        .expect(expect)
        .mount(server)
        .await;
}

fn form_value(request: &Request, name: &str) -> Option<String> {
    form_of(request)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[track_caller]
fn assert_epoch_ms_between(value: &Value, before: u64, after: u64) {
    let text = value.as_str().expect("`authentication.time` is a string");
    let ms: u64 = text
        .parse()
        .expect("`authentication.time` is epoch milliseconds");
    assert!(
        (before..=after).contains(&ms),
        "{ms} not in {before}..={after}"
    );
}

#[tokio::test]
async fn a_never_provisioned_instance_is_provisioned_first_then_on_provision_runs() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .and(header(
            "authorization",
            format!("Bearer {NEW_TOKEN}").as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "acc-42"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    }));

    let before = now_ms();
    let outcome = context.run("list-contacts").verbose().output();
    let after = now_ms();
    outcome.assert_success().assert_stderr_has(&[
        "refresh: instance not provisioned yet; running PROVISION AUTH VALIDATION",
        "skip: `Authorization` not sent: `access.token` has no value yet",
    ]);
    assert_eq!(outcome.json(), json!([{"id": "c1", "name": "Ada"}]));

    let paths: Vec<String> = received(&server)
        .await
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/oauth/token", "/me", "/contacts"]);
    let token = &received_at(&server, "/oauth/token").await[0];
    // `Bearer ${configuration.access.token}` is left out, not sent as `Bearer `.
    assert_eq!(header_of(token, "authorization"), None);
    assert_eq!(
        form_value(token, "grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(
        form_value(token, "client_secret").as_deref(),
        Some(CLIENT_SECRET)
    );

    let instance = context.instance();
    assert_eq!(instance["access.token"], NEW_TOKEN);
    assert_eq!(instance["refresh.token"], NEW_REFRESH);
    assert_eq!(instance["expires_in"], "3600");
    assert_eq!(instance["account.id"], "acc-42");
    assert_epoch_ms_between(&instance["authentication.time"], before, after);
}

#[tokio::test]
async fn on_provision_saves_its_values_but_not_the_authentication_time() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "acc-7"}})))
        .expect(1)
        .mount(&server)
        .await;
    let mut instance = provisioned(&server, 60);
    instance["authentication.time"] = json!("1700000000000");
    let context = TestContext::fixture("custom").with_instance(&instance);

    context.run("onProvision").output().assert_success();

    let after = context.instance();
    assert_eq!(after["account.id"], "acc-7");
    assert_eq!(after["authentication.time"], "1700000000000");
}

#[tokio::test]
async fn provision_auth_validation_runs_by_label_and_chains_on_provision() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "acc-9"}})))
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    }));

    let before = now_ms();
    context
        .run("PROVISION AUTH VALIDATION")
        .output()
        .assert_success();
    let instance = context.instance();
    assert_eq!(instance["account.id"], "acc-9");
    assert_epoch_ms_between(&instance["authentication.time"], before, now_ms());
}

#[tokio::test]
async fn an_expired_token_is_refreshed_by_on_refresh_before_the_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=refresh_token"))
        .and(body_string_contains(
            format!("refresh_token={OLD_REFRESH}").as_str(),
        ))
        .respond_with(token_response(NEW_TOKEN, Some(NEW_REFRESH), json!("3600")))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));

    let before = now_ms();
    let outcome = context.run("list-contacts").verbose().output();
    outcome
        .assert_success()
        .assert_stderr_has(&["; running ON REFRESH", "save: "]);
    assert!(
        outcome.stderr.contains("refresh: token expired at "),
        "{}",
        outcome.render()
    );

    let instance = context.instance();
    assert_eq!(instance["access.token"], NEW_TOKEN);
    assert_eq!(
        instance["refresh.token"], NEW_REFRESH,
        "the rotated refresh token is kept"
    );
    assert_epoch_ms_between(&instance["authentication.time"], before, now_ms());
    // ON PROVISION runs only after the first provisioning.
    assert!(received_at(&server, "/me").await.is_empty());
}

#[tokio::test]
async fn without_on_refresh_an_expired_token_is_provisioned_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token_response(NEW_TOKEN, None, json!(3600)))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::patched("custom", |connector| {
        let resources = connector["resources"].as_array_mut().unwrap();
        resources.retain(|resource| resource["type"] != "ON REFRESH");
    })
    .with_instance(&provisioned(&server, 7200));

    let outcome = context.run("list-contacts").verbose().output();
    outcome
        .assert_success()
        .assert_stderr_has(&["; running PROVISION AUTH VALIDATION"]);
    assert!(received_at(&server, "/me").await.is_empty());
    assert_eq!(context.instance()["refresh.token"], OLD_REFRESH);
}

#[tokio::test]
async fn a_refresh_answer_without_a_refresh_token_keeps_the_old_one() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(NEW_TOKEN, None, json!(3600)))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));

    context.run("list-contacts").output().assert_success();
    let instance = context.instance();
    assert_eq!(instance["access.token"], NEW_TOKEN);
    assert_eq!(instance["refresh.token"], OLD_REFRESH);
}

#[tokio::test]
async fn expires_in_is_read_as_a_number_a_string_or_a_float() {
    for (expires_in, stored) in [
        (json!(3600), "3600"),
        (json!("3600"), "3600"),
        (json!(3600.0), "3600.0"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(token_response(NEW_TOKEN, None, expires_in.clone()))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/me"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&server)
            .await;
        contacts_for(&server, NEW_TOKEN, 2).await;
        let context = TestContext::fixture("custom").with_instance(&json!({
            "base.url": server.uri(),
            "client.id": "demo-client",
            "client.secret": CLIENT_SECRET,
        }));

        context.run("list-contacts").output().assert_success();
        assert_eq!(context.instance()["expires_in"], stored, "{expires_in}");
        // The second run finds the token fresh for an hour: no second token request.
        let outcome = context.run("list-contacts").verbose().output();
        outcome
            .assert_success()
            .assert_stderr_has(&["token: fresh until "]);
        server.verify().await;
    }
}

#[tokio::test]
async fn session_fixed_uses_the_session_timeout_instead_of_expires_in() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    contacts_for(&server, OLD_TOKEN, 1).await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::patched("custom", |connector| {
        connector["session"] = json!({"management": "fixed", "timeout": 60, "skew": 0});
    });

    // 30 s old: fresh under a 60 s session, whatever `expires_in` says.
    let mut instance = provisioned(&server, 30);
    instance["expires_in"] = json!("1");
    context.write_instance(&instance);
    context.run("list-contacts").output().assert_success();

    // 90 s old: stale under a 60 s session although `expires_in` says an hour.
    context.write_instance(&provisioned(&server, 90));
    context
        .run("list-contacts")
        .verbose()
        .output()
        .assert_success()
        .assert_stderr_has(&["refresh: token expired at "]);
}

#[tokio::test]
async fn session_none_never_refreshes() {
    let server = MockServer::start().await;
    token_endpoint(&server, 0).await;
    contacts_for(&server, OLD_TOKEN, 1).await;
    let context = TestContext::patched("custom", |connector| {
        connector["session"] = json!({"management": "none"});
    })
    .with_instance(&provisioned(&server, 30 * 24 * 3600));

    context
        .run("list-contacts")
        .verbose()
        .output()
        .assert_success()
        .assert_stderr_has(&["token: no expiry to check"]);
}

#[tokio::test]
async fn session_always_refreshes_before_every_call() {
    let server = MockServer::start().await;
    token_endpoint(&server, 2).await;
    contacts_for(&server, NEW_TOKEN, 2).await;
    let context = TestContext::patched("custom", |connector| {
        connector["session"] = json!({"management": "always"});
    })
    .with_instance(&provisioned(&server, 1));

    for _ in 0..2 {
        context
            .run("list-contacts")
            .verbose()
            .output()
            .assert_success()
            .assert_stderr_has(&["refresh: session management is `always`; running ON REFRESH"]);
    }
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_call_retried_once() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header(
            "authorization",
            format!("Bearer {OLD_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_token"})))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    // Fresh by the clock, revoked by the vendor.
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 10));

    let outcome = context.run("list-contacts").verbose().output();
    outcome.assert_success().assert_stderr_has(&[
        "refresh: the vendor rejected the token with 401; running ON REFRESH",
    ]);
    assert_eq!(context.instance()["access.token"], NEW_TOKEN);
}

#[tokio::test]
async fn a_second_rejection_exits_4_without_looping() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_token"})))
        .expect(2)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 10));

    let outcome = context.run("list-contacts").output();
    outcome
        .assert_hides(&[OLD_TOKEN, NEW_TOKEN, CLIENT_SECRET])
        .assert_code(4);
    run_snapshot!(context, outcome, @"
    exit code: 4
    ----- stdout -----

    ----- stderr -----
    error: the vendor rejected the token for `list-contacts` with 401 even after a refresh
    hint: fix the credentials in `[TEMP]/instance.json`, then provision again: `engine run tests/fixtures/run/custom/connector.json provisionAuthValidation --config [TEMP]/instance.json`
    ");
    // The refreshed token is kept: the refresh itself worked.
    assert_eq!(context.instance()["access.token"], NEW_TOKEN);
}

#[tokio::test]
async fn refresh_on_status_is_configurable() {
    let server = MockServer::start().await;
    token_endpoint(&server, 1).await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header(
            "authorization",
            format!("Bearer {OLD_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(403))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::patched("custom", |connector| {
        connector["session"] = json!({"refreshOnStatus": [401, 403]});
    })
    .with_instance(&provisioned(&server, 10));

    context.run("list-contacts").output().assert_success();
}

/// Plays another process: while the vendor rejects the old token, that process has already
/// refreshed and written its new token to the instance file.
struct RefreshedElsewhere {
    instance: PathBuf,
    state: Value,
}

impl Respond for RefreshedElsewhere {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        fs_err::write(&self.instance, format!("{:#}\n", self.state))
            .expect("writing the other process's state");
        ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_token"}))
    }
}

#[tokio::test]
async fn a_rejection_after_another_process_refreshed_retries_with_its_token() {
    let server = MockServer::start().await;
    token_endpoint(&server, 0).await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 10));
    let mut theirs = provisioned(&server, 0);
    theirs["access.token"] = json!(NEW_TOKEN);
    theirs["refresh.token"] = json!(NEW_REFRESH);
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .and(header(
            "authorization",
            format!("Bearer {OLD_TOKEN}").as_str(),
        ))
        .respond_with(RefreshedElsewhere {
            instance: context.instance_path().to_owned(),
            state: theirs.clone(),
        })
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;

    let outcome = context.run("list-contacts").verbose().output();
    outcome.assert_success().assert_stderr_has(&[
        "refresh: another process refreshed while we waited; using its token",
    ]);
    assert_eq!(context.instance(), theirs);
}

#[tokio::test]
async fn a_failed_refresh_exits_4_and_leaves_the_instance_untouched() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "the refresh token was revoked",
        })))
        .expect(1)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 0).await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));
    let before = context.instance_text();

    let outcome = context.run("list-contacts").output();
    outcome
        .assert_code(4)
        .assert_hides(&[OLD_TOKEN, OLD_REFRESH, CLIENT_SECRET]);
    run_snapshot!(context, outcome, @r#"
    exit code: 4
    ----- stdout -----

    ----- stderr -----
    error: authentication failed: `ON REFRESH` answered 400: invalid_grant: the refresh token was revoked
      --> tests/fixtures/run/custom/connector.json:36:5
       |
    36 |     {
       |     ^ defined here
       |
    hint: fix the credentials in `[TEMP]/instance.json`, then provision again: `engine run tests/fixtures/run/custom/connector.json provisionAuthValidation --config [TEMP]/instance.json`
    caused by: the vendor answered: {"error":"invalid_grant","error_description":"the refresh token was revoked"}
    "#);
    assert_eq!(context.instance_text(), before);
}

/// A `200` that holds no token (a maintenance page) is not a refresh: exit 4 with the vendor's
/// answer, no call made with a missing token, nothing saved (`authentication.time` included).
#[tokio::test]
async fn a_refresh_answered_200_without_a_token_exits_4_and_saves_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("<html>down for maintenance</html>", "text/html"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .expect(0)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));
    let before = context.instance_text();

    let outcome = context.run("list-contacts").output();
    outcome
        .assert_code(4)
        .assert_hides(&[OLD_TOKEN, OLD_REFRESH, CLIENT_SECRET]);
    run_snapshot!(context, outcome, @"
    exit code: 4
    ----- stdout -----

    ----- stderr -----
    error: authentication failed: `ON REFRESH` answered without `access_token`
      --> tests/fixtures/run/custom/connector.json:36:5
       |
    36 |     {
       |     ^ defined here
       |
    hint: the vendor answered without the token: if it is down, run again later; if it sends the token under another name, map that name instead of `access_token`
    caused by: the vendor answered: <html>down for maintenance</html>
    ");
    assert_eq!(context.instance_text(), before);
}

/// A token endpoint that redirects is not followed, even to its own host: the refresh token
/// and the client secret are posted to the URL the connector names and nowhere else.
#[tokio::test]
async fn token_requests_never_follow_redirects() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(307).insert_header(
            "location",
            format!("{}/oauth/token", elsewhere.uri()).as_str(),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": NEW_TOKEN})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));
    let before = context.instance_text();

    let outcome = context.run("list-contacts").output();
    outcome
        .assert_code(4)
        .assert_hides(&[OLD_TOKEN, OLD_REFRESH, CLIENT_SECRET]);
    assert!(
        outcome
            .stderr
            .contains("authentication failed: `ON REFRESH` answered 307")
            && outcome
                .stderr
                .contains("hint: the token endpoint redirects"),
        "{}",
        outcome.stderr
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
    assert_eq!(context.instance_text(), before);
}

#[tokio::test]
async fn transient_token_endpoint_failures_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(500).set_body_string("try later"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(NEW_TOKEN, Some(NEW_REFRESH), json!(3600)))
        .expect(1)
        .with_priority(3)
        .mount(&server)
        .await;
    contacts_for(&server, NEW_TOKEN, 1).await;
    let context = TestContext::fixture("custom").with_instance(&provisioned(&server, 7200));

    let outcome = context.run("list-contacts").verbose().output();
    // The backoff is jittered (at most 200 ms before the second attempt); a `Retry-After: 1`
    // is obeyed exactly.
    outcome.assert_success().assert_stderr_has(&[
        "after status 500",
        "retry: attempt 3 in 1000 ms after status 429",
    ]);
    let pause: u64 = outcome
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("retry: attempt 2 in "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .expect("a retry line for attempt 2");
    assert!(pause <= 200, "{pause} ms");
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 3);
}

#[test]
fn twenty_processes_on_an_expired_instance_refresh_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let context = TestContext::for_connector("connectors/demo.json").with_instance(&json!({
        "base.url": emulator.url(),
        "client.id": "demo-client",
        "client.secret": "demo-secret",
        "access.token": "at_expired_long_ago",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }));

    let children: Vec<_> = (0..20)
        .map(|_| context.run("list-contacts").param("limit", "1").spawn())
        .collect();
    let outcomes: Vec<Outcome> = children.into_iter().map(Outcome::of).collect();

    for outcome in &outcomes {
        outcome.assert_success();
        assert_eq!(
            outcome.json(),
            json!([{"id": "c1", "name": "Ada Lovelace", "email": "ada@example.com"}])
        );
    }
    let stats = emulator.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        (stats.api_calls, stats.api_unauthorized),
        (20, 0),
        "{stats:?}"
    );
    let instance = context.instance();
    assert_ne!(instance["access.token"], "at_expired_long_ago");
    runtime.block_on(emulator.shutdown());
}

/// Issue 11: 500 tasks of one process (the runtime as a library, a file store) and 10 `engine run`
/// processes, all on one expired instance, produce exactly one token request; the tasks' process
/// uses a bounded number of threads (the waiters wait on an async lock, not on a thread each).
/// The runtime counts its own threads as they start and stop: other tests running in this
/// process, and the machine's speed, change nothing.
#[test]
fn five_hundred_tasks_and_ten_processes_refresh_once() {
    let emulator_runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = emulator_runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let context = TestContext::for_connector("connectors/demo.json").with_instance(&json!({
        "base.url": emulator.url(),
        "client.id": "demo-client",
        "client.secret": "demo-secret",
        "access.token": "at_expired_long_ago",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }));
    let connector = engine_spec::load(&crate::support::repo_root().join("connectors/demo.json"))
        .unwrap()
        .into_connector()
        .unwrap();
    let connector = std::sync::Arc::new(connector);
    let store = std::sync::Arc::new(engine_store::FileStore::for_file(context.instance_path()));
    let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .on_thread_start({
            let (live, peak) = (std::sync::Arc::clone(&live), std::sync::Arc::clone(&peak));
            move || {
                let now = live.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .on_thread_stop({
            let live = std::sync::Arc::clone(&live);
            move || {
                live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .enable_all()
        .build()
        .unwrap();
    let children: Vec<_> = (0..10)
        .map(|_| context.run("list-contacts").param("limit", "1").spawn())
        .collect();
    let results: Vec<Result<serde_json::Value, engine_runtime::RunError>> =
        runtime.block_on(async {
            let engine = engine_runtime::Engine::new().unwrap();
            let tasks: Vec<_> = (0..500)
                .map(|_| {
                    let (engine, connector, store) = (
                        engine.clone(),
                        std::sync::Arc::clone(&connector),
                        std::sync::Arc::clone(&store),
                    );
                    tokio::spawn(async move {
                        let inputs = engine_runtime::Inputs {
                            params: vec![("limit".into(), "1".into())],
                            ..engine_runtime::Inputs::default()
                        };
                        let request = engine_runtime::RunRequest {
                            connector: &connector,
                            selector: "list-contacts",
                            inputs: &inputs,
                            instance: "instance",
                        };
                        engine
                            .run(&request, &*store, &engine_runtime::NoObserver)
                            .await
                            .map(|output| output.body.into_value())
                    })
                })
                .collect();
            let mut results = Vec::new();
            for task in tasks {
                results.push(task.await.unwrap());
            }
            results
        });
    let outcomes: Vec<Outcome> = children.into_iter().map(Outcome::of).collect();

    let expected = json!([{"id": "c1", "name": "Ada Lovelace", "email": "ada@example.com"}]);
    for result in results {
        assert_eq!(result.unwrap(), expected);
    }
    for outcome in &outcomes {
        outcome.assert_success();
        assert_eq!(outcome.json(), expected);
    }
    let stats = emulator.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(
        (stats.api_calls, stats.api_unauthorized),
        (510, 0),
        "{stats:?}"
    );
    // The runtime's 2 workers and at most 4 blocking threads, whatever the number of tasks.
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak <= 2 + 4, "{peak} runtime threads for 500 tasks");
    emulator_runtime.block_on(emulator.shutdown());
}

#[test]
fn the_demo_connector_survives_token_expiry_on_the_emulator() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let context = TestContext::for_connector("connectors/demo.json").with_instance(&json!({
        "base.url": emulator.url(),
        "client.id": "demo-client",
        "client.secret": "demo-secret",
    }));

    context.run("me").output().assert_success();
    let first = context.instance()["access.token"].clone();
    // The vendor expires the token early: the next call gets a 401, refreshes and retries.
    emulator.expire_all_tokens();
    let outcome = context.run("me").verbose().output();
    outcome
        .assert_success()
        .assert_stderr_has(&["the vendor rejected the token with 401"]);
    assert_eq!(outcome.json()["id"], "acc-42");
    assert_ne!(context.instance()["access.token"], first);
    let stats = emulator.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.api_calls,
            stats.api_unauthorized
        ),
        (2, 3, 1),
        "{stats:?}"
    );
    runtime.block_on(emulator.shutdown());
}
