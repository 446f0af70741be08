//! When a token is fresh: the pure half of the token lifecycle (docs/token-lifecycle.md).
//!
//! Custom authentication keeps `authentication.time` (epoch ms, set when `PROVISION AUTH
//! VALIDATION` or `ON REFRESH` succeeds) and `expires_in` (seconds, from the vendor). Built-in
//! OAuth2 keeps `oauth.user.refresh_time` and `oauth.user.refresh_interval` the same way.
//! `session.management` changes the rule: `fixed` uses `session.timeout`, `none` never
//! refreshes, `always` refreshes before every call.

use engine_spec::kinds::{ResourceType, SessionManagement};
use engine_spec::template::Values;
use engine_spec::{AuthKind, Connector, Resource};

use crate::extract::parse_seconds;
use crate::observer::RefreshReason;

/// How a connector obtains its tokens.
#[derive(Debug, Clone, Copy)]
pub enum Lifecycle<'a> {
    /// No tokens: basic, API key, none, or custom without lifecycle resources.
    None,
    /// The connector's own lifecycle resources.
    Custom {
        /// `PROVISION AUTH VALIDATION` (else `ON REFRESH`): obtains the first token.
        provision: &'a Resource,
        /// `ON REFRESH`, when the connector has one (else `provision` runs again).
        refresh: Option<&'a Resource>,
        /// `ON PROVISION`: runs after the first provisioning.
        on_provision: Option<&'a Resource>,
    },
    /// The built-in OAuth2 client.
    Oauth2,
}

impl<'a> Lifecycle<'a> {
    /// The lifecycle of `connector`.
    pub fn of(connector: &'a Connector) -> Self {
        match connector.authentication().kind() {
            AuthKind::Oauth2 => Self::Oauth2,
            // Without `PROVISION AUTH VALIDATION`, `ON REFRESH` obtains the first token too.
            AuthKind::Custom => match connector
                .lifecycle(ResourceType::ProvisionAuthValidation)
                .or_else(|| connector.lifecycle(ResourceType::OnRefresh))
            {
                Some(provision) => Self::Custom {
                    provision,
                    refresh: connector.lifecycle(ResourceType::OnRefresh),
                    on_provision: connector.lifecycle(ResourceType::OnProvision),
                },
                None => Self::None,
            },
            AuthKind::Basic | AuthKind::ApiKey | AuthKind::None | AuthKind::Oauth1 => Self::None,
        }
    }

    /// The configuration keys that record when the token was obtained and how long it lives.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Oauth2 => ("oauth.user.refresh_time", "oauth.user.refresh_interval"),
            Self::None | Self::Custom { .. } => ("authentication.time", "expires_in"),
        }
    }

    /// A value that changes whenever a token is obtained: the time it was obtained. Two runs
    /// that see the same marker saw the same token.
    pub fn marker(self, configuration: &dyn Values) -> Option<String> {
        configuration
            .value(self.keys().0)
            .and_then(crate::request::text_of)
    }
}

/// Whether the stored token can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// Usable; expires at this epoch-ms time (`None`: never).
    Fresh(Option<u64>),
    /// Must be obtained or refreshed first.
    Stale(RefreshReason),
}

