//! The man pages: `engine man [COMMAND...]` prints one, `engine man --dir DIR` writes them all
//! (`engine.1`, `engine-run.1`, `engine-instances-import.1`...). Generated from the same clap
//! definitions as the parser, so they never drift from the real flags, with the sections clap
//! does not know: a synopsis with value names, EXIT STATUS, ENVIRONMENT, EXAMPLES, SEE ALSO.

use std::path::PathBuf;

use clap::CommandFactory as _;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::Cli;
use crate::exit::Exit;
use crate::printer;
use crate::render::{Level, Message};

#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// The command whose page to print (`run`, `instances import`); none: `engine(1)`.
    command: Vec<String>,
    /// Write every page into this directory instead (`~/.local/share/man/man1`), then
    /// `man engine-run` finds them.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    dir: Option<PathBuf>,
}

pub(crate) fn man(args: &ManArgs) -> Exit {
    let pages = pages();
    if let Some(dir) = &args.dir {
        let written = fs_err::create_dir_all(dir).and_then(|()| {
            pages
                .iter()
                .try_for_each(|(name, page)| fs_err::write(dir.join(name), page))
        });
        return match written {
            Ok(()) => {
                printer::message(&format!(
                    "wrote {} man pages to `{}`\n",
                    pages.len(),
                    dir.display()
                ));
                Exit::Success
            }
            Err(error) => {
                printer::error(&Message::new(Level::Error, &error.to_string()));
                Exit::VendorError
            }
        };
    }
    let name = std::iter::once("engine")
        .chain(args.command.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-");
    if let Some((_, page)) = pages.iter().find(|(file, _)| *file == format!("{name}.1")) {
        printer::stdout(page);
        return Exit::Success;
    }
    let title = format!("no man page for `{}`", args.command.join(" "));
    let list: Vec<&str> = pages
        .iter()
        .map(|(file, _)| file.trim_end_matches(".1"))
        .collect();
    let help = format!("the pages are: {}", list.join(", "));
    let mut message = Message::new(Level::Error, &title);
    message.help = Some(&help);
    printer::error(&message);
    Exit::Usage
}

/// Every page, by file name: `engine.1`, then each command's, depth first.
pub(crate) fn pages() -> Vec<(String, String)> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(&command, "engine", &mut pages);
    pages
}

fn collect(command: &clap::Command, name: &str, pages: &mut Vec<(String, String)>) {
    pages.push((format!("{name}.1"), page(command, name)));
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

/// The page of `command`, named `name` (`engine-instances-import`).
fn page(command: &clap::Command, name: &str) -> String {
    let command = command
        .clone()
        .name(name.to_owned())
        .bin_name(name.replace('-', " "));
    let man = clap_mangen::Man::new(command.clone())
        .title(name.to_owned())
        .source(format!("engine {}", env!("CARGO_PKG_VERSION")))
        .manual("engine manual");
    let mut sections: Vec<Vec<u8>> = Vec::new();
    let mut render = |write: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut piece = Vec::new();
        write(&mut piece).expect("rendering into memory cannot fail");
        sections.push(piece);
    };
    render(&|w| man.render_title(w));
    render(&|w| man.render_name_section(w));
    render(&|w| synopsis(&command).to_writer(w));
    render(&|w| man.render_description_section(w));
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        render(&|w| man.render_options_section(w));
    }
    if command.has_subcommands() {
        render(&|w| man.render_subcommands_section(w));
    }
    render(&|w| extra_sections(&command, name).to_writer(w));
    // Each piece starts with roff's apostrophe preamble: keep the first.
    let mut text = String::new();
    for (index, piece) in sections.iter().enumerate() {
        let piece = String::from_utf8_lossy(piece);
        if index == 0 {
            text.push_str(&piece);
        } else {
            text.push_str(piece.strip_prefix(PREAMBLE).unwrap_or(&piece));
        }
    }
    text
}

