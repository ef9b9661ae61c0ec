//! Tests of port mapping onto slirp4netns's API and of its replies.

use super::*;

const BLOCKED: HostLoopback = HostLoopback::Blocked;

fn mapping(spec: &str) -> PortMapping {
    spec.parse().unwrap()
}

#[test]
fn udp_on_loopback_is_refused_while_host_loopback_is_blocked() {
    let err = forwards_for(&[mapping("127.0.0.1:5353:53/udp")], BLOCKED).unwrap_err();
    assert!(matches!(err, SlirpApiError::UdpLoopbackBlocked { .. }), "{err}");
    assert!(err.to_string().contains("(127.0.0.1:5353:53/udp)"), "{err}");
    assert!(forwards_for(&[mapping("127.0.0.1:8080:80")], BLOCKED).is_ok(), "tcp is unaffected");
}

#[test]
fn udp_on_every_address_gets_a_caveat_only_while_host_loopback_is_blocked() {
    let ports = [mapping("5353:53/udp"), mapping("8080:80"), mapping("10.1.2.3:5354:53/udp")];
    let caveats = port_caveats(&ports, BLOCKED);
    assert_eq!(caveats, [PortCaveat::UdpLoopbackClientsUnanswered { mapping: ports[0].clone() }]);
    assert!(caveats[0].to_string().starts_with("5353:53/udp: slirp4netns does not answer UDP clients"));
    assert!(port_caveats(&ports, HostLoopback::Allowed).is_empty());
}

#[test]
fn mapping_without_host_ip_binds_every_ipv4_address() {
    let fwds = forwards_for(&[mapping("8080:80"), mapping("127.0.0.1:5353:53/udp")], HostLoopback::Allowed).unwrap();
    assert_eq!(fwds[0].to_string(), "0.0.0.0:8080 -> 10.0.2.100:80/tcp");
    assert_eq!(fwds[1].to_string(), "127.0.0.1:5353 -> 10.0.2.100:53/udp");
}

#[test]
fn range_mapping_is_refused_naming_the_mapping() {
    let err = forwards_for(&[mapping("8080:80"), mapping("9000-9002:7000-7002")], BLOCKED).unwrap_err();
    assert_eq!(
        err.to_string(),
        "slirp4netns cannot forward port ranges (9000-9002:7000-7002/tcp); publish single ports or use pasta"
    );
}

#[test]
fn ipv6_host_ip_is_refused_naming_the_mapping() {
    let err = forwards_for(&[mapping("[::1]:8080:80")], BLOCKED).unwrap_err();
    assert!(matches!(err, SlirpApiError::Ipv6HostIp { .. }));
    assert!(err.to_string().contains("[::1]:8080:80/tcp"), "{err}");
}

#[test]
fn unresolved_host_port_is_refused() {
    assert!(matches!(forwards_for(&[mapping("80")], BLOCKED), Err(SlirpApiError::UnresolvedHostPort { .. })));
}

#[test]
fn requests_match_the_documented_json() {
    let fwd = forwards_for(&[mapping("127.0.0.1:8080:80")], BLOCKED).unwrap()[0];
    assert_eq!(
        add_request(&fwd),
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}}"#
    );
    assert_eq!(remove_request(7), r#"{"execute":"remove_hostfwd","arguments":{"id":7}}"#);
    assert_eq!(list_request(), r#"{"execute":"list_hostfwd"}"#);
}

#[test]
fn replies_recorded_from_slirp4netns_1_2_0_parse() {
    assert_eq!(parse_reply("add", r#"{"return":{"id":1}}"#).unwrap()["id"], 1);
    let list = r#"{"entries":[{"id":2,"proto":"udp","host_addr":"127.0.0.1","host_port":18083,"guest_addr":"10.0.2.100","guest_port":53}]}"#;
    let entries: Vec<HostFwdEntry> =
        serde_json::from_value(parse_reply("list", list).unwrap()["entries"].clone()).unwrap();
    assert_eq!(entries[0].host_port, 18083);
    assert_eq!(entries[0].proto, PortProto::Udp);
    let err = parse_reply(
        "add_hostfwd 0.0.0.0:8080 -> 10.0.2.100:80/tcp",
        r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "slirp4netns refused add_hostfwd 0.0.0.0:8080 -> 10.0.2.100:80/tcp: bad request: add_hostfwd: slirp_add_hostfwd failed"
    );
}

#[test]
fn non_json_and_non_object_replies_are_errors() {
    assert!(matches!(parse_reply("x", ""), Err(SlirpApiError::Decode { .. })));
    assert!(matches!(parse_reply("x", "[1]"), Err(SlirpApiError::UnexpectedReply { .. })));
}

#[test]
fn features_say_no_ranges_and_no_ipv6() {
    let f = supported_port_features();
    assert!(f.host_ip && f.udp);
    assert!(!f.ranges && !f.ipv6_host_ip && !f.wildcard_includes_ipv6 && !f.udp_loopback_clients);
}
