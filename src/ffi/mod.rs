//! The C boundary (feature `ffi`): the `extern "C"` API kernel C code calls,
//! declared in the generated `include/iommu_flb_api.h`.
//!
//! # How kernel C code calls it
//!
//! The incoming kernel reads in two phases, as [`crate::reader`] does:
//!
//! 1. Validate, with no side effect: `iommu_flb_scratch_size()` walks the
//!    root and the three chains and says how many bytes of scratch
//!    `iommu_flb_validate()` needs; the caller allocates that much
//!    (`kvmalloc`), and `iommu_flb_validate()` checks every rule of the
//!    format and leaves the validated image *in the scratch*: the returned
//!    `const struct iommu_flb_image *` points into it and lives exactly as
//!    long as the scratch (or until the next validation into it). Pages are
//!    reached only through the caller's `struct iommu_flb_mem` callback (in
//!    the kernel: check the page was preserved by KHO for this handover,
//!    then `phys_to_virt`; the addresses come from the untrusted image).
//! 2. Restore: `iommu_flb_restore()` calls the caller's callback on every
//!    page of the image, root page first, each exactly once
//!    (`kho_restore_folio`), and on failure says which page failed and how
//!    many were restored before it (`iommu_flb_next_page()` lists them
//!    again, to unwind).
//!
//! Between and after the two, cursors (`iommu_flb_next_iommu()` ...) walk
//! the live records, `iommu_flb_find_iommu()` / `iommu_flb_find_device()`
//! look them up in `O(log n)`, and `iommu_flb_device_domain()` /
//! `iommu_flb_device_iommu()` resolve a device's references; all of them
//! return pointers to the packed wire structs inside the image's pages.
//!
//! On a refusal, `iommu_flb_validate()` returns a negative errno and fills
//! `struct iommu_flb_error`: what (`kind`), where (`chain`, `page`,
//! `page_phys`, `object`, `field`) and a log line (`message`). The kernel
//! then restores nothing and frees nothing it does not own: the image's
//! pages stay preserved and unowned, exactly as if no handover had happened.
//!
//! The outgoing kernel writes with `iommu_flb_writer_start()`,
//! `iommu_flb_preserve_*()`, `iommu_flb_unpreserve_*()` and
//! `iommu_flb_writer_finish()` / `iommu_flb_writer_abort()` over the
//! caller's page-allocator callbacks, in a `struct iommu_flb_writer` the
//! caller owns (its size is the header constant `IOMMU_FLB_WRITER_WORDS`).
//! Before kexec it can agree with the next kernel on the format to write:
//! `iommu_flb_negotiate()` of `iommu_flb_library_formats()` and the next
//! kernel's descriptor (read from its ELF file), then
//! `iommu_flb_writer_config_negotiated()` and
//! `iommu_flb_writer_start_config()`.
//!
//! # What every function here guarantees
//!
//! - It allocates nothing: all state lives in caller memory (the scratch,
//!   `struct iommu_flb_writer`, the out-parameters).
//! - No panic crosses into C. The crate's lints deny every panicking
//!   construct outside tests; should one happen anyway, unwinding out of an
//!   `extern "C"` function aborts (Rust 1.81 and later, and this crate needs
//!   1.85), and the `capi` staticlib is built with `panic = "abort"`.
//! - Every pointer argument is checked before use: NULL or misaligned is
//!   `-EINVAL`. `ctx` pointers are never dereferenced, only handed back to
//!   the caller's callbacks, and may be NULL.
//! - It holds Rust references to caller memory (image pages, the scratch,
//!   the writer state, the device index) only during the call: every
//!   `CMem`, `CAlloc` borrow, scratch slice and writer claim is a local of
//!   one entry point, and what stays in caller memory between calls holds
//!   raw pointers only. That is what makes writes between calls sound; the
//!   header's "Concurrency and writes" states the whole contract (nothing
//!   writes an image page while a call on the image runs, on any thread).
//! - What C can copy, keep or edit is checked before it is trusted: the
//!   image header and the writer state record their own address and a
//!   generation or state word, cursors record their image and walk, and
//!   handles carry a check value keyed by their writer (SipHash-2-4), verified
//!   before anything at the handle's address is mapped.
//! - `unsafe` (raw pointers from C) exists only in this module; each block
//!   carries a `// SAFETY:` argument resting on the contract its function
//!   documents.
//!
//! The kernel-doc comments on each item are copied into the C header;
//! read them there (`include/iommu_flb_api.h`).

