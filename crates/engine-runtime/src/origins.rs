//! [`Origins`]: where an instance's credentials may go. A request that carries them (the
//! scheme's `Authorization`, an OAuth token in the query, an OAuth 1.0a signature, any value
//! made from a secret) is sent only to one of these origins (scheme, host and port); one whose
//! final URL, after its hooks, points elsewhere is refused before anything leaves
//! ([`RunErrorKind::CredentialsElsewhere`]).
//!
//! The origins are decided once per thread for each loaded connector and the values they are
//! decided from ([`Origins::of`]): a store that reads the instance again for each run costs a
//! run a few lookups, not the parsing of URLs again. They come from:
//! - `base.url`, its `{key}` placeholders filled from the configuration as the request's URL
//!   fills them;
//! - the token and authorization endpoints (`oauth.token.url`, `oauth.token.refresh_url`,
//!   `oauth.request.url`, `oauth.authorization.url`);
//! - every absolute `vendorPath` the connector declares, as written or once its configuration
//!   values are in (`${configuration.login.url}/oauth2/token`): the platform sent those
//!   requests there, with the credentials the resource carries.
//!
//! A placeholder that no configuration value fills stands for one DNS label, or several when
//! the host's literal domain follows it (`https://{account}.visualstudio.com` allows
//! `https://acme.visualstudio.com` and `https://eu.acme.visualstudio.com`, never
//! `https://evil.example/.visualstudio.com` or `https://visualstudio.com.evil.example`).
//! Checking a request is a comparison with each origin: a few dozen instructions.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use engine_spec::{Connector, ConnectorId};
use serde_json::Value;

use crate::configuration::Configuration;
use crate::prepared_request::{PartContent, PreparedRequest, RequestBody};
use crate::redact::Redactor;
use crate::run_error::{RunError, RunErrorKind};
use crate::value::text_of;

/// The configuration keys that hold an endpoint credentials go to, besides `base.url`.
const ENDPOINT_KEYS: [&str; 4] = [
    "oauth.token.url",
    "oauth.token.refresh_url",
    "oauth.request.url",
    "oauth.authorization.url",
];

/// What an unfilled placeholder becomes before the URL is parsed: a text no host holds.
const LABEL: &str = "any-label--x9";

/// The origins an instance's credentials may go to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origins {
    allowed: Vec<Origin>,
    /// Every configuration key they were decided from, with its value then (`None`: none):
    /// a run that saves one of them decides them again, and [`Origins::of`] reuses them for
    /// a configuration with the same values.
    read: Vec<(String, Option<Value>)>,
}

/// One origin: a scheme, a host (or a host pattern) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: Box<str>,
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// The host as `url` serializes it (lowercase, IPv6 in brackets).
    Exact(Box<str>),
    /// The literal parts between unfilled placeholders; each placeholder matches one or more
    /// letters, digits, `-` or `_` (no `.`).
    Pattern(Vec<Box<str>>),
}

impl Origins {
    /// The origins of `connector` under `configuration`, decided on first use in a thread for
    /// the connector and the values they depend on.
    pub(crate) fn of(connector: &Connector, configuration: &Configuration<'_>) -> Arc<Self> {
        /// Origins remembered per thread; the oldest makes room for a new one.
        const CAPACITY: usize = 64;
        thread_local! {
            static CACHE: RefCell<Vec<(ConnectorId, Arc<Origins>)>> =
                const { RefCell::new(Vec::new()) };
        }
        let id = connector.id();
        CACHE.with_borrow_mut(|cache| {
            let found = cache.iter().find(|(known, origins)| {
                *known == id
                    && origins
                        .read
                        .iter()
                        .all(|(key, value)| configuration.get(key) == value.as_ref())
            });
            if let Some((_, origins)) = found {
                return Arc::clone(origins);
            }
            let decided = Arc::new(Self::decide(connector, configuration));
            if cache.len() >= CAPACITY {
                cache.remove(0);
            }
            cache.push((id, Arc::clone(&decided)));
            decided
        })
    }

    /// The origins of `connector` under `configuration`.
    fn decide(connector: &Connector, configuration: &Configuration<'_>) -> Self {
        let mut origins = Self::default();
        let mut texts: Vec<String> = Vec::new();
        for key in std::iter::once("base.url").chain(ENDPOINT_KEYS) {
            if let Some(text) = origins.read(key, configuration) {
                texts.push(text);
            }
        }
        for text in &mut texts {
            *text = origins.fill(text, configuration);
        }
        // A `vendorPath` that is a URL as written, or once its configuration values are in
        // (`${configuration.login.url}/oauth2/token`).
        for resource in connector.resources() {
            let source = resource.vendor_path().source();
            if ["http://", "https://", "${", "{"]
                .iter()
                .any(|start| source.starts_with(start))
            {
                let filled = origins.fill(source, configuration);
                if filled.starts_with("http://") || filled.starts_with("https://") {
                    texts.push(filled);
                }
            }
        }
        for filled in texts {
            if let Some(origin) = Origin::of(&filled)
                && !origins.allowed.contains(&origin)
            {
                origins.allowed.push(origin);
            }
        }
        origins
    }

