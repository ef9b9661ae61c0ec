use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A pasta run on a host whose address is 10.231.0.2 (and fd00:231::2),
/// copied into the namespace, with `--host-port 5432`.
fn pasta() -> Reach {
    Reach {
        own: vec!["10.231.0.2".parse().unwrap(), "fd00:231::2".parse().unwrap()],
        helper_networks: vec![],
        ipv6: true,
        host_loopback_ports: vec![5432],
        own_servers: vec![],
    }
}

/// A slirp4netns run without IPv6: 10.0.2.100 in 10.0.2.0/24.
fn slirp() -> Reach {
    Reach {
        own: vec!["10.0.2.100".parse().unwrap()],
        helper_networks: vec![HelperNetwork::V4("10.0.2.0/24".parse().unwrap())],
        ipv6: false,
        host_loopback_ports: vec![],
        own_servers: vec![],
    }
}

#[test]
fn routed_destinations_are_switched_as_given() {
    for dst in ["10.231.0.1:80", "93.184.216.34:443", "[2001:db8::1]:443", "[::ffff:10.231.0.1]:80"] {
        assert_eq!(decide(sa(dst), &pasta()), Verdict::Switch(sa(dst)), "{dst}");
    }
    assert_eq!(decide(sa("10.231.0.1:80"), &slirp()), Verdict::Switch(sa("10.231.0.1:80")));
}

#[test]
fn the_hosts_other_addresses_are_switched_as_the_helpers_reach_them() {
    // pasta connects to the host's addresses it did not copy; slirp4netns to
    // every address of the host, the one pasta copies included.
    assert_eq!(decide(sa("10.99.0.1:7001"), &pasta()), Verdict::Switch(sa("10.99.0.1:7001")));
    assert_eq!(decide(sa("10.231.0.2:7001"), &slirp()), Verdict::Switch(sa("10.231.0.2:7001")));
}

#[test]
fn loopback_stays_inside_in_every_form() {
    for dst in ["127.0.0.1:22", "127.5.6.7:80", "[::1]:22", "[::ffff:127.0.0.1]:22"] {
        assert_eq!(decide(sa(dst), &pasta()), Verdict::Inside(Inside::Loopback), "{dst}");
        assert_eq!(decide(sa(dst), &slirp()), Verdict::Inside(Inside::Loopback), "{dst}");
    }
}

#[test]
fn a_host_port_is_the_hosts_loopback_and_only_that_port() {
    assert_eq!(decide(sa("127.0.0.1:5432"), &pasta()), Verdict::Switch(sa("127.0.0.1:5432")));
    assert_eq!(decide(sa("[::ffff:127.0.0.1]:5432"), &pasta()), Verdict::Switch(sa("[::ffff:127.0.0.1]:5432")));
    assert_eq!(decide(sa("127.0.0.1:5433"), &pasta()), Verdict::Inside(Inside::Loopback));
    // pasta's -T forwards 127.0.0.1 only.
    assert_eq!(decide(sa("127.0.0.2:5432"), &pasta()), Verdict::Inside(Inside::Loopback));
    assert_eq!(decide(sa("[::1]:5432"), &pasta()), Verdict::Inside(Inside::Loopback));
}

#[test]
fn the_unspecified_address_is_the_namespace_itself() {
    for dst in ["0.0.0.0:80", "[::]:80", "[::ffff:0.0.0.0]:80"] {
        assert_eq!(decide(sa(dst), &pasta()), Verdict::Inside(Inside::Unspecified), "{dst}");
    }
}

#[test]
fn the_address_pasta_copied_stays_inside_never_the_hosts() {
    assert_eq!(decide(sa("10.231.0.2:22"), &pasta()), Verdict::Inside(Inside::OwnAddress));
    assert_eq!(decide(sa("[fd00:231::2]:22"), &pasta()), Verdict::Inside(Inside::OwnAddress));
    assert_eq!(decide(sa("[::ffff:10.231.0.2]:22"), &pasta()), Verdict::Inside(Inside::OwnAddress));
}

