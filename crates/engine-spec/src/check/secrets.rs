//! Secrets written in clear in the connector file, which is shared and committed:
//! - E0401: a literal `value` parameter that looks like a credential;
//! - E0402: a `PASSWORD` property with a default value.

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::ConfigType;
use crate::model::Parameter;
use crate::source::Location;

/// Authorization schemes whose credentials follow a space.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest"];

/// Literal values that are never secrets even under a secret-sounding name: OAuth keywords,
/// CSRF `fetch` requests.
const PUBLIC_WORDS: &[&str] = &[
    "bearer",
    "basic",
    "fetch",
    "none",
    "null",
    "true",
    "false",
    "yes",
    "no",
    "access_token",
    "refresh_token",
    "id_token",
    "client_credentials",
    "authorization_code",
    "password",
    "jwt",
];

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    for parameter in input.connector.all_parameters() {
        if let Some(diagnostic) = secret_in_value(input, parameter) {
            diagnostics.push(diagnostic);
        }
    }
    for property in input.connector.configuration() {
        if property.kind() == ConfigType::Password && property.default_value().is_some() {
            diagnostics.push(
                Diagnostic::new(
                    Code::PasswordDefault,
                    Location::new(
                        input.file,
                        property.location().pointer.field("defaultValue"),
                    ),
                    format!(
                        "`PASSWORD` property `{}` has a default value",
                        property.key()
                    ),
                )
                .with_label("a secret written in the connector file")
                .with_help(
                    "remove `defaultValue`: each instance provides its own secret in its \
                     configuration",
                ),
            );
        }
    }
}

/// The warning for a literal request `value` parameter that looks like a credential (the model
/// decided it: [`Parameter::is_literal_credential`]).
fn secret_in_value(input: &Input<'_>, parameter: &Parameter) -> Option<Diagnostic> {
    if !parameter.is_literal_credential() {
        return None;
    }
    let value = parameter.name();
    let vendor_name = parameter.vendor_name();
    let (scheme, secret_start) = literal_credential(value, vendor_name)?;
    let key = suggested_key(vendor_name, scheme.is_some());
    let reference = match scheme {
        Some(scheme) => format!("{scheme} ${{configuration.{key}}}"),
        None => format!("${{configuration.{key}}}"),
    };
    Some(
        Diagnostic::new(
            Code::SecretInValue,
            Location::new(input.file, parameter.location().pointer.field("name"))
                .narrow(secret_start, value.len()),
            format!("the value of `{vendor_name}` looks like a credential written in clear"),
        )
        .with_label("a literal credential")
        .with_help(format!(
            "store it in a `PASSWORD` configuration property (`{{\"key\": \"{key}\", \"type\": \
             \"PASSWORD\"}}`) and write `{reference}` here"
        )),
    )
}

/// Whether a literal `value` sent as `vendor_name` looks like a credential: `Bearer <x>`,
/// `Basic <x>`, or a literal under a credential name (`client_secret`, `X-API-Key`, `key`) that
/// is not an obvious public value (a keyword, a MIME type, a URN, a number). A template (`${`)
/// is never one. Returns the scheme, if any, and where the secret starts in `value`.
pub(crate) fn literal_credential<'a>(
    value: &'a str,
    vendor_name: &str,
) -> Option<(Option<&'a str>, usize)> {
    if value.contains("${") {
        return None;
    }
    match value.split_once(' ') {
        Some((scheme, rest))
            if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
                && !rest.trim().is_empty() =>
        {
            Some((Some(scheme), value.len() - rest.trim_start().len()))
        }
        _ if is_credential_name(vendor_name) && !is_public_value(value) => Some((None, 0)),
        _ => None,
    }
}

