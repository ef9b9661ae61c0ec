//! The `pelagos-net` binary: everything lives in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
