//! Named networks: persistent definitions (`<config>/networks/<name>.json`)
//! and the default network `pelagos0`.
//!
//! Owns the definition files: validation (names, subnet overlaps with other
//! networks and with what the host already routes), atomic no-clobber
//! creation under a directory lock, loading with errors that name the file.
//! Never touches links or firewall rules (see `bridge`).

use crate::model::cidr::Ipv4Net;
use crate::model::cidr6::Ipv6Net;
use crate::model::ifname::{IfName, NameError, NetworkName};
use crate::model::ipam;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "pelagos0";
/// Bridge of the default network.
pub const BRIDGE_NAME: &str = "pelagos0";
/// Gateway (bridge address) of the default network.
pub const BRIDGE_GW: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// Subnet of the default network. 10.90/16 is chosen to stay clear of
/// docker's 172.17/16 and podman's 10.88/16 defaults.
pub const DEFAULT_SUBNET: &str = "10.90.0.0/24";
/// Pool that subnets of new networks are taken from, one /24 each.
pub const SUBNET_POOL: &str = "10.90.0.0/16";
/// Pool that `--ipv6` takes a /64 from: a unique local /48 of our own
/// (`fd70:656c:6167` spells "pelag"), clear of docker's and podman's.
pub const SUBNET6_POOL: &str = "fd70:656c:6167::/48";

/// A persistent network definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkDef {
    /// Network name.
    pub name: NetworkName,
    /// Subnet containers get addresses from.
    pub subnet: Ipv4Net,
    /// Gateway: the bridge's own address.
    pub gateway: Ipv4Addr,
    /// Bridge interface.
    pub bridge: IfName,
    /// No NAT to the outside (containers reach only each other and the host).
    #[serde(default)]
    pub internal: bool,
    /// Egress is masqueraded behind the host (a network that is not
    /// internal and does not masquerade is routed: its addresses must be
    /// reachable as they are, as in a CNI config with `"ipMasq": false`).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub masquerade: bool,
    /// `network create` options beyond the addresses.
    #[serde(flatten)]
    pub options: NetworkOptions,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// What `network create` records besides subnet, gateway and NAT (podman's
/// `--ipv6` and IPv6 `--subnet`/`--gateway`, `--ip-range`, `-o mtu=N`,
/// `--label`, `--dns`, `--disable-dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NetworkOptions {
    /// Dual stack: the network also has an IPv6 subnet (asked for with
    /// `--ipv6`, which picks a free ULA /64, or with an IPv6 `--subnet`).
    pub ipv6_enabled: bool,
    /// The IPv6 subnet. A container's IPv6 address is the subnet plus its
    /// IPv4 address's offset in the IPv4 subnet (`10.90.3.7` in
    /// `10.90.3.0/24` is `SUBNET6::7`), so the IPv4 lease makes it unique.
    pub subnet6: Option<Ipv6Net>,
    /// The bridge's IPv6 address (default: `SUBNET6::` plus the IPv4
    /// gateway's offset, `::1` usually).
    pub gateway6: Option<Ipv6Addr>,
    /// Addresses are handed out from this range only (inside the subnet);
    /// a requested `--ip` may lie anywhere in the subnet.
    pub ip_range: Option<Ipv4Net>,
    /// MTU of the bridge and of every container's veth pair (`None`: the kernel's 1500).
    pub mtu: Option<u32>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Resolvers the network's containers use instead of the host's.
    pub dns_servers: Vec<IpAddr>,
    /// No name resolution service for the network's containers.
    pub disable_dns: bool,
}

/// Smallest MTU an IPv4 link may have (RFC 791).
pub const MTU_MIN: u32 = 68;
/// Largest MTU pelagos-net sets (the kernel's limit for a veth).
pub const MTU_MAX: u32 = 65535;

/// What `network create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Name.
    pub name: NetworkName,
    /// Subnet (`None`: the next free /24 of the pool).
    pub subnet: Option<Ipv4Net>,
    /// Gateway (`None`: the subnet's first host).
    pub gateway: Option<Ipv4Addr>,
    /// No NAT.
    pub internal: bool,
    /// Everything else `network create` records.
    pub options: NetworkOptions,
}

