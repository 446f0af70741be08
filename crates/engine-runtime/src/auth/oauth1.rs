//! OAuth 1.0a request signing (RFC 5849), as the platform signed every request of an `oauth1`
//! connector: `HMAC-SHA1` over the method, the URL and every query and form parameter, keyed by
//! the consumer secret and the token secret.
//!
//! The element.json keys drive it: `oauth.api.key` and `oauth.api.secret` (the consumer),
//! `oauth.user.token` and `oauth.user.token.secret` (the access token a person's sign-in gave),
//! `oauth.request.authorization.type` (`query`: the protocol parameters go in the query string;
//! anything else: in an `Authorization: OAuth ...` header).
//!
//! Pure: the nonce and the time are the caller's, so that a signature is unit-tested against a
//! published example. A request is signed as each attempt goes out ([`Signer`], by the
//! transport's retry loop), so that a retry carries a nonce and a time of its own: a vendor
//! refuses a nonce it saw (RFC 5849 3.3).

use std::fmt::Write as _;

use base64::Engine as _;
use engine_spec::Connector;
use engine_spec::template::Values;
use hmac::{Hmac, KeyInit as _, Mac as _};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::prepared_request::{PreparedRequest, RequestBody, SecretSlot};
use crate::run_error::{MissingKey, RunError, RunErrorKind};
use crate::value::text_of;

/// What RFC 5849 leaves unencoded: the unreserved characters of RFC 3986.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The configuration keys a signature needs, in the order they are reported missing.
const KEYS: [&str; 4] = [
    "oauth.api.key",
    "oauth.api.secret",
    "oauth.user.token",
    "oauth.user.token.secret",
];

/// The consumer's and the token's credentials of one instance.
pub(crate) struct Credentials {
    consumer_key: String,
    consumer_secret: String,
    token: String,
    token_secret: String,
    placement: Placement,
    /// The consumer key is a secret of the connector (its property is `PASSWORD` or hidden):
    /// masked where a request is shown, as the token is.
    consumer_key_secret: bool,
}

/// Where the protocol parameters (`oauth_consumer_key`, `oauth_signature`...) go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// An `Authorization: OAuth ...` header.
    Header,
    /// The query string (`oauth.request.authorization.type` `query`).
    Query,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials `configuration` holds for `connector`.
    ///
    /// Fails when a key is missing: the consumer's are the connector's own, the token and its
    /// secret come from a person's OAuth 1.0a sign-in with the vendor (`engine authorize`).
    pub(crate) fn of(connector: &Connector, configuration: &dyn Values) -> Result<Self, RunError> {
        Self::read(connector, configuration, &KEYS)
    }

    /// The consumer's credentials alone, for the sign-in's token requests.
    ///
    /// Fails when `oauth.api.key` or `oauth.api.secret` is missing.
    pub(crate) fn consumer(
        connector: &Connector,
        configuration: &dyn Values,
    ) -> Result<Self, RunError> {
        Self::read(connector, configuration, &KEYS[..2])
    }

    /// These credentials with the token `token` and its `secret` (the sign-in's request token).
    pub(crate) fn with_token(mut self, token: String, secret: String) -> Self {
        self.token = token;
        self.token_secret = secret;
        self
    }

    fn read(
        connector: &Connector,
        configuration: &dyn Values,
        keys: &[&str],
    ) -> Result<Self, RunError> {
        let value = |key: &str| {
            configuration
                .value(key)
                .and_then(text_of)
                .filter(|value| !value.is_empty())
        };
        let missing: Vec<MissingKey> = keys
            .iter()
            .filter(|key| value(key).is_none())
            .map(|key| MissingKey {
                key: (*key).to_owned(),
                description: connector
                    .property(key)
                    .and_then(|property| property.description())
                    .map(str::to_owned),
            })
            .collect();
        if !missing.is_empty() {
            return Err(RunErrorKind::MissingConfiguration { missing }.into());
        }
        let [consumer_key, consumer_secret, token, token_secret] =
            KEYS.map(|key| value(key).unwrap_or_default());
        let (token, token_secret) = if keys.len() == KEYS.len() {
            (token, token_secret)
        } else {
            (String::new(), String::new())
        };
        let placement = match value("oauth.request.authorization.type") {
            Some(kind) if kind.trim().eq_ignore_ascii_case("query") => Placement::Query,
            _ => Placement::Header,
        };
        Ok(Self {
            consumer_key,
            consumer_secret,
            token,
            token_secret,
            placement,
            consumer_key_secret: connector.is_secret_key(KEYS[0]),
        })
    }
}