    /// The text of `key` in `configuration`, recorded as read.
    fn read(&mut self, key: &str, configuration: &Configuration<'_>) -> Option<String> {
        let value = configuration.get(key);
        if !self.read.iter().any(|(known, _)| known == key) {
            self.read.push((key.to_owned(), value.cloned()));
        }
        value.and_then(text_of)
    }

    /// True when a value saved under one of `keys` may change the origins.
    pub(crate) fn depends_on<'k>(&self, mut keys: impl Iterator<Item = &'k String>) -> bool {
        keys.any(|key| self.read.iter().any(|(known, _)| known == key))
    }

    /// Checks that `request`, about to be sent, either goes to one of the origins or carries no
    /// credentials: no value made from a secret ([`PreparedRequest::secrets`], or a text
    /// `redactor` knows as one), no `Authorization`, no OAuth 1.0a signature (`signed`: it is
    /// signed as it goes), no userinfo.
    ///
    /// Fails with [`RunErrorKind::CredentialsElsewhere`].
    pub(crate) fn check(
        &self,
        request: &PreparedRequest,
        signed: bool,
        redactor: &Redactor,
    ) -> Result<(), RunError> {
        if self.allows(&request.url) || !(signed || carries_credentials(request, redactor)) {
            return Ok(());
        }
        Err(RunErrorKind::CredentialsElsewhere {
            resource: request.resource.to_string(),
            origin: request.url.origin().ascii_serialization(),
            allowed: self.allowed.iter().map(Origin::shown).collect(),
        }
        .into())
    }

    /// True when `url` is at one of the origins.
    fn allows(&self, url: &url::Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        self.allowed.iter().any(|origin| {
            origin.port == port && *origin.scheme == *url.scheme() && origin.host.matches(host)
        })
    }

    /// `text` with `${configuration.KEY}` and `{KEY}` filled from `configuration` (as they
    /// are, a URL), and every other placeholder replaced by [`LABEL`]. Records the keys read.
    fn fill(&mut self, text: &str, configuration: &Configuration<'_>) -> String {
        let mut output = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let Some(length) = rest[open..].find('}') else {
                break;
            };
            let dollar = rest[..open].ends_with('$');
            let name = &rest[open + 1..open + length];
            let key = name.strip_prefix("configuration.").unwrap_or(name).trim();
            output.push_str(&rest[..open - usize::from(dollar)]);
            match self.read(key, configuration) {
                Some(value) => output.push_str(&value),
                None => output.push_str(LABEL),
            }
            rest = &rest[open + length + 1..];
        }
        output.push_str(rest);
        output
    }
}

impl Origin {
    /// The origin of the URL `text` (placeholders already filled), `None` when it is no
    /// `http(s)` URL.
    fn of(text: &str) -> Option<Self> {
        let url = url::Url::parse(text).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let host = url.host_str()?;
        let host = if host.contains(LABEL) {
            Host::Pattern(host.split(LABEL).map(Box::from).collect())
        } else {
            Host::Exact(host.into())
        };
        Some(Self {
            scheme: url.scheme().into(),
            host,
            port: url.port_or_known_default()?,
        })
    }

    /// `https://api.example`, `https://*.visualstudio.com`, with the port when it is not the
    /// scheme's.
    fn shown(&self) -> String {
        let mut text = format!("{}://", self.scheme);
        match &self.host {
            Host::Exact(host) => text.push_str(host),
            Host::Pattern(parts) => text.push_str(&parts.join("*")),
        }
        let default = if &*self.scheme == "https" { 443 } else { 80 };
        if self.port != default {
            let _ = write!(text, ":{}", self.port);
        }
        text
    }
}

impl Host {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(exact) => **exact == *host,
            Self::Pattern(parts) => matches_pattern(parts, host),
        }
    }
}