/// Errors of network definitions.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A name was refused.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No definition with that name.
    #[error("network {0} does not exist (see `pelagos-net network ls`)")]
    NotFound(String),
    /// A definition with that name exists.
    #[error("network {0} already exists")]
    Exists(String),
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other} ({other_subnet})")]
    OverlapsNetwork {
        /// Requested subnet.
        subnet: Ipv4Net,
        /// The other network.
        other: String,
        /// Its subnet.
        other_subnet: Ipv4Net,
    },
    /// The subnet overlaps an address or route the host has.
    #[error("subnet {subnet} overlaps {host_net}, which this host already routes or uses")]
    OverlapsHost {
        /// Requested subnet.
        subnet: Ipv4Net,
        /// The host's network.
        host_net: Ipv4Net,
    },
    /// The gateway is not a usable address of the subnet.
    #[error("gateway {gateway} is not a usable address of {subnet}")]
    BadGateway {
        /// Gateway.
        gateway: Ipv4Addr,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// The address range is not inside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet {
        /// The range.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The IPv6 subnet has too few host bits to mirror the IPv4 subnet.
    #[error(
        "ipv6 subnet {subnet6} is too small for {subnet}: it needs at least {needed} host bits (a /{max} or larger)"
    )]
    Subnet6TooSmall {
        /// The IPv6 subnet.
        subnet6: Ipv6Net,
        /// The IPv4 subnet.
        subnet: Ipv4Net,
        /// Host bits needed.
        needed: u8,
        /// The longest prefix that fits.
        max: u8,
    },
    /// The IPv6 subnet overlaps another network's.
    #[error("ipv6 subnet {subnet6} overlaps network {other} ({other_subnet6})")]
    OverlapsNetwork6 {
        /// Requested subnet.
        subnet6: Ipv6Net,
        /// The other network.
        other: String,
        /// Its IPv6 subnet.
        other_subnet6: Ipv6Net,
    },
    /// The IPv6 gateway is outside the subnet or would be a container's address.
    #[error("ipv6 gateway {gateway6} is not usable in {subnet6}: {why}")]
    BadGateway6 {
        /// Gateway.
        gateway6: Ipv6Addr,
        /// Subnet.
        subnet6: Ipv6Net,
        /// Why.
        why: &'static str,
    },
    /// The IPv6 subnet holds an address this host already has.
    #[error("ipv6 subnet {subnet6} holds {address}, an address this host already has")]
    OverlapsHost6 {
        /// The subnet.
        subnet6: Ipv6Net,
        /// The host's address.
        address: Ipv6Addr,
    },
    /// No free /64 left in the IPv6 pool.
    #[error("no free /64 left in {0}; pass an IPv6 --subnet")]
    Pool6Exhausted(Ipv6Net),
    /// The MTU is out of range.
    #[error("mtu {0} is out of range ({MTU_MIN} to {MTU_MAX})")]
    BadMtu(u32),
    /// The subnet is too small for a gateway and one container.
    #[error("subnet {0} is too small (needs at least a /30)")]
    TooSmall(Ipv4Net),
    /// No free subnet left in the pool.
    #[error("no free /24 left in {0}; pass --subnet")]
    PoolExhausted(Ipv4Net),
    /// A definition file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A definition file is not valid JSON of the expected shape.
    #[error("network definition {path} is corrupted; fix or delete the file")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Pure validation of a request against existing networks and the host's
