//! Starting a child that shares this process's memory (`clone(2)` with
//! `CLONE_VM`), the way `posix_spawn` does: no page tables are copied and
//! no copy-on-write fault follows, however large the caller is.
//!
//! The child runs on a stack of its own ([`ChildStack`]) the function of a
//! [`ChildMain`], which only `unsafe` code can make: whoever makes one
//! promises what such a child may do (see [`ChildMain::new`]). With that
//! promise kept, starting the child is safe: the stack and the argument
//! are borrowed for as long as the child can use them, either because the
//! caller is suspended until the child has called `exec` or exited
//! ([`spawn_until_exec`], `CLONE_VFORK`) or because both live for ever
//! ([`spawn_detached`]).
//!
//! Nothing here allocates: a child of a fork (the namespace child's init)
//! may start its command with it.

use nix::errno::Errno;
use nix::unistd::Pid;

/// Below this a stack would not hold the trampoline's frame.
const MIN_STACK: usize = 16 * 1024;

/// The stack a memory-sharing child runs on: reserved, never written by
/// this process, so only the pages the child touches are faulted in.
pub struct ChildStack(Vec<u8>);

impl ChildStack {
    /// Reserve `size` bytes (at least 16 KiB).
    pub fn reserve(size: usize) -> Self {
        Self(Vec::with_capacity(size.max(MIN_STACK)))
    }

    /// Put `start` at the top of the stack; returns where it is and the
    /// 16-byte aligned stack pointer below it.
    fn place<T>(&mut self, start: Start<'_, T>) -> (*mut libc::c_void, *mut libc::c_void) {
        let base = self.0.as_mut_ptr() as usize;
        let top = base + self.0.capacity();
        let at = (top - std::mem::size_of::<Start<'_, T>>()) & !(std::mem::align_of::<Start<'_, T>>() - 1);
        debug_assert!(at - base >= MIN_STACK / 2);
        let slot = at as *mut Start<'_, T>;
        // SAFETY: `slot` lies inside this stack's reserved capacity (which
        // is at least MIN_STACK), aligned for `Start`; the stack is borrowed
        // exclusively, so nothing else reads or writes it meanwhile.
        unsafe { slot.write(start) };
        (slot.cast(), (at & !15) as *mut libc::c_void)
    }
}

/// The code a memory-sharing child runs; its return value is the child's
/// exit status (if it neither calls `exec` nor `_exit`).
pub struct ChildMain<T>(fn(&T) -> libc::c_int);

impl<T> ChildMain<T> {
    /// # Safety
    ///
    /// `main` runs in a process that shares the caller's memory and its
    /// thread's thread-local storage (errno included) while other threads
    /// of the caller may hold locks (the allocator's among them). It must
    /// make only async-signal-safe calls (raw system calls) on memory
    /// prepared before the spawn, touch no thread-local but errno, write
    /// nothing of the caller's but through its argument, and leave by
    /// `exec`, `_exit` or by returning, without unwinding.
    pub const unsafe fn new(main: fn(&T) -> libc::c_int) -> Self {
        Self(main)
    }
}

/// What the trampoline finds at the top of the child's stack.
struct Start<'a, T> {
    main: fn(&T) -> libc::c_int,
    arg: &'a T,
}

