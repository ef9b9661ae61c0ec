//! pasta's argument vector, built as data from a [`PastaPlan`].
//!
//! Pure: no filesystem, no spawning. The output is golden-tested against the
//! option syntax of the oldest build we support (Debian 12's passt
//! 0.0~git20230309), so only options that build has are ever emitted.
//!
//! Every choice pasta would otherwise make for us is pinned: forwarding
//! directions that have nothing to forward get an explicit `none` rather than
//! pasta's default `auto` (which scans for and forwards every bound port, and
//! slows start-up), and pasta stays in the foreground logging to stderr so the
//! process owner can capture its messages and its exit.
//!
//! The host's loopback stays out of reach: pasta's default maps the
//! namespace's gateway address to the host's `127.0.0.1`/`::1`, which hands
//! every service bound to the host's loopback (databases, admin consoles,
//! IDE and docker sockets) to whatever runs inside. `--no-map-gw` turns
//! that off, so the gateway is the real gateway; the only doors onto the
//! host's loopback are the ports the caller names ([`PastaPlan::host_loopback_ports`],
//! pasta's `-T` and `-U`). Every pasta build since 2021 has the option
//! ([`NO_MAP_GW`]); a build whose `--help` lacks it is refused before it runs.

use std::ffi::OsString;
use std::fmt::Write as _;

use crate::model::port::{PortMapping, PortProto, PortRange};
use crate::model::target::NsTarget;

/// Everything that decides pasta's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastaPlan {
    /// Where pasta attaches.
    pub target: NsTarget,
    /// Published ports, host side to namespace side; host ports must already
    /// be resolved (the caller picks ephemeral ports before building argv).
    pub ports: Vec<PortMapping>,
    /// Ports on the host's loopback that the namespace may reach as
    /// `127.0.0.1:PORT` inside it (pasta's `-T`).
    pub host_loopback_ports: Vec<u16>,
    /// `--runas UID`: as root pasta drops to `nobody` unless told otherwise;
    /// the caller passes `Some(0)` when running as root on a build that
    /// supports `--runas`.
    pub runas: Option<u32>,
    /// The user's own options (`--network pasta:OPTS`), appended last;
    /// checked against the pinned ones (`model::helper_opts`).
    pub extra: Vec<OsString>,
    /// `--dns-forward ADDR`: DNS queries the namespace sends to `ADDR` go to
    /// the host's resolver (see [`crate::dns::decide`](mod@crate::dns::decide)).
    pub dns_forward: Option<std::net::Ipv4Addr>,
}

/// Why a plan could not be turned into arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A mapping still asks for an ephemeral host port.
    #[error("port mapping {} has no host port; resolve it before starting pasta", describe(.mapping))]
    UnresolvedHostPort {
        /// The offending mapping.
        mapping: PortMapping,
    },
    /// Host and container ranges differ in length, which pasta rejects.
    #[error("port mapping {} maps {host_len} host ports to {container_len} container ports", describe(.mapping))]
    RangeLengthMismatch {
        /// The offending mapping.
        mapping: PortMapping,
        /// Number of host ports.
        host_len: u32,
        /// Number of container ports.
        container_len: u32,
    },
    /// Port 0 among the host-loopback ports.
    #[error("host loopback port 0 is not a valid port")]
    ZeroLoopbackPort,
}

/// The option that keeps the host's loopback out of the namespace's reach
/// (pasta would otherwise map the gateway address to it).
pub const NO_MAP_GW: &str = "--no-map-gw";

/// The arguments after the program name for running pasta as `plan` says.
///
/// Order: `--config-net --foreground --stderr --no-map-gw`, then `-t` and `-u` (one per
/// mapping, or `none`), `-T` and `-U` (the same loopback ports joined by
/// commas, or `none`), `--dns-forward ADDR` when given, `--netns PATH`, `--userns
/// PATH` and `--runas UID` when given, then the user's extra options.
/// Paths are passed through as `OsString`s untouched.
pub fn build_argv(plan: &PastaPlan) -> Result<Vec<OsString>, ArgsError> {
    let mut argv: Vec<OsString> =
        ["--config-net", "--foreground", "--stderr", NO_MAP_GW].into_iter().map(OsString::from).collect();
    for (flag, proto) in [("-t", PortProto::Tcp), ("-u", PortProto::Udp)] {
        let specs = plan.ports.iter().filter(|m| m.proto == proto).map(forward_spec).collect::<Result<Vec<_>, _>>()?;
        if specs.is_empty() {
            push_pair(&mut argv, flag, "none");
        }
        for spec in specs {
            push_pair(&mut argv, flag, spec);
        }
    }
    // `--host-port`: TCP and UDP alike, from the namespace's loopback to the host's.
    let loopback = loopback_spec(&plan.host_loopback_ports)?;
    push_pair(&mut argv, "-T", &loopback);
    push_pair(&mut argv, "-U", loopback);
    if let Some(addr) = plan.dns_forward {
        push_pair(&mut argv, "--dns-forward", addr.to_string());
    }
    push_pair(&mut argv, "--netns", &plan.target.netns);
    if let Some(userns) = &plan.target.userns {
        push_pair(&mut argv, "--userns", userns);
    }
    if let Some(uid) = plan.runas {
        push_pair(&mut argv, "--runas", uid.to_string());
    }
    argv.extend(plan.extra.iter().cloned());
    Ok(argv)
}

