//! The pipeline from a file to a [`Connector`]: parse, check the schema, decode the wire types,
//! then validate their meaning into the model. Every problem is collected; nothing stops at the
//! first one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::check;
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::hook::{Hook, HookKind};
use crate::jsonpath::JsonPath;
use crate::kinds::{
    AuthenticationType, ConfigType, DataType, Grant, ParameterKind, RefreshIn, SessionManagement,
    Source, VendorKind,
};
use crate::model::{
    AuthKind, Authentication, ConfigProperty, Connector, ConnectorId, Parameter, Protocol,
    RESERVED_KEYS, Resource, Session,
};
use crate::pointer::JsonPointer;
use crate::raw::{RawConnector, RawParameter, RawResource};
use crate::schema;
use crate::source::{Location, Position, SourceFile, Span};
use crate::source_map::SourceMap;
use crate::suggest;
use crate::template::{Template, TemplateKind};

/// The default skew: refresh this long before the token expires.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(30);
/// The lifetime assumed when the vendor sends no `expires_in`.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_hours(1);

/// The result of validating one file: the diagnostics, and the connector when there is no error.
#[derive(Debug)]
pub struct Report {
    source: Arc<SourceFile>,
    diagnostics: Vec<Diagnostic>,
    spans: Vec<Option<Span>>,
    connector: Option<Connector>,
}

impl Report {
    /// The file.
    pub fn source(&self) -> &SourceFile {
        &self.source
    }

    /// Every diagnostic, in file order.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The byte range of each diagnostic in the file, in the same order as
    /// [`Report::diagnostics`].
    pub fn span(&self, index: usize) -> Option<Span> {
        self.spans.get(index).copied().flatten()
    }

    /// The 1-based line and column of each diagnostic.
    pub fn position(&self, index: usize) -> Position {
        self.span(index)
            .map_or(Position { line: 1, column: 1 }, |span| {
                self.source.position(span.start)
            })
    }

    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|diagnostic| diagnostic.severity == Severity::Error)
    }

    /// True when the file is JSON but not a connector at all (no `resources`: an instance file,
    /// a test, a request body): its only diagnostic is E0004 at the document. Directory walks
    /// skip such files instead of failing on them.
    pub fn is_not_a_connector(&self) -> bool {
        matches!(self.diagnostics.as_slice(), [diagnostic]
            if diagnostic.code == Code::NotAConnector && diagnostic.location.pointer.as_str().is_empty())
    }

    /// The connector, when the file has no error.
    pub fn connector(&self) -> Option<&Connector> {
        self.connector.as_ref()
    }

    /// Takes the connector out, when the file has no error.
    pub fn into_connector(self) -> Option<Connector> {
        self.connector
    }
}

/// Reads and validates the connector at `path`.
///
/// Fails only when the file cannot be read; every problem in its content is a diagnostic.
pub fn load(path: &Path) -> std::io::Result<Report> {
    Ok(validate(SourceFile::load(path)?))
}