extern "C" fn trampoline<T>(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `start` is the `Start` that `ChildStack::place` wrote at the
    // top of this child's stack; its argument outlives the child's use of
    // it (see `spawn_until_exec` and `spawn_detached`).
    let start = unsafe { &*start.cast::<Start<'_, T>>() };
    (start.main)(start.arg)
}

/// Start `main(arg)` in a child that shares this process's memory and
/// wait (`CLONE_VFORK`) until it has called `exec` or exited. SIGCHLD
/// tells its exit, as for a fork's child.
pub fn spawn_until_exec<T>(stack: &mut ChildStack, main: ChildMain<T>, arg: &T) -> Result<Pid, Errno> {
    // SAFETY: the calling thread is suspended until the child has exec'd
    // or exited, so `stack` and `arg`, borrowed for this call, outlive the
    // child's use of them, and the child stands in for this thread: it uses
    // `arg` as this thread could, while other threads reach `arg` only as
    // its type allows them to; `main` keeps `ChildMain::new`'s promise.
    unsafe { spawn(stack, main, arg, libc::CLONE_VFORK) }
}

/// Start `main(arg)` in a child that shares this process's memory and may
/// outlive the call, and the process too. SIGCHLD tells its exit.
pub fn spawn_detached<T: Sync>(
    stack: &'static mut ChildStack,
    main: ChildMain<T>,
    arg: &'static T,
) -> Result<Pid, Errno> {
    // SAFETY: `stack` is the child's for ever (borrowed mutably for the
    // rest of the program) and `arg` lives for ever and may be read from
    // several threads at once (`Sync`); `main` keeps `ChildMain::new`'s
    // promise.
    unsafe { spawn(stack, main, arg, 0) }
}

/// # Safety
/// `stack` and `arg` must stay valid, and `stack` unused by anyone else,
/// for as long as the child uses them.
unsafe fn spawn<T>(stack: &mut ChildStack, main: ChildMain<T>, arg: &T, flags: libc::c_int) -> Result<Pid, Errno> {
    let (start, sp) = stack.place(Start { main: main.0, arg });
    // SAFETY: clone(3) with a valid function, the aligned top of a stack
    // only the child uses and an argument the caller keeps valid; the
    // child shares memory (CLONE_VM) and runs only what `ChildMain::new`
    // allows, then the trampoline's return ends it.
    let pid = unsafe { libc::clone(trampoline::<T>, sp, flags | libc::CLONE_VM | libc::SIGCHLD, start) };
    if pid < 0 { Err(Errno::last()) } else { Ok(Pid::from_raw(pid)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use std::os::fd::{AsRawFd, RawFd};

    fn write_and_exit(fd: &RawFd) -> libc::c_int {
        // SAFETY: a write of a constant byte to a pipe the test holds open.
        unsafe { libc::write(*fd, b"x".as_ptr().cast(), 1) };
        7
    }

    fn exec_true(path: &std::ffi::CString) -> libc::c_int {
        let argv = [path.as_ptr(), std::ptr::null()];
        // SAFETY: execv with a NUL-terminated path and argv prepared before the spawn.
        unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
        127
    }

    #[test]
    fn a_child_until_exec_runs_its_function_and_exits_with_its_value() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let mut stack = ChildStack::reserve(64 * 1024);
        // SAFETY: `write_and_exit` makes one write(2) and returns.
        let main = unsafe { ChildMain::new(write_and_exit) };
        let pid = spawn_until_exec(&mut stack, main, &tx.as_raw_fd()).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
        drop(tx);
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&rx, &mut byte).unwrap(), 1);
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn a_child_until_exec_that_execs_is_the_program() {
        let path = std::ffi::CString::new("/bin/true").unwrap();
        let mut stack = ChildStack::reserve(64 * 1024);
        // SAFETY: `exec_true` only calls execv(2).
        let main = unsafe { ChildMain::new(exec_true) };
        let pid = spawn_until_exec(&mut stack, main, &path).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 0));
    }

    #[test]
    fn a_detached_child_outlives_the_call_and_sees_its_argument() {
        let (rx, tx) = nix::unistd::pipe().unwrap();
        let fd: &'static RawFd = Box::leak(Box::new(tx.as_raw_fd()));
        let stack = Box::leak(Box::new(ChildStack::reserve(0)));
        // SAFETY: `write_and_exit` makes one write(2) and returns.
        let main = unsafe { ChildMain::new(write_and_exit) };
        let pid = spawn_detached(stack, main, fd).unwrap();
        assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
        drop(tx);
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(&rx, &mut byte).unwrap(), 1);
    }
}
