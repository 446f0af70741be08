//! The status page at `/`: server-rendered HTML, no script. A page of instances in id order
//! ([`PAGE_SIZE`], a link to the next), each with its connector, status, expiry (how far off,
//! and when), last refresh, and a timeline of its recent refreshes as inline SVG: one mark per
//! refresh, coloured by outcome, its details in a tooltip. Every value that comes from a user
//! (instance ids, connector names, history fields) goes through [`escape`]. It shows every
//! key's instances: it answers loopback callers only, unless the server opens it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use engine_service::InstanceState;
use engine_store::{InstanceStore, Page, Summary};
use serde::Deserialize;
use serde_json::Value;

use crate::app::App;
use crate::problem::Failure;

/// How many instances one page shows.
pub(crate) const PAGE_SIZE: usize = 50;

/// How many refreshes an instance's timeline shows, the latest.
const TIMELINE: usize = 40;

/// The width of one mark of a timeline, in pixels.
const MARK: usize = 10;

/// The page's style: no script, nothing fetched.
const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:middle}th{background:#f4f4f4}.fresh{color:#2e7d32}\
.expired,.needs-reauth{color:#c62828}.unknown{color:#777}small{color:#777}\
rect.ok{fill:#2e7d32}rect.rejected{fill:#c62828}rect.failed{fill:#ef6c00}rect.superseded{fill:#9e9e9e}";

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    after: Option<String>,
}

/// `GET /?after=CURSOR`: a page of instances. It lists every key's instances, so it answers
/// callers on a loopback address only ([`Failure::PageNotOpen`] otherwise), unless the server
/// opens it to anyone (`--open-status-page`).
pub(crate) async fn page(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    if !shown_to(peer.ip(), app.open_status_page) {
        return Err(Failure::PageNotOpen);
    }
    let Query(query) = query.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    let store = app.opened.plain();
    let listing = store
        .list(Page {
            after: query.after.clone(),
            limit: PAGE_SIZE,
            ..Page::default()
        })
        .await?;
    let now_ms = app.clock.now_ms();
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>engine serve</title><style>{STYLE}</style></head><body><h1>Instances</h1>"
    );
    if let Some((counts, at_ms)) = app.metrics.census() {
        let counts: Vec<String> = counts
            .iter()
            .map(|(label, count)| format!("<span class=\"{label}\">{count} {label}</span>"))
            .collect();
        let _ = write!(
            html,
            "<p>{} <small>(counted by the scheduler {})</small></p>",
            counts.join(" · "),
            when(at_ms, now_ms)
        );
    }
    if query.after.is_some() {
        html.push_str("<p><a href=\"/\">first page</a></p>");
    }
    html.push_str(
        "<table><thead><tr><th>instance</th><th>connector</th><th>status</th>\
         <th>token expires</th><th>last refresh</th><th>recent refreshes</th></tr></thead><tbody>",
    );
    if listing.instances.is_empty() {
        html.push_str("<tr><td colspan=\"6\">no instances</td></tr>");
    }
    for summary in &listing.instances {
        row(&mut html, &**store, summary, now_ms).await;
    }
    html.push_str("</tbody></table>");
    let _ = write!(
        html,
        "<p><small>{PAGE_SIZE} instances a page, in id order; refreshed when reloaded.</small></p>"
    );
    if let Some(next) = &listing.next {
        let _ = write!(
            html,
            "<p><a href=\"/?after={}\">next page</a></p>",
            escape(&percent_encode(next))
        );
    }
    html.push_str("</body></html>");
    let mut response = Html(html).into_response();
    // No script runs and nothing is fetched, whatever an id holds.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// Whether the page answers a caller at `peer`: a loopback address (IPv4, IPv6, or IPv4 mapped
/// into IPv6 as a dual-stack listener sees it), or anyone when the server opens the page.
fn shown_to(peer: std::net::IpAddr, open: bool) -> bool {
    open || peer.to_canonical().is_loopback()
}

/// One instance's row.
async fn row(html: &mut String, store: &dyn InstanceStore, summary: &Summary, now_ms: u64) {
    let state = InstanceState::of(summary, now_ms);
    let id = escape(&summary.id);
    let connector = summary
        .connector
        .as_deref()
        .map_or_else(|| "<small>none recorded</small>".to_owned(), escape);
    let expires = summary.expires_at_ms.map_or_else(
        || "<small>unknown</small>".to_owned(),
        |at| when(at, now_ms),
    );
    // A history that cannot be read shows as none: the page is no place for the store's error.
    let entries: Vec<Value> = store
        .history(&summary.id)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| entry["retry"] != Value::Bool(true))
        .collect();
    let last = entries.last().map_or_else(
        || "<small>none</small>".to_owned(),
        |entry| {
            let outcome = escape(entry["outcome"].as_str().unwrap_or("unknown"));
            let at = entry["at"]
                .as_str()
                .and_then(|at| at.parse::<jiff::Timestamp>().ok())
                .and_then(|at| u64::try_from(at.as_millisecond()).ok())
                .map_or_else(String::new, |at_ms| when(at_ms, now_ms));
            format!("{outcome} {at}")
        },
    );
    let _ = write!(
        html,
        "<tr data-instance=\"{id}\"><td>{id}</td><td>{connector}</td>\
         <td class=\"{label}\">{label}</td><td>{expires}</td><td>{last}</td><td>",
        label = state.label(),
    );
    timeline(html, &entries);
    html.push_str("</td></tr>");
}

/// The last [`TIMELINE`] refreshes of `entries` as an inline SVG: a mark each, oldest first,
/// its class the outcome (`ok`, `rejected`, `superseded`, `failed`), its tooltip when, why and
/// how.
fn timeline(html: &mut String, entries: &[Value]) {
    let shown = &entries[entries.len().saturating_sub(TIMELINE)..];
    if shown.is_empty() {
        html.push_str("<small>none</small>");
        return;
    }
    let width = shown.len() * MARK;
    let _ = write!(
        html,
        "<svg width=\"{width}\" height=\"16\" viewBox=\"0 0 {width} 16\" role=\"img\" \
         aria-label=\"{} recent refreshes\">",
        shown.len()
    );
    for (index, entry) in shown.iter().enumerate() {
        let outcome = match entry["outcome"].as_str() {
            Some("ok") => "ok",
            Some("rejected") => "rejected",
            Some("superseded") => "superseded",
            _ => "failed",
        };
        let mut tip = format!(
            "{} · {} · {outcome}",
            entry["at"].as_str().unwrap_or("?"),
            entry["trigger"].as_str().unwrap_or("?"),
        );
        if let Some(status) = entry["status"].as_u64() {
            let _ = write!(tip, " · HTTP {status}");
        }
        if let Some(to) = entry["transition"]["to"].as_str() {
            let _ = write!(tip, " · now {to}");
        }
        let _ = write!(
            html,
            "<rect class=\"{outcome}\" x=\"{}\" y=\"2\" width=\"{}\" height=\"12\" rx=\"2\">\
             <title>{}</title></rect>",
            index * MARK + 1,
            MARK - 2,
            escape(&tip)
        );
    }
    html.push_str("</svg>");
}

/// `at_ms` relative to `now_ms` (`in 12 min`, `3 h ago`) and absolute, in a `<time>`.
fn when(at_ms: u64, now_ms: u64) -> String {
    let (ahead, delta) = if at_ms >= now_ms {
        (true, at_ms - now_ms)
    } else {
        (false, now_ms - at_ms)
    };
    let seconds = delta / 1000;
    let span = match seconds {
        0..90 => format!("{seconds} s"),
        90..5400 => format!("{} min", seconds / 60),
        5400..172_800 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86_400),
    };
    let relative = if ahead {
        format!("in {span}")
    } else {
        format!("{span} ago")
    };
    let absolute = i64::try_from(at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|at| at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    format!("{relative} <small><time datetime=\"{absolute}\">{absolute}</time></small>")
}

/// `text` safe in HTML text and in a double- or single-quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `text` as a query value: every byte but the unreserved ones percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_shown_to_loopback_callers_unless_opened_to_all() {
        for (peer, shown) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("192.0.2.2", false),
            ("10.0.0.1", false),
            ("::ffff:192.0.2.2", false),
            ("2001:db8::1", false),
        ] {
            let peer: std::net::IpAddr = peer.parse().unwrap();
            assert_eq!(shown_to(peer, false), shown, "{peer}");
            assert!(shown_to(peer, true), "{peer}");
        }
    }

    #[tokio::test]
    async fn a_caller_it_is_not_shown_to_is_told_which_flag_opens_it() {
        let response = Failure::PageNotOpen.into_response();
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem["type"],
            "urn:engine:problem:status-page-loopback-only"
        );
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("--open-status-page"), "{detail}");
    }

    #[test]
    fn hostile_text_is_escaped_everywhere_it_goes() {
        let hostile = "<script>alert('x')</script>\"&";
        let escaped = escape(hostile);
        assert_eq!(
            escaped,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
        );
        for forbidden in ['<', '>', '"', '\''] {
            assert!(!escaped.contains(forbidden), "{escaped}");
        }
        assert_eq!(percent_encode("a b/<é>"), "a%20b%2F%3C%C3%A9%3E");
    }

    #[tokio::test]
    async fn a_row_shows_hostile_ids_connectors_and_history_as_text() {
        let hostile = "<script>alert('id')</script>";
        let store = engine_store::MemoryStore::new();
        store.insert(hostile, engine_store::State::new());
        let entry = serde_json::json!({"at": "<img src=x onerror=alert(1)>", "trigger": "\"><b>",
            "outcome": "<i>", "status": 401});
        store.append_history(hostile, entry, 10).await.unwrap();
        let summary = Summary {
            id: hostile.to_owned(),
            version: 1,
            expires_at_ms: Some(2_000),
            connector: Some("<svg onload=alert(2)>".to_owned()),
            status: None,
            next_refresh_at_ms: None,
        };
        let mut html = String::new();
        row(&mut html, &store, &summary, 1_000).await;
        // Only the page's own elements: every `<` of a stored value is escaped.
        let tags: Vec<&str> = html
            .split('<')
            .skip(1)
            .map(|tag| tag.split([' ', '>']).next().unwrap_or(""))
            .collect();
        for tag in &tags {
            assert!(
                [
                    "tr", "td", "/td", "/tr", "small", "/small", "time", "/time", "svg", "/svg",
                    "rect", "/rect", "title", "/title"
                ]
                .contains(tag),
                "<{tag} in {html}"
            );
        }
        assert!(
            html.contains(
                "<tr data-instance=\"&lt;script&gt;alert(&#39;id&#39;)&lt;/script&gt;\">"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td>&lt;svg onload=alert(2)&gt;</td>"),
            "{html}"
        );
        // An unknown outcome is marked failed; its text is escaped.
        assert!(html.contains("<rect class=\"failed\""), "{html}");
        assert!(html.contains("&quot;&gt;&lt;b&gt;"), "{html}");
    }

    #[test]
    fn times_are_relative_and_absolute() {
        let now = 1_800_000_000_000;
        assert!(
            when(now + 12 * 60_000, now)
                .starts_with("in 12 min <small><time datetime=\"2027-01-15T08:")
        );
        assert!(when(now - 30_000, now).starts_with("30 s ago"));
        assert!(when(now - 3 * 3_600_000, now).starts_with("3 h ago"));
        assert!(when(now + 3 * 86_400_000, now).starts_with("in 3 d"));
    }

    #[test]
    fn a_timeline_marks_each_refresh_by_outcome_with_a_tooltip() {
        let entries = vec![
            serde_json::json!({"at": "T1", "trigger": "schedule", "outcome": "ok", "status": 200}),
            serde_json::json!({"at": "T2", "trigger": "<b>", "outcome": "rejected",
                "status": 401, "transition": {"to": "retrying"}}),
            serde_json::json!({"at": "T3", "trigger": "expiry", "outcome": "superseded"}),
        ];
        let mut html = String::new();
        timeline(&mut html, &entries);
        assert!(html.contains("<rect class=\"ok\" x=\"1\""), "{html}");
        assert!(html.contains("<rect class=\"rejected\" x=\"11\""), "{html}");
        assert!(
            html.contains("<rect class=\"superseded\" x=\"21\""),
            "{html}"
        );
        assert!(
            html.contains("<title>T2 · &lt;b&gt; · rejected · HTTP 401 · now retrying</title>"),
            "{html}"
        );
    }
}
