//! A vendor's response body: the bytes as received, read into JSON only when something looks
//! into it.
//!
//! Most answers of an API call go to the caller as they came: no `rootKey`, no output
//! parameter, no cursor in the body. Reading them into a [`Value`] and writing them out again
//! was a third of what the engine spent per request over a bare client. A [`Body`] keeps the
//! bytes and reads them once, on first use ([`Body::value`], or `Deref`), the way
//! [`Body::read`] says; [`Body::masked`] keeps the bytes for the caller only when no reading of
//! them can show a secret.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;

use crate::redact::Redactor;

/// A response body: the bytes received, the [`Value`] read from them on first use.
#[derive(Clone, Default)]
pub struct Body {
    /// The bytes as received; `None` for a body made as a value.
    raw: Option<Bytes>,
    /// True when the answer's content type is XML (read with `xml.rs`).
    xml: bool,
    value: OnceLock<Value>,
}

impl Body {
    /// The body of an answer whose `Content-Type` is `content_type`.
    pub fn received(raw: Bytes, content_type: Option<&str>) -> Self {
        Self {
            raw: Some(raw),
            xml: content_type.is_some_and(is_xml),
            value: OnceLock::new(),
        }
    }

    /// The body as JSON: parsed when it is JSON, an XML document as JSON (`xml.rs`) when the
    /// content type is XML (`text/xml`, `application/soap+xml`...; an HTML page stays text),
    /// else text, `null` when empty. Read on the first call.
    pub fn value(&self) -> &Value {
        self.value.get_or_init(|| match &self.raw {
            Some(raw) => Self::read(raw, self.xml),
            None => Value::Null,
        })
    }

    /// The body as JSON, owned ([`Body::value`]).
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(value) => value,
            None => self
                .raw
                .map_or(Value::Null, |raw| Self::read(&raw, self.xml)),
        }
    }

    /// The bytes as received, when this body is still what the vendor sent (not made as a value,
    /// nor replaced by a masked or unwrapped one) and they are a JSON document.
    pub fn json_bytes(&self) -> Option<&Bytes> {
        let raw = self
            .raw
            .as_ref()
            .filter(|raw| !raw.is_empty() && !self.xml)?;
        let is_json = match self.value.get() {
            // Bytes that are not JSON (nor XML) are read as a string.
            Some(value) if !value.is_string() => true,
            _ => serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok(),
        };
        is_json.then_some(raw)
    }

    /// This body with every secret `redactor` knows masked. Keeps the bytes received when no
    /// reading of them can hold a secret: valid UTF-8, no secret's form anywhere in them, and
    /// nothing a reading decodes (no `\` escape of JSON; an XML document is always read). Any
    /// string read from such bytes is a run of them, so it holds no secret either.
    pub(crate) fn masked(self, redactor: &Redactor) -> Self {
        if let Some(raw) = &self.raw
            && !self.xml
            && !raw.contains(&b'\\')
            && std::str::from_utf8(raw).is_ok_and(|text| !redactor.finds_secret(text))
        {
            return self;
        }
        Self::from(redact_json(self.into_value(), redactor))
    }

    /// Raw bytes read as [`Body::value`] says.
    fn read(raw: &[u8], xml: bool) -> Value {
        if raw.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(raw).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(raw);
            xml.then(|| crate::xml::to_json(&text))
                .flatten()
                .unwrap_or_else(|| Value::String(text.into_owned()))
        })
    }
}

/// True for an XML media type (`text/xml`, `application/xml`, `...+xml`), parameters ignored.
fn is_xml(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("text/xml")
        || essence.eq_ignore_ascii_case("application/xml")
        || essence
            .len()
            .checked_sub(4)
            .is_some_and(|at| essence.as_bytes()[at..].eq_ignore_ascii_case(b"+xml"))
}

/// `value` with known secrets masked in every string, in place: only a string that holds one is
/// rewritten.
pub(crate) fn redact_json(mut value: Value, redactor: &Redactor) -> Value {
    fn walk(value: &mut Value, redactor: &Redactor) {
        match value {
            Value::String(text) if redactor.finds_secret(text) => *text = redactor.redact(text),
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, redactor)),
            Value::Object(map) => map.values_mut().for_each(|item| walk(item, redactor)),
            _ => {}
        }
    }
    walk(&mut value, redactor);
    value
}

impl From<Value> for Body {
    fn from(value: Value) -> Self {
        Self {
            raw: None,
            xml: false,
            value: OnceLock::from(value),
        }
    }
}

