//! `engine serve` events and webhooks, on the built binary, the emulator and a webhook receiver
//! on loopback that checks each signature with its own HMAC-SHA256 (written here from RFC 2104
//! over SHA-256, not the server's code): a refresh the vendor rejects is one event, delivered
//! signed once the receiver is up (retried while it is down), and listed at `/v1/events` for the
//! keys that see its instance; two servers on one PostgreSQL store deliver each event once. No
//! secret is in any answer, request, or the servers' output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::instances::{Schema, engine_output, write_file};
use crate::serve::{DEMO, SERVER_KEY, Served, call, client_with, create_key, stop};
use crate::support::run::time_ago;

/// The webhooks' signing secret: `whsec_` and the base64 of 32 bytes.
const WEBHOOK_SECRET: &str = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRlc3RzLW9ubHktMzI=";

/// The client secret the vendor rejects.
const WRONG_SECRET: &str = "FAKE-wrong-client-secret";

/// HMAC-SHA256 (RFC 2104), on its own: the receiver's check shares no code with the server's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut block = [0_u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|key| key ^ byte).collect::<Vec<u8>>();
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// One request the receiver got, with whether its signature verified.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    verified: bool,
    timestamp: u64,
    body: Value,
    text: String,
}

/// Checks a Standard Webhooks request: the three headers, the timestamp within five minutes,
/// one of the `v1,` signatures the HMAC of `id.timestamp.body` under the secret's key.
fn verify(headers: &HeaderMap, body: &str) -> Delivery {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(WEBHOOK_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let expected = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        &key,
        format!("{id}.{timestamp}.{body}").as_bytes(),
    ));
    let seconds: u64 = timestamp.parse().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let verified = !id.is_empty()
        && now.abs_diff(seconds) <= 300
        && header("webhook-signature")
            .split(' ')
            .any(|signature| signature.strip_prefix("v1,") == Some(expected.as_str()));
    Delivery {
        id,
        verified,
        timestamp: seconds,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        text: format!("{headers:?} {body}"),
    }
}

