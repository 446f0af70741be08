//! A real OAuth 2.0 / `OpenID Connect` authorization server for end-to-end tests: oidc-provider
//! (`tests/oidc/server.mjs`, see `tests/oidc/README.md`) run by Node.js on 127.0.0.1, and a
//! "person in the browser" that drives its development login and consent forms with plain HTTP.
//!
//! Clients (fake values): `basic-client` / `basic-secret` (`client_secret_basic` only) and
//! `post-client` / `post-secret` (`client_secret_post` only); both may use `client_credentials`,
//! `authorization_code` and `refresh_token` with scope `openid offline_access api`. Access tokens
//! live 2 seconds, refresh tokens rotate on every use, and `GET /api/me` answers 200 for a live
//! access token and 401 `invalid_token` otherwise.

#![allow(
    dead_code,
    reason = "a shared test helper: each test uses only part of it"
)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// The client that must authenticate with HTTP Basic (`client_secret_basic`).
pub(crate) const BASIC_CLIENT_ID: &str = "basic-client";
/// `basic-client`'s secret (a fake test value).
pub(crate) const BASIC_CLIENT_SECRET: &str = "basic-secret";
/// The client that must authenticate with form fields (`client_secret_post`).
pub(crate) const POST_CLIENT_ID: &str = "post-client";
/// `post-client`'s secret (a fake test value).
pub(crate) const POST_CLIENT_SECRET: &str = "post-secret";
/// The account [`drive_login`] signs in as; it is the `sub` of the user's tokens.
pub(crate) const LOGIN: &str = "test-user";

/// How long [`OidcServer::start`] waits for the discovery document.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often it asks.
const READY_POLL: Duration = Duration::from_millis(50);
/// How many free ports it tries when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 3;
/// The most requests [`drive_login`] makes before giving up on a redirect loop.
const MAX_STEPS: usize = 20;

/// Options for [`OidcServer::start_with`].
#[derive(Debug, Clone)]
pub(crate) struct OidcOptions {
    /// The clients' registered `redirect_uris` (`--redirect-uri`). The clients are native
    /// (RFC 8252): a loopback `http://127.0.0.1:PORT/path` also matches on any other port, the
    /// path must match exactly. Empty means `http://127.0.0.1/callback`.
    pub(crate) redirect_uris: Vec<String>,
    /// Lifetime of access tokens and client-credentials tokens, in seconds (`--ttl`).
    pub(crate) ttl_secs: u32,
    /// Reject authorization requests without a PKCE S256 `code_challenge` (`--require-pkce`);
    /// otherwise PKCE is optional for these confidential clients, and checked when used.
    pub(crate) require_pkce: bool,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            redirect_uris: Vec::new(),
            ttl_secs: 2,
            require_pkce: false,
        }
    }
}

/// A running `tests/oidc/server.mjs`; dropping it kills the process.
pub(crate) struct OidcServer {
    /// The port it listens on, on 127.0.0.1.
    pub(crate) port: u16,
    child: Child,
    stderr: Arc<Mutex<String>>,
    discovery: serde_json::Value,
}

impl OidcServer {
    /// Starts the server with `redirect_uris` and the default options (2-second access tokens).
    ///
    /// Runs `npm ci` in `tests/oidc` first if its `node_modules` is missing or stale (once per
    /// test process, under a file lock shared by test processes), and returns once
    /// `/.well-known/openid-configuration` answers 200.
    #[track_caller]
    pub(crate) fn start(redirect_uris: &[&str]) -> OidcServer {
        Self::start_with(&OidcOptions {
            redirect_uris: redirect_uris.iter().map(ToString::to_string).collect(),
            ..OidcOptions::default()
        })
    }

