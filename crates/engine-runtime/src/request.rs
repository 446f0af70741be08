//! Building the vendor request of one resource: render, then build. Pure: nothing is sent here.
//!
//! The mapping rules are in `docs/connector-format.md` ("Parameters"): global parameters first,
//! then the resource's, a resource parameter replacing a global one for the same vendor slot.

use engine_spec::kinds::{DataType, ParameterKind, Source, VendorKind};
use engine_spec::template::{TemplateContext, Values, fill_placeholders};
use engine_spec::{Connector, Parameter, Resource};
use serde_json::{Map, Value};

use crate::body::{Escape, Part, PartContent, fill_tokens};
use crate::configuration::Configuration;
use crate::observer::{Event, Observer};
use crate::prepared_request::{PreparedRequest, RequestBody, SecretSlot};
use crate::redact::Redactor;
use crate::run_error::{InputKind, MissingKey, RunError, RunErrorKind};

/// What the caller passes to a run: `--param`, `--header`, `--body`.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Query, path, form and multipart inputs by parameter `name`, and values of `{name}`
    /// placeholders of `vendorPath` that no parameter fills. A multipart value `@FILE` is a file
    /// part, `@-` a part read from [`Inputs::stdin`].
    pub params: Vec<(String, String)>,
    /// Header inputs by parameter `name`; headers no parameter takes are sent as they are.
    pub headers: Vec<(String, String)>,
    /// The request body, when it is JSON.
    pub body: Option<Value>,
    /// The request body as written: the template of a text body (`bodyToken` resources). When
    /// it is set and [`Inputs::body`] is not, the body is not JSON, and only a resource with
    /// `bodyToken` parameters takes it.
    pub body_text: Option<String>,
    /// Standard input, read by the caller for multipart parts given as `@-`.
    pub stdin: Option<Vec<u8>>,
}

impl Inputs {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Keys the engine maintains itself: never "missing" even when declared `required`.
fn maintained_by_engine(key: &str) -> bool {
    matches!(key, "authentication.time" | "expires_in") || key.starts_with("oauth.user.")
}

/// Every required key the configuration lacks, with its description.
pub(crate) fn missing_required(
    connector: &Connector,
    configuration: &Configuration<'_>,
) -> Vec<MissingKey> {
    connector
        .configuration()
        .iter()
        .filter(|property| property.required() && !maintained_by_engine(property.key()))
        .filter(|property| !configuration.get(property.key()).is_some_and(has_text))
        .map(|property| MissingKey {
            key: property.key().to_owned(),
            description: property
                .description()
                .or(property.name())
                .map(str::to_owned),
        })
        .collect()
}

/// True when [`text_of`] gives `Some`, without building the text.
fn has_text(value: &Value) -> bool {
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

/// The parameters that apply to `resource`, request side: globals first, the resource's own
/// replacing a global one with the same vendor slot.
pub(crate) fn request_parameters<'a>(
    connector: &'a Connector,
    resource: &'a Resource,
) -> Vec<&'a Parameter> {
    merged(connector, resource, Source::Request).collect()
}

/// The response-side parameters that apply to `resource`, in the same order.
pub(crate) fn response_parameters<'a>(
    connector: &'a Connector,
    resource: &'a Resource,
) -> impl Iterator<Item = &'a Parameter> {
    merged(connector, resource, Source::Response)
}

fn merged<'a>(
    connector: &'a Connector,
    resource: &'a Resource,
    source: Source,
) -> impl Iterator<Item = &'a Parameter> {
    let own = move || {
        resource
            .parameters()
            .iter()
            .filter(move |parameter| parameter.source() == source)
    };
    connector
        .global_parameters()
        .iter()
        .filter(move |parameter| parameter.source() == source)
        .filter(move |global| {
            // Same slot, or a resource `no-op` parameter of the same vendor name: it removes the
            // global one (e.g. a global `Authorization` header from a token request).
            !own().any(|parameter| {
                (parameter.vendor_kind() == global.vendor_kind()
                    || parameter.vendor_kind() == VendorKind::NoOp)
                    && parameter
                        .vendor_name()
                        .eq_ignore_ascii_case(global.vendor_name())
            })
        })
        .chain(own())
}

