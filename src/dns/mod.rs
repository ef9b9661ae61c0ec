//! Name resolution for a run: which resolver its command asks, the
//! resolv.conf and /etc/hosts it sees, and the forwarder pelagos-net runs
//! where a mode has none of its own.
//!
//! Why this exists: a new network namespace inherits the host's
//! `/etc/resolv.conf`, and on hosts with systemd-resolved that file says
//! `nameserver 127.0.0.53`, the host's loopback, which the namespace cannot
//! reach. So every networked run gets files of its own:
//!
//! - [`decide`](mod@decide) (pure) picks the resolver per mode and writes the files'
//!   text; [`options`] validates `--dns`, `--dns-search`, `--dns-option` and
//!   `--add-host`; [`resolvconf`] and [`hosts`] read and write the formats.
//! - [`inside`] gives the command a private mount namespace in which the
//!   generated files are mounted over `/etc/resolv.conf` and `/etc/hosts`
//!   (on the path itself, so a symlink, a chain or a dangling link works).
//!   The host's files are never written.
//! - [`forwarder`] is a small non-blocking resolver (UDP and TCP) with a
//!   pluggable table of local names, forwarding everything else to the
//!   host's resolvers, stubs on the host's loopback included.
//! - [`host`] reads the host's files.
//!
//! A runtime with its own root filesystem does not need the mounts: it
//! calls [`files_for`] and writes [`DnsPlan::resolv_conf`] and
//! [`DnsPlan::hosts`] into its rootfs.

pub mod decide;
pub mod doctor;
pub mod forwarder;
pub mod host;
pub mod hosts;
pub mod inside;
pub mod names;
pub mod options;
pub mod proto;
pub mod resolvconf;
pub mod setup;

pub use decide::{DecideError, DnsPlan, DnsRequest, HostDns, ModeDns, Resolver, decide};
pub use options::{DnsOptionError, DnsOptions};
pub use setup::{DnsSetupError, DnsSetupRequest, PreparedDns, prepare};

use std::path::Path;

/// The plan for a run in `mode` on this host: the host's files are read
/// from `etc` (normally `/etc`).
///
/// With the default policy ([`DnsCache::On`](options::DnsCache::On)) a
/// pasta or slirp4netns plan names a forwarder of pelagos-net inside the
/// namespace ([`DnsPlan::forwarder`]), which only a run pelagos-net starts
/// provides; a runtime that starts pasta or slirp4netns itself asks for
/// [`DnsCache::Helper`](options::DnsCache::Helper), whose resolver is the
/// helper's own forwarder ([`DnsPlan::pasta_forward`] for pasta).
///
/// ```no_run
/// use pelagos_net::dns::{DnsOptions, ModeDns, files_for};
/// let opts = DnsOptions::parse(&["10.0.0.53".into()], &[], &[], &["db:10.88.0.5".into()]).unwrap();
/// let plan = files_for(ModeDns::Slirp4netns, &opts, None, std::path::Path::new("/etc")).unwrap();
/// if let Some(text) = &plan.resolv_conf {
///     // write `text` to <rootfs>/etc/resolv.conf
/// }
/// ```
pub fn files_for(
    mode: ModeDns,
    options: &DnsOptions,
    own: Option<&hosts::HostsEntry>,
    etc: &Path,
) -> Result<DnsPlan, DecideError> {
    // Not read when unused: a loopback run's start-up.
    if !decide::uses_host_files(mode, options) {
        let host = HostDns { resolv: None, hosts: None, address: None, alias: None };
        return decide(&DnsRequest { mode, host, options, own });
    }
    let files = host::HostFiles::read(etc);
    let address = match mode {
        ModeDns::Slirp4netns => host::default_source_address(),
        _ => None,
    };
    let host = HostDns { resolv: files.resolv.conf(), hosts: files.hosts.as_deref(), address, alias: None };
    decide(&DnsRequest { mode, host, options, own })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_with_its_own_rootfs_gets_the_files_contents() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(etc.path().join("resolv.conf"), "nameserver 127.0.0.53\nsearch corp.test\n").unwrap();
        std::fs::write(etc.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let mut opts = DnsOptions::parse(&[], &[], &[], &["db:10.88.0.5".into()]).unwrap();
        // The runtime starts pasta itself: pasta's own forwarder.
        opts.cache = options::DnsCache::Helper;
        let own = hosts::HostsEntry { ip: "10.88.0.7".parse().unwrap(), names: vec!["web".into()] };

        let plan = files_for(ModeDns::Pasta { tcp_mapped: false }, &opts, Some(&own), etc.path()).unwrap();

        let resolv = plan.resolv_conf.unwrap();
        assert!(resolv.contains("nameserver 169.254.1.1\nsearch corp.test\n"), "{resolv}");
        let hosts = plan.hosts.unwrap();
        assert!(hosts.contains("10.88.0.5\tdb\n127.0.0.1 localhost\n"), "{hosts}");
        assert!(hosts.contains("10.88.0.7\tweb\n127.0.0.1\thost.pelagos.internal"), "{hosts}");
        assert_eq!(plan.pasta_forward, Some(decide::FORWARD_ADDR));
    }
}
