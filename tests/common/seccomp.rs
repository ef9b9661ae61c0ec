//! Run a command under a seccomp filter that refuses some syscalls with
//! EPERM, the way container runtimes' default profiles do, to see how
//! pelagos-net copes with a host that takes something away.

use std::os::unix::process::CommandExt;

/// A syscall refused when one of its arguments has any of `mask`'s bits.
#[derive(Debug, Clone, Copy)]
pub struct Refuse {
    pub nr: i64,
    /// Which argument (0-5); only its low 32 bits are looked at.
    pub arg: u32,
    pub mask: u32,
}

/// Install, in `cmd`'s process before exec, a filter refusing `rules` with
/// EPERM (with `no_new_privs`, as an unprivileged runtime would).
pub fn refuse(cmd: &mut std::process::Command, rules: &[Refuse]) {
    const fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
    }
    const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt, jf, k }
    }
    const LD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
    const RET: u32 = libc::BPF_RET | libc::BPF_K;
    // seccomp_data: nr at 0, args[i] at 16 + 8i (low 32 bits on little endian).
    // Per rule: ld nr; jeq nr, else skip 4; ld arg; jset mask, else skip 2;
    // ret errno; then (skipped to) the next rule.
    let mut filter = Vec::new();
    for r in rules {
        filter.push(stmt(LD, 0));
        filter.push(jump(JEQ, r.nr as u32, 0, 3));
        filter.push(stmt(LD, 16 + 8 * r.arg));
        filter.push(jump(JSET, r.mask, 0, 1));
        filter.push(stmt(RET, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32));
    }
    filter.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
    // SAFETY: between fork and exec we only call prctl/seccomp with a filter
    // that lives in this closure for the duration of the call.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
