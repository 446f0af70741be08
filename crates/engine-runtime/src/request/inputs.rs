//! What the caller gives a run (`--param`, `--header`, `--body`, files), and the checks on it
//! before anything is built: every input feeds a parameter, every required configuration key is
//! there. The runtime reads no file: the caller reads them ([`InputFile`]).

use engine_spec::Connector;
use serde_json::Value;

use crate::configuration::Configuration;
use crate::observer::Observer;
use crate::redact::Redactor;
use crate::run_error::MissingKey;
use crate::value::has_text;

/// What the caller passes to a run: `--param`, `--header`, `--body`, and the files of
/// `multipart` inputs.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Query, path, form and multipart inputs by parameter `name`, and values of `{name}`
    /// placeholders of `vendorPath` that no parameter fills.
    pub params: Vec<(String, String)>,
    /// Header inputs by parameter `name`; headers no parameter takes are sent as they are.
    pub headers: Vec<(String, String)>,
    /// The request body, when it is JSON.
    pub body: Option<Value>,
    /// The request body as written: the template of a text body (`bodyToken` resources). When
    /// it is set and [`Inputs::body`] is not, the body is not JSON, and only a resource with
    /// `bodyToken` parameters takes it.
    pub body_text: Option<String>,
    /// Files for `multipart` inputs, by parameter `name` (the CLI's `--param NAME=@FILE` and
    /// `@-`), read by the caller: a file part for a `multipart` vendor slot, else the file as
    /// the platform converted it ([`InputFile::as_json`]).
    pub files: Vec<(String, InputFile)>,
}

/// A file the caller gives for a `multipart` input.
#[derive(Clone, PartialEq, Eq)]
pub struct InputFile {
    /// The file's name without directories, sent as the part's file name.
    pub file_name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for InputFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InputFile")
            .field("file_name", &self.file_name)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl InputFile {
    /// The file as the platform handed a `multipart` input to a vendor slot other than
    /// `multipart` (a `body`): a JSON object of its `name`, its bytes in base64 as `body`, its
    /// `size` and its media `type` from the extension. That is the object the pre-request hooks
    /// of real exports read back from the vendor body (`name`, `body`, `size`, `type`).
    pub fn as_json(&self) -> Value {
        use base64::Engine as _;
        serde_json::json!({
            "name": self.file_name,
            "body": base64::engine::general_purpose::STANDARD.encode(&self.bytes),
            "size": self.bytes.len(),
            "type": media_type(&self.file_name),
        })
    }
}

/// The media type of a file name's extension; `application/octet-stream` when unknown.
fn media_type(file_name: &str) -> &'static str {
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "txt" | "text" | "log" => "text/plain",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "xml" => "application/xml",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}

impl Inputs {
    pub(super) fn file(&self, name: &str) -> Option<&InputFile> {
        self.files
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, file)| file)
    }

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
    /// A strict run: what would not be sent as on the platform (a `{webhookCallbackUrl}`
    /// without its value) fails the build instead of a `Skipped` event.
    pub(crate) strict: bool,
}
