//! `engine keys create|list|revoke --store URL`: the API keys callers of `engine serve` present
//! (`Authorization: Bearer KEY`). A key is printed once, at its creation, on stdout; the store
//! keeps only its MAC under a key derived from `ENGINE_SECRET_KEY`.

use engine_service::ErrorKind;
use engine_service::keys::{self, ApiKey, KeyMac, Scope};

use crate::Exit;
use crate::instances::{Format, StoreArgs, render_table};
use crate::printer;
use crate::store::{Failure, open_store, runtime};

#[derive(Debug, clap::Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Create a key and print it, once: the store keeps only its MAC (needs
    /// `ENGINE_SECRET_KEY`).
    Create {
        /// The key's name: letters, digits, `.`, `_`, `-`; one key at a time has it.
        name: String,
        /// What the key may do (repeat or separate with commas): `resources` (call resources),
        /// `instances:read` (list, show, history), `instances:write` (refresh, create, delete),
        /// `tokens:read` (reserved: no endpoint shows raw tokens yet).
        #[arg(
            long = "scope",
            value_name = "SCOPE",
            required = true,
            value_delimiter = ','
        )]
        scopes: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the keys: name, prefix, scopes, when created and revoked; never a key.
    List {
        /// `table` (default) or `json`.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its name or its prefix (`ek_<id>`): servers refuse it within seconds.
    Revoke {
        /// The key's name, or its prefix as `engine keys list` shows it.
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub(crate) fn keys(args: &KeysArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        let result = match &args.command {
            KeysCommand::Create {
                name,
                scopes,
                store,
            } => create(store, name, scopes).await,
            KeysCommand::List { format, store } => list(store, *format).await,
            KeysCommand::Revoke { key, store } => revoke(store, key).await,
        };
        result.unwrap_or_else(Failure::print)
    })
}

fn now_ms() -> u64 {
    jiff::Timestamp::now()
        .as_millisecond()
        .try_into()
        .unwrap_or(0)
}

/// An error of the keys' operations: the user's mistakes are usage errors with what to do.
fn failure(error: &engine_service::Error, store: &str) -> Failure {
    let help = match error.kind() {
        ErrorKind::NoKeySecret => {
            "set `ENGINE_SECRET_KEY` (`echo k1:$(head -c 32 /dev/urandom | base64)`), the same \
             for every `engine serve` of the store"
        }
        ErrorKind::KeyNameTaken { .. } => {
            "choose another name, or revoke the key first with `engine keys revoke NAME`"
        }
        ErrorKind::UnknownKey { .. } => "list the keys with `engine keys list`",
        ErrorKind::InvalidKeyName { .. } | ErrorKind::NoScope | ErrorKind::UnknownScope { .. } => {
            "for example `engine keys create ci --scope resources --scope instances:read`"
        }
        _ => return Failure::of_service(error, store),
    };
    Failure::new(error.to_string(), Exit::Usage).help(help)
}

async fn create(args: &StoreArgs, name: &str, scopes: &[String]) -> Result<Exit, Failure> {
    let scopes = scopes
        .iter()
        .map(|scope| Scope::parse(scope.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| failure(&error, &args.store))?;
    let opened = open_store(&args.store).await?;
    let mac = KeyMac::new(opened.keys()).map_err(|error| failure(&error, &args.store))?;
    let created = keys::create_key(&**opened.plain(), &mac, name, &scopes, now_ms())
        .await
        .map_err(|error| failure(&error, &args.store))?;
    printer::stdout(&format!("{}\n", created.reveal()));
    printer::verbose(&format!(
        "created key `{name}` ({}) with {}: it is shown only now; pass it as \
         `Authorization: Bearer KEY`",
        created.key.prefix(),
        scope_labels(&created.key)
    ));
    Ok(Exit::Success)
}

async fn list(args: &StoreArgs, format: Format) -> Result<Exit, Failure> {
    let opened = open_store(&args.store).await?;
    let listed = keys::list_keys(&**opened.plain(), now_ms())
        .await
        .map_err(|error| failure(&error, &args.store))?;
    let text = match format {
        Format::Json => {
            let items: Vec<serde_json::Value> = listed
                .iter()
                .map(|key| {
                    serde_json::json!({
                        "name": key.name,
                        "prefix": key.prefix(),
                        "scopes": key.scopes.iter().map(|scope| scope.label()).collect::<Vec<_>>(),
                        "created_at": crate::time::format_ms(key.created_at_ms),
                        "revoked_at": key.revoked_at_ms.map(crate::time::format_ms),
                    })
                })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&items).unwrap_or_default()
            )
        }
        Format::Table => {
            let mut table = vec![[
                "NAME".to_owned(),
                "PREFIX".to_owned(),
                "SCOPES".to_owned(),
                "CREATED".to_owned(),
                "REVOKED".to_owned(),
            ]];
            table.extend(listed.iter().map(|key| {
                [
                    key.name.clone(),
                    key.prefix(),
                    scope_labels(key),
                    crate::time::format_ms(key.created_at_ms),
                    key.revoked_at_ms
                        .map_or_else(|| "-".to_owned(), crate::time::format_ms),
                ]
            }));
            render_table(&table)
        }
    };
    printer::stdout(&text);
    Ok(Exit::Success)
}

async fn revoke(args: &StoreArgs, key: &str) -> Result<Exit, Failure> {
    let opened = open_store(&args.store).await?;
    let revoked = keys::revoke_key(&**opened.plain(), key, now_ms())
        .await
        .map_err(|error| failure(&error, &args.store))?;
    printer::verbose(&format!(
        "revoked key `{}` ({}): servers refuse it within {} seconds",
        revoked.name,
        revoked.prefix(),
        engine_server::KEY_CACHE_SECONDS
    ));
    Ok(Exit::Success)
}

fn scope_labels(key: &ApiKey) -> String {
    key.scopes
        .iter()
        .map(|scope| scope.label())
        .collect::<Vec<_>>()
        .join(",")
}
