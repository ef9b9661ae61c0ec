//! pelagos-net: rootless-first network namespaces for containers and CI.
//!
//! Give any process its own network namespace, reachable and useful, whether
//! or not the caller is root.
//!
//! # Architecture
//!
//! Data flows one way: CLI arguments become pure values ([`model`]: CIDRs,
//! port mappings, modes), a plan (pasta's argv, built purely in
//! [`helpers::pasta::args`]), then effects ([`ns::child`], [`helpers::pasta::process`],
//! [`ns::netns`]) that produce a setup value owning everything it created, and
//! finally a teardown that attempts every step and reports every error.
//! Nothing is global: every path comes from a [`state::paths::Paths`] value.
//!
//! ## Loopback
//!
//! [`bring_up_loopback`] sets `IFF_UP` on `lo` with
//! `ioctl(SIOCSIFFLAGS)`. It allocates nothing and is async-signal-safe, so a
//! runtime can call it in a `pre_exec` closure right after
//! `unshare(CLONE_NEWNET)`; the kernel then activates 127.0.0.1 and ::1.
//!
//! ## Why the child waits for its network
//!
//! A command that starts before its network exists races it: its first
//! connection fails, or a port it publishes is not yet forwarded. So the
//! run flow ([`flow::run`]) starts its child with a raw `clone` (not
//! `std::process::Command`, whose `spawn` blocks until `exec` and so cannot
//! let the child wait on the parent). The child is born in its namespaces,
//! brings `lo` up and blocks on a pipe; the parent starts pasta against
//! `/proc/<child>/ns/net`, waits until the namespace has its default route
//! and every published port is held, and only then lets the child start
//! the command.
//!
//! ## Why the child is an init
//!
//! The child is PID 1 of the run's own PID namespace and starts the command
//! as its child ([`ns::init`]), so nothing the command starts can outlive
//! the run: when the command exits, the init stops what is left, and when
//! the init exits (or dies with its parent) the kernel kills every process
//! of the namespace, `setsid` and double-forked ones included.
//!
//! ## Why named network namespaces
//!
//! A named namespace (a bind mount under `/run/netns`) is visible to `ip
//! netns list` and inspectable with `ip netns exec`. As root, pasta mode
//! gives the namespace a name because pasta drops its capabilities before
//! opening its target and may then not open `/proc/<pid>/ns/net` of a root
//! process; a bind-mounted name opens without that check.
//!
//! ## pasta
//!
//! pasta (from the passt project) connects a rootless namespace to the host
//! with a tap device and forwards published ports. pelagos-net pins every
//! implicit behaviour in its argv (`-t none` instead of the default `auto`
//! port scan), captures its output into a bounded buffer, and always stops
//! it explicitly: in PID/netns mode pasta does not exit when its target dies.
//!
//! ## Why a port driver of our own
//!
//! Published ports are what users touch most, and the pasta build a host
//! ships may break them (Debian 12's 2023-03-09 build hangs
//! server-speaks-first connections and corrupts half-closed ones on its tap
//! path, and stalls large transfers on its splice path). The builtin driver
//! ([`ports::builtin`], relay in [`ports::relay`]) listens on the host itself and
//! relays each connection through a socket created inside the namespace:
//! one epoll thread in the process that owns the run, `splice(2)` through
//! bounded pipes, no daemon. A socket keeps the namespace it was created in,
//! so root lets the relay thread `setns` once; a rootless owner, which may
//! not `setns` into a network namespace, forks a socket factory
//! ([`ports::nsfactory`]) that joins the run's user namespace first. TCP servers
//! see the real client address (transparent sockets plus fwmark routing
//! inside the namespace). [`model::driver`] decides, purely, which driver a
//! run uses and why.

pub mod bridge;
pub mod cni;
pub mod dns;
pub mod fault;
pub mod flow;
pub mod helpers;
pub mod host;
pub mod model;
pub mod ns;
pub mod ports;
pub mod state;

pub use helpers::pasta::features::is_pasta_available;
pub use helpers::pasta::setup::{PastaSetup, setup_pasta_network, teardown_pasta_network};
pub use model::cidr::Ipv4Net;
pub use model::config::NetworkConfig;
pub use model::mode::NetworkMode;
pub use model::port::{PortMapping, PortProto};
pub use ns::loopback::bring_up_loopback;
