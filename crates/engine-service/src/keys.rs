//! API keys for the service: created with scopes ([`create_key`]), shown once, kept in the
//! instance store as records ([`InstanceStore::put_record`]) holding only an HMAC-SHA-256 of
//! the key under a server key derived from `ENGINE_SECRET_KEY` ([`KeyMac`]), listed
//! ([`list_keys`]) and revoked ([`revoke_key`]); and the owner an instance records
//! ([`owner_of`], [`set_owner`]).
//!
//! A key reads `ek_<id>_<secret>`: `ek_<id>` is its prefix, public, which names it in
//! listings and logs; the secret is 32 random bytes in hex. The record of a key is found by its
//! id, and the MAC of the whole key is compared in constant time ([`StoredKey::verify`]).

use std::fmt::Write as _;

use engine_store::{InstanceStore, OWNER_KEY, Record, State, StoreErrorKind};
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::{Error, ErrorKind, SecretKeys};

/// The namespace of the keys' records, by key id.
pub const KEYS_NAMESPACE: &str = "api-keys";

/// The namespace mapping the name of each key that is not revoked to its id: a name is used by
/// one key at a time.
pub const NAMES_NAMESPACE: &str = "api-key-names";

/// What [`SecretKey::derive`](engine_stores_sql::SecretKey::derive) is told the server key is for.
const MAC_PURPOSE: &str = "api-keys";

/// The start of every key.
const KEY_START: &str = "ek_";
/// Hex digits of a key's id (6 bytes).
const ID_LEN: usize = 12;
/// Hex digits of a key's secret (32 bytes).
const SECRET_LEN: usize = 64;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a key may do. Each endpoint of the service needs one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// Call the resources of instances (`/v1/instances/{id}/resources/...`).
    Resources,
    /// Read instances: list, show (secrets masked), history.
    InstancesRead,
    /// Manage instances: refresh, create, delete.
    InstancesWrite,
    /// Read raw tokens: reserved for an unmasked view; no endpoint shows raw tokens yet.
    TokensRead,
}

impl Scope {
    /// Every scope, in the order listings show them.
    pub const ALL: [Self; 4] = [
        Self::Resources,
        Self::InstancesRead,
        Self::InstancesWrite,
        Self::TokensRead,
    ];

    /// Its name: `resources`, `instances:read`, `instances:write`, `tokens:read`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Resources => "resources",
            Self::InstancesRead => "instances:read",
            Self::InstancesWrite => "instances:write",
            Self::TokensRead => "tokens:read",
        }
    }

    /// The scope `label` names.
    ///
    /// Fails with [`ErrorKind::UnknownScope`].
    pub fn parse(label: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.label() == label)
            .ok_or_else(|| {
                ErrorKind::UnknownScope {
                    scope: label.to_owned(),
                }
                .into()
            })
    }
}

/// A key as listings show it: never its secret, nor its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its public id (the `<id>` of `ek_<id>_...`); instances it creates record it as their
    /// owner.
    pub id: String,
    /// The name it was created with.
    pub name: String,
    /// What it may do, sorted.
    pub scopes: Vec<Scope>,
    /// When it was created, epoch milliseconds.
    pub created_at_ms: u64,
    /// When it was revoked, epoch milliseconds; `None` while it is valid.
    pub revoked_at_ms: Option<u64>,
}

impl ApiKey {
    /// Its prefix, `ek_<id>`: public, it names the key.
    pub fn prefix(&self) -> String {
        format!("{KEY_START}{}", self.id)
    }

    /// True when it has `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A key as stored: the key, and the MAC its secret is checked against.
#[derive(Clone)]
pub struct StoredKey {
    /// The key.
    pub key: ApiKey,
    /// HMAC-SHA-256 of the whole key under the server key `mac_key`.
    mac: Vec<u8>,
    /// The id of the `ENGINE_SECRET_KEY` key the MAC was made under.
    mac_key: String,
    /// The record's version, for a revocation's conditional write.
    version: u64,
}

/// Names the key, never its MAC.
impl std::fmt::Debug for StoredKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredKey")
            .field("key", &self.key)
            .field("mac_key", &self.mac_key)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// True when `presented` is this key: its MAC under the server key it was made with is the
    /// stored one, compared in constant time. A key whose server key is no longer set
    /// (`ENGINE_SECRET_KEY`, `ENGINE_SECRET_KEYS_OLD`) never verifies.
    pub fn verify(&self, mac: &KeyMac, presented: &str) -> bool {
        mac.mac_of(&self.mac_key, presented)
            .is_some_and(|computed| computed.verify_slice(&self.mac).is_ok())
    }

