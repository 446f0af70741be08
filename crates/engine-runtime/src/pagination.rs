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
//!    the page after the one asked for (`pagination.page.startindex`, else 1, when none was);
//!    offsets, when it is `offset`: the offset asked for (`page`, else 0) plus the items
//!    answered; both as long as the answer is a list neither empty nor shorter than `pageSize`.
//!
//! A resource whose `paginationType` is `VENDOR_NOT_SUPPORTED` was paged by the platform
//! itself: the vendor answers its whole list, and the caller got the page `page` of `pageSize`
//! items (else `pagination.max`) of it. `NO_PAGINATION`: the answer has no next page.

use std::collections::HashSet;

use engine_spec::kinds::Source;
use engine_spec::{Connector, Paging, Resource};
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
    /// The output parameters of the pages that their bodies (lists) have no field for, by name,
    /// in order ([`crate::RunOutput::outputs`]).
    pub outputs: Vec<(String, Value)>,
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
    let mut outputs = Vec::new();
    loop {
        let page = RunRequest {
            inputs: &inputs,
            ..*request
        };
        let output = engine.run(&page, store, observer).await?;
        bodies.push(output.body);
        outputs.extend(output.outputs);
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
            outputs,
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

/// The page of an answer of `resource` the caller gets, and the next page after it if there is
/// one. `output` is the body after `rootKey`; `inputs` what this page was asked with.
///
/// As `paginationType` says: `VENDOR_NOT_SUPPORTED` (the vendor answers its whole list): the
/// page `page` (or `nextPage`) of `pageSize` items (else `pagination.max`) is cut from it, as
/// the platform did; `NO_PAGINATION`: the answer, with no next page. Otherwise the vendor pages:
/// its [`cursor`], else, by `pagination.type`, the next page number (`page`) or offset
/// (`offset`: the offset plus the items of this page), as long as the page is a list that is
/// neither empty nor shorter than the `pageSize` asked for.
pub(crate) fn paged(
    connector: &Connector,
    resource: &Resource,
    configuration: &Configuration<'_>,
    cursor: Option<String>,
    output: Value,
    inputs: &Inputs,
) -> (Value, Option<NextPage>) {
    let takes = |input: &str| {
        connector
            .parameters_of(resource, Source::Request)
            .any(|parameter| parameter.name() == input)
    };
    let number = |name: &str| {
        inputs
            .params
            .iter()
            .rev()
            .find(|(input, _)| input == name)
            .and_then(|(_, value)| value.trim().parse::<i64>().ok())
    };
    let setting = |key: &str| {
        configuration
            .get(key)
            .and_then(text_of)
            .and_then(|value| value.trim().parse::<i64>().ok())
    };
    match resource.paging() {
        Paging::None => return (output, None),
        Paging::Platform => {
            let size = number("pageSize").or_else(|| setting("pagination.max"));
            let asked = number("page").or_else(|| number("nextPage"));
            let (page, more) = platform_page(output, asked, size);
            let input = if takes("page") { "page" } else { "nextPage" };
            let next = more.map(|value| NextPage {
                input: input.to_owned(),
                value: value.to_string(),
                followable: takes(input),
            });
            return (page, next);
        }
        Paging::Vendor => {}
    }
    if let Some(cursor) = cursor {
        let next = NextPage {
            input: "nextPage".to_owned(),
            value: cursor,
            followable: takes("nextPage"),
        };
        return (output, Some(next));
    }
    let kind = configuration
        .get("pagination.type")
        .and_then(text_of)
        .map(|kind| kind.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let count = output.as_array().map_or(0, Vec::len);
    let short =
        number("pageSize").is_some_and(|size| i64::try_from(count).unwrap_or(i64::MAX) < size);
    if count == 0 || short || !takes("page") {
        return (output, None);
    }
    let value = if kind.starts_with("page") {
        let start = setting("pagination.page.startindex").unwrap_or(1);
        number("page").unwrap_or(start).saturating_add(1)
    } else if kind.starts_with("offset") {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        number("page").unwrap_or(0).saturating_add(count)
    } else {
        return (output, None);
    };
    let next = NextPage {
        input: "page".to_owned(),
        value: value.to_string(),
        followable: true,
    };
    (output, Some(next))
}

/// The page `page` (1 when not given or below 1) of `size` items of the list `output`, as the
/// platform cut it from a vendor answering its whole list, with the next page's number when
/// items are left (a page past the end is empty). `output` as it is when it is no list or no
/// size is known.
fn platform_page(output: Value, page: Option<i64>, size: Option<i64>) -> (Value, Option<i64>) {
    let (Value::Array(items), Some(size)) = (&output, size.filter(|size| *size > 0)) else {
        return (output, None);
    };
    let page = page.unwrap_or(1).max(1);
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let skip = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let taken: Vec<Value> = items.iter().skip(skip).take(size).cloned().collect();
    let more = (skip.saturating_add(size) < items.len()).then_some(page.saturating_add(1));
    (Value::Array(taken), more)
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
    fn the_platform_cut_pages_of_the_size_asked_from_the_first() {
        let list = json!([1, 2, 3, 4, 5]);
        assert_eq!(
            platform_page(list.clone(), None, Some(2)),
            (json!([1, 2]), Some(2))
        );
        assert_eq!(
            platform_page(list.clone(), Some(3), Some(2)),
            (json!([5]), None)
        );
        assert_eq!(
            platform_page(list.clone(), Some(4), Some(2)),
            (json!([]), None)
        );
        assert_eq!(
            platform_page(list.clone(), Some(0), Some(5)),
            (list.clone(), None)
        );
        // No size known, or no list: the answer as it is.
        assert_eq!(platform_page(list.clone(), Some(2), None), (list, None));
        assert_eq!(
            platform_page(json!({"a": 1}), Some(2), Some(1)),
            (json!({"a": 1}), None)
        );
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
