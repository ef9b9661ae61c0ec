//! Tests of `probe`: fake hosts as temporary trees, one hostile trait at a time.
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use crate::helpers::pasta::features::PastaVersion;

const DEBIAN_HELP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pasta-help-2023-03-09.txt");
const SLIRP_VERSION: &str = "slirp4netns version 1.2.0\ncommit: 656041d45cfca7a4176f6b7eed9e4fe6c11e8383\n\
    libslirp: 4.7.0\nSLIRP_CONFIG_VERSION_MAX: 4\nlibseccomp: 2.5.4";
const SLIRP_HELP: &str = "Usage: slirp4netns [OPTION]... PID|PATH [TAPNAME]\n\
    User-mode networking for unprivileged network namespaces.\n\n\
    -c, --configure          bring up the interface\n\
    -e, --exit-fd=FD         specify the FD for terminating slirp4netns\n\
    -r, --ready-fd=FD        specify the FD to write to when the network is configured\n\
    -m, --mtu=MTU            specify MTU (default=1500, max=65521)\n\
    -6, --enable-ipv6        enable IPv6 (experimental)\n\
    -a, --api-socket=PATH    specify API socket path\n\
    --disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace\n\
    --netns-type=TYPE \t specify network namespace type ([path|pid], default=pid)\n\
    --userns-path=PATH\t specify user namespace path\n\
    -h, --help               show this help and exit";
/// An euid/gid that is not the test runner's, so a root-owned 0600 node is not ours.
const ALICE: u32 = 4242;
const ROUTE_HEADER: &str = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n";
const ROUTE_DEFAULT: &str = "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
const V6_DEFAULT: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
    fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n";
const V6_LO_REJECT: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
    00000000000000000000000000000000 ffffffff 00000001 00000001 00200200       lo\n";

const NF_TABLES_DEP: &str = "kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz\n";

/// A healthy rootless host as a temporary tree; tests break one thing each.
struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new() -> Self {
        let fake = Self { dir: tempfile::tempdir().unwrap() };
        fake.write("proc/self/status", "Name:\tx\nCapEff:\t0000000000000000\nSeccomp:\t0\n");
        fake.write("proc/self/uid_map", "         0          0 4294967295\n");
        fake.write("proc/sys/user/max_user_namespaces", "63000\n");
        fake.write("proc/sys/kernel/unprivileged_userns_clone", "1\n");
        fake.write("proc/self/net/route", &format!("{ROUTE_HEADER}{ROUTE_DEFAULT}"));
        fake.write("proc/self/net/ipv6_route", V6_LO_REJECT);
        fake.write("proc/net/netfilter/nf_log", " 2 nf_log_ipv4 (nf_log_ipv4)\n");
        fake.write("proc/sys/kernel/osrelease", "6.1.0-41-amd64\n");
        fake.write("usr/lib/x86_64-linux-gnu/libnftables.so.1", "");
        fake.write("proc/1/cgroup", "0::/init.scope\n");
        fake.write("etc/passwd", &format!("root:x:0:0::/root:/bin/sh\nalice:x:{ALICE}:{ALICE}::/home/alice:/bin/sh\n"));
        fake.write("etc/subuid", "# comment\nbob:200000:65536\nalice:100000:65536\nbroken line\n");
        fake.write("etc/subgid", &format!("{ALICE}:300000:1000\n"));
        fake.write("dev/net/tun", "");
        fake.chmod("dev/net/tun", 0o666);
        fake.script(
            "pasta",
            &format!(
                "case \"$1\" in --version) echo 'pasta unknown version';; *) cat {DEBIAN_HELP} >&2; exit 1;; esac"
            ),
        );
        fake.script(
            "slirp4netns",
            &format!("case \"$1\" in --version) echo '{SLIRP_VERSION}';; *) echo '{SLIRP_HELP}';; esac"),
        );
        fake.script("newuidmap", "exit 0");
        fake
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A `#!/bin/sh` script in `bin/` that also counts its runs in `runs/<name>`.
    fn script(&self, name: &str, body: &str) {
        let rel = format!("bin/{name}");
        let counter = self.path(&format!("runs/{name}"));
        fs::create_dir_all(counter.parent().unwrap()).unwrap();
        self.write(&rel, &format!("#!/bin/sh\necho run >> {}\n{body}\n", counter.display()));
        self.chmod(&rel, 0o755);
        // Another thread's fork may briefly hold our write fd (ETXTBSY); wait until it execs.
        for _ in 0..200 {
            match std::process::Command::new(self.path(&rel)).arg("--warm-up").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                _ => break,
            }
        }
        fs::write(&counter, "").unwrap();
    }

    fn runs(&self, name: &str) -> usize {
        fs::read_to_string(self.path(&format!("runs/{name}"))).unwrap_or_default().lines().count()
    }

    fn roots(&self) -> ProbeRoots {
        ProbeRoots {
            proc_root: self.path("proc"),
            etc_root: self.path("etc"),
            fs_root: self.dir.path().to_owned(),
            dev_tun: self.path("dev/net/tun"),
            path_env: Some(self.path("bin").into_os_string()),
            pasta: None,
            cache_dir: None,
            cache_writable: true,
            euid: ALICE,
            uid: ALICE,
            gid: ALICE,
            tun_check: TunCheck::FromMode,
        }
    }

    fn probe(&self) -> HostCaps {
        HostCaps::probe(&self.roots())
    }
}

