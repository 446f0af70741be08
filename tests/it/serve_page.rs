//! `engine serve`'s status page and `/metrics`: the built binary on a SQLite store with two
//! instances against the vendor emulator, one whose scheduled refresh the emulator rejects (a
//! wrong client secret). The page, loaded in headless Chromium, shows the rejected refresh on
//! that instance's row and not on the other's; `/metrics` counts the two refreshes, the
//! scheduler's lag, resource calls by status class and the instances by status; neither shows
//! a secret. The page answers loopback callers only (the browser loads it from 127.0.0.1),
//! unless `--open-status-page`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

use crate::instances::{engine_output, write_file};
use crate::serve::Served;
use crate::support::run::time_ago;

const DEMO: &str = "connectors/demo.json";

/// The client secret the emulator rejects.
const WRONG_SECRET: &str = "FAKE-wrong-secret";

/// `engine serve` on `store` with one rejection enough for `needs-reauth`.
fn serve(store: &str) -> Served {
    Served::start_with(store, "connectors", &["--max-failures", "1"])
}

/// Imports `id`, a demo instance whose hour-long token expired an hour ago, with `secret`.
#[track_caller]
fn import(store: &str, base_url: &str, id: &str, secret: &str) {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        id,
        &json!({
            "base.url": base_url,
            "client.id": "demo-client",
            "client.secret": secret,
            "access.token": format!("at_{id}_old"),
            "authentication.time": time_ago(7200),
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

/// Imports `id`, a demo instance whose hour-long token was obtained now.
#[track_caller]
fn import_fresh(store: &str, base_url: &str, id: &str) {
    let temp = tempfile::tempdir().unwrap();
    let file = write_file(
        temp.path(),
        "fresh",
        &json!({
            "base.url": base_url,
            "client.id": "demo-client",
            "client.secret": "demo-secret",
            "access.token": "at_fresh_old",
            "authentication.time": time_ago(0),
            "expires_in": "3600",
        }),
    );
    let path = file.to_str().unwrap();
    engine_output(&[
        "instances",
        "import",
        path,
        "--id",
        id,
        "--connector",
        DEMO,
        "--store",
        store,
    ])
    .assert_success();
}

/// A store with `good` (refreshed by the scheduler), `bad` (its refresh rejected: marked
/// `needs-reauth` at once) and `later` (fresh, not due), and a server on it once both refreshes
/// are in their histories.
struct Scene {
    emulator: Emulator,
    store: String,
    served: Served,
    client: reqwest::Client,
    _temp: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Self {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let temp = tempfile::tempdir().unwrap();
        let store = crate::support::sqlite_store(temp.path());
        import(&store, &emulator.url(), "good", "demo-secret");
        import(&store, &emulator.url(), "bad", WRONG_SECRET);
        import_fresh(&store, &emulator.url(), "later");
        let key = crate::serve::create_key(&store, "tests", &["resources", "instances:read"]);
        let served = serve(&store);
        let scene = Self {
            emulator,
            store,
            served,
            client: crate::serve::client_with(&key),
            _temp: temp,
        };
        for id in ["good", "bad"] {
            scene
                .until(&format!("/v1/instances/{id}/history"), |body| {
                    serde_json::from_str::<Value>(body).unwrap()["entries"]
                        .as_array()
                        .is_some_and(|entries| !entries.is_empty())
                })
                .await;
        }
        scene
    }

    /// The body of `GET path`, with its status.
    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.served.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Polls `GET path` until its body satisfies `done` (within 30 s), and returns it.
    async fn until(&self, path: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {status} {body}\n{}",
                self.served.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every secret the instances held or hold: the client secrets, the imported tokens and the
    /// token the emulator issued.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            "demo-secret".to_owned(),
            WRONG_SECRET.to_owned(),
            "at_fresh_old".to_owned(),
        ];
        for id in ["good", "bad"] {
            secrets.push(format!("at_{id}_old"));
            let outcome = crate::serve::keyed(&[
                "instances",
                "export",
                id,
                "--reveal",
                "--store",
                &self.store,
            ]);
            outcome.assert_success();
            let values: Value = serde_json::from_str(&outcome.stdout).unwrap();
            for key in ["access.token", "refresh.token"] {
                if let Some(token) = values[key].as_str() {
                    secrets.push(token.to_owned());
                }
            }
        }
        secrets
    }
}

/// The row of `id` in the page's HTML: from its `<tr data-instance="ID">` to its `</tr>`.
#[track_caller]
fn row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<tr data-instance=\"{id}\">"))
        .unwrap_or_else(|| panic!("no row for `{id}` in {html}"));
    let end = html[start..].find("</tr>").unwrap() + start;
    &html[start..end]
}

