//! Namespaces: the namespace child a command runs in (and the init it
//! becomes, which owns the run's process tree), named network namespaces
//! (`ip netns`-compatible bind mounts), and loopback bring-up.

pub mod child;
pub(crate) mod fdpass;
pub mod init;
pub mod loopback;
pub mod netns;
pub mod target;
