//! JavaScript hooks end to end (docs/hooks.md): `tests/fixtures/run/hooks/connector.json` run by
//! the built `engine` against a loopback server that records the raw requests.

use base64::Engine as _;
use hmac::{Hmac, Mac};
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
