use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{State, StateLock, StateStore, StoreError, StoreErrorKind};

/// A [`StateStore`] in memory, for tests. Clones share the same state and locks.
///
/// Locks exclude other lockers of the same instance within the process. The guard is a plain
/// value (not a [`MutexGuard`]), so it is `Send` and may be held across an `.await`. Errors report
/// the instance id as their path.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    states: Mutex<HashMap<String, Arc<State>>>,
    /// The ids whose lock is held; a [`MemoryLock`] removes its id on drop.
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

impl MemoryStore {
    /// Returns an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the state of `instance`, replacing any previous one. Does not wait for the lock.
    pub fn insert(&self, instance: &str, state: State) {
        self.inner
            .states()
            .insert(instance.to_owned(), Arc::new(state));
    }

    /// Returns a copy of the state of `instance`, or `None` when it has none.
    pub fn get(&self, instance: &str) -> Option<State> {
        self.inner
            .states()
            .get(instance)
            .map(|state| State::clone(state))
    }

    /// Waits until `instance` is unlocked or `deadline` passes, then takes the lock. Returns
    /// `false` on timeout.
    fn acquire(&self, instance: &str, deadline: Option<Instant>) -> bool {
        let mut held = self.inner.held();
        while held.contains(instance) {
            held = match deadline {
                None => self
                    .inner
                    .released
                    .wait(held)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return false;
                    }
                    self.inner
                        .released
                        .wait_timeout(held, remaining)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        held.insert(instance.to_owned());
        true
    }

    fn guard(&self, instance: &str) -> Box<dyn StateLock + '_> {
        Box::new(MemoryLock {
            inner: &self.inner,
            instance: instance.to_owned(),
        })
    }
}

// The mutexes only guard plain inserts and removals, which cannot leave the data half-updated, so a
// poisoned mutex still holds consistent data and is used as is.
impl Inner {
    fn states(&self) -> MutexGuard<'_, HashMap<String, Arc<State>>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) -> MutexGuard<'_, HashSet<String>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of `instance`, shared: writes replace it, never change it.
    fn load(&self, instance: &str) -> Result<Arc<State>, StoreError> {
        self.states().get(instance).map(Arc::clone).ok_or_else(|| {
            StoreErrorKind::NotFound {
                path: PathBuf::from(instance),
            }
            .into()
        })
    }
}

impl StateStore for MemoryStore {
    fn load(&self, instance: &str) -> Result<Arc<State>, StoreError> {
        self.inner.load(instance)
    }

    fn lock(&self, instance: &str) -> Result<Box<dyn StateLock + '_>, StoreError> {
        self.acquire(instance, None);
        Ok(self.guard(instance))
    }

    fn lock_timeout(
        &self,
        instance: &str,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock + '_>, StoreError> {
        // A timeout too large to represent as a deadline waits forever.
        if self.acquire(instance, Instant::now().checked_add(timeout)) {
            Ok(self.guard(instance))
        } else {
            Err(StoreErrorKind::LockTimeout {
                path: PathBuf::from(instance),
                waited: timeout,
            }
            .into())
        }
    }
}

/// The guard of [`MemoryStore`]: releases the instance and wakes the waiters on drop.
#[derive(Debug)]
struct MemoryLock<'a> {
    inner: &'a Inner,
    instance: String,
}

impl StateLock for MemoryLock<'_> {
    fn load(&self) -> Result<State, StoreError> {
        self.inner
            .load(&self.instance)
            .map(|state| State::clone(&state))
    }

    fn persist(&mut self, state: &State) -> Result<(), StoreError> {
        self.inner
            .states()
            .insert(self.instance.clone(), Arc::new(state.clone()));
        Ok(())
    }
}

impl Drop for MemoryLock<'_> {
    fn drop(&mut self) {
        self.inner.held().remove(&self.instance);
        self.inner.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::thread;

    use serde_json::json;

    use super::*;

    /// The runtime holds the guard across `.await`, so it must be `Send`.
    const _: () = {
        const fn assert_send<T: Send>() {}
        assert_send::<MemoryLock<'static>>();
        assert_send::<Box<dyn StateLock>>();
    };

    #[track_caller]
    fn increment(store: &MemoryStore, times: usize) {
        for _ in 0..times {
            let mut lock = store.lock("acme").unwrap();
            let mut state = lock.load().unwrap();
            let count = state["count"].as_u64().unwrap();
            // Widen the window in which an unexcluded thread would interleave.
            thread::sleep(Duration::from_micros(100));
            state.insert("count".to_owned(), json!(count + 1));
            lock.persist(&state).unwrap();
        }
    }

    fn counter(count: u64) -> State {
        State::from_iter([("count".to_owned(), json!(count))])
    }

    #[test]
    fn clones_share_state() {
        let store = MemoryStore::new();
        let clone = store.clone();
        store.insert("acme", counter(1));
        assert_eq!(clone.get("acme"), Some(counter(1)));
        clone.lock("acme").unwrap().persist(&counter(2)).unwrap();
        assert_eq!(*store.load("acme").unwrap(), counter(2));
        assert_eq!(store.get("other"), None);
    }

    #[test]
    fn load_missing_instance_is_not_found() {
        let error = MemoryStore::new().load("missing").unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::NotFound { path } if path.as_os_str() == "missing"),
            "{error:?}"
        );
    }

    #[test]
    fn lock_excludes_other_threads() {
        let store = MemoryStore::new();
        store.insert("acme", counter(0));
        thread::scope(|scope| {
            scope.spawn(|| increment(&store, 50));
            scope.spawn(|| increment(&store, 50));
        });
        assert_eq!(store.get("acme"), Some(counter(100)));
    }

    #[test]
    fn lock_timeout_gives_up_while_the_lock_is_held() {
        let store = MemoryStore::new();
        let held = store.lock("acme").unwrap();
        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        let error = store.lock_timeout("acme", timeout).err().unwrap();
        assert!(start.elapsed() >= timeout);
        assert!(
            matches!(error.kind(), StoreErrorKind::LockTimeout { waited, .. } if *waited == timeout),
            "{error:?}"
        );
        store.lock_timeout("other", timeout).unwrap();
        drop(held);
        store.lock_timeout("acme", timeout).unwrap();
    }

    #[test]
    fn blocked_lock_wakes_when_the_guard_is_dropped() {
        let store = MemoryStore::new();
        let held = store.lock("acme").unwrap();
        thread::scope(|scope| {
            let waiter =
                scope.spawn(|| store.lock_timeout("acme", Duration::from_secs(10)).is_ok());
            thread::sleep(Duration::from_millis(20));
            drop(held);
            assert!(waiter.join().unwrap());
        });
    }
}
