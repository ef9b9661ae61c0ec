//! Resolving `-p 80` (no host port) to a concrete free host port, as
//! docker does: bind port 0 on the requested address, read the kernel's
//! choice, release it, and hand that number to pasta. There is a short
//! window in which another process could take the port; pasta then fails
//! to bind and the error names the port.

use crate::model::port::{PortMapping, PortProto, PortRange};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// Errors of resolving ephemeral host ports.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A container port range without host ports: there is no sensible
    /// contiguous ephemeral range to pick.
    #[error("publishing the range {0} needs explicit host ports")]
    EphemeralRange(PortRange),
    /// Binding port 0 to learn a free port failed.
    #[error("find a free host port on {addr}")]
    Bind {
        /// Address tried.
        addr: IpAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Fill in every missing host port with a free one.
pub fn resolve_ephemeral(ports: &[PortMapping]) -> Result<Vec<PortMapping>, PortError> {
    ports
        .iter()
        .map(|m| {
            if m.host.is_some() {
                return Ok(m.clone());
            }
            if m.container.len() != 1 {
                return Err(PortError::EphemeralRange(m.container));
            }
            let addr = m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let bind_err = |source| PortError::Bind { addr, source };
            let port = match m.proto {
                PortProto::Tcp => TcpListener::bind(SocketAddr::new(addr, 0)).and_then(|l| l.local_addr()),
                PortProto::Udp => UdpSocket::bind(SocketAddr::new(addr, 0)).and_then(|s| s.local_addr()),
            }
            .map_err(bind_err)?
            .port();
            let host = PortRange::single(port).map_err(|e| bind_err(io::Error::other(e)))?;
            Ok(PortMapping { host: Some(host), ..m.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_tcp_port_is_resolved_to_a_nonzero_port() {
        let m = PortMapping {
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host: None,
            container: PortRange::single(80).unwrap(),
            proto: PortProto::Tcp,
        };
        let out = resolve_ephemeral(std::slice::from_ref(&m)).unwrap();
        assert!(out[0].host.unwrap().start() > 0);
        assert_eq!(out[0].container, m.container);
    }

    #[test]
    fn explicit_host_ports_are_kept() {
        let m = PortMapping {
            host_ip: None,
            host: Some(PortRange::single(8080).unwrap()),
            container: PortRange::single(80).unwrap(),
            proto: PortProto::Udp,
        };
        assert_eq!(resolve_ephemeral(std::slice::from_ref(&m)).unwrap(), vec![m]);
    }

    #[test]
    fn ephemeral_range_is_refused_with_an_example() {
        let m = PortMapping {
            host_ip: None,
            host: None,
            container: PortRange::new(80, 90).unwrap(),
            proto: PortProto::Tcp,
        };
        let err = resolve_ephemeral(&[m]).unwrap_err();
        assert!(err.to_string().contains("explicit host ports"), "{err}");
    }
}
