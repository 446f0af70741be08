//! Opening a store for a command: [`engine_service`]'s opening, its notices shown and its
//! errors turned into the command's messages and exit codes ([`Failure`]).

use std::sync::Arc;

use engine_service::{ErrorKind, Opened, SecretKeys};
use engine_spec::Connector;
use engine_store::{InstanceStore, StoreError, StoreErrorKind};

use crate::Exit;
use crate::printer;
use crate::render::{Level, Message};

/// A failed command: its message, hint and exit code.
pub(crate) struct Failure {
    title: String,
    help: Option<String>,
    causes: Vec<String>,
    exit: Exit,
}

impl Failure {
    pub(crate) fn new(title: String, exit: Exit) -> Self {
        Self {
            title,
            help: None,
            causes: Vec::new(),
            exit,
        }
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn print(self) -> Exit {
        let mut message = Message::new(Level::Error, &self.title);
        message.help = self.help.as_deref();
        message.causes = self.causes;
        printer::error(&message);
        self.exit
    }

    /// An operation's error: a store's as [`Failure::of_store`], a variable's (the store's lock
    /// lifetime, a secret key) a usage error with what to write, a connector's exit 3.
    pub(crate) fn of_service(error: &engine_service::Error, store: &str) -> Self {
        let help = match error.kind() {
            ErrorKind::Store(error) => return Self::of_store(error, store),
            ErrorKind::SqlNotBuilt { .. } => Some(
                "connectors/quickstart.sh builds it so; build the full engine with \
                 `cargo build --release -p engine-cli` (default features)",
            ),
            ErrorKind::InvalidLockLifetime { .. } => Some("write a duration such as `30s` or `2m`"),
            ErrorKind::InvalidSecretKey { .. } => Some(
                "write `ID:BASE64`, 32 random bytes in base64: `echo k1:$(head -c 32 /dev/urandom | base64)`",
            ),
            ErrorKind::SecretKeyFile { .. } => None,
            ErrorKind::ConnectorUnreadable { .. }
            | ErrorKind::InvalidConnector { .. }
            | ErrorKind::UnknownConnector { .. } => {
                return Self::new(error.to_string(), Exit::Invalid);
            }
            _ => return Self::new(error.to_string(), Exit::VendorError),
        };
        let failure = Self::new(error.to_string(), Exit::Usage);
        match help {
            Some(help) => failure.help(help),
            None => failure,
        }
    }

    /// A store's error: its message and causes; an unknown instance is exit 3 with a hint, a
    /// backend failure exit 1.
    pub(crate) fn of_store(error: &StoreError, store: &str) -> Self {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let (exit, help) = match error.kind() {
            StoreErrorKind::UnknownInstance { .. } | StoreErrorKind::NotFound { .. } => (
                Exit::Invalid,
                Some(format!(
                    "list the instances with `engine instances list --store {}`, or import one with `engine instances import FILE --store {0}`",
                    engine_stores_sql::display_url(store)
                )),
            ),
            StoreErrorKind::InvalidInstanceId { .. } => (Exit::Invalid, None),
            StoreErrorKind::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                (
                    Exit::VendorError,
                    Some(
                        "the store can be listed and read where it is read-only; to change it, \
                         mount it read-write or give this user write access to its files and \
                         their directory"
                            .to_owned(),
                    ),
                )
            }
            _ => (Exit::VendorError, None),
        };
        Self {
            title: error.to_string(),
            help,
            causes,
            exit,
        }
    }
}

/// A multi-threaded runtime for the store's async calls; `None` after printing why it failed.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            let message = format!("cannot start the async runtime: {error}");
            printer::error(&Message::new(Level::Error, &message));
            None
        }
    }
}

/// Opens the store `url` names, without the encryption layer yet ([`engine_service::open_store`]),
/// and shows its notices.
pub(crate) async fn open_store(url: &str) -> Result<Opened, Failure> {
    let opened = engine_service::open_store(url)
        .await
        .map_err(|error| Failure::of_service(&error, url))?;
    for notice in opened.plain().take_notices() {
        printer::verbose(&format!("note: {notice}"));
    }
    Ok(opened)
}

/// Opens the store `url` names; secrets are encrypted by the rule for secret names.
pub(crate) async fn open_url(url: &str) -> Result<Arc<dyn InstanceStore>, Failure> {
    Ok(open_store(url).await?.sealed(None))
}

/// Opens the store `url` names for the instances of `connector`: secrets are encrypted by the
/// connector's rule.
pub(crate) async fn open_for(
    url: &str,
    connector: &Connector,
) -> Result<Arc<dyn InstanceStore>, Failure> {
    Ok(open_store(url).await?.sealed(Some(connector)))
}

/// The keys of the environment ([`SecretKeys::from_env`]); `None` without a key.
pub(crate) fn secret_keys() -> Result<Option<SecretKeys>, Failure> {
    SecretKeys::from_env().map_err(|error| Failure::of_service(&error, ""))
}