/// Everything [`build`] reads.
pub(crate) struct BuildContext<'a> {
    /// The connector.
    pub(crate) connector: &'a Connector,
    /// The effective configuration.
    pub(crate) configuration: &'a Configuration<'a>,
    /// The caller's inputs.
    pub(crate) inputs: &'a Inputs,
    /// Path variables bound from a `METHOD:/path` selector.
    pub(crate) bound_path: &'a [(String, String)],
    /// The previous response body of a chain.
    pub(crate) previous: Option<&'a Value>,
    /// Masks values in events.
    pub(crate) redactor: &'a Redactor,
    /// Receives `Skipped` events.
    pub(crate) observer: &'a dyn Observer,
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
    check_inputs(context, resource, &parameters)?;
    // `bodyToken` parameters make the body a text template (SOAP envelopes): their values fill
    // its `{vendorName}` tokens instead of becoming JSON fields.
    let text_body = parameters
        .iter()
        .any(|parameter| parameter.vendor_kind() == VendorKind::BodyToken);
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
    let template_context = TemplateContext::new(context.configuration, None);
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut query: Vec<(String, String)> = Vec::new();
    let mut form: Vec<(String, String)> = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let mut tokens: Vec<(&Parameter, Option<String>, bool)> = Vec::new();
    let mut secrets: Vec<SecretSlot> = Vec::new();
    let mut path_values = PathValues::default();
    let mut body: Option<Value> = None;
    for (name, value) in context.bound_path {
        path_values.insert(name, Value::String(value.clone()));
    }
    // `{name}` placeholders no parameter fills take the caller's value of the same name.
    for placeholder in unmapped_placeholders(resource, &parameters) {
        if let Some(value) = context.inputs.param(placeholder) {
            path_values.insert(placeholder, Value::String(value.to_owned()));
        }
    }
    for parameter in &parameters {
        let found = value_of(context, resource, parameter, &template_context, text_body)?;
        let secret = from_secret(context.connector, parameter);
        if text_body && parameter.vendor_kind() == VendorKind::BodyToken {
            let value = found
                .map(|value| convert(context, parameter, value))
                .transpose()?;
            tokens.push((parameter, value.map(into_text), secret));
            continue;
        }
        let Some(value) = found else {
            continue;
        };
        let vendor_name = parameter.vendor_name();
        if parameter.vendor_kind() == VendorKind::Multipart {
            let stdin = context.inputs.stdin.as_deref();
            let part = Part::from_value(vendor_name, parameter.name(), into_text(value), stdin)
                .map_err(|error| error.at(parameter.location()))?;
            parts.push(part);
            if secret {
                secrets.push(SecretSlot::Form(vendor_name.to_owned()));
            }
            continue;
        }
        let value = convert(context, parameter, value)?;
        let textual = matches!(
            parameter.vendor_kind(),
            VendorKind::Header | VendorKind::Query | VendorKind::Path | VendorKind::Form
        );
        if textual && (value.is_object() || value.is_array()) {
            context.observer.event(&Event::SentAsText {
                parameter: vendor_name.to_owned(),
                reason: format!(
                    "{}, sent as its JSON text",
                    if value.is_object() {
                        "an object"
                    } else {
                        "an array"
                    }
                ),
            });
        }
        if secret {
            secrets.extend(match parameter.vendor_kind() {
                VendorKind::Header => Some(SecretSlot::header(
                    vendor_name,
                    &as_text(&value),
                    parameter
                        .template()
                        .map_or("", |template| template.source()),
                )),
                VendorKind::Query => Some(SecretSlot::Query(vendor_name.to_owned())),
                VendorKind::Path => Some(SecretSlot::Path(
                    engine_spec::template::percent_encode(&as_text(&value)).into_owned(),
                )),
                VendorKind::Form => Some(SecretSlot::Form(vendor_name.to_owned())),
                VendorKind::Body => Some(SecretSlot::BodyField(String::new())),
                VendorKind::BodyField | VendorKind::BodyToken => {
                    Some(SecretSlot::BodyField(vendor_name.to_owned()))
                }
                VendorKind::Multipart | VendorKind::NoOp | VendorKind::Value => None,
            });
        }
        match parameter.vendor_kind() {
            VendorKind::Header => headers.push((vendor_name.to_owned(), into_text(value))),
            VendorKind::Query => query.push((vendor_name.to_owned(), into_text(value))),
            VendorKind::Path => {
                path_values.insert(vendor_name, Value::String(into_text(value)));
            }
            VendorKind::Form => form.push((vendor_name.to_owned(), into_text(value))),
            VendorKind::Body => body = Some(value),
            VendorKind::BodyField | VendorKind::BodyToken => {
                let object = body.get_or_insert_with(|| Value::Object(Map::new()));
                set_dotted(object, vendor_name, value);
            }
            // Handled above; the model turns `vendorType: value` into a header.
            VendorKind::Multipart | VendorKind::NoOp | VendorKind::Value => {}
        }
    }
    // Caller headers no parameter takes go out as they are.
    for (name, value) in &context.inputs.headers {
        let taken = parameters.iter().any(|parameter| {
            parameter.kind() == ParameterKind::Header && parameter.name().eq_ignore_ascii_case(name)
        });
        if !taken {
            headers.push((name.clone(), value.clone()));
        }
    }
    let takes_body = parameters.iter().any(|parameter| {
        matches!(
            parameter.kind(),
            ParameterKind::Body | ParameterKind::BodyField
        )
    });
    // A caller body no parameter takes is sent whole.
    if body.is_none()
        && !text_body
        && let Some(input) = &context.inputs.body
        && !takes_body
    {
        body = Some(input.clone());
    }
    let url = build_url(context, resource, &path_values, &query)?;
    // `${configuration.KEY}` of a secret key written in the `vendorPath` itself.
    for key in resource.vendor_path().keys() {
        if context.connector.is_secret_key(key)
            && let Some(value) = context.configuration.get(key).and_then(text_of)
        {
            let encoded = engine_spec::template::percent_encode(&value).into_owned();
            if encoded != value {
                secrets.push(SecretSlot::Path(encoded));
            }
            secrets.push(SecretSlot::Path(value));
        }
    }
    let body = if text_body {
        let template = match body {
            Some(Value::String(text)) => Some(text),
            Some(other) => Some(other.to_string()),
            None if !takes_body => context.inputs.body_text.clone(),
            None => None,
        };
        let Some(template) = template else {
            return Err(RunErrorKind::MissingInput {
                resource: resource.display_name(),
                name: "body".to_owned(),
                input: InputKind::Body,
            }
            .into());
        };
        let content_type = headers
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str());
        let escape = Escape::for_content_type(content_type);
        let named: Vec<(&str, Option<String>)> = tokens
            .iter()
            .map(|(parameter, value, _)| (parameter.vendor_name(), value.clone()))
            .collect();
        let text = fill_tokens(&template, &named, escape).map_err(|token| {
            let parameter = tokens
                .iter()
                .map(|(parameter, _, _)| *parameter)
                .find(|parameter| parameter.vendor_name() == token);
            let input = parameter
                .filter(|parameter| {
                    matches!(
                        parameter.kind(),
                        ParameterKind::Query | ParameterKind::Path | ParameterKind::Form
                    )
                })
                .map(|parameter| parameter.name().to_owned());
            let error = RunError::from(RunErrorKind::UnfilledToken {
                resource: resource.display_name(),
                token,
                input,
            });
            match parameter {
                Some(parameter) => error.at(parameter.location()),
                None => error,
            }
        })?;
        if tokens.iter().any(|(_, _, secret)| *secret) {
            // The same template with `****` for every token made from a secret: what is shown.
            let shown: Vec<(&str, Option<String>)> = tokens
                .iter()
                .map(|(parameter, value, secret)| {
                    let value = if *secret {
                        Some(crate::redact::MASK.to_owned())
                    } else {
                        value.clone()
                    };
                    (parameter.vendor_name(), value)
                })
                .collect();
            if let Ok(shown) = fill_tokens(&template, &shown, escape) {
                secrets.push(SecretSlot::TextBody(shown));
            }
        }
        RequestBody::Text(text)
    } else if !parts.is_empty() {
        // Form fields join the parts as text; the client sets `Content-Type` with the boundary.
        parts.extend(form.into_iter().map(|(name, value)| Part {
            name,
            content: PartContent::Text(value),
        }));
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        RequestBody::Multipart(parts)
    } else if !form.is_empty() {
        RequestBody::Form(form)
    } else if let Some(body) = body {
        RequestBody::Json(body)
    } else {
        RequestBody::Empty
    };
    check_headers(&headers, &context.inputs.headers)?;
    Ok(PreparedRequest {
        resource: resource.display_name(),
        method: resource.vendor_method().to_owned(),
        url,
        headers,
        body,
        lifecycle: !resource.kind().is_api(),
        secrets,
    })
}

