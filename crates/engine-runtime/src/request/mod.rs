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

use engine_spec::Resource;
use engine_spec::kinds::{ParameterKind, Source, VendorKind};
use serde_json::Value;

pub(crate) use headers::check_headers;
pub use inputs::Inputs;
pub(crate) use inputs::{BuildContext, missing_required};
pub(crate) use url::check_scheme;

use crate::prepared_request::PreparedRequest;
use crate::run_error::{RunError, RunErrorKind};

/// Builds the vendor request of `resource`.
///
/// Fails when a required input is missing or unknown, a value does not convert, a template does
/// not render, or the URL is invalid.
pub(crate) fn build(
    context: &BuildContext<'_>,
    resource: &Resource,
) -> Result<PreparedRequest, RunError> {
    let parameters: Vec<_> = context
        .connector
        .parameters_of(resource, Source::Request)
        .collect();
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
        resource: resource.display_name(),
        method: resource.vendor_method().to_owned(),
        url,
        headers: placed.headers,
        body,
        lifecycle: !resource.kind().is_api(),
        secrets: placed.secrets,
    })
}
