//! The refresh schedule of an instance ([`engine_store::Schedule`]), computed here, where
//! freshness is decided: the token's expiry from the scheme's keys and the connector's session
//! modes ([`Scheme::check_fresh`] reads the same), and the next refresh a fifth of the token's
//! lifetime ahead of it (never later than the freshness check's skew), less a jitter fixed by
//! the instance id ([`jitter_ms`]). The engine puts it into the state with each write; stores
//! only index it. docs/stores.md, "The refresh schedule".

use std::sync::Arc;

use engine_spec::Connector;
use engine_store::{Schedule, ScheduleStatus, State};

use crate::auth::{Scheme, TokenExpiry, custom};
use crate::configuration::Configuration;
use crate::value::parse_seconds;

/// A token is refreshed this fraction of its lifetime before it expires: a fifth.
pub const AHEAD_DIVISOR: u64 = 5;

/// A refresh is moved earlier by up to this fraction of the token's lifetime ([`jitter_ms`]): a
/// twentieth, 3 minutes for an hour's token.
pub const JITTER_DIVISOR: u64 = 20;

/// How much earlier than a fifth of `lifetime_ms` before expiry `instance` is refreshed: from
/// 0 to `lifetime_ms / JITTER_DIVISOR` inclusive, by a hash of the id (FNV-1a, then
/// `SplitMix64`'s finaliser to spread close ids), so that tokens obtained together are not due
/// together, and an instance is always due at the same time for the same token (tests on a
/// fixed clock stay exact).
pub fn jitter_ms(instance: &str, lifetime_ms: u64) -> u64 {
    let mut hash = instance
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    hash % (lifetime_ms / JITTER_DIVISOR).saturating_add(1)
}

/// The schedule of `instance`'s `state` for `connector`: its token's expiry and the next refresh
/// from the scheme ([`Scheme::check_fresh`]'s reading, less [`jitter_ms`]), the failure state (status, failures, cooldown)
/// kept from `previous`. Nothing is scheduled for a token that never expires, is obtained for
/// every use, is not held yet, or an instance never provisioned (a run or a sign-in does that),
/// nor for one that needs re-authentication; a cooldown delays the next refresh to its end.
pub fn schedule_of(
    connector: &Connector,
    instance: &str,
    state: &State,
    previous: &Schedule,
) -> Schedule {
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
    scheduled(instance, expiry, previous)
}

/// The schedule of `state` without its connector (`engine instances import` of a connector
/// known by name only): the expiry from the engine's bookkeeping keys, `authentication.time` +
/// `expires_in` (custom lifecycles) or `oauth.user.refresh_time` + `oauth.user.refresh_interval`
/// (built-in OAuth2), as epoch milliseconds (a value small enough to be seconds is taken as
/// seconds) and seconds. The connector's session modes are not known: the first refresh's
/// schedule ([`schedule_of`]) replaces this one.
pub fn estimated_schedule(instance: &str, state: &State, previous: &Schedule) -> Schedule {
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
    scheduled(instance, expiry, previous)
}