/// Checks that every header can go out as HTTP: a name that is a token (RFC 9110), a value
/// without line breaks or other control characters (a `\r\n` would end the header and start
/// another). `caller` are the `--header` inputs, to say where a bad one came from.
///
/// Fails with [`RunErrorKind::InvalidHeader`], naming the header but never showing its value.
pub(crate) fn check_headers(
    headers: &[(String, String)],
    caller: &[(String, String)],
) -> Result<(), RunError> {
    for (name, value) in headers {
        // Every header of every request passes here: the common case in one pass over bytes.
        if !name.is_empty()
            && name.bytes().all(is_token_byte)
            && !value
                .bytes()
                .any(|byte| (byte < b' ' && byte != b'\t') || byte == 0x7f)
        {
            continue;
        }
        let from_caller = caller.iter().any(|(input, _)| input == name);
        if let Some(bad) = name
            .char_indices()
            .find(|(_, character)| !is_token_character(*character))
        {
            let (at, character) = bad;
            let character = match character {
                ' ' => "a space".to_owned(),
                ':' => "`:`".to_owned(),
                other if other.is_control() => format!("`{}`", other.escape_default()),
                other => format!("`{other}`"),
            };
            return Err(RunErrorKind::InvalidHeader {
                shown: format!("name `{}…`", &name[..at]),
                problem: format!("a header name cannot hold {character}"),
                from_caller,
            }
            .into());
        }
        if name.is_empty() {
            return Err(RunErrorKind::InvalidHeader {
                shown: "``".to_owned(),
                problem: "a header needs a name".to_owned(),
                from_caller,
            }
            .into());
        }
        if value
            .bytes()
            .any(|byte| (byte < b' ' && byte != b'\t') || byte == 0x7f)
        {
            return Err(RunErrorKind::InvalidHeader {
                shown: format!("`{name}`"),
                problem: "its value holds a line break or another control character, which a header value cannot hold (the value is not shown: it may hold a secret)".to_owned(),
                from_caller,
            }
            .into());
        }
    }
    Ok(())
}

