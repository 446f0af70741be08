//! The proxied call's read of its instance, from memory: [`CachedStore`] wraps a store and
//! answers [`InstanceStore::load`] from a [`StateCache`] when this process read the instance
//! less than the cache's time to live ago (`engine serve --state-cache`, 1 s by default).
//!
//! Consistency, in this process and across processes:
//!
//! - every write through this process (a write, a delete, a write under the lock) goes through
//!   a [`CachedStore`] (the server's plain store is one, and every other store wraps it) and
//!   drops the instance's entries, of every layer; a read that started before such a write is
//!   never kept;
//! - a read under the instance's lock ([`InstanceLock::load`], the refresh path) always goes to
//!   the store, and drops the entries too: after a token another process rotated, the vendor's
//!   401 for the old token makes the runtime lock and re-read, retry with the new token, and the
//!   next call reads the store again;
//! - otherwise a change made by another process (a refresh, a delete) is seen at the latest one
//!   time to live later;
//! - at most [`MAX_CACHED`] instances are kept; past it, the oldest read is dropped first.
//!
//! The states kept are those the wrapped store hands out: the sealed stores' are decrypted, as
//! they are in memory during a call anyway. They are never logged (`Debug` shows no state).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_store::{BoxFuture, InstanceLock, InstanceStore, State, StoreError, Versioned};

/// At most this many instances are kept in a [`StateCache`].
pub(crate) const MAX_CACHED: usize = 10_000;

/// Instance states read less than a time to live ago, by instance id and layer (the store that
/// read them: the plain one, or a connector's sealed one).
pub(crate) struct StateCache {
    ttl: Duration,
    cap: usize,
    /// One more at every invalidation: a read that started at another value is not kept.
    epoch: AtomicU64,
    /// The next layer's number.
    layers: AtomicU64,
    entries: Mutex<Entries>,
}

/// Never shows a state.
impl std::fmt::Debug for StateCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StateCache")
            .field("ttl", &self.ttl)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Entries {
    by_id: foldhash::HashMap<String, Entry>,
    /// Ids in the order they were filled, with the fill's stamp: a stamp that is no longer the
    /// entry's is skipped.
    order: VecDeque<(String, u64)>,
    next_stamp: u64,
}

struct Entry {
    stamp: u64,
    slots: Vec<Slot>,
}

struct Slot {
    layer: u64,
    at: Instant,
    read: Versioned,
}

impl StateCache {
    /// A cache keeping states `ttl`, at most `cap` instances.
    pub(crate) fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            epoch: AtomicU64::new(0),
            layers: AtomicU64::new(0),
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of `id` read through `layer` less than the time to live ago.
    fn get(&self, id: &str, layer: u64) -> Option<Versioned> {
        let entries = self.entries();
        let slot = entries
            .by_id
            .get(id)?
            .slots
            .iter()
            .find(|slot| slot.layer == layer)?;
        (slot.at.elapsed() < self.ttl).then(|| slot.read.clone())
    }

    /// Keeps `read` of `id` through `layer`, unless an invalidation happened since `epoch`.
    fn fill(&self, id: &str, layer: u64, read: &Versioned, epoch: u64) {
        let mut entries = self.entries();
        // Compared under the lock: an invalidation takes it too, after counting.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let stamp = entries.next_stamp;
        entries.next_stamp += 1;
        if !entries.by_id.contains_key(id) {
            while entries.by_id.len() >= self.cap {
                let Some((oldest, stamp)) = entries.order.pop_front() else {
                    break;
                };
                if entries.by_id.get(&oldest).is_some_and(|e| e.stamp == stamp) {
                    entries.by_id.remove(&oldest);
                }
            }
        }
        let slot = Slot {
            layer,
            at: Instant::now(),
            read: read.clone(),
        };
        let entry = entries.by_id.entry(id.to_owned()).or_insert(Entry {
            stamp,
            slots: Vec::new(),
        });
        entry.stamp = stamp;
        entry.slots.retain(|slot| slot.layer != layer);
        entry.slots.push(slot);
        entries.order.push_back((id.to_owned(), stamp));
        // Refills leave stale stamps behind: compacted before they outgrow the entries.
        if entries.order.len() > 2 * self.cap {
            let Entries { by_id, order, .. } = &mut *entries;
            order.retain(|(id, stamp)| by_id.get(id).is_some_and(|e| e.stamp == *stamp));
        }
    }

