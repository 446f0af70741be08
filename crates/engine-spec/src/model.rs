//! The validated connector. If you hold a [`Connector`], it is valid: its fields are private and
//! [`crate::validate()`] is the only way to build one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hook::Hook;
use crate::jsonpath::JsonPath;
use crate::kinds::{
    ConfigType, DataType, Grant, ParameterKind, RefreshIn, ResourceType, SessionManagement, Source,
    VendorKind,
};
use crate::source::{Location, SourceFile};
use crate::template::Template;

/// Configuration keys the engine knows without a declaration.
pub const RESERVED_KEYS: &[&str] = &[
    "base.url",
    "authentication.time",
    "expires_in",
    "username",
    "password",
    "oauth.api.key",
    "oauth.api.secret",
    "oauth.token.url",
    "oauth.token.refresh_url",
    "oauth.authorization.url",
    "oauth.callback.url",
    "oauth.scope",
    "oauth.basic.header",
    "oauth.user.token",
    "oauth.user.refresh_token",
    "oauth.user.refresh_time",
    "oauth.user.refresh_interval",
    "oauth.user.token_type",
    WEBHOOK_CALLBACK_KEY,
];

pub use crate::template::WEBHOOK_CALLBACK_KEY;

/// Reserved keys whose values are secrets whether declared or not.
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "oauth.api.secret",
    "oauth.user.token",
    "oauth.user.refresh_token",
];

/// Keys whose values are never secret even when a response saves them: lifetimes and times.
/// Keys ending in `.url` or `_url` are not secret either.
pub const NOT_SECRET_KEYS: &[&str] = &[
    "expires_in",
    "authentication.time",
    "oauth.user.refresh_time",
    "oauth.user.refresh_interval",
    "oauth.user.token_type",
];

/// True for names that usually carry credentials: `Authorization`, `client_secret`,
/// `X-API-Key`, `password`, `refresh_token`, `Cookie`... Case-insensitive; one pass, no
/// allocation.
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: &[&[u8]] = &[
        b"authorization",
        b"password",
        b"passwd",
        b"secret",
        b"token",
        b"api_key",
        b"apikey",
        b"api-key",
        b"cookie",
        b"assertion",
        b"code_verifier",
        b"credential",
        b"session",
        b"signature",
    ];
    let name = name.as_bytes();
    name.iter().enumerate().any(|(start, first)| {
        let first = first.to_ascii_lowercase();
        WORDS.iter().any(|word| {
            word[0] == first
                && name.len() - start >= word.len()
                && name[start..start + word.len()].eq_ignore_ascii_case(word)
        })
    })
}

/// True for the name of a request slot that carries a credential: a name like a secret
/// ([`is_secret_name`]: `Authorization`, `X-API-Key`, `access_token`, `sessionKey`) or with
/// `auth` in it (`X-Auth`).
pub fn is_credential_slot(name: &str) -> bool {
    is_secret_name(name) || name.to_ascii_lowercase().contains("auth")
}

/// True for keys whose values are never secret: [`NOT_SECRET_KEYS`] and URLs (keys whose last
/// segment is `url` or ends in `_url`).
pub fn is_never_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    NOT_SECRET_KEYS.contains(&key) || last == "url" || last.ends_with("_url")
}

/// What tells one loaded [`Connector`] from every other the process loaded: two loads of the
/// same file, or a file loaded again after a change, get different ones. Whatever is computed
/// from a connector (and kept beyond its run) can be keyed by it; its address may be reused by
/// the next connector loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectorId(u64);

