//! Hostile input (unit tier, any user): every parser of user input and of
//! on-disk state is fed arbitrary strings and bytes. None may panic; every
//! rejection is an error with a message; what is accepted is safe (names)
//! and round-trips (ports, CIDRs). Corrupted or truncated state and
//! definition files give an error naming the file and the repair.
//!
//! The case count per property is proptest's (`PROPTEST_CASES`, 256 by
//! default); a longer fuzz: `PROPTEST_CASES=100000 cargo test --test
//! fuzz_parsers`. Each property prints `fuzz <name>: <cases> cases, panics 0`.

use pelagos_net::bridge::lease::{Lease, LeaseStore};
use pelagos_net::bridge::network::{NetworkDef, NetworkStore, default_network_def};
use pelagos_net::model::cidr::Ipv4Net;
use pelagos_net::model::ifname::{IfName, NetworkName};
use pelagos_net::model::mode::NetworkMode;
use pelagos_net::model::port::PortMapping;
use pelagos_net::state::record::Record;
use pelagos_net::state::store::Store;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Run `check` on `strategy`'s values for the configured number of cases
/// and print how many ran. A panic inside `check` fails the property.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(Config { failure_persistence: None, ..Config::default() });
    let cases = AtomicU64::new(0);
    let result = runner.run(&strategy, |v| {
        cases.fetch_add(1, Ordering::Relaxed);
        check(v)
    });
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    // Written past the test harness's capture, so the count shows in CI logs.
    let _ = writeln!(std::io::stderr(), "fuzz {name}: {} cases, panics 0", cases.load(Ordering::Relaxed));
}

/// Arbitrary text, and text over the alphabet the parser cares about (so
/// cases get past the first check).
fn text(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), proptest::string::string_regex(alphabet).unwrap()]
}