/// What roff's writer puts before every piece.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// `engine run [-c|--config INSTANCE] [-p|--param NAME=VALUE]... CONNECTOR [RESOURCE]`.
fn synopsis(command: &clap::Command) -> Roff {
    let mut line = vec![
        bold(command.get_bin_name().unwrap_or(command.get_name())),
        roman(" "),
    ];
    for arg in command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set() && !arg.is_positional())
    {
        let required = arg.is_required_set();
        line.push(roman(if required { "" } else { "[" }));
        let mut flags = Vec::new();
        if let Some(short) = arg.get_short() {
            flags.push(format!("-{short}"));
        }
        if let Some(long) = arg.get_long() {
            flags.push(format!("--{long}"));
        }
        line.push(bold(flags.join("|")));
        let takes_value = arg.get_num_args().is_some_and(|range| range.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::Count
            );
        if takes_value {
            let value = arg.get_value_names().map_or_else(
                || arg.get_id().as_str().to_uppercase(),
                |names| names.join(" "),
            );
            line.push(roman(" "));
            line.push(italic(value));
        }
        line.push(roman(if required { "" } else { "]" }));
        if matches!(
            arg.get_action(),
            clap::ArgAction::Append | clap::ArgAction::Count
        ) {
            line.push(roman("..."));
        }
        line.push(roman(" "));
    }
    for arg in command.get_positionals().filter(|arg| !arg.is_hide_set()) {
        let value = arg.get_value_names().map_or_else(
            || arg.get_id().as_str().to_uppercase(),
            |names| names.join(" "),
        );
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(open));
        line.push(italic(value));
        line.push(roman(close));
        if matches!(arg.get_action(), clap::ArgAction::Append) {
            line.push(roman("..."));
        }
        line.push(roman(" "));
    }
    if command.has_subcommands() {
        line.push(italic("COMMAND"));
    }
    let mut roff = Roff::default();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    roff
}

/// The exit codes (README's table), read by every command.
const EXIT_STATUS: &[(&str, &str)] = &[
    (
        "0",
        "success (validate: no errors; warnings allowed unless --deny-warnings)",
    ),
    (
        "1",
        "the vendor answered with an error status, or the instance could not be written",
    ),
    ("2", "usage error"),
    (
        "3",
        "invalid connector or instance configuration, or a missing input: nothing was sent",
    ),
    (
        "4",
        "authentication failed: no valid token could be obtained or refreshed (re-authenticate)",
    ),
    (
        "5",
        "transport failure (connect, timeout, TLS) after the allowed retries, or no answer within --timeout",
    ),
];

/// The environment the engine reads.
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "ENGINE_STORE",
        "the instance store when --store is not given: sqlite:PATH, postgres://USER@HOST/DB or file:DIR",
    ),
    (
        "ENGINE_SECRET_KEY",
        "ID:BASE64, the key that encrypts secrets at rest in a store (docs/stores.md)",
    ),
    (
        "ENGINE_SECRET_KEY_FILE",
        "a file holding ENGINE_SECRET_KEY, instead of the variable",
    ),
    (
        "ENGINE_SECRET_KEYS_OLD",
        "earlier keys, comma-separated, still read (engine instances rekey moves to the current one)",
    ),
    (
        "ENGINE_STORE_LOCK_LIFETIME",
        "how long a store's instance lock lives before another process may take it over",
    ),
    (
        "ENGINE_WEBHOOK_SECRET",
        "whsec_ and the base64 of 24 to 64 random bytes: the secret engine serve --webhook-url signs its webhooks with (docs/serve.md)",
    ),
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "trust a private CA's certificates for the vendor's TLS",
    ),
    (
        "HTTPS_PROXY, HTTP_PROXY, NO_PROXY",
        "send vendor requests through a proxy",
    ),
    (
        "NO_COLOR, CLICOLOR_FORCE",
        "no colour, or colour even when the output is not a terminal",
    ),
    (
        "ENGINE_COMPLETE",
        "set by the script of engine completions when the shell asks for candidates",
    ),
];

