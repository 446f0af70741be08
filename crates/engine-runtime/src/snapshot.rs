//! What a run decides from its instance's stored state alone, before it sends anything: the
//! secrets it masks, the required keys the instance lacks, when its token expires, and where its
//! credentials may go. A [`Snapshot`] is decided once per thread for each loaded connector and
//! stored snapshot, so that a store that hands out the state it holds (a `MemoryStore`) costs a
//! run one lookup, not the reading of every key again (issue 22). A store that reads the
//! instance again for each run (files, SQL) gives a new snapshot each time, decided as before.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use engine_spec::{Connector, ConnectorId};
use engine_store::State;

use crate::auth::{Expiry, Scheme};
use crate::configuration::Configuration;
use crate::origins::Origins;
use crate::redact::Redactor;
use crate::request::missing_required;
use crate::run_error::MissingKey;

/// What a stored state says before any value of a run is saved over it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Knows every secret of the state and the connector's literal credentials
    /// ([`Redactor::for_state`]).
    pub(crate) redactor: Redactor,
    /// The required keys the state lacks, defaults applied ([`missing_required`]).
    pub(crate) missing: Vec<MissingKey>,
    /// The token's expiry and provisioning, to be judged at a time ([`Scheme::expiry`]).
    pub(crate) expiry: Expiry,
    /// Where the instance's credentials may go ([`Origins::of`]).
    pub(crate) origins: Arc<Origins>,
}

impl Snapshot {
    /// The snapshot of `state` for `connector`, decided on first use in a thread. A state is
    /// recognised by its allocation, which the cache keeps (a [`Weak`]) so that no other state
    /// can take its address, and a connector by its [`ConnectorId`], which a connector loaded
    /// again at the same address does not share.
    pub(crate) fn of(connector: &Connector, state: &Arc<State>) -> Self {
        /// Snapshots remembered per thread; the oldest makes room for a new one.
        const CAPACITY: usize = 32;
        type Entry = (ConnectorId, Weak<State>, Snapshot);
        thread_local! {
            static CACHE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
        }
        let id = connector.id();
        CACHE.with_borrow_mut(|cache| {
            let found = cache.iter().find(|(known, snapshot, _)| {
                *known == id && std::ptr::eq(snapshot.as_ptr(), Arc::as_ptr(state))
            });
            if let Some((_, _, decided)) = found {
                return decided.clone();
            }
            let decided = Self::decide(connector, state);
            if cache.len() >= CAPACITY {
                // Snapshots no run holds any more go first.
                cache.retain(|(_, snapshot, _)| snapshot.strong_count() > 0);
                if cache.len() >= CAPACITY {
                    cache.remove(0);
                }
            }
            cache.push((id, Arc::downgrade(state), decided.clone()));
            decided
        })
    }

    fn decide(connector: &Connector, state: &Arc<State>) -> Self {
        let configuration = Configuration::new(connector, Arc::clone(state));
        Self {
            redactor: Redactor::for_state(connector, state),
            missing: missing_required(connector, &configuration),
            expiry: Scheme::of(connector).expiry(connector, &configuration),
            origins: Origins::of(connector, &configuration),
        }
    }
}

#[cfg(test)]
mod tests {
    use engine_spec::SourceFile;
    use serde_json::json;

    use super::*;
    use crate::auth::Freshness;
    use crate::observer::RefreshReason;
    use crate::redact::MASK;