/// A character of an HTTP token (RFC 9110 5.6.2): what a header name is made of.
fn is_token_character(character: char) -> bool {
    u8::try_from(character).is_ok_and(is_token_byte)
}

/// A byte of an HTTP token.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// True when the value of `parameter` is made from a secret: a `configuration` parameter of a
/// secret key, a template reading one, or a literal credential of the connector.
fn from_secret(connector: &Connector, parameter: &Parameter) -> bool {
    match parameter.kind() {
        ParameterKind::Configuration => connector.is_secret_key(parameter.name()),
        ParameterKind::Value => {
            parameter.is_literal_credential()
                || parameter
                    .template()
                    .is_some_and(|template| template.keys().any(|key| connector.is_secret_key(key)))
        }
        _ => false,
    }
}

/// The `{name}` placeholders of the resource's `vendorPath` that no `path` parameter fills: the
/// caller's path value of the same name fills them (`--param NAME=VALUE`, or a variable bound
/// from a `METHOD:/path` selector), as element.json did.
fn unmapped_placeholders<'a>(
    resource: &'a Resource,
    parameters: &'a [&'a Parameter],
) -> impl Iterator<Item = &'a str> {
    resource
        .vendor_path()
        .placeholders()
        .iter()
        .map(|placeholder| placeholder.name.as_str())
        .filter(|name| {
            !parameters.iter().any(|parameter| {
                parameter.vendor_kind() == VendorKind::Path && parameter.vendor_name() == *name
            })
        })
}

