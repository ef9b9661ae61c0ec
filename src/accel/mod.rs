//! The socket-switching accelerator (`--accel socket`): TCP at the host's
//! speed for rootless runs.
//!
//! # Why
//!
//! A rootless run reaches the outside through pasta or slirp4netns, which
//! carry every byte through a TCP/IP stack in user space: a few hundred
//! MiB/s where the host's own connection does several GiB/s, and every
//! connection pays the helper's handshake. A published port is relayed,
//! every byte twice. Root runs on a bridge do not pay this; rootless ones
//! need no privilege to avoid it either: a socket belongs to the namespace
//! it was made in, whoever uses it, and the run's owner may make sockets in
//! its own namespace, which is where the helper's sockets are made too.
//!
//! # How
//!
//! The command starts under a seccomp filter ([`filter`]) whose
//! user-notification listener the run's supervisor holds ([`child`] puts it
//! in place in the command's process right before `exec`, and hands the
//! listener over a socket pair). Every `connect` of an internet socket
//! waits for the supervisor ([`supervisor`]), which decides with the pure
//! [`reach::decide`]:
//!
//! - a TCP connection to where the helper would take it (the outside, the
//!   host's other addresses) gets a socket made in the owner's namespace,
//!   carrying the options the command set ([`sockopt`]), connected by the
//!   supervisor, put in place of the command's descriptor with
//!   `SECCOMP_IOCTL_NOTIF_ADDFD`. From then on the kernel alone moves the
//!   bytes: no copy, no helper, no supervisor.
//! - everything else (loopback, the namespace's own addresses and network,
//!   unix sockets, UDP, sockets of a namespace the command made itself)
//!   goes on inside, untouched (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//! - a server that binds a published TCP port gets the host's listener
//!   ([`ingress`]) and serves its clients with no relay at all.
//!
//! # What a switched socket can reach
//!
//! Exactly what the run reaches through its helper, never more
//! ([`reach`] mirrors pasta with `--no-map-gw` and slirp4netns with
//! `--disable-host-loopback`: the host's loopback is reached only through
//! `--host-port` ports). And that holds whatever the command does with the
//! socket afterwards, because the socket itself is locked: where the
//! kernel lets the owner filter its TCP sockets (root, older kernels), it
//! takes packets only from the peer the supervisor checked ([`filter`]),
//! and the lock cannot be removed from inside; elsewhere it is bound to its
//! route's device ([`switch::Lock`]), which keeps it off the host's
//! loopback and other devices' networks, and the accelerator then runs
//! only where that is within the helper's reach (slirp4netns egress).
//!
//! # Time of check, time of use
//!
//! The supervisor reads the socket address from the command's memory once,
//! after the notification and before deciding, and checks the caller still
//! waits (so the memory was the caller's). Another thread of the command
//! may change that memory right after: it changes nothing, because the
//! supervisor connects the new socket itself, to the address it read and
//! checked, and the kernel never reads the command's address for that
//! connection again. A TCP `listen` is likewise made by the supervisor on
//! the file it checked. When the answer is `CONTINUE` (the connection
//! stays inside, a blocking caller waits for a handshake the supervisor
//! started, a unix socket listens), the kernel does read the memory again,
//! and the descriptor number too, so a racing thread can make that call go
//! elsewhere or be made on another socket: a socket of the namespace, where
//! any address leads where the helper leads anyway, or an already switched
//! socket, where its lock decides: with [`switch::Lock::Peer`], a SYN that
//! is never answered; with [`switch::Lock::Device`], the device's reach,
//! and a listener on the device's network for a command that wins the race
//! with a unix `listen` (the one gap of that lock, documented in the
//! README). Other paths that bypass seccomp (io_uring, refused under the
//! device lock; a filter stacked after ours that answers `CONTINUE`
//! itself) meet the same locks.
//!
//! # What the command notices
//!
//! - A switched socket's `getsockname` shows the host's address; a server's
//!   listener handed over shows the host's address and port.
//! - A socket registered with epoll before its `connect` keeps the old
//!   registration (the epoll set names the replaced file): rare (Java's
//!   Netty does it) and worth knowing.
//! - The filter does not set `no_new_privs` (see [`child`]): setuid
//!   programs inside behave as they would without the accelerator.
//! - The listener is closed with the run's owner: if pelagos-net dies, the
//!   run's intercepted syscalls fail with `ENOSYS` (its processes are
//!   killed with it anyway).

pub mod child;
pub mod filter;
pub mod ingress;
pub mod probe;
pub mod reach;
mod sockaddr;
pub mod sockopt;
pub mod supervisor;
pub mod switch;
mod sys;
pub mod trace;

use nix::errno::Errno;

/// Whether a run asks for the accelerator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// No accelerator (the default).
    #[default]
    Off,
    /// Switch TCP sockets (`--accel socket`).
    Socket,
}

impl AccelMode {
    /// Whether it is [`AccelMode::Off`].
    pub fn is_off(&self) -> bool {
        *self == Self::Off
    }
}

impl std::str::FromStr for AccelMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "none" => Ok(Self::Off),
            "socket" => Ok(Self::Socket),
            other => Err(format!("unknown accelerator '{other}' (expected socket or off)")),
        }
    }
}

impl std::fmt::Display for AccelMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Socket => "socket",
        })
    }
}

/// Errors of the accelerator. None of them stops a run: it falls back to
/// the normal path and says why.
#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    /// No seccomp filter for this architecture.
    #[error("the accelerator is not available on this architecture")]
    Architecture,
    /// The socket pair to the command could not be made.
    #[error("create the socket pair for the notification listener")]
    SocketPair(#[source] Errno),
    /// The command's process refused the filter.
    #[error("the kernel refused to {step}")]
    Refused {
        /// The step.
        step: child::Step,
        /// Its errno.
        #[source]
        errno: Errno,
    },
    /// The command's process said nothing (it died before `exec`).
    #[error("the command's process handed over no notification listener")]
    NoAnswer,
    /// The run's namespace could not be named.
    #[error("read the network namespace cookie of the run (SO_NETNS_COOKIE, Linux 5.14)")]
    NetnsCookie(#[source] Errno),
    /// A socket of this namespace could not be made or read.
    #[error("make a template socket")]
    Template(#[source] Errno),
    /// The supervisor thread could not start.
    #[error("spawn the supervisor thread")]
    Spawn(#[source] std::io::Error),
    /// The routing table could not be asked (device lock).
    #[error("open rtnetlink for route lookups: {0}")]
    Routes(String),
}