    /// A connector with the configuration key `api.key` of this `type`.
    fn connector_with_key(kind: &str) -> Connector {
        let text = format!(
            r#"{{"name": "Keys", "key": "keys", "authentication": {{"type": "none"}},
               "configuration": [{{"key": "api.key", "name": "Key", "type": "{kind}"}}],
               "resources": [{{"name": "r", "type": "API", "vendorMethod": "GET",
                               "vendorPath": "/r"}}]}}"#
        );
        engine_spec::validate(engine_spec::SourceFile::new("keys.json", text))
            .into_connector()
            .expect("a valid connector")
    }

    #[test]
    fn a_snapshot_redactor_belongs_to_one_load_of_a_connector_and_one_snapshot() {
        let state = |value: &str| {
            let mut state = State::new();
            state.insert("api.key".into(), value.into());
            Arc::new(state)
        };
        let first = state("k-1234567");
        let plain = connector_with_key("TEXTFIELD_32");
        assert_eq!(
            Snapshot::of(&plain, &first).redactor.redact("k-1234567"),
            "k-1234567"
        );
        // The same snapshot again: the same answer.
        assert_eq!(
            Snapshot::of(&plain, &first).redactor.redact("k-1234567"),
            "k-1234567"
        );
        // The connector loaded again, now declaring the key a password, over the same
        // snapshot: the cache does not hand it the redactor of the earlier load.
        drop(plain);
        let secret = connector_with_key("PASSWORD");
        assert_eq!(
            Snapshot::of(&secret, &first).redactor.redact("k-1234567"),
            MASK
        );
        // Another snapshot of the instance: its own secrets, not the earlier ones.
        let second = state("k-7654321");
        let redactor = Snapshot::of(&secret, &second).redactor;
        assert_eq!(redactor.redact("k-7654321 k-1234567"), "**** k-1234567");
        // Learning more does not change the redactor the next run of the snapshot starts from.
        let mut learnt = Snapshot::of(&secret, &second).redactor;
        learnt.learn("extra-secret");
        assert_eq!(
            Snapshot::of(&secret, &second)
                .redactor
                .redact("extra-secret"),
            "extra-secret"
        );
        assert_eq!(learnt.redact("extra-secret"), MASK);
    }

    #[test]
    fn a_snapshot_decides_missing_keys_and_expiry_as_its_state_does() {
        let connector = engine_spec::validate(SourceFile::new(
            "demo.json",
            include_str!("../../../connectors/demo.json"),
        ))
        .into_connector()
        .expect("a valid connector");
        let snapshot = |value: serde_json::Value| {
            let serde_json::Value::Object(state) = value else {
                unreachable!("an object")
            };
            Arc::new(state)
        };
        let provisioned = snapshot(json!({
            "base.url": "http://127.0.0.1:1",
            "client.id": "id",
            "client.secret": "s3cr3t-client",
            "access.token": "t0k3n-value",
            "authentication.time": "1000000000000",
            "expires_in": "3600",
        }));
        let decided = Snapshot::of(&connector, &provisioned);
        assert!(decided.missing.is_empty());
        let configuration = Configuration::new(&connector, Arc::clone(&provisioned));
        let scheme = Scheme::of(&connector);
        let expires = 1_000_000_000_000 + 3_600_000;
        for now in [0, expires - 31_000, expires - 30_000, expires + 1] {
            assert_eq!(
                decided.expiry.judge(now),
                scheme.check_fresh(&connector, &configuration, now),
                "{now}"
            );
        }
        assert_eq!(
            decided.expiry.judge(expires - 31_000),
            Freshness::Fresh(Some(expires))
        );
        assert_eq!(decided.redactor.redact("t0k3n-value"), MASK);
        // Another snapshot of the instance, never provisioned and without a required key: its
        // own answers, not the earlier snapshot's.
        let bare =
            snapshot(json!({"base.url": "http://127.0.0.1:1", "client.secret": "s3cr3t-other"}));
        let decided = Snapshot::of(&connector, &bare);
        assert_eq!(
            decided
                .missing
                .iter()
                .map(|missing| missing.key.as_str())
                .collect::<Vec<_>>(),
            ["client.id"]
        );
        assert_eq!(
            decided.expiry.judge(0),
            Freshness::Stale(RefreshReason::NotProvisioned)
        );
        assert_eq!(decided.redactor.redact("t0k3n-value"), "t0k3n-value");
    }
}
