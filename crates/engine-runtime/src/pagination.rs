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
//! 3. page numbers, when `pagination.type` is `page` or `offset` and the resource takes a
//!    `page` input: the page after the one asked for, as long as the answer is a list neither
//!    empty nor shorter than the page size. Callers count pages from 1 whatever the vendor
//!    counts: with `offset`, the page `page` of `pageSize` items is sent as the vendor's offset
//!    `(page - 1) * pageSize` ([`read_page`]), as the platform converted it.
//!
//! As on the platform, `nextPage` also takes the token it gave callers, base64 of
//! `{"pageSize":2,"page":2}`, for a resource paged by page numbers or offsets: it stands for
//! that `page` and `pageSize`, and the next page is offered as such a token.
//!
//! A resource whose `paginationType` is `VENDOR_NOT_SUPPORTED` was paged by the platform
//! itself: the vendor answers its whole list, and the caller got the page `page` of `pageSize`
//! items (else `pagination.max`) of it. `NO_PAGINATION`: the answer has no next page.

use std::borrow::Cow;

use engine_spec::kinds::Source;
use engine_spec::{Code, Connector, Diagnostic, Paging, Resource};
use serde_json::Value;

use crate::body::Body;
use crate::configuration::Configuration;
use crate::request::Inputs;
use crate::transport::VendorResponse;
use crate::value::text_of;

/// The header the platform carried the next page's token in (a hook may set it).
pub const NEXT_PAGE_HEADER: &str = "elements-next-page-token";

/// The page size the platform asked an offset vendor for when neither the caller (`pageSize`)
/// nor the connector (`pagination.max`) gave one: its API reference describes `pageSize` as
/// "the page size for pagination, which defaults to 200 if not supplied".
pub(crate) const DEFAULT_PAGE_SIZE: i64 = 200;

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

/// The next page's cursor in the answer `response` of `resource` (read before `rootKey`
/// unwraps it): where `nextPageKey` says, else a response parameter named
/// `elements-next-page-token` (how exports mapped the vendor's cursor to the platform's
/// header, `mapped`: it is not lost when `rootKey` makes the output a list), else that header
/// itself.
pub(crate) fn cursor(
    resource: &Resource,
    response: &VendorResponse,
    mapped: Option<&Value>,
) -> Option<String> {
    resource
        .next_page_key()
        .and_then(|key| cursor_at(key, response))
        .or_else(|| mapped.and_then(text_of))
        .or_else(|| {
            const NAME: reqwest::header::HeaderName =
                reqwest::header::HeaderName::from_static(NEXT_PAGE_HEADER);
            response.header_named(&NAME).map(str::to_owned)
        })
        .filter(|cursor| !cursor.is_empty())
}

/// The page a caller asked for, as the platform read it: its `page` and `pageSize`, from the
/// inputs or from the platform's token ([`read_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    /// The page, from 1 (`page`; a number `nextPage` for a list the platform paged).
    page: Option<i64>,
    /// Items per page: `pageSize`; for offsets, the size sent (else `pagination.max`, else
    /// [`DEFAULT_PAGE_SIZE`]).
    size: Option<i64>,
    /// Asked with the platform's token: the next page is offered as a token too.
    token: bool,
    /// The page could not be converted ([`read_page`]): there is no page number to count on.
    as_written: bool,
}

/// How the vendor numbers what `pagination.type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// `page`: page numbers, the first being `pagination.page.startindex` (else 1).
    Pages { start: i64 },
    /// `offset`: the vendor's offset is `(page - 1) * pageSize`.
    Offsets,
    /// Anything else (`cursor`...): nothing to count.
    Other,
}

