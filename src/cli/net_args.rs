//! The options that say which network a command gets, shared by `run` and
//! `plan` (so a `run` line can be planned as is).
//!
//! `--network` takes what podman takes: a mode keyword, `bridge:NAME`, the
//! name of a network (`network ls`; a name that is also a keyword means the
//! keyword), `pasta:OPTS` and `slirp4netns:OPTS`.

use super::error::CliError;
use super::{Context, output};
use crate::bridge::network::{DEFAULT_NETWORK, NetworkError, NetworkStore};
use crate::dns::DnsOptions;
use crate::flow::select::Fallback;
use crate::model::config::NetworkConfig;
use crate::model::driver::PortDriver;
use crate::model::helper_opts;
use crate::model::ifname::NetworkName;
use crate::model::mode::{ModeError, NetworkMode};
use crate::model::port::PortMapping;
use crate::model::run_name::RunName;

/// `--network` as typed, before a bare name is looked up.
#[derive(Debug, Clone)]
pub enum NetworkArg {
    /// A mode, with helper options for `pasta:OPTS` / `slirp4netns:OPTS`.
    Mode(NetworkMode, Vec<String>),
    /// A bare name: a network, if one of that name exists.
    Named(NetworkName),
}

/// A refused helper option and what to use instead, on one line (clap
/// prints a value parser's error as it is).
fn opts_error(e: helper_opts::HelperOptsError) -> String {
    match e.hint() {
        Some(hint) => format!("{e}; {hint}"),
        None => e.to_string(),
    }
}

fn parse_network(s: &str) -> Result<NetworkArg, String> {
    if let Some(opts) = s.strip_prefix("pasta:") {
        let tokens = helper_opts::split("pasta", opts).map_err(opts_error)?;
        helper_opts::check_pasta(&tokens).map_err(opts_error)?;
        return Ok(NetworkArg::Mode(NetworkMode::Pasta, tokens));
    }
    if let Some(opts) = s.strip_prefix("slirp4netns:") {
        let items = helper_opts::split("slirp4netns", opts).map_err(opts_error)?;
        helper_opts::slirp(&items).map_err(opts_error)?;
        return Ok(NetworkArg::Mode(NetworkMode::Slirp4netns, items));
    }
    match s.parse::<NetworkMode>() {
        Ok(mode) => Ok(NetworkArg::Mode(mode, Vec::new())),
        Err(ModeError::Unknown { .. }) => match NetworkName::new(s) {
            Ok(name) => Ok(NetworkArg::Named(name)),
            Err(_) => Err(unknown(s)),
        },
        Err(e) => Err(e.to_string()),
    }
}

fn unknown(s: &str) -> String {
    format!(
        "unknown network mode or network '{s}' (modes: {}, pasta:OPTS, slirp4netns:OPTS; networks: see `pelagos-net network ls`)",
        NetworkMode::ACCEPTED_NAMES.join(", ")
    )
}