/// How the requests of a run (or a sign-in's token request) are signed: the credentials, and the
/// sign-in's own protocol parameters (`oauth_callback`, `oauth_verifier`). Each attempt is signed
/// anew ([`Signer::sign`]), with a nonce and a time of its own.
#[derive(Debug)]
pub(crate) struct Signer {
    credentials: Credentials,
    extra: Vec<(&'static str, String)>,
}

impl Signer {
    /// Signs with `credentials`, with no protocol parameter of the sign-in's.
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            extra: Vec::new(),
        }
    }

    /// `request` signed with a fresh nonce at `timestamp` (epoch seconds).
    pub(crate) fn sign(&self, request: &PreparedRequest, timestamp: u64) -> PreparedRequest {
        let mut signed = request.clone();
        sign_with(
            &mut signed,
            &self.credentials,
            &nonce(),
            timestamp,
            self.extra.clone(),
        );
        signed
    }
}

/// The protocol parameters shown as `****` wherever a request is shown (`--dry-run`, `-v`): the
/// token, the signature and the sign-in's verifier; the consumer key when it is a secret of
/// the connector. The others (`oauth_signature_method`, `oauth_version`, the nonce, the time,
/// the callback) are no secret and stay readable.
fn is_masked(name: &str, credentials: &Credentials) -> bool {
    matches!(name, "oauth_token" | "oauth_signature" | "oauth_verifier")
        || (name == "oauth_consumer_key" && credentials.consumer_key_secret)
}

