//! `engine serve` signs instances in through a browser: `POST /v1/instances/{id}/authorize`
//! answers the vendor's authorization URL (state, PKCE S256), the vendor sends the browser back
//! to `GET /v1/oauth/callback` on any process of the store (SQLite, and PostgreSQL with
//! `ENGINE_TEST_POSTGRES`), which exchanges the code once. Against a real authorization server
//! (oidc-provider, PKCE required) and a recording vendor (wiremock), with the built binary. An
//! OAuth 1.0a instance signs in the same way, against a loopback OAuth 1.0a vendor. And the
//! OpenAPI document the service serves is the checked-in one.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::instances::{engine_output, write_file};
use crate::platform_oauth1::{query_protocol, signature_with};
use crate::serve::{Answer, Served, call, client_with, create_key, revealed};
use crate::support::oidc::{
    BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, LOGIN, OidcOptions, OidcServer, drive_login,
};
use crate::support::run::{form_of, received, received_at, token_response};

const CONNECTOR: &str = "tests/fixtures/oauth2/authorization-code.json";
const TOKEN: &str = "FAKE-signed-in-token-7777";
const REFRESH: &str = "FAKE-signed-in-refresh-8888";

/// Imports `id` of the authorization-code connector with `values`, marked `needs-reauth`
/// after three rejected refreshes.
fn import_rejected(store: &str, id: &str, values: &Value) {
    let temp = tempfile::tempdir().unwrap();
    let mut values = values.clone();
    values["engine.status"] = json!("needs-reauth");
    values["engine.failures"] = json!(3);
    let file = write_file(temp.path(), id, &values);
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--connector",
        CONNECTOR,
        "--store",
        store,
    ])
    .assert_success();
}

/// `POST /v1/instances/{id}/authorize`: the answer, and the authorization URL's query.
async fn begin(
    client: &reqwest::Client,
    served: &Served,
    id: &str,
) -> (Value, Vec<(String, String)>) {
    let answer = call(
        client,
        "POST",
        &format!("{}/v1/instances/{id}/authorize", served.url),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    let url = url::Url::parse(body["authorization_url"].as_str().unwrap()).unwrap();
    let query = url.query_pairs().into_owned().collect();
    (body, query)
}

fn parameter<'a>(query: &'a [(String, String)], name: &str) -> &'a str {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

/// A GET without an API key: the browser coming back.
/// The first entry of the history of `id`, as the service answers it.
async fn first_history_entry(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let history = call(client, "GET", &format!("{base}/v1/instances/{id}/history"))
        .await
        .json();
    history["entries"][0].clone()
}

