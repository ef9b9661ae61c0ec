//! pelagos-net: rootless-first network namespaces for containers and CI.
//!
//! Give any process its own network namespace, reachable and useful, whether
//! or not the caller is root.
//!
//! # Using it from a container runtime
//!
//! [`Network`] is the whole API a runtime needs: [`Network::prepare`]
//! before its fork (plans the setup, binds the published ports' listeners,
//! creates a bridge network's named netns), [`Prepared::attach`] once the
//! container's process exists ([`Target`]: its pid, or namespace files or
//! descriptors), [`Attachment::detach`] at the end, with a report of what
//! failed. `examples/runtime.rs` is a runtime in one page on it. Errors
//! ([`Error`]) say what failed without naming command-line flags;
//! [`Error::hint`] carries the command line's advice separately.
//!
//! The seed functions of the first releases stay, on the same pipeline:
//! [`setup_bridge_network`] / [`teardown_network`],
//! [`attach_network_to_netns`] / [`teardown_secondary_network`],
//! [`setup_pasta_network`] / [`teardown_pasta_network`] (pasta alone,
//! against a namespace the caller made), [`bring_up_loopback`].
//!
//! # Architecture
//!
//! One pipeline serves every mode and every caller (`run`, `plan`,
//! `attach`, `detach`, `gc`, the library, the fault sweep):
//!
//! ```text
//! request + probed host --plan (pure)--> Vec<Step> --execute--> resources, recorded as they are made
//!                                           |                         |
//!                               plan prints them            undo walks them backwards
//!                               (text and --json)           (teardown, detach, gc: one function)
//! ```
//!
//! - **Plan** (`flow::plan`): a pure function of the request (mode, ports,
//!   host ports, port driver, network, what the namespace is: a child the
//!   run forks, a namespace someone else made, or a named netns the setup
//!   creates; how long the setup lives) and the probed host
//!   (`HostCaps`, probed once per run from the cache and only as far as
//!   the request needs). It returns the typed steps (create or join a
//!   namespace, name it, bind listeners, lease an address, create a veth
//!   pair, install forwards, spawn a helper, await readiness, start the
//!   relay, ...) or a refusal. Every refusal `run` and `attach` make is made
//!   here, so `plan` refuses exactly what they refuse, by the same code; a
//!   property test over random requests on injected hosts checks it, and
//!   the fault-injection build traces each executed step so the suite can
//!   compare a run's steps with what `plan --json` printed.
//! - **Modes** (`flow::modes`): one small file per mode, in the spirit of
//!   netavark's `NetworkDriver`: what the mode refuses and which steps it
//!   contributes. Setup is the executor, teardown the undo function, the
//!   same for every mode.
//! - **Execute** (`flow::exec`): runs the steps in order. What a step
//!   creates becomes a *resource* (a process by pid and start time, a netns
//!   name, forwards on network N, a lease, a veth, a file, the relay's
//!   listeners and socket factory) appended to the record, before the
//!   resource exists when its name is known in advance, right after the fork
//!   for a process (a detached helper is recorded before it may `exec`).
//! - **Records** (`state::record`) are data and import nothing of the
//!   flow. A record is a run (alive while its owner process is) or an
//!   attachment (alive while its *anchor* is: the process it was attached
//!   through, by pid and start time, or the bind mount of its namespace, by
//!   device and inode).
//! - **Undo** (`flow::undo`): the one function that removes a recorded
//!   resource, tolerating "already gone". A run's teardown, a failed setup,
//!   `detach`, a runtime's [`Attachment::detach`] and `gc` after a crash
//!   all walk the record backwards through it and collect every error.
//!
//! Layering: `model` (pure values) and `state` (paths, records, the
//! private-file helpers: data) ← `host`, `ns`, `helpers`, `ports`,
//! `bridge`, `dns` (effects, each on its own) and `cni` (the CNI plugin,
//! on the bridge's effects, with records of its own that `gc` reads) ←
//! `flow` (plan, execute, undo, gc, doctor, forced network removal) ←
//! `api` and `cli`. Nothing below `flow` imports it.
//!
//! Designed for the steps to run elsewhere: a bridge attach into a
//! namespace someone else made is a plan like any other (`TargetKind::Given`),
//! and steps are serializable data, so a process holding a rootless shared
//! network can hand them to a helper it forked inside another user
//! namespace.
//!
//! ## Attachments and their lifetime
//!
//! `pelagos-net attach --netns PATH` networks a namespace someone else made
//! and returns once it is ready; the attachment outlives the command
//! (helpers in their own session, their output in a log file under the run
//! directory, the builtin relay in a small forked holder process) until
//! `pelagos-net detach ID` or until its namespace is gone and `gc` runs.
//! Through the library an attachment lives as long as its [`Attachment`]
//! value by default, and [`Lifetime::Detached`] makes it outlive the caller
//! as the command line's does.
//!
//! ## Why the internal modules are hidden
//!
//! The crate's public surface is what a runtime calls ([`api`], the seed
//! functions and types re-exported here, [`dns`], [`cni`]); every other
//! module is crate-private, so it can change without breaking embedders.
//! The integration tests, the fuzz tests and the benchmark drivers test
//! pieces no runtime calls (argv builders, the relay, the lease store), so
//! the test-only cargo feature `internals` makes those modules public (and
//! hidden from the docs); the crate's own dev-dependency on itself turns
//! it on for `cargo test`. The command line lives in the library for the
//! same reason (it drives the internals), and `main.rs` only calls it.
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
//! run flow (`flow::run`) starts its child with a raw `clone` (not
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
//! as its child (`ns::init`), so nothing the command starts can outlive
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
//! (`ports::builtin`, relay in `ports::relay`) listens on the host itself and
//! relays each connection through a socket created inside the namespace:
//! one epoll thread in the process that owns the run, `splice(2)` through
//! bounded pipes, no daemon. A socket keeps the namespace it was created in,
//! so root lets the relay thread `setns` once; a rootless owner, which may
//! not `setns` into a network namespace, forks a socket factory
//! (`ports::nsfactory`) that joins the run's user namespace first. TCP servers
//! see the real client address (transparent sockets plus fwmark routing
//! inside the namespace). `model::driver` decides, purely, which driver a
//! run uses and why.

