//! Namespaces: the forked namespace child a command runs in, named network
//! namespaces (`ip netns`-compatible bind mounts), and loopback bring-up.

pub mod child;
pub mod loopback;
pub mod netns;
