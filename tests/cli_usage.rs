//! The command line as a docker or podman user meets it: usage errors exit
//! 125 naming the flag or value, one error style, an unknown option is never
//! taken for the command, global options have their own help heading, and
//! no subcommand panics on a closed pipe. These run the binary directly
//! (host mode or nothing at all), so they need no root and no namespaces.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A state tree of our own so nothing touches the real roots.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pelagos-net"));
        cmd.arg("--run-dir").arg(self.run_dir()).arg("--config-dir").arg(self.config_dir());
        cmd.arg("--netns-dir").arg(self.dir.path().join("netns"));
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self.cmd(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out))
    }

    /// Nothing was created under the sandbox.
    fn assert_untouched(&self, what: &str) {
        let left: Vec<_> = std::fs::read_dir(self.dir.path()).unwrap().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "{what} created {left:?}");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_option_before_the_command_is_a_usage_error_naming_it() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["run", "--network", "host", "--name", "db", "--", "true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.starts_with("pelagos-net: error: unexpected argument '--name'"), "{err}");
    sb.assert_untouched("a refused run");
}

#[test]
fn a_command_starting_with_a_dash_needs_the_separator() {
    let sb = Sandbox::new();
    for flag in ["-x", "--not-a-flag"] {
        let (code, _, err) = sb.run(&["run", "--network", "host", flag]);
        assert_eq!(code, Some(125), "{err}");
        assert!(err.contains(&format!("'{flag}'")) && err.contains(&format!("'-- {flag}'")), "{err}");
    }
    let (code, _, err) = sb.run(&["run", "--network", "host", "--", "-not-a-flag"]);
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("-not-a-flag: command not found"), "{err}");
}

#[test]
fn options_after_the_command_belong_to_the_command() {
    let sb = Sandbox::new();
    let (code, out, err) = sb.run(&["run", "--network", "host", "sh", "-c", "echo $0 \"$1\"; exit 3", "x", "--name"]);
    assert_eq!((code, out.as_str()), (Some(3), "x --name\n"), "{err}");
}

#[test]
fn usage_and_runtime_errors_share_one_style() {
    let sb = Sandbox::new();
    for (args, code, names) in [
        (&["run", "-p", "80/sctp", "--", "true"][..], 125, "'--publish <SPEC>'"),
        (&["run", "--network", "nat", "--", "true"], 125, "'nat'"),
        (&["run", "--fallback", "maybe", "--", "true"], 125, "'maybe'"),
        (&["run", "--ready-timeout", "NaN", "--network", "host", "--", "true"], 125, "'--ready-timeout"),
        (&["frobnicate"], 125, "'frobnicate'"),
        (&["network", "inspect", "nope"], 1, "network nope does not exist"),
    ] {
        let (got, _, err) = sb.run(args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.starts_with("pelagos-net: error: "), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: one error line: {err}");
        assert!(err.contains(names), "{args:?} should name {names}: {err}");
    }
}

#[test]
fn missing_subcommand_prints_help_and_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_pelagos-net")).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        err.contains("Usage: pelagos-net") && err.ends_with("pelagos-net: error: a subcommand is required\n"),
        "{err}"
    );
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["-v"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.starts_with("pelagos-net: error: 'pelagos-net' requires a subcommand"), "{err}");
}

#[test]
fn help_and_version_go_to_stdout_and_succeed() {
    let sb = Sandbox::new();
    let (code, out, _) = sb.run(&["--version"]);
    assert_eq!((code, out.starts_with("pelagos-net ")), (Some(0), true), "{out}");
    let (code, out, _) = sb.run(&["run", "--help"]);
    assert_eq!(code, Some(0));
    let (own, global) = out.split_once("Global options:").expect("a Global options heading");
    for flag in ["--run-dir", "--config-dir", "--netns-dir", "--verbose"] {
        assert!(global.contains(flag) && !own.contains(flag), "{flag} belongs under Global options:\n{out}");
    }
    assert!(own.contains("--publish") && !global.contains("--publish"), "{out}");
}

/// stdout is a pipe whose reader is already gone: the write fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    writer
}

fn assert_no_panic(sb: &Sandbox, args: &[&str], dir: &Path) {
    let out = sb.cmd(args).current_dir(dir).stdout(closed_pipe()).output().unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {err}");
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
}

#[test]
fn a_closed_pipe_never_panics() {
    let sb = Sandbox::new();
    for args in [
        &["doctor", "--json"][..],
        &["doctor"],
        &["--help"],
        &["--version"],
        &["network", "ls"],
        &["network", "ls", "--json"],
        &["plan", "--network", "host"],
        &["plan", "--network", "host", "--json"],
        &["gc", "--dry-run"],
    ] {
        assert_no_panic(&sb, args, sb.dir.path());
    }
}
