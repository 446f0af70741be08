//! Every console example in README.md and docs/*.md runs as written, so the docs cannot drift.
//!
//! A ```` ```console ```` block is a transcript: `$ COMMAND` lines (a line ending in `\` goes on
//! on the next one), each followed by what it prints, stdout and stderr in the order written.
//! `…` in the printed part stands for any text within a line (a token, a duration) and a line
//! `...` for any lines. docs/BENCHMARKS.md is left out: its blocks are measurements.
//!
//! Each block runs in a scratch directory of its own, against a vendor emulator of its own: the
//! repository's `connectors/` is copied there with the emulator's address in place of
//! `127.0.0.1:8787`, `engine` (and `target/release/engine`) is the binary under test, `/tmp/` is
//! the scratch directory, and `U`, `TOKEN` and `REFRESH_TOKEN` hold the emulator's URL and tokens
//! from its password grant (docs/emulator.md's examples use them). `cargo build` and starting
//! `vendor-emulator` are not run: the binaries are built and the emulator is started already.
//! Printed output has the emulator's address and the scratch path put back before comparing.
//!
//! A page declares a file its examples use with `<!-- file: PATH -->` on the line before a code
//! block: the block's text is written to PATH (in the scratch directory) for the examples after it.
//!
//! A ```` ```sh ```` block after the line `<!-- script -->` runs as one bash script, in the same
//! setting, so that it may start `engine serve` in the background (`&`) and call it: a line
//! `# TEXT` (a whole line) is what the command before it prints on stdout, and the script's
//! stdout must be those lines, in order (stderr is not compared; the processes it leaves behind
//! are stopped). `127.0.0.1:8080`, the documented address of `engine serve`, is a free port.
//!
//! Where a block cannot run here (it needs the network, or shows only usage), the docs write it
//! as ```` ```sh ```` without the mark, which this test does not read.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine_emulator::{Emulator, EmulatorConfig};

use crate::support::repo_root;

/// The address the docs' examples use for the emulator.
const DOCUMENTED_ADDRESS: &str = "127.0.0.1:8787";

/// The address the docs' examples of `engine serve` listen on.
const DOCUMENTED_SERVE_ADDRESS: &str = "127.0.0.1:8080";

/// One `$ COMMAND` of a transcript with what it printed.
struct Step {
    command: String,
    printed: String,
}

/// A ```` ```console ```` block or a script: where it starts (`file:line`), the files its page
/// declared before it, and its steps; a script's run as one.
struct Block {
    location: String,
    files: Vec<(String, String)>,
    steps: Vec<Step>,
    script: bool,
}

/// The comment that makes the code block after it a file of the examples that follow.
const FILE_MARK: &str = "<!-- file: ";

/// The comment that makes the ```` ```sh ```` block after it a script this test runs.
const SCRIPT_MARK: &str = "<!-- script -->";