async fn browser(url: &str) -> Answer {
    call(&crate::support::http().build().unwrap(), "GET", url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_an_instance_in_through_the_browser_with_pkce() {
    let idp = OidcServer::start_with(&OidcOptions {
        // A native client: the loopback callback matches on any port, its path exactly.
        redirect_uris: vec!["http://127.0.0.1/v1/oauth/callback".to_owned()],
        ttl_secs: 600,
        require_pkce: true,
    });
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let values = json!({
        "base.url": idp.issuer(),
        "oauth.authorization.url": format!("{}?prompt=consent", idp.authorization_url()),
        "oauth.token.url": idp.token_url(),
        "oauth.callback.url": "http://127.0.0.1/v1/oauth/callback",
        "oauth.api.key": BASIC_CLIENT_ID,
        "oauth.api.secret": BASIC_CLIENT_SECRET,
    });
    import_rejected(&store, "signin", &values);
    let writer = create_key(&store, "app", &["instances:read", "instances:write"]);
    let caller = create_key(&store, "calls", &["resources"]);
    let served = Served::start_in(&store, "tests/fixtures/oauth2");
    let client = client_with(&writer);
    let callback = format!("{}/v1/oauth/callback", served.url);

    let (started, query) = begin(&client, &served, "signin").await;
    assert_eq!(started["redirect_uri"], callback.as_str());
    assert!(started["expires_at"].is_string(), "{started}");
    assert_eq!(parameter(&query, "redirect_uri"), callback);
    assert_eq!(parameter(&query, "code_challenge_method"), "S256");
    assert_eq!(parameter(&query, "client_id"), BASIC_CLIENT_ID);
    let state = parameter(&query, "state").to_owned();
    assert_eq!(state.len(), 64);

    // The person signs in; the vendor sends the browser back to the service, with no API key.
    let answer = drive_login(
        started["authorization_url"].as_str().unwrap(),
        &callback,
        false,
    )
    .await;
    let signed_in = browser(&answer).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    let shown = signed_in.json();
    assert_eq!(
        (&shown["id"], &shown["status"]),
        (&json!("signin"), &json!("fresh"))
    );
    assert!(shown.get("values").is_none(), "{shown}");

    // The same callback again: the state was used; refused before anything reaches the vendor.
    let replayed = browser(&answer).await;
    assert_eq!(replayed.status, 400, "{}", replayed.body);
    assert_eq!(replayed.content_type, "application/problem+json");
    assert_eq!(replayed.json()["type"], "urn:engine:problem:invalid-state");

    // The tokens are stored, `needs-reauth` is cleared, and the instance calls the vendor.
    let stored = revealed(&store, "signin");
    assert!(stored["oauth.user.token"].is_string(), "{stored}");
    assert!(stored["oauth.user.refresh_token"].is_string(), "{stored}");
    assert_eq!(
        (
            &stored["engine.schedule"]["status"],
            &stored["engine.schedule"]["failures"]
        ),
        (&json!("fresh"), &json!(0)),
        "{stored}"
    );
    let me = call(
        &client_with(&caller),
        "GET",
        &format!("{}/v1/instances/signin/resources/me", served.url),
    )
    .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.json()["sub"], LOGIN);
    let entry = &first_history_entry(&client, &served.url, "signin").await;
    assert_eq!(
        (&entry["trigger"], &entry["outcome"], &entry["resource"]),
        (
            &json!("sign-in"),
            &json!("ok"),
            &json!("oauth2 authorization_code")
        ),
        "{entry}"
    );

    // A new instance created over HTTP signs in the same way; it belongs to the key.
    let created = client
        .post(format!("{}/v1/instances", served.url))
        .json(&json!({"id": "fresh-one", "connector": "authorization-code", "values": values}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (started, _) = begin(&client, &served, "fresh-one").await;
    let answer = drive_login(
        started["authorization_url"].as_str().unwrap(),
        &callback,
        false,
    )
    .await;
    let signed_in = browser(&answer).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert!(revealed(&store, "fresh-one")["oauth.user.token"].is_string());
    let other = client_with(&create_key(&store, "other", &["instances:write"]));
    let foreign = call(
        &other,
        "POST",
        &format!("{}/v1/instances/fresh-one/authorize", served.url),
    )
    .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let reader = client_with(&create_key(&store, "reader", &["instances:read"]));
    let unscoped = call(
        &reader,
        "POST",
        &format!("{}/v1/instances/signin/authorize", served.url),
    )
    .await;
    assert_eq!(unscoped.status, 403, "{}", unscoped.body);

    // No secret of the flow in the server's output: the client's, the state.
    let stderr = served.stderr();
    for secret in [BASIC_CLIENT_SECRET, state.as_str()] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_callback_refuses_unknown_declined_and_reused_states_and_sends_pkce() {
    let temp = tempfile::tempdir().unwrap();
    refuses_bad_callbacks_and_exchanges_once(&crate::support::sqlite_store(temp.path())).await;
}

/// The same on PostgreSQL (with `ENGINE_TEST_POSTGRES`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_callback_on_postgres_is_taken_once_by_any_process() {
    let Some(schema) = crate::instances::Schema::create("serve_connect") else {
        return;
    };
    refuses_bad_callbacks_and_exchanges_once(&schema.store_url()).await;
}

/// Unknown, malformed, declined and reused states are refused with nothing sent to the vendor;
/// a flow started on one `engine serve` of `store` is finished on another, once, with PKCE.
async fn refuses_bad_callbacks_and_exchanges_once(store: &str) {
    let store = store.to_owned();
    let vendor = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response(TOKEN, Some(REFRESH), json!(3600)))
        .mount(&vendor)
        .await;
    import_rejected(
        &store,
        "acme",
        &json!({
            "base.url": vendor.uri(),
            "oauth.authorization.url": format!("{}/authorize", vendor.uri()),
            "oauth.token.url": format!("{}/token", vendor.uri()),
            "oauth.callback.url": "http://127.0.0.1/v1/oauth/callback",
            "oauth.api.key": "demo-client",
            "oauth.api.secret": BASIC_CLIENT_SECRET,
        }),
    );
    let key = create_key(&store, "app", &["instances:read", "instances:write"]);
    let public = "https://engine.example.test/base";
    let served = Served::start_with(
        &store,
        "tests/fixtures/oauth2",
        &["--public-url", &format!("{public}/")],
    );
    let client = client_with(&key);
    let callback = format!("{}/v1/oauth/callback", served.url);
    let problem = |answer: &Answer| {
        assert_eq!(
            answer.content_type, "application/problem+json",
            "{}",
            answer.body
        );
        (
            answer.status,
            answer.json()["type"].as_str().unwrap().to_owned(),
        )
    };
    let invalid = (400, "urn:engine:problem:invalid-state".to_owned());

    // No state, a state no flow has, a state of another shape: refused.
    assert_eq!(
        problem(&browser(&format!("{callback}?code=c")).await),
        invalid
    );
    let unknown = "0".repeat(64);
    assert_eq!(
        problem(&browser(&format!("{callback}?code=c&state={unknown}")).await),
        invalid
    );
    assert_eq!(
        problem(&browser(&format!("{callback}?code=c&state=../../x")).await),
        invalid
    );

    // The person declines: the flow is over, and its state cannot be used after.
    let (started, query) = begin(&client, &served, "acme").await;
    assert_eq!(
        started["redirect_uri"],
        format!("{public}/v1/oauth/callback").as_str()
    );
    let state = parameter(&query, "state").to_owned();
    let declined = browser(&format!(
        "{callback}?error=access_denied&error_description=no+thanks&state={state}"
    ))
    .await;
    assert_eq!(
        problem(&declined),
        (400, "urn:engine:problem:authorization-declined".to_owned())
    );
    assert!(
        declined.json()["detail"]
            .as_str()
            .unwrap()
            .contains("the vendor answered `access_denied`: no thanks"),
        "{}",
        declined.body
    );
    assert_eq!(
        problem(&browser(&format!("{callback}?code=c&state={state}")).await),
        invalid
    );
    assert!(
        received(&vendor).await.is_empty(),
        "nothing reaches the vendor"
    );

    // A genuine callback, on another process of the store: one token request, with the
    // verifier of the URL's challenge; the same callback again, on either, is refused.
    let (_, query) = begin(&client, &served, "acme").await;
    let state = parameter(&query, "state").to_owned();
    let challenge = parameter(&query, "code_challenge").to_owned();
    let other = Served::start_with(
        &store,
        "tests/fixtures/oauth2",
        &["--public-url", &format!("{public}/")],
    );
    let answer = format!(
        "{}/v1/oauth/callback?code=FAKE-code&state={state}",
        other.url
    );
    let signed_in = browser(&answer).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(problem(&browser(&answer).await), invalid);
    assert_eq!(
        problem(&browser(&format!("{callback}?code=FAKE-code&state={state}")).await),
        invalid
    );
    let requests = received(&vendor).await;
    assert_eq!(requests.len(), 1);
    let form = form_of(&requests[0]);
    let field = |name: &str| parameter(&form, name).to_owned();
    assert_eq!(field("grant_type"), "authorization_code");
    assert_eq!(field("code"), "FAKE-code");
    assert_eq!(field("redirect_uri"), format!("{public}/v1/oauth/callback"));
    let verifier = field("code_verifier");
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes())),
        challenge
    );
    let stored = revealed(&store, "acme");
    assert_eq!(stored["oauth.user.token"], TOKEN);
    assert_eq!(stored["engine.schedule"]["status"], "fresh", "{stored}");
    // Its next refresh is planned from the new token (a fifth of its hour ahead).
    let planned = stored["engine.schedule"]["next_refresh_at"]
        .as_u64()
        .unwrap();
    assert!(
        planned > crate::support::run::now_ms() + 40 * 60 * 1000,
        "{stored}"
    );
    // It had been marked `needs-reauth`: its recovery is an event, by the sign-in.
    let events = call(
        &client,
        "GET",
        &format!("{}/v1/events?instance=acme", served.url),
    )
    .await;
    assert_eq!(events.status, 200, "{}", events.body);
    let events = events.json();
    let recovered: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "instance.recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{events}");
    assert_eq!(
        (
            &recovered[0]["data"]["trigger"],
            &recovered[0]["data"]["from"]
        ),
        (&json!("sign-in"), &json!("needs-reauth")),
        "{events}"
    );
    let shown = call(&client, "GET", &format!("{}/v1/instances/acme", served.url)).await;
    for secret in [TOKEN, REFRESH, BASIC_CLIENT_SECRET, verifier.as_str()] {
        assert!(!shown.body.contains(secret), "{}", shown.body);
        assert!(!served.stderr().contains(secret));
        assert!(!other.stderr().contains(secret));
    }

    // A connector that does not sign in through a browser: 422, nothing started.
    crate::serve::import(&store, &vendor.uri(), "demo", 60);
    let demo = Served::start_with(&store, "connectors", &[]);
    let refused = call(
        &client,
        "POST",
        &format!("{}/v1/instances/demo/authorize", demo.url),
    )
    .await;
    assert_eq!(
        problem(&refused),
        (422, "urn:engine:problem:no-browser-sign-in".to_owned())
    );
}

