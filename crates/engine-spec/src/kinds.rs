//! The closed sets of names a connector uses: resource types, parameter kinds, configuration
//! types. Each accepts every spelling people and element.json exports write, and normalises it.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};

/// Declares a wire enum: each variant lists its canonical spelling first, then the aliases it
/// accepts. Deserialisation is exact (case-sensitive), the JSON Schema lists every spelling.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident => [$canonical:literal $(, $alias:literal)* $(,)?] ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant ),+
        }

        impl $name {
            /// Every spelling accepted, canonical ones first within each variant.
            pub const SPELLINGS: &'static [&'static str] = &[$($canonical, $($alias,)*)+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $canonical ),+ }
            }

            /// Parses any accepted spelling; `None` for anything else.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $( $canonical $(| $alias)* => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = Cow::<str>::deserialize(deserializer)?;
                Self::parse(&text).ok_or_else(|| {
                    serde::de::Error::invalid_value(
                        serde::de::Unexpected::Str(&text),
                        &Self::SPELLINGS.join(", ").as_str(),
                    )
                })
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let descriptions: Vec<String> = vec![
                    $( {
                        let doc: &[&str] = &[$($doc),*];
                        format!("`{}`:{}", $canonical, doc.join(" "))
                    } ),+
                ];
                json_schema!({
                    "type": "string",
                    "enum": Self::SPELLINGS,
                    "description": descriptions.join("\n"),
                })
            }
        }
    };
}

wire_enum! {
    /// The type of a resource: a lifecycle step or an API call.
    pub enum ResourceType {
        /// Obtains the first token; sets `authentication.time`.
        ProvisionAuthValidation => ["provisionAuthValidation", "PROVISION AUTH VALIDATION"],
        /// Runs once after first provisioning (saves account ids and such).
        OnProvision => ["onProvision", "ON PROVISION"],
        /// Refreshes the token; sets `authentication.time`.
        OnRefresh => ["onRefresh", "ON REFRESH"],
        /// Runs when an instance is deleted (`engine instances delete`), with the instance's
        /// authentication.
        OnDelete => ["onDelete", "ON DELETE"],
        /// An API call the caller runs.
        Api => ["api", "API"],
        /// An API call left out of generated documentation.
        ApiNoDocumentation => ["apiNoDocumentation", "API NO DOCUMENTATION"],
        /// Replaces the built-in OAuth2 authorization-code exchange.
        OauthOnTokenExchange => ["oauthOnTokenExchange", "OAUTH ON TOKEN EXCHANGE"],
        /// Replaces the built-in OAuth2 refresh.
        OauthOnTokenRefresh => ["oauthOnTokenRefresh", "OAUTH ON TOKEN REFRESH"],
        /// Builds the OAuth2 authorization URL (`engine authorize` runs it and opens its answer).
        OauthOnAuthorizeUrl => ["oauthOnAuthorizeUrl", "oauthOnAuthroizeUrl", "OAUTH ON AUTHORIZE URL"],
        /// Registers the vendor webhook when an instance is provisioned (not executed by the engine).
        OnProvisionWebhook => ["onProvisionWebhook", "ON PROVISION WEBHOOK"],
        /// Removes the vendor webhook when an instance is deleted (not executed by the engine).
        OnDeleteWebhook => ["onDeleteWebhook", "ON DELETE WEBHOOK"],
        /// Replaces the built-in OAuth2 password grant's token request.
        Oauth2Password => ["oauth2Password", "OAUTH2 PASSWORD"],
    }
}

impl ResourceType {
    /// True for resources a caller runs (`api`, `apiNoDocumentation`).
    pub fn is_api(self) -> bool {
        matches!(self, Self::Api | Self::ApiNoDocumentation)
    }

