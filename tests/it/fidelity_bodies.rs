//! Bodies the export gives no template for: a SOAP resource whose `preRequest` hook writes the
//! envelope (its `bodyToken` parameters have no template to fill) runs with the hook's body, as
//! on the platform; without such a hook the run asks for one. A lifecycle resource that obtains
//! the token and whose `preRequest` script the export lost is neither sent half-built nor left
//! out: the run is refused. Against a loopback server that records the raw requests.

use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fidelity::raw_requests;
use crate::support::run::{TestContext, received, run_snapshot};

async fn vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .mount(&server)
        .await;
    server
}

fn soap(server: &MockServer) -> TestContext {
    TestContext::fixture("soap-hook-body")
        .with_instance(&json!({"base.url": server.uri(), "session.key": "sk-42"}))
}

#[tokio::test]
async fn a_prerequest_hook_writes_the_body_no_template_gives() {
    let server = vendor().await;
    let context = soap(&server);
    let outcome = context.run("expenses").output();
    outcome.assert_success();
    insta::assert_snapshot!(raw_requests(&server).await, @r"
    POST /service.asmx
    content-type: text/xml

    <Envelope><Body><List><sessionKey>sk-42</sessionKey></List></Body></Envelope>
    ");
}

#[tokio::test]
async fn without_a_hook_a_missing_template_is_asked_for_and_nothing_is_sent() {
    let server = vendor().await;
    let context = soap(&server);
    let outcome = context.run("expenses-unhooked").output();
    run_snapshot!(context, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: resource `expenses-unhooked` needs the input `body`
    hint: pass the body with `--body FILE`, or `--body -` to read it from standard input
    ");
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn a_token_step_that_cannot_be_sent_as_on_the_platform_refuses_the_run_and_sends_nothing() {
    let server = vendor().await;
    let context = TestContext::fixture("token-step-without-script")
        .with_instance(&json!({"base.url": server.uri()}));
    let outcome = context.run("contacts").output();
    run_snapshot!(context, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: `POST /token` obtains the token but cannot be executed as the platform did: resource `POST /token`'s `preRequest` hook has no script in this export (no `body`): the platform ran one, the engine runs nothing; nothing was sent
      --> tests/fixtures/run/token-step-without-script/connector.json:16:5
       |
    16 |     {
       |     ^ defined here
       |
    hint: give the resource what the platform ran (the hook's script as its `body`, from a new export of the connector), or map the values with parameters the engine executes
    ");
    assert!(received(&server).await.is_empty());
}
