//! The URL: `base.url` and the `vendorPath` joined, `{placeholders}` filled (one path segment
//! each), the `query` parameters merged with a query written in the `vendorPath`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use engine_spec::kinds::VendorKind;
use engine_spec::template::{TemplateContext, Values, fill_placeholders};
use engine_spec::{Parameter, Resource};
use serde_json::{Map, Value};

use super::inputs::BuildContext;
use crate::prepared_request::SecretSlot;
use crate::redact::Redactor;
use crate::run_error::{InputKind, MissingKey, RunError, RunErrorKind};
use crate::value::{as_text, text_of, text_view};

/// The values of a URL's `{name}` placeholders: path parameters by vendor name, and path
/// variables bound from a `METHOD:/path` selector. A later value replaces an earlier one.
#[derive(Default)]
pub(super) struct PathValues<'a>(Vec<(&'a str, Value)>);

impl<'a> PathValues<'a> {
    pub(super) fn insert(&mut self, name: &'a str, value: Value) {
        match self.0.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => *known = value,
            None => self.0.push((name, value)),
        }
    }
}

impl Values for PathValues<'_> {
    fn value(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, value)| value)
    }

    fn to_map(&self) -> Map<String, Value> {
        self.0
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect()
    }
}

/// Builds the URL of `resource`, and records in `secrets` where a secret key written in the
/// `vendorPath` itself (`${configuration.KEY}`) shows in it.
///
/// Fails when a placeholder has no value or a bad one, the path does not render, `base.url` is
/// missing, or the URL is invalid or not `http(s)`.
pub(super) fn build_url(
    context: &BuildContext<'_>,
    resource: &Resource,
    path_values: &PathValues<'_>,
    query: &[(String, String)],
    secrets: &mut Vec<SecretSlot>,
) -> Result<url::Url, RunError> {
    let url = join(context, resource, path_values, query)?;
    // `${configuration.KEY}` of a secret key written in the `vendorPath` itself.
    for key in resource.vendor_path().keys() {
        if context.connector.is_secret_key(key)
            && let Some(value) = context.configuration.get(key).and_then(text_of)
        {
            let encoded = engine_spec::template::percent_encode(&value).into_owned();
            if encoded != value {
                secrets.push(SecretSlot::Path(encoded));
            }
            secrets.push(SecretSlot::Path(value));
        }
    }
    Ok(url)
}