    fn from_record(record: &Record) -> Result<Self, Error> {
        let malformed = || {
            Error::from(ErrorKind::MalformedKey {
                id: record.id.clone(),
            })
        };
        let value = &record.value;
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        let mut scopes = value
            .get("scopes")
            .and_then(Value::as_array)
            .ok_or_else(malformed)?
            .iter()
            .filter_map(|scope| Scope::parse(scope.as_str()?).ok())
            .collect::<Vec<_>>();
        scopes.sort();
        let mac = text("mac").and_then(from_hex).ok_or_else(malformed)?;
        Ok(Self {
            key: ApiKey {
                id: record.id.clone(),
                name: text("name").ok_or_else(malformed)?.to_owned(),
                scopes,
                created_at_ms: value
                    .get("created_at_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
                revoked_at_ms: value.get("revoked_at_ms").and_then(Value::as_u64),
            },
            mac,
            mac_key: text("mac_key").ok_or_else(malformed)?.to_owned(),
            version: record.version,
        })
    }

    fn to_value(&self) -> Value {
        json!({
            "name": self.key.name,
            "scopes": self.key.scopes.iter().map(|scope| scope.label()).collect::<Vec<_>>(),
            "created_at_ms": self.key.created_at_ms,
            "revoked_at_ms": self.key.revoked_at_ms,
            "mac": to_hex(&self.mac),
            "mac_key": self.mac_key,
        })
    }
}

/// A key just created: the only time its secret is known.
pub struct CreatedKey {
    /// The key.
    pub key: ApiKey,
    secret: String,
}

/// Never shows the key's secret.
impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreatedKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl CreatedKey {
    /// The whole key, `ek_<id>_<secret>`: to be shown once, and never stored.
    pub fn reveal(&self) -> &str {
        &self.secret
    }
}

/// The server keys API keys get their MAC under: one per `ENGINE_SECRET_KEY` key (the current one
/// and the old ones), each derived from it for this use only.
#[derive(Clone)]
pub struct KeyMac {
    /// `(key id, derived key)`, the current key first.
    keys: Vec<(String, [u8; 32])>,
}

/// Names the keys by id, never their bytes.
impl std::fmt::Debug for KeyMac {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        formatter.debug_tuple("KeyMac").field(&ids).finish()
    }
}

impl KeyMac {
    /// The server keys derived from `keys` (the environment's, [`SecretKeys::from_env`]).
    ///
    /// Fails with [`ErrorKind::NoKeySecret`] without a key: API keys are never stored under a
    /// weaker secret.
    pub fn new(keys: Option<&SecretKeys>) -> Result<Self, Error> {
        Self::for_purpose(keys, MAC_PURPOSE)
    }

    /// The keys derived from `keys` for `purpose` alone (another use of the same derivation:
    /// a MAC under one purpose's keys is worthless under another's).
    pub(crate) fn for_purpose(keys: Option<&SecretKeys>, purpose: &str) -> Result<Self, Error> {
        let keys = keys.ok_or(ErrorKind::NoKeySecret)?;
        Ok(Self {
            keys: std::iter::once(&keys.current)
                .chain(&keys.old)
                .map(|key| (key.id().to_owned(), key.derive(purpose)))
                .collect(),
        })
    }

    /// The MAC of `presented` under the server key `id`, unfinished; `None` without that key.
    pub(crate) fn mac_of(&self, id: &str, presented: &str) -> Option<HmacSha256> {
        let (_, key) = self.keys.iter().find(|(key_id, _)| key_id == id)?;
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(presented.as_bytes());
        Some(mac)
    }

