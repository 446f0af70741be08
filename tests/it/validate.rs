//! `engine validate`: fixtures and shipped connectors.
//!
//! - `tests/fixtures/validate/err/<slug>_<case>.json`: one or more per diagnostic code (the slug
//!   is [`Code::slug`]); the rendered output of each is an insta snapshot.
//! - `tests/fixtures/validate/ok/*.json` and `connectors/*.json`: valid with zero diagnostics.
//! - The real element.json exports are not the project's files: `.ci/run` validates the ones
//!   under `../shared/` when they are laid beside the clone; the patterns they use are fixtures
//!   of our own here.

use std::path::{Path, PathBuf};
use std::process::Output;

use engine_spec::Code;

use crate::support::{engine, repo_root};

/// What a run printed, with the exit code.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `engine validate ARGS...` from the repository root.
#[track_caller]
fn validate(args: &[&str]) -> Run {
    let output: Output = engine()
        .arg("validate")
        .args(args)
        .output()
        .expect("the engine binary runs");
    Run {
        code: output.status.code().expect("exited normally"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Snapshot settings: the repository path never appears in a snapshot.
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for root in [repo_root(), root()] {
        settings.add_filter(&regex_escape(&root.display().to_string()), "[REPO]");
    }
    // Snapshot files are named `validate_*` whatever the test binary's module path.
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// The repository root, canonical (fixture paths from `glob!` are).
fn root() -> PathBuf {
    repo_root()
        .canonicalize()
        .expect("the repository root exists")
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn fixtures(kind: &str) -> PathBuf {
    repo_root().join("tests/fixtures/validate").join(kind)
}

/// The `*.json` files of `dir`, sorted.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs_entries(dir)
        .into_iter()
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    files
}

fn fs_entries(dir: &Path) -> Vec<PathBuf> {
    match fs_err::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("a readable directory entry").path())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot read `{}`: {error}", dir.display()),
    }
}

/// The code a fixture is named after: `undeclared-key_template.json` -> E0101.
#[track_caller]
fn code_of(path: &Path) -> Code {
    let stem = path.file_stem().expect("a file name").to_string_lossy();
    let slug = stem.split('_').next().unwrap_or_default();
    *Code::ALL
        .iter()
        .find(|code| code.slug() == slug)
        .unwrap_or_else(|| panic!("`{stem}` does not start with a code slug followed by `_`"))
}

#[test]
fn err_fixtures() {
    insta::glob!("../fixtures/validate", "err/*.json", |path| {
        let path = path.canonicalize().unwrap();
        let relative = path.strip_prefix(root()).unwrap();
        let run = validate(&[relative.to_str().unwrap()]);
        let code = code_of(&path);
        assert!(
            run.stderr.contains(&format!("[{code}]")),
            "`{}` does not report {code}:\n{}",
            relative.display(),
            run.stderr
        );
        assert_eq!(run.stdout, "", "human diagnostics go to stderr");
        let expected_exit = if code.severity() == engine_spec::Severity::Error {
            3
        } else {
            0
        };
        assert_eq!(run.code, expected_exit, "{}", run.stderr);
        settings().bind(|| {
            insta::assert_snapshot!(
                "validate_err",
                format!("exit: {}\n{}", run.code, run.stderr)
            );
        });
    });
}

#[test]
fn every_code_has_a_fixture() {
    let files = json_files(&fixtures("err"));
    let covered: Vec<Code> = files.iter().map(|path| code_of(path)).collect();
    let missing: Vec<String> = Code::ALL
        .iter()
        .filter(|code| !covered.contains(code))
        .map(|code| format!("{code} ({}_CASE.json)", code.slug()))
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn every_code_is_documented() {
    let docs = fs_err::read_to_string(repo_root().join("docs/diagnostics.md")).unwrap();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|code| !docs.contains(&format!("### {code} {}", code.slug())))
        .map(|code| code.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a section in docs/diagnostics.md: {missing:?}"
    );
}

#[test]
fn ok_fixtures_have_no_diagnostics() {
    let count = json_files(&fixtures("ok")).len();
    assert!(count > 0);
    let run = validate(&["tests/fixtures/validate/ok"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr),
        (0, "", format!("checked {count} files: no problems\n"))
    );
}

/// Shipped connectors are test cases: each validates with zero diagnostics.
#[test]
fn shipped_connectors_are_valid() {
    if json_files(&repo_root().join("connectors")).is_empty() {
        // `connectors/` is filled by its own change; nothing to check until then.
        return;
    }
    let run = validate(&["connectors"]);
    let clean = run.stderr.starts_with("checked ")
        && run.stderr.ends_with(" no problems\n")
        && run.stderr.lines().count() == 1;
    assert!(run.code == 0 && clean, "{}", run.stderr);
}

/// Export-shaped connectors of our own (one per pattern the engine accepts but does not execute:
/// hooks, converters, pagination, events, bulk, webhooks, `jdbc`) load with exit 0:
/// what the engine will not execute is a warning, here in the GitHub annotation format CI reads.
/// (The real exports are checked by `.ci/run` where `../shared/` is laid beside the clone.)
#[test]
fn export_patterns_load_with_warnings_in_github_format() {
    let files: Vec<String> = json_files(&repo_root().join("tests/fixtures/validate/err"))
        .iter()
        .map(|file| file.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("not-executed_"))
        .map(|name| format!("tests/fixtures/validate/err/{name}"))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    let mut args = vec!["--format", "github"];
    args.extend(files.iter().map(String::as_str));
    let run = validate(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("::error"), "{}", run.stdout);
    settings().bind(|| {
        insta::assert_snapshot!("validate_export_patterns_github", run.stdout);
    });
}

/// A directory walk tells connectors from the other JSON files of a repository (instance files,
/// tests): those are skipped with a note; named on the command line, they are errors.
#[test]
fn directory_walks_skip_json_files_that_are_not_connectors() {
    let dir = tempfile::tempdir().unwrap();
    fs_err::copy(
        repo_root().join("connectors/demo.json"),
        dir.path().join("demo.json"),
    )
    .unwrap();
    let instance = dir.path().join("instance.json");
    fs_err::write(&instance, r#"{"client.id": "demo-client"}"#).unwrap();
    let run = validate(&[dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "note: skipped `{}`: not a connector (no `resources`)\n\
             checked 1 file (skipped 1 file that is not a connector): no problems\n",
            instance.display()
        )
    );
    let run = validate(&[instance.to_str().unwrap()]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.starts_with("error[E0004]: not a connector"),
        "{}",
        run.stderr
    );
}

#[test]
fn json_format_prints_one_object_per_diagnostic_on_stdout() {
    let run = validate(&[
        "--format",
        "json",
        "tests/fixtures/validate/err/schema_wrong-type.json",
        "tests/fixtures/validate/err/unknown-field_vendor-path.json",
    ]);
    assert_eq!(run.code, 3);
    assert_eq!(run.stderr, "checked 2 files: 2 errors, 2 warnings\n");
    for line in run.stdout.lines() {
        let object: serde_json::Value = serde_json::from_str(line).unwrap();
        let keys: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "file", "line", "column", "pointer", "code", "severity", "message", "hint"
            ]
        );
    }
    settings().bind(|| {
        insta::assert_snapshot!("validate_json_format", run.stdout);
    });
}

