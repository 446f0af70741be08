//! The body: JSON (the caller's, or built from `body` and `bodyField` parameters), a form, a
//! `multipart/form-data` body, or a text template (SOAP envelopes, XML, text) whose `{tokens}`
//! the `bodyToken` parameters fill, escaped for the content type (but for the connector's own
//! `value` text, inserted as written).

use engine_spec::hook::HookKind;
use engine_spec::kinds::{ParameterKind, VendorKind};
use engine_spec::{Parameter, Resource};
use serde_json::{Map, Value};

use super::inputs::BuildContext;
use super::parameters::Placed;
use crate::prepared_request::{Part, PartContent, RequestBody, SecretSlot};
use crate::redact::MASK;
use crate::run_error::{InputKind, RunError, RunErrorKind};
use crate::value::as_text;

/// Whether a `preRequest` hook (the resource's or the connector's) runs before `resource` is
/// sent: it may write a body the export gives no template for.
fn writes_body(context: &BuildContext<'_>, resource: &Resource) -> bool {
    resource
        .hooks()
        .iter()
        .chain(context.connector.hooks())
        .any(|hook| hook.kind() == HookKind::PreRequest)
}

/// The body of the request, from the placed parameters and the caller's body. `text_body`: the
/// body is a text template filled by the `bodyToken` parameters. Removes `Content-Type` from
/// the headers of a multipart body (the client sets it, with the boundary).
///
/// Fails when a text body has no template (and no `preRequest` hook to write it), or a token of
/// it no value.
pub(super) fn build_body(
    context: &BuildContext<'_>,
    resource: &Resource,
    parameters: &[&Parameter],
    placed: &mut Placed<'_>,
    text_body: bool,
) -> Result<RequestBody, RunError> {
    let takes_body = parameters.iter().any(|parameter| {
        matches!(
            parameter.kind(),
            ParameterKind::Body | ParameterKind::BodyField
        )
    });
    // A caller body no parameter takes is sent whole, with the fields of `bodyField`
    // parameters of the connector (a global API key) merged into it.
    if !text_body
        && let Some(input) = &context.inputs.body
        && !takes_body
    {
        placed.body = Some(match (placed.body.take(), input) {
            (Some(Value::Object(fields)), Value::Object(members)) => {
                let mut merged = members.clone();
                merged.extend(fields);
                Value::Object(merged)
            }
            (Some(fields), _) => fields,
            (None, input) => input.clone(),
        });
    }
    Ok(if text_body {
        let (template, from_caller) = match placed.body.take() {
            Some(Value::String(text)) => (Some(text), false),
            Some(other) => (Some(other.to_string()), false),
            None if !takes_body => (context.inputs.body_text.clone(), true),
            None => (None, false),
        };
        let Some(template) = template else {
            // No template anywhere: on the platform the `preRequest` hook wrote the body (a SOAP
            // envelope it builds from the configuration), and so it does here.
            if writes_body(context, resource) {
                return Ok(RequestBody::Empty);
            }
            return Err(RunErrorKind::MissingInput {
                resource: resource.display_name(),
                name: "body".to_owned(),
                input: InputKind::Body,
            }
            .into());
        };
        let content_type = placed
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str());
        let escape = Escape::for_content_type(content_type);
        // A `bodyToken` parameter of `type: value` is the connector's own text (an XML fragment
        // the template leaves out): part of the template, inserted as written, as the platform
        // did, unless it carries a secret.
        let verbatim = |parameter: &Parameter, value: &Option<Value>, secret: bool| {
            parameter.kind() == ParameterKind::Value && value.is_some() && !secret
        };
        let written: Vec<(&str, Option<&Value>)> = placed
            .tokens
            .iter()
            .filter(|(parameter, value, secret)| verbatim(parameter, value, *secret))
            .map(|(parameter, value, _)| (parameter.vendor_name(), value.as_ref()))
            .collect();
        let template = match fill_tokens(&template, &written, Escape::Raw) {
            Ok(filled) if !written.is_empty() => filled,
            _ => template,
        };
        // A `bodyToken` parameter of `type: body` is the object input itself, not a token.
        let mut named: Vec<(&str, Option<&Value>)> = placed
            .tokens
            .iter()
            .filter(|(parameter, _, _)| parameter.kind() != ParameterKind::Body || from_caller)
            .filter(|(parameter, value, secret)| !verbatim(parameter, value, *secret))
            .map(|(parameter, value, _)| (parameter.vendor_name(), value.as_ref()))
            .collect();
        // Object input: a template of the connector's takes the members of the caller's JSON
        // object as its `{Field}` tokens (after the `bodyToken` parameters of the same name).
        // Tokens nothing fills stay as written.
        if !from_caller && let Some(Value::Object(members)) = &context.inputs.body {
            for (name, value) in members {
                if !named.iter().any(|(token, _)| token == name) {
                    named.push((name, Some(value)));
                }
            }
        }
        let text = fill_tokens(&template, &named, escape).map_err(|token| {
            let parameter = placed
                .tokens
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
        if placed.tokens.iter().any(|(_, _, secret)| *secret) {
            // The same template with `****` for every token made from a secret: what is shown.
            let mask = Value::String(MASK.to_owned());
            let shown: Vec<(&str, Option<&Value>)> = named
                .iter()
                .map(|(name, value)| {
                    let secret = placed
                        .tokens
                        .iter()
                        .any(|(parameter, _, secret)| *secret && parameter.vendor_name() == *name);
                    (*name, if secret { Some(&mask) } else { *value })
                })
                .collect();
            if let Ok(shown) = fill_tokens(&template, &shown, escape) {
                placed.secrets.push(SecretSlot::TextBody(shown));
            }
        }
        RequestBody::Text(text)
    } else if !placed.parts.is_empty() {
        let mut parts = std::mem::take(&mut placed.parts);
        // Form fields join the parts as text; the client sets `Content-Type` with the boundary.
        parts.extend(
            std::mem::take(&mut placed.form)
                .into_iter()
                .map(|(name, value)| Part {
                    name,
                    content: PartContent::Text(value),
                }),
        );
        placed
            .headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        RequestBody::Multipart(parts)
    } else if !placed.form.is_empty() {
        RequestBody::Form(std::mem::take(&mut placed.form))
    } else if let Some(body) = placed.body.take() {
        // A caller's file as the body (a `multipart` input of `vendorType: body`) is the JSON
        // the platform converted it to; the connector's `Content-Type: multipart/form-data`
        // asked for that conversion and does not describe the body sent.
        let file_body = parameters.iter().any(|parameter| {
            parameter.kind() == ParameterKind::Multipart
                && parameter.vendor_kind() == VendorKind::Body
                && context.inputs.file(parameter.name()).is_some()
        });
        if file_body {
            placed.headers.retain(|(name, value)| {
                !(name.eq_ignore_ascii_case("content-type")
                    && value
                        .trim_start()
                        .to_ascii_lowercase()
                        .starts_with("multipart/"))
            });
        }
        // The request part of a `request|response` `rootKey` wraps the JSON body.
        match resource.request_root() {
            Some(root) => {
                let mut wrapped = Map::new();
                wrapped.insert(root.to_owned(), body);
                RequestBody::Json(Value::Object(wrapped))
            }
            None => RequestBody::Json(body),
        }
    } else {
        RequestBody::Empty
    })
}

/// How `bodyToken` values are escaped in a text body, from the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// `& < > " '` as XML entities (`Content-Type` contains `xml`).
    Xml,
    /// As the inside of a JSON string (`Content-Type` contains `json`).
    Json,
    /// As they are.
    Raw,
}

