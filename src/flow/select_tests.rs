//! Tests of `select`: hostile hosts as `HostCaps` values built in code.
use super::*;

use crate::host::diagnose::TunProblem;
use crate::host::probe::{ContainerHint, DefaultRoute, Helper, NftEvidence};

use crate::host::probe::test_hosts::*;

fn web() -> NetworkName {
    NetworkName::new("web").unwrap()
}

fn egress() -> Needs {
    Needs { egress: true, published_ports: true, ..Needs::default() }
}

fn c2c() -> Needs {
    Needs { container_to_container: true, ..egress() }
}

fn auto(needs: Needs) -> Request {
    Request { mode: Requested::Auto, needs, fallback: Fallback::Warn }
}

fn explicit(mode: Mode, needs: Needs, fallback: Fallback) -> Request {
    Request { mode: Requested::Explicit(mode), needs, fallback }
}

fn tun_missing() -> Option<TunProblem> {
    Some(TunProblem::Missing { path: "/dev/net/tun".into() })
}

/// What a case expects: a clean choice, a degraded one, or an error; each
/// with a phrase its text must contain.
enum Want {
    Clean(Mode, &'static str),
    Degraded(Mode, &'static str),
    Fails(&'static str),
}

fn check(name: &str, got: Result<Decision, SelectError>, want: Want) {
    match (got, want) {
        (Ok(d), Want::Clean(mode, phrase)) => {
            assert_eq!((&d.mode, d.degraded, &d.warning), (&mode, false, &None), "{name}: {d:#?}");
            assert!(d.reason.contains(phrase), "{name}: {:?} lacks {phrase:?}", d.reason);
        }
        (Ok(d), Want::Degraded(mode, phrase)) => {
            assert_eq!((&d.mode, d.degraded), (&mode, true), "{name}: {d:#?}");
            let text =
                format!("{} | {} | {}", d.reason, d.warning.as_deref().unwrap_or("NO WARNING"), d.fixes.join(" | "));
            assert!(d.warning.is_some() && text.contains(phrase), "{name}: {text:?} lacks {phrase:?}");
        }
        (Err(e), Want::Fails(phrase)) => assert!(e.to_string().contains(phrase), "{name}: {e} lacks {phrase:?}"),
        (got, _) => panic!("{name}: unexpected {got:#?}"),
    }
}

#[test]
fn hostile_hosts_choose_the_right_mode_for_the_right_reason() {
    let with = |f: fn(&mut HostCaps), base: fn() -> HostCaps| {
        let mut caps = base();
        f(&mut caps);
        caps
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, HostCaps, Request, Want)> = vec![
        ("healthy rootless", rootless(), auto(egress()), Want::Clean(Mode::Pasta, "first choice without CAP_NET_ADMIN")),
        ("userns max 0", with(|c| c.userns_knobs.max_user_namespaces = Some(0), rootless), auto(egress()),
            Want::Fails("max_user_namespaces = 0")),
        ("userns clone 0", with(|c| c.userns_knobs.unprivileged_userns_clone = Some(0), rootless), auto(egress()),
            Want::Fails("unprivileged_userns_clone = 0")),
        ("apparmor", with(|c| c.userns_knobs.apparmor_restrict = Some(1), rootless), auto(egress()),
            Want::Fails("apparmor_restrict_unprivileged_userns = 1")),
        ("userns clone 0 as root", with(|c| c.userns_knobs.unprivileged_userns_clone = Some(0), root), auto(egress()),
            Want::Clean(Mode::Pasta, "no bridge network is needed")),
        ("tun missing", with(|c| c.tun.problem = tun_missing(), rootless), auto(egress()),
            Want::Degraded(Mode::Loopback, "/dev/net/tun does not exist")),
        ("tun 0600", with(|c| c.tun.problem = Some(TunProblem::NotPermitted {
                path: "/dev/net/tun".into(), uid: 1000, mode: 0o600, owner: 0 }), rootless), auto(egress()),
            Want::Degraded(Mode::Loopback, "mode 0600")),
        ("pasta missing", with(|c| c.pasta = Helper::Missing, rootless), auto(egress()),
            Want::Clean(Mode::Slirp4netns, "pasta is not installed")),
        ("pasta too old", with(|c| c.pasta = pasta("pasta unknown version", &["--netns", "--tcp-ports"]), rootless),
            auto(egress()), Want::Clean(Mode::Slirp4netns, "lacks --config-net")),
        ("pasta broken", with(|c| c.pasta = Helper::Broken { path: "/usr/bin/pasta".into(), error: "boom".into() }, rootless),
            auto(egress()), Want::Clean(Mode::Slirp4netns, "could not be probed: boom")),
        ("no default route", with(|c| c.default_route = DefaultRoute::default(), rootless), auto(egress()),
            Want::Clean(Mode::Slirp4netns, "no default route")),
        ("ipv6-only default route", with(|c| c.default_route = DefaultRoute { ipv4: false, ipv6: true }, rootless),
            auto(egress()), Want::Clean(Mode::Pasta, "rootless")),
        ("old slirp, no pasta", with(|c| { c.pasta = Helper::Missing; c.slirp4netns = slirp(&SLIRP_OPTIONS[..4]) }, rootless),
            auto(egress()), Want::Degraded(Mode::Loopback, "lacks --api-socket")),
        ("no nftables, root, c2c", with(|c| c.nftables = NftEvidence::NotFound, root), auto(c2c()),
            Want::Degraded(Mode::Pasta, "the kernel has no nf_tables")),
        ("root in a userns that does not own its netns, c2c", with(|c| { c.in_userns = true; c.netns_is_own = Some(false) }, root),
            auto(c2c()), Want::Degraded(Mode::Pasta, "parent user namespace")),
        ("rootless already in a userns", with(|c| c.in_userns = true, rootless), auto(egress()),
            Want::Clean(Mode::Pasta, "rootless")),
        ("inside docker without tun", with(|c| { c.container = vec![ContainerHint::DockerEnv]; c.tun.problem = tun_missing() }, rootless),
            auto(egress()), Want::Degraded(Mode::Loopback, "inside a container (docker: /.dockerenv): start it with `--device /dev/net/tun`")),
        ("inside a container without userns", with(|c| {
                c.container = vec![ContainerHint::Cgroup { runtime: "kubepods".into() }];
                c.userns_knobs.max_user_namespaces = Some(0);
                c.pasta = Helper::Missing; }, root), auto(c2c()),
            Want::Clean(Mode::Bridge(None), "container-to-container")),
        ("root with c2c", root(), auto(c2c()), Want::Clean(Mode::Bridge(None), "container-to-container")),
        ("root without c2c", root(), auto(egress()), Want::Clean(Mode::Pasta, "no bridge network is needed")),
        ("root without pasta or slirp4netns", with(|c| { c.pasta = Helper::Missing; c.slirp4netns = Helper::Missing }, root),
            auto(egress()), Want::Clean(Mode::Bridge(None), "first usable rung of pasta > slirp4netns > bridge > loopback")),
        ("root, named network", root(), auto(Needs { named_network: Some(web()), ..egress() }),
            Want::Clean(Mode::Bridge(Some(web())), "named network")),
        ("rootless, named network", rootless(), auto(Needs { named_network: Some(web()), ..egress() }),
            Want::Clean(Mode::Bridge(Some(web())), "named network")),
        ("rootless, c2c", rootless(), auto(c2c()), Want::Clean(Mode::Bridge(None), "container-to-container")),
        ("net admin without sys admin, c2c", with(|c| c.cap_sys_admin = false, root), auto(c2c()),
            Want::Degraded(Mode::Pasta, "CAP_SYS_ADMIN to mount")),
        ("ranges without pasta, native forwarding only", with(|c| c.pasta = Helper::Missing, rootless),
            auto(Needs { ports: PortFeatures { ranges: true, ..Default::default() }, native_ports_only: true, ..egress() }),
            Want::Degraded(Mode::Slirp4netns, "cannot publish port ranges")),
        ("ranges without pasta, builtin driver allowed", with(|c| c.pasta = Helper::Missing, rootless),
            auto(Needs { ports: PortFeatures { ranges: true, ..Default::default() }, ..egress() }),
            Want::Clean(Mode::Slirp4netns, "first usable rung")),
        ("ipv6 ports on a bridge, native forwarding only", root(),
            auto(Needs { ports: PortFeatures { ipv6: true, ..Default::default() }, native_ports_only: true, ..c2c() }),
            Want::Degraded(Mode::Bridge(None), "IPv4-only")),
        ("ipv6 ports on a bridge, builtin driver allowed", root(),
            auto(Needs { ports: PortFeatures { ipv6: true, ..Default::default() }, ..c2c() }),
            Want::Clean(Mode::Bridge(None), "container-to-container")),
        ("nothing needed", rootless(), auto(Needs::default()), Want::Clean(Mode::Pasta, "rootless")),
    ];
    for (name, caps, req, want) in cases {
        check(name, select(&req, &caps), want);
    }
}

#[test]
fn fixes_name_the_command_for_the_place_it_must_run() {
    let mut caps = rootless();
    caps.tun.problem = Some(TunProblem::NotPermitted { path: "/dev/net/tun".into(), uid: 1000, mode: 0o600, owner: 0 });
    let d = select(&auto(egress()), &caps).unwrap();
    assert_eq!(d.fixes, ["`sudo chmod 0666 /dev/net/tun`"]);

    let mut caps = rootless();
    caps.container = vec![ContainerHint::ContainerEnv];
    caps.userns_knobs.unprivileged_userns_clone = Some(0);
    let err = select(&auto(egress()), &caps).unwrap_err();
    assert!(matches!(err, SelectError::NothingUsable { .. }), "{err:?}");
    assert!(
        err.fixes().iter().any(|f| f.contains("podman") && f.contains("on the host, not in the container")),
        "{err:?}"
    );
}

#[test]
fn fallback_policy_decides_between_error_warning_and_silence() {
    let mut caps = rootless();
    caps.tun.problem = tun_missing();
    let req = |fallback| Request { fallback, ..auto(egress()) };

    let strict = select(&req(Fallback::Strict), &caps).unwrap_err();
    let warn = select(&req(Fallback::Warn), &caps).unwrap();
    let allow = select(&req(Fallback::Allow), &caps).unwrap();

    assert!(matches!(&strict, SelectError::NoFit { best: Mode::Pasta, .. }), "{strict:?}");
    assert!(strict.to_string().contains("loopback has no egress"), "{strict}");
    assert!(strict.fixes().contains(&"`sudo modprobe tun`".to_owned()), "{strict:?}");
    assert_eq!((&warn.mode, warn.degraded), (&Mode::Loopback, true));
    let line = warn.warning.as_deref().unwrap();
    assert!(
        line.starts_with("degraded network, using loopback: loopback has no egress") && !line.contains('\n'),
        "{line}"
    );
    assert_eq!((&allow.mode, allow.degraded, &allow.warning), (&Mode::Loopback, true, &None));
    let modes: Vec<&Mode> = warn.rejected.iter().map(|r| &r.mode).collect();
    assert_eq!(modes, [&Mode::Pasta, &Mode::Slirp4netns]);
}

#[test]
fn explicit_modes_are_kept_refused_or_replaced_by_policy() {
    let mut no_slirp = rootless();
    no_slirp.slirp4netns = Helper::Missing;
    let slirp_req = |fallback| explicit(Mode::Slirp4netns, egress(), fallback);

    let err = select(&slirp_req(Fallback::Strict), &no_slirp).unwrap_err();
    assert!(matches!(&err, SelectError::Unavailable { mode: Mode::Slirp4netns, .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("network mode slirp4netns is unavailable: slirp4netns is not installed"),
        "{err}"
    );
    assert!(err.fixes()[0].starts_with("install slirp4netns"), "{err:?}");

    let d = select(&slirp_req(Fallback::Warn), &no_slirp).unwrap();
    assert_eq!((&d.mode, d.degraded), (&Mode::Pasta, true));
    assert!(
        d.warning.unwrap().starts_with("slirp4netns is not usable, using pasta instead: slirp4netns is not installed")
    );
    assert_eq!(select(&slirp_req(Fallback::Allow), &no_slirp).unwrap().warning, None);

    let lo_req = |fallback| explicit(Mode::Loopback, egress(), fallback);
    let err = select(&lo_req(Fallback::Strict), &rootless()).unwrap_err();
    assert!(err.to_string().contains("loopback has no egress"), "{err}");
    let d = select(&lo_req(Fallback::Warn), &rootless()).unwrap();
    assert_eq!((&d.mode, d.degraded), (&Mode::Loopback, true), "an explicit mode that runs is kept");
    assert!(d.warning.unwrap().starts_with("loopback was requested, but loopback has no egress"));

    let mut no_userns = rootless();
    no_userns.userns_knobs.max_user_namespaces = Some(0);
    let err = select(&explicit(Mode::Pasta, egress(), Fallback::Allow), &no_userns).unwrap_err();
    assert!(matches!(err, SelectError::Unavailable { mode: Mode::Pasta, .. }), "nothing to fall back to: {err:?}");
    let d = select(&explicit(Mode::Host, egress(), Fallback::Strict), &no_userns).unwrap();
    assert_eq!((d.mode, d.reason.as_str()), (Mode::Host, "host: requested explicitly"));

    let d = select(&explicit(Mode::Bridge(Some(web())), c2c(), Fallback::Strict), &root()).unwrap();
    assert_eq!(d.mode.to_string(), "bridge:web");
}

#[test]
fn debian_pasta_with_egress_prefers_slirp4netns_and_names_the_fixes() {
    let mut caps = rootless();
    caps.pasta = debian_pasta();

    let d = select(&auto(egress()), &caps).unwrap();

    assert_eq!((&d.mode, d.degraded), (&Mode::Slirp4netns, false));
    assert!(d.reason.contains("2023_10_04") && d.reason.contains("2024_08_06"), "{}", d.reason);
    assert!(d.reason.starts_with("slirp4netns: preferred to pasta because egress is needed"), "{}", d.reason);
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].mode, Mode::Pasta);
    assert!(d.rejected[0].reason.contains("unknown version"), "{}", d.rejected[0].reason);
}

/// Regression: `--network pasta --fallback strict` ran a build known to
/// break egress without a word, although `auto` and `doctor` knew.
#[test]
fn explicit_buggy_pasta_is_refused_under_strict_and_named_once_under_warn() {
    let mut caps = rootless();
    caps.pasta = debian_pasta();

    let err = select(&explicit(Mode::Pasta, egress(), Fallback::Strict), &caps).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("network mode pasta is unavailable: pasta at /usr/bin/pasta (unknown version)"), "{text}");
    assert!(text.contains("can hang (fixed in 2023_10_04)") && text.contains("(fixed in 2024_08_06)"), "{text}");
    assert!(err.fixes().iter().any(|f| f.contains("slirp4netns")), "{:?}", err.fixes());

    let d = select(&explicit(Mode::Pasta, egress(), Fallback::Warn), &caps).unwrap();
    assert_eq!((&d.mode, d.degraded), (&Mode::Pasta, true));
    let warning = d.warning.expect("one warning");
    assert!(warning.contains("known TCP bugs") && warning.contains("install passt 2024_08_06"), "{warning}");

    let ports_only = Needs { published_ports: true, ..Needs::default() };
    let d = select(&explicit(Mode::Pasta, ports_only, Fallback::Strict), &caps).unwrap();
    assert_eq!((d.degraded, d.warning), (false, None), "no egress needed, nothing to warn about");
    caps.pasta = pasta("pasta 2024_08_21.1d6142f", PASTA_MODERN);
    let d = select(&explicit(Mode::Pasta, egress(), Fallback::Strict), &caps).unwrap();
    assert_eq!((d.degraded, d.warning), (false, None), "a fixed build");
}

#[test]
fn buggy_pasta_is_kept_when_asked_for_not_needed_for_egress_or_without_alternative() {
    let mut caps = rootless();
    caps.pasta = debian_pasta();

    let asked = select(&explicit(Mode::Pasta, egress(), Fallback::Allow), &caps).unwrap();
    assert_eq!((&asked.mode, asked.degraded, &asked.warning), (&Mode::Pasta, true, &None));
    assert!(asked.reason.contains("requested explicitly; note: pasta at /usr/bin/pasta"), "{}", asked.reason);

    let ports_only = Needs { published_ports: true, ..Needs::default() };
    assert_eq!(select(&auto(ports_only), &caps).unwrap().mode, Mode::Pasta);

    caps.slirp4netns = Helper::Missing;
    let d = select(&auto(egress()), &caps).unwrap();
    assert_eq!(d.mode, Mode::Pasta);
    assert!(d.reason.contains("slirp4netns is no alternative: slirp4netns is not installed"), "{}", d.reason);

    let mut half = rootless();
    half.pasta = pasta("pasta 2023_12_30.f091893", PASTA_MODERN);
    half.pasta = match half.pasta {
        Helper::Found { path, features } => {
            let mut f = features.features;
            f.options.remove("--map-guest-addr");
            Helper::Found { path, features: f.into() }
        }
        other => other,
    };
    let d = select(&auto(egress()), &half).unwrap();
    assert_eq!(d.mode, Mode::Slirp4netns);
    assert!(d.reason.contains("2024_08_06") && !d.reason.contains("2023_10_04"), "{}", d.reason);
}

#[test]
fn ladder_table_rows() {
    let names =
        |needs: Needs, caps: HostCaps| ladder(&needs, &caps).iter().map(Mode::to_string).collect::<Vec<_>>().join(" ");

    assert_eq!(names(egress(), rootless()), "pasta slirp4netns loopback");
    assert_eq!(names(c2c(), rootless()), "bridge pasta slirp4netns loopback");
    assert_eq!(names(egress(), root()), "pasta slirp4netns bridge loopback");
    assert_eq!(names(c2c(), root()), "bridge pasta slirp4netns loopback");
}

#[test]
fn decision_serializes_for_json_output() {
    let mut caps = rootless();
    caps.pasta = Helper::Missing;

    let json = serde_json::to_value(select(&auto(egress()), &caps).unwrap()).unwrap();

    assert_eq!(json["mode"], "slirp4netns");
    assert_eq!(json["rejected"][0]["mode"], "pasta");
    assert_eq!(json["degraded"], false);
    assert!(json["warning"].is_null());
}

#[test]
fn modes_convert_to_and_from_the_spec() {
    for mode in [
        NetworkMode::Host,
        NetworkMode::Loopback,
        NetworkMode::Pasta,
        NetworkMode::Slirp4netns,
        NetworkMode::Bridge(Some(web())),
    ] {
        match Requested::of(&mode) {
            Some(Requested::Explicit(m)) => assert_eq!(m.to_network_mode(), mode),
            other => panic!("{mode} is explicit: {other:?}"),
        }
    }
    assert_eq!(Requested::of(&NetworkMode::Auto), Some(Requested::Auto));
    assert_eq!(Requested::of(&NetworkMode::Ns("/run/netns/x".into())), None, "ns:PATH has no ladder");
    assert_eq!(Mode::Slirp4netns.to_string(), "slirp4netns");
}
