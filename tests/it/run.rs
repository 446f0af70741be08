//! `engine run` end to end: how requests are built from every parameter kind, how responses are
//! read, what the caller sees (stdout data, stderr messages, exit codes), `--dry-run`, `-v` and
//! redaction. The token lifecycle is in `lifecycle.rs`, the state file in `store.rs`.

use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{
    TestContext, closed_port, form_of, header_of, headers_of, query_of, received, received_at,
    run_snapshot, time_ago, token_response,
};

/// Fake credentials: they must never show in any output.
const CLIENT_SECRET: &str = "FAKE-client-secret-9f3a";
const PASSWORD: &str = "FAKE-password-71c2";
const APP_KEY: &str = "FAKE-app-key-5e0b";
const ACCESS_TOKEN: &str = "FAKE-access-token-3b8e";
const VENDOR_REF: &str = "FAKE-vendor-ref-d41d";
const PIN: &str = "FAKE-pin-0042";

/// A server that answers every request with `{"ok": true}`.
async fn ok_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    server
}

fn params_context(server: &MockServer) -> TestContext {
    TestContext::fixture("params").with_instance(&json!({
        "base.url": server.uri(),
        "tenant": "acme",
    }))
}

#[tokio::test]
async fn request_kinds_reach_the_vendor_where_the_connector_maps_them() {
    let server = ok_server().await;
    let context = params_context(&server);

    let outcome = context
        .run("update-item")
        .param("id", "a b/c")
        .param("q", "hello world")
        .param("count", "3")
        .param("ratio", "2.5")
        .param("active", "true")
        .param("note", "007")
        .param("ignored", "dropped-value")
        .header("X-Request-Id", "req-7")
        .header("X-Extra", "passed-through")
        .body(&json!({"label": "Blue", "unused": "not sent"}))
        .output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"ok": true}));

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "PATCH");
    // `${configuration.tenant}` in the vendor path, `{item_id}` percent-encoded.
    assert_eq!(request.url.path(), "/tenants/acme/items/a%20b%2Fc");
    assert_eq!(
        query_of(request),
        [
            ("version", "v1"),
            ("region", "eu"),
            ("search", "hello world")
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
    assert_eq!(header_of(request, "accept"), Some("application/json"));
    assert_eq!(header_of(request, "x-tenant"), Some("acme"));
    // The resource's `X-Layer` replaces the global one instead of adding a second value.
    assert_eq!(headers_of(request, "x-layer"), ["resource"]);
    // base64("acme:eu"): handlebars helpers over configuration keys, the default region.
    assert_eq!(header_of(request, "x-tenant-region"), Some("YWNtZTpldQ=="));
    assert_eq!(header_of(request, "x-encoded"), Some("a%20b%26c"));
    // A header input goes out under its vendor name; one no parameter takes goes out as is.
    assert_eq!(header_of(request, "x-correlation-id"), Some("req-7"));
    assert_eq!(header_of(request, "x-request-id"), None);
    assert_eq!(header_of(request, "x-extra"), Some("passed-through"));
    // Dotted vendor names nest; `dataType` makes numbers and booleans; strings stay strings; the
    // caller body is not sent whole when a parameter takes a field of it; `no-op` sends nothing.
    assert_eq!(
        request.body_json::<Value>().unwrap(),
        json!({
            "item": {"count": 3, "ratio": 2.5, "flags": {"active": true}, "label": "Blue"},
            "note": "007"
        })
    );
    let everything = format!("{request:?}");
    assert!(!everything.contains("dropped-value"), "{everything}");
}

#[tokio::test]
async fn form_inputs_and_values_build_an_urlencoded_body() {
    let server = ok_server().await;
    let context = params_context(&server);

    context
        .run("submit-form")
        .param("title", "Fish & chips")
        .param("tags", "a,b")
        .output()
        .assert_success();

    let requests = received_at(&server, "/forms").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        header_of(&requests[0], "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        form_of(&requests[0]),
        [
            ("form_title", "Fish & chips"),
            ("tags", "a,b"),
            ("region", "eu")
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
    );
}

#[tokio::test]
async fn body_inputs_are_sent_whole() {
    let server = ok_server().await;
    let context = params_context(&server);
    let body = json!({"name": "Ada", "tags": ["x", "y"], "n": 1.5});

    context
        .run("send-body")
        .body(&body)
        .output()
        .assert_success();
    // A resource without body parameters still sends the caller's body, here from a file.
    let file = context.dir().join("body.json");
    fs_err::write(&file, body.to_string()).unwrap();
    context
        .run("pass-through")
        .arg("--body")
        .arg(&file)
        .output()
        .assert_success();

    for path in ["/bodies", "/raw"] {
        let requests = received_at(&server, path).await;
        assert_eq!(requests.len(), 1, "{path}");
        assert_eq!(requests[0].body_json::<Value>().unwrap(), body, "{path}");
        assert_eq!(
            header_of(&requests[0], "content-type"),
            Some("application/json")
        );
    }
}

#[tokio::test]
async fn absolute_vendor_paths_ignore_the_base_url() {
    let base = ok_server().await;
    let other = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/elsewhere/status"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"where": "other"})))
        .expect(1)
        .mount(&other)
        .await;
    let context = TestContext::fixture("params").with_instance(&json!({
        "base.url": base.uri(),
        "tenant": "acme",
        "other.url": other.uri(),
    }));

    let outcome = context.run("absolute").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"where": "other"}));
    assert!(received(&base).await.is_empty());
}

