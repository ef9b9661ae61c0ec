//! What the installed pasta can do: its version and the long options its
//! `--help` lists, plus the known TCP bugs of its tap path that follow from them.
//!
//! Parsing is pure ([`parse_version`], [`parse_help`],
//! [`PastaFeatures::from_outputs`]); [`probe`] is the thin shell that runs the
//! binary twice (finding it is [`crate::host::path`]'s job).
//!
//! Options are detected from `--help` rather than guessed from the version,
//! because distributions build pasta from git snapshots or tarballs that print
//! `pasta unknown version` (Debian 12's 2023-03-09 build does).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wait_timeout::ChildExt;

/// How long each `pasta --version` / `pasta --help` run may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes kept from each output stream of a probe run.
const OUTPUT_LIMIT: u64 = 256 * 1024;

/// The release a build identifies as, from the first line of `--version`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum PastaVersion {
    /// `pasta unknown version`: built without git metadata (or nothing printed).
    #[default]
    Unknown,
    /// A version string containing a release date, e.g. `2024_08_06.ee36266`,
    /// or a distribution's `0^20240806.gee36266-1.fc40`.
    Dated(String),
    /// A version string without a recognisable date.
    Other(String),
}

/// A release or snapshot date, ordered chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReleaseDate {
    /// Year, e.g. 2024.
    pub year: u16,
    /// Month, 1-12.
    pub month: u8,
    /// Day, 1-31.
    pub day: u8,
}

/// Known bugs of pasta's TCP tap path that a build may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TapBugs {
    /// Connections where the server speaks first could hang (fixed in 2023_10_04).
    pub server_first_hang: bool,
    /// Data after a half-close could be corrupted (fixed in 2024_08_06).
    pub half_close_corruption: bool,
}

/// What one pasta binary supports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PastaFeatures {
    /// The release it identifies as.
    pub version: PastaVersion,
    /// Long options (with their leading `--`) that `--help` defines.
    pub options: BTreeSet<String>,
}

/// Why probing a helper binary (pasta, slirp4netns) failed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureProbeError {
    /// The binary could not be started.
    #[error("failed to run {} {arg}", path.display())]
    Spawn {
        /// Binary that was run.
        path: PathBuf,
        /// The option it was run with.
        arg: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Waiting for the binary, or reading its output, failed.
    #[error("failed to collect the output of {} {arg}", path.display())]
    Collect {
        /// Binary that was run.
        path: PathBuf,
        /// The option it was run with.
        arg: &'static str,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The binary did not exit within [`PROBE_TIMEOUT`]; it was killed.
    #[error("{} {arg} did not exit within {timeout:?}", path.display())]
    TimedOut {
        /// Binary that was run.
        path: PathBuf,
        /// The option it was run with.
        arg: &'static str,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// `--version` exited unsuccessfully.
    #[error("{} --version failed with {status}: {stderr_tail}", path.display())]
    VersionFailed {
        /// Binary that was run.
        path: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines it wrote to stderr, syslog noise removed.
        stderr_tail: String,
    },
    /// `--help` does not define `--netns`, without which we cannot use it.
    #[error("{} --help does not list --netns; is it pasta?", path.display())]
    NotPasta {
        /// Binary that was run.
        path: PathBuf,
    },
    /// Neither a version line nor `--configure` in `--help`.
    #[error("{} does not identify as slirp4netns (no version line, no --configure in --help)", path.display())]
    NotSlirp {
        /// Binary that was run.
        path: PathBuf,
    },
}

/// Options that only builds released after 2024_08_06 have. Present means both
/// tap fixes are in; absent proves nothing (the option may be compiled out or
/// renamed), so callers assume the worst.
const MARKERS_AFTER_2024_08_06: &[&str] = &["--map-guest-addr"];

const SERVER_FIRST_HANG_FIXED: ReleaseDate = ReleaseDate::new(2023, 10, 4);
const HALF_CLOSE_FIXED: ReleaseDate = ReleaseDate::new(2024, 8, 6);
/// The oldest build seen forwarding TCP DNS queries.
const TCP_DNS_SEEN: ReleaseDate = ReleaseDate::new(2025, 1, 9);

impl ReleaseDate {
    /// A date; no calendar validation beyond what the fields hold.
    pub const fn new(year: u16, month: u8, day: u8) -> Self {
        Self { year, month, day }
    }

    /// The first `YYYY_MM_DD` or standalone 8-digit `YYYYMMDD` date in `text`.
    pub fn find_in(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let number = |s: &[u8]| s.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        (0..b.len()).find_map(|i| {
            let underscored = b
                .get(i..i + 10)
                .filter(|w| digits(&w[..4]) && w[4] == b'_' && digits(&w[5..7]) && w[7] == b'_' && digits(&w[8..]));
            let compact = b.get(i..i + 8).filter(|w| {
                digits(w) && (i == 0 || !b[i - 1].is_ascii_digit()) && b.get(i + 8).is_none_or(|c| !c.is_ascii_digit())
            });
            let (y, m, d) = match (underscored, compact) {
                (Some(w), _) => (&w[..4], &w[5..7], &w[8..]),
                (None, Some(w)) => (&w[..4], &w[4..6], &w[6..]),
                (None, None) => return None,
            };
            let (month, day) = (number(m) as u8, number(d) as u8);
            let plausible = (1..=12).contains(&month) && (1..=31).contains(&day);
            plausible.then(|| Self::new(number(y), month, day))
        })
    }
}

impl fmt::Display for ReleaseDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}_{:02}_{:02}", self.year, self.month, self.day)
    }
}

