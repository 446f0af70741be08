//! The `engine` binary: everything happens in [`engine_cli::main`].

fn main() -> std::process::ExitCode {
    engine_cli::main()
}
