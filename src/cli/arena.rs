//! [`Arena`]: the global allocator of a process that lives for one short
//! command (the CNI plugin: one `ADD`, `DEL`, `CHECK`, `GC` or `STATUS`,
//! then exit).
//!
//! # Why
//!
//! The plugin is built statically against musl (README.md), whose
//! allocator hands large blocks back to the kernel as soon as they are
//! freed: an `ADD` spent ~18% of its time in `mmap`, `munmap` and the page
//! faults of memory it had just given back. A process that exits within
//! milliseconds has no use for freed memory. So allocations are carved, in
//! order, out of one static block (`.bss`: its pages cost nothing until
//! touched); a free gives memory back only when it is the latest
//! allocation (a vector growing at the end of the block grows in place).
//! Past the block, allocations go to the system allocator, so a long
//! command (a `GC` of many attachments) still runs, at the usual cost.
//!
//! # Not for
//!
//! A process that runs for long or allocates without bound (the CLI's
//! `run`, which lives as long as its command): nothing freed in the block
//! is ever reused.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The block (its start cache-line aligned; each allocation's alignment
/// comes from rounding its address up).
#[repr(C, align(64))]
struct Block<const N: usize>(UnsafeCell<[u8; N]>);

/// A bump allocator over an `N`-byte static block, falling back to
/// [`System`]. Use it as a `#[global_allocator]` static only.
pub struct Arena<const N: usize> {
    block: Block<N>,
    /// Offset of the first free byte in the block.
    next: AtomicUsize,
}

// SAFETY: the block's bytes are handed out in disjoint ranges reserved by
// compare-and-swap on `next`; no byte is reachable from two live
// allocations, so sharing the arena between threads is sound.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// An empty arena (all zeroes: a static one lives in `.bss`).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self { block: Block(UnsafeCell::new([0; N])), next: AtomicUsize::new(0) }
    }

    fn base(&self) -> usize {
        self.block.0.get() as usize
    }

    /// The offset of `ptr` in the block, if it is in it.
    fn offset(&self, ptr: *mut u8) -> Option<usize> {
        (ptr as usize).checked_sub(self.base()).filter(|&off| off < N)
    }

    /// Reserves `layout` in the block; `None` when it does not fit.
    fn reserve(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        // Acquire pairs with the Release of a `dealloc` that gave bytes
        // back: what its thread wrote there happens before our use.
        let mut cur = self.next.load(Ordering::Acquire);
        loop {
            let start = (base + cur).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size()).filter(|&end| end <= N)?;
            match self.next.compare_exchange_weak(cur, end, Ordering::Acquire, Ordering::Acquire) {
                // The block's pointer with its provenance, moved to `start`.
                Ok(_) => return Some(self.block.0.get().cast::<u8>().wrapping_add(start)),
                Err(now) => cur = now,
            }
        }
    }
}

// SAFETY: `alloc` returns either a range of the block no other live
// allocation overlaps (reserved atomically, aligned as asked, within the
// block) or what `System` returned; every other method tells the two apart
// by address and treats system memory only with `System`.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.reserve(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract (a non-zero size) is passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.offset(ptr) {
            // The latest allocation gives its bytes back; any other is
            // left until exit.
            Some(off) => {
                let _ = self.next.compare_exchange(off + layout.size(), off, Ordering::Release, Ordering::Relaxed);
            }
            // SAFETY: not in the block, so `System` allocated it with `layout`.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(off) = self.offset(ptr) else {
            // SAFETY: not in the block, so `System` allocated it with `layout`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // The latest allocation grows or shrinks where it is.
        let end = off + layout.size();
        if off.checked_add(new_size).is_some_and(|new_end| new_end <= N)
            && self.next.compare_exchange(end, off + new_size, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            return ptr;
        }
        if new_size <= layout.size() {
            // Shrunk where it is; the tail stays unused until exit.
            return ptr;
        }
        // SAFETY: `layout.align()` is a valid alignment and the caller
        // promises `new_size`, rounded up to it, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a non-zero size (the caller's contract for `realloc`).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both ranges are live allocations of at least the
            // copied length, and distinct (the new one was just reserved).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_in_the_block_until_it_is_full() {
        static A: Arena<4096> = Arena::new();
        let base = A.base();
        // SAFETY: non-zero sizes; each pointer is freed with its layout.
        unsafe {
            let a = A.alloc(layout(3, 1));
            let b = A.alloc(layout(16, 16));
            assert_eq!(a as usize, base);
            assert_eq!(b as usize % 16, 0);
            assert!(b as usize >= a as usize + 3);
            let c = A.alloc(layout(8000, 8));
            assert!(A.offset(c).is_none(), "too big for the block: the system allocator's");
            c.write_bytes(7, 8000);
            A.dealloc(c, layout(8000, 8));
            A.dealloc(b, layout(16, 16));
            A.dealloc(a, layout(3, 1));
        }
    }

    #[test]
    fn the_latest_allocation_is_given_back_and_grows_in_place() {
        static A: Arena<4096> = Arena::new();
        // SAFETY: non-zero sizes; pointers are used within their sizes and
        // freed with their layouts.
        unsafe {
            let keep = A.alloc(layout(8, 8));
            let a = A.alloc(layout(100, 8));
            A.dealloc(a, layout(100, 8));
            let b = A.alloc(layout(200, 8));
            assert_eq!(a, b, "the freed latest allocation's bytes are reused");
            b.write_bytes(1, 200);
            let grown = A.realloc(b, layout(200, 8), 1000);
            assert_eq!(grown, b, "the latest allocation grows in place");
            assert_eq!(*grown.add(199), 1);
            // Not the latest any more: moved, contents kept.
            let other = A.alloc(layout(8, 8));
            let moved = A.realloc(keep, layout(8, 8), 64);
            assert_ne!(moved, keep);
            assert!(A.offset(moved).is_some());
            // Beyond the block: moved to the system allocator, contents kept.
            moved.write_bytes(9, 64);
            let big = A.realloc(moved, layout(64, 8), 10_000);
            assert!(A.offset(big).is_none());
            assert_eq!(*big.add(63), 9);
            A.dealloc(big, layout(10_000, 8));
            A.dealloc(other, layout(8, 8));
            A.dealloc(grown, layout(1000, 8));
        }
    }

    #[test]
    fn threads_allocating_at_once_never_share_a_byte() {
        static A: Arena<{ 1 << 16 }> = Arena::new();
        let ranges: Vec<(usize, usize)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    s.spawn(move || {
                        (0..200)
                            .map(|i| {
                                let size = 1 + (i * 7 + t) % 50;
                                // SAFETY: a non-zero size; the memory is written
                                // within its size and left allocated.
                                let p = unsafe { A.alloc(layout(size, 8)) };
                                // SAFETY: `p` holds `size` bytes.
                                unsafe { p.write_bytes(t as u8, size) };
                                (p as usize, size)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        let mut sorted = ranges.clone();
        sorted.sort();
        for pair in sorted.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "overlap: {pair:?}");
        }
        assert_eq!(sorted.len(), 800);
    }
}
