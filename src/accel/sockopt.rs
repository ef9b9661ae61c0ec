//! The socket options a switched socket carries over, and what keeps a
//! socket from being switched at all.
//!
//! Options are read from the command's socket (through `pidfd_getfd`) and
//! compared with those of a fresh socket of the same kind made here (the
//! template): only the options that differ were set by the command, and
//! only those are set on the new socket. Copying the rest would pin values
//! the kernel otherwise tunes itself: an explicit `SO_RCVBUF` turns off
//! receive-buffer autotuning, which would cost the very throughput the
//! switch is for. An option the new socket refuses (a value only
//! `CAP_NET_ADMIN` may set, an algorithm this namespace does not allow)
//! keeps the connection inside: it is never switched without it.

use super::sys;
use nix::errno::Errno;
use std::os::fd::BorrowedFd;

/// How an option's value is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An `int`.
    Int,
    /// A buffer size: the kernel reports twice what was set.
    Buffer,
    /// `struct linger`.
    Linger,
    /// `struct timeval`.
    Timeval,
    /// A name of up to 16 bytes (`TCP_CONGESTION`).
    Name,
}

impl Kind {
    fn len(self) -> usize {
        match self {
            Kind::Int | Kind::Buffer => 4,
            Kind::Linger => std::mem::size_of::<libc::linger>(),
            Kind::Timeval => std::mem::size_of::<libc::timeval>(),
            Kind::Name => 16,
        }
    }
}

/// Which sockets an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Any,
    V4,
    V6,
}

/// An option the accelerator carries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    level: i32,
    name: i32,
    kind: Kind,
    family: Family,
    /// For messages.
    pub label: &'static str,
}

const fn opt(level: i32, name: i32, kind: Kind, family: Family, label: &'static str) -> Opt {
    Opt { level, name, kind, family, label }
}

use Family::{Any, V4, V6};
use Kind::{Buffer, Int, Linger, Name, Timeval};

/// Every option carried over: what a TCP client sets before it connects.
pub const OPTIONS: &[Opt] = &[
    opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, Int, Any, "SO_REUSEADDR"),
    opt(libc::SOL_SOCKET, libc::SO_REUSEPORT, Int, Any, "SO_REUSEPORT"),
    opt(libc::SOL_SOCKET, libc::SO_KEEPALIVE, Int, Any, "SO_KEEPALIVE"),
    opt(libc::SOL_SOCKET, libc::SO_OOBINLINE, Int, Any, "SO_OOBINLINE"),
    opt(libc::SOL_SOCKET, libc::SO_LINGER, Linger, Any, "SO_LINGER"),
    opt(libc::SOL_SOCKET, libc::SO_PRIORITY, Int, Any, "SO_PRIORITY"),
    opt(libc::SOL_SOCKET, libc::SO_RCVBUF, Buffer, Any, "SO_RCVBUF"),
    opt(libc::SOL_SOCKET, libc::SO_SNDBUF, Buffer, Any, "SO_SNDBUF"),
    opt(libc::SOL_SOCKET, libc::SO_RCVLOWAT, Int, Any, "SO_RCVLOWAT"),
    opt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, Timeval, Any, "SO_RCVTIMEO"),
    opt(libc::SOL_SOCKET, libc::SO_SNDTIMEO, Timeval, Any, "SO_SNDTIMEO"),
    opt(libc::SOL_SOCKET, libc::SO_TIMESTAMP, Int, Any, "SO_TIMESTAMP"),
    opt(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, Int, Any, "SO_TIMESTAMPNS"),
    opt(libc::SOL_SOCKET, libc::SO_BUSY_POLL, Int, Any, "SO_BUSY_POLL"),
    opt(libc::SOL_SOCKET, libc::SO_INCOMING_CPU, Int, Any, "SO_INCOMING_CPU"),
    opt(libc::SOL_SOCKET, libc::SO_ZEROCOPY, Int, Any, "SO_ZEROCOPY"),
    opt(libc::IPPROTO_TCP, libc::TCP_NODELAY, Int, Any, "TCP_NODELAY"),
    opt(libc::IPPROTO_TCP, libc::TCP_CORK, Int, Any, "TCP_CORK"),
    opt(libc::IPPROTO_TCP, libc::TCP_MAXSEG, Int, Any, "TCP_MAXSEG"),
    opt(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, Int, Any, "TCP_KEEPIDLE"),
    opt(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, Int, Any, "TCP_KEEPINTVL"),
    opt(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, Int, Any, "TCP_KEEPCNT"),
    opt(libc::IPPROTO_TCP, libc::TCP_SYNCNT, Int, Any, "TCP_SYNCNT"),
    opt(libc::IPPROTO_TCP, libc::TCP_LINGER2, Int, Any, "TCP_LINGER2"),
    opt(libc::IPPROTO_TCP, libc::TCP_WINDOW_CLAMP, Int, Any, "TCP_WINDOW_CLAMP"),
    opt(libc::IPPROTO_TCP, libc::TCP_CONGESTION, Name, Any, "TCP_CONGESTION"),
    opt(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, Int, Any, "TCP_USER_TIMEOUT"),
    opt(libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, Int, Any, "TCP_NOTSENT_LOWAT"),
    opt(libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT, Int, Any, "TCP_FASTOPEN_CONNECT"),
    opt(libc::IPPROTO_TCP, libc::TCP_THIN_LINEAR_TIMEOUTS, Int, Any, "TCP_THIN_LINEAR_TIMEOUTS"),
    opt(libc::IPPROTO_IP, libc::IP_TOS, Int, V4, "IP_TOS"),
    opt(libc::IPPROTO_IP, libc::IP_TTL, Int, V4, "IP_TTL"),
    opt(libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, Int, V4, "IP_MTU_DISCOVER"),
    opt(libc::IPPROTO_IP, libc::IP_RECVERR, Int, V4, "IP_RECVERR"),
    opt(libc::IPPROTO_IP, libc::IP_FREEBIND, Int, V4, "IP_FREEBIND"),
    opt(libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, Int, V4, "IP_BIND_ADDRESS_NO_PORT"),
    opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, Int, V6, "IPV6_V6ONLY"),
    opt(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, Int, V6, "IPV6_TCLASS"),
    opt(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, Int, V6, "IPV6_UNICAST_HOPS"),
    opt(libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, Int, V6, "IPV6_MTU_DISCOVER"),
    opt(libc::IPPROTO_IPV6, libc::IPV6_RECVERR, Int, V6, "IPV6_RECVERR"),
];