/// Examples by page name.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "engine",
        &[
            (
                "engine validate connectors/",
                "check every connector file under a directory",
            ),
            (
                "engine run connectors/demo.json list-contacts --config instance.json",
                "run one resource, obtaining and refreshing the token as needed",
            ),
        ],
    ),
    (
        "engine-validate",
        &[
            (
                "engine validate connectors/ --deny-warnings",
                "fail on warnings too, as CI does",
            ),
            (
                "engine validate acme.json --format github",
                "annotations for a GitHub Actions log",
            ),
        ],
    ),
    (
        "engine-run",
        &[
            (
                "engine run acme.json list-contacts --config acme.instance.json --param limit=10",
                "run a resource with a query input",
            ),
            (
                "engine run acme.json GET:/contacts/c1 --config acme.instance.json -v",
                "pick a resource by method and path, and show each lifecycle step",
            ),
            (
                "engine run acme.json create-contact --config acme.instance.json --body contact.json --dry-run",
                "show the requests, secrets masked, and send nothing",
            ),
            (
                "engine run acme.json me --instance cust42 --store sqlite:instances.db",
                "run on an instance kept in a store",
            ),
        ],
    ),
    (
        "engine-authorize",
        &[(
            "engine authorize acme.json --config acme.instance.json",
            "sign in through a browser and save the tokens",
        )],
    ),
    (
        "engine-instances-import",
        &[(
            "engine instances import cust42.json --connector acme --store sqlite:instances.db",
            "store an instance file under the id cust42",
        )],
    ),
    (
        "engine-instances-list",
        &[(
            "engine instances list --state needs-reauth --store sqlite:instances.db",
            "the instances that need a person to sign in again",
        )],
    ),
    (
        "engine-refresh",
        &[(
            "engine refresh --store postgres://postgres@127.0.0.1/engine --ahead 10m --jobs 16",
            "refresh every instance expiring within ten minutes",
        )],
    ),
    (
        "engine-history",
        &[(
            "engine history cust42 --store sqlite:instances.db",
            "the last refreshes of an instance, with the vendor's errors masked",
        )],
    ),
    (
        "engine-test",
        &[("engine test connectors/", "run every *.test.json offline")],
    ),
    (
        "engine-explain",
        &[(
            "engine explain E0101",
            "the documentation of a diagnostic code",
        )],
    ),
    (
        "engine-new",
        &[(
            "engine new acme --auth oauth2",
            "write acme.json and acme.instance.json",
        )],
    ),
    (
        "engine-completions",
        &[(
            "engine completions bash > ~/.local/share/bash-completion/completions/engine",
            "install bash completions for this user",
        )],
    ),
    (
        "engine-man",
        &[
            (
                "engine man --dir ~/.local/share/man/man1",
                "install the man pages for this user; then man engine-run",
            ),
            ("engine man instances import", "print one page"),
        ],
    ),
];

