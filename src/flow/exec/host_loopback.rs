//! `--host-port` for a run on a rootless shared network: the host's
//! loopback ports the run was granted, on `127.0.0.1` inside its namespace.
//!
//! The holder's pasta is shared by every run of the user and is started
//! without `-T`, so it opens no door onto the host's loopback. Each run
//! gets its own doors instead: a TCP listener and a UDP socket per granted
//! port on its namespace's `127.0.0.1`, made there by a socket factory,
//! whose connections and datagrams this process (in the host's namespaces)
//! relays to the same port on the host's `127.0.0.1` with the builtin
//! relay. No other port of the host's loopback is reachable, and no other
//! run gets these.

use super::Exec;
use crate::flow::RunError;
use crate::flow::steps::NsRef;
use crate::model::port::PortProto;
use crate::ports::nsfactory::SocketFactory;
use crate::ports::relay::{Forwarder, ForwarderConfig, Here, Listener};
use nix::sys::socket::{Backlog, SockaddrIn, bind, listen, setsockopt, sockopt};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

/// Listen on each granted port inside the run's namespace and relay to the host's loopback.
pub(super) fn relay(exec: &mut Exec) -> Result<(), RunError> {
    let ports = exec.plan.host_loopback_ports.clone();
    if ports.is_empty() {
        return Ok(());
    }
    let target = exec.target(NsRef::Child);
    let err = |op: &'static str, port: u16| move |source: std::io::Error| RunError::HostLoopback { op, port, source };
    let mut factory = SocketFactory::spawn(&target, &exec.paths.proc_root).map_err(RunError::HostLoopbackFactory)?;
    let mut listeners = Vec::new();
    for port in ports {
        let fd = factory.socket(libc::AF_INET, libc::SOCK_STREAM, 0).map_err(err("make a socket in the namespace", port))?;
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| err("set SO_REUSEADDR", port)(e.into()))?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(local))
            .map_err(|e| err("bind 127.0.0.1 inside the namespace", port)(e.into()))?;
        let backlog = Backlog::new(128).expect("a valid backlog");
        listen(&fd, backlog).map_err(|e| err("listen inside the namespace", port)(e.into()))?;
        listeners.push(Listener { fd, local: SocketAddr::V4(local), proto: PortProto::Tcp, container_port: port });
        let fd = factory.socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(err("make a socket in the namespace", port))?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(local))
            .map_err(|e| err("bind 127.0.0.1 (UDP) inside the namespace", port)(e.into()))?;
        listeners.push(Listener { fd, local: SocketAddr::V4(local), proto: PortProto::Udp, container_port: port });
    }
    let relay = Forwarder::start(listeners, Box::new(Here), ForwarderConfig::default()).map_err(RunError::Listen)?;
    log::info!("host loopback ports {:?} relayed into the namespace", exec.plan.host_loopback_ports);
    exec.live.host_loopback = Some(relay);
    Ok(())
}
