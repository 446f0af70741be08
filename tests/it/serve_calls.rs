//! `engine serve` creating and deleting instances over HTTP, and resource calls that carry the
//! caller's headers: the built binary, a SQLite store in a temporary directory and a loopback
//! vendor that records what it receives.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::serve::Served;
use crate::support::run::{received_at, time_ago, token_response};

const CONNECTOR: &str = "tests/fixtures/run/stored/connector.json";
const CLIENT_SECRET: &str = "FAKE-client-secret-3c1e";
const TOKEN: &str = "FAKE-imported-token-4d2f";
const REFRESH: &str = "FAKE-imported-refresh-5e3a";
const NEW_TOKEN: &str = "FAKE-new-token-6f4b";
/// The caller's credentials for the service: never forwarded to a vendor.
const SERVICE_KEY: &str = "FAKE-service-key-7a5c";

/// The headers every request to the service carries besides the API key (the client's default
/// header).
fn service_headers() -> Vec<(&'static str, String)> {
    Vec::new()
}

/// A request to the service: every request of these tests is built here.
fn request(
    client: &reqwest::Client,
    verb: &str,
    url: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let verb = reqwest::Method::from_bytes(verb.as_bytes()).unwrap();
    let mut builder = client.request(verb, url);
    for (name, value) in service_headers() {
        builder = builder.header(name, value);
    }
    match body {
        Some(body) => builder.json(body),
        None => builder,
    }
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

async fn send(builder: reqwest::RequestBuilder) -> Answer {
    let response = builder.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

/// A vendor: tokens, `/contacts` answering with its headers `X-Vendor-Trace`, a cookie and a
/// hop-by-hop `X-Vendor-Hop` (named by `Connection`) and `X-Token-Echo` repeating the token, and
/// `/oauth/revoke` (`onDelete`) answering `revoke`.
async fn vendor(revoke: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(NEW_TOKEN, Some(REFRESH), json!(3600)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-vendor-trace", "trace-1")
                .insert_header("set-cookie", "vendor-session=FAKE-vendor-cookie")
                .insert_header("connection", "x-vendor-hop")
                .insert_header("x-vendor-hop", "hop")
                .insert_header("x-token-echo", format!("Bearer {TOKEN}"))
                .set_body_json(json!({"data": [{"id": "c1"}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .respond_with(ResponseTemplate::new(revoke).set_body_json(json!({"error": "refused"})))
        .mount(&server)
        .await;
    server
}

/// The values of a new instance of the fixture connector on `vendor`, with tokens it already
/// holds (obtained a minute ago, for an hour).
fn values(vendor: &MockServer) -> Value {
    json!({
        "base.url": vendor.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": TOKEN,
        "refresh.token": REFRESH,
        "authentication.time": time_ago(60),
        "expires_in": "3600",
    })
}

/// Creates the instance `acme` of the fixture connector on `vendor` through the service's
/// `instances` URL.
async fn create_acme(client: &reqwest::Client, instances: &str, vendor: &MockServer) {
    let body = json!({"id": "acme", "connector": "stored", "values": values(vendor)});
    let created = send(request(client, "POST", instances, Some(&body))).await;
    assert_eq!(created.status, 201, "{}", created.body);
}

/// A temporary directory with the fixture connector as `stored.json` (the name `stored`), and
/// a SQLite store.
struct Setup {
    _temp: tempfile::TempDir,
    store: String,
    connectors: String,
}

fn setup() -> Setup {
    let temp = tempfile::tempdir().unwrap();
    let connectors = temp.path().join("connectors");
    fs_err::create_dir(&connectors).unwrap();
    fs_err::copy(
        crate::support::repo_root().join(CONNECTOR),
        connectors.join("stored.json"),
    )
    .unwrap();
    Setup {
        store: crate::support::sqlite_store(temp.path()),
        connectors: connectors.display().to_string(),
        _temp: temp,
    }
}

/// Asserts that no answer holds a secret.
#[track_caller]
fn assert_hides(answers: &[&Answer]) {
    for answer in answers {
        for secret in [CLIENT_SECRET, TOKEN, REFRESH, NEW_TOKEN, SERVICE_KEY] {
            assert!(
                !answer.body.contains(secret),
                "`{secret}` shown: {}",
                answer.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_created_with_their_tokens_checked_and_deleted_through_on_delete() {
    let setup = setup();
    let vendor_server = vendor(200).await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let base = served.url.clone();
    let instances = format!("{base}/v1/instances");

    // Created with the tokens it holds: `201`, its `Location`, its secrets masked.
    let body = json!({"id": "acme", "connector": "stored", "values": values(&vendor_server)});
    let created = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("location"), Some("/v1/instances/acme"));
    let shown = created.json();
    assert_eq!(
        (&shown["id"], &shown["connector"], &shown["status"]),
        (&json!("acme"), &json!("stored"), &json!("fresh")),
        "{shown}"
    );
    assert_eq!(shown["values"]["client.secret"], "****");
    assert_eq!(shown["values"]["access.token"], "****");
    assert_eq!(shown["values"]["client.id"], "demo-client");

    // Its token is the one a call sends: no token request.
    let call = send(request(
        &client,
        "GET",
        &format!("{instances}/acme/resources/list-contacts"),
        None,
    ))
    .await;
    assert_eq!(call.status, 200, "{}", call.body);
    let sent = received_at(&vendor_server, "/contacts").await;
    assert_eq!(
        sent[0].headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
    assert!(received_at(&vendor_server, "/oauth/token").await.is_empty());
    // The resource as `METHOD:/path`, percent-encoded in one path segment: the same call.
    let by_path = send(request(
        &client,
        "GET",
        &format!("{instances}/acme/resources/GET%3A%2Fcontacts"),
        None,
    ))
    .await;
    assert_eq!(by_path.status, 200, "{}", by_path.body);
    assert_eq!(by_path.body, call.body);
    assert_eq!(received_at(&vendor_server, "/contacts").await.len(), 2);
    // A path that names no resource call: `404` without asking the vendor; a resource that is
    // not UTF-8 once decoded: `400`.
    for (path, status, kind) in [
        ("acme/resources/list-contacts/more", 404, "not-found"),
        ("acme/resources/", 404, "not-found"),
        ("acme/resources", 404, "not-found"),
        ("acme/resources/no-such-resource", 404, "resource-not-found"),
        ("nobody/resources/list-contacts", 404, "instance-not-found"),
        ("acme/resources/%FF", 400, "bad-request"),
    ] {
        let answer = send(request(
            &client,
            "GET",
            &format!("{instances}/{path}"),
            None,
        ))
        .await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json"),
            "{path}"
        );
        assert_eq!(
            answer.json()["type"],
            format!("urn:engine:problem:{kind}"),
            "{path}"
        );
    }
    assert_eq!(received_at(&vendor_server, "/contacts").await.len(), 2);

    // The same id again: `409`.
    let duplicate = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(duplicate.status, 409, "{}", duplicate.body);
    assert_eq!(
        duplicate.json()["type"],
        "urn:engine:problem:instance-exists"
    );

    // Values the connector does not take: `422`, naming the key, never the value.
    let mut unknown = values(&vendor_server);
    unknown["colour"] = "FAKE-colour-value".into();
    let mut missing = values(&vendor_server);
    missing
        .as_object_mut()
        .unwrap()
        .shift_remove("client.secret");
    let mut wrong = values(&vendor_server);
    wrong["client.id"] = json!({"nested": true});
    for (values, key) in [
        (unknown, "colour"),
        (missing, "client.secret"),
        (wrong, "client.id"),
    ] {
        let body = json!({"id": "bad", "connector": "stored", "values": values});
        let refused = send(request(&client, "POST", &instances, Some(&body))).await;
        assert_eq!(refused.status, 422, "{}", refused.body);
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        let problem = refused.json();
        assert_eq!(problem["type"], "urn:engine:problem:invalid-value");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("`{key}`")), "{detail}");
        assert!(!refused.body.contains("FAKE-colour-value"), "{detail}");
        assert_hides(&[&refused]);
    }
    let gone = send(request(&client, "GET", &format!("{instances}/bad"), None)).await;
    assert_eq!(gone.status, 404);

    // No connector of that name: `422`; a body that is no instance: `400`.
    let body = json!({"connector": "nope", "values": {}});
    let unknown = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(
        (unknown.status, unknown.json()["type"].as_str()),
        (422, Some("urn:engine:problem:connector-unavailable")),
        "{}",
        unknown.body
    );
    let body = json!({"values": {}});
    let malformed = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);

    // Without an id, one is made up.
    let body = json!({"connector": "stored", "values": values(&vendor_server)});
    let generated = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(generated.status, 201, "{}", generated.body);
    let id = generated.json()["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("inst-") && id.len() == 25, "{id}");
    assert_eq!(
        generated.header("location"),
        Some(format!("/v1/instances/{id}").as_str())
    );

    // Deleted: `onDelete` runs with the instance's token first, then the instance goes.
    let deleted = send(request(
        &client,
        "DELETE",
        &format!("{instances}/acme"),
        None,
    ))
    .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let revoked = received_at(&vendor_server, "/oauth/revoke").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0].headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
    assert_eq!(
        String::from_utf8_lossy(&revoked[0].body),
        format!("token={REFRESH}")
    );
    let gone = send(request(&client, "GET", &format!("{instances}/acme"), None)).await;
    assert_eq!(gone.status, 404);
    let again = send(request(
        &client,
        "DELETE",
        &format!("{instances}/acme"),
        None,
    ))
    .await;
    assert_eq!(again.status, 404, "{}", again.body);

    // A failed `onDelete` keeps the instance, unless forced.
    let refusing = vendor(403).await;
    let body = json!({"id": "staying", "connector": "stored", "values": values(&refusing)});
    let created = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let kept = send(request(
        &client,
        "DELETE",
        &format!("{instances}/staying"),
        None,
    ))
    .await;
    assert_eq!(kept.status, 502, "{}", kept.body);
    let problem = kept.json();
    assert_eq!(problem["type"], "urn:engine:problem:on-delete-failed");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("`staying` was not deleted") && detail.contains("?force=true"),
        "{detail}"
    );
    let still = send(request(
        &client,
        "GET",
        &format!("{instances}/staying"),
        None,
    ))
    .await;
    assert_eq!(still.status, 200);
    let forced = send(request(
        &client,
        "DELETE",
        &format!("{instances}/staying?force=true"),
        None,
    ))
    .await;
    assert_eq!(forced.status, 204, "{}", forced.body);
    assert_eq!(received_at(&refusing, "/oauth/revoke").await.len(), 2);
    let gone = send(request(
        &client,
        "GET",
        &format!("{instances}/staying"),
        None,
    ))
    .await;
    assert_eq!(gone.status, 404);

    assert_hides(&[&created, &kept, &forced, &call, &generated]);
    let stderr = served.stderr();
    for secret in [CLIENT_SECRET, TOKEN, REFRESH, NEW_TOKEN] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}

/// Sends `request` (raw HTTP/1.1, so that its headers go exactly as written) to `base` and
/// returns the answer's status line and headers.
async fn raw(base: &str, request: &str) -> String {
    use std::io::{Read as _, Write as _};
    let address = base.trim_start_matches("http://").to_owned();
    let request = request.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("an answer");
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forwards_the_callers_headers_but_not_hop_by_hop_ones_or_its_credentials() {
    let setup = setup();
    let vendor_server = vendor(200).await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let key = crate::serve::create_key(
        &setup.store,
        "tests",
        &["resources", "instances:read", "instances:write"],
    );
    let client = crate::serve::client_with(&key);
    let instances = format!("{}/v1/instances", served.url);
    create_acme(&client, &instances, &vendor_server).await;

    // Written by hand: a client library would drop or rewrite `Connection` and the headers it
    // names.
    let mut text = String::from("GET /v1/instances/acme/resources/list-contacts HTTP/1.1\r\n");
    text.push_str("Host: service.example\r\n");
    for (name, value) in service_headers() {
        writeln!(text, "{name}: {value}\r").unwrap();
    }
    writeln!(text, "Authorization: Bearer {key}\r").unwrap();
    text.push_str("Cookie: session=FAKE-cookie\r\n");
    text.push_str("X-Caller-Tag: tag-42\r\n");
    text.push_str("X-Hop: FAKE-hop-value\r\n");
    text.push_str("Keep-Alive: timeout=5\r\n");
    text.push_str("Proxy-Authorization: Basic FAKE-proxy\r\n");
    text.push_str("Connection: close, X-Hop\r\n\r\n");
    let answer = raw(&served.url, &text).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The vendor's own headers come back; its cookie, hop-by-hop headers and the type of its
    // body (the answer is the engine's JSON) do not.
    let answer = answer.to_ascii_lowercase();
    assert!(
        answer.contains("\r\nx-vendor-trace: trace-1\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\r\ncontent-type: application/json\r\n"),
        "{answer}"
    );
    // Secrets in them are masked, as in bodies.
    assert!(answer.contains("\r\nx-token-echo: "), "{answer}");
    assert!(!answer.contains(&TOKEN.to_ascii_lowercase()), "{answer}");
    for name in ["set-cookie", "x-vendor-hop", "keep-alive"] {
        assert!(
            !answer.contains(&format!("\r\n{name}:")),
            "`{name}` came back: {answer}"
        );
    }

    let sent = received_at(&vendor_server, "/contacts").await;
    assert_eq!(sent.len(), 1);
    let headers = &sent[0].headers;
    assert_eq!(headers.get("x-caller-tag").unwrap(), "tag-42");
    // The vendor gets the instance's token, never the caller's key.
    assert_eq!(
        headers.get("authorization").unwrap(),
        &format!("Bearer {TOKEN}")
    );
    for name in ["x-hop", "keep-alive", "proxy-authorization", "cookie"] {
        assert!(
            headers.get(name).is_none(),
            "`{name}` forwarded: {headers:?}"
        );
    }
    assert_ne!(
        headers.get("host").map(|host| host.to_str().unwrap()),
        Some("service.example")
    );
    let all = format!("{headers:?}");
    assert!(!all.contains(SERVICE_KEY), "{all}");
    assert!(!all.contains(key.as_str()), "{all}");
    assert!(!all.contains("FAKE-hop-value"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cooling_down_answers_503_with_retry_after_without_asking_the_vendor() {
    let setup = setup();
    let refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&refusing)
        .await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let instances = format!("{}/v1/instances", served.url);
    // Its token expired an hour ago: the scheduler refreshes it at once, and the vendor refuses.
    let mut expired = values(&refusing);
    expired["authentication.time"] = time_ago(7200).into();
    let body = json!({"id": "cold", "connector": "stored", "values": expired});
    let created = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let history = send(request(
            &client,
            "GET",
            &format!("{instances}/cold/history"),
            None,
        ))
        .await;
        if history.json()["entries"]
            .as_array()
            .is_some_and(|entries| !entries.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not refreshed: {}",
            served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = received_at(&refusing, "/oauth/token").await.len();
    assert_eq!(asked, 1);

    let call = send(request(
        &client,
        "GET",
        &format!("{instances}/cold/resources/list-contacts"),
        None,
    ))
    .await;
    assert_eq!(call.status, 503, "{}", call.body);
    assert_eq!(
        call.json()["type"],
        "urn:engine:problem:instance-cooling-down"
    );
    let wait: u64 = call.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&wait), "{wait}");
    // Answered at once: the vendor was not asked again.
    assert_eq!(received_at(&refusing, "/oauth/token").await.len(), asked);
    assert!(received_at(&refusing, "/contacts").await.is_empty());
}

/// The one replay rule, through the service: a `POST` the vendor refused for its token (`401`)
/// is sent again once with a new token; one the vendor may have acted on (a `503`) never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_sent_again_only_after_its_token_was_refused() {
    use wiremock::matchers::header;
    let setup = setup();
    let vendor_server = vendor(200).await;
    Mock::given(method("POST"))
        .and(path("/contacts"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(401))
        .mount(&vendor_server)
        .await;
    Mock::given(method("POST"))
        .and(path("/contacts"))
        .and(header(
            "authorization",
            format!("Bearer {NEW_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"error": "overloaded"})))
        .mount(&vendor_server)
        .await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let instances = format!("{}/v1/instances", served.url);
    create_acme(&client, &instances, &vendor_server).await;

    let contact = json!({"name": "Ada"});
    let call = send(request(
        &client,
        "POST",
        &format!("{instances}/acme/resources/create-contact"),
        Some(&contact),
    ))
    .await;
    // The vendor's answer comes back as it was.
    assert_eq!(call.status, 503, "{}", call.body);
    assert_eq!(call.json(), json!({"error": "overloaded"}));
    let sent = received_at(&vendor_server, "/contacts").await;
    let tokens: Vec<&str> = sent
        .iter()
        .map(|request| {
            request
                .headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        tokens,
        [format!("Bearer {TOKEN}"), format!("Bearer {NEW_TOKEN}")],
        "sent once with the refused token, once with the new one, and never again"
    );
    for request in &sent {
        assert_eq!(
            serde_json::from_slice::<Value>(&request.body).unwrap(),
            contact
        );
    }
    assert_eq!(received_at(&vendor_server, "/oauth/token").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendors_json_comes_back_as_it_came_unless_a_secret_could_be_read_from_it() {
    use wiremock::matchers::body_partial_json;
    let setup = setup();
    let vendor_server = vendor(200).await;
    // The vendor's own spacing and order of fields; the token echoed plainly; the token echoed
    // with `e` written as `\u0065`, which only a JSON reading turns back into the token.
    let plain = "{ \"name\" : \"Ada\",\n  \"id\": \"c9\" }";
    let echoed = format!("{{ \"id\": \"c9\", \"echo\": \"{TOKEN}\" }}");
    let escaped = format!(
        "{{ \"id\": \"c9\", \"echo\": \"{}\" }}",
        TOKEN.replace('e', "\\u0065")
    );
    for (name, answer) in [
        ("plain", plain.to_owned()),
        ("echoed", echoed),
        ("escaped", escaped),
    ] {
        Mock::given(method("POST"))
            .and(path("/contacts"))
            .and(body_partial_json(json!({"name": name})))
            .respond_with(ResponseTemplate::new(201).set_body_raw(answer, "application/json"))
            .mount(&vendor_server)
            .await;
    }
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let instances = format!("{}/v1/instances", served.url);
    create_acme(&client, &instances, &vendor_server).await;
    let call = |name: &str| {
        send(request(
            &client,
            "POST",
            &format!("{instances}/acme/resources/create-contact"),
            Some(&json!({"name": name})),
        ))
    };

    let answer = call("plain").await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body, plain, "the vendor's bytes, not written anew");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    for name in ["echoed", "escaped"] {
        let answer = call(name).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(answer.json(), json!({"id": "c9", "echo": "****"}), "{name}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_hides(&[&answer]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendors_error_answer_comes_back_with_its_headers_but_not_its_cookie_or_hop_by_hop_ones()
{
    let setup = setup();
    let vendor_server = MockServer::start().await;
    let problem = json!({"title": "slow down", "detail": format!("token {TOKEN} over its quota")});
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("set-cookie", "vendor-session=FAKE-vendor-cookie")
                .insert_header("connection", "x-vendor-hop")
                .insert_header("x-vendor-hop", "hop")
                .insert_header("x-token-echo", format!("Bearer {TOKEN}"))
                .set_body_raw(problem.to_string(), "application/problem+json"),
        )
        .mount(&vendor_server)
        .await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let instances = format!("{}/v1/instances", served.url);
    create_acme(&client, &instances, &vendor_server).await;

    let call = send(request(
        &client,
        "GET",
        &format!("{instances}/acme/resources/list-contacts"),
        None,
    ))
    .await;
    // The vendor's status, body (masked) and headers, its type included.
    assert_eq!(call.status, 429, "{}", call.body);
    assert_eq!(call.header("retry-after"), Some("7"));
    assert_eq!(call.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        call.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(call.json()["title"], "slow down");
    assert!(call.body.contains("over its quota"), "{}", call.body);
    // A token in a header's value is masked, as in the body.
    let echoed = call.header("x-token-echo").unwrap();
    assert!(
        echoed.starts_with("Bearer ") && !echoed.contains(TOKEN),
        "{echoed}"
    );
    for name in ["set-cookie", "x-vendor-hop", "connection"] {
        assert!(
            call.header(name).is_none(),
            "`{name}` came back: {:?}",
            call.headers
        );
    }
    // Sent once: a `429` from a resource is never retried.
    assert_eq!(received_at(&vendor_server, "/contacts").await.len(), 1);
    assert_hides(&[&call]);
    let all = format!("{:?}", call.headers);
    assert!(
        !all.contains(TOKEN) && !all.contains("FAKE-vendor-cookie"),
        "{all}"
    );
}

/// A vendor that rejects every token at `/contacts` (`401`) and refuses to refresh (`400
/// invalid_grant`).
async fn rejecting_vendor() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": "revoked"})))
        .mount(&server)
        .await;
    server
}

/// The last entry of `id`'s history, and its events, through `client`.
async fn last_entry_and_events(client: &reqwest::Client, base: &str, id: &str) -> (Value, Value) {
    let history = send(request(
        client,
        "GET",
        &format!("{base}/v1/instances/{id}/history"),
        None,
    ))
    .await
    .json();
    let last = history["entries"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let events = send(request(
        client,
        "GET",
        &format!("{base}/v1/events?instance={id}"),
        None,
    ))
    .await
    .json();
    (last, events["events"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_failed_refresh_starts_the_backoff_so_the_next_call_is_answered_at_once() {
    let setup = setup();
    let vendor_server = rejecting_vendor().await;
    let served = Served::start_in(&setup.store, &setup.connectors);
    let client = crate::serve::client(&setup.store);
    let base = served.url.clone();
    let instances = format!("{base}/v1/instances");
    // Its token is fresh by its expiry: the scheduler leaves it alone; the vendor revoked it.
    let body = json!({"id": "revoked", "connector": "stored", "values": values(&vendor_server)});
    let created = send(request(&client, "POST", &instances, Some(&body))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let call_url = format!("{instances}/revoked/resources/list-contacts");

    // The first call: `401`, one refresh, refused: the instance is retried after a backoff.
    let first = send(request(&client, "GET", &call_url, None)).await;
    assert_eq!(first.status, 409, "{}", first.body);
    assert_eq!(
        first.json()["type"],
        "urn:engine:problem:reauthentication-needed"
    );
    assert_eq!(received_at(&vendor_server, "/oauth/token").await.len(), 1);
    let (last, events) = last_entry_and_events(&client, &base, "revoked").await;
    assert_eq!(last["trigger"], "401", "{last}");
    assert_eq!(last["outcome"], "rejected", "{last}");
    assert_eq!(
        (&last["transition"]["from"], &last["transition"]["to"]),
        (&json!("fresh"), &json!("retrying")),
        "{last}"
    );
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let data = &events[0]["data"];
    assert_eq!(events[0]["type"], "refresh.failed");
    assert_eq!(
        (
            &data["trigger"],
            &data["from"],
            &data["status"],
            &data["rejections"]
        ),
        (
            &json!("call"),
            &json!("fresh"),
            &json!("retrying"),
            &json!(1)
        ),
        "{data}"
    );
    assert!(data["retry_at"].is_string(), "{data}");

    // The next call is answered at once: the token is not asked for again before the retry.
    let second = send(request(&client, "GET", &call_url, None)).await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(
        second.json()["type"],
        "urn:engine:problem:instance-cooling-down"
    );
    let wait: u64 = second.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert_eq!(received_at(&vendor_server, "/oauth/token").await.len(), 1);
    crate::serve::stop(served);

    // With one rejection allowed, a call's refused refresh marks the instance `needs-reauth`.
    let served = Served::start_with(&setup.store, &setup.connectors, &["--max-failures", "1"]);
    let base = served.url.clone();
    let body = json!({"id": "strict", "connector": "stored", "values": values(&vendor_server)});
    let created = send(request(
        &client,
        "POST",
        &format!("{base}/v1/instances"),
        Some(&body),
    ))
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let call = send(request(
        &client,
        "GET",
        &format!("{base}/v1/instances/strict/resources/list-contacts"),
        None,
    ))
    .await;
    assert_eq!(call.status, 409, "{}", call.body);
    let (last, events) = last_entry_and_events(&client, &base, "strict").await;
    assert_eq!(last["transition"]["to"], "needs-reauth", "{last}");
    assert_eq!(events[0]["type"], "instance.needs_reauth", "{events}");
    let shown = send(request(
        &client,
        "GET",
        &format!("{base}/v1/instances/strict"),
        None,
    ))
    .await;
    assert_eq!(shown.json()["status"], "needs-reauth", "{}", shown.body);
    let stderr = served.stderr();
    for secret in [CLIENT_SECRET, TOKEN, REFRESH] {
        assert!(!stderr.contains(secret), "{stderr}");
    }
}
