use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use crate::{
    BoxFuture, Claim, InstanceLock, InstanceStore, Listing, MAX_RECORDS_PAGE, Page, Record,
    Schedule, State, StoreError, StoreErrorKind, Summary, Versioned, lease_token, millis,
    record_conflict, valid_record,
};

/// An [`InstanceStore`] in memory, for tests and dry runs. Clones share the same state and locks.
///
/// Locks exclude other lockers of the same instance within the process; waiting for one is an
/// async wait, never a blocked thread. Errors report the instance id as their path.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The stored instances, by id (sorted, for listings).
    states: Mutex<BTreeMap<String, Versioned>>,
    /// The refresh history of each instance, oldest first.
    histories: Mutex<HashMap<String, std::collections::VecDeque<serde_json::Value>>>,
    /// One async lock per instance, made on first use.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The leases of [`InstanceStore::claim_due`]: instance → (token, end in epoch ms). Taken
    /// and checked under the lock of `states`, so claims never overlap.
    leases: Mutex<HashMap<String, (String, u64)>>,
    /// The records, by namespace and id (sorted, for listings).
    records: Mutex<BTreeMap<(String, String), Record>>,
}

impl MemoryStore {
    /// Returns an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the state of `instance` (at version 0), replacing any previous one. Does not wait for
    /// the lock.
    pub fn insert(&self, instance: &str, state: State) {
        self.inner.states().insert(
            instance.to_owned(),
            Versioned {
                state: Arc::new(state),
                version: 0,
            },
        );
    }

    /// Returns a copy of the state of `instance`, or `None` when it has none.
    pub fn get(&self, instance: &str) -> Option<State> {
        self.inner
            .states()
            .get(instance)
            .map(|stored| State::clone(&stored.state))
    }
}

// The mutexes only guard plain inserts and removals, which cannot leave the data half-updated, so a
// poisoned mutex still holds consistent data and is used as is.
impl Inner {
    fn states(&self) -> MutexGuard<'_, BTreeMap<String, Versioned>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<(String, String), Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_of(&self, instance: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(instance.to_owned()).or_default())
    }

    fn load(&self, instance: &str) -> Result<Versioned, StoreError> {
        self.states().get(instance).cloned().ok_or_else(|| {
            StoreErrorKind::NotFound {
                path: PathBuf::from(instance),
            }
            .into()
        })
    }

    /// The compare-and-swap every write goes through.
    fn write(&self, instance: &str, state: State, expected: u64) -> Result<u64, StoreError> {
        let mut states = self.states();
        let found = states.get(instance).map_or(0, |stored| stored.version);
        if found != expected {
            return Err(StoreErrorKind::Conflict {
                instance: instance.to_owned(),
                expected,
                found,
            }
            .into());
        }
        let version = found + 1;
        states.insert(
            instance.to_owned(),
            Versioned {
                state: Arc::new(state),
                version,
            },
        );
        Ok(version)
    }
}

