//! The instance file as `engine run` keeps it: atomic writes that keep untouched keys and their
//! order, owner-only permissions, links written through; a state that cannot be written fails loudly; a process killed while
//! refreshing never leaves a torn file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use engine_store::{FileStore, InstanceStore as _, State};
use serde_json::{Value, json};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::run::{Outcome, TestContext, run_snapshot, time_ago, token_response};

const CLIENT_SECRET: &str = "FAKE-client-secret-9f3a";
const NEW_TOKEN: &str = "FAKE-new-token-2222";

/// A vendor for the custom connector: tokens (after `delay`), `/me` and `/contacts`.
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
        .and(path("/me"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"account": {"id": "acc-42"}})),
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

/// An instance whose token expired an hour ago.
fn expired(server: &MockServer) -> Value {
    json!({
        "base.url": server.uri(),
        "client.id": "demo-client",
        "client.secret": CLIENT_SECRET,
        "access.token": "FAKE-old-token-1111",
        "refresh.token": "FAKE-old-refresh-3333",
        "authentication.time": time_ago(7200),
        "expires_in": "3600",
    })
}

/// The names in `dir`, sorted.
#[track_caller]
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(dir)
        .expect("listing the temp dir")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The keys of a JSON object, in order.
#[track_caller]
fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn writes_keep_untouched_keys_and_their_order_and_make_the_file_owner_only() {
    let server = vendor(Duration::ZERO).await;
    let context = TestContext::fixture("custom");
    // Keys in no particular order, some the connector does not declare, a nested value.
    let original = json!({
        "zeta.note": "kept as is",
        "client.secret": CLIENT_SECRET,
        "base.url": server.uri(),
        "nested": {"b": 1, "a": [true, null]},
        "client.id": "demo-client",
        "access.token": "FAKE-old-token-1111",
        "alpha": 42,
    });
    context.write_instance(&original);
    fs_err::set_permissions(
        context.instance_path(),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();

    let first = context.run("list-contacts").output();

    first.assert_success().assert_stderr_has(&[
        "note: `",
        "instance.json` was readable by others (0640); it holds secrets, so it is now 0600",
    ]);
    let after = context.instance();
    assert_eq!(
        keys(&after),
        [
            "zeta.note",
            "client.secret",
            "base.url",
            "nested",
            "client.id",
            "access.token",
            "alpha",
            "refresh.token",
            "expires_in",
            "authentication.time",
            "account.id",
            // The refresh schedule the runtime writes with the state (docs/stores.md).
            "engine.schedule",
            // The store's version of the instance, always last (docs/running.md).
            "engine.version",
        ]
    );
    for key in [
        "zeta.note",
        "client.secret",
        "base.url",
        "nested",
        "client.id",
        "alpha",
    ] {
        assert_eq!(after[key], original[key], "{key}");
    }
    assert_eq!(after["access.token"], NEW_TOKEN);
    let mode = fs_err::metadata(context.instance_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Only the file, its lock and its history (the refresh): no temp file left behind.
    assert_eq!(
        file_names(context.dir()),
        [
            ".instance.json.history.jsonl",
            ".instance.json.lock",
            "instance.json"
        ]
    );
    // Said once: the file is owner-only now.
    context.write_instance(&expired(&server));
    let second = context.run("list-contacts").output();
    second.assert_success();
    assert!(
        !second.stderr.contains("readable by others"),
        "{}",
        second.stderr
    );
}

/// Issue 9: a writer killed mid-write leaves a temp file holding tokens; the next run removes it.
#[tokio::test]
async fn the_next_run_removes_the_temp_files_of_a_killed_writer() {
    let server = vendor(Duration::ZERO).await;
    let context = TestContext::fixture("custom").with_instance(&expired(&server));
    let stale = context.dir().join(".instance.json.k9Xq2Z.tmp");
    fs_err::write(&stale, r#"{"access.token": "FAKE-old-token-1111"}"#).unwrap();

    context.run("list-contacts").output().assert_success();

    assert_eq!(
        file_names(context.dir()),
        [
            ".instance.json.history.jsonl",
            ".instance.json.lock",
            "instance.json"
        ]
    );
}

/// Issue 9: an instance file given as a symbolic link is written through: the link stays, the
/// target holds the new (rotated) refresh token, and nothing is left beside the link.
#[tokio::test]
async fn a_linked_instance_file_is_written_through_to_its_target() {
    let server = vendor(Duration::ZERO).await;
    let context = TestContext::fixture("custom");
    let secrets = tempfile::tempdir().unwrap();
    let target = secrets.path().join("acme.json");
    fs_err::write(&target, expired(&server).to_string()).unwrap();
    fs_err::remove_file(context.instance_path()).ok();
    std::os::unix::fs::symlink(&target, context.instance_path()).unwrap();

    context.run("list-contacts").output().assert_success();

    assert!(
        fs_err::symlink_metadata(context.instance_path())
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let written: Value = serde_json::from_str(&fs_err::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(written["access.token"], NEW_TOKEN);
    assert_eq!(written["refresh.token"], "FAKE-new-refresh-4444");
    // The lock and the history live beside the target; nothing is left beside the link.
    assert_eq!(
        file_names(secrets.path()),
        [".acme.json.history.jsonl", ".acme.json.lock", "acme.json"]
    );
    assert_eq!(
        file_names(context.dir())
            .into_iter()
            .filter(|name| name.contains("instance"))
            .collect::<Vec<_>>(),
        ["instance.json"]
    );
}

#[tokio::test]
async fn a_new_state_file_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.json");
    let store = FileStore::for_file(&file);
    let mut state = State::new();
    state.insert("oauth.user.token".to_owned(), json!("FAKE-token"));

    store.write("new", state.clone(), 0).await.unwrap();

    let mode = fs_err::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(*store.load("new").await.unwrap().state, state);
}

#[tokio::test]
async fn a_state_that_cannot_be_locked_fails_with_exit_1_before_sending() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&expired(&server));
    // The lock sidecar cannot be opened as a file.
    fs_err::create_dir(context.dir().join(".instance.json.lock")).unwrap();
    let before = context.instance_text();

    let outcome = context.run("list-contacts").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    error: failed to lock `[TEMP]/.instance.json.lock`
      caused by: failed to open file `[TEMP]/.instance.json.lock`: Is a directory (os error 21)
    hint: the instance file was left as it was; a token the vendor issued during this run may be lost: fix the file's permissions or free disk space and run again (re-authenticate if the vendor rotates refresh tokens)
    "#);
    assert_eq!(context.instance_text(), before);
}

#[tokio::test]
async fn a_token_that_cannot_be_written_fails_with_exit_1_and_keeps_the_old_file() {
    let server = vendor(Duration::ZERO).await;
    let context = TestContext::fixture("custom").with_instance(&expired(&server));
    let before = context.instance_text();

    // Files may not grow: the refreshed token is obtained, then its write fails (EFBIG).
    let outcome = context
        .run("list-contacts")
        .output_after("trap '' XFSZ; ulimit -f 0");
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    warning: the refresh history of `instance` was not recorded: failed to write `[TEMP]/.instance.json.history.jsonl`
    warning: an event of `instance` was not published: failed to write `[TEMP]/.instance.json.records/event-quiet/instance.json`
    error: failed to write `[TEMP]/instance.json`
      caused by: File too large (os error 27)
    hint: the instance file was left as it was; a token the vendor issued during this run may be lost: fix the file's permissions or free disk space and run again (re-authenticate if the vendor rotates refresh tokens)
    "#);
    assert_eq!(context.instance_text(), before);
    // The directory of the records the run tried to write (its event) stays.
    assert_eq!(
        file_names(context.dir()),
        [
            ".instance.json.lock",
            ".instance.json.records",
            "instance.json"
        ]
    );
    // The refresh was made; the API call was not.
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/oauth/token"]);
}

#[tokio::test]
async fn a_kill_during_a_refresh_never_leaves_a_torn_file() {
    let server = vendor(Duration::from_millis(50)).await;
    let fresh = || TestContext::fixture("custom").with_instance(&expired(&server));
    // How long a whole run takes here, refresh and write included.
    let calibration = fresh();
    let started = Instant::now();
    Outcome::of(calibration.run("list-contacts").spawn()).assert_success();
    let whole = started.elapsed();

    // Kill runs at moments spread over that time and a bit beyond: before, during and after the
    // token request and the write that follows it. Where each kill lands depends on the
    // machine's speed, so nothing below counts them: whatever the moment, the file is whole.
    let moments: Vec<Duration> = (0..=8)
        .map(|eighth| whole * eighth / 8)
        .chain([whole * 3])
        .collect();
    let contexts: Vec<TestContext> = moments.iter().map(|_| fresh()).collect();
    let originals: Vec<String> = contexts.iter().map(TestContext::instance_text).collect();
    for (moment, context) in moments.iter().zip(&contexts) {
        let mut child = context.run("list-contacts").spawn();
        std::thread::sleep(*moment);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    for (context, original) in contexts.iter().zip(&originals) {
        let text = context.instance_text();
        let state: Value = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("torn instance file: {error}\n{text}"));
        if text != *original {
            assert_eq!(state["access.token"], NEW_TOKEN, "{text}");
            assert_eq!(state["client.secret"], CLIENT_SECRET, "{text}");
        }
        let stray = file_names(context.dir())
            .into_iter()
            .filter(|name| {
                Path::new(name)
                    .extension()
                    .is_some_and(|extension| extension == "tmp")
            })
            .count();
        assert!(stray <= 1, "{:?}", file_names(context.dir()));
    }
    // A killed process holds no lock: the next runs go through.
    std::thread::scope(|scope| {
        for context in &contexts {
            scope.spawn(move || {
                context.run("list-contacts").output().assert_success();
                assert_eq!(context.instance()["access.token"], NEW_TOKEN);
            });
        }
    });
}

#[tokio::test]
async fn a_malformed_instance_file_is_exit_3_and_points_at_the_error() {
    let server = MockServer::start().await;
    let context = TestContext::fixture("custom");
    context.write_instance_text(
        "{\n  \"base.url\": \"http://127.0.0.1:1\",\n  \"client.id\": 'x'\n}\n",
    );

    let outcome = context.run("list-contacts").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: instance file `[TEMP]/instance.json` is not valid JSON at line 3, column 16: expected value
    "#);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn a_missing_instance_file_is_exit_3() {
    let context = TestContext::fixture("custom");
    let outcome = context.run("list-contacts").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: instance file `[TEMP]/instance.json` does not exist
    hint: create it with this connector's configuration, for example:
          {
            "base.url": "",
            "client.id": "",
            "client.secret": ""
          }
    "#);
}

/// Issue 9 and 11: a lock held by a stopped or hung process makes `engine run` wait a bounded
/// time (`--lock-timeout`), saying so in `-v`, then fail with an error naming the instance; no
/// token request is sent while it waits.
#[tokio::test]
async fn a_lock_held_elsewhere_is_waited_for_a_bounded_time() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&expired(&server));
    let store = FileStore::for_file(context.instance_path());
    let held = store.lock("instance", None).await.unwrap();

    let started = Instant::now();
    let outcome = context
        .run("list-contacts")
        .arg("--lock-timeout")
        .arg("1")
        .verbose()
        .output();
    assert!(started.elapsed() >= Duration::from_secs(1));
    run_snapshot!(context, outcome, @r#"
    exit code: 1
    ----- stdout -----

    ----- stderr -----
    lock: `[TEMP]/instance.json` is locked by another process; waiting up to 1 s
    error: timed out after 1s waiting for the lock on `[TEMP]/.instance.json.lock`
    hint: another process holds this lock (a refresh in progress, or a process that hung or was stopped): run again when it is done, or raise `--lock-timeout`; nothing was written
    "#);
    drop(held);
}

/// The records beside an instance file do not grow for ever: a run that publishes an event (here
/// a refresh the vendor rejects) removes the records that expired before it, their lock files and
/// the directories they leave empty, and keeps the others.
#[tokio::test]
async fn a_run_that_publishes_an_event_removes_expired_records() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    let context = TestContext::fixture("custom").with_instance(&expired(&server));
    let records = context.dir().join(".instance.json.records");
    // As an earlier run left them: records written as the store writes them, long expired
    // (epoch millisecond 1000), with their lock files; one that never expires.
    let seed = |namespace: &str, id: &str, expires_at_ms: Value| {
        let dir = records.join(namespace);
        fs_err::create_dir_all(&dir).unwrap();
        let record = json!({"version": 1, "expires_at_ms": expires_at_ms, "value": {}});
        fs_err::write(dir.join(format!("{id}.json")), record.to_string()).unwrap();
        fs_err::write(dir.join(format!(".{id}.json.lock")), "").unwrap();
    };
    seed("events", "evt_0000000000000000_00000000", json!(1000));
    seed("outbox", "evt_0000000000000000_00000000", json!(1000));
    seed("event-quiet", "instance", json!(1000));
    seed("sign-in", "old-flow", json!(1000));
    seed("kept", "forever", Value::Null);

    context.run("list-contacts").output().assert_code(4);

    assert_eq!(
        file_names(&records),
        ["event-quiet", "events", "kept", "outbox"],
        "a namespace left empty is removed"
    );
    assert_eq!(
        file_names(&records.join("kept")),
        [".forever.json.lock", "forever.json"]
    );
    // The new event's records (and the quiet marker, written again), not the old ones.
    for namespace in ["events", "outbox", "event-quiet"] {
        let names = file_names(&records.join(namespace));
        assert_eq!(names.len(), 2, "{namespace}: {names:?}");
        assert!(
            names
                .iter()
                .all(|name| !name.contains("evt_0000000000000000")),
            "{namespace}: {names:?}"
        );
        let record = names.iter().find(|name| !name.starts_with('.')).unwrap();
        let stored: Value = serde_json::from_str(
            &fs_err::read_to_string(records.join(namespace).join(record)).unwrap(),
        )
        .unwrap();
        assert!(
            stored["expires_at_ms"].as_u64().unwrap() > 1000,
            "{namespace}: {stored}"
        );
    }
}
