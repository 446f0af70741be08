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
        stderr.contains("expected `NAME=VALUE` (the value is not shown: it may hold a secret)"),
        "{stderr}"
    );
}

#[test]
fn explain_prints_the_section_of_a_code_by_code_or_name() {
    let (code, stdout, stderr) = output_of(&["explain", "W0504"]);
    assert_eq!(code, 0, "{stderr}");
    // Piped: rendered as plain text, no Markdown syntax and no escape codes.
    assert!(
        stdout.starts_with("W0504 unfilled-placeholder\n\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\nFix. "), "{stdout}");
    assert!(
        !stdout.contains("**") && !stdout.contains("```"),
        "{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "{stdout}");
    let (_, by_name, _) = output_of(&["explain", "unfilled-placeholder"]);
    assert_eq!(by_name, stdout);
    insta::assert_snapshot!("explain_e0101", output_of(&["explain", "e0101"]).1);
}

#[test]
fn explain_styles_for_a_terminal_when_colour_is_forced() {
    let output = engine()
        .args(["explain", "E0101"])
        .env_remove("NO_COLOR")
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("\x1b[1mE0101\x1b[0m"), "{stdout}");
    assert!(stdout.contains("\x1b[36mvendorPath\x1b[0m"), "{stdout}");
}

#[test]
fn explain_says_what_became_of_a_retired_code_and_suggests_for_typos() {
    let (code, stdout, stderr) = output_of(&["explain", "E0401"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert_eq!(
        stderr,
        "error: unknown diagnostic code `E0401`\nhint: `E0401` was retired: it is now `W0506`; run `engine explain W0506`\n"
    );
    let (code, _, stderr) = output_of(&["explain", "unknown-kinds"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean `unknown-kind`?"), "{stderr}");
}

/// Colour only on a terminal: piped output has no escape codes unless `CLICOLOR_FORCE` asks, and
/// `NO_COLOR` wins over both.
#[test]
fn colour_follows_the_terminal_no_color_and_clicolor_force() {
    let file = "tests/fixtures/validate/err/unknown-method_typo.json";
    let stderr_with = |variables: &[(&str, &str)]| {
        let mut command = engine();
        command
            .args(["validate", file])
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE");
        for (name, value) in variables {
            command.env(name, value);
        }
        String::from_utf8(command.output().unwrap().stderr).unwrap()
    };
    let piped = stderr_with(&[]);
    assert!(piped.starts_with("warning[W0509]"), "{piped}");
    assert!(!piped.contains('\u{1b}'), "{piped}");
    assert!(stderr_with(&[("CLICOLOR_FORCE", "1")]).contains("\u{1b}["));
    assert!(!stderr_with(&[("CLICOLOR_FORCE", "0")]).contains('\u{1b}'));
    assert!(!stderr_with(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\u{1b}'));
}

/// `engine run CONNECTOR` without a resource lists the resources it can run.
#[test]
fn run_without_a_resource_lists_the_resources() {
    let (code, stdout, stderr) =
        output_of(&["run", "connectors/demo.json", "--config", "none.json"]);
    assert_eq!((code, stdout.as_str()), (2, ""));
    insta::assert_snapshot!(stderr, @"
    error: which resource of `connectors/demo.json`?
    hint: name one after the connector: `list-contacts`, `get-contact`, `create-contact`, `me`; or a lifecycle type such as `provisionAuthValidation`
    ");
}

/// An instance key near one the connector declares is a typo until proven otherwise.
#[test]
fn an_instance_key_typo_gets_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance.json");
    fs_err::write(
        &instance,
        r#"{"base.url": "http://127.0.0.1:9", "client.id": "x", "client.secret": "y", "clinet.secret": "z"}"#,
    )
    .unwrap();
    let (_, _, stderr) = output_of(&[
        "run",
        "connectors/demo.json",
        "me",
        "--config",
        instance.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        stderr.starts_with(
            "warning: instance key `clinet.secret` is not a key of connector `Demo vendor`\nhint: did you mean `client.secret`? the value of `clinet.secret` is not used\n"
        ),
        "{stderr}"
    );
}

/// `engine authorize` says exactly why it does not apply to a connector without the OAuth2
/// authorization code grant.
#[test]
fn authorize_refuses_connectors_that_do_not_sign_in_through_a_browser() {
    let (code, _, stderr) =
        output_of(&["authorize", "connectors/demo.json", "--config", "none.json"]);
    assert_eq!(code, 3);
    insta::assert_snapshot!(stderr, @"
    error: connector `connectors/demo.json` does not sign in through a browser: its authentication is `custom` (its own lifecycle resources)
    hint: `engine authorize` is for OAuth2's authorization code grant and OAuth 1.0a; this connector obtains its tokens by itself on `engine run` from the credentials in the instance file
    ");
}

/// `engine new` writes a connector that validates with no diagnostic (for every auth kind) and an
/// instance file to fill in, and never overwrites a file.
#[test]
fn new_writes_a_valid_connector_and_an_instance_template() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    for auth in ["oauth2", "custom", "basic", "apikey"] {
        let name = format!("acme-{auth}");
        let (code, stdout, stderr) = output_of(&["new", &name, "--auth", auth, "--dir", dir_arg]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stdout.starts_with("wrote `"), "{stdout}");
        let connector = dir.path().join(format!("{name}.json"));
        let (code, _, stderr) =
            output_of(&["validate", "--deny-warnings", connector.to_str().unwrap()]);
        assert_eq!(
            (code, stderr.as_str()),
            (0, "checked 1 file: no problems\n"),
            "{auth}"
        );
        let instance: serde_json::Value = serde_json::from_str(
            &fs_err::read_to_string(dir.path().join(format!("{name}.instance.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(instance["base.url"], "", "{auth}");
    }
    let (code, _, stderr) = output_of(&["new", "acme-basic", "--auth", "basic", "--dir", dir_arg]);
    assert_eq!(code, 3);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn man_prints_a_page_and_installs_them_all() {
    let (code, page, stderr) = output_of(&["man", "instances", "import"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(page.contains(".TH engine-instances-import 1"), "{page}");
    assert_eq!(
        page,
        fs_err::read_to_string(
            crate::support::repo_root().join("docs/man/engine-instances-import.1")
        )
        .unwrap()
    );
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("man1");
    let (code, _, stderr) = output_of(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut installed: Vec<String> = fs_err::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    installed.sort();
    let mut checked_in: Vec<String> =
        fs_err::read_dir(crate::support::repo_root().join("docs/man"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    checked_in.sort();
    assert_eq!(installed, checked_in);
    assert!(
        stderr.starts_with(&format!("wrote {} man pages to ", installed.len())),
        "{stderr}"
    );
    let (code, _, stderr) = output_of(&["man", "instances", "nope"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no man page for `instances nope`"),
        "{stderr}"
    );
}

/// Runs `script` in a real bash whose `PATH` finds the built `engine` first, from the
/// repository's root (where `connectors/demo.json` is).
#[track_caller]
fn bash(script: &str) -> String {
    let engine = std::path::PathBuf::from(env!("CARGO_BIN_EXE_engine"));
    let path = format!(
        "{}:{}",
        engine.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", script])
        .current_dir(crate::support::repo_root())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What bash offers at the end of `words` (the last one being completed), through the script
/// of `engine completions bash` as a user installs it.
#[track_caller]
fn bash_completes(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|word| format!("'{word}'")).collect();
    bash(&format!(
        "source <(engine completions bash)\n\
         COMP_WORDS=({words}); COMP_CWORD={index}; COMP_TYPE=9\n\
         _clap_complete_engine engine {current} {previous}\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = quoted.join(" "),
        index = words.len() - 1,
        current = quoted[words.len() - 1],
        previous = quoted[words.len() - 2],
    ))
}

#[test]
fn bash_completes_commands_flags_and_the_connectors_resources() {
    assert_eq!(bash_completes(&["engine", "val"]), "validate\n");
    // The resources, then the flags.
    let offered = bash_completes(&["engine", "run", "connectors/demo.json", ""]);
    assert!(
        offered.starts_with("list-contacts\nget-contact\ncreate-contact\nme\n--config\n"),
        "{offered}"
    );
    // An instance file given first is not taken for the connector.
    assert_eq!(
        bash_completes(&[
            "engine",
            "run",
            "--config",
            "connectors/demo.test.json",
            "connectors/demo.json",
            "get-"
        ]),
        "get-contact\n"
    );
    assert_eq!(
        bash_completes(&["engine", "run", "connectors/demo.json", "me", "--par"]),
        "--param\n"
    );
    // A connector that does not load offers no resource, and no error reaches the terminal.
    let offered = bash_completes(&["engine", "run", "Cargo.toml", ""]);
    assert!(offered.starts_with("--config\n"), "{offered}");
}

#[test]
fn every_shell_gets_a_script_that_asks_engine() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, stdout, stderr) = output_of(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains("ENGINE_COMPLETE"), "{shell}: {stdout}");
    }
}
