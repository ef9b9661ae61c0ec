//! Where pelagos-net keeps things: every path the library touches comes from
//! a [`Paths`] value, built once by the caller (the CLI defaults it from the
//! environment). Nothing else in the crate names `/run`, `/proc` or a home
//! directory, so tests point the whole library at temporary trees.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Roots for runtime state, configuration, named network namespaces and procfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Volatile runtime state: run records, leases, locks.
    pub run_dir: PathBuf,
    /// Persistent configuration: network definitions.
    pub config_dir: PathBuf,
    /// Directory of named network namespaces (`ip netns` uses `/run/netns`).
    pub netns_dir: PathBuf,
    /// procfs mount point, normally `/proc`.
    pub proc_root: PathBuf,
}

/// The environment [`Paths::from_env`] reads, as plain data so the choice is testable.
#[derive(Debug, Clone, Default)]
pub struct PathEnv {
    /// Effective uid of the caller.
    pub euid: u32,
    /// `$XDG_RUNTIME_DIR`.
    pub xdg_runtime_dir: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
    /// `$PELAGOS_NET_RUN_DIR`, `$PELAGOS_NET_CONFIG_DIR`,
    /// `$PELAGOS_NET_NETNS_DIR`: the roots the command line's
    /// `--run-dir`, `--config-dir` and `--netns-dir` default to, honoured
    /// by the library too, so a runtime and `pelagos-net gc` agree.
    pub overrides: [Option<OsString>; 3],
}

impl PathEnv {
    /// Read the current process's environment.
    pub fn current() -> Self {
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME").filter(|v| !v.is_empty()),
            overrides: ["PELAGOS_NET_RUN_DIR", "PELAGOS_NET_CONFIG_DIR", "PELAGOS_NET_NETNS_DIR"]
                .map(|name| std::env::var_os(name).filter(|v| !v.is_empty())),
        }
    }
}

impl Paths {
    /// Default roots for this caller.
    ///
    /// Root: `/run/pelagos-net`, `/var/lib/pelagos-net`. Rootless:
    /// `$XDG_RUNTIME_DIR/pelagos-net` (or `/tmp/pelagos-net-run-<uid>` when the
    /// session has no runtime dir, as under `su` or `setpriv`) and
    /// `$XDG_CONFIG_HOME/pelagos-net` (or `~/.config/pelagos-net`).
    pub fn from_env(env: &PathEnv) -> Self {
        let (run_dir, config_dir) = if env.euid == 0 {
            (PathBuf::from("/run/pelagos-net"), PathBuf::from("/var/lib/pelagos-net"))
        } else {
            let run = match &env.xdg_runtime_dir {
                Some(dir) => Path::new(dir).join("pelagos-net"),
                None => PathBuf::from(format!("/tmp/pelagos-net-run-{}", env.euid)),
            };
            let config = match (&env.xdg_config_home, &env.home) {
                (Some(dir), _) => Path::new(dir).join("pelagos-net"),
                (None, Some(home)) => Path::new(home).join(".config/pelagos-net"),
                (None, None) => PathBuf::from(format!("/tmp/pelagos-net-config-{}", env.euid)),
            };
            (run, config)
        };
        let [run, config, netns] = env.overrides.clone().map(|o| o.map(PathBuf::from));
        Self {
            run_dir: run.unwrap_or(run_dir),
            config_dir: config.unwrap_or(config_dir),
            netns_dir: netns.unwrap_or_else(|| PathBuf::from("/run/netns")),
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Directory of run records.
    pub fn runs_dir(&self) -> PathBuf {
        self.run_dir.join("runs")
    }

    /// The slirp4netns API socket of run `id` (removed at teardown, or by
    /// `gc` when the run died).
    pub fn slirp_api_socket(&self, id: &str) -> PathBuf {
        self.run_dir.join(format!("slirp-{id}.sock"))
    }

    /// The output file of a helper (`pasta`, `slirp4netns`) of attachment
    /// `id` that outlives its starter (removed by detach or `gc`).
    pub fn helper_log(&self, id: &str, helper: &str) -> PathBuf {
        self.run_dir.join(format!("{helper}-{id}.log"))
    }

    /// `<proc>/<pid>/<rest>`.
    pub fn proc_pid(&self, pid: u32, rest: &str) -> PathBuf {
        self.proc_root.join(pid.to_string()).join(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_system_dirs() {
        let p = Paths::from_env(&PathEnv { euid: 0, ..Default::default() });
        assert_eq!(p.run_dir, PathBuf::from("/run/pelagos-net"));
        assert_eq!(p.config_dir, PathBuf::from("/var/lib/pelagos-net"));
    }

    #[test]
    fn rootless_prefers_xdg_dirs() {
        let p = Paths::from_env(&PathEnv {
            euid: 1000,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            xdg_config_home: Some("/home/u/.cfg".into()),
            home: Some("/home/u".into()),
            ..Default::default()
        });
        assert_eq!(p.run_dir, PathBuf::from("/run/user/1000/pelagos-net"));
        assert_eq!(p.config_dir, PathBuf::from("/home/u/.cfg/pelagos-net"));
    }

    #[test]
    fn the_command_line_s_environment_overrides_every_root() {
        let env = PathEnv { euid: 0, overrides: [Some("/r".into()), None, Some("/n".into())], ..Default::default() };
        let p = Paths::from_env(&env);
        assert_eq!((p.run_dir, p.config_dir, p.netns_dir), ("/r".into(), "/var/lib/pelagos-net".into(), "/n".into()));
    }

    #[test]
    fn rootless_without_runtime_dir_falls_back_to_tmp() {
        let p = Paths::from_env(&PathEnv { euid: 1001, home: Some("/home/u".into()), ..Default::default() });
        assert_eq!(p.run_dir, PathBuf::from("/tmp/pelagos-net-run-1001"));
        assert_eq!(p.config_dir, PathBuf::from("/home/u/.config/pelagos-net"));
    }
}
