//! OAuth 1.0a connectors run as the platform ran them: every request signed with `HMAC-SHA1`
//! (RFC 5849), the protocol parameters in the query (`oauth.request.authorization.type`
//! `query`) or in `Authorization: OAuth ...`. Each against a loopback server that records the
//! raw requests; the test recomputes each signature from what the server received.

use base64::Engine as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fidelity::raw_requests;
use crate::support::run::{TestContext, received, run_snapshot};

const CONSUMER_SECRET: &str = "FAKE-consumer-secret-2718";
const TOKEN: &str = "FAKE-access-token-3141";
const TOKEN_SECRET: &str = "FAKE-token-secret-1618";

async fn vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "l-1"})))
        .mount(&server)
        .await;
    server
}

fn signed(server: &MockServer, placement: &str) -> TestContext {
    TestContext::fixture("oauth1").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.api.key": "demo-consumer",
        "oauth.api.secret": CONSUMER_SECRET,
        "oauth.user.token": TOKEN,
        "oauth.user.token.secret": TOKEN_SECRET,
        "oauth.request.authorization.type": placement,
    }))
}

/// RFC 5849 percent-encoding (everything but `A-Z a-z 0-9 - . _ ~`).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The signature the vendor at `server_uri` computes for `request`: over its method, URL, query
/// and form parameters and the protocol parameters it received (`protocol`, without
/// `oauth_signature`).
fn expected_signature(
    server_uri: &str,
    request: &wiremock::Request,
    protocol: &[(String, String)],
) -> String {
    let mut pairs: Vec<(String, String)> = request
        .url
        .query_pairs()
        .filter(|(name, _)| !name.starts_with("oauth_"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if request.headers.get("content-type").is_some_and(|value| {
        value
            .to_str()
            .unwrap()
            .starts_with("application/x-www-form")
    }) {
        pairs.extend(
            url::form_urlencoded::parse(&request.body)
                .map(|(name, value)| (name.into_owned(), value.into_owned())),
        );
    }
    pairs.extend(
        protocol
            .iter()
            .filter(|(name, _)| name != "oauth_signature")
            .cloned(),
    );
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (encode(name), encode(value)))
        .collect();
    encoded.sort();
    let parameters = encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let url = format!("{server_uri}{}", request.url.path());
    let base = format!(
        "{}&{}&{}",
        request.method,
        encode(&url),
        encode(&parameters)
    );
    let key = format!("{}&{}", encode(CONSUMER_SECRET), encode(TOKEN_SECRET));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The protocol parameters of a request signed in its query.
fn query_protocol(request: &wiremock::Request) -> Vec<(String, String)> {
    request
        .url
        .query_pairs()
        .filter(|(name, _)| name.starts_with("oauth_"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// The protocol parameters of a request signed in its `Authorization: OAuth ...` header.
fn header_protocol(request: &wiremock::Request) -> Vec<(String, String)> {
    let header = request.headers["authorization"].to_str().unwrap();
    header
        .strip_prefix("OAuth ")
        .unwrap()
        .split(", ")
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            let encoded = format!("v={}", value.trim_matches('"'));
            let (_, value) = url::form_urlencoded::parse(encoded.as_bytes())
                .next()
                .unwrap();
            (name.to_owned(), value.into_owned())
        })
        .collect()
}

/// The recorded requests with their nonce, time and signature replaced (they change each run).
async fn stable_requests(server: &MockServer) -> String {
    let text = raw_requests(server).await;
    let pattern =
        regex::Regex::new(r#"(oauth_nonce|oauth_timestamp|oauth_signature)=("?)[^&",\n]*"#)
            .unwrap();
    pattern
        .replace_all(&text, |captures: &regex::Captures<'_>| {
            let shown = match &captures[1] {
                "oauth_nonce" => "[NONCE]",
                "oauth_timestamp" => "[TIME]",
                _ => "[SIGNATURE]",
            };
            format!("{}={}{shown}", &captures[1], &captures[2])
        })
        .into_owned()
}

#[tokio::test]
async fn requests_are_signed_with_the_protocol_parameters_in_the_query() {
    let server = vendor().await;
    let context = signed(&server, "query");
    let outcome = context
        .run("board-cards")
        .param("id", "b 7")
        .param("filter", "open&closed")
        .output();
    outcome
        .assert_success()
        .assert_hides(&[CONSUMER_SECRET, TOKEN, TOKEN_SECRET]);
    let requests = received(&server).await;
    let protocol = query_protocol(&requests[0]);
    let signature = &protocol
        .iter()
        .find(|(name, _)| name == "oauth_signature")
        .unwrap()
        .1;
    assert_eq!(
        signature,
        &expected_signature(&server.uri(), &requests[0], &protocol)
    );
    insta::assert_snapshot!(stable_requests(&server).await, @"GET /boards/b%207/cards?filter=open%26closed&oauth_consumer_key=demo-consumer&oauth_nonce=[NONCE]&oauth_signature_method=HMAC-SHA1&oauth_timestamp=[TIME]&oauth_token=FAKE-access-token-3141&oauth_version=1.0&oauth_signature=[SIGNATURE]");
}

#[tokio::test]
async fn a_form_body_is_signed_and_the_header_carries_the_signature() {
    let server = vendor().await;
    let context = signed(&server, "header");
    let outcome = context
        .run("create-list")
        .param("name", "To do + done")
        .output();
    outcome
        .assert_success()
        .assert_hides(&[CONSUMER_SECRET, TOKEN_SECRET]);
    let requests = received(&server).await;
    let protocol = header_protocol(&requests[0]);
    let signature = &protocol
        .iter()
        .find(|(name, _)| name == "oauth_signature")
        .unwrap()
        .1;
    assert_eq!(
        signature,
        &expected_signature(&server.uri(), &requests[0], &protocol)
    );
    insta::assert_snapshot!(stable_requests(&server).await, @r#"
    POST /lists
    authorization: OAuth oauth_consumer_key="demo-consumer", oauth_nonce="[NONCE]", oauth_signature_method="HMAC-SHA1", oauth_timestamp="[TIME]", oauth_token="FAKE-access-token-3141", oauth_version="1.0", oauth_signature="[SIGNATURE]"
    content-type: application/x-www-form-urlencoded

    name=To+do+%2B+done
    "#);
}

#[tokio::test]
async fn a_dry_run_shows_the_signed_request_with_the_token_masked() {
    let server = vendor().await;
    let context = signed(&server, "query");
    let outcome = context
        .run("board-cards")
        .param("id", "b7")
        .dry_run()
        .output();
    outcome
        .assert_success()
        .assert_hides(&[CONSUMER_SECRET, TOKEN, TOKEN_SECRET]);
    assert!(outcome.stdout.contains("oauth_consumer_key=demo-consumer"));
    assert!(outcome.stdout.contains("&oauth_token=****&"));
    assert!(outcome.stdout.contains("&oauth_signature=****"));
    assert!(received(&server).await.is_empty());
}

#[tokio::test]
async fn an_instance_without_the_token_secret_is_refused_and_nothing_is_sent() {
    let server = vendor().await;
    let context = TestContext::fixture("oauth1").with_instance(&json!({
        "base.url": server.uri(),
        "oauth.api.key": "demo-consumer",
        "oauth.api.secret": CONSUMER_SECRET,
        "oauth.user.token": TOKEN,
    }));
    let outcome = context.run("board-cards").param("id", "b7").output();
    outcome
        .assert_code(3)
        .assert_hides(&[CONSUMER_SECRET, TOKEN]);
    run_snapshot!(context, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: the instance lacks required configuration: `oauth.user.token.secret` (the access token's secret)
    hint: add the keys to the instance file, then run again
    ");
    assert!(received(&server).await.is_empty());
}
