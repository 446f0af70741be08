//! Webhooks: the events engine-service publishes into the store's outbox
//! ([`engine_service::events`]), delivered to `--webhook-url` as signed requests following the
//! Standard Webhooks specification (<https://www.standardwebhooks.com/>): a `POST` of the event's
//! JSON with `webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` (Unix
//! seconds of the attempt) and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
//! `ID.TIMESTAMP.BODY` under the secret's key).
//!
//! Delivery is at least once, across processes: a process takes an event by a conditional
//! write of its outbox record (a lease of [`LEASE`]; of two processes, one wins), sends it, and
//! then deletes the record (a `2xx`) or writes the next attempt's time: exponential backoff with
//! jitter ([`backoff`]), until [`Webhooks::max_attempts`], after which the event is marked
//! failed. A process that dies while sending loses its lease, and another sends the event
//! again. The loop runs on the injected [`Clock`]: tests move it instead of sleeping.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use engine_runtime::{
    Clock, Jitter, PreparedRequest, RequestBody, SecretSlot, SeededJitter, Transport,
    TransportErrorKind,
};
use engine_service::events::{self, OUTBOX_NAMESPACE, Pending};
use engine_store::{InstanceStore, Record, StoreError, StoreErrorKind};
use hmac::{KeyInit as _, Mac as _};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::{JoinError, JoinSet};

use crate::metrics::Metrics;

/// How long a process that took an event has to deliver it before another may: longer than
/// any attempt ([`Webhooks::timeout`] is at most a third of it).
pub const LEASE: Duration = Duration::from_mins(1);

/// The longest the sender sleeps without reading the outbox: events other processes publish
/// are sent at most this late.
pub const MAX_IDLE: Duration = Duration::from_secs(5);

/// The events read from the outbox at once.
const BATCH: usize = 100;

/// The most events a process sends at once: a slow receiver holds up this many, not all.
pub const CONCURRENCY: usize = 8;

/// A webhook secret, `whsec_` and the base64 of 24 to 64 random bytes (the Standard Webhooks
/// form). `{:?}` never shows it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSecret(****)")
    }
}

impl WebhookSecret {
    /// The secret `text` spells.
    ///
    /// Fails with a message (that never repeats the text) when it does not start with
    /// `whsec_`, is not base64 after it, or is not 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("the secret does not start with `whsec_`")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "the secret is not base64 after `whsec_`")?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "the secret is {} bytes after `whsec_`; it needs 24 to 64",
                key.len()
            ));
        }
        Ok(Self { key })
    }

    /// The `webhook-signature` of the message `id` sent at `timestamp` (Unix seconds) with
    /// `body`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &str) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        format!("v1,{signature}")
    }
}

