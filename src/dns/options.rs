//! The DNS options of a run, as podman spells them: `--dns IP`,
//! `--dns-search DOMAIN`, `--dns-option OPT`, `--add-host NAME:IP`.
//!
//! Pure: strings in, validated values out. Every rejection names the value
//! as the user typed it, so the error line alone says what to fix. Nothing
//! here knows about modes; [`super::decide`](mod@super::decide) puts the values to use.

use std::fmt;
use std::net::IpAddr;

/// What `--add-host NAME:host-gateway` stands for: the address at which the
/// host is reachable from the run (it depends on the mode; see
/// [`super::decide`](mod@super::decide)).
pub const HOST_GATEWAY: &str = "host-gateway";

/// Longest domain name (RFC 1035: 253 characters in text form).
const MAX_NAME_LEN: usize = 253;
/// Longest label of a name.
const MAX_LABEL_LEN: usize = 63;

/// Why a DNS option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsOptionError {
    /// `--dns` with something that is not an IP address.
    #[error("--dns {value:?}: not an IP address")]
    BadServer {
        /// The value as given.
        value: String,
    },
    /// `--dns 0.0.0.0` or `--dns ::` (or a multicast address).
    #[error("--dns {value}: not a usable resolver address")]
    UnusableServer {
        /// The value as given.
        value: String,
    },
    /// `--dns-search` with an invalid domain.
    #[error("--dns-search {value:?}: {why}")]
    BadSearch {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--dns-option` with whitespace, a control character or nothing.
    #[error("--dns-option {value:?}: {why}")]
    BadOption {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--add-host` without the `:` between names and address.
    #[error("--add-host {value:?}: expected NAME:IP or NAME:host-gateway")]
    AddHostNoColon {
        /// The value as given.
        value: String,
    },
    /// `--add-host` with an address that is neither an IP nor `host-gateway`.
    #[error("--add-host {value:?}: {address:?} is not an IP address or host-gateway")]
    AddHostBadAddress {
        /// The value as given.
        value: String,
        /// The address part.
        address: String,
    },
    /// `--add-host` with an invalid host name.
    #[error("--add-host {value:?}: {name:?} is not a valid host name ({why})")]
    AddHostBadName {
        /// The value as given.
        value: String,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The address an `--add-host` entry maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostTarget {
    /// A literal address.
    Ip(IpAddr),
    /// The host as seen from the run (`host-gateway`).
    HostGateway,
}

impl fmt::Display for HostTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::HostGateway => f.write_str(HOST_GATEWAY),
        }
    }
}

/// One `--add-host`: one or more names (`a;b:IP`, as podman) for an address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddHost {
    /// The names, in the order given.
    pub names: Vec<String>,
    /// The address.
    pub target: HostTarget,
}

/// The DNS options of one run. Empty (the default) means: the mode's own
/// resolver, the host's search domains and options, the host's hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsOptions {
    /// `--dns`: these resolvers replace the host's, in order.
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    /// `--dns-search`: `None` keeps the host's search list; `Some(empty)`
    /// (from `--dns-search .`) clears it.
    #[serde(default)]
    pub search: Option<Vec<String>>,
    /// `--dns-option`: `None` keeps the host's options.
    #[serde(default)]
    pub options: Option<Vec<String>>,
    /// `--add-host` entries, in order.
    #[serde(default)]
    pub add_hosts: Vec<AddHost>,
    /// The answer cache (`PELAGOS_DNS_CACHE`; see [`DnsCache`]).
    #[serde(default)]
    pub cache: DnsCache,
}

/// Where answers are cached, and who forwards a pasta or slirp4netns
/// run's queries (`PELAGOS_DNS_CACHE`: unset, `on` or `inside`; `helper`;
/// `off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsCache {
    /// Every forwarder of pelagos-net keeps answers (a bridge network's
    /// gateway, a rootless network's name server), and pasta and
    /// slirp4netns runs get pelagos-net's caching forwarder inside the
    /// namespace instead of the mode's own: a repeated query is answered
    /// inside the namespace, and TCP works on every pasta build. Its
    /// sockets are opened by the namespace child, which exists anyway, so
    /// it adds a thread and no process to start-up.
    #[default]
    #[serde(alias = "inside")]
    On,
    /// As `On` on networks' gateways, but pasta and slirp4netns runs use
    /// the mode's own forwarder (pasta's `--dns-forward`, libslirp's
    /// `10.0.2.3`), which keeps nothing: one thread fewer per run.
    Helper,
    /// No forwarder keeps answers; pasta and slirp4netns runs use the
    /// mode's own forwarder.
    Off,
}

