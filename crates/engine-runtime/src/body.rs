//! Request bodies that are not JSON: `multipart/form-data` parts (`vendorType: multipart`) and
//! raw text templates filled from `bodyToken` parameters (SOAP envelopes, XML, text).

use std::fmt::Write as _;
use std::path::Path;

use crate::redact::{MASK, Redactor, is_secret_name};
use crate::run_error::{RunError, RunErrorKind};

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's (form field) name.
    pub name: String,
    /// What it carries.
    pub content: PartContent,
}

/// What a multipart [`Part`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartContent {
    /// A text field.
    Text(String),
    /// A file: its name (without directories) and its bytes.
    File {
        /// The file name sent in the part's `Content-Disposition`.
        file_name: String,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

impl Part {
    /// The part `name` for the value of the input `input`: `@-` is standard input (`stdin`,
    /// read by the caller of the run), `@PATH` a file, anything else text.
    ///
    /// Fails when the file cannot be read, or `@-` is used and standard input was not given.
    pub(crate) fn from_value(
        name: &str,
        input: &str,
        value: String,
        stdin: Option<&[u8]>,
    ) -> Result<Self, RunError> {
        let content = match value.strip_prefix('@') {
            Some("-") => {
                let Some(bytes) = stdin else {
                    return Err(RunErrorKind::InputFile {
                        name: input.to_owned(),
                        path: "-".to_owned(),
                        message: "standard input was not read".to_owned(),
                    }
                    .into());
                };
                PartContent::File {
                    file_name: name.to_owned(),
                    bytes: bytes.to_vec(),
                }
            }
            Some(path) if !path.is_empty() => {
                let bytes = fs_err::read(path).map_err(|error| RunErrorKind::InputFile {
                    name: input.to_owned(),
                    path: path.to_owned(),
                    message: io_reason(&error),
                })?;
                let file_name = Path::new(path).file_name().map_or_else(
                    || name.to_owned(),
                    |file| file.to_string_lossy().into_owned(),
                );
                PartContent::File { file_name, bytes }
            }
            _ => PartContent::Text(value),
        };
        Ok(Self {
            name: name.to_owned(),
            content,
        })
    }

    /// One line for `--dry-run`: a file as its name and size (never its bytes), a text with
    /// secrets masked.
    pub(crate) fn describe(&self, redactor: &Redactor) -> String {
        let mut line = format!("- {}: ", self.name);
        match &self.content {
            PartContent::File { file_name, bytes } => {
                let _ = write!(line, "file `{file_name}`, {} bytes", bytes.len());
            }
            PartContent::Text(_) if is_secret_name(&self.name) => line.push_str(MASK),
            PartContent::Text(text) => line.push_str(&redactor.redact(text)),
        }
        line
    }
}

/// The reason of an I/O error, without the path `fs_err` adds (the message names it already).
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => {
            std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string)
        }
    }
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
