//! Hostile input (issue 9): files and flags crafted to crash, hang or leak. Every test drives the
//! built `engine` binary; big inputs are generated here, none is committed.

use std::path::Path;

use crate::support::engine;

/// Runs `engine ARGS...` in `dir` and returns the exit code, stdout and stderr, with `dir`
/// written as `[TEMP]`.
#[track_caller]
fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = engine()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the engine binary runs");
    let clean = |bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .expect("UTF-8 output")
            .replace(&dir.display().to_string(), "[TEMP]")
    };
    (
        output
            .status
            .code()
            .expect("exited normally, not by a signal"),
        clean(output.stdout),
        clean(output.stderr),
    )
}

fn connector_with_header(value: &str) -> String {
    serde_json::json!({"name": "x", "resources": [{"name": "r", "type": "api", "vendorMethod": "GET",
        "vendorPath": "/", "parameters": [{"name": value, "type": "value", "vendorName": "X-A", "vendorType": "header"}]}]})
    .to_string()
}

#[test]
fn non_ascii_syntax_errors_and_byte_order_marks_do_not_crash() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::write(dir.path().join("bom.json"), b"\xef\xbb\xbf").unwrap();
    fs_err::write(dir.path().join("accent.json"), "{\"name\": \u{e9}}").unwrap();
    fs_err::write(
        dir.path().join("bom-connector.json"),
        "\u{feff}{\"resources\": [{\"name\": \"ip\", \"type\": \"api\", \"vendorPath\": \"/\"}]}",
    )
    .unwrap();
    let (code, _, stderr) = run_in(
        dir.path(),
        &["validate", "bom.json", "accent.json", "bom-connector.json"],
    );
    assert_eq!(code, 3);
    insta::assert_snapshot!(stderr, @r#"
    error[E0001]: invalid JSON: EOF while parsing a value
     --> bom.json:1:1
      |
    1 |
      | ^ here
      |
    hint: fix the syntax; connector files are strict JSON (no comments, no trailing commas)

    error[E0001]: invalid JSON: expected value
     --> accent.json:1:10
      |
    1 | {"name": é}
      |          ^ here
      |
    hint: fix the syntax; connector files are strict JSON (no comments, no trailing commas)

    for more about a code, run `engine explain CODE` (E0001)
    checked 3 files: 2 errors
    "#);
}

