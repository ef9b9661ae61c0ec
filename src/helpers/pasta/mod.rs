//! Everything about the `pasta` helper (from the passt project) that gives a
//! rootless network namespace its connectivity.
//!
//! This module owns three things: building pasta's argument vector as plain
//! data ([`args`], pure and golden-tested), finding the binary and learning
//! what the installed build can do ([`features`]), and spawning and tearing
//! down the running helper (the process part, added separately).
//!
//! It never decides *whether* pasta is used (that is `select`'s job) and never
//! creates namespaces itself: it is always handed the paths of namespaces that
//! already exist.

pub mod args;
pub mod features;
pub mod output;
pub mod process;
pub mod ready;
pub mod setup;
