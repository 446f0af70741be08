//! What both benchmarks of `engine run` share: the local server, the connectors and instances
//! of the engine variants, and the clients of the reqwest variants, each checked to get the same
//! answer before anything is measured.

#![allow(dead_code, reason = "each benchmark binary uses a part of it")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use engine_runtime::{Engine, Inputs, NoObserver, RunRequest};
use engine_spec::{Connector, SourceFile};
use engine_store::{MemoryStore, State};
use serde_json::{Value, json};

pub(crate) const TOKEN: &str = "at_bench_0123456789abcdef";
const BODY: &str = r#"{"id":"c1","name":"Ada Lovelace","email":"ada@example.com"}"#;

/// The one route both clients call. Refuses a request without the token, so that a variant
/// that stopped sending it would fail instead of measuring something else.
async fn contact(headers: HeaderMap) -> impl IntoResponse {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(TOKEN);
    if authorized {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            BODY,
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"invalid_token"}"#,
        )
    }
}

/// Starts the server on an ephemeral port of 127.0.0.1 and returns its base URL.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    let app = Router::new().route("/api/v1/contacts/{id}", get(contact));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{address}")
}

const NO_AUTH_CONNECTOR: &str = r#"{
  "name": "Bench, no authentication",
  "key": "bench-none",
  "authentication": {"type": "none"},
  "configuration": [
    {"key": "base.url", "name": "Base URL", "type": "TEXTFIELD_1000", "required": true},
    {"key": "access.token", "name": "Access token", "type": "PASSWORD", "required": true}
  ],
  "parameters": [
    {"name": "application/json", "type": "value", "vendorName": "Accept", "vendorType": "header"},
    {"name": "Bearer ${configuration.access.token}", "type": "value", "vendorName": "Authorization", "vendorType": "header"}
  ],
  "resources": [
    {
      "name": "get-contact",
      "type": "API",
      "method": "GET",
      "path": "/contacts/{id}",
      "vendorMethod": "GET",
      "vendorPath": "/api/v1/contacts/{id}",
      "parameters": [
        {"name": "id", "type": "path", "vendorName": "id", "vendorType": "path", "required": true}
      ]
    }
  ]
}"#;

/// The same call with the `Authorization` header set by a connector-wide `preRequest` hook from
/// the configuration, as element.json exports do (docs/hooks.md).
const PRE_HOOK_CONNECTOR: &str = r#"{
  "name": "Bench, pre-request hook",
  "key": "bench-hook",
  "authentication": {"type": "none"},
  "configuration": [
    {"key": "base.url", "name": "Base URL", "type": "TEXTFIELD_1000", "required": true},
    {"key": "access.token", "name": "Access token", "type": "PASSWORD", "required": true}
  ],
  "parameters": [
    {"name": "application/json", "type": "value", "vendorName": "Accept", "vendorType": "header"}
  ],
  "hooks": [
    {"type": "preRequest", "mimeType": "application/javascript", "isLegacy": false,
     "body": "let headers = request_vendor_headers;\nheaders['Authorization'] = 'Bearer ' + configuration['access.token'];\ndone({request_vendor_headers: headers});"}
  ],
  "resources": [
    {
      "name": "get-contact",
      "type": "API",
      "method": "GET",
      "path": "/contacts/{id}",
      "vendorMethod": "GET",
      "vendorPath": "/api/v1/contacts/{id}",
      "parameters": [
        {"name": "id", "type": "path", "vendorName": "id", "vendorType": "path", "required": true}
      ]
    }
  ]
}"#;

fn connector(path: &str, text: &str) -> Connector {
    let report = engine_spec::validate(SourceFile::new(path, text));
    assert!(
        !report.has_errors(),
        "{path} is invalid: {:?}",
        report.diagnostics()
    );
    report.into_connector().expect("a valid connector")
}

fn state(value: Value) -> State {
    match value {
        Value::Object(map) => map,
        other => panic!("an instance is an object, not {other}"),
    }
}

/// One engine variant: a connector and the store holding its instance.
pub(crate) struct Fixture {
    connector: Connector,
    store: MemoryStore,
    inputs: Inputs,
}

