//! The splice pump of a relayed TCP connection: both directions, each
//! through its own pipe, with half-closes and resets passed on.
//!
//! A pipe that will not take more is "full" while it still holds data (its
//! slots may fill before its byte capacity), so reading the source waits
//! until the pipe drains: that is the backpressure, and it costs no
//! `epoll_ctl` calls. Pipes come from [`Pipes`], one per direction while it
//! carries data.
//!
//! What a socket received before a reset is still passed on, as a kernel
//! would let a direct peer read it before the error: a read that meets the
//! reset ends that direction like an EOF would, and a write that meets it
//! ends the direction towards the failed socket while what that socket
//! received is still read and passed back. Then the connection is reset
//! instead of half-closed. A failed connection goes on only while it moves
//! data without waiting (what the other side's buffers take at once), so a
//! dead peer never holds a connection open.

use super::pipes::{Pipe, Pipes};
use super::sys;
use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// One direction of a connection.
#[derive(Debug, Default)]
struct Direction {
    /// The pipe, from the first read until the direction ends.
    pipe: Option<Pipe>,
    /// Bytes in the pipe.
    queued: usize,
    /// The source sent EOF.
    eof: bool,
    /// EOF was passed on (`shutdown(SHUT_WR)` of the destination).
    shut: bool,
    /// The source ended with this error instead of EOF: once the pipe is
    /// delivered, the connection is reset.
    failed: Option<Errno>,
}

/// Which side of a connection is ready for what (edge-triggered state).
#[derive(Debug, Default, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
}

impl Ready {
    fn note(&mut self, flags: EpollFlags) {
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
        {
            self.readable = true;
        }
        if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.writable = true;
        }
    }
}

/// Result of pumping a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Still relaying.
    Open,
    /// Both directions ended cleanly.
    Done,
}

/// The data flow of a relayed connection: readiness of both sockets and
/// both directions.
#[derive(Debug, Default)]
pub(super) struct Flow {
    client_ready: Ready,
    server_ready: Ready,
    /// Client to namespace.
    up: Direction,
    /// Namespace to client.
    down: Direction,
}

impl Flow {
    /// Notes what an event on the client socket reports.
    pub(super) fn note_client(&mut self, flags: EpollFlags) {
        self.client_ready.note(flags);
    }

    /// Notes what an event on the server socket reports.
    pub(super) fn note_server(&mut self, flags: EpollFlags) {
        self.server_ready.note(flags);
    }

    /// Whether the server socket was reported writable (while connecting:
    /// the connect finished, one way or the other).
    pub(super) fn server_writable(&self) -> bool {
        self.server_ready.writable
    }

    /// A new server socket (another connect attempt): nothing known yet.
    pub(super) fn new_server(&mut self) {
        self.server_ready = Ready::default();
    }

    /// The connect finished: the server socket takes data.
    pub(super) fn server_connected(&mut self) {
        self.server_ready.writable = true;
    }

    /// Returns the pipes of both directions to `pipes`.
    pub(super) fn close_pipes(&mut self, pipes: &mut Pipes) {
        for dir in [&mut self.up, &mut self.down] {
            if let Some(pipe) = dir.pipe.take() {
                pipes.close(pipe);
            }
        }
    }

    /// Moves data both ways until no step makes progress. An error means
    /// "reset the connection".
    pub(super) fn pump(
        &mut self,
        client: BorrowedFd<'_>,
        server: BorrowedFd<'_>,
        pipes: &mut Pipes,
        to_container: &AtomicU64,
        from_container: &AtomicU64,
    ) -> Result<Pumped, Errno> {
        loop {
            let (up, down) = (&mut self.up, &mut self.down);
            let (client_ready, server_ready) = (&mut self.client_ready, &mut self.server_ready);
            let moved_up =
                step(up, down, pipes, (client, &mut *client_ready), (server, &mut *server_ready), to_container)?;
            let moved_down = step(down, up, pipes, (server, server_ready), (client, client_ready), from_container)?;
            if !moved_up && !moved_down {
                break;
            }
        }
        Ok(if self.up.shut && self.down.shut { Pumped::Done } else { Pumped::Open })
    }
}

/// Why a direction cannot go on.
#[derive(Debug, Clone, Copy)]
enum Broken {
    /// Writing to (or shutting) its destination failed: that socket is gone,
    /// but what it received before failing may still go the other way.
    Destination(Errno),
    /// Reset the connection now.
    Connection(Errno),
}

