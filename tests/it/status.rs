//! `engine status`: the token's state and expiry of an instance, by the runtime's own freshness
//! check, with nothing sent.

use serde_json::{Value, json};

use crate::support::engine;
use crate::support::run::{TestContext, now_ms};

/// `engine status CONNECTOR --config INSTANCE [--format json]`: (exit code, stdout, stderr).
fn status(context: &TestContext, json: bool) -> (i32, String, String) {
    let mut command = engine();
    command
        .arg("status")
        .arg(context.connector())
        .arg("--config")
        .arg(context.instance_path());
    if json {
        command.args(["--format", "json"]);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The `custom` fixture's instance, provisioned `obtained` (epoch ms) with a one-hour token.
fn provisioned(obtained: u64) -> TestContext {
    TestContext::fixture("custom").with_instance(&json!({
        "base.url": "http://127.0.0.1:9",
        "client.id": "demo-client",
        "client.secret": "FAKE-client-secret-9f3a",
        "access.token": "FAKE-access-token-3b8e",
        "authentication.time": obtained.to_string(),
        "expires_in": "3600",
    }))
}

fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap())
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[test]
fn a_provisioned_instance_is_fresh_until_its_lifetime_ends() {
    let obtained = now_ms() - 600_000;
    let context = provisioned(obtained);
    let before = context.instance_text();

    let (code, stdout, stderr) = status(&context, true);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["state"], "fresh");
    assert_eq!(report["expires_at"], rfc3339(obtained + 3_600_000));
    let left = report["expires_in_seconds"].as_i64().unwrap();
    assert!((2900..=3000).contains(&left), "{left}");
    assert!(!stdout.contains("FAKE-"), "{stdout}");

    let (code, table, _) = status(&context, false);
    assert_eq!(code, 0);
    let table = regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in [^)]+\)")
        .unwrap()
        .replace(&table, "[TIME] (in [DURATION])");
    let table = table.replace(&context.instance_path().display().to_string(), "[INSTANCE]");
    insta::assert_snapshot!(table, @r"
    instance   [INSTANCE]
    connector  Custom
    state      fresh
    expires    [TIME] (in [DURATION])
    why        the next run uses the stored token
    ");
    // Nothing was sent or written.
    assert_eq!(context.instance_text(), before);
}

#[test]
fn expired_and_never_provisioned_instances_say_what_the_next_run_does() {
    let obtained = now_ms() - 7_200_000;
    let expired = provisioned(obtained);
    let (code, stdout, _) = status(&expired, true);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["state"], "expired");
    assert_eq!(report["expires_at"], rfc3339(obtained + 3_600_000));
    assert!(report["expires_in_seconds"].as_i64().unwrap() < 0);

    let fresh = TestContext::fixture("custom").with_instance(&json!({
        "base.url": "http://127.0.0.1:9",
        "client.id": "demo-client",
        "client.secret": "FAKE-client-secret-9f3a",
    }));
    let (code, stdout, _) = status(&fresh, true);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["state"], "not-provisioned");
    assert_eq!(report["expires_at"], Value::Null);

    let missing = TestContext::fixture("custom");
    let (code, _, stderr) = status(&missing, false);
    assert_eq!(code, 3);
    assert!(stderr.contains("does not exist"), "{stderr}");
}
