//! The token lifecycle as the platform ran an export's own lifecycle resources: provisioning on
//! first use for every authentication (Basic here), `engine authorize` driven by the
//! connector's `oauthOnAuthorizeUrl` and `oauthOnTokenExchange` resources and their hooks, and
//! the password grant sent by an `oauth2Password` resource. Each against a loopback server that
//! records the raw requests, in order.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fidelity::raw_requests;
use crate::support::run::{Outcome, TestContext, closed_port, run_snapshot};

const TOKEN: &str = "FAKE-platform-token-8080";
const SECRET: &str = "FAKE-client-secret-4242";

async fn answer(server: &MockServer, verb: &str, at: &str, body: serde_json::Value) {
    Mock::given(method(verb))
        .and(path(at))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

/// A Basic connector's `PROVISION AUTH VALIDATION` and `ON PROVISION` run once, in file order
/// and with the instance's credentials, before the first call of a new instance; the instance is
/// then marked provisioned and the next call goes alone.
#[tokio::test]
async fn basic_provisioning_runs_once_before_the_first_call() {
    let server = MockServer::start().await;
    answer(&server, "GET", "/validate", json!({"ok": true})).await;
    answer(&server, "GET", "/me", json!({"id": "acc-31"})).await;
    answer(&server, "GET", "/contacts", json!([])).await;
    let context = TestContext::fixture("basic-provisioning").with_instance(&json!({
        "base.url": server.uri(), "username": "ada", "password": SECRET}));
    context.run("contacts").output().assert_success();
    context.run("contacts").output().assert_success();
    insta::assert_snapshot!(raw_requests(&server).await, @"
    GET /validate
    authorization: Basic YWRhOkZBS0UtY2xpZW50LXNlY3JldC00MjQy
    ---
    GET /me
    authorization: Basic YWRhOkZBS0UtY2xpZW50LXNlY3JldC00MjQy
    ---
    GET /contacts
    authorization: Basic YWRhOkZBS0UtY2xpZW50LXNlY3JldC00MjQy
    ---
    GET /contacts
    authorization: Basic YWRhOkZBS0UtY2xpZW50LXNlY3JldC00MjQy
    ");
    let instance = context.instance();
    assert_eq!(instance["account.id"], "acc-31");
    assert!(instance["authentication.time"].is_string(), "{instance}");
}

/// The password grant goes out as the connector's `oauth2Password` resource sends it: its form,
/// the Basic header its pre-request hook makes from the client credentials the platform gave it,
/// and the token its post-request hook saves; the API call then carries it.
#[tokio::test]
async fn an_oauth2_password_resource_obtains_the_token() {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/oauth/token",
        json!({"access_token": TOKEN, "refresh_token": "FAKE-refresh-1", "expires_in": 3600}),
    )
    .await;
    answer(&server, "GET", "/jobs", json!([])).await;
    let context = TestContext::fixture("password-resource").with_instance(&json!({
        "base.url": server.uri(), "oauth.token.url": format!("{}/oauth/token", server.uri()),
        "oauth.api.key": "demo-client", "oauth.api.secret": SECRET,
        "username": "ada", "password": "FAKE-password-77"}));
    let outcome = context.run("jobs").output();
    outcome
        .assert_success()
        .assert_hides(&[TOKEN, SECRET, "FAKE-password-77"]);
    // The Basic header is the client's `demo-client:FAKE-client-secret-4242`.
    insta::assert_snapshot!(raw_requests(&server).await, @"
    POST /oauth/token
    authorization: Basic ZGVtby1jbGllbnQ6RkFLRS1jbGllbnQtc2VjcmV0LTQyNDI=
    content-type: application/x-www-form-urlencoded

    grant_type=password&username=ada&password=FAKE-password-77
    ---
    GET /jobs
    authorization: Bearer FAKE-platform-token-8080
    ");
    let instance = context.instance();
    assert_eq!(instance["oauth.user.token"], TOKEN);
    assert_eq!(instance["oauth.user.refresh_token"], "FAKE-refresh-1");
}

/// `engine authorize` with the export's own sign-in: the `oauthOnAuthorizeUrl` resource runs and
/// its answer (the URL its hooks built) is the URL to open, with the flow's `state` and
/// `redirect_uri` added; the `oauthOnTokenExchange` resource sends the code to the URL its hook
/// builds (the code query parameter kept); then the new instance is provisioned with the token
/// (`ON PROVISION`, whose post-request hook saves a key), and a run goes straight to the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_runs_the_exports_authorize_url_exchange_and_provisioning() {
    let server = MockServer::start().await;
    answer(&server, "GET", "/authorize", json!({})).await;
    answer(&server, "GET", "/token", json!({"access_token": TOKEN})).await;
    answer(
        &server,
        "GET",
        "/merchants/m-9/key",
        json!({"prefix": "k1"}),
    )
    .await;
    answer(&server, "GET", "/orders", json!([])).await;
    let port = closed_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let context = TestContext::fixture("platform-oauth").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.authorization.url": format!("{}/authorize", server.uri()),
        "oauth.token.url": format!("{}/token", server.uri()),
        "oauth.callback.url": callback,
        "oauth.api.key": "demo-client", "oauth.api.secret": SECRET,
        "merchant.id": "m-9"}));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .arg("authorize")
        .arg(context.connector())
        .args(["--no-browser", "--timeout", "30", "--config"])
        .arg(context.instance_path())
        .current_dir(crate::support::repo_root())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = match url::Url::parse(line.trim()) {
        Ok(url) => url,
        Err(error) => panic!("{error}: {line:?}\n{}", Outcome::of(child).render()),
    };
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let state = pairs
        .iter()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.clone())
        .unwrap();
    assert_eq!(url.path(), "/authorize");
    assert_eq!(
        pairs
            .iter()
            .map(|(name, value)| match name.as_str() {
                "state" => format!("{name}=STATE"),
                _ => format!("{name}={value}"),
            })
            .collect::<Vec<_>>(),
        [
            "client_id=demo-client".to_owned(),
            "merchant_id=m-9".to_owned(),
            "state=STATE".to_owned(),
            format!("redirect_uri={callback}"),
        ]
    );
    let mut page = None;
    for _ in 0..50 {
        match crate::support::get(format!("{callback}?code=FAKE-code-123&state={state}")).await {
            Ok(response) => {
                page = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(page.unwrap().status(), 200);
    Outcome::of(child)
        .assert_success()
        .assert_hides(&[TOKEN, SECRET]);
    context.run("orders").output().assert_success();
    insta::assert_snapshot!(raw_requests(&server).await.replace(SECRET, "SECRET"), @"
    GET /authorize?client_id=demo-client&merchant_id=m-9
    ---
    GET /token?client_id=demo-client&client_secret=SECRET&code=FAKE-code-123
    ---
    GET /merchants/m-9/key
    authorization: Bearer FAKE-platform-token-8080
    ---
    GET /orders
    authorization: Bearer FAKE-platform-token-8080
    ");
    let instance = context.instance();
    assert_eq!(instance["oauth.user.token"], TOKEN);
    assert_eq!(instance["payments.key"], r#"{"prefix":"k1"}"#);
    assert!(instance["authentication.time"].is_string(), "{instance}");
}

async fn skips_vendor() -> MockServer {
    let server = MockServer::start().await;
    answer(
        &server,
        "POST",
        "/token",
        json!({"access_token": TOKEN, "expires_in": 3600}),
    )
    .await;
    answer(&server, "GET", "/validate", json!({})).await;
    answer(&server, "GET", "/account", json!({"id": "acc-5"})).await;
    answer(&server, "GET", "/contacts", json!([])).await;
    server
}

fn skips_instance(server: &MockServer) -> serde_json::Value {
    json!({"base.url": server.uri(), "oauth.token.url": format!("{}/token", server.uri()),
           "oauth.api.key": "demo-client"})
}

/// First use of an OAuth2 instance: the token, then provisioning in file order, the
/// `nextResource` of `PROVISION AUTH VALIDATION` resolving to a resource of another hub (sent
/// once though provisioning reaches it again), and an `ON PROVISION` nothing can fill skipped
/// with a warning naming it and its place in the file.
#[tokio::test]
async fn provisioning_follows_a_chain_into_another_hub_and_skips_what_it_cannot_build() {
    let server = skips_vendor().await;
    let context = TestContext::fixture("lifecycle-skips").with_instance(&skips_instance(&server));
    let outcome = context.run("contacts").output();
    outcome.assert_success().assert_hides(&[TOKEN]);
    run_snapshot!(context, outcome, @"
    exit code: 0
    ----- stdout -----
    []

    ----- stderr -----
    warning: lifecycle resource `POST /hubs/general/webhooks/{hookId}` was not sent: it cannot be executed as the platform did (resource `POST /hubs/general/webhooks/{hookId}` needs the input `hookId`)
      --> tests/fixtures/run/lifecycle-skips/connector.json:22:5
       |
    22 |     {
       |     ^ skipped
    ");
    insta::assert_snapshot!(raw_requests(&server).await, @"
    POST /token
    content-type: application/x-www-form-urlencoded

    grant_type=client_credentials&client_id=demo-client
    ---
    GET /validate
    authorization: Bearer FAKE-platform-token-8080
    ---
    GET /account
    authorization: Bearer FAKE-platform-token-8080
    ---
    GET /contacts
    authorization: Bearer FAKE-platform-token-8080
    ");
    assert_eq!(context.instance()["account.id"], "acc-5");
}

/// After a refresh, an `ON REFRESH` nothing can fill (a webhook renewal with no id) is skipped
/// with a warning, never sent half-built; the call goes on with the new token.
#[tokio::test]
async fn an_on_refresh_that_cannot_be_built_is_skipped_with_a_warning() {
    let server = skips_vendor().await;
    let mut instance = skips_instance(&server);
    instance["oauth.user.token"] = json!("FAKE-old-token-1");
    instance["oauth.user.refresh_time"] = json!("1000");
    instance["oauth.user.refresh_interval"] = json!("3600");
    instance["authentication.time"] = json!("1000");
    let context = TestContext::fixture("lifecycle-skips").with_instance(&instance);
    let outcome = context.run("contacts").output();
    outcome.assert_success().assert_hides(&[TOKEN]);
    run_snapshot!(context, outcome, @"
    exit code: 0
    ----- stdout -----
    []

    ----- stderr -----
    warning: lifecycle resource `PATCH /hubs/general/subscriptions/{id}` was not sent: it cannot be executed as the platform did (resource `PATCH /hubs/general/subscriptions/{id}` needs the input `id`)
      --> tests/fixtures/run/lifecycle-skips/connector.json:39:5
       |
    39 |     {
       |     ^ skipped
    ");
    insta::assert_snapshot!(raw_requests(&server).await, @"
    POST /token
    content-type: application/x-www-form-urlencoded

    grant_type=client_credentials&client_id=demo-client
    ---
    GET /contacts
    authorization: Bearer FAKE-platform-token-8080
    ");
}

/// Hooks see a declared configuration key without a value as `null`, as on the platform: an
/// export's `PROVISION AUTH VALIDATION` that registers the instance only when
/// `configuration.token === null` is sent on first use, and its post-request hook saves the token
/// the API call then carries.
#[tokio::test]
async fn hooks_see_unset_declared_keys_as_null_so_a_new_instance_registers() {
    let server = MockServer::start().await;
    answer(&server, "POST", "/instances", json!({"token": TOKEN})).await;
    answer(&server, "GET", "/objects", json!([])).await;
    let context = TestContext::fixture("new-instance-hook")
        .with_instance(&json!({"base.url": server.uri(), "user": "ada"}));
    context.run("objects").output().assert_success();
    insta::assert_snapshot!(raw_requests(&server).await, @r#"
    POST /instances
    authorization: User ada
    content-type: application/json

    {"name":"ada"}
    ---
    GET /objects
    authorization: Element FAKE-platform-token-8080, User ada
    "#);
    assert_eq!(context.instance()["token"], TOKEN);
}