impl InstanceStore for MemoryStore {
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>> {
        Box::pin(async move { self.inner.load(instance) })
    }

    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move { self.inner.write(instance, state, expected) })
    }

    fn lock<'a>(
        &'a self,
        instance: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn InstanceLock>, StoreError>> {
        Box::pin(async move {
            let mutex = self.inner.lock_of(instance);
            let guard = match timeout {
                None => mutex.lock_owned().await,
                Some(timeout) => tokio::time::timeout(timeout, mutex.lock_owned())
                    .await
                    .map_err(|_| StoreErrorKind::LockTimeout {
                        path: PathBuf::from(instance),
                        waited: timeout,
                    })?,
            };
            let lock: Box<dyn InstanceLock> = Box::new(MemoryLock {
                inner: Arc::clone(&self.inner),
                instance: instance.to_owned(),
                _guard: guard,
            });
            Ok(lock)
        })
    }

    fn list(&self, page: Page) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(async move {
            let states = self.inner.states();
            let mut instances: Vec<Summary> = states
                .iter()
                .filter(|(id, _)| page.after.as_ref().is_none_or(|after| *id > after))
                .map(|(id, stored)| Summary::of(id.clone(), stored.version, &stored.state))
                .filter(|summary| page.matches(summary))
                .take(page.limit.saturating_add(1))
                .collect();
            let next = (instances.len() > page.limit).then(|| {
                instances.truncate(page.limit);
                instances
                    .last()
                    .map(|last| last.id.clone())
                    .unwrap_or_default()
            });
            Ok(Listing { instances, next })
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut states = self.inner.states();
            let Some(stored) = states.get(instance) else {
                return Err(StoreErrorKind::NotFound {
                    path: PathBuf::from(instance),
                }
                .into());
            };
            if stored.version != expected {
                return Err(StoreErrorKind::Conflict {
                    instance: instance.to_owned(),
                    expected,
                    found: stored.version,
                }
                .into());
            }
            states.remove(instance);
            self.inner.leases().remove(instance);
            Ok(())
        })
    }

    fn append_history<'a>(
        &'a self,
        instance: &'a str,
        entry: serde_json::Value,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut histories = self
                .inner
                .histories
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let history = histories.entry(instance.to_owned()).or_default();
            history.push_back(entry);
            while history.len() > keep {
                history.pop_front();
            }
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let histories = self
                .inner
                .histories
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Ok(histories
                .get(instance)
                .map(|history| history.iter().cloned().collect())
                .unwrap_or_default())
        })
    }

    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claim>, StoreError>> {
        Box::pin(async move {
            let states = self.inner.states();
            let mut leases = self.inner.leases();
            let mut due: Vec<(u64, &String, u64)> = states
                .iter()
                .filter(|(id, _)| leases.get(*id).is_none_or(|(_, until)| *until <= now_ms))
                .filter_map(|(id, stored)| {
                    let at = Schedule::read(&stored.state).next_refresh_at_ms?;
                    (at <= now_ms).then_some((at, id, stored.version))
                })
                .collect();
            due.sort();
            let (token, until_ms) = (lease_token(), now_ms.saturating_add(millis(lease)));
            Ok(due
                .into_iter()
                .take(limit)
                .map(|(_, id, version)| {
                    leases.insert(id.clone(), (token.clone(), until_ms));
                    Claim {
                        id: id.clone(),
                        version,
                        token: token.clone(),
                        until_ms,
                    }
                })
                .collect())
        })
    }

    fn renew<'a>(
        &'a self,
        claim: &'a Claim,
        now_ms: u64,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let _states = self.inner.states();
            let mut leases = self.inner.leases();
            match leases.get_mut(&claim.id) {
                Some((token, until)) if *token == claim.token && *until > now_ms => {
                    *until = now_ms.saturating_add(millis(lease));
                    Ok(Claim {
                        until_ms: *until,
                        ..claim.clone()
                    })
                }
                _ => Err(StoreErrorKind::LeaseLost {
                    instance: claim.id.clone(),
                }
                .into()),
            }
        })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut leases = self.inner.leases();
            if leases
                .get(&claim.id)
                .is_some_and(|(token, _)| *token == claim.token)
            {
                leases.remove(&claim.id);
            }
            Ok(())
        })
    }

    fn identity(&self, instance: &str) -> String {
        format!("memory:{:p}/{instance}", Arc::as_ptr(&self.inner))
    }

    fn get_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let records = self.inner.records();
            Ok(records
                .get(&(namespace.to_owned(), id.to_owned()))
                .filter(|record| !record.is_expired(now_ms))
                .cloned())
        })
    }

    fn put_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
        expected: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let mut records = self.inner.records();
            let key = (namespace.to_owned(), id.to_owned());
            let found = records
                .get(&key)
                .filter(|record| !record.is_expired(now_ms))
                .map_or(0, |record| record.version);
            if found != expected {
                return Err(record_conflict(namespace, id, expected, found));
            }
            let version = found + 1;
            records.insert(
                key,
                Record {
                    id: id.to_owned(),
                    value,
                    version,
                    expires_at_ms,
                },
            );
            Ok(version)
        })
    }

    fn list_records<'a>(
        &'a self,
        namespace: &'a str,
        after: Option<&'a str>,
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            crate::valid_id(namespace)?;
            let records = self.inner.records();
            Ok(records
                .iter()
                .filter(|((space, id), record)| {
                    space == namespace
                        && after.is_none_or(|after| id.as_str() > after)
                        && !record.is_expired(now_ms)
                })
                .map(|(_, record)| record.clone())
                .take(limit.min(MAX_RECORDS_PAGE))
                .collect())
        })
    }

    fn purge_expired_records<'a>(
        &'a self,
        namespace: Option<&'a str>,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            if let Some(namespace) = namespace {
                crate::valid_id(namespace)?;
            }
            let mut records = self.inner.records();
            let expired: Vec<(String, String)> = records
                .iter()
                .filter(|((space, _), record)| {
                    namespace.is_none_or(|namespace| space == namespace)
                        && record.is_expired(now_ms)
                })
                .map(|(key, _)| key.clone())
                .take(limit)
                .collect();
            for key in &expired {
                records.remove(key);
            }
            Ok(expired.len())
        })
    }

    fn delete_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let mut records = self.inner.records();
            let key = (namespace.to_owned(), id.to_owned());
            let matches = records
                .get(&key)
                .is_some_and(|record| expected.is_none_or(|expected| record.version == expected));
            if matches {
                records.remove(&key);
            }
            Ok(matches)
        })
    }
}

/// The guard of [`MemoryStore`]: the instance's async mutex, released on drop.
#[derive(Debug)]
struct MemoryLock {
    inner: Arc<Inner>,
    instance: String,
    _guard: OwnedMutexGuard<()>,
}