#[test]
fn healthy_fake_host_is_read_in_full() {
    let fake = Fake::new();

    let caps = fake.probe();

    assert_eq!((caps.euid, caps.cap_net_admin, caps.cap_sys_admin, caps.in_userns), (ALICE, false, false, false));
    assert_eq!(caps.netns_is_own, None, "a fake tree has no nsfs");
    assert_eq!(caps.userns_blocker(), None);
    assert_eq!(caps.subuid, [IdRange { start: 100000, count: 65536 }]);
    assert_eq!(caps.subgid, [IdRange { start: 300000, count: 1000 }]);
    assert_eq!(caps.newuidmap, Some(fake.path("bin/newuidmap")));
    assert_eq!(caps.newgidmap, None);
    assert_eq!(caps.tun.problem, None);
    let pasta = caps.pasta.features().expect("pasta probed");
    assert_eq!(pasta.features.version, PastaVersion::Unknown);
    assert!(pasta.features.has("--config-net") && pasta.tcp_tap_bugs.any());
    let slirp = caps.slirp4netns.features().expect("slirp4netns probed");
    assert_eq!(slirp.version.map(|v| v.to_string()).as_deref(), Some("1.2.0"));
    assert_eq!((slirp.libslirp.as_deref(), slirp.config_version_max), (Some("4.7.0"), Some(4)));
    assert!(slirp.has("--api-socket") && slirp.has("--netns-type") && slirp.has("userns-path"));
    assert_eq!(caps.nftables, NftEvidence::NetfilterPresent, "no module index: netfilter's core is the sign");
    assert_eq!(caps.kernel_release.as_deref(), Some("6.1.0-41-amd64"));
    assert_eq!(caps.default_route, DefaultRoute { ipv4: true, ipv6: false });
    assert!(!caps.in_container());
}

#[test]
fn a_scoped_probe_reads_what_its_scope_covers_as_the_full_probe_does() {
    let fake = Fake::new();
    let full = fake.probe();
    let scoped = |scope| HostCaps::probe_scoped(&fake.roots(), scope);

    let pasta = scoped(ProbeScope::Pasta);
    assert_eq!((&pasta.pasta, &pasta.tun, pasta.default_route), (&full.pasta, &full.tun, full.default_route));
    assert_eq!(pasta.slirp4netns, Helper::NotProbed);
    let slirp = scoped(ProbeScope::Slirp4netns);
    assert_eq!((&slirp.slirp4netns, &slirp.tun), (&full.slirp4netns, &full.tun));
    assert_eq!((&slirp.pasta, slirp.default_route), (&Helper::NotProbed, DefaultRoute::default()));
    let who = scoped(ProbeScope::Identity);
    assert_eq!(
        (who.euid, who.uid, who.cap_net_admin, who.cap_sys_admin),
        (full.euid, full.uid, full.cap_net_admin, full.cap_sys_admin)
    );
    assert_eq!((&who.pasta, &who.slirp4netns), (&Helper::NotProbed, &Helper::NotProbed));
    assert_eq!(scoped(ProbeScope::Full), full);
}

