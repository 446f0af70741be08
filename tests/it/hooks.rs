//! JavaScript hooks end to end (docs/hooks.md): `tests/fixtures/run/hooks/connector.json` run by
//! the built `engine` against a loopback server that records the raw requests.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{TestContext, header_of, query_of, received, received_at};

/// Fake credentials: they must never show in any output.
const API_KEY: &str = "FAKE-api-key-77d1";
const SESSION: &str = "FAKE-session-5c2e";

async fn vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"result": format!("<Login><Session>{SESSION}</Session></Login>")}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/items"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": "none yet"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "a-1"})))
        .mount(&server)
        .await;
    server
}

fn context(server: &MockServer, stored: &Value) -> TestContext {
    let mut instance = json!({
        "base.url": server.uri(),
        "account": "acme 1",
        "api.key": API_KEY,
    });
    instance
        .as_object_mut()
        .unwrap()
        .extend(stored.as_object().unwrap().clone());
    TestContext::fixture("hooks").with_instance(&instance)
}

fn signature(method: &str, url: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(API_KEY.as_bytes()).unwrap();
    mac.update(format!("{method} {url}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn a_lifecycle_post_hook_saves_the_token_and_request_hooks_shape_the_call() {
    let server = vendor().await;
    let context = context(&server, &json!({}));

    let outcome = context.run("me").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"id": "a-1"}));

    // The login's post-hook read the session out of the vendor's XML and saved it, with the
    // time it was obtained.
    let instance = context.instance();
    assert_eq!(instance["session.token"], SESSION);
    assert_eq!(instance["expires_in"], "300");
    assert!(instance["authentication.time"].is_string(), "{instance}");

    // The connector-wide pre-hook signed the login and removed `X-Internal`.
    let login = &received_at(&server, "/login").await[0];
    assert_eq!(
        header_of(login, "x-signature"),
        Some(signature("POST", &format!("{}/login", server.uri())).as_str())
    );
    assert_eq!(header_of(login, "x-internal"), None);

    // The resource's pre-hook rewrote the path (a `{placeholder}` from the configuration), set
    // the query and the Authorization header; the connector's ran first and signed the URL as
    // the resource described it.
    let me = &received(&server).await[1];
    assert_eq!(me.url.path(), "/v2/accounts/acme%201");
    assert_eq!(query_of(me), [("fields".to_owned(), "all".to_owned())]);
    assert_eq!(
        header_of(me, "authorization"),
        Some(format!("Session {SESSION}").as_str())
    );
    assert_eq!(
        header_of(me, "x-signature"),
        Some(signature("GET", &format!("{}/v1/me", server.uri())).as_str())
    );
    assert_eq!(header_of(me, "x-internal"), None);
    for secret in [API_KEY, SESSION] {
        assert!(!outcome.stderr.contains(secret), "{}", outcome.stderr);
    }
}

#[tokio::test]
async fn continue_false_answers_without_the_vendor_and_post_hooks_map_answers() {
    let server = vendor().await;
    let fresh = json!({"session.token": SESSION, "authentication.time": "9999999999999", "expires_in": "300"});
    let context = context(&server, &fresh);

    let outcome = context.run("cached").output();
    outcome.assert_success();
    assert_eq!(
        outcome.json(),
        json!({"source": "hook", "seen_by_post": true})
    );
    assert!(received(&server).await.is_empty());

    // A legacy post-hook (`return {...}`) turns the vendor's 404 into an empty list.
    let outcome = context.run("items").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!([]));
    assert_eq!(received_at(&server, "/items").await.len(), 1);
}

#[tokio::test]
async fn a_failing_hook_ends_the_run_naming_it_with_nothing_sent_leaked_or_saved() {
    let server = vendor().await;
    let fresh = json!({"session.token": SESSION, "authentication.time": "9999999999999", "expires_in": "300"});
    let context = context(&server, &fresh);
    let before = context.instance_text();

    for (resource, expected) in [
        (
            "broken",
            "resource `broken`'s `preRequest` hook failed at line 2, column",
        ),
        (
            "spin",
            "resource `spin`'s `preRequest` hook failed: it ran longer than its budget of 250 ms",
        ),
        (
            "files",
            "`preRequest` hook failed at line 1, column 12 of its script: it threw: require('fs') is not available",
        ),
    ] {
        let outcome = context.run(resource).output();
        outcome.assert_code(3);
        assert!(
            outcome.stderr.contains(expected),
            "{resource}: {}",
            outcome.stderr
        );
        assert!(
            outcome
                .stderr
                .contains("tests/fixtures/run/hooks/connector.json:"),
            "{}",
            outcome.stderr
        );
        assert!(!outcome.stderr.contains(API_KEY), "{}", outcome.stderr);
    }
    // The thrown message held the API key: masked.
    let outcome = context.run("broken").output();
    assert!(
        outcome.stderr.contains("cannot sign with ****"),
        "{}",
        outcome.stderr
    );
    assert!(received(&server).await.is_empty());
    assert_eq!(context.instance_text(), before);
}

