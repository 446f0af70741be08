//! Authentication without I/O: one [`Scheme`] per way a connector authenticates. Given the
//! connector, the instance's configuration and the time, a scheme answers
//!
//! - whether the token is fresh, and until when ([`Scheme::check_fresh`]);
//! - which steps obtain or refresh one ([`Scheme::steps`]): a lifecycle resource to run, or a
//!   token request to build ([`Step`]);
//! - how a vendor's answer to a step becomes new state ([`Scheme::absorb`]);
//! - how the token goes onto an outgoing API request ([`Scheme::apply`]).
//!
//! The engine does the I/O around it (`engine.rs`): nothing here sends, reads a store or
//! sleeps, so every rule is unit-tested with plain values. One file per scheme: [`custom`] (the
//! connector's lifecycle resources), [`oauth2`] (the built-in OAuth2 client), [`authorize`] (the
//! authorization code flow's URL and code exchange); Basic, API key and none are here.

pub(crate) mod authorize;
pub(crate) mod custom;
pub(crate) mod lifetime;
pub(crate) mod oauth1;
pub mod oauth2;

use base64::Engine as _;
use engine_spec::kinds::{ParameterKind, SessionManagement, Source};
use engine_spec::template::Values;
use engine_spec::{AuthKind, Connector, Parameter, Resource};
use engine_store::State;
use serde_json::Value;

use crate::Inputs;
use crate::extract::extract;
use crate::observer::RefreshReason;
use crate::run_error::{RunError, RunErrorKind};
use crate::transport::VendorResponse;
use crate::value::{parse_seconds, text_of};
use lifetime::LifetimeAdjusted;

/// How a connector obtains and keeps its token.
#[derive(Debug, Clone, Copy)]
pub enum Scheme<'a> {
    /// Nothing to obtain: no authentication, an API key, or OAuth 1 (each request is signed
    /// as it is sent, `auth/oauth1.rs`).
    None,
    /// HTTP Basic from `username` and `password`: nothing to obtain either.
    Basic,
    /// The connector's own lifecycle resources: `PROVISION AUTH VALIDATION` and `ON PROVISION`
    /// provision, `ON REFRESH` refreshes (`auth/custom.rs`).
    Custom(&'a Connector),
    /// The built-in OAuth2 client.
    Oauth2,
}

/// One step of obtaining or refreshing a token.
#[derive(Debug, Clone)]
pub enum Step<'a> {
    /// Run a lifecycle resource of the connector.
    Resource {
        /// The resource.
        resource: &'a Resource,
        /// Its inputs (the authorization code for `oauthOnTokenExchange`), those it declares.
        inputs: Inputs,
        /// What the platform gave the OAuth2 resources besides (`client_id`, `client_secret`,
        /// `code`, `redirect_uri`, `state`...): their hooks read it in `request_parameters`; it is
        /// not sent unless the resource maps it.
        offered: Vec<(String, String)>,
        /// The answer carries a token: `authentication.time` is set, and the request goes out
        /// without the connector's own authentication.
        obtains_token: bool,
        /// The answer is also read as an OAuth2 token response (the OAuth2 override resources),
        /// leniently: the resource may save the token through its own parameters.
        token_response: bool,
    },
    /// Build and send an OAuth2 token request.
    Token(oauth2::Grant),
}

impl Step<'_> {
    /// What the step is called in messages: `ON REFRESH`, `oauth2 refresh_token`.
    pub fn name(&self) -> String {
        match self {
            Step::Resource { resource, .. } => resource.kind().label().to_owned(),
            Step::Token(grant) => format!("oauth2 {}", grant.name()),
        }
    }
}

/// What a vendor's answer to a step gives ([`Scheme::absorb`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Absorbed {
    /// The configuration values to save.
    pub state: State,
    /// The token lifetime the vendor sent, when the engine did not take it as sent (see
    /// `auth/lifetime.rs`); `state` holds the one it uses.
    pub adjusted: Option<LifetimeAdjusted>,
}

