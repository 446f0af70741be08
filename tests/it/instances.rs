//! Instances in stores (`--store URL`): `engine instances import | list | show | export |
//! delete`, and `engine run --instance ID` against SQLite and PostgreSQL, with many processes on
//! one expired instance.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{Outcome, cool_down, now_ms, received_at, time_ago, token_response};
use crate::support::{engine, repo_root};

const CONNECTOR: &str = "tests/fixtures/run/custom/connector.json";
const CLIENT_SECRET: &str = "FAKE-client-secret-9f3a";
const OLD_TOKEN: &str = "FAKE-old-token-1111";
const NEW_TOKEN: &str = "FAKE-new-token-2222";

/// A vendor whose token endpoint answers after `delay` (so that concurrent runs overlap).
async fn vendor(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(
            token_response(NEW_TOKEN, Some("FAKE-new-refresh-4444"), json!(3600)).set_delay(delay),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    server
}

fn instance(base_url: &str, authenticated_seconds_ago: u64) -> Value {
    json!({
        "base.url": base_url,
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": OLD_TOKEN,
        "refresh.token": "FAKE-old-refresh-3333",
        "authentication.time": time_ago(authenticated_seconds_ago),
        "expires_in": "3600",
    })
}

/// `engine ARGS...` to the end.
#[track_caller]
pub(crate) fn engine_output(args: &[&str]) -> Outcome {
    let output = engine().args(args).output().expect("running `engine`");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `value` to `dir/<name>.json`.
#[track_caller]
pub(crate) fn write_file(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let file = dir.join(format!("{name}.json"));
    fs_err::write(&file, serde_json::to_string_pretty(value).unwrap()).unwrap();
    file
}

/// A PostgreSQL schema of its own for one test, dropped on drop; `None` (after one printed line)
/// without `ENGINE_TEST_POSTGRES`.
pub(crate) struct Schema {
    url: String,
    name: String,
}

impl Schema {
    pub(crate) fn create(test: &str) -> Option<Self> {
        let Ok(url) = std::env::var("ENGINE_TEST_POSTGRES") else {
            static SAID: Once = Once::new();
            // Past the test harness's capture: a skipped test is never silent.
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the PostgreSQL `engine` tests: ENGINE_TEST_POSTGRES is not set"
                );
            });
            return None;
        };
        let name = format!("engine_it_{test}_{}", std::process::id());
        psql(
            &url,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
        );
        Some(Self { url, name })
    }

    /// The store URL whose tables live in this schema.
    pub(crate) fn store_url(&self) -> String {
        format!("{}?options=-c%20search_path%3D{}", self.url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// Runs `sql` with a short-lived connection of its own.
fn psql(url: &str, sql: &str) {
    let url = url.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                use sqlx::Connection as _;
                let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut connection)
                    .await
                    .unwrap();
            });
    })
    .join()
    .unwrap();
}

/// Import, list (table, JSON, filtered), show (secrets masked), export (the file back), a second
/// import of the same id refused, delete.
#[test]
fn instances_commands_on_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let expired = write_file(temp.path(), "cust1", &instance("http://127.0.0.1:9", 7200));
    let fresh = write_file(temp.path(), "cust2", &instance("http://127.0.0.1:9", 60));
    let other = write_file(temp.path(), "other", &json!({"client.id": "x"}));

    let imported = engine_output(&[
        "instances",
        "import",
        expired.to_str().unwrap(),
        fresh.to_str().unwrap(),
        "--connector",
        "custom",
        "--store",
        &store,
    ]);
    imported.assert_success();
    assert_eq!(imported.stderr.lines().count(), 3, "{}", imported.render());
    assert!(
        imported
            .stderr
            .starts_with("note: `ENGINE_SECRET_KEY` is not set: secrets are stored unencrypted"),
        "{}",
        imported.render()
    );
    engine()
        .args(["instances", "import", other.to_str().unwrap()])
        .env("ENGINE_STORE", &store)
        .assert()
        .success();

    let listed = engine_output(&["instances", "list", "--store", &store]);
    let table = regex_like_times(&listed.stdout);
    insta::assert_snapshot!(table, @r"
    ID     CONNECTOR  STATE    EXPIRES               LAST REFRESH
    cust1  custom     expired  [TIME]  -
    cust2  custom     fresh    [TIME]  -
    other  -          unknown  -                     -
    ");
    let json = engine_output(&[
        "instances",
        "list",
        "--store",
        &store,
        "--state",
        "expired",
        "--format",
        "json",
    ]);
    let items: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["id"], "cust1");
    assert_eq!(items[0]["version"], 1);
    let by_connector = engine_output(&[
        "instances",
        "list",
        "--store",
        &store,
        "--connector",
        "custom",
    ]);
    assert_eq!(
        by_connector.stdout.lines().count(),
        3,
        "{}",
        by_connector.render()
    );

    let shown = engine_output(&["instances", "show", "cust1", "--store", &store]);
    shown
        .assert_success()
        .assert_hides(&[CLIENT_SECRET, OLD_TOKEN, "FAKE-old-refresh-3333"]);
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(shown["state"]["client.secret"], "****");
    assert_eq!(shown["state"]["client.id"], "demo-client");
    assert_eq!(shown["state"]["engine.connector"], "custom");

    let exported = engine_output(&["instances", "export", "cust1", "--store", &store]);
    exported.assert_success();
    let mut original = instance("http://127.0.0.1:9", 7200);
    let exported: Value = serde_json::from_str(&exported.stdout).unwrap();
    original["authentication.time"] = exported["authentication.time"].clone();
    original["engine.connector"] = json!("custom");
    // The import computed the schedule from the keys (the connector is known by name only).
    let obtained: u64 = original["authentication.time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        exported["engine.schedule"]["expires_at"],
        json!(obtained + 3_600_000)
    );
    // A fifth of the hour before the expiry, less the instance's jitter.
    assert_eq!(
        exported["engine.schedule"]["next_refresh_at"],
        json!(obtained + 2_880_000 - engine_runtime::jitter_ms("cust1", 3_600_000))
    );
    original["engine.schedule"] = exported["engine.schedule"].clone();
    assert_eq!(exported, original);

    let again = engine_output(&[
        "instances",
        "import",
        expired.to_str().unwrap(),
        "--store",
        &store,
    ]);
    insta::assert_snapshot!(again.render(), @"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    note: `ENGINE_SECRET_KEY` is not set: secrets are stored unencrypted (docs/stores.md)
    error: instance `cust1` already exists in the store
    hint: delete it first (`engine instances delete cust1`), or import under another id with `--id`
    ");

    // Its connector was recorded by name only: `--connector FILE` names the file (which has no
    // `onDelete`).
    engine_output(&[
        "instances",
        "delete",
        "cust1",
        "--connector",
        CONNECTOR,
        "--store",
        &store,
    ])
    .assert_success();
    let missing = engine_output(&["instances", "show", "cust1", "--store", &store]);
    assert_eq!(missing.code, 3, "{}", missing.render());
    assert!(
        missing
            .stderr
            .starts_with("error: instance `cust1` does not exist in `sqlite:"),
        "{}",
        missing.render()
    );
    let listed = engine_output(&["instances", "list", "--store", &store]);
    assert_eq!(listed.stdout.lines().count(), 3);
}