impl DnsCache {
    /// The policy a `PELAGOS_DNS_CACHE` value names (`0`, `off`, `no`,
    /// `false`: off; `helper`; anything else, `inside` included, or
    /// unset: on).
    pub fn from_setting(value: Option<&str>) -> Self {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("helper") => Self::Helper,
            Some("0" | "off" | "no" | "false") => Self::Off,
            _ => Self::On,
        }
    }

    /// The policy of this process's `PELAGOS_DNS_CACHE`.
    pub fn from_env() -> Self {
        Self::from_setting(std::env::var(crate::dns::forwarder::CACHE_ENV).ok().as_deref())
    }

    /// Whether pelagos-net's forwarders keep answers.
    pub fn keeps_answers(self) -> bool {
        self != Self::Off
    }

    /// Whether a pasta or slirp4netns run's queries go through
    /// pelagos-net's forwarder inside the namespace rather than the mode's own.
    pub fn forwards_inside(self) -> bool {
        self == Self::On
    }
}

impl DnsOptions {
    /// Validate the option values as typed, in their order on the command line.
    pub fn parse(
        servers: &[String],
        search: &[String],
        options: &[String],
        add_hosts: &[String],
    ) -> Result<Self, DnsOptionError> {
        let servers = servers.iter().map(|s| parse_server(s)).collect::<Result<_, _>>()?;
        let search = if search.is_empty() {
            None
        } else {
            let mut domains = Vec::new();
            for s in search {
                if let Some(d) = parse_search(s)? {
                    domains.push(d);
                }
            }
            Some(domains)
        };
        let options = if options.is_empty() {
            None
        } else {
            Some(options.iter().map(|o| parse_option(o)).collect::<Result<_, _>>()?)
        };
        let add_hosts = add_hosts.iter().map(|h| parse_add_host(h)).collect::<Result<_, _>>()?;
        Ok(Self { servers, search, options, add_hosts, cache: DnsCache::On })
    }

    /// True when the run asks for nothing DNS-related.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_none() && self.options.is_none() && self.add_hosts.is_empty()
    }

    /// True when an option changes resolv.conf (as opposed to only /etc/hosts).
    pub fn touches_resolv_conf(&self) -> bool {
        !self.servers.is_empty() || self.search.is_some() || self.options.is_some()
    }
}

/// `--dns IP`.
pub fn parse_server(value: &str) -> Result<IpAddr, DnsOptionError> {
    let ip: IpAddr = value.trim().parse().map_err(|_| DnsOptionError::BadServer { value: value.to_owned() })?;
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return Err(DnsOptionError::UnusableServer { value: value.to_owned() });
    }
    Ok(ip)
}

/// `--dns-search DOMAIN`; `.` means "no search domains" (`Ok(None)`).
pub fn parse_search(value: &str) -> Result<Option<String>, DnsOptionError> {
    if value == "." {
        return Ok(None);
    }
    let bad = |why| DnsOptionError::BadSearch { value: value.to_owned(), why };
    let domain = value.strip_suffix('.').unwrap_or(value);
    check_name(domain).map_err(bad)?;
    Ok(Some(domain.to_owned()))
}

