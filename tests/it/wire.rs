//! The bytes on the wire: request patterns of element.json exports, each run with the built
//! `engine` against a loopback server, and the raw request it received (method, target,
//! headers, body) snapshotted. Each resource of `tests/fixtures/run/wire/` is one pattern.

use std::fmt::Write as _;

use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{TestContext, received};

/// A server that answers every request with `answer`.
async fn server(answer: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&server)
        .await;
    server
}

fn wire(server: &MockServer, service_url: &str) -> TestContext {
    TestContext::fixture("wire").with_instance(&json!({
        "service.url": service_url.replace("[SERVER]", &server.uri()),
    }))
}

/// The one request `server` received, as it arrived: request line, headers (by name; `host`
/// without its port), blank line, body.
async fn raw(server: &MockServer) -> String {
    let requests = received(server).await;
    assert_eq!(requests.len(), 1, "one request");
    let request = &requests[0];
    let target = match request.url.query() {
        Some(query) => format!("{}?{query}", request.url.path()),
        None => request.url.path().to_owned(),
    };
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "host" | "user-agent"))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    let mut text = format!("{} {target}\n", request.method);
    for (name, value) in headers {
        writeln!(text, "{name}: {value}").unwrap();
    }
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&request.body));
    text
}

#[tokio::test]
async fn soap_object_input_fills_the_template_from_the_callers_fields() {
    // The caller's values are escaped for XML; the connector's own `value` fragment is not.
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]/calculator.asmx");
    context
        .run("soap-object-input")
        .body(&json!({"intA": "7 & <8>", "intB": 2}))
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_soap_object_input", raw(&server).await);
}

#[tokio::test]
async fn a_json_body_template_is_sent_as_written_with_json_values_outside_strings() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    context
        .run("json-template")
        .body(&json!({"payload": {"faces": [1, 2]}, "label": "say \"hi\""}))
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_json_template", raw(&server).await);
}

#[tokio::test]
async fn root_key_wraps_the_request_and_unwraps_the_answer() {
    let server = server(json!({"data": {"gid": "p1"}})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context
        .run("POST:/hubs/general/projects")
        .body(&json!({"name": "Roof"}))
        .output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!({"gid": "p1"}));
    insta::assert_snapshot!("wire_root_key", raw(&server).await);
}

#[tokio::test]
async fn a_literal_path_beats_a_templated_one_and_encoded_values_stay_encoded() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    // `/hubs/general/{objectName}/{objectId}` would match too: the literal `projects` wins.
    context
        .run("GET:/hubs/general/projects/p1")
        .param("page", "7")
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_selection_and_encoding", raw(&server).await);
}

#[tokio::test]
async fn a_where_becomes_query_parameters_after_a_query_continuing_base_url() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]/api?module=crm");
    context
        .run("search")
        .param(
            "where",
            "email = 'a@b.c' AND createdDate='2017-05-24T18:31:01Z'",
        )
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_to_query_parameters", raw(&server).await);
}

#[tokio::test]
async fn a_where_becomes_an_odata_filter() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    context
        .run("odata")
        .param("where", "lastName = 'O''Brien' and age >= 21")
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_odata_filter", raw(&server).await);
}

#[tokio::test]
async fn a_converter_the_engine_lacks_sends_nothing_and_warns() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context
        .run("vendor-language")
        .param("where", "rating > 3")
        .param("limit", "5")
        .output();
    outcome.assert_success();
    outcome.assert_stderr_has(&[
        "warning[W0501]: parameter `where` uses converter `toBazaarvoice`, which the engine does not execute",
        "--> tests/fixtures/run/wire/connector.json:110:58",
        "not executed: the parameter is not sent",
    ]);
    insta::assert_snapshot!("wire_converter_not_executed", raw(&server).await);
}

#[tokio::test]
async fn a_bad_where_is_refused_before_sending() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context
        .run("search")
        .param("where", "email = 'a@b.c' OR name = 'x'")
        .output();
    outcome.assert_code(3);
    outcome.assert_stderr_has(&["`toQueryParameters` joins clauses with `AND` only"]);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_global_body_field_is_merged_into_the_callers_body() {
    let server = server(json!({})).await;
    let context = TestContext::fixture("wire-body-field").with_instance(&json!({
        "base.url": server.uri(),
        "api.key": "FAKE-api-key-77aa",
    }));
    context
        .run("send")
        .body(&json!({"message": {"text": "hi"}}))
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_global_body_field", raw(&server).await);
}

#[tokio::test]
async fn a_global_body_field_is_merged_into_a_body_parameter() {
    let server = server(json!({})).await;
    let context = TestContext::fixture("wire-body-field").with_instance(&json!({
        "base.url": server.uri(),
        "api.key": "FAKE-api-key-77aa",
    }));
    context
        .run("send-body")
        .body(&json!({"name": "welcome"}))
        .output()
        .assert_success();
    let requests = received(&server).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&requests[0].body).unwrap(),
        json!({"name": "welcome", "key": "FAKE-api-key-77aa"})
    );
}

