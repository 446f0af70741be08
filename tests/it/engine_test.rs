//! `engine test` and `engine run --record` (issue 13): shipped tests pass, failures point at the
//! step with a diff, reports for CI, a broken connector fails its tests, and a scenario gives the
//! same result against the vendor emulator and against the cassette recorded from it.

use std::path::Path;

use engine_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

use crate::support::{engine, repo_root};

#[track_caller]
fn output_of(args: &[&str]) -> (i32, String, String) {
    let output = engine().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Writes `value` as pretty JSON.
fn write_json(path: &Path, value: &serde_json::Value) {
    fs_err::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

#[test]
fn the_shipped_connectors_pass_their_tests() {
    let (code, _, stderr) = output_of(&["test", "connectors"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.lines().last().unwrap().ends_with(" 0 failed"),
        "{stderr}"
    );
}

/// A test with a wrong expectation and a request the connector does not send: exit 1, the step
/// by name and `file:line:column`, the difference, secrets shown as placeholders.
#[test]
fn a_failing_step_points_at_itself_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let connector = repo_root().join("connectors/demo.json");
    let test = dir.path().join("wrong.test.json");
    write_json(
        &test,
        &json!({
            "connector": connector,
            "instance": {"base.url": "https://vendor.test", "client.id": "demo-client", "client.secret": "demo-secret-1"},
            "steps": [{
                "name": "provision with the wrong grant",
                "run": {"resource": "me"},
                "exchanges": [{
                    "request": {"method": "POST", "url": "<config:base.url>/oauth/token", "body": {"grant_type": "password"}},
                    "response": {"body": {"access_token": "FAKE-t1", "expires_in": 60}}
                }]
            }]
        }),
    );
    let (code, _, stderr) = output_of(&["test", test.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let stderr = stderr.replace(dir.path().to_str().unwrap(), "[TEMP]");
    insta::assert_snapshot!(stderr, @r#"
    FAILED: [TEMP]/wrong.test.json: step 1 `provision with the wrong grant`
      --> [TEMP]/wrong.test.json:9:5
      exchange 1 is not the expected request:
        expected: POST <config:base.url>/oauth/token {"grant_type":"password"}
        sent:     POST https://vendor.test/oauth/token [Accept: application/json] {"grant_type":"client_credentials","client_id":"demo-client","client_secret":"demo-secret-1"}
        body: expected at least `{"grant_type":"password"}`, sent `{"grant_type":"client_credentials","client_id":"demo-client","client_secret":"demo-secret-1"}`
      expected exit `ok`, got `transport`: request to `https://vendor.test/oauth/token` failed: the request is not the one the test expects
    0 passed, 1 failed
    "#);
    // The test's own fake secret is shown: a failure says what was sent.
    assert!(stderr.contains("demo-secret-1"));
}

#[test]
fn junit_reports_for_ci_dashboards() {
    let (code, stdout, _) = output_of(&["test", "--format", "junit", "connectors/demo.test.json"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout, @r#"
    <?xml version="1.0" encoding="UTF-8"?>
    <testsuites name="engine test" tests="8" failures="0" errors="0">
      <testsuite name="connectors/demo.test.json" tests="8" failures="0" errors="0">
        <testcase name="1. provision: the first call obtains a token" classname="connectors/demo.test.json"/>
        <testcase name="2. fresh: the token is used as it is" classname="connectors/demo.test.json"/>
        <testcase name="3. an hour passes" classname="connectors/demo.test.json"/>
        <testcase name="4. expiry: ON REFRESH runs first, then the call" classname="connectors/demo.test.json"/>
        <testcase name="5. an early 401: one refresh, one retry" classname="connectors/demo.test.json"/>
        <testcase name="6. a persistent 401: one refresh, one retry, then exit 4 (no loop)" classname="connectors/demo.test.json"/>
        <testcase name="7. another hour" classname="connectors/demo.test.json"/>
        <testcase name="8. a failed refresh: exit 4 and the instance is left as it was" classname="connectors/demo.test.json"/>
      </testsuite>
    </testsuites>
    "#);
}

/// An invalid test file is exit 3, with the field and a did-you-mean.
#[test]
fn an_invalid_test_file_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("typo.test.json");
    fs_err::write(&test, r#"{"connector": "x.json", "stpes": []}"#).unwrap();
    let (code, _, stderr) = output_of(&["test", test.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("did you mean `steps`?"), "{stderr}");
    let (code, _, stderr) = output_of(&["validate", test.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("error[E0002]: invalid test file"),
        "{stderr}"
    );
}

/// The mutation check: break the demo connector on purpose and its shipped tests fail, saying
/// where.
#[test]
fn a_broken_connector_fails_its_tests() {
    let dir = tempfile::tempdir().unwrap();
    let original = fs_err::read_to_string(repo_root().join("connectors/demo.json")).unwrap();
    let tests = fs_err::read_to_string(repo_root().join("connectors/demo.test.json")).unwrap();
    for (mutation, broken, expected) in [
        (
            "no token saved on refresh",
            original.replacen(
                r#"{"name": "access.token", "type": "configuration", "source": "response""#,
                r#"{"name": "access.token.typo", "type": "configuration", "source": "response""#,
                2,
            ),
            "instance `access.token`: expected equal to `\"FAKE-t1\"`",
        ),
        (
            "the wrong expiry key",
            original.replacen(
                r#""vendorName": "expires_in""#,
                r#""vendorName": "expires""#,
                2,
            ),
            "instance `expires_in`: expected equal to `\"3600\"`",
        ),
    ] {
        assert_ne!(
            broken, original,
            "{mutation}: the mutation must change the connector"
        );
        fs_err::write(dir.path().join("demo.json"), &broken).unwrap();
        fs_err::write(dir.path().join("demo.test.json"), &tests).unwrap();
        let (code, _, stderr) =
            output_of(&["test", dir.path().join("demo.test.json").to_str().unwrap()]);
        assert_eq!(code, 1, "{mutation}: {stderr}");
        assert!(stderr.contains(expected), "{mutation}: {stderr}");
    }
}

/// The same scenario against the vendor emulator (recording a cassette) and against the cassette
/// gives the same result: the test swaps only the transport and the clock. The cassette holds
/// no secret.
#[test]
fn a_recorded_scenario_replays_with_the_same_result() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance.json");
    let cassette = dir.path().join("demo.cassette.json");
    write_json(
        &instance,
        &json!({"base.url": emulator.url(), "client.id": "demo-client", "client.secret": "demo-secret"}),
    );
    let live = |resource: &str| {
        let (code, stdout, stderr) = output_of(&[
            "run",
            "connectors/demo.json",
            resource,
            "--config",
            instance.to_str().unwrap(),
            "--record",
            cassette.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let first = live("me");
    emulator.expire_all_tokens();
    let second = live("me");
    let recorded = fs_err::read_to_string(&cassette).unwrap();
    assert!(!recorded.contains("demo-secret"), "{recorded}");
    let token =
        serde_json::from_str::<serde_json::Value>(&fs_err::read_to_string(&instance).unwrap())
            .unwrap()["access.token"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(!recorded.contains(&token), "{recorded}");

    let reference = |run: usize, exchange: usize| json!({"cassette": "demo.cassette.json", "run": run, "exchange": exchange});
    write_json(
        &dir.path().join("replay.test.json"),
        &json!({
            "connector": repo_root().join("connectors/demo.json"),
            "instance": {"base.url": "https://elsewhere.test", "client.id": "demo-client", "client.secret": "demo-secret"},
            "steps": [
                {"run": {"resource": "me"}, "exchanges": [reference(0, 0), reference(0, 1)],
                 "expect": {"output": [{"path": "$", "equals": first}]}},
                {"run": {"resource": "me"}, "exchanges": [reference(1, 0), reference(1, 1), reference(1, 2)],
                 "expect": {"output": [{"path": "$", "equals": second}], "instance": {"access.token": "changed"}}}
            ]
        }),
    );
    let (code, _, stderr) = output_of(&[
        "test",
        dir.path().join("replay.test.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    runtime.block_on(emulator.shutdown());
}

/// `--update` rewrites what a failing step expected from what the run did.
#[test]
fn update_rewrites_failing_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("update.test.json");
    write_json(
        &test,
        &json!({
            "connector": repo_root().join("connectors/demo.json"),
            "instance": {"base.url": "https://vendor.test", "client.id": "demo-client", "client.secret": "demo-secret",
                          "access.token": "FAKE-t0", "authentication.time": "1893456000000", "expires_in": "3600"},
            "now": "2030-01-01T00:00:00Z",
            "steps": [{
                "run": {"resource": "me"},
                "exchanges": [{"request": {"method": "GET", "url": "<config:base.url>/api/v1/me"},
                               "response": {"status": 404, "body": {"error": "not_found"}}}],
                "expect": {"exit": "ok"}
            }]
        }),
    );
    let (code, _, _) = output_of(&["test", test.to_str().unwrap(), "--update"]);
    assert_eq!(code, 1);
    let updated: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&test).unwrap()).unwrap();
    assert_eq!(updated["steps"][0]["expect"]["exit"], "vendor-error");
    let (code, _, stderr) = output_of(&["test", test.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

/// A multipart input's `@FILE` is read by the command, relative to the test file: one that
/// cannot be read fails the step naming it, and nothing is sent.
#[test]
fn a_multipart_file_of_a_step_is_read_relative_to_the_test() {
    let dir = tempfile::tempdir().unwrap();
    let connector = repo_root().join("tests/fixtures/run/compat/connector.json");
    let test = dir.path().join("upload.test.json");
    write_json(
        &test,
        &json!({
            "connector": connector,
            "instance": {"base.url": "https://vendor.test"},
            "steps": [{
                "name": "upload a missing file",
                "run": {"resource": "upload", "params": {"file": "@missing.txt"}},
                "exchanges": []
            }]
        }),
    );
    let (code, _, stderr) = output_of(&["test", test.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot read the file `missing.txt` of part `file`: no such file"),
        "{stderr}"
    );
}
