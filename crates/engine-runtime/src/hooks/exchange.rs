//! The platform's hook contract (docs/hooks.md) over the engine's types: the inputs a hook
//! sees, made from the built request (and the response), and its answer applied back to them.
//! Order: the connector's `preRequest`, the resource's, the vendor call, the resource's
//! `postRequest`, the connector's.

use std::time::Duration;

use engine_spec::hook::{Hook, HookKind, file_position};
use engine_spec::{Connector, Resource};
use serde_json::{Map, Value, json};

use crate::ceql::{Expression, Operator};
use crate::hooks::{self, Failure};
use crate::prepared_request::{PreparedRequest, RequestBody};
use crate::redact::Redactor;
use crate::request::Inputs;
use crate::run_error::{RunError, RunErrorKind};
use crate::transport::VendorResponse;

/// What the hooks of one call need besides the request.
pub(crate) struct Site<'a> {
    pub(crate) connector: &'a Connector,
    /// Tells the instance apart from every other (the store's identity of it): the hooks of
    /// different instances never share what they do to the built-ins (`hooks::run`).
    pub(crate) tenant: String,
    pub(crate) resource: &'a Resource,
    pub(crate) inputs: &'a Inputs,
    /// Path variables bound from the selector (`GET:/hubs/x/items/7`), besides the caller's.
    pub(crate) bound: &'a [(String, String)],
    pub(crate) previous: Option<&'a Value>,
    /// The headers of the previous answer of a `nextResource` chain.
    pub(crate) previous_headers: Option<&'a [(String, String)]>,
    /// The effective configuration, as the hook sees it.
    pub(crate) configuration: Map<String, Value>,
    pub(crate) now_ms: u64,
    pub(crate) budget: Duration,
}

/// What the hooks of one side of a call did besides changing the request or response.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Configuration values to save (only those the hooks changed or added).
    pub(crate) saved: Map<String, Value>,
    /// What they logged, unmasked.
    pub(crate) logs: Vec<String>,
    /// Values made by a `CE` helper from a secret (a Basic header, a signature): learnt as
    /// secrets by the caller.
    pub(crate) derived: Vec<(String, String)>,
}

/// The outcome of the `preRequest` hooks.
pub(crate) struct Before {
    pub(crate) request: PreparedRequest,
    /// Set when a hook said `continue: false`: the answer to use instead of calling the vendor.
    pub(crate) skipped: Option<VendorResponse>,
    pub(crate) effects: Effects,
}

fn hooks_of<'a>(site: &Site<'a>, kind: HookKind) -> Vec<(&'a Hook, bool)> {
    let own = site
        .resource
        .hooks()
        .iter()
        .filter(|hook| hook.kind() == kind);
    let wide = site
        .connector
        .hooks()
        .iter()
        .filter(|hook| hook.kind() == kind);
    match kind {
        HookKind::PreRequest => wide
            .map(|hook| (hook, true))
            .chain(own.map(|hook| (hook, false)))
            .collect(),
        _ => own
            .map(|hook| (hook, false))
            .chain(wide.map(|hook| (hook, true)))
            .collect(),
    }
}

/// Runs the `preRequest` hooks on `request`.
pub(crate) fn before(
    site: &mut Site<'_>,
    mut request: PreparedRequest,
    redactor: &Redactor,
) -> Result<Before, RunError> {
    let mut effects = Effects::default();
    let mut skipped = None;
    for (hook, connector_wide) in hooks_of(site, HookKind::PreRequest) {
        let inputs = request_inputs(site, &request);
        let answer = call(site, hook, connector_wide, &inputs, redactor, None)?;
        let output = answer.output;
        absorb(site, &output, &mut effects, answer.logs, answer.derived);
        apply_request(&mut request, &output, site).map_err(|message| {
            hook_error(site, hook, connector_wide, &message, None, None, redactor)
        })?;
        if output.get("continue") == Some(&Value::Bool(false)) {
            skipped = Some(response_from(&output, None));
            break;
        }
    }
    Ok(Before {
        request,
        skipped,
        effects,
    })
}

