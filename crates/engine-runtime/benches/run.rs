//! The engine's per-request overhead: one `GET` against a local axum server on 127.0.0.1, sent
//! by a bare `reqwest::Client` and by [`Engine::run`] with a fresh token.
//!
//! Every variant sends the same request (`GET /api/v1/contacts/c1` with `Accept` and a Bearer
//! `Authorization` header) over a kept-alive connection and reads the whole body, so the
//! difference between them is what the engine adds: resource lookup, the freshness check,
//! rendering, building, sending through its client, parsing and redacting the body.
//!
//! - `reqwest`: a bare `reqwest::Client` (`Client::new()`), the floor;
//! - `reqwest/engine-settings`: a client with the engine's settings (30 s total and 10 s
//!   connect timeouts, its user agent), to tell what those cost from what the engine adds;
//! - `engine/auth-none`: a connector with `"authentication": {"type": "none"}`;
//! - `engine/custom-fresh`: `connectors/demo.json` (custom lifecycle) with an instance whose
//!   token was obtained now and lives a day. The server has no token endpoint: a refresh would
//!   fail the run, so none is made.
//!
//! Throughput is in requests per second (one element = one request). Run with
//! `cargo bench -p engine-runtime --bench run`; see docs/BENCHMARKS.md.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engine_runtime::{Engine, Inputs, NoObserver, RunRequest};
use engine_spec::{Connector, SourceFile};
use engine_store::{MemoryStore, State};
use serde_json::{Value, json};

const TOKEN: &str = "at_bench_0123456789abcdef";
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
struct Fixture {
    connector: Connector,
    store: MemoryStore,
    inputs: Inputs,
}

impl Fixture {
    async fn run_once(&self, engine: &Engine) -> Value {
        let output = engine
            .run(
                &RunRequest {
                    connector: &self.connector,
                    selector: "get-contact",
                    inputs: &self.inputs,
                    instance: "bench",
                    dry_run: false,
                },
                &self.store,
                &NoObserver,
            )
            .await
            .expect("the run succeeds");
        assert_eq!(output.status, Some(200));
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

fn bench_run(c: &mut Criterion) {
    // Two workers, as many as this machine's cores; the server and the measured loop share them.
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
            include_str!("../../../connectors/demo.json"),
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
    let engine = Engine::new().expect("an engine");
    let client = reqwest::Client::new();
    // The settings `EngineBuilder::new` gives the engine's client: what the timeouts cost alone.
    let configured = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("connector-engine/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client");

    // Every variant must get the same answer before anything is measured.
    runtime.block_on(async {
        let expected: Value = serde_json::from_str(BODY).expect("JSON");
        let response = client
            .get(&url)
            .header(header::ACCEPT, "application/json")
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert_eq!(response.json::<Value>().await.expect("JSON body"), expected);
        assert_eq!(none.run_once(&engine).await, expected);
        assert_eq!(custom.run_once(&engine).await, expected);
    });

    let mut group = c.benchmark_group("get_contact");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));

    // Each sample runs its iterations in one task on a runtime worker, as a service would.
    for (name, client, parse) in [
        ("reqwest", &client, false),
        ("reqwest/engine-settings", &configured, false),
        ("reqwest/json", &configured, true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let client = client.clone();
                let url = url.clone();
                runtime
                    .block_on(runtime.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            let response = client
                                .get(&url)
                                .header(header::ACCEPT, "application/json")
                                .bearer_auth(TOKEN)
                                .send()
                                .await
                                .expect("send");
                            assert_eq!(response.status(), reqwest::StatusCode::OK);
                            if parse {
                                // What the engine hands back: the body as a JSON value.
                                let body: Value = response.json().await.expect("JSON body");
                                std::hint::black_box(body);
                            } else {
                                std::hint::black_box(response.bytes().await.expect("body"));
                            }
                        }
                        started.elapsed()
                    }))
                    .expect("the loop task")
            });
        });
    }
    for (name, fixture) in [
        ("engine/auth-none", &none),
        ("engine/custom-fresh", &custom),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let engine = engine.clone();
                let fixture = Arc::clone(fixture);
                runtime
                    .block_on(runtime.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            std::hint::black_box(fixture.run_once(&engine).await);
                        }
                        started.elapsed()
                    }))
                    .expect("the loop task")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_run);
criterion_main!(benches);
