use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use engine_store::{
    BoxFuture, InstanceLock, InstanceStore, State, StoreError, StoreErrorKind, Versioned,
};
use serde_json::Value;

/// The prefix of an encrypted value: `enc:v1:<key id>:<base64 of nonce and ciphertext>`.
const PREFIX: &str = "enc:v1:";

/// One secret key: an id, stored with every value it encrypts, and 32 bytes.
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    cipher: XChaCha20Poly1305,
    /// The key's bytes, for [`SecretKey::derive`] only.
    bytes: [u8; 32],
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SecretKey({}: ****)", self.id)
    }
}

impl SecretKey {
    /// Parses `ID:BASE64` (32 bytes of key, base64; the id: ASCII letters, digits, `-`, `_`, at
    /// most 32 of them).
    ///
    /// Fails with a message saying what is wrong, never repeating the key, nor an id that may be
    /// one (a key given the wrong way round, `BASE64:ID`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, encoded) = text
            .trim()
            .split_once(':')
            .ok_or("expected `ID:BASE64`, such as `k1:` followed by 32 bytes in base64")?;
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte))
        {
            return Err(
                "the key id (before the `:`) must be 1 to 32 ASCII letters, digits, `-` \
                 or `_`: was the key given the wrong way round? expected `ID:BASE64`"
                    .to_owned(),
            );
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| format!("key `{id}` is not valid base64"))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("key `{id}` must be 32 bytes, not {}", bytes.len()))?;
        let bytes = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("key `{id}` must be 32 bytes, not {}", bytes.len()))?;
        Ok(Self {
            id: id.to_owned(),
            cipher,
            bytes,
        })
    }

    /// A key for another use than encryption, derived from this one: HMAC-SHA-256 under the
    /// key's bytes of `engine:PURPOSE`. Keys for different purposes are unrelated, and none
    /// tells anything of the key.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&self.bytes)
            .expect("HMAC takes a key of any length");
        mac.update(b"engine:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Returns the key's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `text` as a secret value is stored (`enc:v1:<key id>:<base64>`), bound to
    /// `context` (associated data): it decrypts only with the same context
    /// ([`SecretKey::open`]).
    ///
    /// Fails, saying why, when the system gives no randomness for the nonce.
    pub fn seal(&self, text: &str, context: &str) -> Result<String, String> {
        let mut nonce = [0_u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|error| format!("no randomness for a nonce: {error}"))?;
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: text.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "cannot encrypt".to_owned())?;
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        Ok(format!(
            "{PREFIX}{}:{}",
            self.id,
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The text of `sealed`, a value [`SecretKey::seal`] made with this key and `context`.
    ///
    /// Fails with what is wrong: not such a value, not this key's, or it does not decrypt.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, Unsealing> {
        let (id, encoded) = sealed
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .ok_or(Unsealing::Invalid)?;
        if id != self.id {
            return Err(Unsealing::OtherKey);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .filter(|bytes| bytes.len() > 24)
            .ok_or(Unsealing::Invalid)?;
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().unwrap_or([0; 24]);
        let opened = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Unsealing::NoDecrypt)?;
        String::from_utf8(opened).map_err(|_| Unsealing::NotText)
    }
}

/// Why [`SecretKey::open`] gave no text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealing {
    /// Not a value [`SecretKey::seal`] makes.
    Invalid,
    /// Sealed with another key.
    OtherKey,
    /// It does not decrypt: a wrong key under the same id, or another context.
    NoDecrypt,
    /// It decrypts to bytes that are not UTF-8.
    NotText,
}

/// The id of the key `value` was sealed with, when it is a sealed value.
pub fn sealed_with(value: &str) -> Option<&str> {
    let rest = value.strip_prefix(PREFIX)?;
    rest.split_once(':').map(|(id, _)| id)
}

/// Which keys of a state are encrypted: the caller's rule. The CLI passes the connector's rule
/// when it knows the instance's connector (its `PASSWORD` properties, its token keys, the keys it
/// sends as credentials, names like secrets), else the engine's rule for secret names
/// (passwords, tokens, secrets, API keys).
pub type IsSecret = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// An [`InstanceStore`] over another that keeps secret values encrypted at rest.
///
/// Every string value whose key `is_secret` says is a secret, or whose stored value was
/// encrypted when read (through the lock, or by [`EncryptedStore::rekey`]), is written as
/// `enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`: XChaCha20-Poly1305 (`RustCrypto`) with a random
/// 24-byte nonce and the instance id and key name as associated data (a value copied to another
/// key or instance does not decrypt). Reads decrypt with the key of the value's id, among the
/// current key and the old ones, so keys rotate: `engine instances rekey` rewrites every value
/// with the current key. A value whose key id is unknown, or that does not decrypt (a wrong key
/// under a known id), fails the read with [`StoreErrorKind::Secret`] saying so: never a silent
/// garbage token. Versions, locks and listings are the inner store's.
#[derive(Clone)]
pub struct EncryptedStore {
    inner: Arc<dyn InstanceStore>,
    keys: Arc<Keys>,
}