#[test]
fn hostile_fake_hosts_are_reported() {
    type Break = fn(&Fake);
    type Check = fn(&HostCaps) -> bool;
    #[rustfmt::skip]
    let cases: &[(&str, Break, Check)] = &[
        ("userns max 0", |f| f.write("proc/sys/user/max_user_namespaces", "0\n"),
            |c| c.userns_blocker().is_some_and(|h| h.contains("max_user_namespaces = 0"))),
        ("userns clone 0", |f| f.write("proc/sys/kernel/unprivileged_userns_clone", "0\n"),
            |c| c.userns_blocker().is_some_and(|h| h.contains("unprivileged_userns_clone = 0"))),
        ("apparmor", |f| f.write("proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1\n"),
            |c| c.userns_blocker().is_some_and(|h| h.contains("AppArmor"))),
        ("tun missing", |f| fs::remove_file(f.path("dev/net/tun")).unwrap(),
            |c| matches!(c.tun.problem, Some(TunProblem::Missing { .. }))),
        ("tun 0600", |f| f.chmod("dev/net/tun", 0o600),
            |c| matches!(c.tun.problem, Some(TunProblem::NotPermitted { mode: 0o600, uid: ALICE, .. }))),
        ("pasta missing", |f| fs::remove_file(f.path("bin/pasta")).unwrap(),
            |c| c.pasta == Helper::Missing),
        ("pasta too old", |f| f.script("pasta", "echo 'pasta unknown version'; printf '  --netns PATH\\n  -t, --tcp-ports SPEC\\n'"),
            |c| c.pasta.features().is_some_and(|p| p.features.has("--netns") && !p.features.has("--config-net"))),
        ("pasta broken", |f| f.script("pasta", "echo 'cannot start' >&2; exit 3"),
            |c| matches!(&c.pasta, Helper::Broken { error, .. } if error.contains("cannot start"))),
        ("not slirp", |f| f.script("slirp4netns", "echo hello"),
            |c| matches!(&c.slirp4netns, Helper::Broken { error, .. } if error.contains("does not identify"))),
        ("no default route", |f| f.write("proc/self/net/route", ROUTE_HEADER),
            |c| !c.default_route.any()),
        ("ipv6-only route", |f| { f.write("proc/self/net/route", ROUTE_HEADER); f.write("proc/self/net/ipv6_route", V6_DEFAULT) },
            |c| c.default_route == DefaultRoute { ipv4: false, ipv6: true }),
        ("no nftables", |f| fs::remove_dir_all(f.path("proc/net/netfilter")).unwrap(),
            |c| c.nftables == NftEvidence::NotFound && !c.nftables.usable()),
        ("nf_tables loaded", |f| f.write("proc/modules", "nf_tables 356352 0 - Live 0x0\n"),
            |c| c.nftables == NftEvidence::ModuleLoaded),
        ("nf_tables a module", |f| f.write("lib/modules/6.1.0-41-amd64/modules.dep", NF_TABLES_DEP),
            |c| c.nftables == NftEvidence::ModuleAvailable),
        ("kernel without nf_tables", |f| f.write("lib/modules/6.1.0-41-amd64/modules.dep", "kernel/net/core/veth.ko.xz:\n"),
            |c| c.nftables == NftEvidence::NotFound && c.nftables.problem().is_some_and(|p| p.fix.contains("modprobe nf_tables"))),
        ("no libnftables", |f| fs::remove_file(f.path("usr/lib/x86_64-linux-gnu/libnftables.so.1")).unwrap(),
            |c| c.nftables == NftEvidence::LibraryMissing && !c.nftables.usable()),
        ("already in userns", |f| f.write("proc/self/uid_map", "         0       4242          1\n"),
            |c| c.in_userns),
        ("root caps", |f| f.write("proc/self/status", "CapEff:\t000001ffffffffff\nSeccomp:\t2\n"),
            |c| c.cap_net_admin && c.cap_sys_admin && c.seccomp_filter),
        ("net admin only", |f| f.write("proc/self/status", "CapEff:\t0000000000001000\n"),
            |c| c.cap_net_admin && !c.cap_sys_admin),
        ("dockerenv", |f| f.write(".dockerenv", ""),
            |c| c.container == [ContainerHint::DockerEnv]),
        ("containerenv", |f| f.write("run/.containerenv", ""),
            |c| c.container == [ContainerHint::ContainerEnv]),
        ("container= in environ", |f| f.write("proc/1/environ", "PATH=/bin\0container=podman\0"),
            |c| c.container == [ContainerHint::EnvVar { value: "podman".into() }]),
        ("kubepods cgroup", |f| f.write("proc/1/cgroup", "0::/kubepods/besteffort/pod1/abc\n"),
            |c| c.container == [ContainerHint::Cgroup { runtime: "kubepods".into() }]),
    ];
    for (name, break_it, check) in cases {
        let fake = Fake::new();
        break_it(&fake);

        let caps = fake.probe();

        assert!(check(&caps), "{name}: {caps:#?}");
    }
}