/// networks (addresses and routes, default route excluded). Returns the
/// definition to write.
pub fn plan_network(
    req: &NetworkRequest,
    existing: &[NetworkDef],
    host_nets: &[Ipv4Net],
) -> Result<NetworkDef, NetworkError> {
    if existing.iter().any(|d| d.name == req.name) {
        return Err(NetworkError::Exists(req.name.to_string()));
    }
    let pool: Ipv4Net = SUBNET_POOL.parse().expect("valid pool constant");
    let subnet = match req.subnet {
        Some(s) => s,
        None => {
            let mut taken: Vec<Ipv4Net> = existing.iter().map(|d| d.subnet).collect();
            taken.extend(host_nets.iter().filter(|n| n.prefix() > 0));
            ipam::free_subnet(pool, 24, &taken).ok_or(NetworkError::PoolExhausted(pool))?
        }
    };
    if subnet.prefix() > 30 {
        return Err(NetworkError::TooSmall(subnet));
    }
    if let Some(other) = existing.iter().find(|d| d.subnet.overlaps(&subnet)) {
        return Err(NetworkError::OverlapsNetwork {
            subnet,
            other: other.name.to_string(),
            other_subnet: other.subnet,
        });
    }
    if let Some(host_net) = host_nets.iter().find(|n| n.prefix() > 0 && n.overlaps(&subnet)) {
        return Err(NetworkError::OverlapsHost { subnet, host_net: *host_net });
    }
    let gateway = req.gateway.unwrap_or_else(|| subnet.first_host());
    if !subnet.contains(gateway) || gateway == subnet.addr() || gateway == subnet.broadcast() {
        return Err(NetworkError::BadGateway { gateway, subnet });
    }
    if let Some(range) = req.options.ip_range
        && !(subnet.contains(range.addr()) && subnet.contains(range.broadcast()))
    {
        return Err(NetworkError::RangeOutsideSubnet { range, subnet });
    }
    if let Some(mtu) = req.options.mtu
        && !(MTU_MIN..=MTU_MAX).contains(&mtu)
    {
        return Err(NetworkError::BadMtu(mtu));
    }
    let mut options = req.options.clone();
    if let Some((subnet6, gateway6)) = plan_ipv6(&req.options, existing, subnet, gateway)? {
        (options.ipv6_enabled, options.subnet6, options.gateway6) = (true, Some(subnet6), Some(gateway6));
    }
    Ok(NetworkDef {
        bridge: req.name.derived_bridge(),
        name: req.name.clone(),
        subnet,
        gateway,
        internal: req.internal,
        masquerade: true,
        options,
    })
}