// The contracts are written for C callers, in kernel-doc form (the argument
// lines and the "Context:" section of each function), and cbindgen copies
// them into the header; a rustdoc "# Safety" heading would be noise there.
#![allow(clippy::missing_safety_doc)]

mod crc;
mod error;
mod formats;
mod mac;
mod reader;
mod walk;
mod writer;

pub use error::{
    IOMMU_FLB_MESSAGE_LEN, IOMMU_FLB_NONE, IommuFlbChain, IommuFlbError, IommuFlbErrorKind,
};
pub use formats::{
    IommuFlbNegotiated, iommu_flb_library_formats, iommu_flb_negotiate,
    iommu_flb_writer_config_negotiated,
};
pub use reader::{
    IOMMU_FLB_SCRATCH_ALIGN, IommuFlbImage, IommuFlbMem, IommuFlbMode, iommu_flb_scratch_size,
    iommu_flb_validate,
};
pub use walk::{
    IommuFlbCursor, IommuFlbDeviceRef, IommuFlbDomainRef, IommuFlbImageInfo, IommuFlbIommuRef,
    IommuFlbRestoreStatus, iommu_flb_device_domain, iommu_flb_device_iommu, iommu_flb_find_device,
    iommu_flb_find_iommu, iommu_flb_image_info, iommu_flb_next_device, iommu_flb_next_domain,
    iommu_flb_next_iommu, iommu_flb_next_page, iommu_flb_restore,
};
pub use writer::{
    IOMMU_FLB_WRITER_WORDS, IommuFlbCounts, IommuFlbHandle, IommuFlbPageAlloc, IommuFlbWriter,
    IommuFlbWriterConfig, iommu_flb_preserve_device, iommu_flb_preserve_domain,
    iommu_flb_preserve_iommu, iommu_flb_unpreserve_device, iommu_flb_unpreserve_domain,
    iommu_flb_unpreserve_iommu, iommu_flb_writer_abort, iommu_flb_writer_counts,
    iommu_flb_writer_finish, iommu_flb_writer_index_size, iommu_flb_writer_last_error,
    iommu_flb_writer_start, iommu_flb_writer_start_config, iommu_flb_writer_start_indexed,
};

/// Whether a pointer from C may be dereferenced as a `T` as far as this side
/// can tell: not NULL and aligned for `T`. (That it points to a live `T` is
/// the caller's contract.)
fn usable<T>(p: *const T) -> bool {
    !p.is_null() && p.is_aligned()
}

/// A range of caller memory the library borrows mutably during a call (the
/// scratch, the writer state, the device index): a page callback's answer
/// that overlaps it is refused, so a page can never alias memory the
/// library writes.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    /// `len` bytes at `p`.
    fn of<T>(p: *const T, len: usize) -> Self {
        Span {
            start: p.addr(),
            len,
        }
    }

    /// Whether `len` bytes at `p` share a byte with the span; also when the
    /// range wraps around the address space, which no real memory does.
    fn overlaps<T>(self, p: *const T, len: usize) -> bool {
        let (Some(end), Some(p_end)) =
            (self.start.checked_add(self.len), p.addr().checked_add(len))
        else {
            return true;
        };
        self.len != 0 && len != 0 && p.addr() < end && self.start < p_end
    }
}

#[cfg(test)]
mod tests;
