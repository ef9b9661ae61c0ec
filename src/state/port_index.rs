//! Which records publish which host port: `<run>/ports/<proto>-<port>/<id>`,
//! one empty file per published host port and record, so that the check
//! before a setup publishes a port reads the records that publish the same
//! port, not every record (at hundreds of live containers, reading them all
//! would be most of an attach). A range wider than [`WIDE`] ports is
//! indexed once, under `<run>/ports/wide/<id>`, and such records are always
//! read.
//!
//! The index only narrows the search; the records stay the truth. Entries
//! are written right after their record, under the runs directory's lock
//! the port check holds (so no check runs in between; a setup killed in
//! between left a dead record, which holds no port), and removed after it:
//! an entry may name a record that is gone, never the other way round.
//! Readers skip such an entry; a repeated undo ([`PortIndex::forget_id`])
//! or `gc` removes it.

use crate::model::port::PortMapping;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Ranges wider than this are indexed under `wide/`.
pub const WIDE: u32 = 64;

/// The index under `<run>/ports`.
#[derive(Debug, Clone)]
pub struct PortIndex {
    dir: PathBuf,
}

/// Where one mapping is indexed: its ports' directories, or `wide`.
fn slots(m: &PortMapping) -> Vec<String> {
    let Some(range) = m.host else { return Vec::new() };
    if range.len() > WIDE {
        return vec!["wide".to_owned()];
    }
    range.iter().map(|p| format!("{}-{p}", m.proto)).collect()
}

impl PortIndex {
    /// `<run_dir>/ports`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("ports") }
    }

    /// Record that `id` publishes `ports`.
    pub fn add(&self, id: &str, ports: &[PortMapping]) -> io::Result<()> {
        for slot in ports.iter().flat_map(slots) {
            let dir = self.dir.join(slot);
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(dir.join(id))?;
        }
        Ok(())
    }

    /// Remove what [`PortIndex::add`] wrote for `id` (what is missing is fine).
    pub fn forget(&self, id: &str, ports: &[PortMapping]) -> io::Result<()> {
        ports.iter().flat_map(slots).try_for_each(|slot| self.remove_entry(&slot, id))
    }

    /// Remove every entry of `id`, whatever ports it published (its record
    /// is gone: a teardown that died between removing it and its entries).
    pub fn forget_id(&self, id: &str) -> io::Result<()> {
        let Ok(slots) = fs::read_dir(&self.dir) else { return Ok(()) };
        slots
            .flatten()
            .map(|s| s.file_name().to_string_lossy().into_owned())
            .filter(|slot| self.dir.join(slot).join(id).exists())
            .try_for_each(|slot| self.remove_entry(&slot, id))
    }

    /// The ids of records that may publish a port of `ports`: those
    /// indexed under one of its ports, and every wide one.
    pub fn candidates(&self, ports: &[PortMapping]) -> Vec<String> {
        let mut ids: Vec<String> = ports
            .iter()
            .flat_map(slots)
            .chain(std::iter::once("wide".to_owned()))
            .flat_map(|slot| entries(&self.dir.join(slot)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every (slot, id) entry older than `age`, for `gc`'s sweep of
    /// entries whose record is gone (a young one may belong to a setup of
    /// the same id, a CNI attachment's, writing its record again).
    pub fn older_than(&self, age: std::time::Duration) -> Vec<(String, String)> {
        let now = std::time::SystemTime::now();
        let old = |slot: &str, id: &str| {
            fs::symlink_metadata(self.dir.join(slot).join(id))
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|a| a >= age))
        };
        self.all().into_iter().filter(|(slot, id)| old(slot, id)).collect()
    }

    /// Every (slot, id) entry.
    pub fn all(&self) -> Vec<(String, String)> {
        let Ok(slots) = fs::read_dir(&self.dir) else { return Vec::new() };
        slots
            .flatten()
            .map(|s| s.file_name().to_string_lossy().into_owned())
            .flat_map(|slot| entries(&self.dir.join(&slot)).into_iter().map(move |id| (slot.clone(), id)))
            .collect()
    }

    /// Remove one entry (missing is fine), and its directory when that
    /// was the last one (a directory still in use stays).
    pub fn remove_entry(&self, slot: &str, id: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(slot).join(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let _ = fs::remove_dir(self.dir.join(slot));
        Ok(())
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let Ok(d) = fs::read_dir(dir) else { return Vec::new() };
    d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with('.')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(specs: &[&str]) -> Vec<PortMapping> {
        specs.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn records_are_found_by_the_ports_they_publish_and_forgotten() {
        let tmp = tempfile::tempdir().unwrap();
        let idx = PortIndex::new(tmp.path());
        idx.add("a", &ports(&["8080:80", "127.0.0.1:9000-9001:90-91/udp"])).unwrap();
        idx.add("b", &ports(&["8081:80"])).unwrap();
        idx.add("w", &ports(&["10000-10100:10000-10100"])).unwrap();
        assert_eq!(idx.candidates(&ports(&["8080:81"])), vec!["a", "w"]);
        assert_eq!(idx.candidates(&ports(&["9001:1/udp"])), vec!["a", "w"]);
        assert_eq!(idx.candidates(&ports(&["9001:1"])), vec!["w"], "another protocol");
        assert_eq!(idx.candidates(&ports(&["8081:80"])), vec!["b", "w"]);
        assert_eq!(idx.all().len(), 5);
        idx.forget("a", &ports(&["8080:80", "127.0.0.1:9000-9001:90-91/udp"])).unwrap();
        idx.forget("w", &ports(&["10000-10100:10000-10100"])).unwrap();
        assert!(idx.candidates(&ports(&["8080:81", "9000:1/udp"])).is_empty());
        assert_eq!(idx.all(), vec![("tcp-8081".to_owned(), "b".to_owned())]);
        idx.remove_entry("tcp-8081", "b").unwrap();
        assert!(idx.all().is_empty());
    }
}
