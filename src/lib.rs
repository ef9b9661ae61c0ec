//! pelagos-net: rootless-first network namespaces for containers and CI.

pub mod spec;
