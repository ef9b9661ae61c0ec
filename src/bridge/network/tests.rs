use super::*;
use std::fs;

fn req(name: &str, subnet: Option<&str>) -> NetworkRequest {
    NetworkRequest {
        name: NetworkName::new(name).unwrap(),
        subnet: subnet.map(|s| s.parse().unwrap()),
        gateway: None,
        internal: false,
        options: NetworkOptions::default(),
    }
}

#[test]
fn without_subnet_the_next_free_24_is_chosen() {
    let existing = vec![default_network_def()];
    let host = ["10.90.1.0/24".parse().unwrap()];
    let def = plan_network(&req("web", None), &existing, &host).unwrap();
    assert_eq!(def.subnet.to_string(), "10.90.2.0/24");
    assert_eq!(def.gateway.to_string(), "10.90.2.1");
    assert_eq!(def.bridge.as_str(), "pn-web");
}

#[test]
fn overlapping_network_is_refused_with_both_names() {
    let err = plan_network(&req("web", Some("10.90.0.128/25")), &[default_network_def()], &[]).unwrap_err();
    assert_eq!(err.to_string(), "subnet 10.90.0.128/25 overlaps network pelagos0 (10.90.0.0/24)");
}

#[test]
fn host_route_overlap_is_refused_but_default_route_ignored() {
    let host: Vec<Ipv4Net> = vec!["0.0.0.0/0".parse().unwrap(), "192.0.2.0/24".parse().unwrap()];
    assert!(plan_network(&req("a", Some("10.1.0.0/24")), &[], &host).is_ok());
    let err = plan_network(&req("a", Some("192.0.2.0/25")), &[], &host).unwrap_err();
    assert!(err.to_string().contains("overlaps 192.0.2.0/24"), "{err}");
}

#[test]
fn gateway_outside_subnet_or_too_small_subnet_is_refused() {
    let mut r = req("a", Some("10.1.0.0/24"));
    r.gateway = Some("10.1.1.1".parse().unwrap());
    assert!(matches!(plan_network(&r, &[], &[]), Err(NetworkError::BadGateway { .. })));
    assert!(matches!(plan_network(&req("a", Some("10.1.0.0/31")), &[], &[]), Err(NetworkError::TooSmall(_))));
}

#[test]
fn definitions_persist_and_duplicates_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let def = ensure_network(tmp.path(), &req("web", Some("10.5.0.0/24")), &[]).unwrap();
    assert_eq!(peek_network_def(tmp.path(), "web").unwrap(), def);
    let store = NetworkStore::new(tmp.path());
    assert!(matches!(store.create(&def), Err(NetworkError::Exists(_))));
    assert_eq!(bootstrap_default_network(tmp.path()).unwrap(), default_network_def());
    let names: Vec<String> = store.list().unwrap().into_iter().map(|d| d.name.to_string()).collect();
    assert_eq!(names, ["pelagos0", "web"]);
    store.remove(&def.name).unwrap();
    assert!(matches!(peek_network_def(tmp.path(), "web"), Err(NetworkError::NotFound(_))));
}

#[test]
fn ip_range_outside_the_subnet_and_bad_mtu_are_refused() {
    let mut r = req("a", Some("10.1.0.0/24"));
    r.options.ip_range = Some("10.1.1.0/25".parse().unwrap());
    assert_eq!(
        plan_network(&r, &[], &[]).unwrap_err().to_string(),
        "ip range 10.1.1.0/25 is not inside subnet 10.1.0.0/24"
    );
    r.options.ip_range = Some("10.1.0.128/25".parse().unwrap());
    r.options.mtu = Some(67);
    assert_eq!(plan_network(&r, &[], &[]).unwrap_err().to_string(), "mtu 67 is out of range (68 to 65535)");
    r.options.mtu = Some(1400);
    assert_eq!(plan_network(&r, &[], &[]).unwrap().options.mtu, Some(1400));
}

#[test]
fn ipv6_takes_a_free_ula_64_and_mirrors_ipv4_offsets() {
    let mut r = req("a", Some("10.1.0.0/24"));
    r.options.ipv6_enabled = true;
    let a = plan_network(&r, &[], &[]).unwrap();
    assert_eq!(a.options.subnet6.unwrap().to_string(), "fd70:656c:6167::/64");
    assert_eq!(a.options.gateway6.unwrap().to_string(), "fd70:656c:6167::1");
    assert_eq!(address6_of(&a, "10.1.0.7".parse().unwrap()).unwrap().to_string(), "fd70:656c:6167::7");
    let mut r2 = req("b", Some("10.2.0.0/24"));
    r2.options.ipv6_enabled = true;
    let b = plan_network(&r2, std::slice::from_ref(&a), &[]).unwrap();
    assert_eq!(b.options.subnet6.unwrap().to_string(), "fd70:656c:6167:1::/64");
    assert_eq!(address6_of(&default_network_def(), "10.90.0.7".parse().unwrap()), None);
}

#[test]
fn bad_ipv6_requests_are_refused_with_the_reason() {
    let mut r = req("a", Some("10.1.0.0/16"));
    r.options.subnet6 = Some("fd00:1::/120".parse().unwrap());
    let err = plan_network(&r, &[], &[]).unwrap_err().to_string();
    assert!(err.contains("needs at least 16 host bits (a /112 or larger)"), "{err}");
    let mut r = req("a", Some("10.1.0.0/24"));
    r.options.subnet6 = Some("fd00:1::/64".parse().unwrap());
    r.options.gateway6 = Some("fd00:1::5".parse().unwrap());
    let err = plan_network(&r, &[], &[]).unwrap_err().to_string();
    assert!(err.contains("ipv6 gateway fd00:1::5 is not usable"), "{err}");
    r.options.gateway6 = Some("fd00:2::1".parse().unwrap());
    assert!(plan_network(&r, &[], &[]).unwrap_err().to_string().contains("outside the subnet"));
    r.options.gateway6 = Some("fd00:1::ffff".parse().unwrap());
    let ok = plan_network(&r, &[], &[]).unwrap();
    let mut other = req("b", Some("10.2.0.0/24"));
    other.options.subnet6 = Some("fd00:1::/80".parse().unwrap());
    let err = plan_network(&other, &[ok], &[]).unwrap_err().to_string();
    assert!(err.contains("overlaps network a (fd00:1::/64)"), "{err}");
}

#[test]
fn definitions_without_options_still_load() {
    let old = r#"{"name":"web","subnet":"10.5.0.0/24","gateway":"10.5.0.1","bridge":"pn-web","internal":false}"#;
    let def: NetworkDef = serde_json::from_str(old).unwrap();
    assert_eq!(def.options, NetworkOptions::default());
}

#[test]
fn corrupted_definition_names_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("networks")).unwrap();
    fs::write(tmp.path().join("networks/web.json"), "{").unwrap();
    let err = peek_network_def(tmp.path(), "web").unwrap_err();
    assert!(err.to_string().contains("networks/web.json is corrupted"), "{err}");
}
