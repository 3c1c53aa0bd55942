//! A global allocator that survives hostile array lengths in Kafka requests.
//!
//! `kafka-protocol` 0.18 decodes an array by first reserving `Vec::with_capacity(n)`,
//! with `n` read off the wire. A 28-byte request claiming 2^31 topics asks for about
//! 240 GB; the system allocator refuses, and Rust aborts the whole process on a failed
//! allocation (there is no stable way to turn that into an error). Bounding the frame
//! size does not help: the count is a number, not bytes.
//!
//! [`LazyHugeAlloc`] forwards every allocation to the system allocator, except those of
//! [`HUGE`] bytes or more, which get an anonymous private mapping with
//! `MAP_NORESERVE`: the kernel reserves address space only and commits a page when it
//! is first touched. The decoder then fails at the end of the (bounded) frame having
//! touched a few pages, the error closes that one connection, and the mapping is
//! released. Legitimate allocations never come near [`HUGE`], since requests are
//! bounded by `max_request_bytes`.
//!
//! Limits: under `vm.overcommit_memory=2` (strict accounting) the kernel still refuses
//! such a mapping and the process aborts as before; and a virtual-memory limit
//! (`ulimit -v`) below a few TiB does the same. The proper fix is a bounded reservation
//! in the decoder upstream.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations of at least this many bytes (4 GiB) are lazily committed mappings.
pub const HUGE: usize = 1 << 32;

/// Mappings are page aligned; larger alignments go to the system allocator.
const PAGE: usize = 4096;

/// The system allocator, with lazily committed mappings for huge allocations. Install it
/// in a binary that serves Kafka clients:
///
/// ```text
/// #[global_allocator]
/// static ALLOC: wharf_kafka::LazyHugeAlloc = wharf_kafka::LazyHugeAlloc;
/// ```
pub struct LazyHugeAlloc;

fn is_huge(layout: Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= PAGE
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // touches no existing memory; a failure is reported as MAP_FAILED, turned into null
    // (the allocator's way of saying "no memory").
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block comes either from `System` (and is returned to it) or from `map`
// (and is returned to `munmap` with the same size): `is_huge` depends only on the
// layout, which the caller passes unchanged to `dealloc`. Mappings are page aligned,
// which satisfies every alignment `is_huge` admits, and are zero-filled.
unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout) {
            // SAFETY: `ptr` came from `map(layout.size())` (see the impl's proof). An
            // munmap failure could only mean a bad argument; nothing to do about it.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        if !is_huge(layout) && !is_huge(new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_layout` has a non-zero size (at least one of the two is huge or
        // the other is an existing block being resized up to huge).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap
            // (`new` is a fresh allocation); `ptr` is then released with its layout.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
