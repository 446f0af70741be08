//! Values as requests carry them and responses give them: the text of a configuration or JSON
//! value, and a lifetime in seconds. Both sides (request building, extraction, authentication)
//! import these; this module imports nothing of the crate.

use std::borrow::Cow;

use serde_json::Value;

/// True when [`text_of`] gives `Some`, without building the text.
pub(crate) fn has_text(value: &Value) -> bool {
    !value.is_null() && value.as_str() != Some("")
}

/// A configuration or JSON value as request text: strings as they are, numbers and booleans
/// printed, objects as JSON; `None` for null and the empty string.
pub(crate) fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// [`text_of`], the empty string for null.
pub(crate) fn as_text(value: &Value) -> String {
    text_of(value).unwrap_or_default()
}

/// [`as_text`] without copying a string: for a text that is only read.
pub(crate) fn text_view(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        other => Cow::Owned(as_text(other)),
    }
}

/// [`as_text`] of a value that is no longer needed: a string is moved, not copied.
pub(crate) fn into_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => as_text(&other),
    }
}

/// Parses an `expires_in` the way vendors send it: `3600`, `"3600"` or `3600.0`, in seconds.
pub fn parse_seconds(value: &Value) -> Option<u64> {
    let number = match value {
        Value::Number(number) => match number.as_u64() {
            Some(whole) => return Some(whole),
            None => number.as_f64()?,
        },
        Value::String(text) => match text.trim().parse::<u64>() {
            Ok(whole) => return Some(whole),
            Err(_) => text.trim().parse::<f64>().ok()?,
        },
        _ => return None,
    };
    (number.is_finite() && number >= 0.0).then(|| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "finite, non-negative and rounded: a lifetime in seconds"
        )]
        let seconds = number.round() as u64;
        seconds
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expires_in_accepts_numbers_strings_and_floats() {
        assert_eq!(parse_seconds(&json!(3600)), Some(3600));
        assert_eq!(parse_seconds(&json!("3600")), Some(3600));
        assert_eq!(parse_seconds(&json!(3600.0)), Some(3600));
        assert_eq!(parse_seconds(&json!("soon")), None);
        assert_eq!(parse_seconds(&json!(-1)), None);
    }

    #[test]
    fn text_of_skips_null_and_empty() {
        assert_eq!(text_of(&json!(null)), None);
        assert_eq!(text_of(&json!("")), None);
        assert_eq!(text_of(&json!(7)), Some("7".to_owned()));
        assert_eq!(into_text(json!({"a": 1})), r#"{"a":1}"#);
    }
}