/// `--dns-option OPT` (e.g. `ndots:2`, `edns0`): one word of printable
/// characters, since resolv.conf separates options by blanks and lines.
pub fn parse_option(value: &str) -> Result<String, DnsOptionError> {
    let bad = |why| DnsOptionError::BadOption { value: value.to_owned(), why };
    if value.is_empty() {
        return Err(bad("empty"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(bad("contains a control character (a newline would start a new resolv.conf line)"));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(bad("contains whitespace; give one option per --dns-option"));
    }
    Ok(value.to_owned())
}

/// `--add-host NAME[;NAME...]:IP`, `NAME:[IPv6]` or `NAME:host-gateway`.
/// The first `:` separates names from the address (names hold no `:`), so
/// `h:2001:db8::1` works as with docker.
pub fn parse_add_host(value: &str) -> Result<AddHost, DnsOptionError> {
    let (names, address) =
        value.split_once(':').ok_or_else(|| DnsOptionError::AddHostNoColon { value: value.to_owned() })?;
    let target = if address == HOST_GATEWAY {
        HostTarget::HostGateway
    } else {
        let bare = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(address);
        let ip: IpAddr = bare
            .parse()
            .map_err(|_| DnsOptionError::AddHostBadAddress { value: value.to_owned(), address: address.to_owned() })?;
        HostTarget::Ip(ip)
    };
    let mut out = Vec::new();
    for name in names.split(';') {
        check_name(name).map_err(|why| DnsOptionError::AddHostBadName {
            value: value.to_owned(),
            name: name.to_owned(),
            why,
        })?;
        out.push(name.to_owned());
    }
    Ok(AddHost { names: out, target })
}

/// A host or domain name: letters, digits, `-`, `_` and dots, labels of
/// 1 to 63 characters, at most 253 in all, no label starting with `-`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("a label is longer than 63 characters");
        }
        if label.starts_with('-') {
            return Err("a label starts with '-'");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn podman_spellings_parse() {
        let o = DnsOptions::parse(
            &s(&["1.1.1.1", "127.0.0.2", "fd00::53"]),
            &s(&["example.test", "corp.example."]),
            &s(&["ndots:2", "edns0"]),
            &s(&["db:10.0.0.5", "a;b:[fd00::1]", "v6:2001:db8::1", "host:host-gateway"]),
        )
        .unwrap();
        assert_eq!(o.servers.len(), 3);
        assert_eq!(o.search, Some(s(&["example.test", "corp.example"])));
        assert_eq!(o.options, Some(s(&["ndots:2", "edns0"])));
        assert_eq!(
            o.add_hosts[1],
            AddHost { names: s(&["a", "b"]), target: HostTarget::Ip("fd00::1".parse().unwrap()) }
        );
        assert_eq!(o.add_hosts[2].target, HostTarget::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(o.add_hosts[3].target, HostTarget::HostGateway);
        assert!(!o.is_empty() && o.touches_resolv_conf());
    }

    #[test]
    fn dns_search_dot_clears_the_search_list() {
        let o = DnsOptions::parse(&[], &s(&["."]), &[], &[]).unwrap();
        assert_eq!(o.search, Some(vec![]));
        assert!(DnsOptions::parse(&[], &[], &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let err = |servers: &[&str], search: &[&str], opts: &[&str], hosts: &[&str]| {
            DnsOptions::parse(&s(servers), &s(search), &s(opts), &s(hosts)).unwrap_err().to_string()
        };
        assert_eq!(err(&["not-an-ip"], &[], &[], &[]), "--dns \"not-an-ip\": not an IP address");
        assert_eq!(err(&["0.0.0.0"], &[], &[], &[]), "--dns 0.0.0.0: not a usable resolver address");
        assert_eq!(
            err(&[], &[], &["ndots:1\nnameserver 6.6.6.6"], &[]),
            "--dns-option \"ndots:1\\nnameserver 6.6.6.6\": contains a control character (a newline would start a \
             new resolv.conf line)"
        );
        assert!(err(&[], &[], &["a b"], &[]).contains("whitespace"));
        assert_eq!(err(&[], &[], &[], &["nocolon"]), "--add-host \"nocolon\": expected NAME:IP or NAME:host-gateway");
        assert_eq!(
            err(&[], &[], &[], &["db:10.0.0.300"]),
            "--add-host \"db:10.0.0.300\": \"10.0.0.300\" is not an IP address or host-gateway"
        );
        assert!(err(&[], &[], &[], &["bad name:1.2.3.4"]).contains("\"bad name\" is not a valid host name"));
        assert!(err(&[], &[], &[], &[":1.2.3.4"]).contains("empty"));
        assert!(err(&[], &["exa mple"], &[], &[]).starts_with("--dns-search \"exa mple\""));
        assert!(err(&[], &["-bad.test"], &[], &[]).contains("starts with '-'"));
    }

    #[test]
    fn names_longer_than_dns_allows_are_refused() {
        let label = "a".repeat(64);
        assert!(parse_add_host(&format!("{label}:1.2.3.4")).is_err());
        let long = vec!["a".repeat(63); 5].join(".");
        assert!(parse_search(&long).is_err());
        assert!(parse_search(&"a".repeat(63)).is_ok());
    }
}
