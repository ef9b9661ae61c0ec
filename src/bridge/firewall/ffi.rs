//! A minimal binding to libnftables (`libnftables.so.1`, from nftables 1.0+)
//! and [`NftContext`], which owns one `struct nft_ctx`.
//!
//! Only seven functions are used, from `<nftables/libnftables.h>`. The
//! library is loaded with `dlopen("libnftables.so.1")` the first time a
//! context is created, not linked: rootless runs (pasta, slirp4netns,
//! loopback) never need it, do not pay ~0.8 ms of start-up for loading it
//! and its dependencies, and work on hosts without it. Building needs
//! nothing; bridge networks need the `libnftables1` package at run time.
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

/// The libnftables entry points, resolved once.
#[derive(Debug)]
struct Api {
    ctx_new: unsafe extern "C" fn(flags: u32) -> *mut RawCtx,
    ctx_free: unsafe extern "C" fn(ctx: *mut RawCtx),
    buffer_output: unsafe extern "C" fn(ctx: *mut RawCtx) -> c_int,
    buffer_error: unsafe extern "C" fn(ctx: *mut RawCtx) -> c_int,
    get_output_buffer: unsafe extern "C" fn(ctx: *mut RawCtx) -> *const c_char,
    get_error_buffer: unsafe extern "C" fn(ctx: *mut RawCtx) -> *const c_char,
    run_cmd_from_buffer: unsafe extern "C" fn(ctx: *mut RawCtx, buf: *const c_char) -> c_int,
}

static API: std::sync::OnceLock<Result<Api, String>> = std::sync::OnceLock::new();

fn api() -> Result<&'static Api, NftError> {
    API.get_or_init(load).as_ref().map_err(|e| NftError::new(e.clone()))
}

fn load() -> Result<Api, String> {
    const LIB: &CStr = c"libnftables.so.1";
    // SAFETY: dlopen with a valid C string; the handle is kept for the life
    // of the process (never dlclose'd), so resolved symbols stay valid.
    let handle = unsafe { libc::dlopen(LIB.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(
            "cannot load libnftables.so.1: install it (`sudo apt-get install libnftables1`); bridge networks need it"
                .into(),
        );
    }
    let sym = |name: &CStr| {
        // SAFETY: `handle` is a live dlopen handle and `name` a C string.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() { Err(format!("libnftables.so.1 lacks {}", name.to_string_lossy())) } else { Ok(p) }
    };
    // SAFETY: each symbol is the libnftables function of that name, whose C
    // signature (libnftables.h, nftables 1.0) matches the pointer type it is
    // transmuted to.
    unsafe {
        Ok(Api {
            ctx_new: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(u32) -> *mut RawCtx>(sym(
                c"nft_ctx_new",
            )?),
            ctx_free: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(*mut RawCtx)>(sym(
                c"nft_ctx_free",
            )?),
            buffer_output: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(*mut RawCtx) -> c_int>(sym(
                c"nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn(*mut RawCtx) -> c_int>(sym(
                c"nft_ctx_buffer_error",
            )?),
            get_output_buffer: std::mem::transmute::<
                *mut libc::c_void,
                unsafe extern "C" fn(*mut RawCtx) -> *const c_char,
            >(sym(c"nft_ctx_get_output_buffer")?),
            get_error_buffer: std::mem::transmute::<
                *mut libc::c_void,
                unsafe extern "C" fn(*mut RawCtx) -> *const c_char,
            >(sym(c"nft_ctx_get_error_buffer")?),
            run_cmd_from_buffer: std::mem::transmute::<
                *mut libc::c_void,
                unsafe extern "C" fn(*mut RawCtx, *const c_char) -> c_int,
            >(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// A failed nft script (libnftables' or the nft command's own error text),
/// or why none could be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nft: {message}")]
pub struct NftError {
    /// What nft printed to its error buffer (trimmed), or a description of
    /// the failure when it printed nothing.
    pub message: String,
}

impl NftError {
    pub(super) fn new(message: impl Into<String>) -> Self {
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
    api: &'static Api,
    /// The context's netfilter socket(s), found when it was created.
    sockets: Vec<RawFd>,
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
        let api = api()?;
        let guard = lock();
        let before = netfilter_sockets();
        // SAFETY: plain constructor; NULL is handled below.
        let raw = unsafe { (api.ctx_new)(NFT_CTX_DEFAULT) };
        let ctx = NonNull::new(raw).ok_or_else(|| NftError::new("nft_ctx_new returned NULL"))?;
        let sockets = before.map(|b| set_cloexec_on_new_netfilter_sockets(&b)).unwrap_or_default();
        // SAFETY: `ctx` is a live context, not yet shared.
        let (out, err) = unsafe { ((api.buffer_output)(ctx.as_ptr()), (api.buffer_error)(ctx.as_ptr())) };
        // Release before `this` can be dropped: its Drop takes the lock.
        drop(guard);
        let this = Self { ctx, api, sockets };
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
        let rc = unsafe { (self.api.run_cmd_from_buffer)(ctx, script.as_ptr()) };
        // SAFETY: `ctx` is live and buffered; the returned strings are valid
        // until the next call on `ctx`, and are copied before that.
        let (output, errors) =
            unsafe { (copy_c_str((self.api.get_output_buffer)(ctx)), copy_c_str((self.api.get_error_buffer)(ctx))) };
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
    /// Frees the context under the global lock, but hands the last close of
    /// its netfilter socket to [`super::closer`]: a close soon after a
    /// deletion waits for the kernel to free deleted rules and elements (an
    /// RCU grace period, 10-15 ms) and blocks every other commit meanwhile.
    fn drop(&mut self) {
        let guard = lock();
        let held: Vec<std::os::fd::OwnedFd> = self
            .sockets
            .iter()
            .filter_map(|&fd| {
                // SAFETY: F_DUPFD_CLOEXEC on the context's own socket, which
                // is still open here; the duplicate is owned at once.
                let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
                // SAFETY: `dup` is a fresh descriptor nothing else owns.
                (dup >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(dup) })
            })
            .collect();
        // SAFETY: `ctx` came from nft_ctx_new, is owned by `self` and freed
        // exactly once, here.
        unsafe { (self.api.ctx_free)(self.ctx.as_ptr()) };
        drop(guard);
        if !held.is_empty() {
            let fds = held.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
            super::closer::defer(fds, Box::new(held));
        }
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
fn set_cloexec_on_new_netfilter_sockets(before: &BTreeSet<RawFd>) -> Vec<RawFd> {
    let Some(now) = netfilter_sockets() else { return Vec::new() };
    let new: Vec<RawFd> = now.difference(before).copied().collect();
    for &fd in &new {
        // SAFETY: F_GETFD/F_SETFD on an fd number only read or set its
        // flags; a closed or reused number fails or is harmless.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    new
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
