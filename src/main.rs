//! The `pelagos-net` command line.

use clap::{Parser, Subcommand};
use pelagos_net::flow::run::{RunError, RunOptions, run};
use pelagos_net::model::config::NetworkConfig;
use pelagos_net::model::mode::NetworkMode;
use pelagos_net::model::port::PortMapping;
use pelagos_net::state::paths::{PathEnv, Paths};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Rootless-first network namespaces for containers and CI.
#[derive(Debug, Parser)]
#[command(name = "pelagos-net", version, about)]
struct Cli {
    /// Show pasta's arguments and output, timings and teardown details.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Runtime state directory (default: /run/pelagos-net as root, $XDG_RUNTIME_DIR/pelagos-net rootless).
    #[arg(long, global = true, env = "PELAGOS_NET_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Configuration directory (network definitions).
    #[arg(long, global = true, env = "PELAGOS_NET_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Directory of named network namespaces.
    #[arg(long, global = true, env = "PELAGOS_NET_NETNS_DIR")]
    netns_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in its own network namespace.
    Run(RunArgs),
    /// Check this host: what works, what does not, and the fix for each problem.
    Doctor {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show what `run` would do (mode, reasons, helper argv, links, rules), touching nothing.
    Plan(PlanArgs),
    /// Remove what runs whose owner died left behind (helpers, netns names,
    /// forwards, leases, records); live runs are never touched.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Manage bridge networks.
    #[command(subcommand)]
    Network(cli::network::NetworkCmd),
}

/// The network a command gets (shared by `run` and `plan`).
#[derive(Debug, clap::Args)]
struct NetArgs {
    /// Network mode: auto (chosen by probing this host), pasta, slirp4netns,
    /// loopback (alias none), host, bridge or bridge:NAME.
    #[arg(long, default_value = "auto")]
    network: NetworkMode,
    /// Publish a port: [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]; ranges as 8000-8010:80-90.
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<PortMapping>,
    /// Let the command reach a service on the host's loopback at PORT as 127.0.0.1:PORT.
    #[arg(long = "host-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    host_ports: Vec<u16>,
    /// What to do when the mode cannot be had in full: strict (fail), warn
    /// (degrade with one warning line), allow (degrade quietly). Default:
    /// warn for `auto`; an explicit mode without this flag is used as given.
    #[arg(long, value_parser = parse_fallback)]
    fallback: Option<pelagos_net::flow::select::Fallback>,
    /// Who forwards published ports: auto, builtin (pelagos-net relays them
    /// and keeps client source addresses), pasta, slirp4netns or nftables
    /// (bridge). `auto` picks per mode and host; `plan` says which and why.
    #[arg(long, default_value = "auto", value_name = "DRIVER")]
    port_driver: pelagos_net::model::driver::PortDriver,
}

impl NetArgs {
    fn config(&self) -> NetworkConfig {
        NetworkConfig {
            mode: self.network.clone(),
            ports: self.publish.clone(),
            host_loopback_ports: self.host_ports.clone(),
            port_driver: self.port_driver,
        }
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
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
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    net: NetArgs,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// The command (ignored; accepted so a `run` line can be planned as is).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run(RunArgs { net, .. }) | Command::Plan(PlanArgs { net, .. }) = &cli.command
        && let Some(dup) = pelagos_net::ports::precheck::duplicate(&net.publish)
    {
        use clap::CommandFactory;
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, dup).exit();
    }
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "pelagos-net: {}: {}",
                match record.level() {
                    log::Level::Warn => "warning".to_string(),
                    l => l.as_str().to_lowercase(),
                },
                record.args()
            )
        })
        .init();
    let mut paths = Paths::from_env(&PathEnv::current());
    if let Some(dir) = cli.run_dir {
        paths.run_dir = dir;
    }
    if let Some(dir) = cli.netns_dir {
        paths.netns_dir = dir;
    }
    if let Some(dir) = cli.config_dir {
        paths.config_dir = dir;
    }
    match cli.command {
        Command::Run(args) => cmd_run(args, paths, cli.verbose),
        Command::Doctor { json } => {
            let caps =
                pelagos_net::host::probe::HostCaps::probe(&pelagos_net::host::probe::ProbeRoots::current(&paths));
            let report = pelagos_net::host::doctor::report(&caps);
            if json {
                let value = serde_json::json!({ "host": caps, "report": report });
                println!("{}", serde_json::to_string_pretty(&value).expect("serializable"));
            } else {
                print!("{}", pelagos_net::host::doctor::render(&report));
            }
            if report.networked { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Command::Plan(args) => {
            let caps =
                pelagos_net::host::probe::HostCaps::probe(&pelagos_net::host::probe::ProbeRoots::current(&paths));
            match pelagos_net::flow::plan::plan(&args.net.config(), args.net.fallback, &caps, &paths.config_dir) {
                Ok(plan) if args.json => {
                    println!("{}", serde_json::to_string_pretty(&plan).expect("serializable"));
                    ExitCode::SUCCESS
                }
                Ok(plan) => {
                    print!("{}", pelagos_net::flow::plan::render(&plan));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pelagos-net: error: {}", error_chain(&e));
                    exit(125)
                }
            }
        }
        Command::Gc { dry_run, json } => match pelagos_net::state::gc::gc(&paths, dry_run) {
            Ok(report) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
                } else {
                    for a in &report.actions {
                        let verb = if dry_run { "would remove" } else { "removed" };
                        match &a.error {
                            None => println!("{} {verb} {}", a.run, a.what),
                            Some(e) => println!("{} failed to remove {}: {e}", a.run, a.what),
                        }
                    }
                    println!("{} live run(s) left alone", report.live.len());
                }
                if report.actions.iter().any(|a| a.error.is_some()) { ExitCode::from(1) } else { ExitCode::SUCCESS }
            }
            Err(e) => {
                eprintln!("pelagos-net: error: {}", error_chain(&e));
                exit(125)
            }
        },
        Command::Network(cmd) => match cli::network::run(cmd, &paths) {
            Ok(()) => ExitCode::SUCCESS,
            Err(fail) => {
                eprintln!("pelagos-net: error: {}", fail.message);
                exit(fail.code)
            }
        },
    }
}