/// Network options of `run` and `plan`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Network options")]
pub struct NetArgs {
    /// Network mode: auto (chosen by probing this host), pasta, slirp4netns,
    /// loopback (alias none), host, bridge, bridge:NAME or the NAME of a
    /// network; pasta:OPTS and slirp4netns:OPTS add comma-separated helper
    /// options (pasta's own flags; podman's KEY=VALUE for slirp4netns).
    #[arg(long, default_value = "auto", value_name = "MODE", value_parser = parse_network)]
    pub network: NetworkArg,
    /// Publish a port: [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]; ranges as 8000-8010:80-90.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<PortMapping>,
    /// Let the command reach a service on the host's loopback at PORT (TCP and UDP) as 127.0.0.1:PORT.
    #[arg(long = "host-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub host_ports: Vec<u16>,
    /// What to do when the mode cannot be had in full: strict (fail), warn
    /// (degrade with one warning line), allow (degrade quietly). Default:
    /// warn for `auto`; an explicit mode without this flag is used as given.
    #[arg(long, value_parser = parse_fallback, value_name = "POLICY")]
    pub fallback: Option<Fallback>,
    /// Who forwards published ports: auto, builtin (pelagos-net relays them
    /// and keeps client source addresses), pasta, slirp4netns or nftables
    /// (bridge). `auto` picks per mode and host; `plan` says which and why.
    #[arg(long, default_value = "auto", value_name = "DRIVER")]
    pub port_driver: PortDriver,
    /// Resolver for the command (repeatable; replaces the host's). An
    /// address on the host's loopback works too.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// Search domain for the command (repeatable; replaces the host's; `.` for none).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Resolver option for the command, e.g. ndots:2 (repeatable; replaces the host's).
    #[arg(long = "dns-option", value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// Add NAME (or NAME;NAME...) for IP to the command's /etc/hosts; IP may
    /// be `host-gateway`, the host as seen from the run.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// `socket`: TCP at the host's speed (pasta and slirp4netns runs). The
    /// command runs under a seccomp filter; each TCP connect to where the
    /// helper would take it gets a socket made in your own network namespace
    /// (locked to the peer that was checked, so it reaches exactly what the
    /// run reaches through the helper, never the host's loopback), and a
    /// server binding a published TCP port gets the host's listener (no
    /// relay, real client addresses). Loopback, the namespace's own
    /// addresses, UDP and unix sockets stay inside. no_new_privs is not set:
    /// setuid programs inside behave as without it. When the kernel or an
    /// existing seccomp filter refuses, the run goes on without it and says
    /// why. `off` (default): the helper carries everything.
    #[arg(long, default_value = "off", env = "PELAGOS_NET_ACCEL", value_name = "MODE")]
    pub accel: crate::accel::AccelMode,
    /// Name the run goes by: other runs on the same network resolve it (and
    /// its id) to its address; it is in the command's /etc/hosts. One DNS
    /// label; unique among the network's live runs.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

impl NetArgs {
    /// The library's view of these options: a bare name looked up among the
    /// networks, a bad DNS value or a host port published twice a usage
    /// error naming the flag and the value, and options the mode cannot
    /// honour warned about (refused under `--fallback strict`).
    pub fn config(&self, ctx: &Context) -> Result<NetworkConfig, CliError> {
        if let Some(dup) = crate::ports::precheck::duplicate(&self.publish) {
            return Err(CliError::usage(dup.to_string()));
        }
        let (mode, helper_options) = match &self.network {
            NetworkArg::Mode(mode, opts) => (mode.clone(), opts.clone()),
            NetworkArg::Named(name) => (NetworkMode::Bridge(Some(self.lookup(name, ctx)?)), Vec::new()),
        };
        let mut dns = DnsOptions::parse(&self.dns, &self.dns_search, &self.dns_option, &self.add_host)
            .map_err(|e| CliError::usage(e.to_string()))?;
        dns.cache = crate::dns::options::DnsCache::from_env();
        let config = NetworkConfig {
            mode,
            ports: self.publish.clone(),
            host_loopback_ports: self.host_ports.clone(),
            port_driver: self.port_driver,
            helper_options,
            dns,
            accel: self.accel,
            name: self.name.as_deref().map(RunName::new).transpose().map_err(|e| CliError::usage(e.to_string()))?,
        };
        for ignored in ignored_options(&config) {
            if self.fallback == Some(Fallback::Strict) {
                return Err(CliError::usage(format!("{ignored} (refused under --fallback strict)")));
            }
            output::warn(&ignored);
        }
        Ok(config)
    }

    fn lookup(&self, name: &NetworkName, ctx: &Context) -> Result<NetworkName, CliError> {
        if name.as_str() == DEFAULT_NETWORK {
            return Ok(name.clone());
        }
        match NetworkStore::new(&ctx.paths.config_dir).load(name) {
            Ok(def) => Ok(def.name),
            Err(NetworkError::NotFound(_)) => Err(CliError::usage(format!(
                "invalid value '{name}' for '--network <MODE>': {}",
                unknown(name.as_str())
            ))),
            Err(e) => Err(CliError::from_error(&e)),
        }
    }
}

/// Options the mode of `config` cannot honour, each as one sentence naming it.
fn ignored_options(config: &NetworkConfig) -> Vec<String> {
    let mut out = Vec::new();
    if config.mode == NetworkMode::Host && !config.ports.is_empty() {
        out.push(
            "-p/--publish is ignored with --network host: the command shares the host's network, so its own \
             listening sockets are already the host's"
                .to_owned(),
        );
    }
    if config.mode == NetworkMode::Host && config.name.is_some() {
        out.push(
            "--name is ignored with --network host: the command runs in the host's namespaces, with the host's \
             names, and is not recorded"
                .to_owned(),
        );
    }
    if config.mode == NetworkMode::Loopback && !config.host_loopback_ports.is_empty() {
        out.push("--host-port is ignored with --network loopback: the namespace has no way to the host".to_owned());
    }
    out
}

fn parse_fallback(s: &str) -> Result<Fallback, String> {
    match s {
        "strict" => Ok(Fallback::Strict),
        "warn" => Ok(Fallback::Warn),
        "allow" => Ok(Fallback::Allow),
        other => Err(format!("unknown fallback '{other}' (expected strict, warn or allow)")),
    }
}
