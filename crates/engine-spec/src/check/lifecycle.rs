//! The token lifecycle of custom authentication: who saves the token, and who refreshes it.
//!
//! The engine knows a token's age from `authentication.time`, which only `PROVISION AUTH
//! VALIDATION` and `ON REFRESH` set, and `ON PROVISION` when it provisions alone (a custom
//! connector without `PROVISION AUTH VALIDATION`; see
//! docs/connector-format.md#the-token-lifecycle):
//! - E0201: `expires_in` is saved, but no resource could refresh the token when it expires;
//! - E0203: session management `fixed` without `session.timeout`;
//! - W0505: a token is saved only by `ON PROVISION`, so its age is never known and it is never
//!   refreshed.

use std::collections::BTreeSet;

use crate::check::Input;
use crate::diagnostic::{Code, Diagnostic};
use crate::kinds::{ResourceType, SessionManagement};
use crate::model::{AuthKind, Connector, Parameter, Resource};
use crate::source::Location;

/// Resource types that obtain or refresh a token and set `authentication.time` (or, for the
/// OAuth2 overrides, `oauth.user.refresh_time`).
const TOKEN_SETTERS: &[ResourceType] = &[
    ResourceType::ProvisionAuthValidation,
    ResourceType::OnRefresh,
    ResourceType::OauthOnTokenExchange,
    ResourceType::OauthOnTokenRefresh,
];

/// Resource types the engine runs again when a token expires.
const REFRESHERS: &[ResourceType] = &[
    ResourceType::ProvisionAuthValidation,
    ResourceType::OnRefresh,
    ResourceType::OauthOnTokenRefresh,
];

pub(super) fn check(input: &Input<'_>, diagnostics: &mut Vec<Diagnostic>) {
    let connector = input.connector;
    let session = connector.session();
    if session.management() == SessionManagement::Fixed && session.timeout().is_none() {
        diagnostics.push(
            Diagnostic::new(
                Code::SessionTimeoutMissing,
                Location::new(
                    input.file,
                    crate::JsonPointer::root()
                        .field("session")
                        .field("management"),
                ),
                "session management `fixed` needs `session.timeout`",
            )
            .with_label("refreshes every `timeout` seconds")
            .with_help(
                "add `\"timeout\": SECONDS` to `session`, or use `\"management\": \"auto\"` to \
                 follow the vendor's `expires_in`",
            ),
        );
    }
    no_refresh(input, connector, diagnostics);
    token_on_provision(input, connector, diagnostics);
}

/// E0201: `expires_in` is saved but nothing can refresh. OAuth2 refreshes built in, and session
/// management `none` never refreshes on purpose.
fn no_refresh(input: &Input<'_>, connector: &Connector, diagnostics: &mut Vec<Diagnostic>) {
    if connector.authentication().kind() == AuthKind::Oauth2
        || connector.session().management() == SessionManagement::None
    {
        return;
    }
    let Some(saver) = connector
        .all_parameters()
        .find(|parameter| parameter.saves_to_configuration() && parameter.name() == "expires_in")
    else {
        return;
    };
    let alone = provisions_alone(connector);
    if connector.resources().iter().any(|resource| {
        REFRESHERS.contains(&resource.kind())
            || (alone && resource.kind() == ResourceType::OnProvision)
    }) {
        return;
    }
    diagnostics.push(
        Diagnostic::new(
            Code::NoRefresh,
            name_of(input, saver),
            "`expires_in` is saved but no resource refreshes the token",
        )
        .with_label("the token expires after `expires_in` seconds")
        .with_help(
            "add an `ON REFRESH` resource, or make the resource that obtains the token a \
             `PROVISION AUTH VALIDATION` one (the engine runs it again when the token expires)",
        ),
    );
}

/// True when `ON PROVISION` provisions alone: a custom connector without `PROVISION AUTH
/// VALIDATION`. Its `ON PROVISION` resources then obtain the token, set `authentication.time`,
/// and run again when the token expires (without `ON REFRESH`).
fn provisions_alone(connector: &Connector) -> bool {
    connector.authentication().kind() == AuthKind::Custom
        && connector
            .lifecycle(ResourceType::ProvisionAuthValidation)
            .is_none()
}

/// E0202: a token-like key saved by `ON PROVISION` resources only, when a `PROVISION AUTH
/// VALIDATION` runs before them (else they provision alone and set `authentication.time`).
fn token_on_provision(input: &Input<'_>, connector: &Connector, diagnostics: &mut Vec<Diagnostic>) {
    if provisions_alone(connector) {
        return;
    }
    let credential_keys = connector.credential_keys();
    let is_token =
        |key: &str| key.to_lowercase().contains("token") || credential_keys.contains(&key);
    // Keys saved by a global response parameter are saved by every resource.
    let saved_everywhere: BTreeSet<&str> = connector
        .global_parameters()
        .iter()
        .filter(|parameter| parameter.saves_to_configuration())
        .map(Parameter::name)
        .collect();
    let saved_by_setters: BTreeSet<&str> = connector
        .resources()
        .iter()
        .filter(|resource| TOKEN_SETTERS.contains(&resource.kind()))
        .flat_map(Resource::parameters)
        .filter(|parameter| parameter.saves_to_configuration())
        .map(Parameter::name)
        .collect();
    let oauth2 = connector.authentication().kind() == AuthKind::Oauth2;
    let mut reported = BTreeSet::new();
    for resource in connector.resources() {
        if resource.kind() != ResourceType::OnProvision {
            continue;
        }
        for parameter in resource.parameters() {
            let key = parameter.name();
            if !parameter.saves_to_configuration()
                || !is_token(key)
                || saved_by_setters.contains(key)
                || saved_everywhere.contains(key)
                // The built-in OAuth2 client maintains its own tokens.
                || (oauth2 && key.starts_with("oauth.user."))
                || !reported.insert(key)
            {
                continue;
            }
            diagnostics.push(
                Diagnostic::new(
                    Code::TokenOnProvision,
                    name_of(input, parameter),
                    format!("token `{key}` is saved only by an `ON PROVISION` resource"),
                )
                .with_label("`ON PROVISION` never sets `authentication.time`")
                .with_help(
                    "save the token in a `PROVISION AUTH VALIDATION` resource (and an `ON \
                     REFRESH` one): they set `authentication.time`, so the engine knows when \
                     to refresh it",
                ),
            );
        }
    }
}

