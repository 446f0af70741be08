//! `engine serve` API keys, on the built binary and a file store: every `/v1` call presents a
//! key created with `engine keys create` (none, malformed, wrong or revoked: 401), with the
//! scope of the endpoint (403), sees only the instances its key owns or no key owns (404
//! otherwise), and is held to `--rate` (429 with `Retry-After`). No key's secret, nor any
//! instance's, is ever in an answer, the server's output, the commands' output (but the one
//! line of `engine keys create`) or the store's records.

use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

use crate::serve::{Answer, Served, call, client_with, create_key, import, keyed};

/// The id part of a key, `ek_<id>_<secret>`.
fn id_of(key: &str) -> &str {
    key.split('_').nth(1).unwrap()
}

/// The secret part of a key.
fn secret_of(key: &str) -> &str {
    key.rsplit('_').next().unwrap()
}

/// Marks the imported instance `id` of the file store `dir` as owned by the key `owner`, as the
/// service's create endpoint records it.
fn own(dir: &std::path::Path, id: &str, owner: &str) {
    let path = dir.join(format!("{id}.json"));
    let mut state: serde_json::Map<String, Value> =
        serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
    state.insert("engine.owner".to_owned(), json!(id_of(owner)));
    fs_err::write(&path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}

/// Every file under `dir`, as text.
fn texts_under(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut texts = Vec::new();
    for entry in fs_err::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            texts.extend(texts_under(&path));
        } else {
            let text = String::from_utf8_lossy(&fs_err::read(&path).unwrap()).into_owned();
            texts.push((path.display().to_string(), text));
        }
    }
    texts
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.json()["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances: {}", answer.body))
        .iter()
        .map(|instance| instance["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_scope_own_and_rate_limit_every_call() {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    fs_err::create_dir(&dir).unwrap();
    let store = format!("file:{}", dir.display());
    import(&store, &emulator.url(), "unowned", 60);
    import(&store, &emulator.url(), "owned", 60);

    let all = ["resources", "instances:read", "instances:write"];
    let alice = create_key(&store, "alice", &all);
    let bob = create_key(&store, "bob", &all);
    let reader = create_key(&store, "reader", &["instances:read"]);
    let raw = create_key(&store, "raw", &["tokens:read"]);
    let early = create_key(&store, "revoked-early", &all);
    let late = create_key(&store, "revoked-late", &all);
    own(&dir, "owned", &alice);
    let mut outputs = Vec::new();
    let revoked = keyed(&["keys", "revoke", "revoked-early", "--store", &store]);
    revoked.assert_success();
    outputs.push(revoked.stderr);

    let served = Served::start(&store);
    let base = served.url.clone();
    let url = |path: &str| format!("{base}{path}");
    let mut answers = Vec::new();

    // Health and readiness stay open.
    let anonymous = crate::support::http().build().expect("a client");
    for path in ["/healthz", "/readyz"] {
        let answer = call(&anonymous, "GET", &url(path)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }

    // No key, a malformed one, a wrong one, a revoked one: 401 with a Bearer challenge.
    let mut wrong = alice.clone();
    let last = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(wrong.len() - 1.., last);
    let unauthenticated = [
        ("none", anonymous.clone()),
        ("malformed", client_with("not-a-key")),
        ("wrong", client_with(&wrong)),
        ("revoked", client_with(&early)),
    ];
    for (case, client) in &unauthenticated {
        let answer = call(client, "GET", &url("/v1/instances")).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert_eq!(answer.challenge.as_deref(), Some("Bearer"), "{case}");
        assert_eq!(answer.content_type, "application/problem+json", "{case}");
        insta::with_settings!({filters => vec![(r"ek_[0-9a-f]{12}", "ek_IDIDIDIDIDID")]}, {
            insta::assert_json_snapshot!(format!("serve_keys_401_{case}"), answer.json());
        });
        answers.push(answer);
    }

    // A key sees the instances it owns and those no key owns; another key's are absent.
    let (alice_client, bob_client) = (client_with(&alice), client_with(&bob));
    // An instance created over HTTP belongs to the key that created it.
    let created = alice_client
        .post(url("/v1/instances"))
        .json(&json!({
            "id": "created",
            "connector": "demo",
            "values": {
                "base.url": emulator.url(),
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": "at_created_old",
                "authentication.time": crate::support::run::time_ago(60),
                "expires_in": "3600",
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Once a key has verified, the server compares it with what is presented (no MAC per
    // call): a wrong secret with its id is still refused.
    let answer = call(&client_with(&wrong), "GET", &url("/v1/instances")).await;
    assert_eq!(
        answer.status, 401,
        "wrong after a verified key: {}",
        answer.body
    );
    let stored: Value =
        serde_json::from_str(&fs_err::read_to_string(dir.join("created.json")).unwrap()).unwrap();
    assert_eq!(stored["engine.owner"], id_of(&alice));
    let listing = call(&alice_client, "GET", &url("/v1/instances")).await;
    assert_eq!(ids(&listing), ["created", "owned", "unowned"]);
    answers.push(listing);
    let listing = call(&bob_client, "GET", &url("/v1/instances")).await;
    assert_eq!(ids(&listing), ["unowned"]);
    answers.push(listing);
    // The scheme is case-insensitive.
    let lowercase = anonymous
        .get(url("/v1/instances/unowned"))
        .header("authorization", format!("bearer {bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let shown = call(&alice_client, "GET", &url("/v1/instances/owned")).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    answers.push(shown);
    for (method, path) in [
        ("GET", "/v1/instances/created"),
        ("DELETE", "/v1/instances/created"),
        ("GET", "/v1/instances/owned"),
        ("GET", "/v1/instances/owned/history"),
        ("POST", "/v1/instances/owned/refresh"),
        ("GET", "/v1/instances/owned/resources/list-contacts"),
        // The id percent-encoded names the same instance, and is refused the same way.
        ("GET", "/v1/instances/own%65d"),
        ("GET", "/v1/instances/own%65d/history"),
        ("POST", "/v1/instances/%6Fwned/refresh"),
        ("GET", "/v1/instances/own%65d/resources/list-contacts"),
        ("DELETE", "/v1/instances/cr%65ated"),
    ] {
        let answer = call(&bob_client, method, &url(path)).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.body);
        assert_eq!(
            answer.json()["type"],
            "urn:engine:problem:instance-not-found"
        );
        answers.push(answer);
    }
    // An id that is not UTF-8 once decoded: refused before any handler.
    let answer = call(&bob_client, "GET", &url("/v1/instances/%FF/history")).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    // Another key's delete left it alone.
    let kept = call(&alice_client, "GET", &url("/v1/instances/created")).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    answers.push(kept);
    let called = call(
        &bob_client,
        "GET",
        &url("/v1/instances/unowned/resources/list-contacts?limit=1"),
    )
    .await;
    assert_eq!(called.status, 200, "{}", called.body);
    answers.push(called);

    // A scope missing: 403, whatever the instance.
    let reader_client = client_with(&reader);
    let read = call(&reader_client, "GET", &url("/v1/instances/unowned")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    answers.push(read);
    for (client, method, path, snapshot) in [
        (
            &reader_client,
            "POST",
            "/v1/instances/unowned/refresh",
            "write",
        ),
        (
            &reader_client,
            "GET",
            "/v1/instances/unowned/resources/list-contacts",
            "resources",
        ),
        (&client_with(&raw), "GET", "/v1/instances", "read"),
    ] {
        let answer = call(client, method, &url(path)).await;
        assert_eq!(answer.status, 403, "{method} {path}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json");
        insta::with_settings!({filters => vec![(r"ek_[0-9a-f]{12}", "ek_IDIDIDIDIDID")]}, {
            insta::assert_json_snapshot!(format!("serve_keys_403_{snapshot}"), answer.json());
        });
        answers.push(answer);
    }

    // A key revoked while in use is refused within the cache's few seconds.
    let late_client = client_with(&late);
    let before = call(&late_client, "GET", &url("/v1/instances")).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let revoked = keyed(&[
        "keys",
        "revoke",
        &format!("ek_{}", id_of(&late)),
        "--store",
        &store,
    ]);
    revoked.assert_success();
    outputs.push(revoked.stderr);
    let revoked_at = Instant::now();
    loop {
        let answer = call(&late_client, "GET", &url("/v1/instances")).await;
        if answer.status == 401 {
            answers.push(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(15),
            "still accepted after its revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A server with a rate of 3 a minute: a burst of one, then 429 with `Retry-After`.
    let limited = Served::start_with(&store, "connectors", &["--rate", "3/m"]);
    let first = call(&bob_client, "GET", &format!("{}/v1/instances", limited.url)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = call(&bob_client, "GET", &format!("{}/v1/instances", limited.url)).await;
    assert_eq!(second.status, 429, "{}", second.body);
    assert_eq!(second.content_type, "application/problem+json");
    let retry: u64 = second.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After: {retry}");
    // Another key has its own bucket.
    let other = call(
        &alice_client,
        "GET",
        &format!("{}/v1/instances", limited.url),
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);
    answers.extend([first, second, other]);

    let listed = keyed(&["keys", "list", "--format", "json", "--store", &store]);
    listed.assert_success();
    let mut names: Vec<String> = serde_json::from_str::<Value>(&listed.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| key["revoked_at"].is_null())
        .map(|key| key["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alice", "bob", "raw", "reader"],
        "{}",
        listed.stdout
    );
    outputs.extend([listed.stdout, listed.stderr]);
    let table = keyed(&["keys", "list", "--store", &store]);
    table.assert_success();
    outputs.extend([table.stdout, table.stderr]);

    // No secret anywhere: the keys' secrets and the instances' (the client secret, the
    // tokens they held and hold), in answers, the servers' output, the commands' output and
    // the store's files.
    let mut secrets: Vec<String> = [&alice, &bob, &reader, &raw, &early, &late]
        .iter()
        .map(|key| secret_of(key).to_owned())
        .collect();
    secrets.push("demo-secret".to_owned());
    for id in ["unowned", "owned", "created"] {
        secrets.push(format!("at_{id}_old"));
        let held = crate::serve::revealed(&store, id)["access.token"]
            .as_str()
            .unwrap()
            .to_owned();
        secrets.push(held);
    }
    outputs.extend([served.stderr(), limited.stderr()]);
    let records = texts_under(&dir.join(".records"));
    assert!(records.len() >= 6, "{records:?}");
    for secret in &secrets {
        for answer in &answers {
            assert!(
                !answer.body.contains(secret.as_str()),
                "{secret} in {}",
                answer.body
            );
        }
        for output in &outputs {
            assert!(!output.contains(secret.as_str()), "{secret} in {output}");
        }
        for (path, text) in &records {
            assert!(!text.contains(secret.as_str()), "{secret} in {path}");
        }
    }
    drop((served, limited));
    emulator.shutdown().await;
}

#[test]
fn keys_create_prints_the_key_once_and_needs_a_secret_key() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let created = keyed(&[
        "keys",
        "create",
        "ci",
        "--scope",
        "resources,instances:read",
        "--store",
        &store,
    ]);
    created.assert_success();
    let key = created.stdout.trim();
    assert!(
        key.starts_with("ek_") && key.len() == 3 + 12 + 1 + 64,
        "{}",
        created.stdout
    );
    let filters = vec![
        (r"ek_[0-9a-f]{12}_[0-9a-f]{64}", "ek_[ID]_[SECRET]"),
        (r"ek_[0-9a-f]{12}", "ek_IDIDIDIDIDID"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "YYYY-MM-DDTHH:MM:SSZ"),
    ];
    let listed = keyed(&["keys", "list", "--store", &store]);
    listed.assert_success();
    assert!(!listed.stdout.contains(secret_of(key)));
    let taken = keyed(&[
        "keys",
        "create",
        "ci",
        "--scope",
        "resources",
        "--store",
        &store,
    ]);
    let unknown_scope = keyed(&["keys", "create", "x", "--scope", "admin", "--store", &store]);
    let without_secret = crate::support::engine()
        .env_remove("ENGINE_SECRET_KEY")
        .args([
            "keys",
            "create",
            "y",
            "--scope",
            "resources",
            "--store",
            &store,
        ])
        .output()
        .unwrap();
    let serve_without_secret = crate::support::engine()
        .env_remove("ENGINE_SECRET_KEY")
        .args(["serve", "--store", &store, "--connectors", "connectors"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!(
            "keys_create",
            format!("stdout:\n{}stderr:\n{}", created.stdout, created.stderr)
        );
        insta::assert_snapshot!("keys_list", listed.stdout);
        insta::assert_snapshot!(
            "keys_create_refused",
            format!(
                "taken (exit {}):\n{}\nunknown scope (exit {}):\n{}\nno secret key (exit {}):\n{}\nserve without a secret key (exit {}):\n{}",
                taken.code,
                taken.stderr,
                unknown_scope.code,
                unknown_scope.stderr,
                without_secret.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&without_secret.stderr),
                serve_without_secret.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&serve_without_secret.stderr),
            )
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_presenting_keys_that_are_not_valid_is_answered_429_before_any_lookup() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("store");
    fs_err::create_dir(&dir).unwrap();
    let store = format!("file:{}", dir.display());
    let key = create_key(&store, "alice", &["instances:read"]);
    let served = Served::start(&store);
    let url = format!("{}/v1/instances", served.url);
    // Made-up keys, each a different id: each would be a store read.
    let made_up = |n: usize| client_with(&format!("ek_{n:012x}_{}", secret_of(&key)));

    // The first twenty (the burst) are looked up and refused; past them the address waits.
    for n in 0..20 {
        let answer = call(&made_up(n), "GET", &url).await;
        assert_eq!(answer.status, 401, "call {n}: {}", answer.body);
    }
    let mut limited = None;
    for n in 20..200 {
        let answer = call(&made_up(n), "GET", &url).await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 401, "call {n}: {}", answer.body);
    }
    let answer = limited.expect("a 429 within 180 more calls (one refused call a second refills)");
    assert_eq!(answer.retry_after.as_deref(), Some("1"));
    assert!(!answer.body.contains(secret_of(&key)), "{}", answer.body);
    insta::assert_json_snapshot!(answer.json(), @r#"
    {
      "type": "urn:engine:problem:rate-limited",
      "title": "too many requests",
      "status": 429,
      "detail": "too many requests from 127.0.0.1 without a valid key or sign-in state; try again in 1 s"
    }
    "#);
    crate::serve::stop(served);
}
