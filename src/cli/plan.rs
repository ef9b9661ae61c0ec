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
    if args.json {
        output::json(&output::versioned(&json(&plan))?)?
    } else {
        output::out(&render(&plan))?
    }
    Ok(Exit::SUCCESS)
}
