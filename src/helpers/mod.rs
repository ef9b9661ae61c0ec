//! The network helpers pelagos-net spawns (pasta, slirp4netns): argv built
//! purely, feature probes, the process with its captured output, readiness.

pub(crate) mod detached;
pub mod pasta;
pub mod slirp;
pub(crate) mod spawn;
