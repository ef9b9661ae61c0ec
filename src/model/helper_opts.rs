//! Extra options for the network helper, as podman takes them:
//! `--network pasta:OPTS` (pasta's own options, comma-separated, e.g.
//! `pasta:--mtu,1500` or `pasta:-4`) and `--network slirp4netns:OPTS`
//! (podman's `KEY=VALUE` list, e.g. `slirp4netns:mtu=1500,enable_ipv6=true`).
//!
//! Checked against what pelagos-net pins: an option that would undo a pinned
//! choice (the forwarding specs, the target namespace, foreground and stderr
//! logging, the gateway-to-host-loopback mapping) is refused naming the
//! flag to use instead. Pure.

use std::net::IpAddr;

/// Why helper options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperOptsError {
    /// `pasta:` or `slirp4netns:` with nothing after it.
    // Only the command line's `--network helper:OPTS` parser meets it.
    #[error("'{helper}:' needs options after the colon (or use --network {helper})")]
    Empty {
        /// The helper.
        helper: &'static str,
    },
    /// A pasta option pelagos-net sets itself.
    #[error("pasta option {option} is set by pelagos-net")]
    PastaPinned {
        /// The option as given.
        option: String,
        /// What to use instead.
        hint: Option<&'static str>,
    },
    /// A pasta value with no option before it.
    #[error("'{value}' in pasta options is not an option (options start with '-'; each takes at most one value)")]
    PastaStray {
        /// The token.
        value: String,
    },
    /// A slirp4netns item that is not `KEY=VALUE`, or a key we do not know.
    #[error("slirp4netns option '{item}' is unknown (supported: {})", SLIRP_KEYS.join(", "))]
    SlirpUnknown {
        /// The item as given.
        item: String,
    },
    /// A slirp4netns key pelagos-net sets itself.
    #[error("slirp4netns option '{key}' is set by pelagos-net: {why}")]
    SlirpPinned {
        /// The key.
        key: String,
        /// Why.
        why: &'static str,
        /// What to use instead.
        hint: Option<&'static str>,
    },
    /// A slirp4netns value of the wrong kind.
    #[error("slirp4netns option '{item}': {why}")]
    SlirpBadValue {
        /// The item as given.
        item: String,
        /// What was expected.
        why: &'static str,
    },
}

impl HelperOptsError {
    /// What to use instead, in the command line's terms.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::PastaPinned { hint, .. } | Self::SlirpPinned { hint, .. } => hint.map(|h| format!("use {h}")),
            _ => None,
        }
    }
}

/// pasta options pelagos-net pins, each with what to use instead (if any).
const PASTA_PINNED: &[(&[&str], Option<&str>)] = &[
    (&["-t", "--tcp-ports", "-u", "--udp-ports"], Some("`-p/--publish`")),
    (&["-T", "--tcp-ns"], Some("`--host-port`")),
    (&["-U", "--udp-ns"], None),
    (&["--config-net", "-f", "--foreground", "-e", "--stderr", "-l", "--log-file", "-q", "--quiet"], None),
    (&["--netns", "--userns", "--netns-only", "--runas", "-P", "--pid", "-F", "--fd", "-s", "--socket"], None),
    (&["--no-map-gw", "--map-gw", "--map-host-loopback", "--map-guest-addr"], Some("`--host-port`")),
    (&["--dns-forward"], Some("`--dns`")),
    (&["-h", "--help", "--version"], None),
];

/// Split `OPTS` of `helper:OPTS` on commas.
pub fn split(helper: &'static str, opts: &str) -> Result<Vec<String>, HelperOptsError> {
    let items: Vec<String> = opts.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if items.is_empty() {
        return Err(HelperOptsError::Empty { helper });
    }
    Ok(items)
}

/// Check pasta options (argv tokens) against what pelagos-net pins.
pub fn check_pasta(tokens: &[String]) -> Result<(), HelperOptsError> {
    let mut value_allowed = false;
    for token in tokens {
        if !token.starts_with('-') || token == "-" {
            if !value_allowed {
                return Err(HelperOptsError::PastaStray { value: token.clone() });
            }
            value_allowed = false;
            continue;
        }
        let name = token.split_once('=').map_or(token.as_str(), |(n, _)| n);
        // A cluster of short flags (`-46`) is checked flag by flag.
        let names: Vec<String> = if name.starts_with("--") {
            vec![name.to_owned()]
        } else {
            name.chars().skip(1).map(|c| format!("-{c}")).collect()
        };
        for n in &names {
            if let Some((_, hint)) = PASTA_PINNED.iter().find(|(set, _)| set.contains(&n.as_str())) {
                return Err(HelperOptsError::PastaPinned { option: n.clone(), hint: *hint });
            }
        }
        value_allowed = !token.contains('=');
    }
    Ok(())
}

/// podman's slirp4netns keys that pelagos-net supports.
pub const SLIRP_KEYS: &[&str] =
    &["mtu", "enable_ipv6", "outbound_addr", "outbound_addr6", "enable_sandbox", "enable_seccomp"];

