//! The steps of a setup, as data.
//!
//! A [`Step`] says what to do, not how: the planner ([`super::plan`])
//! produces the list purely from a request and the probed host, `plan`
//! prints it, and the executor (`flow::exec`) carries it out in order,
//! recording what each step creates. Steps name the namespaces they act on
//! symbolically ([`NsRef`]): which process or name they turn out to be is
//! only known while the setup runs.
//!
//! Steps are serializable so that a plan can be printed as JSON, compared
//! with what a run executed, and (for a helper that acts inside another
//! user namespace) handed to another process.

use crate::state::record::ProcessRole;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A namespace as a step refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsRef {
    /// The namespace child this run forks (`/proc/<child>/ns/...`).
    Child,
    /// The named netns `<netns dir>/pelagos-<id>` this setup creates or names.
    Named,
    /// The namespace handed in (`attach --netns`, `run --network ns:PATH`,
    /// a runtime's process or namespace files).
    Given,
}

impl NsRef {
    /// How a plan shows the network namespace file.
    pub fn netns_text(self) -> &'static str {
        match self {
            Self::Child => "/proc/<child>/ns/net",
            Self::Named => "/run/netns/pelagos-<id>",
            Self::Given => "the given namespace",
        }
    }
}

/// Which namespaces the forked child enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "enter", rename_all = "snake_case")]
pub enum ChildNs {
    /// New user and network namespaces, the caller mapped to root inside.
    NewUserAndNet,
    /// A new network namespace.
    NewNet,
    /// An existing namespace (its user namespace first, when it has one to enter).
    Join {
        /// Which.
        ns: NsRef,
    },
    /// New network (and PID, mount) namespaces inside the user namespace
    /// of the user's network holder (rootless shared networks), so the
    /// holder may put a veth pair into them.
    InHolder,
}

/// A network helper process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Helper {
    /// pasta.
    Pasta,
    /// slirp4netns.
    Slirp4netns,
}

impl Helper {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pasta => "pasta",
            Self::Slirp4netns => "slirp4netns",
        }
    }

    /// Its role in a record.
    pub fn role(self) -> ProcessRole {
        match self {
            Self::Pasta => ProcessRole::Pasta,
            Self::Slirp4netns => ProcessRole::Slirp4netns,
        }
    }
}

/// How the builtin relay gets sockets inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inside {
    /// The relay thread joins the network namespace itself (a caller that may `setns`).
    Join,
    /// A socket factory forked into the user and network namespace (rootless).
    Factory,
}

