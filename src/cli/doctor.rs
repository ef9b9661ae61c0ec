//! `pelagos-net doctor`: what works on this host, and the fix for each problem.

use super::error::{CliError, Exit};
use super::{Context, output};
use crate::flow::doctor::{render, report};
use crate::host::probe::{HostCaps, ProbeRoots};

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
    let found = crate::bridge::firewall::Firewall::new()
        .ok()
        .filter(|_| caps.cap_net_admin)
        .map(|mut fw| crate::bridge::firewall::hostfw::probe(&mut fw));
    report.checks.push(crate::flow::doctor::host_firewall_check(found.as_ref()));
    if caps.euid != 0 {
        report.checks.push(crate::flow::doctor::holder_check(&ctx.paths, &caps));
    }
    report.checks.push(crate::accel::probe::doctor_check(&crate::accel::probe::offer(&ctx.paths.proc_root)));
    let etc = std::path::Path::new(crate::dns::setup::ETC);
    let dns = crate::dns::doctor::diagnose(&crate::dns::host::HostFiles::read(etc), etc, &caps);
    if args.json {
        output::json(
            &serde_json::json!({ "schema_version": output::SCHEMA_VERSION, "host": caps, "report": report, "dns": dns }),
        )?;
    } else {
        output::out(&(render(&report) + &crate::dns::doctor::render(&dns)))?;
    }
    Ok(if report.networked { Exit::SUCCESS } else { Exit::NO })
}
