//! [`forward_instance_store!`](crate::forward_instance_store): the methods a wrapper of a store
//! does not change, written once.

/// Writes, inside an `impl InstanceStore for Wrapper`, the [`InstanceStore`](crate::InstanceStore)
/// methods named after `=>`, each handing its call as it is to the store in the field named
/// before it (`Arc<dyn InstanceStore>`, or anything a method call reaches a store through). A
/// wrapper writes by hand what it changes and names the rest. A method neither written nor named
/// keeps the trait's default, which is *not* the inner store's own (`next_due_ms` then walks the
/// wrapper's listing), so name every method the inner store answers better.
///
/// ```
/// use std::sync::Arc;
///
/// use engine_store::{InstanceStore, MemoryStore};
///
/// /// A store whose instances are told apart from the same ids of another tenant's.
/// struct Tenant {
///     inner: Arc<dyn InstanceStore>,
/// }
///
/// impl InstanceStore for Tenant {
///     fn identity(&self, instance: &str) -> String {
///         format!("tenant-a/{}", self.inner.identity(instance))
///     }
///
///     engine_store::forward_instance_store!(inner =>
///         load, write, lock, list, delete, append_history, history, claim_due, next_due_ms,
///         renew, release, get_record, put_record, list_records, delete_record,
///         purge_expired_records, take_notices, scrub);
/// }
///
/// let store = Tenant { inner: Arc::new(MemoryStore::new()) };
/// assert!(store.identity("acme").starts_with("tenant-a/memory:"));
/// ```
#[macro_export]
macro_rules! forward_instance_store {
    ($inner:ident => $($method:ident),+ $(,)?) => {
        $($crate::forward_instance_store!(@ $inner $method);)+
    };
    // Each method's parameters and output, as the trait declares them.
    (@ $inner:ident load) => {
        $crate::forward_instance_store!(@forward $inner load('a, instance: &'a str)
            -> $crate::Versioned);
    };
    (@ $inner:ident write) => {
        $crate::forward_instance_store!(@forward $inner write('a, instance: &'a str,
            state: $crate::State, expected: u64) -> u64);
    };
    (@ $inner:ident lock) => {
        $crate::forward_instance_store!(@forward $inner lock('a, instance: &'a str,
            timeout: Option<::std::time::Duration>) -> Box<dyn $crate::InstanceLock>);
    };
    (@ $inner:ident list) => {
        $crate::forward_instance_store!(@forward $inner list('a, page: $crate::Page)
            -> $crate::Listing);
    };
    (@ $inner:ident delete) => {
        $crate::forward_instance_store!(@forward $inner delete('a, instance: &'a str,
            expected: u64) -> ());
    };
    (@ $inner:ident append_history) => {
        $crate::forward_instance_store!(@forward $inner append_history('a, instance: &'a str,
            entry: $crate::__serde_json::Value, keep: usize) -> ());
    };
    (@ $inner:ident history) => {
        $crate::forward_instance_store!(@forward $inner history('a, instance: &'a str)
            -> Vec<$crate::__serde_json::Value>);
    };
    (@ $inner:ident claim_due) => {
        $crate::forward_instance_store!(@forward $inner claim_due('a, now_ms: u64,
            limit: usize, lease: ::std::time::Duration) -> Vec<$crate::Claim>);
    };
    (@ $inner:ident next_due_ms) => {
        $crate::forward_instance_store!(@forward $inner next_due_ms('a, from_ms: u64)
            -> Option<u64>);
    };
    (@ $inner:ident renew) => {
        $crate::forward_instance_store!(@forward $inner renew('a, claim: &'a $crate::Claim,
            now_ms: u64, lease: ::std::time::Duration) -> $crate::Claim);
    };
    (@ $inner:ident release) => {
        $crate::forward_instance_store!(@forward $inner release('a, claim: &'a $crate::Claim)
            -> ());
    };
    (@ $inner:ident get_record) => {
        $crate::forward_instance_store!(@forward $inner get_record('a, namespace: &'a str,
            id: &'a str, now_ms: u64) -> Option<$crate::Record>);
    };
    (@ $inner:ident put_record) => {
        $crate::forward_instance_store!(@forward $inner put_record('a, namespace: &'a str,
            id: &'a str, value: $crate::__serde_json::Value, expires_at_ms: Option<u64>,
            expected: u64, now_ms: u64) -> u64);
    };
    (@ $inner:ident list_records) => {
        $crate::forward_instance_store!(@forward $inner list_records('a, namespace: &'a str,
            after: Option<&'a str>, limit: usize, now_ms: u64) -> Vec<$crate::Record>);
    };
    (@ $inner:ident delete_record) => {
        $crate::forward_instance_store!(@forward $inner delete_record('a, namespace: &'a str,
            id: &'a str, expected: Option<u64>) -> bool);
    };
    (@ $inner:ident purge_expired_records) => {
        $crate::forward_instance_store!(@forward $inner purge_expired_records('a,
            namespace: Option<&'a str>, now_ms: u64, limit: usize) -> usize);
    };
    (@ $inner:ident scrub) => {
        $crate::forward_instance_store!(@forward $inner scrub('a) -> ());
    };
    (@ $inner:ident identity) => {
        fn identity(&self, instance: &str) -> String {
            self.$inner.identity(instance)
        }
    };
    (@ $inner:ident take_notices) => {
        fn take_notices(&self) -> Vec<String> {
            self.$inner.take_notices()
        }
    };
    (@forward $inner:ident $method:ident($lt:lifetime $(, $parameter:ident: $type:ty)*)
        -> $output:ty) => {
        fn $method<$lt>(
            &$lt self,
            $($parameter: $type),*
        ) -> $crate::BoxFuture<$lt, Result<$output, $crate::StoreError>> {
            self.$inner.$method($($parameter),*)
        }
    };
}