/// slirp4netns options as pelagos-net applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlirpOptions {
    /// `mtu=N`: the tap device's MTU instead of 65520.
    pub mtu: Option<u32>,
    /// Further slirp4netns flags (`--enable-ipv6`, `--outbound-addr=IP`, ...).
    pub args: Vec<String>,
}

fn parse_bool(item: &str, value: &str) -> Result<bool, HelperOptsError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(HelperOptsError::SlirpBadValue { item: item.to_owned(), why: "expected true or false" }),
    }
}

/// podman's `KEY=VALUE` slirp4netns options as flags, refusing what
/// pelagos-net pins.
pub fn slirp(items: &[String]) -> Result<SlirpOptions, HelperOptsError> {
    let mut out = SlirpOptions::default();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(HelperOptsError::SlirpUnknown { item: item.clone() });
        };
        let flag = |on: bool, flag: &str| on.then(|| flag.to_owned());
        let pinned = |why, hint| Err(HelperOptsError::SlirpPinned { key: key.to_owned(), why, hint });
        let arg = match key {
            "mtu" => {
                let mtu: u32 = value
                    .parse()
                    .map_err(|_| HelperOptsError::SlirpBadValue { item: item.clone(), why: "expected a number" })?;
                if !(68..=65521).contains(&mtu) {
                    return Err(HelperOptsError::SlirpBadValue { item: item.clone(), why: "expected 68 to 65521" });
                }
                out.mtu = Some(mtu);
                None
            }
            "enable_ipv6" => flag(parse_bool(item, value)?, "--enable-ipv6"),
            "enable_sandbox" => flag(parse_bool(item, value)?, "--enable-sandbox"),
            "enable_seccomp" => flag(parse_bool(item, value)?, "--enable-seccomp"),
            "outbound_addr" | "outbound_addr6" => {
                value.parse::<IpAddr>().map_err(|_| HelperOptsError::SlirpBadValue {
                    item: item.clone(),
                    why: "expected an IP address",
                })?;
                Some(format!("--{}={value}", key.replace('_', "-")))
            }
            "allow_host_loopback" => {
                return pinned("the host's loopback stays private", Some("`--host-port` with pasta"));
            }
            "port_handler" => return pinned("the port driver forwards published ports", Some("`--port-driver`")),
            "cidr" => return pinned("the namespace is 10.0.2.0/24, which readiness and forwards rely on", None),
            _ => return Err(HelperOptsError::SlirpUnknown { item: item.clone() }),
        };
        out.args.extend(arg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pasta_options_pass_unless_pinned() {
        for ok in [&["--mtu", "1500"][..], &["-4"], &["--mtu=1500", "-4", "--dns", "192.0.2.1"], &["-46"]] {
            assert_eq!(check_pasta(&v(ok)), Ok(()), "{ok:?}");
        }
        let err = check_pasta(&v(&["-t", "80"])).unwrap_err().to_string();
        assert_eq!(err, "pasta option -t is set by pelagos-net");
        let err = check_pasta(&v(&["-t", "80"])).unwrap_err();
        assert_eq!(err.hint().as_deref(), Some("use `-p/--publish`"));
        let err = check_pasta(&v(&["--map-gw"])).unwrap_err();
        assert!(err.to_string().contains("--map-gw") && err.hint().unwrap().contains("--host-port"), "{err}");
        assert!(check_pasta(&v(&["-4f"])).unwrap_err().to_string().contains("option -f"));
        assert!(check_pasta(&v(&["--netns=/x"])).unwrap_err().to_string().contains("--netns"));
        let err = check_pasta(&v(&["--mtu", "1500", "sh"])).unwrap_err().to_string();
        assert!(err.contains("'sh'") && err.contains("not an option"), "{err}");
        assert!(check_pasta(&v(&["1500"])).is_err());
    }

    #[test]
    fn slirp_options_follow_podman_keys() {
        let opts =
            slirp(&v(&["mtu=1500", "enable_ipv6=true", "outbound_addr=192.0.2.7", "enable_sandbox=false"])).unwrap();
        assert_eq!(opts.mtu, Some(1500));
        assert_eq!(opts.args, ["--enable-ipv6", "--outbound-addr=192.0.2.7"]);
        for (bad, want) in [
            ("allow_host_loopback=true", "set by pelagos-net"),
            ("port_handler=slirp4netns", "port driver"),
            ("cidr=10.1.0.0/24", "10.0.2.0/24"),
            ("mtu=big", "expected a number"),
            ("mtu=65522", "68 to 65521"),
            ("enable_ipv6=yes", "true or false"),
            ("outbound_addr=eth0", "IP address"),
            ("frob=1", "unknown (supported: mtu"),
            ("mtu", "unknown"),
        ] {
            let err = slirp(&v(&[bad])).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn empty_options_are_refused() {
        assert_eq!(split("pasta", ",,"), Err(HelperOptsError::Empty { helper: "pasta" }));
        assert_eq!(split("pasta", "--mtu,1500").unwrap(), ["--mtu", "1500"]);
    }
}
