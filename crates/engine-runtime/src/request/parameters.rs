//! Parameters: where each value comes from (the caller, the configuration, a template, the
//! previous response of a chain), its `dataType`, and the vendor slot it goes to.

use engine_spec::kinds::{DataType, ParameterKind, VendorKind};
use engine_spec::template::TemplateContext;
use engine_spec::{Connector, Parameter, Resource};
use serde_json::{Map, Value};

use super::inputs::BuildContext;
use super::url::{PathValues, unmapped_placeholders};
use crate::ceql::{Converter, Expression};
use crate::observer::Event;
use crate::prepared_request::{Part, PartContent, SecretSlot};
use crate::run_error::{InputKind, RunError, RunErrorKind};
use crate::value::{as_text, has_text, into_text, text_view};

/// The parameters of a request, each in its vendor slot.
#[derive(Default)]
pub(super) struct Placed<'a> {
    pub(super) headers: Vec<(String, String)>,
    pub(super) query: Vec<(String, String)>,
    pub(super) form: Vec<(String, String)>,
    pub(super) parts: Vec<Part>,
    /// `bodyToken` parameters of a text body, with their values and whether they are secret.
    pub(super) tokens: Vec<(&'a Parameter, Option<Value>, bool)>,
    pub(super) secrets: Vec<SecretSlot>,
    pub(super) path_values: PathValues<'a>,
    pub(super) body: Option<Value>,
}

/// Places every parameter of `parameters` in its slot. `text_body`: the body is a text template
/// whose `{tokens}` the `bodyToken` parameters fill.
///
/// Fails when a required input is missing, a value does not convert or a template does not
/// render.
pub(super) fn place<'a>(
    context: &'a BuildContext<'_>,
    resource: &'a Resource,
    parameters: &'a [&'a Parameter],
    text_body: bool,
) -> Result<Placed<'a>, RunError> {
    let template_context = TemplateContext::new(context.configuration, None);
    let mut placed = Placed::default();
    for (name, value) in context.bound_path {
        placed
            .path_values
            .insert(name, Value::String(value.clone()));
    }
    // `{name}` placeholders no parameter fills take the caller's value of the same name.
    for placeholder in unmapped_placeholders(resource, parameters) {
        if let Some(value) = context.inputs.param(placeholder) {
            placed
                .path_values
                .insert(placeholder, Value::String(value.to_owned()));
        }
    }
    for &parameter in parameters {
        let found = value_of(context, resource, parameter, &template_context, text_body)?;
        let secret = from_secret(context.connector, parameter);
        if text_body && parameter.vendor_kind() == VendorKind::BodyToken {
            let value = found
                .map(|value| convert(context, parameter, value))
                .transpose()?;
            placed.tokens.push((parameter, value, secret));
            continue;
        }
        let Some(value) = found else {
            continue;
        };
        let vendor_name = parameter.vendor_name();
        // `converter:NAME`: the caller's CEQL `where`, converted to what the vendor reads;
        // never sent under its own name.
        if let Some(converter) = vendor_name.strip_prefix("converter:") {
            convert_where(context, parameter, converter, &value, &mut placed)?;
            continue;
        }
        if parameter.vendor_kind() == VendorKind::Multipart {
            // A caller's file is a file part; any other value a text part.
            let file = (parameter.kind() == ParameterKind::Multipart)
                .then(|| context.inputs.file(parameter.name()))
                .flatten();
            let carried = match file {
                Some(file) => PartContent::File {
                    file_name: file.file_name.clone(),
                    bytes: file.bytes.clone(),
                },
                None => PartContent::Text(into_text(value)),
            };
            placed.parts.push(Part {
                name: vendor_name.to_owned(),
                content: carried,
            });
            if secret {
                placed
                    .secrets
                    .push(SecretSlot::Form(vendor_name.to_owned()));
            }
            continue;
        }
        // Text stays text: `convert` only for the types it changes.
        let value = match parameter.data_type() {
            DataType::String | DataType::Date => value,
            _ => convert(context, parameter, value)?,
        };
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
            let slot = match parameter.vendor_kind() {
                VendorKind::Header => Some(SecretSlot::header(
                    vendor_name,
                    &text_view(&value),
                    parameter
                        .template()
                        .map_or("", |template| template.source()),
                )),
                VendorKind::Query => Some(SecretSlot::Query(vendor_name.to_owned())),
                VendorKind::Path => Some(SecretSlot::Path(
                    engine_spec::template::percent_encode(&text_view(&value)).into_owned(),
                )),
                VendorKind::Form => Some(SecretSlot::Form(vendor_name.to_owned())),
                VendorKind::Body => Some(SecretSlot::BodyField(String::new())),
                VendorKind::BodyField | VendorKind::BodyToken => {
                    Some(SecretSlot::BodyField(vendor_name.to_owned()))
                }
                VendorKind::Multipart | VendorKind::NoOp | VendorKind::Value => None,
            };
            if let Some(slot) = slot {
                placed.secrets.push(slot);
            }
        }
        match parameter.vendor_kind() {
            VendorKind::Header => placed
                .headers
                .push((vendor_name.to_owned(), into_text(value))),
            VendorKind::Query => placed
                .query
                .push((vendor_name.to_owned(), into_text(value))),
            // A connector's literal may be written percent-encoded (`CBuser12%40CB10012`): it
            // is decoded here, so that the URL encodes it once, not twice (`%2540`).
            VendorKind::Path if parameter.kind() == ParameterKind::Value => {
                let text = into_text(value);
                let decoded = percent_encoding::percent_decode_str(&text).decode_utf8_lossy();
                placed
                    .path_values
                    .insert(vendor_name, Value::String(decoded.into_owned()));
            }
            VendorKind::Path => {
                placed
                    .path_values
                    .insert(vendor_name, Value::String(into_text(value)));
            }
            // A JSON object for a form: one field per member, as the platform sent it.
            VendorKind::Form => match value {
                Value::Object(members) => placed.form.extend(
                    members
                        .into_iter()
                        .map(|(name, member)| (name, into_text(member))),
                ),
                value => placed.form.push((vendor_name.to_owned(), into_text(value))),
            },
            // The fields `bodyField` parameters placed before (a global API key) are merged
            // into a JSON object body.
            VendorKind::Body => {
                placed.body = Some(match (placed.body.take(), value) {
                    (Some(Value::Object(fields)), Value::Object(mut members)) => {
                        members.extend(fields);
                        Value::Object(members)
                    }
                    (_, value) => value,
                });
            }
            VendorKind::BodyField | VendorKind::BodyToken => {
                let object = placed.body.get_or_insert_with(|| Value::Object(Map::new()));
                set_dotted(object, vendor_name, value);
            }
            // Handled above; the model turns `vendorType: value` into a header.
            VendorKind::Multipart | VendorKind::NoOp | VendorKind::Value => {}
        }
    }
    Ok(placed)
}

