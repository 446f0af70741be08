//! Custom authentication: the connector's `PROVISION AUTH VALIDATION`, `ON PROVISION` and
//! `ON REFRESH` resources obtain and refresh the token.
//!
//! Provisioning runs every `PROVISION AUTH VALIDATION` resource, then every `ON PROVISION`
//! resource, in file order (each followed by its `nextResource` chain, see `engine.rs`); with
//! neither, `ON REFRESH` provisions. A refresh runs `ON REFRESH`, else provisions again.
//!
//! Provisioning is one mechanism for every authentication: an instance without
//! `authentication.time` (never provisioned) runs it before its first call, after the token
//! (OAuth2) and with the instance's credentials (Basic, OAuth2 `Bearer`), as the platform ran it
//! when the instance was created; the engine then sets `authentication.time`
//! ([`PROVISIONED`]).

use engine_spec::kinds::ResourceType;
use engine_spec::template::Values;
use engine_spec::{Connector, Resource};

use super::Step;
use crate::Inputs;
use crate::observer::RefreshReason;

/// The configuration key that marks an instance provisioned: when the token was obtained
/// (custom authentication), or when provisioning ran (every other authentication).
pub(crate) const PROVISIONED: &str = "authentication.time";

/// True when `configuration` was never provisioned and `connector` has resources that
/// provision: they run before the first call.
pub(crate) fn awaits_provisioning(connector: &Connector, configuration: &dyn Values) -> bool {
    configuration
        .value(PROVISIONED)
        .and_then(crate::value::text_of)
        .is_none()
        && connector.resources().iter().any(|resource| {
            matches!(
                resource.kind(),
                ResourceType::ProvisionAuthValidation | ResourceType::OnProvision
            )
        })
}

/// The steps that provision an instance ([`provisioning`]).
pub(crate) fn provisioning_steps(connector: &Connector) -> impl Iterator<Item = Step<'_>> {
    provisioning(connector)
        .into_iter()
        .map(|resource| resource_step(connector, resource, Inputs::default()))
}

/// True when `connector` has a lifecycle resource that obtains tokens: custom authentication
/// runs then.
pub(crate) fn has_lifecycle(connector: &Connector) -> bool {
    connector.resources().iter().any(|resource| {
        matches!(
            resource.kind(),
            ResourceType::ProvisionAuthValidation
                | ResourceType::OnProvision
                | ResourceType::OnRefresh
        )
    })
}

/// The resources that provision an instance, in order: every `PROVISION AUTH VALIDATION`, then
/// every `ON PROVISION`, each in file order.
pub(crate) fn provisioning(connector: &Connector) -> Vec<&Resource> {
    let of = |kind: ResourceType| {
        connector
            .resources()
            .iter()
            .filter(move |resource| resource.kind() == kind)
    };
    of(ResourceType::ProvisionAuthValidation)
        .chain(of(ResourceType::OnProvision))
        .collect()
}

/// The steps for `reason`: provisioning for a new instance (or when there is no `ON REFRESH`),
/// else `ON REFRESH`. A refresh without `ON REFRESH` runs the resources that obtain the token
/// again (`PROVISION AUTH VALIDATION`, else `ON PROVISION`), not the whole provisioning.
pub(crate) fn steps<'a>(connector: &'a Connector, reason: &RefreshReason) -> Vec<Step<'a>> {
    let refresh = connector.lifecycle(ResourceType::OnRefresh);
    let resources: Vec<&Resource> = match (reason, refresh) {
        (RefreshReason::NotProvisioned, _) | (_, None) => {
            let mut resources = provisioning(connector);
            if !matches!(reason, RefreshReason::NotProvisioned) {
                resources.retain(|resource| obtains_token(connector, resource));
            }
            if resources.is_empty() {
                resources.extend(refresh);
            }
            resources
        }
        (_, Some(refresh)) => vec![refresh],
    };
    resources
        .into_iter()
        .map(|resource| resource_step(connector, resource, Inputs::default()))
        .collect()
}

/// True when the answer to `resource` carries the token of a custom connector: its
/// `PROVISION AUTH VALIDATION` and `ON REFRESH`, and an `ON PROVISION` that saves configuration
/// values when there is no `PROVISION AUTH VALIDATION` (it provisions alone). For the other
/// authentications the lifecycle resources are calls like any other, authenticated
/// (Basic validation, an OAuth2 connector's webhook renewal).
fn obtains_token(connector: &Connector, resource: &Resource) -> bool {
    if connector.authentication().kind() != engine_spec::AuthKind::Custom {
        return false;
    }
    match resource.kind() {
        ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh => true,
        ResourceType::OnProvision => {
            connector
                .lifecycle(ResourceType::ProvisionAuthValidation)
                .is_none()
                && resource
                    .parameters()
                    .iter()
                    .any(engine_spec::Parameter::saves_to_configuration)
        }
        _ => false,
    }
}

/// The step that runs `resource`: the resources that obtain a token set `authentication.time`
/// and go out without the connector's own authentication.
pub(crate) fn resource_step<'a>(
    connector: &Connector,
    resource: &'a Resource,
    inputs: Inputs,
) -> Step<'a> {
    Step::Resource {
        resource,
        inputs,
        offered: Vec::new(),
        obtains_token: obtains_token(connector, resource),
        token_response: matches!(
            resource.kind(),
            ResourceType::OauthOnTokenRefresh
                | ResourceType::OauthOnTokenExchange
                | ResourceType::Oauth2Password
        ),
    }
}
