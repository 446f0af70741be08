//! Shell completion. `engine completions SHELL` prints a short script the shell sources; the
//! script calls back into `engine` for every completion (`ENGINE_COMPLETE=SHELL engine -- WORDS`,
//! `clap_complete`'s dynamic completion), so the candidates come from the same clap definitions as
//! the parser (never drifting from the real flags, like the man pages of `man.rs`) and, for
//! `engine run CONNECTOR <TAB>`, from the connector file itself: its resources.

use std::ffi::OsStr;
use std::path::Path;

use clap::CommandFactory as _;
use clap_complete::CompletionCandidate;
use clap_complete::env::Shells;

use crate::Cli;
use crate::exit::Exit;

/// The environment variable through which the shell's script asks `engine` for candidates.
const VAR: &str = "ENGINE_COMPLETE";

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: `bash`, `zsh`, `fish`, `elvish` or `powershell`.
    shell: clap_complete::Shell,
}

/// Answers the shell and exits when it asks for candidates (`ENGINE_COMPLETE` set); otherwise
/// returns at once. Called before anything else reads the arguments or prints.
pub(crate) fn answer_the_shell() {
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(VAR)
        .complete();
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Exit {
    let mut script = Vec::new();
    let written = Shells::builtins()
        .completer(&args.shell.to_string())
        .map(|shell| shell.write_registration(VAR, "engine", "engine", "engine", &mut script));
    if let Some(Ok(())) = written {
        crate::printer::stdout(&String::from_utf8_lossy(&script));
        return Exit::Success;
    }
    crate::printer::message(&format!(
        "error: no completion script for `{}`\n",
        args.shell
    ));
    Exit::Usage
}

/// The resources of the connector named on the command line being completed, for `engine run
/// CONNECTOR <TAB>`: the first word after `run` that loads as a connector (an instance file
/// given before it does not). Nothing when there is none: the shell shows no candidates.
pub(crate) fn resources(current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    // While completing, the words being completed follow `--` on engine's own command line.
    let words: Vec<String> = std::env::args()
        .skip_while(|word| word != "--")
        .skip(1)
        .collect();
    let Some(run) = words.iter().position(|word| word == "run") else {
        return Vec::new();
    };
    let report = words[run + 1..]
        .iter()
        .filter(|word| !word.starts_with('-') && Path::new(word).is_file())
        .filter_map(|word| engine_spec::load(Path::new(word)).ok())
        .find(|report| report.connector().is_some());
    let Some(connector) = report.as_ref().and_then(|report| report.connector()) else {
        return Vec::new();
    };
    selectors(connector)
        .filter(|(selector, _)| selector.starts_with(current.as_ref()))
        .map(|(selector, resource)| {
            let help = match (resource.method(), resource.path()) {
                (Some(method), Some(path)) => format!("{method} {path}"),
                _ => resource.display_name(),
            };
            CompletionCandidate::new(selector).help(Some(help.into()))
        })
        .collect()
}

/// What `engine run CONNECTOR RESOURCE` accepts as RESOURCE for each API resource (its name, else
/// `METHOD:/path`), with the resource for whoever lists them.
pub(crate) fn selectors(
    connector: &engine_spec::Connector,
) -> impl Iterator<Item = (String, &engine_spec::Resource)> {
    connector
        .resources()
        .iter()
        .filter(|resource| resource.kind().is_api())
        .map(
            |resource| match (resource.name(), resource.method(), resource.path()) {
                (Some(name), _, _) => (name.to_owned(), resource),
                (None, Some(method), Some(path)) => (format!("{method}:{path}"), resource),
                _ => (resource.display_name(), resource),
            },
        )
}