/// The `name` of a parameter: the configuration key it saves.
fn name_of(input: &Input<'_>, parameter: &Parameter) -> Location {
    Location::new(input.file, parameter.location().pointer.field("name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::test_support::{diagnostics, with_code};

    const SAVES_EXPIRES_IN: &str = r#"{
        "configuration": [{"key": "session.token"}],
        "resources": [{"type": "PROVISION AUTH VALIDATION", "vendorMethod": "POST", "vendorPath": "/login",
          "parameters": [
            {"name": "session.token", "type": "configuration", "vendorName": "token", "vendorType": "bodyField", "source": "response"},
            {"name": "expires_in", "type": "configuration", "vendorName": "expires_in", "vendorType": "bodyField", "source": "response"}
          ]}]
    }"#;

    #[test]
    fn provision_auth_validation_can_refresh() {
        assert!(diagnostics(SAVES_EXPIRES_IN).is_empty());
    }

    #[test]
    fn expires_in_without_refresh_is_an_error() {
        let text = SAVES_EXPIRES_IN.replace("PROVISION AUTH VALIDATION", "API");
        let found = with_code(&text, Code::NoRefresh);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].location.pointer.as_str(),
            "/resources/0/parameters/1/name"
        );
    }

    #[test]
    fn oauth2_and_session_none_need_no_refresh_resource() {
        let text = SAVES_EXPIRES_IN.replace("PROVISION AUTH VALIDATION", "API");
        let oauth2 = text.replacen(
            '{',
            r#"{"authentication": {"type": "oauth2"}, "configuration": [{"key": "oauth.token.url", "required": true}],"#,
            1,
        );
        let oauth2 = oauth2.replace(r#""configuration": [{"key": "session.token"}],"#, "");
        assert!(with_code(&oauth2, Code::NoRefresh).is_empty());
        let none = text.replacen('{', r#"{"session": {"management": "none"},"#, 1);
        assert!(with_code(&none, Code::NoRefresh).is_empty());
    }

    #[test]
    fn token_saved_only_on_provision_after_a_validation_is_an_error() {
        let text = SAVES_EXPIRES_IN
            .replace("PROVISION AUTH VALIDATION", "ON PROVISION")
            .replace(
                r#""resources": ["#,
                r#""resources": [{"type": "PROVISION AUTH VALIDATION", "vendorPath": "/check"},"#,
            );
        let found = with_code(&text, Code::TokenOnProvision);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("session.token"));
    }

    #[test]
    fn on_provision_alone_obtains_and_refreshes_the_token() {
        let text = SAVES_EXPIRES_IN
            .replace("PROVISION AUTH VALIDATION", "ON PROVISION")
            .replacen('{', r#"{"authentication": {"type": "custom"},"#, 1);
        let found: Vec<_> = diagnostics(&text)
            .into_iter()
            .filter(|d| matches!(d.code, Code::NoRefresh | Code::TokenOnProvision))
            .collect();
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_key_sent_in_the_authorization_header_is_a_token() {
        let text = r#"{
            "configuration": [{"key": "sid"}],
            "parameters": [{"name": "Session ${configuration.sid}", "type": "value", "vendorName": "Authorization", "vendorType": "header"}],
            "resources": [{"type": "PROVISION AUTH VALIDATION", "vendorPath": "/check"},
              {"type": "ON PROVISION", "vendorPath": "/login", "parameters": [
                {"name": "sid", "type": "configuration", "vendorName": "id", "vendorType": "bodyField", "source": "response"}]}]
        }"#;
        assert_eq!(with_code(text, Code::TokenOnProvision).len(), 1);
    }

    #[test]
    fn an_account_id_saved_on_provision_is_fine() {
        let text = r#"{
            "configuration": [{"key": "account.id"}, {"key": "api.token"}],
            "parameters": [{"name": "Bearer ${configuration.api.token}", "type": "value", "vendorName": "Authorization", "vendorType": "header"}],
            "resources": [
              {"type": "PROVISION AUTH VALIDATION", "vendorPath": "/token", "nextResource": "account", "parameters": [
                {"name": "api.token", "type": "configuration", "vendorName": "access_token", "vendorType": "bodyField", "source": "response"}]},
              {"name": "account", "type": "ON PROVISION", "vendorPath": "/me", "parameters": [
                {"name": "account.id", "type": "configuration", "vendorName": "$.account.id", "vendorType": "bodyField", "source": "response"}]}
            ]
        }"#;
        assert!(diagnostics(text).is_empty(), "{:?}", diagnostics(text));
    }

    #[test]
    fn credential_slots_are_recognised() {
        for header in [
            "Authorization",
            "X-Auth-Token",
            "x-api-key",
            "X-Session-Id",
            "access_token",
        ] {
            assert!(crate::is_credential_slot(header), "{header}");
        }
        for header in ["Accept", "Content-Type", "X-Account-Id"] {
            assert!(!crate::is_credential_slot(header), "{header}");
        }
    }
}