/// The internal modules: public with the test-only `internals` feature
/// (the test suite, the fuzz tests and the benchmark drivers test pieces no
/// runtime calls), crate-private otherwise. Without the feature, code only
/// those users reach is dead in this crate, which is expected.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(dead_code, unused_imports)]
        pub(crate) mod $name;
    )*};
}

pub mod api;
// The command line's module docs are for maintainers (their links resolve
// with `--document-private-items`); the binary only calls `cli::main`.
#[doc(hidden)]
#[allow(rustdoc::private_intra_doc_links)]
pub mod cli;
pub mod cni;
pub mod dns;
internal!(accel, bridge, fault, flow, helpers, holder, host, model, ns, ports, state);

pub use api::{
    AttachRequest, Attachment, Error, ErrorKind, Lifetime, Network, NetworkOptions, NetworkSetup, Prepared,
    SecondaryAttachment, SetupPlan, Target, TeardownErrors, attach_network_to_netns, setup_bridge_network,
    teardown_network, teardown_secondary_network,
};
pub use bridge::network::{BRIDGE_GW, BRIDGE_NAME, NetworkDef, NetworkError};
pub use flow::DetachReport;
pub use flow::gc::{Action as GcAction, GcReport};
pub use flow::select::Fallback;
pub use helpers::pasta::args::PastaPlan;
pub use helpers::pasta::features::is_pasta_available;
pub use helpers::pasta::process::PastaReport;
pub use helpers::pasta::ready::NsView;
pub use helpers::pasta::setup::{
    PastaNetworkConfig, PastaSetup, PastaSetupError, setup_pasta_network, teardown_pasta_network,
};
pub use host::procfs::ProcessId;
pub use model::cidr::Ipv4Net;
pub use model::config::NetworkConfig;
pub use model::driver::PortDriver;
pub use model::ifname::{IfName, NetworkName};
pub use model::mode::NetworkMode;
pub use model::port::{Forward, PortMapping, PortProto};
pub use model::run_name::{RunName, RunNameError};
pub use model::target::NsTarget;
pub use ns::loopback::bring_up_loopback;
pub use ns::netns::NetNs;
pub use state::paths::{PathEnv, Paths};
