//! `engine completions SHELL` and the man pages, both generated from the same clap definitions as
//! the parser (`clap_complete`, `clap_mangen`), so they never drift from the real flags.

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
    use std::path::Path;

    use super::*;

    /// The man pages of `engine` and of each command (`engine-run(1)`...), in roff, by file name:
    /// `docs/man/` holds them.
    fn man_pages() -> Vec<(String, String)> {
        let command = Cli::command();
        let render = |command: clap::Command| {
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut page)
                .expect("rendering into memory cannot fail");
            String::from_utf8_lossy(&page).into_owned()
        };
        let mut pages = vec![("engine.1".to_owned(), render(command.clone()))];
        for subcommand in command.get_subcommands() {
            let name = format!("engine-{}", subcommand.get_name());
            pages.push((format!("{name}.1"), render(subcommand.clone().name(name))));
        }
        pages
    }

    /// The checked-in man pages are the generated ones; `ENGINE_BLESS=1 cargo test` rewrites them.
    #[test]
    fn checked_in_man_pages_have_not_drifted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man");
        for (name, generated) in man_pages() {
            let path = dir.join(&name);
            if std::env::var_os("ENGINE_BLESS").is_some() {
                fs_err::create_dir_all(&dir).unwrap();
                fs_err::write(&path, &generated).unwrap();
            }
            let checked_in = fs_err::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "docs/man/{name} is out of date: run `ENGINE_BLESS=1 cargo test -p engine-cli --lib`"
            );
        }
    }

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
