//! pelagos-net: rootless-first network namespaces for containers and CI.

pub mod diagnose;
pub mod loopback;
pub mod netns;
pub mod pasta;
pub mod paths;
pub mod procfs;
pub mod procnet;
pub mod run;
pub mod spec;
pub mod store;
pub mod userns;