/// RFC 3339 times → `[TIME]`, for snapshots.
fn regex_like_times(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            line.split("  ")
                .map(|cell| {
                    if cell.len() >= 20 && cell.as_bytes()[4] == b'-' && cell.contains('T') {
                        "[TIME]".to_owned()
                    } else {
                        cell.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `engine run --instance ID --store URL` refreshes an expired stored instance once, writes the
/// new token with the next version, and the next run uses it without a token request.
async fn run_refreshes_a_stored_instance(store: &str) {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(temp.path(), "cust42", &instance(&server.uri(), 7200));
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        store,
    ])
    .assert_success();

    for _ in 0..2 {
        let outcome = engine_output(&[
            "run",
            CONNECTOR,
            "list-contacts",
            "--instance",
            "cust42",
            "--store",
            store,
        ]);
        outcome.assert_success();
        assert_eq!(outcome.json(), json!([]));
    }
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 1);
    let stored = engine_output(&["instances", "export", "cust42", "--store", store]);
    let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
    assert_eq!(stored["access.token"], NEW_TOKEN);
    assert_eq!(stored["refresh.token"], "FAKE-new-refresh-4444");
    let listed = engine_output(&["instances", "list", "--store", store, "--format", "json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(
        (listed[0]["version"].clone(), listed[0]["state"].clone()),
        (json!(2), json!("fresh"))
    );

    // The run's refresh is in the instance's history, with its trigger.
    let history = engine_output(&["history", "cust42", "--store", store, "--format", "json"]);
    let entries: Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");
    assert_eq!(
        (&entries[0]["trigger"], &entries[0]["outcome"]),
        (&json!("expiry"), &json!("ok"))
    );

    let unknown = engine_output(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--instance",
        "nobody",
        "--store",
        store,
    ]);
    assert_eq!(unknown.code, 3, "{}", unknown.render());
    assert!(
        unknown
            .stderr
            .contains("hint: list the stored instances with `engine instances list`"),
        "{}",
        unknown.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refreshes_a_stored_instance_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    run_refreshes_a_stored_instance(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refreshes_a_stored_instance_in_postgres() {
    let Some(schema) = Schema::create("run") else {
        return;
    };
    run_refreshes_a_stored_instance(&schema.store_url()).await;
}

/// Ten `engine run` processes at once on one expired instance: exactly one token request, every
/// process exits 0 with the new token stored.
async fn ten_processes_refresh_once(store: &str) {
    let server = vendor(Duration::from_millis(300)).await;
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(temp.path(), "shared", &instance(&server.uri(), 7200));
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        store,
    ])
    .assert_success();

    let children: Vec<_> = (0..10)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
                .args([
                    "run",
                    CONNECTOR,
                    "list-contacts",
                    "--instance",
                    "shared",
                    "--store",
                    store,
                    "-v",
                ])
                .current_dir(crate::support::repo_root())
                .env("NO_COLOR", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outcomes: Vec<Outcome> = children.into_iter().map(Outcome::of).collect();
    for outcome in &outcomes {
        outcome
            .assert_success()
            .assert_hides(&[CLIENT_SECRET, NEW_TOKEN]);
    }
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 1);
    assert_eq!(received_at(&server, "/contacts").await.len(), 10);
    let waited = outcomes
        .iter()
        .filter(|outcome| outcome.stderr.contains("another process refreshed"))
        .count();
    assert!(waited >= 1, "no process saw another's refresh");
    let stored = engine_output(&["instances", "export", "shared", "--store", store]);
    let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
    assert_eq!(stored["access.token"], NEW_TOKEN);
    assert!(
        stored["authentication.time"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= now_ms()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_processes_refresh_a_sqlite_instance_once() {
    let temp = tempfile::tempdir().unwrap();
    ten_processes_refresh_once(&crate::support::sqlite_store(temp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_processes_refresh_a_postgres_instance_once() {
    let Some(schema) = Schema::create("ten") else {
        return;
    };
    ten_processes_refresh_once(&schema.store_url()).await;
}

/// Imports `instances` (id → seconds since authentication) with the custom connector recorded,
/// into a new SQLite store; returns the store URL.
#[track_caller]
fn sqlite_with(temp: &Path, base_url: &str, instances: &[(&str, u64)]) -> String {
    let store = format!("sqlite:{}", temp.join("state.db").display());
    for (id, ago) in instances {
        let file = write_file(temp, id, &instance(base_url, *ago));
        engine_output(&[
            "instances",
            "import",
            file.to_str().unwrap(),
            "--connector",
            CONNECTOR,
            "--store",
            &store,
        ])
        .assert_success();
    }
    store
}

/// Lines with durations replaced, sorted (instances finish in any order).
fn sorted_lines(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            let mut words: Vec<&str> = line.split(' ').collect();
            for index in 1..words.len() {
                if words[index].starts_with("ms") && words[index - 1].parse::<u64>().is_ok() {
                    words[index - 1] = "[N]";
                }
            }
            words.join(" ")
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// `engine refresh` refreshes the instances due within a fifth of their lifetime (or
/// `--ahead`), one line each on a pipe, records each refresh in the history with token
/// fingerprints and never a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_refreshes_due_instances_and_records_history() {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    // Lifetimes of an hour: expired, fresh for 59 minutes, fresh for 10 minutes (< a fifth).
    let store = sqlite_with(
        temp.path(),
        &server.uri(),
        &[("expired", 7200), ("fresh", 60), ("soon", 3000)],
    );

    let outcome = engine_output(&["refresh", "--store", &store]);
    assert_eq!(outcome.code, 0, "{}", outcome.render());
    insta::assert_snapshot!(sorted_lines(&outcome.stderr), @r"
    2 refreshed
    refreshed: expired: ON REFRESH, 200, [N] ms
    refreshed: soon: ON REFRESH, 200, [N] ms
    ");
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 2);

    let history = engine_output(&["history", "expired", "--store", &store, "--format", "json"]);
    history
        .assert_success()
        .assert_hides(&[OLD_TOKEN, NEW_TOKEN, CLIENT_SECRET]);
    let entries: Value = serde_json::from_str(&history.stdout).unwrap();
    let entry = &entries[0];
    assert_eq!(entries.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            &entry["trigger"],
            &entry["resource"],
            &entry["status"],
            &entry["outcome"]
        ),
        (
            &json!("schedule"),
            &json!("ON REFRESH"),
            &json!(200),
            &json!("ok")
        )
    );
    assert_eq!(entry["old_token"], engine_runtime::fingerprint(OLD_TOKEN));
    assert_eq!(entry["new_token"], engine_runtime::fingerprint(NEW_TOKEN));
    assert_eq!(entry["old_token"].as_str().unwrap().len(), 8);

    // Nothing else is due; `--ahead 2h` makes the fresh one due.
    let again = engine_output(&["refresh", "--store", &store]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "nothing due\n"));
    let ahead = engine_output(&["refresh", "--store", &store, "--ahead", "2h", "--jobs", "1"]);
    assert_eq!(ahead.code, 0, "{}", ahead.render());
    assert!(
        ahead.stderr.ends_with("3 refreshed\n"),
        "{}",
        ahead.render()
    );
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 5);

    // The table form: a header and one line per refresh.
    let table = engine_output(&["history", "fresh", "--store", &store]);
    assert_eq!(table.stdout.lines().count(), 2, "{}", table.render());
    assert!(table.stdout.starts_with("AT "), "{}", table.render());
}

/// `engine refresh --log-format json`: one JSON object per instance, then the summary, on
/// stderr, with no progress bar and no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_log_format_json_prints_one_object_per_instance_and_a_summary() {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let store = sqlite_with(
        temp.path(),
        &server.uri(),
        &[("expired", 7200), ("fresh", 60)],
    );
    let outcome = engine_output(&["refresh", "--store", &store, "--log-format", "json"]);
    assert_eq!(outcome.code, 0, "{}", outcome.render());
    outcome.assert_hides(&[OLD_TOKEN, NEW_TOKEN, CLIENT_SECRET]);
    let events: Vec<Value> = outcome
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert_eq!(events.len(), 2, "{}", outcome.render());
    assert_eq!(
        (
            &events[0]["event"],
            &events[0]["instance"],
            &events[0]["outcome"]
        ),
        (&json!("refresh"), &json!("expired"), &json!("refreshed"))
    );
    assert_eq!(events[1]["event"], "summary");
    assert_eq!(events[1]["refreshed"], 1);
    assert_eq!(events[1]["reauthenticate"], json!([]));
    assert!(events.iter().all(|event| event["at"].is_string()));
}

/// After three consecutive rejected refreshes (`invalid_grant`) an instance is marked
/// `needs-reauth`: `engine refresh` exits 4 and lists it, then no longer refreshes it; the
/// vendor's error is recorded with secrets masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rejections_mark_an_instance_needs_reauth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "refresh token FAKE-old-refresh-3333 was revoked",
        })))
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let store = sqlite_with(temp.path(), &server.uri(), &[("revoked", 7200)]);

    for attempt in 1..=3 {
        if attempt > 1 {
            // Cooling down, it is not due: nothing is sent for it until its retry.
            let cooling = engine_output(&["refresh", "--store", &store]);
            assert_eq!(
                (cooling.code, cooling.stderr.as_str()),
                (0, "nothing due\n")
            );
            cool_down(&store, "revoked").await;
        }
        let outcome = engine_output(&["refresh", "--store", &store]);
        assert_eq!(outcome.code, 4, "{}", outcome.render());
        outcome.assert_hides(&["FAKE-old-refresh-3333", CLIENT_SECRET]);
        assert!(
            outcome.stderr.contains("rejected: revoked: "),
            "{}",
            outcome.render()
        );
        assert!(
            outcome.stderr.contains("re-authenticate: revoked"),
            "{}",
            outcome.render()
        );
        assert_eq!(
            outcome
                .stderr
                .contains("3 consecutive rejections: marked `needs-reauth`"),
            attempt == 3,
            "{}",
            outcome.render()
        );
        let backing_off = if attempt == 1 {
            "(`fresh` → `retrying`: next attempt at "
        } else {
            "(`retrying` → `retrying`: next attempt at "
        };
        assert_eq!(
            outcome.stderr.contains(backing_off),
            attempt < 3,
            "{}",
            outcome.render()
        );
    }
    let listed = engine_output(&[
        "instances",
        "list",
        "--store",
        &store,
        "--state",
        "needs-reauth",
    ]);
    assert_eq!(
        listed
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(2),
        Some("needs-reauth")
    );
    let skipped = engine_output(&["refresh", "--store", &store]);
    assert_eq!(
        (skipped.code, skipped.stderr.as_str()),
        (0, "nothing due\n")
    );
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 3);

    let history = engine_output(&["history", "revoked", "--store", &store, "--format", "json"]);
    history.assert_hides(&["FAKE-old-refresh-3333", CLIENT_SECRET]);
    let entries: Value = serde_json::from_str(&history.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 3);
    assert_eq!(
        (&entries[2]["outcome"], &entries[2]["status"]),
        (&json!("rejected"), &json!(400))
    );
    assert!(
        entries[2]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{entries}"
    );
    assert_eq!(entries[2]["new_token"], Value::Null);
    let table = engine_output(&["history", "revoked", "--store", &store]);
    assert!(
        table.stdout.contains("rejected → needs-reauth"),
        "{}",
        table.render()
    );
    // Each refresh's entry records the change of status it made.
    let transitions: Vec<(&Value, &Value)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (&entry["transition"]["from"], &entry["transition"]["to"]))
        .collect();
    assert_eq!(
        transitions,
        [
            (&json!("fresh"), &json!("retrying")),
            (&json!("retrying"), &json!("retrying")),
            (&json!("retrying"), &json!("needs-reauth")),
        ]
    );
}

