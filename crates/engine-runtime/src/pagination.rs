//! Pagination as the export declares it: where the next page's cursor is in the vendor's
//! answer, and following it page after page, bounded.
//!
//! The platform answered every list with the header `elements-next-page-token` and took it back
//! as the input `nextPage`. The cursor comes, in this order, from:
//! 1. the resource's `nextPageKey`: `body.PATH` (a dotted path in the answer, before `rootKey`;
//!    `body.Paging.Next?cursor` takes the `cursor` query parameter of the URL found there) or
//!    `header.NAME`;
//! 2. a response parameter named `elements-next-page-token` (an export's mapping of the
//!    vendor's cursor to the platform's header), else that header in the answer (a
//!    `postRequest` hook sets it);
//! 3. page numbers, when `pagination.type` is `page` and the resource takes a `page` input:
//!    the page after the one asked for (`pagination.page.startindex`, else 1, when none was),
//!    as long as the answer is a non-empty list.

use std::collections::HashSet;

use engine_spec::kinds::Source;
use engine_spec::{Connector, Resource};
use engine_store::InstanceStore;
use serde_json::Value;

use crate::configuration::Configuration;
use crate::engine::{Engine, RunRequest};
use crate::extract::Extracted;
use crate::observer::Observer;
use crate::redact::Redactor;
use crate::request::Inputs;
use crate::run_error::RunError;
use crate::transport::VendorResponse;
use crate::value::text_of;

/// The header the platform carried the next page's token in (a hook may set it).
pub const NEXT_PAGE_HEADER: &str = "elements-next-page-token";

/// The most pages [`Pages::All`] follows: a vendor that never stops is cut here, with a word.
pub const MAX_PAGES: usize = 100;

/// How to ask for the next page: the input and its value (`nextPage=CURSOR`, `page=3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextPage {
    /// The input of the resource that takes it: `nextPage` or `page`.
    pub input: String,
    /// Its value.
    pub value: String,
    /// Whether the resource has a parameter of that name: the next page can be asked for.
    pub followable: bool,
}

/// How many pages a run follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// At most this many (1: the page asked for only).
    UpTo(usize),
    /// Until the vendor gives no next page, at most [`MAX_PAGES`].
    All,
}

/// Why following stopped before the vendor ran out of pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageStop {
    /// The vendor gave a cursor already followed: following it would loop.
    Repeated,
    /// [`Pages::All`] reached [`MAX_PAGES`].
    Capped,
    /// The resource has no input to ask for the next page with.
    NotFollowable,
}

/// The pages of a run.
#[derive(Debug)]
pub struct PagedOutput {
    /// The last response's status.
    pub status: u16,
    /// Each page's body after `rootKey`, secrets masked, in order.
    pub pages: Vec<Value>,
    /// How to ask for the page after the last one, when the vendor gave one.
    pub next_page: Option<NextPage>,
    /// Why following stopped early, if it did.
    pub stopped: Option<PageStop>,
    /// Masks every secret the runs know of.
    pub redactor: Redactor,
}

/// Runs `request`, then its next pages as `pages` allows: each page is a run of its own (fresh
/// token, lock, history), with the cursor of the previous one as its input.
///
/// Fails as [`Engine::run`] does, on the first page that fails.
pub async fn run_pages(
    engine: &Engine,
    request: &RunRequest<'_>,
    store: &dyn InstanceStore,
    observer: &dyn Observer,
    pages: Pages,
) -> Result<PagedOutput, RunError> {
    let limit = match pages {
        Pages::UpTo(limit) => limit.max(1),
        Pages::All => MAX_PAGES,
    };
    let mut inputs: Inputs = request.inputs.clone();
    let mut seen: HashSet<String> = HashSet::new();
    let mut bodies = Vec::new();
    loop {
        let page = RunRequest {
            inputs: &inputs,
            ..*request
        };
        let output = engine.run(&page, store, observer).await?;
        bodies.push(output.body);
        let stopped = match &output.next_page {
            None => None,
            Some(_) if bodies.len() >= limit => (pages == Pages::All).then_some(PageStop::Capped),
            Some(next) if !next.followable => Some(PageStop::NotFollowable),
            Some(next) if !seen.insert(next.value.clone()) => Some(PageStop::Repeated),
            Some(next) => {
                inputs.params.retain(|(name, _)| *name != next.input);
                inputs.params.push((next.input.clone(), next.value.clone()));
                continue;
            }
        };
        return Ok(PagedOutput {
            status: output.status,
            pages: bodies,
            next_page: output.next_page,
            stopped,
            redactor: output.redactor,
        });
    }
}

