//! The floor of `bench/serve.sh`: the idiomatic minimum of a proxy with axum and reqwest, no
//! engine. It forwards every request (`ANY /*path`, query, headers and body) to `UPSTREAM` with
//! `Authorization: Bearer TOKEN` in place of the caller's, and streams the answer back, its
//! status and headers as they came but for the hop-by-hop ones.
//!
//! `passthrough UPSTREAM TOKEN [PORT]` (port 0, the default, picks a free one) prints
//! `listening on http://ADDR` once it listens.
#![allow(missing_docs)]
#![allow(
    clippy::print_stdout,
    reason = "its one line, the address it listens on"
)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    base: String,
    bearer: HeaderValue,
}

/// Headers that describe one hop, never forwarded either way (RFC 9110).
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != header::HOST && name != header::AUTHORIZATION {
            headers.append(name, value.clone());
        }
    }
    headers.insert(header::AUTHORIZATION, upstream.bearer.clone());
    // The request's body is read whole (reqwest wants a `Sync` body, axum's is not); the
    // answer's is streamed.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let sent = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !hop_by_hop(name) {
                headers.append(name, value.clone());
            }
        }
    }
    response
        .body(Body::new(reqwest::Body::from(answer)))
        .unwrap_or_else(|error| (StatusCode::BAD_GATEWAY, error.to_string()).into_response())
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(token)) = (args.next(), args.next()) else {
        panic!("usage: passthrough UPSTREAM TOKEN [PORT]");
    };
    let port: u16 = args
        .next()
        .map_or(0, |port| port.parse().expect("PORT is a number"));
    // reqwest has no TLS provider of its own in this workspace (the engine gives it one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = Upstream {
        client: reqwest::Client::new(),
        base: base.trim_end_matches('/').to_owned(),
        bearer: HeaderValue::try_from(format!("Bearer {token}")).expect("TOKEN is header text"),
    };
    let app = axum::Router::new().fallback(forward).with_state(upstream);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("a port of 127.0.0.1");
    let addr = listener.local_addr().expect("the bound address");
    println!("listening on http://{addr}");
    axum::serve(listener, app).await.expect("serving");
}