/// With `ENGINE_SECRET_KEY`, secrets are encrypted at rest (the SQLite file never holds them), a
/// stored run works through the encryption, a wrong key is an error naming the key id, and
/// `engine instances rekey` moves every instance to a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_rekeyed() {
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K1_WRONG: &str = "k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let database = temp.path().join("state.db");
    let store = format!("sqlite:{}", database.display());
    let file = write_file(temp.path(), "sealed", &instance(&server.uri(), 7200));
    let with_key = |key: &str, args: &[&str]| {
        let output = engine()
            .args(args)
            .env("ENGINE_SECRET_KEY", key)
            .output()
            .unwrap();
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    let imported = with_key(
        K1,
        &[
            "instances",
            "import",
            file.to_str().unwrap(),
            "--store",
            &store,
        ],
    );
    imported.assert_success();
    assert!(!imported.stderr.contains("note:"), "{}", imported.render());
    with_key(
        K1,
        &[
            "run",
            CONNECTOR,
            "list-contacts",
            "--instance",
            "sealed",
            "--store",
            &store,
        ],
    )
    .assert_success();
    let bytes = fs_err::read(&database).unwrap();
    let wal = fs_err::read(temp.path().join("state.db-wal")).unwrap_or_default();
    for secret in [CLIENT_SECRET, NEW_TOKEN, "FAKE-new-refresh-4444"] {
        let found = |haystack: &[u8]| {
            haystack
                .windows(secret.len())
                .any(|window| window == secret.as_bytes())
        };
        assert!(
            !found(&bytes) && !found(&wal),
            "`{secret}` is in the database file"
        );
    }
    let exported = with_key(K1, &["instances", "export", "sealed", "--store", &store]);
    let exported: Value = serde_json::from_str(&exported.stdout).unwrap();
    assert_eq!(exported["access.token"], NEW_TOKEN);

    let wrong = with_key(
        K1_WRONG,
        &["instances", "export", "sealed", "--store", &store],
    );
    assert_eq!(wrong.code, 1, "{}", wrong.render());
    assert!(
        wrong.stderr.contains("does not decrypt with key `k1`"),
        "{}",
        wrong.render()
    );
    let unkeyed = engine_output(&["instances", "export", "sealed", "--store", &store]);
    assert!(
        unkeyed.stdout.contains("enc:v1:k1:"),
        "{}",
        unkeyed.render()
    );
    unkeyed.assert_hides(&[CLIENT_SECRET, NEW_TOKEN]);

    let rekeyed = engine()
        .args(["instances", "rekey", "--store", &store])
        .env("ENGINE_SECRET_KEY", K2)
        .env("ENGINE_SECRET_KEYS_OLD", K1)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rekeyed.stderr),
        "rekeyed 1 of 1 instances with key `k2`\n"
    );
    let old = with_key(K1, &["instances", "export", "sealed", "--store", &store]);
    assert!(
        old.stderr
            .contains("encrypted with key `k2`, which is not among the keys given"),
        "{}",
        old.render()
    );
    let new = with_key(K2, &["instances", "export", "sealed", "--store", &store]);
    let new: Value = serde_json::from_str(&new.stdout).unwrap();
    assert_eq!(new["client.secret"], CLIENT_SECRET);
}

