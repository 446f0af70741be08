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
/// `oauth_signature`), keyed by the consumer secret and the access token's secret.
fn expected_signature(
    server_uri: &str,
    request: &wiremock::Request,
    protocol: &[(String, String)],
) -> String {
    signature_with(server_uri, request, protocol, TOKEN_SECRET)
}

/// [`expected_signature`] keyed by the consumer secret and `token_secret` (empty for the
/// request token's request, the request token's secret for the access token's).
pub(crate) fn signature_with(
    server_uri: &str,
    request: &wiremock::Request,
    protocol: &[(String, String)],
    token_secret: &str,
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
    let key = format!("{}&{}", encode(CONSUMER_SECRET), encode(token_secret));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The protocol parameters of a request signed in its query.
pub(crate) fn query_protocol(request: &wiremock::Request) -> Vec<(String, String)> {
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

/// `--dry-run` shows the signed request as it would go, in the query or the header: the token
/// and the signature masked, the signature method, the version and the consumer key (no secret
/// of this connector) readable.
#[tokio::test]
async fn a_dry_run_shows_the_signed_request_with_the_token_and_signature_masked() {
    let server = vendor().await;
    let mut shown = String::new();
    for placement in ["query", "header"] {
        let context = signed(&server, placement);
        let outcome = context
            .run("create-list")
            .param("name", "To do")
            .dry_run()
            .output();
        outcome
            .assert_success()
            .assert_hides(&[CONSUMER_SECRET, TOKEN, TOKEN_SECRET]);
        shown.push_str("# ");
        shown.push_str(placement);
        shown.push('\n');
        shown.push_str(&outcome.stdout);
    }
    assert!(received(&server).await.is_empty());
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:\d+", "[SERVER]");
    settings.add_filter(r#"oauth_nonce=("?)[0-9a-f]{32}"#, "oauth_nonce=$1[NONCE]");
    settings.add_filter(r#"oauth_timestamp=("?)\d+"#, "oauth_timestamp=$1[TIME]");
    settings.bind(|| {
        insta::assert_snapshot!(shown, @r#"
        # query
        POST http://[SERVER]/lists?oauth_consumer_key=demo-consumer&oauth_nonce=[NONCE]&oauth_signature_method=HMAC-SHA1&oauth_timestamp=[TIME]&oauth_token=****&oauth_version=1.0&oauth_signature=****
        Accept: application/json
        Content-Type: application/x-www-form-urlencoded

        name=To%20do
        # header
        POST http://[SERVER]/lists
        Accept: application/json
        Authorization: OAuth oauth_consumer_key="demo-consumer", oauth_nonce="[NONCE]", oauth_signature_method="HMAC-SHA1", oauth_timestamp="[TIME]", oauth_token="****", oauth_version="1.0", oauth_signature="****"
        Content-Type: application/x-www-form-urlencoded

        name=To%20do
        "#);
    });
}

/// A consumer key the connector keeps secret (a `PASSWORD` property) is masked as well.
#[tokio::test]
async fn a_dry_run_masks_a_secret_consumer_key() {
    let server = vendor().await;
    let context = TestContext::patched("oauth1", |connector| {
        connector["configuration"][1]["type"] = json!("PASSWORD");
    })
    .with_instance(&json!({
        "base.url": server.uri(),
        "oauth.api.key": "demo-consumer",
        "oauth.api.secret": CONSUMER_SECRET,
        "oauth.user.token": TOKEN,
        "oauth.user.token.secret": TOKEN_SECRET,
        "oauth.request.authorization.type": "header",
    }));
    let outcome = context
        .run("board-cards")
        .param("id", "b7")
        .dry_run()
        .output();
    outcome
        .assert_success()
        .assert_hides(&["demo-consumer", CONSUMER_SECRET, TOKEN, TOKEN_SECRET]);
    assert!(
        outcome
            .stdout
            .contains("Authorization: OAuth oauth_consumer_key=\"****\", "),
        "{}",
        outcome.stdout
    );
}

/// A run recorded against the vendor replays with `engine test`: the nonce, the time and the
/// signature differ at every signing and are not compared; the other protocol parameters are
/// (another consumer key fails the replay).
#[tokio::test]
async fn a_recorded_signed_run_replays() {
    let server = vendor().await;
    for placement in ["query", "header"] {
        let context = signed(&server, placement);
        let cassette = context.dir().join("signed.cassette.json");
        context
            .run("board-cards")
            .param("id", "b7")
            .arg("--record")
            .arg(&cassette)
            .output()
            .assert_success();
        let recorded = fs_err::read_to_string(&cassette).unwrap();
        for secret in [CONSUMER_SECRET, TOKEN, TOKEN_SECRET] {
            assert!(!recorded.contains(secret), "{recorded}");
        }
        let replay = |consumer_key: &str| {
            let test = context.dir().join("replay.test.json");
            let test_file = json!({
                "connector": crate::support::repo_root().join(context.connector()),
                "instance": {
                    "base.url": "https://elsewhere.test",
                    "oauth.api.key": consumer_key,
                    "oauth.api.secret": CONSUMER_SECRET,
                    "oauth.user.token": TOKEN,
                    "oauth.user.token.secret": TOKEN_SECRET,
                    "oauth.request.authorization.type": placement,
                },
                "steps": [{
                    "name": "a signed call",
                    "run": {"resource": "board-cards", "params": {"id": "b7"}},
                    "exchanges": [{"cassette": "signed.cassette.json", "run": 0, "exchange": 0}]
                }]
            });
            fs_err::write(&test, test_file.to_string()).unwrap();
            let output = crate::support::engine()
                .arg("test")
                .arg(&test)
                .output()
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let (code, stderr) = replay("demo-consumer");
        assert_eq!(code, Some(0), "{placement}: {stderr}\n{recorded}");
        let (code, stderr) = replay("another-consumer");
        assert_eq!(code, Some(1), "{placement}: {stderr}");
        assert!(
            stderr.contains("oauth_consumer_key=another-consumer")
                || stderr.contains("oauth_consumer_key=\"another-consumer\""),
            "{placement}: {stderr}"
        );
    }
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