#[tokio::test]
async fn an_oauth_header_in_the_reversed_form_goes_on_the_token_call_only() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::path("/oauth/token"))
        .respond_with(crate::support::run::token_response(
            "FAKE-access-token-0c1d",
            None,
            json!(3600),
        ))
        .mount(&server)
        .await;
    Mock::given(wiremock::matchers::path("/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    let context = TestContext::fixture("wire-oauth2").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.token.url": format!("{}/oauth/token", server.uri()),
        "oauth.api.key": "demo-client",
        "oauth.api.secret": "FAKE-client-secret-5d2e",
    }));
    context.run("users").output().assert_success();
    let requests = received(&server).await;
    let authorization: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| {
            (
                request.url.path(),
                request.headers["authorization"].to_str().unwrap(),
            )
        })
        .collect();
    // base64("demo-client:FAKE-client-secret-5d2e")
    assert_eq!(
        authorization,
        [
            (
                "/oauth/token",
                "Basic ZGVtby1jbGllbnQ6RkFLRS1jbGllbnQtc2VjcmV0LTVkMmU="
            ),
            ("/users", "Bearer FAKE-access-token-0c1d"),
        ]
    );
}

#[tokio::test]
async fn route_placeholders_fill_and_a_json_body_for_a_form_is_one_field_per_member() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    context
        .run("POST:/hubs/general/items/i 1")
        .body(&json!({"name": "Ada Lovelace", "count": 2}))
        .output()
        .assert_success();
    insta::assert_snapshot!("wire_form_and_route", raw(&server).await);
}

#[tokio::test]
async fn a_file_for_a_body_is_sent_as_the_json_the_platform_made_of_it() {
    let server = server(json!({"id": 12})).await;
    let context = wire(&server, "[SERVER]");
    let file = context.dir().join("note.txt");
    fs_err::write(&file, "hello\n").unwrap();
    context
        .run("file-body")
        .param("file", &format!("@{}", file.display()))
        .param("id", "i1")
        .output()
        .assert_success();
    // base64("hello\n") = "aGVsbG8K"
    insta::assert_snapshot!("wire_file_body", raw(&server).await);
}

#[tokio::test]
async fn a_file_the_cli_cannot_read_is_refused_naming_it() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context
        .run("file-body")
        .param("file", &format!("@{}", context.dir().display()))
        .param("id", "i1")
        .output();
    outcome.assert_code(3);
    outcome.assert_stderr_has(&[
        "of part `file`: not a regular file (a FIFO, a device or a directory)",
        "hint: check the path, or pass a text part with `--param file=VALUE`",
    ]);
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn an_at_sign_is_a_file_only_for_a_multipart_input_of_the_resource_run() {
    let server = server(json!([])).await;
    let context = wire(&server, "[SERVER]");
    // `file` is a multipart input of `file-body`, a query input of `mentions`: no file `ada`
    // is read, the text is sent.
    let outcome = context.run("mentions").param("file", "@ada").output();
    outcome.assert_success();
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.query(), Some("of=%40ada"));
}

#[tokio::test]
async fn the_platforms_webhook_url_is_the_configured_one() {
    let server = server(json!({})).await;
    let context = TestContext::fixture("wire").with_instance(&json!({
        "service.url": server.uri(),
        "webhook.callback.url": "https://hooks.example/in/42",
    }));
    let outcome = context.run("subscribe").output();
    outcome.assert_success();
    assert_eq!(outcome.stderr, "");
    insta::assert_snapshot!("wire_webhook_callback_url", raw(&server).await);
}

#[tokio::test]
async fn without_a_webhook_url_the_parameters_are_not_sent_with_a_warning() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context.run("subscribe").output();
    outcome.assert_success();
    outcome.assert_stderr_has(&[
        "warning: `callback_url` was not sent: its `{webhookCallbackUrl}` is the URL the vendor calls with webhooks, and `webhook.callback.url` has no value",
        "warning: `X-Notify` was not sent",
        "hint: set `webhook.callback.url` in the instance to the URL that receives the vendor's webhooks",
    ]);
    let requests = received(&server).await;
    assert_eq!(String::from_utf8_lossy(&requests[0].body), "events=created");
    assert!(!requests[0].headers.contains_key("x-notify"));
}

#[tokio::test]
async fn a_strict_run_without_a_webhook_url_sends_nothing() {
    let server = server(json!({})).await;
    let context = wire(&server, "[SERVER]");
    let outcome = context.run("subscribe").arg("--strict").output();
    outcome.assert_code(3);
    outcome.assert_stderr_has(&[
        "error: run of `subscribe` refused in strict mode",
        "\"name\": \"{{webhookCallbackUrl}}\"",
    ]);
    assert!(received(&server).await.is_empty());
}
