//! slirp4netns's argument vector, built as data from a [`SlirpPlan`].
//!
//! Pure: no filesystem, no spawning. Golden-tested against the option syntax
//! of Debian 12's slirp4netns 1.2.0 (`slirp4netns --help`); every option used
//! exists since v0.4.0.
//!
//! Every implicit behaviour is pinned: the interface is configured by
//! slirp4netns itself (`--configure`, which also brings `lo` up), the MTU is
//! podman's 65520 instead of slirp4netns's 1500, the target is always a
//! namespace *path* (`--netns-type=path`, never a pid that could be
//! recycled), and access to the host's loopback through the gateway is an
//! explicit [`HostLoopback`] choice.

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::model::target::NsTarget;

/// podman's MTU for slirp4netns (slirp4netns defaults to 1500, which costs
/// throughput; 65521 is its maximum).
pub const DEFAULT_MTU: u32 = 65520;
/// The largest MTU slirp4netns accepts.
pub const MAX_MTU: u32 = 65521;
/// The smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 68;
/// Name of the tap device slirp4netns creates in the namespace.
pub const TAP_NAME: &str = "tap0";
/// The namespace's address with `--configure` and the default CIDR.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The gateway; with [`HostLoopback::Allowed`] it also answers for the host's 127.0.0.1.
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// slirp4netns's built-in DNS forwarder.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL);
/// slirp4netns silently truncates longer ones.
pub const MAX_SOCKET_PATH: usize = 107;

/// Whether the namespace may reach the host's `127.0.0.1` through the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostLoopback {
    /// `--disable-host-loopback` (the default, as in podman): a service
    /// bound to the host's loopback stays private to the host.
    #[default]
    Blocked,
    /// slirp4netns's own default: `10.0.2.2:PORT` reaches `127.0.0.1:PORT` on the host.
    Allowed,
}

/// Everything that decides slirp4netns's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlirpPlan {
    /// Where slirp4netns attaches.
    pub target: NsTarget,
    /// Path of the API socket (for port forwards); absolute, and removed on teardown.
    pub api_socket: PathBuf,
    /// MTU of the tap device.
    pub mtu: u32,
    /// Whether the host's loopback is reachable through the gateway.
    pub host_loopback: HostLoopback,
    /// Further flags from `--network slirp4netns:OPTS` (see
    /// [`crate::model::helper_opts::slirp`]), before the positional arguments.
    pub extra: Vec<OsString>,
}

impl SlirpPlan {
    /// A plan with podman's defaults: MTU 65520, host loopback blocked.
    pub fn new(target: NsTarget, api_socket: PathBuf) -> Self {
        Self { target, api_socket, mtu: DEFAULT_MTU, host_loopback: HostLoopback::Blocked, extra: Vec::new() }
    }

    /// Apply `--network slirp4netns:OPTS`.
    pub fn with_options(mut self, opts: &crate::model::helper_opts::SlirpOptions) -> Self {
        if let Some(mtu) = opts.mtu {
            self.mtu = mtu;
        }
        self.extra = opts.args.iter().map(OsString::from).collect();
        self
    }
}

/// Descriptor numbers as slirp4netns will see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlirpFds {
    /// slirp4netns writes `1` here once the tap and the API socket are set up.
    pub ready: RawFd,
    /// slirp4netns exits when this becomes readable (its writer closed);
    /// `None` for a slirp4netns that outlives its starter (stopped by signal).
    pub exit: Option<RawFd>,
}

/// Why a plan could not be turned into arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlirpArgsError {
    /// The MTU is outside what slirp4netns and IPv4 accept.
    #[error("mtu {mtu} is out of range ({MIN_MTU}..={MAX_MTU})")]
    MtuOutOfRange {
        /// The MTU asked for.
        mtu: u32,
    },
    /// The API socket path is relative (slirp4netns would bind it in its working directory).
    #[error("api socket path {} must be absolute", .path.display())]
    RelativeApiSocket {
        /// The path.
        path: PathBuf,
    },
    /// The API socket path does not fit in a `sockaddr_un`.
    #[error("api socket path {} is {len} bytes long; at most {MAX_SOCKET_PATH} fit in a unix socket address", .path.display())]
    ApiSocketTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A descriptor number is one of stdin, stdout or stderr (or negative).
    #[error("descriptor {fd} for --{flag} must be 3 or above")]
    BadFd {
        /// Which option.
        flag: &'static str,
        /// The number.
        fd: RawFd,
    },
}

