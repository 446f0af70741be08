//! Built-in OAuth2 and `engine authorize` against a server we did not write: oidc-provider
//! (`tests/oidc/`), with real 2-second tokens and rotating refresh tokens. Kept few: each waits
//! for real expiry. The rest of the expiry logic is unit-tested with an injected clock.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::engine;
use crate::support::oidc::{
    BASIC_CLIENT_ID, BASIC_CLIENT_SECRET, OidcServer, POST_CLIENT_ID, POST_CLIENT_SECRET,
    drive_login,
};

fn fixture(name: &str) -> PathBuf {
    crate::support::repo_root()
        .join("tests/fixtures/oauth2")
        .join(name)
}

fn write_instance(dir: &Path, instance: &Value) -> PathBuf {
    let path = dir.join("instance.json");
    fs_write(&path, &serde_json::to_string_pretty(instance).unwrap());
    path
}

fn fs_write(path: &Path, text: &str) {
    fs_err::write(path, text).unwrap();
}

fn read_instance(path: &Path) -> Value {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `engine run CONNECTOR me --config INSTANCE`, returning (exit code, stdout, stderr).
#[track_caller]
fn run_me(connector: &Path, instance: &Path) -> (i32, String, String) {
    let output = engine()
        .args(["run", connector.to_str().unwrap(), "me", "--config"])
        .arg(instance)
        .arg("-v")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn client_credentials_then_a_new_token_after_expiry() {
    let server = OidcServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let instance = write_instance(
        dir.path(),
        &json!({
            "base.url": server.issuer(),
            "oauth.token.url": server.token_url(),
            "oauth.api.key": POST_CLIENT_ID,
            "oauth.api.secret": POST_CLIENT_SECRET,
        }),
    );
    let connector = fixture("client-credentials.json");
    let (code, stdout, stderr) = run_me(&connector, &instance);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["client_id"],
        POST_CLIENT_ID
    );
    assert!(
        stderr.contains("no access token yet; running oauth2"),
        "{stderr}"
    );
    let first = read_instance(&instance);
    assert_eq!(first["oauth.user.refresh_interval"], "2");

    std::thread::sleep(Duration::from_millis(2100));
    let (code, stdout, stderr) = run_me(&connector, &instance);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("token expired at"), "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["client_id"],
        POST_CLIENT_ID
    );
    let second = read_instance(&instance);
    assert_ne!(first["oauth.user.token"], second["oauth.user.token"]);
    // Secrets never reach the output.
    for text in [&stdout, &stderr] {
        assert!(!text.contains(POST_CLIENT_SECRET));
        assert!(!text.contains(second["oauth.user.token"].as_str().unwrap()));
    }
}

#[test]
fn wrong_client_secret_is_an_authentication_failure() {
    let server = OidcServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let instance = write_instance(
        dir.path(),
        &json!({
            "base.url": server.issuer(),
            "oauth.token.url": server.token_url(),
            "oauth.api.key": POST_CLIENT_ID,
            "oauth.api.secret": "not-the-secret",
        }),
    );
    let before = fs_err::read_to_string(&instance).unwrap();
    let (code, _, stderr) = run_me(&fixture("client-credentials.json"), &instance);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "hint: fix `oauth.api.key` and `oauth.api.secret` in `{}`",
            instance.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    assert_eq!(fs_err::read_to_string(&instance).unwrap(), before);
}

