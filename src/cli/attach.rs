//! `pelagos-net attach` and `detach`: network a namespace someone else
//! made, through the library's [`Network`], and undo it.

use super::error::{CliError, Exit, error_chain, with_hint};
use super::net_args::NetArgs;
use super::ps::port_entries;
use super::{Context, output};
use crate::{Attachment, Lifetime, Network, NetworkOptions, Target};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `attach`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetArgs,
    /// The network namespace: `/proc/PID/ns/net` or a bind mount such as `/run/netns/NAME`.
    #[arg(long, value_name = "PATH")]
    netns: PathBuf,
    /// The user namespace owning it (default: found from the network namespace, when not root).
    #[arg(long, value_name = "PATH")]
    userns: Option<PathBuf>,
    /// Container address on a bridge network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// Seconds to wait for the network to become ready.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    ready_timeout: f64,
    /// JSON output: id, mode, ports (with the chosen host ports), addresses, helper pids.
    #[arg(long)]
    json: bool,
}

/// Options of `detach`.
#[derive(Debug, clap::Args)]
pub struct DetachArgs {
    /// The attachment's id (what `attach` printed).
    id: String,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

fn fail(e: &crate::Error) -> CliError {
    CliError::new(e.exit_code(), with_hint(&error_chain(e), e.hint()))
}

/// The `attach --json` document.
fn report(a: &Attachment, netns: &std::path::Path) -> serde_json::Value {
    let helpers: Vec<serde_json::Value> =
        a.processes().into_iter().map(|(role, pid)| serde_json::json!({ "role": role, "pid": pid })).collect();
    serde_json::json!({
        "schema_version": output::SCHEMA_VERSION,
        "id": a.id(),
        "mode": a.mode().to_string(),
        "netns": netns,
        "ports": port_entries(a.ports()),
        "addresses": a.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "helpers": helpers,
        "port_driver": a.plan().to_json()["port_driver"].clone(),
    })
}

/// Attach; print the id (or the JSON document) once the network is ready.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    if !(args.ready_timeout.is_finite() && args.ready_timeout >= 0.0) {
        return Err(CliError::usage(format!(
            "invalid value '{}' for '--ready-timeout <SECONDS>': not a number of seconds",
            args.ready_timeout
        )));
    }
    let net = args.net.config(ctx)?;
    let mut opts = NetworkOptions::new(net.mode)
        .port_driver(net.port_driver)
        .lifetime(Lifetime::Detached)
        .ready_timeout(Duration::from_secs_f64(args.ready_timeout));
    opts.ports = net.ports;
    opts.host_loopback_ports = net.host_loopback_ports;
    opts.fallback = args.net.fallback;
    opts.ip = args.ip;
    opts.helper_options = net.helper_options;
    opts.dns = net.dns;
    opts.name = net.name;
    let target = Target::Paths { netns: &args.netns, userns: args.userns.as_deref() };
    let attachment = Network::with_paths(ctx.paths.clone()).attach(&opts, target).map_err(|e| fail(&e))?;
    let written = if args.json {
        output::json(&report(&attachment, &args.netns))
    } else {
        for m in attachment.ports() {
            output::note(&format!("published {m}"));
        }
        output::outln(attachment.id())
    };
    attachment.leave();
    written.map(|()| Exit::SUCCESS)
}

/// Detach; print the id (or a JSON document with what failed).
pub fn detach_cmd(args: DetachArgs, ctx: &Context) -> Result<Exit, CliError> {
    let report = Network::with_paths(ctx.paths.clone()).detach(&args.id).map_err(|e| fail(&e))?;
    if args.json {
        output::json(&serde_json::json!({
            "schema_version": output::SCHEMA_VERSION,
            "id": report.id,
            "errors": report.errors,
            "helper_output": report.helper_output,
        }))?;
    } else {
        for e in &report.errors {
            output::warn(e);
        }
        output::outln(&report.id)?;
    }
    Ok(if report.errors.is_empty() { Exit::SUCCESS } else { Exit::NO })
}
