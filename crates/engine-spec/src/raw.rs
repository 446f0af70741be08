//! Wire types: the connector JSON as written, one to one, with no behaviour.
//!
//! These types are the single source of truth for the JSON Schema
//! (`schemas/connector.schema.json` is generated from them by [`crate::schema`]). Fields that real
//! element.json exports carry and the engine does not use are accepted through the `extra` maps and
//! ignored; [`crate::validate()`] turns these types into the [`crate::Connector`] model.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::kinds::{
    AuthenticationType, ConfigType, Grant, ParameterKind, RefreshIn, ResourceType,
    SessionManagement, Source, VendorKind,
};

/// A connector definition: a vendor API described in the style of Cloud Elements' element.json.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Connector definition")]
pub struct RawConnector {
    /// The JSON Schema this file follows, for editors.
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    /// Display name of the connector, e.g. `Achievers`.
    pub name: Option<String>,
    /// Stable identifier of the connector, e.g. `achievers`.
    pub key: Option<String>,
    /// What the connector connects to.
    pub description: Option<String>,
    /// How the engine authenticates against the vendor.
    pub authentication: Option<RawAuthentication>,
    /// How tokens age and when the engine refreshes them.
    pub session: Option<RawSession>,
    /// The instance configuration properties: credentials, URLs, tokens the engine maintains.
    #[serde(default)]
    pub configuration: Vec<RawConfiguration>,
    /// Global parameter mappings, applied to every resource.
    #[serde(default)]
    pub parameters: Vec<RawParameter>,
    /// The calls the connector can make: lifecycle resources and API resources.
    #[serde(default)]
    pub resources: Vec<RawResource>,
    /// JavaScript hooks from element.json exports; accepted but never executed.
    #[serde(default)]
    pub hooks: Vec<Value>,
    /// How the vendor is reached: `http` (default) and `soap` are executed over HTTP; `jdbc`,
    /// `odata` and other protocols of element.json exports load but are never executed.
    #[schemars(extend("examples" = ["http", "soap"]))]
    pub protocol_type: Option<String>,
    /// Fields of element.json exports the engine does not use (`id`, `hub`, `objects`, ...).
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, Value>,
}

/// How the engine authenticates against the vendor.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RawAuthentication {
    /// The authentication type. `custom` runs the connector's own lifecycle resources; `oauth2`
    /// uses the built-in OAuth2 client (see `grant`).
    #[serde(rename = "type")]
    pub kind: Option<AuthenticationType>,
    /// The OAuth2 grant used to obtain the first token (`oauth2` only).
    pub grant: Option<Grant>,
    /// Adds PKCE (S256) to the authorization code flow (`oauth2` only).
    pub pkce: Option<bool>,
    /// Where the refresh request carries its parameters: the form body (default) or the URL query.
    pub refresh_in: Option<RefreshIn>,
    /// Fields of element.json exports the engine does not use.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, Value>,
}

/// How tokens age and when the engine refreshes them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSession {
    /// `auto` (default): the vendor's `expires_in`; `fixed`: every `timeout` seconds; `none`: never
    /// refresh; `always`: refresh before every call.
    pub management: Option<SessionManagement>,
    /// Seconds a token lives when `management` is `fixed`.
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// Seconds before expiry at which the engine already refreshes (default 30).
    pub skew: Option<u64>,
    /// Seconds a token lives when the vendor sends no `expires_in` (default 3600).
    #[schemars(range(min = 1))]
    pub default_expires_in: Option<u64>,
    /// Vendor statuses that mean "token rejected": refresh once and retry (default `[401]`).
    pub refresh_on_status: Option<Vec<u16>>,
}