impl Numbering {
    fn of(configuration: &Configuration<'_>) -> Self {
        let kind = configuration
            .get("pagination.type")
            .and_then(text_of)
            .map(|kind| kind.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if kind.starts_with("page") {
            let start = setting(configuration, "pagination.page.startindex").unwrap_or(1);
            Self::Pages { start }
        } else if kind.starts_with("offset") {
            Self::Offsets
        } else {
            Self::Other
        }
    }
}

/// The inputs sent for the caller's `inputs` of `resource`, and the page they ask for, as the
/// platform read them:
/// - a `nextPage` that is the platform's token (base64 of `{"pageSize":2,"page":2}`), for a
///   resource paged by page numbers or offsets with no `nextPageKey` of its own, is the page
///   and `pageSize` it holds (the resource need not declare `nextPage`); any other `nextPage`
///   is the vendor's cursor, sent as it is;
/// - with `pagination.type` `offset`, the caller's `page` (from 1; none: 1) is sent as the
///   vendor's offset, `(page - 1) * pageSize`, and `pageSize` (the caller's, else
///   `pagination.max`, else [`DEFAULT_PAGE_SIZE`]) as its limit. A `page` or `pageSize` that
///   is not a whole number from 1 cannot be converted: the inputs are sent as written, and the warning
///   says so.
pub(crate) fn read_page<'i>(
    connector: &Connector,
    resource: &Resource,
    configuration: &Configuration<'_>,
    inputs: &'i Inputs,
) -> (Cow<'i, Inputs>, Asked, Option<Diagnostic>) {
    let takes = |input: &str| takes(connector, resource, input);
    let last = |name: &str| {
        inputs
            .params
            .iter()
            .rev()
            .find(|(input, _)| input == name)
            .map(|(_, value)| value.trim())
    };
    let number = |name: &str| last(name).and_then(|value| value.parse::<i64>().ok());
    let numbering = Numbering::of(configuration);
    let paging = resource.paging();
    let mut asked = Asked {
        page: number("page"),
        size: number("pageSize"),
        token: false,
        as_written: false,
    };
    let mut sent = Cow::Borrowed(inputs);
    let by_numbers = paging == Paging::Platform
        || (paging == Paging::Vendor
            && resource.next_page_key().is_none()
            && numbering != Numbering::Other);
    if let Some((page, size)) = last("nextPage")
        .filter(|_| by_numbers)
        .and_then(decode_token)
    {
        asked = Asked {
            page: Some(page),
            size: size.or(asked.size),
            token: true,
            as_written: false,
        };
        let params = &mut sent.to_mut().params;
        params.retain(|(name, _)| !matches!(name.as_str(), "nextPage" | "page" | "pageSize"));
        if takes("page") {
            params.push(("page".to_owned(), page.to_string()));
        }
        if let Some(size) = asked.size.filter(|_| takes("pageSize")) {
            params.push(("pageSize".to_owned(), size.to_string()));
        }
    }
    match paging {
        Paging::Platform => asked.page = asked.page.or_else(|| number("nextPage")),
        Paging::Vendor if numbering == Numbering::Offsets && takes("page") => {
            let written = |name: &str| {
                last(name).filter(|value| value.parse::<i64>().map_or(true, |number| number < 1))
            };
            if let Some((name, value)) = ["page", "pageSize"]
                .into_iter()
                .find_map(|name| written(name).map(|value| (name, value)))
            {
                let page = connector
                    .parameters_of(resource, Source::Request)
                    .find(|parameter| parameter.name() == "page");
                let location = page.map_or(resource.location(), |page| page.location());
                let message = format!(
                    "`page` of {} is sent as written, not as the vendor's offset: its `{name}` \
                     input `{value}` is not a whole number from 1",
                    resource.display_name()
                );
                let warning = Diagnostic::new(Code::NotExecuted, location.clone(), message)
                    .with_label("sent as written")
                    .with_help("give `page` and `pageSize` as whole numbers from 1");
                asked.as_written = true;
                return (sent, asked, Some(warning));
            }
            let size = asked
                .size
                .or_else(|| setting(configuration, "pagination.max").filter(|size| *size > 0))
                .unwrap_or(DEFAULT_PAGE_SIZE);
            let offset = asked
                .page
                .unwrap_or(1)
                .saturating_sub(1)
                .saturating_mul(size);
            let params = &mut sent.to_mut().params;
            params.retain(|(name, _)| name != "page");
            params.push(("page".to_owned(), offset.to_string()));
            if takes("pageSize") && !params.iter().any(|(name, _)| name == "pageSize") {
                params.push(("pageSize".to_owned(), size.to_string()));
            }
            asked.size = Some(size);
        }
        Paging::Vendor | Paging::None => {}
    }
    (sent, asked, None)
}

