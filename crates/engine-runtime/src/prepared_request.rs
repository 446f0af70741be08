//! [`PreparedRequest`]: a request ready to send, and how it may be shown to a person
//! (`--dry-run`, `-v`, errors): masked by place where it carries a value made from a secret
//! ([`SecretSlot`]), and by text ([`Redactor`]) everywhere else.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::Value;

use crate::redact::{MASK, Redactor, is_secret_name};
use crate::value::text_of;

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON body.
    Json(Value),
    /// An `application/x-www-form-urlencoded` body.
    Form(Vec<(String, String)>),
    /// A `multipart/form-data` body.
    Multipart(Vec<Part>),
    /// A text body (a filled `bodyToken` template), sent as it is.
    Text(String),
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's (form field) name.
    pub name: String,
    /// What it carries.
    pub content: PartContent,
}

/// What a multipart [`Part`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartContent {
    /// A text field.
    Text(String),
    /// A file: its name (without directories) and its bytes.
    File {
        /// The file name sent in the part's `Content-Disposition`.
        file_name: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl RequestBody {
    /// The `Content-Type` the client sends with this body when the request has none: JSON and
    /// form bodies say what they are (a multipart body's, with its boundary, is always the
    /// client's). What `--dry-run` shows is what is sent.
    pub fn implied_content_type(&self) -> Option<&'static str> {
        match self {
            Self::Json(_) => Some("application/json"),
            Self::Form(_) => Some("application/x-www-form-urlencoded"),
            Self::Empty | Self::Multipart(_) | Self::Text(_) => None,
        }
    }
}

impl Part {
    /// One line for `--dry-run`: a file as its name and size (never its bytes), a text with
    /// secrets masked.
    pub(crate) fn describe(&self, redactor: &Redactor) -> String {
        let mut line = format!("- {}: ", self.name);
        match &self.content {
            PartContent::File { file_name, bytes } => {
                let _ = write!(line, "file `{file_name}`, {} bytes", bytes.len());
            }
            PartContent::Text(_) if is_secret_name(&self.name) => line.push_str(MASK),
            PartContent::Text(text) => line.push_str(&redactor.redact(text)),
        }
        line
    }
}

/// A request ready to send: every template rendered, every value in place.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// The resource's display name (shared with the resource: a request copies no text it
    /// does not change).
    pub resource: Arc<str>,
    /// HTTP method (shared with the resource, like [`PreparedRequest::resource`]).
    pub method: Arc<str>,
    /// The full URL with its query string.
    pub url: url::Url,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: RequestBody,
    /// A lifecycle request (a token request, `PROVISION AUTH VALIDATION`, `ON REFRESH`...): it
    /// carries credentials, so a redirect is never followed (see [`crate::HttpTransport`]).
    pub lifecycle: bool,
    /// The places that carry a value made from a secret, masked by place in
    /// [`PreparedRequest::display`] whatever the value's length or encoding.
    pub secrets: Vec<SecretSlot>,
}

/// A place in a request that carries a value made from a secret: a `PASSWORD` or credential
/// configuration key ([`engine_spec::Connector::is_secret_key`]) read by a parameter or a template, a literal
/// credential of the connector, the scheme's `Authorization`. It is shown as `****` whatever the
/// value looks like: what [`Redactor`] cannot find by its text (a secret of 3 characters, base64
/// of a short one, an encoding the engine did not make itself) is masked by where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSlot {
    /// The header `name` (compared case-insensitively), shown as `shown`: `****`, or
    /// `Bearer ****` when the word before the secret is the connector's own text. Both are
    /// borrowed for the usual names and words (`SecretSlot::header`): most requests carry one
    /// such slot, and it is made and dropped for each.
    Header {
        /// The header's name.
        name: Cow<'static, str>,
        /// What is shown as its value.
        shown: Cow<'static, str>,
    },
    /// The query parameter of this name.
    Query(String),
    /// The form field or multipart text part of this name.
    Form(String),
    /// The JSON body field at this dotted path (`credentials.secret`); the whole body when
    /// empty.
    BodyField(String),
    /// A value as placed in the URL's path (percent-encoded): the path segments it fills.
    Path(String),
    /// The text body as shown: the template filled with `****` for every secret token.
    TextBody(String),
}

