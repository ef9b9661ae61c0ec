//! `pelagos-net run`: a command in its own network namespace.

use super::error::{CliError, Exit, error_chain};
use super::net_args::NetArgs;
use super::ps::port_entries;
use super::status::StatusSink;
use super::{Context, output};
use crate::flow::run::{Ready, ReadyHook, RunOptions, run};
use crate::host::nsaddr::namespace_addresses;
use crate::model::mode::NetworkMode;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// Write a JSON line when the network is ready (id, mode, ports with the
    /// chosen host ports, addresses) and one at exit, to descriptor FD
    /// (e.g. `3>status.json`) or to the file PATH.
    #[arg(long, value_name = "FD|PATH")]
    json_status: Option<String>,
    /// Command and arguments (a command that starts with `-` goes after `--`).
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// The `ready` document.
fn ready_json(r: &Ready<'_>, proc_root: &std::path::Path) -> serde_json::Value {
    let addresses = match namespace_addresses(proc_root, r.pid) {
        Ok(a) => a.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Err(e) => {
            log::debug!("addresses of run {}: {e}", r.id);
            r.bridge_address.map(|a| vec![a.to_string()]).unwrap_or_default()
        }
    };
    serde_json::json!({
        "schema_version": output::SCHEMA_VERSION,
        "event": "ready",
        "id": r.id,
        "mode": r.mode.to_string(),
        "pid": r.pid,
        "ports": port_entries(r.ports),
        "addresses": addresses,
    })
}

/// Run the command; exit with its status.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    if !(args.ready_timeout.is_finite() && args.ready_timeout >= 0.0) {
        return Err(CliError::usage(format!(
            "invalid value '{}' for '--ready-timeout <SECONDS>': not a number of seconds",
            args.ready_timeout
        )));
    }
    let network = args.net.config(ctx)?;
    let sink = args.json_status.as_deref().map(StatusSink::open).transpose()?.map(Arc::new);
    let run_id: Arc<Mutex<Option<String>>> = Arc::default();
    let announce = network.ports.iter().any(|m| m.host.is_none()) || ctx.verbose > 0;
    let hook = {
        let (sink, run_id, proc_root) = (sink.clone(), run_id.clone(), ctx.paths.proc_root.clone());
        ReadyHook(Arc::new(move |r: &Ready<'_>| {
            if announce {
                for m in r.ports {
                    output::note(&format!("published {m}"));
                }
            }
            if let Ok(mut id) = run_id.lock() {
                *id = Some(r.id.to_owned());
            }
            if let Some(sink) = &sink {
                sink.emit(&ready_json(r, &proc_root));
            }
        }))
    };
    if let (Some(sink), NetworkMode::Host) = (&sink, &network.mode) {
        // Host mode execs in place: the only document is this one, and the
        // descriptor closes at exec (end of file for the reader).
        sink.emit(&serde_json::json!({
            "schema_version": output::SCHEMA_VERSION, "event": "ready", "id": null, "mode": "host",
            "pid": std::process::id(), "ports": [], "addresses": [],
        }));
    }
    let args_mode = network.mode.clone();
    let opts = RunOptions {
        network,
        command: args.command,
        paths: ctx.paths.clone(),
        pasta: args.pasta,
        ready_timeout: Duration::from_secs_f64(args.ready_timeout),
        tun_path: PathBuf::from("/dev/net/tun"),
        ip: args.ip,
        fallback: args.net.fallback,
        // Without a hook, a loopback run's command starts without waiting
        // for our word (see `Release`).
        on_ready: (announce || sink.is_some()).then_some(hook),
    };
    let result = run(&opts);
    if let Some(sink) = &sink {
        let id = run_id.lock().ok().and_then(|id| id.clone());
        let (code, error) = match &result {
            Ok(report) => (report.exit_code, None),
            Err(e) => (e.exit_code(), Some(error_chain(e))),
        };
        sink.emit(&serde_json::json!({
            "schema_version": output::SCHEMA_VERSION, "event": "exit", "id": id, "exit_code": code, "error": error,
        }));
    }
    let report =
        result.map_err(|e| CliError::new(e.exit_code(), super::error::with_hint(&error_chain(&e), e.hint())))?;
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
