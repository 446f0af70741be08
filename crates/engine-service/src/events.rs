//! Events: what a front end tells the world of an instance's refreshes. Three kinds
//! ([`EventType`]): a refresh failed, an instance needs re-authentication, an instance recovered
//! (back to fresh after failures). They are published where the refresh policy makes those
//! changes ([`crate::refresh`] for the scheduler and a forced refresh, [`crate::after_run`] for
//! a run's own refresh, [`crate::clear_needs_reauth`] after a sign-in), into two namespaces of
//! the store's records:
//!
//! - [`EVENTS_NAMESPACE`]: every event, kept [`EVENT_RETENTION`], in the order of their ids
//!   (the time they were published, then a random part): what `GET /v1/events` lists;
//! - [`OUTBOX_NAMESPACE`]: the events still to be delivered as webhooks, each with its delivery
//!   state ([`Pending`]), kept [`OUTBOX_RETENTION`] when no process delivers them.
//!
//! Expired records are removed by each publication ([`publish`]) and by the scheduler of
//! `engine serve`, [`PURGE_BATCH`] at a time.
//!
//! An event never holds a secret: the instance's id and connector, the trigger, the statuses,
//! counts and retry time of the change, the vendor's status, a code for the error, and the
//! vendor's OAuth error code when it sent one; never a token, a value or a body.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use engine_runtime::{RefreshReport, RunError, RunErrorKind};
use engine_store::{InstanceStore, ScheduleStatus, StoreError, StoreErrorKind};
use serde_json::{Value, json};

use crate::error::Warning;
use crate::status::{DEFAULT_KEEP, Transition};

/// The namespace of the events' records, by event id.
pub const EVENTS_NAMESPACE: &str = "events";

/// The namespace of the events still to be delivered, by event id.
pub const OUTBOX_NAMESPACE: &str = "outbox";

/// The namespace that holds back a run's failed refreshes: one event per instance per
/// [`CALL_FAILURE_QUIET`].
const QUIET_NAMESPACE: &str = "event-quiet";

/// How long an event is listed.
pub const EVENT_RETENTION: Duration = Duration::from_hours(24 * 30);

/// How long an event waits in the outbox for a process that delivers it.
pub const OUTBOX_RETENTION: Duration = Duration::from_hours(24 * 7);

/// The most expired records (of every namespace) removed at once: by each publication of an
/// event, and by each of the scheduler's purges.
pub const PURGE_BATCH: usize = 1000;

/// A run's failed refreshes are not paced by the refresh policy (each call tries again): of
/// those of one instance, one event per this time is published.
pub const CALL_FAILURE_QUIET: Duration = Duration::from_mins(1);

/// The kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A refresh failed; the instance is retried after a backoff (a scheduled or forced
    /// refresh), or a call's own refresh failed.
    RefreshFailed,
    /// The vendor rejected the last refresh allowed: nothing is tried until someone signs in.
    NeedsReauth,
    /// An instance that had failed is fresh again.
    Recovered,
}

impl EventType {
    /// The type as webhooks and listings name it: `refresh.failed`, `instance.needs_reauth`,
    /// `instance.recovered`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefreshFailed => "refresh.failed",
            Self::NeedsReauth => "instance.needs_reauth",
            Self::Recovered => "instance.recovered",
        }
    }

    /// The type [`EventType::as_str`] spells `text`; `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::RefreshFailed, Self::NeedsReauth, Self::Recovered]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The event a change of status is: `None` for one that is none of them.
    pub fn of(transition: &Transition) -> Option<Self> {
        match (transition.from, transition.to) {
            (ScheduleStatus::NeedsReauth, ScheduleStatus::NeedsReauth)
            | (ScheduleStatus::Fresh, ScheduleStatus::Fresh) => None,
            (_, ScheduleStatus::NeedsReauth) => Some(Self::NeedsReauth),
            (_, ScheduleStatus::Retrying) => Some(Self::RefreshFailed),
            (_, ScheduleStatus::Fresh) => Some(Self::Recovered),
        }
    }
}

