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
    ten_runs_and_a_refresh(&crate::support::sqlite_store(temp.path()));
}

#[test]
fn ten_runs_and_a_refresh_on_a_postgres_instance_make_one_token_request() {
    let Some(schema) = Schema::create("ten_and_refresh") else {
        return;
    };
    ten_runs_and_a_refresh(&schema.store_url());
}

/// Two `engine refresh` processes at once on one store holding 200 due instances: their claims
/// share the instances out, so each is refreshed exactly once: 200 token requests at the
/// vendor emulator (its `_stats`), every instance refreshed by one process, none by both.
fn two_refreshes_share_200_due_instances(store: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let files: Vec<String> = (0..200)
        .map(|index| {
            let state = json!({
                "base.url": emulator.url(),
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": "at_expired_long_ago",
                "authentication.time": time_ago(7200),
                "expires_in": "3600",
            });
            let file = write_file(temp.path(), &format!("due-{index:03}"), &state);
            file.display().to_string()
        })
        .collect();
    let mut import = vec!["instances", "import", "--connector", DEMO, "--store", store];
    import.extend(files.iter().map(String::as_str));
    engine_output(&import).assert_success();

    let args = ["refresh", "--store", store, "--log-format", "json"];
    let children = [spawn(&args, &[]), spawn(&args, &[])];
    let mut refreshed: Vec<String> = Vec::new();
    for outcome in children.into_iter().map(Outcome::of) {
        outcome.assert_success();
        for line in outcome.stderr.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            if event["event"] == "refresh" {
                assert_eq!(event["outcome"], "refreshed", "{line}");
                refreshed.push(event["instance"].as_str().unwrap().to_owned());
            }
        }
    }
    refreshed.sort();
    let expected: Vec<String> = (0..200).map(|index| format!("due-{index:03}")).collect();
    assert_eq!(refreshed, expected);
    let stats = emulator.stats();
    assert_eq!(
        (stats.token_requests, stats.client_credentials_grants),
        (200, 200),
        "{stats:?}"
    );
    // Nothing is due any more.
    let again = engine_output(&["refresh", "--store", store]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "nothing due\n"));
    runtime.block_on(emulator.shutdown());
}

#[test]
fn two_refreshes_on_one_sqlite_store_refresh_200_instances_once_each() {
    let temp = tempfile::tempdir().unwrap();
    two_refreshes_share_200_due_instances(&crate::support::sqlite_store(temp.path()));
}

