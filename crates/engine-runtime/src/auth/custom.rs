//! Custom authentication: the connector's `PROVISION AUTH VALIDATION`, `ON REFRESH` and
//! `ON PROVISION` resources obtain and refresh the token.

use engine_spec::Resource;
use engine_spec::kinds::ResourceType;

use super::Step;
use crate::Inputs;
use crate::observer::RefreshReason;

/// The resource that handles `reason`: provisioning for a new instance, else `ON REFRESH`, else
/// provisioning again.
pub(crate) fn step<'a>(
    provision: &'a Resource,
    refresh: Option<&'a Resource>,
    reason: &RefreshReason,
) -> &'a Resource {
    match (reason, refresh) {
        (RefreshReason::NotProvisioned, _) | (_, None) => provision,
        (_, Some(refresh)) => refresh,
    }
}

/// The steps for `reason`: the resource of [`step`]; after a first provisioning, `ON PROVISION`
/// too, which runs with the new token.
pub(crate) fn steps<'a>(
    provision: &'a Resource,
    refresh: Option<&'a Resource>,
    on_provision: Option<&'a Resource>,
    reason: &RefreshReason,
) -> Vec<Step<'a>> {
    let mut steps = vec![resource_step(
        step(provision, refresh, reason),
        Inputs::default(),
    )];
    if matches!(reason, RefreshReason::NotProvisioned)
        && let Some(on_provision) = on_provision
    {
        steps.push(resource_step(on_provision, Inputs::default()));
    }
    steps
}

/// The step that runs `resource`: the resources that obtain a token set `authentication.time`
/// and go out without the connector's own authentication.
pub(crate) fn resource_step(resource: &Resource, inputs: Inputs) -> Step<'_> {
    Step::Resource {
        resource,
        inputs,
        obtains_token: matches!(
            resource.kind(),
            ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
        ),
        token_response: matches!(
            resource.kind(),
            ResourceType::OauthOnTokenRefresh | ResourceType::OauthOnTokenExchange
        ),
    }
}
