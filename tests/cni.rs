//! The CNI plugin `pelagos-net-cni`, driven as libcni drives it, by
//! `tests/cni/conformance.sh` (one section per test, each in its own
//! sandbox: a new network and mount namespace with a private `/run`).
//!
//! Needs root, jq, socat, iptables and Debian's containernetworking-plugins
//! (`scripts/setup-host` installs them); without them a test prints why it
//! skips, and fails under `CI=true` / `PELAGOS_REQUIRE_ALL_TIERS=1`.

use std::path::Path;
use std::process::Command;

fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("PELAGOS_REQUIRE_ALL_TIERS").is_ok_and(|v| v == "1")
}

fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to build throwaway namespaces (run scripts/test-all with sudo)".into());
    }
    for tool in ["jq", "socat", "iptables", "nft", "ip", "unshare"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} is not installed (scripts/setup-host installs it)"));
        }
    }
    for plugin in ["portmap", "tuning", "firewall", "host-local"] {
        if !Path::new("/usr/lib/cni").join(plugin).exists() {
            return Some(format!("/usr/lib/cni/{plugin} is missing (apt-get install containernetworking-plugins)"));
        }
    }
    None
}

fn section(name: &str) {
    if let Some(why) = missing() {
        assert!(!strict(), "cni {name}: {why}, and skipping is not allowed in CI");
        eprintln!("SKIP: cni {name}: {why}");
        return;
    }
    run_section(Path::new(env!("CARGO_BIN_EXE_pelagos-net-cni")), name);
}

fn run_section(plugin: &Path, name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cni/conformance.sh");
    let out = Command::new(&script)
        .arg(plugin)
        .arg(name)
        .env("PELAGOS_NET_CLI", env!("CARGO_BIN_EXE_pelagos-net"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains(" passed, 0 failed"),
        "cni {name} ({}) failed:\n{text}",
        plugin.display()
    );
}

#[test]
fn protocol_version_add_check_del_del_again_gc_status_with_expected_json() {
    section("protocol");
}

#[test]
fn chains_with_reference_portmap_tuning_and_firewall() {
    section("chains");
}

#[test]
fn thirty_two_concurrent_adds_get_distinct_addresses() {
    section("concurrency");
}

#[test]
fn bad_input_gets_the_spec_error_object_and_creates_nothing() {
    section("bad-input");
}

#[test]
fn published_ports_taken_by_a_container_a_cli_run_or_a_host_socket_are_refused_with_code_7() {
    section("ports");
}

#[test]
fn add_and_del_killed_at_every_step_leave_nothing_after_del_or_gc() {
    if !pelagos_net::fault::ENABLED {
        eprintln!("SKIP: the fault sweep needs --features fault-injection (scripts/test-all builds with it)");
        return;
    }
    section("fault-sweep");
}

#[test]
fn add_beside_a_forward_drop_ruleset_still_forwards() {
    section("forward-drop");
}

#[test]
fn del_then_an_immediate_add_reuses_address_port_and_id_and_a_lost_deferred_deletion_is_finished() {
    section("del-reuse");
}

/// The plugin as README.md installs it: statically linked against musl,
/// release build, scripts run by the `nft` command. scripts/test-all builds
/// it and names it in `PELAGOS_CNI_STATIC_PLUGIN`.
#[test]
fn the_static_plugin_as_installed_passes_every_section() {
    let plugin = std::env::var_os("PELAGOS_CNI_STATIC_PLUGIN").map(std::path::PathBuf::from);
    let why = missing().or_else(|| match &plugin {
        None => Some("PELAGOS_CNI_STATIC_PLUGIN is not set: scripts/test-all builds the static plugin (cargo build --release --target x86_64-unknown-linux-musl --bin pelagos-net-cni) and sets it".into()),
        Some(p) if !p.is_file() => Some(format!("PELAGOS_CNI_STATIC_PLUGIN names {}, which does not exist", p.display())),
        Some(_) => None,
    });
    if let Some(why) = why {
        assert!(!strict(), "cni static plugin: {why}, and skipping is not allowed in CI");
        eprintln!("SKIP: cni static plugin: {why}");
        return;
    }
    let plugin = plugin.expect("checked above");
    assert!(!has_interpreter(&plugin), "{} is dynamically linked (it names a program interpreter)", plugin.display());
    for name in ["protocol", "chains", "concurrency", "bad-input", "ports", "forward-drop", "del-reuse"] {
        run_section(&plugin, name);
    }
}

/// Whether an ELF64 little-endian executable has a `PT_INTERP` program
/// header, i.e. is started by a dynamic loader.
fn has_interpreter(binary: &Path) -> bool {
    let elf = std::fs::read(binary).unwrap();
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "{} is not a little-endian ELF64 file", binary.display());
    let word = |at: usize, len: usize| elf[at..at + len].iter().rev().fold(0usize, |n, b| n << 8 | *b as usize);
    let (phoff, phentsize, phnum) = (word(0x20, 8), word(0x36, 2), word(0x38, 2));
    (0..phnum).any(|i| word(phoff + i * phentsize, 4) == 3)
}
