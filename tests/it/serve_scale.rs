//! `engine serve` in several processes on one store (PostgreSQL, and SQLite where one machine
//! shares a file): concurrent calls through two servers to an expired instance make one token
//! request, two schedulers share 1,000 due instances and refresh each exactly once, a server
//! killed during a refresh loses nothing, and a paused lease holder is fenced (PostgreSQL). The
//! PostgreSQL tests skip (one printed line) without `ENGINE_TEST_POSTGRES`.

use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::instances::{Schema, engine_output, write_file};
use crate::serve::{DEMO, Served, call, client_with, create_key, import, revealed};
use crate::support::run::{received_at, time_ago, token_response};

/// How long a test waits for something that should happen, before it fails saying what did not.
const PATIENCE: Duration = Duration::from_mins(2);

/// A server on `store` that lets its callers through without a rate limit.
fn start(store: &str, more: &[&str]) -> Served {
    let mut args = vec!["--rate", "1000000/s"];
    args.extend_from_slice(more);
    Served::start_with(store, "connectors", &args)
}

/// Two servers on one store, 500 calls at once split across them to one instance whose token
/// just expired: the vendor sees one token request, every call answers 200, and the history
/// holds that one refresh, made by a call.
async fn two_servers_share_one_refresh_among_500_concurrent_calls(store: &str) {
    let store = store.to_owned();
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let key = create_key(&store, "tests", &["resources", "instances:read"]);
    let servers = [start(&store, &[]), start(&store, &[])];
    // Imported once both schedulers have read the (empty) schedule: the calls, not a
    // scheduler, find the token expired.
    import(&store, &emulator.url(), "hot", 3601);

    let client = client_with(&key);
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..500 {
        let client = client.clone();
        let url = format!(
            "{}/v1/instances/hot/resources/list-contacts",
            servers[index % 2].url
        );
        calls.spawn(async move { call(&client, "GET", &url).await });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(answer) = calls.join_next().await {
        let answer = answer.unwrap();
        *statuses.entry(answer.status).or_insert(0) += 1;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(statuses, [(200, 500)].into());
    let stats = emulator.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.api_calls,
            stats.api_unauthorized
        ),
        (1, 500, 0),
        "{stats:?}\n{}\n{}",
        servers[0].stderr(),
        servers[1].stderr()
    );
    let entries = history(&client, &servers[0].url, "hot").await;
    let outcomes: Vec<(&Value, &Value)> = entries
        .iter()
        .map(|entry| (&entry["trigger"], &entry["outcome"]))
        .collect();
    assert_eq!(outcomes, [(&json!("expiry"), &json!("ok"))], "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_share_one_refresh_among_500_concurrent_calls() {
    let Some(schema) = Schema::create("serve_calls") else {
        return;
    };
    two_servers_share_one_refresh_among_500_concurrent_calls(&schema.store_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_sqlite_share_one_refresh_among_500_concurrent_calls() {
    let temp = tempfile::tempdir().unwrap();
    two_servers_share_one_refresh_among_500_concurrent_calls(&crate::support::sqlite_store(
        temp.path(),
    ))
    .await;
}

/// Imports `count` demo instances `due-NNNN`, their tokens past the refresh point by 0 to 59
/// seconds: all due within the same minute.
fn import_due(store: &str, base_url: &str, count: usize) -> Vec<String> {
    let temp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..count).map(|index| format!("due-{index:04}")).collect();
    let files: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            // Refreshed a fifth of the lifetime ahead of expiry: 2,880 s into an hour.
            let age = 2880 + (index % 60) as u64;
            let state = json!({
                "base.url": base_url,
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": "at_expired",
                "authentication.time": time_ago(age),
                "expires_in": "3600",
            });
            write_file(temp.path(), id, &state).display().to_string()
        })
        .collect();
    let mut args = vec!["instances", "import", "--connector", DEMO, "--store", store];
    args.extend(files.iter().map(String::as_str));
    engine_output(&args).assert_success();
    ids
}

/// The ids `served` said it refreshed (`refreshed: ID` lines).
fn refreshed_by(served: &Served) -> Vec<String> {
    served
        .stderr()
        .lines()
        .filter_map(|line| line.strip_prefix("refreshed: "))
        .map(str::to_owned)
        .collect()
}

