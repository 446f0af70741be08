//! The test harness: the `engine` command, snapshot filters, servers.

use assert_cmd::Command;

pub(crate) mod oidc;
pub(crate) mod run;

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A client for the tests' own HTTP calls (the servers they start, on loopback). reqwest is
/// built without a TLS provider of its own (the engine gives it one, on ring): it needs a
/// process default to build any client, installed here once.
pub(crate) fn http() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // Already installed (by another test of this process): that one serves.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// The URL of a SQLite store in `dir` (`sqlite:DIR/state.db`).
pub(crate) fn sqlite_store(dir: &std::path::Path) -> String {
    format!("sqlite:{}", dir.join("state.db").display())
}

/// `reqwest::get` with a client of [`http`].
pub(crate) async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().build()?.get(url).send().await
}

/// The built `engine` binary, run from the repository root, with colour off.
#[track_caller]
#[must_use]
pub fn engine() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_engine"));
    command
        .current_dir(repo_root())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    command
}
