use super::*;

const MARK: u32 = 0x7067;

fn targets() -> Targets {
    Targets { v4: Some("10.232.0.2".parse().unwrap()), v6: Some("fd00::2".parse().unwrap()) }
}

fn accepted(client: &str, listener: SockFamily) -> Accepted {
    Accepted { client: client.parse().unwrap(), listener, container_port: 80 }
}

fn dests(attempts: &[Attempt]) -> Vec<String> {
    attempts.iter().map(|a| a.dest.to_string()).collect()
}

#[test]
fn without_preservation_loopback_of_listener_family_comes_first() {
    let v4 = plan_attempts(accepted("10.231.0.1:5000", SockFamily::V4), &targets(), None);
    assert_eq!(dests(&v4), ["127.0.0.1:80", "[::1]:80"]);
    assert!(v4.iter().all(|a| a.transparent.is_none()));
    let v6 = plan_attempts(accepted("[fd00::9]:5000", SockFamily::V6), &targets(), None);
    assert_eq!(dests(&v6), ["[::1]:80", "127.0.0.1:80"]);
}

#[test]
fn preservation_of_remote_ipv4_client_tries_transparent_target_first() {
    let got = plan_attempts(accepted("10.231.0.1:5000", SockFamily::V4), &targets(), Some(MARK));
    assert_eq!(dests(&got), ["10.232.0.2:80", "127.0.0.1:80", "[::1]:80"]);
    assert_eq!(got[0].transparent, Some(Transparent { source: "10.231.0.1".parse().unwrap(), mark: MARK }));
    assert_eq!(got[0].family(), SockFamily::V4);
}

#[test]
fn preservation_of_remote_ipv6_client_uses_ipv6_target() {
    let got = plan_attempts(accepted("[fd00::9]:5000", SockFamily::V6), &targets(), Some(MARK));
    assert_eq!(dests(&got), ["[fd00::2]:80", "[::1]:80", "127.0.0.1:80"]);
    assert_eq!(got[0].transparent.map(|t| t.source), Some("fd00::9".parse().unwrap()));
}

#[test]
fn loopback_client_is_never_made_transparent() {
    for (client, family) in [("127.0.0.1:5000", SockFamily::V4), ("[::1]:5000", SockFamily::V6)] {
        let got = plan_attempts(accepted(client, family), &targets(), Some(MARK));
        assert_eq!(got.len(), 2, "{client}");
        assert!(got.iter().all(|a| a.transparent.is_none()), "{client}");
    }
}

#[test]
fn missing_target_of_client_family_skips_preservation() {
    let only_v6 = Targets { v4: None, v6: targets().v6 };
    let got = plan_attempts(accepted("10.231.0.1:5000", SockFamily::V4), &only_v6, Some(MARK));
    assert_eq!(dests(&got), ["127.0.0.1:80", "[::1]:80"]);
}

#[test]
fn ipv4_mapped_client_counts_as_ipv4() {
    let got = plan_attempts(accepted("[::ffff:10.231.0.1]:5000", SockFamily::V6), &targets(), Some(MARK));
    assert_eq!(dests(&got), ["10.232.0.2:80", "[::1]:80", "127.0.0.1:80"]);
    assert_eq!(got[0].transparent.map(|t| t.source), Some("10.231.0.1".parse().unwrap()));
}

#[test]
fn udp_flow_tries_loopback_of_listener_family_then_the_other() {
    let dests = |family| flow_destinations(family, 53).map(|d| d.to_string());
    assert_eq!(dests(SockFamily::V6), ["[::1]:53", "127.0.0.1:53"]);
    assert_eq!(dests(SockFamily::V4), ["127.0.0.1:53", "[::1]:53"]);
}
