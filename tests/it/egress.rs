//! Where requests may go (docs/security.md, "Where credentials go"): a request carrying the
//! instance's credentials is refused, before anything is sent, when a hook or a next-page link
//! points it at another origin; a vendor on a link-local address is refused under `--egress
//! public`, the default of `engine serve`. Two loopback servers on two ports are two origins.

use serde_json::json;
use wiremock::matchers::{any, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::serve::{Served, call, client, import};
use crate::support::run::{TestContext, received};

/// Fake credentials: they must never show in any output.
const PASSWORD: &str = "FAKE-password-8e1d";

/// [`crate::support::run::run_snapshot`], with the other origin's address as `[ELSEWHERE]`.
macro_rules! egress_snapshot {
    ($context:expr, $other:expr, $outcome:expr, @$snapshot:literal) => {{
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(
            &$other.address().to_string().replace('.', r"\."),
            "[ELSEWHERE]",
        );
        for (pattern, replacement) in $context.filters() {
            settings.add_filter(&pattern, replacement);
        }
        let rendered = $outcome.render();
        assert!(!rendered.contains(PASSWORD), "{rendered}");
        settings.bind(|| insta::assert_snapshot!(rendered, @$snapshot));
    }};
}

/// A server that answers everything `200`: it must receive nothing.
async fn elsewhere() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [9]})))
        .mount(&server)
        .await;
    server
}

fn context(vendor: &str, mirror: &str) -> TestContext {
    TestContext::fixture("egress").with_instance(&json!({
        "base.url": vendor,
        "username": "user",
        "password": PASSWORD,
        "mirror.url": mirror,
    }))
}

#[tokio::test]
async fn a_hook_that_moves_the_call_to_another_origin_sends_nothing() {
    let vendor = elsewhere().await;
    let other = elsewhere().await;
    let context = context(&vendor.uri(), &other.uri());

    let outcome = context.run("moved").output();
    egress_snapshot!(context, other, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: `moved` would carry the instance's credentials to `http://[ELSEWHERE]`, which is none of the origins they may go to (`http://[SERVER]`); nothing was sent
    hint: credentials go only to the origin of `base.url`, the token and authorization URLs, and the absolute `vendorPath`s of the connector; a hook's `request_vendor_path` or a next-page link that points elsewhere is refused: if the vendor moved, set `base.url` to its new address
    ");
    assert!(received(&other).await.is_empty());
    assert!(received(&vendor).await.is_empty());

    // The same hook pointing at the vendor's own origin goes, with the credentials.
    let context = self::context(&vendor.uri(), &format!("{}/v2", vendor.uri()));
    context.run("moved").output().assert_success();
    let sent = received(&vendor).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].url.path(), "/v2/me");
    assert!(sent[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_next_page_link_to_another_origin_is_not_followed_with_the_credentials() {
    let vendor = MockServer::start().await;
    let other = elsewhere().await;
    Mock::given(path("/items"))
        .and(query_param("page", "2"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"items": [3], "next": format!("{}/items?page=3", other.uri())}),
            ),
        )
        .mount(&vendor)
        .await;
    Mock::given(path("/items"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"items": [1, 2], "next": format!("{}/items?page=2", vendor.uri())}),
        ))
        .with_priority(10)
        .mount(&vendor)
        .await;
    let context = context(&vendor.uri(), &other.uri());

    let outcome = context.run("items").arg("--all-pages").output();
    egress_snapshot!(context, other, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: `items` would carry the instance's credentials to `http://[ELSEWHERE]`, which is none of the origins they may go to (`http://[SERVER]`); nothing was sent
    hint: credentials go only to the origin of `base.url`, the token and authorization URLs, and the absolute `vendorPath`s of the connector; a hook's `request_vendor_path` or a next-page link that points elsewhere is refused: if the vendor moved, set `base.url` to its new address
    ");
    // The link on the vendor's origin was followed; the one elsewhere was not.
    let targets: Vec<String> = received(&vendor)
        .await
        .iter()
        .map(|request| request.url[url::Position::BeforePath..].to_owned())
        .collect();
    assert_eq!(targets, ["/items", "/items?page=2"]);
    assert!(received(&other).await.is_empty());
}

#[tokio::test]
async fn a_link_local_address_is_refused_under_the_public_policy() {
    let other = elsewhere().await;
    let context = context("http://169.254.169.254:9", &other.uri());

    let outcome = context.run("items").arg("--egress").arg("public").output();
    egress_snapshot!(context, other, outcome, @r"
    exit code: 3
    ----- stdout -----

    ----- stderr -----
    error: nothing was sent to `http://169.254.169.254:9/items`: `169.254.169.254` is a link-local address, which the egress policy `public` refuses
    hint: the vendor's address is on a private or link-local network: if the engine is meant to reach it, pass `--egress private` (private networks) or `--egress any` (also link-local addresses)
    ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_serve_refuses_a_vendor_on_the_cloud_metadata_address_by_default() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    // A fresh token: the call goes straight to `base.url`.
    import(&store, "http://169.254.169.254:9", "metadata", 60);
    let served = Served::start(&store);
    let client = client(&store);

    let answer = call(
        &client,
        "GET",
        &format!(
            "{}/v1/instances/metadata/resources/list-contacts",
            served.url
        ),
    )
    .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    insta::assert_json_snapshot!(answer.json(), @r#"
    {
      "type": "urn:engine:problem:not-runnable",
      "title": "the instance or connector does not allow this run; nothing was sent",
      "status": 422,
      "detail": "nothing was sent to `http://169.254.169.254:9/api/v1/contacts`: `169.254.169.254` is a link-local address, which the egress policy `public` refuses"
    }
    "#);
    crate::serve::stop(served);
}

#[test]
fn engine_refresh_takes_the_egress_policy() {
    let temp = tempfile::tempdir().unwrap();
    let store = crate::support::sqlite_store(temp.path());
    // Expired an hour ago: due; its token URL is on the cloud metadata address.
    import(&store, "http://169.254.169.254:9", "metadata", 7200);

    let outcome =
        crate::instances::engine_output(&["refresh", "--store", &store, "--egress", "public"]);
    let printed = format!("{}{}", outcome.stdout, outcome.stderr);
    assert_ne!(outcome.code, 0, "{}", outcome.render());
    assert!(
        printed.contains(
            "`169.254.169.254` is a link-local address, which the egress policy `public` refuses"
        ),
        "{}",
        outcome.render()
    );
    outcome.assert_hides(&["demo-secret", "at_metadata_old"]);
}