    /// The label people write, as used in messages (`PROVISION AUTH VALIDATION`).
    pub fn label(self) -> &'static str {
        match self {
            Self::ProvisionAuthValidation => "PROVISION AUTH VALIDATION",
            Self::OnProvision => "ON PROVISION",
            Self::OnRefresh => "ON REFRESH",
            Self::OnDelete => "ON DELETE",
            Self::Api => "API",
            Self::ApiNoDocumentation => "API NO DOCUMENTATION",
            Self::OauthOnTokenExchange => "OAUTH ON TOKEN EXCHANGE",
            Self::OauthOnTokenRefresh => "OAUTH ON TOKEN REFRESH",
            Self::OauthOnAuthorizeUrl => "OAUTH ON AUTHORIZE URL",
            Self::OnProvisionWebhook => "ON PROVISION WEBHOOK",
            Self::OnDeleteWebhook => "ON DELETE WEBHOOK",
            Self::Oauth2Password => "OAUTH2 PASSWORD",
        }
    }

    /// True for resource types the engine accepts but never runs: the webhook resources.
    pub fn is_never_executed(self) -> bool {
        matches!(self, Self::OnProvisionWebhook | Self::OnDeleteWebhook)
    }
}

wire_enum! {
    /// Where a parameter's value comes from (request side) or where it is saved (response side).
    pub enum ParameterKind {
        /// The parameter's `name` itself is the value, after template rendering.
        Value => ["value"],
        /// The instance configuration value of the key `name`.
        Configuration => ["configuration"],
        /// A caller header (request) / a header of the output (response).
        Header => ["header"],
        /// A caller query parameter (`--param`).
        Query => ["query"],
        /// A caller path variable (`--param`).
        Path => ["path"],
        /// The caller's whole body (`--body`).
        Body => ["body"],
        /// A field of the caller's body (request) / a field of the output (response).
        BodyField => ["bodyField"],
        /// A caller form field (`--param`).
        Form => ["form"],
        /// A caller `multipart/form-data` part (`--param NAME=@FILE` for a file, `@-` for stdin,
        /// text otherwise).
        Multipart => ["multipart"],
        /// The whole previous response body of a chain.
        PrevBody => ["prevBody"],
        /// A field of the previous response body of a chain.
        PrevBodyField => ["prevBodyField"],
    }
}

wire_enum! {
    /// Where a value goes in the vendor request, or where it is read in the vendor response.
    pub enum VendorKind {
        /// An HTTP header.
        Header => ["header"],
        /// A URL query parameter.
        Query => ["query"],
        /// Fills `{vendorName}` in `base.url` or `vendorPath`.
        Path => ["path"],
        /// A field of an `application/x-www-form-urlencoded` body.
        Form => ["form"],
        /// A part of a `multipart/form-data` body.
        Multipart => ["multipart"],
        /// The whole JSON body.
        Body => ["body"],
        /// A field of the JSON body; a dotted name builds nested objects. On the response side a
        /// top-level name, a dotted path or a JSONPath starting with `$`.
        BodyField => ["bodyField"],
        /// Response side: same as `bodyField`, as element.json exports name token fields.
        BodyToken => ["bodyToken"],
        /// Not sent.
        NoOp => ["no-op", "noop"],
        /// element.json's reversed form: the parameter's `name` is the header and `vendorName` is
        /// its (templated) value, e.g. `{"name": "Authorization", "type": "header", "vendorName":
        /// "Basic CE.b64(...)", "vendorType": "value"}`.
        Value => ["value"],
    }
}

wire_enum! {
    /// Which side of the exchange a parameter describes.
    pub enum Source {
        /// The value goes to the vendor.
        Request => ["request"],
        /// The value is read from the vendor's response.
        Response => ["response"],
    }
}