/// The values of a URL's `{name}` placeholders: path parameters by vendor name, and path
/// variables bound from a `METHOD:/path` selector. A later value replaces an earlier one.
#[derive(Default)]
struct PathValues<'a>(Vec<(&'a str, Value)>);

impl<'a> PathValues<'a> {
    fn insert(&mut self, name: &'a str, value: Value) {
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => *known = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Values for PathValues<'_> {
    fn value(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| value)
    }

    fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }
}

/// Every `--param` must feed a parameter of the resource (or a bound path variable), and every
/// required caller input must be present.
fn check_inputs(
    context: &BuildContext<'_>,
    resource: &Resource,
    parameters: &[&Parameter],
) -> Result<(), RunError> {
    let takes_param = |parameter: &&&Parameter| {
        matches!(
            parameter.kind(),
            ParameterKind::Query
                | ParameterKind::Path
                | ParameterKind::Form
                | ParameterKind::Multipart
        )
    };
    let placeholders: Vec<&str> = unmapped_placeholders(resource, parameters).collect();
    for (name, _) in &context.inputs.params {
        let known = parameters
            .iter()
            .filter(takes_param)
            .any(|parameter| parameter.name() == name)
            || context.bound_path.iter().any(|(bound, _)| bound == name)
            || placeholders.contains(&name.as_str());
        if !known {
            let candidates: Vec<&str> = parameters
                .iter()
                .filter(takes_param)
                .map(|parameter| parameter.name())
                .chain(placeholders.iter().copied())
                .collect();
            return Err(RunErrorKind::UnknownInput {
                resource: resource.display_name(),
                name: name.clone(),
                suggestion: engine_spec::suggest::did_you_mean(name, candidates).map(str::to_owned),
            }
            .into());
        }
    }
    Ok(())
}

fn value_of(
    context: &BuildContext<'_>,
    resource: &Resource,
    parameter: &Parameter,
    template_context: &TemplateContext<'_>,
    text_body: bool,
) -> Result<Option<Value>, RunError> {
    let inputs = context.inputs;
    let found = match parameter.kind() {
        ParameterKind::Value => {
            let template = parameter
                .template()
                .expect("a validated `value` parameter has a compiled template");
            if let Some(missing) = template
                .keys()
                .find(|key| !context.configuration.get(key).is_some_and(has_text))
            {
                context.observer.event(&Event::Skipped {
                    parameter: parameter.vendor_name().to_owned(),
                    reason: format!("`{missing}` has no value yet"),
                });
                return Ok(None);
            }
            let text = template.render(template_context).map_err(|error| {
                RunError::from(RunErrorKind::Render {
                    template: template.source().to_owned(),
                    message: context.redactor.redact(&error.to_string()),
                })
                .at(parameter.location())
            })?;
            return Ok(Some(Value::String(text)));
        }
        ParameterKind::Configuration => {
            let value = context
                .configuration
                .get(parameter.name())
                .filter(|value| has_text(value));
            if value.is_none() {
                context.observer.event(&Event::Skipped {
                    parameter: parameter.vendor_name().to_owned(),
                    reason: format!("`{}` has no value yet", parameter.name()),
                });
            }
            return Ok(value.cloned());
        }
        ParameterKind::Header => inputs
            .header(parameter.name())
            .map(|value| Value::String(value.to_owned())),
        ParameterKind::Query | ParameterKind::Form | ParameterKind::Multipart => inputs
            .param(parameter.name())
            .map(|value| Value::String(value.to_owned())),
        ParameterKind::Path => inputs
            .param(parameter.name())
            .or_else(|| {
                context
                    .bound_path
                    .iter()
                    .find(|(name, _)| name == parameter.name())
                    .map(|(_, value)| value.as_str())
            })
            .map(|value| Value::String(value.to_owned())),
        // A text body's template is the caller's body as written.
        ParameterKind::Body if text_body => inputs
            .body_text
            .clone()
            .map(Value::String)
            .or_else(|| inputs.body.clone()),
        ParameterKind::Body => inputs.body.clone(),
        ParameterKind::BodyField => inputs.body.as_ref().and_then(|body| {
            parameter
                .json_path()
                .and_then(|path| path.find(body))
                .cloned()
        }),
        ParameterKind::PrevBody => context.previous.cloned(),
        ParameterKind::PrevBodyField => context.previous.and_then(|previous| {
            parameter
                .json_path()
                .and_then(|path| path.find(previous))
                .cloned()
        }),
    };
    if found.is_none() && parameter.required() {
        let input = match parameter.kind() {
            ParameterKind::Header => InputKind::Header,
            ParameterKind::Body | ParameterKind::BodyField => InputKind::Body,
            _ => InputKind::Param,
        };
        return Err(RunError::from(RunErrorKind::MissingInput {
            resource: resource.display_name(),
            name: parameter.name().to_owned(),
            input,
        })
        .at(parameter.location()));
    }
    Ok(found)
}