impl SecretSlot {
    /// The slot of a header whose value is made from a secret: `Bearer ****` when `literal`
    /// (the connector's own text before the secret, as in `Bearer ${configuration.token}`)
    /// starts with the same short word and a space as `value`, else `****`.
    pub(crate) fn header(name: &str, value: &str, literal: &str) -> Self {
        // The word is at most 10 bytes: the space is looked for in the first 11 only (a value
        // is a token of tens or hundreds of bytes, the search's set-up more than the word).
        let space = value
            .bytes()
            .take(WORD_LIMIT + 1)
            .position(|byte| byte == b' ');
        let shown = match space.map(|space| &value[..space]) {
            Some(word)
                if !word.is_empty()
                    && word.bytes().all(|byte| byte.is_ascii_alphanumeric())
                    && literal
                        .strip_prefix(word)
                        .is_some_and(|rest| rest.starts_with(' ')) =>
            {
                if let Some(shown) = SHOWN_WORDS
                    .iter()
                    .find(|shown| shown.strip_suffix(SHOWN_MASK) == Some(word))
                {
                    Cow::Borrowed(*shown)
                } else {
                    let mut shown = String::with_capacity(word.len() + SHOWN_MASK.len());
                    shown.push_str(word);
                    shown.push_str(SHOWN_MASK);
                    Cow::Owned(shown)
                }
            }
            _ => Cow::Borrowed(crate::redact::MASK),
        };
        let name = HEADER_NAMES
            .iter()
            .find(|known| **known == name)
            .map_or_else(
                || Cow::Owned(name.to_owned()),
                |known| Cow::Borrowed(*known),
            );
        Self::Header { name, shown }
    }
}

/// The longest word before a secret a [`SecretSlot::Header`] shows (`Bearer`, `Digest`).
const WORD_LIMIT: usize = 10;

/// What follows the kept word of a [`SecretSlot::Header`]: a space and the mask.
const SHOWN_MASK: &str = " ****";

/// The [`SecretSlot::Header`] texts shown for the schemes' usual words, not made per request.
const SHOWN_WORDS: [&str; 6] = [
    "Bearer ****",
    "Basic ****",
    "Token ****",
    "OAuth ****",
    "Bot ****",
    "Digest ****",
];

/// The names of the headers that usually carry a secret, as written (a [`SecretSlot::Header`]
/// of another name or spelling keeps its own copy).
const HEADER_NAMES: [&str; 4] = ["Authorization", "authorization", "X-API-Key", "x-api-key"];

impl PreparedRequest {
    /// A human-readable rendering with every secret masked: what `--dry-run` prints. Values in
    /// a [`SecretSlot`] are `****` by place; headers, query parameters, form fields and JSON
    /// fields named like secrets are `****` by name; every value [`Redactor`] knows is masked
    /// wherever else it shows.
    pub fn display(&self, redactor: &Redactor) -> String {
        let mut text = format!("{} {}\n", self.method, self.display_url(redactor));
        for (name, value) in &self.headers {
            let shown = self
                .secrets
                .iter()
                .find_map(|slot| match slot {
                    SecretSlot::Header { name: slot, shown } if slot.eq_ignore_ascii_case(name) => {
                        Some(shown.clone().into_owned())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| redactor.header(name, value));
            let _ = writeln!(text, "{name}: {shown}");
        }
        if let Some(implied) = self.body.implied_content_type()
            && !self
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            let _ = writeln!(text, "Content-Type: {implied}");
        }
        let form_secret = |name: &str| {
            crate::redact::is_secret_name(name)
                || self
                    .secrets
                    .iter()
                    .any(|slot| matches!(slot, SecretSlot::Form(slot) if slot == name))
        };
        match &self.body {
            RequestBody::Empty => {}
            RequestBody::Json(body) => {
                let mut body = body.clone();
                mask_json(&mut body);
                for slot in &self.secrets {
                    if let SecretSlot::BodyField(path) = slot {
                        mask_dotted(&mut body, path);
                    }
                }
                let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
                let _ = write!(text, "\n{}\n", redactor.redact(&pretty));
            }
            RequestBody::Form(fields) => {
                let encoded: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| {
                        let value = if form_secret(name) {
                            crate::redact::MASK.to_owned()
                        } else {
                            redactor.redact(&engine_spec::template::percent_encode(value))
                        };
                        format!("{}={value}", engine_spec::template::percent_encode(name))
                    })
                    .collect();
                let _ = write!(text, "\n{}\n", encoded.join("&"));
            }
            RequestBody::Multipart(parts) => {
                text.push_str("\nmultipart/form-data:\n");
                for part in parts {
                    if matches!(part.content, PartContent::Text(_)) && form_secret(&part.name) {
                        let _ = writeln!(text, "- {}: {}", part.name, crate::redact::MASK);
                    } else {
                        let _ = writeln!(text, "{}", part.describe(redactor));
                    }
                }
            }
            RequestBody::Text(body) => {
                let shown = self
                    .secrets
                    .iter()
                    .find_map(|slot| match slot {
                        SecretSlot::TextBody(shown) => Some(shown),
                        _ => None,
                    })
                    .unwrap_or(body);
                let _ = write!(text, "\n{}\n", redactor.redact(shown));
            }
        }
        text
    }

