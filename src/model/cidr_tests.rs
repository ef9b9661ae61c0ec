//! Tests of `cidr`.
use super::*;
use proptest::prelude::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn cidr_valid_forms_parse_and_display_unchanged() {
    for s in [
        "10.88.1.0/24",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "192.168.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "10.0.0.4/30",
        "10.0.0.2/31",
        "1.2.3.4/32",
    ] {
        assert_eq!(net(s).to_string(), s);
    }
}

#[test]
fn cidr_accessors_report_parts() {
    let n = net("10.88.1.0/24");
    assert_eq!(n.addr(), ip("10.88.1.0"));
    assert_eq!(n.prefix(), 24);
}

#[test]
fn cidr_with_host_bits_set_is_rejected_with_suggestion() {
    let err = "10.88.1.5/24".parse::<Ipv4Net>().unwrap_err();
    assert_eq!(err, CidrError::HostBitsSet { addr: ip("10.88.1.5"), prefix: 24, network: net("10.88.1.0/24") });
    assert_eq!(err.to_string(), "10.88.1.5/24 has host bits set; did you mean 10.88.1.0/24?");
}

#[test]
fn cidr_invalid_forms_are_rejected_quoting_the_offending_text() {
    use CidrError as E;
    let missing = |t: &str| E::MissingPrefix { text: t.into() };
    let addr = |t: &str| E::InvalidAddress { text: t.into() };
    let prefix = |t: &str| E::InvalidPrefix { text: t.into() };
    #[rustfmt::skip]
    let table: &[(&str, CidrError, &str)] = &[
        ("", E::Empty, "empty cidr"),
        ("10.0.0.0", missing("10.0.0.0"), "'10.0.0.0'"),
        ("10.0.0.0/", prefix(""), "''"),
        ("10.0.0.0/33", prefix("33"), "'33'"),
        ("10.0.0.0/255", prefix("255"), "'255'"),
        ("10.0.0.0/300", prefix("300"), "'300'"),
        ("10.0.0.0/08", prefix("08"), "'08'"),
        ("10.0.0.0/+8", prefix("+8"), "'+8'"),
        ("10.0.0.0/-8", prefix("-8"), "'-8'"),
        ("10.0.0.0/8 ", prefix("8 "), "'8 '"),
        ("10.0.0.0/ 8", prefix(" 8"), "' 8'"),
        ("10.0.0.0/8/8", prefix("8/8"), "'8/8'"),
        ("10.0.0.0/8x", prefix("8x"), "'8x'"),
        (" 10.0.0.0/8", addr(" 10.0.0.0"), "' 10.0.0.0'"),
        ("10.0.0.0 /8", addr("10.0.0.0 "), "'10.0.0.0 '"),
        ("010.1.1.0/24", addr("010.1.1.0"), "'010.1.1.0'"),
        ("10.1.1.00/24", addr("10.1.1.00"), "'10.1.1.00'"),
        ("10.0.0/8", addr("10.0.0"), "'10.0.0'"),
        ("10.0.0.0.0/8", addr("10.0.0.0.0"), "'10.0.0.0.0'"),
        ("256.0.0.0/8", addr("256.0.0.0"), "'256.0.0.0'"),
        ("/8", addr(""), "''"),
        ("::1/128", addr("::1"), "'::1'"),
        ("ten.0.0.0/8", addr("ten.0.0.0"), "'ten.0.0.0'"),
    ];
    for (input, want, mentions) in table {
        let err = input.parse::<Ipv4Net>().unwrap_err();
        assert_eq!(&err, want, "input {input:?}");
        assert!(err.to_string().contains(mentions), "input {input:?}: message {err}");
    }
}

#[test]
fn cidr_new_rejects_prefix_above_32() {
    assert_eq!(Ipv4Net::new(ip("0.0.0.0"), 33), Err(CidrError::InvalidPrefix { text: "33".into() }));
}

#[test]
fn cidr_truncating_clears_host_bits() {
    assert_eq!(Ipv4Net::truncating(ip("10.88.1.5"), 24), Ok(net("10.88.1.0/24")));
    assert_eq!(Ipv4Net::truncating(ip("10.88.1.5"), 0), Ok(net("0.0.0.0/0")));
    assert_eq!(Ipv4Net::truncating(ip("10.88.1.5"), 32), Ok(net("10.88.1.5/32")));
}

/// cidr, netmask, broadcast, gateway, first host, last host, host count.
type Arithmetic = (&'static str, &'static str, &'static str, Option<&'static str>, &'static str, &'static str, u32);

