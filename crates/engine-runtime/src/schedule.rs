//! The refresh schedule of an instance ([`engine_store::Schedule`]), computed here, where
//! freshness is decided: the token's expiry from the scheme's keys and the connector's session
//! modes ([`Scheme::check_fresh`] reads the same), and the next refresh a fifth of the token's
//! lifetime ahead of it (never later than the freshness check's skew). The engine puts it into
//! the state with each write; stores only index it. docs/stores.md, "The refresh schedule".

use std::sync::Arc;

use engine_spec::Connector;
use engine_store::{Schedule, ScheduleStatus, State};

use crate::auth::{Scheme, TokenExpiry, custom};
use crate::configuration::Configuration;
use crate::value::parse_seconds;

/// A token is refreshed this fraction of its lifetime before it expires: a fifth.
pub const AHEAD_DIVISOR: u64 = 5;

/// The schedule of `state` for `connector`: its token's expiry and the next refresh from the
/// scheme ([`Scheme::check_fresh`]'s reading), the failure state (status, failures, cooldown)
/// kept from `previous`. Nothing is scheduled for a token that never expires, is obtained for
/// every use, is not held yet, or an instance never provisioned (a run or a sign-in does that),
/// nor for one that needs re-authentication; a cooldown delays the next refresh to its end.
pub fn schedule_of(connector: &Connector, state: &State, previous: &Schedule) -> Schedule {
    // The effective configuration: a lifetime may come from a declared default.
    let configuration = Configuration::new(connector, Arc::new(state.clone()));
    let expiry = match Scheme::of(connector).token_expiry(connector, &configuration) {
        _ if custom::awaits_provisioning(connector, &configuration) => None,
        TokenExpiry::At {
            obtained_ms,
            lifetime_ms,
            skew_ms,
        } => Some((
            obtained_ms.saturating_add(lifetime_ms),
            lifetime_ms,
            skew_ms,
        )),
        TokenExpiry::Never | TokenExpiry::Missing(_) | TokenExpiry::EveryUse => None,
    };
    scheduled(expiry, previous)
}

/// The schedule of `state` without its connector (`engine instances import` of a connector
/// known by name only): the expiry from the engine's bookkeeping keys, `authentication.time` +
/// `expires_in` (custom lifecycles) or `oauth.user.refresh_time` + `oauth.user.refresh_interval`
/// (built-in OAuth2), as epoch milliseconds (a value small enough to be seconds is taken as
/// seconds) and seconds. The connector's session modes are not known: the first refresh's
/// schedule ([`schedule_of`]) replaces this one.
pub fn estimated_schedule(state: &State, previous: &Schedule) -> Schedule {
    let number = |key: &str| state.get(key).and_then(parse_seconds);
    let expiry = number("authentication.time")
        .zip(number("expires_in"))
        .or_else(|| number("oauth.user.refresh_time").zip(number("oauth.user.refresh_interval")))
        .map(|(obtained, lifetime)| {
            let obtained_ms = if obtained < 1_000_000_000_000 {
                obtained.saturating_mul(1000)
            } else {
                obtained
            };
            let lifetime_ms = lifetime.saturating_mul(1000);
            (obtained_ms.saturating_add(lifetime_ms), lifetime_ms, 0)
        });
    scheduled(expiry, previous)
}

