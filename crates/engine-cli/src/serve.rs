//! `engine serve --store URL --connectors DIR [--webhook-url URL]`: the HTTP API, the refresh
//! scheduler and the webhook sender of engine-server, until SIGTERM or Ctrl-C. Prints where it listens, and a line per scheduled
//! refresh and failure, on stderr.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine_runtime::EngineBuilder;
use engine_server::{Event, Rate, ServeOptions, Server, WebhookSecret, Webhooks};
use engine_service::RefreshOptions;

use crate::Exit;
use crate::instances::StoreArgs;
use crate::printer;
use crate::render::{Level, Message};
use crate::run::EgressArg;
use crate::store::{Failure, open_store, runtime};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The directory of connector files; instances find theirs by the name they recorded (its
    /// path, file stem or key).
    #[arg(long, value_name = "DIR")]
    connectors: PathBuf,
    /// The address to listen on (port 0: any free port, printed once bound).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How many scheduled refreshes run at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: u32,
    /// After this many consecutive refreshes the vendor rejected, an instance is marked
    /// `needs-reauth` and no longer refreshed.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_failures: u64,
    /// The bound on each run and refresh: every request, retry and pause of it (`30s`, `5m`,
    /// or seconds).
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = crate::duration::parse_timeout)]
    timeout: Duration,
    /// The requests each API key may make: `N/s` or `N/m`, bursts of a second's worth; past
    /// it, `429` with `Retry-After`.
    #[arg(long, value_name = "N/s", default_value = "100/s", value_parser = Rate::parse)]
    rate: Rate,
    /// How long a claim on a due instance lasts, renewed while its refresh runs: a process that
    /// dies or stops leaves its instances to the others after this.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = crate::duration::parse_timeout)]
    lease: Duration,
    /// Deliver the store's events (refresh failed, needs re-auth, recovered) to this URL as
    /// signed webhooks (Standard Webhooks), with the secret `ENGINE_WEBHOOK_SECRET`
    /// (`whsec_...`).
    #[arg(long, value_name = "URL")]
    webhook_url: Option<url::Url>,
    /// The service's URL as browsers and vendors reach it (`https://engine.example.com`): a
    /// sign-in's redirect URI is it and `/v1/oauth/callback` (default: `http://` and the address
    /// listened on).
    #[arg(long, value_name = "URL", value_parser = parse_public_url)]
    public_url: Option<String>,
    /// Serve the status page `/` to callers from any address. By default it answers loopback
    /// callers only, since it lists every key's instances: open it only behind a proxy that
    /// authenticates.
    #[arg(long)]
    open_status_page: bool,
    /// Which addresses vendor requests may connect to: `public` (public and loopback),
    /// `private` (also private networks), `any` (also link-local, such as the cloud metadata
    /// address).
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = EgressArg::Public)]
    egress: EgressArg,
    /// How long a resource call may run on an instance's state this process read or wrote less
    /// than this long ago, kept in memory (decrypted) instead of reading the store again; `0`
    /// turns it off. A change made by another process is seen at the latest this long after it
    /// (a token it rotated at once, on the vendor's 401); at most a minute.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_state_cache)]
    state_cache: Duration,
}

/// `0`, or a duration of at most a minute.
fn parse_state_cache(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.parse::<f64>().is_ok_and(|seconds| seconds == 0.0)
        || humantime::parse_duration(text).is_ok_and(|duration| duration.is_zero())
    {
        return Ok(Duration::ZERO);
    }
    match crate::duration::parse_timeout(text) {
        Ok(duration) if duration <= Duration::from_mins(1) => Ok(duration),
        _ => Err(
            "expected `0` (off) or a duration such as `1s` or `500ms`, at most a minute (`1m`)"
                .to_owned(),
        ),
    }
}

/// An `http(s)` URL without a query or fragment.
fn parse_public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an `http://` or `https://` URL".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("expected a URL without a query or fragment".to_owned());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The environment variable that holds the webhooks' signing secret (never an argument: it
/// would show in the process list).
const WEBHOOK_SECRET_VARIABLE: &str = "ENGINE_WEBHOOK_SECRET";

pub(crate) fn serve(args: &ServeArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        match run(args).await {
            Ok(exit) => exit,
            Err(failure) => failure.print(),
        }
    })
}