/// Validates a connector's text.
pub fn validate(source: SourceFile) -> Report {
    let source = Arc::new(source);
    let file = source.path().to_owned();
    // A file that conforms to the schema is decoded without a `Value`; any other takes the path
    // that reports why. The fast path refuses a key an object repeats, so only files on the
    // other path are scanned for them.
    let conforming = schema::decode_conforming(source.text());
    let scan_duplicates = conforming.is_none();
    let (diagnostics, connector) = match conforming {
        Some(raw) => build_and_check(&source, &raw, Vec::new()),
        None => match serde_json::from_str::<Value>(source.text()) {
            Err(error) => {
                let mut offset = source.offset(Position {
                    line: error.line(),
                    column: error.column(),
                });
                let message = error.to_string();
                let mut message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(message, _)| message)
                    .to_owned();
                let mut label = "here";
                // A missing comma is found at the next value; point after the value that needs
                // it, as rustc and Hurl do.
                if message.starts_with("expected `,` or `") {
                    let before = source.text()[..offset.min(source.text().len())].trim_end();
                    if let Some(last) = before.chars().next_back() {
                        offset = before.len() - last.len_utf8();
                        "expected `,` after this value".clone_into(&mut message);
                        label = "a `,` is missing after this";
                    }
                }
                let diagnostic = Diagnostic::new(
                    Code::InvalidJson,
                    Location::new(&file, JsonPointer::root()),
                    format!("invalid JSON: {message}"),
                )
                .with_label(label)
                .with_help(
                    "fix the syntax; connector files are strict JSON (no comments, no trailing \
                     commas)",
                );
                return Report {
                    spans: vec![Some(Span {
                        start: offset,
                        // One character, whatever its width (the renderer slices on characters).
                        end: offset
                            + source.text()[offset..]
                                .chars()
                                .next()
                                .map_or(0, char::len_utf8),
                    })],
                    source,
                    diagnostics: vec![diagnostic],
                    connector: None,
                };
            }
            Ok(document) => decode_and_validate(&source, &document),
        },
    };
    let mut diagnostics = diagnostics;
    let duplicates = if scan_duplicates {
        crate::parse::duplicates(source.text())
    } else {
        Vec::new()
    };
    diagnostics.extend(duplicates.into_iter().map(|duplicate| {
        Diagnostic::new(
            Code::DuplicateKey,
            Location::new(&file, duplicate.pointer),
            format!("key `{}` is written twice in this object", duplicate.key),
        )
        .with_label("this value wins")
    }));
    let mut diagnostics = merge_repeated(diagnostics);
    diagnostics.sort_by(|a, b| a.location.pointer.cmp(&b.location.pointer));
    let spans = if diagnostics.is_empty() {
        Vec::new()
    } else {
        let map = SourceMap::for_locations(
            source.text(),
            diagnostics.iter().map(|diagnostic| &diagnostic.location),
        );
        for diagnostic in &mut diagnostics {
            if diagnostic.code == Code::DuplicateKey
                && let Some(first) = map.first_of_repeated(&diagnostic.location.pointer)
            {
                let position = source.position(first.start);
                diagnostic.help = Some(format!(
                    "the first value (line {}, column {}) is lost; remove one of the two",
                    position.line, position.column
                ));
            }
        }
        diagnostics
            .iter()
            .map(|diagnostic| map.span(&diagnostic.location))
            .collect()
    };
    let mut order: Vec<usize> = (0..diagnostics.len()).collect();
    order.sort_by_key(|&index| spans[index].map_or(0, |span| span.start));
    let diagnostics_sorted = order
        .iter()
        .map(|&index| diagnostics[index].clone())
        .collect();
    let spans = order.iter().map(|&index| spans[index]).collect();
    diagnostics = diagnostics_sorted;
    let has_errors = diagnostics
        .iter()
        .any(|diagnostic| diagnostic.severity == Severity::Error);
    Report {
        source,
        diagnostics,
        spans,
        connector: connector.filter(|_| !has_errors),
    }
}

/// One diagnostic per distinct problem (code, message and node: the same placeholder unfilled
/// 10,000 times in one `vendorPath`): a repeated one is kept where it first appears, and says
/// how many times it occurs. Linear in the number of diagnostics.
fn merge_repeated(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut first: HashMap<(Code, String, JsonPointer), usize> =
        HashMap::with_capacity(diagnostics.len());
    let mut merged: Vec<(Diagnostic, usize)> = Vec::with_capacity(diagnostics.len());
    for diagnostic in diagnostics {
        let key = (
            diagnostic.code,
            diagnostic.message.clone(),
            diagnostic.location.pointer.clone(),
        );
        match first.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => merged[*entry.get()].1 += 1,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(merged.len());
                merged.push((diagnostic, 1));
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut diagnostic, count)| {
            if count > 1 {
                diagnostic.message = format!("{} ({count} times)", diagnostic.message);
            }
            diagnostic
        })
        .collect()
}

fn decode_and_validate(
    source: &Arc<SourceFile>,
    document: &Value,
) -> (Vec<Diagnostic>, Option<Connector>) {
    let file = source.path();
    let mut diagnostics = schema::check(document, file);
    // An unknown kind is reported and checking goes on, with a stand-in in its place; any other
    // structural problem stops here, as the wire types cannot be decoded.
    let patched;
    let document = if diagnostics.is_empty() {
        document
    } else {
        let mut copy = document.clone();
        for diagnostic in &diagnostics {
            let stand_in = (diagnostic.code == Code::UnknownKind)
                .then(|| stand_in(&diagnostic.location.pointer))
                .flatten();
            match (
                stand_in,
                copy.pointer_mut(diagnostic.location.pointer.as_str()),
            ) {
                (Some(stand_in), Some(value)) => *value = Value::String(stand_in.to_owned()),
                _ => return (diagnostics, None),
            }
        }
        patched = copy;
        &patched
    };
    // Decoding without tracking the path is faster; the path is tracked only to report a
    // failure, by decoding again.
    let decoded = serde::Deserialize::deserialize(document)
        .or_else(|_: serde_json::Error| serde_path_to_error::deserialize(document));
    let raw: RawConnector = match decoded {
        Ok(raw) => raw,
        Err(error) => {
            let pointer = JsonPointer::of_path(error.path());
            diagnostics.push(Diagnostic::new(
                Code::Schema,
                Location::new(file, pointer),
                error.inner().to_string(),
            ));
            return (diagnostics, None);
        }
    };
    build_and_check(source, &raw, diagnostics)
}