/// When a token expires, as [`Scheme::token_expiry`] reads it from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenExpiry {
    /// Never: the scheme obtains no token, or `session.management` is `none`.
    Never,
    /// No token is held yet, or the instance was never provisioned (the reason says which).
    Missing(RefreshReason),
    /// One is obtained for every use (`session.management: always`).
    EveryUse,
    /// Obtained at `obtained_ms`, living `lifetime_ms`; judged stale `skew_ms` before it ends.
    At {
        obtained_ms: u64,
        lifetime_ms: u64,
        skew_ms: u64,
    },
}

/// What freshness is judged from ([`Scheme::expiry`]): a token's expiry, and whether the instance
/// still awaits provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expiry {
    token: TokenExpiry,
    awaits_provisioning: bool,
}

impl Expiry {
    /// Whether the token can be used at `now_ms` ([`Scheme::check_fresh`]). An instance never
    /// provisioned (no `authentication.time`) of a connector with provisioning resources is stale
    /// whatever its authentication.
    pub(crate) fn judge(&self, now_ms: u64) -> Freshness {
        let freshness = match &self.token {
            TokenExpiry::Never => Freshness::Fresh(None),
            TokenExpiry::Missing(reason) => Freshness::Stale(reason.clone()),
            TokenExpiry::EveryUse => Freshness::Stale(RefreshReason::SessionAlways),
            TokenExpiry::At {
                obtained_ms,
                lifetime_ms,
                skew_ms,
            } => {
                let expires_at = obtained_ms.saturating_add(*lifetime_ms);
                if expires_at.saturating_sub(*skew_ms) <= now_ms {
                    Freshness::Stale(RefreshReason::Expired { at_ms: expires_at })
                } else {
                    Freshness::Fresh(Some(expires_at))
                }
            }
        };
        match freshness {
            Freshness::Fresh(_) if self.awaits_provisioning => {
                Freshness::Stale(RefreshReason::NotProvisioned)
            }
            freshness => freshness,
        }
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

impl<'a> Scheme<'a> {
    /// The scheme of `connector`.
    pub fn of(connector: &'a Connector) -> Self {
        match connector.authentication().kind() {
            AuthKind::Oauth2 => Self::Oauth2,
            AuthKind::Custom if custom::has_lifecycle(connector) => Self::Custom(connector),
            AuthKind::Basic => Self::Basic,
            AuthKind::Custom | AuthKind::ApiKey | AuthKind::None | AuthKind::Oauth1 => Self::None,
        }
    }

    /// True when the scheme obtains tokens (custom lifecycles and OAuth2).
    pub fn obtains_tokens(self) -> bool {
        matches!(self, Self::Custom(_) | Self::Oauth2)
    }

    /// The configuration keys that record when the token was obtained and how long it lives.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Oauth2 => ("oauth.user.refresh_time", "oauth.user.refresh_interval"),
            Self::None | Self::Basic | Self::Custom(_) => ("authentication.time", "expires_in"),
        }
    }

    /// A value that changes whenever a token is obtained: the time it was obtained. Two runs
    /// that see the same marker saw the same token.
    pub fn marker(self, configuration: &dyn Values) -> Option<String> {
        configuration.value(self.keys().0).and_then(text_of)
    }

    /// Checks the token of `configuration` (the effective configuration) at `now_ms`. An
    /// instance never provisioned (no `authentication.time`) of a connector with provisioning
    /// resources is stale whatever its authentication: they run first, as the platform ran them
    /// when the instance was created (`auth/custom.rs`).
    ///
    /// The skew (default 30 s) is capped at half the lifetime, so that short-lived tokens are
    /// still used before being refreshed.
    pub fn check_fresh(
        self,
        connector: &Connector,
        configuration: &dyn Values,
        now_ms: u64,
    ) -> Freshness {
        self.expiry(connector, configuration).judge(now_ms)
    }

    /// What [`Scheme::check_fresh`] reads from `configuration`: the token's expiry and whether
    /// the instance still awaits provisioning. It depends on the configuration alone, so that a
    /// run can read it once per stored snapshot (`snapshot.rs`) and judge it at each `now`.
    pub(crate) fn expiry(self, connector: &Connector, configuration: &dyn Values) -> Expiry {
        let token = self.token_expiry(connector, configuration);
        // Provisioning matters only to a token that would be fresh.
        let awaits_provisioning = matches!(token, TokenExpiry::Never | TokenExpiry::At { .. })
            && custom::awaits_provisioning(connector, configuration);
        Expiry {
            token,
            awaits_provisioning,
        }
    }