impl ConnectorId {
    /// A number no connector of this process had before.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A valid connector definition.
#[derive(Debug)]
pub struct Connector {
    /// This load's identity ([`Connector::id`]).
    pub(crate) id: ConnectorId,
    pub(crate) source: Arc<SourceFile>,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) authentication: Authentication,
    pub(crate) protocol: Protocol,
    pub(crate) session: Session,
    pub(crate) configuration: Vec<ConfigProperty>,
    pub(crate) parameters: Vec<Parameter>,
    pub(crate) resources: Vec<Resource>,
    /// The connector-wide hooks, run around every resource's own.
    pub(crate) hooks: Vec<Hook>,
    /// The keys response parameters save, computed once by `validate`.
    pub(crate) saved_keys: Vec<String>,
    /// Every key the connector knows (declared, reserved, saved), with whether its values are
    /// secrets: computed once by `validate`, looked up for every key of every instance a run
    /// loads (hence the fast, non-cryptographic hasher: the keys come from the connector).
    pub(crate) known_keys: HashMap<String, bool, foldhash::fast::RandomState>,
    /// The declared default values by key, as configuration values, computed once by `validate`.
    pub(crate) defaults: serde_json::Map<String, serde_json::Value>,
    /// What the engine accepts but will not do as the platform did when a request is made: the
    /// W0501 diagnostics about hooks and converters, computed once by `validate`.
    pub(crate) not_executed: Vec<NotExecuted>,
}

/// A part of the connector the engine accepts but does not execute as the platform did, that
/// changes the requests of a run: a JavaScript hook, a parameter converter. `engine validate`
/// reports it as W0501; a run that executes the resource says it too.
#[derive(Debug, Clone)]
pub struct NotExecuted {
    /// The W0501 diagnostic, as `engine validate` reports it.
    pub diagnostic: crate::Diagnostic,
    /// The resource it belongs to (its index in `resources[]`); `None` for the connector's own
    /// hooks and parameters, which apply to every request.
    pub resource: Option<usize>,
    /// What is not executed.
    pub what: NotExecutedKind,
}

/// What [`NotExecuted`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotExecutedKind {
    /// JavaScript hooks, by type (`preRequest`, `postRequest`...), each type once.
    Hooks(Vec<String>),
    /// A parameter converter (`toQueryParameters`...; empty when the export names none).
    Converter(String),
    /// A `preRequest` or `postRequest` hook (its type here) whose script the export does not
    /// carry (no `body`): the platform ran one, the engine has nothing to run.
    ScriptMissing(String),
}

impl Connector {
    /// The identity of this load of the connector: no other connector of the process has it.
    pub fn id(&self) -> ConnectorId {
        self.id
    }

    /// What the engine accepts but will not do as the platform did, for every resource
    /// (see [`NotExecuted`]).
    pub fn not_executed(&self) -> &[NotExecuted] {
        &self.not_executed
    }

    /// The file the connector was loaded from.
    pub fn source(&self) -> &SourceFile {
        &self.source
    }

    /// The path of that file.
    pub fn path(&self) -> &Path {
        self.source.path()
    }

    /// The display name (or the key, or the file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connector key (or the file stem).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The connector-wide JavaScript hooks, run around every resource's own (docs/hooks.md).
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// How the engine authenticates.
    pub fn authentication(&self) -> &Authentication {
        &self.authentication
    }

    /// How tokens age.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// How the vendor is reached.
    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    /// The declared configuration properties, in file order.
    pub fn configuration(&self) -> &[ConfigProperty] {
        &self.configuration
    }

    /// The declared default values by key (properties without a default are absent), as the
    /// configuration holds them.
    pub fn defaults(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.defaults
    }

    /// The declared property `key`, if any.
    pub fn property(&self, key: &str) -> Option<&ConfigProperty> {
        self.configuration
            .iter()
            .find(|property| property.key == key)
    }

    /// True when values of `key` must never be shown. One rule, decided once at load for every
    /// key the connector knows: the property's own `"secret"` when it says; else `PASSWORD`
    /// properties, the reserved secret keys, keys named like credentials ([`is_secret_name`]),
    /// and keys the connector sends as a credential (in a parameter named like one, such as
    /// `Authorization: Bearer ${configuration.KEY}` or `X-API-Key`), except the bookkeeping keys
    /// that cannot be secrets (`expires_in`, `authentication.time`, URLs: see
    /// [`is_never_secret`]). A value a response saves is data (an account id) unless the rule
    /// makes its key secret (a token). Other keys of an instance file are decided by their name.
    pub fn is_secret_key(&self, key: &str) -> bool {
        match self.known_keys.get(key) {
            Some(secret) => *secret,
            None => !is_never_secret(key) && is_secret_name(key),
        }
    }

