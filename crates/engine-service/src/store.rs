//! Opening a store from its URL, and the encryption rules: which values of an instance are
//! encrypted ([`secret_rule`]), with which keys ([`SecretKeys`], from the environment).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine_spec::Connector;
use engine_store::{InstanceStore, State, StoreError};
use engine_stores_sql::{EncryptedStore, IsSecret, SecretKey};

use crate::{Error, ErrorKind};

/// How long a writer that is not a refresh (the failure count, the status, a rekey, a set of
/// values) waits for an instance's lock.
pub const WRITE_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The keys secrets are encrypted with: the current one, and old ones still read.
#[derive(Clone)]
pub struct SecretKeys {
    /// The key new values are encrypted with.
    pub current: SecretKey,
    /// Keys values encrypted earlier are still decrypted with.
    pub old: Vec<SecretKey>,
}

/// Names the keys by id, never their bytes.
impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SecretKeys")
            .field("current", &self.current.id())
            .field(
                "old",
                &self.old.iter().map(SecretKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SecretKeys {
    /// The keys of `ENGINE_SECRET_KEY` (or the file `ENGINE_SECRET_KEY_FILE`) and
    /// `ENGINE_SECRET_KEYS_OLD` (comma-separated), each `ID:BASE64`; `None` without a key.
    /// Fails when a key cannot be parsed or the file cannot be read.
    pub fn from_env() -> Result<Option<Self>, Error> {
        let current = match (
            std::env::var("ENGINE_SECRET_KEY"),
            std::env::var_os("ENGINE_SECRET_KEY_FILE"),
        ) {
            (Ok(text), _) => text,
            (Err(_), Some(path)) => {
                fs_err::read_to_string(&path).map_err(|error| ErrorKind::SecretKeyFile { error })?
            }
            (Err(_), None) => return Ok(None),
        };
        let invalid = |variable: &'static str| {
            move |message: String| Error::from(ErrorKind::InvalidSecretKey { variable, message })
        };
        let current = SecretKey::parse(&current).map_err(invalid("ENGINE_SECRET_KEY"))?;
        let old = std::env::var("ENGINE_SECRET_KEYS_OLD")
            .unwrap_or_default()
            .split(',')
            .filter(|text| !text.trim().is_empty())
            .map(|text| SecretKey::parse(text).map_err(invalid("ENGINE_SECRET_KEYS_OLD")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self { current, old }))
    }
}

/// A store as opened, with the keys of the environment: the encryption layer goes on top with
/// the rule of the connector of the instances it serves ([`Opened::sealed`]).
pub struct Opened {
    plain: Arc<dyn InstanceStore>,
    keys: Option<SecretKeys>,
}

/// Says whether keys are set and which, never their bytes.
impl std::fmt::Debug for Opened {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Opened")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Opened {
    /// A store opened elsewhere, with these keys.
    pub fn new(plain: Arc<dyn InstanceStore>, keys: Option<SecretKeys>) -> Self {
        Self { plain, keys }
    }

    /// The store without the encryption layer: values as stored (encrypted ones stay so).
    pub fn plain(&self) -> &Arc<dyn InstanceStore> {
        &self.plain
    }

    /// The keys the environment set, if any.
    pub fn keys(&self) -> Option<&SecretKeys> {
        self.keys.as_ref()
    }

    /// The store, encrypting the values of secret keys when a key is set: the keys `connector`
    /// says are secret ([`secret_rule`]). Without a key, the store for a connector (a command
    /// that sends values) refuses to hand out encrypted values.
    pub fn sealed(&self, connector: Option<&Connector>) -> Arc<dyn InstanceStore> {
        match &self.keys {
            Some(keys) => Arc::new(EncryptedStore::new(
                Arc::clone(&self.plain),
                keys.current.clone(),
                keys.old.clone(),
                secret_rule(connector),
            )),
            // A command that sends values refuses encrypted ones when it has no key.
            None if connector.is_some() => Arc::new(EncryptedStore::without_key(
                Arc::clone(&self.plain),
                secret_rule(connector),
            )),
            None => Arc::clone(&self.plain),
        }
    }
}

/// Which stored values are encrypted: with the instance's connector known, the connector's own
/// rule ([`Connector::is_secret_key`]: its `PASSWORD` properties and `"secret": true` ones, the
/// token keys it saves, the keys it sends as credentials, and names like secrets); without it,
/// the rule for names alone.
pub fn secret_rule(connector: Option<&Connector>) -> IsSecret {
    let Some(connector) = connector else {
        return Arc::new(is_secret_key);
    };
    // The connector's decision for each key it knows, taken once; other keys by their name,
    // as `Connector::is_secret_key` decides them.
    let known: HashMap<String, bool> = connector
        .keys()
        .map(|key| (key.to_owned(), connector.is_secret_key(key)))
        .collect();
    Arc::new(move |key: &str| {
        known
            .get(key)
            .copied()
            .unwrap_or_else(|| is_secret_key(key))
    })
}

/// The rule for which stored values are encrypted: keys named like secrets (passwords,
/// tokens, secrets, API keys), except those that never are (`expires_in`, URLs).
fn is_secret_key(key: &str) -> bool {
    !engine_spec::is_never_secret(key) && engine_spec::is_secret_name(key)
}

/// True when `url` names a database store (SQLite, PostgreSQL).
fn is_database(url: &str) -> bool {
    ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
}

/// Opens the store `url` names (`sqlite:PATH`, `postgres://...`, `file:DIR`), without the
/// encryption layer yet, with the keys of the environment ([`SecretKeys::from_env`], read
/// first: an invalid key fails before the store is touched). `ENGINE_STORE_LOCK_LIFETIME`
/// (`30s`, `2m`) sets how long a PostgreSQL lock outlives a holder that went silent. The store's
/// notices (`InstanceStore::take_notices`) are the caller's to show. Fails on a database URL
/// in a build without the `sql` feature, an invalid variable, or the store's own error.
pub async fn open_store(url: &str) -> Result<Opened, Error> {
    if is_database(url) && !cfg!(feature = "sql") {
        return Err(ErrorKind::SqlNotBuilt {
            url: engine_stores_sql::display_url(url),
        }
        .into());
    }
    let mut options = engine_stores_sql::Options::default();
    if let Ok(text) = std::env::var("ENGINE_STORE_LOCK_LIFETIME") {
        match humantime::parse_duration(&text) {
            Ok(lifetime) => options.lock_lifetime = Some(lifetime),
            Err(error) => {
                return Err(ErrorKind::InvalidLockLifetime {
                    text,
                    message: error.to_string(),
                }
                .into());
            }
        }
    }
    let keys = SecretKeys::from_env()?;
    let plain = engine_stores_sql::open_with(url, &options).await?;
    Ok(Opened { plain, keys })
}

/// Opens the store `url` names with no option and no key: values as stored, for a rekey.
pub async fn open_plain(url: &str) -> Result<Arc<dyn InstanceStore>, Error> {
    Ok(engine_stores_sql::open(url).await?)
}

/// Opens the store `url` names; secrets are encrypted by the rule for secret names.
pub async fn open_url(url: &str) -> Result<Arc<dyn InstanceStore>, Error> {
    Ok(open_store(url).await?.sealed(None))
}

/// Opens the store `url` names for the instances of `connector`: secrets are encrypted by the
/// connector's rule.
pub async fn open_for(url: &str, connector: &Connector) -> Result<Arc<dyn InstanceStore>, Error> {
    Ok(open_store(url).await?.sealed(Some(connector)))
}

/// Changes `id` under its lock ([`engine_store::update`]), waiting at most
/// [`WRITE_LOCK_TIMEOUT`]; `waiting` is called when another process holds the lock. Returns
/// whether `change` changed the state, or the store's error.
pub async fn update(
    store: &dyn InstanceStore,
    id: &str,
    waiting: &(dyn Fn() + Sync),
    change: impl FnOnce(&mut State) -> Result<bool, StoreError> + Send,
) -> Result<bool, StoreError> {
    engine_store::update(store, id, Some(WRITE_LOCK_TIMEOUT), waiting, change).await
}

/// Sets `values` (key, value) on the instance `id` under its lock (a refresh in progress is
/// waited for, never overwritten; `waiting` is called when another process holds the lock). A
/// changed secret (by `is_secret`, the connector's rule: a credential) clears the instance's
/// rejection count and `needs-reauth` mark. Fails with the store's error.
pub async fn set_values(
    store: &dyn InstanceStore,
    id: &str,
    values: Vec<(String, String)>,
    is_secret: &IsSecret,
    waiting: &(dyn Fn() + Sync),
) -> Result<(), StoreError> {
    update(store, id, waiting, |state| {
        let mut credentials = false;
        for (key, value) in values {
            let value = serde_json::Value::String(value);
            if state.get(&key) != Some(&value) {
                credentials |= is_secret(&key);
            }
            state.insert(key, value);
        }
        if credentials {
            engine_store::Schedule::read(state).cleared().put(state);
        }
        Ok(true)
    })
    .await
    .map(|_| ())
}

/// What [`rekey`] did: how many instances it re-encrypted, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rekeyed {
    /// The instances whose stored form changed.
    pub changed: usize,
    /// Every instance of the store.
    pub total: usize,
}