/// Places the query parameters the CEQL `value` of `parameter` becomes under `converter`. A
/// converter the engine lacks sends nothing: the run warned about it before it started
/// ([`crate::differences`]).
///
/// Fails when the expression does not parse, or the converter cannot say it.
fn convert_where(
    context: &BuildContext<'_>,
    parameter: &Parameter,
    converter: &str,
    value: &Value,
    placed: &mut Placed<'_>,
) -> Result<(), RunError> {
    let bad = |data_type: String| {
        RunError::from(RunErrorKind::BadValue {
            name: parameter.name().to_owned(),
            data_type,
            value: context.redactor.redact(&as_text(value)),
        })
        .at(parameter.location())
    };
    // A converter the engine lacks: the run already said so (W0501 at run, from the
    // connector's list of what it does not execute), and the parameter is not sent.
    let Some(known) = Converter::named(converter) else {
        return Ok(());
    };
    let expression = Expression::parse(&as_text(value))
        .map_err(|error| bad(format!("CEQL expression ({error})")))?;
    let pairs = known
        .convert(&expression)
        .map_err(|problem| bad(format!("`where` for this resource: {problem}")))?;
    placed.query.extend(pairs);
    Ok(())
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

/// Whether a `--param` of `parameter`'s name feeds it: a query, path, form or multipart
/// parameter (not a `value`, a `configuration` or a header).
pub(crate) fn takes_param(parameter: &Parameter) -> bool {
    matches!(
        parameter.kind(),
        ParameterKind::Query | ParameterKind::Path | ParameterKind::Form | ParameterKind::Multipart
    )
}

/// Every `--param` must feed a parameter of the resource (or a bound path variable), and every
/// required caller input must be present.
pub(super) fn check_inputs(
    context: &BuildContext<'_>,
    resource: &Resource,
    parameters: &[&Parameter],
) -> Result<(), RunError> {
    let takes_param = |parameter: &&&Parameter| takes_param(parameter);
    let placeholders: Vec<&str> = unmapped_placeholders(resource, parameters).collect();
    let files = context.inputs.files.iter().map(|(name, _)| name);
    for name in context
        .inputs
        .params
        .iter()
        .map(|(name, _)| name)
        .chain(files)
    {
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
            if let Some(text) = template.literal_text() {
                return Ok(Some(Value::String(text.to_owned())));
            }
            if let Some(missing) = template
                .keys()
                .find(|key| !context.configuration.get(key).is_some_and(has_text))
            {
                // The platform always had its webhook URL: a strict run does not go without.
                if context.strict && missing == engine_spec::WEBHOOK_CALLBACK_KEY {
                    return Err(RunError::from(RunErrorKind::NotFaithful {
                        resource: resource.display_name(),
                        count: 1,
                    })
                    .at(parameter.location()));
                }
                context.observer.event(&Event::Skipped {
                    parameter: parameter.vendor_name().to_owned(),
                    key: missing.to_owned(),
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
                    key: parameter.name().to_owned(),
                    reason: format!("`{}` has no value yet", parameter.name()),
                });
            }
            return Ok(value.cloned());
        }
        ParameterKind::Header => inputs
            .header(parameter.name())
            .map(|value| Value::String(value.to_owned())),
        ParameterKind::Query | ParameterKind::Form => inputs
            .param(parameter.name())
            .map(|value| Value::String(value.to_owned())),
        // A file goes to a part as it is (`place` takes its bytes; its name stands for it
        // here), to any other slot as the platform converted it: an object of its name,
        // base64 bytes, size and media type.
        ParameterKind::Multipart => match inputs.file(parameter.name()) {
            Some(file) if parameter.vendor_kind() == VendorKind::Multipart => {
                Some(Value::String(file.file_name.clone()))
            }
            Some(file) => Some(file.as_json()),
            None => inputs
                .param(parameter.name())
                .map(|value| Value::String(value.to_owned())),
        },
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
        // A whole number stays whole: `7` is sent as `7`, not `7.0`.
        DataType::Number if text.trim().parse::<i64>().is_ok() => {
            Value::from(text.trim().parse::<i64>().map_err(|_| bad())?)
        }
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

/// Sets `name` (dotted: `a.b.c` builds nested objects) in a JSON object.
pub(super) fn set_dotted(target: &mut Value, name: &str, value: Value) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