/// A vendor that keeps failing with 503 (after the transport's retries) is a transient failure:
/// `engine refresh` exits 5, and the instance is not counted towards `needs-reauth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_of_an_unavailable_vendor_exits_5() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "0"))
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let store = sqlite_with(temp.path(), &server.uri(), &[("down", 7200)]);

    let outcome = engine_output(&["refresh", "--store", &store]);
    assert_eq!(outcome.code, 5, "{}", outcome.render());
    assert!(
        outcome.stderr.contains("failed transiently: down: "),
        "{}",
        outcome.render()
    );
    assert!(
        outcome.stderr.ends_with("1 failed transiently\n"),
        "{}",
        outcome.render()
    );
    // Retrying after a backoff, no rejection counted; until then it is not due.
    let exported = engine_output(&["instances", "export", "down", "--store", &store]);
    let state: Value = serde_json::from_str(&exported.stdout).unwrap();
    let schedule = &state["engine.schedule"];
    assert_eq!(
        (
            &schedule["status"],
            &schedule["failures"],
            &schedule["rejections"]
        ),
        (&json!("retrying"), &json!(1), &json!(0)),
        "{state}"
    );
    assert_eq!(
        schedule["cooldown_until"], schedule["next_refresh_at"],
        "{state}"
    );
    let again = engine_output(&["refresh", "--store", &store]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "nothing due\n"));
    assert_eq!(state["access.token"], OLD_TOKEN);
}