/// The steps of a script: its commands (a line ending in `\` goes on on the next one), each
/// with the `# ` lines after it as what it prints.
fn script_steps(lines: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in lines {
        if continued {
            let step = steps.last_mut().expect("a continued command");
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(printed) = line.strip_prefix("# ").or((*line == "#").then_some("")) {
            if let Some(step) = steps.last_mut() {
                step.printed.push_str(printed);
                step.printed.push('\n');
            }
        } else if !line.trim().is_empty() {
            steps.push(Step {
                command: (*line).to_owned(),
                printed: String::new(),
            });
            continued = line.ends_with('\\');
        }
    }
    steps
}

/// The transcripts of one Markdown file.
fn blocks_of(path: &Path) -> Vec<Block> {
    let text = fs_err::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut continued = false;
    let mut files: Vec<(String, String)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(block) = current.as_mut() else {
            if let Some(file) = line.strip_prefix(FILE_MARK) {
                let file = file
                    .trim_end()
                    .strip_suffix(" -->")
                    .unwrap_or_else(|| panic!("{name}:{}: write `{FILE_MARK}PATH -->`", index + 1));
                let fence = lines.next().map(|(_, line)| line);
                assert!(
                    fence.is_some_and(|fence| fence.starts_with("```")),
                    "{name}:{}: a code block must follow `{FILE_MARK}`",
                    index + 1
                );
                let content: Vec<&str> = lines
                    .by_ref()
                    .map(|(_, line)| line)
                    .take_while(|line| !line.starts_with("```"))
                    .collect();
                files.push((file.to_owned(), content.join("\n") + "\n"));
            } else if line.trim_end() == SCRIPT_MARK {
                let fence = lines.next();
                assert!(
                    fence.is_some_and(|(_, fence)| fence.trim_end() == "```sh"),
                    "{name}:{}: a ```sh block must follow `{SCRIPT_MARK}`",
                    index + 1
                );
                let content: Vec<&str> = lines
                    .by_ref()
                    .map(|(_, line)| line)
                    .take_while(|line| !line.starts_with("```"))
                    .collect();
                blocks.push(Block {
                    location: format!("{name}:{}", index + 2),
                    files: files.clone(),
                    steps: script_steps(&content),
                    script: true,
                });
            } else if line.trim_end() == "```console" {
                current = Some(Block {
                    location: format!("{name}:{}", index + 1),
                    files: files.clone(),
                    steps: Vec::new(),
                    script: false,
                });
            }
            continue;
        };
        if line.starts_with("```") {
            blocks.extend(current.take());
            continue;
        }
        if continued {
            let step = block.steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(command) = line.strip_prefix("$ ") {
            block.steps.push(Step {
                command: command.to_owned(),
                printed: String::new(),
            });
            continued = line.ends_with('\\');
        } else {
            let step = block
                .steps
                .last_mut()
                .unwrap_or_else(|| panic!("{}: output before any `$ ` command", block.location));
            step.printed.push_str(line);
            step.printed.push('\n');
        }
    }
    assert!(
        current.is_none(),
        "{name}: a ```console block is not closed"
    );
    blocks
}

/// README.md and every page of docs/ but the benchmarks.
fn documented_pages() -> Vec<PathBuf> {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs_err::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|extension| extension == "md")
                && path.file_name().is_some_and(|name| name != "BENCHMARKS.md")
        })
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Copies `from` into `to`, with the emulator's address in place of the documented one.
fn copy_connectors(from: &Path, to: &Path, address: &str) {
    fs_err::create_dir_all(to).unwrap();
    for entry in fs_err::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_connectors(&path, &target, address);
        } else {
            let bytes = fs_err::read(&path).unwrap();
            match String::from_utf8(bytes) {
                Ok(text) => fs_err::write(&target, text.replace(DOCUMENTED_ADDRESS, address)),
                Err(error) => fs_err::write(&target, error.into_bytes()),
            }
            .unwrap();
        }
    }
}

/// Whether a step is not run: building, and starting the emulator the test started already.
fn is_set_up(command: &str) -> bool {
    command.starts_with("cargo build") || command.starts_with("target/release/vendor-emulator")
}

/// An access and a refresh token from the emulator's password grant.
async fn tokens(url: &str) -> (String, String) {
    let answer: serde_json::Value = crate::support::http()
        .build()
        .expect("a client")
        .post(format!("{url}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "demo"),
            ("password", "demo-password"),
            ("client_id", "demo-client"),
            ("client_secret", "demo-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let field = |name: &str| answer[name].as_str().unwrap().to_owned();
    (field("access_token"), field("refresh_token"))
}

/// Runs one block; the first difference is returned with its location.
fn run_block(block: &Block, runtime: &tokio::runtime::Runtime) -> Result<(), String> {
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default(), 0))
        .unwrap();
    let address = emulator.addr().to_string();
    let url = emulator.url();
    let (token, refresh_token) = if block
        .steps
        .iter()
        .any(|step| step.command.contains("TOKEN"))
    {
        runtime.block_on(tokens(&url))
    } else {
        (String::new(), String::new())
    };
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().canonicalize().unwrap();
    copy_connectors(
        &repo_root().join("connectors"),
        &root.join("connectors"),
        &address,
    );
    for (file, content) in &block.files {
        let path = root.join(file);
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, content).unwrap();
    }
    let bin = root.join(".bin");
    fs_err::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_engine"), bin.join("engine")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let scratch_prefix = format!("{}/", root.display());
    let serve_address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let place = |text: &str| {
        text.replace("target/release/engine", "engine")
            .replace("/tmp/", &scratch_prefix)
            .replace(DOCUMENTED_SERVE_ADDRESS, &serve_address)
    };
    let put_back = |text: &str| {
        text.replace(&address, DOCUMENTED_ADDRESS)
            .replace(&serve_address, DOCUMENTED_SERVE_ADDRESS)
            .replace(&scratch_prefix, "/tmp/")
    };
    let shell = |script: &str| {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(script)
            .current_dir(&root)
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env("U", &url)
            .env("TOKEN", &token)
            .env("REFRESH_TOKEN", &refresh_token)
            .env_remove("RUST_LOG")
            .env_remove("ENGINE_SECRET_KEY");
        command
    };

    if block.script {
        let outcome = run_script(block, &root, shell, place, put_back);
        runtime.block_on(emulator.shutdown());
        return outcome;
    }
    let mut outcome = Ok(());
    for step in &block.steps {
        if is_set_up(&step.command) {
            if !step.printed.is_empty()
                && !step.command.starts_with("target/release/vendor-emulator")
            {
                outcome = Err(format!(
                    "`$ {}` prints nothing the test can check",
                    step.command
                ));
                break;
            }
            continue;
        }
        let command = place(&step.command);
        let output = shell(&format!("{command} 2>&1")).output().unwrap();
        let mut printed = put_back(&String::from_utf8_lossy(&output.stdout));
        // A terminal shows output that lacks a final newline on a line of its own too.
        if !printed.is_empty() && !printed.ends_with('\n') {
            printed.push('\n');
        }
        let expected = step.printed.replace('…', "[..]");
        if let Err(error) = snapbox::Assert::new().try_eq(
            Some(&format!("`$ {}`", step.command)),
            printed.into(),
            expected.into(),
        ) {
            outcome = Err(error.to_string());
            break;
        }
    }
    runtime.block_on(emulator.shutdown());
    outcome
}

