//! Socket addresses as the command passed them: parsed from the bytes read
//! out of its memory (pure), never re-read.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `sizeof(struct sockaddr_in6)` without `sin6_scope_id` (RFC 2133), the
/// shortest IPv6 address the kernel takes.
const SIN6_LEN_RFC2133: usize = 24;

/// The internet address in `bytes` (a `struct sockaddr` of `bytes.len()`
/// bytes), or `None` for another family or a length the kernel would
/// refuse.
pub fn parse(bytes: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
    let port = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    match family {
        libc::AF_INET if bytes.len() >= 16 => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if bytes.len() >= SIN6_LEN_RFC2133 => {
            let flowinfo = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[8..24]).ok()?);
            let scope = bytes.get(24..28).map_or(0, |b| u32::from_ne_bytes(b.try_into().unwrap_or_default()));
            Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr_in(ip: [u8; 4], port: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&port.to_be_bytes());
        b[4..8].copy_from_slice(&ip);
        b
    }

    #[test]
    fn ipv4_addresses_parse_in_any_length_the_kernel_takes() {
        for len in [16, 28, 128] {
            assert_eq!(parse(&sockaddr_in([10, 0, 0, 1], 443, len)), Some("10.0.0.1:443".parse().unwrap()));
        }
        assert_eq!(parse(&sockaddr_in([10, 0, 0, 1], 443, 15)), None);
    }

    #[test]
    fn ipv6_addresses_keep_flow_and_scope() {
        let mut b = vec![0u8; 28];
        b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&8080u16.to_be_bytes());
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[8..24].copy_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        b[24..28].copy_from_slice(&3u32.to_ne_bytes());
        let want = SocketAddrV6::new("2001:db8::5".parse().unwrap(), 8080, 7, 3);
        assert_eq!(parse(&b), Some(SocketAddr::V6(want)));
        let short = SocketAddrV6::new("2001:db8::5".parse().unwrap(), 8080, 7, 0);
        assert_eq!(parse(&b[..24]), Some(SocketAddr::V6(short)));
        assert_eq!(parse(&b[..23]), None);
    }

    #[test]
    fn other_families_are_not_parsed() {
        let mut unix = vec![0u8; 110];
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse(&unix), None);
        assert_eq!(parse(&[]), None);
        let mut unspec = sockaddr_in([1, 2, 3, 4], 1, 16);
        unspec[0..2].copy_from_slice(&(libc::AF_UNSPEC as u16).to_ne_bytes());
        assert_eq!(parse(&unspec), None);
    }
}
