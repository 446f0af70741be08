//! The OpenAPI 3.1 document of the `/v1` API, served at `GET /v1/openapi.json` (no key) as it
//! is checked in, `schemas/openapi.json`. The tests generate it from the handlers'
//! `#[utoipa::path]` annotations (module `generate`, compiled for tests only, so that a release
//! build does not compile utoipa) and fail when it differs from the checked-in file.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The document, as checked in.
const DOCUMENT: &str = include_str!("../../../schemas/openapi.json");

/// The route of the document.
pub(crate) fn router() -> Router {
    Router::new().route("/v1/openapi.json", get(|| std::future::ready(served())))
}

fn served() -> Response {
    let mut response = DOCUMENT.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
pub(crate) use generate::{EventList, History, Instance, InstanceList, ListParams, NewInstance};

/// The document generated from the handlers' annotations. The shapes below describe the JSON
/// the handlers build; they are the document's, not the handlers' types.
#[cfg(test)]
mod generate {
    use std::collections::BTreeMap;

    use serde_json::Value;
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    use utoipa::{IntoParams, OpenApi, ToSchema};

    use crate::problem::Problem;

    /// The document.
    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "engine serve",
            description = "Instances of declarative connectors over HTTP, kept fresh with no traffic: \
                create or import them with their tokens, sign them in through a browser, call their \
                resources, read their refresh history. Every call presents an API key \
                (`Authorization: Bearer ek_...`, from `engine keys create`) with the endpoint's scope; \
                failures are RFC 9457 problem details. See docs/serve.md.",
            license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
        ),
        paths(
            crate::api::list,
            crate::api::create,
            crate::api::show,
            crate::api::remove,
            crate::api::refresh,
            crate::api::history,
            crate::api::resource,
            crate::connect::authorize,
            crate::connect::callback,
            crate::events::list,
            openapi,
        ),
        components(schemas(
            Problem,
            Instance,
            InstanceList,
            NewInstance,
            History,
            EventList,
            LastRefresh,
            Status,
            crate::connect::Authorization,
        )),
        modifiers(&ApiKey, &OneIdPerOperation),
        tags(
            (name = "instances", description = "Create, list, show, refresh and delete instances"),
            (name = "sign-in", description = "Sign an instance in through a browser (OAuth2 authorization code, PKCE; OAuth 1.0a)"),
            (name = "resources", description = "Call an instance's resources"),
            (name = "events", description = "The events of refreshes: failed, needs re-auth, recovered"),
            (name = "meta", description = "This document"),
        )
    )]
    struct Document;

    /// Adds the `api_key` security scheme: `Authorization: Bearer ek_...`.
    struct ApiKey;

    impl utoipa::Modify for ApiKey {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(
                "An API key from `engine keys create NAME --scope ...`; the scopes an operation needs \
                 are listed with it"
                    .to_owned(),
            );
            openapi
                .components
                .get_or_insert_with(Default::default)
                .add_security_scheme("api_key", SecurityScheme::Http(scheme));
        }
    }

    /// Gives each operation of a route that takes several methods (a resource call) an id of its
    /// own, `resource_get`, `resource_post`...: an operation id names one operation.
    struct OneIdPerOperation;

    impl utoipa::Modify for OneIdPerOperation {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            for item in openapi.paths.paths.values_mut() {
                let mut operations: Vec<(&str, &mut utoipa::openapi::path::Operation)> = [
                    ("get", &mut item.get),
                    ("put", &mut item.put),
                    ("post", &mut item.post),
                    ("delete", &mut item.delete),
                    ("patch", &mut item.patch),
                ]
                .into_iter()
                .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
                .collect();
                let ids: Vec<Option<String>> = operations
                    .iter()
                    .map(|(_, operation)| operation.operation_id.clone())
                    .collect();
                for (method, operation) in &mut operations {
                    let Some(id) = &operation.operation_id else {
                        continue;
                    };
                    if ids.iter().flatten().filter(|other| *other == id).count() > 1 {
                        operation.operation_id = Some(format!("{id}_{method}"));
                    }
                }
            }
        }
    }

    /// The document as JSON, as served and checked in (pretty, with a final newline).
    pub(crate) fn document() -> String {
        let mut text = Document::openapi()
            .to_pretty_json()
            .expect("the document serializes");
        text.push('\n');
        text
    }

    /// This document: the `/v1` API in OpenAPI 3.1. It needs no key.
    #[utoipa::path(
        get,
        path = "/v1/openapi.json",
        tag = "meta",
        responses((status = 200, description = "The OpenAPI document", body = Object)),
        security(())
    )]
    #[expect(dead_code, reason = "documents the route `router` serves")]
    fn openapi() {}

    /// An instance's status.
    #[derive(ToSchema)]
    #[schema(rename_all = "kebab-case")]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) enum Status {
        /// Its token is valid.
        Fresh,
        /// Its token expired.
        Expired,
        /// Its expiry is not known.
        Unknown,
        /// No valid token could be obtained or refreshed: sign it in again.
        NeedsReauth,
    }

    /// When the instance was last refreshed, and how it went.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct LastRefresh {
        /// `ok`, `rejected` or `failed`.
        outcome: String,
        /// When (RFC 3339).
        at: String,
    }

    /// An instance, as every answer shows it.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct Instance {
        /// Its id.
        id: String,
        /// Its connector, as recorded.
        connector: Option<String>,
        /// Its status.
        status: Status,
        /// When its token expires (RFC 3339).
        expires_at: Option<String>,
        /// Its last refresh.
        last_refresh: Option<LastRefresh>,
        /// Its version: one more after each write.
        version: u64,
        /// Its configuration, every secret `****` (`GET`, `POST /v1/instances` only).
        values: Option<BTreeMap<String, Value>>,
        /// What a forced refresh did: `refreshed`, `fresh` or `skipped` (`POST .../refresh` only).
        outcome: Option<String>,
    }

    /// A page of instances.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct InstanceList {
        /// The instances, in id order.
        instances: Vec<Instance>,
        /// The `after` of the next page; `null` on the last.
        next: Option<String>,
    }

    /// A new instance: its connector and configuration, existing tokens included.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct NewInstance {
        /// Its id; `inst-` and 20 random hex digits when absent.
        id: Option<String>,
        /// A connector of `--connectors`: its path, file stem or key.
        connector: String,
        /// Its configuration values (`access.token`, `authentication.time`, `expires_in`...).
        values: Option<BTreeMap<String, Value>>,
    }

    /// A refresh history.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct History {
        /// The entries, oldest first: `at`, `trigger`, `resource`, `status`, `outcome`, `error`,
        /// token fingerprints.
        entries: Vec<Value>,
    }

    /// A page of events.
    #[derive(ToSchema)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct EventList {
        /// The events, oldest first: `id`, `type` (`refresh.failed`, `instance.needs_reauth`,
        /// `instance.recovered`), `timestamp`, `data` (`instance`, `connector`, `trigger`,
        /// `status`, `from`...), `delivery` (the webhook's state).
        events: Vec<Value>,
        /// The `after` of the next page; `null` on the last.
        next: Option<String>,
    }

    /// The filters and cursor of `GET /v1/instances`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    #[expect(dead_code, reason = "a shape of the document")]
    pub(crate) struct ListParams {
        /// Only the instances of this connector, as recorded.
        connector: Option<String>,
        /// Only those with this status: `fresh`, `expired`, `unknown`, `needs-reauth`.
        status: Option<String>,
        /// The previous page's `next`.
        after: Option<String>,
        /// At most this many (default 100, at most 1000).
        limit: Option<usize>,
    }

    mod tests {
        use std::path::Path;

        use super::*;

        /// `schemas/openapi.json` is the served document; `ENGINE_BLESS=1` rewrites it.
        #[test]
        fn checked_in_openapi_document_has_not_drifted() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/openapi.json");
            let generated = document();
            if std::env::var_os("ENGINE_BLESS").is_some() {
                fs_err::write(&path, &generated).unwrap();
            }
            let checked_in = fs_err::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "schemas/openapi.json is out of date: run `ENGINE_BLESS=1 cargo test -p engine-server openapi` and commit it"
            );
        }

        /// The document is OpenAPI 3.1, lists the `/v1` paths, and names each operation once.
        #[test]
        fn the_document_is_openapi_3_1_and_names_every_v1_route() {
            let document: Value = serde_json::from_str(&document()).unwrap();
            assert_eq!(document["openapi"], "3.1.0");
            let paths: Vec<&str> = document["paths"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                paths,
                [
                    "/v1/events",
                    "/v1/instances",
                    "/v1/instances/{id}",
                    "/v1/instances/{id}/authorize",
                    "/v1/instances/{id}/history",
                    "/v1/instances/{id}/refresh",
                    "/v1/instances/{id}/resources/{resource}",
                    "/v1/oauth/callback",
                    "/v1/openapi.json",
                ]
            );
            let mut ids: Vec<&str> = document["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .map(|operation| operation["operationId"].as_str().unwrap())
                .collect();
            let count = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), count, "operation ids are unique: {ids:?}");
        }
    }
}
