//! What happens to an instance around its tokens, in every store (file, SQLite, PostgreSQL):
//! `engine instances delete` runs the connector's `onDelete`, the last refresh's outcome in
//! `engine instances list`, `needs-reauth` cleared by provisioning or `engine authorize`, one
//! history entry per lifecycle step (`--config` files too, in a sidecar), and encryption at rest
//! decided by the connector's types.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::instances::{Schema, engine_output, write_file};
use crate::support::engine;
use crate::support::run::{Outcome, received_at, time_ago, token_response};

const CONNECTOR: &str = "tests/fixtures/run/stored/connector.json";
const CLIENT_SECRET: &str = "FAKE-client-secret-7c1d";
const OLD_TOKEN: &str = "FAKE-old-token-5555";
const NEW_TOKEN: &str = "FAKE-new-token-6666";
const OLD_REFRESH: &str = "FAKE-old-refresh-7777";
const PIN: &str = "FAKE-pin-8888";

fn instance(base_url: &str, authenticated_seconds_ago: u64) -> Value {
    json!({
        "base.url": base_url,
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "account.pin": PIN,
        "access.token": OLD_TOKEN,
        "refresh.token": OLD_REFRESH,
        "authentication.time": time_ago(authenticated_seconds_ago),
        "expires_in": "3600",
    })
}

