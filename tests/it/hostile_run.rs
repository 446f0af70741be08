//! Hostile input and hostile vendors at run time (issue 9): secrets that masking by text cannot
//! find, headers and URLs that cannot be sent, path values that would leave their segment,
//! lifetimes that are no lifetime, and a vendor that never answers. Every test drives the built
//! `engine` binary against servers on 127.0.0.1.

use std::io::Read as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{
    TestContext, form_of, header_of, query_of, received, received_at, run_snapshot, time_ago,
};

/// Fake secrets, each in a form that masking by text alone misses: quotes and a backslash (JSON
/// escapes), spaces and `~` (form encoding), 3 characters (too short to mask by text, and base64
/// of a text holding it).
const WORD: &str = r#"pa"ss\wd"#;
const APP_CODE: &str = "app key~42 x";
const PIN: &str = r#"7"\"#;
const TENANT_KEY: &str = "k/9";
const ACCESS_TOKEN: &str = "FAKE-access-token-51c0";
/// The `X-Account` header the connector sends: base64 of `ada:` and the PIN.
const ACCOUNT: &str = "YWRhOjciXA==";

fn masking_context(server: &MockServer) -> TestContext {
    TestContext::fixture("masking").with_instance(&json!({
        "base.url": server.uri(),
        "account.name": "ada",
        "account.word": WORD,
        "app.code": APP_CODE,
        "pin": PIN,
        "tenant.key": TENANT_KEY,
        "access.token": ACCESS_TOKEN,
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }))
}

/// Every form in which the fake secrets could show: as they are, JSON-escaped, form-encoded,
/// percent-encoded, and the base64 header made from the PIN.
fn secret_forms() -> Vec<String> {
    let form =
        |text: &str| -> String { url::form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let json = |text: &str| {
        let quoted = Value::from(text).to_string();
        quoted[1..quoted.len() - 1].to_owned()
    };
    let mut forms = vec![
        format!("\"{}\"", json(WORD)),
        json(APP_CODE),
        form(APP_CODE),
        form(PIN),
        json(PIN),
        "k%2F9".to_owned(),
        ACCESS_TOKEN.to_owned(),
        ACCOUNT.to_owned(),
    ];
    forms.push("app%20key".to_owned());
    forms.push("app key".to_owned());
    forms
}

#[tokio::test]
async fn secrets_are_masked_by_place_in_a_dry_run_whatever_their_form() {
    let server = MockServer::start().await;
    let context = masking_context(&server);

    let outcome = context.run("search").param("q", "hello").dry_run().output();
    let forms = secret_forms();
    let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
    outcome.assert_success().assert_hides(&forms).assert_masks();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    POST http://[SERVER]/login
    X-Account: ****
    Content-Type: application/json

    {
      "login": {
        "user": "ada",
        "phrase": "****"
      }
    }

    POST http://[SERVER]/tenants/****/search?check=****&q=hello
    X-Account: ****
    X-Ticket: Token ****
    Content-Type: application/x-www-form-urlencoded

    appcode=****

    ----- stderr -----
    "#);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn secrets_are_masked_by_place_in_verbose_lines_and_sent_as_they_are() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"token": ACCESS_TOKEN, "expires_in": 3600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"found": 0})))
        .mount(&server)
        .await;
    let context = masking_context(&server);

    let outcome = context.run("search").param("q", "hello").verbose().output();
    let forms = secret_forms();
    let forms: Vec<&str> = forms.iter().map(String::as_str).collect();
    outcome.assert_success().assert_hides(&forms);
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    {
      "found": 0
    }

    ----- stderr -----
    refresh: token expired at [TIME]; running PROVISION AUTH VALIDATION
    send: PROVISION AUTH VALIDATION: POST http://[SERVER]/login
    receive: 200 in [TIME] ms
    save: access.token, expires_in, authentication.time
    send: search: POST http://[SERVER]/tenants/****/search?check=****&q=hello
    receive: 200 in [TIME] ms
    "#);
    // Masking is for people: the vendor gets every value as it is.
    let login = &received_at(&server, "/login").await[0];
    let body: Value = serde_json::from_slice(&login.body).unwrap();
    assert_eq!(body, json!({"login": {"user": "ada", "phrase": WORD}}));
    let search = &received_at(&server, "/tenants/k%2F9/search").await[0];
    assert_eq!(
        query_of(search),
        [
            ("check".to_owned(), PIN.to_owned()),
            ("q".to_owned(), "hello".to_owned())
        ]
    );
    assert_eq!(
        form_of(search),
        [("appcode".to_owned(), APP_CODE.to_owned())]
    );
    assert_eq!(header_of(search, "x-account"), Some(ACCOUNT));
}

#[tokio::test]
async fn a_vendor_echoing_a_value_made_from_a_secret_is_masked() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": format!("account {ACCOUNT} and code {APP_CODE} rejected"),
        })))
        .mount(&server)
        .await;
    let context = masking_context(&server);
    let mut instance = context.instance();
    instance["authentication.time"] = Value::from(time_ago(0));
    context.write_instance(&instance);

    let outcome = context.run("search").param("q", "hello").output();
    outcome.assert_code(1).assert_hides(&[ACCOUNT, APP_CODE]);
    assert!(
        outcome.stderr.starts_with(
            "error: the vendor answered `search` with 400: account **** and code **** rejected\n"
        ),
        "{}",
        outcome.render()
    );
}

