//! Building the vendor request of one resource. Pure: nothing is sent here.
//!
//! Read it in the order a request is built ([`build`]):
//! 1. `inputs`: what the caller gives ([`Inputs`]) and the checks on it;
//! 2. `parameters`: each parameter's value, from the caller, the configuration, a template or
//!    the previous response, placed in its vendor slot;
//! 3. `url`: `base.url` and `vendorPath` joined, placeholders filled, query merged;
//! 4. `headers`: the caller's own headers, and the check that each can go out as HTTP;
//! 5. `body`: JSON, form, multipart or a filled text template.
//!
//! The mapping rules are in `docs/connector-format.md` ("Parameters"): global parameters first,
//! then the resource's, a resource parameter replacing a global one for the same vendor slot
//! ([`engine_spec::Connector::parameters_of`]).

mod body;
mod headers;
mod inputs;
mod parameters;
mod url;

use engine_spec::kinds::{ParameterKind, Source, VendorKind};
use engine_spec::{AuthKind, Connector, Parameter, Resource};
use serde_json::Value;

pub(crate) use headers::check_headers;
pub(crate) use inputs::{BuildContext, missing_required};
pub use inputs::{InputFile, Inputs};
pub(crate) use url::check_scheme;

use crate::prepared_request::PreparedRequest;
use crate::run_error::{RunError, RunErrorKind};

/// The request parameters of `resource` ([`engine_spec::Connector::parameters_of`]), but for the
/// global reversed headers of an OAuth2 connector on an API call: those are for the token calls
/// (the built-in ones and `oauthOnTokenExchange`/`oauthOnTokenRefresh`), as the platform sent
/// them; API calls carry the `Bearer` token.
pub(crate) fn request_parameters<'a>(
    connector: &'a Connector,
    resource: &'a Resource,
) -> Vec<&'a Parameter> {
    let oauth2_api =
        connector.authentication().kind() == AuthKind::Oauth2 && resource.kind().is_api();
    connector
        .parameters_of(resource, Source::Request)
        .filter(|parameter| {
            !(oauth2_api
                && parameter.is_reversed_header()
                && connector
                    .global_parameters()
                    .iter()
                    .any(|global| std::ptr::eq(global, *parameter)))
        })
        .collect()
}

/// Builds the vendor request of `resource`.
///
/// Fails when a required input is missing or unknown, a value does not convert, a template does
/// not render, or the URL is invalid.
pub(crate) fn build(
    context: &BuildContext<'_>,
    resource: &Resource,
) -> Result<PreparedRequest, RunError> {
    let parameters = request_parameters(context.connector, resource);
    parameters::check_inputs(context, resource, &parameters)?;
    // `bodyToken` parameters, or a body template of the connector's (a `value` parameter of
    // `vendorType: body`), make the body a text template (SOAP envelopes, XML, JSON) sent as
    // written: the `bodyToken` values and the members of the caller's JSON object fill its
    // `{tokens}`.
    let text_body = parameters.iter().any(|parameter| {
        parameter.vendor_kind() == VendorKind::BodyToken
            || (parameter.kind() == ParameterKind::Value
                && parameter.vendor_kind() == VendorKind::Body)
    });
    if !text_body
        && context.inputs.body.is_none()
        && let Some(text) = &context.inputs.body_text
        && let Err(error) = serde_json::from_str::<Value>(text)
    {
        return Err(RunErrorKind::BodyNotJson {
            message: error.to_string(),
        }
        .into());
    }
    let mut placed = parameters::place(context, resource, &parameters, text_body)?;
    headers::add_caller_headers(&mut placed.headers, &context.inputs.headers, &parameters);
    let url = url::build_url(
        context,
        resource,
        &placed.path_values,
        &placed.query,
        &mut placed.secrets,
    )?;
    let body = body::build_body(context, resource, &parameters, &mut placed, text_body)?;
    check_headers(&placed.headers, &context.inputs.headers)?;
    Ok(PreparedRequest {
        resource: resource.display_name_shared().clone(),
        method: resource.vendor_method_shared().clone(),
        url,
        headers: placed.headers,
        body,
        lifecycle: !resource.kind().is_api(),
        secrets: placed.secrets,
    })
}