#[test]
fn two_refreshes_on_one_postgres_store_refresh_200_instances_once_each() {
    let Some(schema) = Schema::create("two_refreshes") else {
        return;
    };
    two_refreshes_share_200_due_instances(&schema.store_url());
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
    kill_during_refresh(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_refreshes_never_tears_a_postgres_instance() {
    let Some(schema) = Schema::create("kill") else {
        return;
    };
    kill_during_refresh(&schema.store_url()).await;
}

/// A vendor whose token endpoint holds each request until the test releases it: the test knows
/// that a refresh is between its read and its write, without guessing how long that lasts.
struct HeldVendor {
    server: MockServer,
    arrived: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

struct HoldTokens {
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl wiremock::Respond for HoldTokens {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let _ = self.arrived.send(());
        let _ = self.release.lock().unwrap().recv();
        token_response("FAKE-new-token", Some("FAKE-new-refresh"), json!(3600))
    }
}

impl HeldVendor {
    async fn start() -> Self {
        let server = MockServer::start().await;
        let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        Mock::given(method("POST"))
            .and(path("/oauth/token"))
            .respond_with(HoldTokens {
                arrived: arrived_tx,
                release: std::sync::Mutex::new(release_rx),
            })
            .mount(&server)
            .await;
        Self {
            server,
            arrived,
            release,
        }
    }

    /// Waits until a token request is held.
    async fn held(&mut self) {
        self.arrived.recv().await.expect("the vendor is gone");
    }

    /// Lets the held token request answer.
    fn release(&self) {
        self.release.send(()).unwrap();
    }
}

/// An expired instance of the custom connector, with the refresh token the vendor rotates.
fn expired_custom(base_url: &str) -> engine_store::State {
    let Value::Object(state) = json!({
        "base.url": base_url,
        "client.id": "demo-client",
        "client.secret": "FAKE-client-secret",
        "access.token": "FAKE-old-token",
        "refresh.token": "FAKE-old-refresh",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    }) else {
        unreachable!()
    };
    state
}

/// The writers that change an instance without refreshing it.
#[derive(Debug, Clone, Copy)]
enum Writer {
    /// The count of rejected refreshes (`engine refresh`).
    Failures,
    /// The `needs-reauth` mark, or its clearing (`engine refresh`, `engine run`).
    Status,
    /// A refresh's history entry.
    History,
    /// A rewrite of the secrets (`engine instances rekey`): the same values, another version.
    Rekey,
}

impl Writer {
    const ALL: [Self; 4] = [Self::Failures, Self::Status, Self::History, Self::Rekey];

    /// What the writer changes, as a change of the state; `None` for the history, which is kept
    /// beside the state.
    fn change(self, state: &mut engine_store::State) {
        match self {
            Self::Failures => {
                let mut schedule = engine_store::Schedule::read(state);
                schedule.consecutive_rejections = 1;
                schedule.put(state);
            }
            Self::Status => {
                let mut schedule = engine_store::Schedule::read(state);
                schedule.status = engine_store::ScheduleStatus::NeedsReauth;
                schedule.put(state);
            }
            Self::History | Self::Rekey => {}
        }
    }

    /// Checks that the writer's change survived.
    fn assert_kept(self, state: &engine_store::State, history: &[Value]) {
        match self {
            Self::Failures => assert_eq!(
                engine_store::Schedule::read(state).consecutive_rejections,
                1,
                "{state:?}"
            ),
            Self::Status => assert_eq!(
                engine_store::Schedule::read(state).status,
                engine_store::ScheduleStatus::NeedsReauth,
                "{state:?}"
            ),
            Self::History => assert_eq!(history, [json!({"written": "meanwhile"})]),
            Self::Rekey => assert_eq!(state["client.secret"], "FAKE-client-secret"),
        }
    }

    /// Writes as the writer does: under the instance's lock when `locked` (waiting for the
    /// refresh in progress, and telling `waiting` so), or as engines before issue 19 did, a
    /// compare-and-swap without the lock.
    async fn write(
        self,
        store: &dyn engine_store::InstanceStore,
        id: &str,
        locked: bool,
        waiting: &(dyn Fn() + Sync),
    ) {
        if let Self::History = self {
            store
                .append_history(id, json!({"written": "meanwhile"}), 10)
                .await
                .unwrap();
            return;
        }
        if locked {
            let written = engine_store::update(store, id, None, waiting, |state| {
                self.change(state);
                Ok(true)
            })
            .await
            .unwrap();
            assert!(written);
            return;
        }
        let read = store.load(id).await.unwrap();
        let mut state = (*read.state).clone();
        self.change(&mut state);
        store.write(id, state, read.version).await.unwrap();
    }
}

/// Issue 19: a token refresh between its read and its write while another writer changes the
/// instance. Whatever the writer (the failure count, the status, the history, a rekey), and
/// whether it waits for the lock or (as engines before did) writes without it, the vendor's
/// rotated refresh token is stored and the other writer's change is kept: a conflict with a
/// newer version that holds no newer tokens is merged, not read as "another process refreshed".
/// A file store has no writer without the lock: each of its writes takes the file's lock.
async fn refresh_meets_every_writer(store_url: &str, every_write_locks: bool) {
    let connector = std::sync::Arc::new(
        engine_spec::load(&repo_root().join(CUSTOM))
            .unwrap()
            .into_connector()
            .unwrap(),
    );
    let engine = engine_runtime::Engine::new().unwrap();
    let modes: &[bool] = if every_write_locks {
        &[true]
    } else {
        &[false, true]
    };
    for &locked in modes {
        for writer in Writer::ALL {
            let id = format!("{writer:?}-{locked}").to_lowercase();
            let mut vendor = HeldVendor::start().await;
            let refresher = engine_stores_sql::open(store_url).await.unwrap();
            let other = engine_stores_sql::open(store_url).await.unwrap();
            other
                .write(&id, expired_custom(&vendor.server.uri()), 0)
                .await
                .unwrap();
            let refresh = tokio::spawn({
                let (engine, connector, id) = (
                    engine.clone(),
                    std::sync::Arc::clone(&connector),
                    id.clone(),
                );
                async move {
                    let request = engine_runtime::RefreshRequest {
                        connector: &connector,
                        instance: &id,
                        ahead: Duration::ZERO,
                    };
                    engine
                        .refresh(&request, &*refresher, &engine_runtime::NoObserver)
                        .await
                }
            });
            vendor.held().await;
            let (waits, waited) = tokio::sync::oneshot::channel();
            let waits = std::sync::Mutex::new(Some(waits));
            let waiting = move || {
                if let Some(waits) = waits.lock().unwrap().take() {
                    let _ = waits.send(());
                }
            };
            // A writer that takes the lock waits for the refresh's: release the vendor once it
            // does. One that does not (or the history) is done at once, but for a file store's
            // history, which waits for the file's lock without a word.
            let write = writer.write(&*other, &id, locked, &waiting);
            tokio::pin!(write);
            let silent = every_write_locks && matches!(writer, Writer::History);
            let written = !silent
                && tokio::select! {
                    () = &mut write => true,
                    _ = waited => false,
                };
            vendor.release();
            if !written {
                write.await;
            }
            let outcome = refresh.await.unwrap();
            assert!(
                outcome.as_ref().is_ok_and(|refreshed| *refreshed),
                "{writer:?} (locked: {locked}): {outcome:?}"
            );
            let stored = other.load(&id).await.unwrap();
            assert_eq!(
                (
                    &stored.state["access.token"],
                    &stored.state["refresh.token"]
                ),
                (&json!("FAKE-new-token"), &json!("FAKE-new-refresh")),
                "{writer:?} (locked: {locked}): the rotated refresh token was dropped"
            );
            writer.assert_kept(&stored.state, &other.history(&id).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_its_tokens_whatever_writes_meanwhile_in_files() {
    let temp = tempfile::tempdir().unwrap();
    refresh_meets_every_writer(&format!("file:{}", temp.path().display()), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_its_tokens_whatever_writes_meanwhile_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    refresh_meets_every_writer(&crate::support::sqlite_store(temp.path()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_keeps_its_tokens_whatever_writes_meanwhile_in_postgres() {
    let Some(schema) = Schema::create("writers") else {
        return;
    };
    refresh_meets_every_writer(&schema.store_url(), false).await;
}

/// Issue 19 and 21: `engine instances set` while a refresh holds the instance's lock (the vendor
/// holds its token request) waits for the lock, says so, and then writes: the rotated refresh
/// token and the value set are both stored.
async fn set_waits_for_a_refresh(store_url: &str) {
    use std::io::BufRead as _;
    let connector = std::sync::Arc::new(
        engine_spec::load(&repo_root().join(CUSTOM))
            .unwrap()
            .into_connector()
            .unwrap(),
    );
    let engine = engine_runtime::Engine::new().unwrap();
    let mut vendor = HeldVendor::start().await;
    let refresher = engine_stores_sql::open(store_url).await.unwrap();
    refresher
        .write("held", expired_custom(&vendor.server.uri()), 0)
        .await
        .unwrap();
    let refresh = tokio::spawn({
        let (engine, connector, refresher) = (
            engine.clone(),
            std::sync::Arc::clone(&connector),
            std::sync::Arc::clone(&refresher),
        );
        async move {
            let request = engine_runtime::RefreshRequest {
                connector: &connector,
                instance: "held",
                ahead: Duration::ZERO,
            };
            engine
                .refresh(&request, &*refresher, &engine_runtime::NoObserver)
                .await
        }
    });
    vendor.held().await;
    let mut setter = spawn(
        &[
            "instances",
            "set",
            "held",
            "client.id=set-meanwhile",
            "--store",
            store_url,
        ],
        &[],
    );
    let stderr = setter.stderr.take().unwrap();
    let (mut reader, first) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (reader, line)
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("waiting for the lock of `held`"),
        "{first}"
    );
    vendor.release();
    assert!(refresh.await.unwrap().unwrap());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(setter.wait().unwrap().success(), "{first}{rest}");
    assert_eq!(rest, "set `client.id` on `held`\n");
    let stored = refresher.load("held").await.unwrap();
    assert_eq!(stored.state["refresh.token"], "FAKE-new-refresh");
    assert_eq!(stored.state["access.token"], "FAKE-new-token");
    assert_eq!(stored.state["client.id"], "set-meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_waits_for_a_refresh_in_files() {
    let temp = tempfile::tempdir().unwrap();
    set_waits_for_a_refresh(&format!("file:{}", temp.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_waits_for_a_refresh_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    set_waits_for_a_refresh(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_waits_for_a_refresh_in_postgres() {
    let Some(schema) = Schema::create("set") else {
        return;
    };
    set_waits_for_a_refresh(&schema.store_url()).await;
}

/// Issue 19: `engine instances rekey` (to a new key) while a refresh holds the instance's lock
/// (the vendor holds its token request; the refreshing process has the old key) waits for the
/// lock, says so, and rekeys what the refresh wrote: the rotated refresh token is stored, under
/// the new key (written before the refresh, it would be under the old one).
async fn rekey_waits_for_a_refresh(store_url: &str) {
    use std::io::BufRead as _;
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let connector = std::sync::Arc::new(
        engine_spec::load(&repo_root().join(CUSTOM))
            .unwrap()
            .into_connector()
            .unwrap(),
    );
    let engine = engine_runtime::Engine::new().unwrap();
    let mut vendor = HeldVendor::start().await;
    let plain = engine_stores_sql::open(store_url).await.unwrap();
    let refresher: std::sync::Arc<dyn engine_store::InstanceStore> =
        std::sync::Arc::new(engine_stores_sql::EncryptedStore::new(
            std::sync::Arc::clone(&plain),
            engine_stores_sql::SecretKey::parse(K1).unwrap(),
            Vec::new(),
            std::sync::Arc::new({
                let connector = std::sync::Arc::clone(&connector);
                move |key: &str| connector.is_secret_key(key)
            }),
        ));
    refresher
        .write("held", expired_custom(&vendor.server.uri()), 0)
        .await
        .unwrap();
    let refresh = tokio::spawn({
        let (engine, connector, refresher) = (
            engine.clone(),
            std::sync::Arc::clone(&connector),
            std::sync::Arc::clone(&refresher),
        );
        async move {
            let request = engine_runtime::RefreshRequest {
                connector: &connector,
                instance: "held",
                ahead: Duration::ZERO,
            };
            engine
                .refresh(&request, &*refresher, &engine_runtime::NoObserver)
                .await
        }
    });
    vendor.held().await;
    let keys = [("ENGINE_SECRET_KEY", K2), ("ENGINE_SECRET_KEYS_OLD", K1)];
    let mut rekey = spawn(&["instances", "rekey", "--store", store_url], &keys);
    let stderr = rekey.stderr.take().unwrap();
    let (mut reader, first) = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stderr);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        (reader, line)
    })
    .await
    .unwrap();
    assert!(
        first.starts_with("waiting for the lock of `held`"),
        "{first}"
    );
    vendor.release();
    assert!(refresh.await.unwrap().unwrap());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(rekey.wait().unwrap().success(), "{first}{rest}");
    assert_eq!(rest, "rekeyed 1 of 1 instances with key `k2`\n");

    let stored = plain.load("held").await.unwrap();
    for key in ["access.token", "refresh.token", "client.secret"] {
        let value = stored.state[key].as_str().unwrap();
        assert!(value.starts_with("enc:v1:k2:"), "{key}: {value}");
    }
    let exported = Outcome::of(spawn(
        &["instances", "export", "held", "--store", store_url],
        &keys[..1],
    ));
    exported.assert_success();
    let exported: Value = serde_json::from_str(&exported.stdout).unwrap();
    assert_eq!(exported["refresh.token"], "FAKE-new-refresh");
    assert_eq!(exported["access.token"], "FAKE-new-token");
    assert_eq!(exported["client.secret"], "FAKE-client-secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_waits_for_a_refresh_in_files() {
    let temp = tempfile::tempdir().unwrap();
    rekey_waits_for_a_refresh(&format!("file:{}", temp.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_waits_for_a_refresh_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    rekey_waits_for_a_refresh(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_waits_for_a_refresh_in_postgres() {
    let Some(schema) = Schema::create("rekey") else {
        return;
    };
    rekey_waits_for_a_refresh(&schema.store_url()).await;
}
