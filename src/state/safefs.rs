//! Reading and checking files in pelagos-net's own state and configuration
//! directories without following symlinks.
//!
//! Owns the "never follow a link someone planted" rule for reads: records,
//! leases and network definitions are opened with `O_NOFOLLOW` (and
//! `O_NONBLOCK`, so a planted FIFO cannot hang the open) and must be regular
//! files. Writes already go through `store::write_atomic` (a temp file
//! opened with `O_NOFOLLOW`, renamed over the target, which replaces a link
//! instead of following it). Directories are checked to be real
//! directories owned by the caller and not writable by others.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a state or configuration file or directory was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafeFsError {
    /// The path is a symbolic link.
    #[error("is a symbolic link; pelagos-net never follows links in its state or config directories (remove the link)")]
    Symlink,
    /// The path is not a regular file (a FIFO, a device, a directory).
    #[error("is not a regular file (remove it)")]
    NotRegular,
    /// The directory is owned by another user.
    #[error("is owned by uid {owner}, not {euid}")]
    Owner {
        /// Its owner.
        owner: u32,
        /// Who we are.
        euid: u32,
    },
    /// The directory is writable by group or others.
    #[error("has mode {mode:04o}, writable by others (chmod 0700 it)")]
    WorldWritable {
        /// Its mode.
        mode: u32,
    },
}

fn refused(e: SafeFsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Whether `err` is a refusal by this module (a link, a non-regular file, an unsafe directory).
pub fn is_refusal(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|inner| inner.is::<SafeFsError>())
}

/// Open a regular file for reading without following a symlink at its
/// last component.
pub fn open_nofollow(path: &Path) -> io::Result<fs::File> {
    open_sized(path).map(|(file, _)| file)
}

/// [`open_nofollow`], and the file's size as its check found it.
fn open_sized(path: &Path) -> io::Result<(fs::File, u64)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| if e.raw_os_error() == Some(libc::ELOOP) { refused(SafeFsError::Symlink) } else { e })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refused(SafeFsError::NotRegular));
    }
    Ok((file, meta.len()))
}

/// Read a whole regular file without following a symlink at its last
/// component. The buffer is sized from the check's `fstat`, so the read
/// takes no second `fstat` and `lseek` of its own (two reads, the second
/// seeing the end).
pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let (file, len) = open_sized(path)?;
    read_into(file, usize::try_from(len).unwrap_or(0).saturating_add(1))
}

/// A small file read whole into a buffer of `cap` bytes to start with
/// (it grows if the file is larger): a file in procfs reports no size, and
/// `fs::read_to_string` would `fstat`, seek and grow its buffer from 32
/// bytes; a regular file's `fstat` and seek are two calls more than the
/// read needs when its size is about known.
pub fn read_small(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    read_into(fs::File::open(path)?, cap)
}

fn read_into(file: fs::File, cap: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(cap);
    // `Take` reads through the plain `Read::read` (no size probe).
    file.take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Whether directory `dir` holds at most `max` entries besides `.` and
/// `..`. Reads the directory 1 KiB at a time and stops once it has seen
/// more than `max`: a listing through `read_dir` fills a 32 KiB buffer, so
/// with 200 records every setup's "are there few?" paid for reading all of
/// them (~35 µs on tmpfs). A missing directory holds nothing.
pub fn at_most_entries(dir: &Path, max: usize) -> io::Result<bool> {
    let file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        other => other?,
    };
    #[repr(C, align(8))]
    struct Buf([u8; 1024]);
    let mut buf = Buf([0; 1024]);
    let mut seen = 0;
    loop {
        // SAFETY: getdents64 writes at most `buf.0.len()` bytes of whole
        // `linux_dirent64` records into our buffer, on a directory fd we own.
        let n = unsafe {
            libc::syscall(libc::SYS_getdents64, std::os::fd::AsRawFd::as_raw_fd(&file), buf.0.as_mut_ptr(), buf.0.len())
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(true);
        }
        let mut at = 0;
        while at + 19 < n as usize {
            // d_ino u64, d_off i64, d_reclen u16, d_type u8, then the name.
            let reclen = u16::from_ne_bytes([buf.0[at + 16], buf.0[at + 17]]) as usize;
            let name = &buf.0[at + 19..at + reclen.max(20)];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." {
                seen += 1;
                if seen > max {
                    return Ok(false);
                }
            }
            if reclen == 0 {
                break;
            }
            at += reclen;
        }
    }
}

/// Check that `dir` is a real directory (not a link), owned by `euid`, not
/// writable by group or others.
pub fn check_private_dir(dir: &Path, euid: u32) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Err(refused(SafeFsError::Symlink));
    }
    if !meta.is_dir() {
        return Err(refused(SafeFsError::NotRegular));
    }
    if meta.uid() != euid {
        return Err(refused(SafeFsError::Owner { owner: meta.uid(), euid }));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refused(SafeFsError::WorldWritable { mode }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_entries_counts_past_dot_entries_and_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        assert!(at_most_entries(dir.path(), 0).unwrap());
        for i in 0..300 {
            fs::write(dir.path().join(format!("record-with-a-long-name-{i:04}.json")), "").unwrap();
        }
        assert!(at_most_entries(dir.path(), 300).unwrap());
        assert!(!at_most_entries(dir.path(), 299).unwrap(), "entries past the first 1 KiB are read too");
        assert!(!at_most_entries(dir.path(), 4).unwrap());
        assert!(at_most_entries(&dir.path().join("missing"), 0).unwrap());
    }

    #[test]
    fn a_symlink_is_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        fs::write(&target, b"secret").unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = read_nofollow(&link).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(read_nofollow(&target).unwrap(), b"secret");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("x.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let err = read_nofollow(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_group_writable_or_linked_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let dir = tmp.path().join("d");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(&dir, euid).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_private_dir(&dir, euid).unwrap_err().to_string().contains("writable by others"));
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(check_private_dir(&link, euid).unwrap_err().to_string().contains("symbolic link"));
        assert!(check_private_dir(&dir, euid + 1).unwrap_err().to_string().contains("owned by uid"));
    }
}
