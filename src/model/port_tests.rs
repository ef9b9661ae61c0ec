//! Tests of `port`.
use super::*;
use PortProto::{Tcp, Udp};
use proptest::prelude::*;

type Ports = (u16, u16);
/// spec, host ip, host ports, container ports, protocol, canonical text.
type Valid = (&'static str, Option<&'static str>, Option<Ports>, Ports, PortProto, &'static str);

fn range((start, end): Ports) -> PortRange {
    PortRange::new(start, end).unwrap()
}

fn mapping(ip: Option<&str>, host: Option<Ports>, container: Ports, proto: PortProto) -> PortMapping {
    let ip = ip.map(|ip| ip.parse().unwrap());
    PortMapping::new(ip, host.map(range), range(container), proto).unwrap()
}

#[test]
fn port_spec_valid_forms_parse_and_display_canonically() {
    #[rustfmt::skip]
    let table: &[Valid] = &[
        ("80", None, None, (80, 80), Tcp, "80/tcp"),
        ("8080:80", None, Some((8080, 8080)), (80, 80), Tcp, "8080:80/tcp"),
        ("127.0.0.1:8080:80", Some("127.0.0.1"), Some((8080, 8080)), (80, 80), Tcp, "127.0.0.1:8080:80/tcp"),
        ("127.0.0.1::80", Some("127.0.0.1"), None, (80, 80), Tcp, "127.0.0.1::80/tcp"),
        ("8000-8010:80-90", None, Some((8000, 8010)), (80, 90), Tcp, "8000-8010:80-90/tcp"),
        ("8000-8010", None, None, (8000, 8010), Tcp, "8000-8010/tcp"),
        ("[::1]:8080:80", Some("::1"), Some((8080, 8080)), (80, 80), Tcp, "[::1]:8080:80/tcp"),
        ("[::1]::80", Some("::1"), None, (80, 80), Tcp, "[::1]::80/tcp"),
        ("[2001:DB8::1]:53:53/udp", Some("2001:db8::1"), Some((53, 53)), (53, 53), Udp, "[2001:db8::1]:53:53/udp"),
        ("[::ffff:1.2.3.4]:1:2", Some("::ffff:1.2.3.4"), Some((1, 1)), (2, 2), Tcp, "[::ffff:1.2.3.4]:1:2/tcp"),
        ("80/udp", None, None, (80, 80), Udp, "80/udp"),
        ("80/tcp", None, None, (80, 80), Tcp, "80/tcp"),
        ("80/UDP", None, None, (80, 80), Udp, "80/udp"),
        ("80/Tcp", None, None, (80, 80), Tcp, "80/tcp"),
        ("0.0.0.0:53:53/udp", Some("0.0.0.0"), Some((53, 53)), (53, 53), Udp, "0.0.0.0:53:53/udp"),
        ("127.0.0.1:8000-8001:9000-9001/udp", Some("127.0.0.1"), Some((8000, 8001)), (9000, 9001), Udp, "127.0.0.1:8000-8001:9000-9001/udp"),
        ("1-65535:1-65535", None, Some((1, 65535)), (1, 65535), Tcp, "1-65535:1-65535/tcp"),
        ("65535:1", None, Some((65535, 65535)), (1, 1), Tcp, "65535:1/tcp"),
        ("080:0080", None, Some((80, 80)), (80, 80), Tcp, "80:80/tcp"),
        ("80-80", None, None, (80, 80), Tcp, "80/tcp"),
        (":80", None, None, (80, 80), Tcp, "80/tcp"),
    ];
    for &(spec, ip, host, container, proto, canonical) in table {
        let want = mapping(ip, host, container, proto);
        let got = spec.parse::<PortMapping>();
        assert_eq!(got, Ok(want.clone()), "spec {spec:?}");
        assert_eq!(want.to_string(), canonical, "spec {spec:?}");
        assert_eq!(canonical.parse::<PortMapping>(), Ok(want), "canonical {canonical:?}");
    }
}

#[test]
fn port_spec_invalid_forms_are_rejected_quoting_the_offending_text() {
    use PortSpecError as E;
    let proto = |t: &str| E::UnknownProto { proto: t.into() };
    let port = |t: &str| E::InvalidPort { text: t.into() };
    let ip = |t: &str| E::InvalidHostIp { text: t.into() };
    let v6 = |t: &str| E::UnbracketedIpv6 { ip: t.into() };
    let missing = |t: &str| E::MissingContainerPort { spec: t.into() };
    let colons = |t: &str| E::TooManyColons { spec: t.into() };
    let malformed = |t: &str| E::Malformed { spec: t.into() };
    let mismatch = |h, c| E::RangeMismatch { host: range(h), container: range(c) };
    let reversed = |start, end| E::ReversedRange { start, end };
    #[rustfmt::skip]
    let table: Vec<(&str, E, &str)> = vec![
        ("", E::Empty, "empty port spec (expected [[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp])"),
        ("80/sctp", proto("sctp"), "unknown protocol 'sctp' (expected tcp or udp)"),
        ("80/", proto(""), "unknown protocol ''"),
        ("80/tcp/udp", proto("tcp/udp"), "'tcp/udp'"),
        ("80/tcp ", proto("tcp "), "'tcp '"),
        ("0", E::ZeroPort, "port 0"),
        ("8080:0", E::ZeroPort, "port 0"),
        ("00:80", E::ZeroPort, "port 0"),
        ("0-10", E::ZeroPort, "port 0"),
        ("abc", port("abc"), "invalid port 'abc'"),
        ("65536", port("65536"), "'65536'"),
        ("99999999999999999999", port("99999999999999999999"), "'99999999999999999999'"),
        ("+80", port("+80"), "'+80'"),
        ("-80", port("-80"), "'-80'"),
        ("80-", port("80-"), "'80-'"),
        ("1-2-3", port("1-2-3"), "'1-2-3'"),
        (" 80", port(" 80"), "' 80'"),
        ("80 ", port("80 "), "'80 '"),
        ("８０", port("８０"), "'８０'"),
        ("80x:80", port("80x"), "'80x'"),
        ("90-80", reversed(90, 80), "90-80"),
        ("8080:90-80", reversed(90, 80), "90-80"),
        ("8000-8010:80-82", mismatch((8000, 8010), (80, 82)), "8000-8010 and container ports 80-82 differ in length (11 vs 3)"),
        ("8000-8001:80", mismatch((8000, 8001), (80, 80)), "(2 vs 1)"),
        ("8080:80-81", mismatch((8080, 8080), (80, 81)), "host ports 8080 and container ports 80-81"),
        ("8080:", missing("8080:"), "'8080:'"),
        ("/tcp", missing("/tcp"), "'/tcp'"),
        ("127.0.0.1:8080:", missing("127.0.0.1:8080:"), "'127.0.0.1:8080:'"),
        ("localhost:8080:80", ip("localhost"), "invalid host ip 'localhost'"),
        ("1.2.3:8080:80", ip("1.2.3"), "'1.2.3'"),
        ("::80", ip(""), "invalid host ip ''"),
        ("[1.2.3.4]:80:80", ip("[1.2.3.4]"), "'[1.2.3.4]'"),
        ("[fe80::1%eth0]:80:80", ip("[fe80::1%eth0]"), "'[fe80::1%eth0]'"),
        ("[]:80:80", ip("[]"), "'[]'"),
        ("::1:8080:80", v6("::1"), "'::1' must be in brackets, e.g. '[::1]:8080:80'"),
        ("::1::80", v6("::1"), "'::1'"),
        ("2001:db8::1:8080:80/udp", v6("2001:db8::1"), "'2001:db8::1'"),
        ("fe80::1:80", v6("fe80::1"), "'fe80::1'"),
        ("1:2:3:4", colons("1:2:3:4"), "too many ':' in port spec '1:2:3:4'"),
        ("[::1]:1:2:3", colons("[::1]:1:2:3"), "'[::1]:1:2:3'"),
        ("[::1", malformed("[::1"), "'[::1'"),
        ("[::1]8080:80", malformed("[::1]8080:80"), "'[::1]8080:80'"),
        ("[::1]:80", malformed("[::1]:80"), "'[::1]:80'"),
    ];
    for (spec, want, mentions) in table {
        let err = spec.parse::<PortMapping>().unwrap_err();
        assert_eq!(err, want, "spec {spec:?}");
        assert!(err.to_string().contains(mentions), "spec {spec:?}: message {err}");
    }
}

#[test]
fn port_mapping_new_rejects_range_length_mismatch() {
    let err = PortMapping::new(None, Some(range((8000, 8001))), range((80, 80)), Tcp).unwrap_err();
    assert!(matches!(err, PortSpecError::RangeMismatch { .. }), "{err}");
}

#[test]
fn port_proto_parses_case_insensitively_and_displays_lowercase() {
    for (text, want) in [("tcp", Tcp), ("TCP", Tcp), ("udp", Udp), ("uDp", Udp)] {
        assert_eq!(text.parse::<PortProto>(), Ok(want));
        assert_eq!(want.to_string(), text.to_lowercase());
    }
    let err = "sctp".parse::<PortProto>().unwrap_err();
    assert_eq!(err.to_string(), "unknown protocol 'sctp' (expected tcp or udp)");
}

#[test]
fn port_range_displays_single_port_without_dash() {
    assert_eq!(range((80, 80)).to_string(), "80");
    assert_eq!(range((80, 90)).to_string(), "80-90");
    assert_eq!("80-90".parse::<PortRange>(), Ok(range((80, 90))));
    assert_eq!(range((80, 90)).len(), 11);
    assert_eq!(range((1, 65535)).len(), 65535);
    assert_eq!(range((80, 82)).iter().collect::<Vec<_>>(), [80, 81, 82]);
}

#[test]
fn port_mapping_serde_uses_canonical_string_and_parse_errors() {
    let m = mapping(Some("::1"), None, (80, 90), Udp);
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#""[::1]::80-90/udp""#);
    assert_eq!(serde_json::from_str::<PortMapping>(&json).unwrap(), m);
    let lenient = serde_json::from_str::<PortMapping>(r#""080""#).unwrap();
    assert_eq!(lenient, mapping(None, None, (80, 80), Tcp));
    let err = serde_json::from_str::<PortMapping>(r#""80/sctp""#).unwrap_err();
    assert!(err.to_string().contains("unknown protocol 'sctp'"), "{err}");
}

fn any_range() -> impl Strategy<Value = PortRange> {
    prop_oneof![
        (1..=u16::MAX).prop_map(|p| range((p, p))),
        (1..=u16::MAX, 1..=u16::MAX).prop_map(|(a, b)| range((a.min(b), a.max(b)))),
    ]
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(a.into())),
        any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
        (0u128..0x1_0000).prop_map(|a| IpAddr::V6(a.into())),
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
    ]
}

fn any_mapping() -> impl Strategy<Value = PortMapping> {
    let proto = prop_oneof![Just(Tcp), Just(Udp)];
    let host_seed = proptest::option::of(any::<u16>());
    (proptest::option::of(any_ip()), host_seed, any_range(), proto).prop_map(|(ip, seed, container, proto)| {
        // A host range of the container's length, starting anywhere it fits.
        let span = container.end() - container.start();
        let host = seed.map(|s| 1 + s % (u16::MAX - span)).map(|h| range((h, h + span)));
        PortMapping::new(ip, host, container, proto).unwrap()
    })
}

proptest! {
    #[test]
    fn port_mapping_display_round_trips(m in any_mapping()) {
        prop_assert_eq!(m.to_string().parse::<PortMapping>(), Ok(m));
    }

    #[test]
    fn port_spec_parse_of_arbitrary_unicode_never_panics(s in any::<String>()) {
        let _ = s.parse::<PortMapping>();
    }

    #[test]
    fn port_spec_parse_of_spec_alphabet_never_panics_and_is_canonical(
        s in "[0123456789:\\-/\\[\\]a-fA-Fudptc.]{0,32}"
    ) {
        if let Ok(m) = s.parse::<PortMapping>() {
            let canonical = m.to_string();
            prop_assert_eq!(canonical.parse::<PortMapping>(), Ok(m.clone()));
            prop_assert_eq!(canonical.parse::<PortMapping>().unwrap().to_string(), canonical);
        }
    }
}
