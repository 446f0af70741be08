//! The harness of the `engine run` tests.
//!
//! A [`TestContext`] owns a temp dir holding the instance file and names a connector (a fixture
//! under `tests/fixtures/run/<case>/`, or a patched copy of one in the temp dir);
//! [`TestContext::run`] starts a fluent [`RunCommand`] (`engine run CONNECTOR RESOURCE --config
//! INSTANCE ...`) and [`RunCommand::output`] gives an [`Outcome`]: exit code, stdout and stderr.
//! [`run_snapshot!`] snapshots an outcome with the context's filters (`[SERVER]`, `[TEMP]`,
//! `[TIME]`).

#![allow(
    dead_code,
    reason = "a shared test helper: each test uses only part of it"
)]

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{engine, repo_root};

/// A temp dir with an instance file, and the connector the runs use.
#[derive(Debug)]
pub(crate) struct TestContext {
    temp: tempfile::TempDir,
    /// The connector as passed to `engine run`: relative to the repository root for a fixture,
    /// absolute for a patched copy.
    connector: PathBuf,
    instance: PathBuf,
}

impl TestContext {
    /// Runs `tests/fixtures/run/<case>/connector.json`, named relative to the repository root so
    /// that messages pointing into it read the same on every machine.
    #[must_use]
    pub(crate) fn fixture(case: &str) -> Self {
        Self::for_connector(&format!("tests/fixtures/run/{case}/connector.json"))
    }

    /// Runs the connector at `path`, relative to the repository root (`connectors/demo.json`).
    #[must_use]
    pub(crate) fn for_connector(path: &str) -> Self {
        let connector = PathBuf::from(path);
        assert!(
            repo_root().join(&connector).is_file(),
            "no connector `{}`",
            connector.display()
        );
        let temp = tempfile::tempdir().expect("creating a temp dir");
        let instance = temp.path().join("instance.json");
        Self {
            temp,
            connector,
            instance,
        }
    }

    /// Runs a copy of fixture `case` changed by `patch`, written to `[TEMP]/connector.json`.
    #[must_use]
    pub(crate) fn patched(case: &str, patch: impl FnOnce(&mut Value)) -> Self {
        let mut context = Self::fixture(case);
        let mut connector: Value = serde_json::from_str(
            &fs_err::read_to_string(repo_root().join(&context.connector))
                .expect("reading the fixture"),
        )
        .expect("the fixture is JSON");
        if let Value::Object(object) = &mut connector {
            object.remove("$schema");
        }
        patch(&mut connector);
        let file = context.temp.path().join("connector.json");
        fs_err::write(&file, format!("{connector:#}\n")).expect("writing the patched connector");
        context.connector = file;
        context
    }

    /// Writes the instance file.
    #[must_use]
    pub(crate) fn with_instance(self, instance: &Value) -> Self {
        self.write_instance(instance);
        self
    }

    /// Writes the instance file (pretty JSON, keys in the order given).
    pub(crate) fn write_instance(&self, instance: &Value) {
        self.write_instance_text(&format!("{instance:#}\n"));
    }

    /// Writes the instance file as it is, owner-only as the engine keeps it (a file others can
    /// read gets a note on its first write: `store::writes_keep_untouched_keys_and_their_order_and_make_the_file_owner_only`).
    pub(crate) fn write_instance_text(&self, text: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::write(&self.instance, text).expect("writing the instance file");
        fs_err::set_permissions(&self.instance, std::fs::Permissions::from_mode(0o600))
            .expect("making the instance file owner-only");
    }

    /// The instance file, parsed (key order kept).
    #[track_caller]
    pub(crate) fn instance(&self) -> Value {
        serde_json::from_str(&self.instance_text()).expect("the instance file is JSON")
    }

    /// The instance file's bytes as text.
    #[track_caller]
    pub(crate) fn instance_text(&self) -> String {
        fs_err::read_to_string(&self.instance).expect("reading the instance file")
    }

    /// Where the instance file is.
    pub(crate) fn instance_path(&self) -> &Path {
        &self.instance
    }

    /// The temp dir.
    pub(crate) fn dir(&self) -> &Path {
        self.temp.path()
    }

    /// The connector path as `engine run` gets it.
    pub(crate) fn connector(&self) -> &Path {
        &self.connector
    }