struct Keys {
    /// `None`: no key given ([`EncryptedStore::without_key`]).
    current: Option<SecretKey>,
    old: Vec<SecretKey>,
    is_secret: IsSecret,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EncryptedStore")
            .field("key", &self.keys.current)
            .finish_non_exhaustive()
    }
}

impl EncryptedStore {
    /// Wraps `inner`: writes encrypt with `current`; reads decrypt with `current` or `old`.
    pub fn new(
        inner: Arc<dyn InstanceStore>,
        current: SecretKey,
        old: Vec<SecretKey>,
        is_secret: IsSecret,
    ) -> Self {
        Self {
            inner,
            keys: Arc::new(Keys {
                current: Some(current),
                old,
                is_secret,
            }),
        }
    }

    /// Wraps `inner` for a command given no key: values are written as they are, and a read of
    /// an instance holding encrypted values fails naming the key it needs
    /// ([`StoreErrorKind::Secret`]): an encrypted value is never handed out, so never sent to a
    /// vendor as a token or a credential.
    pub fn without_key(inner: Arc<dyn InstanceStore>, is_secret: IsSecret) -> Self {
        Self {
            inner,
            keys: Arc::new(Keys {
                current: None,
                old: Vec::new(),
                is_secret,
            }),
        }
    }

    /// Rewrites `instance` with every secret value encrypted by the current key (decrypting the
    /// old ones; a value stored encrypted stays encrypted, whatever the rule says of its key);
    /// returns true when something changed. Under the instance's lock ([`engine_store::update`]:
    /// `waiting` is called when another holder makes it wait, at most `timeout`), so that it
    /// never lands between a refresh's read and its write.
    pub async fn rekey(
        &self,
        instance: &str,
        timeout: Option<Duration>,
        waiting: &(dyn Fn() + Sync),
    ) -> Result<bool, StoreError> {
        engine_store::update(&*self.inner, instance, timeout, waiting, |stored| {
            let Some(current) = &self.keys.current else {
                return Err(failure(
                    instance,
                    "a rekey needs the key to encrypt with (`ENGINE_SECRET_KEY`)".to_owned(),
                ));
            };
            let sealed = encrypted_keys(stored);
            let needs = stored.iter().any(|(key, value)| {
                ((self.keys.is_secret)(key) || sealed.contains(key))
                    && value
                        .as_str()
                        .is_some_and(|text| !is_encrypted_with(text, current.id()))
            });
            if !needs {
                return Ok(false);
            }
            let plain = self.keys.decrypt(instance, stored)?;
            *stored = self.keys.encrypt(instance, plain, &sealed)?;
            Ok(true)
        })
        .await
    }
}

/// The keys of `state` whose values are encrypted.
fn encrypted_keys(state: &State) -> Vec<String> {
    state
        .iter()
        .filter(|(_, value)| is_encrypted(value))
        .map(|(key, _)| key.clone())
        .collect()
}

fn is_encrypted_with(text: &str, id: &str) -> bool {
    sealed_with(text) == Some(id)
}

/// True when `value` is a string this store encrypted.
pub fn is_encrypted(value: &Value) -> bool {
    value.as_str().is_some_and(|text| text.starts_with(PREFIX))
}

fn failure(instance: &str, message: String) -> StoreError {
    StoreErrorKind::Secret {
        instance: instance.to_owned(),
        message,
    }
    .into()
}

impl Keys {
    /// Encrypts the values of the secret keys of `state`, and of the keys in `sealed` (stored
    /// encrypted before).
    fn encrypt(
        &self,
        instance: &str,
        mut state: State,
        sealed: &[String],
    ) -> Result<State, StoreError> {
        let Some(current) = &self.current else {
            return Ok(state);
        };
        for (key, value) in &mut state {
            let Some(text) = value.as_str() else { continue };
            if !((self.is_secret)(key) || sealed.contains(key)) || text.starts_with(PREFIX) {
                continue;
            }
            let aad = format!("{instance}\0{key}");
            let encrypted = current.seal(text, &aad).map_err(|message| {
                failure(instance, format!("cannot encrypt `{key}`: {message}"))
            })?;
            *value = Value::String(encrypted);
        }
        Ok(state)
    }

