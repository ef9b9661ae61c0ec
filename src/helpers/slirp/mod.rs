//! The slirp4netns backend: an alternative to pasta that gives a rootless
//! network namespace egress and published ports through a user-mode TCP/IP
//! stack (libslirp) behind a tap device.
//!
//! This module owns: building slirp4netns's argument vector as data
//! ([`args`], pure and golden-tested), finding the binary and its version
//! ([`features`]), spawning it with a ready pipe and an exit pipe
//! ([`process`]), publishing ports through its JSON API socket and saying
//! which port mappings it can express ([`api`]), and the entry points that
//! tie these together ([`setup`]).
//!
//! It never decides *whether* slirp4netns is used (that is `select`'s job)
//! and never creates namespaces: it is handed the paths of namespaces that
//! already exist, exactly like the pasta backend.
//!
//! # Decisions
//!
//! - **Host loopback is blocked by default** (`--disable-host-loopback`), as
//!   podman does: slirp4netns's own default lets the namespace reach every
//!   service bound to the host's `127.0.0.1` as `10.0.2.2`, which a
//!   container should not get silently. [`args::HostLoopback::Allowed`]
//!   restores it.
//! - **Fixed addressing**: the namespace is `10.0.2.100/24`, gateway
//!   `10.0.2.2`, DNS `10.0.2.3` (slirp4netns's defaults); the MTU is
//!   podman's 65520.
//! - **No IPv6 and no ranges for published ports**: slirp4netns's API
//!   forwards single ports from IPv4 host addresses only; such mappings are
//!   refused with an error naming them, never dropped or narrowed
//!   ([`api::supported_port_features`]). A mapping without a host address
//!   binds `0.0.0.0` (IPv4 only).
//! - **UDP and the host's loopback**: with host loopback blocked,
//!   slirp4netns loses UDP replies to clients on the host's loopback
//!   (podman#4586). A loopback-bound UDP mapping is then refused; a UDP
//!   mapping on every address works for other clients and comes with an
//!   [`api::PortCaveat`] to print.
//! - **No `--enable-sandbox`**: with Debian 12's 1.2.0 it fails as an
//!   unprivileged user joining a user namespace by path (`setegid(0)`).
//! - **Readiness is slirp4netns's own ready signal**, then each published
//!   port is confirmed by its new socket in slirp4netns's namespace.

pub mod api;
pub mod args;
pub mod features;
pub mod process;
pub mod setup;
