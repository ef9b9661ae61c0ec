//! `pelagos-net network ...`: named bridge networks, as podman's
//! `network` subcommands. Thin over [`crate::bridge::manage`].

use super::error::{CliError, EXIT_USAGE, Exit, error_chain, with_hint};
use super::{Context, output};
use crate::bridge::manage::{self, ManageError};
use crate::bridge::network::{NetworkDef, NetworkError, NetworkOptions, NetworkRequest};
use crate::flow::network::InUse;
use crate::model::cidr::Ipv4Net;
use crate::model::cidr6::Ipv6Net;
use crate::model::ifname::NetworkName;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Network subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCmd {
    /// Create a bridge network.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// Print the names only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as a JSON array, with their attached runs.
    Inspect {
        /// Network names.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<NetworkName>,
    },
    /// Remove networks (refused while runs are attached, unless -f).
    #[command(alias = "remove")]
    Rm {
        /// Stop the runs attached to the network first.
        #[arg(short, long)]
        force: bool,
        /// Seconds the attached runs get to stop before they are killed (with -f).
        #[arg(short, long, value_name = "SECONDS", default_value_t = 10, requires = "force")]
        time: u64,
        /// Network names.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<NetworkName>,
    },
    /// Remove every network without attached runs (except the default);
    /// asks first unless -f.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// Options of `network create` (podman's names).
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Network name (default: the first free of pelagos1, pelagos2, ...).
    name: Option<NetworkName>,
    /// Subnet: IPv4 (default: the next free /24 of 10.90.0.0/16), and/or
    /// IPv6 for a dual-stack network (given twice: one of each).
    #[arg(long, value_parser = parse_subnet, value_name = "SUBNET")]
    subnet: Vec<Subnet>,
    /// Gateway address (default: the subnet's first address); one per family.
    #[arg(long, value_name = "IP")]
    gateway: Vec<IpAddr>,
    /// Hand out container addresses from this range of the subnet only.
    #[arg(long, value_name = "SUBNET")]
    ip_range: Option<Ipv4Net>,
    /// No NAT to the outside.
    #[arg(long)]
    internal: bool,
    /// Dual stack: also an IPv6 subnet (a free ULA /64 unless --subnet gives one).
    #[arg(long)]
    ipv6: bool,
    /// Driver option: mtu=N (the MTU of the bridge and every veth).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    opts: Vec<(String, String)>,
    /// A label (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// A resolver for the network's containers (repeatable).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<IpAddr>,
    /// No name resolution service on this network.
    #[arg(long, conflicts_with = "dns")]
    disable_dns: bool,
}

/// A `--subnet` of either family.
#[derive(Debug, Clone, Copy)]
pub enum Subnet {
    /// IPv4.
    V4(Ipv4Net),
    /// IPv6.
    V6(Ipv6Net),
}

