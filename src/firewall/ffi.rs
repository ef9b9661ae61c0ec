//! A minimal binding to libnftables (`libnftables.so.1`, from nftables 1.0+)
//! and [`NftContext`], which owns one `struct nft_ctx`.
//!
//! Only seven functions are declared, by hand, from
//! `<nftables/libnftables.h>`; linking needs `libnftables-dev` (the
//! unversioned `libnftables.so`), running needs `libnftables1`.
//!
//! # Decisions
//!
//! - **A context belongs to the network namespace it was created in.**
//!   `nft_ctx_new(NFT_CTX_DEFAULT)` opens its netfilter netlink socket
//!   immediately, in the creating thread's namespace, and every later
//!   command goes through that socket, whichever thread runs it. So a
//!   context can be created on a thread that has `setns`'d into a namespace
//!   and then used anywhere; [`NftContext`] is `Send` for that reason.
//! - **A global lock serialises every libnftables call.** libnftables keeps
//!   process-global state (one-time initialisation in `nft_ctx_new`, an
//!   interface cache released on every run), so two contexts must not run
//!   concurrently.
//! - **Socket failure is checked before libnftables sees it**, because
//!   libnftables `exit()`s the process when it cannot open its socket. A
//!   probe socket is opened first and its error returned instead.
//! - **libnftables' socket is made close-on-exec**: it opens it without
//!   `SOCK_CLOEXEC`, and a runtime that forks and execs containers must not
//!   leak a netfilter socket into them.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString, c_char, c_int};
use std::fs;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};

/// Opaque `struct nft_ctx`.
#[repr(C)]
struct RawCtx {
    _private: [u8; 0],
    _not_send_sync: PhantomData<*mut u8>,
}

/// `NFT_CTX_DEFAULT`: a context with a netlink socket.
const NFT_CTX_DEFAULT: u32 = 0;

#[link(name = "nftables")]
unsafe extern "C" {
    fn nft_ctx_new(flags: u32) -> *mut RawCtx;
    fn nft_ctx_free(ctx: *mut RawCtx);
    fn nft_ctx_buffer_output(ctx: *mut RawCtx) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut RawCtx) -> c_int;
    fn nft_ctx_get_output_buffer(ctx: *mut RawCtx) -> *const c_char;
    fn nft_ctx_get_error_buffer(ctx: *mut RawCtx) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut RawCtx, buf: *const c_char) -> c_int;
}

/// A failed libnftables call, with nft's own error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nft: {message}")]
pub struct NftError {
    /// What nft printed to its error buffer (trimmed), or a description of
    /// the failure when it printed nothing.
    pub message: String,
}

impl NftError {
    fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}

/// Serialises all libnftables calls in the process (see the module docs).
static LIBNFTABLES: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    // A panic while holding the guard cannot leave libnftables half-called
    // from Rust's point of view; keep going.
    LIBNFTABLES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An owned libnftables context with buffered output and errors, bound to
/// the network namespace of the thread that created it.
#[derive(Debug)]
pub struct NftContext {
    ctx: NonNull<RawCtx>,
}

// SAFETY: an nft_ctx has no thread affinity (its socket is an fd, its
// buffers are heap memory); `run` takes `&mut self` and every libnftables
// call holds the global lock, so the context is never used concurrently.
unsafe impl Send for NftContext {}

impl NftContext {
    /// A context whose netlink socket lives in the calling thread's network
    /// namespace.
    pub fn new() -> Result<Self, NftError> {
        socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(|e| NftError::new(format!("cannot open a netfilter netlink socket: {e}")))?;
        let guard = lock();
        let before = netfilter_sockets();
        // SAFETY: plain constructor; NULL is handled below.
        let raw = unsafe { nft_ctx_new(NFT_CTX_DEFAULT) };
        let ctx = NonNull::new(raw).ok_or_else(|| NftError::new("nft_ctx_new returned NULL"))?;
        if let Some(before) = before {
            set_cloexec_on_new_netfilter_sockets(&before);
        }
        // SAFETY: `ctx` is a live context, not yet shared.
        let (out, err) = unsafe { (nft_ctx_buffer_output(ctx.as_ptr()), nft_ctx_buffer_error(ctx.as_ptr())) };
        // Release before `this` can be dropped: its Drop takes the lock.
        drop(guard);
        let this = Self { ctx };
        if out != 0 || err != 0 {
            return Err(NftError::new("cannot buffer libnftables output"));
        }
        Ok(this)
    }

    /// Runs `script` (nft syntax, any number of commands) as one
    /// transaction; returns what nft printed (listings), or its error text.
    pub fn run(&mut self, script: &str) -> Result<String, NftError> {
        let script = CString::new(script).map_err(|_| NftError::new("script contains a NUL byte"))?;
        let _guard = lock();
        let ctx = self.ctx.as_ptr();
        // SAFETY: `ctx` is live and exclusively ours (`&mut self`), the
        // script is a valid C string that outlives the call.
        let rc = unsafe { nft_run_cmd_from_buffer(ctx, script.as_ptr()) };
        // SAFETY: `ctx` is live and buffered; the returned strings are valid
        // until the next call on `ctx`, and are copied before that.
        let (output, errors) =
            unsafe { (copy_c_str(nft_ctx_get_output_buffer(ctx)), copy_c_str(nft_ctx_get_error_buffer(ctx))) };
        if rc != 0 {
            let message = errors.trim();
            let message = if message.is_empty() {
                format!("libnftables failed (status {rc}) without a message")
            } else {
                message.to_owned()
            };
            return Err(NftError::new(message));
        }
        if !errors.trim().is_empty() {
            log::warn!("nft: {}", errors.trim());
        }
        Ok(output)
    }
}

impl Drop for NftContext {
    fn drop(&mut self) {
        let _guard = lock();
        // SAFETY: `ctx` came from nft_ctx_new, is owned by `self` and freed
        // exactly once, here.
        unsafe { nft_ctx_free(self.ctx.as_ptr()) };
    }
}

/// Copies a possibly-NULL C string into a `String`, replacing invalid UTF-8.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string valid for this call.
unsafe fn copy_c_str(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// The process's netfilter netlink sockets, or `None` if `/proc/self/fd` is
/// unreadable (then the cloexec fix-up is skipped). Compared as sockets, not
/// bare numbers: listing the directory itself takes (and frees) an fd number
/// that libnftables may reuse.
fn netfilter_sockets() -> Option<BTreeSet<RawFd>> {
    let dir = fs::read_dir("/proc/self/fd").ok()?;
    let fds: Vec<RawFd> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    Some(
        fds.into_iter()
            .filter(|&fd| {
                sockopt_int(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
                    && sockopt_int(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
            })
            .collect(),
    )
}

/// Sets `FD_CLOEXEC` on netfilter netlink sockets opened since `before`.
fn set_cloexec_on_new_netfilter_sockets(before: &BTreeSet<RawFd>) {
    let Some(now) = netfilter_sockets() else { return };
    for &fd in now.difference(before) {
        // SAFETY: F_GETFD/F_SETFD on an fd number only read or set its
        // flags; a closed or reused number fails or is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// An `int` socket option at `SOL_SOCKET`, or `None` (not a socket, closed).
fn sockopt_int(fd: RawFd, name: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
    (rc == 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_error_displays_nft_message() {
        assert_eq!(NftError::new("No such file or directory").to_string(), "nft: No such file or directory");
    }

    #[test]
    fn copy_c_str_of_null_is_empty() {
        // SAFETY: NULL is allowed by the contract.
        assert_eq!(unsafe { copy_c_str(std::ptr::null()) }, "");
    }
}