/// Checks the token of `configuration` (the effective configuration) at `now_ms`.
///
/// The skew (default 30 s) is capped at half the lifetime, so that short-lived tokens are still
/// used before being refreshed.
pub fn check_fresh(connector: &Connector, configuration: &dyn Values, now_ms: u64) -> Freshness {
    let lifecycle = Lifecycle::of(connector);
    if matches!(lifecycle, Lifecycle::None) {
        return Freshness::Fresh(None);
    }
    let (time_key, lifetime_key) = lifecycle.keys();
    let obtained = configuration.value(time_key).and_then(parse_seconds_or_ms);
    if matches!(lifecycle, Lifecycle::Oauth2)
        && configuration
            .value("oauth.user.token")
            .and_then(crate::request::text_of)
            .is_none()
    {
        return Freshness::Stale(RefreshReason::NoToken);
    }
    let Some(obtained_ms) = obtained else {
        return Freshness::Stale(match lifecycle {
            Lifecycle::Oauth2 => RefreshReason::NoToken,
            _ => RefreshReason::NotProvisioned,
        });
    };
    let session = connector.session();
    let lifetime = match session.management() {
        SessionManagement::None => return Freshness::Fresh(None),
        SessionManagement::Always => return Freshness::Stale(RefreshReason::SessionAlways),
        SessionManagement::Fixed => session.timeout().unwrap_or(session.default_expires_in()),
        SessionManagement::Auto => configuration
            .value(lifetime_key)
            .and_then(parse_seconds)
            .map_or(session.default_expires_in(), std::time::Duration::from_secs),
    };
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let skew_ms = u64::try_from(session.skew().as_millis())
        .unwrap_or(u64::MAX)
        .min(lifetime_ms / 2);
    let expires_at = obtained_ms.saturating_add(lifetime_ms);
    if expires_at.saturating_sub(skew_ms) <= now_ms {
        Freshness::Stale(RefreshReason::Expired { at_ms: expires_at })
    } else {
        Freshness::Fresh(Some(expires_at))
    }
}

/// `authentication.time` is epoch milliseconds; a value small enough to be seconds (before
/// 2001 in ms) is taken as seconds, as some hand-written instance files have it.
fn parse_seconds_or_ms(value: &serde_json::Value) -> Option<u64> {
    let number = parse_seconds(value)?;
    Some(if number < 1_000_000_000_000 {
        number.saturating_mul(1000)
    } else {
        number
    })
}

#[cfg(test)]
mod tests {
    use engine_spec::{SourceFile, validate};
    use engine_store::State;
    use serde_json::json;

    use super::*;

    fn connector(session: &str) -> Connector {
        let text = format!(
            r#"{{"authentication": {{"type": "custom"}}, {session}
              "resources": [{{"type": "PROVISION AUTH VALIDATION", "vendorPath": "/token",
                "parameters": [{{"name": "expires_in", "type": "configuration", "source": "response",
                                 "vendorName": "expires_in", "vendorType": "bodyField"}}]}},
                {{"type": "ON REFRESH", "vendorPath": "/token"}}]}}"#
        );
        validate(SourceFile::new("c.json", text))
            .into_connector()
            .expect("valid")
    }

    fn state(value: serde_json::Value) -> State {
        match value {
            serde_json::Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn auto_uses_expires_in_with_a_skew() {
        let connector = connector("");
        let configuration =
            state(json!({"authentication.time": "1000000000000", "expires_in": "3600"}));
        let expires = 1_000_000_000_000 + 3_600_000;
        assert_eq!(
            check_fresh(&connector, &configuration, expires - 31_000),
            Freshness::Fresh(Some(expires))
        );
        assert_eq!(
            check_fresh(&connector, &configuration, expires - 30_000),
            Freshness::Stale(RefreshReason::Expired { at_ms: expires })
        );
    }

    #[test]
    fn never_provisioned_and_modes() {
        assert_eq!(
            check_fresh(&connector(""), &State::new(), 0),
            Freshness::Stale(RefreshReason::NotProvisioned)
        );
        let provisioned =
            state(json!({"authentication.time": 1_000_000_000_000_u64, "expires_in": 1}));
        assert_eq!(
            check_fresh(
                &connector(r#""session": {"management": "none"},"#),
                &provisioned,
                u64::MAX
            ),
            Freshness::Fresh(None)
        );
        assert_eq!(
            check_fresh(
                &connector(r#""session": {"management": "always"},"#),
                &provisioned,
                0
            ),
            Freshness::Stale(RefreshReason::SessionAlways)
        );
        let fixed = connector(r#""session": {"management": "fixed", "timeout": 60, "skew": 0},"#);
        assert_eq!(
            check_fresh(&fixed, &provisioned, 1_000_000_059_999),
            Freshness::Fresh(Some(1_000_000_060_000))
        );
    }

    #[test]
    fn short_lifetimes_cap_the_skew() {
        let configuration = state(json!({"authentication.time": "1000000000000", "expires_in": 4}));
        assert_eq!(
            check_fresh(&connector(""), &configuration, 1_000_000_001_000),
            Freshness::Fresh(Some(1_000_000_004_000))
        );
    }
}