#[test]
fn fake_hosts_probed_then_selected_end_to_end() {
    use crate::flow::select::{Mode, Needs, Request, select};
    type Break = fn(&Fake);
    #[rustfmt::skip]
    let cases: &[(&str, Break, Mode, &str)] = &[
        ("debian pasta, egress", |_| {}, Mode::Slirp4netns, "fixed in 2024_08_06"),
        ("pasta too old", |f| f.script("pasta", "echo 'pasta unknown version'; echo '  --netns PATH'"),
            Mode::Slirp4netns, "lacks --config-net"),
        ("tun 0600", |f| f.chmod("dev/net/tun", 0o600), Mode::Loopback, "mode 0600"),
        ("docker without tun", |f| { f.write(".dockerenv", ""); fs::remove_file(f.path("dev/net/tun")).unwrap() },
            Mode::Loopback, "--device"),
        ("no default route, no slirp4netns", |f| {
                f.write("proc/self/net/route", ROUTE_HEADER); fs::remove_file(f.path("bin/slirp4netns")).unwrap() },
            Mode::Loopback, "no default route"),
    ];
    let req =
        Request { needs: Needs { egress: true, published_ports: true, ..Needs::default() }, ..Request::default() };
    for (name, break_it, want, phrase) in cases {
        let fake = Fake::new();
        break_it(&fake);

        let d = select(&req, &fake.probe()).unwrap_or_else(|e| panic!("{name}: {e}"));

        let text = format!("{} | {}", d.reason, d.fixes.join(" | "));
        assert_eq!(&d.mode, want, "{name}: {d:#?}");
        assert!(text.contains(phrase), "{name}: {text}");
    }
}

#[test]
fn root_ignores_debian_and_apparmor_knobs_but_not_max_zero() {
    let fake = Fake::new();
    fake.write("proc/self/status", "CapEff:\t000001ffffffffff\n");
    fake.write("proc/sys/kernel/unprivileged_userns_clone", "0\n");
    fake.write("proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1\n");
    assert_eq!(fake.probe().userns_blocker(), None);

    fake.write("proc/sys/user/max_user_namespaces", "0\n");
    assert!(fake.probe().userns_blocker().is_some());
}

#[test]
fn subids_match_by_uid_number_and_skip_malformed_lines() {
    let text = "4242:1:2\nalice:10:0\nalice:x:5\n4242:100:50\nalice:7:8";
    let got = parse::subid_ranges(text, Some("alice"), 4242);
    assert_eq!(
        got,
        [IdRange { start: 1, count: 2 }, IdRange { start: 100, count: 50 }, IdRange { start: 7, count: 8 }]
    );
    assert!(parse::subid_ranges(text, None, 1).is_empty());
}

#[test]
fn uid_map_identity_is_exactly_the_initial_map() {
    assert!(parse::is_identity_map("         0          0 4294967295\n"));
    assert!(!parse::is_identity_map("0 1000 1\n"));
    assert!(!parse::is_identity_map("0 0 4294967295\n1 1 1\n"));
    assert!(!parse::is_identity_map(""));
}

#[test]
fn slirp_help_lists_exactly_its_long_options() {
    let got: Vec<String> = crate::helpers::slirp::features::parse_help(SLIRP_HELP).into_iter().collect();
    let want = "--api-socket --configure --disable-host-loopback --enable-ipv6 --exit-fd --help --mtu \
        --netns-type --ready-fd --userns-path";
    assert_eq!(got.join(" "), want);
    let version = crate::helpers::slirp::features::parse_version(SLIRP_VERSION);
    assert_eq!(version.map(|v| v.to_string()).as_deref(), Some("1.2.0"));
}