/// An OAuth 1.0a instance signs in through the service (RFC 5849 2): a request token asked for
/// with the service's callback (signed again, with a nonce of its own, when the vendor's first
/// answer is a 503), the vendor's approval page, the callback's `oauth_token` and
/// `oauth_verifier`, once, the access token's request signed with the request token's secret,
/// which waited in the store encrypted; then the instance's calls are signed with the access
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_signs_an_oauth1_instance_in_with_the_request_token_secret_encrypted() {
    const CONSUMER_SECRET: &str = "FAKE-consumer-secret-2718";
    const REQUEST_SECRET: &str = "FAKE-request-secret-5";
    const ACCESS_TOKEN: &str = "FAKE-access-token-8";
    const ACCESS_SECRET: &str = "FAKE-access-secret-9";
    let vendor = MockServer::start().await;
    let form = |body: String| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/x-www-form-urlencoded")
            .set_body_string(body)
    };
    Mock::given(method("POST"))
        .and(path("/OAuthGetRequestToken"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&vendor)
        .await;
    Mock::given(method("POST"))
        .and(path("/OAuthGetRequestToken"))
        .respond_with(form(format!(
            "oauth_token=REQ-token-1&oauth_token_secret={REQUEST_SECRET}&oauth_callback_confirmed=true"
        )))
        .mount(&vendor)
        .await;
    Mock::given(method("POST"))
        .and(path("/OAuthGetAccessToken"))
        .respond_with(form(format!(
            "oauth_token={ACCESS_TOKEN}&oauth_token_secret={ACCESS_SECRET}"
        )))
        .mount(&vendor)
        .await;
    Mock::given(method("GET"))
        .and(path("/boards/b7/cards"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&vendor)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let file = write_file(
        temp.path(),
        "trello",
        &json!({
            "base.url": vendor.uri(),
            "oauth.api.key": "demo-consumer",
            "oauth.api.secret": CONSUMER_SECRET,
            "oauth.request.url": format!("{}/OAuthGetRequestToken", vendor.uri()),
            "oauth.token.url": format!("{}/OAuthGetAccessToken", vendor.uri()),
            "oauth.authorization.url": format!("{}/OAuthAuthorizeToken?scope={{oauth.scope}}", vendor.uri()),
            "oauth.scope": "read,write",
        }),
    );
    crate::serve::keyed(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--connector",
        "tests/fixtures/run/oauth1/connector.json",
        "--store",
        &store,
    ])
    .assert_success();
    let client = client_with(&create_key(
        &store,
        "app",
        &["instances:read", "instances:write", "resources"],
    ));
    let served = Served::start_in(&store, "tests/fixtures/run/oauth1");
    let callback = format!("{}/v1/oauth/callback", served.url);

    let (started, _) = begin(&client, &served, "trello").await;
    assert_eq!(started["redirect_uri"], callback.as_str());
    assert_eq!(
        started["authorization_url"],
        format!(
            "{}/OAuthAuthorizeToken?scope=read%2Cwrite&oauth_token=REQ-token-1",
            vendor.uri()
        )
        .as_str()
    );
    // The 503 and its retry: each signed with its own nonce, both signatures right.
    let asked = received_at(&vendor, "/OAuthGetRequestToken").await;
    assert_eq!(asked.len(), 2);
    let nonces: Vec<String> = asked
        .iter()
        .map(|request| {
            let protocol = query_protocol(request);
            let field = |name: &str| {
                protocol
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.clone())
                    .unwrap_or_default()
            };
            assert_eq!(field("oauth_callback"), callback);
            assert_eq!(
                field("oauth_signature"),
                signature_with(&vendor.uri(), request, &protocol, "")
            );
            field("oauth_nonce")
        })
        .collect();
    assert_eq!(nonces[0].len(), 32);
    assert_ne!(nonces[0], nonces[1]);

    // While the flow waits, the store holds the request token's secret encrypted only.
    let stored_bytes: Vec<u8> = fs_err::read_dir(temp.path())
        .unwrap()
        .flat_map(|entry| fs_err::read(entry.unwrap().path()).unwrap_or_default())
        .collect();
    let stored_text = String::from_utf8_lossy(&stored_bytes);
    assert!(stored_text.contains("demo-consumer"));
    assert!(!stored_text.contains(REQUEST_SECRET));

    // Another request token is refused, with nothing sent to the vendor.
    let forged = browser(&format!(
        "{callback}?oauth_token=REQ-token-2&oauth_verifier=VER-42"
    ))
    .await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert_eq!(forged.json()["type"], "urn:engine:problem:invalid-state");
    let answer = format!("{callback}?oauth_token=REQ-token-1&oauth_verifier=VER-42");
    let signed_in = browser(&answer).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    assert_eq!(signed_in.json()["id"], "trello");
    let replayed = browser(&answer).await;
    assert_eq!(replayed.status, 400, "{}", replayed.body);
    assert_eq!(replayed.json()["type"], "urn:engine:problem:invalid-state");

    // One exchange, signed with the request token and its secret.
    let exchanged = received_at(&vendor, "/OAuthGetAccessToken").await;
    assert_eq!(exchanged.len(), 1);
    let protocol = query_protocol(&exchanged[0]);
    let field = |name: &str| {
        protocol
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        (field("oauth_token"), field("oauth_verifier")),
        ("REQ-token-1".to_owned(), "VER-42".to_owned())
    );
    assert_eq!(
        field("oauth_signature"),
        signature_with(&vendor.uri(), &exchanged[0], &protocol, REQUEST_SECRET)
    );
    let stored = revealed(&store, "trello");
    assert_eq!(
        (
            &stored["oauth.user.token"],
            &stored["oauth.user.token.secret"]
        ),
        (&json!(ACCESS_TOKEN), &json!(ACCESS_SECRET)),
        "{stored}"
    );

    let entry = &first_history_entry(&client, &served.url, "trello").await;
    assert_eq!(
        (&entry["trigger"], &entry["outcome"], &entry["resource"]),
        (
            &json!("sign-in"),
            &json!("ok"),
            &json!("oauth1 access token")
        ),
        "{entry}"
    );

    // The instance's calls are signed with the access token.
    let cards = call(
        &client,
        "GET",
        &format!(
            "{}/v1/instances/trello/resources/board-cards?id=b7",
            served.url
        ),
    )
    .await;
    assert_eq!(cards.status, 200, "{}", cards.body);
    let card_request = &received_at(&vendor, "/boards/b7/cards").await[0];
    let protocol = query_protocol(card_request);
    assert!(protocol.contains(&("oauth_token".to_owned(), ACCESS_TOKEN.to_owned())));
    // A person who declines comes back with `denied`: the flow is over, nothing is exchanged.
    begin(&client, &served, "trello").await;
    let declined = browser(&format!("{callback}?denied=REQ-token-1")).await;
    assert_eq!(declined.status, 400, "{}", declined.body);
    assert_eq!(
        declined.json()["type"],
        "urn:engine:problem:authorization-declined"
    );
    let late = browser(&answer).await;
    assert_eq!(late.json()["type"], "urn:engine:problem:invalid-state");
    assert_eq!(received_at(&vendor, "/OAuthGetAccessToken").await.len(), 1);

    let stderr = served.stderr();
    for secret in [CONSUMER_SECRET, REQUEST_SECRET, ACCESS_SECRET, ACCESS_TOKEN] {
        assert!(!stderr.contains(secret), "{stderr}");
        assert!(!signed_in.body.contains(secret), "{}", signed_in.body);
    }
}

