//! Exit codes, documented in README.md and tested.

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success = 0,
    /// 1: the vendor answered with an error status, or the state could not be written.
    VendorError = 1,
    /// 2: usage error (clap's default).
    Usage = 2,
    /// 3: invalid connector definition or instance configuration; nothing was sent.
    Invalid = 3,
    /// 4: authentication failed: no valid token could be obtained or refreshed.
    AuthFailed = 4,
    /// 5: transport failure (connect, timeout, TLS) after the allowed retries.
    Transport = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
