//! An instance's refresh status as the operations share it: a change of it ([`Transition`]),
//! which the refresh policy makes, the history records and events publish; and how many entries
//! of history an instance keeps ([`DEFAULT_KEEP`]).

use engine_store::ScheduleStatus;
use serde_json::json;

/// How many entries each instance keeps unless the caller says otherwise.
pub const DEFAULT_KEEP: usize = 100;

/// A change of an instance's refresh status by a refresh's outcome
/// ([`engine_runtime::RefreshPolicy::next`]), as its history records it: `fresh` → `retrying`
/// after a failure, `retrying` → `retrying` after another, → `needs-reauth` after the last
/// rejection allowed, → `fresh` after a success. A front end shows it; a server publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The status before.
    pub from: ScheduleStatus,
    /// The status after.
    pub to: ScheduleStatus,
    /// Consecutive failed refreshes, after this one.
    pub failures: u32,
    /// Consecutive rejected refreshes, after this one.
    pub rejections: u32,
    /// When the next attempt is due, and callers stop being answered at once (epoch ms); `None`
    /// when nothing is retried (fresh, or needs-reauth).
    pub retry_at_ms: Option<u64>,
}

impl Transition {
    /// The history entry's `transition` field.
    pub fn to_value(&self) -> serde_json::Value {
        json!({
            "from": self.from.as_str(),
            "to": self.to.as_str(),
            "failures": self.failures,
            "rejections": self.rejections,
            "retry_at": self.retry_at_ms.and_then(timestamp),
        })
    }
}

/// Epoch milliseconds as an RFC 3339 time, to the second.
fn timestamp(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    let at = jiff::Timestamp::from_millisecond(ms).ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}