/// Runs the `postRequest` hooks on `response` (of `request`).
pub(crate) fn after(
    site: &mut Site<'_>,
    request: &PreparedRequest,
    mut response: VendorResponse,
    redactor: &Redactor,
) -> Result<(VendorResponse, Effects), RunError> {
    let mut effects = Effects::default();
    for (hook, connector_wide) in hooks_of(site, HookKind::PostRequest) {
        let mut inputs = request_inputs(site, request);
        let headers: Map<String, Value> = response
            .headers()
            .map(|(name, value)| (name.to_owned(), Value::String(value.to_owned())))
            .collect();
        inputs.insert("response_body".to_owned(), response.body.value().clone());
        inputs.insert(
            "response_body_map".to_owned(),
            object_or_null(&response.body),
        );
        inputs.insert("response_headers".to_owned(), Value::Object(headers));
        inputs.insert("response_status_code".to_owned(), json!(response.status));
        inputs.insert(
            "response_iserror".to_owned(),
            Value::Bool(response.status >= 400),
        );
        let answer = call(
            site,
            hook,
            connector_wide,
            &inputs,
            redactor,
            Some(&response),
        )?;
        let output = answer.output;
        absorb(site, &output, &mut effects, answer.logs, answer.derived);
        if [
            "response_body",
            "response_headers",
            "response_status_code",
            "response_error",
        ]
        .iter()
        .any(|key| output.contains_key(*key))
        {
            response = response_from(&output, Some(&response));
        }
    }
    Ok((response, effects))
}

fn call(
    site: &Site<'_>,
    hook: &Hook,
    connector_wide: bool,
    inputs: &Map<String, Value>,
    redactor: &Redactor,
    response: Option<&VendorResponse>,
) -> Result<hooks::Answer, RunError> {
    hooks::run(hook.body(), &site.tenant, inputs, site.now_ms, site.budget).map_err(|failure| {
        let (message, at) = match failure {
            Failure::Threw { message, at } => (format!("{THREW}{message}"), at),
            Failure::TimedOut(budget) => (
                format!(
                    "it ran longer than its budget of {} ms and was stopped",
                    budget.as_millis()
                ),
                None,
            ),
            Failure::OutOfMemory => (
                format!(
                    "it used more than {} MiB of memory and was stopped",
                    hooks::MEMORY_LIMIT >> 20
                ),
                None,
            ),
            Failure::BadAnswer(message) => (format!("its answer is not usable: {message}"), None),
        };
        let body = response.map(|response| redactor.redact(&response.body_text()));
        hook_error(site, hook, connector_wide, &message, at, body, redactor)
    })
}

/// What [`hook_error`] says of a `preRequest` hook, and of a hook that threw.
const PRE_REQUEST: &str = "`preRequest` hook";
const THREW: &str = "it threw: ";

/// True when `error` is a `preRequest` hook that threw: the request was not sent.
pub(crate) fn threw_before_sending(error: &RunError) -> bool {
    matches!(
        error.kind(),
        RunErrorKind::Hook { hook, message, .. }
            if hook.ends_with(PRE_REQUEST) && message.starts_with(THREW)
    )
}

fn hook_error(
    site: &Site<'_>,
    hook: &Hook,
    connector_wide: bool,
    message: &str,
    at: Option<(usize, usize)>,
    body: Option<String>,
    redactor: &Redactor,
) -> RunError {
    let owner = if connector_wide {
        "the connector's".to_owned()
    } else {
        format!("resource `{}`'s", site.resource.display_name())
    };
    let (line, column) = at.unwrap_or((1, 1));
    let position = file_position(site.connector.source(), hook.location(), line, column);
    let location = hook.location().clone();
    let offset = site.connector.source().offset(position);
    // Point at the character in the file (the location is narrowed inside the body's string).
    let start = engine_spec::SourceMap::for_locations(
        site.connector.source().text(),
        std::iter::once(&location),
    )
    .span(&location)
    .map_or(0, |span| offset.saturating_sub(span.start + 1));
    RunError::from(RunErrorKind::Hook {
        hook: format!("{owner} `{}` hook", hook.kind().as_str()),
        message: redactor.redact(message),
        at,
        body: body.unwrap_or_default(),
    })
    .at(&location.narrow(start, start + 1))
}

/// Keeps the configuration values a hook changed or added, and what it logged.
fn absorb(
    site: &mut Site<'_>,
    output: &Map<String, Value>,
    effects: &mut Effects,
    logs: Vec<String>,
    derived: Vec<(String, String)>,
) {
    effects.logs.extend(logs);
    effects.derived.extend(derived);
    let Some(Value::Object(configuration)) = output.get("configuration") else {
        return;
    };
    for (key, value) in configuration {
        // Stored configuration values are text.
        let value = match value {
            Value::String(_) | Value::Null => value.clone(),
            other => Value::String(other.to_string()),
        };
        if site.configuration.get(key) != Some(&value) {
            site.configuration.insert(key.clone(), value.clone());
            effects.saved.insert(key.clone(), value);
        }
    }
}

