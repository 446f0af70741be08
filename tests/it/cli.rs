//! The command line itself: help texts and usage errors.

use crate::support::engine;

#[track_caller]
fn output_of(args: &[&str]) -> (i32, String, String) {
    let output = engine().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help() {
    let (code, stdout, _) = output_of(&["--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("help", stdout);
}

#[test]
fn authorize_help() {
    let (code, stdout, _) = output_of(&["authorize", "--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("authorize_help", stdout);
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, stderr) = output_of(&["run", "connectors/demo.json"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--config <INSTANCE>"), "{stderr}");
    let (code, _, stderr) = output_of(&[
        "run",
        "connectors/demo.json",
        "me",
        "--config",
        "x.json",
        "--param",
        "novalue",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("expected `NAME=VALUE`, got `novalue`"),
        "{stderr}"
    );
}
