//! How nft script text is run: by libnftables in this process
//! ([`NftContext`]) or by the `nft` command ([`NftCommand`]).
//!
//! # Decisions
//!
//! - **A dynamically linked build loads libnftables; a statically linked
//!   one runs `nft -f -`** ([`NftEngine::BUILT_IN`]). A static binary (the
//!   CNI plugin as README.md installs it: one file that runs on any node)
//!   cannot load a shared library safely: musl's static start has no
//!   dynamic loader at all, and a static glibc one loads libnftables only
//!   when the node's glibc is the one it was built with. Scripts run only
//!   when a network's table is created, rebuilt or deleted (a container's
//!   forwards never need one: [`super::nfnl`]), so spawning `nft` costs a
//!   few milliseconds once per network.
//! - **The command runs in the namespace the engine was opened in**, as a
//!   libnftables context does: [`NftCommand::new`] keeps the calling
//!   thread's network namespace and the child enters it before `exec`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{NftContext, NftError};
use crate::state::record::NsId;

/// Which way scripts are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NftEngine {
    /// libnftables, loaded into this process on first use.
    Library,
    /// The `nft` command, one process per script.
    Command,
}

impl NftEngine {
    /// This build's engine: [`Command`](Self::Command) for a statically
    /// linked binary, [`Library`](Self::Library) otherwise.
    pub const BUILT_IN: Self = if cfg!(target_feature = "crt-static") { Self::Command } else { Self::Library };
}

/// An open engine, bound to the network namespace it was opened in.
#[derive(Debug)]
pub enum Nft {
    /// A libnftables context.
    Library(NftContext),
    /// The `nft` command.
    Command(NftCommand),
}

impl Nft {
    /// Opens `engine` in the calling thread's network namespace.
    pub fn open(engine: NftEngine) -> Result<Self, NftError> {
        Ok(match engine {
            NftEngine::Library => Self::Library(NftContext::new()?),
            NftEngine::Command => Self::Command(NftCommand::new()?),
        })
    }

    /// Runs `script` as one transaction; returns what nft printed.
    pub fn run(&mut self, script: &str) -> Result<String, NftError> {
        match self {
            Self::Library(ctx) => ctx.run(script),
            Self::Command(cmd) => cmd.run(script),
        }
    }
}

/// The `nft` command, run in one network namespace.
#[derive(Debug)]
pub struct NftCommand {
    program: PathBuf,
    netns: OwnedFd,
}

impl NftCommand {
    /// Finds `nft` (on `PATH`, then in the usual sbin directories) and keeps
    /// the calling thread's network namespace.
    pub fn new() -> Result<Self, NftError> {
        let program = find_nft(std::env::var_os("PATH").as_deref(), |p| p.is_file()).ok_or_else(not_found)?;
        let netns = File::open("/proc/thread-self/ns/net")
            .map_err(|e| NftError::new(format!("cannot open this thread's network namespace: {e}")))?;
        Ok(Self { program, netns: netns.into() })
    }

    /// Whether the calling thread is in the namespace this was opened in.
    fn is_current(&self) -> bool {
        let saved = NsId::of_file(&self.netns);
        let here = NsId::of(Path::new("/proc/thread-self/ns/net"));
        matches!((saved, here), (Ok(a), Ok(b)) if a == b)
    }

    /// Runs `script` with `nft -f -` (one transaction); returns its standard
    /// output, or its error text when it fails.
    pub fn run(&mut self, script: &str) -> Result<String, NftError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(["-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Entering a namespace takes CAP_SYS_ADMIN even when it is the
        // one the thread is in: only a thread elsewhere enters it (and
        // without a hook, std spawns with posix_spawn).
        if !self.is_current() {
            let netns = self.netns.as_raw_fd();
            // SAFETY: the hook runs in the forked child before exec and
            // makes one system call (setns), which is async-signal-safe;
            // `netns` is owned by `self`, which outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(netns, libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                })
            };
        }
        let program = self.program.display();
        let mut child =
            cmd.spawn().map_err(|e| NftError::new(format!("cannot run {program}: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped above");
        // The script is written beside `wait_with_output`'s reading of both
        // pipes, so a long script and a long answer never block each other.
        let (wrote, output) = std::thread::scope(|s| {
            let writer = s.spawn(move || stdin.write_all(script.as_bytes()));
            let output = child.wait_with_output();
            (writer.join().unwrap_or_else(|_| Err(std::io::Error::other("writer panicked"))), output)
        });
        let output = output.map_err(|e| NftError::new(format!("cannot wait for {program}: {e}")))?;
        let errors = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let message = errors.trim();
            return Err(NftError::new(if message.is_empty() {
                format!("{program} failed ({}) without a message", output.status)
            } else {
                message.to_owned()
            }));
        }
        wrote.map_err(|e| NftError::new(format!("cannot write the script to {program}: {e}")))?;
        if !errors.trim().is_empty() {
            log::warn!("nft: {}", errors.trim());
        }
        String::from_utf8(output.stdout).map_err(|_| NftError::new("nft's output is not UTF-8"))
    }
}

/// Where `nft` is looked for after `PATH` (a runtime's `PATH` often lacks
/// sbin); also where `doctor` looks ([`crate::host::probe`]).
pub const NFT_DIRS: [&str; 5] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];

/// Where `nft` is: the first `PATH` entry holding it, then [`NFT_DIRS`].
/// Only absolute directories count.
pub fn find_nft(path: Option<&OsStr>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let listed = path.map(|p| std::env::split_paths(p).collect::<Vec<_>>()).unwrap_or_default();
    listed.into_iter().chain(NFT_DIRS.map(PathBuf::from)).filter(|d| d.is_absolute()).map(|d| d.join("nft")).find(|p| exists(p))
}

/// Whether this build can build tables: libnftables is loaded on demand
/// (its absence is reported then), the `nft` command must be found now.
pub fn usable(engine: NftEngine) -> Result<(), NftError> {
    match engine {
        NftEngine::Library => Ok(()),
        NftEngine::Command => find_nft(std::env::var_os("PATH").as_deref(), |p| p.is_file())
            .map(drop)
            .ok_or_else(not_found),
    }
}

fn not_found() -> NftError {
    NftError::new("cannot find the nft command: install nftables (`sudo apt-get install nftables`); bridge networks need it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_is_looked_up_on_path_first_then_in_sbin() {
        let has = |set: &'static [&'static str]| move |p: &Path| set.iter().any(|s| Path::new(s) == p);
        let path = Some(OsStr::new("relative:/opt/bin:/usr/bin"));
        assert_eq!(find_nft(path, has(&["/usr/bin/nft", "/usr/sbin/nft"])), Some("/usr/bin/nft".into()));
        assert_eq!(find_nft(path, has(&["/usr/sbin/nft", "/sbin/nft"])), Some("/usr/sbin/nft".into()));
        assert_eq!(find_nft(None, has(&["/usr/local/sbin/nft"])), Some("/usr/local/sbin/nft".into()));
        assert_eq!(find_nft(None, has(&["/bin/nft", "/usr/bin/nft"])), Some("/usr/bin/nft".into()));
        assert_eq!(find_nft(path, has(&["relative/nft"])), None, "a relative PATH entry is never used");
        assert_eq!(find_nft(path, has(&[])), None);
    }

}