#[test]
fn deep_templates_and_recursive_partials_are_invalid_not_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let n = 5_000;
    let deep = format!(
        "{{{{concat {}\"a\"{}}}}}",
        "(concat ".repeat(n),
        ")".repeat(n)
    );
    fs_err::write(dir.path().join("deep.json"), connector_with_header(&deep)).unwrap();
    let partial = r#"{{#*inline "p"}}{{> p}}{{/inline}}{{> p}}"#;
    fs_err::write(
        dir.path().join("partial.json"),
        connector_with_header(partial),
    )
    .unwrap();
    let (code, _, stderr) = run_in(dir.path(), &["validate", "partial.json"]);
    assert_eq!(code, 3, "{stderr}");
    insta::assert_snapshot!(stderr, @r#"
    error[E0103]: invalid template: partial `p` calls itself: partials may not recurse
     --> partial.json:1:123
      |
    1 | {"name":"x","resources":[{"name":"r","type":"api","vendorMethod":"GET","vendorPath":"/","parameters":[{"name":"{{#*inline \"p\"}}{{> ...
      |                                                                                                                           ^ here
      |
    hint: templates use `${configuration.KEY}` or handlebars `{{...}}`; see docs/connector-format.md#templates

    for more about a code, run `engine explain CODE` (E0103)
    checked 1 file: 1 error
    "#);
    let (code, _, stderr) = run_in(dir.path(), &["validate", "deep.json"]);
    assert_eq!(code, 3);
    assert!(
        stderr.contains("invalid template: the template nests deeper than 32 levels"),
        "{stderr}"
    );
    // `run --dry-run` refuses it the same way, before anything is rendered.
    fs_err::write(dir.path().join("instance.json"), "{}").unwrap();
    let (code, _, stderr) = run_in(
        dir.path(),
        &[
            "run",
            "partial.json",
            "r",
            "-c",
            "instance.json",
            "--dry-run",
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("partial `p` calls itself"), "{stderr}");
}

#[test]
fn crafted_files_give_one_diagnostic_per_problem_and_a_bounded_listing() {
    let dir = tempfile::tempdir().unwrap();
    // 30,000 unfilled placeholders in one 90 KB vendorPath: three distinct problems.
    let vendor_path = ["/{x0}", "/{x1}", "/{x2}"].repeat(10_000).concat();
    let text = serde_json::json!({"resources": [{"type": "api", "vendorPath": vendor_path}]});
    fs_err::write(dir.path().join("placeholders.json"), text.to_string()).unwrap();
    let (code, _, stderr) = run_in(dir.path(), &["validate", "placeholders.json"]);
    assert_eq!(code, 0);
    let titles: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("warning["))
        .collect();
    assert_eq!(
        titles,
        [
            "warning[W0504]: nothing fills `{x0}` (10000 times)",
            "warning[W0504]: nothing fills `{x1}` (10000 times)",
            "warning[W0504]: nothing fills `{x2}` (10000 times)",
        ]
    );
    // 250 distinct problems: 100 shown, the rest counted.
    let resources: Vec<_> = (0..250)
        .map(|index| serde_json::json!({"name": format!("r{index}"), "type": "api", "vendorPath": "/", "vendorMethod": format!("GOT{index}")}))
        .collect();
    let text = serde_json::json!({"resources": resources});
    fs_err::write(dir.path().join("many.json"), text.to_string()).unwrap();
    for format in ["human", "json", "github"] {
        let (code, stdout, stderr) =
            run_in(dir.path(), &["validate", "--format", format, "many.json"]);
        assert_eq!(code, 0);
        let shown = if format == "human" {
            stderr.matches("warning[W0509]").count()
        } else {
            stdout.lines().count()
        };
        assert_eq!(shown, 100, "{format}");
        assert!(
            stderr.contains(
                "note: 150 more problems in `many.json` not shown (at most 100 per file)\n"
            ),
            "{stderr}"
        );
        assert!(
            stderr.ends_with("checked 1 file: 250 warnings\n"),
            "{stderr}"
        );
    }
    // 400,000 unclosed `{x`: no problem at all (each `{` is read once).
    let text =
        serde_json::json!({"resources": [{"type": "api", "vendorPath": "/{x".repeat(400_000)}]});
    fs_err::write(dir.path().join("open.json"), text.to_string()).unwrap();
    let (code, _, stderr) = run_in(dir.path(), &["validate", "open.json"]);
    assert_eq!(
        (code, stderr.as_str()),
        (0, "checked 1 file: no problems\n")
    );
}

#[test]
fn duplicate_keys_are_warned_with_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\"name\": \"a\",\n \"resources\": [{\"type\": \"api\", \"vendorPath\": \"/\"}],\n \"name\": \"b\"}";
    fs_err::write(dir.path().join("dup.json"), text).unwrap();
    let (code, _, stderr) = run_in(dir.path(), &["validate", "dup.json"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(stderr, @r#"
    warning[W0512]: key `name` is written twice in this object
     --> dup.json:3:10
      |
    3 |  "name": "b"}
      |          ^^^ this value wins
      |
    hint: the first value (line 1, column 10) is lost; remove one of the two

    for more about a code, run `engine explain CODE` (W0512)
    checked 1 file: 1 warning
    "#);
}

#[cfg(unix)]
#[test]
fn special_files_are_skipped_in_walks_and_bounded_when_named() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::create_dir(dir.path().join("connectors")).unwrap();
    fs_err::write(
        dir.path().join("connectors/ok.json"),
        r#"{"resources": [{"name": "ip", "type": "api", "vendorPath": "/"}]}"#,
    )
    .unwrap();
    let fifo = dir.path().join("connectors/fifo.json");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let (code, _, stderr) = run_in(dir.path(), &["validate", "connectors"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(stderr, @r"
    note: skipped `connectors/fifo.json`: not a regular file
    checked 1 file: no problems
    ");
    // An endless file named on the command line stops at the limit.
    let (code, _, stderr) = run_in(dir.path(), &["validate", "/dev/zero"]);
    assert_eq!(code, 3);
    insta::assert_snapshot!(stderr, @r"
    error: cannot read `/dev/zero`
      caused by: larger than the limit of 16 MiB

    checked 0 files: 1 error
    ");
    fs_err::write(dir.path().join("instance.json"), "{}").unwrap();
    let (code, _, stderr) = run_in(
        dir.path(),
        &[
            "run",
            "connectors/ok.json",
            "ip",
            "-c",
            "/dev/zero",
            "--dry-run",
        ],
    );
    assert_eq!(
        (code, stderr.as_str()),
        (
            3,
            "error: instance file `/dev/zero` is not a regular file\n"
        )
    );
    let (code, _, stderr) = run_in(
        dir.path(),
        &[
            "run",
            "connectors/ok.json",
            "ip",
            "-c",
            "instance.json",
            "--body",
            "/dev/zero",
            "--dry-run",
        ],
    );
    assert_eq!(code, 3);
    assert_eq!(
        stderr,
        "error: failed to read file `/dev/zero`: larger than the limit of 16 MiB\n"
    );
}

#[test]
fn usage_errors_never_repeat_header_or_param_values() {
    let dir = tempfile::tempdir().unwrap();
    for (option, value) in [
        ("--header", "Authorization: Bearer s3cr3t-t0ken"),
        ("-H", "Authorization: Bearer s3cr3t-t0ken"),
        ("--param", "s3cr3t-t0ken"),
        ("-p", "=s3cr3t-t0ken"),
    ] {
        let (code, stdout, stderr) = run_in(
            dir.path(),
            &["run", "c.json", "r", "-c", "i.json", option, value],
        );
        assert_eq!(code, 2);
        assert!(
            !stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"),
            "{stderr}"
        );
        let name = if option.len() == 2 {
            if option == "-H" {
                "--header"
            } else {
                "--param"
            }
        } else {
            option
        };
        assert_eq!(
            stderr,
            format!(
                "error: invalid value for '{name} <NAME=VALUE>': expected `NAME=VALUE` (the value is not shown: it may hold a secret)\n\nFor more information, try '--help'.\n"
            )
        );
    }
}

#[test]
fn invalid_timeouts_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for value in [
        "-1", "nan", "inf", "1e308", "0", "0s", "abc", "86401", "25h",
    ] {
        let (code, _, stderr) = run_in(
            dir.path(),
            &[
                "run",
                "c.json",
                "r",
                "-c",
                "i.json",
                &format!("--timeout={value}"),
            ],
        );
        assert_eq!(code, 2, "{value}");
        assert!(
            stderr.starts_with(&format!(
                "error: invalid value '{value}' for '--timeout <DURATION>': expected a duration such as `30s` or `5m`, or a number of seconds, more than 0 and at most a day (`24h`)\n"
            )),
            "{stderr}"
        );
    }
}
