//! Pure validation of a network request: names, subnets (the next free
//! one of the pool, or the one asked for, against other networks and the
//! host's), gateways, the IPv6 side.

use super::*;
use crate::model::ipam;

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

