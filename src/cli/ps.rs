//! `pelagos-net ps`: the live runs, as podman's `ps` lists containers.

use super::error::{CliError, Exit};
use super::{Context, output};
use crate::model::port::{PortMapping, PortProto};
use crate::state::runs::{RunSummary, live_runs};
use std::net::IpAddr;

/// Options of `ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output (an array; each run carries schema_version).
    #[arg(long)]
    json: bool,
    /// Print the ids only.
    #[arg(short, long)]
    quiet: bool,
}

/// One published port, expanded from a mapping (a range gives one entry per port).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortEntry {
    /// Host address bound; `null` means every address.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Port inside the namespace.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
}

impl std::fmt::Display for PortEntry {
    /// podman's `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            None => "0.0.0.0".to_owned(),
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
        };
        write!(f, "{}/{} -> {ip}:{}", self.container_port, self.protocol, self.host_port)
    }
}

/// Every resolved port of `ports`, one entry per port.
pub fn port_entries(ports: &[PortMapping]) -> Vec<PortEntry> {
    let mut out = Vec::new();
    for m in ports {
        let Some(host) = m.host else { continue };
        let protocol = match m.proto {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        };
        out.extend(host.iter().zip(m.container.iter()).map(|(h, c)| PortEntry {
            host_ip: m.host_ip,
            host_port: h,
            container_port: c,
            protocol,
        }));
    }
    out
}

/// A run as JSON: its summary, ports expanded, schema version added.
pub fn run_json(run: &RunSummary) -> Result<serde_json::Value, CliError> {
    let mut value = output::versioned(run)?;
    value["ports"] = serde_json::to_value(port_entries(&run.ports)).unwrap_or_default();
    Ok(value)
}

/// List the live runs.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let runs = live_runs(&ctx.paths).map_err(|e| CliError::from_error(&e))?;
    if args.json {
        output::json(&runs.iter().map(run_json).collect::<Result<Vec<_>, _>>()?)?;
    } else if args.quiet {
        for r in &runs {
            output::outln(&r.id)?;
        }
    } else {
        output::outln(&format!(
            "{:<12}  {:<16} {:<16} {:<8} {:<15} {:<30} COMMAND",
            "ID", "NAME", "MODE", "PID", "ADDRESS", "PORTS"
        ))?;
        for r in &runs {
            let ports: Vec<String> = r.ports.iter().map(ToString::to_string).collect();
            let line = format!(
                "{:<12}  {:<16} {:<16} {:<8} {:<15} {:<30} {}",
                r.id,
                r.name.as_deref().unwrap_or("-"),
                r.mode,
                r.pid.map_or("-".into(), |p| p.to_string()),
                r.address.map_or("-".into(), |a| a.to_string()),
                if ports.is_empty() { "-".into() } else { ports.join(",") },
                r.command.join(" ")
            );
            output::outln(line.trim_end())?;
        }
    }
    Ok(Exit::SUCCESS)
}