    /// `engine run CONNECTOR RESOURCE --config INSTANCE`.
    pub(crate) fn run(&self, resource: &str) -> RunCommand {
        RunCommand {
            args: vec![
                "run".into(),
                self.connector.clone().into(),
                resource.into(),
                "--config".into(),
                self.instance.clone().into(),
            ],
            stdin: None,
        }
    }

    /// Snapshot filters: the mock servers' `127.0.0.1:<port>` → `[SERVER]`, this context's temp
    /// dir → `[TEMP]`, durations and RFC 3339 times → `[TIME]`, epoch milliseconds → `[EPOCH_MS]`.
    pub(crate) fn filters(&self) -> Vec<(String, String)> {
        let temp = self.temp.path().to_string_lossy().into_owned();
        vec![
            (regex_escape(&temp), "[TEMP]".to_owned()),
            (r"127\.0\.0\.1:\d+".to_owned(), "[SERVER]".to_owned()),
            (r"in \d+ ms".to_owned(), "in [TIME] ms".to_owned()),
            (
                r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z".to_owned(),
                "[TIME]".to_owned(),
            ),
            (r"\b1\d{12}\b".to_owned(), "[EPOCH_MS]".to_owned()),
        ]
    }
}

/// Escapes the regex metacharacters of `text` (the snapshot filters are regexes).
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if r"\.+*?()|[]{}^$".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// An `engine run` command being built.
#[derive(Debug)]
#[must_use]
pub(crate) struct RunCommand {
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
}

impl RunCommand {
    /// `--param NAME=VALUE`.
    pub(crate) fn param(self, name: &str, value: &str) -> Self {
        self.arg("--param").arg(format!("{name}={value}"))
    }

    /// `--header NAME=VALUE`.
    pub(crate) fn header(self, name: &str, value: &str) -> Self {
        self.arg("--header").arg(format!("{name}={value}"))
    }

    /// `--body -` with `body` on standard input.
    pub(crate) fn body(mut self, body: &Value) -> Self {
        self.stdin = Some(body.to_string().into_bytes());
        self.arg("--body").arg("-")
    }