/// True when `host` is `parts` joined by placeholders, each one or more letters, digits, `-`
/// or `_`; the placeholder before the last part may also hold dots between labels when that
/// part starts with `.` (a domain).
fn matches_pattern(parts: &[Box<str>], host: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return false;
    };
    let Some(mut host) = host.strip_prefix(&**first) else {
        return false;
    };
    let label = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_');
    for (index, part) in rest.iter().enumerate() {
        let last = index + 1 == rest.len();
        // The placeholder takes the label characters up to where `part` follows (the last one,
        // up to the end of the host minus `part`).
        // Followed by the last literal, a domain (`{account}.visualstudio.com`), it may take
        // several labels: the host still ends in that domain.
        let dotted = last && part.starts_with('.');
        let taken = host
            .bytes()
            .take_while(|byte| label(*byte) || (dotted && *byte == b'.'))
            .count();
        let found = (1..=taken).rev().find(|&length| {
            let after = &host[length..];
            if last {
                after == &**part
            } else {
                after.starts_with(&**part)
            }
        });
        let Some(length) = found else {
            return false;
        };
        if host[..length].split('.').any(str::is_empty) {
            return false;
        }
        host = &host[length + part.len()..];
    }
    host.is_empty()
}

/// True when `request` carries a credential: a value of one of its [`SecretSlot`]s, a header,
/// query, body or URL text that `redactor` knows as a secret, an `Authorization` header, an
/// OAuth 1.0a signature or a URL's userinfo.
///
/// [`SecretSlot`]: crate::SecretSlot
fn carries_credentials(request: &PreparedRequest, redactor: &Redactor) -> bool {
    let mut slotted = false;
    request.for_each_secret_value(|value| slotted |= !value.is_empty());
    if slotted
        || request.url.password().is_some()
        || !request.url.username().is_empty()
        || redactor.finds_secret(request.url.as_str())
        || crate::auth::oauth1::is_signed(request)
    {
        return true;
    }
    if request.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("authorization")
            || name.eq_ignore_ascii_case("proxy-authorization")
            || name.eq_ignore_ascii_case("cookie")
            || redactor.finds_secret(value)
    }) {
        return true;
    }
    match &request.body {
        RequestBody::Empty => false,
        RequestBody::Json(value) => redactor.finds_secret(&value.to_string()),
        RequestBody::Form(fields) => fields.iter().any(|(_, value)| redactor.finds_secret(value)),
        RequestBody::Multipart(parts) => parts.iter().any(|part| match &part.content {
            PartContent::Text(text) => redactor.finds_secret(text),
            PartContent::File { .. } => false,
        }),
        RequestBody::Text(text) => redactor.finds_secret(text),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use engine_spec::SourceFile;
    use engine_store::State;
    use serde_json::json;

    use super::*;
    use crate::prepared_request::SecretSlot;

    fn connector(text: &str) -> Connector {
        engine_spec::validate(SourceFile::new("c.json", text))
            .into_connector()
            .expect("valid")
    }

    /// A connector with `base.url` (and `account`, unfilled unless the state has it), an
    /// absolute `vendorPath` and a `vendorPath` under `base.url`.
    fn acme() -> Connector {
        connector(
            r#"{"authentication": {"type": "basic"},
              "configuration": [{"key": "base.url", "defaultValue": "https://api.acme.example/v1"},
                                {"key": "oauth.token.url", "defaultValue": "https://login.acme.example/token"},
                                {"key": "login.url", "defaultValue": "https://sso.acme.example"}],
              "resources": [
                {"name": "me", "type": "API", "vendorMethod": "GET", "vendorPath": "/me"},
                {"name": "files", "type": "API", "vendorMethod": "GET",
                 "vendorPath": "https://{account}.files.example:8443/list"},
                {"type": "ON REFRESH", "vendorMethod": "POST",
                 "vendorPath": "${configuration.login.url}/{tenant}/token"},
                {"name": "objects", "type": "API", "vendorMethod": "GET",
                 "vendorPath": "{objectName}/list"}]}"#,
        )
    }

    fn origins(connector: &Connector, state: serde_json::Value) -> Origins {
        let state: State = serde_json::from_value(state).unwrap();
        Origins::decide(connector, &Configuration::new(connector, Arc::new(state)))
    }

    fn request(url: &str, headers: &[(&str, &str)]) -> PreparedRequest {
        PreparedRequest {
            resource: "me".into(),
            method: "GET".into(),
            url: url::Url::parse(url).unwrap(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body: RequestBody::Empty,
            lifecycle: false,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn the_origins_are_base_url_the_endpoints_and_absolute_vendor_paths() {
        let connector = acme();
        let origins = origins(&connector, json!({}));
        let shown: Vec<String> = origins.allowed.iter().map(Origin::shown).collect();
        assert_eq!(
            shown,
            [
                "https://api.acme.example",
                "https://login.acme.example",
                "https://*.files.example:8443",
                "https://sso.acme.example"
            ]
        );
        for (url, allowed) in [
            ("https://api.acme.example/v1/me", true),
            ("https://API.acme.example:443/other", true),
            ("http://api.acme.example/v1/me", false),
            ("https://api.acme.example:8443/v1/me", false),
            ("https://api.acme.example.evil.example/", false),
            ("https://login.acme.example/token", true),
            ("https://team-1.files.example:8443/list", true),
            ("https://files.example:8443/list", false),
            // The placeholder before the domain takes labels, as the request's URL fills it.
            ("https://a.b.files.example:8443/list", true),
            ("https://files.example.evil.example:8443/list", false),
            (
                "https://files.example.files.example.evil.example:8443/list",
                false,
            ),
            ("https://team.files.example/list", false),
            ("https://evil.example/.files.example:8443/list", false),
        ] {
            assert_eq!(
                origins.allows(&url::Url::parse(url).unwrap()),
                allowed,
                "{url}"
            );
        }
    }

    #[test]
    fn configuration_values_fill_base_url_and_are_followed() {
        let connector = connector(
            r#"{"authentication": {"type": "none"},
              "configuration": [{"key": "base.url", "defaultValue": "https://{store.url}/api"},
                                {"key": "store.url"}],
              "resources": [{"name": "me", "type": "API", "vendorMethod": "GET",
                             "vendorPath": "/me"}]}"#,
        );
        let origins = origins(&connector, json!({"store.url": "shop.example:8080"}));
        assert!(origins.allows(&url::Url::parse("https://shop.example:8080/api/me").unwrap()));
        assert!(!origins.allows(&url::Url::parse("https://other.example/api/me").unwrap()));
        // A saved `store.url` or `base.url` decides them again; another key does not.
        let saved = |key: &str| [key.to_owned()];
        assert!(origins.depends_on(saved("store.url").iter()));
        assert!(origins.depends_on(saved("base.url").iter()));
        assert!(!origins.depends_on(saved("access.token").iter()));
    }

    #[test]
    fn origins_are_decided_once_per_connector_and_values() {
        let connector = acme();
        let of = |state: serde_json::Value| {
            let state: State = serde_json::from_value(state).unwrap();
            Origins::of(&connector, &Configuration::new(&connector, Arc::new(state)))
        };
        let first = of(json!({"base.url": "https://eu.acme.example", "username": "a"}));
        // Another stored state with the same values the origins come from: the same origins.
        let again = of(json!({"base.url": "https://eu.acme.example", "username": "b"}));
        assert!(Arc::ptr_eq(&first, &again));
        let moved = of(json!({"base.url": "https://us.acme.example"}));
        assert!(!Arc::ptr_eq(&first, &moved));
        assert!(moved.allows(&url::Url::parse("https://us.acme.example/me").unwrap()));
        assert!(!moved.allows(&url::Url::parse("https://eu.acme.example/me").unwrap()));
    }

    #[test]
    fn a_request_elsewhere_is_refused_only_when_it_carries_credentials() {
        let connector = acme();
        let origins = origins(&connector, json!({}));
        let mut redactor = Redactor::default();
        redactor.learn("FAKE-token-0123456789");
        let check = |request: &PreparedRequest| origins.check(request, false, &redactor);

        // At home, credentials go.
        check(&request(
            "https://api.acme.example/v1/me",
            &[("Authorization", "Bearer FAKE-token-0123456789")],
        ))
        .unwrap();
        // Elsewhere without credentials: nothing to protect.
        check(&request(
            "https://cdn.example/file.png",
            &[("Accept", "*/*")],
        ))
        .unwrap();
        // Elsewhere with them, in every place a request carries them.
        let mut slotted = request("https://cdn.example/x?api_key=k-42", &[]);
        slotted.secrets.push(SecretSlot::Query("api_key".into()));
        let mut body = request("https://cdn.example/x", &[]);
        body.body = RequestBody::Json(json!({"token": "FAKE-token-0123456789"}));
        for carrying in [
            request("https://cdn.example/x", &[("Authorization", "Basic dTpw")]),
            request(
                "https://cdn.example/x",
                &[("X-Key", "FAKE-token-0123456789")],
            ),
            request("https://cdn.example/x?t=FAKE-token-0123456789", &[]),
            request("https://user:pw@cdn.example/x", &[]),
            request("https://cdn.example/x?oauth_signature=abc", &[]),
            slotted,
            body,
        ] {
            let error = check(&carrying).unwrap_err();
            assert_eq!(
                error.to_string(),
                "`me` would carry the instance's credentials to `https://cdn.example`, which is none of the origins they may go to (`https://api.acme.example`, `https://login.acme.example`, `https://*.files.example:8443`, `https://sso.acme.example`); nothing was sent",
                "{}",
                carrying.url
            );
        }
    }
}
