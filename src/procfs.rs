//! Process identity that survives pid reuse: a pid plus its start time
//! (field 22 of `/proc/<pid>/stat`, in clock ticks since boot).

use std::io;
use std::path::Path;

/// A process named by pid and start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcessId {
    /// Identify a live process by reading `<proc_root>/<pid>/stat`.
    pub fn of(proc_root: &Path, pid: u32) -> io::Result<Self> {
        let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))?;
        let start_time =
            parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat line"))?;
        Ok(Self { pid, start_time })
    }

    /// Whether this exact process still exists (same pid, same start time).
    pub fn is_alive(&self, proc_root: &Path) -> bool {
        matches!(Self::of(proc_root, self.pid), Ok(now) if now.start_time == self.start_time)
    }
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so counting starts after the
/// last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm come fields 3.. ; starttime is field 22, i.e. the 20th here.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_after_comm_with_spaces_and_parens() {
        let line = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987_654));
    }

    #[test]
    fn start_time_of_truncated_line_is_none() {
        assert_eq!(parse_start_time("4242 (x) S 1 2 3"), None);
        assert_eq!(parse_start_time("no parens at all"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::of(Path::new("/proc"), std::process::id()).expect("read own stat");
        assert!(me.is_alive(Path::new("/proc")));
        let other = ProcessId { start_time: me.start_time + 1, ..me };
        assert!(!other.is_alive(Path::new("/proc")));
    }
}
