//! `engine authorize CONNECTOR --config INSTANCE`: signs a person in through a browser (OAuth2
//! authorization code, with PKCE when the connector enables it) and saves the tokens.

use std::path::PathBuf;
use std::time::Duration;

use engine_runtime::{Engine, EngineBuilder, NoObserver};
use engine_store::FileStore;

use crate::Exit;
use crate::printer;
use crate::run::{load_connector, prepare, report};

#[derive(Debug, clap::Args)]
pub(crate) struct AuthorizeArgs {
    /// The connector file (built-in `oauth2` authentication).
    connector: PathBuf,
    /// The instance file; the tokens are saved into it.
    #[arg(long, short = 'c', value_name = "INSTANCE")]
    config: PathBuf,
    /// Print the URL only; do not open a browser.
    #[arg(long)]
    no_browser: bool,
    /// How long to wait for the browser's callback, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
}

pub(crate) fn authorize(args: &AuthorizeArgs) -> Exit {
    let Some(connector) = load_connector(&args.connector) else {
        return Exit::Invalid;
    };
    let Some(runtime) = prepare(&args.config) else {
        return Exit::Invalid;
    };
    let store = FileStore::for_file(&args.config);
    let result = runtime.block_on(async {
        let engine: Engine = EngineBuilder::new().build()?;
        let pending = engine
            .begin_authorization(&connector, &store, "instance")
            .await?;
        printer::stdout(&format!("{}\n", pending.url()));
        if !args.no_browser {
            open_browser(pending.url());
        }
        printer::verbose("waiting for the browser to come back with the sign-in answer...");
        engine
            .complete_authorization(
                pending,
                &connector,
                &store,
                "instance",
                &NoObserver,
                Duration::from_secs(args.timeout),
            )
            .await
    });
    match result {
        Ok(()) => {
            printer::verbose(&format!(
                "signed in; tokens saved to `{}`",
                args.config.display()
            ));
            Exit::Success
        }
        Err(error) => report(&error, &connector),
    }
}

/// Opens `url` in the default browser; a failure only means the person opens it by hand.
fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(command)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
