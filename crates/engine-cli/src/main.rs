//! The `engine` binary: everything happens in [`engine_cli::main`].

/// mimalloc instead of the system allocator: `engine validate` builds and drops many small
/// values (JSON documents, wire types, the model), and glibc's malloc and free were a quarter of
/// its instructions (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    engine_cli::main()
}
