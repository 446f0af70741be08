//! The body: JSON (the caller's, or built from `body` and `bodyField` parameters), a form, a
//! `multipart/form-data` body, or a text template (SOAP envelopes, XML, text) whose `{tokens}`
//! the `bodyToken` parameters fill, escaped for the content type.

use engine_spec::kinds::ParameterKind;
use engine_spec::{Parameter, Resource};
use serde_json::Value;

use super::inputs::BuildContext;
use super::parameters::Placed;
use crate::prepared_request::{Part, PartContent, RequestBody, SecretSlot};
use crate::run_error::{InputKind, RunError, RunErrorKind};

/// The body of the request, from the placed parameters and the caller's body. `text_body`: the
/// body is a text template filled by the `bodyToken` parameters. Removes `Content-Type` from
/// the headers of a multipart body (the client sets it, with the boundary).
///
/// Fails when a text body has no template, or a token of it no value.
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
    // A caller body no parameter takes is sent whole.
    if placed.body.is_none()
        && !text_body
        && let Some(input) = &context.inputs.body
        && !takes_body
    {
        placed.body = Some(input.clone());
    }
    Ok(if text_body {
        let template = match placed.body.take() {
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
        let content_type = placed
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str());
        let escape = Escape::for_content_type(content_type);
        let named: Vec<(&str, Option<String>)> = placed
            .tokens
            .iter()
            .map(|(parameter, value, _)| (parameter.vendor_name(), value.clone()))
            .collect();
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
            let shown: Vec<(&str, Option<String>)> = placed
                .tokens
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
        RequestBody::Json(body)
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

    fn apply(self, value: &str, output: &mut String) {
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
                let quoted = serde_json::Value::String(value.to_owned()).to_string();
                output.push_str(&quoted[1..quoted.len() - 1]);
            }
        }
    }
}

/// Fills the `{name}` tokens of a text body: a token named by a `bodyToken` parameter gets its
/// value (escaped), other braces stay as written.
///
/// Fails with the name of the first token whose parameter has no value.
pub(crate) fn fill_tokens(
    template: &str,
    tokens: &[(&str, Option<String>)],
    escape: Escape,
) -> Result<String, String> {
    let mut output = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name = after.find('}').map(|close| &after[..close]);
        let found = name.and_then(|name| tokens.iter().find(|(token, _)| *token == name));
        let Some((name, value)) = found else {
            output.push_str(&rest[..=open]);
            rest = after;
            continue;
        };
        let Some(value) = value else {
            return Err((*name).to_owned());
        };
        output.push_str(&rest[..open]);
        escape.apply(value, &mut output);
        rest = &after[name.len() + 1..];
    }
    output.push_str(rest);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_escaped_for_the_content_type() {
        let tokens = [
            ("a", Some("1 < 2 & 'x'".to_owned())),
            ("b", Some("\"q\"\n".to_owned())),
        ];
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
    fn a_token_without_value_is_named() {
        let tokens = [("a", Some("1".to_owned())), ("b", None)];
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