    /// Feeds `bytes` to standard input (for `--param NAME=@-` or `--body -`).
    pub(crate) fn stdin(mut self, bytes: &[u8]) -> Self {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// `--body -` with `text` (not JSON: a text body template) on standard input.
    pub(crate) fn body_text(self, text: &str) -> Self {
        self.stdin(text.as_bytes()).arg("--body").arg("-")
    }

    /// `--dry-run`.
    pub(crate) fn dry_run(self) -> Self {
        self.arg("--dry-run")
    }

    /// `-v`.
    pub(crate) fn verbose(self) -> Self {
        self.arg("-v")
    }

    /// `--timeout SECONDS`.
    pub(crate) fn timeout(self, seconds: &str) -> Self {
        self.arg("--timeout").arg(seconds)
    }

    /// Any other argument.
    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs the command to the end.
    #[track_caller]
    pub(crate) fn output(self) -> Outcome {
        let mut command = engine();
        command.args(&self.args);
        if let Some(stdin) = self.stdin {
            command.write_stdin(stdin);
        }
        let output = command.output().expect("running `engine`");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs the command through `sh -c`, after the shell commands `setup` (say, `ulimit -f 0`).
    #[track_caller]
    pub(crate) fn output_after(self, setup: &str) -> Outcome {
        assert!(
            self.stdin.is_none(),
            "stdin is not passed through the shell"
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{setup}; exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_engine"))
            .args(&self.args)
            .current_dir(repo_root())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("running `engine` through `sh`");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts the command without waiting; stdout and stderr are piped.
    #[track_caller]
    pub(crate) fn spawn(self) -> Child {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_engine"));
        command
            .args(&self.args)
            .current_dir(repo_root())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting `engine`");
        if let Some(stdin) = self.stdin {
            child
                .stdin
                .take()
                .expect("stdin is piped")
                .write_all(&stdin)
                .expect("writing the body to stdin");
        }
        child
    }
}

/// What an `engine run` gave.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The exit code (`-1` when killed by a signal).
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Outcome {
    /// Reads a finished child's outcome.
    #[track_caller]
    pub(crate) fn of(child: Child) -> Self {
        let output = child.wait_with_output().expect("waiting for `engine`");
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing the whole outcome when it differs.
    #[track_caller]
    pub(crate) fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.render());
        self
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub(crate) fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Asserts that stderr contains every one of `needles`.
    #[track_caller]
    pub(crate) fn assert_stderr_has(&self, needles: &[&str]) -> &Self {
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr lacks `{needle}`\n{}",
                self.render()
            );
        }
        self
    }

    /// Asserts that no `secret` appears in stdout or stderr.
    #[track_caller]
    pub(crate) fn assert_hides(&self, secrets: &[&str]) -> &Self {
        for secret in secrets {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "secret `{secret}` leaked\n{}",
                self.render()
            );
        }
        self
    }

    /// Asserts that stdout or stderr shows the mask `****`.
    #[track_caller]
    pub(crate) fn assert_masks(&self) -> &Self {
        assert!(
            self.stdout.contains("****") || self.stderr.contains("****"),
            "nothing is masked\n{}",
            self.render()
        );
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON: {error}\n{}", self.render()))
    }

    /// The whole outcome as one text, for snapshots and failure messages.
    pub(crate) fn render(&self) -> String {
        format!(
            "exit code: {}\n----- stdout -----\n{}\n----- stderr -----\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Snapshots an [`Outcome`] (inline) with the filters of a [`TestContext`].
macro_rules! run_snapshot {
    ($context:expr, $outcome:expr, @$snapshot:literal) => {{
        let mut settings = insta::Settings::clone_current();
        for (pattern, replacement) in $context.filters() {
            settings.add_filter(&pattern, replacement);
        }
        settings.bind(|| insta::assert_snapshot!($outcome.render(), @$snapshot));
    }};
}
pub(crate) use run_snapshot;

/// Now, in epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("before the year 500 million")
}

/// `authentication.time` as the engine writes it, `seconds` ago.
pub(crate) fn time_ago(seconds: u64) -> String {
    (now_ms() - seconds * 1000).to_string()
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("a bound address").port()
}

/// Every request `server` received, in order.
pub(crate) async fn received(server: &wiremock::MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

/// The requests `server` received for `path`, in order.
pub(crate) async fn received_at(
    server: &wiremock::MockServer,
    path: &str,
) -> Vec<wiremock::Request> {
    received(server)
        .await
        .into_iter()
        .filter(|request| request.url.path() == path)
        .collect()
}

/// The header `name` of a received request, as text (`None` when absent).
pub(crate) fn header_of<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .map(|value| value.to_str().expect("a text header"))
}

/// Every value of the header `name` of a received request.
pub(crate) fn headers_of<'a>(request: &'a wiremock::Request, name: &str) -> Vec<&'a str> {
    request
        .headers
        .get_all(name)
        .iter()
        .map(|value| value.to_str().expect("a text header"))
        .collect()
}

/// The `application/x-www-form-urlencoded` body of a received request, decoded.
pub(crate) fn form_of(request: &wiremock::Request) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(&request.body);
    let url = reqwest::Url::parse(&format!("http://form.invalid/?{text}")).expect("a form body");
    url.query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// The query of a received request, decoded.
pub(crate) fn query_of(request: &wiremock::Request) -> Vec<(String, String)> {
    request
        .url
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// A token endpoint's 200 answer: `access_token`, `expires_in` as given, and `refresh_token`
/// when there is one.
pub(crate) fn token_response(
    access: &str,
    refresh: Option<&str>,
    expires_in: Value,
) -> wiremock::ResponseTemplate {
    let mut body = serde_json::json!({"access_token": access, "token_type": "Bearer"});
    body["expires_in"] = expires_in;
    if let Some(refresh) = refresh {
        body["refresh_token"] = Value::from(refresh);
    }
    wiremock::ResponseTemplate::new(200).set_body_json(body)
}

/// Moves the retry and the cooldown of instance `id` of the store at `store_url` into the
/// past, as the time passing would: its next scheduled refresh is due at once.
pub(crate) async fn cool_down(store_url: &str, id: &str) {
    let store = engine_stores_sql::open(store_url).await.unwrap();
    let quiet = || {};
    engine_store::update(&*store, id, None, &quiet, |state| {
        let mut schedule = engine_store::Schedule::read(state);
        schedule.next_refresh_at_ms = Some(1);
        schedule.cooldown_until_ms = Some(1);
        schedule.put(state);
        Ok(true)
    })
    .await
    .unwrap();
}
