//! Pagination as exports declare it (`nextPageKey`, page numbers): without `--pages` the next
//! page's input is printed on stderr; `--pages N` and `--all-pages` follow it, bounded (a cursor
//! seen before stops, `--all-pages` has a cap). Each against a loopback vendor recording the
//! raw requests (`tests/fixtures/run/pagination/`).

use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::run::{TestContext, received, run_snapshot};

/// The targets (and the `x-page-token` header, when sent) of the requests `server` received.
async fn targets(server: &MockServer) -> String {
    received(server)
        .await
        .iter()
        .map(|request| {
            let mut line = format!("{} {}", request.method, request.url.path());
            if let Some(query) = request.url.query() {
                line.push('?');
                line.push_str(query);
            }
            if let Some(token) = request.headers.get("x-page-token") {
                line.push_str("  x-page-token: ");
                line.push_str(token.to_str().unwrap());
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A page of `/reports`: its rows, and the next URL (with `cursor`) when there is one.
fn report_page(rows: &[i64], next: Option<&str>) -> ResponseTemplate {
    let mut paging = json!({});
    if let Some(cursor) = next {
        paging["Next"] = json!(format!(
            "https://vendor.example/reports?pageSize=2&cursor={cursor}"
        ));
    }
    ResponseTemplate::new(200).set_body_json(json!({"Data": {"Rows": rows}, "Paging": paging}))
}

/// `/reports` in three pages (`c2`, `c3`); `loop_back`: the third page points at `c2` again.
async fn reports(loop_back: bool) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/reports"))
        .and(query_param("cursor", "c2"))
        .respond_with(report_page(&[3], Some("c3")))
        .mount(&server)
        .await;
    Mock::given(path("/reports"))
        .and(query_param("cursor", "c3"))
        .respond_with(report_page(&[4], loop_back.then_some("c2")))
        .mount(&server)
        .await;
    Mock::given(path("/reports"))
        .respond_with(report_page(&[1, 2], Some("c2")))
        .with_priority(10)
        .mount(&server)
        .await;
    server
}

fn context(server: &MockServer) -> TestContext {
    TestContext::fixture("pagination").with_instance(&json!({"base.url": server.uri()}))
}

#[tokio::test]
async fn without_pages_the_next_page_is_printed_on_stderr() {
    let server = reports(false).await;
    let context = context(&server);
    let outcome = context.run("reports").output();
    run_snapshot!(context, outcome, @r"
    exit code: 0
    ----- stdout -----
    [
      1,
      2
    ]

    ----- stderr -----
    next page: --param nextPage=c2
    ");
    // The cursor was read from the whole answer, before `rootKey` unwrapped it.
    assert_eq!(targets(&server).await, "GET /reports");
}

#[tokio::test]
async fn all_pages_follows_the_cursor_to_the_end_as_one_list() {
    let server = reports(false).await;
    let context = context(&server);
    let outcome = context.run("reports").arg("--all-pages").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!([1, 2, 3, 4]));
    assert_eq!(outcome.stderr, "");
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /reports
    GET /reports?cursor=c2
    GET /reports?cursor=c3
    ");
}

#[tokio::test]
async fn pages_n_stops_after_n_and_says_where_to_go_on() {
    let server = reports(false).await;
    let context = context(&server);
    let outcome = context
        .run("reports")
        .param("pageSize", "2")
        .arg("--pages")
        .arg("2")
        .output();
    run_snapshot!(context, outcome, @r"
    exit code: 0
    ----- stdout -----
    [
      1,
      2,
      3
    ]

    ----- stderr -----
    next page: --param nextPage=c3
    ");
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /reports?pageSize=2
    GET /reports?cursor=c2&pageSize=2
    ");
}

#[tokio::test]
async fn a_cursor_seen_before_stops_with_a_warning() {
    let server = reports(true).await;
    let context = context(&server);
    let outcome = context.run("reports").arg("--all-pages").output();
    run_snapshot!(context, outcome, @r"
    exit code: 0
    ----- stdout -----
    [
      1,
      2,
      3,
      4
    ]

    ----- stderr -----
    warning: the vendor gave the next-page cursor `c2` again: following stopped, since it would loop
    ");
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn a_resource_without_a_next_page_input_cannot_be_followed() {
    let server = reports(false).await;
    let context = context(&server);
    let outcome = context.run("no-input").arg("--all-pages").output();
    outcome.assert_success();
    outcome.assert_stderr_has(&[
        "warning: the next page cannot be followed: the resource has no `nextPage` input to ask for it",
    ]);
    assert_eq!(received(&server).await.len(), 1);
}

/// Answers `/work-items` with the page its `x-page-token` names, and the next token in the
/// same header: forever.
struct Endless;

impl Respond for Endless {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let page: u64 = request
            .headers
            .get("x-page-token")
            .and_then(|token| token.to_str().ok())
            .and_then(|token| token.strip_prefix('t'))
            .and_then(|number| number.parse().ok())
            .unwrap_or(0);
        ResponseTemplate::new(200)
            .insert_header("x-page-token", format!("t{}", page + 1).as_str())
            .set_body_json(json!([{"id": page}]))
    }
}

#[tokio::test]
async fn a_header_cursor_is_sent_back_and_all_pages_has_a_cap() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/work-items"))
        .respond_with(Endless)
        .mount(&server)
        .await;
    let context = context(&server);
    let outcome = context.run("work-items").arg("--all-pages").output();
    outcome.assert_success();
    outcome.assert_stderr_has(&[
        "warning: `--all-pages` stopped after 100 pages, its limit; the vendor has more",
        "hint: continue from there with `--param nextPage=t100`",
    ]);
    let pages = outcome.json();
    assert_eq!(pages.as_array().unwrap().len(), 100);
    assert_eq!(pages[99], json!({"id": 99}));
    let sent = targets(&server).await;
    let first: Vec<&str> = sent.lines().take(3).collect();
    assert_eq!(
        first,
        [
            "GET /work-items",
            "GET /work-items  x-page-token: t1",
            "GET /work-items  x-page-token: t2"
        ]
    );
}

#[tokio::test]
async fn page_numbers_count_up_until_an_empty_page() {
    let server = MockServer::start().await;
    for (page, rows) in [("2", json!([{"n": 3}])), ("3", json!([]))] {
        Mock::given(path("/numbered"))
            .and(query_param("p", page))
            .respond_with(ResponseTemplate::new(200).set_body_json(rows))
            .mount(&server)
            .await;
    }
    Mock::given(path("/numbered"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"n": 1}, {"n": 2}])))
        .with_priority(10)
        .mount(&server)
        .await;
    let context = context(&server);
    let one = context.run("numbered").output();
    one.assert_success();
    assert!(
        one.stderr.contains("next page: --param page=2"),
        "{}",
        one.stderr
    );
    let all = context.run("numbered").arg("--all-pages").output();
    all.assert_success();
    assert_eq!(all.json(), json!([{"n": 1}, {"n": 2}, {"n": 3}]));
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /numbered
    GET /numbered
    GET /numbered?p=2
    GET /numbered?p=3
    ");
}

#[tokio::test]
async fn a_cursor_mapped_by_a_response_parameter_survives_root_key() {
    let server = MockServer::start().await;
    Mock::given(path("/mapped"))
        .and(query_param("after", "a2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"items": [{"id": 3}], "meta": {}})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/mapped"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": 1}, {"id": 2}], "meta": {"next": "a2"}})),
        )
        .with_priority(10)
        .mount(&server)
        .await;
    let context = context(&server);
    let one = context.run("mapped").output();
    one.assert_success();
    assert_eq!(one.json(), json!([{"id": 1}, {"id": 2}]));
    assert_eq!(one.stderr, "next page: --param nextPage=a2\n");
    let all = context.run("mapped").arg("--all-pages").output();
    assert_eq!(all.json(), json!([{"id": 1}, {"id": 2}, {"id": 3}]));
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /mapped
    GET /mapped
    GET /mapped?after=a2
    ");
}

#[tokio::test]
async fn json_logs_give_the_next_page_as_an_event() {
    let server = reports(true).await;
    let context = context(&server);
    let outcome = context
        .run("reports")
        .arg("--all-pages")
        .arg("--log-format")
        .arg("json")
        .output();
    outcome.assert_success();
    let last: serde_json::Value =
        serde_json::from_str(outcome.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "next-page");
    assert_eq!(last["input"], "nextPage");
    assert_eq!(last["value"], "c2");
    assert_eq!(last["stopped"], "repeated-cursor");
}

/// Answers `/offset` with the rows from `offset` (else 0) on, `limit` (else 10) at a time, of
/// five: a vendor paging by limit and offset.
struct Offsets;

impl Respond for Offsets {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let number = |name: &str, default: usize| {
            request
                .url
                .query_pairs()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or(default)
        };
        let (offset, limit) = (number("offset", 0), number("limit", 10));
        let rows: Vec<usize> = (offset..5).take(limit).collect();
        ResponseTemplate::new(200).set_body_json(json!(rows))
    }
}

/// A loopback offset vendor, and the fixture with `pagination.type` `offset` and `instance`'s
/// other values.
async fn offsets(instance: serde_json::Value) -> (MockServer, TestContext) {
    let server = MockServer::start().await;
    Mock::given(path("/offset"))
        .respond_with(Offsets)
        .mount(&server)
        .await;
    let mut values = json!({"base.url": server.uri(), "pagination.type": "offset"});
    values
        .as_object_mut()
        .unwrap()
        .extend(instance.as_object().unwrap().clone());
    let context = TestContext::fixture("pagination").with_instance(&values);
    (server, context)
}

/// The platform's token for `{"pageSize":2,"page":2}`, as its documentation shows it.
const PAGE_TWO_OF_TWO: &str = "eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0";

#[tokio::test]
async fn a_page_is_sent_as_the_vendors_offset_page_minus_one_times_page_size() {
    let (server, context) = offsets(json!({})).await;
    let mut answers = Vec::new();
    for page in ["1", "2", "3"] {
        let outcome = context
            .run("offset")
            .param("page", page)
            .param("pageSize", "2")
            .output();
        outcome.assert_success();
        answers.push((outcome.json(), outcome.stderr));
    }
    assert_eq!(
        answers,
        [
            (json!([0, 1]), "next page: --param page=2\n".to_owned()),
            (json!([2, 3]), "next page: --param page=3\n".to_owned()),
            // One row of the two asked for: the vendor has no more.
            (json!([4]), String::new()),
        ]
    );
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /offset?offset=0&limit=2
    GET /offset?offset=2&limit=2
    GET /offset?offset=4&limit=2
    ");
}

#[tokio::test]
async fn all_pages_follows_page_numbers_on_an_offset_vendor() {
    let (server, context) = offsets(json!({})).await;
    let all = context
        .run("offset")
        .param("pageSize", "2")
        .arg("--all-pages")
        .output();
    all.assert_success();
    assert_eq!(all.json(), json!([0, 1, 2, 3, 4]));
    assert_eq!(all.stderr, "");
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /offset?offset=0&limit=2
    GET /offset?offset=2&limit=2
    GET /offset?offset=4&limit=2
    ");
}

#[tokio::test]
async fn without_page_size_the_offset_counts_pages_of_pagination_max_else_200() {
    // `pagination.max` is 2 in the fixture: the limit sent, and the size pages count in.
    let (server, context) = offsets(json!({})).await;
    let second = context.run("offset").param("page", "2").output();
    second.assert_success();
    assert_eq!(second.json(), json!([2, 3]));
    assert_eq!(second.stderr, "next page: --param page=3\n");
    // Neither the caller nor the connector says: the platform's default page size.
    let (unset, context) = offsets(json!({"pagination.max": ""})).await;
    let first = context.run("offset").output();
    first.assert_success();
    assert_eq!(first.json(), json!([0, 1, 2, 3, 4]));
    assert_eq!(first.stderr, "");
    insta::assert_snapshot!(format!("{}\n{}", targets(&server).await, targets(&unset).await), @r"
    GET /offset?offset=2&limit=2
    GET /offset?offset=0&limit=200
    ");
}

#[tokio::test]
async fn a_page_that_is_no_number_is_sent_as_written_with_a_warning() {
    let (server, context) = offsets(json!({})).await;
    // `offset-text` declares no `dataType`: the text is sent, not converted, and the run says so.
    let outcome = context
        .run("offset-text")
        .param("page", "last")
        .param("pageSize", "2")
        .output();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    [
      0,
      1
    ]

    ----- stderr -----
    warning[W0501]: `page` of offset-text is sent as written, not as the vendor's offset: its `page` input `last` is not a whole number from 1
      --> tests/fixtures/run/pagination/connector.json:98:9
       |
    98 |         {"name": "page", "type": "query", "vendorName": "offset", "vendorType": "query"},
       |         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ sent as written
       |
    hint: give `page` and `pageSize` as whole numbers from 1
    "#);
    insta::assert_snapshot!(targets(&server).await, @"GET /offset?offset=last&limit=2");
    // `--strict`: nothing is sent.
    let strict = context
        .run("offset-text")
        .param("page", "last")
        .arg("--strict")
        .output();
    assert_eq!(strict.code, 3, "{}", strict.stderr);
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_value_parameter_named_page_is_no_page_input() {
    // Its `name` is the value it sends (`object=page`): there is no page to convert.
    let (server, context) = offsets(json!({})).await;
    let outcome = context.run("valued").output();
    outcome.assert_success();
    assert_eq!(outcome.stderr, "");
    insta::assert_snapshot!(targets(&server).await, @"GET /offset?object=page");
}

#[tokio::test]
async fn pages_one_and_two_of_two_are_page_one_of_four() {
    // The platform's own check on every connector, against a vendor paging by limit and offset.
    let (server, context) = offsets(json!({})).await;
    let page = |page: &str, size: &str| {
        let outcome = context
            .run("offset")
            .param("page", page)
            .param("pageSize", size)
            .output();
        outcome.assert_success();
        outcome.json().as_array().unwrap().clone()
    };
    let mut two_pages = page("1", "2");
    two_pages.extend(page("2", "2"));
    assert_eq!(two_pages, page("1", "4"));
    assert_eq!(json!(two_pages), json!([0, 1, 2, 3]));
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /offset?offset=0&limit=2
    GET /offset?offset=2&limit=2
    GET /offset?offset=0&limit=4
    ");
}

#[tokio::test]
async fn the_platforms_next_page_token_is_the_page_and_page_size_it_holds() {
    let (server, context) = offsets(json!({})).await;
    // `offset` does not declare `nextPage`: the platform took the token on every list anyway.
    let second = context
        .run("offset")
        .param("nextPage", PAGE_TWO_OF_TWO)
        .output();
    second.assert_success();
    assert_eq!(second.json(), json!([2, 3]));
    // Asked with a token, the next page is offered as one: `{"pageSize":2,"page":3}`.
    run_snapshot!(context, second, @r"
    exit code: 0
    ----- stdout -----
    [
      2,
      3
    ]

    ----- stderr -----
    next page: --param nextPage=eyJwYWdlU2l6ZSI6MiwicGFnZSI6M30
    ");
    let rest = context
        .run("offset")
        .param("nextPage", PAGE_TWO_OF_TWO)
        .arg("--all-pages")
        .output();
    rest.assert_success();
    assert_eq!(rest.json(), json!([2, 3, 4]));
    assert_eq!(rest.stderr, "");
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /offset?offset=2&limit=2
    GET /offset?offset=2&limit=2
    GET /offset?offset=4&limit=2
    ");
}

#[tokio::test]
async fn a_token_on_page_numbers_is_a_page_and_any_other_is_the_vendors_cursor() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [{"id": 1}]})))
        .mount(&server)
        .await;
    let context = context(&server);
    // `numbered` counts pages (`pagination.type` `page`): the token's page is its `page`.
    context
        .run("numbered")
        .param("nextPage", PAGE_TWO_OF_TWO)
        .output()
        .assert_success();
    // Base64 of `{"after":"a2"}` is no page: `mapped` sends it on as the vendor's cursor, as
    // `reports` (it has a `nextPageKey`) does the platform's token.
    for (resource, token) in [
        ("mapped", "eyJhZnRlciI6ImEyIn0"),
        ("reports", PAGE_TWO_OF_TWO),
    ] {
        context
            .run(resource)
            .param("nextPage", token)
            .output()
            .assert_success();
    }
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /numbered?p=2
    GET /mapped?after=eyJhZnRlciI6ImEyIn0
    GET /reports?cursor=eyJwYWdlU2l6ZSI6MiwicGFnZSI6Mn0
    ");
}

