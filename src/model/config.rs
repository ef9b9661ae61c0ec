//! [`NetworkConfig`]: what network a container asks for, as plain data.

use super::helper_opts::{self, HelperOptsError, SlirpOptions};
use super::mode::NetworkMode;
use super::port::PortMapping;

/// Network configuration for a container: the mode and what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkConfig {
    /// Network mode.
    pub mode: NetworkMode,
    /// Published ports (`-p`); host ports may be unresolved (ephemeral).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Host loopback ports the container reaches as `127.0.0.1:PORT` (`--host-port`).
    #[serde(default)]
    pub host_loopback_ports: Vec<u16>,
    /// Who forwards the published ports (`--port-driver`).
    #[serde(default)]
    pub port_driver: super::driver::PortDriver,
    /// Extra options for the helper of `mode` (`pasta:OPTS`: pasta's own
    /// argv tokens; `slirp4netns:OPTS`: podman's `KEY=VALUE` items), used
    /// only when `mode` is the mode that runs. See `model::helper_opts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helper_options: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host`.
    #[serde(default, skip_serializing_if = "crate::dns::DnsOptions::is_empty")]
    pub dns: crate::dns::DnsOptions,
    /// `--accel`: switch the command's TCP sockets to the owner's namespace.
    #[serde(default, skip_serializing_if = "crate::accel::AccelMode::is_off")]
    pub accel: crate::accel::AccelMode,
    /// The name the run goes by on its network (`--name`): other runs on a
    /// shared network resolve it, and it is in the run's own /etc/hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<super::run_name::RunName>,
}

impl NetworkConfig {
    /// A configuration with `mode` and nothing published.
    pub fn new(mode: NetworkMode) -> Self {
        Self {
            mode,
            ports: Vec::new(),
            host_loopback_ports: Vec::new(),
            port_driver: Default::default(),
            helper_options: Vec::new(),
            dns: Default::default(),
            accel: Default::default(),
            name: None,
        }
    }

    /// pasta's extra argv when `running` is pasta and the options were given for it.
    pub fn pasta_extra(&self, running: &NetworkMode) -> Result<Vec<String>, HelperOptsError> {
        if self.mode != NetworkMode::Pasta || *running != NetworkMode::Pasta || self.helper_options.is_empty() {
            return Ok(Vec::new());
        }
        helper_opts::check_pasta(&self.helper_options)?;
        Ok(self.helper_options.clone())
    }

    /// slirp4netns's extra options when `running` is slirp4netns and they were given for it.
    pub fn slirp_extra(&self, running: &NetworkMode) -> Result<SlirpOptions, HelperOptsError> {
        if self.mode != NetworkMode::Slirp4netns || *running != NetworkMode::Slirp4netns {
            return Ok(SlirpOptions::default());
        }
        helper_opts::slirp(&self.helper_options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_json_with_ports_as_strings() {
        let mut cfg = NetworkConfig::new(NetworkMode::Pasta);
        cfg.ports.push("127.0.0.1:8080:80/tcp".parse().unwrap());
        cfg.host_loopback_ports.push(5432);
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"pasta","ports":["127.0.0.1:8080:80/tcp"],"host_loopback_ports":[5432],"port_driver":"auto"}"#
        );
        assert_eq!(serde_json::from_str::<NetworkConfig>(&json).unwrap(), cfg);
    }
}
