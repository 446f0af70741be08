//! `engine completions SHELL`, generated from the same clap definitions as the parser
//! (`clap_complete`), so it never drifts from the real flags (the man pages: `man.rs`).

use clap::CommandFactory as _;

use crate::Cli;
use crate::exit::Exit;

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell: `bash`, `zsh`, `fish`, `elvish` or `powershell`.
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: &CompletionsArgs) -> Exit {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "engine", &mut script);
    crate::printer::stdout(&String::from_utf8_lossy(&script));
    Exit::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "engine", &mut script);
            let script = String::from_utf8(script).unwrap();
            for name in ["validate", "run", "authorize", "explain", "completions"] {
                assert!(script.contains(name), "{shell}: {name}");
            }
        }
    }
}