/// The schedule of `instance` for a token expiring at `.0` after a lifetime of `.1`, judged
/// stale `.2` before (`None`: nothing to refresh), with the failure state of `previous`.
fn scheduled(instance: &str, expiry: Option<(u64, u64, u64)>, previous: &Schedule) -> Schedule {
    let next = expiry.map(|(expires_at_ms, lifetime_ms, skew_ms)| {
        expires_at_ms
            .saturating_sub((lifetime_ms / AHEAD_DIVISOR).max(skew_ms))
            .saturating_sub(jitter_ms(instance, lifetime_ms))
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

    /// The instance every test schedules.
    const ID: &str = "acme";

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
            ID,
            &state(json!({"authentication.time": "1700000000000", "expires_in": "3600"})),
            &Schedule::default(),
        );
        assert_eq!(scheduled.expires_at_ms, Some(1_700_003_600_000));
        assert_eq!(
            scheduled.next_refresh_at_ms,
            Some(1_700_002_880_000 - jitter_ms(ID, 3_600_000))
        );
        // 100 s: a fifth is 20 s, less than the 30 s skew the freshness check keeps.
        let short = schedule_of(
            &auto,
            ID,
            &state(json!({"authentication.time": "1700000000000", "expires_in": "100"})),
            &Schedule::default(),
        );
        assert_eq!(
            short.next_refresh_at_ms,
            Some(1_700_000_070_000 - jitter_ms(ID, 100_000))
        );
    }

    #[test]
    fn the_jitter_is_bounded_fixed_by_the_id_and_spreads_tokens_obtained_together() {
        let auto = connector(r#""session": {"management": "auto", "skew": 0},"#);
        // 10,000 instances whose hour-long tokens were obtained in the same second.
        let obtained = state(json!({"authentication.time": "1700000000000", "expires_in": "3600"}));
        let latest = 1_700_002_880_000;
        let earliest = latest - 3_600_000 / JITTER_DIVISOR;
        let mut per_second = std::collections::BTreeMap::<u64, u32>::new();
        for index in 0..10_000 {
            let id = format!("cust{index:06}");
            let due = schedule_of(&auto, &id, &obtained, &Schedule::default())
                .next_refresh_at_ms
                .unwrap();
            assert!((earliest..=latest).contains(&due), "{id}: {due}");
            assert_eq!(
                schedule_of(&auto, &id, &obtained, &Schedule::default()).next_refresh_at_ms,
                Some(due),
                "the same id, the same due time"
            );
            *per_second.entry(due / 1000).or_default() += 1;
        }
        // Over the 181 seconds of the spread (55 a second on average), none holds 100.
        assert!(per_second.len() >= 175, "{}", per_second.len());
        let busiest = per_second.values().max().unwrap();
        assert!(*busiest < 100, "{busiest} due in one second");
        // Both ends are reached; no lifetime, no jitter.
        let jitters: Vec<u64> = (0..10_000)
            .map(|index| jitter_ms(&format!("cust{index:06}"), 3_600_000))
            .collect();
        assert!(jitters.iter().any(|jitter| *jitter < 1000));
        assert!(jitters.iter().any(|jitter| *jitter > 179_000));
        assert_eq!(jitter_ms("cust000001", 19), 0);
    }

    #[test]
    fn session_modes_decide_the_expiry() {
        let obtained = state(json!({"authentication.time": "1700000000000", "expires_in": 60}));
        let none = connector(r#""session": {"management": "none"},"#);
        assert_eq!(
            schedule_of(&none, ID, &obtained, &Schedule::default()),
            Schedule::default()
        );
        let always = connector(r#""session": {"management": "always"},"#);
        assert_eq!(
            schedule_of(&always, ID, &obtained, &Schedule::default()).next_refresh_at_ms,
            None
        );
        let fixed = connector(r#""session": {"management": "fixed", "timeout": 1000, "skew": 0},"#);
        let scheduled = schedule_of(&fixed, ID, &obtained, &Schedule::default());
        assert_eq!(
            (scheduled.expires_at_ms, scheduled.next_refresh_at_ms),
            (
                Some(1_700_001_000_000),
                Some(1_700_000_800_000 - jitter_ms(ID, 1_000_000))
            )
        );
        let never_provisioned = schedule_of(&fixed, ID, &State::new(), &Schedule::default());
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
        let scheduled = schedule_of(&auto, ID, &obtained, &stuck);
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
            schedule_of(&auto, ID, &obtained, &cooling).next_refresh_at_ms,
            Some(1_700_000_900_000)
        );
        let retrying = Schedule {
            status: ScheduleStatus::Retrying,
            next_refresh_at_ms: Some(1_700_000_100_000),
            consecutive_failures: 1,
            ..Schedule::default()
        };
        assert_eq!(
            schedule_of(&auto, ID, &obtained, &retrying).next_refresh_at_ms,
            Some(1_700_000_100_000)
        );
    }

    #[test]
    fn without_a_connector_the_bookkeeping_keys_give_the_expiry() {
        let estimate = |value: Value| estimated_schedule(ID, &state(value), &Schedule::default());
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
            (
                Some(1_700_003_600_000),
                Some(1_700_002_880_000 - jitter_ms(ID, 3_600_000))
            )
        );
        assert_eq!(
            estimate(json!({"authentication.time": "1"})),
            Schedule::default()
        );
    }
}
