//! What the namespace child does for name resolution between its clone
//! and the command's `exec`: mount the run's resolv.conf and hosts over the
//! host's paths in its private mount namespace, add the routing pieces DNS
//! needs, and open the listening sockets of the forwarder that serves the
//! namespace from inside it.
//!
//! The listeners are made here, by the child that is already in the new
//! namespaces, and handed to the parent with the child's ready report
//! (`SCM_RIGHTS`): no process has to be forked to join the namespace for
//! them, and they exist before the command is started, so its first query
//! waits in the socket's queue however late the forwarder's thread starts.
//!
//! [`NsDns::prepare`] runs in the parent, before the clone: it allocates every
//! path, buffer and netlink message. [`NsDns::apply`] runs in the child and
//! is async-signal-safe: raw system calls on that memory, no allocation, no
//! locks, so a multithreaded caller may fork.
//!
//! The mounts, in the child's new mount namespace:
//! 1. `/` becomes a slave mount tree (`MS_REC | MS_SLAVE`): nothing mounted
//!    here reaches the host, and the host's later mounts still show up.
//! 2. A small tmpfs goes on a scratch directory (`/tmp`) for a moment; the
//!    files are written into it.
//! 3. Each file is cloned into a detached mount (`open_tree(OPEN_TREE_CLONE)`)
//!    and the scratch tmpfs is detached again, uncovering `/tmp`.
//! 4. `move_mount` puts each clone on the target path itself, without
//!    following symlinks: a `/etc/resolv.conf` that is a symlink, a chain of
//!    them or a dangling one is covered as the command opens it, and what it
//!    points to is never touched. The host's files are never opened for writing.
//!
//! Kernels without the new mount API (before 5.2) get `mount(MS_BIND)` onto
//! the path instead, which follows symlinks and fails on a dangling one.

mod listen;
mod rtnl;

pub use listen::ChildListeners;
use listen::{bound_socket, sockaddr};
use netlink_packet_route::RouteNetlinkMessage;
use rtnl::{encode, lo_address, netlink_request, tcp_unreachable};
use std::ffi::CString;
use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// Directories that can hold the scratch tmpfs for a moment, in order of preference.
const SCRATCH_DIRS: [&str; 4] = ["/tmp", "/var/tmp", "/run", "/mnt"];

/// The step of [`NsDns::apply`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DnsStep {
    /// Making `/` a slave tree.
    Propagation = 1,
    /// Mounting the scratch tmpfs.
    Scratch = 2,
    /// Writing a file into it.
    Write = 3,
    /// Mounting the first file over its target.
    MountFirst = 4,
    /// Mounting the second file over its target.
    MountSecond = 5,
    /// Adding the DNS address to `lo`.
    Address = 6,
    /// Adding the TCP rule.
    Rule = 7,
    /// Opening the forwarder's UDP socket on the DNS address.
    ListenUdp = 8,
    /// Opening the forwarder's TCP listener on the DNS address.
    ListenTcp = 9,
}

impl DnsStep {
    /// From the byte the child reports.
    pub fn from_u8(v: u8) -> Option<Self> {
        use DnsStep::*;
        [Propagation, Scratch, Write, MountFirst, MountSecond, Address, Rule, ListenUdp, ListenTcp]
            .into_iter()
            .find(|s| *s as u8 == v)
    }
}

/// Errors of preparing.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A path holds a NUL byte.
    #[error("path {} cannot be passed to the kernel (NUL byte)", .0.display())]
    BadPath(PathBuf),
    /// No directory can hold the scratch tmpfs.
    #[error("none of {} is a directory to mount a scratch tmpfs on", SCRATCH_DIRS.join(", "))]
    NoScratch,
    /// More files than the child handles.
    #[error("at most two files can be mounted")]
    TooManyFiles,
}

struct File {
    /// In the scratch tmpfs.
    scratch: CString,
    /// The path to cover.
    target: CString,
    content: Vec<u8>,
    target_text: PathBuf,
}

/// Everything the child needs, prepared before `fork`.
pub struct NsDns {
    root: CString,
    scratch_dir: CString,
    tmpfs: CString,
    tmpfs_opts: CString,
    files: Vec<File>,
    netlink: Vec<(DnsStep, Vec<u8>)>,
    /// Where the forwarder listens (UDP and TCP), once its address is on `lo`.
    listen: Option<libc::sockaddr_in>,
}

impl fmt::Debug for NsDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets: Vec<_> = self.files.iter().map(|f| &f.target_text).collect();
        f.debug_struct("NsDns")
            .field("targets", &targets)
            .field("netlink", &self.netlink.len())
            .field("listen", &self.listen.is_some())
            .finish()
    }
}

fn cpath(p: &Path) -> Result<CString, PrepareError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| PrepareError::BadPath(p.to_owned()))
}