wire_enum! {
    /// The type of a configuration property.
    pub enum ConfigType {
        /// Text up to 32 characters.
        Textfield32 => ["TEXTFIELD_32"],
        /// Text up to 64 characters.
        Textfield64 => ["TEXTFIELD_64"],
        /// Text up to 128 characters.
        Textfield128 => ["TEXTFIELD_128"],
        /// Text up to 256 characters.
        Textfield256 => ["TEXTFIELD_256"],
        /// Text up to 512 characters.
        Textfield512 => ["TEXTFIELD_512"],
        /// Text up to 1000 characters.
        Textfield1000 => ["TEXTFIELD_1000"],
        /// Multi-line text.
        Textarea => ["TEXTAREA"],
        /// A secret: masked in every output, log and error.
        Password => ["PASSWORD"],
        /// `true` or `false`.
        Boolean => ["BOOLEAN"],
        /// A number.
        Number => ["NUMBER"],
        /// One of `options`.
        Combo => ["COMBO"],
        /// Text edited as code (JSON, JavaScript, XML): a text value.
        CodeEditor => ["CODE_EDITOR"],
        /// A boolean shown as yes/no: `true`/`false` values are sent as `yes`/`no`.
        BooleanYesNo => ["BOOLEAN_YESNO"],
    }
}

wire_enum! {
    /// How a parameter value is converted before it is sent.
    pub enum DataType {
        /// Sent as text (`file`: a multipart file part).
        String => ["string", "file"],
        /// A JSON integer in JSON bodies.
        Integer => ["integer", "int", "long"],
        /// A JSON number in JSON bodies.
        Number => ["number", "double", "float"],
        /// A JSON boolean in JSON bodies.
        Boolean => ["boolean", "bool"],
        /// Parsed as JSON.
        Object => ["object", "json", "body"],
        /// Parsed as a JSON array.
        Array => ["array"],
        /// Sent as text (element.json dates).
        Date => ["date", "datetime"],
    }
}

wire_enum! {
    /// The authentication type of a connector.
    pub enum AuthenticationType {
        /// The connector's own lifecycle resources obtain and refresh tokens.
        Custom => ["custom"],
        /// The built-in OAuth2 client; `grant` picks the flow.
        Oauth2 => ["oauth2"],
        /// OAuth2 with the client credentials grant.
        Oauth2ClientCredentials => ["oauth2ClientCredentials"],
        /// OAuth2 with the resource owner password grant.
        Oauth2Password => ["oauth2Password"],
        /// OAuth2 authorization code with PKCE.
        Oauth2Pkce => ["oauth2Pkce"],
        /// HTTP Basic with the configuration keys `username` and `password`.
        Basic => ["basic"],
        /// OAuth 1.0a: requests signed with the instance's token (`engine authorize` obtains it).
        Oauth1 => ["oauth1"],
        /// An API key mapped by the connector's parameters.
        ApiKey => ["apiKey"],
        /// No authentication.
        None => ["none"],
    }
}

wire_enum! {
    /// An OAuth2 grant.
    pub enum Grant {
        /// The authorization code grant (browser sign-in through `engine authorize`).
        AuthorizationCode => ["authorization_code"],
        /// The client credentials grant.
        ClientCredentials => ["client_credentials"],
        /// The resource owner password grant (`username` and `password` keys).
        Password => ["password"],
    }
}

wire_enum! {
    /// Where the refresh request carries its parameters.
    pub enum RefreshIn {
        /// In the `application/x-www-form-urlencoded` body.
        Body => ["body"],
        /// In the URL query string.
        Query => ["query"],
    }
}

wire_enum! {
    /// How tokens age.
    pub enum SessionManagement {
        /// Expire after the vendor's `expires_in`.
        Auto => ["auto"],
        /// Expire every `timeout` seconds.
        Fixed => ["fixed"],
        /// Never refresh.
        None => ["none"],
        /// Refresh before every call.
        Always => ["always"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_keys_alike() {
        assert_eq!(
            ResourceType::parse("PROVISION AUTH VALIDATION"),
            Some(ResourceType::ProvisionAuthValidation)
        );
        assert_eq!(
            ResourceType::parse("oauthOnAuthroizeUrl"),
            Some(ResourceType::OauthOnAuthorizeUrl)
        );
        assert_eq!(ResourceType::parse("on refresh"), None);
        assert_eq!(VendorKind::parse("no-op"), Some(VendorKind::NoOp));
    }

    #[test]
    fn rejects_unknown_spelling_with_the_list() {
        let error = serde_json::from_str::<ParameterKind>("\"cookie\"").unwrap_err();
        assert!(error.to_string().contains("prevBodyField"), "{error}");
    }
}