/// Re-encrypts the secrets of every instance of `plain` (a store opened without the encryption
/// layer, [`open_plain`]) with `keys.current`, reading values encrypted with the old keys or not
/// encrypted yet, each instance under its connector's rule (connectors found by their recorded
/// name; a value stored encrypted stays so whatever the rule says), then scrubs what the store
/// keeps of the old forms. `waiting(id)` is called when another process holds an instance's
/// lock. Fails with the store's first error.
pub async fn rekey(
    plain: &Arc<dyn InstanceStore>,
    keys: &SecretKeys,
    waiting: &(dyn Fn(&str) + Sync),
) -> Result<Rekeyed, Error> {
    let mut registry = crate::Registry::new();
    let mut stores: HashMap<Option<String>, EncryptedStore> = HashMap::new();
    let mut rekeyed = Rekeyed {
        changed: 0,
        total: 0,
    };
    let mut page = engine_store::Page {
        after: None,
        limit: 1000,
        ..engine_store::Page::default()
    };
    loop {
        let listing = plain.list(page.clone()).await?;
        for summary in &listing.instances {
            rekeyed.total += 1;
            let store = stores.entry(summary.connector.clone()).or_insert_with(|| {
                let connector = summary
                    .connector
                    .as_deref()
                    .and_then(|name| registry.get(name).ok());
                EncryptedStore::new(
                    Arc::clone(plain),
                    keys.current.clone(),
                    keys.old.clone(),
                    secret_rule(connector.as_deref()),
                )
            });
            let id = &summary.id;
            if store
                .rekey(id, Some(WRITE_LOCK_TIMEOUT), &|| waiting(id))
                .await?
            {
                rekeyed.changed += 1;
            }
        }
        match listing.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    plain.scrub().await?;
    Ok(rekeyed)
}

/// Clears the failure state (the counts, a cooldown, a [`crate::NEEDS_REAUTH`] mark) after a
/// success outside a scheduled refresh (a sign-in); the instance is due at once, so that the
/// next look computes its schedule from the token, and an instance that had failed is published
/// as recovered ([`crate::events`]). Returns a [`crate::Warning`] when it could not be cleared
/// or the event not published.
pub async fn clear_needs_reauth(store: &dyn InstanceStore, id: &str) -> Result<(), crate::Warning> {
    let had_failed = crate::events::failed_before(store, id).await;
    let cleared = clear_failures(store, id).await?;
    match cleared.or(had_failed) {
        Some(from) => crate::events::publish_recovered(store, id, from, "sign-in", true).await,
        None => Ok(()),
    }
}

/// Clears the failure state of `id` ([`clear_needs_reauth`] without its event). Returns the
/// status it cleared; `None` when there was nothing to clear.
pub(crate) async fn clear_failures(
    store: &dyn InstanceStore,
    id: &str,
) -> Result<Option<engine_store::ScheduleStatus>, crate::Warning> {
    let cleared = async {
        let read = store.load(id).await?;
        if !engine_store::Schedule::read(&read.state).has_failures() {
            return Ok(None);
        }
        let mut before = None;
        let quiet = || {};
        engine_store::update(store, id, Some(WRITE_LOCK_TIMEOUT), &quiet, |state| {
            let schedule = engine_store::Schedule::read(state);
            if !schedule.has_failures() {
                return Ok(false);
            }
            before = Some(schedule.status);
            schedule.cleared().put(state);
            Ok(true)
        })
        .await?;
        Ok(before)
    };
    cleared.await.map_err(|error| crate::Warning::FailuresKept {
        instance: id.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use engine_store::MemoryStore;

    use super::*;

    /// `{:?}` of the keys names them by id: a key's bytes never show.
    #[test]
    fn debug_of_keys_shows_ids_only() {
        let encoded = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let keys = SecretKeys {
            current: SecretKey::parse(&format!("k2:{encoded}")).unwrap(),
            old: vec![SecretKey::parse(&format!("k1:{encoded}")).unwrap()],
        };
        let opened = Opened::new(Arc::new(MemoryStore::new()), Some(keys));
        let text = format!("{opened:?}");
        assert!(text.contains(r#"current: "k2", old: ["k1"]"#), "{text}");
        assert!(!text.contains(encoded), "{text}");
    }

    /// A rekey encrypts the values named like secrets of an instance without a connector, and
    /// the store with the keys reads them back in clear.
    #[tokio::test]
    async fn rekey_encrypts_secrets_that_the_sealed_store_reads_back() {
        let encoded = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let keys = SecretKeys {
            current: SecretKey::parse(&format!("k1:{encoded}")).unwrap(),
            old: Vec::new(),
        };
        let memory = MemoryStore::new();
        let serde_json::Value::Object(state) = serde_json::json!({
            "client.secret": "FAKE-secret-1111",
            "base.url": "http://127.0.0.1:1",
        }) else {
            unreachable!()
        };
        memory.insert("cust42", state);
        let plain: Arc<dyn InstanceStore> = Arc::new(memory);
        let waited = |_: &str| panic!("nothing holds a lock");

        let rekeyed = rekey(&plain, &keys, &waited).await.unwrap();
        assert_eq!(
            rekeyed,
            Rekeyed {
                changed: 1,
                total: 1
            }
        );
        let stored = plain.load("cust42").await.unwrap().state;
        assert!(engine_stores_sql::is_encrypted(&stored["client.secret"]));
        assert_eq!(stored["base.url"], "http://127.0.0.1:1");
        let sealed = Opened::new(Arc::clone(&plain), Some(keys.clone())).sealed(None);
        let read = sealed.load("cust42").await.unwrap().state;
        assert_eq!(read["client.secret"], "FAKE-secret-1111");

        // Everything is under the current key already: nothing changes.
        let again = rekey(&plain, &keys, &waited).await.unwrap();
        assert_eq!(
            again,
            Rekeyed {
                changed: 0,
                total: 1
            }
        );
    }

    /// A changed credential clears the rejection count and the `needs-reauth` mark; a plain
    /// value, or a secret set to what it was, keeps them.
    #[tokio::test]
    async fn a_changed_secret_clears_needs_reauth() {
        let memory = MemoryStore::new();
        let serde_json::Value::Object(state) = serde_json::json!({
            "client.secret": "FAKE-old-1111",
            engine_store::STATUS_KEY: crate::NEEDS_REAUTH,
            engine_store::FAILURES_KEY: 3,
        }) else {
            unreachable!()
        };
        memory.insert("cust42", state);
        let rule = secret_rule(None);
        let quiet = || {};
        let set = |key: &str, value: &str| vec![(key.to_owned(), value.to_owned())];
        let marked = |state: &State| engine_store::Schedule::read(state).has_failures();

        set_values(
            &memory,
            "cust42",
            set("base.url", "http://127.0.0.1:1"),
            &rule,
            &quiet,
        )
        .await
        .unwrap();
        set_values(
            &memory,
            "cust42",
            set("client.secret", "FAKE-old-1111"),
            &rule,
            &quiet,
        )
        .await
        .unwrap();
        assert!(marked(&memory.load("cust42").await.unwrap().state));
        set_values(
            &memory,
            "cust42",
            set("client.secret", "FAKE-new-2222"),
            &rule,
            &quiet,
        )
        .await
        .unwrap();
        let state = memory.load("cust42").await.unwrap().state;
        assert!(!marked(&state));
        assert_eq!(state["client.secret"], "FAKE-new-2222");
    }

    /// Without a connector, values named like secrets are encrypted; with one, its own rule.
    #[test]
    fn the_rule_without_a_connector_goes_by_name() {
        let rule = secret_rule(None);
        assert!(rule("client.secret"));
        assert!(rule("refresh.token"));
        assert!(!rule("expires_in"));
        assert!(!rule("base.url"));
    }
}
