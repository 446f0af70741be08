//! An instance's refresh schedule: when its token expires, when it is next due for a refresh,
//! and how its refreshes have gone. The runtime, which decides freshness, computes it and keeps
//! it in the state under [`SCHEDULE_KEY`] with each write; every store reads this typed record
//! (and never the authentication keys it was computed from) to list and index instances.

use serde_json::{Map, Value};

use crate::{FAILURES_KEY, STATUS_KEY, State};

/// The reserved key under which an instance's [`Schedule`] is kept in its state, as an object:
/// `{"next_refresh_at": 1700000048000, "expires_at": 1700000060000, "status": "fresh",
/// "failures": 0, "rejections": 0, "cooldown_until": null}` (times epoch milliseconds).
pub const SCHEDULE_KEY: &str = "engine.schedule";

/// How an instance's refreshes have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScheduleStatus {
    /// The last refresh (if any) succeeded.
    #[default]
    Fresh,
    /// The last refreshes failed transiently (the network, a 429, a 5xx): retried after a
    /// backoff.
    Retrying,
    /// The vendor rejected consecutive refreshes: nothing is tried until someone
    /// re-authenticates.
    NeedsReauth,
}

impl ScheduleStatus {
    /// The status as stored and shown: `fresh`, `retrying`, `needs-reauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::Retrying => "retrying",
            Self::NeedsReauth => "needs-reauth",
        }
    }

    /// The status spelled `text` ([`ScheduleStatus::as_str`]); `None` for any other text.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Fresh, Self::Retrying, Self::NeedsReauth]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// The refresh schedule of one instance: the one record of its expiry, due time and failure
/// state. The runtime computes it; stores persist it with the state and index
/// [`Schedule::next_refresh_at_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schedule {
    /// When the instance is next due for a refresh (epoch ms); `None` when nothing is to be
    /// refreshed until something else changes it (a token that never expires, an instance
    /// never provisioned, one that needs re-authentication).
    pub next_refresh_at_ms: Option<u64>,
    /// When its token expires (epoch ms); `None` when unknown or never.
    pub expires_at_ms: Option<u64>,
    /// How its refreshes have gone.
    pub status: ScheduleStatus,
    /// Its consecutive failed refreshes, of any kind (the backoff grows with them).
    pub consecutive_failures: u32,
    /// Its consecutive refreshes the vendor rejected (a transient failure neither adds to them
    /// nor ends them): [`ScheduleStatus::NeedsReauth`] after a number of them.
    pub consecutive_rejections: u32,
    /// Until when (epoch ms) callers are answered at once with an error instead of a vendor
    /// call; `None` when not cooling down.
    pub cooldown_until_ms: Option<u64>,
}