#[tokio::test]
async fn a_list_the_platform_paged_is_cut_into_pages_of_page_size() {
    let server = MockServer::start().await;
    Mock::given(path("/whole-list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Data": [1, 2, 3, 4, 5]})))
        .mount(&server)
        .await;
    let context = context(&server);
    // `pagination.max` (2) is the page size when the caller gives none.
    let first = context.run("whole-list").output();
    first.assert_success();
    assert_eq!(first.json(), json!([1, 2]));
    assert_eq!(first.stderr, "next page: --param nextPage=2\n");
    let last = context
        .run("whole-list")
        .param("pageSize", "3")
        .param("nextPage", "2")
        .output();
    last.assert_success();
    assert_eq!(last.json(), json!([4, 5]));
    assert_eq!(last.stderr, "");
    let all = context.run("whole-list").arg("--all-pages").output();
    assert_eq!(all.json(), json!([1, 2, 3, 4, 5]));
    // The paging inputs are `no-op`: the vendor is asked for its whole list each time, as the
    // platform asked for it.
    insta::assert_snapshot!(targets(&server).await, @r"
    GET /whole-list
    GET /whole-list
    GET /whole-list
    GET /whole-list
    GET /whole-list
    ");
}

#[tokio::test]
async fn a_list_the_platform_paged_takes_its_token_and_offers_the_next_one() {
    let server = MockServer::start().await;
    Mock::given(path("/whole-list"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Data": [1, 2, 3, 4, 5]})))
        .mount(&server)
        .await;
    let context = context(&server);
    let second = context
        .run("whole-list")
        .param("nextPage", PAGE_TWO_OF_TWO)
        .output();
    second.assert_success();
    assert_eq!(second.json(), json!([3, 4]));
    // `{"pageSize":2,"page":3}`
    assert_eq!(
        second.stderr,
        "next page: --param nextPage=eyJwYWdlU2l6ZSI6MiwicGFnZSI6M30\n"
    );
    let rest = context
        .run("whole-list")
        .param("nextPage", PAGE_TWO_OF_TWO)
        .arg("--all-pages")
        .output();
    assert_eq!(rest.json(), json!([3, 4, 5]));
    assert_eq!(rest.stderr, "");
}

#[tokio::test]
async fn no_pagination_gives_no_next_page() {
    let server = MockServer::start().await;
    Mock::given(path("/numbered"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"n": 1}, {"n": 2}])))
        .mount(&server)
        .await;
    let context = context(&server);
    let outcome = context.run("unpaged").arg("--all-pages").output();
    outcome.assert_success();
    assert_eq!(outcome.json(), json!([{"n": 1}, {"n": 2}]));
    assert_eq!(outcome.stderr, "");
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn an_output_parameter_a_list_has_no_field_for_is_said_on_stderr() {
    let server = MockServer::start().await;
    Mock::given(path("/mapped"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-total-count", "12")
                .set_body_json(json!({"items": [{"id": 1}], "meta": {"next": "a2"}})),
        )
        .mount(&server)
        .await;
    let context = context(&server);
    let outcome = context.run("mapped").output();
    run_snapshot!(context, outcome, @r#"
    exit code: 0
    ----- stdout -----
    [
      {
        "id": 1
      }
    ]

    ----- stderr -----
    output total: 12
    next page: --param nextPage=a2
    "#);
    let json = context
        .run("mapped")
        .arg("--log-format")
        .arg("json")
        .output();
    json.assert_success();
    let output = json
        .stderr
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|event| event["event"] == "output")
        .expect("an output event");
    assert_eq!(output["name"], "total");
    assert_eq!(output["value"], "12");
}
