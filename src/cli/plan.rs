//! `pelagos-net plan`: what `run` would do, touching nothing.

use super::error::{CliError, Exit, error_chain};
use super::net_args::NetArgs;
use super::{Context, output};
use crate::flow::plan::{json, render};
use crate::flow::run::{RunOptions, plan_run};
use std::ffi::OsString;
use std::path::PathBuf;

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
fn accel_plan(config: &crate::model::config::NetworkConfig, plan: &crate::flow::plan::Plan, ctx: &Context) -> Option<crate::flow::run::AccelPlan> {
    if config.accel.is_off() {
        return None;
    }
    let offer = crate::accel::probe::offer(&ctx.paths.proc_root);
    let nets = if offer.lock == crate::accel::switch::Lock::Device { crate::flow::run::host_networks() } else { Vec::new() };
    let relayed = plan.port_driver.driver == crate::model::driver::ChosenDriver::Builtin
        && config.ports.iter().any(|p| p.proto == crate::model::port::PortProto::Tcp);
    crate::flow::run::describe_accel(config, &plan.mode, &offer, &nets, relayed)
}

/// The plan's line about the accelerator.
fn accel_line(a: &crate::flow::run::AccelPlan) -> String {
    match &a.reason {
        Some(why) => format!("accelerator: off: {why}\n"),
        None => format!(
            "accelerator: on, switched sockets locked {}{}\n",
            match a.lock {
                crate::accel::switch::Lock::Peer => "to their peer",
                crate::accel::switch::Lock::Device => "to their route's device",
            },
            if a.listeners_handed_over { "; published TCP listeners handed to their servers" } else { "" }
        ),
    }
}

/// Print the plan.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let opts = RunOptions {
        network: args.net.config(ctx)?,
        command: Vec::new(),
        paths: ctx.paths.clone(),
        pasta: None,
        ready_timeout: std::time::Duration::from_secs(10),
        tun_path: PathBuf::from("/dev/net/tun"),
        fallback: args.net.fallback,
        ip: None,
        on_ready: None,
    };
    let plan = plan_run(&opts).map_err(|e| CliError::usage(super::error::with_hint(&error_chain(&e), e.hint())))?;
    let accel = accel_plan(&opts.network, &plan, ctx);
    if args.json {
        let mut value = output::versioned(&json(&plan))?;
        if let (Some(map), Some(a)) = (value.as_object_mut(), &accel) {
            map.insert("accel".into(), serde_json::to_value(a).unwrap_or_default());
        }
        output::json(&value)?
    } else {
        let text = render(&plan) + &accel.as_ref().map(accel_line).unwrap_or_default();
        output::out(&text)?
    }
    Ok(Exit::SUCCESS)
}
