//! Several `engine` processes sharing stored instances (SQLite and PostgreSQL): one token request
//! for many processes, a paused lock holder fenced by the version, and `kill -9` during refreshes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::instances::{Schema, engine_output, write_file};
use crate::support::repo_root;
use crate::support::run::{Outcome, received_at, time_ago, token_response};

const DEMO: &str = "connectors/demo.json";
const CUSTOM: &str = "tests/fixtures/run/custom/connector.json";

/// `engine ARGS...` started, output piped, with `env`.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting `engine`")
}

/// Imports an expired demo instance `shared` (connector recorded) into `store`.
fn import_expired_demo(store: &str, base_url: &str) {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        "shared",
        &json!({
            "base.url": base_url,
            "client.id": "demo-client",
            "client.secret": "demo-secret",
            "access.token": "at_expired_long_ago",
            "authentication.time": time_ago(7200),
            "expires_in": "3600",
        }),
    );
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--connector",
        DEMO,
        "--store",
        store,
    ])
    .assert_success();
}

/// Ten `engine run` processes and one `engine refresh` at once on one expired instance: exactly
/// one token request at the vendor emulator, and every process exits 0.
fn ten_runs_and_a_refresh(store: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    import_expired_demo(store, &emulator.url());

    // The refresh starts first, so that it usually lists the instance while it is still due.
    let mut children = vec![spawn(&["refresh", "--store", store, "--ahead", "1m"], &[])];
    children.extend((0..10).map(|_| {
        spawn(
            &[
                "run",
                DEMO,
                "list-contacts",
                "--param",
                "limit=1",
                "--instance",
                "shared",
                "--store",
                store,
            ],
            &[],
        )
    }));
    let outcomes: Vec<Outcome> = children.into_iter().map(Outcome::of).collect();
    for outcome in &outcomes {
        outcome.assert_success();
    }
    // Refreshed by it, found refreshed by another under the lock, or listed once another had
    // refreshed it: all correct, none a second token request.
    let refresh = &outcomes[0];
    assert!(
        ["refreshed: shared", "fresh: shared", "nothing due"]
            .iter()
            .any(|start| refresh.stderr.starts_with(start)),
        "{}",
        refresh.render()
    );
    let stats = emulator.stats();
    assert_eq!(stats.token_requests, 1, "{stats:?}");
    assert_eq!(stats.api_calls, 10, "{stats:?}");
    runtime.block_on(emulator.shutdown());
}

#[test]
fn ten_runs_and_a_refresh_on_a_sqlite_instance_make_one_token_request() {
    let temp = tempfile::tempdir().unwrap();
    ten_runs_and_a_refresh(&format!(
        "sqlite:{}",
        temp.path().join("state.db").display()
    ));
}

#[test]
fn ten_runs_and_a_refresh_on_a_postgres_instance_make_one_token_request() {
    let Some(schema) = Schema::create("ten_and_refresh") else {
        return;
    };
    ten_runs_and_a_refresh(&schema.store_url());
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

/// PostgreSQL fencing: process A takes the lock and asks the vendor for a token, then is paused
/// (SIGSTOP) past its lock's lifetime; the server ends A's lock session; process B takes the lock
/// and stores a newer token; A resumes with the vendor's (older) answer, and its write, naming the
/// version it read, is refused: it re-reads and uses B's token. The stored token is B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lock_holder_cannot_overwrite_a_newer_token() {
    let Some(schema) = Schema::create("fencing") else {
        return;
    };
    let store = schema.store_url();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            token_response("FAKE-token-of-a", Some("FAKE-refresh-of-a"), json!(3600))
                .set_delay(Duration::from_secs(2)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(
            "FAKE-token-of-b",
            Some("FAKE-refresh-of-b"),
            json!(3600),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        "fenced",
        &json!({
            "base.url": server.uri(),
            "client.id": "demo-client",
            "client.secret": "FAKE-client-secret",
            "access.token": "FAKE-old-token",
            "refresh.token": "FAKE-old-refresh",
            "authentication.time": time_ago(7200),
            "expires_in": "3600",
        }),
    );
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        &store,
    ])
    .assert_success();
    let lifetime = [("ENGINE_STORE_LOCK_LIFETIME", "1s")];
    let run = [
        "run",
        CUSTOM,
        "list-contacts",
        "--instance",
        "fenced",
        "--store",
        &store,
        "-v",
    ];

    let a = spawn(&run, &lifetime);
    let started = Instant::now();
    while received_at(&server, "/oauth/token").await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "A never asked for a token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&a, "STOP");
    // Past the lock's lifetime: the server ends A's idle lock transaction.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b = Outcome::of(spawn(&run, &lifetime));
    b.assert_success();
    assert!(b.stderr.contains("save: access.token"), "{}", b.render());
    signal(&a, "CONT");
    let a = Outcome::of(a);
    a.assert_success();
    assert!(
        a.stderr
            .contains("refresh: another process refreshed while we waited; using its token"),
        "{}",
        a.render()
    );
    let stored = engine_output(&["instances", "export", "fenced", "--store", &store]);
    let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
    assert_eq!(stored["access.token"], "FAKE-token-of-b");
    assert_eq!(stored["refresh.token"], "FAKE-refresh-of-b");
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 2);
    // A's call went out with B's token.
    let calls = received_at(&server, "/contacts").await;
    assert_eq!(calls.len(), 2);
    for call in calls {
        assert_eq!(
            call.headers.get("authorization").unwrap(),
            "Bearer FAKE-token-of-b"
        );
    }
}