    /// The rule of [`Connector::is_secret_key`] for a key the connector knows.
    pub(crate) fn decide_secret(&self, key: &str, credential_keys: &[&str]) -> bool {
        let property = self.property(key);
        if let Some(secret) = property.and_then(ConfigProperty::secret) {
            return secret;
        }
        !is_never_secret(key)
            && (SECRET_KEYS.contains(&key)
                || is_secret_name(key)
                || property.is_some_and(|property| property.kind == ConfigType::Password)
                || credential_keys.contains(&key))
    }

    /// The configuration keys the connector sends as credentials: read by a request parameter
    /// whose vendor name is a credential's ([`is_credential_slot`]), directly or through a
    /// template (`Bearer ${configuration.KEY}`).
    pub fn credential_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for parameter in self.all_parameters() {
            if parameter.source != Source::Request
                || parameter.vendor_kind == VendorKind::NoOp
                || !is_credential_slot(&parameter.vendor_name)
            {
                continue;
            }
            match parameter.kind {
                ParameterKind::Configuration => keys.push(&parameter.name),
                ParameterKind::Value => {
                    if let Some(template) = &parameter.template {
                        keys.extend(template.keys());
                    }
                }
                _ => {}
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The global parameters, applied to every resource.
    pub fn global_parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// All resources, in file order.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// Every parameter: global ones, then each resource's.
    pub fn all_parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.parameters.iter().chain(
            self.resources
                .iter()
                .flat_map(|resource| resource.parameters.iter()),
        )
    }

    /// The parameters that apply to `resource` on the `source` side (`request` or `response`):
    /// the global ones first, then the resource's own. A resource parameter replaces a global one
    /// of the same vendor slot, and a resource `no-op` parameter of the same vendor name removes
    /// it (a global `Authorization` header from a token request).
    pub fn parameters_of<'a>(
        &'a self,
        resource: &'a Resource,
        source: Source,
    ) -> impl Iterator<Item = &'a Parameter> {
        let own = move || {
            resource
                .parameters
                .iter()
                .filter(move |parameter| parameter.source == source)
        };
        self.parameters
            .iter()
            .filter(move |parameter| parameter.source == source)
            .filter(move |global| {
                !own().any(|parameter| {
                    (parameter.vendor_kind == global.vendor_kind
                        || parameter.vendor_kind == VendorKind::NoOp)
                        && parameter
                            .vendor_name
                            .eq_ignore_ascii_case(&global.vendor_name)
                })
            })
            .chain(own())
    }

    /// The first resource of lifecycle type `kind`.
    pub fn lifecycle(&self, kind: ResourceType) -> Option<&Resource> {
        self.resources.iter().find(|resource| resource.kind == kind)
    }

    /// The resource a chain continues with after `resource`.
    pub fn next_of(&self, resource: &Resource) -> Option<&Resource> {
        resource.next.map(|index| &self.resources[index])
    }

    /// Finds a resource by what a caller types: its `name`, a lifecycle type in either spelling
    /// (`onRefresh`, `ON REFRESH`), or `METHOD:/path` matching a resource's `method` and `path`
    /// (path variables such as `{id}` match any segment).
    pub fn find_resource(&self, selector: &str) -> Option<&Resource> {
        if let Some(found) = self
            .resources
            .iter()
            .find(|resource| resource.name.as_deref() == Some(selector))
        {
            return Some(found);
        }
        if let Some(kind) = ResourceType::parse(selector)
            && !kind.is_api()
        {
            return self.lifecycle(kind);
        }
        let (method, path) = selector.split_once(':')?;
        self.route(method, path).map(|index| &self.resources[index])
    }

    /// The position of the resource `METHOD:/path` selects: of those that match
    /// ([`Resource::route_match`]), the one with the fewest `{variables}` (a literal path beats
    /// a templated one), the first in file order among equals.
    pub fn route(&self, method: &str, path: &str) -> Option<usize> {
        self.resources
            .iter()
            .enumerate()
            .filter_map(|(index, resource)| Some((resource.route_match(method, path)?, index)))
            .min()
            .map(|(_, index)| index)
    }

    /// Every configuration key the connector knows: declared, reserved and saved by a response
    /// parameter, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.known_keys.keys().map(String::as_str)
    }

    /// Names callers can use for resources, for "did you mean" and listings.
    pub fn resource_names(&self) -> impl Iterator<Item = &str> {
        self.resources
            .iter()
            .filter_map(|resource| resource.name.as_deref())
    }
}