fn join(
    context: &BuildContext<'_>,
    resource: &Resource,
    path_values: &PathValues<'_>,
    query: &[(String, String)],
) -> Result<url::Url, RunError> {
    let template = resource.vendor_path();
    if let Some(missing) = template
        .placeholders()
        .iter()
        .find(|placeholder| path_values.value(&placeholder.name).is_none())
    {
        return Err(RunError::from(RunErrorKind::MissingInput {
            resource: resource.display_name(),
            name: missing.name.clone(),
            input: InputKind::Param,
        })
        .at(resource.location()));
    }
    check_segments(resource, path_values)?;
    if let Some(url) = in_known_directory(context, template, path_values) {
        check_scheme(&url, "`base.url`", context.redactor)
            .map_err(|error| error.at(resource.location()))?;
        return Ok(with_query(url, None, query));
    }
    let path_context = TemplateContext::new(context.configuration, Some(path_values));
    let path = template.render(&path_context).map_err(|error| {
        RunError::from(RunErrorKind::Render {
            template: template.source().to_owned(),
            message: context.redactor.redact(&error.to_string()),
        })
        .at(resource.location())
    })?;
    // A query string written in `vendorPath` (`/token?grant_type=client_credentials`, OData's
    // `$filter=Name eq '{name}'`): its pairs are merged with the `query` parameters below.
    let (path, literal_query) = match path.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (path, None),
    };
    let absolute = path.starts_with("http://") || path.starts_with("https://");
    let base_url = || -> Result<&str, RunError> {
        context
            .configuration
            .get("base.url")
            .and_then(Value::as_str)
            .filter(|base| !base.is_empty())
            .ok_or_else(|| {
                RunErrorKind::MissingConfiguration {
                    missing: vec![MissingKey {
                        key: "base.url".into(),
                        description: Some("the vendor's base URL".into()),
                    }],
                }
                .into()
            })
    };
    let (full, parsed) = if absolute {
        let parsed = url::Url::parse(&path);
        (path, parsed)
    } else if path.is_empty() {
        // No `vendorPath`: the URL is `base.url` as it is (SOAP services, single endpoints).
        let base = with_configuration(base_url()?, context);
        let base = fill_placeholders(&base, |name| path_values.value(name).map(as_text));
        let parsed = parse_joined(&base, &base);
        (base.into_owned(), parsed)
    } else {
        let base = with_configuration(base_url()?, context);
        let base = fill_placeholders(&base, |name| path_values.value(name).map(as_text));
        // Joined by hand: `format!` costs more than the rest of the joining.
        let mut full = String::with_capacity(base.len() + path.len() + 1);
        match (
            base.ends_with('/'),
            // A `vendorPath` that continues the query of `base.url` (`&function=...`) gets no
            // `/` before it.
            path.starts_with(['/', '&']) || path.is_empty(),
        ) {
            (true, true) => full.push_str(base.trim_end_matches('/')),
            (false, false) => {
                full.push_str(&base);
                full.push('/');
            }
            _ => full.push_str(&base),
        }
        full.push_str(&path);
        let parsed = parse_joined(&base, &full);
        (full, parsed)
    };
    let url = parsed.map_err(|error| {
        RunError::from(RunErrorKind::InvalidUrl {
            url: context.redactor.redact(&full),
            message: error.to_string(),
        })
        .at(resource.location())
    })?;
    let source = if absolute {
        "the resource's `vendorPath`"
    } else {
        "`base.url`"
    };
    check_scheme(&url, source, context.redactor).map_err(|error| error.at(resource.location()))?;
    Ok(with_query(url, literal_query.as_deref(), query))
}

/// `url` with the query written in the `vendorPath` (`literal`) merged with the `query`
/// parameters.
fn with_query(mut url: url::Url, literal: Option<&str>, query: &[(String, String)]) -> url::Url {
    match literal {
        Some(literal) => url.set_query(Some(&merge_query(literal, query))),
        None if !query.is_empty() => {
            url.query_pairs_mut().extend_pairs(query);
        }
        None => {}
    }
    url
}

/// The URL of the usual `vendorPath`, a literal directory and one `{placeholder}` holding an id
/// (`/api/v1/contacts/{id}`, [`engine_spec::template::Template::directory_and_placeholder`]),
/// without rendering the path or joining its text to `base.url`: the directory's URL remembered
/// for the base ([`ParsedBase`]) with the id pushed onto it, the URL [`join`] would make by
/// parsing. `None` when the path, the value or the base is of another kind, or the base was
/// not parsed yet: the caller joins it the long way.
fn in_known_directory(
    context: &BuildContext<'_>,
    template: &engine_spec::template::Template,
    path_values: &PathValues<'_>,
) -> Option<url::Url> {
    let (directory, name) = template.directory_and_placeholder()?;
    let Some(Value::String(last)) = path_values.value(name) else {
        return None;
    };
    let base = context
        .configuration
        .get("base.url")
        .and_then(Value::as_str)?;
    // `{key}`s in the base are filled first (`with_configuration`): the long way.
    if base.as_bytes().contains(&b'{') {
        return None;
    }
    parse_in_directory(base, directory, last)?.ok()
}