#[test]
fn slirp4netns_virtual_hosts_stay_inside_the_blocked_gateway_too() {
    for dst in ["10.0.2.2:22", "10.0.2.3:53", "10.0.2.100:80", "10.0.2.77:80"] {
        let want = if dst.starts_with("10.0.2.100") { Inside::OwnAddress } else { Inside::HelperNetwork };
        assert_eq!(decide(sa(dst), &slirp()), Verdict::Inside(want), "{dst}");
    }
}

#[test]
fn link_local_multicast_broadcast_and_reserved_stay_inside() {
    let cases = [
        ("169.254.1.1:53", Inside::LinkLocal),
        ("169.254.169.254:80", Inside::LinkLocal),
        ("[fe80::1]:80", Inside::LinkLocal),
        ("224.0.0.1:80", Inside::Multicast),
        ("255.255.255.255:80", Inside::Multicast),
        ("[ff02::1]:80", Inside::Multicast),
        ("0.1.2.3:80", Inside::Reserved),
        ("240.0.0.1:80", Inside::Reserved),
        ("[::10.1.2.3]:80", Inside::Reserved),
        ("10.231.0.1:0", Inside::Reserved),
    ];
    for (dst, why) in cases {
        assert_eq!(decide(sa(dst), &pasta()), Verdict::Inside(why), "{dst}");
    }
}

#[test]
fn ipv6_stays_inside_when_the_namespace_has_none() {
    assert_eq!(decide(sa("[2001:db8::1]:443"), &slirp()), Verdict::Inside(Inside::NoIpv6));
    // An IPv4-mapped address is IPv4: switched.
    assert_eq!(decide(sa("[::ffff:93.184.216.34]:443"), &slirp()), Verdict::Switch(sa("[::ffff:93.184.216.34]:443")));
}

fn with_server(mut reach: Reach, host: &str) -> Reach {
    reach.own_servers.push(OwnServer { container_port: 80, host: sa(host) });
    reach
}

#[test]
fn a_client_of_the_run_reaches_its_own_server_on_the_hosts_listener() {
    let reach = with_server(pasta(), "0.0.0.0:8080");
    let want = Verdict::OwnServer { to: sa("127.0.0.1:8080"), listener: sa("0.0.0.0:8080") };
    for dst in ["127.0.0.1:80", "0.0.0.0:80", "10.231.0.2:80"] {
        assert_eq!(decide(sa(dst), &reach), want, "{dst}");
    }
    let mapped = Verdict::OwnServer { to: sa("[::ffff:127.0.0.1]:8080"), listener: sa("0.0.0.0:8080") };
    assert_eq!(decide(sa("[::1]:80"), &reach), mapped);
    // Another port, or the server's port elsewhere, is not the server.
    assert_eq!(decide(sa("127.0.0.1:81"), &reach), Verdict::Inside(Inside::Loopback));
    assert_eq!(decide(sa("10.231.0.1:80"), &reach), Verdict::Switch(sa("10.231.0.1:80")));
}

#[test]
fn an_own_server_bound_to_one_address_is_reached_there() {
    let reach = with_server(slirp(), "127.0.0.1:8080");
    let want = Verdict::OwnServer { to: sa("127.0.0.1:8080"), listener: sa("127.0.0.1:8080") };
    assert_eq!(decide(sa("10.0.2.100:80"), &reach), want);
    let v6only = with_server(slirp(), "[::]:8080");
    assert_eq!(decide(sa("127.0.0.1:80"), &v6only), Verdict::Inside(Inside::OwnServerGone));
    let want6 = Verdict::OwnServer { to: sa("[::1]:8080"), listener: sa("[::]:8080") };
    assert_eq!(decide(sa("[::1]:80"), &v6only), want6);
}