/// The arguments after the program name for running slirp4netns as `plan` says.
///
/// Order: `--configure --mtu=N`, `--disable-host-loopback` when blocked,
/// `--exit-fd=N --ready-fd=N --api-socket=PATH`, `--userns-path=PATH` when
/// given, then `--netns-type=path NETNS tap0`. Paths pass through untouched.
pub fn build_argv(plan: &SlirpPlan, fds: SlirpFds) -> Result<Vec<OsString>, SlirpArgsError> {
    if !(MIN_MTU..=MAX_MTU).contains(&plan.mtu) {
        return Err(SlirpArgsError::MtuOutOfRange { mtu: plan.mtu });
    }
    let socket = &plan.api_socket;
    if !socket.is_absolute() {
        return Err(SlirpArgsError::RelativeApiSocket { path: socket.clone() });
    }
    let len = socket.as_os_str().as_bytes().len();
    if len > MAX_SOCKET_PATH {
        return Err(SlirpArgsError::ApiSocketTooLong { path: socket.clone(), len });
    }
    for (flag, fd) in [("exit-fd", fds.exit), ("ready-fd", Some(fds.ready))] {
        if let Some(fd) = fd
            && fd < 3
        {
            return Err(SlirpArgsError::BadFd { flag, fd });
        }
    }
    let mut argv: Vec<OsString> = vec!["--configure".into(), format!("--mtu={}", plan.mtu).into()];
    if plan.host_loopback == HostLoopback::Blocked {
        argv.push("--disable-host-loopback".into());
    }
    if let Some(exit) = fds.exit {
        argv.push(format!("--exit-fd={exit}").into());
    }
    argv.push(format!("--ready-fd={}", fds.ready).into());
    argv.push(joined("--api-socket=", socket.as_os_str()));
    if let Some(userns) = &plan.target.userns {
        argv.push(joined("--userns-path=", userns.as_os_str()));
    }
    argv.extend(plan.extra.iter().cloned());
    argv.push("--netns-type=path".into());
    argv.push(plan.target.netns.clone().into_os_string());
    argv.push(TAP_NAME.into());
    Ok(argv)
}

fn joined(flag: &str, value: &OsStr) -> OsString {
    let mut out = OsString::from(flag);
    out.push(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FDS: SlirpFds = SlirpFds { ready: 5, exit: Some(4) };

    fn rootless_plan() -> SlirpPlan {
        SlirpPlan::new(
            NsTarget { netns: "/proc/42/ns/net".into(), userns: Some("/proc/42/ns/user".into()) },
            "/run/user/1000/pelagos-net/slirp-abc.sock".into(),
        )
    }

    fn text(argv: &[OsString]) -> Vec<String> {
        argv.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn rootless_plan_matches_the_golden_argv() {
        let argv = build_argv(&rootless_plan(), FDS).unwrap();
        assert_eq!(
            text(&argv),
            [
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--exit-fd=4",
                "--ready-fd=5",
                "--api-socket=/run/user/1000/pelagos-net/slirp-abc.sock",
                "--userns-path=/proc/42/ns/user",
                "--netns-type=path",
                "/proc/42/ns/net",
                "tap0",
            ]
        );
    }

    #[test]
    fn root_plan_with_host_loopback_allowed_matches_the_golden_argv() {
        let mut plan = rootless_plan();
        plan.target = NsTarget { netns: "/run/netns/pelagos-x".into(), userns: None };
        plan.host_loopback = HostLoopback::Allowed;
        plan.mtu = 1500;
        let argv = build_argv(&plan, FDS).unwrap();
        assert_eq!(
            text(&argv),
            [
                "--configure",
                "--mtu=1500",
                "--exit-fd=4",
                "--ready-fd=5",
                "--api-socket=/run/user/1000/pelagos-net/slirp-abc.sock",
                "--netns-type=path",
                "/run/netns/pelagos-x",
                "tap0",
            ]
        );
    }

    #[test]
    fn host_loopback_is_blocked_by_default() {
        assert_eq!(HostLoopback::default(), HostLoopback::Blocked);
        assert_eq!(rootless_plan().host_loopback, HostLoopback::Blocked);
    }

    #[test]
    fn mtu_outside_slirp4netns_limits_is_refused() {
        for mtu in [0, 67, 65522] {
            let mut plan = rootless_plan();
            plan.mtu = mtu;
            assert_eq!(build_argv(&plan, FDS), Err(SlirpArgsError::MtuOutOfRange { mtu }));
        }
    }

    #[test]
    fn api_socket_path_that_would_be_truncated_is_refused() {
        let mut plan = rootless_plan();
        plan.api_socket = PathBuf::from(format!("/{}", "s".repeat(107)));
        let err = build_argv(&plan, FDS).unwrap_err();
        assert_eq!(err, SlirpArgsError::ApiSocketTooLong { path: plan.api_socket.clone(), len: 108 });
        plan.api_socket = PathBuf::from(format!("/{}", "s".repeat(106)));
        assert!(build_argv(&plan, FDS).is_ok());
    }

    #[test]
    fn relative_api_socket_is_refused() {
        let mut plan = rootless_plan();
        plan.api_socket = "slirp.sock".into();
        assert!(matches!(build_argv(&plan, FDS), Err(SlirpArgsError::RelativeApiSocket { .. })));
    }

    #[test]
    fn stdio_descriptors_are_refused() {
        let err = build_argv(&rootless_plan(), SlirpFds { ready: 1, exit: Some(4) }).unwrap_err();
        assert_eq!(err.to_string(), "descriptor 1 for --ready-fd must be 3 or above");
    }
}