thread_local! {
    /// The bases parsed on this thread ([`parse_joined`]), by their text.
    static BASES: RefCell<HashMap<Box<str>, ParsedBase, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// `full`, the text of a URL made by joining a path to `base` (a `base.url`, placeholders
/// filled), parsed as [`url::Url::parse`] would: `base` is parsed once per thread, and a `full`
/// that is its scheme and authority as `base` serializes them followed by a `/path` (not `//`)
/// is parsed as that path relative to it, which is the same URL without parsing the host
/// again (about 7,000 instructions a request, issue 22). Anything else is parsed whole.
fn parse_joined(base: &str, full: &str) -> Result<url::Url, url::ParseError> {
    /// Distinct bases remembered per thread before the cache starts again.
    const CAPACITY: usize = 1024;
    BASES.with_borrow_mut(|bases| {
        if let Some(parsed) = bases.get_mut(base) {
            return parsed.parse(base, full);
        }
        if bases.len() >= CAPACITY {
            bases.clear();
        }
        let url = url::Url::parse(base).ok();
        let authority_only = url.as_ref().is_some_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && base.trim_end_matches('/') == &url[..url::Position::BeforePath]
        });
        let mut parsed = ParsedBase {
            url,
            bare: authority_only,
            directories: Vec::new(),
        };
        let answer = parsed.parse(base, full);
        bases.insert(base.into(), parsed);
        answer
    })
}

/// [`parse_joined`] of `base` (its `/`s at the end left out) followed by `directory` and `last`,
/// for a `base` already parsed on this thread that is only a scheme and an authority, as its
/// URL serialises them (`http://127.0.0.1:8080`), and a `directory` and `last` that
/// [`ParsedBase::parse`] would split the path into: the directory's URL with `last` pushed,
/// without making or reading the joined text. `None` for anything else.
fn parse_in_directory(
    base: &str,
    directory: &str,
    last: &str,
) -> Option<Result<url::Url, url::ParseError>> {
    // What `ParsedBase::parse` asks of the path after the authority and `split_last_segment`
    // of its last segment, stricter (no tab or line break after the first `/`).
    let after_slash = directory.strip_prefix('/')?;
    if after_slash.starts_with(['/', '\\', '\t', '\n', '\r'])
        || directory.bytes().any(|byte| matches!(byte, b'?' | b'#'))
        || !is_plain_segment(last)
    {
        return None;
    }
    BASES.with_borrow_mut(|bases| {
        let parsed = bases.get_mut(base)?;
        let url = parsed.url.as_ref().filter(|_| parsed.bare)?;
        Some(in_directory(url, &mut parsed.directories, directory, last))
    })
}

/// True when the parser takes `segment` as it is after any directory: one or more RFC 3986
/// unreserved characters (letters, digits, `-._~`), not a dot segment (`.`, `..`). Percent-
/// encoding leaves it as it is too.
fn is_plain_segment(segment: &str) -> bool {
    let unreserved =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
    !segment.is_empty() && segment.bytes().all(unreserved) && !matches!(segment, "." | "..")
}

/// A `base.url` parsed once per thread ([`parse_joined`]), with the directories of the paths
/// joined to it.
struct ParsedBase {
    /// The base parsed; `None` when it is not a URL by itself.
    url: Option<url::Url>,
    /// True when the base, but for `/`s at its end, is its URL's scheme and authority as the
    /// URL serialises them, for `http` or `https` ([`parse_in_directory`]).
    bare: bool,
    /// The base joined with the directory of a path (`/api/v1/contacts/`), by the directory's
    /// text: a path in one of them, but for a last segment of unreserved characters (an id),
    /// is its URL with that segment pushed, which spares parsing the directory again (most of
    /// what the URL of a request costs: `url`'s parser goes character by character).
    directories: Vec<(Box<str>, url::Url)>,
}

impl ParsedBase {
    /// Directories remembered per base before the list starts again.
    const DIRECTORIES: usize = 32;

    /// [`parse_joined`] of `full` with this base.
    fn parse(&mut self, base: &str, full: &str) -> Result<url::Url, url::ParseError> {
        let Some(parsed) = &self.url else {
            return url::Url::parse(full);
        };
        if full == base {
            return Ok(parsed.clone());
        }
        // Only `http` and `https` (special schemes, never cannot-be-a-base) are sent; the
        // others are parsed whole and refused by `check_scheme`.
        let special = matches!(parsed.scheme(), "http" | "https");
        match full.strip_prefix(&parsed[..url::Position::BeforePath]) {
            // `//host` or `/\\host` after the authority (tabs and line breaks are skipped)
            // would be read as another authority by a relative parse, and as a path by the
            // whole one.
            Some(path)
                if special
                    && path.strip_prefix('/').is_some_and(|rest| {
                        !rest
                            .trim_start_matches(['\t', '\n', '\r'])
                            .starts_with(['/', '\\'])
                    }) =>
            {
                match split_last_segment(path) {
                    Some((directory, last)) => {
                        in_directory(parsed, &mut self.directories, directory, last)
                    }
                    None => parsed.join(path),
                }
            }
            _ => url::Url::parse(full),
        }
    }
}