/// The authentication scheme of a connector, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// Lifecycle resources obtain and refresh tokens.
    Custom,
    /// The built-in OAuth2 client.
    Oauth2,
    /// HTTP Basic from `username` and `password`.
    Basic,
    /// An API key mapped by parameters.
    ApiKey,
    /// OAuth 1.0a: each request signed with the instance's token (`engine authorize` obtains it).
    Oauth1,
    /// Nothing.
    None,
}

/// How the vendor is reached (element.json's `protocolType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP requests (`http`, `soap`, or no `protocolType`): executed.
    Http,
    /// Any other protocol (`jdbc`, `odata`, ...): loaded, never executed.
    NotExecuted(String),
}

/// How the engine authenticates.
#[derive(Debug, Clone)]
pub struct Authentication {
    pub(crate) kind: AuthKind,
    pub(crate) grant: Grant,
    pub(crate) pkce: bool,
    pub(crate) refresh_in: RefreshIn,
}

impl Authentication {
    /// The scheme.
    pub fn kind(&self) -> AuthKind {
        self.kind
    }

    /// The OAuth2 grant that obtains the first token (`authorization_code` unless set).
    pub fn grant(&self) -> Grant {
        self.grant
    }

    /// True when the authorization code flow adds PKCE S256.
    pub fn pkce(&self) -> bool {
        self.pkce
    }

    /// Where refresh parameters go.
    pub fn refresh_in(&self) -> RefreshIn {
        self.refresh_in
    }
}

/// How tokens age.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) management: SessionManagement,
    pub(crate) timeout: Option<Duration>,
    pub(crate) skew: Duration,
    pub(crate) default_expires_in: Duration,
    pub(crate) refresh_on_status: Vec<u16>,
}

impl Session {
    /// The management mode.
    pub fn management(&self) -> SessionManagement {
        self.management
    }

    /// The fixed lifetime (`fixed` mode).
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How long before expiry the engine already refreshes.
    pub fn skew(&self) -> Duration {
        self.skew
    }

    /// The lifetime assumed when the vendor sends no `expires_in`.
    pub fn default_expires_in(&self) -> Duration {
        self.default_expires_in
    }

    /// Statuses that mean "token rejected": refresh once and retry. `[401]` unless the connector
    /// lists them; empty under management `none`, which never refreshes unless it lists them.
    pub fn refresh_on_status(&self) -> &[u16] {
        &self.refresh_on_status
    }
}

/// One declared configuration property.
#[derive(Debug, Clone)]
pub struct ConfigProperty {
    pub(crate) key: String,
    pub(crate) name: Option<String>,
    pub(crate) kind: ConfigType,
    pub(crate) default: Option<String>,
    pub(crate) required: bool,
    pub(crate) hidden: bool,
    pub(crate) internal: bool,
    pub(crate) secret: Option<bool>,
    pub(crate) description: Option<String>,
    pub(crate) location: Location,
}

impl ConfigProperty {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The display name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The type.
    pub fn kind(&self) -> ConfigType {
        self.kind
    }

    /// The default value, as text (an empty default counts as none).
    pub fn default_value(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// True when an instance must provide a value.
    pub fn required(&self) -> bool {
        self.required
    }

    /// True when hidden from people configuring an instance.
    pub fn hidden(&self) -> bool {
        self.hidden
    }

    /// True when the engine maintains the value.
    pub fn internal(&self) -> bool {
        self.internal
    }

    /// The connector's own word on whether values of this key are secret (`"secret"`).
    pub fn secret(&self) -> Option<bool> {
        self.secret
    }

    /// What the property is for.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Where it is declared.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// One parameter mapping.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// Written in element.json's reversed form (`"vendorType": "value"`): the template is in
    /// `vendorName`, the header name in `name`.
    pub(crate) reversed: bool,
    pub(crate) name: String,
    pub(crate) kind: ParameterKind,
    pub(crate) vendor_name: String,
    pub(crate) vendor_kind: VendorKind,
    pub(crate) data_type: DataType,
    pub(crate) source: Source,
    pub(crate) required: bool,
    pub(crate) template: Option<Template>,
    pub(crate) path: Option<JsonPath>,
    pub(crate) credential: bool,
    pub(crate) location: Location,
}

impl Parameter {
    /// True for a header written in element.json's reversed form (`"type": "header"`,
    /// `"vendorType": "value"`: the header is `name`, its templated value `vendorName`). A
    /// global one of an OAuth2 connector (zoom's `Authorization: Basic CE.b64(id:secret)`) is
    /// for the token calls, not the API calls.
    pub fn is_reversed_header(&self) -> bool {
        self.reversed && self.vendor_kind == VendorKind::Header
    }