/// The OpenAPI document the service serves (with no key) is `schemas/openapi.json`, and every
/// operation it lists is a route of the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_publishes_the_checked_in_openapi_document() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let key = create_key(
        &store,
        "all",
        &["resources", "instances:read", "instances:write"],
    );
    let served = Served::start(&store);
    let served_document = browser(&format!("{}/v1/openapi.json", served.url)).await;
    assert_eq!(served_document.status, 200);
    assert_eq!(served_document.content_type, "application/json");
    let checked_in =
        fs_err::read_to_string(crate::support::repo_root().join("schemas/openapi.json")).unwrap();
    assert!(
        served_document.body == checked_in,
        "schemas/openapi.json differs from the served document: run `ENGINE_BLESS=1 cargo test -p engine-server openapi` and commit it"
    );
    let document = served_document.json();
    assert_eq!(document["openapi"], "3.1.0");
    let client = client_with(&key);
    for (template, operations) in document["paths"].as_object().unwrap() {
        let url = format!(
            "{}{}",
            served.url,
            template
                .replace("{id}", "nope")
                .replace("{resource}", "list-contacts")
        );
        for operation in operations.as_object().unwrap().keys() {
            let answer = call(&client, &operation.to_uppercase(), &url).await;
            let kind = serde_json::from_str::<Value>(&answer.body)
                .ok()
                .and_then(|body| body["type"].as_str().map(str::to_owned));
            assert!(
                answer.status != 405 && kind.as_deref() != Some("urn:engine:problem:not-found"),
                "{operation} {template} is no route: {} {}",
                answer.status,
                answer.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_with_states_no_flow_has_are_answered_429_before_any_lookup() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let served = Served::start(&store);
    let callback = |n: usize| format!("{}/v1/oauth/callback?state=made-up-{n}&code=c", served.url);
    // The first twenty are looked up and refused; past them the address waits.
    for n in 0..20 {
        let answer = browser(&callback(n)).await;
        assert_eq!(answer.status, 400, "callback {n}: {}", answer.body);
    }
    let mut limited = None;
    for n in 20..200 {
        let answer = browser(&callback(n)).await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 400, "callback {n}: {}", answer.body);
    }
    let answer = limited.expect("a 429 within 180 more callbacks (one a second refills)");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert_eq!(answer.json()["type"], "urn:engine:problem:rate-limited");
    crate::serve::stop(served);
}