fn parse_subnet(s: &str) -> Result<Subnet, String> {
    if s.contains(':') {
        s.parse().map(Subnet::V6).map_err(|e: crate::model::cidr6::Cidr6Error| e.to_string())
    } else {
        s.parse().map(Subnet::V4).map_err(|e: crate::model::cidr::CidrError| e.to_string())
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// At most one of each family among `items` (named `flag` in the error).
fn one_per_family<T: Copy, A, B>(
    flag: &str,
    items: &[T],
    split: impl Fn(T) -> Result<A, B>,
) -> Result<(Option<A>, Option<B>), CliError> {
    let (mut v4, mut v6) = (None, None);
    for item in items {
        let twice = match split(*item) {
            Ok(a) => v4.replace(a).is_some(),
            Err(b) => v6.replace(b).is_some(),
        };
        if twice {
            return Err(CliError::usage(format!(
                "{flag} given twice for the same address family (one IPv4, one IPv6)"
            )));
        }
    }
    Ok((v4, v6))
}

impl CreateArgs {
    /// IPv4 and IPv6 subnet and gateway.
    #[allow(clippy::type_complexity)]
    fn addressing(
        &self,
    ) -> Result<((Option<Ipv4Net>, Option<Ipv6Net>), (Option<Ipv4Addr>, Option<Ipv6Addr>)), CliError> {
        let subnets = one_per_family("--subnet", &self.subnet, |s| match s {
            Subnet::V4(n) => Ok(n),
            Subnet::V6(n) => Err(n),
        })?;
        let gateways = one_per_family("--gateway", &self.gateway, |g| match g {
            IpAddr::V4(a) => Ok(a),
            IpAddr::V6(a) => Err(a),
        })?;
        if gateways.1.is_some() && subnets.1.is_none() && !self.ipv6 {
            return Err(CliError::usage("--gateway: an IPv6 gateway needs --ipv6 or an IPv6 --subnet"));
        }
        Ok((subnets, gateways))
    }

    fn options(&self) -> Result<NetworkOptions, CliError> {
        let mut mtu = None;
        for (key, value) in &self.opts {
            match key.as_str() {
                "mtu" => {
                    mtu = Some(value.parse::<u32>().map_err(|_| {
                        CliError::usage(format!("invalid value 'mtu={value}' for '--opt': not a number"))
                    })?)
                }
                _ => {
                    return Err(CliError::usage(format!(
                        "invalid value '{key}={value}' for '--opt': unknown option '{key}' (supported: mtu)"
                    )));
                }
            }
        }
        let ((_, subnet6), (_, gateway6)) = self.addressing()?;
        Ok(NetworkOptions {
            ipv6_enabled: self.ipv6 || subnet6.is_some(),
            subnet6,
            gateway6,
            ip_range: self.ip_range,
            mtu,
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            dns_servers: self.dns.clone(),
            disable_dns: self.disable_dns,
        })
    }
}

/// The exit code podman gives a failure: 1 for a network that does not
/// exist, 2 for one in use, 125 for everything else.
fn code_of(e: &ManageError) -> i32 {
    match e {
        ManageError::Network(NetworkError::NotFound(_)) => 1,
        ManageError::InUse { .. } | ManageError::StopTimedOut { .. } => 2,
        _ => EXIT_USAGE,
    }
}

/// What to do about a failure, when we can say.
fn hint_of(e: &ManageError) -> Option<String> {
    match e {
        ManageError::InUse { network, .. } => Some(format!(
            "stop those runs first, or `pelagos-net network rm -f {network}`, which stops them (SIGTERM, SIGKILL after --time)"
        )),
        ManageError::StopTimedOut { network, .. } => {
            Some(format!("give them longer: `pelagos-net network rm -f --time SECONDS {network}`"))
        }
        _ => None,
    }
}

/// A failure's message: its causes, and what to do about it.
fn message_of(e: &ManageError) -> String {
    with_hint(&error_chain(e), hint_of(e))
}

fn fail(e: ManageError) -> CliError {
    CliError::new(code_of(&e), message_of(&e))
}

/// A definition as JSON, with its schema version.
fn def_json(def: &NetworkDef) -> Result<serde_json::Value, CliError> {
    output::versioned(def)
}

/// Run a network subcommand.
pub fn run_cmd(cmd: NetworkCmd, ctx: &Context) -> Result<Exit, CliError> {
    match cmd {
        NetworkCmd::Create(args) => create(args, ctx),
        NetworkCmd::Ls { json, quiet } => ls(ctx, json, quiet),
        NetworkCmd::Inspect { names } => inspect(ctx, &names),
        NetworkCmd::Rm { force, time, names } => {
            let in_use = if force { InUse::Stop { grace: Duration::from_secs(time) } } else { InUse::Refuse };
            let mut worst = 0;
            for name in &names {
                match crate::flow::network::remove_network(&ctx.paths, name, in_use) {
                    Ok(()) => output::outln(name.as_str())?,
                    Err(e) => {
                        worst = worst.max(code_of(&e));
                        output::error(&message_of(&e));
                    }
                }
            }
            Ok(Exit::code(worst))
        }
        NetworkCmd::Prune { force } => prune(ctx, force),
    }
}

fn create(args: CreateArgs, ctx: &Context) -> Result<Exit, CliError> {
    let options = args.options()?;
    let ((subnet, _), (gateway, _)) = args.addressing()?;
    let name = match args.name.clone() {
        Some(name) => name,
        None => free_name(ctx)?,
    };
    let req = NetworkRequest { name, subnet, gateway, internal: args.internal, options };
    let def = manage::create_network(&ctx.paths, &req).map_err(fail)?;
    output::outln(def.name.as_str())?;
    Ok(Exit::SUCCESS)
}

/// podman names unnamed networks podman1, podman2, ...; we do the same.
fn free_name(ctx: &Context) -> Result<NetworkName, CliError> {
    let taken: Vec<String> =
        manage::list_networks(&ctx.paths).map_err(fail)?.into_iter().map(|d| d.name.into()).collect();
    let name = (1..).map(|n| format!("pelagos{n}")).find(|n| !taken.contains(n)).expect("an unbounded range");
    NetworkName::new(&name).map_err(|e| CliError::from_error(&e))
}

fn ls(ctx: &Context, json: bool, quiet: bool) -> Result<Exit, CliError> {
    let defs = manage::list_networks(&ctx.paths).map_err(fail)?;
    if json {
        let all = defs.iter().map(def_json).collect::<Result<Vec<_>, _>>()?;
        output::json(&all)?;
    } else if quiet {
        for d in &defs {
            output::outln(d.name.as_str())?;
        }
    } else {
        output::outln(&format!("{:<20} {:<18} {:<15} {:<15} INTERNAL", "NAME", "SUBNET", "GATEWAY", "BRIDGE"))?;
        for d in defs {
            let (name, subnet, gw, br) =
                (d.name.to_string(), d.subnet.to_string(), d.gateway.to_string(), d.bridge.to_string());
            output::outln(&format!("{name:<20} {subnet:<18} {gw:<15} {br:<15} {}", d.internal))?;
        }
    }
    Ok(Exit::SUCCESS)
}

/// Every network asked for, as one array; a name that does not exist is
/// reported (exit 1) and the others are still printed, as podman does.
fn inspect(ctx: &Context, names: &[NetworkName]) -> Result<Exit, CliError> {
    let mut all = Vec::new();
    let mut worst = 0;
    for name in names {
        let found = manage::find_network(&ctx.paths, name)
            .and_then(|def| Ok((def, manage::attachments(&ctx.paths, name.as_str())?)));
        match found {
            Ok((def, users)) => {
                let mut value = def_json(&def)?;
                value["containers"] = serde_json::to_value(&users).unwrap_or_default();
                all.push(value);
            }
            Err(e) => {
                worst = worst.max(code_of(&e));
                output::error(&message_of(&e));
            }
        }
    }
    output::json(&all)?;
    Ok(Exit::code(worst))
}

fn prune(ctx: &Context, force: bool) -> Result<Exit, CliError> {
    let unused = manage::unused_networks(&ctx.paths).map_err(fail)?;
    if unused.is_empty() {
        return Ok(Exit::SUCCESS);
    }
    if !force && !confirm(&unused)? {
        return Ok(Exit::SUCCESS);
    }
    let report = manage::prune_networks(&ctx.paths, crate::flow::network::side()).map_err(fail)?;
    for name in &report.removed {
        output::outln(name.as_str())?;
    }
    let mut worst = 0;
    for (_, e) in &report.failed {
        worst = worst.max(code_of(e));
        output::error(&message_of(e));
    }
    Ok(Exit::code(worst))
}

/// Ask on stderr, read one line from stdin: `y` or `yes` goes ahead; EOF is no.
fn confirm(unused: &[NetworkName]) -> Result<bool, CliError> {
    let names: Vec<&str> = unused.iter().map(NetworkName::as_str).collect();
    output::prompt(&format!(
        "this removes every network without attached runs: {}.\nAre you sure you want to continue? [y/N] ",
        names.join(", ")
    ));
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::new(EXIT_USAGE, format!("reading stdin: {e}")))?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
