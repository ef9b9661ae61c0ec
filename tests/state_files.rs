//! Hostile and broken state through the CLI: truncated definitions, records
//! and lease files are named with their repair (or repaired by `gc`); links
//! planted in the state and config directories are refused, never
//! followed; names that could escape a directory or pose as an option are
//! refused before anything is created; the state directory is private.

mod common;

use common::{Env, Tier, Topology, describe};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

fn run(topo: &Topology, env: &Env, args: &[&str]) -> (Option<i32>, String, String) {
    let out = topo.cli(env, args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn chown_to(env: &Env, path: &std::path::Path) {
    if let Some(u) = &env.user {
        nix::unistd::chown(path, Some(u.uid.into()), Some(u.gid.into())).unwrap();
    }
}

#[test]
fn a_truncated_network_definition_is_named_with_its_fix_by_ls_and_run() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    assert_eq!(run(&topo, &env, &["network", "create", "web", "--subnet", "10.94.0.0/24"]).0, Some(0));
    let path = topo.config_dir.join("networks/web.json");
    let text = fs::read(&path).unwrap();
    fs::write(&path, &text[..text.len() / 2]).unwrap();
    let want = format!("network definition {} is corrupted; fix or delete the file", path.display());
    for args in [&["network", "ls"][..], &["run", "--network", "bridge:web", "--", "true"]] {
        let (code, _, err) = run(&topo, &env, args);
        assert_eq!(code, Some(125), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    topo.assert_clean();
}

#[test]
fn a_truncated_lease_file_is_named_by_gc_and_a_truncated_record_is_repaired() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    assert_eq!(run(&topo, &env, &["run", "--network", "bridge", "--", "true"]).0, Some(0));
    // One file per lease: a truncated one still holds its address (the next
    // run takes another) and `gc` names it with the repair.
    let lease = topo.run_dir.join("leases/pelagos0/10.90.0.9");
    fs::write(&lease, "{\"id\":\"0123456789ab\",\"own").unwrap();
    assert_eq!(run(&topo, &env, &["run", "--network", "bridge", "--", "true"]).0, Some(0));
    let (code, out, err) = run(&topo, &env, &["gc"]);
    assert_ne!(code, Some(0), "{out}{err}");
    assert!(out.contains(&format!("corrupted lease file {}", lease.display())), "{out}{err}");
    assert!(format!("{out}{err}").contains("delete it when no container of this network runs"), "{out}{err}");
    fs::remove_file(&lease).unwrap();
    let record = topo.run_dir.join("runs/0123456789ab.json");
    fs::write(&record, "{\"id\":\"0123456789ab\",\"own").unwrap();
    let (code, out, err) = run(&topo, &env, &["gc"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("removed corrupted record"), "{out}");
    assert!(!record.exists());
    assert_eq!(run(&topo, &env, &["run", "--network", "bridge", "--", "true"]).0, Some(0));
    topo.assert_clean();
}

#[test]
fn links_planted_in_the_state_and_config_directories_are_refused_not_followed() {
    let Some(env) = Tier::Rootless.require() else { return };
    let topo = Topology::new(&env);
    assert_eq!(run(&topo, &env, &["run", "--network", "loopback", "--fallback", "allow", "--", "true"]).0, Some(0));
    // A record that, if followed, would make gc remove `victim`.
    let outside = tempfile::tempdir().unwrap();
    fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "keep me").unwrap();
    let forged = outside.path().join("forged.json");
    let json = format!(
        r#"{{"id":"0123456789ab","owner":{{"pid":4194303,"start_time":1}},"mode":"pasta","child":null,
            "helper":null,"netns_path":"{}","ports":[],"bridge":null,"selection":null}}"#,
        victim.display()
    );
    fs::write(&forged, json).unwrap();
    chown_to(&env, &victim);
    chown_to(&env, &forged);
    let link = topo.run_dir.join("runs/0123456789ab.json");
    symlink(&forged, &link).unwrap();
    let (code, out, err) = run(&topo, &env, &["gc"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("symbolic link in place of a record (not followed)"), "{out}");
    assert!(fs::symlink_metadata(&link).is_err(), "the link itself is removed");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me", "the target was never acted on");
    assert!(forged.exists());
    // A definition that is a link is refused with the reason.
    fs::create_dir_all(topo.config_dir.join("networks")).unwrap();
    chown_to(&env, &topo.config_dir);
    chown_to(&env, &topo.config_dir.join("networks"));
    symlink(&forged, topo.config_dir.join("networks/web.json")).unwrap();
    let (code, _, err) = run(&topo, &env, &["network", "ls"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("networks/web.json") && err.contains("is a symbolic link"), "{err}");
    topo.assert_clean();
}

#[test]
fn names_that_escape_or_pose_as_options_are_refused_before_anything_is_created() {
    let Some(env) = Tier::Rootless.require() else { return };
    let topo = Topology::new(&env);
    let long = "n".repeat(65);
    for (args, why) in [
        (vec!["run", "--network", "bridge:../x", "--", "true"], "'.'"),
        (vec!["run", "--network", "bridge:a/b", "--", "true"], "'/'"),
        (vec!["run", "--network", "bridge:-rf", "--", "true"], "must start with a letter or digit"),
        (vec!["run", "--network", "bridge:café", "--", "true"], "non-ASCII"),
        (vec!["network", "create", "--", "-rf"], "must start with a letter or digit"),
        (vec!["network", "inspect", "../etc"], "'.'"),
        (vec!["network", "rm", "a:b"], "':'"),
        (vec!["network", "create", &long], "limit is 64"),
    ] {
        let (code, _, err) = run(&topo, &env, &args);
        assert_eq!(code, Some(125), "{args:?}: {err}");
        assert!(err.contains("network name") && err.contains(why), "{args:?}: {err}");
    }
    let configs = fs::read_dir(&topo.config_dir).map_or(0, |d| d.count());
    assert_eq!(configs, 0, "a refused name created something in the config directory");
    assert_eq!(fs::read_dir(&topo.run_dir).unwrap().count(), 0, "a refused name created state");
    assert!(!topo.netns_dir.exists());
}

#[test]
fn the_rootless_state_directory_is_private_and_owner_checked() {
    let Some(env) = Tier::Rootless.require() else { return };
    let user = env.user.clone().unwrap();
    let topo = Topology::new(&env);
    // A fresh default directory is created 0700 by pelagos-net itself.
    let fresh = topo.run_dir.join("nested/pelagos-net");
    let gc = || {
        let mut cmd = std::process::Command::new(common::which("setpriv").unwrap());
        cmd.args([&format!("--reuid={}", user.uid), &format!("--regid={}", user.gid), "--clear-groups", "--"]);
        cmd.arg(&env.bin).arg("--run-dir").arg(&fresh).arg("--config-dir").arg(&topo.config_dir).arg("gc");
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").output().unwrap()
    };
    fs::create_dir(topo.run_dir.join("nested")).unwrap();
    chown_to(&env, &topo.run_dir.join("nested"));
    let out = gc();
    assert!(out.status.success(), "{}", describe(&out));
    for dir in [&fresh, &fresh.join("runs")] {
        let meta = fs::metadata(dir).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o700, user.uid), "{}", dir.display());
    }
    // Writable by others, or owned by someone else: refused with the reason.
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o777)).unwrap();
    let out = gc();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is unsafe") && err.contains("writable by others"), "{err}");
    fs::set_permissions(&fresh, fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&fresh, Some(0.into()), Some(0.into())).unwrap();
    let out = gc();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("owned by uid 0, not {}", user.uid)), "{err}");
    fs::remove_dir_all(topo.run_dir.join("nested")).unwrap();
}
