//! Lifecycle fidelity: `ON PROVISION` provisions alone with its `nextResource` chain, a
//! bracketed response path saves its value, a lifecycle resource that cannot be built is
//! skipped with a warning, and whatever the run does not do as the platform did is a warning
//! (or, with `--strict`, exit 3 with nothing sent). Each against a loopback server that records
//! the raw requests, in order.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{TestContext, received, run_snapshot};

const TOKEN: &str = "FAKE-provisioned-token-5150";

/// The requests `server` received, in order: method, target, the headers that matter, body.
pub(crate) async fn raw_requests(server: &MockServer) -> String {
    received(server)
        .await
        .iter()
        .map(|request| {
            use std::fmt::Write as _;
            let mut text = format!("{} {}", request.method, request.url.path());
            if let Some(query) = request.url.query() {
                let _ = write!(text, "?{query}");
            }
            for name in ["authorization", "content-type"] {
                if let Some(value) = request.headers.get(name) {
                    let _ = write!(text, "\n{name}: {}", value.to_str().unwrap());
                }
            }
            if !request.body.is_empty() {
                let _ = write!(text, "\n\n{}", String::from_utf8_lossy(&request.body));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

async fn vendor() -> MockServer {
    let server = MockServer::start().await;
    let answer = |body: serde_json::Value| ResponseTemplate::new(200).set_body_json(body);
    // The token comes back inside an array, as the platform's documented `data[0].access_token`.
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(answer(json!({"data": [{"access_token": TOKEN}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/account"))
        .respond_with(answer(json!({"id": "acc-7"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/register"))
        .respond_with(answer(json!({})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(answer(json!({"items": []})))
        .mount(&server)
        .await;
    server
}

fn fresh(server: &MockServer) -> TestContext {
    TestContext::fixture("provisioning")
        .with_instance(&json!({"base.url": server.uri(), "client.id": "demo-client"}))
}

#[tokio::test]
async fn on_provision_alone_provisions_with_its_chain_and_skips_what_it_cannot_build() {
    let server = vendor().await;
    let context = fresh(&server);
    let outcome = context.run("list-contacts").output();
    outcome.assert_success().assert_hides(&[TOKEN]);
    run_snapshot!(context, outcome, @r#"
        exit code: 0
        ----- stdout -----
        {
          "items": []
        }

        ----- stderr -----
        warning: `POST /token` answered without `data[0].expires_in`: configuration key `expires_in` was not saved, and the requests that read it will go without
        hint: check the vendor's answer with `-v`, or map the value from where the vendor sends it
        warning: lifecycle resource `DELETE /stale/{id}` was not sent: it cannot be executed as the platform did (resource `DELETE /stale/{id}` needs the input `id`)
          --> tests/fixtures/run/provisioning/connector.json:55:5
           |
        55 |     {
           |     ^ skipped
        warning[W0501]: parameter `where` uses converter `toBazaarvoice`, which the engine does not execute
          --> tests/fixtures/run/provisioning/connector.json:73:58
           |
        73 |         {"name": "where", "type": "query", "vendorName": "converter:toBazaarvoice", "vendorType": "query"}
           |                                                          ^^^^^^^^^^^^^^^^^^^^^^^^^ not executed: the parameter is not sent (a warning at run)
           |
        hint: the engine executes `converter:toQueryParameters`, `converter:toODataFilter`, `converter:toODataV3Filter`; else map the value with plain parameters, or remove the parameter
    "#);
    insta::assert_snapshot!(raw_requests(&server).await, @r#"
        POST /token
        content-type: application/x-www-form-urlencoded

        grant_type=client_credentials&client_id=demo-client
        ---
        GET /account
        authorization: Bearer FAKE-provisioned-token-5150
        ---
        POST /register
        authorization: Bearer FAKE-provisioned-token-5150
        content-type: application/x-www-form-urlencoded

        account=acc-7
        ---
        GET /contacts
        authorization: Bearer FAKE-provisioned-token-5150
    "#);
    let instance = context.instance();
    assert_eq!(instance["access.token"], TOKEN);
    assert_eq!(instance["account.id"], "acc-7");
    assert!(instance["authentication.time"].is_string());
}

#[tokio::test]
async fn strict_runs_refuse_what_would_differ_and_send_nothing() {
    let server = vendor().await;
    let context = fresh(&server);
    let outcome = context.run("list-contacts").arg("--strict").output();
    outcome.assert_code(3);
    run_snapshot!(context, outcome, @r#"
        exit code: 3
        ----- stdout -----

        ----- stderr -----
        warning[W0501]: parameter `where` uses converter `toBazaarvoice`, which the engine does not execute
          --> tests/fixtures/run/provisioning/connector.json:73:58
           |
        73 |         {"name": "where", "type": "query", "vendorName": "converter:toBazaarvoice", "vendorType": "query"}
           |                                                          ^^^^^^^^^^^^^^^^^^^^^^^^^ not executed: the parameter is not sent (a warning at run)
           |
        hint: the engine executes `converter:toQueryParameters`, `converter:toODataFilter`, `converter:toODataV3Filter`; else map the value with plain parameters, or remove the parameter
        error: run of `list-contacts` refused in strict mode: 1 part of what it executes would not run as on the platform; nothing was sent
          --> tests/fixtures/run/provisioning/connector.json:73:58
           |
        73 |         {"name": "where", "type": "query", "vendorName": "converter:toBazaarvoice", "vendorType": "query"}
           |                                                          ^^^^^^^^^^^^^^^^^^^^^^^^^ defined here
           |
        hint: the warnings above say what would differ: run without `--strict` to send it anyway, each difference then a warning, or change the connector so that it needs none
    "#);
    assert!(received(&server).await.is_empty());
}

/// An XML answer (by its content type) is JSON before `rootKey` and response parameters; an
/// HTML error page stays text (`lifecycle::a_refresh_answered_200_without_a_token_...`).
#[tokio::test]
async fn xml_answers_are_json_before_root_key_and_response_parameters() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/calculator.asmx"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"<?xml version="1.0" encoding="utf-8"?>
                    <soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
                      <soap:Body><AddResponse xmlns="http://tempuri.org/">
                        <AddResult>42</AddResult><Note lang="en">fine &amp; dandy</Note>
                      </AddResponse></soap:Body>
                    </soap:Envelope>"#,
            "text/xml; charset=utf-8",
        ))
        .mount(&server)
        .await;
    let context = TestContext::patched("soap", |connector| {
        let add = &mut connector["resources"][0];
        add["rootKey"] = json!("soap:Envelope.soap:Body.AddResponse");
        add["parameters"].as_array_mut().unwrap().push(
            json!({"name": "sum", "type": "bodyField", "source": "response",
                         "vendorName": "$['soap:Envelope']['soap:Body'].AddResponse.AddResult",
                         "vendorType": "bodyField"}),
        );
    })
    .with_instance(&json!({"base.url": format!("{}/calculator.asmx", server.uri())}));
    let outcome = context
        .run("add")
        .param("intA", "40")
        .param("intB", "2")
        .output();
    outcome.assert_success();
    assert_eq!(
        outcome.json(),
        json!({"xmlns": "http://tempuri.org/", "AddResult": "42",
               "Note": {"lang": "en", "content": "fine & dandy"}, "sum": "42"})
    );
}

/// `--dry-run` shows the request a real run sends: the `Content-Type` the client adds to a form
/// login, and no `receive:` line, since nothing was received.
#[tokio::test]
async fn a_dry_run_shows_the_request_a_real_run_sends() {
    let server = vendor().await;
    let context = fresh(&server);
    let dry = context.run("account").dry_run().arg("-v").output();
    dry.assert_success();
    assert!(received(&server).await.is_empty());
    assert!(!dry.stderr.contains("receive:"), "{}", dry.stderr);
    // The dry run's token call answers nothing: the chain goes on without the values it saves.
    insta::assert_snapshot!(dry.stdout.replace(&server.uri(), "http://[SERVER]"), @r"
    POST http://[SERVER]/token
    Content-Type: application/x-www-form-urlencoded

    grant_type=client_credentials&client_id=demo-client

    GET http://[SERVER]/account

    POST http://[SERVER]/register

    GET http://[SERVER]/account
    ");
    context.run("account").output().assert_success();
    let raw = raw_requests(&server).await;
    let first_sent = raw.split("\n---\n").next().unwrap_or_default();
    insta::assert_snapshot!(first_sent, @r"
    POST /token
    content-type: application/x-www-form-urlencoded

    grant_type=client_credentials&client_id=demo-client
    ");
}
