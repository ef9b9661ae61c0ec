//! The per-namespace sysctls the bridge NAT rules rely on.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so these act on the caller's namespace, like the firewall itself.
//! The proc root is a parameter (design: nothing global), `/proc` in
//! production, a temporary directory in unit tests.

use std::fs;
use std::path::{Path, PathBuf};

use super::FirewallError;

/// Turns on IPv4 forwarding (`<proc_root>/sys/net/ipv4/ip_forward`), without
/// which nothing is routed between the bridge and the uplink.
pub fn enable_ip_forward(proc_root: &Path) -> Result<(), FirewallError> {
    write_one(proc_root.join("sys/net/ipv4/ip_forward"))
}

/// Turns on IPv6 forwarding (`<proc_root>/sys/net/ipv6/conf/all/forwarding`)
/// for dual-stack networks. As with docker, a host that takes its own IPv6
/// default route from router advertisements then needs `accept_ra=2` on that
/// interface, since a forwarding host ignores them otherwise.
pub fn enable_ipv6_forward(proc_root: &Path) -> Result<(), FirewallError> {
    write_one(proc_root.join("sys/net/ipv6/conf/all/forwarding"))
}

/// Lets the kernel route packets with a loopback source out of `bridge`
/// (`<proc_root>/sys/net/ipv4/conf/<bridge>/route_localnet`), which a
/// published port reached at `127.0.0.1` needs: after DNAT such a packet
/// still has source `127.0.0.1` until `postrouting` rewrites it.
pub fn enable_route_localnet(proc_root: &Path, bridge: &str) -> Result<(), FirewallError> {
    write_one(proc_root.join("sys/net/ipv4/conf").join(bridge).join("route_localnet"))
}

fn write_one(path: PathBuf) -> Result<(), FirewallError> {
    // Writing an unchanged value is harmless; skip it anyway so a read-only
    // /proc/sys that is already right is not an error.
    if is_on(&path) {
        return Ok(());
    }
    fs::write(&path, "1\n").map_err(|source| FirewallError::WriteSysctl { path, source })
}

/// Whether the sysctl at `path` reads `1`: one `read` into a buffer on the
/// stack (a sysctl answers its whole value at once; `fs::read_to_string`
/// would add an `fstat` and a read to see the end).
fn is_on(path: &Path) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 16];
    let Ok(n) = fs::File::open(path).and_then(|mut f| f.read(&mut buf)) else { return false };
    buf[..n].trim_ascii() == b"1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_route_localnet_writes_the_bridge_knob() {
        let proc = tempfile::tempdir().unwrap();
        let dir = proc.path().join("sys/net/ipv4/conf/br0");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("route_localnet"), "0\n").unwrap();
        enable_route_localnet(proc.path(), "br0").unwrap();
        assert_eq!(fs::read_to_string(dir.join("route_localnet")).unwrap(), "1\n");
    }

    #[test]
    fn enable_ip_forward_writes_the_knob() {
        let proc = tempfile::tempdir().unwrap();
        fs::create_dir_all(proc.path().join("sys/net/ipv4")).unwrap();
        fs::write(proc.path().join("sys/net/ipv4/ip_forward"), "0\n").unwrap();
        enable_ip_forward(proc.path()).unwrap();
        assert_eq!(fs::read_to_string(proc.path().join("sys/net/ipv4/ip_forward")).unwrap(), "1\n");
    }

    #[test]
    fn enable_route_localnet_for_missing_bridge_names_the_path() {
        let proc = tempfile::tempdir().unwrap();
        let err = enable_route_localnet(proc.path(), "nosuchbr").unwrap_err();
        let FirewallError::WriteSysctl { path, .. } = &err else { panic!("{err:?}") };
        assert!(path.ends_with("conf/nosuchbr/route_localnet"), "{}", path.display());
    }
}
