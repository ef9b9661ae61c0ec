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

    /// Whether this exact process still runs (same pid, same start time).
    /// A zombie is dead: it holds nothing but its exit status, and in a
    /// container whose init does not reap, it may never go away.
    pub fn is_alive(&self, proc_root: &Path) -> bool {
        let Ok(stat) = std::fs::read_to_string(proc_root.join(self.pid.to_string()).join("stat")) else {
            return false;
        };
        parse_start_time(&stat) == Some(self.start_time) && parse_state(&stat) != Some('Z')
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

/// Field 3 (`state`: R, S, D, Z, ...) of a `/proc/<pid>/stat` line.
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
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
    fn state_parses_after_comm_and_a_zombie_child_is_not_alive() {
        assert_eq!(parse_state("4242 (we ird) (name) Z 1 4242"), Some('Z'));
        let child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(Path::new("/proc"), child.id()).unwrap();
        // Not reaped yet: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while id.is_alive(Path::new("/proc")) {
            assert!(std::time::Instant::now() < deadline, "the exited child still counts as alive");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        assert_eq!(parse_state(&stat), Some('Z'));
        let mut child = child;
        child.wait().unwrap();
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::of(Path::new("/proc"), std::process::id()).expect("read own stat");
        assert!(me.is_alive(Path::new("/proc")));
        let other = ProcessId { start_time: me.start_time + 1, ..me };
        assert!(!other.is_alive(Path::new("/proc")));
    }
}
