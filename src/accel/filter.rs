//! The accelerator's classic BPF programs, built as data: the seccomp
//! filter the command runs under, and the locks on the sockets it is
//! handed. Pure; the tests run the programs through a small interpreter.
//!
//! # The seccomp filter
//!
//! `connect(2)` (and `bind(2)` when published TCP ports can be handed
//! over) with an address length a socket address of the internet families
//! can have (16 to 128 bytes), and every `listen(2)`, reach the supervisor
//! (`SECCOMP_RET_USER_NOTIF`); everything else, and every syscall of
//! another architecture's ABI (x32, i386 through `int 0x80`, which the
//! accelerator never switches), is allowed at once. The filter refuses
//! nothing, except `io_uring_setup(2)` under the device lock (see
//! [`Intercept::refuse_io_uring`]).
//!
//! # The locks
//!
//! The security of a switched socket does not rest on the filter: a racing
//! thread can swap the descriptor a notification names, io_uring can
//! connect without a syscall the filter sees, and another filter stacked
//! after ours can answer for it. What the command gets is therefore locked
//! by the socket itself, with a filter attached by the supervisor and
//! locked (`SO_LOCK_FILTER`: neither detached nor replaced without
//! `CAP_NET_ADMIN` in the owner's namespace, which the command never has):
//!
//! - an egress socket accepts packets only from the peer the supervisor
//!   checked and connected to (address and TCP port). Reconnected anywhere
//!   else, by any path, it never completes a handshake: the SYN-ACK is
//!   dropped before TCP sees it.
//! - a listener handed over accepts no SYN-ACK: turned into a client (shut
//!   down, then connected), it can complete no connection either. The
//!   connections it accepts inherit the lock and never see a SYN-ACK
//!   anyway.

use std::net::{IpAddr, SocketAddr};

/// One classic BPF instruction.
pub type Insn = libc::sock_filter;

/// `SKF_NET_OFF`: loads relative to the network header.
const NET: u32 = libc::SKF_NET_OFF as u32;
/// A socket filter's verdict: keep the whole packet.
pub const ACCEPT: u32 = u32::MAX;
/// A socket filter's verdict: drop it.
pub const DROP: u32 = 0;

/// The audit architecture of the native syscall ABI.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_ARCH: Option<u32> = Some(0xc000_003e);
/// The audit architecture of the native syscall ABI.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_ARCH: Option<u32> = Some(0xc000_00b7);
/// The audit architecture of the native syscall ABI (`None`: the
/// accelerator is not available on this architecture).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const NATIVE_ARCH: Option<u32> = None;

/// `offsetof(struct seccomp_data, nr)`, `arch`, and the low word of `args[2]`.
const SD_NR: u32 = 0;
const SD_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const SD_ARG2_LOW: u32 = 16 + 2 * 8;
#[cfg(target_endian = "big")]
const SD_ARG2_LOW: u32 = 16 + 2 * 8 + 4;

/// Shortest and longest address a `connect`/`bind` of an internet socket
/// can pass (`sockaddr_in`, `sockaddr_storage`).
pub const MIN_ADDR_LEN: u32 = 16;
/// See [`MIN_ADDR_LEN`].
pub const MAX_ADDR_LEN: u32 = 128;

/// Which syscalls the filter hands to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intercept {
    /// `bind(2)` too (published TCP ports to hand over).
    pub bind: bool,
    /// Refuse `io_uring_setup(2)` (`ENOSYS`, as for a kernel without it):
    /// under the device lock, io_uring's connect, bind and listen would
    /// reach a switched socket without a syscall the supervisor sees.
    pub refuse_io_uring: bool,
}

const fn stmt(code: u32, k: u32) -> Insn {
    Insn { code: code as u16, jt: 0, jf: 0, k }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code: code as u16, jt, jf, k }
}

const LD_W: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const LD_H: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
const LD_B: u32 = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const JGT: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
const RSH: u32 = libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K;
const AND: u32 = libc::BPF_ALU | libc::BPF_AND | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

/// The command's seccomp filter, or `None` on an architecture without one.
pub fn seccomp_program(intercept: Intercept) -> Option<Vec<Insn>> {
    let arch = NATIVE_ARCH?;
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let allow = libc::SECCOMP_RET_ALLOW;
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    // A syscall number that matches nothing stands for a check left out.
    const NONE: u32 = u32::MAX;
    let bind_nr = if intercept.bind { libc::SYS_bind as u32 } else { NONE };
    let uring_nr = if intercept.refuse_io_uring { libc::SYS_io_uring_setup as u32 } else { NONE };
    // Jump offsets count the instructions skipped; the layout is:
    //  0 ld arch; 1 jeq arch; 2 ld nr; 3 jeq listen; 4 jeq io_uring_setup;
    //  5 jeq connect; 6 jeq bind; 7 ld args[2]; 8 jge 16; 9 jgt 128;
    //  10 ret notify; 11 ret allow; 12 ret ENOSYS
    Some(vec![
        stmt(LD_W, SD_ARCH),
        jump(JEQ, arch, 0, 9),
        stmt(LD_W, SD_NR),
        jump(JEQ, libc::SYS_listen as u32, 6, 0),
        jump(JEQ, uring_nr, 7, 0),
        jump(JEQ, libc::SYS_connect as u32, 1, 0),
        jump(JEQ, bind_nr, 0, 4),
        stmt(LD_W, SD_ARG2_LOW),
        jump(JGE, MIN_ADDR_LEN, 0, 2),
        jump(JGT, MAX_ADDR_LEN, 1, 0),
        stmt(RET, notify),
        stmt(RET, allow),
        stmt(RET, enosys),
    ])
}

/// The lock of a switched egress socket: packets from `peer` only (its
/// address and TCP source port; an IPv4-mapped peer is matched as IPv4).
pub fn peer_lock(peer: SocketAddr) -> Vec<Insn> {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let words: Vec<u32> = match ip {
        IpAddr::V4(v4) => vec![u32::from(v4)],
        IpAddr::V6(v6) => v6.octets().chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect(),
    };
    let (version, saddr_at) = if words.len() == 1 { (4, 12) } else { (6, 8) };
    // Layout: ldb version; rsh 4; jeq version; (ld word; jeq word) per word;
    // ldh sport; jeq port; ret accept; ret drop. `to_drop(i)` is the jump
    // offset from instruction i to the final `ret drop`.
    let len = 3 + 2 * words.len() + 4;
    let to_drop = |i: usize| (len - 1 - i - 1) as u8;
    let mut prog = vec![stmt(LD_B, NET), stmt(RSH, 4), jump(JEQ, version, 0, to_drop(2))];
    for (n, w) in words.iter().enumerate() {
        prog.push(stmt(LD_W, NET.wrapping_add(saddr_at + 4 * n as u32)));
        let i = prog.len();
        prog.push(jump(JEQ, *w, 0, to_drop(i)));
    }
    prog.push(stmt(LD_H, 0));
    let i = prog.len();
    prog.push(jump(JEQ, u32::from(peer.port()), 0, to_drop(i)));
    prog.push(stmt(RET, ACCEPT));
    prog.push(stmt(RET, DROP));
    prog
}

/// The lock of a listener handed over: no SYN-ACK ever (TCP flags SYN and
/// ACK both set).
pub fn listener_lock() -> Vec<Insn> {
    const SYN_ACK: u32 = 0x12;
    vec![stmt(LD_B, 13), stmt(AND, SYN_ACK), jump(JEQ, SYN_ACK, 1, 0), stmt(RET, ACCEPT), stmt(RET, DROP)]
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