impl InstanceLock for MemoryLock {
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>> {
        Box::pin(async move {
            Ok(self
                .inner
                .states()
                .get(&self.instance)
                .cloned()
                .unwrap_or_default())
        })
    }

    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.inner.write(&self.instance, state, expected) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The runtime holds the guard across `.await`, so it must be `Send`.
    const _: () = {
        const fn assert_send<T: Send>() {}
        assert_send::<MemoryLock>();
        assert_send::<Box<dyn InstanceLock>>();
    };

    fn state(count: u64) -> State {
        let mut state = State::new();
        state.insert("count".to_owned(), json!(count));
        state
    }

    #[tokio::test]
    async fn locked_increments_from_many_tasks_lose_no_update() {
        let store = MemoryStore::new();
        store.insert("acme", state(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let mut lock = store.lock("acme", None).await.unwrap();
                        let read = lock.load().await.unwrap();
                        let count = read.state["count"].as_u64().unwrap();
                        lock.write(state(count + 1), read.version).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let stored = store.load("acme").await.unwrap();
        assert_eq!(
            (stored.state["count"].as_u64(), stored.version),
            (Some(200), 200)
        );
    }

    #[tokio::test]
    async fn lock_timeout_gives_up_and_other_instances_are_free() {
        let store = MemoryStore::new();
        let held = store.lock("acme", None).await.unwrap();
        let error = store
            .lock("acme", Some(Duration::from_millis(20)))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(error.kind(), StoreErrorKind::LockTimeout { .. }),
            "{error:?}"
        );
        store.lock("other", Some(Duration::ZERO)).await.unwrap();
        drop(held);
        store
            .lock("acme", Some(Duration::from_millis(20)))
            .await
            .unwrap();
    }

    /// The memory store is in no conformance suite (it is of this crate): its claims here.
    #[tokio::test]
    async fn claims_lease_due_instances_once_until_they_end() {
        let store = MemoryStore::new();
        for (id, next) in [("a", Some(5)), ("b", Some(1)), ("c", Some(50)), ("d", None)] {
            let mut scheduled = State::new();
            crate::Schedule {
                next_refresh_at_ms: next,
                ..crate::Schedule::default()
            }
            .put(&mut scheduled);
            store.write(id, scheduled, 0).await.unwrap();
        }
        let lease = Duration::from_millis(100);
        let claimed = store.claim_due(10, 10, lease).await.unwrap();
        let ids: Vec<&str> = claimed.iter().map(|claim| claim.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"], "due ones, soonest first");
        assert!(store.claim_due(10, 10, lease).await.unwrap().is_empty());
        let renewed = store.renew(&claimed[0], 50, lease).await.unwrap();
        assert_eq!(renewed.until_ms, 150);
        store.release(&claimed[1]).await.unwrap();
        let again = store.claim_due(110, 10, lease).await.unwrap();
        let ids: Vec<&str> = again.iter().map(|claim| claim.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"], "released and newly due; `b` still leased");
        let error = store.renew(&claimed[1], 111, lease).await.unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::LeaseLost { .. }),
            "{error:?}"
        );
    }

    /// The memory store's case of the conformance suite's `purge_expired`.
    #[tokio::test]
    async fn purges_remove_expired_records_only() {
        let store = MemoryStore::new();
        let now = 1_000;
        for (space, id, expires) in [
            ("events", "e1", Some(now - 1)),
            ("events", "e2", Some(now)),
            ("events", "e3", Some(now + 1)),
            ("events", "e4", None),
            ("flows", "f1", Some(now - 5)),
        ] {
            store
                .put_record(space, id, json!(id), expires, 0, 0)
                .await
                .unwrap();
        }
        store
            .put_record("events", "e4", json!("again"), None, 1, 0)
            .await
            .unwrap();
        let kept = |space| {
            let records = store.inner.records();
            records
                .iter()
                .filter(|((namespace, _), _)| namespace == space)
                .map(|((_, id), record)| (id.clone(), record.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            store
                .purge_expired_records(Some("events"), now, 1)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .purge_expired_records(Some("events"), now, 10)
                .await
                .unwrap(),
            1
        );
        assert_eq!(kept("events"), [("e3".into(), 1), ("e4".into(), 2)]);
        assert_eq!(kept("flows").len(), 1);
        assert_eq!(store.purge_expired_records(None, now, 10).await.unwrap(), 1);
        assert_eq!(
            store
                .purge_expired_records(None, now + 1, 10)
                .await
                .unwrap(),
            1
        );
        assert_eq!(kept("events"), [("e4".into(), 2)]);
        assert!(kept("flows").is_empty());
    }

    #[tokio::test]
    async fn missing_instances_are_not_found_but_empty_under_a_lock() {
        let store = MemoryStore::new();
        assert!(matches!(
            store.load("missing").await.unwrap_err().kind(),
            StoreErrorKind::NotFound { .. }
        ));
        let read = store
            .lock("missing", None)
            .await
            .unwrap()
            .load()
            .await
            .unwrap();
        assert_eq!((read.state.len(), read.version), (0, 0));
    }
}