fn push_pair(argv: &mut Vec<OsString>, flag: &str, value: impl Into<OsString>) {
    argv.push(flag.into());
    argv.push(value.into());
}

/// pasta's `[ADDR/]HOST[-HOSTEND][:CTR[-CTREND]]` for one mapping; the `:CTR`
/// part is left out when it equals the host ports. IPv6 addresses are written
/// plainly: they hold no `/`, which is what pasta splits on.
fn forward_spec(mapping: &PortMapping) -> Result<String, ArgsError> {
    let host = mapping.host.ok_or_else(|| ArgsError::UnresolvedHostPort { mapping: mapping.clone() })?;
    if host.len() != mapping.container.len() {
        return Err(ArgsError::RangeLengthMismatch {
            mapping: mapping.clone(),
            host_len: host.len(),
            container_len: mapping.container.len(),
        });
    }
    let mut spec = String::new();
    if let Some(ip) = mapping.host_ip {
        // Writing to a String cannot fail.
        let _ = write!(spec, "{ip}/");
    }
    spec.push_str(&range_text(host));
    if host != mapping.container {
        spec.push(':');
        spec.push_str(&range_text(mapping.container));
    }
    Ok(spec)
}

/// Sorted, de-duplicated ports joined by commas, or `none`.
fn loopback_spec(ports: &[u16]) -> Result<String, ArgsError> {
    if ports.contains(&0) {
        return Err(ArgsError::ZeroLoopbackPort);
    }
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Ok("none".to_owned());
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    Ok(list.join(","))
}

fn range_text(range: PortRange) -> String {
    if range.start() == range.end() { range.start().to_string() } else { format!("{}-{}", range.start(), range.end()) }
}