/// The next page's cursor in the answer `response` of `resource` (read before `rootKey`
/// unwraps it): where `nextPageKey` says, else a response parameter named
/// `elements-next-page-token` (how exports mapped the vendor's cursor to the platform's
/// header; it is not lost when `rootKey` makes the output a list), else that header itself.
pub(crate) fn cursor(
    resource: &Resource,
    response: &VendorResponse,
    extracted: &Extracted,
) -> Option<String> {
    resource
        .next_page_key()
        .and_then(|key| cursor_at(key, response))
        .or_else(|| extracted.output(NEXT_PAGE_HEADER).and_then(text_of))
        .or_else(|| {
            const NAME: reqwest::header::HeaderName =
                reqwest::header::HeaderName::from_static(NEXT_PAGE_HEADER);
            response.header_named(&NAME).map(str::to_owned)
        })
        .filter(|cursor| !cursor.is_empty())
}

/// The next page after an answer of `resource`, if the vendor says there is one: its
/// [`cursor`], else the next page number. `output` is the body after `rootKey`; `inputs` what
/// this page was asked with.
pub(crate) fn next_page(
    connector: &Connector,
    resource: &Resource,
    configuration: &Configuration<'_>,
    cursor: Option<String>,
    output: &Value,
    inputs: &Inputs,
) -> Option<NextPage> {
    let takes = |input: &str| {
        connector
            .parameters_of(resource, Source::Request)
            .any(|parameter| parameter.name() == input)
    };
    if let Some(cursor) = cursor {
        return Some(NextPage {
            input: "nextPage".to_owned(),
            value: cursor,
            followable: takes("nextPage"),
        });
    }
    let paged = configuration
        .get("pagination.type")
        .and_then(text_of)
        .is_some_and(|kind| kind.trim().to_ascii_lowercase().starts_with("page"));
    let more = output.as_array().is_some_and(|items| !items.is_empty());
    if !(paged && more && takes("page")) {
        return None;
    }
    let start = configuration
        .get("pagination.page.startindex")
        .and_then(text_of)
        .and_then(|start| start.trim().parse::<i64>().ok())
        .unwrap_or(1);
    let current = inputs
        .params
        .iter()
        .rev()
        .find(|(name, _)| name == "page")
        .and_then(|(_, value)| value.trim().parse::<i64>().ok())
        .unwrap_or(start);
    Some(NextPage {
        input: "page".to_owned(),
        value: current.saturating_add(1).to_string(),
        followable: true,
    })
}

/// The cursor `key` (`body.PATH[?QUERY]` or `header.NAME`; a bare `PATH` is a body path) finds
/// in `response`.
fn cursor_at(key: &str, response: &VendorResponse) -> Option<String> {
    if let Some(name) = key.strip_prefix("header.") {
        return response.header(name).map(str::to_owned);
    }
    let path = key.strip_prefix("body.").unwrap_or(key);
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let found = path
        .split('.')
        .filter(|segment| !segment.is_empty())
        .try_fold(&response.body, |node, segment| match node {
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|at| items.get(at)),
            _ => node.get(segment),
        })
        .filter(|value| !value.is_null())?;
    let text = text_of(found)?;
    let Some(query) = query else {
        return Some(text);
    };
    // The cursor is a query parameter of the URL found there (absolute or relative).
    let base = url::Url::parse("http://next.page/").ok()?;
    let url = base.join(&text).ok()?;
    url.query_pairs()
        .find(|(name, _)| name == query)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(body: Value, headers: &[(&str, &str)]) -> VendorResponse {
        VendorResponse::new(
            200,
            headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            body,
        )
    }

    #[test]
    fn a_next_page_key_reads_the_body_a_url_in_it_or_a_header() {
        let body = json!({"Paging": {"Next": "https://v.example/Reports/R1?cursor=c%2F2&pageSize=5"},
                          "data": [{"next": "n1"}]});
        let response = answer(body, &[("vsts-page-token", "t-9")]);
        assert_eq!(
            cursor_at("body.Paging.Next?cursor", &response).as_deref(),
            Some("c/2")
        );
        assert_eq!(
            cursor_at("body.Paging.Next", &response).as_deref(),
            Some("https://v.example/Reports/R1?cursor=c%2F2&pageSize=5")
        );
        assert_eq!(cursor_at("data.0.next", &response).as_deref(), Some("n1"));
        assert_eq!(
            cursor_at("header.vsts-page-token", &response).as_deref(),
            Some("t-9")
        );
        assert_eq!(cursor_at("body.Paging.Previous", &response), None);
        assert_eq!(cursor_at("body.Paging.Next?page", &response), None);
    }

    #[test]
    fn a_relative_next_url_gives_its_query_parameter() {
        let response = answer(json!({"next": "/items?after=a1"}), &[]);
        assert_eq!(
            cursor_at("body.next?after", &response).as_deref(),
            Some("a1")
        );
    }
}
