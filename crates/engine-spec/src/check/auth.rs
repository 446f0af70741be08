//! E0204: an authentication type that lacks what it needs.
//!
//! Only clear cases are reported: the built-in OAuth2 client (`oauth2` and its aliases) needs a
//! token URL, unless resources replace both the token exchange and the refresh. The URL counts as
//! provided when `oauth.token.url` is declared with a default or as `required` (then every
//! instance must give one).

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::ResourceType;
use crate::model::AuthKind;
use crate::pointer::JsonPointer;
use crate::source::Location;

const TOKEN_URL: &str = "oauth.token.url";

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    if connector.authentication().kind() != AuthKind::Oauth2 {
        return;
    }
    let overridden = [
        ResourceType::OauthOnTokenExchange,
        ResourceType::OauthOnTokenRefresh,
    ]
    .iter()
    .all(|kind| connector.lifecycle(*kind).is_some());
    if overridden {
        return;
    }
    let kind = input
        .raw
        .authentication
        .as_ref()
        .and_then(|authentication| authentication.kind)
        .map_or("oauth2", |kind| kind.as_str());
    match connector.property(TOKEN_URL) {
        None => diagnostics.push(
            Diagnostic::new(
                Code::AuthIncomplete,
                Location::new(
                    input.file,
                    JsonPointer::root().field("authentication").field("type"),
                ),
                format!("authentication `{kind}` needs `{TOKEN_URL}`, which is not declared"),
            )
            .with_label("the built-in OAuth2 client sends its token requests there")
            .with_help(format!(
                "declare it in `configuration`: `{{\"key\": \"{TOKEN_URL}\", \"type\": \
                 \"TEXTFIELD_1000\", \"defaultValue\": \"https://vendor.example/oauth/token\"}}`"
            )),
        ),
        Some(property) if property.default_value().is_none() && !property.required() => {
            diagnostics.push(
                Diagnostic::new(
                    Code::AuthIncomplete,
                    property.location().clone(),
                    format!(
                        "authentication `{kind}` needs `{TOKEN_URL}`, but it has no default and \
                         is not required"
                    ),
                )
                .with_label("an instance may leave it empty")
                .with_help(
                    "give it a `defaultValue` (the vendor's token endpoint), or `\"required\": \
                     true` so that every instance provides one",
                ),
            );
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::check::test_support::{diagnostics, with_code};
    use crate::diagnostic::Code;

    #[test]
    fn oauth2_without_token_url_is_incomplete() {
        let text = r#"{"authentication": {"type": "oauth2ClientCredentials"}, "resources": []}"#;
        let found = with_code(text, Code::AuthIncomplete);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location.pointer.as_str(), "/authentication/type");
        assert!(found[0].message.contains("oauth2ClientCredentials"));
    }

    #[test]
    fn token_url_needs_a_default_or_required() {
        let text = r#"{"authentication": {"type": "oauth2"}, "configuration": [{"key": "oauth.token.url"}]}"#;
        let found = with_code(text, Code::AuthIncomplete);
        assert_eq!(found[0].location.pointer.as_str(), "/configuration/0");
        for property in [
            r#"{"key": "oauth.token.url", "required": true}"#,
            r#"{"key": "oauth.token.url", "defaultValue": "https://x/token"}"#,
        ] {
            let text = format!(
                r#"{{"authentication": {{"type": "oauth2"}}, "configuration": [{property}]}}"#
            );
            assert!(diagnostics(&text).is_empty(), "{property}");
        }
    }

    #[test]
    fn custom_auth_and_overridden_oauth2_need_no_token_url() {
        assert!(diagnostics(r#"{"authentication": {"type": "custom"}}"#).is_empty());
        let text = r#"{"authentication": {"type": "oauth2"}, "resources": [
            {"type": "oauthOnTokenExchange", "vendorPath": "https://x/token"},
            {"type": "oauthOnTokenRefresh", "vendorPath": "https://x/token"}]}"#;
        assert!(diagnostics(text).is_empty(), "{:?}", diagnostics(text));
    }
}
