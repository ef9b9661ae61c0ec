//! The name-resolution part of `doctor`: what kind of resolver the host
//! has, and what each mode does with it. Pure over the host's files (read
//! by the caller) and its probed capabilities.

use super::decide::{DnsRequest, HostDns, ModeDns, decide};
use super::host::HostFiles;
use super::options::DnsOptions;
use super::resolvconf::ResolverKind;
use crate::host::probe::HostCaps;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;

/// The default bridge network's gateway, which `doctor` describes.
const DEFAULT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);

/// What one mode does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeResolver {
    /// The mode's name.
    pub mode: &'static str,
    /// The resolver its commands use.
    pub resolver: String,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsDoctor {
    /// The host's resolver kind.
    pub kind: ResolverKind,
    /// One line about the host's resolv.conf.
    pub resolv_conf: String,
    /// What each mode does.
    pub modes: Vec<ModeResolver>,
}

/// Diagnose: `files` read from `etc`.
pub fn diagnose(files: &HostFiles, etc: &Path, caps: &HostCaps) -> DnsDoctor {
    let tcp_mapped = caps.pasta.features().is_some_and(|f| f.features.maps_tcp_dns());
    let modes = [
        ("pasta", ModeDns::Pasta { tcp_mapped }),
        ("slirp4netns", ModeDns::Slirp4netns),
        ("bridge", ModeDns::Bridge { gateway: DEFAULT_GATEWAY, listening: true }),
        ("loopback", ModeDns::Loopback),
        ("host", ModeDns::Host),
    ];
    let options = DnsOptions { cache: super::options::DnsCache::from_env(), ..DnsOptions::default() };
    let host = HostDns { resolv: files.resolv.conf(), hosts: files.hosts.as_deref(), address: None, alias: None };
    let modes = modes
        .into_iter()
        .map(|(mode, m)| {
            let resolver = decide(&DnsRequest { mode: m, host, options: &options, own: None })
                .map_or_else(|e| e.to_string(), |p| p.resolver.to_string());
            ModeResolver { mode, resolver }
        })
        .collect();
    DnsDoctor { kind: files.resolv.kind(), resolv_conf: files.resolv.describe(&etc.join("resolv.conf")), modes }
}

/// The text `doctor` prints.
pub fn render(d: &DnsDoctor) -> String {
    let tag = match d.kind {
        ResolverKind::Plain | ResolverKind::StubOnLoopback => "ok  ",
        ResolverKind::NoNameserver | ResolverKind::Missing => "WARN",
    };
    let mut s = format!("\nname resolution:\n[{tag}] resolver: {}\n", d.resolv_conf);
    if matches!(d.kind, ResolverKind::NoNameserver | ResolverKind::Missing) {
        s.push_str("       fix: give runs a resolver with --dns IP, or configure one in /etc/resolv.conf\n");
    }
    for m in &d.modes {
        s.push_str(&format!("  {:<12} {}\n", m.mode, m.resolver));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::test_hosts::rootless;

    #[test]
    fn a_stub_host_is_reported_with_what_each_mode_does() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
        let d = diagnose(&HostFiles::read(dir.path()), dir.path(), &rootless());
        assert_eq!(d.kind, ResolverKind::StubOnLoopback);
        let text = render(&d);
        assert!(
            text.contains("[ok  ] resolver: ") && text.contains("a stub resolver on the host's loopback"),
            "{text}"
        );
        for mode in ["pasta       ", "slirp4netns "] {
            let line = format!("{mode} 169.254.1.1, a forwarder of pelagos-net inside the namespace, to 127.0.0.53");
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.contains("bridge       10.90.0.1, a forwarder of pelagos-net on the network's gateway"), "{text}");
        assert!(text.contains("loopback     none: loopback mode has no network"), "{text}");
    }

    #[test]
    fn a_host_without_resolv_conf_gets_a_warning_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = diagnose(&HostFiles::read(dir.path()), dir.path(), &rootless());
        let text = render(&d);
        assert!(text.contains("[WARN] resolver: ") && text.contains("missing; no resolver is configured"), "{text}");
        assert!(text.contains("fix: give runs a resolver with --dns IP"), "{text}");
        assert!(text.contains("pasta        none: no resolver is configured"), "{text}");
    }
}