/// An event to publish.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its kind.
    pub kind: EventType,
    /// The instance.
    pub instance: String,
    /// What ran the refresh: `schedule`, `manual`, `call` or `sign-in`.
    pub trigger: &'static str,
    /// The change of status, when the refresh policy made one.
    pub transition: Option<Transition>,
    /// The vendor's status on the failed step, when it answered.
    pub vendor_status: Option<u16>,
    /// What failed ([`error_code`]).
    pub error: Option<&'static str>,
    /// The vendor's OAuth error code (`invalid_grant`), when it sent one.
    pub vendor_error: Option<String>,
}

impl NewEvent {
    /// An event of `kind` on `instance`, `trigger` and `transition`, with what `error` and the
    /// failed step of `reports` say.
    pub fn new(
        kind: EventType,
        instance: &str,
        trigger: &'static str,
        transition: Option<Transition>,
        reports: &[RefreshReport],
        error: Option<&RunError>,
    ) -> Self {
        let failed = reports.iter().rev().find(|report| report.error.is_some());
        Self {
            kind,
            instance: instance.to_owned(),
            trigger,
            transition,
            vendor_status: failed.and_then(|report| report.status).or_else(|| {
                error.and_then(|error| match error.kind() {
                    RunErrorKind::AuthFailed { status, .. } => Some(*status),
                    _ => None,
                })
            }),
            error: error.map(error_code).or_else(|| failed.map(report_code)),
            vendor_error: error.and_then(vendor_error),
        }
    }
}

/// What failed, as a code an event can carry: `rejected` (the vendor refused the credentials:
/// `auth-failed`, `no-token`, `token-rejected`, `not-authorized`), `vendor-error` (it answered
/// 429 or 5xx), `unreachable`, `timeout`, `cooling-down`, `store` or `failed`.
pub fn error_code(error: &RunError) -> &'static str {
    match error.kind() {
        RunErrorKind::AuthFailed { status, .. } if *status == 429 || *status >= 500 => {
            "vendor-error"
        }
        RunErrorKind::AuthFailed { .. } => "auth-failed",
        RunErrorKind::NoToken { .. } => "no-token",
        RunErrorKind::TokenRejected { .. } => "token-rejected",
        RunErrorKind::NotAuthorized { .. } => "not-authorized",
        RunErrorKind::Transport { .. } => "unreachable",
        RunErrorKind::TimedOut { .. } => "timeout",
        RunErrorKind::CoolingDown { .. } => "cooling-down",
        RunErrorKind::NeedsReauth { .. } => "needs-reauth",
        RunErrorKind::Store(_) => "store",
        _ => "failed",
    }
}

/// What a failed step's report says failed, when its error is not at hand: `auth-failed` for
/// a `4xx` but `429`, `vendor-error` for another status, `failed` without one.
fn report_code(report: &RefreshReport) -> &'static str {
    match report.status {
        Some(status) if (400..500).contains(&status) && status != 429 => "auth-failed",
        Some(_) => "vendor-error",
        None => "failed",
    }
}

/// The vendor's OAuth error code (`invalid_grant` of `invalid_grant: the code expired`), when
/// the vendor sent one that is a code: up to 64 letters, digits, `_`, `-` or `.`. Anything else
/// in its answer is left out: a body may carry a token.
fn vendor_error(error: &RunError) -> Option<String> {
    let RunErrorKind::AuthFailed {
        problem: Some(problem),
        ..
    } = error.kind()
    else {
        return None;
    };
    let code = problem.split([':', ' ']).next()?.trim();
    let valid = (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"_-.".contains(&byte));
    valid.then(|| code.to_owned())
}

/// The delivery state of an event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The event's webhook payload: `{"type", "timestamp", "data"}`.
    pub payload: Value,
    /// The attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (epoch ms).
    pub next_attempt_at_ms: u64,
    /// Until when a process that took it is sending it (epoch ms; 0: nobody).
    pub leased_until_ms: u64,
    /// What the last attempt got: `status 503`, `unreachable`, `timeout`.
    pub last_error: Option<String>,
}