#[tokio::test]
async fn method_and_path_selectors_bind_path_variables() {
    let server = ok_server().await;
    let context = params_context(&server);

    context.run("GET:/contacts/c42").output().assert_success();
    context
        .run("get-contact")
        .param("id", "c 43")
        .output()
        .assert_success();
    context
        .run("GET:/contacts")
        .param("limit", "2")
        .output()
        .assert_success();

    let paths: Vec<String> = received(&server)
        .await
        .iter()
        .map(|request| {
            format!(
                "{}?{}",
                request.url.path(),
                request.url.query().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            "/crm/contacts/c42?version=v1",
            "/crm/contacts/c%2043?version=v1",
            "/crm/contacts?version=v1&limit=2"
        ]
    );
    // The global `X-Layer` applies where the resource does not override it.
    assert_eq!(
        header_of(&received(&server).await[0], "x-layer"),
        Some("global")
    );
}

#[tokio::test]
async fn dry_runs_bind_path_variables_of_a_selector_too() {
    let server = MockServer::start().await;
    let context = params_context(&server);

    let outcome = context.run("GET:/contacts/c 42").dry_run().output();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    GET http://[SERVER]/crm/contacts/c%2042?version=v1
    Accept: application/json
    X-Tenant: acme
    X-Layer: global

    ----- stderr -----
    "#);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn values_that_do_not_convert_are_rejected_before_sending() {
    let server = MockServer::start().await;
    let context = params_context(&server);

    let outcome = context
        .run("update-item")
        .param("id", "i1")
        .param("count", "three")
        .output();
    outcome.assert_code(3);
    outcome.assert_stderr_has(&["value of `count` is not a valid integer: `three`"]);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn chains_feed_previous_bodies_forward_and_return_the_last_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total": 2,
            "results": [{"id": "it/1"}, {"id": "it-2"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/items/it%2F1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "it/1", "name": "First"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/archive"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"archived": true})))
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("chain").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context.run("search").param("q", "ada").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"archived": true}));

    let requests = received(&server).await;
    assert_eq!(query_of(&requests[0]), [("q".to_owned(), "ada".to_owned())]);
    assert_eq!(header_of(&requests[1], "x-total"), Some("2"));
    assert_eq!(
        requests[2].body_json::<Value>().unwrap(),
        json!({"id": "it/1", "name": "First"})
    );
}