    /// Our side's name: a literal, a configuration key or the caller's input name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the value comes from (request) or is saved (response).
    pub fn kind(&self) -> ParameterKind {
        self.kind
    }

    /// The vendor side's name.
    pub fn vendor_name(&self) -> &str {
        &self.vendor_name
    }

    /// Where the value goes (request) or is read (response).
    pub fn vendor_kind(&self) -> VendorKind {
        self.vendor_kind
    }

    /// The conversion applied before sending.
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// Which side of the exchange.
    pub fn source(&self) -> Source {
        self.source
    }

    /// True when the caller must provide it.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The field of the file that holds the template of a `value` parameter: `name`, or
    /// `vendorName` in element.json's reversed form.
    pub fn template_field(&self) -> &'static str {
        if self.reversed { "vendorName" } else { "name" }
    }

    /// The compiled template of a `value` parameter.
    pub fn template(&self) -> Option<&Template> {
        self.template.as_ref()
    }

    /// The compiled path: the vendor response field of a response parameter, or the previous
    /// body's field of a `prevBodyField` parameter.
    pub fn json_path(&self) -> Option<&JsonPath> {
        self.path.as_ref()
    }

    /// True for a literal request value that looks like a credential written in clear (a
    /// `Bearer`/`Basic` value, or a literal under a credential name such as `X-API-Key`): the
    /// validator warns about it (W0506) and every output of a run masks it.
    pub fn is_literal_credential(&self) -> bool {
        self.credential
    }

    /// True for a response parameter that saves into the instance configuration.
    pub fn saves_to_configuration(&self) -> bool {
        self.source == Source::Response && self.kind == ParameterKind::Configuration
    }

    /// Where it is declared.
    pub fn location(&self) -> &Location {
        &self.location
    }
}

/// One call the connector can make.
#[derive(Debug, Clone)]
pub struct Resource {
    pub(crate) index: usize,
    pub(crate) name: Option<String>,
    pub(crate) kind: ResourceType,
    pub(crate) method: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) vendor_method: Arc<str>,
    pub(crate) vendor_path: Template,
    pub(crate) parameters: Vec<Parameter>,
    pub(crate) next: Option<usize>,
    pub(crate) root_key: Option<JsonPath>,
    pub(crate) request_root: Option<String>,
    pub(crate) next_page_key: Option<String>,
    pub(crate) paging: Paging,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) location: Location,
    /// [`Resource::display_name`], decided once by `validate` ([`Resource::named`]).
    pub(crate) display: Arc<str>,
}

/// Who cut a list resource's answer into pages: the resource's `paginationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Paging {
    /// The vendor (`VENDOR_SUPPORTED`, or no `paginationType`): the page inputs go to the vendor,
    /// and its answer says where the next page starts.
    #[default]
    Vendor,
    /// The platform (`VENDOR_NOT_SUPPORTED`): the vendor answers its whole list, and the
    /// platform returned one page of it, of `pageSize` items.
    Platform,
    /// Nobody (`NO_PAGINATION`): the answer is the whole list, with no next page.
    None,
}

impl Paging {
    /// The paging a `paginationType` value says; an unknown value is [`Paging::Vendor`].
    pub fn parse(text: &str) -> Self {
        match text.trim().to_ascii_uppercase().as_str() {
            "VENDOR_NOT_SUPPORTED" => Self::Platform,
            "NO_PAGINATION" => Self::None,
            _ => Self::Vendor,
        }
    }
}

impl Resource {
    /// The position in `resources[]`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A name for messages: the name, else `METHOD path`, else the type label.
    pub fn display_name(&self) -> String {
        self.display.to_string()
    }