/// The URL of `directory` (a path ending in `/`) joined to `base`, followed by `last`, a
/// segment the parser takes as it is: the directory joined once (then found in `directories`),
/// `last` pushed onto it.
fn in_directory(
    base: &url::Url,
    directories: &mut Vec<(Box<str>, url::Url)>,
    directory: &str,
    last: &str,
) -> Result<url::Url, url::ParseError> {
    let known = directories
        .iter()
        .find(|(known, _)| **known == *directory)
        .map(|(_, url)| url.clone());
    let mut url = if let Some(url) = known {
        url
    } else {
        let url = base.join(directory)?;
        if directories.len() >= ParsedBase::DIRECTORIES {
            directories.clear();
        }
        directories.push((directory.into(), url.clone()));
        url
    };
    // Always a base for `http(s)`; the directory's path ends in `/`, an empty last segment
    // that `last` takes the place of. Not after another empty segment (`//`, as `/.//`
    // becomes): popping would leave the path `/`, which pushing takes as no segment at all.
    let pushed = !url.path().ends_with("//")
        && url
            .path_segments_mut()
            .map(|mut segments| {
                segments.pop_if_empty().push(last);
            })
            .is_ok();
    if pushed {
        return Ok(url);
    }
    let mut path = String::with_capacity(directory.len() + last.len());
    path.push_str(directory);
    path.push_str(last);
    base.join(&path)
}

/// `path` as its directory (up to its last `/`, included) and its last segment, when the
/// parser would take that segment as it is whichever directory it follows: one or more RFC 3986
/// unreserved characters (letters, digits, `-._~`), not a dot segment (`.`, `..`), and a
/// directory without a query or fragment (`?`, `#`). `None` for any other path.
fn split_last_segment(path: &str) -> Option<(&str, &str)> {
    let slash = path.rfind('/')?;
    let (directory, last) = path.split_at(slash + 1);
    (is_plain_segment(last) && !directory.contains(['?', '#'])).then_some((directory, last))
}

/// `base.url` with its `{key}` placeholders that name a configuration key (`{store.url}`,
/// `{base-url}`) replaced by the configured value as it is: a URL, not a path segment, so not
/// percent-encoded. Other placeholders stay for the path values.
fn with_configuration<'a>(base: &'a str, context: &BuildContext<'_>) -> Cow<'a, str> {
    if !base.contains('{') {
        return Cow::Borrowed(base);
    }
    let mut output = String::with_capacity(base.len() + 32);
    let mut rest = base;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            let value = context.configuration.get(name).and_then(text_of)?;
            Some((close, value))
        });
        if let Some((close, value)) = value {
            output.push_str(&rest[..open]);
            output.push_str(&value);
            rest = &after[close + 1..];
        } else {
            output.push_str(&rest[..=open]);
            rest = after;
        }
    }
    output.push_str(rest);
    Cow::Owned(output)
}

/// Checks that every `{placeholder}` that is a whole segment of the path of `vendorPath`
/// (`/items/{id}`, not `/items/{id}.json` nor a query value) gets a value that stays one
/// segment: not empty, `.` or `..`. A URL cannot carry those as a segment (`%2E%2E` is `..` to
/// every URL parser): `/items/..` would be sent as `/`. Other characters are percent-encoded
/// (`/` as `%2F`).
///
/// Fails with [`RunErrorKind::BadPathValue`].
fn check_segments(resource: &Resource, path_values: &PathValues<'_>) -> Result<(), RunError> {
    let template = resource.vendor_path();
    let source = template.source();
    let path_end = source.find('?').unwrap_or(source.len());
    for placeholder in template.placeholders() {
        // The reference's range is the name's; the braces are around it.
        let (Some(open), close) = (placeholder.start.checked_sub(1), placeholder.end + 1) else {
            continue;
        };
        // `{:id}`: the brace is before the colon.
        let open = if source.as_bytes()[open] == b':' {
            open.saturating_sub(1)
        } else {
            open
        };
        if close > path_end {
            continue;
        }
        let whole = source[..open].ends_with('/')
            && matches!(source[close..].chars().next(), None | Some('/' | '?'));
        let Some(value) = path_values.value(&placeholder.name).filter(|_| whole) else {
            continue;
        };
        let shown = match &*text_view(value) {
            "" => "empty",
            "." => "`.`",
            ".." => "`..`",
            _ => continue,
        };
        return Err(RunError::from(RunErrorKind::BadPathValue {
            resource: resource.display_name(),
            name: placeholder.name.clone(),
            shown: shown.to_owned(),
        })
        .at(resource.location()));
    }
    Ok(())
}