    /// The id of the current server key.
    pub(crate) fn current(&self) -> &str {
        self.keys.first().map_or("", |(id, _)| id.as_str())
    }
}

/// The id `presented` names when it has the shape of a key (`ek_` + 12 hex digits + `_` + 64
/// hex digits); `None` otherwise.
pub fn key_id_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_START)?;
    let (id, secret) = rest.split_at_checked(ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    // Every byte looked at, without a branch per byte: the compiler does 16 or 32 at once.
    let hex = |text: &str, len: usize| {
        text.len() == len
            && text.as_bytes().iter().fold(true, |hex, byte| {
                hex & (byte.is_ascii_digit() | (b'a'..=b'f').contains(byte))
            })
    };
    (hex(id, ID_LEN) && hex(secret, SECRET_LEN)).then_some(id)
}

/// Creates the key `name` with `scopes` in `store`, its MAC under `mac`'s current key, at
/// `now_ms`; the returned key is the only place its secret is.
///
/// Fails with [`ErrorKind::InvalidKeyName`] for a name that is not 1 to 200 ASCII letters,
/// digits, `.`, `_` or `-`; [`ErrorKind::NoScope`] without a scope; [`ErrorKind::KeyNameTaken`]
/// when a key that is not revoked has the name; and the store's error.
pub async fn create_key(
    store: &dyn InstanceStore,
    mac: &KeyMac,
    name: &str,
    scopes: &[Scope],
    now_ms: u64,
) -> Result<CreatedKey, Error> {
    if engine_store::valid_id(name).is_err() {
        return Err(ErrorKind::InvalidKeyName {
            name: name.to_owned(),
        }
        .into());
    }
    if scopes.is_empty() {
        return Err(ErrorKind::NoScope.into());
    }
    let id = to_hex(&random::<{ ID_LEN / 2 }>());
    let secret = format!(
        "{KEY_START}{id}_{}",
        to_hex(&random::<{ SECRET_LEN / 2 }>())
    );
    let taken = store
        .put_record(NAMES_NAMESPACE, name, json!({"id": id}), None, 0, now_ms)
        .await;
    match taken {
        Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => {
            return Err(ErrorKind::KeyNameTaken {
                name: name.to_owned(),
            }
            .into());
        }
        other => other?,
    };
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let computed = mac
        .mac_of(mac.current(), &secret)
        .expect("the current key is one of the keys");
    let stored = StoredKey {
        key: ApiKey {
            id: id.clone(),
            name: name.to_owned(),
            scopes,
            created_at_ms: now_ms,
            revoked_at_ms: None,
        },
        mac: computed.finalize().into_bytes().to_vec(),
        mac_key: mac.current().to_owned(),
        version: 0,
    };
    store
        .put_record(KEYS_NAMESPACE, &id, stored.to_value(), None, 0, now_ms)
        .await?;
    Ok(CreatedKey {
        key: stored.key,
        secret,
    })
}

/// The key `id` as stored, `None` when there is none.
///
/// Fails with [`ErrorKind::MalformedKey`] for a record that is not a key, and the store's error.
pub async fn find_key(
    store: &dyn InstanceStore,
    id: &str,
    now_ms: u64,
) -> Result<Option<StoredKey>, Error> {
    let record = store.get_record(KEYS_NAMESPACE, id, now_ms).await?;
    record.as_ref().map(StoredKey::from_record).transpose()
}

/// Every key of `store`, revoked ones too, in id order.
///
/// Fails like [`find_key`].
pub async fn list_keys(store: &dyn InstanceStore, now_ms: u64) -> Result<Vec<ApiKey>, Error> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_records(
                KEYS_NAMESPACE,
                after.as_deref(),
                engine_store::MAX_RECORDS_PAGE,
                now_ms,
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(keys);
        };
        after = Some(last.id.clone());
        for record in &page {
            keys.push(StoredKey::from_record(record)?.key);
        }
    }
}

