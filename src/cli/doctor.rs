//! `pelagos-net doctor`: what works on this host, and the fix for each problem.

use super::error::{CliError, Exit};
use super::{Context, output};
use pelagos_net::host::doctor::{render, report};
use pelagos_net::host::probe::{HostCaps, ProbeRoots};

/// Options of `doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Print the report; exit 1 when the host cannot network a command at all.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let caps = HostCaps::probe(&ProbeRoots::read_only(&ctx.paths));
    let report = report(&caps);
    if args.json {
        output::json(&serde_json::json!({ "schema_version": output::SCHEMA_VERSION, "host": caps, "report": report }))?;
    } else {
        output::out(&render(&report))?;
    }
    Ok(if report.networked { Exit::SUCCESS } else { Exit::NO })
}