#[tokio::test]
async fn missing_required_configuration_lists_every_key_and_sends_nothing() {
    let server = MockServer::start().await;
    let context = TestContext::fixture("custom").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context.run("list-contacts").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: the instance lacks required configuration: `client.id` (the OAuth2 client id), `client.secret` (the OAuth2 client secret)
    hint: add the keys to the instance file, then run again
    "#);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn unknown_resources_get_a_did_you_mean() {
    let server = MockServer::start().await;
    let context = params_context(&server);

    let outcome = context.run("list-contact").output();
    run_snapshot!(context, outcome, @"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: connector `Params` has no resource `list-contact`
    hint: did you mean `list-contacts`? the resources are: `update-item`, `submit-form`, `send-body`, `pass-through`, `absolute`, `get-contact`, `list-contacts`
    ");
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn missing_required_inputs_name_the_flag_and_send_nothing() {
    let server = MockServer::start().await;
    // Never provisioned: even the token request must wait until the inputs are complete.
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    }));

    let outcome = context.run("create-contact").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: resource `create-contact` needs the input `body`
      --> tests/fixtures/run/custom/connector.json:75:9
       |
    75 |         {"name": "body", "type": "body", "vendorName": "body", "vendorType": "body", "required": true}
       |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ defined here
       |
    hint: pass the body with `--body FILE`, or `--body -` to read it from standard input
    "#);
    assert!(received(&server).await.is_empty());

    let context = params_context(&server);
    let outcome = context.run("get-contact").output();
    outcome
        .assert_code(3)
        .assert_stderr_has(&["pass it with `--param id=VALUE`"]);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn unknown_params_are_rejected_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": ACCESS_TOKEN,
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }));

    let outcome = context.run("list-contacts").param("limit", "2").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: resource `list-contacts` takes no input `limit`
    "#);
    assert!(received(&server).await.is_empty());

    let context = params_context(&server);
    let outcome = context.run("list-contacts").param("limt", "2").output();
    outcome
        .assert_code(3)
        .assert_stderr_has(&["takes no input `limt`", "did you mean `limit`?"]);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn response_parameters_read_names_dotted_paths_jsonpaths_and_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/session/login"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(
                    json!({"data": {"session": {"token": "st-FAKE-session-1", "ttl": "900"}}}),
                )
                .insert_header("X-Session-Token", "st-FAKE-session-h"),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/me"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(
                    json!({"account": {"id": "acc-1", "plan": "pro"}, "token_kind": "session"}),
                )
                .insert_header("X-Request-Id", "req-99"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("login").with_instance(&json!({
        "base.url": server.uri(),
        "username": "demo",
        "password": PASSWORD,
    }));

    let outcome = context.run("me").output();
    outcome.assert_success();
    // `rootKey` unwraps; output parameters add a header and a JSONPath value.
    assert_eq!(
        outcome.json(),
        json!({"id": "acc-1", "plan": "pro", "requestId": "req-99", "tokenKind": "session"})
    );

    let login = &received_at(&server, "/session/login").await[0];
    assert_eq!(
        login.body_json::<Value>().unwrap(),
        json!({"credentials": {"user": "demo", "secret": PASSWORD}})
    );
    let me = &received_at(&server, "/api/v1/me").await[0];
    assert_eq!(header_of(me, "x-session-token"), Some("st-FAKE-session-1"));
    let instance = context.instance();
    assert_eq!(instance["session.token"], "st-FAKE-session-1");
    assert_eq!(instance["expires_in"], "900");
    assert_eq!(instance["session.header"], "st-FAKE-session-h");
}

#[test]
fn the_login_connector_runs_against_the_emulator() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(engine_emulator::Emulator::start(
            engine_emulator::EmulatorConfig::default(),
            0,
        ))
        .unwrap();
    let context = TestContext::fixture("login").with_instance(&json!({
        "base.url": emulator.url(),
        "username": "demo",
        "password": "demo-password",
    }));

    let outcome = context.run("me").output();
    outcome.assert_success();
    assert_eq!(
        outcome.json(),
        json!({"id": "acc-42", "name": "Demo Account", "tokenKind": "session"})
    );
    // The emulator sends `ttl` as a string.
    assert_eq!(context.instance()["expires_in"], "3600");
    let stats = emulator.stats();
    assert_eq!(
        (stats.logins, stats.api_calls, stats.api_unauthorized),
        (1, 1, 0)
    );
    runtime.block_on(emulator.shutdown());
}