impl Fixture {
    pub(crate) async fn run_once(&self, engine: &Engine) -> engine_runtime::Body {
        let output = engine
            .run(
                &RunRequest {
                    connector: &self.connector,
                    selector: "get-contact",
                    inputs: &self.inputs,
                    instance: "bench",
                },
                &self.store,
                &NoObserver,
            )
            .await
            .expect("the run succeeds");
        assert_eq!(output.status, 200);
        output.body
    }
}

fn fixture(connector: Connector, instance: State) -> Arc<Fixture> {
    let store = MemoryStore::new();
    store.insert("bench", instance);
    Arc::new(Fixture {
        connector,
        store,
        inputs: Inputs {
            params: vec![("id".into(), "c1".into())],
            ..Inputs::default()
        },
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// Everything a benchmark measures, ready: the runtime, the server, the clients and fixtures.
pub(crate) struct Setup {
    /// Two workers, as many as this machine's cores; the server and the measured loop share them.
    pub(crate) runtime: tokio::runtime::Runtime,
    /// The URL every variant calls.
    pub(crate) url: String,
    /// A bare `reqwest::Client::new()`: the floor.
    pub(crate) client: reqwest::Client,
    /// A client with the settings `EngineBuilder::new` gives the engine's client.
    pub(crate) configured: reqwest::Client,
    /// The engine.
    pub(crate) engine: Engine,
    /// `connectors/demo.json`-like connector without authentication.
    pub(crate) none: Arc<Fixture>,
    /// `connectors/demo.json` with a fresh token.
    pub(crate) custom: Arc<Fixture>,
    /// `none`'s call with its `Authorization` set by a connector-wide `preRequest` hook.
    pub(crate) hooked: Arc<Fixture>,
}

impl Setup {
    /// Starts the server and checks that every variant gets the same answer.
    pub(crate) fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let base = runtime.block_on(serve());
        let url = format!("{base}/api/v1/contacts/c1");
        let none = fixture(
            connector("bench-none.json", NO_AUTH_CONNECTOR),
            state(json!({"base.url": base, "access.token": TOKEN})),
        );
        let custom = fixture(
            connector(
                "connectors/demo.json",
                include_str!("../../../../connectors/demo.json"),
            ),
            state(json!({
                "base.url": base,
                "client.id": "demo-client",
                "client.secret": "demo-secret",
                "access.token": TOKEN,
                "authentication.time": now_ms().to_string(),
                "expires_in": "86400",
            })),
        );
        let hooked = fixture(
            connector("bench-hook.json", PRE_HOOK_CONNECTOR),
            state(json!({"base.url": base, "access.token": TOKEN})),
        );
        // reqwest has no TLS provider of its own in this workspace (the engine gives it one):
        // bare reqwest needs a process default to build a client, even for plain HTTP.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let setup = Self {
            runtime,
            url,
            client: reqwest::Client::new(),
            configured: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .connect_timeout(Duration::from_secs(10))
                .user_agent(USER_AGENT)
                .build()
                .expect("a client"),
            engine: Engine::new().expect("an engine"),
            none,
            custom,
            hooked,
        };
        setup.runtime.block_on(async {
            let expected: Value = serde_json::from_str(BODY).expect("JSON");
            let body = bare_request(&setup.client, &setup.url, true).await;
            assert_eq!(body, expected);
            assert_eq!(setup.none.run_once(&setup.engine).await, expected);
            assert_eq!(setup.custom.run_once(&setup.engine).await, expected);
            assert_eq!(setup.hooked.run_once(&setup.engine).await, expected);
        });
        setup
    }
}

/// The `User-Agent` the engine sends; the reqwest variants send it too, so that every variant
/// sends the same request and the server does the same work for each.
pub(crate) const USER_AGENT: &str = concat!("connector-engine/", env!("CARGO_PKG_VERSION"));

/// One request of a reqwest variant, reading the whole body; parsed into a JSON value (what the
/// engine hands back) when `parse`, else `null`. The same request as the engine's: `Accept`,
/// `Authorization` and `User-Agent` headers.
pub(crate) async fn bare_request(client: &reqwest::Client, url: &str, parse: bool) -> Value {
    let response = client
        .get(url)
        .header(header::ACCEPT, "application/json")
        .bearer_auth(TOKEN)
        .header(header::USER_AGENT, USER_AGENT)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    if parse {
        response.json().await.expect("JSON body")
    } else {
        std::hint::black_box(response.bytes().await.expect("body"));
        Value::Null
    }
}
