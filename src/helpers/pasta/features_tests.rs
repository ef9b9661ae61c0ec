//! Tests of `features`.
use super::*;

const DEBIAN_HELP: &str = include_str!("../../../tests/fixtures/pasta-help-2023-03-09.txt");

fn features(version: &str, options: &[&str]) -> PastaFeatures {
    PastaFeatures { version: parse_version(version), options: options.iter().map(|o| o.to_string()).collect() }
}

#[test]
fn debian_2023_help_lists_exactly_its_options() {
    let options = parse_help(DEBIAN_HELP);

    let expected = "--address --config-net --debug --dhcp-dns --dhcp-search --dns --dns-forward \
        --fd --foreground --gateway --help --interface --ipv4-only --ipv6-only --log-file \
        --log-size --mac-addr --mtu --netmask --netns --netns-only --no-dhcp --no-dhcpv6 \
        --no-icmp --no-map-gw --no-ndp --no-netns-quit --no-ra --no-tcp --no-udp --ns-ifname \
        --ns-mac-addr --outbound --outbound-if4 --outbound-if6 --pcap --pid --quiet --runas \
        --search --stderr --tcp-ns --tcp-ports --trace --udp-ns --udp-ports --userns --version";
    assert_eq!(options, expected.split_whitespace().map(String::from).collect());
}

#[test]
fn debian_2023_build_has_runas_but_no_2024_options() {
    let f = PastaFeatures::from_outputs("pasta unknown version\n", DEBIAN_HELP);

    assert!(f.supports_runas() && f.has("--config-net") && f.has("netns-only"));
    assert!(!f.supports_map_host_loopback());
    assert!(!f.supports_map_guest_addr());
    assert_eq!(f.tcp_tap_bugs(), TapBugs { server_first_hang: true, half_close_corruption: true });
}

#[test]
fn help_ignores_syslog_noise_prose_and_usage() {
    let text = "Failed to send 51 bytes to syslog\nUsage: pasta [OPTION]... --netns [PATH|NAME]\n\
        \x20      pasta [OPTION]... --netns [PATH|NAME]\n\
        Failed to send 35 bytes to syslog\n  -f, --foreground\tDon't run in background\n\
        \x20   default: from --mentioned-only and --also-prose\n\
        \x20       -t 22-80:32-90\tForward ports\n  --runas UID|UID:GID \tRun as\n\
        \x20 --map-guest-addr ADDR\tTranslate ADDR\n";

    let options: Vec<_> = parse_help(text).into_iter().collect();

    assert_eq!(options, ["--foreground", "--map-guest-addr", "--runas"]);
}

#[test]
fn version_lines_parse() {
    let unknown = "pasta unknown version\nCopyright Red Hat\nGNU Affero GPL version 3 or later\n";
    let dated = "pasta 2024_08_06.ee36266\nCopyright Red Hat\n";

    assert_eq!(parse_version(unknown), PastaVersion::Unknown);
    assert_eq!(parse_version(dated), PastaVersion::Dated("2024_08_06.ee36266".into()));
    assert_eq!(
        parse_version("Failed to send 7 bytes to syslog\npasta 2023_12_30.f091893\n").release_date(),
        Some(ReleaseDate::new(2023, 12, 30))
    );
    assert_eq!(parse_version(""), PastaVersion::Unknown);
    assert_eq!(parse_version("pasta 1.0-custom\n"), PastaVersion::Other("1.0-custom".into()));
}

#[test]
fn release_dates_are_found_in_distribution_versions() {
    let date = |v: &str| PastaVersion::Dated(v.into()).release_date();

    assert_eq!(date("2024_08_06.ee36266"), Some(ReleaseDate::new(2024, 8, 6)));
    assert_eq!(date("0^20240806.gee36266-1.fc40"), Some(ReleaseDate::new(2024, 8, 6)));
    assert_eq!(date("0.0~git20230309.7c7625d-1"), Some(ReleaseDate::new(2023, 3, 9)));
    assert_eq!(ReleaseDate::find_in("build 12345678 202401011"), None);
    assert_eq!(ReleaseDate::new(2023, 10, 4).to_string(), "2023_10_04");
}

#[test]
fn tap_bug_inference_table() {
    let none = TapBugs::default();
    let both = TapBugs { server_first_hang: true, half_close_corruption: true };
    let half = TapBugs { server_first_hang: false, half_close_corruption: true };
    let cases = [
        ("pasta 2023_03_09.7c7625d", &[][..], both),
        ("pasta 2023_10_03.aaaaaaa", &[], both),
        ("pasta 2023_10_04.4ef1dd9", &[], half),
        ("pasta 2024_08_05.bbbbbbb", &["--map-guest-addr"][..], half),
        ("pasta 2024_08_06.ee36266", &[], none),
        ("pasta 0^20250217.ga1e48a0-1.fc41", &[], none),
        ("pasta unknown version", &["--runas", "--map-host-loopback"], both),
        ("pasta unknown version", &["--runas", "--map-guest-addr"], none),
        ("pasta 1.0-custom", &[], both),
    ];
    for (version, options, bugs) in cases {
        let f = features(version, options);
        assert_eq!(f.tcp_tap_bugs(), bugs, "{version} with {options:?}");
        assert_eq!(f.tcp_tap_bugs().any(), bugs != none);
    }
}

#[test]
fn tail_keeps_last_meaningful_lines() {
    let text = "one\ntwo\nFailed to send 9 bytes to syslog\n\nthree\n";

    assert_eq!(tail(text, 2), "two; three");
    assert_eq!(tail("", 3), "");
}

#[test]
fn features_round_trip_through_json() {
    let f = features("pasta 2024_08_06.ee36266", &["--runas"]);

    let json = serde_json::to_string(&f).unwrap();

    assert_eq!(serde_json::from_str::<PastaFeatures>(&json).unwrap(), f);
}

#[test]
fn probe_real_pasta_when_installed() {
    let pasta = Path::new("/usr/bin/pasta");
    if !pasta.exists() {
        eprintln!("SKIP: probe_real_pasta_when_installed: {} not installed", pasta.display());
        return;
    }

    let f = probe(pasta).unwrap();

    assert!(f.supports_runas() && f.has("--config-net") && f.has("--netns"), "{f:?}");
    eprintln!("probed {}: {:?}, tap bugs {:?}", pasta.display(), f.version, f.tcp_tap_bugs());
}

#[test]
fn probe_of_a_non_pasta_binary_is_an_error() {
    let err = probe(Path::new("/bin/true")).unwrap_err();
    assert_eq!(err.to_string(), "/bin/true --help does not list --netns; is it pasta?");

    let err = probe(Path::new("/bin/false")).unwrap_err();
    assert!(matches!(err, FeatureProbeError::VersionFailed { .. }), "{err:?}");

    let err = probe(Path::new("/nonexistent/pasta")).unwrap_err();
    assert!(matches!(err, FeatureProbeError::Spawn { arg: "--version", .. }), "{err:?}");
}

#[test]
fn only_dated_builds_from_2025_are_trusted_to_forward_tcp_dns() {
    let debian =
        PastaFeatures::from_outputs("pasta unknown version\n", "  --dns-forward ADDR\n  --map-guest-addr ADDR\n");
    assert!(!debian.maps_tcp_dns());
    let new = PastaFeatures::from_outputs("pasta 2025_01_21.4f2c8e7\n", "  --dns-forward ADDR\n");
    assert!(new.maps_tcp_dns());
    let old = PastaFeatures::from_outputs("pasta 2024_08_06.ee36266\n", "  --dns-forward ADDR\n");
    assert!(!old.maps_tcp_dns());
}