#[test]
fn port_specs_never_panic_and_accepted_ones_round_trip() {
    fuzz("port spec", text("[0-9:./\\-\\[\\]a-fA-Fptcud ]{0,40}"), |s| {
        match s.parse::<PortMapping>() {
            Ok(m) => {
                let again: PortMapping = m.to_string().parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(again, m.clone(), "{} does not round-trip", s);
                prop_assert!(m.container.start() > 0);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}

#[test]
fn cidrs_never_panic_and_accepted_ones_round_trip() {
    fuzz("cidr", text("[0-9./ x-]{0,24}"), |s| {
        match s.parse::<Ipv4Net>() {
            Ok(n) => {
                prop_assert!(n.prefix() <= 32);
                prop_assert_eq!(n.to_string().parse::<Ipv4Net>().ok(), Some(n));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}

/// What every accepted name must be: nothing a path or argv could misread.
fn safe(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.is_ascii()
        && !name.contains('/')
        && !name.contains('\0')
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c.is_whitespace())
}

#[test]
fn names_never_panic_and_accepted_ones_are_safe() {
    fuzz("network/interface name", text("[a-zA-Z0-9._/: \\-\\x00é]{0,70}"), |s| {
        match NetworkName::new(&s) {
            Ok(n) => prop_assert!(safe(n.as_str(), 64) && !s.starts_with('.') && !s.contains(':'), "accepted {:?}", s),
            Err(e) => prop_assert!(e.to_string().starts_with("network name"), "{}", e),
        }
        match IfName::new(&s) {
            Ok(n) => prop_assert!(safe(n.as_str(), 15) && !s.contains(':'), "accepted {:?}", s),
            Err(e) => prop_assert!(e.to_string().starts_with("interface name"), "{}", e),
        }
        match s.parse::<NetworkMode>() {
            Ok(NetworkMode::Bridge(Some(n))) => prop_assert!(safe(n.as_str(), 64)),
            Ok(_) => {}
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    });
}

#[test]
fn names_with_path_or_option_tricks_are_refused_with_the_reason() {
    let long = "a".repeat(65);
    for (bad, why) in [
        ("a/b", "'/'"),
        ("..", "start with a letter or digit"),
        (".hidden", "start with a letter or digit"),
        ("-rf", "start with a letter or digit"),
        ("a\0b", "NUL"),
        ("ré", "non-ASCII"),
        (long.as_str(), "limit is 64"),
    ] {
        let err = NetworkName::new(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad:?}: {err}");
        let err = format!("{}", format!("bridge:{bad}").parse::<NetworkMode>().unwrap_err());
        assert!(err.contains(why), "bridge:{bad:?}: {err}");
    }
    for bad in ["a/b", "-x", "a\0", "é", "sixteen-chars-xx", "a b", "a:b"] {
        assert!(IfName::new(bad).is_err(), "{bad:?}");
    }
}

/// Valid JSON of each state format, to mutate.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let def = serde_json::to_vec_pretty(&default_network_def()).unwrap();
    let record = br#"{"format":2,"id":"0123456789ab","kind":"run","owner":{"pid":1,"start_time":2},"phase":"ready",
        "anchor":{"by":"owner"},"mode":"bridge:pelagos0","ports":["8080:80/tcp"],"selection":null,"resources":[
        {"kind":"lease","network":"pelagos0","address":"10.90.0.2","holder":"0123456789ab"},
        {"kind":"netns_name","path":"/run/netns/pelagos-0123456789ab"},
        {"kind":"forwards","network":"pelagos0","forwards":[{"host_ip":null,"host_port":8080,"proto":"tcp",
         "container_ip":"10.90.0.2","container_port":80}]},
        {"kind":"process","role":"command","process":{"pid":3,"start_time":4}}]}"#
        .to_vec();
    let lease = br#"{"id":"a","owner":{"pid":1,"start_time":2},"cni":true}"#.to_vec();
    serde_json::from_slice::<Record>(&record).expect("the record sample is valid");
    serde_json::from_slice::<Lease>(&lease).expect("the lease sample is valid");
    vec![("definition", def), ("record", record), ("lease", lease)]
}

/// A sample cut at `cut` with byte `flip` xor-ed at position `at`.
fn mutate(sample: &[u8], cut: usize, at: usize, flip: u8) -> Vec<u8> {
    let mut bytes = sample[..cut % (sample.len() + 1)].to_vec();
    if !bytes.is_empty() {
        let i = at % bytes.len();
        bytes[i] ^= flip;
    }
    bytes
}

#[test]
fn state_json_of_any_shape_never_panics() {
    let samples = samples();
    let strategy =
        (0..samples.len(), any::<usize>(), any::<usize>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64));
    fuzz("state json (definition, record, lease)", strategy, |(which, cut, at, flip, noise)| {
        let (_, sample) = &samples[which];
        for bytes in [mutate(sample, cut, at, flip), noise.clone()] {
            // Accepted or an error: never a panic. An accepted definition
            // still holds only valid names.
            if let Ok(def) = serde_json::from_slice::<NetworkDef>(&bytes) {
                prop_assert!(safe(def.name.as_str(), 32) && safe(def.bridge.as_str(), 15));
            }
            let _ = serde_json::from_slice::<Record>(&bytes);
            let _ = serde_json::from_slice::<Lease>(&bytes);
        }
        Ok(())
    });
}

/// Write `bytes` where the store expects a file and return the load error
/// (`None` when the bytes are still valid).
fn load_error(kind: &str, dir: &Path, bytes: &[u8]) -> Option<(String, std::path::PathBuf)> {
    match kind {
        "definition" => {
            let path = dir.join("networks/web.json");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            NetworkStore::new(dir).load(&"web".parse().unwrap()).err().map(|e| (error_chain(&e), path))
        }
        "record" => {
            let store = Store::open(&dir.join("run"), nix::unistd::geteuid().as_raw()).unwrap();
            let path = dir.join("run/runs/0123456789ab.json");
            std::fs::write(&path, bytes).unwrap();
            let first = store.records().unwrap().into_iter().next().unwrap();
            first.err().map(|e| (error_chain(&e), path))
        }
        _ => {
            let path = dir.join("run/leases/pelagos0/10.90.0.2");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            LeaseStore::new(&dir.join("run")).leases("pelagos0").err().map(|e| (error_chain(&e), path))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn repair_hint(kind: &str) -> &'static str {
    match kind {
        "definition" => "fix or delete the file",
        "record" => "delete it to repair",
        _ => "delete it when no container of this network runs",
    }
}

#[test]
fn every_truncation_of_a_state_file_is_an_error_naming_the_file_and_the_repair() {
    let mut checked = 0;
    for (kind, sample) in samples() {
        for cut in 0..sample.len() {
            let tmp = tempfile::tempdir().unwrap();
            if let Some((err, path)) = load_error(kind, tmp.path(), &sample[..cut]) {
                assert!(err.contains(&path.display().to_string()), "{kind} cut at {cut}: {err}");
                assert!(err.contains(repair_hint(kind)), "{kind} cut at {cut}: {err}");
                checked += 1;
            }
        }
    }
    let _ = writeln!(std::io::stderr(), "truncated state files: {checked} checked, all named with their repair");
    assert!(checked > 300);
}

#[test]
fn corrupted_state_files_are_errors_naming_the_file() {
    let samples = samples();
    fuzz(
        "corrupted state file",
        (0..samples.len(), any::<usize>(), any::<usize>(), any::<u8>()),
        |(w, cut, at, flip)| {
            let (kind, sample) = &samples[w];
            let tmp = tempfile::tempdir().unwrap();
            if let Some((err, path)) = load_error(kind, tmp.path(), &mutate(sample, cut, at, flip)) {
                prop_assert!(err.contains(&path.display().to_string()), "{}", err);
                prop_assert!(err.contains(repair_hint(kind)), "{}", err);
            }
            Ok(())
        },
    );
}

#[test]
fn dns_options_never_panic_and_accepted_ones_cannot_break_resolv_conf() {
    use pelagos_net::dns::options::{parse_add_host, parse_option, parse_search, parse_server};
    fuzz("dns options", text("[0-9a-z.:;\\[\\]\\- \\n_-]{0,40}"), |s| {
        if let Ok(opt) = parse_option(&s) {
            prop_assert!(!opt.chars().any(|c| c.is_whitespace() || c.is_control()), "{:?}", opt);
        }
        if let Ok(Some(domain)) = parse_search(&s) {
            prop_assert!(!domain.contains(char::is_whitespace), "{:?}", domain);
        }
        if let Ok(host) = parse_add_host(&s) {
            prop_assert!(host.names.iter().all(|n| !n.is_empty() && !n.contains(char::is_whitespace)));
        }
        if let Err(e) = parse_server(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    });
}

#[test]
fn resolv_conf_of_any_shape_parses_and_renders_back_to_the_same_resolver() {
    use pelagos_net::dns::resolvconf::ResolvConf;
    fuzz("resolv.conf", text("(nameserver|search|options|domain|#|;| |\\n|[0-9a-f.:]){0,30}"), |s| {
        let conf = ResolvConf::parse(&s);
        let again = ResolvConf::parse(&conf.render(&[]));
        prop_assert_eq!(&again.search, &conf.search);
        prop_assert_eq!(&again.options, &conf.options);
        prop_assert!(again.nameservers.len() <= 3);
        prop_assert!(conf.nameservers.starts_with(&again.nameservers));
        Ok(())
    });
}

#[test]
fn dns_messages_of_any_bytes_never_panic_and_replies_keep_the_question() {
    use pelagos_net::dns::proto;
    fuzz("dns message", proptest::collection::vec(any::<u8>(), 0..80), |bytes| {
        let parsed = proto::question(&bytes);
        let reply = proto::address_reply(&bytes, &["10.0.0.1".parse().unwrap()], 5);
        prop_assert_eq!(reply.is_some(), parsed.is_some());
        if let (Some(q), Some(r)) = (parsed, reply) {
            prop_assert!(proto::answers(&q, &r));
            prop_assert_eq!(proto::id(&r), proto::id(&bytes));
        }
        Ok(())
    });
}