#[tokio::test]
async fn vendor_problem_details_exit_1_with_the_status_and_secrets_masked() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(422).set_body_raw(
                json!({
                    "type": "https://vendor.example/problems/duplicate",
                    "title": "Duplicate contact",
                    "status": 422,
                    "detail": format!("token {ACCESS_TOKEN} may not create ada@example.com twice"),
                })
                .to_string(),
                "application/problem+json",
            ),
        )
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": ACCESS_TOKEN,
        "authentication.time": time_ago(10),
        "expires_in": "3600",
    }));

    let outcome = context
        .run("create-contact")
        .body(&json!({"email": "ada@example.com"}))
        .output();
    outcome
        .assert_hides(&[ACCESS_TOKEN, CLIENT_SECRET])
        .assert_masks();
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    error: the vendor answered `create-contact` with 422: Duplicate contact: token **** may not create ada@example.com twice
      --> tests/fixtures/run/custom/connector.json:73:21
       |
    73 |       "vendorPath": "/contacts",
       |                     ^^^^^^^^^^^ defined here
       |
    caused by: the vendor answered: {"type":"https://vendor.example/problems/duplicate","title":"Duplicate contact","status":422,"detail":"token **** may not create ada@example.com twice"}
    "#);
}

#[tokio::test]
async fn vendor_server_errors_exit_1_without_retrying() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
        .expect(1)
        .mount(&server)
        .await;
    let context = params_context(&server);

    let outcome = context.run("list-contacts").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    error: the vendor answered `list-contacts` with 500: upstream exploded
       --> tests/fixtures/run/params/connector.json:100:21
        |
    100 |       "vendorPath": "/crm/contacts",
        |                     ^^^^^^^^^^^^^^^ defined here
        |
    caused by: the vendor answered: upstream exploded
    "#);
}

/// A refused connection is not slow: the hint says nothing listens there, not to wait longer.
#[tokio::test]
async fn connection_refused_exits_5() {
    let port = closed_port();
    let context = TestContext::fixture("params").with_instance(&json!({
        "base.url": format!("http://127.0.0.1:{port}"),
        "tenant": "acme",
    }));

    let outcome = context.run("list-contacts").output();
    outcome.assert_code(5).assert_stderr_has(&[
        "error: request to `http://127.0.0.1:",
        "failed: could not connect",
        &format!(
            "hint: nothing listens at `http://127.0.0.1:{port}`: start the vendor (or the emulator), or fix `base.url` in `{}`",
            context.instance_path().display()
        ),
    ]);
    assert!(!outcome.stderr.contains("--timeout"), "{}", outcome.stderr);
}

#[test]
fn a_connection_closed_without_an_answer_exits_5() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts one connection and closes it at once, without answering.
    let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let context = TestContext::fixture("params").with_instance(&json!({
        "base.url": format!("http://127.0.0.1:{port}"),
        "tenant": "acme",
    }));

    let outcome = context.run("list-contacts").output();
    server.join().unwrap();
    // The cause is the operating system's (a reset or a close), so only its start is asserted.
    outcome.assert_code(5).assert_stderr_has(&[
        "error: request to `http://127.0.0.1:",
        "failed: the request failed",
        "hint: check that the vendor is reachable",
    ]);
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_exits_5() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"late": true}))
                .set_delay(std::time::Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    let context = params_context(&server);

    let started = std::time::Instant::now();
    let outcome = context.run("list-contacts").timeout("1").output();
    outcome
        .assert_code(5)
        .assert_stderr_has(&["within the run's timeout of 1 s", "raise `--timeout`"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The redaction connector's instance: provisioned long ago, so the next run provisions again.
fn redaction_context(server: &MockServer) -> TestContext {
    TestContext::fixture("redaction").with_instance(&json!({
        "base.url": server.uri(),
        "username": "demo",
        "password": PASSWORD,
        "app.key": APP_KEY,
        "access.token": "FAKE-expired-token-aa11",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }))
}

/// A vendor that hands out tokens and echoes every secret it got back to the caller.
async fn leaky_vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": ACCESS_TOKEN,
            "expires_in": 3600,
            "ref": VENDOR_REF,
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/echo"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "seen": [PASSWORD, APP_KEY, ACCESS_TOKEN, VENDOR_REF],
            "nested": {"token": ACCESS_TOKEN},
            "header": format!("Bearer {ACCESS_TOKEN}"),
        })))
        .mount(&server)
        .await;
    server
}

const SECRETS: [&str; 6] = [
    PASSWORD,
    APP_KEY,
    ACCESS_TOKEN,
    VENDOR_REF,
    CLIENT_SECRET,
    "FAKE-expired-token-aa11",
];

