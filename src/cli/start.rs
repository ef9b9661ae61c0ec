//! How the two binaries (`pelagos-net`, `pelagos-net-cni`) start: a C
//! `main` of their own instead of std's runtime start, and libgcc's
//! unwinder linked in statically. `run` is timed against `unshare -Urn
//! true` and the CNI plugin is started once per container, so each
//! process start counts; on a 2-core VM these two cut about 0.2 ms of the
//! 1 ms our binary took to start beyond `/usr/bin/true`:
//!
//! - std's start reads and parses `/proc/self/maps` (glibc's
//!   `pthread_getattr_np`, for the main thread's stack guard) and sets up an
//!   alternate signal stack, about 0.09 ms. [`prepare`] does the rest of
//!   what std's start does that the binaries rely on: `SIGPIPE` ignored
//!   (writes to a closed pipe or socket are errors, not deaths; the
//!   command's process sets it back before `exec`) and descriptors 0-2
//!   open (on `/dev/null` when the caller closed them, so no file of ours
//!   becomes someone's stdout). What is lost: a stack overflow is a plain
//!   `SIGSEGV` without std's message, and a panic names the thread
//!   `<unnamed>` instead of `main`.
//! - The dynamic `libgcc_s.so.1` costs a library load, its relocations and
//!   its constructor (`__cpu_indicator_init`, several `cpuid`s, which trap
//!   in a VM), about 0.1 ms; its static twin `libgcc_eh.a` (the same
//!   unwinder, part of every gcc installation) is linked instead, so panics
//!   unwind and print as before.
//!
//! [`binary_main!`](crate::binary_main) writes both into a binary crate,
//! which also says `#![cfg_attr(not(test), no_main)]` (its unit test build
//! keeps the harness's `main`); its body returns the exit status, and the
//! process leaves through [`std::process::exit`], which flushes stdout.

/// What std's runtime start does that the binaries rely on (see the module
/// docs); called first thing in `main`.
pub fn prepare() {
    // SAFETY: signal(2) with a constant disposition, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll(2) on our stack array of three entries, without waiting.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0;
    for pfd in fds {
        let closed = match polled {
            true => pfd.revents & libc::POLLNVAL != 0,
            // SAFETY: fcntl(2) F_GETFD only asks whether the descriptor is open.
            false => (unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) }) == -1,
        };
        // SAFETY: open(2) of a constant path; the lowest free descriptor
        // is the closed one (0-2 are checked in order).
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } == -1 {
            // No /dev/null: nothing safe to run with (std aborts too).
            std::process::abort();
        }
    }
}

/// The C `main` of a binary crate that says `#![no_main]`: [`prepare`],
/// then `$body()` (returning the exit status as `i32`; 101 when it
/// panics), then [`std::process::exit`]; and the static unwinder (see the
/// module docs).
#[macro_export]
#[doc(hidden)]
macro_rules! binary_main {
    ($body:path) => {
        // The unwinder from libgcc_eh.a instead of libgcc_s.so.1 (see
        // `pelagos_net::cli::start`): named by this crate, so it comes
        // before std's `-lgcc_s` on the link line and that one is dropped.
        #[cfg(all(target_os = "linux", target_env = "gnu", not(test)))]
        #[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
        unsafe extern "C" {}

        // A unit test build keeps the test harness's `main`.
        #[cfg(test)]
        const _: fn() -> i32 = $body;

        /// The process's entry, called by the C runtime.
        #[cfg(not(test))]
        #[unsafe(no_mangle)]
        extern "C" fn main(_argc: ::std::ffi::c_int, _argv: *const *const ::std::ffi::c_char) -> ::std::ffi::c_int {
            $crate::cli::start::prepare();
            // A panic exits 101 after its message, as under std's start.
            let status: i32 = ::std::panic::catch_unwind($body).unwrap_or(101);
            ::std::process::exit(status)
        }
    };
}