/// Runs a script block as one bash script (its set-up steps left out) with stdout and stderr
/// in files, stops what it left running (its process group), and compares what each command
/// printed on stdout (the commands are told apart by a separator printed between them).
fn run_script(
    block: &Block,
    root: &Path,
    shell: impl Fn(&str) -> Command,
    place: impl Fn(&str) -> String,
    put_back: impl Fn(&str) -> String,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;

    /// Printed between two commands (ASCII's record separator).
    const SEPARATOR: char = '\u{1e}';
    let steps: Vec<&Step> = block
        .steps
        .iter()
        .filter(|step| !is_set_up(&step.command))
        .collect();
    let script: Vec<String> = steps.iter().map(|step| place(&step.command)).collect();
    let stdout_path = root.join(".script.stdout");
    let stderr_path = root.join(".script.stderr");
    let mut child = shell(&script.join("\nprintf '\\036'\n"))
        .stdout(fs_err::File::create(&stdout_path).unwrap().into_parts().0)
        .stderr(fs_err::File::create(&stderr_path).unwrap().into_parts().0)
        .process_group(0)
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    // What the script started in the background and did not stop (its process group).
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .stderr(std::process::Stdio::null())
        .status();
    let stdout = put_back(&fs_err::read_to_string(&stdout_path).unwrap());
    let stderr = put_back(&fs_err::read_to_string(&stderr_path).unwrap());
    let printed: Vec<&str> = stdout.split(SEPARATOR).collect();
    for (index, step) in steps.iter().enumerate() {
        let mut printed = printed.get(index).copied().unwrap_or_default().to_owned();
        if !printed.is_empty() && !printed.ends_with('\n') {
            printed.push('\n');
        }
        snapbox::Assert::new()
            .try_eq(
                Some(&format!("`{}`", step.command)),
                printed.into(),
                step.printed.replace('…', "[..]").into(),
            )
            .map_err(|error| format!("{error}\nexit: {status}\nstderr:\n{stderr}"))?;
    }
    Ok(())
}

/// README's and docs' console examples print what they say they print.
#[test]
fn every_console_example_in_the_docs_runs_as_written() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ran = 0;
    let mut failures = Vec::new();
    for page in documented_pages() {
        for block in blocks_of(&page) {
            ran += 1;
            if let Err(error) = run_block(&block, &runtime) {
                failures.push(format!("{}: {error}", block.location));
            }
        }
    }
    assert!(
        ran >= 5,
        "only {ran} console blocks found: is the parser broken?"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} console examples differ from what they print (fix the doc or the \
         behaviour):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The transcript parser keeps continued commands and their output apart.
#[test]
fn a_transcript_is_read_command_by_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    fs_err::write(
        &page,
        "<!-- file: a/b.json -->\n```json\n{}\n```\n```console\n$ echo a \\\n    b\na b\n$ true\n```\n```sh\n$ not read\n```\n",
    )
    .unwrap();
    let blocks = blocks_of(&page);
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        blocks[0].files,
        [("a/b.json".to_owned(), "{}\n".to_owned())]
    );
    let steps = &blocks[0].steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "echo a \\\n    b");
    assert_eq!(steps[0].printed, "a b\n");
    assert_eq!(steps[1].command, "true");
    assert_eq!(steps[1].printed, "");
}

/// A script block is read as commands, each with the `# ` lines after it as what it prints.
#[test]
fn a_script_is_read_command_by_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    fs_err::write(
        &page,
        "<!-- script -->\n```sh\nexport A=1   # a comment\necho a \\\n    b\n# a b\n#\ntrue &\n```\n```sh\nnot read\n```\n",
    )
    .unwrap();
    let blocks = blocks_of(&page);
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].script);
    assert_eq!(blocks[0].location, format!("{}:2", page.display()));
    let steps: Vec<(&str, &str)> = blocks[0]
        .steps
        .iter()
        .map(|step| (step.command.as_str(), step.printed.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("export A=1   # a comment", ""),
            ("echo a \\\n    b", "a b\n\n"),
            ("true &", ""),
        ]
    );
}