/// A vendor: tokens, `/me` for `ON PROVISION`, `/contacts`, and `/oauth/revoke` (`onDelete`)
/// answering `revoke`.
async fn vendor(revoke: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(
            NEW_TOKEN,
            Some("FAKE-new-refresh-9999"),
            json!(3600),
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "a1"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/revoke"))
        .respond_with(
            ResponseTemplate::new(revoke)
                .set_body_json(json!({"error": "revocation refused", "token": OLD_REFRESH})),
        )
        .mount(&server)
        .await;
    server
}

/// Imports `value` as `id` with the fixture connector recorded.
#[track_caller]
fn import(temp: &Path, store: &str, id: &str, value: &Value) {
    let file = write_file(temp, id, value);
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

/// `engine instances delete` calls `onDelete` (authenticated with the instance's token) and
/// then removes the instance; when `onDelete` fails the instance stays, the message says so and
/// offers `--force`, which removes it anyway.
async fn delete_runs_on_delete(store: &str, temp: &Path) {
    let server = vendor(200).await;
    import(temp, store, "leaving", &instance(&server.uri(), 60));
    let deleted = engine_output(&["instances", "delete", "leaving", "--store", store]);
    deleted
        .assert_success()
        .assert_hides(&[OLD_TOKEN, OLD_REFRESH, CLIENT_SECRET]);
    assert_eq!(
        deleted.stderr,
        "ON DELETE: 200\ndeleted `leaving`\n",
        "{}",
        deleted.render()
    );
    let calls = received_at(&server, "/oauth/revoke").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].headers.get("authorization").unwrap(),
        &format!("Bearer {OLD_TOKEN}")
    );
    assert_eq!(
        String::from_utf8_lossy(&calls[0].body),
        format!("token={OLD_REFRESH}")
    );
    let gone = engine_output(&["instances", "show", "leaving", "--store", store]);
    assert_eq!(gone.code, 3, "{}", gone.render());

    let refusing = vendor(403).await;
    import(temp, store, "staying", &instance(&refusing.uri(), 60));
    let kept = engine_output(&["instances", "delete", "staying", "--store", store]);
    assert_eq!(kept.code, 1, "{}", kept.render());
    kept.assert_hides(&[OLD_TOKEN, OLD_REFRESH, CLIENT_SECRET])
        .assert_stderr_has(&[
            "error: `staying` was not deleted: its `onDelete` call failed",
            "hint: fix the cause and delete again, or delete it anyway with `engine instances delete staying --force`",
            "403",
        ]);
    engine_output(&["instances", "show", "staying", "--store", store]).assert_success();

    let forced = engine_output(&[
        "instances",
        "delete",
        "staying",
        "--force",
        "--store",
        store,
    ]);
    forced
        .assert_success()
        .assert_hides(&[OLD_TOKEN, OLD_REFRESH])
        .assert_stderr_has(&["is deleted anyway (`--force`)", "deleted `staying`"]);
    assert_eq!(received_at(&refusing, "/oauth/revoke").await.len(), 2);
    let gone = engine_output(&["instances", "show", "staying", "--store", store]);
    assert_eq!(gone.code, 3, "{}", gone.render());

    // A connector recorded by name only cannot be loaded: the instance stays, unless `--force`.
    let file = write_file(temp, "named", &instance(&server.uri(), 60));
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--connector",
        "stored",
        "--store",
        store,
    ])
    .assert_success();
    let unknown = engine_output(&["instances", "delete", "named", "--store", store]);
    assert_eq!(unknown.code, 3, "{}", unknown.render());
    unknown.assert_stderr_has(&[
        "error: `named` was not deleted: its connector `stored` cannot be loaded to run its `onDelete` resource",
        "hint: name the connector file with `--connector FILE`, or delete the instance without its `onDelete` call with `engine instances delete named --force`",
    ]);
    let forced = engine_output(&["instances", "delete", "named", "--force", "--store", store]);
    forced.assert_success().assert_stderr_has(&[
        "warning: connector `stored` cannot be loaded: `named` is deleted without its `onDelete` call (`--force`)",
    ]);
    assert_eq!(received_at(&server, "/oauth/revoke").await.len(), 1);

    // An instance without a recorded connector has no `onDelete`: it is simply removed.
    let file = write_file(temp, "plain", &json!({"client.id": "x"}));
    engine_output(&[
        "instances",
        "import",
        file.to_str().unwrap(),
        "--store",
        store,
    ])
    .assert_success();
    let plain = engine_output(&["instances", "delete", "plain", "--store", store]);
    assert_eq!(plain.stderr, "deleted `plain`\n", "{}", plain.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_on_delete_in_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("instances");
    fs_err::create_dir(&dir).unwrap();
    delete_runs_on_delete(&format!("file:{}", dir.display()), temp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_on_delete_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    delete_runs_on_delete(&store, temp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_on_delete_in_postgres() {
    let Some(schema) = Schema::create("delete") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    delete_runs_on_delete(&schema.store_url(), temp.path()).await;
}

/// `engine instances list` shows the last refresh's outcome and time: `ok` after a refresh,
/// `rejected` after the vendor refused one, `-` before any; in JSON as `last_refresh`. A
/// `needs-reauth` instance is cleared by a successful `PROVISION AUTH VALIDATION` run.
async fn list_shows_last_refresh_and_provisioning_clears_needs_reauth(store: &str, temp: &Path) {
    let server = vendor(200).await;
    let rejecting = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": format!("refresh token {OLD_REFRESH} was revoked"),
        })))
        .mount(&rejecting)
        .await;
    import(temp, store, "good", &instance(&server.uri(), 7200));
    import(temp, store, "revoked", &instance(&rejecting.uri(), 7200));
    import(temp, store, "untouched", &instance(&server.uri(), 60));

    let refreshed = engine_output(&["refresh", "--store", store, "--max-failures", "1"]);
    assert_eq!(refreshed.code, 4, "{}", refreshed.render());
    let listed = engine_output(&["instances", "list", "--store", store]);
    let cells: Vec<Vec<String>> = listed
        .stdout
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|cell| !cell.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect();
    assert_eq!(
        cells[0],
        ["ID", "CONNECTOR", "STATE", "EXPIRES", "LAST REFRESH"],
        "{}",
        listed.render()
    );
    let last = |row: usize| {
        let cell = cells[row][4].clone();
        let (outcome, at) = cell.split_once(' ').unwrap_or((&cell, ""));
        assert!(
            at.is_empty() || (at.len() == 20 && at.ends_with('Z')),
            "{cell}"
        );
        outcome.to_owned()
    };
    assert_eq!(
        (last(1), last(2), last(3)),
        ("ok".to_owned(), "rejected".to_owned(), "-".to_owned()),
        "{}",
        listed.render()
    );
    assert_eq!(cells[2][2], "needs-reauth");
    let json = engine_output(&["instances", "list", "--store", store, "--format", "json"]);
    let items = json.json();
    assert_eq!(items[0]["last_refresh"]["outcome"], "ok");
    assert!(
        items[0]["last_refresh"]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(items[1]["last_refresh"]["outcome"], "rejected");
    assert_eq!(items[2]["last_refresh"], Value::Null);

    // The vendor's error body is in the history, masked.
    let history = engine_output(&["history", "revoked", "--store", store, "--format", "json"]);
    history.assert_hides(&[OLD_REFRESH, CLIENT_SECRET]);
    let entries = history.json();
    assert!(
        entries[0]["response"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{entries}"
    );

    // Re-provisioned against a vendor that accepts it: `needs-reauth` is gone.
    let patched = engine_output(&["instances", "export", "revoked", "--store", store]).json();
    assert_eq!(patched["engine.schedule"]["status"], "needs-reauth");
    let provisioned = engine_output(&[
        "run",
        CONNECTOR,
        "provisionAuthValidation",
        "--instance",
        "revoked",
        "--store",
        store,
    ]);
    // The rejecting vendor still rejects: the mark stays.
    assert_eq!(provisioned.code, 4, "{}", provisioned.render());
    assert_eq!(
        engine_output(&["instances", "export", "revoked", "--store", store]).json()["engine.schedule"]
            ["status"],
        "needs-reauth"
    );
    // A vendor that accepts: provision against it.
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(token_response(NEW_TOKEN, None, json!(3600)))
        .with_priority(1)
        .mount(&rejecting)
        .await;
    Mock::given(method("GET"))
        .and(path("/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "a2"}})))
        .mount(&rejecting)
        .await;
    engine_output(&[
        "run",
        CONNECTOR,
        "provisionAuthValidation",
        "--instance",
        "revoked",
        "--store",
        store,
    ])
    .assert_success();
    let cleared = engine_output(&["instances", "export", "revoked", "--store", store]).json();
    assert_eq!(
        (
            &cleared["engine.schedule"]["status"],
            &cleared["engine.schedule"]["failures"]
        ),
        (&json!("fresh"), &json!(0)),
        "{cleared}"
    );
    // The provisioning is in the history, one entry per step, triggered by hand.
    let entries =
        engine_output(&["history", "revoked", "--store", store, "--format", "json"]).json();
    let steps: Vec<(&str, &str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["trigger"].as_str().unwrap(),
                entry["resource"].as_str().unwrap(),
                entry["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("schedule", "ON REFRESH", "rejected"),
            ("manual", "PROVISION AUTH VALIDATION", "rejected"),
            ("manual", "PROVISION AUTH VALIDATION", "ok"),
            ("manual", "ON PROVISION", "ok"),
        ]
    );
    let listed = engine_output(&["instances", "list", "--store", store, "--format", "json"]).json();
    assert_eq!(listed[1]["state"], "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_last_refresh_in_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("instances");
    fs_err::create_dir(&dir).unwrap();
    list_shows_last_refresh_and_provisioning_clears_needs_reauth(
        &format!("file:{}", dir.display()),
        temp.path(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_last_refresh_in_sqlite() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    list_shows_last_refresh_and_provisioning_clears_needs_reauth(&store, temp.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_last_refresh_in_postgres() {
    let Some(schema) = Schema::create("last") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    list_shows_last_refresh_and_provisioning_clears_needs_reauth(&schema.store_url(), temp.path())
        .await;
}

/// A `--config` run keeps a history too, in the sidecar `.<file>.history.jsonl` next to the
/// instance file, read by `engine history --config FILE`: a token the vendor rejects with 401 is
/// refreshed (one entry, trigger `401`, fingerprints of both tokens) and the call retried (one
/// entry of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_runs_keep_a_sidecar_history_with_the_401_retry() {
    let server = vendor(200).await;
    Mock::given(method("GET"))
        .and(path("/contacts"))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(temp.path(), "instance", &instance(&server.uri(), 60));
    let run = engine_output(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--config",
        file.to_str().unwrap(),
    ]);
    run.assert_success();
    let sidecar = temp.path().join(".instance.json.history.jsonl");
    assert_eq!(fs_err::read_to_string(&sidecar).unwrap().lines().count(), 2);
    let history = engine_output(&[
        "history",
        "--config",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    history
        .assert_success()
        .assert_hides(&[OLD_TOKEN, NEW_TOKEN, OLD_REFRESH, CLIENT_SECRET]);
    let entries = history.json();
    let refresh = &entries[0];
    assert_eq!(
        (
            &refresh["trigger"],
            &refresh["resource"],
            &refresh["status"],
            &refresh["outcome"],
            &refresh["retry"],
        ),
        (
            &json!("401"),
            &json!("ON REFRESH"),
            &json!(200),
            &json!("ok"),
            &json!(false)
        )
    );
    assert_eq!(refresh["old_token"], engine_runtime::fingerprint(OLD_TOKEN));
    assert_eq!(refresh["new_token"], engine_runtime::fingerprint(NEW_TOKEN));
    let retry = &entries[1];
    assert_eq!(
        (
            &retry["trigger"],
            &retry["resource"],
            &retry["status"],
            &retry["retry"]
        ),
        (
            &json!("401"),
            &json!("list-contacts"),
            &json!(200),
            &json!(true)
        )
    );
    assert_eq!(retry["new_token"], engine_runtime::fingerprint(NEW_TOKEN));
    let table = engine_output(&["history", "--config", file.to_str().unwrap()]);
    assert!(
        table.stdout.contains("list-contacts (retry)"),
        "{}",
        table.render()
    );
    // A dry run sends nothing and records nothing.
    engine_output(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--config",
        file.to_str().unwrap(),
        "--dry-run",
    ])
    .assert_success();
    assert_eq!(fs_err::read_to_string(&sidecar).unwrap().lines().count(), 2);
}

/// With the connector known (`import --connector FILE`, `engine run`), the values of its
/// `PASSWORD` keys are encrypted whatever their names (`account.pin`), and stay encrypted when a
/// run writes the instance; with only a connector name, the name rule decides (`account.pin` is
/// stored as it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_follows_the_connector_types() {
    const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let server = vendor(200).await;
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let keyed = |args: &[&str]| {
        let output = engine()
            .args(args)
            .env("ENGINE_SECRET_KEY", KEY)
            .output()
            .unwrap();
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    };
    let typed = write_file(temp.path(), "typed", &instance(&server.uri(), 7200));
    let named = write_file(temp.path(), "named", &instance(&server.uri(), 7200));
    keyed(&[
        "instances",
        "import",
        typed.to_str().unwrap(),
        "--connector",
        CONNECTOR,
        "--store",
        &store,
    ])
    .assert_success();
    keyed(&[
        "instances",
        "import",
        named.to_str().unwrap(),
        "--connector",
        "stored",
        "--store",
        &store,
    ])
    .assert_success();
    let at_rest = |id: &str| engine_output(&["instances", "export", id, "--store", &store]).json();
    let sealed = |value: &Value| value.as_str().unwrap().starts_with("enc:v1:k1:");
    let typed_state = at_rest("typed");
    assert!(sealed(&typed_state["account.pin"]), "{typed_state}");
    assert!(sealed(&typed_state["client.secret"]), "{typed_state}");
    let named_state = at_rest("named");
    assert_eq!(named_state["account.pin"], PIN);
    assert!(sealed(&named_state["client.secret"]), "{named_state}");

    // A run refreshes and writes the instance: its PIN stays encrypted, the new tokens are.
    keyed(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--instance",
        "typed",
        "--store",
        &store,
    ])
    .assert_success();
    let typed_state = at_rest("typed");
    for key in ["account.pin", "access.token", "refresh.token"] {
        assert!(sealed(&typed_state[key]), "{key}: {typed_state}");
    }
    // A run of the name-only instance with the connector known encrypts its PIN at last.
    keyed(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--instance",
        "named",
        "--store",
        &store,
    ])
    .assert_success();
    assert!(sealed(&at_rest("named")["account.pin"]));
}

/// `engine authorize --instance ID --store URL` signs in for a stored instance: the tokens go
/// into the store and a `needs-reauth` mark is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_a_stored_instance_clears_needs_reauth() {
    let vendor = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token_response(
            NEW_TOKEN,
            Some("FAKE-new-refresh-9999"),
            json!(3600),
        ))
        .mount(&vendor)
        .await;
    let port = crate::support::run::closed_port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let file = write_file(
        temp.path(),
        "signin",
        &json!({
            "base.url": vendor.uri(),
            "oauth.authorization.url": format!("{}/authorize", vendor.uri()),
            "oauth.token.url": format!("{}/token", vendor.uri()),
            "oauth.callback.url": callback,
            "oauth.api.key": "demo-client",
            "oauth.api.secret": CLIENT_SECRET,
            "engine.status": "needs-reauth",
            "engine.failures": 3,
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
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "authorize",
            "tests/fixtures/oauth2/authorization-code.json",
            "--no-browser",
            "--timeout",
            "30",
            "--instance",
            "signin",
            "--store",
            &store,
        ])
        .current_dir(crate::support::repo_root())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = url::Url::parse(line.trim()).unwrap();
    let state = url
        .query_pairs()
        .find(|(name, _)| name == "state")
        .map(|(_, value)| value.into_owned())
        .unwrap();
    let mut page = None;
    for _ in 0..50 {
        match crate::support::get(format!("{callback}?code=FAKE-code&state={state}")).await {
            Ok(response) => {
                page = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(page.unwrap().status(), 200);
    let outcome = Outcome::of(child);
    outcome
        .assert_success()
        .assert_hides(&[NEW_TOKEN, CLIENT_SECRET])
        .assert_stderr_has(&["signed in; tokens saved to instance `signin`"]);
    let stored = engine_output(&["instances", "export", "signin", "--store", &store]).json();
    assert_eq!(stored["oauth.user.token"], NEW_TOKEN);
    assert_eq!(
        (
            &stored["engine.schedule"]["status"],
            &stored["engine.schedule"]["failures"]
        ),
        (&json!("fresh"), &json!(0)),
        "{stored}"
    );
}

/// `engine refresh --timeout` takes durations (`30s`, `5m`) and plain seconds, and refuses
/// anything else as a usage error.
#[test]
fn refresh_timeout_takes_durations() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    for timeout in ["30s", "5m", "30", "2.5"] {
        let outcome = engine_output(&["refresh", "--store", &store, "--timeout", timeout]);
        assert_eq!(
            (outcome.code, outcome.stderr.as_str()),
            (0, "nothing due\n"),
            "{timeout}"
        );
    }
    let wrong = engine_output(&["refresh", "--store", &store, "--timeout", "soon"]);
    assert_eq!(wrong.code, 2, "{}", wrong.render());
    assert!(
        wrong
            .stderr
            .contains("expected a duration such as `30s` or `5m`, or a number of seconds"),
        "{}",
        wrong.render()
    );
}

/// A run's first provisioning is two lifecycle steps, two history entries (trigger `expiry`):
/// `PROVISION AUTH VALIDATION` obtains the token (no old one), then `ON PROVISION` runs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_is_one_entry_per_step() {
    let server = vendor(200).await;
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        "instance",
        &json!({
            "base.url": server.uri(),
            "client.id": "demo-client",
            "client.secret": CLIENT_SECRET,
        }),
    );
    engine_output(&[
        "run",
        CONNECTOR,
        "list-contacts",
        "--config",
        file.to_str().unwrap(),
    ])
    .assert_success();
    let entries = engine_output(&[
        "history",
        "--config",
        file.to_str().unwrap(),
        "--format",
        "json",
    ])
    .json();
    let steps: Vec<(&Value, &Value, &Value, &Value, &Value)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                &entry["trigger"],
                &entry["resource"],
                &entry["status"],
                &entry["old_token"],
                &entry["new_token"],
            )
        })
        .collect();
    let new = json!(engine_runtime::fingerprint(NEW_TOKEN));
    assert_eq!(
        steps,
        [
            (
                &json!("expiry"),
                &json!("PROVISION AUTH VALIDATION"),
                &json!(200),
                &Value::Null,
                &new
            ),
            (
                &json!("expiry"),
                &json!("ON PROVISION"),
                &json!(200),
                &new,
                &new
            ),
        ]
    );
}