impl NsDns {
    /// Prepare mounting each `(target, content)` (at most two) and, when
    /// given, adding `forwarder/32` to `lo` and opening the forwarder's
    /// sockets on port 53 there, and making TCP port 53 to `tcp_fail_fast`
    /// unreachable.
    pub fn prepare(
        files: &[(&Path, &str)],
        forwarder: Option<Ipv4Addr>,
        tcp_fail_fast: Option<Ipv4Addr>,
    ) -> Result<Self, PrepareError> {
        if files.len() > 2 {
            return Err(PrepareError::TooManyFiles);
        }
        let scratch = SCRATCH_DIRS
            .iter()
            .map(Path::new)
            .find(|d| d.symlink_metadata().is_ok_and(|m| m.is_dir()))
            .ok_or(PrepareError::NoScratch)?;
        let files = files
            .iter()
            .enumerate()
            .map(|(i, (target, content))| {
                Ok(File {
                    scratch: cpath(&scratch.join(format!("pelagos-dns-{i}")))?,
                    target: cpath(target)?,
                    content: content.as_bytes().to_vec(),
                    target_text: target.to_path_buf(),
                })
            })
            .collect::<Result<Vec<_>, PrepareError>>()?;
        let mut netlink = Vec::new();
        if let Some(a) = forwarder {
            netlink.push((DnsStep::Address, encode(RouteNetlinkMessage::NewAddress(lo_address(a)), 1)));
        }
        if let Some(a) = tcp_fail_fast {
            netlink.push((DnsStep::Rule, encode(RouteNetlinkMessage::NewRule(tcp_unreachable(a)), 2)));
        }
        Ok(Self {
            root: c"/".to_owned(),
            scratch_dir: cpath(scratch)?,
            tmpfs: c"tmpfs".to_owned(),
            tmpfs_opts: c"mode=0755,size=1m".to_owned(),
            files,
            netlink,
            listen: forwarder.map(|a| sockaddr(a, crate::dns::forwarder::DNS_PORT)),
        })
    }

    /// Whether the child opens the forwarder's sockets (and hands them over).
    pub fn listens(&self) -> bool {
        self.listen.is_some()
    }

    /// True when the child needs a mount namespace of its own.
    pub fn needs_mount_ns(&self) -> bool {
        !self.files.is_empty()
    }

    /// The target of the file a [`DnsStep::MountFirst`]/[`DnsStep::MountSecond`] failure is about.
    pub fn target_of(&self, step: DnsStep) -> Option<&Path> {
        let i = match step {
            DnsStep::MountFirst => 0,
            DnsStep::MountSecond => 1,
            _ => return None,
        };
        self.files.get(i).map(|f| f.target_text.as_path())
    }

    /// Do it, in the child: async-signal-safe. The forwarder's sockets when
    /// it listens inside; `Err((step, errno))` on failure.
    pub fn apply(&self) -> Result<Option<ChildListeners>, (DnsStep, i32)> {
        if !self.files.is_empty() {
            self.mount_files()?;
        }
        for (step, msg) in &self.netlink {
            netlink_request(msg).map_err(|e| (*step, e))?;
        }
        let Some(addr) = &self.listen else { return Ok(None) };
        let udp = bound_socket(addr, libc::SOCK_DGRAM).map_err(|e| (DnsStep::ListenUdp, e))?;
        match bound_socket(addr, libc::SOCK_STREAM) {
            Ok(tcp) => Ok(Some(ChildListeners { udp, tcp })),
            Err(e) => {
                // SAFETY: closing the socket made above, once.
                unsafe { libc::close(udp) };
                Err((DnsStep::ListenTcp, e))
            }
        }
    }

