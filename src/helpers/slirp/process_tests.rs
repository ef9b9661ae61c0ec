//! Tests of the ready and exit pipes with a stand-in for slirp4netns: a
//! shell script run through the launcher, which sees slirp4netns's
//! arguments as its positional parameters.

use super::*;
use crate::model::target::NsTarget;

/// Finds `--ready-fd=N` and `--exit-fd=N` among the arguments, then runs `body`
/// (which uses them through `/proc/self/fd`: dash redirects only fds 0-9).
fn fake(body: &str) -> Vec<OsString> {
    let find =
        r#"for a; do case $a in --ready-fd=*) r=${a#--ready-fd=};; --exit-fd=*) e=${a#--exit-fd=};; esac; done; "#;
    ["/bin/sh", "-c", &format!("{find}{body}"), "fake-slirp4netns"].map(OsString::from).to_vec()
}

/// Spawn the fake with `body` and wait for its ready signal.
fn run(body: &str, timeout: Duration) -> (SlirpProcess, Vec<OsString>, Option<SlirpError>) {
    let dir = tempfile::tempdir().unwrap();
    let plan = SlirpPlan::new(NsTarget { netns: "/proc/1/ns/net".into(), userns: None }, dir.path().join("s.sock"));
    let launcher = fake(body);
    let cmd = SlirpCommand {
        program: Path::new("/nonexistent/slirp4netns"),
        launcher: &launcher,
        plan: &plan,
        proc_root: Path::new("/proc"),
        inherit: &[],
    };
    let (mut process, argv) = SlirpProcess::spawn(&cmd).expect("spawn the fake");
    let err = process.wait_ready(timeout, &mut || false).err();
    (process, argv, err)
}

#[test]
fn ready_signal_then_closing_the_exit_pipe_is_a_clean_exit() {
    let (process, argv, err) =
        run(r#"echo starting; printf 1 >/proc/self/fd/$r; read x </proc/self/fd/$e; echo bye"#, Duration::from_secs(5));
    assert!(err.is_none(), "{err:?}");
    assert!(argv.iter().any(|a| a == "--netns-type=path"));

    let started = Instant::now();
    let report = process.stop(Duration::from_secs(2));

    assert!(report.status.unwrap().success(), "{}", report.output);
    assert_eq!(report.output, "starting\nbye\n");
    assert!(started.elapsed() < Duration::from_secs(1), "stop waited {:?}", started.elapsed());
}

#[test]
fn early_exit_is_an_error_with_status_and_output() {
    let (_process, _, err) = run("echo cannot open tap >&2; exit 3", Duration::from_secs(5));
    let err = err.expect("an error");
    assert!(matches!(&err, SlirpError::ExitedEarly { status, .. } if status == "exit status 3"), "{err:?}");
    assert!(err.to_string().contains("--- slirp4netns output ---\ncannot open tap\n"), "{err}");
}

#[test]
fn no_ready_signal_before_the_deadline_is_an_error_and_stop_still_works() {
    let (process, _, err) = run("echo waiting; exec sleep 30", Duration::from_millis(100));
    assert!(matches!(err, Some(SlirpError::NotReady { .. })), "{err:?}");
    let report = process.stop(Duration::from_millis(200));
    assert!(report.status.is_some(), "sleep does not watch the exit pipe, so SIGTERM ends it");
}

#[test]
fn anything_but_1_on_the_ready_pipe_is_an_error() {
    let (_process, _, err) = run(r#"printf x >/proc/self/fd/$r; exec sleep 30"#, Duration::from_secs(5));
    assert!(matches!(err, Some(SlirpError::BadReadySignal { byte: b'x', .. })), "{err:?}");
}

#[test]
fn a_missing_launcher_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let plan = SlirpPlan::new(NsTarget { netns: "/proc/1/ns/net".into(), userns: None }, dir.path().join("s.sock"));
    let launcher = [OsString::from("/nonexistent/launcher")];
    let cmd = SlirpCommand {
        program: Path::new("/usr/bin/slirp4netns"),
        launcher: &launcher,
        plan: &plan,
        proc_root: Path::new("/proc"),
        inherit: &[],
    };
    let err = SlirpProcess::spawn(&cmd).unwrap_err();
    assert_eq!(err.to_string(), "start /nonexistent/launcher");
}