impl Schedule {
    /// The schedule kept in `state` under [`SCHEDULE_KEY`]; `None` when there is none (an
    /// instance the runtime never wrote, or imported from elsewhere) or it is not an object.
    pub fn of(state: &State) -> Option<Self> {
        let Value::Object(record) = state.get(SCHEDULE_KEY)? else {
            return None;
        };
        let time = |key: &str| record.get(key).and_then(Value::as_u64);
        let count =
            |key: &str| time(key).map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX));
        Some(Self {
            next_refresh_at_ms: time("next_refresh_at"),
            expires_at_ms: time("expires_at"),
            status: record
                .get("status")
                .and_then(Value::as_str)
                .and_then(ScheduleStatus::parse)
                .unwrap_or_default(),
            consecutive_failures: count("failures"),
            consecutive_rejections: count("rejections"),
            cooldown_until_ms: time("cooldown_until"),
        })
    }

    /// The schedule of `state`: [`Schedule::of`], or for a state written before schedules
    /// existed, one due at once (so that the runtime computes it on its first look) keeping the
    /// status and failure count of the older keys [`STATUS_KEY`] and [`FAILURES_KEY`].
    pub fn read(state: &State) -> Self {
        Self::of(state).unwrap_or_else(|| {
            let status = state
                .get(STATUS_KEY)
                .and_then(Value::as_str)
                .and_then(ScheduleStatus::parse)
                .unwrap_or_default();
            // The older count was of rejections.
            let rejections = state
                .get(FAILURES_KEY)
                .and_then(Value::as_u64)
                .map_or(0, |count| u32::try_from(count).unwrap_or(u32::MAX));
            Self {
                next_refresh_at_ms: (status != ScheduleStatus::NeedsReauth).then_some(0),
                expires_at_ms: None,
                status,
                consecutive_failures: rejections,
                consecutive_rejections: rejections,
                cooldown_until_ms: None,
            }
        })
    }

    /// Puts the schedule into `state` under [`SCHEDULE_KEY`], and drops the older keys it
    /// replaces ([`STATUS_KEY`], [`FAILURES_KEY`]).
    pub fn put(&self, state: &mut State) {
        state.shift_remove(STATUS_KEY);
        state.shift_remove(FAILURES_KEY);
        state.insert(SCHEDULE_KEY.to_owned(), self.to_value());
    }

    /// The schedule as the JSON object kept under [`SCHEDULE_KEY`].
    pub fn to_value(&self) -> Value {
        let mut record = Map::new();
        record.insert("next_refresh_at".into(), self.next_refresh_at_ms.into());
        record.insert("expires_at".into(), self.expires_at_ms.into());
        record.insert("status".into(), self.status.as_str().into());
        record.insert("failures".into(), self.consecutive_failures.into());
        record.insert("rejections".into(), self.consecutive_rejections.into());
        record.insert("cooldown_until".into(), self.cooldown_until_ms.into());
        Value::Object(record)
    }

    /// The schedule with its failure state cleared (a refresh or a run succeeded, or someone
    /// re-authenticated): fresh, no failures, no cooldown, and due at once, so that the
    /// runtime's next look computes the next refresh from the token.
    #[must_use]
    pub fn cleared(self) -> Self {
        Self {
            next_refresh_at_ms: Some(0),
            status: ScheduleStatus::Fresh,
            consecutive_failures: 0,
            consecutive_rejections: 0,
            cooldown_until_ms: None,
            ..self
        }
    }

    /// True when the schedule holds a failure state to clear ([`Schedule::cleared`]).
    pub fn has_failures(&self) -> bool {
        self.status != ScheduleStatus::Fresh
            || self.consecutive_failures > 0
            || self.consecutive_rejections > 0
            || self.cooldown_until_ms.is_some()
    }

    /// How long callers are still to be answered at once without a vendor call: the time
    /// left of the cooldown at `now_ms`, in milliseconds; `None` when not cooling down.
    pub fn cooling_down(&self, now_ms: u64) -> Option<u64> {
        self.cooldown_until_ms
            .filter(|until| *until > now_ms)
            .map(|until| until - now_ms)
    }

    /// The status as listings filter on it: `None` for [`ScheduleStatus::Fresh`], the status's
    /// name otherwise (`retrying`, `needs-reauth`).
    pub fn mark(&self) -> Option<&'static str> {
        (self.status != ScheduleStatus::Fresh).then(|| self.status.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_schedule_round_trips_through_the_state_and_replaces_the_older_keys() {
        let schedule = Schedule {
            next_refresh_at_ms: Some(1_700_000_048_000),
            expires_at_ms: Some(1_700_000_060_000),
            status: ScheduleStatus::Retrying,
            consecutive_failures: 2,
            consecutive_rejections: 1,
            cooldown_until_ms: Some(1_700_000_001_000),
        };
        let mut stored = state(json!({"engine.status": "needs-reauth", "engine.failures": 3}));
        schedule.put(&mut stored);
        assert_eq!(Schedule::of(&stored), Some(schedule));
        assert_eq!(
            Value::Object(stored),
            json!({"engine.schedule": {
                "next_refresh_at": 1_700_000_048_000_u64, "expires_at": 1_700_000_060_000_u64,
                "status": "retrying", "failures": 2, "rejections": 1,
                "cooldown_until": 1_700_000_001_000_u64,
            }})
        );
    }

    #[test]
    fn a_state_without_a_schedule_is_due_and_keeps_its_older_status() {
        assert_eq!(
            Schedule::read(&state(json!({"authentication.time": "1700000000000"}))),
            Schedule {
                next_refresh_at_ms: Some(0),
                ..Schedule::default()
            }
        );
        let marked = Schedule::read(&state(
            json!({"engine.status": "needs-reauth", "engine.failures": 3}),
        ));
        assert_eq!(
            (
                marked.status,
                marked.consecutive_rejections,
                marked.next_refresh_at_ms
            ),
            (ScheduleStatus::NeedsReauth, 3, None)
        );
        assert!(!marked.cleared().has_failures());
        assert_eq!(marked.cleared().next_refresh_at_ms, Some(0));
        assert_eq!(marked.mark(), Some("needs-reauth"));
        assert_eq!(
            Schedule::of(&state(json!({"engine.schedule": "soon"}))),
            None
        );
    }
}