    fn mount_files(&self) -> Result<(), (DnsStep, i32)> {
        let errno = || nix::errno::Errno::last_raw();
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: every pointer is a NUL-terminated string prepared before
        // fork and alive for the call; mount(2) is a raw system call.
        unsafe {
            if libc::mount(null, self.root.as_ptr(), null, libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0 {
                return Err((DnsStep::Propagation, errno()));
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            let opts = self.tmpfs_opts.as_ptr().cast();
            if libc::mount(self.tmpfs.as_ptr(), self.scratch_dir.as_ptr(), self.tmpfs.as_ptr(), flags, opts) != 0 {
                return Err((DnsStep::Scratch, errno()));
            }
        }
        for f in &self.files {
            if !write_new(&f.scratch, &f.content) {
                return Err((DnsStep::Write, errno()));
            }
        }
        let clones = self.clone_files()?;
        // The clones (or binds) keep the tmpfs alive; uncover the scratch directory.
        // SAFETY: umount2 on a NUL-terminated path prepared before fork.
        unsafe { libc::umount2(self.scratch_dir.as_ptr(), libc::MNT_DETACH) };
        let Some(clones) = clones else { return Ok(()) };
        for (i, f) in self.files.iter().enumerate() {
            // SAFETY: move_mount of a descriptor open_tree returned onto a
            // NUL-terminated path; the descriptor is closed exactly once.
            let failed = unsafe {
                let rc = libc::syscall(
                    libc::SYS_move_mount,
                    clones[i],
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    f.target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                );
                let failed = (rc != 0).then(errno);
                libc::close(clones[i]);
                failed
            };
            if let Some(e) = failed {
                return Err((mount_step(i), e));
            }
        }
        Ok(())
    }

    /// Clone each scratch file into a detached mount (`Some(fds)`), or, on a
    /// kernel without `open_tree` (or a seccomp filter that refuses it), bind
    /// each onto its target the old way, following symlinks (`None`).
    fn clone_files(&self) -> Result<Option<[libc::c_int; 2]>, (DnsStep, i32)> {
        let errno = || nix::errno::Errno::last_raw();
        let mut clones = [-1 as libc::c_int; 2];
        for (i, f) in self.files.iter().enumerate() {
            let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
            // SAFETY: open_tree on a NUL-terminated path prepared before fork.
            let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, f.scratch.as_ptr(), flags) };
            if fd >= 0 {
                clones[i] = fd as libc::c_int;
                continue;
            }
            if !matches!(errno(), libc::ENOSYS | libc::EPERM) {
                return Err((mount_step(i), errno()));
            }
            for &fd in &clones[..i] {
                // SAFETY: closing descriptors open_tree returned, once each.
                unsafe { libc::close(fd) };
            }
            for (i, f) in self.files.iter().enumerate() {
                let null = std::ptr::null::<libc::c_char>();
                // SAFETY: mount(2) with NUL-terminated paths prepared before fork.
                let rc = unsafe {
                    libc::mount(f.scratch.as_ptr(), f.target.as_ptr(), null, libc::MS_BIND, std::ptr::null())
                };
                if rc != 0 {
                    return Err((mount_step(i), errno()));
                }
            }
            return Ok(None);
        }
        Ok(Some(clones))
    }
}

fn mount_step(i: usize) -> DnsStep {
    if i == 0 { DnsStep::MountFirst } else { DnsStep::MountSecond }
}

/// Create `path` (mode 0644 whatever the umask) holding `data`. Async-signal-safe.
fn write_new(path: &CString, data: &[u8]) -> bool {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `path` is NUL-terminated; the mode is passed as the variadic argument open expects.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        return false;
    }
    let mut ok = true;
    let mut at = 0;
    while ok && at < data.len() {
        // SAFETY: writes from our buffer, within its length, to the fd opened above.
        let n = unsafe { libc::write(fd, data[at..].as_ptr().cast(), data.len() - at) };
        if n <= 0 {
            ok = n < 0 && nix::errno::Errno::last_raw() == libc::EINTR;
        } else {
            at += n as usize;
        }
    }
    // SAFETY: fchmod and close on the fd opened above; close exactly once.
    unsafe {
        ok = ok && libc::fchmod(fd, 0o644) == 0;
        let saved = nix::errno::Errno::last_raw();
        libc::close(fd);
        nix::errno::Errno::set_raw(saved);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::rtnl::ack_errno;
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::IpProtocol;
    use netlink_packet_route::rule::{RuleAction, RuleAttribute, RulePortRange};

    fn decode(bytes: &[u8]) -> RouteNetlinkMessage {
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).unwrap().payload {
            NetlinkPayload::InnerMessage(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prepared_messages_decode_to_the_rule_and_address_meant() {
        let a = Ipv4Addr::new(169, 254, 1, 1);
        let prep = NsDns::prepare(&[], Some(a), Some(a)).unwrap();
        assert!(!prep.needs_mount_ns());
        let RouteNetlinkMessage::NewAddress(addr) = decode(&prep.netlink[0].1) else { panic!() };
        assert_eq!((addr.header.index, addr.header.prefix_len), (1, 32));
        let RouteNetlinkMessage::NewRule(rule) = decode(&prep.netlink[1].1) else { panic!() };
        assert_eq!(rule.header.action, RuleAction::Unreachable);
        assert!(rule.attributes.contains(&RuleAttribute::DestinationPortRange(RulePortRange { start: 53, end: 53 })));
        assert!(rule.attributes.contains(&RuleAttribute::IpProtocol(IpProtocol::Tcp)));
    }

    #[test]
    fn acknowledgements_are_read_as_errno() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert_eq!(ack_errno(&ack), Ok(()));
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack_errno(&ack), Err(libc::EEXIST));
        assert_eq!(ack_errno(&[0; 8]), Err(libc::EPROTO));
    }

    #[test]
    fn files_get_scratch_paths_and_their_targets_are_kept_for_messages() {
        let prep = NsDns::prepare(&[(Path::new("/etc/resolv.conf"), "x"), (Path::new("/etc/hosts"), "y")], None, None)
            .unwrap();
        assert!(prep.needs_mount_ns());
        assert_eq!(prep.target_of(DnsStep::MountSecond), Some(Path::new("/etc/hosts")));
        assert!(prep.files[0].scratch.to_str().unwrap().ends_with("/pelagos-dns-0"));
        assert!(NsDns::prepare(&[(Path::new("/a"), ""); 3], None, None).is_err());
    }
}