/// Builds the model of decoded wire types and checks it; `diagnostics` are those found so far.
fn build_and_check(
    source: &Arc<SourceFile>,
    raw: &RawConnector,
    mut diagnostics: Vec<Diagnostic>,
) -> (Vec<Diagnostic>, Option<Connector>) {
    let file = source.path();
    let mut builder = Builder {
        file: file.to_owned(),
        diagnostics: Vec::new(),
        raw,
        models: model_names(raw),
    };
    let mut connector = Some(builder.build(source));
    diagnostics.append(&mut builder.diagnostics);
    let not_executed = check::run(
        source.text(),
        raw,
        connector.as_ref(),
        file,
        &mut diagnostics,
    );
    if let Some(connector) = &mut connector {
        connector.not_executed = not_executed;
    }
    (diagnostics, connector)
}

struct Builder<'a> {
    file: std::path::PathBuf,
    diagnostics: Vec<Diagnostic>,
    raw: &'a RawConnector,
    /// The models `dataType` may name.
    models: Vec<String>,
}

impl Builder<'_> {
    fn location(&self, pointer: JsonPointer) -> Location {
        Location::new(&self.file, pointer)
    }

    fn build(&mut self, source: &Arc<SourceFile>) -> Connector {
        let raw = self.raw;
        let stem = source.path().file_stem().map_or_else(
            || "connector".to_owned(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        let key = raw.key.clone().unwrap_or_else(|| stem.clone());
        let name = raw.name.clone().unwrap_or_else(|| key.clone());
        let configuration = raw
            .configuration
            .iter()
            .enumerate()
            .map(|(index, property)| {
                let pointer = JsonPointer::root().field("configuration").index(index);
                let default = property
                    .default_value
                    .as_ref()
                    .and_then(|value| match value {
                        Value::String(text) if text.is_empty() => None,
                        Value::String(text) => Some(text.clone()),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    });
                ConfigProperty {
                    key: property.key.clone(),
                    name: property.name.clone(),
                    kind: property.kind.unwrap_or(ConfigType::Textfield1000),
                    default,
                    required: property.required.unwrap_or(false),
                    hidden: property.hide_from_console.unwrap_or(false),
                    internal: property.internal.unwrap_or(false),
                    secret: property.secret,
                    description: property.description.clone(),
                    location: self.location(pointer),
                }
            })
            .collect();
        let authentication = self.authentication();
        let protocol = match raw.protocol_type.as_deref() {
            None | Some("") => Protocol::Http,
            Some(name)
                if name.eq_ignore_ascii_case("http") || name.eq_ignore_ascii_case("soap") =>
            {
                Protocol::Http
            }
            Some(name) => Protocol::NotExecuted(name.to_owned()),
        };
        let session = self.session();
        let parameters = raw
            .parameters
            .iter()
            .enumerate()
            .map(|(index, parameter)| {
                self.parameter(
                    parameter,
                    JsonPointer::root().field("parameters").index(index),
                )
            })
            .collect();
        let resources: Vec<Resource> = raw
            .resources
            .iter()
            .enumerate()
            .map(|(index, resource)| self.resource(index, resource))
            .collect();
        let mut connector = Connector {
            id: ConnectorId::next(),
            source: Arc::clone(source),
            name,
            key,
            authentication,
            protocol,
            session,
            configuration,
            parameters,
            resources,
            hooks: self.hooks(&raw.hooks, &JsonPointer::root()),
            saved_keys: Vec::new(),
            known_keys: HashMap::default(),
            defaults: serde_json::Map::new(),
            not_executed: Vec::new(),
        };
        connector.defaults = connector
            .configuration
            .iter()
            .filter_map(|property| {
                let default = property.default.as_ref()?;
                Some((
                    property.key.clone(),
                    serde_json::Value::String(default.clone()),
                ))
            })
            .collect();
        let mut saved_keys: Vec<String> = connector
            .all_parameters()
            .filter(|parameter| parameter.saves_to_configuration())
            .map(|parameter| parameter.name.clone())
            .collect();
        saved_keys.sort();
        saved_keys.dedup();
        connector.saved_keys = saved_keys;
        let known_keys: Vec<String> = connector
            .configuration
            .iter()
            .map(|property| property.key.clone())
            .chain(connector.saved_keys.iter().cloned())
            .chain(RESERVED_KEYS.iter().map(|key| (*key).to_owned()))
            .collect();
        let credential_keys = connector.credential_keys();
        let known_keys: HashMap<String, bool, foldhash::fast::RandomState> = known_keys
            .into_iter()
            .map(|key| {
                let secret = connector.decide_secret(&key, &credential_keys);
                (key, secret)
            })
            .collect();
        connector.known_keys = known_keys;
        self.link_chains(&mut connector);
        connector
    }

    fn authentication(&self) -> Authentication {
        let raw = self.raw.authentication.as_ref();
        let kind = raw.and_then(|raw| raw.kind);
        let grant = raw.and_then(|raw| raw.grant);
        let (kind, grant, pkce) = match kind {
            Some(AuthenticationType::Oauth2) => (AuthKind::Oauth2, grant, false),
            Some(AuthenticationType::Oauth2ClientCredentials) => (
                AuthKind::Oauth2,
                grant.or(Some(Grant::ClientCredentials)),
                false,
            ),
            Some(AuthenticationType::Oauth2Password) => {
                (AuthKind::Oauth2, grant.or(Some(Grant::Password)), false)
            }
            Some(AuthenticationType::Oauth2Pkce) => (
                AuthKind::Oauth2,
                grant.or(Some(Grant::AuthorizationCode)),
                true,
            ),
            Some(AuthenticationType::Basic) => (AuthKind::Basic, grant, false),
            Some(AuthenticationType::ApiKey) => (AuthKind::ApiKey, grant, false),
            Some(AuthenticationType::Oauth1) => (AuthKind::Oauth1, grant, false),
            Some(AuthenticationType::None) => (AuthKind::None, grant, false),
            Some(AuthenticationType::Custom) | None => (AuthKind::Custom, grant, false),
        };
        Authentication {
            kind,
            grant: grant.unwrap_or(Grant::AuthorizationCode),
            pkce: pkce || raw.and_then(|raw| raw.pkce).unwrap_or(false),
            refresh_in: raw
                .and_then(|raw| raw.refresh_in)
                .unwrap_or(RefreshIn::Body),
        }
    }

    fn session(&self) -> Session {
        let raw = self.raw.session.as_ref();
        let management = raw
            .and_then(|raw| raw.management)
            .unwrap_or(SessionManagement::Auto);
        let timeout = raw.and_then(|raw| raw.timeout).map(Duration::from_secs);
        Session {
            management,
            timeout,
            skew: raw
                .and_then(|raw| raw.skew)
                .map_or(DEFAULT_SKEW, Duration::from_secs),
            default_expires_in: raw
                .and_then(|raw| raw.default_expires_in)
                .map_or(DEFAULT_EXPIRES_IN, Duration::from_secs),
            // Management `none` never refreshes, not even on a `401`, unless the connector lists
            // the statuses itself.
            refresh_on_status: raw
                .and_then(|raw| raw.refresh_on_status.clone())
                .unwrap_or_else(|| {
                    if management == SessionManagement::None {
                        Vec::new()
                    } else {
                        vec![401]
                    }
                }),
        }
    }

    fn parameter(&mut self, raw: &RawParameter, pointer: JsonPointer) -> Parameter {
        let source = raw.source.unwrap_or(Source::Request);
        // element.json's reversed form, `"vendorType": "value"`: `name` is the header and
        // `vendorName` its templated value. The model holds it as the usual `value` parameter.
        let reversed = raw.vendor_type == Some(VendorKind::Value);
        let (kind, name, name_field, written_vendor_name) = if reversed {
            (
                ParameterKind::Value,
                raw.vendor_name.clone().unwrap_or_default(),
                "vendorName",
                Some(raw.name.clone()),
            )
        } else {
            (raw.kind, raw.name.clone(), "name", raw.vendor_name.clone())
        };
        let vendor_kind = match raw.vendor_type {
            Some(VendorKind::Value) => VendorKind::Header,
            Some(kind) => kind,
            None => default_vendor_kind(raw.kind),
        };
        let vendor_name = written_vendor_name
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| name.clone());
        let mut template = None;
        let mut path = None;
        match source {
            Source::Request => {
                if kind == ParameterKind::Value {
                    template = self.template(&name, TemplateKind::Text, pointer.field(name_field));
                }
                if matches!(
                    kind,
                    ParameterKind::PrevBodyField | ParameterKind::BodyField
                ) {
                    path = self.json_path(&name, pointer.field("name"));
                }
            }
            Source::Response => {
                if matches!(
                    vendor_kind,
                    VendorKind::BodyField | VendorKind::BodyToken | VendorKind::Body
                ) {
                    path = self.json_path(&vendor_name, pointer.field("vendorName"));
                }
            }
        }
        // A `no-op` parameter sends nothing: it is never a credential in clear.
        let credential = source == Source::Request
            && kind == ParameterKind::Value
            && vendor_kind != VendorKind::NoOp
            && template.as_ref().is_some_and(Template::is_literal)
            && check::literal_credential(&name, &vendor_name).is_some();
        Parameter {
            reversed,
            name,
            kind,
            vendor_name,
            vendor_kind,
            data_type: self.data_type(raw, &pointer),
            source,
            required: raw.required.unwrap_or(false),
            credential,
            template,
            path,
            location: self.location(pointer),
        }
    }

    /// The `dataType` of a parameter: a known type in any case (`Object`, `dateTime`), a model
    /// (of the connector, or any on a whole body: sent as it is), or else a warning and text.
    fn data_type(&mut self, raw: &RawParameter, pointer: &JsonPointer) -> DataType {
        let Some(text) = raw.data_type.as_deref().filter(|text| !text.is_empty()) else {
            return DataType::String;
        };
        if let Some(data_type) =
            DataType::parse(text).or_else(|| DataType::parse(&text.to_ascii_lowercase()))
        {
            return data_type;
        }
        // A whole body's `dataType` names its model, often one the export does not carry.
        let whole_body = matches!(raw.kind, ParameterKind::Body | ParameterKind::PrevBody)
            || raw.vendor_type == Some(VendorKind::Body);
        if whole_body || self.models.iter().any(|model| model == text) {
            return DataType::String;
        }
        self.diagnostics.push(
            Diagnostic::new(
                Code::UnknownDataType,
                self.location(pointer.field("dataType")),
                format!("unknown `dataType` `{text}`: the value is sent as text"),
            )
            .with_label("neither a type nor a model of this connector")
            .with_help_opt(
                suggest::hint(text, DataType::SPELLINGS.iter().copied())
                    .or_else(|| Some(format!("use one of: {}", DataType::SPELLINGS.join(", ")))),
            ),
        );
        DataType::String
    }

    /// The hooks written under `parent`'s `hooks`: those with a known `type` and a non-empty
    /// `body` (exports carry empty ones; an unknown type is reported by the schema).
    fn hooks(&self, hooks: &[Value], parent: &JsonPointer) -> Vec<Hook> {
        hooks
            .iter()
            .enumerate()
            .filter_map(|(index, hook)| {
                let kind = HookKind::parse(hook.get("type")?.as_str()?)?;
                let body = hook.get("body")?.as_str()?;
                if body.trim().is_empty() {
                    return None;
                }
                Some(Hook {
                    kind,
                    body: body.into(),
                    legacy: hook.get("isLegacy").and_then(Value::as_bool) == Some(true),
                    location: self
                        .location(parent.clone().field("hooks").index(index).field("body")),
                })
            })
            .collect()
    }

    fn resource(&mut self, index: usize, raw: &RawResource) -> Resource {
        let pointer = JsonPointer::root().field("resources").index(index);
        let parameters: Vec<Parameter> = raw
            .parameters
            .iter()
            .enumerate()
            .map(|(position, parameter)| {
                self.parameter(parameter, pointer.field("parameters").index(position))
            })
            .collect();
        let vendor_path_text = raw.vendor_path.clone().unwrap_or_default();
        let vendor_path = self
            .template(
                &vendor_path_text,
                TemplateKind::Url,
                pointer.field("vendorPath"),
            )
            .unwrap_or_else(|| {
                Template::compile("", TemplateKind::Url).expect("the empty template compiles")
            });
        // `request|response`: the request part wraps the body, the response part unwraps the
        // answer; without `|`, the whole is the response part.
        let (request_root, response_root) = match raw.root_key.as_deref() {
            Some(key) => match key.split_once('|') {
                Some((request, response)) => (Some(request.trim()), response.trim()),
                None => (None, key),
            },
            None => (None, ""),
        };
        let request_root = request_root
            .filter(|key| !key.is_empty())
            .map(str::to_owned);
        let root_key = Some(response_root)
            .filter(|key| !key.is_empty())
            .and_then(|key| self.json_path(key, pointer.field("rootKey")));
        let method = raw.method.clone().filter(|method| !method.is_empty());
        for (field, written) in [
            ("method", &raw.method),
            ("vendorMethod", &raw.vendor_method),
        ] {
            if let Some(written) = written.as_deref().filter(|method| !method.is_empty())
                && !HTTP_METHODS.contains(&written.to_ascii_uppercase().as_str())
            {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::UnknownMethod,
                        self.location(pointer.field(field)),
                        format!("`{written}` is not an HTTP method"),
                    )
                    .with_label("sent as written; most vendors reject it")
                    .with_help_opt(
                        suggest::hint(&written.to_ascii_uppercase(), HTTP_METHODS.iter().copied())
                            .or_else(|| Some(format!("use one of: {}", HTTP_METHODS.join(", ")))),
                    ),
                );
            }
        }
        let vendor_method = raw
            .vendor_method
            .clone()
            .filter(|method| !method.is_empty())
            .or_else(|| method.clone())
            .unwrap_or_else(|| if raw.kind.is_api() { "GET" } else { "POST" }.to_owned())
            .to_ascii_uppercase()
            .into();
        Resource {
            index,
            name: raw.name.clone().filter(|name| !name.is_empty()),
            kind: raw.kind,
            method: method.map(|method| method.to_ascii_uppercase()),
            path: raw.path.clone().filter(|path| !path.is_empty()),
            vendor_method,
            vendor_path,
            parameters,
            next: None,
            root_key,
            request_root,
            next_page_key: raw
                .extra
                .get("nextPageKey")
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned),
            paging: raw
                .extra
                .get("paginationType")
                .and_then(serde_json::Value::as_str)
                .map(crate::model::Paging::parse)
                .unwrap_or_default(),
            hooks: self.hooks(&raw.hooks, &pointer),
            location: self.location(pointer),
            display: Arc::from(""),
        }
        .named()
    }

    /// Compiles a template; one that does not parse is reported here, the keys and functions it
    /// refers to are checked on the model (`check::keys`).
    fn template(
        &mut self,
        text: &str,
        kind: TemplateKind,
        pointer: JsonPointer,
    ) -> Option<Template> {
        match Template::compile(text, kind) {
            Ok(template) => Some(template),
            Err(error) => {
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidTemplate,
                        self.location(pointer).narrow(error.offset, error.offset + 1),
                        format!("invalid template: {}", error.message),
                    )
                    .with_label("here")
                    .with_help("templates use `${configuration.KEY}` or handlebars `{{...}}`; see docs/connector-format.md#templates"),
                );
                None
            }
        }
    }

    fn json_path(&mut self, text: &str, pointer: JsonPointer) -> Option<JsonPath> {
        match JsonPath::compile(text) {
            Ok(path) => {
                if path.has_chained_descendants() {
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::DescendantChain,
                            self.location(pointer),
                            format!("JSONPath `{text}` chains descendant segments (`..`)"),
                        )
                        .with_label("visits the response once per node it found before")
                        .with_help(format!(
                            "name the steps (`$.data.items[*].id`) or use one `..`; a query that \
                             would visit more than {} nodes stops with an error",
                            crate::jsonpath::MAX_WORK
                        )),
                    );
                }
                Some(path)
            }
            Err(error) => {
                let location = match error.offset {
                    Some(offset) => self.location(pointer).narrow(offset, offset + 1),
                    None => self.location(pointer),
                };
                self.diagnostics.push(
                    Diagnostic::new(
                        Code::InvalidJsonPath,
                        location,
                        format!("invalid JSONPath `{text}`: {}", error.message),
                    )
                    .with_label("here")
                    .with_help("write a top-level name (`access_token`), a dotted path (`data.token`) or a JSONPath starting with `$`"),
                );
                None
            }
        }
    }

    /// Resolves `nextResource` into indexes, reporting unknown targets (cycles and lengths are
    /// checked on the model, in `check::chains`).
    fn link_chains(&mut self, connector: &mut Connector) {
        // The first resource of each name: one lookup per chain link, not a scan.
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for resource in &connector.resources {
            if let Some(name) = &resource.name {
                by_name.entry(name.clone()).or_insert(resource.index);
            }
        }
        let mut names: Option<Vec<String>> = None;
        let mut misses = 0_usize;
        for index in 0..connector.resources.len() {
            let Some(next) = self.raw.resources[index]
                .next_resource
                .as_deref()
                .filter(|next| !next.is_empty())
            else {
                continue;
            };
            let target = by_name.get(next).copied().or_else(|| {
                let (method, path) = next.split_once(':')?;
                connector.route(method, path)
            });
            if let Some(target) = target {
                connector.resources[index].next = Some(target);
            } else {
                {
                    let pointer = JsonPointer::root()
                        .field("resources")
                        .index(index)
                        .field("nextResource");
                    let names = names.get_or_insert_with(|| {
                        connector
                            .resources
                            .iter()
                            .filter_map(|resource| {
                                match (&resource.name, &resource.method, &resource.path) {
                                    (Some(name), _, _) => Some(name.clone()),
                                    (None, Some(method), Some(path)) => {
                                        Some(format!("{method}:{path}"))
                                    }
                                    _ => None,
                                }
                            })
                            .collect::<Vec<String>>()
                    });
                    // A suggestion compares with every name: only for as many as are shown.
                    misses += 1;
                    let hint = if misses <= 100 {
                        suggest::hint(next, names.iter().map(String::as_str))
                    } else {
                        None
                    };
                    self.diagnostics.push(
                        Diagnostic::new(
                            Code::UnknownNextResource,
                            self.location(pointer),
                            format!("`nextResource` `{next}` names no resource"),
                        )
                        .with_label("no resource has this name or `METHOD:/path`")
                        .with_help_opt(hint),
                    );
                }
            }
        }
    }
}