/// Starts `engine authorize --no-browser` and returns the child and the URL it printed.
fn start_authorize(connector: &Path, instance: &Path) -> (Child, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engine"))
        .args([
            "authorize",
            connector.to_str().unwrap(),
            "--no-browser",
            "--timeout",
            "30",
            "--config",
        ])
        .arg(instance)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

fn finish(child: Child) -> (i32, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Signs in through `engine authorize` and returns the instance path.
async fn authorize(server: &OidcServer, dir: &Path, callback: &str) -> PathBuf {
    let instance = write_instance(
        dir,
        &json!({
            "base.url": server.issuer(),
            "oauth.authorization.url": format!("{}?prompt=consent", server.authorization_url()),
            "oauth.token.url": server.token_url(),
            "oauth.callback.url": callback,
            "oauth.api.key": BASIC_CLIENT_ID,
            "oauth.api.secret": BASIC_CLIENT_SECRET,
        }),
    );
    let connector = fixture("authorization-code.json");
    let (child, url) = start_authorize(&connector, &instance);
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("state="), "{url}");
    // A callback with a wrong state is refused, and the engine keeps waiting.
    let forged = crate::support::get(format!("{callback}?code=forged&state=wrong"))
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let answer = drive_login(&url, callback, false).await;
    let page = crate::support::get(&answer).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Signed in"));
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    instance
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_then_three_rotating_refreshes() {
    let server = OidcServer::start(&["http://127.0.0.1/callback"]);
    let dir = tempfile::tempdir().unwrap();
    let callback = format!("http://127.0.0.1:{}/callback", free_port());
    let instance = authorize(&server, dir.path(), &callback).await;
    let connector = fixture("authorization-code.json");
    let mut refresh_tokens = vec![read_instance(&instance)["oauth.user.refresh_token"].clone()];
    assert!(refresh_tokens[0].is_string());
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (connector_path, instance_path) = (connector.clone(), instance.clone());
        let (code, stdout, stderr) =
            tokio::task::spawn_blocking(move || run_me(&connector_path, &instance_path))
                .await
                .unwrap();
        assert_eq!(code, 0, "round {round}: {stderr}");
        assert!(stderr.contains("running oauth2"), "round {round}: {stderr}");
        assert_eq!(
            serde_json::from_str::<Value>(&stdout).unwrap()["sub"],
            "test-user"
        );
        let now = read_instance(&instance)["oauth.user.refresh_token"].clone();
        assert!(
            !refresh_tokens.contains(&now),
            "round {round}: the refresh token did not rotate"
        );
        refresh_tokens.push(now);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_refresh_token_is_invalid_grant_and_keeps_the_instance() {
    let server = OidcServer::start(&["http://127.0.0.1/callback"]);
    let dir = tempfile::tempdir().unwrap();
    let callback = format!("http://127.0.0.1:{}/callback", free_port());
    let instance = authorize(&server, dir.path(), &callback).await;
    let connector = fixture("authorization-code.json");
    let stale = fs_err::read_to_string(&instance).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (connector_path, instance_path) = (connector.clone(), instance.clone());
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run_me(&connector_path, &instance_path))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stderr}");
    // Put the rotated-out refresh token back, as a lost write would: the server revokes the grant.
    fs_write(&instance, &stale);
    let instance_path = instance.clone();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || run_me(&connector, &instance_path))
        .await
        .unwrap();
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    assert!(
        stderr.contains("hint: sign in again through a browser: `engine authorize "),
        "{stderr}"
    );
    assert_eq!(
        fs_err::read_to_string(dir.path().join("instance.json")).unwrap(),
        stale
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_sign_in_shows_the_vendor_error() {
    let server = OidcServer::start(&["http://127.0.0.1/callback"]);
    let dir = tempfile::tempdir().unwrap();
    let callback = format!("http://127.0.0.1:{}/callback", free_port());
    let instance = write_instance(
        dir.path(),
        &json!({
            "base.url": server.issuer(),
            "oauth.authorization.url": server.authorization_url(),
            "oauth.token.url": server.token_url(),
            "oauth.callback.url": callback,
            "oauth.api.key": BASIC_CLIENT_ID,
            "oauth.api.secret": BASIC_CLIENT_SECRET,
        }),
    );
    let before = fs_err::read_to_string(&instance).unwrap();
    let (child, url) = start_authorize(&fixture("authorization-code.json"), &instance);
    let answer = drive_login(&url, &callback, true).await;
    let page = crate::support::get(&answer).await.unwrap();
    assert!(page.text().await.unwrap().contains("access_denied"));
    let (code, stderr) = finish(child);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("access_denied"), "{stderr}");
    assert_eq!(fs_err::read_to_string(&instance).unwrap(), before);
}

#[test]
fn no_callback_within_the_timeout_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let callback = format!("http://127.0.0.1:{}/callback", free_port());
    let instance = write_instance(
        dir.path(),
        &json!({
            "base.url": "http://127.0.0.1:9",
            "oauth.authorization.url": "http://127.0.0.1:9/auth",
            "oauth.token.url": "http://127.0.0.1:9/token",
            "oauth.callback.url": callback,
            "oauth.api.key": BASIC_CLIENT_ID,
            "oauth.api.secret": BASIC_CLIENT_SECRET,
        }),
    );
    let output = engine()
        .args([
            "authorize",
            "tests/fixtures/oauth2/authorization-code.json",
            "--no-browser",
            "--timeout",
            "1",
            "--config",
        ])
        .arg(&instance)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("http://127.0.0.1:9/auth?response_type=code&client_id=basic-client"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no callback arrived within 1 s"),
        "{stderr}"
    );
}
