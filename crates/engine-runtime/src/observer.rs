//! What a run reports while it works. The runtime never prints: it tells an [`Observer`], and
//! the CLI decides what a person sees (`-v`).

use std::time::Duration;

/// Why the engine obtains or refreshes a token before a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshReason {
    /// The instance has never been provisioned (no `authentication.time`).
    NotProvisioned,
    /// No access token is stored.
    NoToken,
    /// The token expired (or expires within the skew) at this epoch-millisecond time.
    Expired {
        /// When it expires, epoch milliseconds.
        at_ms: u64,
    },
    /// `session.management` is `always`.
    SessionAlways,
    /// The vendor rejected the token with this status.
    Rejected {
        /// The status, usually 401.
        status: u16,
    },
    /// The caller ran a lifecycle resource itself (`engine run CONNECTOR
    /// provisionAuthValidation`).
    Requested,
}

/// One step of a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// A token will be obtained or refreshed, and why.
    Refreshing {
        /// Why.
        reason: RefreshReason,
        /// What does it (`ON REFRESH`, `PROVISION AUTH VALIDATION`, `oauth2 refresh_token`).
        by: String,
    },
    /// One lifecycle step this process made ended (succeeded or failed): each step of a refresh
    /// (provisioning, `ON PROVISION`, `ON REFRESH`, a token request), a lifecycle resource the
    /// caller ran, and the call retried after a rejected token; see [`RefreshReport`].
    RefreshFinished(RefreshReport),
    /// Another process refreshed while this one waited for the lock; the refresh is skipped.
    RefreshedElsewhere,
    /// The token is fresh until this time.
    Fresh {
        /// Epoch milliseconds; `None` when it never expires.
        until_ms: Option<u64>,
    },
    /// A request is about to be sent (URL already redacted).
    Sending {
        /// What runs: a resource's display name.
        resource: String,
        /// HTTP method.
        method: String,
        /// The URL, secrets masked.
        url: String,
    },
    /// A response arrived.
    Received {
        /// HTTP status.
        status: u16,
        /// How long the exchange took.
        elapsed: Duration,
    },
    /// A parameter was left out of the request, and why.
    Skipped {
        /// The parameter's vendor name.
        parameter: String,
        /// The configuration key that has no value.
        key: String,
        /// Why, e.g. "`oauth.user.token` has no value yet".
        reason: String,
    },
    /// A value was sent in a form other than its `dataType` says: an object or array as its
    /// JSON text in a header, query, path or form field, or an `object`/`array` parameter whose
    /// text is not JSON, sent as text.
    SentAsText {
        /// The parameter's vendor name.
        parameter: String,
        /// What happened, e.g. "an object, sent as its JSON text".
        reason: String,
    },
    /// Another task or process holds the instance's lock (a refresh, a write): the run waits for
    /// it, at most `timeout`.
    WaitingForLock {
        /// The instance (a file store: its path).
        instance: String,
        /// How long the run waits at most (`None`: as long as it takes).
        timeout: Option<Duration>,
    },
    /// Configuration keys saved into the instance (names only, never values).
    Saved {
        /// The keys.
        keys: Vec<String>,
    },
    /// A response parameter found nothing in the answer: the configuration key keeps its value
    /// (or stays unset).
    NotFound {
        /// The configuration key it saves.
        key: String,
        /// Where it looked (its `vendorName`).
        path: String,
        /// The resource that answered.
        resource: String,
        /// True for a lifecycle step: the key is what later requests read (a token, an id).
        lifecycle: bool,
    },
    /// A part of the connector this run executes is not executed as the platform did: a
    /// JavaScript hook, a converter (the W0501 diagnostic `engine validate` reports). Told once
    /// per run and part, whatever the verbosity: never a silent difference.
    NotExecuted(engine_spec::Diagnostic),
    /// A lifecycle resource was not sent, because it cannot be executed faithfully (an input
    /// no lifecycle step has, a path variable nothing fills, a `preRequest` hook or a converter
    /// the engine does not run): never sent half-built.
    LifecycleSkipped {
        /// The resource's display name.
        resource: String,
        /// Why, e.g. "the request needs the input `id`".
        reason: String,
        /// Where the resource is declared.
        location: engine_spec::Location,
    },
    /// A JavaScript hook run around `resource` logged a line (`console.log`), secrets masked.
    HookLog {
        /// The resource's display name.
        resource: String,
        /// The line.
        line: String,
    },
    /// The token lifetime a vendor sent was not taken as sent: no number of seconds (the
    /// default is used) or longer than a year (a year is used); the instance keeps the one used.
    LifetimeAdjusted(crate::auth::lifetime::LifetimeAdjusted),
    /// A transient failure will be retried after a pause.
    Retrying {
        /// Which attempt comes next, from 2.
        attempt: u32,
        /// The pause.
        after: Duration,
        /// What failed.
        cause: String,
    },
}

/// What one lifecycle step did, for a refresh history: reported by [`Event::RefreshFinished`]
/// after every step this process made, failed ones included: a refresh of two steps
/// (`PROVISION AUTH VALIDATION`, then `ON PROVISION`) is two reports, and a call retried after
/// the vendor rejected its token is a report of its own ([`RefreshReport::retry`]). Holds no
/// secret: tokens appear only as fingerprints, and the error and the vendor's body are redacted.
#[derive(Debug, Clone)]
pub struct RefreshReport {
    /// Why the step ran.
    pub reason: RefreshReason,
    /// What ran: the step (`ON REFRESH`, `oauth2 refresh_token`...), or the retried resource.
    pub by: String,
    /// The HTTP status of the step's request, when one was answered.
    pub status: Option<u16>,
    /// How long the step took (the last step of a refresh: with the write).
    pub elapsed: Duration,
    /// Why it failed (secrets masked); `None` when it succeeded.
    pub error: Option<String>,
    /// The vendor's body when the step failed with an answer (secrets masked).
    pub response: Option<String>,
    /// True for the call retried once after the vendor rejected its token (and the refresh that
    /// followed); false for a lifecycle step.
    pub retry: bool,
    /// The [`fingerprint`] of the token before.
    pub old_token: Option<String>,
    /// The [`fingerprint`] of the token after; `None` when it failed.
    pub new_token: Option<String>,
}

/// A token's fingerprint: the first 8 hex digits of its SHA-256. It tells two tokens apart in a
/// history without revealing either.
pub fn fingerprint(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest[..4]
        .iter()
        .fold(String::with_capacity(8), |mut text, byte| {
            use std::fmt::Write as _;
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// Receives [`Event`]s.
pub trait Observer: Send + Sync {
    /// Called for each event, in order.
    fn event(&self, event: &Event);

    /// False when the observer ignores the events that cost something to build, each request's
    /// [`Event::Sending`] (a redacted URL) and [`Event::Received`] (its timing): the runtime
    /// then skips them. Every other event is told either way.
    fn enabled(&self) -> bool {
        true
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _: &Event) {}

    fn enabled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_the_first_8_hex_digits_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        assert_eq!(super::fingerprint("abc"), "ba7816bf");
    }
}
