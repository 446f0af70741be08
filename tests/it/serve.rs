//! `engine serve`: the built binary on a free port, a SQLite store in a temporary directory and
//! the vendor emulator. Resource calls answer as the vendor did, the scheduler refreshes an
//! expired instance with no call, failures are problem details, no secret is ever shown, and
//! SIGTERM ends it with exit 0. Every call presents an API key (`engine keys create`).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

use crate::instances::{Schema, engine_output, write_file};
use crate::support::run::{Outcome, time_ago};
use crate::support::{engine, repo_root};

pub(crate) const DEMO: &str = "connectors/demo.json";

/// The server's secret key (`ENGINE_SECRET_KEY`): API keys are kept as MACs under a key
/// derived from it, and the instances' secrets are encrypted with it.
pub(crate) const SERVER_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// `engine ARGS...` with the server's secret key.
pub(crate) fn keyed(args: &[&str]) -> Outcome {
    let output = engine()
        .env("ENGINE_SECRET_KEY", SERVER_KEY)
        .args(args)
        .output()
        .expect("running `engine`");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Creates the API key `name` with `scopes` in `store` and returns it (the one line
/// `engine keys create` prints).
pub(crate) fn create_key(store: &str, name: &str, scopes: &[&str]) -> String {
    let mut args = vec!["keys", "create", name, "--store", store];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let created = keyed(&args);
    created.assert_success();
    created.stdout.trim().to_owned()
}

/// A client that presents `key` on every request.
pub(crate) fn client_with(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    crate::support::http()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A client with a key of every scope but `tokens:read`, created in `store`.
pub(crate) fn client(store: &str) -> reqwest::Client {
    client_with(&create_key(
        store,
        "tests",
        &["resources", "instances:read", "instances:write"],
    ))
}

/// A running `engine serve`, killed on drop when the test did not stop it.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) url: String,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `engine serve` on `store` and waits for its `listening on` line.
    pub(crate) fn start(store: &str) -> Self {
        Self::start_with(store, "connectors", &[])
    }

    /// Starts `engine serve` on `store` with the connectors of `connectors` (relative to the
    /// repository, or absolute).
    pub(crate) fn start_in(store: &str, connectors: &str) -> Self {
        Self::start_with(store, connectors, &[])
    }

    /// Starts `engine serve` on `store` with the connectors of `connectors` and more arguments.
    pub(crate) fn start_with(store: &str, connectors: &str, more: &[&str]) -> Self {
        Self::start_env(store, connectors, more, &[])
    }

    /// [`Served::start_with`], with more environment variables.
    pub(crate) fn start_env(
        store: &str,
        connectors: &str,
        more: &[&str],
        variables: &[(&str, &str)],
    ) -> Self {
        // Any free port on loopback, unless the test says where.
        let listen: &[&str] = if more.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine"))
            .args(["serve", "--store", store, "--connectors", connectors])
            .args(listen)
            .args(more)
            .current_dir(repo_root())
            .env("NO_COLOR", "1")
            .env("ENGINE_SECRET_KEY", SERVER_KEY)
            .envs(variables.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting `engine serve`");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            let mut text = stderr.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
            drop(text);
            if let Some(rest) = line.strip_prefix("listening on ") {
                url = Some(rest.to_owned());
                break;
            }
        }
        let url =
            url.unwrap_or_else(|| panic!("no `listening on` line: {}", stderr.lock().unwrap()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self { child, url, stderr }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Imports `id`, a demo instance authenticated `ago` seconds ago with a token of an hour.
pub(crate) fn import(store: &str, base_url: &str, id: &str, ago: u64) {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        id,
        &json!({
            "base.url": base_url,
            "client.id": "demo-client",
            "client.secret": "demo-secret",
            "access.token": format!("at_{id}_old"),
            "authentication.time": time_ago(ago),
            "expires_in": "3600",
        }),
    );
    let path = file.to_str().unwrap();
    engine_output(&[
        "instances",
        "import",
        path,
        "--connector",
        DEMO,
        "--store",
        store,
    ])
    .assert_success();
}

/// An answer: status, content type, body, and its `Retry-After` and `WWW-Authenticate`.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
    pub(crate) retry_after: Option<String>,
    pub(crate) challenge: Option<String>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

pub(crate) async fn call(client: &reqwest::Client, method: &str, url: &str) -> Answer {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = client.request(method, url).send().await.unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let challenge = header("www-authenticate");
    let body = response.text().await.unwrap();
    Answer {
        status,
        content_type,
        body,
        retry_after,
        challenge,
    }
}

/// The stored values of `id`, secrets revealed.
pub(crate) fn revealed(store: &str, id: &str) -> Value {
    let outcome = keyed(&["instances", "export", id, "--reveal", "--store", store]);
    outcome.assert_success();
    serde_json::from_str(&outcome.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_calls_resources_refreshes_on_schedule_and_never_shows_a_secret() {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    // `caller` is fresh (its token unknown to the emulator: the call's 401 refreshes it);
    // `sleeper` expired an hour ago and is never called.
    import(&store, &emulator.url(), "caller", 60);
    import(&store, &emulator.url(), "sleeper", 7200);
    let mut served = Served::start(&store);
    let key = create_key(
        &store,
        "tests",
        &["resources", "instances:read", "instances:write"],
    );
    let client = client_with(&key);
    let base = served.url.clone();
    let mut answers = Vec::new();

    let health = call(&client, "GET", &format!("{base}/healthz")).await;
    assert_eq!(health.status, 200);
    let ready = call(&client, "GET", &format!("{base}/readyz")).await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );

    // The scheduler refreshes the expired instance with no call: its history shows it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let answer = call(
            &client,
            "GET",
            &format!("{base}/v1/instances/sleeper/history"),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let entries = answer.json()["entries"].as_array().cloned().unwrap();
        if !entries.is_empty() {
            answers.push(answer);
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "not refreshed: {}",
            served.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (&history[0]["trigger"], &history[0]["outcome"]),
        (&json!("schedule"), &json!("ok")),
        "{history:?}"
    );
    assert_eq!(emulator.stats().api_calls, 0);
    let sleeper = call(&client, "GET", &format!("{base}/v1/instances/sleeper")).await;
    assert_eq!(sleeper.status, 200);
    let shown = sleeper.json();
    assert_eq!(shown["status"], "fresh", "{shown}");
    assert_eq!(shown["values"]["client.secret"], "****");
    assert_eq!(shown["values"]["access.token"], "****");
    assert_eq!(shown["last_refresh"]["outcome"], "ok");
    answers.push(sleeper);

    // A resource call answers as the vendor did (its 401 refreshed the token once).
    let contacts = call(
        &client,
        "GET",
        &format!("{base}/v1/instances/caller/resources/list-contacts?limit=2"),
    )
    .await;
    assert_eq!(contacts.status, 200, "{}", contacts.body);
    let list = contacts.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(list[0]["id"].is_string(), "{list}");
    let stats = emulator.stats();
    assert_eq!(
        (stats.api_calls, stats.api_unauthorized),
        (2, 1),
        "{stats:?}"
    );
    answers.push(contacts);

    let listing = call(
        &client,
        "GET",
        &format!("{base}/v1/instances?connector={DEMO}"),
    )
    .await;
    let ids: Vec<Value> = listing.json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["id"].clone())
        .collect();
    assert_eq!(ids, [json!("caller"), json!("sleeper")]);
    answers.push(listing);

    // Failures are problem details.
    for (method, path, snapshot) in [
        ("GET", "/v1/instances/nope", "serve_unknown_instance"),
        (
            "POST",
            "/v1/instances/nope/refresh",
            "serve_unknown_instance_refresh",
        ),
        (
            "GET",
            "/v1/instances/caller/resources/nope",
            "serve_unknown_resource",
        ),
        ("GET", "/v1/instances?status=bogus", "serve_bad_status"),
        ("GET", "/v1/instances?limit=many", "serve_bad_limit"),
    ] {
        let answer = call(&client, method, &format!("{base}{path}")).await;
        assert_eq!(answer.content_type, "application/problem+json", "{path}");
        insta::assert_json_snapshot!(snapshot, answer.json());
        answers.push(answer);
    }

    // A forced refresh gets a new token.
    let forced = call(
        &client,
        "POST",
        &format!("{base}/v1/instances/caller/refresh"),
    )
    .await;
    assert_eq!(
        (forced.status, &forced.json()["outcome"]),
        (200, &json!("refreshed"))
    );
    answers.push(forced);
    let forced_history = call(
        &client,
        "GET",
        &format!("{base}/v1/instances/caller/history"),
    )
    .await;
    let entries = forced_history.json()["entries"]
        .as_array()
        .cloned()
        .unwrap();
    let newest = entries.last().unwrap();
    assert_eq!(
        (&newest["trigger"], &newest["outcome"]),
        (&json!("manual"), &json!("ok")),
        "{entries:?}"
    );
    answers.push(forced_history);

    // No secret in any answer or in the server's output: the client secret, and every token
    // the instances held.
    let mut secrets = vec!["demo-secret".to_owned(), key.clone()];
    for id in ["caller", "sleeper"] {
        secrets.push(format!("at_{id}_old"));
        let token = revealed(&store, id)["access.token"]
            .as_str()
            .unwrap()
            .to_owned();
        secrets.push(token);
    }
    let stderr = served.stderr();
    for secret in &secrets {
        for answer in &answers {
            assert!(
                !answer.body.contains(secret.as_str()),
                "{secret} in {}",
                answer.body
            );
        }
        assert!(!stderr.contains(secret.as_str()), "{secret} in {stderr}");
    }

    // SIGTERM: a graceful stop, exit 0.
    let killed = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = served.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", served.stderr());
    emulator.shutdown().await;
}

/// A PostgreSQL store that goes away under a running server: `/readyz` answers 503, an
/// instance's read is a problem that names neither the store nor its URL, and SIGTERM still ends
/// it with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_goes_away_makes_readyz_503() {
    let Some(schema) = Schema::create("serve_gone") else {
        return;
    };
    let store = schema.store_url();
    import(&store, "http://127.0.0.1:9", "gone", 60);
    let mut served = Served::start(&store);
    let client = client(&store);
    let base = served.url.clone();
    let ready = call(&client, "GET", &format!("{base}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    // The key is looked up once, and kept for a few seconds.
    let before = call(&client, "GET", &format!("{base}/v1/instances/gone")).await;
    assert_eq!(before.status, 200, "{}", before.body);

    drop(schema);
    let ready = call(&client, "GET", &format!("{base}/readyz")).await;
    assert_eq!(ready.content_type, "application/problem+json");
    insta::assert_json_snapshot!("serve_store_gone_readyz", ready.json());
    let read = call(&client, "GET", &format!("{base}/v1/instances/gone")).await;
    assert_eq!(read.content_type, "application/problem+json");
    insta::assert_json_snapshot!("serve_store_gone_read", read.json());

    let killed = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = served.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", served.stderr());
}

/// Sends SIGTERM to `served` and waits for its graceful exit 0 (the refreshes under way are
/// finished and written first).
pub(crate) fn stop(mut served: Served) {
    let killed = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = served.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{}", served.stderr());
}

/// Two `engine serve` processes on one store holding 200 instances that fall due together a few
/// seconds after they start (so that both schedulers wake for them at once): the schedulers
/// claim the due instances from the store, so each is refreshed exactly once: 200 token
/// requests at the vendor emulator (its `_stats`) once both have stopped, each instance
/// refreshed by one of them (their `refreshed:` lines), and nothing is due.
async fn two_servers_share_200_due_instances(store: &str) {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    // Tokens of an hour are due a fifth of it (720 s) before they expire: 3 s from now. Were
    // they due before both servers have started, the first would refresh them all: still
    // exactly once each.
    let obtained = time_ago(3600 - 720 - 3);
    let files: Vec<String> = (0..200)
        .map(|index| {
            let state = json!({
                "base.url": emulator.url(),
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": "at_due_soon",
                "authentication.time": obtained,
                "expires_in": "3600",
            });
            let file = write_file(temp.path(), &format!("due-{index:03}"), &state);
            file.display().to_string()
        })
        .collect();
    let mut import = vec!["instances", "import", "--connector", DEMO, "--store", store];
    import.extend(files.iter().map(String::as_str));
    engine_output(&import).assert_success();

    let servers = [Served::start(store), Served::start(store)];
    let deadline = Instant::now() + Duration::from_mins(1);
    while emulator.stats().token_requests < 200 {
        assert!(
            Instant::now() < deadline,
            "not refreshed: {:?}\n{}\n{}",
            emulator.stats(),
            servers[0].stderr(),
            servers[1].stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refreshed: Vec<String> = Vec::new();
    for served in servers {
        let stderr = served.stderr.clone();
        stop(served);
        let stderr = stderr.lock().unwrap();
        let ids = stderr
            .lines()
            .filter_map(|line| line.strip_prefix("refreshed: "));
        refreshed.extend(ids.map(str::to_owned));
    }
    refreshed.sort();
    let expected: Vec<String> = (0..200).map(|index| format!("due-{index:03}")).collect();
    assert_eq!(refreshed, expected);
    // Counted once both have stopped: no refresh is under way, and none was made twice.
    let stats = emulator.stats();
    assert_eq!(
        (stats.token_requests, stats.client_credentials_grants),
        (200, 200),
        "{stats:?}"
    );
    // Every instance was refreshed and written: nothing is due any more.
    let again = keyed(&["refresh", "--store", store]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "nothing due\n"));
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_sqlite_store_refresh_each_due_instance_once() {
    let temp = tempfile::tempdir().unwrap();
    two_servers_share_200_due_instances(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_store_refresh_each_due_instance_once() {
    let Some(schema) = Schema::create("serve_two") else {
        return;
    };
    two_servers_share_200_due_instances(&schema.store_url()).await;
}