/// Applies `dataType`: text becomes a JSON number, boolean, object or array where declared.
fn convert(
    context: &BuildContext<'_>,
    parameter: &Parameter,
    value: Value,
) -> Result<Value, RunError> {
    let redactor = context.redactor;
    let Value::String(text) = &value else {
        return Ok(value);
    };
    let bad = || {
        RunError::from(RunErrorKind::BadValue {
            name: parameter.name().to_owned(),
            data_type: parameter.data_type().as_str().to_owned(),
            value: redactor.redact(text),
        })
        .at(parameter.location())
    };
    Ok(match parameter.data_type() {
        DataType::Integer => Value::from(text.trim().parse::<i64>().map_err(|_| bad())?),
        DataType::Number => {
            let number = text.trim().parse::<f64>().map_err(|_| bad())?;
            serde_json::Number::from_f64(number).map_or(value, Value::Number)
        }
        DataType::Boolean => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        DataType::Object | DataType::Array => {
            if let Ok(parsed) = serde_json::from_str(text) {
                parsed
            } else {
                context.observer.event(&Event::SentAsText {
                    parameter: parameter.vendor_name().to_owned(),
                    reason: format!(
                        "`dataType` is `{}` but the value is not JSON: sent as text",
                        parameter.data_type()
                    ),
                });
                value
            }
        }
        DataType::String | DataType::Date => value,
    })
}

fn as_text(value: &Value) -> String {
    text_of(value).unwrap_or_default()
}

/// [`as_text`] of a value that is no longer needed: a string is moved, not copied.
fn into_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => as_text(&other),
    }
}