fn hostile_context(server_uri: &str) -> TestContext {
    TestContext::fixture("hostile").with_instance(&json!({
        "base.url": server_uri,
        "client.secret": "FAKE-client-secret-77e1",
    }))
}

#[tokio::test]
async fn headers_that_cannot_be_sent_are_invalid_input_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let context = hostile_context(&server.uri());

    let outcome = context
        .run("item")
        .param("id", "i1")
        .header("X-A", "a\r\nB: 1")
        .output();
    outcome.assert_code(3);
    run_snapshot!(context, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: header `X-A` cannot be sent: its value holds a line break or another control character, which a header value cannot hold (the value is not shown: it may hold a secret); nothing was sent
    hint: fix the value given to `--header`
    ");

    let outcome = context
        .run("item")
        .param("id", "i1")
        .header("Bad Name", "1")
        .output();
    outcome.assert_code(3);
    run_snapshot!(context, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: header name `Bad…` cannot be sent: a header name cannot hold a space; nothing was sent
    hint: write `--header NAME=VALUE`: the name is what comes before the first `=`
    ");

    // `NAME: VALUE` with a `=` in the value: the name holds the value, which is never shown.
    let outcome = context
        .run("item")
        .param("id", "i1")
        .arg("--header")
        .arg("Authorization: Bearer FAKE-s3cr3t==")
        .output();
    outcome
        .assert_code(3)
        .assert_hides(&["FAKE-s3cr3t"])
        .assert_stderr_has(&[
            "error: header name `Authorization…` cannot be sent: a header name cannot hold `:`",
        ]);
    // Not even the token request of the instance, which needs provisioning, went out.
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_base_url_that_is_not_http_is_invalid_input_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let port = server.address().port();
    for base in ["file:///etc".to_owned(), format!("ftp://127.0.0.1:{port}/")] {
        let context = hostile_context(&base);
        let outcome = context.run("item").param("id", "i1").output();
        outcome.assert_code(3).assert_stderr_has(&[
            "is a `",
            "address; the engine sends only `http://` and `https://` requests",
            "hint: set it to the vendor's `http://` or `https://` address",
        ]);
        assert!(
            outcome.stderr.contains("`base.url` is a `file:` address")
                || outcome.stderr.contains("`base.url` is a `ftp:` address"),
            "{}",
            outcome.render()
        );
    }
    let context = hostile_context(&format!("ftp://127.0.0.1:{port}/"));
    let outcome = context.run("item").param("id", "i1").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: invalid URL `ftp://[SERVER]/api/v1/items/i1`: `base.url` is a `ftp:` address; the engine sends only `http://` and `https://` requests
      --> tests/fixtures/run/hostile/connector.json:29:5
       |
    29 |     {
       |     ^ defined here
       |
    hint: set it to the vendor's `http://` or `https://` address in the instance file (or the connector's `defaultValue`)
    "#);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_path_value_is_always_exactly_one_segment() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "FAKE-token-1", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let context = hostile_context(&server.uri());

    // `.`, `..` and nothing cannot be one segment: refused before anything is sent.
    for (value, shown) in [("..", "`..`"), (".", "`.`"), ("", "empty")] {
        let outcome = context.run("item").param("id", value).output();
        outcome.assert_code(3).assert_stderr_has(&[&format!(
            "error: resource `item`: the path value `id` is {shown}, which cannot be sent as one path segment; nothing was sent"
        )]);
    }
    let outcome = context.run("GET:/items/..").output();
    outcome.assert_code(3);
    assert!(received(&server).await.is_empty());

    // Anything else stays in its segment: the server gets the raw path.
    for value in ["a/b", "..%2F", "...", ".hidden", "a\\b", "%2E%2E"] {
        context
            .run("item")
            .param("id", value)
            .output()
            .assert_success();
    }
    let paths: Vec<String> = received(&server)
        .await
        .iter()
        .filter(|request| request.url.path() != "/token")
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v1/items/a%2Fb",
            "/api/v1/items/..%252F",
            "/api/v1/items/...",
            "/api/v1/items/.hidden",
            "/api/v1/items/a%5Cb",
            "/api/v1/items/%252E%252E",
        ]
    );
}