/// Checks that `url` is `http` or `https`: the engine sends nothing else (`file://` would read
/// a local file, `ftp://` is not HTTP). `source` names where the URL came from (`` `base.url` ``).
///
/// Fails with [`RunErrorKind::InvalidUrl`] naming `source`.
pub(crate) fn check_scheme(
    url: &url::Url,
    source: &str,
    redactor: &Redactor,
) -> Result<(), RunError> {
    if matches!(url.scheme(), "http" | "https") {
        return Ok(());
    }
    Err(RunErrorKind::InvalidUrl {
        url: redactor.redact(url.as_str()),
        message: format!(
            "{source} is a `{}:` address; the engine sends only `http://` and `https://` requests",
            url.scheme()
        ),
    }
    .into())
}

/// The query string of a `vendorPath` query `literal` (pairs kept as written: placeholders are
/// already filled and percent-encoded) merged with the `query` parameters: a parameter with the
/// name of a literal pair replaces it in place, the others follow, `application/x-www-form-urlencoded`
/// like every query parameter.
fn merge_query(literal: &str, query: &[(String, String)]) -> String {
    let encode =
        |text: &str| -> String { url::form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let mut used = vec![false; query.len()];
    let mut pairs: Vec<String> = Vec::new();
    for pair in literal.split('&').filter(|pair| !pair.is_empty()) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let replacement = query
            .iter()
            .enumerate()
            .filter(|(index, (query_name, _))| !used[*index] && *query_name == decoded)
            .map(|(index, _)| index)
            .next_back();
        match replacement {
            Some(index) => {
                // Every parameter of that name is taken; the last one is sent.
                for (other, (query_name, _)) in query.iter().enumerate() {
                    if *query_name == decoded {
                        used[other] = true;
                    }
                }
                // The name as the connector wrote it (`$top`), the caller's value.
                pairs.push(format!("{name}={}", encode(&query[index].1)));
            }
            None => pairs.push(pair.to_owned()),
        }
    }
    for (index, (name, value)) in query.iter().enumerate() {
        if !used[index] {
            pairs.push(format!("{}={}", encode(name), encode(value)));
        }
    }
    pairs.join("&")
}

