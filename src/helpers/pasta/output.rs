//! A bounded buffer for a helper's stdout+stderr, filled by drain threads.
//!
//! Keeps the last [`OutputBuf::CAPACITY`] bytes of complete lines, drops
//! pasta's "Failed to send N bytes to syslog" noise (printed by pasta when
//! the host has no syslog socket), and counts what it had to drop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The last lines a helper printed.
#[derive(Debug, Default)]
pub struct OutputBuf {
    lines: VecDeque<String>,
    bytes: usize,
    dropped_lines: usize,
}

impl OutputBuf {
    /// Bytes of output kept at most.
    pub const CAPACITY: usize = 64 * 1024;

    /// Append one line (without its newline), evicting the oldest lines past capacity.
    pub fn push_line(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        if is_noise(line) {
            return;
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_owned());
        while self.bytes > Self::CAPACITY {
            match self.lines.pop_front() {
                Some(old) => {
                    self.bytes -= old.len();
                    self.dropped_lines += 1;
                }
                None => break,
            }
        }
    }

    /// Everything kept, newline-joined, with a note when older lines were dropped.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if self.dropped_lines > 0 {
            out.push_str(&format!("[{} earlier lines dropped]\n", self.dropped_lines));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).map(|l| format!("{l}\n")).collect()
    }
}

/// Lines pasta prints about its own logging, which carry no information.
fn is_noise(line: &str) -> bool {
    line.starts_with("Failed to send ") && line.ends_with(" bytes to syslog") || line.trim().is_empty()
}

/// Output shared between drain threads and the owner.
pub type SharedOutput = Arc<Mutex<OutputBuf>>;

/// Start a thread that reads `stream` line by line into `buf` until EOF.
pub fn drain<R: Read + Send + 'static>(stream: R, buf: SharedOutput) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("pasta-drain".into()).spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw);
                    if let Ok(mut b) = buf.lock() {
                        b.push_line(&line);
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_noise_is_dropped_and_real_lines_kept() {
        let mut b = OutputBuf::default();
        b.push_line("Failed to send 51 bytes to syslog\n");
        b.push_line("Failed to bind any port for '-t 8080', exiting\n");
        assert_eq!(b.text(), "Failed to bind any port for '-t 8080', exiting\n");
    }

    #[test]
    fn buffer_stays_bounded_and_says_what_it_dropped() {
        let mut b = OutputBuf::default();
        let line = "x".repeat(1000);
        for _ in 0..200 {
            b.push_line(&line);
        }
        assert!(b.bytes <= OutputBuf::CAPACITY);
        assert!(b.text().starts_with("[135 earlier lines dropped]"), "{}", &b.text()[..40]);
        assert_eq!(b.tail(2), format!("{line}\n{line}\n"));
    }
}
