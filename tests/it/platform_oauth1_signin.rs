//! The OAuth 1.0a sign-in (RFC 5849 2): `engine authorize` obtains a request token, prints the
//! address where a person approves it, takes the callback's `oauth_token` and `oauth_verifier`,
//! exchanges them for the access token and its secret, and saves both; the next run signs with
//! them. Against a loopback vendor that records the raw requests.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{TestContext, closed_port, received_at};

const CONSUMER_SECRET: &str = "FAKE-consumer-secret-2718";

async fn vendor() -> MockServer {
    let server = MockServer::start().await;
    let form = |body: &str| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/x-www-form-urlencoded")
            .set_body_string(body)
    };
    Mock::given(method("POST"))
        .and(path("/OAuthGetRequestToken"))
        .respond_with(form(
            "oauth_token=REQ-token-1&oauth_token_secret=FAKE-request-secret-5&oauth_callback_confirmed=true",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/OAuthGetAccessToken"))
        .respond_with(form(
            "oauth_token=FAKE-access-token-8&oauth_token_secret=FAKE-access-secret-9",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/boards/b7/cards"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&server)
        .await;
    server
}

/// The protocol parameters of a request signed in its query, by name.
fn protocol(request: &wiremock::Request) -> std::collections::HashMap<String, String> {
    request
        .url
        .query_pairs()
        .filter(|(name, _)| name.starts_with("oauth_"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_obtains_the_access_token_and_the_next_run_signs_with_it() {
    let server = vendor().await;
    let callback = format!("http://127.0.0.1:{}/cb", closed_port());
    let context = TestContext::fixture("oauth1").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.api.key": "demo-consumer",
        "oauth.api.secret": CONSUMER_SECRET,
        "oauth.request.authorization.type": "query",
        "oauth.request.url": format!("{}/OAuthGetRequestToken", server.uri()),
        "oauth.token.url": format!("{}/OAuthGetAccessToken", server.uri()),
        "oauth.authorization.url": format!("{}/OAuthAuthorizeToken?scope={{oauth.scope}}&expiration=never", server.uri()),
        "oauth.scope": "read,write",
        "oauth.callback.url": callback,
    }));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .current_dir(crate::support::repo_root())
        .arg("authorize")
        .arg(context.connector())
        .args(["--no-browser", "--timeout", "30", "--config"])
        .arg(context.instance_path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut url)
        .unwrap();
    assert_eq!(
        url.trim(),
        format!(
            "{}/OAuthAuthorizeToken?scope=read%2Cwrite&expiration=never&oauth_token=REQ-token-1",
            server.uri()
        )
    );
    // A callback for another request token is refused; the genuine one signs in.
    let forged = crate::support::get(format!("{callback}?oauth_token=other&oauth_verifier=v"))
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let page = crate::support::get(format!(
        "{callback}?oauth_token=REQ-token-1&oauth_verifier=VER-42"
    ))
    .await
    .unwrap();
    assert_eq!(page.status(), 200);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for secret in [
        CONSUMER_SECRET,
        "FAKE-request-secret-5",
        "FAKE-access-secret-9",
    ] {
        assert!(!stderr.contains(secret), "{stderr}");
    }

    let asked = &received_at(&server, "/OAuthGetRequestToken").await[0];
    let asked = protocol(asked);
    assert_eq!(asked["oauth_callback"], callback);
    assert!(!asked.contains_key("oauth_token"));
    let exchanged = &received_at(&server, "/OAuthGetAccessToken").await[0];
    let exchanged = protocol(exchanged);
    assert_eq!(exchanged["oauth_token"], "REQ-token-1");
    assert_eq!(exchanged["oauth_verifier"], "VER-42");
    let instance = context.instance();
    assert_eq!(instance["oauth.user.token"], "FAKE-access-token-8");
    assert_eq!(instance["oauth.user.token.secret"], "FAKE-access-secret-9");

    context
        .run("board-cards")
        .param("id", "b7")
        .output()
        .assert_success();
    let signed = &received_at(&server, "/boards/b7/cards").await[0];
    assert_eq!(protocol(signed)["oauth_token"], "FAKE-access-token-8");
}
