//! Tests of `procnet`.
use super::*;

const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
vh\t00000000\t0100C80A\t0003\t0\t0\t0\t00000000\t0\t0\t0
vh\t0000C80A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 638 1 0000000020c91464 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 9113 1 0000000022bd070f 100 0 0 10 0
   2: 0100007F:E1AC 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 9118 2 000000007f883b07 20 0 0 10 -1
";

const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2383 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9115 1 0000000073beb446 100 0 0 10 0
   1: 00000000000000000000000001000000:2382 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9114 1 000000008ff83feb 100 0 0 10 0
";

const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 8318: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9116 2 00000000d1d7a8d0 0
 8319: 0100007F:0035 0100007F:14E9 01 00000000:00000000 00:00000000 00000000     0        0 9120 2 00000000d1d7a8d1 0
";

const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 8319: 00000000000000000000000001000000:14EA 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 9117 2 00000000f7c3f4f5 0
";

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
#[cfg_attr(target_endian = "big", ignore = "samples captured on little-endian")]
fn route_sample_decodes_default_via_gateway() {
    let routes = parse_route(ROUTE).unwrap();

    assert_eq!(routes.len(), 2);
    assert_eq!(
        routes[0],
        RouteEntry {
            iface: "vh".into(),
            destination: Ipv4Addr::UNSPECIFIED,
            gateway: Ipv4Addr::new(10, 200, 0, 1),
            mask: Ipv4Addr::UNSPECIFIED,
            flags: RTF_UP | RTF_GATEWAY,
        }
    );
    assert_eq!(routes[1].destination, Ipv4Addr::new(10, 200, 0, 0));
    assert_eq!(routes[1].mask, Ipv4Addr::new(255, 255, 0, 0));
    assert!(has_default_route(&routes));
}

#[test]
fn route_table_without_default_route_is_not_ready() {
    let header_only = ROUTE.lines().next().unwrap();
    let on_link_only: String = ROUTE.lines().take(1).chain(ROUTE.lines().skip(2)).collect::<Vec<_>>().join("\n");

    assert!(!has_default_route(&parse_route(header_only).unwrap()));
    assert!(!has_default_route(&parse_route(&on_link_only).unwrap()));
}

#[test]
fn default_route_that_is_down_or_on_lo_does_not_count() {
    let default = |iface: &str, flags| RouteEntry {
        iface: iface.into(),
        destination: Ipv4Addr::UNSPECIFIED,
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        mask: Ipv4Addr::UNSPECIFIED,
        flags,
    };

    assert!(!has_default_route(&[default("eth0", RTF_GATEWAY)]));
    assert!(!has_default_route(&[default("lo", RTF_UP)]));
    assert!(has_default_route(&[default("eth0", RTF_UP)]));
}

#[test]
fn malformed_route_line_names_file_line_and_field() {
    let text = format!("{ROUTE}eth0\t00000000\tnot-hex\t0003\t0\t0\t0\t00000000\n");

    let err = parse_route(&text).unwrap_err();

    assert_eq!(err.to_string(), "malformed line 4 of /proc/net/route: bad gateway \"not-hex\"");
}

#[test]
fn truncated_route_line_reports_missing_column() {
    let err = parse_route("Iface\tDestination\neth0\t00000000\t00000000\t0003\n").unwrap_err();

    assert!(matches!(err, ProcNetError::Parse { line: 2, field: "mask", .. }), "{err:?}");
}

#[test]
#[cfg_attr(target_endian = "big", ignore = "samples captured on little-endian")]
fn tcp_sample_decodes_listeners_and_connections() {
    let entries = parse_sockets(TCP, SockKind::Tcp).unwrap();

    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].local, sock("0.0.0.0", 2024));
    assert_eq!(entries[1].local, sock("127.0.0.1", 8080));
    assert_eq!((entries[1].uid, entries[1].inode), (1000, 9113));
    assert_eq!(entries[2].remote, sock("127.0.0.1", 8080));
    assert_eq!(entries[2].state, 0x01);
    assert!(is_listening_tcp(&entries[1]));
    assert!(!is_listening_tcp(&entries[2]));
}

#[test]
#[cfg_attr(target_endian = "big", ignore = "samples captured on little-endian")]
fn tcp6_sample_decodes_loopback_and_unspecified() {
    let entries = parse_sockets(TCP6, SockKind::Tcp6).unwrap();

    assert_eq!(entries[0].local, sock("::", 9091));
    assert_eq!(entries[1].local, sock("::1", 9090));
    assert_eq!(entries[1].inode, 9114);
}