/// Issue 19: `engine instances show` masks by the connector's secret rule, the one the runtime
/// masks and encrypts by: `PASSWORD` properties whatever their names (`account.pin`,
/// `zorp.pass`, `api.key`), as well as names like secrets; values stored encrypted are masked
/// too, and nothing is decrypted to be shown.
#[test]
fn show_masks_by_the_connectors_secret_rule() {
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let temp = tempfile::tempdir().unwrap();
    let mut connector: Value =
        serde_json::from_str(&fs_err::read_to_string(repo_root().join(CONNECTOR)).unwrap())
            .unwrap();
    for key in ["account.pin", "zorp.pass", "api.key"] {
        connector["configuration"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": key, "name": key, "type": "PASSWORD"}));
    }
    let connector_file = write_file(temp.path(), "pinned", &connector);
    let mut state = instance("http://127.0.0.1:9", 7200);
    state["account.pin"] = json!("FAKE-pin-4711");
    state["zorp.pass"] = json!("FAKE-zorp-0815");
    state["api.key"] = json!("FAKE-api-key-1234");
    for key in [None, Some(K1)] {
        let store = format!(
            "sqlite:{}",
            temp.path().join(format!("{}.db", key.is_some())).display()
        );
        let file = write_file(temp.path(), "pin", &state);
        let with_key = |args: &[&str]| {
            let mut command = engine();
            command.args(args);
            if let Some(key) = key {
                command.env("ENGINE_SECRET_KEY", key);
            }
            let output = command.output().unwrap();
            Outcome {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        };
        with_key(&[
            "instances",
            "import",
            file.to_str().unwrap(),
            "--connector",
            connector_file.to_str().unwrap(),
            "--store",
            &store,
        ])
        .assert_success();
        let shown = with_key(&["instances", "show", "pin", "--store", &store]);
        shown.assert_success().assert_hides(&[
            "FAKE-pin-4711",
            "FAKE-zorp-0815",
            "FAKE-api-key-1234",
            CLIENT_SECRET,
            OLD_TOKEN,
        ]);
        let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
        for key in ["account.pin", "zorp.pass", "api.key", "client.secret"] {
            assert_eq!(shown["state"][key], "****", "{key} ({shown})");
        }
        assert_eq!(shown["state"]["client.id"], "demo-client");
        assert_eq!(shown["state"]["base.url"], "http://127.0.0.1:9");
    }
}

/// Issue 19: `engine instances export` prints secrets in clear: it refuses a terminal (here the
/// pseudo-terminal `script` gives it) unless `--reveal`, and still prints to a pipe.
#[test]
fn export_refuses_a_terminal_without_reveal() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let file = write_file(temp.path(), "cust1", &instance("http://127.0.0.1:9", 7200));
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        &store,
    ])
    .assert_success();
    let on_terminal = |extra: &str| {
        let command = format!(
            "{} instances export cust1 --store {store} {extra}",
            env!("CARGO_BIN_EXE_engine")
        );
        let output = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, text) = on_terminal("");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("standard output is a terminal"), "{text}");
    assert!(text.contains("`--reveal`"), "{text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
    let (code, text) = on_terminal("--reveal");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(CLIENT_SECRET), "{text}");
    let piped = engine_output(&["instances", "export", "cust1", "--store", &store]);
    piped.assert_success();
    assert!(piped.stdout.contains(CLIENT_SECRET), "{}", piped.render());
}

/// Issue 19: a key given the wrong way round (`BASE64:ID`), or with an id too long to be one, is
/// refused without being repeated.
#[test]
fn a_key_given_the_wrong_way_round_is_not_echoed() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let base64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    for key in [
        format!("{base64}:k1"),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8:k1".to_owned(),
    ] {
        let output = engine()
            .args(["instances", "list", "--store", &store])
            .env("ENGINE_SECRET_KEY", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_ne!(output.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("wrong way round"), "{stderr}");
        assert!(!stderr.contains("AAECAwQFBgcICQoLDA0O"), "{stderr}");
    }
}

/// Issue 19: a SQLite store's files are owner-only (the database, its `-wal` and `-shm`, the
/// lock directory), a looser file is tightened with a note, and after `engine instances rekey`
/// no clear copy of a secret stays in the database or its log.
#[test]
fn sqlite_files_are_owner_only_and_rekey_leaves_no_clear_copy() {
    use std::os::unix::fs::PermissionsExt as _;
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let temp = tempfile::tempdir().unwrap();
    let database = temp.path().join("state.db");
    let store = format!("sqlite:{}", database.display());
    // Enough instances to fill pages that a rewrite moves cells within.
    let files: Vec<String> = (0..40)
        .map(|index| {
            let file = write_file(
                temp.path(),
                &format!("clear{index}"),
                &instance("http://127.0.0.1:9", 7200),
            );
            file.to_str().unwrap().to_owned()
        })
        .collect();
    let mut import = vec!["instances", "import", "--store", &store];
    import.extend(files.iter().map(String::as_str));
    engine_output(&import).assert_success();
    let mode = |path: &Path| fs_err::metadata(path).unwrap().permissions().mode() & 0o777;
    let files = ["state.db", "state.db-wal", "state.db-shm"].map(|name| temp.path().join(name));
    for file in files.iter().filter(|file| file.exists()) {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&temp.path().join("state.db.locks")), 0o700);

    fs_err::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listed = engine_output(&["instances", "list", "--store", &store]);
    listed.assert_success();
    assert!(
        listed.stderr.contains(&format!(
            "note: `{}` was readable by others (0644); it holds secrets, so it is now 0600",
            database.display()
        )),
        "{}",
        listed.render()
    );
    assert_eq!(mode(&database), 0o600);

    let rekeyed = engine()
        .args(["instances", "rekey", "--store", &store])
        .env("ENGINE_SECRET_KEY", K1)
        .output()
        .unwrap();
    assert!(rekeyed.status.success(), "{rekeyed:?}");
    for file in files.iter().filter(|file| file.exists()) {
        let bytes = fs_err::read(file).unwrap();
        for secret in [CLIENT_SECRET, OLD_TOKEN] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "`{secret}` is still in `{}` after the rekey",
                file.display()
            );
        }
    }
}

/// Issue 19: without `ENGINE_SECRET_KEY`, an instance stored encrypted is refused by every
/// command that would send its values (exit 1, naming the key), never sent as `enc:v1:...`:
/// `engine refresh` run three times leaves its status alone. A wrong key is exit 1 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_values_are_never_sent_without_the_key() {
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K1_WRONG: &str = "k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let file = write_file(temp.path(), "sealed", &instance(&server.uri(), 7200));
    let imported = engine()
        .args([
            "instances",
            "import",
            file.to_str().unwrap(),
            "--store",
            &store,
        ])
        .args(["--connector", CONNECTOR])
        .env("ENGINE_SECRET_KEY", K1)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");

    let run = [
        "run",
        CONNECTOR,
        "list-contacts",
        "--instance",
        "sealed",
        "--store",
        &store,
    ];
    let unkeyed = engine_output(&run);
    assert_eq!(unkeyed.code, 1, "{}", unkeyed.render());
    assert!(
        unkeyed
            .stderr
            .contains("is encrypted with key `k1`, and `ENGINE_SECRET_KEY` is not set"),
        "{}",
        unkeyed.render()
    );
    let wrong = engine()
        .args(run)
        .env("ENGINE_SECRET_KEY", K1_WRONG)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    for _ in 0..3 {
        let refreshed = engine_output(&["refresh", "--store", &store]);
        assert_eq!(refreshed.code, 1, "{}", refreshed.render());
        assert!(
            refreshed.stderr.contains("`ENGINE_SECRET_KEY` is not set"),
            "{}",
            refreshed.render()
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());
    let listed = engine_output(&["instances", "list", "--store", &store, "--format", "json"]);
    assert_eq!(listed.json()[0]["state"], "expired", "{}", listed.render());
}

