//! The network helper of a run (pasta or slirp4netns), behind one type so
//! supervision and teardown treat both alike.

use super::RunError;
use crate::helpers::pasta::setup::{PastaSetup, teardown_pasta_network};
use crate::helpers::slirp::setup::{SlirpSetup, teardown_slirp_network};
use crate::host::procfs::ProcessId;

/// A running helper that made the namespace ready.
#[derive(Debug)]
pub enum Helper {
    /// pasta.
    Pasta(PastaSetup),
    /// slirp4netns.
    Slirp(Box<SlirpSetup>),
}

/// Which helper, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HelperKind {
    /// pasta.
    Pasta,
    /// slirp4netns.
    Slirp4netns,
}

impl Helper {
    /// Name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pasta(_) => "pasta",
            Self::Slirp(_) => "slirp4netns",
        }
    }

    /// Kind, for records.
    pub fn kind(&self) -> HelperKind {
        match self {
            Self::Pasta(_) => HelperKind::Pasta,
            Self::Slirp(_) => HelperKind::Slirp4netns,
        }
    }

    /// pid and start time.
    pub fn id(&self) -> ProcessId {
        match self {
            Self::Pasta(p) => p.pasta_id(),
            Self::Slirp(s) => s.slirp_id(),
        }
    }

    /// Exit status if the helper died.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        match self {
            Self::Pasta(p) => p.try_exit(),
            Self::Slirp(s) => s.try_exit(),
        }
    }

    /// Stop it; its output and any teardown errors.
    pub fn teardown(self) -> (String, Vec<RunError>) {
        match self {
            Self::Pasta(p) => (teardown_pasta_network(p).output, Vec::new()),
            Self::Slirp(s) => {
                let report = teardown_slirp_network(*s);
                (report.output, report.errors.into_iter().map(RunError::SlirpTeardown).collect())
            }
        }
    }
}