/// The webhooks `--webhook-url` asks for, signed with the secret of
/// [`WEBHOOK_SECRET_VARIABLE`].
fn webhooks(args: &ServeArgs) -> Result<Option<Webhooks>, Failure> {
    let Some(url) = &args.webhook_url else {
        return Ok(None);
    };
    let help = format!(
        "set `{WEBHOOK_SECRET_VARIABLE}` to `whsec_` and the base64 of 24 to 64 random bytes \
         (`echo whsec_$(head -c 32 /dev/urandom | base64)`); receivers check signatures with it"
    );
    let Ok(text) = std::env::var(WEBHOOK_SECRET_VARIABLE) else {
        return Err(Failure::new(
            format!("`--webhook-url` needs a signing secret in `{WEBHOOK_SECRET_VARIABLE}`"),
            Exit::Usage,
        )
        .help(help));
    };
    let secret = WebhookSecret::parse(&text).map_err(|message| {
        Failure::new(
            format!("invalid `{WEBHOOK_SECRET_VARIABLE}`: {message}"),
            Exit::Usage,
        )
        .help(help.clone())
    })?;
    Ok(Some(Webhooks::new(url.clone(), secret)))
}

async fn run(args: &ServeArgs) -> Result<Exit, Failure> {
    let webhooks = webhooks(args)?;
    let store = &args.store.store;
    let opened = open_store(store).await?;
    let (registry, unloadable) = engine_service::Registry::load(&args.connectors)
        .map_err(|error| Failure::of_service(&error, store))?;
    // A changed file is picked up within a second: a call does not read its time each time.
    let registry = registry.recheck_every(Duration::from_secs(1));
    // A connector that does not load is said once; its instances fail until it is fixed.
    for error in &unloadable {
        crate::run::print_load_error(error);
    }
    let engine = EngineBuilder::new()
        .timeout(args.timeout)
        .egress(args.egress.into())
        .build()
        .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
    let options = ServeOptions {
        refresh: RefreshOptions {
            jobs: args.jobs as usize,
            max_failures: args.max_failures,
            lease: args.lease,
            ..RefreshOptions::default()
        },
        rate: args.rate,
        webhooks,
        public_url: args.public_url.clone(),
        open_status_page: args.open_status_page,
        state_cache: args.state_cache,
        ..ServeOptions::new(args.listen)
    };
    let server = Server::bind(opened, registry, engine, options, Arc::new(print_event))
        .await
        .map_err(|error| match error {
            engine_server::Error::Keys(_) => Failure::new(error.to_string(), Exit::Usage).help(
                "callers present API keys, kept as MACs under a key derived from it: set \
                 `ENGINE_SECRET_KEY` (`echo k1:$(head -c 32 /dev/urandom | base64)`), the one \
                 `engine keys create` used",
            ),
            engine_server::Error::Webhooks(_) => Failure::new(error.to_string(), Exit::Transport),
            _ => Failure::new(error.to_string(), Exit::Invalid)
                .help("pass a free address with `--listen ADDR` (`127.0.0.1:0`: any free port)"),
        })?;
    let addr = server
        .local_addr()
        .map_err(|error| Failure::new(error.to_string(), Exit::Invalid))?;
    printer::verbose(&format!("listening on http://{addr}"));
    server
        .run(shutdown())
        .await
        .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
    printer::verbose("stopped");
    Ok(Exit::Success)
}

/// Resolves at SIGTERM or Ctrl-C.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A line on stderr per scheduled refresh and failure.
fn print_event(event: Event) {
    match event {
        Event::Refreshed { id } => printer::verbose(&format!("refreshed: {id}")),
        Event::Failed {
            id,
            outcome,
            message,
            retry_at_ms,
        } => {
            let retry = retry_at_ms
                .and_then(|ms| i64::try_from(ms).ok())
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map_or_else(String::new, |at| format!(" (next attempt at {at})"));
            let title = format!("{outcome}: {id}: {message}{retry}");
            printer::error(&Message::new(Level::Warning, &title));
        }
        Event::StoreFailed { message, retry_in } => {
            let title = format!(
                "cannot read the store's schedule: {message} (again in {})",
                humantime::format_duration(retry_in)
            );
            printer::error(&Message::new(Level::Warning, &title));
        }
        Event::PurgeFailed { message } => {
            let title = format!(
                "cannot remove the store's expired records: {message} (again in {})",
                humantime::format_duration(engine_server::scheduler::PURGE_EVERY)
            );
            printer::error(&Message::new(Level::Warning, &title));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_state_cache;

    #[test]
    fn the_state_cache_is_zero_or_up_to_a_minute() {
        for (text, expected) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("250ms", Duration::from_millis(250)),
            ("1m", Duration::from_mins(1)),
        ] {
            assert_eq!(parse_state_cache(text), Ok(expected), "{text}");
        }
        for text in ["61s", "1h", "-1", "soon"] {
            let error = parse_state_cache(text).unwrap_err();
            assert!(error.contains("at most a minute"), "{text}: {error}");
        }
    }
}
