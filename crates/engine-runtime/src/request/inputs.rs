//! What the caller gives a run (`--param`, `--header`, `--body`), and the checks on it before
//! anything is built: every input feeds a parameter, every required configuration key is there.

use std::path::Path;

use engine_spec::Connector;
use serde_json::Value;

use crate::configuration::Configuration;
use crate::observer::Observer;
use crate::prepared_request::{Part, PartContent};
use crate::redact::Redactor;
use crate::run_error::{MissingKey, RunError, RunErrorKind};
use crate::value::has_text;

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
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
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

/// Everything [`build`](super::build) reads.
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

/// The multipart part `name` for the value of the input `input`: `@-` is standard input (`stdin`,
/// read by the caller of the run), `@PATH` a file, anything else text.
///
/// Fails when the file cannot be read, or `@-` is used and standard input was not given.
pub(super) fn part_from_value(
    name: &str,
    input: &str,
    value: String,
    stdin: Option<&[u8]>,
) -> Result<Part, RunError> {
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
    Ok(Part {
        name: name.to_owned(),
        content,
    })
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
