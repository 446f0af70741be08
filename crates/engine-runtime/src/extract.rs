//! Reading a vendor response: response parameters save values into the configuration or the
//! output, and `rootKey` unwraps the body.

use engine_spec::jsonpath::BudgetExceeded;
use engine_spec::kinds::{ParameterKind, Source, VendorKind};
use engine_spec::{Connector, Resource};
use engine_store::State;
use serde_json::Value;

use crate::body::Body;
use crate::run_error::{RunError, RunErrorKind};
use crate::transport::VendorResponse;

/// What a response gave.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Configuration keys to save, with their values (always strings).
    pub(crate) saved: State,
    /// Fields the output parameters add to the caller's body.
    outputs: Vec<(String, Value)>,
    /// The configuration keys a response parameter should have saved but found nothing for,
    /// with where it looked (its `vendorName`).
    pub(crate) missing: Vec<(String, String)>,
}

impl Extracted {
    /// The value the output parameter `name` found, if any.
    pub(crate) fn output(&self, name: &str) -> Option<&Value> {
        self.outputs
            .iter()
            .rev()
            .find(|(output, _)| output == name)
            .map(|(_, value)| value)
    }

    /// The body for the caller, made from the response body without copying it: `rootKey`
    /// applied, output parameters added as fields when it is an object. When it is not (a
    /// list), they are given back beside it, by name, but for `elements-next-page-token` (the
    /// next page's cursor, [`crate::pagination`]).
    ///
    /// Without `rootKey` or output parameters, the body is handed on as received (not read).
    ///
    /// Fails when `rootKey` would visit more of the body than the JSONPath budget allows.
    pub(crate) fn into_output(
        self,
        resource: &Resource,
        body: Body,
    ) -> Result<(Body, Vec<(String, Value)>), RunError> {
        if resource.root_key().is_none() && self.outputs.is_empty() {
            return Ok((body, Vec::new()));
        }
        let body = body.into_value();
        let mut output = match resource.root_key() {
            Some(root) => root
                .try_select(&body)
                .map_err(|source| budget(resource, source))?
                .unwrap_or(body),
            None => body,
        };
        if let Value::Object(object) = &mut output {
            object.extend(self.outputs);
            return Ok((Body::from(output), Vec::new()));
        }
        let beside = self
            .outputs
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(crate::pagination::NEXT_PAGE_HEADER))
            .collect();
        Ok((Body::from(output), beside))
    }
}

/// Applies the response parameters of `resource` to `response`. A parameter that finds nothing
/// saves nothing: a stored value is never overwritten with empty.
///
/// Fails, saving nothing, when a `bodyField` would visit more of the body than the JSONPath
/// budget allows.
pub(crate) fn extract(
    connector: &Connector,
    resource: &Resource,
    response: &VendorResponse,
) -> Result<Extracted, RunError> {
    let mut extracted = Extracted::default();
    for parameter in connector.parameters_of(resource, Source::Response) {
        let found = match parameter.vendor_kind() {
            VendorKind::Header => response
                .header(parameter.vendor_name())
                .map(|value| Value::String(value.to_owned())),
            _ => match parameter.json_path() {
                Some(path) => path
                    .try_find(&response.body)
                    .map_err(|source| budget(resource, source))?
                    .cloned(),
                None => None,
            },
        };
        let Some(found) =
            found.filter(|value| !value.is_null() && value != &Value::String(String::new()))
        else {
            if parameter.kind() == ParameterKind::Configuration {
                extracted.missing.push((
                    parameter.name().to_owned(),
                    parameter.vendor_name().to_owned(),
                ));
            }
            continue;
        };
        match parameter.kind() {
            ParameterKind::Configuration => {
                let text = match found {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                extracted
                    .saved
                    .insert(parameter.name().to_owned(), Value::String(text));
            }
            _ => extracted.outputs.push((parameter.name().to_owned(), found)),
        }
    }
    Ok(extracted)
}

/// The budget error, pointing at the resource in the connector file.
fn budget(resource: &Resource, source: BudgetExceeded) -> RunError {
    RunError::from(RunErrorKind::JsonPathBudget {
        resource: resource.display_name(),
        source,
    })
    .at(resource.location())
}