/// One step of a setup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Pick a free host port for every published port that names none (`-p 80`).
    PickHostPorts,
    /// Check that no live run publishes, and no host socket holds, a
    /// published host port; the check holds a lock on the runs directory
    /// until the record (with the ports) is written, so two setups cannot
    /// both pass.
    ClaimPorts,
    /// Check that no live run on the shared network goes by the setup's
    /// `--name`; like [`Step::ClaimPorts`], the check holds the runs
    /// directory's lock until the record (with the name) is written, so
    /// two setups cannot both take a name.
    ClaimName {
        /// Network name.
        network: String,
        /// The name.
        name: crate::model::run_name::RunName,
    },
    /// Bind the published host ports (builtin driver), before anything else
    /// exists, so a taken port fails first and cheaply.
    BindListeners,
    /// Hold the published host ports with sockets of this process while the
    /// setup lives (kernel DNAT forwards them and holds nothing): no other
    /// program can bind them meanwhile, and every other setup's check sees
    /// them as in use, whatever runtime directory it records in.
    HoldPorts,
    /// Prepare name resolution before anything exists: read the host's
    /// files, bind a bridge forwarder's sockets, prepare the child's mounts.
    PrepareDns,
    /// Write the record; everything created from here on is recorded.
    WriteRecord,
    /// Lease an address on a bridge network, under its lock.
    LeaseAddress {
        /// Network name.
        network: String,
        /// The address asked for.
        requested: Option<Ipv4Addr>,
    },
    /// Use the address a delegated IPAM plugin gave (a CNI config's
    /// `ipam`), recorded so that undoing runs the plugin's `DEL`.
    UseAddress {
        /// Network name.
        network: String,
        /// The IPAM plugin.
        plugin: String,
    },
    /// Make sure the network's bridge (address, up), nftables table and
    /// forwarding sysctls exist. Idempotent; they persist with the network.
    EnsureNetwork {
        /// Network name.
        network: String,
    },
    /// Make sure the user's network holder runs (start it on first use,
    /// replace a dead one) and record that this setup uses it.
    EnsureHolder,
    /// Inside the holder (a forked helper that joined it): the network's
    /// bridge and nftables table, a veth pair into the child's namespace,
    /// its address and default route.
    AttachInHolder {
        /// Network name.
        network: String,
    },
    /// Create the named netns `pelagos-<id>` with `lo` up.
    CreateNetns,
    /// Fork the child that will run the command; it enters its namespaces,
    /// brings `lo` up and waits.
    ForkChild {
        /// Which namespaces.
        ns: ChildNs,
    },
    /// Give a namespace the name `pelagos-<id>` (a bind mount): as root,
    /// pasta drops its capabilities before opening its target and could not
    /// open `/proc/<pid>/ns/net` of a root process.
    NameNetns {
        /// Which namespace.
        of: NsRef,
    },
    /// Create a veth pair on the network's bridge, its peer created inside the namespace.
    CreateVeth {
        /// Network name.
        network: String,
        /// Where the peer goes.
        into: NsRef,
    },
    /// Address the container end, set it up, add the default route.
    ConfigureAddress {
        /// Network name.
        network: String,
    },
    /// Add the published ports to the network's nftables maps (one transaction).
    InstallForwards {
        /// Network name.
        network: String,
    },
    /// Start the network helper against the namespace.
    SpawnHelper {
        /// Which helper.
        helper: Helper,
        /// The namespace.
        target: NsRef,
    },
    /// Wait until the helper made the namespace ready (and, slirp4netns,
    /// published its ports).
    AwaitReady {
        /// Which helper.
        helper: Helper,
    },
    /// Start the DNS forwarder name resolution asked for.
    StartDns,
    /// Start relaying the published ports into the namespace.
    StartRelay {
        /// The namespace.
        target: NsRef,
        /// How sockets inside it are made.
        inside: Inside,
        /// In a process of its own that outlives this one (attachments).
        detached: bool,
    },
    /// Prepare the accelerator (`--accel socket`): the socket pair over
    /// which the command's process, right before `exec`, hands the
    /// supervisor the listener of the seccomp filter it installs.
    PrepareAccel {
        /// How switched sockets are confined.
        lock: crate::accel::switch::Lock,
        /// Servers take their published TCP listeners over (the filter
        /// intercepts `bind` and `listen` too).
        listeners: bool,
    },
    /// Once the command runs: take the filter's listener and start the
    /// supervisor (a thread of this process) that switches the command's
    /// sockets; the command's process refusing the filter leaves one line
    /// and the normal path.
    StartAccel,
    /// Mark the attachment ready: from now on it lives as long as its namespace.
    Commit,
    /// Let the child execute the command.
    ExecCommand,
    /// Execute the command in this process, in the caller's namespaces.
    ExecInPlace,
}

impl Step {
    /// The step's name, as in the JSON `op` field and the fault trace.
    pub fn op(&self) -> &'static str {
        match self {
            Self::PickHostPorts => "pick_host_ports",
            Self::ClaimPorts => "claim_ports",
            Self::ClaimName { .. } => "claim_name",
            Self::BindListeners => "bind_listeners",
            Self::HoldPorts => "hold_ports",
            Self::PrepareDns => "prepare_dns",
            Self::WriteRecord => "write_record",
            Self::LeaseAddress { .. } => "lease_address",
            Self::UseAddress { .. } => "use_address",
            Self::EnsureNetwork { .. } => "ensure_network",
            Self::EnsureHolder => "ensure_holder",
            Self::AttachInHolder { .. } => "attach_in_holder",
            Self::CreateNetns => "create_netns",
            Self::ForkChild { .. } => "fork_child",
            Self::NameNetns { .. } => "name_netns",
            Self::CreateVeth { .. } => "create_veth",
            Self::ConfigureAddress { .. } => "configure_address",
            Self::InstallForwards { .. } => "install_forwards",
            Self::SpawnHelper { .. } => "spawn_helper",
            Self::AwaitReady { .. } => "await_ready",
            Self::StartDns => "start_dns",
            Self::StartRelay { .. } => "start_relay",
            Self::PrepareAccel { .. } => "prepare_accel",
            Self::StartAccel => "start_accel",
            Self::Commit => "commit",
            Self::ExecCommand => "exec_command",
            Self::ExecInPlace => "exec_in_place",
        }
    }

    /// True for the steps that act on the target namespace; a library
    /// caller's `prepare` runs the steps before the first of them, its
    /// `attach` the rest.
    pub fn needs_target(&self) -> bool {
        let given = |ns: &NsRef| *ns == NsRef::Given;
        match self {
            Self::NameNetns { of } => given(of),
            Self::CreateVeth { into, .. } => given(into),
            Self::ForkChild { ns: ChildNs::Join { ns } } => given(ns),
            Self::SpawnHelper { target, .. } | Self::StartRelay { target, .. } => given(target),
            // A run's child is forked before it; an attachment's namespace is the given one.
            Self::AttachInHolder { .. } => true,
            _ => false,
        }
    }
}