impl Pending {
    /// The state an outbox record holds; `None` when it holds no payload.
    pub fn read(value: &Value) -> Option<Self> {
        let time = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        Some(Self {
            payload: value
                .get("payload")
                .filter(|payload| payload.is_object())?
                .clone(),
            attempts: u32::try_from(time("attempts")).unwrap_or(u32::MAX),
            next_attempt_at_ms: time("next_attempt_at"),
            leased_until_ms: time("leased_until"),
            last_error: value
                .get("last_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The record's value.
    pub fn to_value(&self) -> Value {
        json!({
            "payload": self.payload,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at_ms,
            "leased_until": self.leased_until_ms,
            "last_error": self.last_error,
        })
    }

    /// True when a process may take it at `now_ms`: due, and no lease holds it.
    pub fn takeable(&self, now_ms: u64) -> bool {
        self.next_attempt_at_ms <= now_ms && self.leased_until_ms <= now_ms
    }
}

/// Publishes `event` at `now_ms`: its record in [`EVENTS_NAMESPACE`] (with the connector and
/// the owner the instance records, if it still exists) and its delivery in
/// [`OUTBOX_NAMESPACE`], due at once; then removes up to [`PURGE_BATCH`] expired records of
/// the store ([`InstanceStore::purge_expired_records`]). Returns the event's id.
///
/// Fails when the store cannot write either record (not when the purge fails).
pub async fn publish(
    store: &dyn InstanceStore,
    event: &NewEvent,
    now_ms: u64,
) -> Result<String, StoreError> {
    let (connector, owner, status) = match store.load(&event.instance).await {
        Ok(read) => (
            engine_store::connector_of(&read.state).map(str::to_owned),
            crate::keys::owner_of(&read.state).map(str::to_owned),
            engine_store::Schedule::read(&read.state).status,
        ),
        Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => {
            (None, None, ScheduleStatus::Fresh)
        }
        Err(error) => return Err(error),
    };
    let id = event_id(now_ms);
    let mut data = json!({
        "instance": event.instance,
        "connector": connector,
        "trigger": event.trigger,
        "status": event.transition.map_or(status, |transition| transition.to).as_str(),
    });
    if let Some(transition) = &event.transition {
        data["from"] = transition.from.as_str().into();
        data["failures"] = transition.failures.into();
        data["rejections"] = transition.rejections.into();
        data["retry_at"] = transition
            .retry_at_ms
            .and_then(timestamp)
            .map_or(Value::Null, Value::String);
    }
    data["vendor_status"] = event.vendor_status.into();
    data["error"] = event.error.into();
    data["vendor_error"] = event.vendor_error.clone().into();
    let payload = json!({
        "type": event.kind.as_str(),
        "timestamp": timestamp(now_ms),
        "data": data,
    });
    let record = json!({"id": id, "payload": payload, "owner": owner});
    store
        .put_record(
            EVENTS_NAMESPACE,
            &id,
            record,
            Some(now_ms.saturating_add(millis(EVENT_RETENTION))),
            0,
            now_ms,
        )
        .await?;
    let pending = Pending {
        payload,
        attempts: 0,
        next_attempt_at_ms: now_ms,
        leased_until_ms: 0,
        last_error: None,
    };
    store
        .put_record(
            OUTBOX_NAMESPACE,
            &id,
            pending.to_value(),
            Some(now_ms.saturating_add(millis(OUTBOX_RETENTION))),
            0,
            now_ms,
        )
        .await?;
    // Publishing is rare (a failure, a recovery): the moment to remove expired records, so
    // that a store no server purges (the file beside `engine run --config FILE`) does not grow
    // for ever. The event is published whatever the purge does; what it left, the next takes.
    let _ = store.purge_expired_records(None, now_ms, PURGE_BATCH).await;
    Ok(id)
}

/// Publishes `event` unless an event of a run's failed refresh of the same instance was
/// published less than [`CALL_FAILURE_QUIET`] ago, by any process (a record that expires holds
/// the others back). Returns the event's id; `None` when held back.
///
/// Fails like [`publish`].
pub async fn publish_quietly(
    store: &dyn InstanceStore,
    event: &NewEvent,
    now_ms: u64,
) -> Result<Option<String>, StoreError> {
    let until = now_ms.saturating_add(millis(CALL_FAILURE_QUIET));
    match store
        .put_record(
            QUIET_NAMESPACE,
            &event.instance,
            json!({}),
            Some(until),
            0,
            now_ms,
        )
        .await
    {
        Ok(_) => publish(store, event, now_ms).await.map(Some),
        Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The failed status (`retrying`, `needs-reauth`) `id` was left in by the last word of its
/// history on its refreshes: the newest entry that is a change of status of the refresh policy
/// or a success. `None` when that entry is a success or a return to fresh, when there is none,
/// or the history cannot be read.
pub async fn failed_before(store: &dyn InstanceStore, id: &str) -> Option<ScheduleStatus> {
    let history = store.history(id).await.ok()?;
    let last = history.iter().rev().find(|entry| {
        entry.get("transition").is_some_and(Value::is_object) || entry["outcome"] == "ok"
    })?;
    let to = ScheduleStatus::parse(last["transition"]["to"].as_str()?)?;
    (to != ScheduleStatus::Fresh).then_some(to)
}

/// Publishes that `id` recovered from `from` (by `trigger`), now. With `mark`, first appends
/// the change of status to its history (an entry of `trigger`, outcome `ok`), for a recovery
/// that recorded no successful refresh there: the history's last word is then this one, and the
/// next success is not taken for another recovery ([`failed_before`]).
///
/// Fails with [`Warning::EventNotPublished`] when the store cannot write the event, or
/// [`Warning::HistoryNotRecorded`] when it could not write the entry (the event is
/// published all the same).
pub async fn publish_recovered(
    store: &dyn InstanceStore,
    id: &str,
    from: ScheduleStatus,
    trigger: &'static str,
    mark: bool,
) -> Result<(), Warning> {
    let transition = Transition {
        from,
        to: ScheduleStatus::Fresh,
        failures: 0,
        rejections: 0,
        retry_at_ms: None,
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let mut marked = Ok(());
    if mark {
        let entry = json!({
            "at": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "trigger": trigger,
            "outcome": "ok",
            "transition": transition.to_value(),
        });
        if let Err(error) = store.append_history(id, entry, DEFAULT_KEEP).await {
            marked = Err(Warning::HistoryNotRecorded {
                instance: id.to_owned(),
                error,
            });
        }
    }
    let event = NewEvent::new(
        EventType::Recovered,
        id,
        trigger,
        Some(transition),
        &[],
        None,
    );
    publish(store, &event, now_ms)
        .await
        .map_err(|error| Warning::EventNotPublished {
            instance: id.to_owned(),
            error,
        })?;
    marked
}

/// Records the final outcome of an event's delivery on its record (`delivered` or `failed`,
/// with the attempts and when), so that a listing shows it. A record changed meanwhile, or
/// expired, is left alone.
///
/// Fails when the store cannot be read or written.
pub async fn settle(
    store: &dyn InstanceStore,
    id: &str,
    delivery: Value,
    now_ms: u64,
) -> Result<(), StoreError> {
    let Some(record) = store.get_record(EVENTS_NAMESPACE, id, now_ms).await? else {
        return Ok(());
    };
    let mut value = record.value;
    value["delivery"] = delivery;
    match store
        .put_record(
            EVENTS_NAMESPACE,
            id,
            value,
            record.expires_at_ms,
            record.version,
            now_ms,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// A new event id: `evt_`, the time (13 digits of epoch ms), 3 digits that order the events
/// of one millisecond in this process, `_` and 8 random hex digits (the events of one
/// millisecond in two processes), so that ids sort by the time they were published, and in
/// the order they were in each process.
fn event_id(now_ms: u64) -> String {
    /// The last millisecond an id was made for, and how many were made in it.
    static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
    let (ms, sequence) = {
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        *last = next_slot(*last, now_ms);
        *last
    };
    let mut bytes = [0_u8; 4];
    // Without randomness, the time alone: two processes' events of the same millisecond then
    // conflict, and the second one's write fails (a warning), never a duplicate.
    let _ = getrandom::fill(&mut bytes);
    let random = u32::from_be_bytes(bytes);
    format!("evt_{ms:013}{sequence:03}_{random:08x}")
}

/// The millisecond and sequence number of the id made at `now_ms` after the one made in `last`:
/// never earlier than `last`, a thousand to a millisecond.
fn next_slot(last: (u64, u32), now_ms: u64) -> (u64, u32) {
    if now_ms > last.0 {
        (now_ms, 0)
    } else if last.1 < 999 {
        (last.0, last.1 + 1)
    } else {
        // A thousand in one millisecond: the next ones take the next millisecond.
        (last.0 + 1, 0)
    }
}

/// The event time of `now_ms`, RFC 3339 in UTC to the millisecond.
fn timestamp(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    let at = jiff::Timestamp::from_millisecond(ms).ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use engine_store::MemoryStore;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn transition(from: ScheduleStatus, to: ScheduleStatus) -> Transition {
        Transition {
            from,
            to,
            failures: 1,
            rejections: 1,
            retry_at_ms: (to == ScheduleStatus::Retrying).then_some(NOW + 30_000),
        }
    }

    #[test]
    fn transitions_are_events() {
        use ScheduleStatus::{Fresh, NeedsReauth, Retrying};
        let of = |from, to| EventType::of(&transition(from, to));
        assert_eq!(of(Fresh, Retrying), Some(EventType::RefreshFailed));
        assert_eq!(of(Retrying, Retrying), Some(EventType::RefreshFailed));
        assert_eq!(of(Retrying, NeedsReauth), Some(EventType::NeedsReauth));
        assert_eq!(of(Retrying, Fresh), Some(EventType::Recovered));
        assert_eq!(of(NeedsReauth, Fresh), Some(EventType::Recovered));
        assert_eq!(of(Fresh, Fresh), None);
        assert_eq!(of(NeedsReauth, NeedsReauth), None);
        for kind in [
            EventType::RefreshFailed,
            EventType::NeedsReauth,
            EventType::Recovered,
        ] {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn only_a_code_of_the_vendors_error_is_kept() {
        let failed = |problem: &str| -> RunError {
            RunErrorKind::AuthFailed {
                step: "ON REFRESH".into(),
                status: 400,
                problem: Some(problem.into()),
                body: "{\"access_token\": \"FAKE-secret\"}".into(),
                retry_after: None,
            }
            .into()
        };
        let error = failed("invalid_grant: the code FAKE-secret expired");
        assert_eq!(vendor_error(&error).as_deref(), Some("invalid_grant"));
        assert_eq!(error_code(&error), "auth-failed");
        assert_eq!(vendor_error(&failed("{\"x\"}")), None);
        assert_eq!(vendor_error(&failed(&"a".repeat(65))), None);
    }

    #[tokio::test]
    async fn an_event_is_listed_and_waits_in_the_outbox_without_a_secret() {
        let store = MemoryStore::new();
        let serde_json::Value::Object(state) = json!({
            "access.token": "FAKE-token",
            "client.secret": "FAKE-client-secret",
            (engine_store::CONNECTOR_KEY): "demo",
            (engine_store::OWNER_KEY): "0123456789ab",
        }) else {
            unreachable!()
        };
        store.insert("acme", state);
        let error: RunError = RunErrorKind::AuthFailed {
            step: "ON REFRESH".into(),
            status: 401,
            problem: Some("invalid_client: FAKE-client-secret".into()),
            body: "FAKE-token".into(),
            retry_after: None,
        }
        .into();
        let event = NewEvent::new(
            EventType::RefreshFailed,
            "acme",
            "schedule",
            Some(transition(ScheduleStatus::Fresh, ScheduleStatus::Retrying)),
            &[],
            Some(&error),
        );
        let id = publish(&store, &event, NOW).await.unwrap();
        assert!(id.starts_with("evt_"), "{id}");
        let listed = store
            .list_records(EVENTS_NAMESPACE, None, 10, NOW)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        let mut value = listed[0].value.clone();
        value["id"] = "[ID]".into();
        insta::assert_json_snapshot!(value, @r#"
        {
          "id": "[ID]",
          "payload": {
            "type": "refresh.failed",
            "timestamp": "2023-11-14T22:13:20.000Z",
            "data": {
              "instance": "acme",
              "connector": "demo",
              "trigger": "schedule",
              "status": "retrying",
              "from": "fresh",
              "failures": 1,
              "rejections": 1,
              "retry_at": "2023-11-14T22:13:50.000Z",
              "vendor_status": 401,
              "error": "auth-failed",
              "vendor_error": "invalid_client"
            }
          },
          "owner": "0123456789ab"
        }
        "#);
        let pending = store
            .get_record(OUTBOX_NAMESPACE, &id, NOW)
            .await
            .unwrap()
            .unwrap();
        let pending = Pending::read(&pending.value).unwrap();
        assert_eq!(pending.payload, listed[0].value["payload"]);
        assert!(pending.takeable(NOW));
        assert!(!value.to_string().contains("FAKE"));
    }

    /// The history's last word on refreshes says whether an instance had failed; a recovery
    /// that marks it is that last word.
    #[tokio::test]
    async fn a_marked_recovery_is_the_historys_last_word() {
        let store = MemoryStore::new();
        store.insert("acme", serde_json::Map::new());
        assert_eq!(failed_before(&store, "acme").await, None);
        let failed = json!({"trigger": "schedule", "outcome": "rejected",
            "transition": {"from": "fresh", "to": "retrying"}});
        store.append_history("acme", failed, 10).await.unwrap();
        // A call's failure (no change of status) is no word on it.
        let call = json!({"trigger": "401", "outcome": "rejected"});
        store.append_history("acme", call, 10).await.unwrap();
        assert_eq!(
            failed_before(&store, "acme").await,
            Some(ScheduleStatus::Retrying)
        );
        publish_recovered(&store, "acme", ScheduleStatus::Retrying, "sign-in", true)
            .await
            .unwrap();
        assert_eq!(failed_before(&store, "acme").await, None);
        let history = store.history("acme").await.unwrap();
        let last = history.last().unwrap();
        assert_eq!(
            (
                &last["trigger"],
                &last["outcome"],
                &last["transition"]["to"]
            ),
            (&json!("sign-in"), &json!("ok"), &json!("fresh"))
        );
    }

    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        // The slots of one process's ids, from a state of the test's own (other tests make ids
        // at the same time).
        const LATER: u64 = 4_000_000_000_000;
        let mut last = (0, 0);
        let slots: Vec<(u64, u32)> = [LATER, LATER, LATER, LATER - 5, LATER + 1]
            .into_iter()
            .map(|now_ms| {
                last = next_slot(last, now_ms);
                last
            })
            .collect();
        assert_eq!(
            slots,
            [
                (LATER, 0),
                (LATER, 1),
                (LATER, 2),
                (LATER, 3),
                (LATER + 1, 0)
            ]
        );
        assert_eq!(next_slot((LATER, 999), LATER), (LATER + 1, 0));
        // Ids sort as their slots, and a time is a cursor: `evt_` and a millisecond sorts
        // before that millisecond's ids.
        let ids: Vec<String> = slots
            .iter()
            .map(|(ms, sequence)| format!("evt_{ms:013}{sequence:03}_ffffffff"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert!(format!("evt_{LATER:013}") < ids[0]);
        // An id made in this process has that form (at no time of its own: the last one made).
        let made = event_id(0);
        assert!(
            made.starts_with("evt_") && made.len() == 4 + 16 + 1 + 8,
            "{made}"
        );
    }

    /// A publication removes the records expired by then, and only those.
    #[tokio::test]
    async fn publishing_removes_expired_records() {
        let store = MemoryStore::new();
        for (space, expires) in [
            ("flows", Some(NOW)),
            ("keys", None),
            ("later", Some(NOW + 1)),
        ] {
            store
                .put_record(space, "a", json!({}), expires, 0, 0)
                .await
                .unwrap();
        }
        let event = NewEvent::new(EventType::Recovered, "gone", "call", None, &[], None);
        publish(&store, &event, NOW).await.unwrap();
        assert_eq!(
            store.purge_expired_records(None, NOW, 10).await.unwrap(),
            0,
            "none left to remove at that time"
        );
        assert_eq!(
            store
                .purge_expired_records(None, NOW + 1, 10)
                .await
                .unwrap(),
            1,
            "`later` was kept"
        );
        assert!(store.get_record("keys", "a", NOW).await.unwrap().is_some());
        assert_eq!(
            store
                .list_records(EVENTS_NAMESPACE, None, 10, NOW)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_runs_failures_are_published_once_a_minute() {
        let store = MemoryStore::new();
        let event = NewEvent::new(EventType::RefreshFailed, "gone", "call", None, &[], None);
        assert!(
            publish_quietly(&store, &event, NOW)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            publish_quietly(&store, &event, NOW + 59_999)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            publish_quietly(&store, &event, NOW + 60_000)
                .await
                .unwrap()
                .is_some()
        );
        let listed = store
            .list_records(EVENTS_NAMESPACE, None, 10, NOW + 60_000)
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
    }
}