/// The inputs of the contract, from the request as built.
fn request_inputs(site: &Site<'_>, request: &PreparedRequest) -> Map<String, Value> {
    let pairs = |pairs: &[(String, String)]| -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                .collect(),
        )
    };
    let query: Vec<(String, String)> = request
        .url
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    let (vendor_body, vendor_body_map) = match &request.body {
        RequestBody::Json(value) => (Value::String(value.to_string()), value.clone()),
        RequestBody::Text(text) => (
            Value::String(text.clone()),
            serde_json::from_str(text).unwrap_or(Value::Null),
        ),
        RequestBody::Form(fields) => (
            Value::String(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields)
                    .finish(),
            ),
            pairs(fields),
        ),
        RequestBody::Empty | RequestBody::Multipart(_) => (Value::Null, Value::Null),
    };
    // The platform gave the caller's body as text (hooks `JSON.parse(request_body)`), and
    // parsed in `request_body_map` when it is an object.
    let request_body = site
        .inputs
        .body_text
        .clone()
        .or_else(|| site.inputs.body.as_ref().map(Value::to_string))
        .map_or(Value::Null, Value::String);
    let body_map = site
        .inputs
        .body
        .as_ref()
        .map_or(Value::Null, object_or_null);
    let mut inputs = Map::new();
    let mut put = |name: &str, value: Value| {
        inputs.insert(name.to_owned(), value);
    };
    put("request_body", request_body);
    put("request_body_map", body_map);
    put("request_headers", pairs(&site.inputs.headers));
    put(
        "request_path",
        site.resource.path().map_or(Value::Null, |path| json!(path)),
    );
    put("request_path_variables", path_variables(site));
    put("request_parameters", pairs(&site.inputs.params));
    put("request_vendor_parameters", pairs(&query));
    put(
        "request_method",
        json!(site.resource.method().unwrap_or(&request.method)),
    );
    put("request_vendor_method", json!(&*request.method));
    put(
        "request_vendor_path",
        json!(site.resource.vendor_path().source()),
    );
    put("request_vendor_headers", pairs(&request.headers));
    put("request_vendor_body", vendor_body);
    put("request_vendor_body_map", vendor_body_map);
    put("request_vendor_url", json!(request.url.as_str()));
    put("request_expression", expression(&site.inputs.params));
    put(
        "request_previous_response",
        site.previous.cloned().unwrap_or(Value::Null),
    );
    put(
        "request_previous_response_headers",
        site.previous_headers.map_or(Value::Null, pairs),
    );
    put("meta_data", json!({}));
    put("configuration", Value::Object(site.configuration.clone()));
    inputs
}

/// The headers of `response`, as pairs.
pub(crate) fn header_pairs(response: &VendorResponse) -> Vec<(String, String)> {
    response
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// `value` when it is a JSON object, else `null` (the `*_map` inputs).
fn object_or_null(value: &Value) -> Value {
    if value.is_object() {
        value.clone()
    } else {
        Value::Null
    }
}

/// The values of the `{name}` placeholders of the resource's own `path`, from the selector's
/// bound path and the caller's parameters.
fn path_variables(site: &Site<'_>) -> Value {
    let mut variables = Map::new();
    let mut rest = site.resource.path().unwrap_or_default();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        let value = site
            .bound
            .iter()
            .chain(site.inputs.params.iter().rev())
            .find(|(key, _)| key == name);
        if let Some((_, value)) = value {
            variables.insert(name.to_owned(), Value::String(value.clone()));
        }
        rest = &rest[open + close + 1..];
    }
    Value::Object(variables)
}

/// The caller's CEQL `where` as the platform gave it to hooks: a list of
/// `{attribute, operator, value}` (`value` a list for `IN`, `null` for `IS NULL`); `null`
/// without a `where` or when it does not parse (the request's converter reports that).
fn expression(params: &[(String, String)]) -> Value {
    let Some((_, text)) = params.iter().rev().find(|(name, _)| name == "where") else {
        return Value::Null;
    };
    let Ok(parsed) = Expression::parse(text) else {
        return Value::Null;
    };
    let clauses = parsed.clauses().map(|clause| {
        let operator = match clause.operator {
            Operator::Equal => "=",
            Operator::NotEqual => "!=",
            Operator::Less => "<",
            Operator::Greater => ">",
            Operator::LessOrEqual => "<=",
            Operator::GreaterOrEqual => ">=",
            Operator::Like => "LIKE",
            Operator::In => "IN",
            Operator::IsNull => "IS NULL",
            Operator::IsNotNull => "IS NOT NULL",
        };
        let value = match clause.operator {
            Operator::In => clause
                .values
                .iter()
                .map(|value| json!(value.text()))
                .collect(),
            _ => clause
                .values
                .first()
                .map_or(Value::Null, |value| json!(value.text())),
        };
        json!({"attribute": clause.attribute, "operator": operator, "value": value})
    });
    Value::Array(clauses.collect())
}

