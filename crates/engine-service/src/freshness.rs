//! An instance's freshness, as every front end reports it: the runtime's own check (the one a
//! run makes) on the effective configuration ([`freshness`]), the state a listing shows from the
//! store's summary alone ([`InstanceState`]), and the last refresh of its history
//! ([`last_refresh`]).

use engine_runtime::Freshness;
use engine_spec::Connector;
use engine_store::{InstanceStore, State, Summary};
use serde_json::{Map, Value};

use crate::NEEDS_REAUTH;

/// What a listing says of an instance's token, from its summary: no connector, no request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Scheduled refreshes gave up after consecutive rejections: re-authenticate.
    NeedsReauth,
    /// The token is valid now.
    Fresh,
    /// The token expired.
    Expired,
    /// No expiry is known (not provisioned yet, or a token without expiry).
    Unknown,
}

impl InstanceState {
    /// The state of the instance `summary` describes, at `now_ms` (epoch milliseconds).
    pub fn of(summary: &Summary, now_ms: u64) -> Self {
        if summary.status.as_deref() == Some(NEEDS_REAUTH) {
            return Self::NeedsReauth;
        }
        match summary.expires_at_ms {
            Some(at) if at > now_ms => Self::Fresh,
            Some(_) => Self::Expired,
            None => Self::Unknown,
        }
    }

    /// Its name in every output: `needs-reauth`, `fresh`, `expired`, `unknown`.
    pub fn label(self) -> &'static str {
        match self {
            Self::NeedsReauth => NEEDS_REAUTH,
            Self::Fresh => "fresh",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

/// The last refresh step in an instance's history (a retried call aside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRefresh {
    /// `ok`, `rejected` or `failed`.
    pub outcome: String,
    /// When, as the history stores it (RFC 3339).
    pub at: String,
}

/// The last refresh step in the history of `id` (a retried call, and a refresh another
/// process's newer tokens superseded, aside); `None` when it has none, or the history cannot be
/// read.
pub async fn last_refresh(store: &dyn InstanceStore, id: &str) -> Option<LastRefresh> {
    let entries = store.history(id).await.ok()?;
    let last = entries
        .iter()
        .rev()
        .find(|entry| entry["retry"] != Value::Bool(true) && entry["outcome"] != "superseded")?;
    Some(LastRefresh {
        outcome: last["outcome"].as_str()?.to_owned(),
        at: last["at"].as_str()?.to_owned(),
    })
}

/// The runtime's freshness check of `state` at `now_ms` (epoch milliseconds), on the effective
/// configuration: the instance's values over the connector's defaults. Returns whether the token
/// is fresh (and until when), or why the next run refreshes it.
pub fn freshness(connector: &Connector, state: &State, now_ms: u64) -> Freshness {
    let mut values: Map<String, Value> = state.clone();
    for property in connector.configuration() {
        if let Some(default) = property.default_value() {
            values
                .entry(property.key().to_owned())
                .or_insert_with(|| Value::from(default));
        }
    }
    engine_runtime::check_fresh(connector, &values, now_ms)
}

#[cfg(test)]
mod tests {
    use engine_store::MemoryStore;
    use serde_json::json;

    use super::*;

    fn summary(expires_at_ms: Option<u64>, status: Option<&str>) -> Summary {
        Summary {
            id: "cust42".to_owned(),
            version: 1,
            expires_at_ms,
            connector: None,
            status: status.map(str::to_owned),
            next_refresh_at_ms: None,
        }
    }

    #[test]
    fn a_listing_state_comes_from_the_summary() {
        let state = |expires, status| InstanceState::of(&summary(expires, status), 1_000).label();
        assert_eq!(state(Some(2_000), None), "fresh");
        assert_eq!(state(Some(1_000), None), "expired");
        assert_eq!(state(None, None), "unknown");
        assert_eq!(state(Some(2_000), Some(NEEDS_REAUTH)), "needs-reauth");
    }

    #[tokio::test]
    async fn the_last_refresh_skips_retried_calls() {
        let store = MemoryStore::new();
        store.insert("cust42", State::new());
        assert_eq!(last_refresh(&store, "cust42").await, None);
        for (outcome, retry, at) in [("ok", false, "T1"), ("rejected", true, "T2")] {
            let entry = json!({"outcome": outcome, "retry": retry, "at": at});
            store.append_history("cust42", entry, 10).await.unwrap();
        }
        let last = last_refresh(&store, "cust42").await.unwrap();
        assert_eq!((last.outcome.as_str(), last.at.as_str()), ("ok", "T1"));
    }
}