#[tokio::test]
async fn secrets_never_show_in_verbose_output_or_results() {
    let server = leaky_vendor().await;
    let context = redaction_context(&server);

    let outcome = context
        .run("echo")
        .param("note", "hello")
        .verbose()
        .output();
    outcome
        .assert_success()
        .assert_hides(&SECRETS)
        .assert_masks();
    // The secrets did reach the vendor: redaction is for people, not for the wire.
    let token = &received_at(&server, "/oauth/token").await[0];
    assert!(form_of(token).contains(&("password".to_owned(), PASSWORD.to_owned())));
    assert_eq!(context.instance()["access.token"], ACCESS_TOKEN);
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    {
      "seen": [
        "****",
        "****",
        "****",
        "****"
      ],
      "nested": {
        "token": "****"
      },
      "header": "Bearer ****"
    }

    ----- stderr -----
    refresh: token expired at [TIME]; running PROVISION AUTH VALIDATION
    send: PROVISION AUTH VALIDATION: POST http://[SERVER]/oauth/token
    receive: 200 in [TIME] ms
    save: access.token, vendor.ref, expires_in, authentication.time
    send: echo: POST http://[SERVER]/echo
    receive: 200 in [TIME] ms
    "#);
}

#[tokio::test]
async fn secrets_never_show_in_a_dry_run() {
    let server = MockServer::start().await;
    let context = redaction_context(&server);

    let outcome = context
        .run("echo")
        .param("note", "hello")
        .param("pin", PIN)
        .dry_run()
        .output();
    outcome
        .assert_success()
        .assert_hides(&[&SECRETS[..], &[PIN]].concat())
        .assert_masks();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    POST http://[SERVER]/oauth/token
    Authorization: Bearer ****
    X-App-Key: ****
    Content-Type: application/x-www-form-urlencoded

    grant_type=password&username=demo&password=****&client_secret=****

    POST http://[SERVER]/echo
    Authorization: Bearer ****
    X-App-Key: ****
    Content-Type: application/x-www-form-urlencoded

    note=hello&user_password=****

    ----- stderr -----
    "#);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn secrets_never_show_in_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": format!("user demo with password {PASSWORD} and key {APP_KEY} rejected"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    let context = redaction_context(&server);
    let before = context.instance_text();

    let outcome = context.run("echo").verbose().output();
    outcome.assert_code(4).assert_hides(&SECRETS).assert_masks();
    run_snapshot!(context, outcome, @r#"
    exit code: 4
    ----- stdout -----

    ----- stderr -----
    refresh: token expired at [TIME]; running PROVISION AUTH VALIDATION
    send: PROVISION AUTH VALIDATION: POST http://[SERVER]/oauth/token
    receive: 401 in [TIME] ms
    error: authentication failed: `PROVISION AUTH VALIDATION` answered 401: invalid_client: user demo with password **** and key **** rejected
      --> tests/fixtures/run/redaction/connector.json:23:5
       |
    23 |     {
       |     ^ defined here
       |
    hint: fix the credentials in `[TEMP]/instance.json`, then provision again: `engine run tests/fixtures/run/redaction/connector.json provisionAuthValidation --config [TEMP]/instance.json`
    caused by: the vendor answered: {"error":"invalid_client","error_description":"user demo with password **** and key **** rejected"}
    "#);
    assert_eq!(context.instance_text(), before);
}

#[tokio::test]
async fn dry_run_of_an_expired_instance_shows_the_refresh_then_the_call() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": ACCESS_TOKEN,
        "refresh.token": "FAKE-refresh-token-77aa",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }));
    let before = context.instance_text();

    let outcome = context
        .run("create-contact")
        .body(&json!({"name": "Ada", "password": "FAKE-body-password-1"}))
        .dry_run()
        .output();
    outcome
        .assert_success()
        .assert_hides(&[
            CLIENT_SECRET,
            ACCESS_TOKEN,
            "FAKE-refresh-token-77aa",
            "FAKE-body-password-1",
        ])
        .assert_masks();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    POST http://[SERVER]/oauth/token
    Accept: application/json
    Authorization: Bearer ****
    Content-Type: application/x-www-form-urlencoded

    grant_type=refresh_token&refresh_token=****&client_id=demo-client&client_secret=****

    POST http://[SERVER]/contacts
    Accept: application/json
    Authorization: Bearer ****
    Content-Type: application/json

    {
      "name": "Ada",
      "password": "****"
    }

    ----- stderr -----
    "#);
    assert_eq!(context.instance_text(), before);
}