/// Applies a `preRequest` answer to the request: `request_vendor_*` override what is sent.
fn apply_request(
    request: &mut PreparedRequest,
    output: &Map<String, Value>,
    site: &Site<'_>,
) -> Result<(), String> {
    if let Some(method) = output.get("request_vendor_method").and_then(Value::as_str) {
        request.method = method.to_ascii_uppercase().into();
    }
    let url = output
        .get("request_vendor_url")
        .or_else(|| output.get("request_vendor_path"))
        .and_then(Value::as_str);
    if let Some(url) = url {
        request.url = vendor_url(url, request, site)?;
    }
    if let Some(Value::Object(parameters)) = output.get("request_vendor_parameters") {
        let mut query: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        for (name, value) in parameters {
            query.retain(|(existing, _)| existing != name);
            if let Some(value) = text_of(value) {
                query.push((name.clone(), value));
            }
        }
        if query.is_empty() {
            request.url.set_query(None);
        } else {
            request.url.query_pairs_mut().clear().extend_pairs(&query);
        }
    }
    if let Some(Value::Object(headers)) = output.get("request_vendor_headers") {
        for (name, value) in headers {
            request
                .headers
                .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            if let Some(value) = text_of(value) {
                request.headers.push((name.clone(), value));
            }
        }
    }
    if let Some(body) = output.get("request_vendor_body") {
        request.body = match body {
            Value::Null => RequestBody::Empty,
            Value::String(text) => RequestBody::Text(text.clone()),
            other => RequestBody::Json(other.clone()),
        };
    }
    Ok(())
}

/// A header, query or body value as text (`null` removes it).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The URL a hook's `request_vendor_path` means: a whole URL when it starts with `http`,
/// else a path under `base.url`; `{name}` placeholders are filled from the caller's inputs and
/// the configuration, as the platform did after the hook.
fn vendor_url(path: &str, request: &PreparedRequest, site: &Site<'_>) -> Result<url::Url, String> {
    let mut filled = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        filled.push_str(&rest[..open]);
        let value = site
            .inputs
            .params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .or_else(|| site.configuration.get(name).and_then(text_of));
        match value {
            Some(value) => filled.push_str(
                &percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string(),
            ),
            None => filled.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    filled.push_str(rest);
    let mut url = if filled.starts_with("http") {
        url::Url::parse(&filled)
    } else {
        let base = site
            .configuration
            .get("base.url")
            .and_then(Value::as_str)
            .map_or_else(|| request.url.origin().ascii_serialization(), str::to_owned);
        url::Url::parse(&format!("{}{}", base.trim_end_matches('/'), filled))
    }
    .map_err(|error| format!("its `request_vendor_path` `{path}` is no URL: {error}"))?;
    // The request's query parameters still go, after the hook's own (the platform sent
    // `request_vendor_parameters` with whatever path a hook chose).
    let own: Vec<String> = url
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    let kept: Vec<(String, String)> = request
        .url
        .query_pairs()
        .filter(|(name, _)| !own.iter().any(|known| known == name))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    if url.query().is_none() {
        url.set_query(request.url.query());
    } else if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(&kept);
    }
    Ok(url)
}

/// The response a hook's answer describes (over `previous` when there is one).
fn response_from(output: &Map<String, Value>, previous: Option<&VendorResponse>) -> VendorResponse {
    let status = output
        .get("response_status_code")
        .and_then(|status| {
            status
                .as_u64()
                .or_else(|| status.as_str().and_then(|text| text.parse().ok()))
        })
        .and_then(|status| u16::try_from(status).ok())
        .unwrap_or_else(|| previous.map_or(200, |response| response.status));
    let mut headers: Vec<(String, String)> = previous
        .map(|response| {
            response
                .headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Object(set)) = output.get("response_headers") {
        for (name, value) in set {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
            if let Some(value) = text_of(value) {
                headers.push((name.clone(), value));
            }
        }
    }
    let body = output
        .get("response_body")
        .cloned()
        .or_else(|| output.get("response_error").cloned())
        .or_else(|| previous.map(|response| response.body.value().clone()))
        .unwrap_or(Value::Null);
    VendorResponse::new(status, headers, body)
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