impl std::ops::Deref for Body {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(formatter)
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(formatter)
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl PartialEq<Value> for Body {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl serde::Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const SECRET: &str = "tok-e1-secret";

    fn redactor() -> Redactor {
        let mut redactor = Redactor::default();
        redactor.learn(SECRET);
        redactor
    }

    fn received(text: &str, content_type: &str) -> Body {
        Body::received(Bytes::copy_from_slice(text.as_bytes()), Some(content_type))
    }

    #[test]
    fn json_without_a_secret_is_handed_on_as_it_came() {
        let text = "{ \"id\": \"c1\",\n  \"name\": \"Ada\" }";
        let body = received(text, "application/json").masked(&redactor());
        assert_eq!(body.json_bytes().map(|raw| &raw[..]), Some(text.as_bytes()));
        assert_eq!(body, json!({"id": "c1", "name": "Ada"}));
        // Read once, the bytes are still the answer.
        assert_eq!(body.json_bytes().map(|raw| &raw[..]), Some(text.as_bytes()));
    }

    #[test]
    fn a_secret_in_the_bytes_is_masked_and_the_bytes_are_dropped() {
        let body = received(&format!("{{\"token\":\"{SECRET}\"}}"), "application/json")
            .masked(&redactor());
        assert_eq!(body.json_bytes(), None);
        assert_eq!(body, json!({"token": "****"}));
    }

    #[test]
    fn a_secret_written_with_escapes_is_found() {
        // `\u0065` is `e`: the bytes do not hold the secret, the string read from them does.
        let escaped = SECRET.replace('e', "\\u0065");
        let body = received(&format!("{{\"token\":\"{escaped}\"}}"), "application/json")
            .masked(&redactor());
        assert_eq!(body.json_bytes(), None);
        assert_eq!(body, json!({"token": "****"}));
    }

    #[test]
    fn xml_is_always_read_and_never_handed_on_as_bytes() {
        let body = received(
            "<a><b>x&amp;y</b></a>",
            "application/soap+xml; charset=utf-8",
        )
        .masked(&redactor());
        assert_eq!(body.json_bytes(), None);
        assert_eq!(body.value()["a"]["b"], json!("x&y"));
    }

    #[test]
    fn text_is_a_string_and_empty_is_null() {
        let text = received("plain words", "text/plain").masked(&redactor());
        assert_eq!(text.json_bytes(), None);
        assert_eq!(text, json!("plain words"));
        let empty = received("", "application/json").masked(&redactor());
        assert_eq!(empty.json_bytes(), None);
        assert_eq!(empty, Value::Null);
        // A JSON string is JSON, read or not.
        let string = received("\"words\"", "application/json");
        assert!(string.json_bytes().is_some());
        assert_eq!(string, json!("words"));
        assert!(string.json_bytes().is_some());
    }

    #[test]
    fn a_body_made_as_a_value_has_no_bytes() {
        let body = Body::from(json!([1, 2])).masked(&redactor());
        assert_eq!(body.json_bytes(), None);
        assert_eq!(body.into_value(), json!([1, 2]));
        assert_eq!(Body::default(), Value::Null);
    }

    /// Strings of a few letters, the secret, its parts, quotes and backslashes (escaped when
    /// written as JSON).
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just(SECRET.to_owned()),
                Just("tok-e1".to_owned()),
                Just("-secret".to_owned()),
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("é".to_owned()),
                "[a-z0-9 -]{0,6}",
            ],
            0..5,
        )
        .prop_map(|parts| parts.concat())
    }

    /// JSON without `true` and `false`, so that every `e` of its text is inside a string.
    fn document() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i32>().prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whether a body keeps its bytes or not, the caller gets what reading the whole answer
        /// and masking every string gives: written plainly, and with every `e` escaped.
        #[test]
        fn masking_the_bytes_gives_what_masking_the_value_gives(value in document()) {
            let redactor = redactor();
            let plain = serde_json::to_string(&value).expect("JSON");
            let escaped = plain.replace('e', "\\u0065");
            for text in [plain, escaped] {
                let expected = redact_json(serde_json::from_str(&text).expect("JSON"), &redactor);
                let body = received(&text, "application/json").masked(&redactor);
                if let Some(raw) = body.json_bytes() {
                    prop_assert_eq!(&raw[..], text.as_bytes());
                    prop_assert!(!text.contains(SECRET));
                }
                prop_assert_eq!(body.into_value(), expected);
            }
        }
    }
}