/// Signs `request` with `credentials`, `nonce`, `timestamp` (epoch seconds) and the sign-in's
/// own protocol parameters `extra` (`oauth_callback`, `oauth_verifier`); without a token, no
/// `oauth_token` (the request token's request). Adds the protocol parameters and their
/// `oauth_signature` to the query or the `Authorization` header, and marks the token, the
/// signature and the verifier as secrets ([`is_masked`]).
fn sign_with(
    request: &mut PreparedRequest,
    credentials: &Credentials,
    nonce: &str,
    timestamp: u64,
    extra: Vec<(&'static str, String)>,
) {
    let mut protocol = vec![
        ("oauth_consumer_key", credentials.consumer_key.clone()),
        ("oauth_nonce", nonce.to_owned()),
        ("oauth_signature_method", "HMAC-SHA1".to_owned()),
        ("oauth_timestamp", timestamp.to_string()),
    ];
    if !credentials.token.is_empty() {
        protocol.push(("oauth_token", credentials.token.clone()));
    }
    protocol.push(("oauth_version", "1.0".to_owned()));
    protocol.extend(extra);
    let form: &[(String, String)] = match &request.body {
        RequestBody::Form(fields) => fields,
        _ => &[],
    };
    let signature = signature(&request.method, &request.url, form, &protocol, credentials);
    protocol.push(("oauth_signature", signature));
    match credentials.placement {
        Placement::Query => {
            let mut query = request.url.query_pairs_mut();
            for (name, value) in &protocol {
                query.append_pair(name, value);
            }
            drop(query);
            for (name, _) in &protocol {
                if is_masked(name, credentials) {
                    request.secrets.push(SecretSlot::Query((*name).to_owned()));
                }
            }
        }
        Placement::Header => {
            let header = |mask: bool| {
                let pairs = protocol
                    .iter()
                    .map(|(name, value)| {
                        let value = if mask && is_masked(name, credentials) {
                            crate::redact::MASK.to_owned()
                        } else {
                            encode(value)
                        };
                        format!("{name}=\"{value}\"")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("OAuth {pairs}")
            };
            request.secrets.push(SecretSlot::Header {
                name: "Authorization".into(),
                shown: header(true).into(),
            });
            request
                .headers
                .push(("Authorization".to_owned(), header(false)));
        }
    }
}

/// True when `request` carries an `oauth_signature` already.
pub(crate) fn is_signed(request: &PreparedRequest) -> bool {
    request
        .url
        .query_pairs()
        .any(|(name, _)| name == "oauth_signature")
        || request.headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("authorization") && value.starts_with("OAuth ")
        })
}

/// `oauth_signature` (RFC 5849 3.4): base64 of `HMAC-SHA1` over the signature base string
/// (the method, the URL without its query, and every query, form and protocol parameter,
/// encoded and sorted), keyed by the consumer secret and the token secret.
fn signature(
    method: &str,
    url: &url::Url,
    form: &[(String, String)],
    protocol: &[(&str, String)],
    credentials: &Credentials,
) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(name, value)| (encode(&name), encode(&value)))
        .chain(
            form.iter()
                .map(|(name, value)| (encode(name), encode(value))),
        )
        .chain(
            protocol
                .iter()
                .map(|(name, value)| (encode(name), encode(value))),
        )
        .collect();
    pairs.sort();
    let parameters = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let port = url
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    let base_uri = format!(
        "{}://{}{port}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.path()
    );
    let base = format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(&base_uri),
        encode(&parameters)
    );
    let key = format!(
        "{}&{}",
        encode(&credentials.consumer_secret),
        encode(&credentials.token_secret)
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// RFC 5849 3.6 percent-encoding: everything but the unreserved characters.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// The sign-in's first request (RFC 5849 2.1): a `POST` to `oauth.request.url`, to be signed
/// with the consumer's credentials alone (the signer given with it), asking for a request token
/// that comes back to `callback`.
///
/// Fails when `oauth.request.url` is missing or no URL.
pub(crate) fn request_token_request(
    configuration: &dyn Values,
    credentials: Credentials,
    callback: &str,
) -> Result<(PreparedRequest, Signer), RunError> {
    let request = token_endpoint(configuration, "oauth.request.url", "request token")?;
    let signer = Signer {
        credentials,
        extra: vec![("oauth_callback", callback.to_owned())],
    };
    Ok((request, signer))
}

/// The sign-in's last request (RFC 5849 2.3): a `POST` to `oauth.token.url`, to be signed with
/// the request token and its secret (`credentials`, the signer given with it), carrying the
/// `verifier` the callback brought.
///
/// Fails when `oauth.token.url` is missing or no URL.
pub(crate) fn access_token_request(
    configuration: &dyn Values,
    credentials: Credentials,
    verifier: &str,
) -> Result<(PreparedRequest, Signer), RunError> {
    let request = token_endpoint(configuration, "oauth.token.url", "access token")?;
    let signer = Signer {
        credentials,
        extra: vec![("oauth_verifier", verifier.to_owned())],
    };
    Ok((request, signer))
}

/// An empty `POST` to the URL `key` holds, as a lifecycle request.
fn token_endpoint(
    configuration: &dyn Values,
    key: &str,
    what: &str,
) -> Result<PreparedRequest, RunError> {
    let Some(address) = configuration.value(key).and_then(text_of) else {
        return Err(super::oauth2::missing(
            key,
            &format!("the OAuth 1.0a {what} endpoint"),
        ));
    };
    let url = url::Url::parse(&address).map_err(|error| RunErrorKind::InvalidUrl {
        url: address.clone(),
        message: error.to_string(),
    })?;
    Ok(PreparedRequest {
        resource: std::sync::Arc::from(format!("oauth1 {what}")),
        method: std::sync::Arc::from("POST"),
        url,
        headers: Vec::new(),
        body: RequestBody::Empty,
        lifecycle: true,
        secrets: Vec::new(),
    })
}

/// The token and its secret of a token endpoint's answer (`oauth_token=...&oauth_token_secret=...`,
/// form-encoded).
///
/// Fails, naming `what`, when the answer lacks either.
pub(crate) fn token_answer(body: &str, what: &str) -> Result<(String, String), RunError> {
    let mut token = None;
    let mut secret = None;
    for (name, value) in url::form_urlencoded::parse(body.trim().as_bytes()) {
        match name.as_ref() {
            "oauth_token" => token = Some(value.into_owned()),
            "oauth_token_secret" => secret = Some(value.into_owned()),
            _ => {}
        }
    }
    match (token, secret) {
        (Some(token), Some(secret)) if !token.is_empty() => Ok((token, secret)),
        _ => Err(RunErrorKind::Authorize {
            message: format!(
                "the {what} answer lacks `oauth_token` and `oauth_token_secret` (RFC 5849 2.1)"
            ),
        }
        .into()),
    }
}

/// The address a person opens to approve the request token `token`: `oauth.authorization.url`
/// with its `{key}` placeholders filled from the configuration and `oauth_token` added.
///
/// Fails when `oauth.authorization.url` is missing or no URL.
pub(crate) fn authorization_url(
    configuration: &dyn Values,
    token: &str,
) -> Result<String, RunError> {
    let Some(template) = configuration
        .value("oauth.authorization.url")
        .and_then(text_of)
    else {
        return Err(super::oauth2::missing(
            "oauth.authorization.url",
            "where a person approves the OAuth 1.0a request token",
        ));
    };
    let mut filled = String::with_capacity(template.len());
    let mut rest = template.as_str();
    while let Some(start) = rest.find('{') {
        let Some(length) = rest[start..].find('}') else {
            break;
        };
        let key = &rest[start + 1..start + length];
        filled.push_str(&rest[..start]);
        match configuration.value(key).and_then(text_of) {
            Some(value) => filled.push_str(&encode(&value)),
            None => filled.push_str(&rest[start..=start + length]),
        }
        rest = &rest[start + length + 1..];
    }
    filled.push_str(rest);
    let mut url = url::Url::parse(&filled).map_err(|error| RunErrorKind::InvalidUrl {
        url: filled.clone(),
        message: error.to_string(),
    })?;
    url.query_pairs_mut().append_pair("oauth_token", token);
    Ok(url.into())
}

/// A fresh nonce: 32 hexadecimal digits from the operating system's random source.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    bytes
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn credentials(placement: Placement) -> Credentials {
        // The example of Twitter's "Creating a signature" documentation.
        Credentials {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog".into(),
            consumer_secret: "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw".into(),
            token: "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb".into(),
            token_secret: "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE".into(),
            placement,
            consumer_key_secret: false,
        }
    }

    fn request() -> PreparedRequest {
        PreparedRequest {
            resource: Arc::from("update"),
            method: Arc::from("POST"),
            url: url::Url::parse(
                "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
            )
            .unwrap(),
            headers: Vec::new(),
            body: RequestBody::Form(vec![(
                "status".into(),
                "Hello Ladies + Gentlemen, a signed OAuth request!".into(),
            )]),
            lifecycle: false,
            secrets: Vec::new(),
        }
    }

    const NONCE: &str = "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg";

    #[test]
    fn the_published_example_signs_to_its_published_signature() {
        let mut request = request();
        sign_with(
            &mut request,
            &credentials(Placement::Header),
            NONCE,
            1_318_622_958,
            Vec::new(),
        );
        let (name, value) = &request.headers[0];
        assert_eq!(name, "Authorization");
        assert!(
            value.contains("oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\""),
            "{value}"
        );
        assert!(value.starts_with("OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", "));
        assert_eq!(request.url.query(), Some("include_entities=true"));
    }

    /// Shown, the header keeps what is no secret and masks the token and the signature; the
    /// consumer key too when the connector keeps it secret.
    #[test]
    fn the_shown_header_masks_the_token_and_the_signature_only() {
        let shown = |consumer_key_secret: bool| {
            let mut request = request();
            let credentials = Credentials {
                consumer_key_secret,
                ..credentials(Placement::Header)
            };
            sign_with(&mut request, &credentials, NONCE, 1_318_622_958, Vec::new());
            request.display(&crate::redact::Redactor::default())
        };
        assert!(
            shown(false).contains(&format!(
                "Authorization: OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", oauth_nonce=\"{NONCE}\", oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1318622958\", oauth_token=\"****\", oauth_version=\"1.0\", oauth_signature=\"****\"\n"
            )),
            "{}",
            shown(false)
        );
        assert!(
            shown(true).contains("OAuth oauth_consumer_key=\"****\", "),
            "{}",
            shown(true)
        );
    }

    #[test]
    fn each_signing_has_a_nonce_of_its_own() {
        let signer = Signer::new(credentials(Placement::Query));
        let nonces: Vec<String> = (0..2)
            .map(|_| {
                let request = signer.sign(&request(), 1_318_622_958);
                request
                    .url
                    .query_pairs()
                    .find(|(name, _)| name == "oauth_nonce")
                    .map(|(_, value)| value.into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(nonces[0].len(), 32);
        assert_ne!(nonces[0], nonces[1]);
    }

    #[test]
    fn query_placement_puts_the_protocol_parameters_in_the_query() {
        let mut request = request();
        sign_with(
            &mut request,
            &credentials(Placement::Query),
            NONCE,
            1_318_622_958,
            Vec::new(),
        );
        assert!(request.headers.is_empty());
        let pairs: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        assert_eq!(pairs[0], ("include_entities".into(), "true".into()));
        assert!(pairs.contains(&(
            "oauth_signature".into(),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk=".into()
        )));
        assert!(pairs.contains(&("oauth_version".into(), "1.0".into())));
        assert!(
            request
                .secrets
                .contains(&SecretSlot::Query("oauth_token".into()))
        );
    }

    #[test]
    fn the_authorization_url_fills_its_placeholders_and_adds_the_request_token() {
        let configuration: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
            serde_json::json!({
                "oauth.authorization.url": "https://v.example/authorize?scope={scope}&name={missing}",
                "scope": "read,write",
            }),
        )
        .unwrap();
        assert_eq!(
            authorization_url(&configuration, "rt 1").unwrap(),
            "https://v.example/authorize?scope=read%2Cwrite&name={missing}&oauth_token=rt+1"
        );
    }

    #[test]
    fn a_token_answer_needs_the_token_and_its_secret() {
        assert_eq!(
            token_answer(
                "oauth_token=a%20b&oauth_token_secret=s&x=1\n",
                "access token"
            )
            .unwrap(),
            ("a b".to_owned(), "s".to_owned())
        );
        let error = token_answer("{\"error\":\"denied\"}", "request token").unwrap_err();
        assert!(
            error.to_string().contains("request token answer lacks"),
            "{error}"
        );
    }

    #[test]
    fn a_nonce_is_32_hexadecimal_digits_and_new_each_time() {
        let (one, two) = (nonce(), nonce());
        assert_eq!(one.len(), 32);
        assert!(one.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(one, two);
    }
}