/// Issue 19: an id too long for the files a store keeps per instance (its lock file) is refused
/// at import, in every store, instead of importing an instance that can never run.
#[test]
fn an_over_long_id_is_refused_at_import() {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(temp.path(), "long", &instance("http://127.0.0.1:9", 7200));
    let id = "a".repeat(300);
    for store in [
        crate::support::sqlite_store(temp.path()),
        format!("file:{}", temp.path().join("files").display()),
    ] {
        fs_err::create_dir_all(temp.path().join("files")).unwrap();
        let imported = engine_output(&[
            "instances",
            "import",
            file.to_str().unwrap(),
            "--id",
            &id,
            "--store",
            &store,
        ]);
        assert_eq!(imported.code, 3, "{}", imported.render());
        assert!(
            imported.stderr.contains("use 1 to 200 ASCII letters"),
            "{}",
            imported.render()
        );
        let listed = engine_output(&["instances", "list", "--store", &store]);
        assert_eq!(listed.stdout.lines().count(), 1, "{}", listed.render());
    }
}

/// Issue 19: a vendor that does not answer within `--timeout` during `engine refresh` is a
/// transient failure (exit 5), like a network error, and counts no rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_of_a_silent_vendor_exits_5() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let store = sqlite_with(temp.path(), &server.uri(), &[("slow", 7200)]);

    let outcome = engine_output(&["refresh", "--store", &store, "--timeout", "1"]);
    assert_eq!(outcome.code, 5, "{}", outcome.render());
    assert!(
        outcome.stderr.ends_with("1 failed transiently\n"),
        "{}",
        outcome.render()
    );
    // Retrying after a backoff, no rejection counted; until then it is not due.
    let exported = engine_output(&["instances", "export", "slow", "--store", &store]);
    let state: Value = serde_json::from_str(&exported.stdout).unwrap();
    let schedule = &state["engine.schedule"];
    assert_eq!(
        (
            &schedule["status"],
            &schedule["failures"],
            &schedule["rejections"]
        ),
        (&json!("retrying"), &json!(1), &json!(0)),
        "{state}"
    );
    assert_eq!(
        schedule["cooldown_until"], schedule["next_refresh_at"],
        "{state}"
    );
    let again = engine_output(&["refresh", "--store", &store]);
    assert_eq!((again.code, again.stderr.as_str()), (0, "nothing due\n"));
}

/// Issue 19 and 21: `engine instances set ID KEY=VALUE... KEY...` sets values; a secret is
/// refused on the command line (and not repeated) and read from standard input instead; a
/// changed secret clears `needs-reauth` and the rejection count.
#[test]
fn instances_set_reads_secrets_from_stdin_and_clears_needs_reauth() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let mut stuck = instance("http://127.0.0.1:9", 7200);
    stuck["engine.status"] = json!("needs-reauth");
    stuck["engine.failures"] = json!(3);
    let file = write_file(temp.path(), "stuck", &stuck);
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--connector",
        CONNECTOR,
        "--store",
        &store,
    ])
    .assert_success();

    let on_argv = engine_output(&[
        "instances",
        "set",
        "stuck",
        "client.secret=FAKE-typed-secret-77",
        "--store",
        &store,
    ]);
    assert_eq!(on_argv.code, 2, "{}", on_argv.render());
    on_argv.assert_hides(&["FAKE-typed-secret-77"]);
    assert!(
        on_argv.stderr.contains(
            "`client.secret` is a secret: its value is never taken from the command line"
        ),
        "{}",
        on_argv.render()
    );

    let output = engine()
        .args([
            "instances",
            "set",
            "stuck",
            "client.secret",
            "client.id=other-client",
            "--store",
            &store,
        ])
        .write_stdin("FAKE-typed-secret-77\n")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stderr, "set `client.secret`, `client.id` on `stuck`\n");
    let exported = engine_output(&["instances", "export", "stuck", "--store", &store]);
    let state: Value = serde_json::from_str(&exported.stdout).unwrap();
    assert_eq!(state["client.secret"], "FAKE-typed-secret-77");
    assert_eq!(state["client.id"], "other-client");
    assert_eq!(
        (
            &state["engine.schedule"]["status"],
            &state["engine.schedule"]["failures"]
        ),
        (&json!("fresh"), &json!(0)),
        "{state}"
    );
}

/// Issue 19: a FIFO or a device given as an instance file to import, or as a test file, is
/// refused at once (regular files only, read with a bound): never a hang, never a read without
/// end.
#[test]
fn fifos_and_devices_are_refused_not_read() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let fifo = temp.path().join("fifo.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    for file in [fifo, "/dev/zero"] {
        let imported =
            engine_output(&["instances", "import", file, "--id", "x", "--store", &store]);
        assert_eq!(imported.code, 3, "{}", imported.render());
        assert!(
            imported.stderr.contains("not a regular file"),
            "{}",
            imported.render()
        );
    }
    let tested = engine_output(&["test", fifo]);
    assert_ne!(tested.code, 0, "{}", tested.render());
    assert!(
        tested.stderr.contains("not a regular file")
            || tested.stdout.contains("not a regular file"),
        "{}",
        tested.render()
    );
}

/// Issue 19: `engine refresh` without `--ahead` reports an instance it cannot read (here: a
/// wrong key) as failed, with why, and exits 1, instead of leaving it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reports_an_instance_it_cannot_read() {
    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K1_WRONG: &str = "k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let file = write_file(temp.path(), "sealed", &instance(&server.uri(), 7200));
    let imported = engine()
        .args([
            "instances",
            "import",
            file.to_str().unwrap(),
            "--store",
            &store,
        ])
        .args(["--connector", CONNECTOR])
        .env("ENGINE_SECRET_KEY", K1)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{imported:?}");
    let refreshed = engine()
        .args(["refresh", "--store", &store])
        .env("ENGINE_SECRET_KEY", K1_WRONG)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refreshed.stderr);
    assert_eq!(refreshed.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed: sealed: "), "{stderr}");
    assert!(
        stderr.contains("does not decrypt with key `k1`"),
        "{stderr}"
    );
    assert!(stderr.ends_with("1 failed\n"), "{stderr}");
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A PostgreSQL database that does not exist is said once, in the server's words, without the
/// server's source line (`... at line 948`, twice, before).
#[test]
fn a_missing_postgres_database_is_said_once() {
    let Ok(url) = std::env::var("ENGINE_TEST_POSTGRES") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipping a_missing_postgres_database_is_said_once: ENGINE_TEST_POSTGRES is not set"
        );
        return;
    };
    let (server, _) = url
        .rsplit_once('/')
        .expect("a database URL names its database");
    let store = format!("{server}/engine_it_no_such_database");
    let listed = engine_output(&["instances", "list", "--store", &store]);
    assert_eq!(listed.code, 1, "{}", listed.render());
    let said = "database \"engine_it_no_such_database\" does not exist";
    assert_eq!(
        listed.stderr.matches(said).count(),
        1,
        "{}",
        listed.render()
    );
    assert!(!listed.stderr.contains("at line"), "{}", listed.render());
}