/// Sets `name` (dotted: `a.b.c` builds nested objects) in a JSON object.
fn set_dotted(target: &mut Value, name: &str, value: Value) {
    let mut node = target;
    let mut segments = name.split('.').peekable();
    while let Some(segment) = segments.next() {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let object = node.as_object_mut().expect("made an object just above");
        if segments.peek().is_none() {
            object.insert(segment.to_owned(), value);
            return;
        }
        node = object
            .entry(segment.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn build_url(
    context: &BuildContext<'_>,
    resource: &Resource,
    path_values: &PathValues<'_>,
    query: &[(String, String)],
) -> Result<url::Url, RunError> {
    let template = resource.vendor_path();
    if let Some(missing) = template
        .placeholders()
        .iter()
        .find(|placeholder| path_values.value(&placeholder.name).is_none())
    {
        return Err(RunError::from(RunErrorKind::MissingInput {
            resource: resource.display_name(),
            name: missing.name.clone(),
            input: InputKind::Param,
        })
        .at(resource.location()));
    }
    check_segments(resource, path_values)?;
    let path_context = TemplateContext::new(context.configuration, Some(path_values));
    let path = template.render(&path_context).map_err(|error| {
        RunError::from(RunErrorKind::Render {
            template: template.source().to_owned(),
            message: context.redactor.redact(&error.to_string()),
        })
        .at(resource.location())
    })?;
    // A query string written in `vendorPath` (`/token?grant_type=client_credentials`, OData's
    // `$filter=Name eq '{name}'`): its pairs are merged with the `query` parameters below.
    let (path, literal_query) = match path.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (path, None),
    };
    let absolute = path.starts_with("http://") || path.starts_with("https://");
    let base_url = || -> Result<&str, RunError> {
        context
            .configuration
            .get("base.url")
            .and_then(Value::as_str)
            .filter(|base| !base.is_empty())
            .ok_or_else(|| {
                RunErrorKind::MissingConfiguration {
                    missing: vec![MissingKey {
                        key: "base.url".into(),
                        description: Some("the vendor's base URL".into()),
                    }],
                }
                .into()
            })
    };
    let full = if absolute {
        path
    } else if path.is_empty() {
        // No `vendorPath`: the URL is `base.url` as it is (SOAP services, single endpoints).
        let base = base_url()?;
        fill_placeholders(base, |name| path_values.value(name).map(as_text)).into_owned()
    } else {
        let base = base_url()?;
        let base = fill_placeholders(base, |name| path_values.value(name).map(as_text));
        // Joined by hand: `format!` costs more than the rest of the joining.
        let mut full = String::with_capacity(base.len() + path.len() + 1);
        match (
            base.ends_with('/'),
            path.starts_with('/') || path.is_empty(),
        ) {
            (true, true) => full.push_str(base.trim_end_matches('/')),
            (false, false) => {
                full.push_str(&base);
                full.push('/');
            }
            _ => full.push_str(&base),
        }
        full.push_str(&path);
        full
    };
    let mut url = url::Url::parse(&full).map_err(|error| {
        RunError::from(RunErrorKind::InvalidUrl {
            url: context.redactor.redact(&full),
            message: error.to_string(),
        })
        .at(resource.location())
    })?;
    let source = if absolute {
        "the resource's `vendorPath`"
    } else {
        "`base.url`"
    };
    check_scheme(&url, source, context.redactor).map_err(|error| error.at(resource.location()))?;
    match literal_query {
        Some(literal) => url.set_query(Some(&merge_query(&literal, query))),
        None if !query.is_empty() => {
            url.query_pairs_mut().extend_pairs(query);
        }
        None => {}
    }
    Ok(url)
}

/// Checks that every `{placeholder}` that is a whole segment of the path of `vendorPath`
/// (`/items/{id}`, not `/items/{id}.json` nor a query value) gets a value that stays one
/// segment: not empty, `.` or `..`. A URL cannot carry those as a segment (`%2E%2E` is `..` to
/// every URL parser): `/items/..` would be sent as `/`. Other characters are percent-encoded
/// (`/` as `%2F`).
///
/// Fails with [`RunErrorKind::BadPathValue`].
fn check_segments(resource: &Resource, path_values: &PathValues<'_>) -> Result<(), RunError> {
    let template = resource.vendor_path();
    let source = template.source();
    let path_end = source.find('?').unwrap_or(source.len());
    for placeholder in template.placeholders() {
        // The reference's range is the name's; the braces are around it.
        let (Some(open), close) = (placeholder.start.checked_sub(1), placeholder.end + 1) else {
            continue;
        };
        if close > path_end {
            continue;
        }
        let whole = source[..open].ends_with('/')
            && matches!(source[close..].chars().next(), None | Some('/' | '?'));
        let Some(value) = path_values.value(&placeholder.name).filter(|_| whole) else {
            continue;
        };
        let shown = match as_text(value).as_str() {
            "" => "empty",
            "." => "`.`",
            ".." => "`..`",
            _ => continue,
        };
        return Err(RunError::from(RunErrorKind::BadPathValue {
            resource: resource.display_name(),
            name: placeholder.name.clone(),
            shown: shown.to_owned(),
        })
        .at(resource.location()));
    }
    Ok(())
}

/// Checks that `url` is `http` or `https`: the engine sends nothing else (`file://` would read
/// a local file, `ftp://` is not HTTP). `source` names where the URL came from (`` `base.url` ``).
///
/// Fails with [`RunErrorKind::InvalidUrl`] naming `source`.
pub(crate) fn check_scheme(
    url: &url::Url,
    source: &str,
    redactor: &Redactor,
) -> Result<(), RunError> {
    if matches!(url.scheme(), "http" | "https") {
        return Ok(());
    }
    Err(RunErrorKind::InvalidUrl {
        url: redactor.redact(url.as_str()),
        message: format!(
            "{source} is a `{}:` address; the engine sends only `http://` and `https://` requests",
            url.scheme()
        ),
    }
    .into())
}

/// The query string of a `vendorPath` query `literal` (pairs kept as written: placeholders are
/// already filled and percent-encoded) merged with the `query` parameters: a parameter with the
/// name of a literal pair replaces it in place, the others follow, `application/x-www-form-urlencoded`
/// like every query parameter.
fn merge_query(literal: &str, query: &[(String, String)]) -> String {
    let encode =
        |text: &str| -> String { url::form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let mut used = vec![false; query.len()];
    let mut pairs: Vec<String> = Vec::new();
    for pair in literal.split('&').filter(|pair| !pair.is_empty()) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let replacement = query
            .iter()
            .enumerate()
            .filter(|(index, (query_name, _))| !used[*index] && *query_name == decoded)
            .map(|(index, _)| index)
            .next_back();
        match replacement {
            Some(index) => {
                // Every parameter of that name is taken; the last one is sent.
                for (other, (query_name, _)) in query.iter().enumerate() {
                    if *query_name == decoded {
                        used[other] = true;
                    }
                }
                // The name as the connector wrote it (`$top`), the caller's value.
                pairs.push(format!("{name}={}", encode(&query[index].1)));
            }
            None => pairs.push(pair.to_owned()),
        }
    }
    for (index, (name, value)) in query.iter().enumerate() {
        if !used[index] {
            pairs.push(format!("{}={}", encode(name), encode(value)));
        }
    }
    pairs.join("&")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn vendor_path_queries_merge_with_query_parameters() {
        let query = [
            ("limit".to_owned(), "5".to_owned()),
            ("grant_type".to_owned(), "a b".to_owned()),
        ];
        assert_eq!(
            merge_query(
                "grant_type=client_credentials&$filter=Name eq 'x%20y'",
                &query
            ),
            "grant_type=a+b&$filter=Name eq 'x%20y'&limit=5"
        );
        assert_eq!(merge_query("a=1&&b", &[]), "a=1&b");
    }

    #[test]
    fn headers_that_http_would_misread_are_refused_without_their_value() {
        let header = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
        assert!(check_headers(&header("X-A", "a b\tc é"), &[]).is_ok());
        for (name, value, message) in [
            (
                "X-A",
                "a\r\nB: 1",
                "header `X-A` cannot be sent: its value holds a line break",
            ),
            (
                "X-A",
                "a\u{0}",
                "header `X-A` cannot be sent: its value holds a line break",
            ),
            (
                "Bad Name",
                "1",
                "header name `Bad…` cannot be sent: a header name cannot hold a space",
            ),
            (
                "Authorization: Bearer s3cr3t",
                "=",
                "header name `Authorization…` cannot be sent: a header name cannot hold `:`",
            ),
            (
                "X\nY",
                "1",
                "header name `X…` cannot be sent: a header name cannot hold `\\n`",
            ),
        ] {
            let error = check_headers(&header(name, value), &header(name, value)).unwrap_err();
            let text = error.to_string();
            assert!(text.starts_with(message), "{text}");
            assert!(!text.contains("s3cr3t") && !text.contains("B: 1"), "{text}");
            assert!(matches!(
                error.kind(),
                RunErrorKind::InvalidHeader {
                    from_caller: true,
                    ..
                }
            ));
        }
    }

    #[test]
    fn dotted_names_build_nested_objects() {
        let mut body = Value::Null;
        set_dotted(&mut body, "credentials.user", json!("u"));
        set_dotted(&mut body, "credentials.secret", json!("s"));
        set_dotted(&mut body, "top", json!(1));
        assert_eq!(
            body,
            json!({"credentials": {"user": "u", "secret": "s"}, "top": 1})
        );
    }
}