    /// When the token of `configuration` (the effective configuration) expires, from the
    /// scheme's keys and the connector's session modes: the one reading of them that freshness
    /// ([`Scheme::check_fresh`]) and the refresh schedule ([`crate::schedule`]) share. Says
    /// nothing of provisioning.
    pub(crate) fn token_expiry(
        self,
        connector: &Connector,
        configuration: &dyn Values,
    ) -> TokenExpiry {
        if !self.obtains_tokens() {
            return TokenExpiry::Never;
        }
        let (time_key, lifetime_key) = self.keys();
        if matches!(self, Self::Oauth2)
            && configuration
                .value("oauth.user.token")
                .and_then(text_of)
                .is_none()
        {
            return TokenExpiry::Missing(RefreshReason::NoToken);
        }
        let Some(obtained_ms) = configuration.value(time_key).and_then(parse_seconds_or_ms) else {
            return TokenExpiry::Missing(match self {
                Self::Oauth2 => RefreshReason::NoToken,
                _ => RefreshReason::NotProvisioned,
            });
        };
        let session = connector.session();
        let lifetime = match session.management() {
            SessionManagement::None => return TokenExpiry::Never,
            SessionManagement::Always => return TokenExpiry::EveryUse,
            SessionManagement::Fixed => session.timeout().unwrap_or(session.default_expires_in()),
            // An unusable value counts as the default, a longer one than a year as a year
            // (what a run saves already; a hand-written instance file may hold anything).
            SessionManagement::Auto => match configuration.value(lifetime_key) {
                Some(value) => std::time::Duration::from_secs(lifetime::seconds_of(
                    value,
                    session.default_expires_in().as_secs(),
                )),
                None => session.default_expires_in(),
            },
        }
        .min(std::time::Duration::from_secs(
            lifetime::MAX_LIFETIME_SECONDS,
        ));
        let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = u64::try_from(session.skew().as_millis())
            .unwrap_or(u64::MAX)
            .min(lifetime_ms / 2);
        TokenExpiry::At {
            obtained_ms,
            lifetime_ms,
            skew_ms,
        }
    }

