//! A small, deterministic vendor emulator for running connectors offline.
//!
//! This crate owns an HTTP server on `127.0.0.1` that behaves like a typical vendor API, so the
//! README quick start and the integration tests can exercise the whole token lifecycle (provision,
//! refresh on expiry, refresh on 401) without a network. The entry point is [`Emulator::start`];
//! the `vendor-emulator` binary wraps it for the command line.
//!
//! # Endpoints
//!
//! All bodies are JSON (`content-type: application/json`) unless noted.
//!
//! | route | what it does |
//! | --- | --- |
//! | `POST /oauth/token` | RFC 6749 token endpoint: `client_credentials`, `password`, `refresh_token` grants |
//! | `POST /session/login` | JSON login, `{"credentials": {"user", "secret"}}` → session token |
//! | `GET /api/v1/me` | the account, and whether an `oauth` or `session` token was used |
//! | `GET /api/v1/contacts?limit=N&page=P` | five fixed contacts, paginated (pages start at 1) |
//! | `GET /api/v1/contacts/{id}` | one contact, or 404 `not_found` |
//! | `POST /api/v1/contacts` | 201, the JSON body with `"id": "c6"` added |
//! | `GET`, `POST /api/v1/echo` | reflects method, path, query, `x-*`/`content-type`/`accept` headers, body |
//! | `GET /_stats` | the [`Stats`] counters |
//! | `POST /_admin/expire` | [`Emulator::expire_all_tokens`], then 204 |
//! | `POST /_admin/revoke` | [`Emulator::revoke_all_tokens`], then 204 |
//!
//! The token endpoint authenticates the client by HTTP Basic or by `client_id`/`client_secret`
//! parameters, and reads parameters from both the query string and the form body. Refresh tokens
//! rotate: each refresh returns a new refresh token and retires the presented one, and presenting
//! a retired one revokes the whole chain (`invalid_grant`); with
//! [`EmulatorConfig::rotate_refresh_tokens`] false the same refresh token keeps working.
//!
//! The login answers `{"data": {"session": {"token": "st_…", "ttl": "3600"}}}` (the lifetime is a
//! *string*) and repeats the token in an `X-Session-Token` header.
//!
//! `/api/v1/` accepts `Authorization: Bearer <access or session token>` or
//! `X-Session-Token: <session token>`. A missing, unknown or expired token gets 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"` and an `invalid_token` body.
//!
//! Tokens are random URL-safe strings prefixed `at_` (access), `rt_` (refresh) or `st_` (session).
//!
//! # Example
//!
//! ```no_run
//! use engine_emulator::{Emulator, EmulatorConfig};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let emulator = Emulator::start(EmulatorConfig::default(), 0).await?;
//! let token_url = format!("{}/oauth/token", emulator.url());
//! // … run a connector against `token_url` and `{url}/api/v1/…` …
//! emulator.expire_all_tokens(); // the next API call gets a 401 and must refresh
//! assert_eq!(emulator.stats().api_unauthorized, 0);
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use serde::Serialize;

mod api;
mod emulator;
mod form;
mod oauth;
mod session;
mod state;
mod tokens;

pub use emulator::Emulator;

/// What the emulator accepts and how long its tokens live.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Lifetime of access tokens, sent as `expires_in` (default one hour).
    pub token_ttl: Duration,
    /// Lifetime of session tokens, sent as the string `ttl` (default one hour).
    pub session_ttl: Duration,
    /// Accepted OAuth clients as `(client_id, client_secret)`.
    pub clients: Vec<(String, String)>,
    /// Accepted users as `(name, password)`, for the password grant and the login.
    pub users: Vec<(String, String)>,
    /// Each refresh returns a new refresh token and retires the presented one (default); when
    /// false the same refresh token keeps working, as with vendors that never rotate.
    pub rotate_refresh_tokens: bool,
}

impl Default for EmulatorConfig {
    /// Returns one-hour lifetimes, client `demo-client`/`demo-secret` and user
    /// `demo`/`demo-password`.
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_hours(1),
            session_ttl: Duration::from_hours(1),
            clients: vec![("demo-client".to_owned(), "demo-secret".to_owned())],
            users: vec![("demo".to_owned(), "demo-password".to_owned())],
            rotate_refresh_tokens: true,
        }
    }
}