/// The inputs the platform gave hooks beyond the request as built (docs/hooks.md, "Inputs").
#[tokio::test]
async fn hooks_see_path_variables_the_body_as_text_the_where_parsed_and_the_answer_parsed() {
    let server = MockServer::start().await;
    let context =
        TestContext::fixture("hook-inputs").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context
        .run("inputs")
        .param("objectName", "contacts")
        .param(
            "where",
            "name = 'Ann' AND age >= 21 OR id IN ('a', 'b') AND x IS NULL",
        )
        .body(&json!({"name": "Ann"}))
        .output();
    outcome.assert_success();
    assert_eq!(
        outcome.json(),
        json!({
            "path_variables": {"objectName": "contacts"},
            "body_type": "string",
            "body": {"name": "Ann"},
            "body_map": {"name": "Ann"},
            "expression": [
                {"attribute": "name", "operator": "=", "value": "Ann"},
                {"attribute": "age", "operator": ">=", "value": "21"},
                {"attribute": "id", "operator": "IN", "value": ["a", "b"]},
                {"attribute": "x", "operator": "IS NULL", "value": null},
            ],
            "previous_headers": null,
            "map_keys": ["body", "body_map", "body_type", "expression", "path_variables", "previous_headers"],
        })
    );
    // `continue: false`: the vendor was not called.
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn the_next_link_of_a_chain_sees_the_previous_answer_and_its_headers() {
    let server = MockServer::start().await;
    Mock::given(path("/pages"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("X-Cursor", "c-42")
                .set_body_json(json!({"id": 7})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/next"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"done": true})))
        .mount(&server)
        .await;
    let context =
        TestContext::fixture("hook-inputs").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context.run("pages").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"done": true}));
    let next = &received_at(&server, "/next").await[0];
    assert_eq!(header_of(next, "x-cursor"), Some("c-42"));
    assert_eq!(header_of(next, "x-previous-id"), Some("7"));
}

/// The JWT the fixture's hooks sign at `issued` (epoch seconds): HS256 over the base64url
/// header and payload, as the hook builds them.
fn jwt(issued: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"iss":"p-1","iat":{issued},"exp":{}}}"#,
        issued + 1200
    ));
    let unsigned = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"FAKE-client-secret").unwrap();
    mac.update(unsigned.as_bytes());
    format!(
        "{unsigned}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// An "almost OAuth2" lifecycle made of hooks (adpwfnSDF's token call, democambridgefx's JWT
/// assertion with lodash), under `engine test`: the virtual clock drives `Date.now()` inside
/// hooks (through lodash's `_.now()`), the token saved by a post-hook authenticates the next
/// calls, and an expired session runs `ON REFRESH`'s hooks an hour later.
#[test]
fn a_lifecycle_of_hooks_runs_on_the_virtual_clock_of_engine_test() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("lifecycle.test.json");
    let start = 1_893_456_000_u64; // 2030-01-01T00:00:00Z
    let basic = base64::engine::general_purpose::STANDARD.encode("FAKE-key:FAKE-secret");
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let file = json!({
        "connector": crate::support::repo_root().join("tests/fixtures/run/hook-lifecycle/connector.json"),
        "instance": {"base.url": "https://vendor.test", "api.key": "FAKE-key", "api.secret": "FAKE-secret",
                     "partner.id": "p-1", "client.secret": "FAKE-client-secret"},
        "now": "2030-01-01T00:00:00Z",
        "steps": [
            {
                "name": "first use: the token from a post-hook, then the JWT signed now",
                "run": {"resource": "rates"},
                "exchanges": [
                    {"request": {"method": "POST", "url": "<config:base.url>/oauth/token",
                                 "headers": {"Authorization": format!("Basic {basic}")},
                                 "body": {"grant_type": "client_credentials"}, "exact_body": true},
                     "response": {"body": {"access_token": "FAKE-t1", "expires_in": 300}}},
                    {"request": {"method": "POST", "url": "<config:base.url>/partner/token",
                                 "headers": {"Authorization": "Bearer FAKE-t1"},
                                 "body": {"assertion": jwt(start), "grant_type": grant}, "exact_body": true},
                     "response": {"body": {"access_code": "FAKE-c1"}}},
                    {"request": {"method": "GET", "url": "<config:base.url>/rates",
                                 "headers": {"Authorization": "Bearer FAKE-t1", "X-Client-Code": "FAKE-c1"}},
                     "response": {"body": {"rate": 1.1}}}
                ],
                "expect": {
                    "output": [{"path": "rate", "equals": 1.1}],
                    "instance": {"oauth.token": {"equals": "FAKE-t1"}, "expires_in": {"equals": "300"},
                                 "client.jwt": {"equals": jwt(start)}, "authentication.time": {"equals": "<now>"}}
                }
            },
            {
                "name": "an hour later: ON REFRESH signs a JWT issued then",
                "advance": "1h",
                "run": {"resource": "rates"},
                "exchanges": [
                    {"request": {"method": "POST", "url": "<config:base.url>/partner/token",
                                 "body": {"assertion": jwt(start + 3600), "grant_type": grant}, "exact_body": true},
                     "response": {"body": {"access_code": "FAKE-c2"}}},
                    {"request": {"method": "GET", "url": "<config:base.url>/rates",
                                 "headers": {"Authorization": "Bearer FAKE-t1", "X-Client-Code": "FAKE-c2"}},
                     "response": {"body": {"rate": 1.2}}}
                ],
                "expect": {
                    "output": [{"path": "rate", "equals": 1.2}],
                    "instance": {"client.jwt": {"equals": jwt(start + 3600)}, "authentication.time": {"equals": "<now>"}}
                }
            }
        ]
    });
    fs_err::write(&test, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    let output = crate::support::engine()
        .args(["test", test.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("2 passed, 0 failed"), "{stderr}");
}

/// vsts's token refresh resource (its post-hook reads `response_body_map`) and
/// microsoftgraph's webhook renewal in `ON REFRESH`, whose pre-hook reads an undefined global:
/// the refresh saves what the post-hook returned, skips the renewal with a warning (nothing of
/// it sent) and keeps the new token, which the call then carries.
#[tokio::test]
async fn a_refresh_resource_saves_through_its_post_hook_and_a_failing_side_step_is_skipped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "FAKE-access-2", "refresh_token": "FAKE-refresh-2", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"id": 1}])))
        .mount(&server)
        .await;
    let context = TestContext::fixture("hook-oauth2").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.api.key": "client-1",
        "oauth.api.secret": "FAKE-client-secret",
        "oauth.callback.url": "http://127.0.0.1:1/cb",
        "oauth.user.token": "FAKE-access-1",
        "oauth.user.refresh_token": "FAKE-refresh-1",
        "oauth.user.refresh_time": "1000",
        "oauth.user.refresh_interval": "3600",
    }));

    let outcome = context.run("items").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!([{"id": 1}]));
    assert!(
        outcome.stderr.contains("webhook-renewal")
            && outcome.stderr.contains("event is not defined"),
        "{}",
        outcome.stderr
    );

    let sent = received(&server).await;
    let paths: Vec<&str> = sent.iter().map(|request| request.url.path()).collect();
    assert_eq!(paths, ["/oauth2/token", "/items"]);
    // The pre-hook removed the stale token from the refresh.
    assert_eq!(header_of(&sent[0], "authorization"), None);
    assert_eq!(
        header_of(&sent[1], "authorization"),
        Some("Bearer FAKE-access-2")
    );
    let instance = context.instance();
    assert_eq!(instance["oauth.user.token"], "FAKE-access-2");
    assert_eq!(instance["oauth.user.refresh_token"], "FAKE-refresh-2");
    assert_eq!(instance["oauth.user.refresh_interval"], "3600");
    assert_ne!(instance["oauth.user.refresh_time"], "1000");
    for secret in ["FAKE-access-2", "FAKE-refresh-2", "FAKE-client-secret"] {
        assert!(!outcome.stderr.contains(secret), "{}", outcome.stderr);
    }
}