fn extra_sections(command: &clap::Command, name: &str) -> Roff {
    let mut roff = Roff::default();
    let examples = EXAMPLES
        .iter()
        .find(|(page, _)| *page == name)
        .map(|(_, examples)| *examples);
    if let Some(examples) = examples {
        roff.control("SH", ["EXAMPLES"]);
        for (line, what) in examples {
            roff.control("TP", []);
            roff.text([bold(*line)]);
            roff.text([roman(*what)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        roff.control("TP", []);
        roff.text([bold(*code)]);
        roff.text([roman(*meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (variable, meaning) in ENVIRONMENT {
        roff.control("TP", []);
        roff.text([bold(*variable)]);
        roff.text([roman(*meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = Vec::new();
    if let Some((parent, _)) = name.rsplit_once('-') {
        see.push(format!("{parent}(1)"));
    }
    see.extend(
        command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| format!("{name}-{}(1)", sub.get_name())),
    );
    see.push("the documentation in docs/ of the engine's repository".to_owned());
    roff.text([roman(see.join(", "))]);
    roff
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The checked-in man pages are the generated ones; `ENGINE_BLESS=1 cargo test` rewrites them.
    #[test]
    fn checked_in_man_pages_have_not_drifted() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/man");
        let pages = pages();
        if std::env::var_os("ENGINE_BLESS").is_some() {
            for entry in fs_err::read_dir(&dir).unwrap() {
                fs_err::remove_file(entry.unwrap().path()).unwrap();
            }
        }
        for (name, generated) in &pages {
            let path = dir.join(name);
            if std::env::var_os("ENGINE_BLESS").is_some() {
                fs_err::write(&path, generated).unwrap();
            }
            let checked_in = fs_err::read_to_string(&path).unwrap_or_default();
            assert!(
                &checked_in == generated,
                "docs/man/{name} is out of date: run `ENGINE_BLESS=1 cargo test -p engine-cli --lib`"
            );
        }
        let on_disk = fs_err::read_dir(&dir).unwrap().count();
        assert_eq!(on_disk, pages.len(), "docs/man/ holds pages no command has");
    }

    /// Every environment variable `engine serve` and the commands it shares code with read is in
    /// the ENVIRONMENT section: found in their sources as `var("NAME")`, `var_os("NAME")`, a
    /// clap `env = "NAME"` or a `_VARIABLE: &str = "NAME"` constant.
    #[test]
    fn every_variable_the_commands_read_is_documented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = regex::Regex::new(
            r#"(?:var|var_os)\("([A-Z_]+)"\)|env = "([A-Z_]+)"|_VARIABLE: &str = "([A-Z_]+)""#,
        )
        .unwrap();
        let mut found = Vec::new();
        for dir in ["engine-cli/src", "engine-server/src", "engine-service/src"] {
            for entry in fs_err::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|extension| extension != "rs") {
                    continue;
                }
                let text = fs_err::read_to_string(&path).unwrap();
                // The tests' own variables are not the commands'.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for captures in read.captures_iter(code) {
                    let name = captures
                        .iter()
                        .skip(1)
                        .flatten()
                        .next()
                        .unwrap()
                        .as_str()
                        .to_owned();
                    found.push((name, path.display().to_string()));
                }
            }
        }
        assert!(
            found
                .iter()
                .any(|(name, _)| name == "ENGINE_WEBHOOK_SECRET"),
            "{found:?}"
        );
        let page = &pages()
            .into_iter()
            .find(|(file, _)| file == "engine-serve.1")
            .unwrap()
            .1;
        let environment = page.split(".SH ENVIRONMENT").nth(1).unwrap();
        for (name, file) in found {
            assert!(
                ENVIRONMENT
                    .iter()
                    .any(|(variables, _)| variables.split(", ").any(|listed| listed == name)),
                "{file} reads `{name}`: describe it in man.rs's ENVIRONMENT"
            );
            assert!(
                environment.contains(&format!("\\fB{name}")) || environment.contains(&name),
                "engine-serve.1 does not list `{name}`"
            );
        }
    }

    /// Every page it refers to exists, and every page has the sections a man page has.
    #[test]
    fn pages_are_complete_and_refer_only_to_pages_that_exist() {
        let pages = pages();
        let names: Vec<String> = pages
            .iter()
            .map(|(file, _)| file.trim_end_matches(".1").replace('-', "\\-"))
            .collect();
        assert!(
            names
                .iter()
                .any(|name| name == "engine\\-instances\\-import")
        );
        let reference = regex::Regex::new(r"(engine[a-z\\-]*)\(1\)").unwrap();
        for (file, page) in &pages {
            for section in [
                "SYNOPSIS",
                "DESCRIPTION",
                "EXIT STATUS",
                "ENVIRONMENT",
                "SEE ALSO",
            ] {
                assert!(
                    page.contains(&format!(".SH \"{section}\""))
                        || page.contains(&format!(".SH {section}")),
                    "{file}: {section}"
                );
            }
            for found in reference.captures_iter(page) {
                assert!(
                    names.contains(&found[1].to_owned()),
                    "{file} refers to {}",
                    &found[1]
                );
            }
            assert!(!page.contains("help(1)"), "{file}");
        }
        let run = &pages
            .iter()
            .find(|(file, _)| file == "engine-run.1")
            .unwrap()
            .1;
        // Value names in the synopsis.
        assert!(
            run.contains(r"\fB\-c|\-\-config\fR \fIINSTANCE\fR"),
            "{run}"
        );
        assert!(
            run.contains(r"\fB\-p|\-\-param\fR \fINAME=VALUE\fR]..."),
            "{run}"
        );
        assert!(run.contains(".SH EXAMPLES"), "{run}");
    }
}