#[tokio::test]
async fn verbose_output_shows_each_lifecycle_step() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(
            ACCESS_TOKEN,
            Some("FAKE-refresh-token-77aa"),
            json!(3600),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "acc-42"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"id": "c1", "name": "Ada"}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    }));

    let outcome = context.run("list-contacts").verbose().output();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    [
      {
        "id": "c1",
        "name": "Ada"
      }
    ]

    ----- stderr -----
    refresh: instance not provisioned yet; running PROVISION AUTH VALIDATION
    skip: `Authorization` not sent: `access.token` has no value yet
    send: PROVISION AUTH VALIDATION: POST http://[SERVER]/oauth/token
    receive: 200 in [TIME] ms
    send: ON PROVISION: GET http://[SERVER]/me
    receive: 200 in [TIME] ms
    save: access.token, refresh.token, expires_in, authentication.time, account.id
    send: list-contacts: GET http://[SERVER]/contacts
    receive: 200 in [TIME] ms
    "#);
}

#[test]
fn run_help() {
    let outcome = crate::support::engine()
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(outcome.status.success());
    insta::assert_snapshot!(String::from_utf8(outcome.stdout).unwrap(), @"
    Run one resource of a connector against an instance, keeping its token fresh

    Usage: engine run [OPTIONS] <CONNECTOR> [RESOURCE]

    Arguments:
      <CONNECTOR>  The connector file
      [RESOURCE]   A resource name, a lifecycle type (`provisionAuthValidation`, `ON REFRESH`...), or `METHOD:/path` matching a resource's path (`GET:/contacts/c1`); without it, the resources are listed

    Options:
      -c, --config <INSTANCE>       The instance file: a JSON object of configuration key to value. The tokens the command obtains are written back to it
          --instance <ID>           A stored instance's id, in the store of `--store` (instead of `--config FILE`)
          --store <URL>             The instance store of `--instance`: `sqlite:PATH`, `postgres://USER@HOST/DB` or `file:DIR` [env: ENGINE_STORE]
      -p, --param <NAME=VALUE>      A query, path, form or multipart input of the resource, or a `{NAME}` of its vendor path (a multipart value `@FILE` sends a file, `@-` standard input)
      -H, --header <NAME=VALUE>     A header input of the resource (headers no parameter takes are sent as they are)
          --body <FILE|->           The request body: a JSON file (a text file for resources with `bodyToken` parameters), or `-` for standard input
          --dry-run                 Print the requests the run would send (secrets masked) and send nothing
          --pages <N>               Follow the vendor's next-page cursor (as the connector's `nextPageKey` says, or page numbers) for at most N pages; list pages are printed as one list
          --all-pages               Follow the next-page cursor until the vendor gives none (at most 100 pages; a cursor seen before stops it). Without `--pages`/`--all-pages`, the next page's input is printed on stderr as `next page: --param NAME=VALUE`
      -v, --verbose                 Print each lifecycle step to stderr
          --log-format <FORMAT>     How `-v` prints the steps: `human` lines, or `json`, one JSON object per line for scripts, each named by its `event` (implies `-v`) [default: human] [possible values: human, json]
          --strict                  Refuse to run (exit 3, nothing sent) when the run would not do as the platform did: a JavaScript hook or converter of what it executes, a lifecycle resource it would skip. Without it, each is a `warning:` on stderr and the run goes on
          --timeout <DURATION>      The bound on the whole command (`30s`, `5m`, or seconds; at most a day): every request, retry, pause and token refresh it makes ends within it (waiting for the instance's lock is bounded by `--lock-timeout`) [default: 30]
          --record <FILE>           Record every exchange of the run into this cassette (appended as a new run; secrets replaced by placeholders), for `engine test`
          --lock-timeout <SECONDS>  How long to wait for the instance's lock when another process holds it, in seconds [default: 30]
          --egress <POLICY>         Which addresses requests may connect to: `public` (public and loopback), `private` (also private networks), `any` (also link-local, such as the cloud metadata address) [default: any] [possible values: public, private, any]
      -h, --help                    Print help
      -V, --version                 Print version
    ");
}

/// Issue 10: the vendor's data stays data. `account.id`, saved by `ON PROVISION` and used in
/// URLs, is not a secret: `me` prints it as the vendor sent it, while the token stays masked
/// wherever it shows.
#[test]
fn saved_values_that_are_not_credentials_pass_through() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(engine_emulator::Emulator::start(
            engine_emulator::EmulatorConfig::default(),
            0,
        ))
        .unwrap();
    let context =
        TestContext::for_connector("connectors/chained-provisioning.json").with_instance(&json!({
            "base.url": emulator.url(),
            "client.id": "demo-client",
            "client.secret": "demo-secret",
        }));
    let outcome = context.run("me").output();
    outcome.assert_success();
    assert_eq!(outcome.json()["id"], "acc-42");
    let instance = context.instance();
    assert_eq!(instance["account.id"], "acc-42");
    let token = instance["access.token"].as_str().unwrap().to_owned();
    // The token is still masked when the vendor echoes it.
    let outcome = context.run("account-echo").param("note", &token).output();
    outcome.assert_success();
    assert!(!outcome.stdout.contains(&token), "{}", outcome.stdout);
    runtime.block_on(emulator.shutdown());
}

