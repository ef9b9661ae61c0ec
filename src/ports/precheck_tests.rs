use super::*;
use std::net::SocketAddr;

fn m(spec: &str) -> PortMapping {
    spec.parse().unwrap()
}

fn sock(addr: &str, v6only: bool) -> Bound {
    Bound { local: addr.parse::<SocketAddr>().unwrap(), inode: 7, uid: 1000, v6only }
}

/// Regression: `-p 19104:80 -p 19104:81` was caught only when the second
/// bind failed, after a retry.
#[test]
fn one_run_publishing_a_host_port_twice_is_named() {
    let cases: &[(&[&str], Option<u16>)] = &[
        (&["19104:80", "19104:81"], Some(19104)),
        (&["8000-8010:80-90", "8005:100"], Some(8005)),
        (&["8080:80", "[::1]:8080:81"], Some(8080)),
        (&["127.0.0.1:8080:80", "0.0.0.0:8080:81"], Some(8080)),
        (&["127.0.0.1:8080:80", "127.0.0.2:8080:81"], None),
        (&["8080:80", "8080:80/udp"], None),
        (&["0.0.0.0:8080:80", "[::]:8080:81"], None),
        (&["80", "80"], None),
        (&["8000-8002:80-82", "8003:83"], None),
    ];
    for (specs, want) in cases {
        let ports: Vec<PortMapping> = specs.iter().map(|s| m(s)).collect();
        let got = duplicate(&ports).map(|e| match e {
            PortCheckError::Duplicate { port, .. } => port,
            other => panic!("{other}"),
        });
        assert_eq!(got, *want, "{specs:?}");
    }
    let err = duplicate(&[m("19104:80"), m("19104:81")]).unwrap();
    assert_eq!(err.to_string(), "-p 19104:80/tcp and -p 19104:81/tcp publish the same host port 19104/tcp");
}

#[test]
fn a_socket_holds_a_published_port_as_the_kernel_sees_binds() {
    let cases = [
        ("8080:80", "127.0.0.1:8080", false, true),
        ("8080:80", "[::1]:8080", true, true),
        ("8080:80", "0.0.0.0:8081", false, false),
        ("8080:80/udp", "0.0.0.0:8080", false, false),
        ("127.0.0.1:8080:80", "127.0.0.2:8080", false, false),
        ("127.0.0.1:8080:80", "0.0.0.0:8080", false, true),
        ("127.0.0.1:8080:80", "[::]:8080", false, true),
        ("127.0.0.1:8080:80", "[::]:8080", true, false),
        ("0.0.0.0:8080:80", "[::]:8080", false, true),
        ("0.0.0.0:8080:80", "[::1]:8080", false, false),
        ("10.0.0.1:8080:80", "[::ffff:10.0.0.1]:8080", true, true),
        ("[::1]:8080:80", "0.0.0.0:8080", false, false),
        ("[::1]:8080:80", "[::]:8080", true, true),
        ("[::]:8080:80", "[::1]:8080", true, true),
        ("8000-8010:80-90", "0.0.0.0:8010", false, true),
    ];
    for (spec, addr, v6only, want) in cases {
        // Every socket of the table is a TCP listener.
        assert_eq!(
            socket_holds(&m(spec), PortProto::Tcp, &sock(addr, v6only)),
            want,
            "{spec} vs {addr} v6only={v6only}"
        );
    }
}

#[test]
fn runs_overlap_on_shared_ports_of_overlapping_addresses() {
    assert_eq!(shared_port(&m("8080:80"), &m("127.0.0.1:8080:81")), Some(8080));
    assert_eq!(shared_port(&m("127.0.0.1:8080:80"), &m("[::1]:8080:81")), None);
    assert_eq!(shared_port(&m("9000-9005:9000-9005"), &m("9003-9010:1-8")), Some(9003));
    assert_eq!(shared_port(&m("80"), &m("8080:80")), None, "ephemeral ports are resolved later");
}

#[test]
fn refusals_name_the_port_and_who_holds_it() {
    let in_use = PortCheckError::InUse {
        port: 19140,
        proto: PortProto::Tcp,
        local: "0.0.0.0:19140".parse().unwrap(),
        holder: Holder::Process { pid: 4242, name: "python3".into() },
    };
    assert_eq!(in_use.to_string(), "host port 19140/tcp: port in use by python3 (pid 4242), bound to 0.0.0.0:19140");
    let published =
        PortCheckError::AlreadyPublished { port: 19140, run: "0a1b2c3d4e5f".into(), theirs: m("19140:8000") };
    assert_eq!(published.to_string(), "host port 19140/tcp: already published by run 0a1b2c3d4e5f (-p 19140:8000/tcp)");
    let theirs = Holder::Hidden { uid: 1001, ours: false };
    assert_eq!(theirs.to_string(), "a process of uid 1001 (not visible to this user)");
}

#[test]
fn only_network_helpers_and_our_own_unseen_holders_get_the_grace() {
    let p = |name: &str| Holder::Process { pid: 1, name: name.into() };
    for holder in [p("pasta"), p("passt.avx2"), p("slirp4netns"), p("pelagos-net"), p("pelagos-net-123")] {
        assert!(holder.may_be_exiting_helper(), "{holder}");
    }
    assert!(Holder::Hidden { uid: 1000, ours: true }.may_be_exiting_helper());
    for holder in [p("python3"), p("nginx"), Holder::Hidden { uid: 0, ours: false }] {
        assert!(!holder.may_be_exiting_helper(), "{holder}");
    }
}
