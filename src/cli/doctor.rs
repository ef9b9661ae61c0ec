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
    let mut report = report(&caps);
    // The host's own firewall (iptables FORWARD DROP, firewalld): looked at
    // only with CAP_NET_ADMIN.
    let found = pelagos_net::bridge::firewall::Firewall::new()
        .ok()
        .filter(|_| caps.cap_net_admin)
        .map(|mut fw| pelagos_net::bridge::firewall::hostfw::probe(&mut fw));
    report.checks.push(pelagos_net::host::doctor::host_firewall_check(found.as_ref()));
    let etc = std::path::Path::new(pelagos_net::dns::setup::ETC);
    let dns = pelagos_net::dns::doctor::diagnose(&pelagos_net::dns::host::HostFiles::read(etc), etc, &caps);
    if args.json {
        output::json(
            &serde_json::json!({ "schema_version": output::SCHEMA_VERSION, "host": caps, "report": report, "dns": dns }),
        )?;
    } else {
        output::out(&(render(&report) + &pelagos_net::dns::doctor::render(&dns)))?;
    }
    Ok(if report.networked { Exit::SUCCESS } else { Exit::NO })
}