    /// [`Resource::display_name`] shared: every request built for the resource carries it
    /// without a copy.
    pub fn display_name_shared(&self) -> &Arc<str> {
        &self.display
    }

    /// The resource with its [`Resource::display_name`] decided from its name, method, path
    /// and type.
    pub(crate) fn named(mut self) -> Self {
        self.display = match (&self.name, &self.method, &self.path) {
            (Some(name), _, _) => name.as_str().into(),
            (None, Some(method), Some(path)) if !path.is_empty() => {
                format!("{method} {path}").into()
            }
            _ => self.kind.label().into(),
        };
        self
    }

    /// The type.
    pub fn kind(&self) -> ResourceType {
        self.kind
    }

    /// Our method.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// Our path.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The vendor's HTTP method, upper case.
    pub fn vendor_method(&self) -> &str {
        &self.vendor_method
    }

    /// [`Resource::vendor_method`] shared: every request built for the resource carries it
    /// without a copy.
    pub fn vendor_method_shared(&self) -> &Arc<str> {
        &self.vendor_method
    }

    /// The compiled vendor path (relative to `base.url`, or absolute).
    pub fn vendor_path(&self) -> &Template {
        &self.vendor_path
    }

    /// The resource's own parameters.
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// The compiled `rootKey` of the response: all of a `rootKey` without `|`, the part after
    /// `|` of the `request|response` form. The answer is unwrapped by it.
    pub fn root_key(&self) -> Option<&JsonPath> {
        self.root_key.as_ref()
    }

    /// The request part of a `request|response` `rootKey` when it is not empty: a JSON request
    /// body is sent wrapped as `{"<part>": body}`.
    pub fn request_root(&self) -> Option<&str> {
        self.request_root.as_deref()
    }

    /// Where the vendor's answer carries the next page's cursor (`nextPageKey`, when not
    /// empty): `body.PATH` (`body.Paging.Next?cursor`: the `cursor` query parameter of the URL
    /// at `Paging.Next`) or `header.NAME`.
    pub fn next_page_key(&self) -> Option<&str> {
        self.next_page_key.as_deref()
    }

    /// Who cuts the list it answers into pages (`paginationType`).
    pub fn paging(&self) -> Paging {
        self.paging
    }

    /// Its own JavaScript hooks, in file order (docs/hooks.md).
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// Where it is declared.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// True when `method` and `path` select this resource: see [`Resource::route_match`].
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.route_match(method, path).is_some()
    }

    /// How `method` and `path` select this resource: `None` when they do not; else the number
    /// of `{variables}` the match needed (a literal path beats a templated one: fewer is
    /// better). Paths compare segment by segment after their `/hubs/<hub>` prefix, when they
    /// have one, as the platform routed them (any hub: a `nextResource` may name another).
    pub fn route_match(&self, method: &str, path: &str) -> Option<usize> {
        let (Some(own_method), Some(own_path)) = (&self.method, &self.path) else {
            return None;
        };
        if !own_method.eq_ignore_ascii_case(method) {
            return None;
        }
        let own = route_segments(own_path);
        let wanted = route_segments(path);
        if own.len() != wanted.len() {
            return None;
        }
        let mut variables = 0;
        for (own, wanted) in own.iter().zip(&wanted) {
            if own.starts_with('{') && own.ends_with('}') {
                variables += 1;
            } else if own != wanted {
                return None;
            }
        }
        Some(variables)
    }

    /// Binds `{variables}` of the resource's `path` from a concrete `path`, for `METHOD:/path`
    /// selectors: `/contacts/{id}` with `/contacts/c1` gives `id = c1`.
    pub fn bind_path(&self, path: &str) -> Vec<(String, String)> {
        let Some(own_path) = &self.path else {
            return Vec::new();
        };
        let own = route_segments(own_path);
        let wanted = route_segments(path);
        if wanted.len() != own.len() {
            return Vec::new();
        }
        own.iter()
            .zip(&wanted)
            .filter_map(|(own, wanted)| {
                let name = own.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.to_owned(), (*wanted).to_owned()))
            })
            .collect()
    }
}

/// The segments of a resource path, without the `/hubs/<hub>` prefix when it has one.
fn route_segments(path: &str) -> Vec<&str> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["hubs", _, rest @ ..] => rest.to_vec(),
        _ => segments,
    }
}