/// One instance configuration property.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RawConfiguration {
    /// The configuration key, dotted by convention: `oauth.user.token`, `base.url`.
    pub key: String,
    /// Display name.
    pub name: Option<String>,
    /// The property type; `PASSWORD` values are secrets everywhere.
    #[serde(rename = "type")]
    pub kind: Option<ConfigType>,
    /// The value used when the instance has none.
    #[schemars(with = "Option<DefaultValue>")]
    pub default_value: Option<Value>,
    /// The instance must provide a value.
    pub required: Option<bool>,
    /// Not shown to people configuring an instance.
    pub hide_from_console: Option<bool>,
    /// Maintained by the engine, not by people.
    pub internal: Option<bool>,
    /// `true`: values of this key are masked in every output; `false`: never masked (a saved
    /// account id, a region). Without it the engine decides: see docs/running.md ("Secrets").
    pub secret: Option<bool>,
    /// The choices of a `COMBO` property.
    pub options: Option<Value>,
    /// What the property is for.
    pub description: Option<String>,
    /// Fields of element.json exports the engine does not use.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, Value>,
}

/// A configuration default value: a string, number or boolean.
#[derive(JsonSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "only describes the schema of a default value")]
enum DefaultValue {
    String(String),
    Number(f64),
    Boolean(bool),
}

/// One parameter mapping: where a value comes from and where it goes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RawParameter {
    /// The value's name on our side: a literal for `value`, a configuration key for
    /// `configuration`, the caller's input name otherwise.
    pub name: String,
    /// Where the value comes from (request side), or where it is saved (response side).
    #[serde(rename = "type")]
    pub kind: ParameterKind,
    /// The value's name on the vendor side: header name, query name, body field, JSONPath.
    pub vendor_name: Option<String>,
    /// Where the value goes in the vendor request (request side), or where it is read from in the
    /// vendor response (response side).
    pub vendor_type: Option<VendorKind>,
    /// How the value is converted: `integer`, `number` and `boolean` become JSON numbers and
    /// booleans in JSON bodies; `object` and `array` are parsed as JSON; anything else (`string`,
    /// or an element.json model name such as `contactPost`) is sent as it is.
    #[schemars(extend("examples" = ["string", "integer", "number", "boolean", "object", "array"]))]
    pub data_type: Option<String>,
    /// `request` (default): the value goes to the vendor; `response`: it is read from the vendor's
    /// response.
    pub source: Option<Source>,
    /// The caller must provide this value.
    pub required: Option<bool>,
    /// What the parameter is for.
    pub description: Option<String>,
    /// Fields of element.json exports the engine does not use.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, Value>,
}

/// One call the connector can make.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RawResource {
    /// Unique name used by `engine run`; optional for lifecycle resources.
    pub name: Option<String>,
    /// The resource type, as written by people (`PROVISION AUTH VALIDATION`) or as element.json
    /// exports it (`provisionAuthValidation`).
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Our method (`GET`, `POST`, ...).
    pub method: Option<String>,
    /// Our path, e.g. `/hubs/crm/contacts/{id}`; `{name}` binds a path input.
    pub path: Option<String>,
    /// The vendor's HTTP method (defaults to `method`).
    pub vendor_method: Option<String>,
    /// The vendor path, relative to `base.url`, or an absolute URL; `{name}` is filled by a `path`
    /// parameter and `${configuration.KEY}` by the configuration.
    pub vendor_path: Option<String>,
    /// The resource's parameter mappings; they override global ones for the same vendor slot.
    #[serde(default)]
    pub parameters: Vec<RawParameter>,
    /// The next resource of a chain: a resource name or `METHOD:/path`.
    pub next_resource: Option<String>,
    /// Unwrap the response: a top-level name, a dotted path or a JSONPath.
    pub root_key: Option<String>,
    /// What the resource does.
    pub description: Option<String>,
    /// JavaScript hooks from element.json exports; accepted but never executed.
    #[serde(default)]
    pub hooks: Vec<Value>,
    /// Fields of element.json exports the engine does not use.
    #[serde(flatten)]
    #[schemars(skip)]
    pub extra: BTreeMap<String, Value>,
}

impl RawConnector {
    /// Every parameter: global ones, then each resource's.
    pub fn all_parameters(&self) -> impl Iterator<Item = &RawParameter> {
        self.parameters.iter().chain(
            self.resources
                .iter()
                .flat_map(|resource| &resource.parameters),
        )
    }
}
