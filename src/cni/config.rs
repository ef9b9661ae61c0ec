//! The network configuration a runtime passes on stdin (pure): parsing and
//! validation into [`NetConf`], with the spec's error codes.
//!
//! Keys (the reference `bridge` plugin's names where they mean the same):
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `name` | required | the pelagos-net network: the same name is the same network as `pelagos-net network ...` sees |
//! | `bridge` | `pn-<name>` (`pelagos0` for `pelagos0`) | the Linux bridge |
//! | `subnet`, `gateway` | from the network's definition, or the IPAM result | addresses leased by pelagos-net |
//! | `ipam` | none | delegate addressing to an IPAM plugin (`{"type": "host-local", ...}`) instead of `subnet` |
//! | `isGateway` | `true` | the container's default route goes through the bridge's address |
//! | `ipMasq` | `true` | egress from the subnet is masqueraded behind the host |
//! | `mtu` | the kernel's | MTU of both ends of the veth pair |
//! | `hairpinMode` | `true` | a container may reach itself through a published port |
//! | `runtimeConfig.portMappings` | none | published ports (the `portMappings` capability), DNAT in our table |
//! | `runDir`, `configDir` | `/run/pelagos-net`, `/var/lib/pelagos-net` | state roots (shared with the CLI) |
//!
//! Decisions: `isGateway`, `ipMasq` and `hairpinMode` default to what a
//! pelagos-net network does from the CLI (gateway, NAT, hairpin), so that
//! a network reached both ways behaves the same; a config can turn each off.

