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
    if args.json {
        output::json(&output::versioned(&plan)?)?
    } else {
        output::out(&render(&plan))?
    }
    Ok(Exit::SUCCESS)
}
