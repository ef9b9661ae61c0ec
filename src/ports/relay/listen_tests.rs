use super::*;

fn mapping(spec: &str) -> PortMapping {
    spec.parse().unwrap()
}

fn addrs(plans: &[ListenerPlan]) -> Vec<(String, u16, Need)> {
    plans.iter().map(|p| (p.addr.to_string(), p.container_port, p.need)).collect()
}

#[test]
fn mapping_without_host_ip_plans_ipv4_and_optional_ipv6() {
    let plans = plan_listeners(&[mapping("8080:80")]).unwrap();
    assert_eq!(
        addrs(&plans),
        vec![("0.0.0.0:8080".into(), 80, Need::Required), ("[::]:8080".into(), 80, Need::IfIpv6Available)]
    );
    assert!(plans.iter().all(|p| p.proto == PortProto::Tcp));
}

#[test]
fn mapping_with_host_ip_plans_one_required_listener() {
    let plans = plan_listeners(&[mapping("[::1]:5353:53/udp")]).unwrap();
    assert_eq!(addrs(&plans), vec![("[::1]:5353".into(), 53, Need::Required)]);
    assert_eq!(plans[0].proto, PortProto::Udp);
}

#[test]
fn range_maps_port_by_port() {
    let plans = plan_listeners(&[mapping("127.0.0.1:8000-8002:80-82")]).unwrap();
    assert_eq!(
        addrs(&plans),
        vec![
            ("127.0.0.1:8000".into(), 80, Need::Required),
            ("127.0.0.1:8001".into(), 81, Need::Required),
            ("127.0.0.1:8002".into(), 82, Need::Required),
        ]
    );
}

#[test]
fn range_without_host_ip_plans_two_listeners_per_port() {
    let plans = plan_listeners(&[mapping("9000-9001:90-91/udp")]).unwrap();
    let got: Vec<String> = plans.iter().map(|p| format!("{}->{}", p.addr, p.container_port)).collect();
    assert_eq!(got, ["0.0.0.0:9000->90", "[::]:9000->90", "0.0.0.0:9001->91", "[::]:9001->91"]);
}

#[test]
fn ephemeral_host_port_is_an_error_naming_the_mapping() {
    let err = plan_listeners(&[mapping("8080:80"), mapping("127.0.0.1::80")]).unwrap_err();
    assert!(matches!(err, PortfwdError::UnresolvedHostPort { .. }));
    assert!(err.to_string().contains("127.0.0.1::80/tcp"), "{err}");
}

#[test]
fn port_in_use_message_names_address_and_port() {
    let err = PortfwdError::PortInUse { addr: "0.0.0.0:8080".parse().unwrap(), proto: PortProto::Tcp };
    assert_eq!(err.to_string(), "bind tcp 0.0.0.0:8080: port in use");
}
