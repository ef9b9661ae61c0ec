//! Closing netfilter sockets off the caller's path.
//!
//! # Why
//!
//! Closing a netfilter netlink socket runs nf_tables' release notifier,
//! which takes the namespace's commit mutex and waits for pending
//! transaction-destroy work: freeing what a transaction deleted (a map
//! element of a removed forward) happens only after an RCU grace period,
//! 7-15 ms here. So a close within a grace period of *any* deletion in the
//! namespace, ours or another process's, sleeps that long, and while it
//! sleeps every other nftables commit in the namespace waits for the mutex.
//! A close after the destroy work has run costs microseconds.
//!
//! # What
//!
//! [`defer`] takes a socket (or a libnftables context) and drops it
//! [`DELAY`] later, on one janitor thread that exists only while something
//! is pending: by then the grace period is long over and the close neither
//! waits nor blocks other commits. A process that is about to exit (the
//! CLI, the CNI plugin) calls [`detach_pending`]: a child (cloned with the
//! parent's memory, so no page tables are copied) inherits
//! the pending sockets and holds them until this process is gone, so the
//! exit does not wait either; the child then closes them and exits. That
//! child holds nothing else (every other descriptor, stdout included, is
//! closed first), so whoever reads this process's output sees EOF at once.
//! The netfilter sockets kept for reuse (`nfsock`) go to that child too.

use crate::host::spawn::{ChildMain, ChildStack, spawn_detached};
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a socket is kept after its last use: several grace periods.
pub const DELAY: Duration = Duration::from_millis(100);

struct Pending {
    due: Instant,
    fds: Vec<RawFd>,
    /// Held only to be dropped when due.
    _item: Box<dyn Send>,
}

struct Queue {
    items: Vec<Pending>,
    janitor: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue { items: Vec::new(), janitor: false });
/// Links to delete in the child of [`detach_pending`] (interface indexes in
/// this process's network namespace).
static LINKS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Delete link `ifindex` (of the calling process's namespace) in the child
/// [`detach_pending`] starts, not on the caller's path: deleting a veth
/// waits for RCU grace periods in the kernel (10-20 ms here). Only for a
/// process that calls [`detach_pending`] before it exits (the CNI plugin).
pub fn defer_link_delete(ifindex: u32) {
    LINKS.lock().unwrap_or_else(|p| p.into_inner()).push(ifindex);
}

/// An `RTM_DELLINK` request for `ifindex` (no ack asked: the child does not read).
fn dellink_msg(ifindex: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&32u32.to_ne_bytes());
    m.extend_from_slice(&(libc::RTM_DELLINK).to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    m
}
static WAKE: Condvar = Condvar::new();

fn queue() -> std::sync::MutexGuard<'static, Queue> {
    QUEUE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drop `item`, which owns the netfilter sockets `fds`, [`DELAY`] from now
/// (see the module docs). If no janitor thread can be started, it is
/// dropped at once.
pub fn defer(fds: Vec<RawFd>, item: Box<dyn Send>) {
    let mut q = queue();
    q.items.push(Pending { due: Instant::now() + DELAY, fds, _item: item });
    if !q.janitor {
        let started = std::thread::Builder::new().name("nft-close".into()).spawn(janitor).is_ok();
        q.janitor = started;
        if !started {
            let items = std::mem::take(&mut q.items);
            drop(q);
            drop(items);
        }
    }
}

fn janitor() {
    let mut q = queue();
    loop {
        let now = Instant::now();
        let (due, later): (Vec<Pending>, Vec<Pending>) =
            std::mem::take(&mut q.items).into_iter().partition(|p| p.due <= now);
        q.items = later;
        if !due.is_empty() {
            drop(q);
            drop(due);
            q = queue();
            continue;
        }
        let Some(next) = q.items.iter().map(|p| p.due).min() else {
            q.janitor = false;
            return;
        };
        q = WAKE.wait_timeout(q, next.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// Before this process exits: hand every pending socket to a child
/// that closes them only after this process is gone (see the module docs),
/// and let that child delete the links [`defer_link_delete`] queued. Does
/// nothing when nothing is pending. Call it last, right before exit:
/// the child keeps waiting for every copy of a pipe's write end that this
/// process holds, so a process that goes on running keeps it too.
pub fn detach_pending() {
    let q = queue();
    let mut keep: Vec<RawFd> = q.items.iter().flat_map(|p| p.fds.iter().copied()).collect();
    keep.extend(super::nfsock::kept_fds());
    let links: Vec<Vec<u8>> =
        std::mem::take(&mut *LINKS.lock().unwrap_or_else(|p| p.into_inner())).into_iter().map(dellink_msg).collect();
    if keep.is_empty() && links.is_empty() {
        return;
    }
    let Ok((read_end, write_end)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else { return };
    use std::os::fd::AsRawFd;
    keep.push(read_end.as_raw_fd());
    keep.sort_unstable();
    // Shared with the child (same memory): never freed.
    let job: &'static Detached = Box::leak(Box::new(Detached { keep, links, read_end: read_end.as_raw_fd() }));
    let stack = Box::leak(Box::new(ChildStack::reserve(CHILD_STACK)));
    // SAFETY: `detached` makes only async-signal-safe system calls on the
    // leaked `job` (prepared above), touches nothing of ours but errno,
    // and leaves by `_exit`.
    let main = unsafe { ChildMain::new(detached) };
    // No page tables copied, no copy-on-write faults in the exiting parent.
    if spawn_detached(stack, main, job).is_ok() {
        // Our copy of the write end lives until we exit.
        std::mem::forget(write_end);
    }
    drop(q);
}

/// The child's stack size (it calls a handful of system calls).
const CHILD_STACK: usize = 64 * 1024;

/// What the child of [`detach_pending`] works on.
struct Detached {
    /// Descriptors it keeps (the sockets and `read_end`), sorted.
    keep: Vec<RawFd>,
    /// `RTM_DELLINK` requests to send.
    links: Vec<Vec<u8>>,
    /// The pipe whose EOF says the parent is gone.
    read_end: RawFd,
}

/// The child: close every descriptor but the kept ones, delete the links,
/// wait until the parent is gone, exit (the kernel closes the sockets).
/// It shares the parent's memory, errno included: nothing here depends
/// on errno but the read's retry.
fn detached(job: &Detached) -> libc::c_int {
    crate::host::fds::close_from_except(0, &job.keep);
    if !job.links.is_empty() {
        // SAFETY: socket/send/close on memory prepared before the clone.
        unsafe {
            let s = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
            if s >= 0 {
                for m in &job.links {
                    libc::send(s, m.as_ptr().cast(), m.len(), 0);
                }
                libc::close(s);
            }
        }
    }
    let mut byte = [0u8; 1];
    // SAFETY: reading into a local buffer from a descriptor we hold;
    // EOF comes when the parent (the only writer) has exited.
    while unsafe { libc::read(job.read_end, byte.as_mut_ptr().cast(), 1) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    // SAFETY: leaves without running destructors; the kernel closes
    // the inherited sockets, by now after the parent is gone.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_deferred_item_is_dropped_after_the_delay_not_before() {
        let dropped = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        defer(Vec::new(), Box::new(Flag(dropped.clone())));
        assert!(!dropped.load(Ordering::SeqCst));
        while !dropped.load(Ordering::SeqCst) {
            assert!(t.elapsed() < Duration::from_secs(10), "never dropped");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(t.elapsed() >= DELAY);
    }
}