#[test]
fn cidr_address_arithmetic_matches_table() {
    #[rustfmt::skip]
    let table: &[Arithmetic] = &[
        ("10.88.1.0/24", "255.255.255.0", "10.88.1.255", Some("10.88.1.1"), "10.88.1.1", "10.88.1.254", 254),
        ("10.0.0.0/8", "255.0.0.0", "10.255.255.255", Some("10.0.0.1"), "10.0.0.1", "10.255.255.254", 16_777_214),
        ("0.0.0.0/0", "0.0.0.0", "255.255.255.255", Some("0.0.0.1"), "0.0.0.1", "255.255.255.254", u32::MAX - 1),
        ("172.16.0.0/12", "255.240.0.0", "172.31.255.255", Some("172.16.0.1"), "172.16.0.1", "172.31.255.254", 1_048_574),
        ("10.0.0.4/30", "255.255.255.252", "10.0.0.7", Some("10.0.0.5"), "10.0.0.5", "10.0.0.6", 2),
        ("10.0.0.2/31", "255.255.255.254", "10.0.0.3", None, "10.0.0.2", "10.0.0.3", 2),
        ("10.0.0.9/32", "255.255.255.255", "10.0.0.9", None, "10.0.0.9", "10.0.0.9", 1),
        ("255.255.255.255/32", "255.255.255.255", "255.255.255.255", None, "255.255.255.255", "255.255.255.255", 1),
    ];
    for &(cidr, mask, bcast, gw, first, last, count) in table {
        let n = net(cidr);
        assert_eq!(n.netmask(), ip(mask), "{cidr} netmask");
        assert_eq!(n.broadcast(), ip(bcast), "{cidr} broadcast");
        assert_eq!(n.gateway(), gw.map(ip), "{cidr} gateway");
        assert_eq!(n.first_host(), ip(first), "{cidr} first host");
        assert_eq!(n.last_host(), ip(last), "{cidr} last host");
        assert_eq!(n.host_count(), count, "{cidr} host count");
    }
}

#[test]
fn cidr_contains_includes_network_and_broadcast_only_inside() {
    let n = net("10.88.1.0/24");
    for inside in ["10.88.1.0", "10.88.1.1", "10.88.1.255"] {
        assert!(n.contains(ip(inside)), "{inside}");
    }
    for outside in ["10.88.0.255", "10.88.2.0", "0.0.0.0", "255.255.255.255"] {
        assert!(!n.contains(ip(outside)), "{outside}");
    }
    assert!(net("0.0.0.0/0").contains(ip("255.255.255.255")));
    assert!(net("1.2.3.4/32").contains(ip("1.2.3.4")));
    assert!(!net("1.2.3.4/32").contains(ip("1.2.3.5")));
}

#[test]
fn cidr_overlaps_matches_table_in_both_directions() {
    #[rustfmt::skip]
    let table: &[(&str, &str, bool)] = &[
        ("10.88.0.0/16", "10.88.1.0/24", true),
        ("10.88.1.0/24", "10.88.1.0/24", true),
        ("0.0.0.0/0", "192.168.1.7/32", true),
        ("10.88.1.0/24", "10.88.2.0/24", false),
        ("10.88.0.0/16", "10.89.0.0/16", false),
        ("10.0.0.2/31", "10.0.0.3/32", true),
        ("10.0.0.2/31", "10.0.0.4/32", false),
    ];
    for &(a, b, want) in table {
        assert_eq!(net(a).overlaps(&net(b)), want, "{a} vs {b}");
        assert_eq!(net(b).overlaps(&net(a)), want, "{b} vs {a}");
    }
}

#[test]
fn cidr_serializes_as_string_and_back() {
    let n = net("10.88.1.0/24");
    let json = serde_json::to_string(&n).unwrap();
    assert_eq!(json, "\"10.88.1.0/24\"");
    assert_eq!(serde_json::from_str::<Ipv4Net>(&json).unwrap(), n);
}

#[test]
fn cidr_deserialize_rejects_invalid_string_with_parse_message() {
    let err = serde_json::from_str::<Ipv4Net>("\"10.88.1.5/24\"").unwrap_err();
    assert!(err.to_string().contains("did you mean 10.88.1.0/24"), "{err}");
    assert!(serde_json::from_str::<Ipv4Net>("42").is_err());
}

fn any_net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Net::truncating(Ipv4Addr::from(a), p).unwrap())
}

proptest! {
    #[test]
    fn cidr_display_round_trips(n in any_net()) {
        prop_assert_eq!(n.to_string().parse::<Ipv4Net>(), Ok(n));
    }

    #[test]
    fn cidr_host_range_lies_inside_network(n in any_net()) {
        prop_assert!(n.contains(n.addr()) && n.contains(n.broadcast()));
        prop_assert!(n.contains(n.first_host()) && n.contains(n.last_host()));
        prop_assert!(n.first_host() <= n.last_host());
        prop_assert_eq!(u64::from(n.host_count()), u64::from(u32::from(n.last_host()) - u32::from(n.first_host())) + 1);
    }

    #[test]
    fn cidr_contains_agrees_with_truncating(n in any_net(), a in any::<u32>()) {
        let a = Ipv4Addr::from(a);
        prop_assert_eq!(n.contains(a), Ipv4Net::truncating(a, n.prefix()).unwrap() == n);
    }

    #[test]
    fn cidr_overlap_is_symmetric_and_means_shared_address(a in any_net(), b in any_net()) {
        prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        let shared = a.contains(b.addr()) || b.contains(a.addr());
        prop_assert_eq!(a.overlaps(&b), shared);
    }

    #[test]
    fn cidr_parse_never_panics(s in any::<String>()) {
        let _ = s.parse::<Ipv4Net>();
    }

    #[test]
    fn cidr_parse_accepts_only_canonical_text(s in "[0-9./ +-]{0,24}") {
        if let Ok(n) = s.parse::<Ipv4Net>() {
            prop_assert_eq!(n.to_string(), s);
        }
    }
}
