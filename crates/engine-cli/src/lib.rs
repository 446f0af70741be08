//! The `engine` command line: argument parsing, the `validate`, `run` and `authorize` commands,
//! diagnostic rendering and exit codes. This is the only crate that prints.
#![allow(missing_docs)]

use std::error::Error as _;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Parser, Subcommand};

mod authorize;
mod completions;
mod duration;
mod exit;
mod explain;
mod history;
mod input;
mod instances;
mod keys;
mod man;
mod markdown;
mod new;
mod printer;
mod refresh;
mod render;
mod run;
mod serve;
mod status;
mod store;
mod test;
mod time;
mod validate;

pub use exit::Exit;

/// A declarative connector engine: validate and run vendor API connectors described in JSON.
#[derive(Debug, Parser)]
#[command(name = "engine", version)]
#[command(propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check connector files against the schema and their meaning.
    Validate(validate::ValidateArgs),
    /// Run one resource of a connector against an instance, keeping its token fresh.
    Run(run::RunArgs),
    /// Sign in through a browser (OAuth2 authorization code, OAuth 1.0a) and save the tokens.
    Authorize(authorize::AuthorizeArgs),
    /// Import, list, show, delete and export the instances of a store (`--store URL`).
    Instances(instances::InstancesArgs),
    /// Refresh every due instance of a store ahead of expiry (`engine refresh --store URL`).
    Refresh(refresh::RefreshArgs),
    /// Serve the instances of a store over HTTP (`/v1`) and keep them fresh with no traffic.
    ///
    /// Environment: `ENGINE_SECRET_KEY` (or `ENGINE_SECRET_KEY_FILE`; earlier keys in
    /// `ENGINE_SECRET_KEYS_OLD`) checks the API keys and decrypts the instances' secrets, and is
    /// required; `ENGINE_STORE` is the store when `--store` is not given; `ENGINE_WEBHOOK_SECRET`
    /// signs the webhooks of `--webhook-url`; `ENGINE_STORE_LOCK_LIFETIME` bounds an instance
    /// lock's life.
    Serve(serve::ServeArgs),
    /// Create, list and revoke the API keys callers of `engine serve` present.
    Keys(keys::KeysArgs),
    /// Show the refresh history of a stored instance.
    History(history::HistoryArgs),
    /// Whether an instance's token is fresh and when it expires; sends nothing.
    Status(status::StatusArgs),
    /// Run connector tests (`*.test.json`) offline: scripted vendor answers, a virtual clock.
    Test(test::TestArgs),
    /// Explain a diagnostic code of `engine validate` (`engine explain E0101`).
    Explain(explain::ExplainArgs),
    /// Write a minimal, valid connector and an instance file to fill in (`engine new acme --auth oauth2`).
    New(new::NewArgs),
    /// Print the script that completes commands, flags and, for `engine run CONNECTOR`, the
    /// connector's resources (`engine completions bash >
    /// ~/.local/share/bash-completion/completions/engine`).
    Completions(completions::CompletionsArgs),
    /// Print a man page (`engine man run`), or install them all (`engine man --dir
    /// ~/.local/share/man/man1`).
    Man(man::ManArgs),
}

/// Validates `bytes` as a connector file and renders its diagnostics in every format of
/// `engine validate`. For the fuzz targets in `fuzz/`: whatever the bytes, this never panics.
#[doc(hidden)]
pub fn fuzz_validate(bytes: &[u8]) -> String {
    validate::render_bytes(bytes)
}

/// Parses the arguments, runs the command and returns its exit code (see [`Exit`]).
pub fn main() -> ExitCode {
    completions::answer_the_shell();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error).into(),
    };
    let exit = match cli.command {
        Command::Validate(args) => validate::validate(&args),
        Command::Run(args) => run::run(&args),
        Command::Authorize(args) => authorize::authorize(&args),
        Command::Instances(args) => instances::instances(&args),
        Command::Refresh(args) => refresh::refresh(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Keys(args) => keys::keys(&args),
        Command::History(args) => history::history(&args),
        Command::Status(args) => status::status(&args),
        Command::Explain(args) => explain::explain(&args),
        Command::Test(args) => test::test(&args),
        Command::Completions(args) => completions::completions(&args),
        Command::Man(args) => man::man(&args),
        Command::New(args) => new::new(&args),
    };
    // The process ends here: the JavaScript hooks' sandbox need not be freed piece by piece.
    engine_runtime::leave_sandbox_to_exit();
    exit.into()
}

/// The options whose values may hold a secret: a usage error never repeats them.
const SECRET_OPTIONS: &[&str] = &["--header", "--param"];

/// Prints a clap error (help and version too) and returns its exit code. An invalid value of
/// [`SECRET_OPTIONS`] is reported without the value: clap's own message repeats it.
fn usage_error(error: &clap::Error) -> Exit {
    let option = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(option)) => option.clone(),
        _ => String::new(),
    };
    let secret = SECRET_OPTIONS
        .iter()
        .any(|name| option.split([' ', '=']).next() == Some(*name));
    if error.kind() != ErrorKind::ValueValidation || !secret {
        let _ = error.print();
        return if error.use_stderr() {
            Exit::Usage
        } else {
            Exit::Success
        };
    }
    let reason = error
        .source()
        .map_or_else(|| "expected `NAME=VALUE`".to_owned(), ToString::to_string);
    let message = format!(
        "error: invalid value for '{option}': {reason} (the value is not shown: it may hold a \
         secret)\n\nFor more information, try '--help'.\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    Exit::Usage
}