/// Where a parameter's value goes when it has no `vendorType`: decided here, once, for every
/// check and for the runtime.
fn default_vendor_kind(kind: ParameterKind) -> VendorKind {
    match kind {
        ParameterKind::Configuration | ParameterKind::Value | ParameterKind::Header => {
            VendorKind::Header
        }
        ParameterKind::Query => VendorKind::Query,
        ParameterKind::Path => VendorKind::Path,
        ParameterKind::Body | ParameterKind::PrevBody => VendorKind::Body,
        ParameterKind::BodyField | ParameterKind::PrevBodyField => VendorKind::BodyField,
        ParameterKind::Form => VendorKind::Form,
        ParameterKind::Multipart => VendorKind::Multipart,
    }
}

/// A known spelling to decode in place of an unknown kind at `pointer`, so that the checks after
/// it still run (the unknown kind itself is already an error). `None` where there is no kind.
fn stand_in(pointer: &JsonPointer) -> Option<&'static str> {
    let tokens: Vec<String> = pointer.tokens().collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    Some(match tokens.as_slice() {
        ["resources", _, "type"] => "api",
        [.., "parameters", _, "type"] => "value",
        [.., "parameters", _, "vendorType"] => "no-op",
        [.., "parameters", _, "source"] => "request",
        ["configuration", _, "type"] => "TEXTFIELD_1000",
        ["authentication", "type"] => "custom",
        ["authentication", "grant"] => "authorization_code",
        ["authentication", "refreshIn"] => "body",
        ["session", "management"] => "auto",
        _ => return None,
    })
}