impl Escape {
    /// The escaping for a `Content-Type` (none when there is no `Content-Type`).
    pub(crate) fn for_content_type(content_type: Option<&str>) -> Self {
        let content_type = content_type.unwrap_or_default().to_ascii_lowercase();
        if content_type.contains("xml") {
            Self::Xml
        } else if content_type.contains("json") {
            Self::Json
        } else {
            Self::Raw
        }
    }

    /// Writes `value` at a token. `in_string`: the token stands inside a JSON string (only
    /// [`Escape::Json`] asks). Outside a string, a JSON template gets the value as JSON: a
    /// number, an object, or text that is JSON (`{"k": 1}`) as it is, other text quoted.
    fn apply(self, value: &Value, in_string: bool, output: &mut String) {
        match (self, value) {
            (Self::Json, Value::String(text)) if !in_string => {
                match serde_json::from_str::<Value>(text) {
                    Ok(_) => output.push_str(text.trim()),
                    Err(_) => output.push_str(&value.to_string()),
                }
            }
            (Self::Json, other) if !in_string && !other.is_null() => {
                output.push_str(&other.to_string());
            }
            _ => self.apply_text(&as_text(value), output),
        }
    }

    fn apply_text(self, value: &str, output: &mut String) {
        match self {
            Self::Raw => output.push_str(value),
            Self::Xml => {
                for character in value.chars() {
                    match character {
                        '&' => output.push_str("&amp;"),
                        '<' => output.push_str("&lt;"),
                        '>' => output.push_str("&gt;"),
                        '"' => output.push_str("&quot;"),
                        '\'' => output.push_str("&apos;"),
                        other => output.push(other),
                    }
                }
            }
            Self::Json => {
                let quoted = Value::String(value.to_owned()).to_string();
                output.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
}

/// Fills the `{name}` tokens of a text body: a token named in `tokens` gets its value (escaped
/// for the content type; in a JSON template, a token outside a string gets the value as JSON),
/// other braces stay as written.
///
/// Fails with the name of the first token whose value is missing (`None`).
pub(crate) fn fill_tokens(
    template: &str,
    tokens: &[(&str, Option<&Value>)],
    escape: Escape,
) -> Result<String, String> {
    let mut output = String::with_capacity(template.len() + 64);
    let mut rest = template;
    // Whether the template text written so far ends inside a JSON string.
    let mut in_string = false;
    let track = |text: &str, in_string: &mut bool| {
        if escape != Escape::Json {
            return;
        }
        let mut escaped = false;
        for byte in text.bytes() {
            match byte {
                b'\\' if *in_string => escaped = !escaped,
                b'"' if !escaped => *in_string = !*in_string,
                _ => escaped = false,
            }
        }
    };
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name = after.find('}').map(|close| &after[..close]);
        let found = name.and_then(|name| tokens.iter().find(|(token, _)| *token == name));
        let Some((name, value)) = found else {
            track(&rest[..=open], &mut in_string);
            output.push_str(&rest[..=open]);
            rest = after;
            continue;
        };
        let Some(value) = value else {
            return Err((*name).to_owned());
        };
        track(&rest[..open], &mut in_string);
        output.push_str(&rest[..open]);
        escape.apply(value, in_string, &mut output);
        rest = &after[name.len() + 1..];
    }
    output.push_str(rest);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tokens_are_escaped_for_the_content_type() {
        let (a, b) = (json!("1 < 2 & 'x'"), json!("\"q\"\n"));
        let tokens = [("a", Some(&a)), ("b", Some(&b))];
        let xml = fill_tokens("<a>{a}</a><b>{b}</b>{other}", &tokens, Escape::Xml).unwrap();
        assert_eq!(
            xml,
            "<a>1 &lt; 2 &amp; &apos;x&apos;</a><b>&quot;q&quot;\n</b>{other}"
        );
        let json = fill_tokens(r#"{"a": "{a}", "b": "{b}"}"#, &tokens, Escape::Json).unwrap();
        assert_eq!(json, r#"{"a": "1 < 2 & 'x'", "b": "\"q\"\n"}"#);
        let raw = fill_tokens("{a}{b", &tokens, Escape::Raw).unwrap();
        assert_eq!(raw, "1 < 2 & 'x'{b");
    }

    #[test]
    fn a_token_outside_a_json_string_gets_the_value_as_json() {
        let (object, text, number, json_text) = (
            json!({"k": [1, "a"]}),
            json!("plain \"text\""),
            json!(7),
            json!(r#"{"k": 1}"#),
        );
        let tokens = [
            ("o", Some(&object)),
            ("t", Some(&text)),
            ("n", Some(&number)),
            ("j", Some(&json_text)),
        ];
        let template = r#"{"o": {o}, "t": {t}, "n": {n}, "j": {j}, "in": "{o} \" {t}"}"#;
        let filled = fill_tokens(template, &tokens, Escape::Json).unwrap();
        assert_eq!(
            filled,
            r#"{"o": {"k":[1,"a"]}, "t": "plain \"text\"", "n": 7, "j": {"k": 1}, "in": "{\"k\":[1,\"a\"]} \" plain \"text\""}"#
        );
        let parsed: Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(parsed["o"], object);
    }

    #[test]
    fn a_token_without_value_is_named() {
        let one = json!("1");
        let tokens = [("a", Some(&one)), ("b", None)];
        assert_eq!(
            fill_tokens("{a}{b}", &tokens, Escape::Raw),
            Err("b".to_owned())
        );
    }

    #[test]
    fn escaping_follows_the_content_type() {
        assert_eq!(
            Escape::for_content_type(Some("text/xml; charset=utf-8")),
            Escape::Xml
        );
        assert_eq!(
            Escape::for_content_type(Some("application/soap+xml")),
            Escape::Xml
        );
        assert_eq!(
            Escape::for_content_type(Some("application/json")),
            Escape::Json
        );
        assert_eq!(Escape::for_content_type(None), Escape::Raw);
    }
}
