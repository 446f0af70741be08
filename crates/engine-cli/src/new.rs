//! `engine new NAME --auth oauth2|custom|basic|apikey`: a minimal, valid, documented connector
//! and a matching instance file to fill in, so that the first file a user writes starts from
//! something that validates.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::Exit;
use crate::printer;
use crate::render::{Level, Message};

/// The authentication a new connector starts with.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Auth {
    /// The built-in OAuth2 client, authorization code with PKCE (`engine authorize`).
    Oauth2,
    /// Lifecycle resources of its own: client credentials through `PROVISION AUTH VALIDATION`.
    Custom,
    /// HTTP Basic from `username` and `password`.
    Basic,
    /// An API key in a header.
    Apikey,
}

#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The connector's key: the files are `NAME.json` and `NAME.instance.json`.
    name: String,
    /// How the vendor authenticates.
    #[arg(long, value_enum, default_value = "custom")]
    auth: Auth,
    /// Where to write the files.
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

pub(crate) fn new(args: &NewArgs) -> Exit {
    let valid_name = !args.name.is_empty()
        && args
            .name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte));
    if !valid_name {
        let title = format!("`{}` cannot name a connector file", args.name);
        let mut message = Message::new(Level::Error, &title);
        message.help = Some("use letters, digits, `-` and `_`, such as `acme-crm`");
        printer::error(&message);
        return Exit::Usage;
    }
    let (connector, instance) = templates(&args.name, args.auth);
    let connector_path = args.dir.join(format!("{}.json", args.name));
    let instance_path = args.dir.join(format!("{}.instance.json", args.name));
    for path in [&connector_path, &instance_path] {
        if path.exists() {
            let title = format!("`{}` already exists", path.display());
            let mut message = Message::new(Level::Error, &title);
            message.help = Some("choose another name or directory; nothing was written");
            printer::error(&message);
            return Exit::Invalid;
        }
    }
    for (path, value) in [(&connector_path, &connector), (&instance_path, &instance)] {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        if let Err(error) = fs_err::write(path, text) {
            let title = error.to_string();
            printer::error(&Message::new(Level::Error, &title));
            return Exit::Invalid;
        }
    }
    printer::stdout(&format!(
        "wrote `{}` and `{}`\nnext: set `base.url` and the credentials in the instance file, then\n  engine validate {}\n  engine run {} me --config {} --dry-run\n",
        connector_path.display(),
        instance_path.display(),
        connector_path.display(),
        connector_path.display(),
        instance_path.display(),
    ));
    Exit::Success
}