/// The IPv6 subnet and gateway of a dual-stack request (`None`: IPv4 only).
fn plan_ipv6(
    opts: &NetworkOptions,
    existing: &[NetworkDef],
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<Option<(Ipv6Net, Ipv6Addr)>, NetworkError> {
    let taken: Vec<(&NetworkDef, Ipv6Net)> =
        existing.iter().filter_map(|d| d.options.subnet6.map(|s| (d, s))).collect();
    let subnet6 = match (opts.subnet6, opts.ipv6_enabled) {
        (Some(s), _) => s,
        (None, false) => return Ok(None),
        (None, true) => {
            let pool: Ipv6Net = SUBNET6_POOL.parse().expect("valid pool constant");
            (0u128..1 << 16)
                .filter_map(|i| pool.nth(i << 64).and_then(|a| Ipv6Net::new(a, 64).ok()))
                .find(|c| !taken.iter().any(|(_, t)| t.overlaps(c)))
                .ok_or(NetworkError::Pool6Exhausted(pool))?
        }
    };
    let needed = 32 - subnet.prefix();
    if 128 - subnet6.prefix() < needed {
        return Err(NetworkError::Subnet6TooSmall { subnet6, subnet, needed, max: 128 - needed });
    }
    if let Some((other, other_subnet6)) = taken.iter().find(|(_, t)| t.overlaps(&subnet6)) {
        return Err(NetworkError::OverlapsNetwork6 {
            subnet6,
            other: other.name.to_string(),
            other_subnet6: *other_subnet6,
        });
    }
    let gw_offset = u128::from(u32::from(gateway) - u32::from(subnet.addr()));
    let gateway6 = match opts.gateway6 {
        None => subnet6.nth(gw_offset).expect("the offset fits: checked above"),
        Some(gateway6) => {
            let bad = |why| NetworkError::BadGateway6 { gateway6, subnet6, why };
            let index = subnet6.index_of(gateway6).ok_or_else(|| bad("outside the subnet"))?;
            let container_range = 1..=u128::from(u32::from(subnet.broadcast()) - u32::from(subnet.addr()));
            if index == 0 || (index != gw_offset && container_range.contains(&index)) {
                return Err(bad(
                    "containers get SUBNET6 plus their IPv4 offset; use the IPv4 gateway's offset or one past the IPv4 range",
                ));
            }
            gateway6
        }
    };
    Ok(Some((subnet6, gateway6)))
}

/// The IPv6 address that goes with `address` on `def` (dual-stack networks).
pub fn address6_of(def: &NetworkDef, address: Ipv4Addr) -> Option<Ipv6Addr> {
    let offset = u32::from(address).checked_sub(u32::from(def.subnet.addr()))?;
    def.options.subnet6?.nth(u128::from(offset))
}

/// The definitions directory under a config root.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

impl NetworkStore {
    /// `<config_dir>/networks`.
    pub fn new(config_dir: &Path) -> Self {
        Self { dir: config_dir.join("networks") }
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetworkError + 'a {
        move |source| NetworkError::Io { op, path: path.to_owned(), source }
    }

    fn path_of(&self, name: &NetworkName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Hold the directory lock while `f` runs (creation checks and writes are atomic together).
    pub fn locked<T>(&self, f: impl FnOnce(&Self) -> Result<T, NetworkError>) -> Result<T, NetworkError> {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&self.dir).map_err(Self::io("create", &self.dir))?;
        let lock_path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(Self::io("open", &lock_path))?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Self::io("lock", &lock_path)(e.into()))?;
        f(self)
    }

    /// Every definition, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkDef>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("read", &self.dir)(e)),
        };
        let mut defs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") && !entry.file_name().to_string_lossy().starts_with('.') {
                defs.push(read_def(&path)?);
            }
        }
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(defs)
    }

    /// Load one definition.
    pub fn load(&self, name: &NetworkName) -> Result<NetworkDef, NetworkError> {
        let path = self.path_of(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetworkError::NotFound(name.to_string())),
            _ => read_def(&path),
        }
    }

    /// Write a new definition atomically; fails if one exists.
    pub fn create(&self, def: &NetworkDef) -> Result<(), NetworkError> {
        let path = self.path_of(&def.name);
        let tmp = self.dir.join(format!(".{}.{}.tmp", def.name, std::process::id()));
        let json = serde_json::to_vec_pretty(def).map_err(|e| Self::io("encode", &path)(e.into()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(Self::io("write", &tmp))?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(Self::io("write", &tmp))?;
        crate::fault::point("network.tmp-written");
        let linked = fs::hard_link(&tmp, &path);
        crate::fault::point("network.linked");
        let _ = fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetworkError::Exists(def.name.to_string())),
            other => other.map_err(Self::io("create", &path)),
        }
    }

    /// Delete a definition.
    pub fn remove(&self, name: &NetworkName) -> Result<(), NetworkError> {
        let path = self.path_of(name);
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetworkError::NotFound(name.to_string()),
            _ => Self::io("remove", &path)(e),
        })
    }
}

fn read_def(path: &Path) -> Result<NetworkDef, NetworkError> {
    let bytes = crate::state::safefs::read_nofollow(path).map_err(NetworkStore::io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| NetworkError::Corrupt { path: path.to_owned(), source })
}

/// The default network's definition.
pub fn default_network_def() -> NetworkDef {
    NetworkDef {
        name: NetworkName::new(DEFAULT_NETWORK).expect("valid default name"),
        subnet: DEFAULT_SUBNET.parse().expect("valid default subnet"),
        gateway: BRIDGE_GW,
        bridge: IfName::new(BRIDGE_NAME).expect("valid default bridge"),
        internal: false,
        masquerade: true,
        options: NetworkOptions::default(),
    }
}

/// A network definition by name, read-only: the default network's is not
/// written when missing (what `plan` reads).
pub fn peek_network_def(config_dir: &Path, name: &str) -> Result<NetworkDef, NetworkError> {
    let name = NetworkName::new(name)?;
    match NetworkStore::new(config_dir).load(&name) {
        Err(NetworkError::NotFound(_)) if name.as_str() == DEFAULT_NETWORK => Ok(default_network_def()),
        other => other,
    }
}

