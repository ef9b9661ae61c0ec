use super::*;

fn ports(specs: &[&str]) -> Vec<PortMapping> {
    specs.iter().map(|s| s.parse().unwrap()).collect()
}

const OLD_PASTA: DriverFacts = DriverFacts { pasta: PastaBuild::Broken, rootless_bridge: false };
const NEW_PASTA: DriverFacts = DriverFacts { pasta: PastaBuild::Fixed, rootless_bridge: false };

fn chosen(mode: NetworkMode, driver: PortDriver, specs: &[&str], facts: DriverFacts) -> (ChosenDriver, String) {
    let c = choose_driver(&mode, driver, &ports(specs), facts).unwrap();
    (c.driver, c.name)
}

#[test]
fn auto_on_a_broken_pasta_with_an_all_interfaces_port_is_builtin() {
    let c = choose_driver(&NetworkMode::Pasta, PortDriver::Auto, &ports(&["8080:80"]), OLD_PASTA).unwrap();

    assert_eq!(c.driver, ChosenDriver::Builtin);
    assert!(c.reason.contains("2023_10_04"), "{}", c.reason);
}

#[test]
fn auto_on_a_broken_pasta_with_only_loopback_binds_is_builtin_too() {
    let got = chosen(NetworkMode::Pasta, PortDriver::Auto, &["127.0.0.1:8080:80", "[::1]:8081:81"], OLD_PASTA);

    assert_eq!(got.0, ChosenDriver::Builtin);
}

#[test]
fn auto_on_a_fixed_pasta_keeps_pasta() {
    let got = chosen(NetworkMode::Pasta, PortDriver::Auto, &["8080:80"], NEW_PASTA);

    assert_eq!(got, (ChosenDriver::Native, "pasta".to_string()));
}

#[test]
fn explicit_drivers_are_honoured() {
    assert_eq!(chosen(NetworkMode::Pasta, PortDriver::Pasta, &["8080:80"], OLD_PASTA).0, ChosenDriver::Native);
    assert_eq!(chosen(NetworkMode::Pasta, PortDriver::Builtin, &["127.0.0.1:1:1"], NEW_PASTA).0, ChosenDriver::Builtin);
    let slirp = chosen(NetworkMode::Slirp4netns, PortDriver::Slirp4netns, &["8080:80"], OLD_PASTA);
    assert_eq!(slirp, (ChosenDriver::Native, "slirp4netns".to_string()));
}

#[test]
fn slirp_and_loopback_auto_are_builtin() {
    assert_eq!(chosen(NetworkMode::Slirp4netns, PortDriver::Auto, &["8080:80"], NEW_PASTA).0, ChosenDriver::Builtin);
    assert_eq!(chosen(NetworkMode::Loopback, PortDriver::Auto, &["8080:80"], NEW_PASTA).0, ChosenDriver::Builtin);
}

#[test]
fn bridge_auto_is_nftables_unless_a_port_binds_ipv6() {
    let bridge = NetworkMode::Bridge(None);
    assert_eq!(
        chosen(bridge.clone(), PortDriver::Auto, &["8080:80"], OLD_PASTA),
        (ChosenDriver::Native, "nftables".into())
    );
    assert_eq!(chosen(bridge, PortDriver::Auto, &["[::1]:8080:80"], OLD_PASTA).0, ChosenDriver::Builtin);
}

#[test]
fn no_ports_means_no_driver_whatever_was_asked() {
    assert_eq!(chosen(NetworkMode::Pasta, PortDriver::Builtin, &[], OLD_PASTA).0, ChosenDriver::None);
}

#[test]
fn a_driver_of_another_mode_is_refused_naming_what_works() {
    let err = choose_driver(&NetworkMode::Slirp4netns, PortDriver::Pasta, &ports(&["80"]), OLD_PASTA).unwrap_err();

    assert_eq!(
        err.to_string(),
        "port driver pasta does not work with network mode slirp4netns: use auto, builtin or slirp4netns"
    );
    let err = choose_driver(&NetworkMode::Loopback, PortDriver::Nftables, &ports(&["80"]), OLD_PASTA).unwrap_err();
    assert!(err.to_string().ends_with("use auto or builtin"), "{err}");
}

#[test]
fn driver_names_parse_and_print_back() {
    for name in ["auto", "builtin", "pasta", "slirp4netns", "nftables"] {
        assert_eq!(name.parse::<PortDriver>().unwrap().to_string(), name);
    }
    assert_eq!("BUILTIN".parse::<PortDriver>().unwrap(), PortDriver::Builtin);
    let err = "rootlesskit".parse::<PortDriver>().unwrap_err();
    assert!(err.to_string().contains("expected auto, builtin"), "{err}");
}

#[test]
fn an_unidentified_pasta_build_is_relayed_and_the_reason_says_so() {
    let facts = DriverFacts { pasta: PastaBuild::Unknown, rootless_bridge: false };
    let c = choose_driver(&NetworkMode::Pasta, PortDriver::Auto, &ports(&["8080:80"]), facts).unwrap();

    assert_eq!(c.driver, ChosenDriver::Builtin);
    assert!(c.reason.contains("could not be identified"), "{}", c.reason);
}

#[test]
fn host_mode_forwards_nothing_and_says_why() {
    let c = choose_driver(&NetworkMode::Host, PortDriver::Builtin, &ports(&["8080:80"]), OLD_PASTA).unwrap();

    assert_eq!(c.driver, ChosenDriver::None);
    assert!(c.reason.starts_with("host networking"), "{}", c.reason);
}