    /// Drops every entry of `id`, and every read of any instance under way.
    fn invalidate(&self, id: &str) {
        let mut entries = self.entries();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.by_id.remove(id);
    }

    /// How many instances it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().by_id.len()
    }
}

/// A store whose writes drop the instance from a [`StateCache`], and whose reads come from it
/// when it has a layer ([`CachedStore::reading`]).
pub(crate) struct CachedStore {
    inner: Arc<dyn InstanceStore>,
    cache: Arc<StateCache>,
    /// `None`: reads go to `inner`, writes still invalidate.
    layer: Option<u64>,
}

impl CachedStore {
    /// `inner`, its writes dropping their instance from `cache`; its reads go to `inner`.
    pub(crate) fn invalidating(inner: Arc<dyn InstanceStore>, cache: &Arc<StateCache>) -> Self {
        Self {
            inner,
            cache: Arc::clone(cache),
            layer: None,
        }
    }

    /// `inner`, its reads answered from `cache` (a layer of their own) for the time to live.
    pub(crate) fn reading(inner: Arc<dyn InstanceStore>, cache: &Arc<StateCache>) -> Self {
        Self {
            inner,
            cache: Arc::clone(cache),
            layer: Some(cache.layers.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

impl InstanceStore for CachedStore {
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let Some(layer) = self.layer else {
                return self.inner.load(instance).await;
            };
            if let Some(read) = self.cache.get(instance, layer) {
                return Ok(read);
            }
            let epoch = self.cache.epoch.load(Ordering::Acquire);
            let read = self.inner.load(instance).await?;
            self.cache.fill(instance, layer, &read, epoch);
            Ok(read)
        })
    }

    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let written = self.inner.write(instance, state, expected).await;
            self.cache.invalidate(instance);
            written
        })
    }

    fn lock<'a>(
        &'a self,
        instance: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn InstanceLock>, StoreError>> {
        Box::pin(async move {
            let inner = self.inner.lock(instance, timeout).await?;
            let lock: Box<dyn InstanceLock> = Box::new(CachedLock {
                inner,
                cache: Arc::clone(&self.cache),
                instance: instance.to_owned(),
            });
            Ok(lock)
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let deleted = self.inner.delete(instance, expected).await;
            self.cache.invalidate(instance);
            deleted
        })
    }

    engine_store::forward_instance_store!(inner =>
        list, append_history, history, claim_due, next_due_ms, renew, release, identity,
        get_record, put_record, list_records, delete_record, purge_expired_records,
        take_notices, scrub);
}

/// The lock of a [`CachedStore`]: reads and writes go to the store, and drop the instance's
/// entries (what the store holds under the lock is what the next call reads).
struct CachedLock {
    inner: Box<dyn InstanceLock>,
    cache: Arc<StateCache>,
    instance: String,
}

impl InstanceLock for CachedLock {
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let read = self.inner.load().await;
            self.cache.invalidate(&self.instance);
            read
        })
    }

    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let written = self.inner.write(state, expected).await;
            self.cache.invalidate(&self.instance);
            written
        })
    }
}

#[cfg(test)]
mod tests {
    use engine_store::MemoryStore;
    use serde_json::json;

    use super::*;

    fn state(token: &str) -> State {
        let mut state = State::new();
        state.insert("access.token".to_owned(), json!(token));
        state
    }

    /// A store under a reading cache: the store itself, the invalidating plain store every
    /// write goes through, and the reading one over it.
    fn stores(ttl: Duration, cap: usize) -> (Arc<MemoryStore>, Arc<CachedStore>, CachedStore) {
        let memory = Arc::new(MemoryStore::new());
        let cache = Arc::new(StateCache::new(ttl, cap));
        let plain = Arc::new(CachedStore::invalidating(
            Arc::clone(&memory) as Arc<dyn InstanceStore>,
            &cache,
        ));
        let reading = CachedStore::reading(Arc::clone(&plain) as Arc<dyn InstanceStore>, &cache);
        (memory, plain, reading)
    }

    fn token(read: &Versioned) -> &str {
        read.state["access.token"].as_str().unwrap()
    }

    #[tokio::test]
    async fn a_read_is_answered_from_memory_until_a_write_through_the_process() {
        let (memory, plain, reading) = stores(Duration::from_hours(1), 10);
        let version = memory.write("a", state("t1"), 0).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t1");
        // Written behind the process's back: the cache still answers.
        let version = memory.write("a", state("t2"), version).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t1");
        // Written through the process: the next read goes to the store.
        plain.write("a", state("t3"), version).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t3");
        // A delete through the process: gone at once.
        let read = reading.load("a").await.unwrap();
        plain.delete("a", read.version).await.unwrap();
        assert!(reading.load("a").await.is_err());
    }