/// One option's value as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Index into [`OPTIONS`].
    pub index: usize,
    /// The bytes (`None`: the kernel refused to report it).
    pub bytes: Option<Vec<u8>>,
}

/// Every option of [`OPTIONS`] that applies to a socket of `domain`.
pub fn read(fd: BorrowedFd<'_>, domain: i32) -> Vec<Value> {
    applicable(domain)
        .map(|(index, o)| {
            let mut buf = vec![0u8; o.kind.len()];
            let bytes = sys::getsockopt_bytes(fd, o.level, o.name, &mut buf).ok().map(|n| {
                buf.truncate(n);
                buf
            });
            Value { index, bytes }
        })
        .collect()
}

fn applicable(domain: i32) -> impl Iterator<Item = (usize, &'static Opt)> {
    OPTIONS.iter().enumerate().filter(move |(_, o)| match o.family {
        Any => true,
        V4 => domain == libc::AF_INET,
        V6 => domain == libc::AF_INET6,
    })
}

/// The options of `socket` that differ from `template` (the same options
/// read from a fresh socket of the same kind), as they are to be set.
pub fn changed(socket: &[Value], template: &[Value]) -> Vec<Value> {
    socket
        .iter()
        .filter(|v| v.bytes.is_some())
        .filter(|v| template.iter().find(|t| t.index == v.index).is_none_or(|t| t.bytes != v.bytes))
        .map(|v| Value { index: v.index, bytes: v.bytes.as_ref().map(|b| to_set(&OPTIONS[v.index], b)) })
        .collect()
}

/// The value to pass to `setsockopt` for a value `getsockopt` reported.
fn to_set(o: &Opt, got: &[u8]) -> Vec<u8> {
    match (o.kind, got.try_into()) {
        // The kernel doubles what is set (for its bookkeeping).
        (Kind::Buffer, Ok(b)) => (i32::from_ne_bytes(b) / 2).to_ne_bytes().to_vec(),
        (Kind::Name, _) => {
            let end = got.iter().position(|&c| c == 0).unwrap_or(got.len());
            got[..end].to_vec()
        }
        _ => got.to_vec(),
    }
}

/// Sets `values` on `fd`; the first refusal is returned with the option's name.
pub fn apply(fd: BorrowedFd<'_>, values: &[Value]) -> Result<(), (&'static str, Errno)> {
    for v in values {
        let o = &OPTIONS[v.index];
        if let Some(b) = &v.bytes {
            sys::setsockopt_bytes(fd, o.level, o.name, b).map_err(|e| (o.label, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(label: &str, bytes: &[u8]) -> Value {
        let index = OPTIONS.iter().position(|o| o.label == label).unwrap();
        Value { index, bytes: Some(bytes.to_vec()) }
    }

    fn int(label: &str, v: i32) -> Value {
        value(label, &v.to_ne_bytes())
    }

    #[test]
    fn only_options_the_command_changed_are_carried_over() {
        let template = [int("TCP_NODELAY", 0), int("SO_KEEPALIVE", 0), int("SO_RCVBUF", 131072)];
        let socket = [int("TCP_NODELAY", 1), int("SO_KEEPALIVE", 0), int("SO_RCVBUF", 131072)];
        assert_eq!(changed(&socket, &template), vec![int("TCP_NODELAY", 1)]);
    }

    #[test]
    fn a_buffer_size_is_set_as_half_what_the_kernel_reports() {
        let template = [int("SO_SNDBUF", 16384)];
        let socket = [int("SO_SNDBUF", 2 * 65536)];
        assert_eq!(changed(&socket, &template), vec![int("SO_SNDBUF", 65536)]);
    }

    #[test]
    fn a_congestion_algorithm_is_set_by_its_name() {
        let template = [value("TCP_CONGESTION", b"cubic\0\0\0\0\0\0\0\0\0\0\0")];
        let socket = [value("TCP_CONGESTION", b"reno\0\0\0\0\0\0\0\0\0\0\0\0")];
        assert_eq!(changed(&socket, &template), vec![value("TCP_CONGESTION", b"reno")]);
    }

    #[test]
    fn an_option_the_kernel_would_not_report_is_not_invented() {
        let index = OPTIONS.iter().position(|o| o.label == "SO_BUSY_POLL").unwrap();
        let socket = [Value { index, bytes: None }];
        assert!(changed(&socket, &[]).is_empty());
    }

    #[test]
    fn family_options_apply_to_their_family_only() {
        let v4: Vec<&str> = applicable(libc::AF_INET).map(|(_, o)| o.label).collect();
        let v6: Vec<&str> = applicable(libc::AF_INET6).map(|(_, o)| o.label).collect();
        assert!(v4.contains(&"IP_TOS") && !v4.contains(&"IPV6_V6ONLY"));
        assert!(v6.contains(&"IPV6_V6ONLY") && !v6.contains(&"IP_TOS"));
        assert!(v4.contains(&"TCP_NODELAY") && v6.contains(&"TCP_NODELAY"));
    }
}
