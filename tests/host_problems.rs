//! Hosts that cannot give a rootless user a network, and the messages that
//! tell the user what to fix. Each test really breaks the host for a moment
//! (tun device mode) or takes a capability away from the process tree
//! (a seccomp filter against user namespaces) and restores it in a guard,
//! even when the test fails. Cargo runs test binaries one after another and
//! the tests here hold a lock, so nothing else sees the broken host.

mod common;

use common::{Env, Tier, Topology, describe};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

static HOST: Mutex<()> = Mutex::new(());

/// Sets a file's mode and puts the old mode back on drop.
struct ModeRestore {
    path: &'static str,
    old: u32,
}

impl ModeRestore {
    fn set(path: &'static str, mode: u32) -> Self {
        let old = fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        Self { path, old }
    }
}

impl Drop for ModeRestore {
    fn drop(&mut self) {
        fs::set_permissions(self.path, fs::Permissions::from_mode(self.old)).unwrap();
    }
}

fn rootless() -> Option<(Env, std::sync::MutexGuard<'static, ()>)> {
    let env = Tier::Rootless.require()?;
    Some((env, HOST.lock().unwrap_or_else(|e| e.into_inner())))
}

#[test]
fn tun_device_closed_to_the_user_is_explained_with_the_fix() {
    let Some((env, _lock)) = rootless() else { return };
    let topo = Topology::new(&env);
    let _mode = ModeRestore::set("/dev/net/tun", 0o600);
    let out = topo.cli(&env, &["run", "--network", "pasta", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr.contains("pasta needs the tun device") && stderr.contains("/dev/net/tun is not usable by uid"),
        "{stderr}"
    );
    assert!(stderr.contains("mode 0600") && stderr.contains("chmod 0666 /dev/net/tun"), "{stderr}");
    // Regression: slirp4netns mode said "pasta needs it".
    let out = topo.cli(&env, &["run", "--network", "slirp4netns", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr.contains("slirp4netns needs the tun device"), "{stderr}");
    assert!(!stderr.contains("pasta"), "the error names the helper it is about: {stderr}");
    topo.assert_clean();
}

/// Install a seccomp filter (in the child, before exec) that fails
/// `unshare(CLONE_NEWUSER)` and `clone(CLONE_NEWUSER)` with EPERM, the way
/// container runtimes' default profiles forbid nested user namespaces. This machine's kernel refuses
/// writes to `user.max_user_namespaces` even from root, so the filter is the
/// real way to take user namespaces away here.
fn forbid_user_namespaces(cmd: &mut std::process::Command) {
    let newuser = libc::CLONE_NEWUSER as u32;
    common::seccomp::refuse(
        cmd,
        &[
            common::seccomp::Refuse { nr: libc::SYS_unshare, arg: 0, mask: newuser },
            common::seccomp::Refuse { nr: libc::SYS_clone, arg: 0, mask: newuser },
        ],
    );
}

#[test]
fn forbidden_user_namespaces_are_explained_with_the_knobs_to_check() {
    let Some((env, _lock)) = rootless() else { return };
    let topo = Topology::new(&env);
    let mut cmd = topo.cli(&env, &["run", "--network", "loopback", "--", "true"]);
    forbid_user_namespaces(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr.contains("cannot create the namespace (create namespaces): EPERM"), "{stderr}");
    assert!(stderr.contains("user.max_user_namespaces") && stderr.contains("seccomp"), "{stderr}");
    topo.assert_clean();
}

#[test]
fn missing_pasta_says_how_to_install_it() {
    let Some((env, _lock)) = rootless() else { return };
    let topo = Topology::new(&env);
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = topo.cli(&env, &["run", "--network", "pasta", "--", "/bin/true"]);
    cmd.env("PATH", empty.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr.contains("pasta not found on PATH") && stderr.contains("apt-get install passt"), "{stderr}");
    topo.assert_clean();
}

/// A PATH holding only the tools a run needs, without pasta.
fn path_without_pasta() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for tool in ["slirp4netns", "ip", "sh", "true", "python3"] {
        let real = common::which(tool).unwrap_or_else(|| panic!("{tool} is needed"));
        std::os::unix::fs::symlink(real, dir.path().join(tool)).unwrap();
    }
    dir
}

#[test]
fn auto_with_the_tun_device_closed_falls_back_to_loopback_and_says_why() {
    let Some((env, _lock)) = rootless() else { return };
    let topo = Topology::new(&env);
    let _mode = ModeRestore::set("/dev/net/tun", 0o600);
    let show = format!("ip -o link; cat {}/runs/*.json", topo.run_dir.display());
    let out = topo.cli(&env, &["run", "--network", "auto", "--", "sh", "-c", &show]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout.lines().filter(|l| l.contains("link/")).count(), 1, "only lo: {stdout}");
    assert!(
        stdout.contains("\"mode\": \"loopback\"") && stdout.contains("\"degraded\": true"),
        "the run's JSON status: {stdout}"
    );
    assert!(stderr.contains("warning") && stderr.contains("loopback"), "{stderr}");
    assert!(stderr.contains("/dev/net/tun"), "the warning says why: {stderr}");
    let strict = topo.cli(&env, &["run", "--network", "auto", "--fallback", "strict", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(125), "{}", describe(&strict));
    assert!(stderr.contains("chmod 0666 /dev/net/tun"), "{stderr}");
    let doctor = topo.cli(&env, &["doctor"]).output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(1), "no networked mode: {}", describe(&doctor));
    assert!(text.contains("[FAIL] tun device") && text.contains("chmod 0666 /dev/net/tun"), "{text}");
    topo.assert_clean();
}

#[test]
fn auto_without_pasta_picks_slirp4netns_and_strict_pasta_fails_with_the_reason() {
    let Some((env, _lock)) = rootless() else { return };
    let topo = Topology::new(&env);
    let path = path_without_pasta();
    let run = |args: &[&str]| {
        let mut cmd = topo.cli(&env, args);
        cmd.env("PATH", path.path());
        cmd.output().unwrap()
    };
    let out = run(&["-v", "run", "--network", "auto", "--", "ip", "-o", "-4", "addr"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("tap0") && stdout.contains("10.0.2.100"), "{stdout}");
    assert!(stderr.contains("network mode slirp4netns") && stderr.contains("pasta"), "{stderr}");
    let strict = run(&["run", "--network", "pasta", "--fallback", "strict", "--", "true"]);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(125), "{}", describe(&strict));
    assert!(stderr.contains("pasta is not installed") && stderr.contains("install passt"), "{stderr}");
    let doctor = run(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(doctor.status.code(), Some(0), "slirp4netns still networks: {}", describe(&doctor));
    assert!(text.contains("[FAIL] pasta") && text.contains("apt-get install passt"), "{text}");
    topo.assert_clean();
}