/// A webhook receiver on `listener`: answers 200 and keeps each delivery.
fn receive(listener: tokio::net::TcpListener) -> Arc<Mutex<Vec<Delivery>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&got);
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let kept = Arc::clone(&kept);
            async move {
                kept.lock().unwrap().push(verify(&headers, &body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    got
}

/// Imports `id`, a demo instance whose token expired an hour ago and whose client secret the
/// emulator rejects: the scheduler refreshes it at once, and the vendor refuses.
fn import_rejected(store: &str, base_url: &str, id: &str) {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        id,
        &json!({
            "base.url": base_url,
            "client.id": "demo-client",
            "client.secret": WRONG_SECRET,
            "access.token": format!("at_{id}_old"),
            "authentication.time": time_ago(7200),
            "expires_in": "3600",
        }),
    );
    let path = file.to_str().unwrap();
    let args = [
        "instances",
        "import",
        path,
        "--connector",
        DEMO,
        "--store",
        store,
    ];
    engine_output(&args).assert_success();
}

/// Starts `engine serve` on `store`, delivering to `url`.
fn serve_with_webhooks(store: &str, url: &str) -> Served {
    Served::start_env(
        store,
        "connectors",
        &["--webhook-url", url],
        &[("ENGINE_WEBHOOK_SECRET", WEBHOOK_SECRET)],
    )
}

/// Polls `check` every 100 ms until it returns a value, for at most `seconds`.
async fn eventually<T>(seconds: u64, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `series` in a `/metrics` text, 0 when absent.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// An event as listed, its id and times replaced.
fn stable(event: &Value) -> Value {
    let mut event = event.clone();
    event["id"] = "[ID]".into();
    event["timestamp"] = "[TIME]".into();
    if event["data"]["retry_at"].is_string() {
        event["data"]["retry_at"] = "[TIME]".into();
    }
    if event["delivery"]["at"].is_string() {
        event["delivery"]["at"] = "[TIME]".into();
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_refresh_is_one_signed_event_delivered_once_the_receiver_is_up() {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let alice = create_key(
        &store,
        "alice",
        &["resources", "instances:read", "instances:write"],
    );
    let bob = create_key(&store, "bob", &["instances:read"]);
    let writer = create_key(&store, "writer", &["instances:write"]);
    // The receiver is down: its port is free, nothing listens.
    let port = crate::support::run::closed_port();
    let hook_url = format!("http://127.0.0.1:{port}/hooks");
    import_rejected(&store, &emulator.url(), "revoked");
    let served = serve_with_webhooks(&store, &hook_url);
    let base = served.url.clone();
    let (alice_client, bob_client) = (client_with(&alice), client_with(&bob));
    let anonymous = crate::support::http().build().unwrap();
    let mut answers = Vec::new();

    // The scheduler's refresh is rejected: the event waits, and its first attempt fails.
    eventually(30, "a failed delivery", async || {
        let metrics = call(&anonymous, "GET", &format!("{base}/metrics")).await;
        let retried = metric(
            &metrics.body,
            "engine_webhook_deliveries_total{outcome=\"retried\"}",
        );
        answers.push(metrics.body);
        (retried >= 1).then_some(())
    })
    .await;
    let listing = call(&alice_client, "GET", &format!("{base}/v1/events")).await;
    assert_eq!(listing.status, 200, "{}", listing.body);
    let events = listing.json()["events"].as_array().cloned().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["delivery"], json!({"status": "pending"}));
    answers.push(listing.body);

    // The receiver is up: the retry delivers it, signed.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let got = receive(listener);
    let delivered = eventually(30, "a delivery", async || {
        let got = got.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let delivery = &delivered[0];
    assert!(delivery.verified, "{delivery:?}");
    assert_eq!(delivery.id, events[0]["id"].as_str().unwrap());
    assert!(delivery.id.starts_with("evt_"), "{}", delivery.id);
    assert!(delivery.timestamp > 0);
    let mut body = delivery.body.clone();
    body["timestamp"] = "[TIME]".into();
    body["data"]["retry_at"] = "[TIME]".into();
    insta::assert_json_snapshot!(body, @r#"
    {
      "type": "refresh.failed",
      "timestamp": "[TIME]",
      "data": {
        "instance": "revoked",
        "connector": "connectors/demo.json",
        "trigger": "schedule",
        "status": "retrying",
        "from": "fresh",
        "failures": 1,
        "rejections": 1,
        "retry_at": "[TIME]",
        "vendor_status": 401,
        "error": "auth-failed",
        "vendor_error": "invalid_client"
      }
    }
    "#);

    // Listed as delivered, after two attempts.
    let listed = eventually(10, "the delivery's record", async || {
        let listing = call(&alice_client, "GET", &format!("{base}/v1/events")).await;
        let events = listing.json()["events"].as_array().cloned().unwrap();
        let event = events.first()?.clone();
        answers.push(listing.body);
        (event["delivery"]["status"] == "delivered").then_some(event)
    })
    .await;
    insta::assert_json_snapshot!(stable(&listed), @r#"
    {
      "id": "[ID]",
      "type": "refresh.failed",
      "timestamp": "[TIME]",
      "data": {
        "instance": "revoked",
        "connector": "connectors/demo.json",
        "trigger": "schedule",
        "status": "retrying",
        "from": "fresh",
        "failures": 1,
        "rejections": 1,
        "retry_at": "[TIME]",
        "vendor_status": 401,
        "error": "auth-failed",
        "vendor_error": "invalid_client"
      },
      "delivery": {
        "status": "delivered",
        "attempts": 2,
        "at": "[TIME]"
      }
    }
    "#);

    // An instance alice creates is hers: its event is listed for her, not for bob.
    let created = alice_client
        .post(format!("{base}/v1/instances"))
        .json(&json!({
            "id": "owned",
            "connector": "demo",
            "values": {
                "base.url": emulator.url(),
                "client.id": "demo-client",
                "client.secret": WRONG_SECRET,
                "access.token": "at_owned_old",
                "authentication.time": time_ago(7200),
                "expires_in": "3600",
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The instances of a listing's events, each once (a retry may have failed again).
    let instances_of = |listing: &Value| -> Vec<String> {
        let mut instances: Vec<String> = listing["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["data"]["instance"].as_str().unwrap().to_owned())
            .collect();
        instances.dedup();
        instances
    };
    eventually(30, "the owned instance's event", async || {
        let listing = call(&alice_client, "GET", &format!("{base}/v1/events")).await;
        let instances = instances_of(&listing.json());
        answers.push(listing.body);
        instances.contains(&"owned".to_owned()).then_some(())
    })
    .await;
    let listing = call(&bob_client, "GET", &format!("{base}/v1/events")).await;
    assert_eq!(instances_of(&listing.json()), ["revoked"]);
    answers.push(listing.body);
    // Filters and pages: by instance and type; a page of one, then the next.
    let listing = call(
        &alice_client,
        "GET",
        &format!("{base}/v1/events?instance=owned&type=refresh.failed"),
    )
    .await;
    assert_eq!(instances_of(&listing.json()), ["owned"]);
    let first = call(&alice_client, "GET", &format!("{base}/v1/events?limit=1")).await;
    let next = first.json()["next"].as_str().unwrap().to_owned();
    assert_eq!(instances_of(&first.json()), ["revoked"]);
    let second = call(
        &alice_client,
        "GET",
        &format!("{base}/v1/events?limit=1&after={next}"),
    )
    .await;
    let later = second.json()["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(later > next, "{later} {next}");
    // By time: none published after 2100, all of them after 2000.
    let future = call(
        &alice_client,
        "GET",
        &format!("{base}/v1/events?since=2100-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(future.json()["events"], json!([]));
    let past = call(
        &alice_client,
        "GET",
        &format!("{base}/v1/events?since=2000-01-01T00:00:00Z"),
    )
    .await;
    let mut all = instances_of(&past.json());
    all.sort();
    all.dedup();
    assert_eq!(all, ["owned", "revoked"]);
    let not_a_time = call(
        &alice_client,
        "GET",
        &format!("{base}/v1/events?since=soon"),
    )
    .await;
    assert_eq!(not_a_time.status, 400);
    answers.extend([future.body, past.body, not_a_time.body]);
    answers.extend([listing.body, first.body, second.body]);
    // A key without `instances:read`: 403; no key: 401; a wrong type: 400.
    let refused = call(&client_with(&writer), "GET", &format!("{base}/v1/events")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let anonymous_listing = call(&anonymous, "GET", &format!("{base}/v1/events")).await;
    assert_eq!(anonymous_listing.status, 401);
    let wrong = call(&alice_client, "GET", &format!("{base}/v1/events?type=nope")).await;
    assert_eq!(wrong.status, 400);
    answers.extend([refused.body, anonymous_listing.body, wrong.body]);

    // New credentials clear the failures; the next refresh that succeeds is a recovery.
    let set = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "instances",
            "set",
            "revoked",
            "client.secret",
            "--store",
            &store,
        ])
        .current_dir(crate::support::repo_root())
        .env("NO_COLOR", "1")
        .env("ENGINE_SECRET_KEY", SERVER_KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = set.stdin.as_ref().unwrap();
        stdin.write_all(b"demo-secret\n").unwrap();
    }
    let set = set.wait_with_output().unwrap();
    assert!(set.status.success(), "{set:?}");
    let refreshed = alice_client
        .post(format!("{base}/v1/instances/revoked/refresh"))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let recovered = eventually(10, "the recovery's event", async || {
        let listing = call(
            &alice_client,
            "GET",
            &format!("{base}/v1/events?type=instance.recovered"),
        )
        .await;
        let events = listing.json()["events"].as_array().cloned().unwrap();
        answers.push(listing.body);
        events.first().cloned()
    })
    .await;
    insta::assert_json_snapshot!(stable(&recovered)["data"], @r#"
    {
      "instance": "revoked",
      "connector": "connectors/demo.json",
      "trigger": "manual",
      "status": "fresh",
      "from": "retrying",
      "failures": 0,
      "rejections": 0,
      "retry_at": null,
      "vendor_status": null,
      "error": null,
      "vendor_error": null
    }
    "#);

    // Each event was delivered once, every request signed.
    let got = eventually(30, "the recovery's delivery", async || {
        let got = got.lock().unwrap().clone();
        let recovered = got
            .iter()
            .any(|delivery| delivery.body["type"] == "instance.recovered");
        (got.len() >= 3 && recovered).then_some(got)
    })
    .await;
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for delivery in &got {
        assert!(delivery.verified, "{delivery:?}");
        *by_id.entry(&delivery.id).or_default() += 1;
    }
    assert!(by_id.values().all(|count| *count == 1), "{got:?}");

    // No secret anywhere: answers, requests, the server's output.
    let metrics = call(&anonymous, "GET", &format!("{base}/metrics")).await;
    assert!(
        metric(
            &metrics.body,
            "engine_webhook_deliveries_total{outcome=\"delivered\"}"
        ) >= 2,
        "{}",
        metrics.body
    );
    answers.push(metrics.body);
    let mut captured = answers;
    captured.extend(got.iter().map(|delivery| delivery.text.clone()));
    captured.push(served.stderr());
    let webhook_key = WEBHOOK_SECRET.strip_prefix("whsec_").unwrap();
    let secrets = [
        WRONG_SECRET,
        "at_revoked_old",
        "at_owned_old",
        WEBHOOK_SECRET,
        webhook_key,
        SERVER_KEY,
        alice.rsplit('_').next().unwrap(),
        bob.rsplit('_').next().unwrap(),
    ];
    for text in &captured {
        for secret in secrets {
            assert!(!text.contains(secret), "`{secret}` in {text}");
        }
    }
    // SIGTERM with a sender running: a graceful exit 0.
    stop(served);
    emulator.shutdown().await;
}

/// Two servers on one PostgreSQL store, one receiver: every event is delivered, each once. The
/// events are published before either server starts (by `engine refresh`, whose refreshes the
/// vendor rejects), so both servers' first passes over the outbox race for every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_store_deliver_each_event_once() {
    let Some(schema) = Schema::create("serve_events") else {
        return;
    };
    let store = schema.store_url();
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let receiver = receive(listener);
    let ids: Vec<String> = (0..12)
        .map(|index| format!("rejected-{index:02}"))
        .collect();
    for id in &ids {
        import_rejected(&store, &emulator.url(), id);
    }
    // Each instance's first rejection is one event, in the outbox; its retry is 30 s away.
    let refreshed = engine_output(&["refresh", "--store", &store]);
    assert_eq!(refreshed.code, 4, "{}", refreshed.stderr);
    let key = create_key(&store, "reader", &["instances:read"]);
    // Started together: their first passes over the outbox race.
    let (one, other) = std::thread::scope(|scope| {
        let one = scope.spawn(|| serve_with_webhooks(&store, &hook_url));
        let other = scope.spawn(|| serve_with_webhooks(&store, &hook_url));
        (one.join().unwrap(), other.join().unwrap())
    });
    let client = client_with(&key);

    // Both servers list every event as delivered: nothing is left to send.
    for served in [&one, &other] {
        eventually(30, "every event delivered", async || {
            let listing = call(&client, "GET", &format!("{}/v1/events", served.url)).await;
            let events = listing.json()["events"].as_array().cloned().unwrap();
            let done = events.len() == ids.len()
                && events
                    .iter()
                    .all(|event| event["delivery"]["status"] == "delivered");
            done.then_some(())
        })
        .await;
    }
    let got = receiver.lock().unwrap().clone();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut instances: Vec<String> = Vec::new();
    for delivery in &got {
        assert!(delivery.verified, "{delivery:?}");
        *by_id.entry(delivery.id.clone()).or_default() += 1;
        instances.push(
            delivery.body["data"]["instance"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    instances.sort();
    assert_eq!(instances, ids);
    assert!(by_id.values().all(|count| *count == 1), "{by_id:?}");
    // Between them, the servers delivered each event once.
    let mut delivered = 0;
    for served in [&one, &other] {
        let metrics = call(&client, "GET", &format!("{}/metrics", served.url)).await;
        let count = metric(
            &metrics.body,
            "engine_webhook_deliveries_total{outcome=\"delivered\"}",
        );
        delivered += count;
        assert!(!served.stderr().contains(WRONG_SECRET));
    }
    assert_eq!(delivered, 12);
    stop(one);
    stop(other);
    emulator.shutdown().await;
}

/// `--webhook-url` needs its secret in the environment, of the Standard Webhooks form; a wrong
/// one is refused without being repeated.
#[test]
fn a_webhook_url_needs_a_secret_of_the_standard_form() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let serve = |secret: Option<&str>| {
        let mut command = crate::support::engine();
        command
            .args(["serve", "--store", &store, "--connectors", "connectors"])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--webhook-url",
                "http://127.0.0.1:1/",
            ])
            .env("ENGINE_SECRET_KEY", SERVER_KEY)
            .env_remove("ENGINE_WEBHOOK_SECRET");
        if let Some(secret) = secret {
            command.env("ENGINE_WEBHOOK_SECRET", secret);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = serve(None);
    assert_eq!(code, Some(2), "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    error: `--webhook-url` needs a signing secret in `ENGINE_WEBHOOK_SECRET`
    hint: set `ENGINE_WEBHOOK_SECRET` to `whsec_` and the base64 of 24 to 64 random bytes (`echo whsec_$(head -c 32 /dev/urandom | base64)`); receivers check signatures with it
    ");
    let wrong = "whsec_FAKE-not-base64!";
    let (code, stderr) = serve(Some(wrong));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("FAKE-not-base64"), "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    error: invalid `ENGINE_WEBHOOK_SECRET`: the secret is not base64 after `whsec_`
    hint: set `ENGINE_WEBHOOK_SECRET` to `whsec_` and the base64 of 24 to 64 random bytes (`echo whsec_$(head -c 32 /dev/urandom | base64)`); receivers check signatures with it
    ");
}