    /// The steps that obtain or refresh the token for `reason`, in order, then (an instance
    /// never provisioned) the provisioning resources. Each step's request is built when it
    /// runs, from the configuration the previous steps left.
    ///
    /// Fails when the OAuth2 grant needs a person to sign in first (`authorization_code`
    /// without a refresh token).
    pub fn steps(
        self,
        connector: &'a Connector,
        configuration: &dyn Values,
        reason: &RefreshReason,
    ) -> Result<Vec<Step<'a>>, RunError> {
        let mut steps = match (self, reason) {
            (Self::Custom(connector), _) => return Ok(custom::steps(connector, reason)),
            (Self::None | Self::Basic, _) | (Self::Oauth2, RefreshReason::NotProvisioned) => {
                Vec::new()
            }
            (Self::Oauth2, _) => oauth2::steps(connector, configuration)?,
        };
        if custom::awaits_provisioning(connector, configuration) {
            steps.extend(custom::provisioning_steps(connector));
        }
        Ok(steps)
    }

    /// The state a vendor's answer to `step` gives, received at `now_ms`: the response
    /// parameters' values, `authentication.time` for a step that obtains a token, and the
    /// OAuth2 token contract for token steps (rotation: a new refresh token replaces the held
    /// one; an answer without one keeps it).
    ///
    /// A lifetime that is no number of seconds, or longer than a year, is saved as the one the
    /// engine uses (`auth/lifetime.rs`, [`crate::MAX_LIFETIME_SECONDS`]), and reported in [`Absorbed::adjusted`].
    ///
    /// Fails when a token step's answer holds no access token, or when a response `bodyField`
    /// would visit more of the answer than the JSONPath budget allows.
    pub fn absorb(
        connector: &Connector,
        step: &Step<'_>,
        response: &VendorResponse,
        now_ms: u64,
    ) -> Result<Absorbed, RunError> {
        match step {
            Step::Resource {
                resource,
                obtains_token,
                token_response,
                ..
            } => {
                let mut saved = extract(connector, resource, response)?.saved;
                if *obtains_token && !*token_response {
                    require_token(connector, resource, &step.name(), &saved)?;
                }
                if *obtains_token {
                    saved.insert(
                        "authentication.time".into(),
                        Value::String(now_ms.to_string()),
                    );
                }
                let default = connector.session().default_expires_in().as_secs();
                let mut adjusted = lifetime::settle(&mut saved, "expires_in", default);
                if *token_response {
                    let name = step.name();
                    let token =
                        oauth2::token_state(connector, &response.body, &name, true, now_ms)?;
                    saved.extend(token.state);
                    adjusted = adjusted.or(token.adjusted);
                }
                Ok(Absorbed {
                    state: saved,
                    adjusted,
                })
            }
            Step::Token(_) => {
                oauth2::token_state(connector, &response.body, &step.name(), false, now_ms)
            }
        }
    }

    /// Adds the authentication the scheme implies to an API request's headers: Basic from
    /// `username`/`password`, Bearer from `oauth.user.token`. Not when a parameter already sets
    /// `Authorization`, nor (OAuth2) when a parameter maps `oauth.user.token` somewhere else.
    pub fn apply(
        self,
        configuration: &dyn Values,
        parameters: &[&Parameter],
        headers: &mut Vec<(String, String)>,
    ) {
        if headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            return;
        }
        let value = |key: &str| configuration.value(key).and_then(text_of);
        match self {
            Self::Basic => {
                if let (Some(user), Some(password)) = (value("username"), value("password")) {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{password}"));
                    headers.push(("Authorization".into(), format!("Basic {encoded}")));
                }
            }
            Self::Oauth2 => {
                let maps_token = parameters.iter().any(|parameter| {
                    (parameter.kind() == ParameterKind::Configuration
                        && parameter.name() == "oauth.user.token")
                        || parameter.template().is_some_and(|template| {
                            template.keys().any(|key| key == "oauth.user.token")
                        })
                });
                if !maps_token && let Some(token) = value("oauth.user.token") {
                    headers.push(("Authorization".into(), format!("Bearer {token}")));
                }
            }
            Self::None | Self::Custom(_) => {}
        }
    }
}

/// Checks the token of `configuration` for `connector` at `now_ms`: [`Scheme::check_fresh`].
pub fn check_fresh(connector: &Connector, configuration: &dyn Values, now_ms: u64) -> Freshness {
    Scheme::of(connector).check_fresh(connector, configuration, now_ms)
}

/// `authentication.time` is epoch milliseconds; a value small enough to be seconds (before
/// 2001 in ms) is taken as seconds, as some hand-written instance files have it.
fn parse_seconds_or_ms(value: &Value) -> Option<u64> {
    let number = parse_seconds(value)?;
    Some(if number < 1_000_000_000_000 {
        number.saturating_mul(1000)
    } else {
        number
    })
}