/// The schedule for a token expiring at `.0` after a lifetime of `.1`, judged stale `.2` before
/// (`None`: nothing to refresh), with the failure state of `previous`.
fn scheduled(expiry: Option<(u64, u64, u64)>, previous: &Schedule) -> Schedule {
    let next = expiry.map(|(expires_at_ms, lifetime_ms, skew_ms)| {
        expires_at_ms.saturating_sub((lifetime_ms / AHEAD_DIVISOR).max(skew_ms))
    });
    let next_refresh_at_ms = match previous.status {
        ScheduleStatus::NeedsReauth => None,
        // A retry is due when the backoff says, or sooner when the token would expire first.
        ScheduleStatus::Retrying => match (previous.next_refresh_at_ms, next) {
            (Some(retry), Some(next)) => Some(retry.min(next)),
            (retry, next) => retry.or(next),
        },
        ScheduleStatus::Fresh => next,
    }
    .map(|at| previous.cooldown_until_ms.map_or(at, |until| at.max(until)));
    Schedule {
        next_refresh_at_ms,
        expires_at_ms: expiry.map(|(at, _, _)| at),
        ..*previous
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn state(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn connector(session: &str) -> Connector {
        let text = format!(
            r#"{{"authentication": {{"type": "custom"}}, {session}
              "resources": [{{"type": "PROVISION AUTH VALIDATION", "vendorPath": "/token"}},
                {{"type": "ON REFRESH", "vendorPath": "/token"}}]}}"#
        );
        engine_spec::validate(engine_spec::SourceFile::new("c.json", text))
            .into_connector()
            .expect("the test connector is valid")
    }

    #[test]
    fn the_next_refresh_is_a_fifth_of_the_lifetime_ahead_and_never_after_the_skew() {
        let auto = connector(r#""session": {"management": "auto", "skew": 30},"#);
        let scheduled = schedule_of(
            &auto,
            &state(json!({"authentication.time": "1700000000000", "expires_in": "3600"})),
            &Schedule::default(),
        );
        assert_eq!(scheduled.expires_at_ms, Some(1_700_003_600_000));
        assert_eq!(scheduled.next_refresh_at_ms, Some(1_700_002_880_000));
        // 100 s: a fifth is 20 s, less than the 30 s skew the freshness check keeps.
        let short = schedule_of(
            &auto,
            &state(json!({"authentication.time": "1700000000000", "expires_in": "100"})),
            &Schedule::default(),
        );
        assert_eq!(short.next_refresh_at_ms, Some(1_700_000_070_000));
    }

    #[test]
    fn session_modes_decide_the_expiry() {
        let obtained = state(json!({"authentication.time": "1700000000000", "expires_in": 60}));
        let none = connector(r#""session": {"management": "none"},"#);
        assert_eq!(
            schedule_of(&none, &obtained, &Schedule::default()),
            Schedule::default()
        );
        let always = connector(r#""session": {"management": "always"},"#);
        assert_eq!(
            schedule_of(&always, &obtained, &Schedule::default()).next_refresh_at_ms,
            None
        );
        let fixed = connector(r#""session": {"management": "fixed", "timeout": 1000, "skew": 0},"#);
        let scheduled = schedule_of(&fixed, &obtained, &Schedule::default());
        assert_eq!(
            (scheduled.expires_at_ms, scheduled.next_refresh_at_ms),
            (Some(1_700_001_000_000), Some(1_700_000_800_000))
        );
        let never_provisioned = schedule_of(&fixed, &State::new(), &Schedule::default());
        assert_eq!(never_provisioned, Schedule::default());
    }

    #[test]
    fn the_failure_state_is_kept_and_delays_or_cancels_the_next_refresh() {
        let auto = connector(r#""session": {"management": "auto", "skew": 0},"#);
        let obtained = state(json!({"authentication.time": "1700000000000", "expires_in": "1000"}));
        let stuck = Schedule {
            status: ScheduleStatus::NeedsReauth,
            consecutive_failures: 3,
            ..Schedule::default()
        };
        let scheduled = schedule_of(&auto, &obtained, &stuck);
        assert_eq!(
            (scheduled.status, scheduled.consecutive_failures),
            (ScheduleStatus::NeedsReauth, 3)
        );
        assert_eq!(scheduled.next_refresh_at_ms, None);
        let cooling = Schedule {
            cooldown_until_ms: Some(1_700_000_900_000),
            ..Schedule::default()
        };
        assert_eq!(
            schedule_of(&auto, &obtained, &cooling).next_refresh_at_ms,
            Some(1_700_000_900_000)
        );
        let retrying = Schedule {
            status: ScheduleStatus::Retrying,
            next_refresh_at_ms: Some(1_700_000_100_000),
            consecutive_failures: 1,
            ..Schedule::default()
        };
        assert_eq!(
            schedule_of(&auto, &obtained, &retrying).next_refresh_at_ms,
            Some(1_700_000_100_000)
        );
    }

    #[test]
    fn without_a_connector_the_bookkeeping_keys_give_the_expiry() {
        let estimate = |value: Value| estimated_schedule(&state(value), &Schedule::default());
        assert_eq!(
            estimate(json!({"authentication.time": "1700000000000", "expires_in": 60}))
                .expires_at_ms,
            Some(1_700_000_060_000)
        );
        let oauth = estimate(
            json!({"oauth.user.refresh_time": 1_700_000_000, "oauth.user.refresh_interval": "3600"}),
        );
        assert_eq!(
            (oauth.expires_at_ms, oauth.next_refresh_at_ms),
            (Some(1_700_003_600_000), Some(1_700_002_880_000))
        );
        assert_eq!(
            estimate(json!({"authentication.time": "1"})),
            Schedule::default()
        );
    }
}
