//! The options that say which network a command gets, shared by `run` and
//! `plan` (so a `run` line can be planned as is).

use super::error::CliError;
use pelagos_net::dns::DnsOptions;
use pelagos_net::flow::select::Fallback;
use pelagos_net::model::config::NetworkConfig;
use pelagos_net::model::driver::PortDriver;
use pelagos_net::model::mode::NetworkMode;
use pelagos_net::model::port::PortMapping;

/// Network options of `run` and `plan`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Network options")]
pub struct NetArgs {
    /// Network mode: auto (chosen by probing this host), pasta, slirp4netns,
    /// loopback (alias none), host, bridge or bridge:NAME.
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub network: NetworkMode,
    /// Publish a port: [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]; ranges as 8000-8010:80-90.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub publish: Vec<PortMapping>,
    /// Let the command reach a service on the host's loopback at PORT as 127.0.0.1:PORT.
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
}

impl NetArgs {
    /// The library's view of these options; a bad DNS value is a usage
    /// error naming the flag and the value.
    pub fn config(&self) -> Result<NetworkConfig, CliError> {
        let dns = DnsOptions::parse(&self.dns, &self.dns_search, &self.dns_option, &self.add_host)
            .map_err(|e| CliError::usage(e.to_string()))?;
        Ok(NetworkConfig {
            mode: self.network.clone(),
            ports: self.publish.clone(),
            host_loopback_ports: self.host_ports.clone(),
            port_driver: self.port_driver,
            dns,
        })
    }
}

fn parse_fallback(s: &str) -> Result<Fallback, String> {
    match s {
        "strict" => Ok(Fallback::Strict),
        "warn" => Ok(Fallback::Warn),
        "allow" => Ok(Fallback::Allow),
        other => Err(format!("unknown fallback '{other}' (expected strict, warn or allow)")),
    }
}