/// Issue 19: `engine refresh` reports every instance it leaves alone because it was never
/// provisioned (a custom connector's instance without `authentication.time`, an OAuth2 one
/// without a token), with and without `--ahead`, each with what to do, and exits 4 listing them;
/// an instance whose token never expires (an API key) has nothing to refresh and is not listed;
/// one without a recorded connector cannot be considered: failed, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reports_never_provisioned_instances() {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let store = sqlite_with(temp.path(), &server.uri(), &[("due", 7200)]);
    let import = |id: &str, connector: Option<&str>, value: Value| {
        let file = write_file(temp.path(), id, &value);
        let mut args = vec!["instances", "import", file.to_str().unwrap()];
        args.extend(["--store", &store]);
        if let Some(connector) = connector {
            args.extend(["--connector", connector]);
        }
        engine_output(&args).assert_success();
    };
    let credentials = json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
    });
    import("new-custom", Some("connectors/demo.json"), credentials);
    let oauth2 = json!({
        "base.url": server.uri(),
        "oauth.token.url": format!("{}/oauth/token", server.uri()),
        "oauth.api.key": "FAKE-key",
        "oauth.api.secret": "FAKE-secret",
    });
    let oauth2_connector = "tests/fixtures/run/wire-oauth2/connector.json";
    import("new-oauth2", Some(oauth2_connector), oauth2);
    let api_key = json!({"api.key": "FAKE-api-key"});
    import("weather", Some("connectors/openweather.json"), api_key);

    let filter = |text: &str| sorted_lines(text).replace(&store, "[STORE]");
    let outcome = engine_output(&["refresh", "--store", &store]);
    assert_eq!(outcome.code, 4, "{}", outcome.render());
    insta::assert_snapshot!(filter(&outcome.stderr), @r"
    1 refreshed, 2 not provisioned
    not provisioned: new-custom: never provisioned: the next run provisions it, or now: `engine run connectors/demo.json provisionAuthValidation --instance new-custom --store [STORE]`
    not provisioned: new-oauth2: no token yet: the next run obtains one, or sign in: `engine authorize tests/fixtures/run/wire-oauth2/connector.json --instance new-oauth2 --store [STORE]`
    provision: new-custom, new-oauth2 (see each one's line)
    refreshed: due: ON REFRESH, 200, [N] ms
    ");
    // With `--ahead` the store's expiry index finds the due ones; those without an expiry are
    // listed all the same.
    let ahead = engine_output(&["refresh", "--store", &store, "--ahead", "1m"]);
    assert_eq!(ahead.code, 4, "{}", ahead.render());
    assert!(
        ahead.stderr.ends_with(
            "2 not provisioned\nprovision: new-custom, new-oauth2 (see each one's line)\n"
        ),
        "{}",
        ahead.render()
    );
    // Nothing was provisioned or sent for them: the one token request is the due instance's.
    assert_eq!(received_at(&server, "/oauth/token").await.len(), 1);

    import("orphan", None, json!({"client.id": "demo-client"}));
    let orphan = engine_output(&["refresh", "--store", &store, "--ahead", "1m"]);
    assert_eq!(orphan.code, 1, "{}", orphan.render());
    assert!(
        orphan
            .stderr
            .contains("failed: orphan: no connector recorded: import it with `--connector FILE`\n"),
        "{}",
        orphan.render()
    );
}

/// `engine ARGS...` with `dir` read-only: as root (whom permissions do not stop) in a mount
/// namespace of its own where `dir` is bind-mounted read-only, otherwise with `dir` and its
/// files made read-only. `None` (after one line) where neither can be done.
fn engine_on_read_only(dir: &Path, args: &[&str]) -> Option<Outcome> {
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let root = fs_err::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0);
    let output = if root {
        let mount = r#"mount --bind "$0" "$0" && mount -o remount,bind,ro "$0""#;
        let mountable = std::process::Command::new("unshare")
            .args(["-m", "sh", "-c", mount])
            .arg(dir)
            .output()
            .is_ok_and(|output| output.status.success());
        if !mountable {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the read-only store test: root cannot mount a read-only directory here"
            );
            return None;
        }
        std::process::Command::new("unshare")
            .args(["-m", "sh", "-c", &format!(r#"{mount} && exec "$@""#)])
            .arg(dir)
            .arg(env!("CARGO_BIN_EXE_engine"))
            .args(args)
            .current_dir(repo_root())
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    } else {
        let set = |mode: u32| {
            for entry in fs_err::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let file_mode = mode & 0o666;
                    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(file_mode))
                        .unwrap();
                }
            }
            fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(0o500);
        let output = engine().args(args).output().unwrap();
        set(0o700);
        output
    };
    Some(Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Issue 19: a store on a read-only mount (its directory and files cannot be written) is listed
/// and shown; a write fails naming the file and what to do, never a panic. A file store and a
/// SQLite one (closed cleanly: no `-wal` file beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_a_read_only_mount_is_listed() {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let sources = tempfile::tempdir().unwrap();
    let file = write_file(sources.path(), "ro", &instance(&server.uri(), 7200));
    let dir = temp.path().join("store");
    fs_err::create_dir(&dir).unwrap();
    for store in [
        format!("file:{}", dir.join("files").display()),
        format!("sqlite:{}", dir.join("state.db").display()),
    ] {
        if store.starts_with("file:") {
            fs_err::create_dir(dir.join("files")).unwrap();
        }
        let import = ["instances", "import", file.to_str().unwrap()];
        engine_output(&[&import[..], &["--connector", CONNECTOR, "--store", &store]].concat())
            .assert_success();
        // One refresh, so that the listing has a last refresh to show.
        engine_output(&["refresh", "--store", &store]).assert_success();
    }
    for (store, mount) in [
        (
            format!("file:{}", dir.join("files").display()),
            dir.join("files"),
        ),
        (
            format!("sqlite:{}", dir.join("state.db").display()),
            dir.clone(),
        ),
    ] {
        let Some(listed) = engine_on_read_only(&mount, &["instances", "list", "--store", &store])
        else {
            return;
        };
        listed.assert_success();
        let lines: Vec<&str> = listed.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{store}: {}", listed.render());
        assert!(lines[1].starts_with("ro  "), "{}", listed.render());
        assert!(lines[1].contains(" fresh "), "{}", listed.render());
        assert!(lines[1].contains(" ok 20"), "{}", listed.render());

        let shown =
            engine_on_read_only(&mount, &["instances", "show", "ro", "--store", &store]).unwrap();
        shown
            .assert_success()
            .assert_hides(&[CLIENT_SECRET, NEW_TOKEN]);

        let set = engine_on_read_only(
            &mount,
            &["instances", "set", "ro", "client.id=x", "--store", &store],
        )
        .unwrap();
        assert_eq!(set.code, 1, "{store}: {}", set.render());
        assert!(!set.stderr.contains("panicked"), "{}", set.render());
        assert!(
            set.stderr.contains(&mount.display().to_string()),
            "{store}: names the path: {}",
            set.render()
        );
        assert!(
            set.stderr
                .contains("mount it read-write or give this user write access"),
            "{store}: {}",
            set.render()
        );
    }
}

/// Issue 19: a PostgreSQL server that refuses more connections (`too many connections`: here a
/// role limited to 3, all of them held by this test) makes `engine refresh` fail with the
/// server's words, this process's connection budget and how to set it (the store URL's
/// `max_connections` and `max_lock_connections`), exit 1, and nothing changed; with two
/// connections free again and a budget that fits them (1 + 1), the same refresh succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_postgres_clients_are_said_with_the_budget() {
    use sqlx::Connection as _;
    let Some(schema) = Schema::create("budget") else {
        return;
    };
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    // Imported by the test's user: the role has made no connection yet, so none of its
    // connections can still be closing when the test takes all three.
    for id in ["b1", "b2", "b3"] {
        let file = write_file(temp.path(), id, &instance(&server.uri(), 7200));
        let import = ["instances", "import", file.to_str().unwrap(), "--store"];
        engine_output(
            &[
                &import[..],
                &[&schema.store_url(), "--connector", CONNECTOR],
            ]
            .concat(),
        )
        .assert_success();
    }
    let role = format!("engine_it_budget_{}", std::process::id());
    psql(
        &schema.url,
        &format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN CONNECTION LIMIT 3; \
             GRANT ALL ON SCHEMA {0} TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA {0} TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA {0} TO {role}",
            schema.name
        ),
    );
    let (protocol, rest) = schema.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let as_role = format!("{protocol}://{role}@{host}");
    let store = format!("{as_role}?options=-c%20search_path%3D{}", schema.name);

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(sqlx::PgConnection::connect(&as_role).await.unwrap());
    }
    let refused = engine_output(&["refresh", "--store", &store, "--jobs", "4"]);
    assert_eq!(refused.code, 1, "{}", refused.render());
    for words in [
        &format!("the server says `too many connections for role \"{role}\"`")[..],
        "This process opens up to 16 connections for reads and writes and 64 for locks",
        "lower `max_connections` and `max_lock_connections` in the store URL",
    ] {
        assert!(
            refused.stderr.contains(words),
            "{words}: {}",
            refused.render()
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());

    for connection in held.drain(1..) {
        connection.close().await.unwrap();
    }
    let budget = format!("{store}&max_connections=1&max_lock_connections=1");
    let refreshed = engine_output(&["refresh", "--store", &budget, "--jobs", "4"]);
    assert_eq!(refreshed.code, 0, "{}", refreshed.render());
    assert!(
        refreshed.stderr.ends_with("3 refreshed\n"),
        "{}",
        refreshed.render()
    );
    for id in ["b1", "b2", "b3"] {
        let shown = engine_output(&["instances", "export", id, "--store", &schema.store_url()]);
        let state: Value = serde_json::from_str(&shown.assert_success().stdout).unwrap();
        assert_eq!(state["access.token"], NEW_TOKEN);
        assert_eq!(state["refresh.token"], "FAKE-new-refresh-4444");
    }
    for connection in held {
        connection.close().await.unwrap();
    }
    psql(
        &schema.url,
        &format!("DROP OWNED BY {role}; DROP ROLE {role}"),
    );
}