/// The page of an answer of `resource` the caller gets, and the next page after it if there is
/// one. `output` is the body after `rootKey`; `asked` the page this one was ([`read_page`]).
///
/// As `paginationType` says: `VENDOR_NOT_SUPPORTED` (the vendor answers its whole list): the
/// page `page` (or `nextPage`) of `pageSize` items (else `pagination.max`) is cut from it, as
/// the platform did; `NO_PAGINATION`: the answer, with no next page. Otherwise the vendor pages:
/// its [`cursor`], else, by `pagination.type` (`page` or `offset`), the page after the one
/// asked for, as long as this one is a list that is neither empty nor shorter than its size.
/// A page asked for with the platform's token gives the next one as a token.
pub(crate) fn paged(
    connector: &Connector,
    resource: &Resource,
    configuration: &Configuration<'_>,
    cursor: Option<String>,
    output: Body,
    asked: &Asked,
) -> (Body, Option<NextPage>) {
    let takes = |input: &str| takes(connector, resource, input);
    let by_number = |page: i64, size: Option<i64>, input: &str| {
        if asked.token {
            NextPage {
                input: "nextPage".to_owned(),
                value: encode_token(page, size),
                followable: true,
            }
        } else {
            NextPage {
                input: input.to_owned(),
                value: page.to_string(),
                followable: takes(input),
            }
        }
    };
    match resource.paging() {
        Paging::None => return (output, None),
        Paging::Platform => {
            let size = asked
                .size
                .or_else(|| setting(configuration, "pagination.max"));
            let (page, more) = platform_page(output.into_value(), asked.page, size);
            let input = if takes("page") { "page" } else { "nextPage" };
            return (
                Body::from(page),
                more.map(|value| by_number(value, size, input)),
            );
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
    // Asked before counting: the count reads the body.
    if asked.as_written || !takes("page") {
        return (output, None);
    }
    let count = output.as_array().map_or(0, Vec::len);
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let short = asked.size.is_some_and(|size| count < size);
    if count == 0 || short {
        return (output, None);
    }
    let next = match Numbering::of(configuration) {
        Numbering::Pages { start } => asked.page.unwrap_or(start).saturating_add(1),
        Numbering::Offsets => asked.page.unwrap_or(1).saturating_add(1),
        Numbering::Other => return (output, None),
    };
    (output, Some(by_number(next, asked.size, "page")))
}

/// Whether `resource` has a request parameter named `input` that the caller's `--param`
/// feeds (not a `value` or `configuration` one of that name).
fn takes(connector: &Connector, resource: &Resource, input: &str) -> bool {
    connector
        .parameters_of(resource, Source::Request)
        .any(|parameter| parameter.name() == input && crate::request::takes_param(parameter))
}

/// The number the configuration key `key` holds.
fn setting(configuration: &Configuration<'_>, key: &str) -> Option<i64> {
    configuration
        .get(key)
        .and_then(text_of)
        .and_then(|value| value.trim().parse::<i64>().ok())
}

/// The page and page size the platform's token `token` holds: base64 (padded or not, standard
/// or URL-safe) of a JSON object with a whole `page` from 1 and an optional `pageSize`, and
/// nothing else. `None` for anything else: a vendor's cursor.
fn decode_token(token: &str) -> Option<(i64, Option<i64>)> {
    use base64::Engine as _;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    let lenient =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let bytes = [
        GeneralPurpose::new(&base64::alphabet::STANDARD, lenient),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient),
    ]
    .iter()
    .find_map(|engine| engine.decode(token).ok())?;
    let Value::Object(fields) = serde_json::from_slice::<Value>(&bytes).ok()? else {
        return None;
    };
    if fields.keys().any(|key| key != "page" && key != "pageSize") {
        return None;
    }
    let page = fields.get("page")?.as_i64().filter(|page| *page >= 1)?;
    let size = match fields.get("pageSize") {
        None => None,
        Some(size) => Some(size.as_i64().filter(|size| *size >= 1)?),
    };
    Some((page, size))
}

/// The platform's token for the page `page` of `size` items: base64 (URL-safe, unpadded, as
/// the platform's own example `eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0`) of `{"pageSize":2,"page":2}`.
fn encode_token(page: i64, size: Option<i64>) -> String {
    use base64::Engine as _;
    let json = match size {
        Some(size) => format!(r#"{{"pageSize":{size},"page":{page}}}"#),
        None => format!(r#"{{"page":{page}}}"#),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
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
        .try_fold(response.body.value(), |node, segment| match node {
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
    fn the_platforms_token_holds_a_page_and_its_size_and_nothing_else() {
        // The platform's documented example, and the same padded or in the standard alphabet.
        assert_eq!(
            decode_token("eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0"),
            Some((2, Some(2)))
        );
        assert_eq!(
            decode_token("eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0="),
            Some((2, Some(2)))
        );
        assert_eq!(encode_token(2, Some(2)), "eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0");
        assert_eq!(decode_token(&encode_token(7, None)), Some((7, None)));
        // Vendors' cursors: not base64, another object, a page that is no page number.
        for cursor in [
            "c2",
            "eyJhZnRlciI6ImEyIn0",             // {"after":"a2"}
            "eyJwYWdlIjoyLCJjdXJzb3IiOiJ4In0", // {"page":2,"cursor":"x"}
            "eyJwYWdlIjowfQ",                  // {"page":0}
            "eyJwYWdlIjoiMiJ9",                // {"page":"2"}
        ] {
            assert_eq!(decode_token(cursor), None, "{cursor}");
        }
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
