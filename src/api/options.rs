//! What a runtime asks for ([`NetworkOptions`]) and where the network goes
//! ([`Target`]).

use crate::flow::plan::Lifetime;
use crate::flow::select::Fallback;
use crate::model::driver::PortDriver;
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::time::Duration;

/// What network a runtime's container gets. Build it from
/// [`NetworkOptions::new`] (or `Default`: `auto`) with the methods below.
///
/// ```
/// use pelagos_net::{NetworkMode, NetworkOptions};
/// let opts = NetworkOptions::new(NetworkMode::Pasta)
///     .publish("127.0.0.1:8080:80".parse().unwrap())
///     .host_port(5432);
/// assert_eq!(opts.ports.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkOptions {
    /// The network mode (`auto` by default: chosen by probing the host).
    pub mode: NetworkMode,
    /// Published ports; `-p 80`-style mappings get a free host port.
    pub ports: Vec<PortMapping>,
    /// Ports of the host's loopback the namespace reaches as `127.0.0.1:PORT`.
    pub host_loopback_ports: Vec<u16>,
    /// Who forwards the published ports (`auto` by default).
    pub port_driver: PortDriver,
    /// What to do when the mode cannot be had in full (`None`: warn under
    /// `auto`, the mode as given otherwise).
    pub fallback: Option<Fallback>,
    /// An address asked for on a bridge network.
    pub ip: Option<Ipv4Addr>,
    /// How long what is started lives (by default until the calling
    /// process ends; helpers die with it).
    pub lifetime: Lifetime,
    /// How long to wait for the network to be ready.
    pub ready_timeout: Duration,
    /// The helper's own options (`pasta:OPTS`: pasta's argv tokens;
    /// `slirp4netns:OPTS`: podman's `KEY=VALUE` items).
    pub helper_options: Vec<String>,
    /// Name resolution options (refused for a namespace someone else made,
    /// which keeps its own resolver).
    pub dns: crate::dns::DnsOptions,
    /// The name the container goes by on its network (other runs on a
    /// shared network resolve it).
    pub name: Option<crate::model::run_name::RunName>,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self::new(NetworkMode::Auto)
    }
}

impl NetworkOptions {
    /// `mode`, nothing published, helpers that die with the caller.
    pub fn new(mode: NetworkMode) -> Self {
        Self {
            mode,
            ports: Vec::new(),
            host_loopback_ports: Vec::new(),
            port_driver: PortDriver::Auto,
            fallback: None,
            ip: None,
            lifetime: Lifetime::Owner,
            ready_timeout: Duration::from_secs(10),
            helper_options: Vec::new(),
            dns: Default::default(),
            name: None,
        }
    }

    /// Publish a port.
    pub fn publish(mut self, mapping: PortMapping) -> Self {
        self.ports.push(mapping);
        self
    }

    /// Let the namespace reach the host's `127.0.0.1:port` (pasta).
    pub fn host_port(mut self, port: u16) -> Self {
        self.host_loopback_ports.push(port);
        self
    }

    /// Choose who forwards the published ports.
    pub fn port_driver(mut self, driver: PortDriver) -> Self {
        self.port_driver = driver;
        self
    }

    /// The name the container goes by on its network.
    pub fn name(mut self, name: crate::model::run_name::RunName) -> Self {
        self.name = Some(name);
        self
    }

    /// Choose the fallback policy.
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Ask for an address on a bridge network.
    pub fn ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Choose how long what is started lives.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How long to wait for the network.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    pub(crate) fn config(&self) -> crate::model::config::NetworkConfig {
        let mut cfg = crate::model::config::NetworkConfig::new(self.mode.clone());
        cfg.ports = self.ports.clone();
        cfg.host_loopback_ports = self.host_loopback_ports.clone();
        cfg.port_driver = self.port_driver;
        cfg.helper_options = self.helper_options.clone();
        cfg.dns = self.dns.clone();
        cfg.name = self.name.clone();
        cfg
    }
}

/// Where the network goes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Target<'a> {
    /// The namespaces of a process (its network namespace, and, for a
    /// caller that is not root, its user namespace).
    Pid(u32),
    /// Namespace files: `/run/netns/NAME` or `/proc/PID/ns/net`, and the
    /// user namespace to enter first (found from the network namespace
    /// when `None` and the caller is not root).
    Paths {
        /// The network namespace.
        netns: &'a Path,
        /// Its user namespace.
        userns: Option<&'a Path>,
    },
    /// Open namespace descriptors (duplicated; the caller keeps its own).
    Fds {
        /// The network namespace.
        netns: BorrowedFd<'a>,
        /// Its user namespace.
        userns: Option<BorrowedFd<'a>>,
    },
    /// The named namespace [`Prepared::netns_path`](super::Prepared::netns_path)
    /// names (a bridge network's), which the caller's process joined.
    Prepared,
}