    /// The values this request carries in a [`SecretSlot`], as sent (a header's whole value, a
    /// query or form value, a JSON field's text): a run learns them as secrets too, so that a
    /// vendor echoing one back (the base64 of a short password) is masked by text as well.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values = Vec::new();
        self.for_each_secret_value(|value| values.push(value.to_owned()));
        values
    }

    /// Calls `f` with each of [`PreparedRequest::secret_values`], without copying them: a run
    /// learns them on every request, and most are known already.
    pub(crate) fn for_each_secret_value(&self, mut f: impl FnMut(&str)) {
        for slot in &self.secrets {
            match slot {
                // Without the scheme word that stays shown (`Bearer `).
                SecretSlot::Header { name, shown } => {
                    let kept = shown.strip_suffix(crate::redact::MASK).unwrap_or_default();
                    self.headers
                        .iter()
                        .filter(|(header, _)| header.eq_ignore_ascii_case(name))
                        .for_each(|(_, value)| f(value.strip_prefix(kept).unwrap_or(value)));
                }
                SecretSlot::Query(name) => self
                    .url
                    .query_pairs()
                    .filter(|(query, _)| query == name)
                    .for_each(|(_, value)| f(&value)),
                SecretSlot::Form(name) => match &self.body {
                    RequestBody::Form(fields) => fields
                        .iter()
                        .filter(|(field, _)| field == name)
                        .for_each(|(_, value)| f(value)),
                    RequestBody::Multipart(parts) => parts
                        .iter()
                        .filter(|part| part.name == *name)
                        .for_each(|part| match &part.content {
                            PartContent::Text(text) => f(text),
                            PartContent::File { .. } => {}
                        }),
                    _ => {}
                },
                SecretSlot::BodyField(path) => {
                    if let RequestBody::Json(body) = &self.body {
                        let found = path
                            .split('.')
                            .filter(|segment| !segment.is_empty())
                            .try_fold(body, |node, segment| node.get(segment));
                        if let Some(value) = found.and_then(text_of) {
                            f(&value);
                        }
                    }
                }
                SecretSlot::Path(_) | SecretSlot::TextBody(_) => {}
            }
        }
    }

    /// The URL as it may be shown (`--dry-run`, `-v`, errors): the password of its userinfo,
    /// query values in a [`SecretSlot`] or named like secrets, path segments filled from a
    /// secret and every value `redactor` knows masked.
    pub fn display_url(&self, redactor: &Redactor) -> String {
        let mut url = self.url.clone();
        let paths: Vec<&str> = self
            .secrets
            .iter()
            .filter_map(|slot| match slot {
                SecretSlot::Path(value) => Some(value.as_str()),
                _ => None,
            })
            .collect();
        if !paths.is_empty() {
            let path = url.path();
            let masked: Vec<&str> = path
                .split('/')
                .map(|segment| {
                    if paths.contains(&segment) {
                        "****"
                    } else {
                        segment
                    }
                })
                .collect();
            let mut masked = masked.join("/");
            // A value that fills part of a segment (`/users/{id}.json`).
            for value in paths {
                if !value.is_empty() && masked.contains(value) {
                    masked = masked.replace(value, crate::redact::MASK);
                }
            }
            url.set_path(&masked);
        }
        if let Some(query) = url.query() {
            // Pair by pair as written, so that the URL shown is the URL sent.
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| {
                    let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
                    let decoded = url::form_urlencoded::parse(name.as_bytes())
                        .next()
                        .map(|(name, _)| name.into_owned())
                        .unwrap_or_default();
                    let secret = (crate::redact::is_secret_name(&decoded)
                        && !NAMED_LIKE_SECRETS.contains(&decoded.as_str()))
                        || self.secrets.iter().any(
                            |slot| matches!(slot, SecretSlot::Query(slot) if *slot == decoded),
                        );
                    if secret {
                        format!("{name}={}", crate::redact::MASK)
                    } else {
                        pair.to_owned()
                    }
                })
                .collect();
            url.set_query(Some(&masked.join("&")));
        }
        if url.password().is_some() {
            let _ = url.set_password(Some(crate::redact::MASK));
        }
        redactor
            .redact(url.as_str())
            .replace("%2A%2A%2A%2A", crate::redact::MASK)
    }
}