/// A response JSONPath that would walk a large answer for minutes stops at the evaluation
/// budget: exit 3 naming the resource and the path, nothing returned, nothing saved.
#[tokio::test]
async fn response_paths_over_the_jsonpath_budget_fail_instead_of_returning_the_whole_body() {
    // About 100 KB of nested records: `..*` six times over would run for minutes.
    let records: Vec<Value> = (0..2_000)
        .map(|id| json!({"id": id, "a": [1, 2, 3], "b": {"c": "d", "e": [{"f": 1}, {"g": 2}]}}))
        .collect();
    let server = MockServer::start().await;
    Mock::given(path("/records"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": records})))
        .mount(&server)
        .await;
    let context = TestContext::fixture("budget").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context.run("records").output();
    outcome.assert_code(3);
    assert_eq!(outcome.stdout, "");
    assert!(
        outcome.stderr.contains(
            "resource `records`: JSONPath `$..*..*..*..*..*..*` would visit more than 1000000 nodes of the response"
        ),
        "{}",
        outcome.stderr
    );

    let outcome = context.run("save-last").output();
    outcome.assert_code(3);
    assert!(
        outcome
            .stderr
            .contains("JSONPath `$..*..*..*..*..*..id` would visit more than"),
        "{}",
        outcome.stderr
    );
    assert_eq!(context.instance().get("last.id"), None, "nothing saved");
}

/// What a vendor says reaches the terminal without its control characters: an error message
/// and a body holding ESC (clear screen, recolour), CR and BEL are shown escaped.
#[tokio::test]
async fn vendor_text_reaches_stderr_without_control_characters() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": "bad\u{1b}[2J\u{1b}[31m request\r\u{7}",
        })))
        .mount(&server)
        .await;
    let context = TestContext::fixture("budget").with_instance(&json!({"base.url": server.uri()}));

    let outcome = context.run("records").output();
    outcome.assert_code(1);
    for control in ['\u{1b}', '\r', '\u{7}'] {
        assert!(
            !outcome.stderr.contains(control),
            "{:?} reached stderr: {:?}",
            control,
            outcome.stderr
        );
    }
    assert!(
        outcome.stderr.contains(
            r"the vendor answered `records` with 400: bad\u{1b}[2J\u{1b}[31m request\r\u{7}"
        ),
        "{}",
        outcome.stderr
    );
}