/// Load the default network, writing its definition on first use.
pub fn bootstrap_default_network(config_dir: &Path) -> Result<NetworkDef, NetworkError> {
    let store = NetworkStore::new(config_dir);
    let def = default_network_def();
    store.locked(|s| match s.load(&def.name) {
        Ok(existing) => Ok(existing),
        Err(NetworkError::NotFound(_)) => {
            s.create(&def)?;
            Ok(def.clone())
        }
        Err(e) => Err(e),
    })
}

/// Ensure a named network exists: load it, or create it from `req` after
/// validating against the other networks and `host_nets`.
pub fn ensure_network(
    config_dir: &Path,
    req: &NetworkRequest,
    host_nets: &[Ipv4Net],
) -> Result<NetworkDef, NetworkError> {
    if req.name.as_str() == DEFAULT_NETWORK {
        return bootstrap_default_network(config_dir);
    }
    NetworkStore::new(config_dir).locked(|s| match s.load(&req.name) {
        Ok(def) => Ok(def),
        Err(NetworkError::NotFound(_)) => {
            let def = plan_network(req, &s.list()?, host_nets)?;
            s.create(&def)?;
            Ok(def)
        }
        Err(e) => Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, subnet: Option<&str>) -> NetworkRequest {
        NetworkRequest {
            name: NetworkName::new(name).unwrap(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: None,
            internal: false,
            options: NetworkOptions::default(),
        }
    }

    #[test]
    fn without_subnet_the_next_free_24_is_chosen() {
        let existing = vec![default_network_def()];
        let host = ["10.90.1.0/24".parse().unwrap()];
        let def = plan_network(&req("web", None), &existing, &host).unwrap();
        assert_eq!(def.subnet.to_string(), "10.90.2.0/24");
        assert_eq!(def.gateway.to_string(), "10.90.2.1");
        assert_eq!(def.bridge.as_str(), "pn-web");
    }

    #[test]
    fn overlapping_network_is_refused_with_both_names() {
        let err = plan_network(&req("web", Some("10.90.0.128/25")), &[default_network_def()], &[]).unwrap_err();
        assert_eq!(err.to_string(), "subnet 10.90.0.128/25 overlaps network pelagos0 (10.90.0.0/24)");
    }

    #[test]
    fn host_route_overlap_is_refused_but_default_route_ignored() {
        let host: Vec<Ipv4Net> = vec!["0.0.0.0/0".parse().unwrap(), "192.0.2.0/24".parse().unwrap()];
        assert!(plan_network(&req("a", Some("10.1.0.0/24")), &[], &host).is_ok());
        let err = plan_network(&req("a", Some("192.0.2.0/25")), &[], &host).unwrap_err();
        assert!(err.to_string().contains("overlaps 192.0.2.0/24"), "{err}");
    }

    #[test]
    fn gateway_outside_subnet_or_too_small_subnet_is_refused() {
        let mut r = req("a", Some("10.1.0.0/24"));
        r.gateway = Some("10.1.1.1".parse().unwrap());
        assert!(matches!(plan_network(&r, &[], &[]), Err(NetworkError::BadGateway { .. })));
        assert!(matches!(plan_network(&req("a", Some("10.1.0.0/31")), &[], &[]), Err(NetworkError::TooSmall(_))));
    }

    #[test]
    fn definitions_persist_and_duplicates_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let def = ensure_network(tmp.path(), &req("web", Some("10.5.0.0/24")), &[]).unwrap();
        assert_eq!(peek_network_def(tmp.path(), "web").unwrap(), def);
        let store = NetworkStore::new(tmp.path());
        assert!(matches!(store.create(&def), Err(NetworkError::Exists(_))));
        assert_eq!(bootstrap_default_network(tmp.path()).unwrap(), default_network_def());
        let names: Vec<String> = store.list().unwrap().into_iter().map(|d| d.name.to_string()).collect();
        assert_eq!(names, ["pelagos0", "web"]);
        store.remove(&def.name).unwrap();
        assert!(matches!(peek_network_def(tmp.path(), "web"), Err(NetworkError::NotFound(_))));
    }

    #[test]
    fn ip_range_outside_the_subnet_and_bad_mtu_are_refused() {
        let mut r = req("a", Some("10.1.0.0/24"));
        r.options.ip_range = Some("10.1.1.0/25".parse().unwrap());
        assert_eq!(
            plan_network(&r, &[], &[]).unwrap_err().to_string(),
            "ip range 10.1.1.0/25 is not inside subnet 10.1.0.0/24"
        );
        r.options.ip_range = Some("10.1.0.128/25".parse().unwrap());
        r.options.mtu = Some(67);
        assert_eq!(plan_network(&r, &[], &[]).unwrap_err().to_string(), "mtu 67 is out of range (68 to 65535)");
        r.options.mtu = Some(1400);
        assert_eq!(plan_network(&r, &[], &[]).unwrap().options.mtu, Some(1400));
    }

    #[test]
    fn ipv6_takes_a_free_ula_64_and_mirrors_ipv4_offsets() {
        let mut r = req("a", Some("10.1.0.0/24"));
        r.options.ipv6_enabled = true;
        let a = plan_network(&r, &[], &[]).unwrap();
        assert_eq!(a.options.subnet6.unwrap().to_string(), "fd70:656c:6167::/64");
        assert_eq!(a.options.gateway6.unwrap().to_string(), "fd70:656c:6167::1");
        assert_eq!(address6_of(&a, "10.1.0.7".parse().unwrap()).unwrap().to_string(), "fd70:656c:6167::7");
        let mut r2 = req("b", Some("10.2.0.0/24"));
        r2.options.ipv6_enabled = true;
        let b = plan_network(&r2, std::slice::from_ref(&a), &[]).unwrap();
        assert_eq!(b.options.subnet6.unwrap().to_string(), "fd70:656c:6167:1::/64");
        assert_eq!(address6_of(&default_network_def(), "10.90.0.7".parse().unwrap()), None);
    }

    #[test]
    fn bad_ipv6_requests_are_refused_with_the_reason() {
        let mut r = req("a", Some("10.1.0.0/16"));
        r.options.subnet6 = Some("fd00:1::/120".parse().unwrap());
        let err = plan_network(&r, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("needs at least 16 host bits (a /112 or larger)"), "{err}");
        let mut r = req("a", Some("10.1.0.0/24"));
        r.options.subnet6 = Some("fd00:1::/64".parse().unwrap());
        r.options.gateway6 = Some("fd00:1::5".parse().unwrap());
        let err = plan_network(&r, &[], &[]).unwrap_err().to_string();
        assert!(err.contains("ipv6 gateway fd00:1::5 is not usable"), "{err}");
        r.options.gateway6 = Some("fd00:2::1".parse().unwrap());
        assert!(plan_network(&r, &[], &[]).unwrap_err().to_string().contains("outside the subnet"));
        r.options.gateway6 = Some("fd00:1::ffff".parse().unwrap());
        let ok = plan_network(&r, &[], &[]).unwrap();
        let mut other = req("b", Some("10.2.0.0/24"));
        other.options.subnet6 = Some("fd00:1::/80".parse().unwrap());
        let err = plan_network(&other, &[ok], &[]).unwrap_err().to_string();
        assert!(err.contains("overlaps network a (fd00:1::/64)"), "{err}");
    }

    #[test]
    fn definitions_without_options_still_load() {
        let old = r#"{"name":"web","subnet":"10.5.0.0/24","gateway":"10.5.0.1","bridge":"pn-web","internal":false}"#;
        let def: NetworkDef = serde_json::from_str(old).unwrap();
        assert_eq!(def.options, NetworkOptions::default());
    }

    #[test]
    fn corrupted_definition_names_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("networks")).unwrap();
        fs::write(tmp.path().join("networks/web.json"), "{").unwrap();
        let err = peek_network_def(tmp.path(), "web").unwrap_err();
        assert!(err.to_string().contains("networks/web.json is corrupted"), "{err}");
    }
}
