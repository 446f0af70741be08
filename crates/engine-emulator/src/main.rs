//! `vendor-emulator`: runs the [`engine_emulator::Emulator`] on `127.0.0.1` until SIGINT or
//! SIGTERM.
//!
//! ```text
//! vendor-emulator [--port N] [--token-ttl SECS] [--session-ttl SECS] [--no-rotation]
//! ```
//!
//! Once bound it prints exactly one line, `listening on http://127.0.0.1:PORT`, to stdout. Bad
//! flags print a message to stderr and exit with code 2.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use engine_emulator::{Emulator, EmulatorConfig};

/// The port used when `--port` is not given.
const DEFAULT_PORT: u16 = 8787;

/// The usage text shown by `--help` and after a flag error.
const USAGE: &str = "\
A vendor API on 127.0.0.1 for running connectors offline: an OAuth2-style token endpoint, a JSON
session login and a protected API, with admin endpoints to expire and revoke tokens. See
docs/emulator.md for a curl line per route.

Usage: vendor-emulator [--port N] [--token-ttl SECS] [--session-ttl SECS] [--no-rotation]

Options:
  --port N             port on 127.0.0.1 (default 8787, 0 picks a free port)
  --token-ttl SECS     access token lifetime in seconds, sent as `expires_in` (default 3600)
  --session-ttl SECS   session token lifetime in seconds, sent as the string `ttl` (default 3600)
  --no-rotation        refresh tokens keep working after a refresh (default: each refresh
                       returns a new one and retires the old; reusing an old one revokes the chain)
  -h, --help           print this help

Demo credentials:
  client  demo-client / demo-secret   (HTTP Basic, or client_id/client_secret parameters)
  user    demo / demo-password        (password grant, session login)

Routes:
  POST /oauth/token            grants: client_credentials, password, refresh_token
  POST /session/login          {\"credentials\": {\"user\", \"secret\"}} -> {\"data\": {\"session\": {\"token\", \"ttl\"}}}
  GET  /api/v1/me              the account (Authorization: Bearer TOKEN, or X-Session-Token)
  GET  /api/v1/contacts        five contacts; ?limit=N&page=P
  GET  /api/v1/contacts/{id}   one contact, or 404
  POST /api/v1/contacts        201, the body with an id added
  GET|POST /api/v1/echo        reflects method, path, query, x-* headers and body
  An expired or unknown token gets 401 with `WWW-Authenticate: Bearer error=\"invalid_token\"`.

Admin:
  GET  /_stats                 request counters (token grants, API calls, rejections)
  POST /_admin/expire          expire every access and session token (refresh tokens stay valid)
  POST /_admin/revoke          revoke every token: the next refresh fails with invalid_grant";

/// What the command line asked for.
#[derive(Debug)]
enum Command {
    /// Print the usage and exit.
    Help,
    /// Run the emulator on `port` with `config`.
    Run { port: u16, config: EmulatorConfig },
}

/// Parses the arguments after the program name.
///
/// Accepts `--flag value` and `--flag=value`. Returns the command, or a message naming the bad flag.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut port = DEFAULT_PORT;
    let mut config = EmulatorConfig::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if flag == "--no-rotation" && inline.is_none() {
            config.rotate_refresh_tokens = false;
            continue;
        }
        if !matches!(flag.as_str(), "--port" | "--token-ttl" | "--session-ttl") {
            return Err(format!("unexpected argument `{flag}`"));
        }
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--port" => {
                port = value.parse().map_err(|_| {
                    format!("`--port` expects a port number (0-65535), got `{value}`")
                })?;
            }
            "--token-ttl" => config.token_ttl = parse_seconds(&flag, &value)?,
            _ => config.session_ttl = parse_seconds(&flag, &value)?,
        }
    }
    Ok(Command::Run { port, config })
}

/// Parses a whole number of seconds for `flag`.
fn parse_seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("`{flag}` expects a whole number of seconds, got `{value}`"))
}

/// Resolves when the process gets SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = async {
            match signal(SignalKind::terminate()) {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let (port, config) = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { port, config }) => (port, config),
        Ok(Command::Help) => {
            let _ = writeln!(std::io::stdout().lock(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let emulator = match Emulator::start(config, port).await {
        Ok(emulator) => emulator,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: cannot listen on 127.0.0.1:{port}: {error}"
            );
            return ExitCode::FAILURE;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        let announced =
            writeln!(stdout, "listening on {}", emulator.url()).and_then(|()| stdout.flush());
        if announced.is_err() {
            // Whoever waits for the line is gone; serving would be pointless.
            emulator.shutdown().await;
            return ExitCode::FAILURE;
        }
    }
    shutdown_signal().await;
    emulator.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn flags_parse_in_both_forms() {
        let Ok(Command::Run { port, config }) =
            parse(&["--port", "0", "--token-ttl=5", "--session-ttl", "7"])
        else {
            panic!("expected a run command");
        };
        assert_eq!(port, 0);
        assert_eq!(config.token_ttl, Duration::from_secs(5));
        assert_eq!(config.session_ttl, Duration::from_secs(7));
        assert!(config.rotate_refresh_tokens);
        let Ok(Command::Run { config, .. }) = parse(&["--no-rotation"]) else {
            panic!("expected a run command");
        };
        assert!(!config.rotate_refresh_tokens);
        assert!(matches!(parse(&[]), Ok(Command::Run { port: 8787, .. })));
        assert!(matches!(parse(&["-h"]), Ok(Command::Help)));
    }

    #[test]
    fn help_names_every_route_credential_and_knob() {
        for needle in [
            "/oauth/token",
            "client_credentials",
            "password",
            "refresh_token",
            "/session/login",
            "/api/v1/me",
            "/api/v1/contacts",
            "/api/v1/contacts/{id}",
            "/api/v1/echo",
            "/_stats",
            "/_admin/expire",
            "/_admin/revoke",
            "demo-client / demo-secret",
            "demo / demo-password",
            "--token-ttl",
            "--session-ttl",
            "--no-rotation",
        ] {
            assert!(USAGE.contains(needle), "--help does not mention `{needle}`");
        }
    }

    #[test]
    fn bad_flags_are_errors() {
        assert_eq!(
            parse(&["--bogus"]).unwrap_err(),
            "unexpected argument `--bogus`"
        );
        assert_eq!(parse(&["--port"]).unwrap_err(), "`--port` needs a value");
        assert!(parse(&["--port", "70000"]).is_err());
        assert!(parse(&["--token-ttl", "-1"]).is_err());
    }
}