    fn decrypt(&self, instance: &str, state: &State) -> Result<State, StoreError> {
        let mut plain = state.clone();
        for (key, value) in &mut plain {
            let Some(rest) = value.as_str().and_then(|text| text.strip_prefix(PREFIX)) else {
                continue;
            };
            let Some((id, _)) = rest.split_once(':') else {
                return Err(failure(
                    instance,
                    format!("`{key}` is not a valid encrypted value"),
                ));
            };
            let Some(secret) = self
                .current
                .iter()
                .chain(&self.old)
                .find(|secret| secret.id == id)
            else {
                if self.current.is_none() {
                    return Err(failure(
                        instance,
                        format!(
                            "`{key}` is encrypted with key `{id}`, and `ENGINE_SECRET_KEY` is not set"
                        ),
                    ));
                }
                return Err(failure(
                    instance,
                    format!(
                        "`{key}` is encrypted with key `{id}`, which is not among the keys given (`ENGINE_SECRET_KEY`, `ENGINE_SECRET_KEYS_OLD`)"
                    ),
                ));
            };
            let aad = format!("{instance}\0{key}");
            let sealed = value.as_str().unwrap_or_default();
            let text = secret.open(sealed, &aad).map_err(|unsealing| {
                failure(
                    instance,
                    match unsealing {
                        Unsealing::Invalid | Unsealing::OtherKey => {
                            format!("`{key}` is not a valid encrypted value")
                        }
                        Unsealing::NoDecrypt => format!(
                            "`{key}` does not decrypt with key `{id}`: a wrong key under that id, or a value moved from another instance"
                        ),
                        Unsealing::NotText => format!("`{key}` decrypts to invalid text"),
                    },
                )
            })?;
            *value = Value::String(text);
        }
        Ok(plain)
    }

    fn decrypt_versioned(&self, instance: &str, read: &Versioned) -> Result<Versioned, StoreError> {
        Ok(Versioned {
            state: Arc::new(self.decrypt(instance, &read.state)?),
            version: read.version,
        })
    }
}

impl InstanceStore for EncryptedStore {
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let read = self.inner.load(instance).await?;
            self.keys.decrypt_versioned(instance, &read)
        })
    }

    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let encrypted = self.keys.encrypt(instance, state, &[])?;
            self.inner.write(instance, encrypted, expected).await
        })
    }

    fn lock<'a>(
        &'a self,
        instance: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn InstanceLock>, StoreError>> {
        Box::pin(async move {
            let inner = self.inner.lock(instance, timeout).await?;
            let lock: Box<dyn InstanceLock> = Box::new(EncryptedLock {
                inner,
                keys: Arc::clone(&self.keys),
                instance: instance.to_owned(),
                sealed: Vec::new(),
            });
            Ok(lock)
        })
    }

    // Records are passed through as they are: what they hold is their writer's to protect
    // (the API keys keep a MAC of each key, never the key).
    engine_store::forward_instance_store!(inner =>
        list, delete, scrub, take_notices, append_history, history, claim_due, next_due_ms,
        renew, release, identity, get_record, put_record, list_records, delete_record,
        purge_expired_records);
}

struct EncryptedLock {
    inner: Box<dyn InstanceLock>,
    keys: Arc<Keys>,
    instance: String,
    /// The keys stored encrypted at the last read: written encrypted again.
    sealed: Vec<String>,
}

impl InstanceLock for EncryptedLock {
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let read = self.inner.load().await?;
            self.sealed = encrypted_keys(&read.state);
            self.keys.decrypt_versioned(&self.instance, &read)
        })
    }

    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let encrypted = self.keys.encrypt(&self.instance, state, &self.sealed)?;
            self.inner.write(encrypted, expected).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HwECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    /// A sealed text opens with its key and context only, and does not show the text.
    #[test]
    fn a_sealed_text_opens_with_its_key_and_context_only() {
        let (k1, k2) = (SecretKey::parse(K1).unwrap(), SecretKey::parse(K2).unwrap());
        let sealed = k1.seal("FAKE-request-secret", "record-a").unwrap();
        assert!(!sealed.contains("FAKE-request-secret"), "{sealed}");
        assert_eq!(sealed_with(&sealed), Some("k1"));
        assert_eq!(
            k1.open(&sealed, "record-a").as_deref(),
            Ok("FAKE-request-secret")
        );
        assert_eq!(k1.open(&sealed, "record-b"), Err(Unsealing::NoDecrypt));
        assert_eq!(k2.open(&sealed, "record-a"), Err(Unsealing::OtherKey));
        assert_eq!(k1.open("plain", "record-a"), Err(Unsealing::Invalid));
        assert_ne!(sealed, k1.seal("FAKE-request-secret", "record-a").unwrap());
    }
}