/// A hook the export carries without its script (no `body`, as some exports were saved): the
/// platform ran one, the engine has nothing to run. Never silent: every run says so with the
/// hook's place (W0501), and `--strict` refuses with nothing sent.
#[tokio::test]
async fn a_hook_without_its_script_is_said_at_run_and_refused_when_strict() {
    let scriptless = |connector: &mut Value| {
        connector["resources"][1]["hooks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "postRequest", "contextParams": "response_body"}));
    };
    let instance = |server: &MockServer| json!({"base.url": server.uri(), "account": "acme 1", "api.key": API_KEY});
    let said = "warning[W0501]: resource `me`'s `postRequest` hook has no script in this export (no `body`): the platform ran one, the engine runs nothing";

    let server = vendor().await;
    let context = TestContext::patched("hooks", scriptless).with_instance(&instance(&server));
    let outcome = context.run("me").arg("--strict").output();
    outcome
        .assert_code(3)
        .assert_stderr_has(&[said, "refused in strict mode"]);
    assert!(received(&server).await.is_empty());

    let server = vendor().await;
    let context = TestContext::patched("hooks", scriptless).with_instance(&instance(&server));
    let outcome = context.run("me").output();
    outcome
        .assert_success()
        .assert_stderr_has(&[said])
        .assert_hides(&[API_KEY, SESSION]);
    assert!(!received(&server).await.is_empty());
}