/// The `{name}` placeholders of the resource's `vendorPath` that no `path` parameter fills: the
/// caller's path value of the same name fills them (`--param NAME=VALUE`, or a variable bound
/// from a `METHOD:/path` selector), as element.json did.
pub(super) fn unmapped_placeholders<'a>(
    resource: &'a Resource,
    parameters: &'a [&'a Parameter],
) -> impl Iterator<Item = &'a str> {
    resource
        .vendor_path()
        .placeholders()
        .iter()
        .map(|placeholder| placeholder.name.as_str())
        .filter(|name| {
            !parameters.iter().any(|parameter| {
                parameter.vendor_kind() == VendorKind::Path && parameter.vendor_name() == *name
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_path_queries_merge_with_query_parameters() {
        let query = [
            ("limit".to_owned(), "5".to_owned()),
            ("grant_type".to_owned(), "a b".to_owned()),
        ];
        assert_eq!(
            merge_query(
                "grant_type=client_credentials&$filter=Name eq 'x%20y'",
                &query
            ),
            "grant_type=a+b&$filter=Name eq 'x%20y'&limit=5"
        );
        assert_eq!(merge_query("a=1&&b", &[]), "a=1&b");
    }

    #[test]
    fn an_id_is_pushed_onto_the_directory_of_a_bare_base_once_it_is_parsed() {
        let base = "http://127.0.0.1:8080/";
        assert!(parse_in_directory(base, "/api/v1/contacts/", "42").is_none());
        let full = "http://127.0.0.1:8080/api/v1/contacts/41";
        assert_eq!(parse_joined(base, full).unwrap().as_str(), full);
        let joined = parse_in_directory(base, "/api/v1/contacts/", "42").unwrap();
        assert_eq!(
            joined.unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/contacts/42"
        );
        // Not a plain id, a directory the parser would read otherwise, a base with a path.
        for (base, directory, last) in [
            (base, "/api/v1/contacts/", ".."),
            (base, "/api/v1/contacts/", "a b"),
            (base, "//host/", "42"),
            (base, "/api?x/", "42"),
            ("http://127.0.0.1:8080/v2", "/contacts/", "42"),
        ] {
            let _ = parse_joined(base, &format!("{base}/x"));
            assert!(
                parse_in_directory(base, directory, last).is_none(),
                "{base} {directory} {last}"
            );
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{parse_in_directory, parse_joined};

        /// Bases as `base.url` holds them, with the forms the parser normalises (case, default
        /// ports, dot segments, encodings), userinfo, queries and fragments.
        const BASE: &str = "(https?|HTTP)://(ad:pw@)?\
            (h|Api.Example|127\\.0\\.0\\.1|0x7f\\.1|\\[::1\\]|ex%41mple|xn--bcher-kva|b\u{fc}cher)\
            (:80|:443|:8080|:)?(/[a-zA-Z.%2e]{0,4}){0,2}/?(\\?q=1|#f)?";
        /// Other schemes, and texts that are no URL.
        const OTHER: &str = "(ftp|file|mailto|http)(://|:/|:)[a-z/:.@]{0,8}";
        /// What a `vendorPath` may put after it: separators, dot segments, encodings,
        /// queries, fragments, backslashes, spaces, tabs, braces, non-ASCII.
        const PATH: &str = "(/|//|/\\\\|\\\\|&|\\?|#|:1)?\
            [a-z0-9/.%2eE?#&\\\\ \t{}:@\u{e9}-]{0,16}";
        /// Last segments: ids, dot segments, encodings, separators.
        const LAST: &str = "(\\.|\\.\\.|[a-zA-Z0-9._~-]{1,6}|%2e|[a-z%?#\\\\ ]{0,4})";

        proptest! {
            #![proptest_config(crate::properties::config(1024))]

            #[test]
            fn a_url_joined_to_a_parsed_base_is_the_url_parsed_whole(
                base in prop_oneof![4 => BASE, 1 => OTHER], path in PATH, last in LAST
            ) {
                // The same directory with another last segment: the directory's URL is
                // remembered by the first, the second pushes its segment onto it.
                let other = match path.rfind('/') {
                    Some(slash) => format!("{}{last}", &path[..=slash]),
                    None => format!("{path}/{last}"),
                };
                for full in [format!("{base}{path}"), base.clone(), format!("{base}{other}")] {
                    let whole = url::Url::parse(&full);
                    // Parsing the base, then from it.
                    prop_assert_eq!(&parse_joined(&base, &full), &whole, "{} + {}", base, path);
                    prop_assert_eq!(&parse_joined(&base, &full), &whole, "{} + {}", base, path);
                }
                // The usual `vendorPath`, a directory and an id, joined without its text (the
                // base is parsed by now): the URL of the base, `/`s at its end left out, and
                // the path, parsed whole.
                let directory = path.rfind('/').map_or("/", |slash| &path[..=slash]);
                if let Some(joined) = parse_in_directory(&base, directory, &last) {
                    let whole = url::Url::parse(
                        &format!("{}{directory}{last}", base.trim_end_matches('/')),
                    );
                    prop_assert_eq!(&joined, &whole, "{} + {} + {}", base, directory, last);
                }
            }
        }
    }
}