/// Credential names: [`crate::is_secret_name`], and names ending in `key` (`key`, `X-Key`,
/// `appkey`, `Subscription-Key`).
fn is_credential_name(name: &str) -> bool {
    crate::model::is_secret_name(name) || normalise(name).ends_with("key")
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// True for values that are obviously not secrets: MIME types, booleans, numbers, keywords and
/// very short words.
fn is_public_value(value: &str) -> bool {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let is_mime = value.split_once('/').is_some_and(|(kind, subtype)| {
        !kind.is_empty()
            && kind.chars().all(|c| c.is_ascii_alphabetic())
            && !subtype.is_empty()
            && !subtype.contains('/')
    });
    let is_urn = lower.starts_with("urn:");
    let is_word = value.chars().all(|c| c.is_ascii_alphabetic())
        && value.chars().any(|c| c.is_ascii_lowercase())
        && value.chars().skip(1).any(|c| c.is_ascii_uppercase());
    value.chars().count() < 4
        || is_mime
        || is_urn
        || is_word
        || value.chars().all(|c| c.is_ascii_digit())
        || PUBLIC_WORDS.contains(&lower.as_str())
}

/// A configuration key to suggest: `X-API-Key` -> `api.key`, `client_secret` -> `client.secret`;
/// `api.token` for `Authorization`.
fn suggested_key(vendor_name: &str, has_scheme: bool) -> String {
    if has_scheme || normalise(vendor_name).ends_with("authorization") {
        return "api.token".to_owned();
    }
    let lower = vendor_name.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    let words = match words.as_slice() {
        ["x", rest @ ..] if !rest.is_empty() => rest,
        words => words,
    };
    if words.is_empty() {
        "api.secret".to_owned()
    } else {
        words.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::test_support::with_code;

    fn value_parameter(value: &str, vendor_name: &str) -> String {
        format!(
            r#"{{"parameters": [{{"name": "{value}", "type": "value", "vendorName": "{vendor_name}", "vendorType": "header"}}]}}"#
        )
    }

    #[test]
    fn literal_bearer_tokens_are_secrets() {
        let found = with_code(
            &value_parameter("Bearer abc123def456", "X-Anything"),
            Code::SecretInValue,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location.inner, Some((7, 19)));
        assert!(
            found[0]
                .help
                .as_deref()
                .unwrap()
                .contains("`Bearer ${configuration.api.token}`")
        );
    }

    #[test]
    fn literals_under_credential_names_are_secrets() {
        for (vendor_name, value) in [
            ("X-API-Key", "k3y-0f-the-kingdom"),
            ("api_key", "0123abcd"),
            ("client_secret", "s3cr3t-value"),
            ("Authorization", "abcdefgh"),
            ("password", "hunter22"),
        ] {
            let found = with_code(&value_parameter(value, vendor_name), Code::SecretInValue);
            assert_eq!(found.len(), 1, "{vendor_name}");
        }
    }

    #[test]
    fn templates_and_public_values_are_not_secrets() {
        for (vendor_name, value) in [
            ("Authorization", "Bearer ${configuration.oauth.user.token}"),
            (
                "Authorization",
                "Basic {{base64 (concat configuration.username \\\":\\\" configuration.password)}}",
            ),
            ("Content-Type", "application/json"),
            ("Accept", "application/vnd.api+json"),
            ("X-CSRF-Token", "Fetch"),
            ("token_type_hint", "refresh_token"),
            ("grant_type", "client_credentials"),
            ("format", "json"),
        ] {
            let found = with_code(&value_parameter(value, vendor_name), Code::SecretInValue);
            assert!(found.is_empty(), "{vendor_name}: {found:?}");
        }
    }

    #[test]
    fn suggested_keys_follow_the_vendor_name() {
        assert_eq!(suggested_key("X-API-Key", false), "api.key");
        assert_eq!(suggested_key("client_secret", false), "client.secret");
        assert_eq!(suggested_key("Authorization", false), "api.token");
    }

    #[test]
    fn password_defaults_are_secrets() {
        let text = r#"{"configuration": [
            {"key": "password", "type": "PASSWORD", "defaultValue": ""},
            {"key": "api.secret", "type": "PASSWORD", "defaultValue": "s3cret"},
            {"key": "api.user", "type": "TEXTFIELD_32", "defaultValue": "me"}]}"#;
        let found = with_code(text, Code::PasswordDefault);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].location.pointer.as_str(),
            "/configuration/1/defaultValue"
        );
    }
}