/// The HTTP methods a resource may use.
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The names of the models an element.json export declares (top-level `models`, and each
/// resource's `model`: its `name`, `requestName` and swagger definitions): `dataType` may name one.
fn model_names(raw: &RawConnector) -> Vec<String> {
    let mut names = Vec::new();
    let add = |names: &mut Vec<String>, value: Option<&Value>| {
        if let Some(name) = value.and_then(Value::as_str) {
            names.push(name.to_owned());
        }
    };
    if let Some(Value::Array(models)) = raw.extra.get("models") {
        for model in models {
            add(&mut names, model.get("name"));
        }
    }
    for resource in &raw.resources {
        let Some(model) = resource.extra.get("model") else {
            continue;
        };
        add(&mut names, model.get("name"));
        add(&mut names, model.get("requestName"));
        for swagger in ["swagger", "requestSwagger"] {
            if let Some(Value::Object(definitions)) = model.get(swagger) {
                names.extend(definitions.keys().cloned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> Report {
        validate(SourceFile::new("c.json", text))
    }

    #[test]
    fn a_minimal_connector_is_valid() {
        let report = report(
            r#"{"name": "x", "resources": [{"name": "ip", "type": "api", "vendorPath": "/"}]}"#,
        );
        assert!(
            report.diagnostics().is_empty(),
            "{:?}",
            report.diagnostics()
        );
        let connector = report.connector().unwrap();
        assert_eq!(
            connector.find_resource("ip").unwrap().vendor_method(),
            "GET"
        );
    }

    #[test]
    fn malformed_json_points_at_the_error() {
        let report = report("{\n  \"name\": \"x\",\n}");
        assert_eq!(report.diagnostics()[0].code, Code::InvalidJson);
        assert_eq!(report.position(0), Position { line: 3, column: 1 });
    }

    #[test]
    fn undeclared_key_suggests_the_declared_one() {
        let report = report(
            r#"{"configuration": [{"key": "expires_in"}], "resources": [{"type": "api", "parameters": [{"name": "Bearer ${configuration.expires-in}", "type": "value", "vendorName": "X", "vendorType": "header"}]}]}"#,
        );
        let diagnostic = &report.diagnostics()[0];
        // A parameter is skipped while its key has no value: a warning, not an error.
        assert_eq!(diagnostic.code, Code::UnknownKey);
        assert_eq!(
            diagnostic.help.as_deref(),
            Some("did you mean `expires_in`?")
        );
        let span = report.span(0).unwrap();
        assert_eq!(&report.source().text()[span.start..span.end], "expires-in");
    }

    #[test]
    fn unknown_resource_type_is_reported_by_pointer() {
        let report = report(r#"{"resources": [{"type": "ON REFRESHH"}]}"#);
        let diagnostic = &report.diagnostics()[0];
        assert_eq!(diagnostic.code, Code::UnknownKind);
        assert_eq!(diagnostic.location.pointer.as_str(), "/resources/0/type");
        assert_eq!(
            diagnostic.help.as_deref(),
            Some("did you mean `ON REFRESH`?")
        );
    }

    #[test]
    fn chains_resolve_by_name_and_method_path() {
        let report = report(
            r#"{"resources": [
                {"type": "api", "method": "GET", "path": "/hubs/general/one", "nextResource": "GET:/two"},
                {"type": "api", "method": "GET", "path": "/hubs/general/two", "nextResource": "three"},
                {"name": "three", "type": "api"}
            ]}"#,
        );
        assert!(
            report.diagnostics().is_empty(),
            "{:?}",
            report.diagnostics()
        );
        let connector = report.connector().unwrap();
        let first = &connector.resources()[0];
        let second = connector.next_of(first).unwrap();
        assert_eq!(connector.next_of(second).unwrap().name(), Some("three"));
    }

    #[test]
    fn repeated_problems_are_one_diagnostic_with_a_count() {
        // 30,000 unfilled placeholders once took over a minute to report one by one.
        let vendor_path = ["/{x0}", "/{x1}", "/{x2}"].repeat(10_000).concat();
        let text = serde_json::json!({"resources": [{"type": "api", "vendorPath": vendor_path}]});
        let report = report(&text.to_string());
        let messages: Vec<&str> = report
            .diagnostics()
            .iter()
            .map(|diagnostic| diagnostic.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "nothing fills `{x0}` (10000 times)",
                "nothing fills `{x1}` (10000 times)",
                "nothing fills `{x2}` (10000 times)"
            ]
        );
        // Each points at its first occurrence.
        let span = report.span(1).unwrap();
        assert_eq!(&report.source().text()[span.start..span.end], "{x1}");
    }

    #[test]
    fn chains_are_checked_in_linear_time() {
        // 80,000 resources took 20 s (each was compared with all); a chain through all of them
        // is one pass now. A smaller chain proves the hop count.
        let resources: Vec<_> = (0..2_000)
            .map(|index| serde_json::json!({"name": format!("r{index}"), "type": "api", "nextResource": format!("r{}", index + 1)}))
            .collect();
        let report = report(&serde_json::json!({"resources": resources}).to_string());
        let codes: Vec<(Code, &str)> = report
            .diagnostics()
            .iter()
            .map(|diagnostic| (diagnostic.code, diagnostic.message.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                (
                    Code::ChainTooLong,
                    "`nextResource` chain has 1999 steps; at most 5 are allowed"
                ),
                (
                    Code::UnknownNextResource,
                    "`nextResource` `r2000` names no resource"
                ),
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_warnings_naming_the_lost_value() {
        let report =
            report("{\"name\": \"a\",\n \"resources\": [{\"type\": \"api\"}],\n \"name\": \"b\"}");
        let diagnostic = &report.diagnostics()[0];
        assert_eq!(diagnostic.code, Code::DuplicateKey);
        assert_eq!(
            diagnostic.message,
            "key `name` is written twice in this object"
        );
        assert_eq!(
            diagnostic.help.as_deref(),
            Some("the first value (line 1, column 10) is lost; remove one of the two")
        );
        assert_eq!(
            report.position(0),
            Position {
                line: 3,
                column: 10
            }
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_accepted() {
        let report = report(
            "\u{feff}{\"resources\": [{\"name\": \"ip\", \"type\": \"api\", \"vendorPath\": \"/\"}]}",
        );
        assert!(
            report.diagnostics().is_empty(),
            "{:?}",
            report.diagnostics()
        );
        let report = validate(SourceFile::new("c.json", "{\"name\": \u{e9}}"));
        let span = report.span(0).unwrap();
        assert_eq!(&report.source().text()[span.start..span.end], "\u{e9}");
    }

    #[test]
    fn chain_cycles_are_reported_once() {
        let report = report(
            r#"{"resources": [
                {"name": "a", "type": "api", "nextResource": "b"},
                {"name": "b", "type": "api", "nextResource": "a"}
            ]}"#,
        );
        let codes: Vec<Code> = report.diagnostics().iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::ChainCycle]);
    }
}
