//! `engine serve --state-cache`: a resource call runs on the instance's state this process read
//! less than the time to live ago. Two servers on one SQLite store: a token the other process
//! rotated is picked up on the vendor's 401 (one refused call, no token request), and an
//! instance the other process deleted stops answering once the time to live has passed.

use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig, Stats};

use crate::serve::{Served, call, client, import};

/// How long a test waits for something that should happen, before it fails saying what did not.
const PATIENCE: Duration = Duration::from_mins(2);

/// A server on `store` with `--state-cache TTL`, without a rate limit.
fn start(store: &str, ttl: &str) -> Served {
    Served::start_with(
        store,
        "connectors",
        &["--rate", "1000000/s", "--state-cache", ttl],
    )
}

/// What the emulator counted since `before`: token requests, API calls, API calls refused.
fn since(before: &Stats, now: &Stats) -> (u64, u64, u64) {
    (
        now.token_requests - before.token_requests,
        now.api_calls - before.api_calls,
        now.api_unauthorized - before.api_unauthorized,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_another_server_rotated_is_picked_up_on_the_vendors_401() {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let client = client(&store);
    // Its token unknown to the emulator: the first call's 401 refreshes it.
    import(&store, &emulator.url(), "acme", 0);
    // A keeps states a minute: only a write or a read under the lock makes it read again.
    let (a, b) = (start(&store, "1m"), start(&store, "0"));
    let url = |served: &Served| {
        format!(
            "{}/v1/instances/acme/resources/get-contact?id=c1",
            served.url
        )
    };

    for _ in 0..2 {
        let answer = call(&client, "GET", &url(&a)).await;
        assert_eq!(answer.status, 200, "{}\n{}", answer.body, a.stderr());
    }
    // A holds the token it refreshed; the vendor expires it, and B rotates it.
    emulator.expire_all_tokens();
    let before = emulator.stats();
    let refreshed = call(
        &client,
        "POST",
        &format!("{}/v1/instances/acme/refresh", b.url),
    )
    .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(since(&before, &emulator.stats()), (1, 0, 0));

    // A's call goes out with the token it kept, is refused, re-reads under the lock, and
    // succeeds with B's token: one extra vendor call, no token request.
    let before = emulator.stats();
    let answer = call(&client, "GET", &url(&a)).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, a.stderr());
    assert_eq!(answer.json()["id"], "c1", "{}", answer.body);
    assert_eq!(since(&before, &emulator.stats()), (0, 2, 1));
    // The read under the lock replaced what A kept: the next call goes out with B's token.
    let before = emulator.stats();
    let answer = call(&client, "GET", &url(&a)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(since(&before, &emulator.stats()), (0, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_another_server_deleted_stops_answering_after_the_time_to_live() {
    let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    let client = client(&store);
    import(&store, &emulator.url(), "gone", 0);
    let (a, b) = (start(&store, "1s"), start(&store, "1s"));
    let url = format!("{}/v1/instances/gone/resources/get-contact?id=c1", a.url);
    let answer = call(&client, "GET", &url).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, a.stderr());

    let deleted = call(&client, "DELETE", &format!("{}/v1/instances/gone", b.url)).await;
    assert!(deleted.status < 300, "{}: {}", deleted.status, deleted.body);
    // Within the time to live A may still answer from what it kept; after it, 404.
    let started = Instant::now();
    loop {
        let answer = call(&client, "GET", &url).await;
        if answer.status == 404 {
            assert!(answer.body.contains("gone"), "{}", answer.body);
            break;
        }
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            started.elapsed() < PATIENCE,
            "still answering {PATIENCE:?} after the delete\n{}",
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
