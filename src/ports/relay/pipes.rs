//! Relay pipes, and the budget that decides how large they may be.
//!
//! The kernel charges every pipe's capacity, in pages, to the user who made
//! it; once that user holds more than `fs.pipe-user-pages-soft` (16384
//! pages, 64 MiB, by default), every new pipe of its unprivileged processes
//! is cut to two pages. A rootless relay shares its user with the container
//! it serves, so two 256 KiB pipes per connection would shrink the
//! container's own pipes after about 128 connections. Hence:
//!
//! - a new pipe is resized to [`ForwarderConfig::pipe_size`](super::ForwarderConfig)
//!   only while the relay's pipes together stay within a budget, a quarter
//!   of the soft limit read when the relay starts (no budget when the limit
//!   is 0, meaning none, or unreadable); beyond it, a pipe keeps the
//!   kernel's default size;
//! - a direction's pipe is made when that direction first has something to
//!   read and closed when it ends, so idle and half-closed connections
//!   hold less.
//!
//! The budget counts what the kernel charges (each pipe's actual capacity,
//! default-sized pipes included), so a busy relay stops enlarging early.
//! Sizes at or below the default always fit: they never charge more.

use super::sys;
use nix::errno::Errno;
use std::os::fd::OwnedFd;

/// Where the kernel publishes the soft limit, in pages.
const SOFT_LIMIT: &str = "/proc/sys/fs/pipe-user-pages-soft";
/// Pages of a pipe as the kernel makes it (`PIPE_DEF_BUFFERS`).
const DEFAULT_PAGES: usize = 16;

/// One relay pipe and the pages it is charged.
#[derive(Debug)]
pub(super) struct Pipe {
    /// Read end.
    pub(super) read: OwnedFd,
    /// Write end.
    pub(super) write: OwnedFd,
    /// Capacity in bytes.
    pub(super) cap: usize,
    /// Pages charged to the budget, released by [`Pipes::close`].
    pages: usize,
}

/// Pages the relay's pipes may hold before new ones keep the default size
/// (pure arithmetic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Budget {
    /// `None`: no budget.
    limit: Option<usize>,
    /// Pages charged now.
    used: usize,
}

impl Budget {
    /// A budget of `limit` pages (`None`: unlimited).
    pub(super) fn new(limit: Option<usize>) -> Self {
        Self { limit, used: 0 }
    }

    /// A quarter of the soft limit given as the text of
    /// `fs.pipe-user-pages-soft`; unlimited when that is 0 or not a number.
    pub(super) fn from_soft_limit(text: Option<&str>) -> Self {
        let soft = text.and_then(|t| t.trim().parse::<usize>().ok()).filter(|&pages| pages > 0);
        Self::new(soft.map(|pages| pages / 4))
    }

    /// Whether a new pipe may be made `pages` large.
    pub(super) fn fits(&self, pages: usize) -> bool {
        pages <= DEFAULT_PAGES || self.limit.is_none_or(|limit| self.used.saturating_add(pages) <= limit)
    }

    /// Counts a pipe of `pages`.
    pub(super) fn charge(&mut self, pages: usize) {
        self.used = self.used.saturating_add(pages);
    }

    /// Forgets a pipe of `pages`.
    pub(super) fn release(&mut self, pages: usize) {
        self.used = self.used.saturating_sub(pages);
    }

    /// Pages charged now.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used
    }
}

/// Pages the kernel gives a pipe asked to hold `bytes`: it rounds up to a
/// power of two pages, at least one.
pub(super) fn pages_for(bytes: usize, page: usize) -> usize {
    bytes.div_ceil(page.max(1)).max(1).next_power_of_two()
}

/// Makes relay pipes within a [`Budget`].
#[derive(Debug)]
pub(super) struct Pipes {
    budget: Budget,
    /// Bytes asked for each pipe while the budget allows.
    size: usize,
    /// What a pipe of `size` is charged.
    wanted_pages: usize,
    page: usize,
}

impl Pipes {
    /// Pipes of `size` bytes within a quarter of the user's soft limit,
    /// read now.
    pub(super) fn new(size: usize) -> Self {
        let soft = std::fs::read_to_string(SOFT_LIMIT).ok();
        let budget = Budget::from_soft_limit(soft.as_deref());
        log::debug!("relay pipes of {size} bytes within {budget:?}");
        let page = sys::page_size();
        Self { budget, size, wanted_pages: pages_for(size, page), page }
    }

    /// A new pipe: `size` bytes while the budget allows, else the kernel's
    /// default size.
    pub(super) fn open(&mut self) -> Result<Pipe, Errno> {
        let ask = self.budget.fits(self.wanted_pages).then_some(self.size);
        let (read, write, cap) = sys::pipe(ask)?;
        let pages = cap.div_ceil(self.page);
        self.budget.charge(pages);
        Ok(Pipe { read, write, cap, pages })
    }

    /// Closes `pipe` and returns its pages to the budget.
    pub(super) fn close(&mut self, pipe: Pipe) {
        self.budget.release(pipe.pages);
    }

    /// Pages the open pipes are charged.
    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.budget.used()
    }
}

#[cfg(test)]
#[path = "pipes_tests.rs"]
mod tests;
