//! The `pelagos-net` binary: everything lives in the library's command line
//! module; the process starts as `pelagos_net::cli::start` describes.
// `cargo test --all-targets` builds a test harness of this file too: it
// brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
pelagos_net::binary_main!(pelagos_net::cli::main);