/// Where Chromium is, if it is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Runs headless Chromium on `url` with `args`; returns its stdout.
#[track_caller]
fn headless(browser: &str, profile: &Path, url: &str, args: &[&str]) -> String {
    let output = Command::new(browser)
        .args(["--headless", "--disable-gpu", "--no-sandbox"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("running chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_rejected_refresh_on_its_instance_in_a_browser() {
    let Some(browser) = chromium() else {
        println!("skipped: `chromium` is not installed (the status page's browser test)");
        return;
    };
    let scene = Scene::start().await;
    let url = format!("{}/", scene.served.url);
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(browser, profile.path(), &url, &["--dump-dom"]);

    // The browser's DOM: one row each, the rejected refresh on `bad`'s and only there.
    let bad = row(&dom, "bad");
    let good = row(&dom, "good");
    assert!(bad.contains("<rect class=\"rejected\""), "{bad}");
    assert!(bad.contains("needs-reauth"), "{bad}");
    assert!(!bad.contains("<rect class=\"ok\""), "{bad}");
    assert!(good.contains("<rect class=\"ok\""), "{good}");
    assert!(!good.contains("rejected"), "{good}");
    assert!(good.contains(">fresh<"), "{good}");
    // The tooltip says when and why; the expiry is a countdown with its time.
    assert!(bad.contains("<title>"), "{bad}");
    assert!(bad.contains("schedule · rejected · HTTP 401"), "{bad}");
    assert!(good.contains("<td>in "), "{good}");
    assert!(good.contains("<time datetime=\""), "{good}");
    assert!(!dom.contains("<script"), "{dom}");
    // Not refreshed yet: fresh, no timeline.
    let later = row(&dom, "later");
    assert!(later.contains(">fresh<"), "{later}");
    assert!(!later.contains("<rect"), "{later}");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-status-page.png");
    headless(
        browser,
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,900",
        ],
    );
    assert!(fs_err::metadata(&screenshot).unwrap().len() > 0);
    println!("the status page's screenshot: {}", screenshot.display());
    drop(scene);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_refreshes_calls_and_instances_and_show_no_secret() {
    let scene = Scene::start().await;
    // A call answered 200, one answered 404 (no such instance).
    let (status, _) = scene
        .get("/v1/instances/good/resources/list-contacts?limit=1")
        .await;
    assert_eq!(status, 200);
    let (status, _) = scene
        .get("/v1/instances/nope/resources/list-contacts")
        .await;
    assert_eq!(status, 404);

    // The scheduler counts the instances on its pass after the refreshes.
    let metrics = scene
        .until("/metrics", |text| {
            text.contains("engine_instances{status=\"needs-reauth\"} 1\n")
        })
        .await;
    let connector = format!("connector=\"{DEMO}\"");
    for line in [
        format!("engine_refreshes_total{{{connector},trigger=\"schedule\",outcome=\"ok\"}} 1"),
        format!(
            "engine_refreshes_total{{{connector},trigger=\"schedule\",outcome=\"rejected\"}} 1"
        ),
        format!("engine_refresh_step_seconds_count{{{connector}}} 2"),
        // Both were due 72 minutes before the server started.
        "engine_scheduler_lag_seconds_bucket{le=\"3600\"} 0".to_owned(),
        "engine_scheduler_lag_seconds_count 2".to_owned(),
        "engine_lease_losses_total 0".to_owned(),
        "engine_resource_calls_total{class=\"2xx\"} 1".to_owned(),
        "engine_resource_calls_total{class=\"4xx\"} 1".to_owned(),
        "engine_resource_calls_total{class=\"5xx\"} 0".to_owned(),
        "engine_resource_call_seconds_count 2".to_owned(),
        "engine_instances{status=\"fresh\"} 2".to_owned(),
        "engine_instances{status=\"expired\"} 0".to_owned(),
        "engine_instances{status=\"needs-reauth\"} 1".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|shown| shown == line),
            "`{line}` not in:\n{metrics}"
        );
    }
    // Nothing but the connector in a label: no instance id.
    for id in ["good", "bad", "nope"] {
        assert!(!metrics.contains(&format!("\"{id}\"")), "{metrics}");
    }
    assert!(
        !metrics.contains("trigger=\"call\""),
        "a fresh token: no refresh by the call\n{metrics}"
    );

    let (status, page) = scene.get("/").await;
    assert_eq!(status, 200);
    // The page says the scheduler's count too.
    assert!(
        page.contains(
            "<span class=\"fresh\">2 fresh</span> · <span class=\"expired\">0 expired</span>"
        ),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"needs-reauth\">1 needs-reauth</span>"),
        "{page}"
    );
    let mut secrets = scene.secrets();
    secrets.sort();
    secrets.dedup();
    // The two client secrets, the two imported tokens and the one the emulator issued, at least.
    assert!(secrets.len() >= 5, "{secrets:?}");
    let stderr = scene.served.stderr();
    for secret in &secrets {
        assert!(!metrics.contains(secret.as_str()), "{secret} in {metrics}");
        assert!(!page.contains(secret.as_str()), "{secret} in {page}");
        assert!(!stderr.contains(secret.as_str()), "{secret} in {stderr}");
    }
    assert_eq!(scene.emulator.stats().token_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_50_instances_a_page_with_a_link_to_the_next() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    // Fresh tokens at a vendor nobody listens at: nothing is due, nothing is sent.
    let files: Vec<String> = (0..51)
        .map(|index| {
            let state = json!({
                "base.url": "http://127.0.0.1:9",
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": "at_paged",
                "authentication.time": time_ago(0),
                "expires_in": "3600",
            });
            let name = format!("paged-{index:02}");
            write_file(temp.path(), &name, &state).display().to_string()
        })
        .collect();
    let mut import = vec![
        "instances",
        "import",
        "--connector",
        DEMO,
        "--store",
        &store,
    ];
    import.extend(files.iter().map(String::as_str));
    engine_output(&import).assert_success();
    let served = serve(&store);
    let client = crate::support::http().build().expect("a client");
    let page = |path: String| {
        let client = client.clone();
        async move { client.get(path).send().await.unwrap().text().await.unwrap() }
    };

    let first = page(format!("{}/", served.url)).await;
    assert_eq!(first.matches("<tr data-instance=").count(), 50, "{first}");
    assert!(first.contains("<tr data-instance=\"paged-49\">"), "{first}");
    // The cursor is the last id.
    let link = "<a href=\"/?after=paged-49\">next page</a>";
    assert!(first.contains(link), "{first}");
    let second = page(format!("{}/?after=paged-49", served.url)).await;
    assert_eq!(second.matches("<tr data-instance=").count(), 1, "{second}");
    assert!(
        second.contains("<tr data-instance=\"paged-50\">"),
        "{second}"
    );
    assert!(!second.contains("next page"), "{second}");
    assert!(second.contains("<a href=\"/\">first page</a>"), "{second}");
}