#[test]
fn cache_is_reused_until_the_binary_changes_and_survives_corruption() {
    let fake = Fake::new();
    let cache = fake.path("cache");
    let roots = ProbeRoots { cache_dir: Some(cache.clone()), ..fake.roots() };

    let first = HostCaps::probe(&roots);
    let second = HostCaps::probe(&roots);
    assert_eq!(first, second);
    assert_eq!((fake.runs("pasta"), fake.runs("slirp4netns")), (2, 2), "second probe must come from the cache");
    assert!(cache.join("pasta.json").is_file() && cache.join("slirp4netns.json").is_file());

    HostCaps::probe_uncached(&roots);
    assert_eq!(fake.runs("pasta"), 4, "uncached probes always run the binary");

    fs::write(cache.join("pasta.json"), "{ not json").unwrap();
    assert_eq!(HostCaps::probe(&roots).pasta, first.pasta);
    assert_eq!(fake.runs("pasta"), 6, "a corrupted cache is ignored");
    let rewritten: serde_json::Value = serde_json::from_slice(&fs::read(cache.join("pasta.json")).unwrap()).unwrap();
    assert_eq!(rewritten["binary"], serde_json::json!(fake.path("bin/pasta")));

    fake.script("pasta", "echo 'pasta 2024_08_06.ee36266'; cat /dev/null; echo '  --netns PATH' >&2");
    let changed = HostCaps::probe(&roots);
    assert_eq!(changed.pasta.features().unwrap().features.version, PastaVersion::Dated("2024_08_06.ee36266".into()));
    assert_eq!(fake.runs("pasta"), 2, "a changed binary is probed again");
    let leftovers: Vec<_> = fs::read_dir(&cache).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
}

#[test]
fn a_read_only_probe_reads_the_cache_and_never_writes_it() {
    let fake = Fake::new();
    let cache = fake.path("cache");
    let read_only = ProbeRoots { cache_dir: Some(cache.clone()), cache_writable: false, ..fake.roots() };
    HostCaps::probe(&read_only);
    assert!(!cache.exists(), "a read-only probe created the cache");
    HostCaps::probe(&ProbeRoots { cache_writable: true, ..read_only.clone() });
    let runs = fake.runs("pasta");
    HostCaps::probe(&read_only);
    assert_eq!(fake.runs("pasta"), runs, "a read-only probe still reads the cache");
}

#[test]
fn the_cache_lives_only_in_an_existing_private_run_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Paths::from_env(&crate::state::paths::PathEnv::current());
    paths.run_dir = tmp.path().join("missing");
    assert_eq!(ProbeRoots::current(&paths).cache_dir, None, "a missing run dir gets no cache");
    let open = tmp.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    paths.run_dir = open.clone();
    assert_eq!(ProbeRoots::current(&paths).cache_dir, None, "a run dir others may write is refused");
    fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    assert_eq!(ProbeRoots::current(&paths).cache_dir, Some(open.join("probe-cache")));
}

#[test]
fn host_caps_serialize_for_json_output() {
    let fake = Fake::new();
    fs::remove_file(fake.path("dev/net/tun")).unwrap();

    let json = serde_json::to_value(fake.probe()).unwrap();

    assert_eq!(json["pasta"]["status"], "found");
    assert_eq!(json["pasta"]["features"]["tcp_tap_bugs"]["half_close_corruption"], true);
    assert_eq!(json["slirp4netns"]["features"]["version"], "1.2.0");
    assert!(json["tun"]["problem"].as_str().unwrap().contains("modprobe tun"), "{json}");
    assert_eq!(json["userns_knobs"]["max_user_namespaces"], 63000);
    assert_eq!(json["nftables"], "netfilter_present");
}

#[test]
fn probe_timing_on_this_host_cached_vs_uncached() {
    let paths = Paths::from_env(&crate::state::paths::PathEnv::current());
    let mut roots = ProbeRoots::current(&paths);
    if crate::host::path::find_executable(
        roots.path_env.as_deref(),
        "pasta".as_ref(),
        crate::host::path::Entries::Absolute,
    )
    .is_none()
    {
        eprintln!("SKIP probe_timing_on_this_host_cached_vs_uncached: pasta is not installed on this host");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    roots.cache_dir = Some(cache.path().to_owned());
    let time = |f: &dyn Fn() -> HostCaps| {
        let start = Instant::now();
        let caps = f();
        (start.elapsed(), caps)
    };

    let (uncached, a) = time(&|| HostCaps::probe_uncached(&roots));
    let (cold, _) = time(&|| HostCaps::probe(&roots));
    let (warm, b) = time(&|| HostCaps::probe(&roots));

    assert_eq!(a.pasta, b.pasta);
    eprintln!("probe timing: uncached {uncached:?}, cold cache {cold:?}, warm cache {warm:?}");
    let needs = crate::flow::select::Needs { egress: true, ..Default::default() };
    let decision = crate::flow::select::select(&crate::flow::select::Request { needs, ..Default::default() }, &b);
    eprintln!("this host: in_userns {}, netns_is_own {:?}, container {:?}", b.in_userns, b.netns_is_own, b.container);
    eprintln!("this host, auto with egress: {:?}", decision.map(|d| d.reason));
}
