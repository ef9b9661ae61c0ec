//! `pelagos-net run`: a command in its own network namespace.

use super::error::{CliError, Exit, error_chain};
use super::net_args::NetArgs;
use super::{Context, output};
use pelagos_net::flow::run::{RunOptions, run};
use pelagos_net::model::port::PortMapping;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    net: NetArgs,
    /// Seconds to wait for the network to become ready.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    ready_timeout: f64,
    /// Container address on a bridge network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// pasta binary to use instead of the one on PATH.
    #[arg(long, value_name = "PATH")]
    pasta: Option<PathBuf>,
    /// Command and arguments (a command that starts with `-` goes after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn announce_ports(ports: &[PortMapping]) {
    for m in ports {
        output::note(&format!("published {m}"));
    }
}

/// Run the command; exit with its status.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    if !(args.ready_timeout.is_finite() && args.ready_timeout >= 0.0) {
        return Err(CliError::usage(format!(
            "invalid value '{}' for '--ready-timeout <SECONDS>': not a number of seconds",
            args.ready_timeout
        )));
    }
    let any_ephemeral = args.net.publish.iter().any(|m| m.host.is_none());
    let args_mode = args.net.network.clone();
    let opts = RunOptions {
        network: args.net.config()?,
        command: args.command,
        paths: ctx.paths.clone(),
        pasta: args.pasta,
        ready_timeout: Duration::from_secs_f64(args.ready_timeout),
        tun_path: PathBuf::from("/dev/net/tun"),
        ip: args.ip,
        fallback: args.net.fallback,
        on_ready: Some(if any_ephemeral || ctx.verbose > 0 { announce_ports } else { |_| {} }),
    };
    let report = run(&opts).map_err(|e| CliError::new(e.exit_code(), error_chain(&e)))?;
    if let Some(ready) = report.ready_after {
        log::info!("network ready after {:.1} ms", ready.as_secs_f64() * 1e3);
    }
    let helper = report.decision.as_ref().map_or_else(|| args_mode.to_string(), |d| d.mode.to_string());
    if let Some(out) = &report.helper_output
        && (ctx.verbose > 0 || report.helper_died)
        && !out.is_empty()
    {
        output::note(&format!("{helper} output:\n{}", out.trim_end()));
    }
    for e in &report.teardown_errors {
        output::warn(&error_chain(e));
    }
    Ok(Exit::code(report.exit_code))
}