/// Revokes the key `name_or_prefix` names (its name, or its prefix `ek_<id>`) at `now_ms`, and
/// returns it; its name is free for a new key. Revoking a revoked key changes nothing.
///
/// Fails with [`ErrorKind::UnknownKey`] when no key has that name (and is not revoked) or that
/// prefix, and like [`find_key`].
pub async fn revoke_key(
    store: &dyn InstanceStore,
    name_or_prefix: &str,
    now_ms: u64,
) -> Result<ApiKey, Error> {
    let unknown = || {
        Error::from(ErrorKind::UnknownKey {
            name: name_or_prefix.to_owned(),
        })
    };
    let id = match name_or_prefix.strip_prefix(KEY_START) {
        Some(id) if id.len() == ID_LEN && engine_store::valid_id(id).is_ok() => id.to_owned(),
        _ => {
            if engine_store::valid_id(name_or_prefix).is_err() {
                return Err(unknown());
            }
            let named = store
                .get_record(NAMES_NAMESPACE, name_or_prefix, now_ms)
                .await?
                .ok_or_else(unknown)?;
            named.value["id"].as_str().ok_or_else(unknown)?.to_owned()
        }
    };
    loop {
        let mut stored = find_key(store, &id, now_ms).await?.ok_or_else(unknown)?;
        if stored.key.revoked_at_ms.is_some() {
            return Ok(stored.key);
        }
        stored.key.revoked_at_ms = Some(now_ms);
        match store
            .put_record(
                KEYS_NAMESPACE,
                &id,
                stored.to_value(),
                None,
                stored.version,
                now_ms,
            )
            .await
        {
            Ok(_) => {}
            // Written meanwhile: read it again.
            Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
        // The name is free again, if it still names this key.
        if let Some(named) = store
            .get_record(NAMES_NAMESPACE, &stored.key.name, now_ms)
            .await?
            && named.value["id"].as_str() == Some(id.as_str())
        {
            store
                .delete_record(NAMES_NAMESPACE, &stored.key.name, Some(named.version))
                .await?;
        }
        return Ok(stored.key);
    }
}

/// The id of the key that owns the instance `state` is of ([`OWNER_KEY`]); `None` for an
/// instance no key created (imported with `engine instances import`), which every key with the
/// scope sees.
pub fn owner_of(state: &State) -> Option<&str> {
    state.get(OWNER_KEY)?.as_str()
}

/// Records `key` as the owner of the instance `state` is of: only it sees the instance.
pub fn set_owner(state: &mut State, key: &ApiKey) {
    state.insert(OWNER_KEY.to_owned(), Value::String(key.id.clone()));
}

/// True when `key` may see the instance `state` is of: it owns it, or no key does.
pub fn visible_to(state: &State, key: &ApiKey) -> bool {
    owner_of(state).is_none_or(|owner| owner == key.id)
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use engine_store::MemoryStore;
    use engine_stores_sql::SecretKey;

    use super::*;

    fn keys(text: &str) -> SecretKeys {
        SecretKeys {
            current: SecretKey::parse(text).unwrap(),
            old: Vec::new(),
        }
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[tokio::test]
    async fn a_key_verifies_once_created_and_never_after_its_revocation() {
        let store = MemoryStore::new();
        let mac = KeyMac::new(Some(&keys(K1))).unwrap();
        let created = create_key(&store, &mac, "ci", &[Scope::InstancesRead], 7)
            .await
            .unwrap();
        let presented = created.reveal();
        let id = key_id_of(presented).unwrap();
        assert_eq!(created.key.prefix(), format!("ek_{id}"));
        assert!(!format!("{created:?}").contains(presented));

        let stored = find_key(&store, id, 8).await.unwrap().unwrap();
        assert!(stored.verify(&mac, presented));
        let (secret_start, _) = presented.split_at(presented.len() - 1);
        let last = if presented.ends_with('0') { "1" } else { "0" };
        assert!(!stored.verify(&mac, &format!("{secret_start}{last}")));
        // The record holds a MAC, never the key.
        let record = store
            .get_record(KEYS_NAMESPACE, id, 8)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !record
                .value
                .to_string()
                .contains(&presented[3 + ID_LEN + 1..])
        );
        // Another server key does not verify it.
        assert!(!stored.verify(&KeyMac::new(Some(&keys(K2))).unwrap(), presented));

        let taken = create_key(&store, &mac, "ci", &[Scope::Resources], 9).await;
        assert!(matches!(
            taken.unwrap_err().kind(),
            ErrorKind::KeyNameTaken { .. }
        ));

        let revoked = revoke_key(&store, "ci", 10).await.unwrap();
        assert_eq!(revoked.revoked_at_ms, Some(10));
        let stored = find_key(&store, id, 11).await.unwrap().unwrap();
        assert_eq!(stored.key.revoked_at_ms, Some(10));
        // By prefix too, and again: nothing changes.
        assert_eq!(
            revoke_key(&store, &created.key.prefix(), 12)
                .await
                .unwrap()
                .revoked_at_ms,
            Some(10)
        );
        // The name is free again; both keys are listed.
        create_key(&store, &mac, "ci", &[Scope::Resources], 13)
            .await
            .unwrap();
        let listed = list_keys(&store, 14).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|key| key.name == "ci"));
        let unknown = revoke_key(&store, "nope", 15).await;
        assert!(matches!(
            unknown.unwrap_err().kind(),
            ErrorKind::UnknownKey { .. }
        ));
    }

    #[tokio::test]
    async fn keys_need_a_secret_key_a_name_and_a_scope() {
        assert!(matches!(
            KeyMac::new(None).unwrap_err().kind(),
            ErrorKind::NoKeySecret
        ));
        let store = MemoryStore::new();
        let mac = KeyMac::new(Some(&keys(K1))).unwrap();
        let invalid = create_key(&store, &mac, "a b", &[Scope::Resources], 1).await;
        assert!(matches!(
            invalid.unwrap_err().kind(),
            ErrorKind::InvalidKeyName { .. }
        ));
        let none = create_key(&store, &mac, "ci", &[], 1).await;
        assert!(matches!(none.unwrap_err().kind(), ErrorKind::NoScope));
        assert!(Scope::parse("admin").is_err());
        assert_eq!(Scope::parse("tokens:read").unwrap(), Scope::TokensRead);
    }

    #[tokio::test]
    async fn a_key_made_under_an_old_server_key_verifies_while_that_key_is_kept() {
        let store = MemoryStore::new();
        let old = KeyMac::new(Some(&keys(K1))).unwrap();
        let created = create_key(&store, &old, "ci", &[Scope::Resources], 1)
            .await
            .unwrap();
        let rotated = SecretKeys {
            current: SecretKey::parse(K2).unwrap(),
            old: vec![SecretKey::parse(K1).unwrap()],
        };
        let stored = find_key(&store, &created.key.id, 2).await.unwrap().unwrap();
        assert!(stored.verify(&KeyMac::new(Some(&rotated)).unwrap(), created.reveal()));
    }

    #[test]
    fn only_well_shaped_keys_name_an_id() {
        let secret = "0".repeat(SECRET_LEN);
        assert_eq!(
            key_id_of(&format!("ek_0123456789ab_{secret}")),
            Some("0123456789ab")
        );
        for wrong in [
            String::new(),
            "Bearer".to_owned(),
            format!("ek_0123456789AB_{secret}"),
            format!("ek_0123456789a_{secret}"),
            format!("ek_0123456789ab_{secret}0"),
            format!("xk_0123456789ab_{secret}"),
        ] {
            assert_eq!(key_id_of(&wrong), None, "{wrong}");
        }
    }

    #[test]
    fn an_owned_instance_is_seen_by_its_owner_only_and_an_imported_one_by_all() {
        let key = |id: &str| ApiKey {
            id: id.to_owned(),
            name: id.to_owned(),
            scopes: vec![Scope::InstancesRead],
            created_at_ms: 0,
            revoked_at_ms: None,
        };
        let mut state = State::new();
        assert!(visible_to(&state, &key("a")));
        set_owner(&mut state, &key("a"));
        assert_eq!(owner_of(&state), Some("a"));
        assert!(visible_to(&state, &key("a")));
        assert!(!visible_to(&state, &key("b")));
    }
}
