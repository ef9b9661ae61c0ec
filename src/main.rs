//! The `pelagos-net` binary: everything lives in the library's command line module.

fn main() -> std::process::ExitCode {
    pelagos_net::cli::main()
}