/// Query parameters named like secrets that are none: OAuth 1.0a's `oauth_signature_method`
/// (`HMAC-SHA1`, RFC 5849 3.1).
const NAMED_LIKE_SECRETS: &[&str] = &["oauth_signature_method"];

/// Masks the field at the dotted `path` of a JSON body (the whole body for an empty path).
fn mask_dotted(body: &mut Value, path: &str) {
    let mask = || Value::String(crate::redact::MASK.to_owned());
    if path.is_empty() {
        *body = mask();
        return;
    }
    let mut node = body;
    for segment in path.split('.') {
        match node.get_mut(segment) {
            Some(next) => node = next,
            None => return,
        }
    }
    *node = mask();
}

fn mask_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if crate::redact::is_secret_name(key) && (value.is_string() || value.is_number()) {
                    *value = Value::String(crate::redact::MASK.to_owned());
                } else {
                    mask_json(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_made_from_secrets_are_masked_by_place_whatever_their_form() {
        let mut redactor = Redactor::default();
        redactor.learn("known-secret-1");
        let request = PreparedRequest {
            resource: "r".into(),
            method: "POST".into(),
            url: url::Url::parse("https://api.example/t/k%2F9/x?check=7%22%5C&q=known-secret-1")
                .unwrap(),
            headers: vec![
                ("X-Account".into(), "YWRhOjciXA==".into()),
                ("X-Ticket".into(), "Token abc".into()),
                ("Accept".into(), "application/json".into()),
            ],
            body: RequestBody::Json(json!({"login": {"phrase": "pa\"ss", "user": "ada"}})),
            lifecycle: false,
            secrets: vec![
                SecretSlot::header("X-Account", "YWRhOjciXA==", "{{base64 x}}"),
                SecretSlot::header("X-Ticket", "Token abc", "Token ${configuration.t}"),
                SecretSlot::Query("check".into()),
                SecretSlot::Path("k%2F9".into()),
                SecretSlot::BodyField("login.phrase".into()),
            ],
        };
        assert_eq!(
            request.display(&redactor),
            "POST https://api.example/t/****/x?check=****&q=****\n\
             X-Account: ****\n\
             X-Ticket: Token ****\n\
             Accept: application/json\n\
             Content-Type: application/json\n\
             \n{\n  \"login\": {\n    \"phrase\": \"****\",\n    \"user\": \"ada\"\n  }\n}\n"
        );
        // What a run learns as secrets: the values as sent, without a kept scheme word.
        assert_eq!(
            request.secret_values(),
            ["YWRhOjciXA==", "abc", "7\"\\", "pa\"ss"]
        );
        // A word other than the usual schemes' is kept too, and any header name.
        assert_eq!(
            SecretSlot::header("X-Okta", "SSWS 00abc", "SSWS ${configuration.k}"),
            SecretSlot::Header {
                name: "X-Okta".into(),
                shown: "SSWS ****".into()
            }
        );
        // A word the secret itself starts with is not kept.
        assert_eq!(
            SecretSlot::header("X-Key", "app key", "${configuration.k}"),
            SecretSlot::Header {
                name: "X-Key".into(),
                shown: "****".into()
            }
        );
        let form = PreparedRequest {
            body: RequestBody::Form(vec![
                ("appcode".into(), "app key~42 x".into()),
                ("note".into(), "hi".into()),
            ]),
            secrets: vec![SecretSlot::Form("appcode".into())],
            headers: Vec::new(),
            url: url::Url::parse("https://api.example/").unwrap(),
            ..request
        };
        assert_eq!(
            form.display(&redactor),
            "POST https://api.example/\nContent-Type: application/x-www-form-urlencoded\n\nappcode=****&note=hi\n"
        );
    }
}
