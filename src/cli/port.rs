//! `pelagos-net port ID [PORT[/PROTO]]`: a run's published ports, as
//! podman's `port` prints them.

use super::error::{CliError, Exit};
use super::ps::{PortEntry, port_entries};
use super::{Context, output};
use crate::state::runs::find_runs;

/// Options of `port`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's id (any unique prefix).
    id: String,
    /// Only this port inside the namespace (`80` or `80/udp`).
    #[arg(value_name = "PORT[/PROTO]", value_parser = parse_filter)]
    filter: Option<(u16, Option<String>)>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn parse_filter(s: &str) -> Result<(u16, Option<String>), String> {
    let (port, proto) = match s.split_once('/') {
        Some((p, proto @ ("tcp" | "udp"))) => (p, Some(proto.to_owned())),
        Some((_, other)) => return Err(format!("unknown protocol '{other}' (expected tcp or udp)")),
        None => (s, None),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((p, proto)),
        _ => Err(format!("'{port}' is not a port from 1 to 65535")),
    }
}

/// Print the ports.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let runs = find_runs(&ctx.paths, &args.id).map_err(|e| CliError::from_error(&e))?;
    let run = match runs.as_slice() {
        [one] => one,
        [] => return Err(CliError::usage(format!("no live run with id '{}' (see `pelagos-net ps`)", args.id))),
        many => {
            let ids: Vec<&str> = many.iter().map(|r| r.id.as_str()).collect();
            return Err(CliError::usage(format!("id '{}' is ambiguous: {}", args.id, ids.join(", "))));
        }
    };
    let ports: Vec<PortEntry> = port_entries(&run.ports)
        .into_iter()
        .filter(|e| match &args.filter {
            None => true,
            Some((port, proto)) => e.container_port == *port && proto.as_deref().is_none_or(|p| p == e.protocol),
        })
        .collect();
    if args.json {
        output::json(&serde_json::json!({ "schema_version": output::SCHEMA_VERSION, "id": run.id, "ports": ports }))?;
    } else {
        for p in &ports {
            output::outln(&p.to_string())?;
        }
    }
    Ok(Exit::SUCCESS)
}
