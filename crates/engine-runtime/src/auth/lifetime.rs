//! How long a token lives, from what a vendor says: `expires_in` of `3600`, `"3600"` or
//! `3600.0` is taken as sent; a value that is no lifetime (`-5`, `"abc"`, `NaN`) counts as the
//! connector's `session.defaultExpiresIn`, and one longer than [`MAX_LIFETIME_SECONDS`] (`1e300`,
//! `99999999999999999999`, an expiry in the year 3000) as that cap, so that "fresh until" is
//! always a real date and a run says so (`-v`). docs/running.md, "The token lifecycle".

use engine_store::State;
use serde_json::Value;

use crate::value::parse_seconds;

/// The longest lifetime the engine believes, in seconds: a year (365 days).
pub const MAX_LIFETIME_SECONDS: u64 = 365 * 24 * 60 * 60;

/// A lifetime the vendor sent that the engine did not take as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifetimeAdjusted {
    /// Where it came from: the configuration key (`expires_in`) or the answer's field.
    pub key: String,
    /// What the vendor sent, as text (at most 40 characters).
    pub sent: String,
    /// The lifetime used instead, in seconds.
    pub seconds: u64,
    /// Why.
    pub problem: LifetimeProblem,
}

/// Why a vendor's lifetime was not taken as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeProblem {
    /// Not a number of seconds (negative, not a number, not finite): the default is used.
    Unusable,
    /// Longer than [`MAX_LIFETIME_SECONDS`]: the cap is used.
    TooLong,
}

/// What a lifetime value is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Seconds, at most the cap.
    Seconds(u64),
    /// More than the cap.
    TooLong,
    /// Not a number of seconds.
    Unusable,
}

/// Reads a lifetime in seconds ([`parse_seconds`]), against the cap.
pub(crate) fn read(value: &Value) -> Lifetime {
    match parse_seconds(value) {
        Some(seconds) if seconds > MAX_LIFETIME_SECONDS => Lifetime::TooLong,
        Some(seconds) => Lifetime::Seconds(seconds),
        None => Lifetime::Unusable,
    }
}

/// The lifetime `value` stands for: as sent, the cap when longer, `default` (itself capped)
/// when it is no lifetime.
pub(crate) fn seconds_of(value: &Value, default: u64) -> u64 {
    match read(value) {
        Lifetime::Seconds(seconds) => seconds,
        Lifetime::TooLong => MAX_LIFETIME_SECONDS,
        Lifetime::Unusable => default.min(MAX_LIFETIME_SECONDS),
    }
}

/// Replaces the lifetime saved under `key` with the one the engine uses, when they differ, and
/// says so: what the instance keeps is what the next run believes.
pub(crate) fn settle(saved: &mut State, key: &str, default: u64) -> Option<LifetimeAdjusted> {
    let sent = saved.get(key)?;
    let problem = match read(sent) {
        Lifetime::Seconds(_) => return None,
        Lifetime::TooLong => LifetimeProblem::TooLong,
        Lifetime::Unusable => LifetimeProblem::Unusable,
    };
    let adjusted = adjusted(key, sent, seconds_of(sent, default), problem);
    saved.insert(key.to_owned(), Value::String(adjusted.seconds.to_string()));
    Some(adjusted)
}

/// A [`LifetimeAdjusted`] for `sent`.
pub(crate) fn adjusted(
    key: &str,
    sent: &Value,
    seconds: u64,
    problem: LifetimeProblem,
) -> LifetimeAdjusted {
    let text = match sent {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let mut shown: String = text.chars().take(40).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    LifetimeAdjusted {
        key: key.to_owned(),
        sent: shown,
        seconds,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unusable_lifetimes_take_the_default_and_long_ones_the_cap() {
        for sent in [
            json!(-5),
            json!("abc"),
            json!("-1"),
            json!("NaN"),
            json!(""),
            json!({}),
        ] {
            assert_eq!(read(&sent), Lifetime::Unusable, "{sent}");
            assert_eq!(seconds_of(&sent, 3600), 3600, "{sent}");
        }
        for sent in [
            json!(1e300),
            json!("1e300"),
            json!("99999999999999999999999"),
            json!(u64::MAX),
            json!(MAX_LIFETIME_SECONDS + 1),
        ] {
            assert_eq!(read(&sent), Lifetime::TooLong, "{sent}");
            assert_eq!(seconds_of(&sent, 3600), MAX_LIFETIME_SECONDS, "{sent}");
        }
        assert_eq!(
            read(&json!(MAX_LIFETIME_SECONDS)),
            Lifetime::Seconds(MAX_LIFETIME_SECONDS)
        );
        assert_eq!(read(&json!("0")), Lifetime::Seconds(0));
        // A default beyond the cap is capped too.
        assert_eq!(seconds_of(&json!("abc"), u64::MAX), MAX_LIFETIME_SECONDS);
    }

    #[test]
    fn settling_rewrites_the_saved_lifetime_and_says_so() {
        let mut saved = State::new();
        saved.insert("expires_in".into(), json!("-5"));
        let adjusted = settle(&mut saved, "expires_in", 3600).unwrap();
        assert_eq!(saved["expires_in"], "3600");
        assert_eq!(
            adjusted,
            LifetimeAdjusted {
                key: "expires_in".into(),
                sent: "-5".into(),
                seconds: 3600,
                problem: LifetimeProblem::Unusable,
            }
        );
        saved.insert("expires_in".into(), json!("1".repeat(50)));
        let adjusted = settle(&mut saved, "expires_in", 3600).unwrap();
        assert_eq!(saved["expires_in"], MAX_LIFETIME_SECONDS.to_string());
        assert_eq!(adjusted.sent, format!("{}…", "1".repeat(40)));
        saved.insert("expires_in".into(), json!("60"));
        assert_eq!(settle(&mut saved, "expires_in", 3600), None);
        assert_eq!(saved["expires_in"], "60");
    }
}
