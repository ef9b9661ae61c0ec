use super::*;

/// Where a program's absolute loads read from.
enum Data<'a> {
    /// `struct seccomp_data`: native byte order.
    Seccomp(&'a [u8]),
    /// A packet: the transport header at offset 0, the network header at
    /// `SKF_NET_OFF`; network byte order.
    Packet { net: &'a [u8], transport: &'a [u8] },
}

impl Data<'_> {
    fn load(&self, k: u32, size: usize) -> Option<u32> {
        let (buf, off, native) = match self {
            Data::Seccomp(b) => (*b, k as usize, true),
            Data::Packet { net, transport } => {
                if k >= NET {
                    (*net, (k - NET) as usize, false)
                } else {
                    (*transport, k as usize, false)
                }
            }
        };
        let bytes = buf.get(off..off + size)?;
        let mut word = [0u8; 4];
        Some(match (size, native) {
            (4, true) => {
                word.copy_from_slice(bytes);
                u32::from_ne_bytes(word)
            }
            (4, false) => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            (2, _) => u32::from(u16::from_be_bytes([bytes[0], bytes[1]])),
            _ => u32::from(bytes[0]),
        })
    }
}

/// Runs a classic BPF program (the instructions these programs use); a load
/// out of bounds ends it with 0, as the kernel does.
fn run(prog: &[Insn], data: &Data<'_>) -> u32 {
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let insn = prog[pc];
        let code = u32::from(insn.code);
        pc += 1;
        match code {
            LD_W | LD_H | LD_B => {
                let size = match code {
                    LD_W => 4,
                    LD_H => 2,
                    _ => 1,
                };
                match data.load(insn.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            RSH => a >>= insn.k,
            AND => a &= insn.k,
            JEQ | JGE | JGT => {
                let taken = match code {
                    JEQ => a == insn.k,
                    JGE => a >= insn.k,
                    _ => a > insn.k,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            RET => return insn.k,
            other => panic!("instruction {other:#x} not interpreted"),
        }
    }
}

fn seccomp_data(nr: i64, arch: u32, arg2: u64) -> Vec<u8> {
    let mut d = vec![0u8; 64];
    d[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
    d[4..8].copy_from_slice(&arch.to_ne_bytes());
    d[32..40].copy_from_slice(&arg2.to_ne_bytes());
    d
}

const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

fn verdict(prog: &[Insn], nr: i64, arg2: u64) -> u32 {
    run(prog, &Data::Seccomp(&seccomp_data(nr, NATIVE_ARCH.unwrap(), arg2)))
}

#[test]
fn connect_with_an_internet_address_length_is_notified_and_nothing_else() {
    let prog = seccomp_program(Intercept { bind: false, refuse_io_uring: false }).unwrap();
    for len in [16, 28, 128] {
        assert_eq!(verdict(&prog, libc::SYS_connect, len), NOTIFY, "connect, length {len}");
    }
    // AF_UNSPEC (disconnect) and short unix addresses; garbage lengths.
    for len in [0, 2, 15, 129, 0xffff_ffff, 0x1_0000_0010] {
        let want = if len == 0x1_0000_0010 { NOTIFY } else { ALLOW };
        assert_eq!(verdict(&prog, libc::SYS_connect, len), want, "connect, length {len:#x}");
    }
    for nr in [libc::SYS_bind, libc::SYS_sendto, libc::SYS_read, libc::SYS_socket, libc::SYS_io_uring_setup] {
        assert_eq!(verdict(&prog, nr, 16), ALLOW, "syscall {nr}");
    }
}

#[test]
fn every_listen_is_notified() {
    let prog = seccomp_program(Intercept { bind: false, refuse_io_uring: false }).unwrap();
    for backlog in [0, 5, 4096] {
        assert_eq!(verdict(&prog, libc::SYS_listen, backlog), NOTIFY);
    }
}

#[test]
fn io_uring_is_refused_only_when_asked() {
    let prog = seccomp_program(Intercept { bind: true, refuse_io_uring: true }).unwrap();
    assert_eq!(verdict(&prog, libc::SYS_io_uring_setup, 0), libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    assert_eq!(verdict(&prog, libc::SYS_io_uring_enter, 0), ALLOW);
    assert_eq!(verdict(&prog, libc::SYS_connect, 16), NOTIFY);
    assert_eq!(verdict(&prog, libc::SYS_bind, 16), NOTIFY);
    assert_eq!(verdict(&prog, libc::SYS_getpid, 16), ALLOW);
}

#[test]
fn bind_is_notified_only_when_asked_for() {
    let prog = seccomp_program(Intercept { bind: true, refuse_io_uring: false }).unwrap();
    assert_eq!(verdict(&prog, libc::SYS_bind, 16), NOTIFY);
    assert_eq!(verdict(&prog, libc::SYS_bind, 12), ALLOW, "a netlink address");
    assert_eq!(verdict(&prog, libc::SYS_connect, 28), NOTIFY);
    assert_eq!(verdict(&prog, libc::SYS_accept4, 16), ALLOW);
}

#[test]
fn another_architectures_syscalls_are_allowed_untouched() {
    let prog = seccomp_program(Intercept { bind: true, refuse_io_uring: true }).unwrap();
    let i386 = 0x4000_0003;
    assert_eq!(run(&prog, &Data::Seccomp(&seccomp_data(libc::SYS_connect, i386, 16))), ALLOW);
    // x32 numbers carry bit 30 on the native architecture.
    assert_eq!(verdict(&prog, libc::SYS_connect | 0x4000_0000, 16), ALLOW);
}

fn ipv4_header(src: [u8; 4]) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0] = 0x45;
    h[12..16].copy_from_slice(&src);
    h
}

fn ipv6_header(src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    h[8..24].copy_from_slice(&src.octets());
    h
}

fn tcp_header(sport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[13] = flags;
    t
}

const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

#[test]
fn a_switched_socket_takes_packets_from_its_peer_only() {
    let prog = peer_lock("10.231.0.1:443".parse().unwrap());
    let from = |src, port| run(&prog, &Data::Packet { net: &ipv4_header(src), transport: &tcp_header(port, SYN_ACK) });
    assert_eq!(from([10, 231, 0, 1], 443), ACCEPT);
    assert_eq!(from([10, 231, 0, 1], 444), DROP, "another port of the peer");
    assert_eq!(from([127, 0, 0, 1], 443), DROP, "the host's loopback");
    assert_eq!(from([10, 231, 0, 2], 443), DROP, "another host");
    let v6 = ipv6_header("::1".parse().unwrap());
    assert_eq!(run(&prog, &Data::Packet { net: &v6, transport: &tcp_header(443, SYN_ACK) }), DROP, "IPv6");
}

#[test]
fn an_ipv6_peer_is_matched_on_all_128_bits() {
    let peer: std::net::Ipv6Addr = "2001:db8::1:2".parse().unwrap();
    let prog = peer_lock(SocketAddr::new(peer.into(), 443));
    let from = |src: &str| {
        let net = ipv6_header(src.parse().unwrap());
        run(&prog, &Data::Packet { net: &net, transport: &tcp_header(443, ACK) })
    };
    assert_eq!(from("2001:db8::1:2"), ACCEPT);
    for other in ["2001:db8::1:3", "2001:db9::1:2", "::1", "2001:db8:0:1::1:2"] {
        assert_eq!(from(other), DROP, "{other}");
    }
    let v4 = ipv4_header([32, 1, 13, 184]);
    assert_eq!(run(&prog, &Data::Packet { net: &v4, transport: &tcp_header(443, ACK) }), DROP, "IPv4");
}

#[test]
fn an_ipv4_mapped_peer_is_matched_as_ipv4() {
    let prog = peer_lock("[::ffff:10.231.0.1]:80".parse().unwrap());
    let ok = Data::Packet { net: &ipv4_header([10, 231, 0, 1]), transport: &tcp_header(80, SYN_ACK) };
    assert_eq!(run(&prog, &ok), ACCEPT);
    let lo = Data::Packet { net: &ipv4_header([127, 0, 0, 1]), transport: &tcp_header(80, SYN_ACK) };
    assert_eq!(run(&prog, &lo), DROP);
}

#[test]
fn a_listener_handed_over_never_takes_a_syn_ack() {
    let prog = listener_lock();
    let net = ipv4_header([127, 0, 0, 1]);
    for (flags, want) in [(0x02, ACCEPT), (ACK, ACCEPT), (0x18, ACCEPT), (0x11, ACCEPT), (SYN_ACK, DROP), (0x1a, DROP)]
    {
        let t = tcp_header(5000, flags);
        assert_eq!(run(&prog, &Data::Packet { net: &net, transport: &t }), want, "flags {flags:#x}");
    }
}