/// The connector and the instance file of a new connector.
fn templates(name: &str, auth: Auth) -> (Value, Value) {
    let base_url = json!({"key": "base.url", "name": "API base URL", "type": "TEXTFIELD_1000",
        "required": true, "description": "The vendor's API root, e.g. https://api.example.com/v1"});
    let me = json!({"name": "me", "type": "API", "method": "GET", "path": "/me",
        "vendorMethod": "GET", "vendorPath": "/me",
        "description": "A first call: replace /me with an endpoint of the vendor."});
    let (description, authentication, configuration, parameters, mut resources, instance) =
        match auth {
            Auth::Custom => (
                "Custom authentication: PROVISION AUTH VALIDATION obtains a token with the client credentials grant, ON REFRESH renews it when `expires_in` runs out, and every call sends it as a Bearer header.",
                json!({"type": "custom"}),
                json!([base_url,
                    {"key": "client.id", "name": "Client id", "type": "TEXTFIELD_256", "required": true},
                    {"key": "client.secret", "name": "Client secret", "type": "PASSWORD", "required": true},
                    {"key": "access.token", "type": "TEXTFIELD_1000", "internal": true, "hideFromConsole": true,
                     "description": "Maintained by the engine."}]),
                json!([{"name": "Bearer ${configuration.access.token}", "type": "value",
                        "vendorName": "Authorization", "vendorType": "header",
                        "description": "Skipped until the first token is obtained."}]),
                {
                    let token = json!([
                        {"name": "client_credentials", "type": "value", "vendorName": "grant_type", "vendorType": "form"},
                        {"name": "client.id", "type": "configuration", "vendorName": "client_id", "vendorType": "form"},
                        {"name": "client.secret", "type": "configuration", "vendorName": "client_secret", "vendorType": "form"},
                        {"name": "Authorization", "type": "value", "vendorName": "Authorization", "vendorType": "no-op",
                         "description": "The token request does not carry the token."},
                        {"name": "access.token", "type": "configuration", "source": "response",
                         "vendorName": "access_token", "vendorType": "bodyField"},
                        {"name": "expires_in", "type": "configuration", "source": "response",
                         "vendorName": "expires_in", "vendorType": "bodyField"}]);
                    vec![
                        json!({"type": "PROVISION AUTH VALIDATION", "vendorMethod": "POST",
                               "vendorPath": "/oauth/token", "parameters": token}),
                        json!({"type": "ON REFRESH", "vendorMethod": "POST",
                               "vendorPath": "/oauth/token", "parameters": token}),
                    ]
                },
                json!({"base.url": "", "client.id": "", "client.secret": ""}),
            ),
            Auth::Oauth2 => (
                "The built-in OAuth2 client: authorization code with PKCE through `engine authorize`, then the engine refreshes the token itself.",
                json!({"type": "oauth2", "grant": "authorization_code", "pkce": true}),
                json!([base_url,
                    {"key": "oauth.authorization.url", "name": "Authorization URL", "type": "TEXTFIELD_1000", "required": true},
                    {"key": "oauth.token.url", "name": "Token URL", "type": "TEXTFIELD_1000", "required": true},
                    {"key": "oauth.callback.url", "name": "Callback URL", "type": "TEXTFIELD_1000",
                     "defaultValue": "http://127.0.0.1:8765/callback",
                     "description": "A loopback URL registered with the vendor; engine authorize listens there."},
                    {"key": "oauth.api.key", "name": "Client id", "type": "TEXTFIELD_256", "required": true},
                    {"key": "oauth.api.secret", "name": "Client secret", "type": "PASSWORD"},
                    {"key": "oauth.scope", "name": "Scopes", "type": "TEXTFIELD_256"}]),
                json!([]),
                Vec::new(),
                json!({"base.url": "", "oauth.authorization.url": "", "oauth.token.url": "",
                       "oauth.api.key": "", "oauth.api.secret": "", "oauth.scope": ""}),
            ),
            Auth::Basic => (
                "HTTP Basic from the instance's username and password.",
                json!({"type": "basic"}),
                json!([base_url,
                    {"key": "username", "name": "User", "type": "TEXTFIELD_128", "required": true},
                    {"key": "password", "name": "Password", "type": "PASSWORD", "required": true}]),
                json!([]),
                Vec::new(),
                json!({"base.url": "", "username": "", "password": ""}),
            ),
            Auth::Apikey => (
                "An API key, a PASSWORD property sent in the X-API-Key header of every call.",
                json!({"type": "apiKey"}),
                json!([base_url,
                    {"key": "api.key", "name": "API key", "type": "PASSWORD", "required": true}]),
                json!([{"name": "api.key", "type": "configuration", "vendorName": "X-API-Key",
                        "vendorType": "header", "description": "Rename the header as the vendor wants it."}]),
                Vec::new(),
                json!({"base.url": "", "api.key": ""}),
            ),
        };
    resources.push(me);
    let connector = json!({
        "$schema": engine_spec::schema::SCHEMA_ID,
        "name": name,
        "key": name,
        "description": description,
        "authentication": authentication,
        "configuration": configuration,
        "parameters": parameters,
        "resources": resources,
    });
    (connector, instance)
}

#[cfg(test)]
mod tests {
    use engine_spec::SourceFile;

    use super::*;

    /// Every template validates with no diagnostic at all.
    #[test]
    fn every_template_is_a_valid_connector() {
        for auth in [Auth::Oauth2, Auth::Custom, Auth::Basic, Auth::Apikey] {
            let (connector, _) = templates("acme", auth);
            let text = serde_json::to_string_pretty(&connector).unwrap();
            let report = engine_spec::validate(SourceFile::new("acme.json", text));
            assert!(
                report.diagnostics().is_empty(),
                "{auth:?}: {:?}",
                report.diagnostics()
            );
        }
    }
}