/// The history entries of `id`, through `base`.
async fn history(client: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    let answer = call(client, "GET", &format!("{base}/v1/instances/{id}/history")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["entries"].as_array().cloned().unwrap()
}

/// Two schedulers on one store and 1,000 instances due within the same minute, no call: each
/// instance is refreshed exactly once (one token request each at the vendor, one history entry
/// each, one `refreshed` line across both processes), none missed.
async fn two_schedulers_refresh_1000_due_instances_exactly_once(store: &str) {
    let store = store.to_owned();
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let ids = import_due(&store, &emulator.url(), 1000);
    let key = create_key(&store, "tests", &["instances:read"]);
    let servers = [start(&store, &[]), start(&store, &[])];

    let started = Instant::now();
    let mut refreshed = loop {
        let mut refreshed: Vec<String> = servers.iter().flat_map(refreshed_by).collect();
        if refreshed.len() >= ids.len() {
            refreshed.sort();
            break refreshed;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{} of {} refreshed\n{}\n{}",
            refreshed.len(),
            ids.len(),
            servers[0].stderr(),
            servers[1].stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    refreshed.dedup();
    assert_eq!(refreshed, ids, "an instance refreshed twice or missed");
    let stats = emulator.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.client_credentials_grants,
            stats.api_calls
        ),
        (1000, 1000, 0),
        "{stats:?}"
    );
    let client = client_with(&key);
    for (index, id) in ids.iter().enumerate() {
        let entries = history(&client, &servers[index % 2].url, id).await;
        let outcomes: Vec<(&Value, &Value)> = entries
            .iter()
            .map(|entry| (&entry["trigger"], &entry["outcome"]))
            .collect();
        assert_eq!(
            outcomes,
            [(&json!("schedule"), &json!("ok"))],
            "{id}: {entries:?}"
        );
    }
    assert!(
        !servers
            .iter()
            .any(|served| served.stderr().contains("warning")),
        "{}\n{}",
        servers[0].stderr(),
        servers[1].stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_postgres_refresh_1000_due_instances_exactly_once() {
    let Some(schema) = Schema::create("serve_due") else {
        return;
    };
    two_schedulers_refresh_1000_due_instances_exactly_once(&schema.store_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_sqlite_refresh_1000_due_instances_exactly_once() {
    let temp = tempfile::tempdir().unwrap();
    two_schedulers_refresh_1000_due_instances_exactly_once(&crate::support::sqlite_store(
        temp.path(),
    ))
    .await;
}

/// A vendor whose first token request is held until the test releases it (then answered with
/// `FAKE-token-a`); every later one is answered at once with `FAKE-token-b`. The test knows a
/// refresh is between its read and its write without guessing how long that lasts.
struct HeldVendor {
    server: MockServer,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

struct HoldFirst {
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl wiremock::Respond for HoldFirst {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let _ = self.arrived.send(());
        let _ = self.release.lock().unwrap().recv();
        token_response("FAKE-token-a", None, json!(3600))
    }
}

impl HeldVendor {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(HoldFirst {
                arrived: arrived_tx,
                release: std::sync::Mutex::new(release_rx),
            })
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(token_response("FAKE-token-b", None, json!(3600)))
            .mount(&server)
            .await;
        Self {
            server,
            arrived,
            release,
        }
    }

    /// Waits until the first token request is held.
    async fn held(&mut self) {
        tokio::time::timeout(PATIENCE, self.arrived.recv())
            .await
            .expect("no token request came")
            .expect("the vendor is gone");
    }

    /// Lets the held token request answer.
    fn release(&self) {
        self.release.send(()).unwrap();
    }

    async fn token_requests(&self) -> usize {
        received_at(&self.server, "/oauth/token").await.len()
    }
}

/// Waits until `served` says it refreshed `id`.
async fn wait_refreshed(served: &Served, id: &str) {
    let started = Instant::now();
    while !refreshed_by(served).iter().any(|refreshed| refreshed == id) {
        assert!(
            started.elapsed() < PATIENCE,
            "`{id}` not refreshed:\n{}",
            served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored instance as it was imported by [`import`], whole: every key there, the old token.
#[track_caller]
fn assert_untouched(store: &str, id: &str, base_url: &str) {
    let state = revealed(store, id);
    for (key, value) in [
        ("base.url", base_url),
        ("client.id", "demo-client"),
        ("client.secret", "demo-secret"),
        ("access.token", &format!("at_{id}_old")),
        ("expires_in", "3600"),
    ] {
        assert_eq!(state[key], value, "{key} of {state}");
    }
}

/// A server killed (SIGKILL) while its scheduled refresh waits for the vendor's token: the
/// stored instance reads back whole and unchanged, nothing is recorded, and a restarted server
/// refreshes it once (when the dead one's lease ends): the new token stored, one history entry.
async fn a_server_killed_during_a_refresh_loses_nothing(store: &str) {
    let store = store.to_owned();
    let mut vendor = HeldVendor::start().await;
    let base_url = vendor.server.uri();
    import(&store, &base_url, "victim", 7200);
    let key = create_key(&store, "tests", &["instances:read"]);
    let lease = ["--lease", "2s"];

    let mut killed = start(&store, &lease);
    vendor.held().await;
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    vendor.release();
    assert_untouched(&store, "victim", &base_url);

    let restarted = start(&store, &lease);
    wait_refreshed(&restarted, "victim").await;
    let state = revealed(&store, "victim");
    assert_eq!(
        (&state["access.token"], &state["client.secret"]),
        (&json!("FAKE-token-b"), &json!("demo-secret")),
        "{state}"
    );
    let entries = history(&client_with(&key), &restarted.url, "victim").await;
    let outcomes: Vec<(&Value, &Value)> = entries
        .iter()
        .map(|entry| (&entry["trigger"], &entry["outcome"]))
        .collect();
    assert_eq!(
        outcomes,
        [(&json!("schedule"), &json!("ok"))],
        "{entries:?}"
    );
    assert_eq!(vendor.token_requests().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_refresh_on_postgres_loses_nothing() {
    let Some(schema) = Schema::create("serve_kill") else {
        return;
    };
    a_server_killed_during_a_refresh_loses_nothing(&schema.store_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_during_a_refresh_on_sqlite_loses_nothing() {
    let temp = tempfile::tempdir().unwrap();
    a_server_killed_during_a_refresh_loses_nothing(&crate::support::sqlite_store(temp.path()))
        .await;
}

fn signal(served: &Served, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(served.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// A lease holder paused (SIGSTOP) while the vendor answers its token request: its lease and
/// its lock end, the other server refreshes the instance meanwhile, and when the paused one
/// resumes (SIGCONT) its write, naming the version it read, is refused: the stored token stays
/// the other server's, the instance whole, and the history says the paused one's refresh was
/// superseded (one refresh took effect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lease_holder_is_fenced_when_it_resumes() {
    let Some(schema) = Schema::create("serve_fence") else {
        return;
    };
    let store = schema.store_url();
    let mut vendor = HeldVendor::start().await;
    let base_url = vendor.server.uri();
    import(&store, &base_url, "fenced", 7200);
    let key = create_key(&store, "tests", &["instances:read"]);
    // Short leases and locks, so that the pause outlives them.
    let start = |store: &str| {
        Served::start_env(
            store,
            "connectors",
            &["--lease", "2s"],
            &[("ENGINE_STORE_LOCK_LIFETIME", "1s")],
        )
    };

    let paused = start(&store);
    vendor.held().await;
    signal(&paused, "STOP");
    // The vendor answers while the holder is paused: its answer waits in the socket.
    vendor.release();
    let other = start(&store);
    wait_refreshed(&other, "fenced").await;
    signal(&paused, "CONT");
    let client = client_with(&key);
    let started = Instant::now();
    let entries = loop {
        let entries = history(&client, &other.url, "fenced").await;
        if entries.len() >= 2 {
            break entries;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{entries:?}\n{}",
            paused.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let state = revealed(&store, "fenced");
    assert_eq!(
        (&state["access.token"], &state["client.secret"]),
        (&json!("FAKE-token-b"), &json!("demo-secret")),
        "{state}"
    );
    let summary: Vec<(&Value, &Value, &Value)> = entries
        .iter()
        .map(|entry| (&entry["trigger"], &entry["outcome"], &entry["new_token"]))
        .collect();
    let (a, b) = (
        json!(engine_runtime::fingerprint("FAKE-token-a")),
        json!(engine_runtime::fingerprint("FAKE-token-b")),
    );
    assert_eq!(
        summary,
        [
            (&json!("schedule"), &json!("ok"), &b),
            (&json!("schedule"), &json!("superseded"), &a),
        ],
        "{entries:#?}"
    );
    assert_eq!(vendor.token_requests().await, 2);
    // The last refresh shown is the one that took effect.
    let shown = call(
        &client,
        "GET",
        &format!("{}/v1/instances/fenced", other.url),
    )
    .await;
    let shown = shown.json();
    assert_eq!(
        (&shown["status"], &shown["last_refresh"]["outcome"]),
        (&json!("fresh"), &json!("ok")),
        "{shown}"
    );
    // Only the refresh that took effect is said to have refreshed.
    assert!(
        !paused.stderr().contains("refreshed: fenced"),
        "{}",
        paused.stderr()
    );
}

/// The same through calls: a server paused (SIGSTOP) while the vendor answers the token
/// request of a call, the other server's call refreshes meanwhile; once resumed, the paused
/// call's write is refused and it goes on with the other's token: both calls answer 200, every
/// vendor call carries the stored token, and the history says the paused refresh was superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_paused_past_its_lock_is_fenced_when_it_resumes() {
    let Some(schema) = Schema::create("serve_call_fence") else {
        return;
    };
    let store = schema.store_url();
    let mut vendor = HeldVendor::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"contacts": []}})))
        .mount(&vendor.server)
        .await;
    let key = create_key(&store, "tests", &["resources", "instances:read"]);
    let start = |store: &str| {
        Served::start_env(
            store,
            "connectors",
            &["--rate", "1000000/s"],
            &[("ENGINE_STORE_LOCK_LIFETIME", "1s")],
        )
    };
    let (paused, other) = (start(&store), start(&store));
    // Imported once both schedulers have read the (empty) schedule: the calls refresh it.
    import(&store, &vendor.server.uri(), "called", 7200);
    let client = client_with(&key);

    let url = format!("{}/v1/instances/called/resources/list-contacts", paused.url);
    let first = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "GET", &url).await }
    });
    vendor.held().await;
    signal(&paused, "STOP");
    vendor.release();
    let second = call(
        &client,
        "GET",
        &format!("{}/v1/instances/called/resources/list-contacts", other.url),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    signal(&paused, "CONT");
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}\n{}", first.body, paused.stderr());

    let state = revealed(&store, "called");
    assert_eq!(
        (&state["access.token"], &state["client.secret"]),
        (&json!("FAKE-token-b"), &json!("demo-secret")),
        "{state}"
    );
    let calls = received_at(&vendor.server, "/api/v1/contacts").await;
    let tokens: Vec<_> = calls
        .iter()
        .map(|call| call.headers.get("authorization").unwrap().to_str().unwrap())
        .collect();
    assert_eq!(tokens, ["Bearer FAKE-token-b", "Bearer FAKE-token-b"]);
    let entries = history(&client, &other.url, "called").await;
    let summary: Vec<(&Value, &Value, &Value)> = entries
        .iter()
        .map(|entry| (&entry["trigger"], &entry["outcome"], &entry["new_token"]))
        .collect();
    let (a, b) = (
        json!(engine_runtime::fingerprint("FAKE-token-a")),
        json!(engine_runtime::fingerprint("FAKE-token-b")),
    );
    assert_eq!(
        summary,
        [
            (&json!("expiry"), &json!("ok"), &b),
            (&json!("expiry"), &json!("superseded"), &a),
        ],
        "{entries:#?}"
    );
    // One refresh took effect: the paused server counts none.
    let metrics = call(&client, "GET", &format!("{}/metrics", paused.url)).await;
    assert_eq!(metrics.status, 200);
    assert!(
        !metrics.body.contains("engine_refreshes_total{"),
        "{}",
        metrics.body
    );
    let metrics = call(&client, "GET", &format!("{}/metrics", other.url)).await;
    assert!(
        metrics
            .body
            .contains("trigger=\"call\",outcome=\"ok\"} 1\n"),
        "{}",
        metrics.body
    );
}