#[test]
#[cfg_attr(target_endian = "big", ignore = "samples captured on little-endian")]
fn ipv6_words_are_native_order_per_word() {
    assert_eq!(hex_ipv6("B80D0120000000000000000001000000"), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(hex_ipv6("0000000000000000FFFF00000100007F"), Some("::ffff:127.0.0.1".parse().unwrap()));
    assert_eq!(hex_ipv6("00000000"), None);
}

#[test]
#[cfg_attr(target_endian = "big", ignore = "samples captured on little-endian")]
fn udp_listeners_are_bound_unconnected_sockets() {
    let v4 = parse_sockets(UDP, SockKind::Udp).unwrap();
    let v6 = parse_sockets(UDP6, SockKind::Udp6).unwrap();

    assert_eq!(listeners_on(&v4, 5353).map(|e| e.inode).collect::<Vec<_>>(), [9116]);
    assert_eq!(listeners_on(&v4, 53).count(), 0, "connected socket is not a listener");
    assert_eq!(listeners_on(&v6, 5354).next().unwrap().local, sock("::1", 5354));
    assert!(!is_listening_tcp(&v4[0]));
}

#[test]
fn listeners_on_filters_by_port_and_state() {
    let entries = parse_sockets(TCP, SockKind::Tcp).unwrap();

    assert_eq!(listeners_on(&entries, 8080).map(|e| e.inode).collect::<Vec<_>>(), [9113]);
    assert_eq!(listeners_on(&entries, 57772).count(), 0, "client side is not a listener");
    assert_eq!(listeners_on(&entries, 1).count(), 0);
}

#[test]
fn malformed_socket_line_names_the_table() {
    let text = format!("{TCP}   3: 0100007F:1F9 00000000:0000 0A 0:0 0:0 0 0 0 1\n");

    let err = parse_sockets(&text, SockKind::Tcp).unwrap_err();

    assert_eq!(err.to_string(), "malformed line 5 of /proc/net/tcp: bad local address \"0100007F:1F9\"");
}

#[test]
fn ipv4_address_in_tcp6_table_is_rejected() {
    let text = format!("header\n 0: {} 00000000:0000 0A 0:0 0:0 0 0 0 1\n", "0100007F:1F90");

    assert!(parse_sockets(&text, SockKind::Tcp6).is_err());
}

#[test]
fn fd_links_yield_only_socket_inodes() {
    let links = ["socket:[12345]", "pipe:[77]", "/dev/null", "socket:[9]", "socket:[x]", "anon_inode:[eventfd]"];

    let inodes = socket_inodes_from_fd_links(links);

    assert_eq!(inodes, HashSet::from([12345, 9]));
}

#[test]
fn socket_inodes_of_reads_fd_links_under_injected_proc_root() {
    let root = tempfile::tempdir().unwrap();
    let fd_dir = root.path().join("42/fd");
    fs::create_dir_all(&fd_dir).unwrap();
    std::os::unix::fs::symlink("socket:[555]", fd_dir.join("3")).unwrap();
    std::os::unix::fs::symlink("/dev/null", fd_dir.join("0")).unwrap();

    assert_eq!(socket_inodes_of(root.path(), 42).unwrap(), HashSet::from([555]));
    let err = socket_inodes_of(root.path(), 43).unwrap_err();
    assert!(matches!(&err, ProcNetError::ReadFds { path, .. } if path.ends_with("43/fd")), "{err:?}");
}

#[test]
fn readers_use_pid_or_self_under_proc_root() {
    let root = tempfile::tempdir().unwrap();
    for who in ["7", "self"] {
        fs::create_dir_all(root.path().join(who).join("net")).unwrap();
    }
    fs::write(root.path().join("7/net/route"), ROUTE).unwrap();
    fs::write(root.path().join("self/net/tcp6"), TCP6).unwrap();

    assert_eq!(read_routes(root.path(), Some(7)).unwrap().len(), 2);
    assert_eq!(read_sockets(root.path(), None, SockKind::Tcp6).unwrap().len(), 2);
    let err = read_sockets(root.path(), Some(7), SockKind::Udp).unwrap_err();
    assert_eq!(err.to_string(), format!("failed to read {}/7/net/udp", root.path().display()));
}

#[test]
fn live_listener_is_found_with_its_inode_in_our_fds() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let proc_root = Path::new("/proc");

    let entries = read_sockets(proc_root, None, SockKind::Tcp).unwrap();
    let ours = socket_inodes_of(proc_root, std::process::id()).unwrap();

    let found: Vec<_> = listeners_on(&entries, port).collect();
    assert_eq!(found.len(), 1, "listener on port {port} not in /proc/self/net/tcp");
    assert!(ours.contains(&found[0].inode));
}