impl PastaVersion {
    /// The release date, for [`PastaVersion::Dated`].
    pub fn release_date(&self) -> Option<ReleaseDate> {
        match self {
            Self::Dated(v) => ReleaseDate::find_in(v),
            Self::Unknown | Self::Other(_) => None,
        }
    }
}

impl PastaFeatures {
    /// Features from the stdout of `--version` and the text of `--help`.
    pub fn from_outputs(version_stdout: &str, help_text: &str) -> Self {
        Self { version: parse_version(version_stdout), options: parse_help(help_text) }
    }

    /// True when `--help` defines the long option `opt` (`"--runas"` or `"runas"`).
    pub fn has(&self, opt: &str) -> bool {
        let name = opt.strip_prefix("--").unwrap_or(opt);
        self.options.contains(&format!("--{name}"))
    }

    /// `--runas`: needed as root, where pasta otherwise drops to `nobody`.
    pub fn supports_runas(&self) -> bool {
        self.has("--runas")
    }

    /// `--map-host-loopback` (2024 builds).
    pub fn supports_map_host_loopback(&self) -> bool {
        self.has("--map-host-loopback")
    }

    /// `--map-guest-addr` (2024 builds).
    pub fn supports_map_guest_addr(&self) -> bool {
        self.has("--map-guest-addr")
    }

    /// Whether TCP queries to the `--dns-forward` address are forwarded too.
    /// Debian 12's 2023-03-09 build forwards only UDP; a 2025-01 snapshot
    /// was seen forwarding TCP. Only dated builds from then on are trusted:
    /// wrongly assuming TCP works would let pasta connect to the literal
    /// forward address from the host, wrongly assuming it does not only
    /// makes TCP queries fail fast.
    pub fn maps_tcp_dns(&self) -> bool {
        self.version.release_date().is_some_and(|d| d >= TCP_DNS_SEEN)
    }

    /// The tap-path TCP bugs this build is assumed to have.
    ///
    /// A dated build is affected by each bug released before its fix. A build
    /// without a date is judged by its options: one that defines an option
    /// introduced after both fixes has them; otherwise both bugs are assumed,
    /// since missing options only say the build is old *or* unusual, and
    /// wrongly assuming a bug costs a workaround while wrongly assuming a fix
    /// costs a hung or corrupted connection.
    pub fn tcp_tap_bugs(&self) -> TapBugs {
        match self.version.release_date() {
            Some(date) => TapBugs {
                server_first_hang: date < SERVER_FIRST_HANG_FIXED,
                half_close_corruption: date < HALF_CLOSE_FIXED,
            },
            None => {
                let newer = MARKERS_AFTER_2024_08_06.iter().any(|o| self.has(o));
                TapBugs { server_first_hang: !newer, half_close_corruption: !newer }
            }
        }
    }
}

impl TapBugs {
    /// True when any bug is present.
    pub fn any(&self) -> bool {
        self.server_first_hang || self.half_close_corruption
    }
}

/// True for the `Failed to send N bytes to syslog` noise pasta prints when
/// there is no syslog socket.
fn is_syslog_noise(line: &str) -> bool {
    line.starts_with("Failed to send") && line.trim_end().ends_with("to syslog")
}