/// A resource that obtains a token and maps values of its answer into the configuration must
/// get at least one of them: a `200` of HTML, an empty body or an object without the mapped
/// fields is not a token (saving `authentication.time` alone would call the instance fresh with
/// no token). The field named is the first mapped one whose key looks like the token.
fn require_token(
    connector: &Connector,
    resource: &Resource,
    step: &str,
    saved: &State,
) -> Result<(), RunError> {
    let mapped: Vec<&Parameter> = connector
        .parameters_of(resource, Source::Response)
        .filter(|parameter| parameter.kind() == ParameterKind::Configuration)
        .collect();
    if mapped.is_empty() || !saved.is_empty() {
        return Ok(());
    }
    let token = mapped
        .iter()
        .find(|parameter| {
            let key = parameter.name().to_ascii_lowercase();
            key.contains("token") && !key.contains("refresh")
        })
        .unwrap_or(&mapped[0]);
    Err(RunErrorKind::NoToken {
        step: step.to_owned(),
        field: token.vendor_name().to_owned(),
        body: String::new(),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use engine_spec::{SourceFile, validate};
    use serde_json::json;

    use super::*;

    pub(super) fn connector(text: &str) -> Connector {
        validate(SourceFile::new("c.json", text))
            .into_connector()
            .expect("valid")
    }

    fn custom(session: &str) -> Connector {
        connector(&format!(
            r#"{{"authentication": {{"type": "custom"}}, {session}
              "resources": [{{"type": "PROVISION AUTH VALIDATION", "vendorPath": "/token",
                "parameters": [{{"name": "access.token", "type": "configuration", "source": "response",
                                 "vendorName": "access_token", "vendorType": "bodyField"}},
                               {{"name": "expires_in", "type": "configuration", "source": "response",
                                 "vendorName": "expires_in", "vendorType": "bodyField"}}]}},
                {{"type": "ON REFRESH", "vendorPath": "/token"}},
                {{"name": "account", "type": "ON PROVISION", "vendorPath": "/me"}}]}}"#
        ))
    }

    pub(super) fn state(value: Value) -> State {
        match value {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

    #[test]
    fn auto_uses_expires_in_with_a_skew() {
        let connector = custom("");
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
            check_fresh(&custom(""), &State::new(), 0),
            Freshness::Stale(RefreshReason::NotProvisioned)
        );
        let provisioned =
            state(json!({"authentication.time": 1_000_000_000_000_u64, "expires_in": 1}));
        assert_eq!(
            check_fresh(
                &custom(r#""session": {"management": "none"},"#),
                &provisioned,
                u64::MAX
            ),
            Freshness::Fresh(None)
        );
        assert_eq!(
            check_fresh(
                &custom(r#""session": {"management": "always"},"#),
                &provisioned,
                0
            ),
            Freshness::Stale(RefreshReason::SessionAlways)
        );
        let fixed = custom(r#""session": {"management": "fixed", "timeout": 60, "skew": 0},"#);
        assert_eq!(
            check_fresh(&fixed, &provisioned, 1_000_000_059_999),
            Freshness::Fresh(Some(1_000_000_060_000))
        );
        // A time in seconds is read as seconds.
        let seconds = state(json!({"authentication.time": 1_000_000_000_u64, "expires_in": 60}));
        assert_eq!(
            check_fresh(&custom(""), &seconds, 1_000_000_000_000),
            Freshness::Fresh(Some(1_000_000_060_000))
        );
    }

    #[test]
    fn short_lifetimes_cap_the_skew() {
        let configuration = state(json!({"authentication.time": "1000000000000", "expires_in": 4}));
        assert_eq!(
            check_fresh(&custom(""), &configuration, 1_000_000_001_000),
            Freshness::Fresh(Some(1_000_000_004_000))
        );
    }

    #[test]
    fn custom_steps_provision_then_on_provision_and_refresh_alone() {
        let connector = custom("");
        let scheme = Scheme::of(&connector);
        let names = |reason| {
            scheme
                .steps(&connector, &State::new(), &reason)
                .unwrap()
                .iter()
                .map(Step::name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(RefreshReason::NotProvisioned),
            ["PROVISION AUTH VALIDATION", "ON PROVISION"]
        );
        assert_eq!(names(RefreshReason::Expired { at_ms: 0 }), ["ON REFRESH"]);
        assert_eq!(
            names(RefreshReason::Rejected { status: 401 }),
            ["ON REFRESH"]
        );
    }

    #[test]
    fn every_authentication_provisions_a_new_instance_once() {
        let basic = connector(
            r#"{"authentication": {"type": "basic"},
              "resources": [{"type": "ON PROVISION", "vendorPath": "/me"},
                            {"type": "PROVISION AUTH VALIDATION", "vendorPath": "/validate"}]}"#,
        );
        let scheme = Scheme::of(&basic);
        let fresh = state(json!({"username": "ada", "password": "pw"}));
        assert_eq!(
            scheme.check_fresh(&basic, &fresh, 0),
            Freshness::Stale(RefreshReason::NotProvisioned)
        );
        let steps = scheme
            .steps(&basic, &fresh, &RefreshReason::NotProvisioned)
            .unwrap();
        assert_eq!(
            steps.iter().map(Step::name).collect::<Vec<_>>(),
            ["PROVISION AUTH VALIDATION", "ON PROVISION"]
        );
        assert!(matches!(
            steps[0],
            Step::Resource {
                obtains_token: false,
                ..
            }
        ));
        let provisioned = state(json!({"authentication.time": "1"}));
        assert_eq!(
            scheme.check_fresh(&basic, &provisioned, 0),
            Freshness::Fresh(None)
        );
        // OAuth2: the token first (the export's own password request), then provisioning.
        let password = connector(
            r#"{"authentication": {"type": "oauth2Password"},
              "configuration": [{"key": "oauth.token.url", "defaultValue": "https://x/token"}],
              "resources": [{"type": "oauth2Password", "vendorPath": "https://x/token"},
                            {"type": "ON PROVISION", "vendorPath": "/me"}]}"#,
        );
        let configuration = state(json!({"oauth.api.key": "id", "username": "ada"}));
        let steps = Scheme::of(&password)
            .steps(&password, &configuration, &RefreshReason::NoToken)
            .unwrap();
        assert_eq!(
            steps.iter().map(Step::name).collect::<Vec<_>>(),
            ["OAUTH2 PASSWORD", "ON PROVISION"]
        );
        let Step::Resource { offered, .. } = &steps[0] else {
            panic!("a resource step");
        };
        assert_eq!(
            offered,
            &[
                ("client_id".to_owned(), "id".to_owned()),
                ("grant_type".to_owned(), "password".to_owned()),
                ("username".to_owned(), "ada".to_owned()),
            ]
        );
    }

    #[test]
    fn absorbing_a_custom_answer_saves_the_token_and_the_time() {
        let connector = custom("");
        let scheme = Scheme::of(&connector);
        let steps = scheme
            .steps(&connector, &State::new(), &RefreshReason::NotProvisioned)
            .unwrap();
        let response = VendorResponse::new(
            200,
            Vec::new(),
            json!({"access_token": "t1", "expires_in": 3600}),
        );
        assert_eq!(
            Scheme::absorb(&connector, &steps[0], &response, 42)
                .unwrap()
                .state,
            state(json!({"access.token": "t1", "expires_in": "3600", "authentication.time": "42"}))
        );
        // `ON PROVISION` saves what it saves and no time.
        let response = VendorResponse::new(200, Vec::new(), json!({}));
        assert_eq!(
            Scheme::absorb(&connector, &steps[1], &response, 42).unwrap(),
            Absorbed::default()
        );
    }

    #[test]
    fn basic_and_bearer_are_applied_unless_the_connector_sets_them() {
        let configuration =
            state(json!({"username": "ada", "password": "pw", "oauth.user.token": "t"}));
        let mut headers = Vec::new();
        Scheme::Basic.apply(&configuration, &[], &mut headers);
        assert_eq!(
            headers,
            [("Authorization".to_owned(), "Basic YWRhOnB3".to_owned())]
        );
        let mut headers = Vec::new();
        Scheme::Oauth2.apply(&configuration, &[], &mut headers);
        assert_eq!(
            headers,
            [("Authorization".to_owned(), "Bearer t".to_owned())]
        );
        let mut headers = vec![("authorization".to_owned(), "Token x".to_owned())];
        Scheme::Oauth2.apply(&configuration, &[], &mut headers);
        assert_eq!(headers.len(), 1);
        let mut headers = Vec::new();
        Scheme::None.apply(&configuration, &[], &mut headers);
        assert!(headers.is_empty());
        // A token mapped into a query parameter gets no Bearer header.
        let mapped = connector(
            r#"{"authentication": {"type": "oauth2", "grant": "client_credentials"},
                "configuration": [{"key": "oauth.token.url", "defaultValue": "https://x/token"}],
                "resources": [{"name": "me", "type": "api", "vendorPath": "/me", "parameters": [
                  {"name": "oauth.user.token", "type": "configuration", "vendorName": "access_token", "vendorType": "query"}]}]}"#,
        );
        let resource = mapped.find_resource("me").unwrap();
        let parameters: Vec<&Parameter> = resource.parameters().iter().collect();
        let mut headers = Vec::new();
        Scheme::of(&mapped).apply(&configuration, &parameters, &mut headers);
        assert!(headers.is_empty());
    }
}