use super::spec::{CniError, Code};
use crate::model::cidr::Ipv4Net;
use crate::model::ifname::{IfName, NetworkName};
use crate::model::port::{PortMapping, PortProto, PortRange};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// One `portMappings` entry of `runtimeConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMappingEntry {
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp` (default `tcp`).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Host address to publish on (empty: every address).
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// One `cni.dev/valid-attachments` entry (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// Container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    bridge: Option<String>,
    subnet: Option<String>,
    gateway: Option<String>,
    is_gateway: Option<bool>,
    ip_masq: Option<bool>,
    mtu: Option<u32>,
    hairpin_mode: Option<bool>,
    ipam: Option<serde_json::Value>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    run_dir: Option<PathBuf>,
    config_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<PortMappingEntry>,
}

/// How container addresses are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Addressing {
    /// pelagos-net's leases in the network's subnet (given here, or taken
    /// from the network's definition).
    Leases {
        /// The subnet, when the config names one.
        subnet: Option<Ipv4Net>,
        /// The gateway, when the config names one.
        gateway: Option<Ipv4Addr>,
    },
    /// An IPAM plugin: its `type` and the section as given.
    Delegate {
        /// Plugin type (binary name in `CNI_PATH`).
        plugin: String,
    },
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub version: String,
    /// The network.
    pub name: NetworkName,
    /// The bridge, when the config names one.
    pub bridge: Option<IfName>,
    /// Addressing.
    pub addressing: Addressing,
    /// Default route through the gateway.
    pub is_gateway: bool,
    /// Masquerade egress.
    pub ip_masq: bool,
    /// veth MTU.
    pub mtu: Option<u32>,
    /// Hairpin on the bridge port.
    pub hairpin: bool,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// `prevResult`, when chained.
    pub prev_result: Option<serde_json::Value>,
    /// GC's valid attachments.
    pub valid_attachments: Option<Vec<Attachment>>,
    /// State root overrides.
    pub run_dir: Option<PathBuf>,
    /// Config root override.
    pub config_dir: Option<PathBuf>,
}

fn bad(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidNetworkConfig, msg, details)
}

/// The `cniVersion` of a config, read even when the rest is invalid (for
/// the version of an error object); `None` when it is not JSON at all.
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Parse and validate a network configuration.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(Code::DecodeFailure, "network configuration is not valid JSON", e.to_string()))?;
    let raw: Raw = serde_json::from_value(value)
        .map_err(|e| CniError::new(Code::DecodeFailure, "network configuration has the wrong shape", e.to_string()))?;
    super::spec::check_version(&raw.cni_version)?;
    let name = NetworkName::new(&raw.name)
        .map_err(|e| bad(format!("network name {:?} is refused", raw.name), e.to_string()))?;
    let bridge = raw
        .bridge
        .as_deref()
        .map(|b| IfName::new(b).map_err(|e| bad(format!("bridge name {b:?} is refused"), e.to_string())))
        .transpose()?;
    let addressing = match (&raw.ipam, &raw.subnet) {
        (Some(_), Some(_)) => return Err(bad("give either \"subnet\" or \"ipam\", not both", "")),
        (Some(ipam), None) => {
            let plugin = ipam.get("type").and_then(|t| t.as_str()).filter(|t| !t.is_empty());
            let plugin = plugin.ok_or_else(|| bad("the \"ipam\" section has no \"type\"", ""))?;
            if plugin.contains('/') || plugin.starts_with('.') {
                return Err(bad(format!("IPAM plugin type {plugin:?} is not a plain name"), ""));
            }
            Addressing::Delegate { plugin: plugin.to_owned() }
        }
        (None, subnet) => {
            let subnet = subnet
                .as_deref()
                .map(|s| s.parse::<Ipv4Net>().map_err(|e| bad(format!("subnet {s:?} is refused"), e.to_string())))
                .transpose()?;
            let gateway = raw
                .gateway
                .as_deref()
                .map(|g| g.parse::<Ipv4Addr>().map_err(|e| bad(format!("gateway {g:?} is refused"), e.to_string())))
                .transpose()?;
            Addressing::Leases { subnet, gateway }
        }
    };
    if raw.mtu.is_some_and(|m| !(68..=65535).contains(&m)) {
        return Err(bad(format!("mtu {} is out of range (68-65535)", raw.mtu.unwrap_or(0)), ""));
    }
    let ports = raw.runtime_config.port_mappings.iter().map(port_mapping).collect::<Result<Vec<_>, _>>()?;
    if let Some(prev) = &raw.prev_result
        && !prev.is_object()
    {
        return Err(CniError::new(Code::DecodeFailure, "prevResult is not an object", prev.to_string()));
    }
    let _ = raw.plugin_type;
    Ok(NetConf {
        version: raw.cni_version,
        name,
        bridge,
        addressing,
        is_gateway: raw.is_gateway.unwrap_or(true),
        ip_masq: raw.ip_masq.unwrap_or(true),
        mtu: raw.mtu,
        hairpin: raw.hairpin_mode.unwrap_or(true),
        ports,
        prev_result: raw.prev_result,
        valid_attachments: raw.valid_attachments,
        run_dir: raw.run_dir,
        config_dir: raw.config_dir,
    })
}

fn port_mapping(e: &PortMappingEntry) -> Result<PortMapping, CniError> {
    let proto = match e.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase().as_str() {
        "tcp" => PortProto::Tcp,
        "udp" => PortProto::Udp,
        other => return Err(bad(format!("port mapping protocol {other:?} is not tcp or udp"), "")),
    };
    if e.host_port == 0 || e.container_port == 0 {
        return Err(bad(format!("port mapping {}:{} has a zero port", e.host_port, e.container_port), ""));
    }
    let host_ip = match e.host_ip.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if !v4.is_unspecified() => Some(IpAddr::V4(v4)),
            Ok(IpAddr::V4(_)) => None,
            Ok(IpAddr::V6(_)) => {
                return Err(bad(format!("port mapping host address {s} is IPv6; this network is IPv4-only"), ""));
            }
            Err(err) => return Err(bad(format!("port mapping host address {s:?} is refused"), err.to_string())),
        },
    };
    let range = |p: u16| PortRange::single(p).map_err(|err| bad(format!("port {p} is refused"), err.to_string()));
    Ok(PortMapping { host_ip, host: Some(range(e.host_port)?), container: range(e.container_port)?, proto })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"1.0.0","name":"web","type":"pelagos-net"{extra}}}"#).into_bytes()
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c = parse(&conf("")).unwrap();
        assert_eq!(c.name.as_str(), "web");
        assert_eq!(c.addressing, Addressing::Leases { subnet: None, gateway: None });
        assert!(c.is_gateway && c.ip_masq && c.hairpin && c.ports.is_empty());
    }

    #[test]
    fn runtime_port_mappings_become_port_mappings() {
        let c = parse(&conf(
            r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
               {"hostPort":53,"containerPort":5353,"protocol":"udp","hostIP":"127.0.0.1"}]}"#,
        ))
        .unwrap();
        let got: Vec<String> = c.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["8080:80/tcp", "127.0.0.1:53:5353/udp"]);
    }

    #[test]
    fn an_ipam_section_delegates() {
        let c = parse(&conf(r#","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/24"}]]}"#)).unwrap();
        assert_eq!(c.addressing, Addressing::Delegate { plugin: "host-local".into() });
    }

    #[test]
    fn bad_input_gets_the_spec_codes() {
        let cases: [(&[u8], Code); 9] = [
            (b"{not json", Code::DecodeFailure),
            (br#"{"cniVersion":"1.0.0"}"#, Code::DecodeFailure),
            (br#"{"cniVersion":"9.9.9","name":"web","type":"pelagos-net"}"#, Code::IncompatibleVersion),
            (&conf(r#","subnet":"10.1.0.0/33""#), Code::InvalidNetworkConfig),
            (&conf(r#","subnet":"10.1.0.0/24","ipam":{"type":"host-local"}"#), Code::InvalidNetworkConfig),
            (&conf(r#","ipam":{"type":"../evil"}"#), Code::InvalidNetworkConfig),
            (&conf(r#","bridge":"a/b""#), Code::InvalidNetworkConfig),
            (&conf(r#","prevResult":[1,2]"#), Code::DecodeFailure),
            (
                &conf(r#","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}"#),
                Code::InvalidNetworkConfig,
            ),
        ];
        for (input, code) in cases {
            let got = parse(input).unwrap_err();
            assert_eq!(got.code, code, "{}: {got}", String::from_utf8_lossy(input));
        }
        assert_eq!(version_of(br#"{"cniVersion":"1.1.0","name":"UPPER"}"#).as_deref(), Some("1.1.0"));
    }
}