/// Moves what it can from `src` through the pipe (made on the first read)
/// to `dst`; true when anything changed.
///
/// A source that fails is read to the end first: what it received before
/// its reset still goes on. A failed direction goes on only while it moves
/// data without waiting (what the destination takes at once); when it is
/// drained, or would have to wait, the connection is reset, so a dead peer
/// never holds a connection open.
fn pump_direction(
    dir: &mut Direction,
    pipes: &mut Pipes,
    (src, src_readable): (BorrowedFd<'_>, &mut bool),
    (dst, dst_writable): (BorrowedFd<'_>, &mut bool),
    delivered: &AtomicU64,
) -> Result<bool, Broken> {
    if dir.shut {
        return Ok(false);
    }
    if dir.pipe.is_none() && !dir.eof && *src_readable {
        let pipe = pipes.open().inspect_err(|e| log::warn!("relay pipe: {e}")).map_err(Broken::Connection)?;
        dir.pipe = Some(pipe);
    }
    let Some(Pipe { read: pipe_r, write: pipe_w, cap, .. }) = dir.pipe.as_ref() else {
        return dir.failed.map_or(Ok(false), |e| Err(Broken::Connection(e)));
    };
    let mut progress = false;
    if !dir.eof && *src_readable && dir.queued < *cap {
        match sys::splice(src, pipe_w.as_fd(), *cap) {
            Ok(0) => {
                dir.eof = true;
                // A reset after a FIN (or after the data was read) ends the
                // read with EOF: it must still reach the other side.
                if dir.failed.is_none() {
                    dir.failed = sys::socket_error(src).err();
                }
                progress = true;
            }
            Ok(n) => {
                dir.queued += n;
                progress = true;
            }
            // With data queued this may only mean "pipe full": keep the
            // source readable and retry once the pipe drains.
            Err(Errno::EAGAIN) if dir.queued == 0 => *src_readable = false,
            Err(Errno::EAGAIN) => {}
            Err(e) => {
                dir.eof = true;
                dir.failed = Some(e);
                progress = true;
            }
        }
    }
    if dir.queued > 0 && *dst_writable {
        match sys::splice(pipe_r.as_fd(), dst, dir.queued) {
            Ok(n) => {
                dir.queued -= n;
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                progress = progress || n > 0;
            }
            Err(Errno::EAGAIN) => *dst_writable = false,
            Err(e) => return Err(Broken::Destination(e)),
        }
    }
    if let Some(e) = dir.failed {
        let drained = dir.eof && dir.queued == 0;
        let would_wait = (dir.queued > 0 && !*dst_writable) || (!dir.eof && !*src_readable);
        if drained || would_wait {
            return Err(Broken::Connection(e));
        }
    } else if dir.eof && dir.queued == 0 {
        sys::shutdown_write(dst).map_err(Broken::Destination)?;
        dir.shut = true;
        progress = true;
        if let Some(pipe) = dir.pipe.take() {
            pipes.close(pipe);
        }
    }
    Ok(progress)
}

/// One pass of [`pump_direction`] over `dir`; a failed destination ends
/// `dir` and sends what the failed socket received back through `reverse`.
fn step(
    dir: &mut Direction,
    reverse: &mut Direction,
    pipes: &mut Pipes,
    (src, src_ready): (BorrowedFd<'_>, &mut Ready),
    (dst, dst_ready): (BorrowedFd<'_>, &mut Ready),
    delivered: &AtomicU64,
) -> Result<bool, Errno> {
    match pump_direction(dir, pipes, (src, &mut src_ready.readable), (dst, &mut dst_ready.writable), delivered) {
        Ok(progress) => Ok(progress),
        Err(Broken::Connection(e)) => Err(e),
        Err(Broken::Destination(e)) => {
            destination_failed(dir, reverse, &mut dst_ready.readable, pipes, e)?;
            Ok(true)
        }
    }
}

/// `dir`'s destination failed with `e`: nothing more goes that way, and
/// what the failed socket received before it failed goes the other way
/// (`reverse`, whose source it is, now `reverse_readable`: a failed socket
/// never blocks a read), then the connection is reset.
fn destination_failed(
    dir: &mut Direction,
    reverse: &mut Direction,
    reverse_readable: &mut bool,
    pipes: &mut Pipes,
    e: Errno,
) -> Result<(), Errno> {
    if let Some(pipe) = dir.pipe.take() {
        pipes.close(pipe);
    }
    (dir.queued, dir.eof, dir.shut) = (0, true, true);
    if reverse.shut {
        return Err(e);
    }
    reverse.failed.get_or_insert(e);
    *reverse_readable = true;
    Ok(())
}