    /// Starts the server with `options`; see [`OidcServer::start`].
    #[track_caller]
    pub(crate) fn start_with(options: &OidcOptions) -> OidcServer {
        ensure_npm_ci();
        let mut attempt = 1;
        loop {
            match Self::spawn(options) {
                Ok(server) => return server,
                Err(why) if attempt < PORT_ATTEMPTS && why.contains("cannot listen") => {
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// One try on one free port. `Err` carries the full panic message.
    fn spawn(options: &OidcOptions) -> Result<OidcServer, String> {
        let port = free_port();
        let dir = oidc_dir();
        let mut command = Command::new("node");
        command
            .current_dir(&dir)
            .arg("server.mjs")
            .arg("--port")
            .arg(port.to_string())
            .arg("--ttl")
            .arg(options.ttl_secs.to_string());
        for uri in &options.redirect_uris {
            command.arg("--redirect-uri").arg(uri);
        }
        if options.require_pkce {
            command.arg("--require-pkce");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `node {}/server.mjs` (is Node.js installed and on PATH?): {e}",
                    dir.display()
                )
            });
        // Drain both pipes so the server never blocks on a full one; keep everything for messages.
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        drain(
            child.stdout.take().expect("stdout is piped"),
            Arc::clone(&stdout),
        );
        drain(
            child.stderr.take().expect("stderr is piped"),
            Arc::clone(&stderr),
        );

        let discovery_path = "/.well-known/openid-configuration";
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting on the oidc server") {
                // Give the drain threads a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "the oidc server on port {port} exited before it was ready ({status})\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    stdout.lock().expect("stdout buffer"),
                    stderr.lock().expect("stderr buffer"),
                ));
            }
            if let Some((200, body)) = http_get(port, discovery_path) {
                let discovery: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or_else(|e| {
                        panic!("the oidc server's discovery document is not JSON ({e}):\n{body}")
                    });
                return Ok(OidcServer {
                    port,
                    child,
                    stderr,
                    discovery,
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the oidc server on port {port} did not answer {discovery_path} with 200 \
                     within {READY_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    stdout.lock().expect("stdout buffer"),
                    stderr.lock().expect("stderr buffer"),
                ));
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The token endpoint, from discovery.
    #[track_caller]
    pub(crate) fn token_url(&self) -> String {
        self.endpoint("token_endpoint")
    }

    /// The authorization endpoint, from discovery.
    #[track_caller]
    pub(crate) fn authorization_url(&self) -> String {
        self.endpoint("authorization_endpoint")
    }

    /// The introspection endpoint (RFC 7662), from discovery.
    #[track_caller]
    pub(crate) fn introspection_url(&self) -> String {
        self.endpoint("introspection_endpoint")
    }

    /// The revocation endpoint (RFC 7009), from discovery.
    #[track_caller]
    pub(crate) fn revocation_url(&self) -> String {
        self.endpoint("revocation_endpoint")
    }

    /// The protected resource: `GET` with `Authorization: Bearer TOKEN` answers 200
    /// `{"sub", "client_id", "scope"}` for a live access token, else 401 `{"error":"invalid_token"}`.
    pub(crate) fn api_me_url(&self) -> String {
        format!("{}/api/me", self.issuer())
    }

    /// The whole discovery document.
    pub(crate) fn discovery(&self) -> &serde_json::Value {
        &self.discovery
    }

    /// What the server wrote to stderr so far (its warnings, and the reason for each error it
    /// answered), for assertion messages.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    #[track_caller]
    fn endpoint(&self, name: &str) -> String {
        self.discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("the discovery document has no {name}: {}", self.discovery))
            .to_owned()
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays the person in the browser: GETs `authorize_url` (the full URL the engine printed),
/// follows the provider's redirects with a cookie jar, signs in on the development login form as
/// [`LOGIN`] (any password) and confirms the consent form, until a redirect whose `Location`
/// starts with `redirect_uri_prefix`. Returns that callback URL (with `code` and `state`, or
/// `error`) without requesting it.
///
/// With `decline`, it follows the forms' "Cancel" link instead, so the callback carries
/// `error=access_denied` and the `state`.
pub(crate) async fn drive_login(
    authorize_url: &str,
    redirect_uri_prefix: &str,
    decline: bool,
) -> String {
    let client = super::http()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building the HTTP client");
    let start = Url::parse(authorize_url)
        .unwrap_or_else(|e| panic!("the authorization URL {authorize_url:?} is not a URL: {e}"));
    let mut jar = CookieJar::default();
    let mut trail: Vec<String> = Vec::new();
    let mut next = Step::Get(start.clone());

    for _ in 0..MAX_STEPS {
        let (url, request) = match next {
            Step::Get(url) => (url.clone(), client.get(url)),
            Step::Post(url, form) => (url.clone(), client.post(url).form(&form)),
        };
        let request = match jar.header() {
            Some(cookies) => request.header(COOKIE, cookies),
            None => request,
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {url} failed: {e}\ntrail: {trail:#?}"));
        let status = response.status();
        trail.push(format!("{status} {url}"));
        jar.store(response.headers().get_all(SET_COOKIE).iter());

        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_else(|| {
                    panic!("{status} from {url} without a Location\ntrail: {trail:#?}")
                });
            let target = url.join(location).unwrap_or_else(|e| {
                panic!("bad Location {location:?} from {url}: {e}\ntrail: {trail:#?}")
            });
            if target.as_str().starts_with(redirect_uri_prefix) {
                return target.into();
            }
            assert!(
                target.origin() == start.origin(),
                "the provider redirected to {target}, which is neither the provider nor \
                 {redirect_uri_prefix:?}\ntrail: {trail:#?}"
            );
            next = Step::Get(target);
            continue;
        }

        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success() && url.path().starts_with("/interaction/"),
            "unexpected {status} from {url}:\n{body}\ntrail: {trail:#?}"
        );
        let prompt = hidden_prompt(&body)
            .unwrap_or_else(|| panic!("no prompt form on {url}:\n{body}\ntrail: {trail:#?}"));
        if decline {
            let abort = html_attr_after(&body, "[ Cancel ]", "href")
                .map_or_else(
                    || url.join(&format!("{}/abort", url.path())),
                    |href| url.join(&href),
                )
                .expect("the abort link is a URL");
            next = Step::Get(abort);
            continue;
        }
        let action = html_attr_after(&body, "<form", "action")
            .map_or_else(|| Ok(url.clone()), |action| url.join(&action))
            .expect("the form action is a URL");
        let form: Vec<(&'static str, &'static str)> = match prompt.as_str() {
            "login" => vec![("prompt", "login"), ("login", LOGIN), ("password", "any")],
            "consent" => vec![("prompt", "consent")],
            other => panic!("unknown prompt {other:?} on {url}:\n{body}\ntrail: {trail:#?}"),
        };
        next = Step::Post(action, form);
    }
    panic!("no redirect to {redirect_uri_prefix:?} after {MAX_STEPS} requests\ntrail: {trail:#?}");
}

enum Step {
    Get(Url),
    Post(Url, Vec<(&'static str, &'static str)>),
}

/// A browser's cookie jar, reduced to what one provider on one origin needs: names to values,
/// sent on every request (the provider scopes its cookies by path, and ignores ones it does not
/// expect).
#[derive(Default)]
struct CookieJar(BTreeMap<String, String>);

impl CookieJar {
    fn store<'a>(&mut self, set_cookies: impl Iterator<Item = &'a reqwest::header::HeaderValue>) {
        for header in set_cookies {
            let Ok(header) = header.to_str() else {
                continue;
            };
            let mut attributes = header.split(';').map(str::trim);
            let Some((name, value)) = attributes.next().and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            let expired = attributes.any(|attribute| {
                let lower = attribute.to_ascii_lowercase();
                lower == "max-age=0" || lower.starts_with("expires=thu, 01 jan 1970")
            });
            if expired || value.is_empty() {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// The value of the development forms' `<input type="hidden" name="prompt" value="...">`.
fn hidden_prompt(html: &str) -> Option<String> {
    html_attr_after(html, "name=\"prompt\"", "value")
}

/// The value of the first `attr="..."` after `marker` (or, for `[ Cancel ]`, the last one
/// before it), with the HTML escapes the provider's templates produce undone.
fn html_attr_after(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let needle = format!("{attr}=\"");
    let start = if marker.starts_with('[') {
        html[..at].rfind(&needle)?
    } else {
        at + html[at..].find(&needle)?
    } + needle.len();
    let end = start + html[start..].find('"')?;
    Some(
        html[start..end]
            .replace("&#x2F;", "/")
            .replace("&#47;", "/")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// `tests/oidc`.
fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// Runs `npm ci` in `tests/oidc` unless `node_modules` already holds the pinned oidc-provider.
/// Once per test process; a file lock keeps concurrent test processes from installing at once.
#[track_caller]
fn ensure_npm_ci() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = DONE.get_or_init(npm_ci_if_needed) {
        panic!("{why}");
    }
}

fn npm_ci_if_needed() -> Result<(), String> {
    let dir = oidc_dir();
    let wanted = pinned_version(&dir)?;
    if installed_version(&dir).as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oidc-npm-ci.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Another test process may have installed it while this one waited for the lock.
    if installed_version(&dir).as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run `npm ci` in {} (is npm on PATH?): {e}",
                dir.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`npm ci` in {} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }
    match installed_version(&dir) {
        Some(version) if version == wanted => Ok(()),
        other => Err(format!(
            "`npm ci` in {} installed oidc-provider {other:?}, package.json pins {wanted}",
            dir.display()
        )),
    }
}

/// The exact oidc-provider version `tests/oidc/package.json` pins.
fn pinned_version(dir: &Path) -> Result<String, String> {
    let path = dir.join("package.json");
    let json = read_json(&path).ok_or_else(|| format!("cannot read {} as JSON", path.display()))?;
    json["dependencies"]["oidc-provider"]
        .as_str()
        .map(ToOwned::to_owned)
        .ok_or_else(|| format!("{} has no dependencies.oidc-provider", path.display()))
}

/// The version of oidc-provider in `node_modules`, if `npm` finished installing it.
fn installed_version(dir: &Path) -> Option<String> {
    let modules = dir.join("node_modules");
    // npm writes this file last.
    if !modules.join(".package-lock.json").is_file() {
        return None;
    }
    read_json(&modules.join("oidc-provider").join("package.json"))?["version"]
        .as_str()
        .map(ToOwned::to_owned)
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .open(path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, let it go. Another
/// process can take it in between, which [`OidcServer::start_with`] survives by trying again.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

/// A blocking `GET http://127.0.0.1:{port}{path}` (HTTP/1.0, so the body is neither chunked nor
/// kept alive): the status and body, or `None` while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Copies a child's pipe into `sink` on a thread until the pipe closes.
fn drain(mut pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut buf = [0_u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink
                    .lock()
                    .expect("pipe buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    });
}