/// A mapping in docker's `[HOST_IP:][HOST:]CONTAINER/PROTO` notation, for
/// error messages (independent of the spec parser's `Display`).
fn describe(mapping: &PortMapping) -> String {
    let ip = match mapping.host_ip {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:"),
        Some(ip) => format!("{ip}:"),
        None => String::new(),
    };
    let host = match (ip.as_str(), mapping.host) {
        ("", None) => String::new(),
        (ip, host) => format!("{ip}{}:", host.map(range_text).unwrap_or_default()),
    };
    let proto = match mapping.proto {
        PortProto::Tcp => "tcp",
        PortProto::Udp => "udp",
    };
    format!("{host}{}/{proto}", range_text(mapping.container))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOTLESS_TAIL: [&str; 4] = ["--netns", "/proc/42/ns/net", "--userns", "/proc/42/ns/user"];

    fn mapping(ip: Option<&str>, host: Option<(u16, u16)>, ctr: (u16, u16), proto: PortProto) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|ip| ip.parse().unwrap()),
            host: host.map(|(s, e)| PortRange::new(s, e).unwrap()),
            container: PortRange::new(ctr.0, ctr.1).unwrap(),
            proto,
        }
    }

    fn tcp(host: u16, ctr: u16) -> PortMapping {
        mapping(None, Some((host, host)), (ctr, ctr), PortProto::Tcp)
    }

    fn rootless(ports: Vec<PortMapping>) -> PastaPlan {
        PastaPlan {
            target: NsTarget { netns: "/proc/42/ns/net".into(), userns: Some("/proc/42/ns/user".into()) },
            ports,
            host_loopback_ports: vec![],
            runas: None,
            extra: vec![],
            dns_forward: None,
        }
    }

    fn argv(plan: &PastaPlan) -> Vec<String> {
        let argv = build_argv(plan).unwrap();
        argv.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    /// The fixed head, then `middle`, then the rootless namespace options.
    fn expected(middle: &[&str]) -> Vec<String> {
        let head = ["--config-net", "--foreground", "--stderr", "--no-map-gw"];
        head.iter().chain(middle).chain(&ROOTLESS_TAIL).map(|s| s.to_string()).collect()
    }

    #[test]
    fn golden_argv_table() {
        let udp = |h, c| mapping(None, Some((h, h)), (c, c), PortProto::Udp);
        let cases: Vec<(&str, Vec<PortMapping>, Vec<&str>)> = vec![
            ("no ports", vec![], vec!["-t", "none", "-u", "none", "-T", "none", "-U", "none"]),
            ("one tcp forward", vec![tcp(8080, 80)], vec!["-t", "8080:80", "-u", "none", "-T", "none", "-U", "none"]),
            ("same port omits target", vec![tcp(80, 80)], vec!["-t", "80", "-u", "none", "-T", "none", "-U", "none"]),
            (
                "tcp and udp",
                vec![tcp(8080, 80), udp(5353, 53), tcp(2222, 22)],
                vec!["-t", "8080:80", "-t", "2222:22", "-u", "5353:53", "-T", "none", "-U", "none"],
            ),
            (
                "range with different container range",
                vec![mapping(None, Some((8000, 8010)), (80, 90), PortProto::Tcp)],
                vec!["-t", "8000-8010:80-90", "-u", "none", "-T", "none", "-U", "none"],
            ),
            (
                "identical ranges",
                vec![mapping(None, Some((7000, 7002)), (7000, 7002), PortProto::Udp)],
                vec!["-t", "none", "-u", "7000-7002", "-T", "none", "-U", "none"],
            ),
            (
                "ipv4 host ip",
                vec![mapping(Some("127.0.0.1"), Some((8000, 8010)), (80, 90), PortProto::Tcp)],
                vec!["-t", "127.0.0.1/8000-8010:80-90", "-u", "none", "-T", "none", "-U", "none"],
            ),
            (
                "ipv6 host ip",
                vec![mapping(Some("::1"), Some((8080, 8080)), (80, 80), PortProto::Tcp)],
                vec!["-t", "::1/8080:80", "-u", "none", "-T", "none", "-U", "none"],
            ),
        ];
        for (name, ports, middle) in cases {
            assert_eq!(argv(&rootless(ports)), expected(&middle), "case: {name}");
        }
    }

    #[test]
    fn host_loopback_ports_are_sorted_deduplicated_and_joined() {
        let plan = PastaPlan { host_loopback_ports: vec![6379, 5432, 6379], ..rootless(vec![]) };

        let expect = expected(&["-t", "none", "-u", "none", "-T", "5432,6379", "-U", "5432,6379"]);
        assert_eq!(argv(&plan), expect);
    }

    #[test]
    fn root_plan_has_no_userns_and_runs_as_given_uid() {
        let plan = PastaPlan {
            target: NsTarget { netns: "/run/netns/pelagos-x".into(), userns: None },
            runas: Some(0),
            ..rootless(vec![tcp(8080, 80)])
        };

        let expect = [
            "--config-net",
            "--foreground",
            "--stderr",
            "--no-map-gw",
            "-t",
            "8080:80",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "--netns",
            "/run/netns/pelagos-x",
            "--runas",
            "0",
        ];
        assert_eq!(argv(&plan), expect);
    }

    #[test]
    fn dns_forward_address_comes_before_the_namespace_options() {
        let plan = PastaPlan { dns_forward: Some(std::net::Ipv4Addr::new(169, 254, 1, 1)), ..rootless(vec![]) };

        let expect =
            expected(&["-t", "none", "-u", "none", "-T", "none", "-U", "none", "--dns-forward", "169.254.1.1"]);
        assert_eq!(argv(&plan), expect);
    }

    #[test]
    fn unresolved_host_port_is_an_error_naming_the_mapping() {
        let ephemeral = mapping(Some("127.0.0.1"), None, (80, 80), PortProto::Tcp);

        let err = build_argv(&rootless(vec![tcp(8080, 80), ephemeral.clone()])).unwrap_err();

        assert_eq!(err, ArgsError::UnresolvedHostPort { mapping: ephemeral });
        assert_eq!(
            err.to_string(),
            "port mapping 127.0.0.1::80/tcp has no host port; resolve it before starting pasta"
        );
    }

    #[test]
    fn mismatched_range_lengths_are_rejected() {
        let bad = mapping(Some("::1"), Some((8000, 8001)), (80, 90), PortProto::Udp);

        let err = build_argv(&rootless(vec![bad])).unwrap_err();

        assert_eq!(err.to_string(), "port mapping [::1]:8000-8001:80-90/udp maps 2 host ports to 11 container ports");
    }

    /// Regression: pasta's default mapped the gateway address to the host's
    /// loopback, so every service on the host's 127.0.0.1 was reachable
    /// from inside without `--host-port`.
    #[test]
    fn every_argv_keeps_the_host_loopback_unmapped_with_an_option_debians_build_has() {
        let debian = crate::helpers::pasta::features::parse_help(include_str!(
            "../../../tests/fixtures/pasta-help-2023-03-09.txt"
        ));
        let root = PastaPlan { target: NsTarget { netns: "/run/netns/x".into(), userns: None }, ..rootless(vec![]) };
        for plan in [rootless(vec![]), rootless(vec![tcp(8080, 80)]), root] {
            let argv = argv(&plan);
            assert_eq!(argv.iter().filter(|a| *a == NO_MAP_GW).count(), 1, "{argv:?}");
        }
        assert!(debian.contains(NO_MAP_GW));
    }

    #[test]
    fn loopback_port_zero_is_rejected() {
        let plan = PastaPlan { host_loopback_ports: vec![0], ..rootless(vec![]) };

        assert_eq!(build_argv(&plan), Err(ArgsError::ZeroLoopbackPort));
    }

    #[test]
    fn non_utf8_namespace_path_is_passed_through_unchanged() {
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"/run/netns/\xffodd");
        let plan = PastaPlan { target: NsTarget { netns: odd.into(), userns: None }, ..rootless(vec![]) };

        let argv = build_argv(&plan).unwrap();

        assert_eq!(argv[argv.len() - 1], odd);
    }
}
