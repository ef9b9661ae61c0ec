//! `pelagos-net plan`: what `run` would do, touching nothing.

use super::error::{CliError, Exit, error_chain};
use super::net_args::NetArgs;
use super::{Context, output};
use pelagos_net::flow::plan::{PlanError, plan, render};
use pelagos_net::host::probe::{HostCaps, ProbeRoots};
use std::ffi::OsString;

/// Options of `plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// The command (ignored; accepted so a `run` line can be planned as is).
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// What `--accel` would give the planned run.
fn accel_plan(
    args: &Args,
    plan: &pelagos_net::flow::plan::Plan,
    ctx: &Context,
) -> Result<Option<pelagos_net::flow::run::AccelPlan>, CliError> {
    let config = args.net.config(ctx)?;
    if config.accel.is_off() {
        return Ok(None);
    }
    let mode: pelagos_net::model::mode::NetworkMode = plan.mode.parse().map_err(|e| CliError::usage(format!("{e}")))?;
    let offer = pelagos_net::accel::probe::offer(&ctx.paths.proc_root);
    let nets = if offer.lock == pelagos_net::accel::switch::Lock::Device {
        pelagos_net::flow::run::host_networks()
    } else {
        Vec::new()
    };
    let relayed = plan.port_driver.name == "builtin"
        && config.ports.iter().any(|p| p.proto == pelagos_net::model::port::PortProto::Tcp);
    Ok(pelagos_net::flow::run::describe_accel(&config, &mode, &offer, &nets, relayed))
}

/// Print the plan.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let caps = HostCaps::probe(&ProbeRoots::read_only(&ctx.paths));
    let plan = plan(&args.net.config(ctx)?, args.net.fallback, &caps, &ctx.paths.config_dir).map_err(|e| {
        let mut message = error_chain(&e);
        if let PlanError::Select(s) = &e {
            for fix in s.fixes() {
                message.push_str(&format!("\n  fix: {fix}"));
            }
        }
        CliError::usage(message)
    })?;
    let accel = accel_plan(&args, &plan, ctx)?;
    if args.json {
        let mut value = output::versioned(&plan)?;
        if let (Some(map), Some(a)) = (value.as_object_mut(), &accel) {
            map.insert("accel".into(), serde_json::to_value(a).unwrap_or_default());
        }
        output::json(&value)?
    } else {
        let mut text = render(&plan);
        if let Some(a) = &accel {
            text.push_str(&match &a.reason {
                None => format!(
                    "accelerator: on, switched sockets locked {}{}\n",
                    if a.lock == pelagos_net::accel::switch::Lock::Peer {
                        "to their peer"
                    } else {
                        "to their route's device"
                    },
                    if a.listeners_handed_over { "; published TCP listeners handed to their servers" } else { "" }
                ),
                Some(why) => format!("accelerator: off: {why}\n"),
            });
        }
        output::out(&text)?
    }
    Ok(Exit::SUCCESS)
}