/// A token endpoint answering `body` (raw JSON text) to every token request.
async fn token_server(body: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "application/json"),
        )
        .mount(&server)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "i1"})))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn unusable_lifetimes_become_the_default_and_long_ones_a_year() {
    let year = "31536000";
    for (sent, saved, note) in [
        (
            "-5",
            "3600",
            "note: the vendor's `expires_in` of `-5` is not a number of seconds; the token is taken to live 3600 s (saved as such)",
        ),
        (
            "\"abc\"",
            "3600",
            "note: the vendor's `expires_in` of `abc` is not a number of seconds; the token is taken to live 3600 s (saved as such)",
        ),
        (
            "1e300",
            year,
            "note: the vendor's `expires_in` of `1e+300` is longer than a year; the token is taken to live a year, 31536000 s (saved as such)",
        ),
        (
            "99999999999999999999999",
            year,
            "note: the vendor's `expires_in` of `1e+23` is longer than a year; the token is taken to live a year, 31536000 s (saved as such)",
        ),
    ] {
        let server = token_server(&format!(
            r#"{{"access_token": "FAKE-token-9", "expires_in": {sent}}}"#
        ))
        .await;
        let context = hostile_context(&server.uri());

        // The first run provisions and saves the lifetime it uses, saying so.
        let outcome = context.run("item").param("id", "i1").verbose().output();
        outcome.assert_success().assert_stderr_has(&[note]);
        let instance = context.instance();
        assert_eq!(instance["expires_in"], saved, "{sent}");
        let obtained: u64 = instance["authentication.time"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();

        // The next run believes it: fresh, no token request.
        let outcome = context.run("item").param("id", "i1").verbose().output();
        outcome
            .assert_success()
            .assert_stderr_has(&["token: fresh until "]);
        assert_eq!(received_at(&server, "/token").await.len(), 1, "{sent}");

        // Past that lifetime (an hour, or a year: never "never"), a run refreshes.
        let lifetime_ms: u64 = saved.parse::<u64>().unwrap() * 1000;
        let mut instance = instance;
        instance["authentication.time"] = Value::from((obtained - lifetime_ms - 1000).to_string());
        context.write_instance(&instance);
        let outcome = context.run("item").param("id", "i1").verbose().output();
        outcome
            .assert_success()
            .assert_stderr_has(&["refresh: token expired at "]);
        assert_eq!(received_at(&server, "/token").await.len(), 2, "{sent}");
    }
}

/// A server on 127.0.0.1 that reads requests and never answers; counts the requests.
fn silent_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let mut buffer = [0_u8; 4096];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 {
                        return;
                    }
                    bytes.extend_from_slice(&buffer[..read]);
                    if bytes.windows(4).any(|window| window == b"\r\n\r\n") {
                        counted.fetch_add(1, Ordering::SeqCst);
                        bytes.clear();
                    }
                }
            });
        }
    });
    (port, requests)
}

#[test]
fn the_timeout_bounds_the_whole_command_not_each_attempt() {
    let (port, requests) = silent_server();
    let context = hostile_context(&format!("http://127.0.0.1:{port}"));

    // The token request is a lifecycle request: a timeout would be retried twice. Within the
    // command's 2 s there is time for one attempt only.
    let outcome = context
        .run("item")
        .param("id", "i1")
        .timeout("2")
        .verbose()
        .output();
    outcome.assert_code(5);
    run_snapshot!(context, outcome, @r"
    exit code: 5
    ----- stdout -----

    ----- stderr -----
    refresh: instance not provisioned yet; running PROVISION AUTH VALIDATION
    skip: `Authorization` not sent: `access.token` has no value yet
    send: PROVISION AUTH VALIDATION: POST http://[SERVER]/token
    error: no answer from `http://[SERVER]/token` within the run's timeout of 2 s (every attempt, pause and refresh included; 1 attempt)
      --> tests/fixtures/run/hostile/connector.json:19:5
       |
    19 |     {
       |     ^ defined here
       |
    hint: check that the vendor is reachable, or raise `--timeout` (it bounds the whole command: every attempt, retry pause and token refresh)
    ");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}
