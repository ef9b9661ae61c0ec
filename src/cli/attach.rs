//! `pelagos-net attach` and `detach`: network a namespace someone else
//! made, through the library's [`Network`], and undo it.

use super::{Fail, error_chain};
use pelagos_net::model::port::PortMapping;
use pelagos_net::state::paths::Paths;
use pelagos_net::{Attachment, Lifetime, Network, NetworkOptions, Target};
use std::path::PathBuf;
use std::time::Duration;

/// `attach` options beyond the network ones.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The network namespace: `/proc/PID/ns/net` or a bind mount such as `/run/netns/NAME`.
    #[arg(long, value_name = "PATH")]
    pub netns: PathBuf,
    /// The user namespace owning it (default: found from the network namespace, when not root).
    #[arg(long, value_name = "PATH")]
    pub userns: Option<PathBuf>,
    /// Container address on a bridge network.
    #[arg(long)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Seconds to wait for the network to become ready.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub ready_timeout: f64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

fn fail(e: &pelagos_net::Error) -> Fail {
    let mut message = error_chain(e);
    if let Some(hint) = e.hint() {
        message.push_str(&format!("\npelagos-net: hint: {hint}"));
    }
    Fail::new(e.exit_code(), message)
}

fn port_json(m: &PortMapping) -> serde_json::Value {
    serde_json::json!({
        "spec": m.to_string(),
        "host_ip": m.host_ip,
        "host_port": m.host.map(|h| h.start()),
        "host_port_end": m.host.map(|h| h.end()),
        "container_port": m.container.start(),
        "container_port_end": m.container.end(),
        "proto": m.proto.to_string(),
    })
}

fn report(a: &Attachment, netns: &std::path::Path) -> serde_json::Value {
    let helpers: Vec<serde_json::Value> =
        a.processes().into_iter().map(|(role, pid)| serde_json::json!({ "role": role, "pid": pid })).collect();
    serde_json::json!({
        "id": a.id(),
        "mode": a.mode().to_string(),
        "netns": netns,
        "ports": a.ports().iter().map(port_json).collect::<Vec<_>>(),
        "addresses": a.addresses(),
        "helpers": helpers,
        "port_driver": a.plan().port_driver,
        "ready_after_ms": a.ready_after().map(|d| d.as_secs_f64() * 1e3),
    })
}

/// `attach`.
pub fn attach(
    net: pelagos_net::model::config::NetworkConfig,
    fallback: Option<pelagos_net::flow::select::Fallback>,
    args: AttachArgs,
    paths: Paths,
) -> Result<(), Fail> {
    let mut opts = NetworkOptions::new(net.mode)
        .port_driver(net.port_driver)
        .lifetime(Lifetime::Detached)
        .ready_timeout(Duration::from_secs_f64(args.ready_timeout.max(0.0)));
    opts.ports = net.ports;
    opts.host_loopback_ports = net.host_loopback_ports;
    opts.fallback = fallback;
    opts.ip = args.ip;
    let target = Target::Paths { netns: &args.netns, userns: args.userns.as_deref() };
    let attachment = Network::with_paths(paths).attach(&opts, target).map_err(|e| fail(&e))?;
    let value = report(&attachment, &args.netns);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value).expect("serializable"));
    } else {
        for m in attachment.ports() {
            eprintln!("pelagos-net: published {m}");
        }
        println!("{}", attachment.id());
    }
    attachment.leave();
    Ok(())
}

/// `detach`.
pub fn detach(id: &str, json: bool, paths: Paths) -> Result<(), Fail> {
    let report = Network::with_paths(paths).detach(id).map_err(|e| fail(&e))?;
    if json {
        let value =
            serde_json::json!({ "id": report.id, "errors": report.errors, "helper_output": report.helper_output });
        println!("{}", serde_json::to_string_pretty(&value).expect("serializable"));
    } else {
        for e in &report.errors {
            eprintln!("pelagos-net: warning: {e}");
        }
        println!("{}", report.id);
    }
    if report.errors.is_empty() { Ok(()) } else { Err(Fail::new(1, format!("detach {id} left errors"))) }
}
