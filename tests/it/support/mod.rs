//! The test harness: the `engine` command, snapshot filters, servers.

use assert_cmd::Command;

pub(crate) mod oidc;
pub(crate) mod run;

/// The repository root.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