/// `kill -9` at 50 moments spread over a refresh, on one SQLite and one PostgreSQL instance:
/// the stored instance is always whole (the old token pair or the new one, never a mix), and the
/// next run succeeds.
async fn kill_during_refresh(store: &str) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            token_response("FAKE-new-token", Some("FAKE-new-refresh"), json!(3600))
                .set_delay(Duration::from_millis(30)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let expired = json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": "FAKE-client-secret",
        "access.token": "FAKE-old-token",
        "refresh.token": "FAKE-old-refresh",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    });
    let run = |id: &str| {
        spawn(
            &[
                "run",
                CUSTOM,
                "list-contacts",
                "--instance",
                id,
                "--store",
                store,
            ],
            &[],
        )
    };
    // How long a whole run takes here.
    let file = write_file(temp.path(), "calibration", &expired);
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        store,
    ])
    .assert_success();
    let started = Instant::now();
    Outcome::of(run("calibration")).assert_success();
    let whole = started.elapsed();

    // Where each kill lands depends on the machine's speed, so nothing counts them: whatever
    // the moment, the instance is whole (all old or all new).
    for round in 0..50_u32 {
        let id = format!("kill{round}");
        let file = write_file(temp.path(), &id, &expired);
        engine_output(&[
            "instances",
            "import",
            file.to_str().unwrap(),
            "--store",
            store,
        ])
        .assert_success();
        let mut child = run(&id);
        std::thread::sleep(whole * round / 40);
        child.kill().unwrap();
        child.wait().unwrap();
        let exported = engine_output(&["instances", "export", &id, "--store", store]);
        exported.assert_success();
        let state: Value = serde_json::from_str(&exported.stdout)
            .unwrap_or_else(|error| panic!("torn instance: {error}\n{}", exported.render()));
        let pair = (
            state["access.token"].as_str(),
            state["refresh.token"].as_str(),
        );
        match pair {
            (Some("FAKE-old-token"), Some("FAKE-old-refresh"))
            | (Some("FAKE-new-token"), Some("FAKE-new-refresh")) => {}
            other => panic!("a mixed instance after kill -9: {other:?}"),
        }
        assert_eq!(state["client.secret"], "FAKE-client-secret");
        // A killed process holds no lock: the next run goes through at once.
        let next = engine_output(&[
            "run",
            CUSTOM,
            "list-contacts",
            "--instance",
            &id,
            "--store",
            store,
            "--lock-timeout",
            "5",
        ]);
        next.assert_success();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_refreshes_never_tears_a_sqlite_instance() {
    let temp = tempfile::tempdir().unwrap();
    kill_during_refresh(&format!(
        "sqlite:{}",
        temp.path().join("state.db").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_refreshes_never_tears_a_postgres_instance() {
    let Some(schema) = Schema::create("kill") else {
        return;
    };
    kill_during_refresh(&schema.store_url()).await;
}