    #[tokio::test]
    async fn a_read_under_the_lock_goes_to_the_store_and_drops_the_entry() {
        let (memory, _plain, reading) = stores(Duration::from_hours(1), 10);
        let version = memory.write("a", state("t1"), 0).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t1");
        memory.write("a", state("t2"), version).await.unwrap();
        let mut lock = reading.lock("a", None).await.unwrap();
        assert_eq!(token(&lock.load().await.unwrap()), "t2");
        drop(lock);
        assert_eq!(token(&reading.load("a").await.unwrap()), "t2");
    }

    #[tokio::test]
    async fn a_write_under_the_lock_drops_the_entry() {
        let (memory, plain, reading) = stores(Duration::from_hours(1), 10);
        memory.write("a", state("t1"), 0).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t1");
        engine_store::update(&*plain, "a", None, &|| {}, |state| {
            state.insert("access.token".to_owned(), json!("t2"));
            Ok(true)
        })
        .await
        .unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t2");
    }

    #[tokio::test]
    async fn with_no_time_to_live_every_read_goes_to_the_store() {
        let (memory, _plain, reading) = stores(Duration::ZERO, 10);
        let version = memory.write("a", state("t1"), 0).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t1");
        memory.write("a", state("t2"), version).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "t2");
    }

    #[tokio::test]
    async fn the_cache_keeps_at_most_its_cap_dropping_the_oldest_read() {
        let (memory, _plain, reading) = stores(Duration::from_hours(1), 3);
        for id in ["a", "b", "c", "d"] {
            memory.write(id, state(id), 0).await.unwrap();
            reading.load(id).await.unwrap();
        }
        assert_eq!(reading.cache.len(), 3);
        // `a`, the oldest read, was dropped: changed behind the process's back, it is read anew.
        memory.write("a", state("a2"), 1).await.unwrap();
        memory.write("d", state("d2"), 1).await.unwrap();
        assert_eq!(token(&reading.load("a").await.unwrap()), "a2");
        // `d` is still kept, `b` is now the one dropped.
        assert_eq!(token(&reading.load("d").await.unwrap()), "d");
        assert_eq!(reading.cache.len(), 3);
        for _ in 0..20 {
            reading.load("d").await.unwrap();
            memory.write("b", state("b"), 0).await.ok();
            reading.load("b").await.unwrap();
        }
        assert!(reading.cache.entries().order.len() <= 6);
    }

    /// A store that knows its earliest due time without a listing (as the SQL stores do from
    /// their index): 42, whatever it holds.
    struct Indexed {
        inner: MemoryStore,
    }

    impl InstanceStore for Indexed {
        fn next_due_ms(&self, _: u64) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
            Box::pin(async { Ok(Some(42)) })
        }

        engine_store::forward_instance_store!(inner =>
            load, write, lock, list, delete, append_history, history, claim_due, renew,
            release, identity, get_record, put_record, list_records, delete_record,
            purge_expired_records, take_notices, scrub);
    }

    #[tokio::test]
    async fn the_scheduler_asks_the_store_for_its_earliest_due_time_through_the_cache() {
        // The trait's default walks the listing (empty here: `None`); the store's own answer
        // comes from its index.
        let inner: Arc<dyn InstanceStore> = Arc::new(Indexed {
            inner: MemoryStore::new(),
        });
        let cache = Arc::new(StateCache::new(Duration::from_secs(1), 10));
        for store in [
            CachedStore::invalidating(Arc::clone(&inner), &cache),
            CachedStore::reading(Arc::clone(&inner), &cache),
        ] {
            assert_eq!(store.next_due_ms(0).await.unwrap(), Some(42));
        }
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_write_is_not_kept() {
        let (memory, _plain, reading) = stores(Duration::from_hours(1), 10);
        memory.write("a", state("t1"), 0).await.unwrap();
        let epoch = reading.cache.epoch.load(Ordering::Acquire);
        let stale = memory.load("a").await.unwrap();
        reading.cache.invalidate("a");
        reading
            .cache
            .fill("a", reading.layer.unwrap(), &stale, epoch);
        assert!(reading.cache.get("a", reading.layer.unwrap()).is_none());
    }
}