mod cli;

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn parse_fallback(s: &str) -> Result<pelagos_net::flow::select::Fallback, String> {
    use pelagos_net::flow::select::Fallback;
    match s {
        "strict" => Ok(Fallback::Strict),
        "warn" => Ok(Fallback::Warn),
        "allow" => Ok(Fallback::Allow),
        other => Err(format!("unknown fallback '{other}' (expected strict, warn or allow)")),
    }
}

fn announce_ports(ports: &[PortMapping]) {
    for m in ports {
        eprintln!("pelagos-net: published {m}");
    }
}

fn cmd_run(args: RunArgs, paths: Paths, verbose: u8) -> ExitCode {
    let any_ephemeral = args.net.publish.iter().any(|m| m.host.is_none());
    let args_mode = args.net.network.clone();
    let opts = RunOptions {
        network: args.net.config(),
        command: args.command,
        paths,
        pasta: args.pasta,
        ready_timeout: Duration::from_secs_f64(args.ready_timeout.max(0.0)),
        tun_path: PathBuf::from("/dev/net/tun"),
        ip: args.ip,
        fallback: args.net.fallback,
        on_ready: Some(if any_ephemeral || verbose > 0 { announce_ports } else { |_| {} }),
    };
    match run(&opts) {
        Ok(report) => {
            if let Some(ready) = report.ready_after {
                log::info!("network ready after {:.1} ms", ready.as_secs_f64() * 1e3);
            }
            let helper = report.decision.as_ref().map_or_else(|| args_mode.to_string(), |d| d.mode.to_string());
            if let Some(out) = &report.helper_output
                && (verbose > 0 || report.helper_died)
                && !out.is_empty()
            {
                eprint!("pelagos-net: {helper} output:\n{out}");
            }
            for e in &report.teardown_errors {
                eprintln!("pelagos-net: warning: {}", error_chain(e));
            }
            exit(report.exit_code)
        }
        Err(e) => {
            eprintln!("pelagos-net: error: {}", error_chain(&e));
            exit(RunError::exit_code(&e))
        }
    }
}