#[test]
fn github_format_prints_workflow_commands() {
    let run = validate(&[
        "--format",
        "github",
        "tests/fixtures/validate/err/undeclared-key_template.json",
        "tests/fixtures/validate/err/not-executed_hooks.json",
    ]);
    assert_eq!(run.code, 3);
    settings().bind(|| {
        insta::assert_snapshot!("validate_github_format", run.stdout);
    });
}

#[test]
fn deny_warnings_fails_on_warnings() {
    let file = "tests/fixtures/validate/err/not-executed_hooks.json";
    assert_eq!(validate(&[file]).code, 0);
    let run = validate(&["--deny-warnings", file]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.ends_with("checked 1 file: 1 warning\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn directories_are_searched_recursively_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, text).unwrap();
    };
    let invalid = r#"{"resources": [{"type": "ON REFRESHH"}]}"#;
    write("b.json", invalid);
    write("a/c.json", invalid);
    write("a.json", "{}");
    write("notes.txt", "not a connector");
    write(".git/x.json", "not json");
    write("node_modules/pkg/package.json", "not json");
    let run = engine()
        .arg("validate")
        .arg(".")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert_eq!(run.status.code(), Some(3));
    let files: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--> "))
        .collect();
    assert_eq!(files, ["./a/c.json:1:25", "./b.json:1:25"]);
    assert!(
        stderr.contains("note: skipped `./a.json`: not a connector"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("checked 2 files (skipped 1 file that is not a connector): 2 errors\n"),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_path_is_an_error_naming_it() {
    let run = validate(&[
        "does-not-exist.json",
        "tests/fixtures/validate/ok/basic-auth.json",
    ]);
    assert_eq!(run.code, 3);
    insta::assert_snapshot!(run.stderr, @r"
    error: cannot read `does-not-exist.json`
      caused by: No such file or directory (os error 2)

    checked 1 file: 1 error
    ");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(validate(&[]).code, 2);
    assert_eq!(validate(&["--format", "xml", "x.json"]).code, 2);
}

#[test]
fn help() {
    let run = validate(&["--help"]);
    assert_eq!(run.code, 0);
    settings().bind(|| {
        insta::assert_snapshot!("validate_help", run.stdout);
    });
}
