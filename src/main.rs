//! The `pelagos-net` binary: everything lives in the library's command line
//! module; the process starts as `pelagos_net::cli::start` describes.
#![cfg_attr(not(test), no_main)]

pelagos_net::binary_main!(pelagos_net::cli::main);
