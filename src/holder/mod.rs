//! The per-user holder of rootless shared networks.
//!
//! An unprivileged user cannot make a bridge in the host's network
//! namespace, so every rootless network of the user lives in one namespace
//! of the user's own: the *holder*, a user namespace (the user's
//! subordinate ids mapped when `newuidmap` can, the user alone otherwise)
//! with a network and a mount namespace. Each network is a bridge in it
//! (MTU 65520, pasta's) with its nftables table (NAT, isolation between
//! networks); each run's namespace is created inside the holder's user
//! namespace, so the holder may put a veth pair into it; pasta, attached to
//! the holder, carries every network's egress.
//!
//! Processes (all the user's own, nothing privileged):
//!
//! ```text
//! supervisor (host namespaces, its own session)   [daemon]
//!   |- holder (pause, in the user/net/mount namespaces; the supervisor keeps their fds)
//!   |- pasta  (attached to the holder)
//!   `- names  (every network's name server on its gateway; sockets made in the holder)  [names]
//! ```
//!
//! The supervisor restarts pasta and the name server when they die (the
//! containers do not notice) and a holder process that dies (re-joining the namespaces it
//! keeps open, so no container loses its address). A supervisor that dies
//! takes both children with it (parent-death signal); the next run or `gc`
//! finds its state dead and starts a new one.
//!
//! Lifetime: started by the first run that needs it ([`usage::ensure`]),
//! counted by the live records that name it ([`crate::state::record::Resource::Holder`]),
//! stopped when the last of them leaves ([`usage::release`]), by `gc`, or
//! by the supervisor itself when it finds no live user.
//!
//! Everything done inside it runs in a single-threaded forked helper that
//! joins the holder's user and network namespaces ([`join`]) and speaks
//! rtnetlink and nfnetlink there (`bridge`); no `ip` or `nft` process.

pub mod daemon;
mod daemon_child;
pub mod idmap;
pub mod join;
pub mod names;
pub mod network;
pub mod orphans;
pub mod state;
mod supervisor;
pub mod usage;

pub use state::{HolderDir, HolderState};

/// Errors of the holder, named for the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// The holder's state directory or file failed.
    #[error("holder state {path}")]
    State {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The holder's state file is not what this build writes.
    #[error("holder state {path} is corrupted")]
    CorruptState {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A process-level call failed (fork, pipe, wait).
    #[error("{op}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// Forking needs a single-threaded process.
    #[error("the holder's helpers must be forked from a single-threaded process (this one has {threads} threads)")]
    Threaded {
        /// Threads found.
        threads: usize,
    },
    /// The holder could not be started.
    #[error("start the network holder: {reason}")]
    Start {
        /// What the supervisor reported.
        reason: String,
    },
    /// The holder did not report in time.
    #[error("the network holder did not start within {waited_ms} ms")]
    StartTimeout {
        /// How long we waited.
        waited_ms: u128,
    },
    /// A namespace of the holder could not be opened.
    #[error("open {path}")]
    OpenNamespace {
        /// The namespace file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Work inside the holder failed.
    #[error("{op} inside the network holder: {message}")]
    Inside {
        /// What was being done.
        op: &'static str,
        /// The helper's error, with its causes.
        message: String,
    },
    /// The holder is not running.
    #[error("the network holder is not running")]
    NotRunning,
}