/// An API call follows a redirect within its origin, and not one to another origin: that
/// server gets nothing (no credentials leave), and the caller sees the `3xx` with what to do.
#[tokio::test]
async fn redirects_are_followed_only_within_the_origin() {
    let vendor = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(path("/ping"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/pong"))
        .mount(&vendor)
        .await;
    Mock::given(path("/pong"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"pong": true})))
        .mount(&vendor)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"stolen": true})))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let context = TestContext::fixture("tls").with_instance(&json!({"base.url": vendor.uri()}));
    let outcome = context.run("ping").output();
    outcome.assert_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&outcome.stdout).unwrap(),
        json!({"pong": true})
    );

    vendor.reset().await;
    Mock::given(path("/ping"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/ping", elsewhere.uri()).as_str()),
        )
        .mount(&vendor)
        .await;
    let outcome = context.run("ping").output();
    outcome.assert_code(1);
    assert!(
        outcome.stderr.contains("the vendor answered `ping` with 307")
            && outcome.stderr.contains(
                "hint: the vendor redirects elsewhere: the engine follows redirects only to the same scheme, host and port"
            ),
        "{}",
        outcome.stderr
    );
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

/// A parameter reads a mistyped key (`zorp.password`; `zorp.pass` is declared): the request goes
/// without `pass`, and when the vendor then answers 403 the error says so first, with the key
/// meant, and the hint names the instance file the person passed.
#[tokio::test]
async fn a_refusal_after_a_skipped_parameter_names_the_parameter_first() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": "forbidden"})))
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("typo-key").with_instance(&json!({
        "base.url": server.uri(),
        "zorp.user": "demo",
        "zorp.pass": PASSWORD,
    }));

    let outcome = context.run("me").output();
    outcome.assert_code(1).assert_hides(&[PASSWORD]);
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    error: the vendor answered `me` with 403: forbidden
      --> tests/fixtures/run/typo-key/connector.json:12:84
       |
    12 |   "resources": [{"name": "me", "type": "API", "vendorMethod": "GET", "vendorPath": "/me"}]
       |                                                                                    ^^^^^ defined here
       |
    hint: `pass` was not sent (`zorp.password` has no value yet): the connector reads `zorp.password`, which it does not declare: did you mean `zorp.pass`?
    caused by: the vendor answered: {"error":"forbidden"}
    "#);
    let sent = received(&server).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(header_of(&sent[0], "user"), Some("demo"));
    assert_eq!(header_of(&sent[0], "pass"), None);
}

/// A stored instance whose credentials the vendor refuses: the hint names the instance and the
/// store the person used (no `INSTANCE` placeholder), and how to change a stored instance's
/// credentials.
#[tokio::test]
async fn hints_name_the_stored_instance_that_was_used() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"})))
        .expect(1)
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("badpw.json");
    let instance =
        json!({"base.url": server.uri(), "client.id": "demo", "client.secret": CLIENT_SECRET});
    fs_err::write(&file, instance.to_string()).unwrap();
    let store = crate::support::sqlite_store(temp.path());
    crate::support::engine()
        .args([
            "instances",
            "import",
            file.to_str().unwrap(),
            "--store",
            &store,
        ])
        .assert()
        .success();

    let output = crate::support::engine()
        .args([
            "run",
            "tests/fixtures/run/custom/connector.json",
            "list-contacts",
        ])
        .args(["--instance", "badpw", "--store", &store])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains(CLIENT_SECRET), "{stderr}");
    let hint = format!(
        "hint: fix the credentials with `engine instances set badpw KEY --store {store}`, then \
         provision again: `engine run tests/fixtures/run/custom/connector.json \
         provisionAuthValidation --instance badpw --store {store}`"
    );
    assert!(stderr.contains(&hint), "{stderr}");
}

/// `--log-format json`: every step one JSON object per line on stderr, in order, with the
/// event's name, a time and no secret; stdout still carries only the result.
#[tokio::test]
async fn log_format_json_prints_one_event_per_line() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(
            ACCESS_TOKEN,
            Some("FAKE-refresh-token-77aa"),
            json!(3600),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "a1"}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": [{"id": "c1"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    }));

    let outcome = context
        .run("list-contacts")
        .arg("--log-format")
        .arg("json")
        .output();
    outcome
        .assert_success()
        .assert_hides(&[CLIENT_SECRET, ACCESS_TOKEN]);
    let events: Vec<Value> = outcome
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "refresh", "skip", "send", "answer", "send", "answer", "save", "send", "answer"
        ],
        "{}",
        outcome.stderr
    );
    assert_eq!(events[0]["reason"], "not-provisioned");
    assert_eq!(events[1]["key"], "access.token");
    assert_eq!(events[2]["method"], "POST");
    assert_eq!(events[3]["status"], 200);
    assert!(events.iter().all(|event| event["at"].is_string()));
    let body: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(body[0]["id"], "c1");
}