/// A file store written before schedules: its instances list with no known expiry until the
/// first `engine refresh`, which sends nothing for a fresh token but has the runtime write its
/// schedule (docs/stores.md, "The refresh schedule").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_writes_the_schedule_of_instances_written_before_schedules() {
    let server = vendor(Duration::ZERO).await;
    let temp = tempfile::tempdir().unwrap();
    let mut legacy = instance(&server.uri(), 60);
    legacy["engine.connector"] = json!(repo_root().join(CONNECTOR).to_str().unwrap());
    write_file(temp.path(), "legacy", &legacy);
    let store = format!("file:{}", temp.path().display());
    let listed = |store: &str| {
        let listed = engine_output(&["instances", "list", "--store", store, "--format", "json"]);
        listed.assert_success();
        let items: Value = serde_json::from_str(&listed.stdout).unwrap();
        items[0]["state"].clone()
    };
    assert_eq!(listed(&store), "unknown");

    let refreshed = engine_output(&["refresh", "--store", &store]);
    assert_eq!(refreshed.code, 0, "{}", refreshed.render());
    assert!(received_at(&server, "/oauth/token").await.is_empty());
    let written: Value =
        serde_json::from_str(&fs_err::read_to_string(temp.path().join("legacy.json")).unwrap())
            .unwrap();
    let obtained: u64 = legacy["authentication.time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        written["engine.schedule"],
        json!({
            "next_refresh_at": obtained + 2_880_000 - engine_runtime::jitter_ms("legacy", 3_600_000),
            "expires_at": obtained + 3_600_000,
            "status": "fresh", "failures": 0, "rejections": 0, "cooldown_until": null,
        })
    );
    assert_eq!(written["access.token"], OLD_TOKEN);
    assert_eq!(listed(&store), "fresh");
}