/// Where and how events are delivered. `{:?}` shows the URL's origin only (its path or query
/// may hold a receiver's token) and never the secret.
#[derive(Clone)]
pub struct Webhooks {
    /// The URL each event is posted to.
    pub url: url::Url,
    /// The secret requests are signed with.
    pub secret: WebhookSecret,
    /// Attempts before an event is marked failed (at least one).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each one, up to
    /// [`Webhooks::max_backoff`], less up to a fifth at random.
    pub first_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// The bound on each attempt.
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Webhooks")
            .field("origin", &self.url.origin().ascii_serialization())
            .field("secret", &self.secret)
            .field("max_attempts", &self.max_attempts)
            .field("first_backoff", &self.first_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Webhooks {
    /// Posts to `url`, signed with `secret`: 10 attempts, 5 s doubling up to an hour between
    /// them (about 40 minutes in all), 10 s each.
    pub fn new(url: url::Url, secret: WebhookSecret) -> Self {
        Self {
            url,
            secret,
            max_attempts: 10,
            first_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_hours(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The wait after the `attempts`-th failed attempt: `first` doubled `attempts - 1` times, at
/// most `max`, less up to a fifth of it at random.
pub fn backoff(attempts: u32, first: Duration, max: Duration, jitter: &mut dyn Jitter) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    let wait = first.saturating_mul(1_u32 << doublings).min(max);
    let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(wait_ms - jitter.below(wait_ms / 5 + 1).min(wait_ms / 5))
}

/// The sender's parts.
pub(crate) struct Sender {
    pub(crate) store: Arc<dyn InstanceStore>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) webhooks: Webhooks,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    /// Notified after a refresh here: an event may be waiting.
    pub(crate) wake: Arc<Notify>,
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Failed: why, without the URL or the answer's body (`status 503`, `unreachable`).
    Failed(String),
}

impl Sender {
    /// Delivers the outbox's events until `shutdown` turns true: a pass over the outbox, then a
    /// sleep until the next attempt due, [`MAX_IDLE`] at most, or a wake-up. An attempt under
    /// way is finished first (each is bounded by [`Webhooks::timeout`]).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut store_failures = 0_u32;
        while !*shutdown.borrow() {
            let now_ms = self.clock.now_ms();
            let wake_at_ms = if let Ok(wake_at_ms) = self.pass(&shutdown).await {
                store_failures = 0;
                wake_at_ms
            } else {
                // The store is away: read again later, without a word (the scheduler says it).
                store_failures = store_failures.saturating_add(1);
                now_ms.saturating_add(millis(MAX_IDLE) << store_failures.min(3))
            };
            let wait = Duration::from_millis(wake_at_ms.saturating_sub(self.clock.now_ms()));
            tokio::select! {
                () = self.clock.sleep(wait) => {}
                () = self.wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Takes and sends each event of the outbox that is due (every page of it), [`CONCURRENCY`]
    /// at a time. Returns when the next one is due (at most [`MAX_IDLE`] from now).
    ///
    /// Fails when the store cannot be listed, or an event's outcome cannot be written (after
    /// the others of the pass were sent).
    async fn pass(self: &Arc<Self>, shutdown: &watch::Receiver<bool>) -> Result<u64, StoreError> {
        let now_ms = self.clock.now_ms();
        let mut wake_at_ms = now_ms.saturating_add(millis(MAX_IDLE));
        let mut sending = JoinSet::new();
        let mut failed = None;
        let settle = |joined: Option<Result<Result<Option<u64>, StoreError>, JoinError>>,
                      wake_at_ms: &mut u64,
                      failed: &mut Option<StoreError>| {
            match joined {
                Some(Ok(Ok(Some(next_ms)))) => *wake_at_ms = (*wake_at_ms).min(next_ms),
                Some(Ok(Err(error))) => *failed = Some(error),
                // Nothing more to send, or a task that ended without an outcome: its lease ends.
                _ => {}
            }
        };
        // Every page of the outbox: a backlog is sent at the receiver's pace, not a page per
        // wake-up.
        let mut after: Option<String> = None;
        'pages: loop {
            let listed = self
                .store
                .list_records(
                    OUTBOX_NAMESPACE,
                    after.as_deref(),
                    BATCH,
                    self.clock.now_ms(),
                )
                .await;
            let records = match listed {
                Ok(records) => records,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            };
            let last_page = records.len() < BATCH;
            after = records.last().map(|record| record.id.clone());
            for record in records {
                if *shutdown.borrow() {
                    break 'pages;
                }
                let Some(pending) = Pending::read(&record.value) else {
                    // Not an event: dropped, rather than read at every pass.
                    let _ = self
                        .store
                        .delete_record(OUTBOX_NAMESPACE, &record.id, Some(record.version))
                        .await;
                    continue;
                };
                if !pending.takeable(self.clock.now_ms()) {
                    let due = pending.next_attempt_at_ms.max(pending.leased_until_ms);
                    wake_at_ms = wake_at_ms.min(due);
                    continue;
                }
                while sending.len() >= CONCURRENCY {
                    settle(sending.join_next().await, &mut wake_at_ms, &mut failed);
                }
                let sender = Arc::clone(self);
                sending.spawn(async move { sender.deliver(record, pending).await });
            }
            if last_page {
                break;
            }
        }
        while !sending.is_empty() {
            settle(sending.join_next().await, &mut wake_at_ms, &mut failed);
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(wake_at_ms),
        }
    }

    /// Takes the event of `record` (a conditional write: another process may win it), sends
    /// it, and writes what came of it. Returns when its next attempt is due, if there is one.
    async fn deliver(&self, record: Record, pending: Pending) -> Result<Option<u64>, StoreError> {
        let now_ms = self.clock.now_ms();
        let attempts = pending.attempts.saturating_add(1);
        let taken = Pending {
            attempts,
            leased_until_ms: now_ms.saturating_add(millis(LEASE)),
            ..pending
        };
        let version = match self
            .store
            .put_record(
                OUTBOX_NAMESPACE,
                &record.id,
                taken.to_value(),
                record.expires_at_ms,
                record.version,
                now_ms,
            )
            .await
        {
            Ok(version) => version,
            // Another process took it, or delivered it.
            Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let attempt = self.send(&record.id, &taken.payload).await;
        let now_ms = self.clock.now_ms();
        let at = jiff::Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(0))
            .map(|at| at.to_string())
            .ok();
        match attempt {
            Attempt::Delivered => {
                self.metrics.delivery("delivered");
                self.store
                    .delete_record(OUTBOX_NAMESPACE, &record.id, Some(version))
                    .await?;
                let delivery = json!({"status": "delivered", "attempts": attempts, "at": at});
                events::settle(&*self.store, &record.id, delivery, now_ms).await?;
                Ok(None)
            }
            Attempt::Failed(why) if attempts >= self.webhooks.max_attempts.max(1) => {
                self.metrics.delivery("failed");
                self.store
                    .delete_record(OUTBOX_NAMESPACE, &record.id, Some(version))
                    .await?;
                let delivery = json!({
                    "status": "failed", "attempts": attempts, "at": at, "last_error": why,
                });
                events::settle(&*self.store, &record.id, delivery, now_ms).await?;
                Ok(None)
            }
            Attempt::Failed(why) => {
                self.metrics.delivery("retried");
                let wait = backoff(
                    attempts,
                    self.webhooks.first_backoff,
                    self.webhooks.max_backoff,
                    &mut SeededJitter::from_entropy(),
                );
                let next_ms = now_ms.saturating_add(millis(wait));
                let retried = Pending {
                    next_attempt_at_ms: next_ms,
                    leased_until_ms: 0,
                    last_error: Some(why),
                    ..taken
                };
                match self
                    .store
                    .put_record(
                        OUTBOX_NAMESPACE,
                        &record.id,
                        retried.to_value(),
                        record.expires_at_ms,
                        version,
                        now_ms,
                    )
                    .await
                {
                    // The lease ended and another process took it meanwhile: its turn.
                    Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => {
                        Ok(None)
                    }
                    Err(error) => Err(error),
                    Ok(_) => Ok(Some(next_ms)),
                }
            }
        }
    }

    /// One attempt: the payload posted, signed, to the URL.
    async fn send(&self, id: &str, payload: &serde_json::Value) -> Attempt {
        let body = payload.to_string();
        let timestamp = self.clock.now_ms() / 1000;
        let signature = self.webhooks.secret.sign(id, timestamp, &body);
        let request = PreparedRequest {
            resource: Arc::from("webhook"),
            method: Arc::from("POST"),
            url: self.webhooks.url.clone(),
            headers: vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("webhook-id".to_owned(), id.to_owned()),
                ("webhook-timestamp".to_owned(), timestamp.to_string()),
                ("webhook-signature".to_owned(), signature),
            ],
            body: RequestBody::Text(body),
            // No redirect is followed: the event goes to the URL given, or fails.
            lifecycle: true,
            secrets: vec![SecretSlot::Header {
                name: "webhook-signature".into(),
                shown: "****".into(),
            }],
        };
        let sent = tokio::time::timeout(self.webhooks.timeout, self.transport.send(&request));
        match sent.await {
            Ok(Ok(response)) if (200..300).contains(&response.status) => Attempt::Delivered,
            Ok(Ok(response)) => Attempt::Failed(format!("status {}", response.status)),
            Ok(Err(error)) => Attempt::Failed(
                match error.kind {
                    TransportErrorKind::Connect => "unreachable",
                    TransportErrorKind::Timeout => "timeout",
                    _ => "failed",
                }
                .to_owned(),
            ),
            Err(_) => Attempt::Failed("timeout".to_owned()),
        }
    }
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};
    use engine_runtime::ManualClock;
    use engine_service::events::{EVENTS_NAMESPACE, EventType, NewEvent};
    use engine_store::MemoryStore;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    /// The specification's own example: its secret, id, timestamp, body and signature.
    #[test]
    fn a_signature_is_the_specifications_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(format!("{secret:?}"), "WebhookSecret(****)");
        let url = "https://user:FAKE-password@hooks.example.com/in/FAKE-path?token=FAKE-query";
        let webhooks = Webhooks::new(url.parse().unwrap(), secret);
        let shown = format!("{webhooks:?}");
        assert!(shown.contains("\"https://hooks.example.com\""), "{shown}");
        assert!(
            !shown.contains("FAKE") && !shown.contains("MfKQ"),
            "{shown}"
        );
        for wrong in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!",
            "whsec_AAAA",
        ] {
            let message = WebhookSecret::parse(wrong).unwrap_err();
            assert!(!message.contains(wrong), "{message}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_bound_less_a_fifth_at_most() {
        struct Most;
        impl Jitter for Most {
            fn below(&mut self, bound: u64) -> u64 {
                bound.saturating_sub(1)
            }
        }
        struct Least;
        impl Jitter for Least {
            fn below(&mut self, _: u64) -> u64 {
                0
            }
        }
        let (first, max) = (Duration::from_secs(5), Duration::from_hours(1));
        let waits: Vec<u64> = (1..=12)
            .map(|attempt| backoff(attempt, first, max, &mut Least).as_secs())
            .collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(backoff(1, first, max, &mut Most), Duration::from_secs(4));
        assert_eq!(backoff(40, first, max, &mut Most), Duration::from_mins(48));
        let mut seeded = SeededJitter::new(7);
        for attempt in 1..=20 {
            let wait = backoff(attempt, first, max, &mut seeded);
            let full = backoff(attempt, first, max, &mut Least);
            assert!(
                full.saturating_sub(full / 5) <= wait && wait <= full,
                "{wait:?} {full:?}"
            );
        }
    }

    /// A receiver on loopback: answers each request with the next status of `statuses` (then
    /// 200), and keeps what it got.
    struct Receiver {
        url: url::Url,
        got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    }

    async fn receiver(statuses: Vec<u16>) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(statuses.into_iter()));
        let kept = Arc::clone(&got);
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let kept = Arc::clone(&kept);
                let statuses = Arc::clone(&statuses);
                async move {
                    kept.lock().unwrap().push((headers, body));
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver {
            url: url.parse().unwrap(),
            got,
        }
    }

    fn sender(store: &Arc<MemoryStore>, clock: &ManualClock, url: &url::Url) -> Arc<Sender> {
        let secret = WebhookSecret::parse(&format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7_u8; 32])
        ))
        .unwrap();
        let webhooks = Webhooks {
            max_attempts: 3,
            ..Webhooks::new(url.clone(), secret)
        };
        Arc::new(Sender {
            store: Arc::clone(store) as Arc<dyn InstanceStore>,
            transport: Arc::new(
                engine_runtime::HttpTransport::new(
                    Some(webhooks.timeout),
                    webhooks.timeout,
                    engine_runtime::DEFAULT_MAX_BODY,
                )
                .unwrap(),
            ),
            webhooks,
            clock: Arc::new(clock.clone()),
            metrics: Arc::new(Metrics::default()),
            wake: Arc::new(Notify::new()),
        })
    }

    async fn publish(store: &MemoryStore, instance: &str) -> String {
        let event = NewEvent::new(
            EventType::NeedsReauth,
            instance,
            "schedule",
            None,
            &[],
            None,
        );
        events::publish(store, &event, NOW).await.unwrap()
    }

    async fn delivery(store: &MemoryStore, id: &str, now_ms: u64) -> serde_json::Value {
        let record = store.get_record(EVENTS_NAMESPACE, id, now_ms).await;
        record.unwrap().unwrap().value["delivery"].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_attempt_is_retried_after_its_backoff_then_delivered_signed() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let hook = receiver(vec![503]).await;
        let sender = sender(&store, &clock, &hook.url);
        let (_stop, stopped) = watch::channel(false);
        let id = publish(&store, "acme").await;

        // The first attempt gets a 503: due again after 4 to 5 s.
        let wake_at = sender.pass(&stopped).await.unwrap();
        assert!((NOW + 4000..=NOW + 5000).contains(&wake_at), "{wake_at}");
        assert_eq!(hook.got.lock().unwrap().len(), 1);
        let outbox = store.get_record(OUTBOX_NAMESPACE, &id, NOW).await.unwrap();
        let pending = Pending::read(&outbox.unwrap().value).unwrap();
        assert_eq!(
            (pending.attempts, pending.last_error.as_deref()),
            (1, Some("status 503"))
        );
        // Not due yet: nothing is sent.
        clock.advance(3000);
        sender.pass(&stopped).await.unwrap();
        assert_eq!(hook.got.lock().unwrap().len(), 1);
        clock.set(wake_at);
        sender.pass(&stopped).await.unwrap();
        assert_eq!(
            store
                .list_records(OUTBOX_NAMESPACE, None, 10, wake_at)
                .await
                .unwrap(),
            []
        );
        assert_eq!(delivery(&store, &id, wake_at).await["attempts"], 2);
        assert_eq!(delivery(&store, &id, wake_at).await["status"], "delivered");

        // Both attempts carry the event's id, their own time and a signature of both.
        let got = hook.got.lock().unwrap().clone();
        for ((headers, body), sent_at) in got.iter().zip([NOW, wake_at]) {
            let header = |name: &str| headers[name].to_str().unwrap().to_owned();
            assert_eq!(header("webhook-id"), id);
            assert_eq!(header("webhook-timestamp"), (sent_at / 1000).to_string());
            assert_eq!(
                header("webhook-signature"),
                sender.webhooks.secret.sign(&id, sent_at / 1000, body)
            );
            assert_eq!(header("content-type"), "application/json");
            let payload: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(payload["type"], "instance.needs_reauth");
            assert_eq!(payload["data"]["instance"], "acme");
        }
        let metrics = sender.metrics.render();
        assert!(
            metrics.contains("engine_webhook_deliveries_total{outcome=\"delivered\"} 1")
                && metrics.contains("engine_webhook_deliveries_total{outcome=\"retried\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_is_marked_failed_after_its_last_attempt() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let hook = receiver(vec![500, 500, 500, 500]).await;
        let sender = sender(&store, &clock, &hook.url);
        let (_stop, stopped) = watch::channel(false);
        let id = publish(&store, "acme").await;
        for _ in 0..5 {
            let wake_at = sender.pass(&stopped).await.unwrap();
            clock.set(wake_at.max(clock.now_ms()));
        }
        // Three attempts (`max_attempts`), then no more.
        assert_eq!(hook.got.lock().unwrap().len(), 3);
        let delivery = delivery(&store, &id, clock.now_ms()).await;
        assert_eq!(
            (
                &delivery["status"],
                &delivery["attempts"],
                &delivery["last_error"]
            ),
            (&json!("failed"), &json!(3), &json!("status 500"))
        );
        let metrics = sender.metrics.render();
        assert!(
            metrics.contains("engine_webhook_deliveries_total{outcome=\"failed\"} 1"),
            "{metrics}"
        );
    }

    /// Two senders on one store, at once: each event is sent by one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_senders_on_one_store_send_each_event_once() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let hook = receiver(Vec::new()).await;
        let (one, other) = (
            sender(&store, &clock, &hook.url),
            sender(&store, &clock, &hook.url),
        );
        let (_stop, stopped) = watch::channel(false);
        let mut ids = Vec::new();
        for index in 0..20 {
            ids.push(publish(&store, &format!("i{index}")).await);
        }
        let (first, second) = tokio::join!(one.pass(&stopped), other.pass(&stopped));
        first.unwrap();
        second.unwrap();
        let mut sent: Vec<String> = hook
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, _)| headers["webhook-id"].to_str().unwrap().to_owned())
            .collect();
        sent.sort();
        ids.sort();
        assert_eq!(sent, ids);
    }

    /// A receiver that answers none until it holds [`CONCURRENCY`] requests at once: every
    /// event is delivered only if they are sent together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_are_sent_several_at_once() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let barrier = Arc::new(tokio::sync::Barrier::new(CONCURRENCY));
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let barrier = Arc::clone(&barrier);
                async move {
                    barrier.wait().await;
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let sender = sender(&store, &clock, &url.parse().unwrap());
        let (_stop, stopped) = watch::channel(false);
        for index in 0..CONCURRENCY {
            publish(&store, &format!("i{index}")).await;
        }
        sender.pass(&stopped).await.unwrap();
        let outbox = store
            .list_records(OUTBOX_NAMESPACE, None, 100, NOW)
            .await
            .unwrap();
        assert_eq!(outbox, []);
        let metrics = sender.metrics.render();
        assert!(
            metrics.contains(&format!(
                "engine_webhook_deliveries_total{{outcome=\"delivered\"}} {CONCURRENCY}"
            )),
            "{metrics}"
        );
    }

    /// A backlog longer than a page of the outbox is sent in one pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backlog_of_several_pages_is_sent_in_one_pass() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let hook = receiver(Vec::new()).await;
        let sender = sender(&store, &clock, &hook.url);
        let (_stop, stopped) = watch::channel(false);
        for index in 0..(BATCH * 2 + 50) {
            publish(&store, &format!("i{index}")).await;
        }
        sender.pass(&stopped).await.unwrap();
        assert_eq!(hook.got.lock().unwrap().len(), BATCH * 2 + 50);
        let outbox = store
            .list_records(OUTBOX_NAMESPACE, None, 100, NOW)
            .await
            .unwrap();
        assert_eq!(outbox, []);
    }

    /// A sender that dies while sending loses its lease: another sends the event again after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lease_of_a_dead_sender_ends_and_another_sends_the_event() {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(NOW);
        let hook = receiver(Vec::new()).await;
        let sender = sender(&store, &clock, &hook.url);
        let (_stop, stopped) = watch::channel(false);
        let id = publish(&store, "acme").await;
        // Taken by a process that then died: its lease holds the event off until it ends.
        let record = store
            .get_record(OUTBOX_NAMESPACE, &id, NOW)
            .await
            .unwrap()
            .unwrap();
        let taken = Pending {
            attempts: 1,
            leased_until_ms: NOW + millis(LEASE),
            ..Pending::read(&record.value).unwrap()
        };
        store
            .put_record(
                OUTBOX_NAMESPACE,
                &id,
                taken.to_value(),
                record.expires_at_ms,
                record.version,
                NOW,
            )
            .await
            .unwrap();
        let wake_at = sender.pass(&stopped).await.unwrap();
        assert!(hook.got.lock().unwrap().is_empty());
        assert_eq!(wake_at, NOW + millis(MAX_IDLE));
        clock.set(NOW + millis(LEASE));
        sender.pass(&stopped).await.unwrap();
        assert_eq!(hook.got.lock().unwrap().len(), 1);
        assert_eq!(delivery(&store, &id, clock.now_ms()).await["attempts"], 2);
    }
}