/// Request counters since the emulator started, as returned by [`Emulator::stats`] and
/// `GET /_stats`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Every request to `POST /oauth/token`, successful or not.
    pub token_requests: u64,
    /// Successful `client_credentials` grants.
    pub client_credentials_grants: u64,
    /// Successful `password` grants.
    pub password_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Successful `POST /session/login` calls.
    pub logins: u64,
    /// Every request under `/api/v1/`, authorized or not.
    pub api_calls: u64,
    /// Requests under `/api/v1/` refused with 401.
    pub api_unauthorized: u64,
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    use super::*;

    /// Starts an emulator with default config on a free port, plus a client.
    async fn start() -> (Emulator, reqwest::Client) {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        (emulator, client())
    }

    /// A client for plain HTTP: reqwest has no TLS provider of its own in this workspace (the
    /// engine gives it one), so a process default is installed first.
    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    /// Posts `form` to the token endpoint and returns status and JSON body.
    async fn token(
        emulator: &Emulator,
        client: &reqwest::Client,
        form: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let response = client
            .post(format!("{}/oauth/token", emulator.url()))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    const CLIENT: [(&str, &str); 2] = [
        ("client_id", "demo-client"),
        ("client_secret", "demo-secret"),
    ];

    #[tokio::test]
    async fn client_credentials_happy_path_and_bad_secret() {
        let (emulator, client) = start().await;
        let (status, body) = token(
            &emulator,
            &client,
            &[CLIENT[0], CLIENT[1], ("grant_type", "client_credentials")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body["access_token"].as_str().unwrap().starts_with("at_"));
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "read");
        assert!(body.get("refresh_token").is_none());

        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                ("client_secret", "wrong"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({"error": "invalid_client", "error_description": "client authentication failed"})
        );

        let (status, body) = token(&emulator, &client, &[CLIENT[0], CLIENT[1]]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"error": "unsupported_grant_type"}));
        emulator.shutdown().await;
    }

    #[tokio::test]
    async fn without_rotation_a_refresh_token_keeps_working_until_revoked() {
        let config = EmulatorConfig {
            rotate_refresh_tokens: false,
            ..EmulatorConfig::default()
        };
        let emulator = Emulator::start(config, 0).await.unwrap();
        let client = client();
        let password = [
            CLIENT[0],
            CLIENT[1],
            ("grant_type", "password"),
            ("username", "demo"),
            ("password", "demo-password"),
        ];
        let (_, body) = token(&emulator, &client, &password).await;
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        let grant = [
            CLIENT[0],
            CLIENT[1],
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ];
        for _ in 0..2 {
            let (status, body) = token(&emulator, &client, &grant).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["refresh_token"], refresh.as_str());
        }
        let response = client
            .post(format!("{}/_admin/revoke", emulator.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let (status, body) = token(&emulator, &client, &grant).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        emulator.shutdown().await;
    }

    #[tokio::test]
    async fn basic_auth_client_and_requested_scope() {
        let (emulator, client) = start().await;
        let response = client
            .post(format!("{}/oauth/token", emulator.url()))
            .basic_auth("demo-client", Some("demo-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "contacts:read"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["scope"], "contacts:read");
        assert_eq!(emulator.stats().client_credentials_grants, 1);
    }

    #[tokio::test]
    async fn password_grant_rotates_and_reuse_revokes_the_family() {
        let (emulator, client) = start().await;
        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "password"),
                ("username", "demo"),
                ("password", "nope"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "bad credentials"})
        );

        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "password"),
                ("username", "demo"),
                ("password", "demo-password"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let first = body["refresh_token"].as_str().unwrap().to_owned();
        assert!(first.starts_with("rt_"));

        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", &first),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let second = body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(second, first);

        // Refresh parameters in the query string work too.
        let url = format!(
            "{}/oauth/token?grant_type=refresh_token&refresh_token={second}",
            emulator.url()
        );
        let response = client.post(url).form(&CLIENT).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        let third = body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(third, second);

        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", &first),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "refresh token was already used; the grant is revoked"})
        );
        let (status, body) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", &third),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        let (status, _) = token(
            &emulator,
            &client,
            &[
                CLIENT[0],
                CLIENT[1],
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt_unknown"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let counters = emulator.stats();
        assert_eq!(
            (
                counters.token_requests,
                counters.password_grants,
                counters.refresh_grants
            ),
            (7, 1, 2)
        );
    }

    #[tokio::test]
    async fn login_returns_ttl_as_string_and_the_header() {
        let (emulator, client) = start().await;
        let url = format!("{}/session/login", emulator.url());
        let response = client
            .post(&url)
            .json(&json!({"credentials": {"user": "demo", "secret": "demo-password"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let header = response.headers()["x-session-token"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["session"]["ttl"], "3600");
        assert_eq!(body["data"]["session"]["token"], header.as_str());
        assert!(header.starts_with("st_"));

        let me = client
            .get(format!("{}/api/v1/me", emulator.url()))
            .header("X-Session-Token", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["token_kind"], "session");
        assert_eq!(me["account"]["id"], "acc-42");

        let bad = client
            .post(&url)
            .json(&json!({"credentials": {"user": "demo", "secret": "x"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            bad.json::<Value>().await.unwrap(),
            json!({"error": "invalid_credentials"})
        );
        let malformed = client.post(&url).body("{not json").send().await.unwrap();
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        assert_eq!(emulator.stats().logins, 1);
    }

    #[tokio::test]
    async fn api_refuses_missing_and_expired_tokens() {
        let (emulator, client) = start().await;
        let me = format!("{}/api/v1/me", emulator.url());
        let response = client.get(&me).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(
            response.json::<Value>().await.unwrap()["error_description"],
            "the access token is missing"
        );

        let (_, body) = token(
            &emulator,
            &client,
            &[CLIENT[0], CLIENT[1], ("grant_type", "client_credentials")],
        )
        .await;
        let access = body["access_token"].as_str().unwrap();
        let response = client.get(&me).bearer_auth(access).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.unwrap()["token_kind"],
            "oauth"
        );

        emulator.expire_all_tokens();
        let response = client.get(&me).bearer_auth(access).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "invalid_token", "error_description": "the access token expired"})
        );
        let response = client
            .get(&me)
            .bearer_auth("at_made_up")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.json::<Value>().await.unwrap()["error_description"],
            "the access token is unknown"
        );

        // A fresh token works again, and the admin route expires it as well.
        let (_, body) = token(
            &emulator,
            &client,
            &[CLIENT[0], CLIENT[1], ("grant_type", "client_credentials")],
        )
        .await;
        let fresh = body["access_token"].as_str().unwrap();
        assert_eq!(
            client
                .get(&me)
                .bearer_auth(fresh)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let expire = client
            .post(format!("{}/_admin/expire", emulator.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(expire.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            client
                .get(&me)
                .bearer_auth(fresh)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );

        let stats: Value = client
            .get(format!("{}/_stats", emulator.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["api_calls"], 6);
        assert_eq!(stats["api_unauthorized"], 4);
        assert_eq!(stats, serde_json::to_value(emulator.stats()).unwrap());
    }

    #[tokio::test]
    async fn contacts_paginate_and_echo_reflects_the_request() {
        let (emulator, client) = start().await;
        let (_, body) = token(
            &emulator,
            &client,
            &[CLIENT[0], CLIENT[1], ("grant_type", "client_credentials")],
        )
        .await;
        let access = body["access_token"].as_str().unwrap();
        let get = |path: &str| {
            client
                .get(format!("{}{path}", emulator.url()))
                .bearer_auth(access)
                .send()
        };

        let page: Value = get("/api/v1/contacts?limit=2&page=3")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            page,
            json!({"data": {"contacts": [{"id": "c5", "name": "Barbara Liskov", "email": "barbara@example.com"}]}, "page": 3, "limit": 2})
        );
        let first: Value = get("/api/v1/contacts/c1")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(first["name"], "Ada Lovelace");
        let missing = get("/api/v1/contacts/c9").await.unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.json::<Value>().await.unwrap(),
            json!({"error": "not_found", "message": "contact `c9` does not exist"})
        );

        let created = client
            .post(format!("{}/api/v1/contacts", emulator.url()))
            .bearer_auth(access)
            .json(&json!({"name": "Radia Perlman"}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(
            created.json::<Value>().await.unwrap(),
            json!({"name": "Radia Perlman", "id": "c6"})
        );

        let echo: Value = client
            .post(format!("{}/api/v1/echo?a=1&b=two+words", emulator.url()))
            .bearer_auth(access)
            .header("X-Trace", "t-1")
            .header("Accept", "application/json")
            .form(&[("k", "v w")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            echo,
            json!({
                "method": "POST",
                "path": "/api/v1/echo",
                "query": {"a": "1", "b": "two words"},
                "headers": {"accept": "application/json", "content-type": "application/x-www-form-urlencoded", "x-trace": "t-1"},
                "body": {"k": "v w"},
            })
        );
        let echo: Value = get("/api/v1/echo").await.unwrap().json().await.unwrap();
        assert_eq!(echo["body"], Value::Null);
        assert_eq!(echo["method"], "GET");
    }
}