/// The version named by the first meaningful line of `pasta --version`.
pub fn parse_version(stdout: &str) -> PastaVersion {
    let Some(line) = stdout.lines().map(str::trim).find(|l| !l.is_empty() && !is_syslog_noise(l)) else {
        return PastaVersion::Unknown;
    };
    let rest = ["pasta ", "passt "].iter().find_map(|p| line.strip_prefix(p)).unwrap_or(line).trim();
    match rest {
        "unknown version" => PastaVersion::Unknown,
        v if ReleaseDate::find_in(v).is_some() => PastaVersion::Dated(v.to_owned()),
        v => PastaVersion::Other(v.to_owned()),
    }
}

/// Every long option defined in `--help` text: lines that start with
/// whitespace then `-x, --long` or `--long`. Options merely mentioned in
/// descriptions, usage lines and syslog noise are ignored.
pub fn parse_help(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| l.starts_with([' ', '\t']) && !is_syslog_noise(l.trim_start()))
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            let first = tokens.next()?;
            let is_short = |t: &str| t.len() == 3 && t.starts_with('-') && t.ends_with(',');
            let long = if is_short(first) { tokens.next()? } else { first };
            let name: String =
                long.strip_prefix("--")?.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

/// Run `pasta --version` and `pasta --help` (each with [`PROBE_TIMEOUT`]) and
/// parse what they print. `--help` exits 1 and writes to stderr; both streams
/// are read and its status is ignored.
pub fn probe(pasta: &Path) -> Result<PastaFeatures, FeatureProbeError> {
    let version = run_captured(pasta, "--version")?;
    if !version.status.success() {
        return Err(FeatureProbeError::VersionFailed {
            path: pasta.to_owned(),
            status: version.status,
            stderr_tail: tail(&version.stderr, 5),
        });
    }
    let help = run_captured(pasta, "--help")?;
    let help_text = format!("{}\n{}", help.stdout, help.stderr);
    let features = PastaFeatures::from_outputs(&version.stdout, &help_text);
    if !features.has("--netns") {
        return Err(FeatureProbeError::NotPasta { path: pasta.to_owned() });
    }
    Ok(features)
}

/// The last `n` meaningful lines of `text`, joined by `"; "`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !is_syslog_noise(l)).collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// What one probe run left behind.
pub(crate) struct Captured {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (bounded).
    pub stdout: String,
    /// Standard error (bounded).
    pub stderr: String,
}

/// Run `path arg`, draining stdout and stderr on threads, within the deadline.
/// Shared by every helper probe (pasta here, slirp4netns in `probe`).
pub(crate) fn run_captured(path: &Path, arg: &'static str) -> Result<Captured, FeatureProbeError> {
    let collect = |source| FeatureProbeError::Collect { path: path.to_owned(), arg, source };
    let mut child = Command::new(path)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FeatureProbeError::Spawn { path: path.to_owned(), arg, source })?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || -> io::Result<String> {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                pipe.take(OUTPUT_LIMIT).read_to_end(&mut bytes)?;
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let waited = child.wait_timeout(PROBE_TIMEOUT);
    let status = match waited {
        Ok(Some(status)) => Ok(status),
        Ok(None) => Err(FeatureProbeError::TimedOut { path: path.to_owned(), arg, timeout: PROBE_TIMEOUT }),
        Err(source) => Err(collect(source)),
    };
    if status.is_err() {
        // Best effort: the child may already be gone; reaping it unblocks the drains.
        let _ = child.kill();
        let _ = child.wait();
    }
    // A drain thread cannot panic short of allocation failure; treat it as no output.
    let join = |h: thread::JoinHandle<io::Result<String>>| h.join().unwrap_or_else(|_| Ok(String::new()));
    let (out, err) = (join(out), join(err));
    Ok(Captured { status: status?, stdout: out.map_err(collect)?, stderr: err.map_err(collect)? })
}

/// True when pasta is on this process's `PATH` (absolute directories only).
pub fn is_pasta_available() -> bool {
    use crate::host::path::{Entries, find_executable};
    find_executable(std::env::var_os("PATH").as_deref(), "pasta".as_ref(), Entries::Absolute).is_some()
}

#[cfg(test)]
#[path = "features_tests.rs"]
mod tests;
