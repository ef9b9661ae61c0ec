//! `pelagos-net-cni`: pelagos-net's bridge networking as a CNI plugin (plugin
//! type `pelagos-net`), for containerd, CRI-O, nerdctl, podman's CNI mode and
//! Kubernetes.
//!
//! Speaks CNI 0.4.0, 1.0.0 and 1.1.0: `ADD`, `DEL`, `CHECK`, `STATUS`, `GC`
//! and `VERSION`, with the configuration on stdin and the `CNI_*`
//! variables, answering with the spec's result and error objects.
//!
//! # Shape
//!
//! - Pure: [`spec`] (verbs, environment, versions, error codes),
//!   [`config`] (the network configuration), [`result`] (results in each
//!   version, `prevResult` parsing).
//! - Effectful and thin: [`attach`] (ADD: the step pipeline of every
//!   bridge attach), [`remove`] (DEL: the one undo function), [`check`]
//!   (CHECK), [`verbs`] (GC, STATUS), [`ipam`] (delegation to an IPAM
//!   plugin), [`network`] (which network definition a config means),
//!   [`record`] (how an attachment's record is named and kept alive).
//! - [`run`]: one call from environment and stdin to stdout and exit code;
//!   the binary is `src/cni/main.rs`.
//!
//! # Decisions
//!
//! - A CNI network and a CLI network are one implementation: the same
//!   network definitions, leases, bridge, nftables table, planned steps,
//!   records and undo; `pelagos-net ps`, `inspect` and `gc` see CNI
//!   attachments. They are the same network exactly when they have the
//!   same name.
//! - Chaining: our ADD result names the container interface with its
//!   `sandbox` and points `ips[].interface` at it, with the subnet's real
//!   prefix, so the reference `portmap`, `tuning`, `firewall` and
//!   `bandwidth` plugins can follow us. We publish `runtimeConfig.
//!   portMappings` ourselves (DNAT in our table) and keep them in the
//!   record, so DEL needs neither `prevResult` nor `runtimeConfig`.
//! - Liveness: see [`record`]: plain `pelagos-net gc` leaves CNI
//!   attachments to the CNI verbs.

pub mod attach;
pub mod check;
pub mod config;
pub mod ipam;
pub mod network;
pub mod record;
pub mod remove;
pub mod result;
pub mod spec;
pub mod verbs;

use crate::state::paths::{PathEnv, Paths};
use spec::{CniError, Code, Command};

/// What one call prints and how it exits.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// stdout (a result, a version answer or an error object; empty for
    /// a successful DEL, CHECK, STATUS or GC).
    pub stdout: String,
    /// Exit status.
    pub status: i32,
}

/// `e` and its sources, `: `-joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Close, in a process of their own, the firewall sockets that removed
/// forwards and delete the veth pairs DEL queued (call it last, right
/// before exit: the plugin then exits without waiting for the kernel's
/// grace period).
pub fn detach_pending() {
    crate::bridge::firewall::closer::detach_pending();
}

/// One plugin call: `env` looks up the `CNI_*` variables, `stdin` is the
/// configuration.
pub fn run(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = config::version_of(stdin)
        .filter(|v| spec::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| spec::LATEST.to_owned());
    match dispatch(env, stdin) {
        Ok(out) => Outcome { stdout: out, status: 0 },
        Err(e) => Outcome { stdout: format!("{}\n", e.to_json(&version)), status: 1 },
    }
}

fn dispatch(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<String, CniError> {
    let params = spec::params(&env)?;
    if params.command == Command::Version {
        let requested = config::version_of(stdin).unwrap_or_else(|| spec::LATEST.to_owned());
        return Ok(format!("{}\n", spec::version_answer(&requested)));
    }
    let conf = config::parse(stdin)?;
    if matches!(params.command, Command::Gc | Command::Status) && conf.version.as_str() < "1.1.0" {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("{:?} needs cniVersion 1.1.0", params.command),
            format!("config is {:?}", conf.version),
        ));
    }
    let mut paths = Paths::from_env(&PathEnv { euid: 0, ..Default::default() });
    if let Some(d) = &conf.run_dir {
        paths.run_dir = d.clone();
    }
    if let Some(d) = &conf.config_dir {
        paths.config_dir = d.clone();
    }
    match params.command {
        Command::Add => {
            let result = attach::add(&params, &conf, &paths, stdin)?;
            Ok(format!("{}\n", result.to_json(&conf.version)))
        }
        Command::Del => remove::del(&params, &conf, &paths, stdin).map(|()| String::new()),
        Command::Check => check::check(&params, &conf, &paths).map(|()| String::new()),
        Command::Gc => verbs::gc(&params, &conf, &paths, stdin).map(|()| String::new()),
        Command::Status => verbs::status(&params, &conf, &paths).map(|()| String::new()),
        Command::Version => unreachable!("answered above"),
    }
}
