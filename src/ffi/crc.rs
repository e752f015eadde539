//! The caller's CRC-32 callback (`crc32` of `struct iommu_flb_mem` and
//! `struct iommu_flb_page_alloc`), as the library's [`Crc32`].
//!
//! A [`Crc32`] carries a plain function and one context word, so the
//! callback and its `ctx` live in caller-visible memory the library owns
//! for as long as the [`Crc32`] is used: a local of the API call (the
//! reader), or the `struct iommu_flb_writer` (the writer). The word is that
//! memory's address, with its provenance exposed; the trampoline gets the
//! pointer back with `with_exposed_provenance`.

use core::ffi::c_void;
use core::ptr;

use crate::crc::Crc32;

/// The C callback: continues the zlib-convention CRC `crc` over `len`
/// bytes at `buf`.
pub(super) type CrcFn =
    unsafe extern "C" fn(ctx: *mut c_void, crc: u32, buf: *const c_void, len: usize) -> u32;

/// A callback and the `ctx` it is called with. Valid for any bit pattern
/// whose `f` is NULL or a function pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct CrcCall {
    /// The callback; `None` for the library's own (`crc32fast`).
    pub(super) f: Option<CrcFn>,
    /// Passed to `f` unchanged.
    pub(super) ctx: *mut c_void,
}

impl CrcCall {
    /// No callback: the library's own CRC.
    pub(super) const NONE: CrcCall = CrcCall {
        f: None,
        ctx: ptr::null_mut(),
    };

    /// The [`Crc32`] that calls the callback stored at `at` (the library's
    /// own if it has none), reading it afresh at each call.
    ///
    /// # Safety
    ///
    /// Whenever the returned [`Crc32`] is used, `at` must point to a
    /// readable `CrcCall` that is not written meanwhile and whose `f` is
    /// NULL or a callback with the contract of the header's `crc32`
    /// members, and `at`'s provenance must still be valid (the caller
    /// re-exposes it in each call that may use the [`Crc32`]).
    pub(super) unsafe fn crc32(at: *const CrcCall) -> Crc32 {
        // SAFETY: forwarded from this function's contract: `at` points to
        // a readable `CrcCall` now.
        let f = unsafe { ptr::addr_of!((*at).f).read() };
        match f {
            None => Crc32::FAST,
            Some(_) => Crc32::with_context(trampoline, at.expose_provenance()),
        }
    }
}

/// Calls the callback stored at address `at`.
///
/// Only ever paired with an address by [`CrcCall::crc32`] (this module
/// does not export it), so `at` is one whose caller promised a readable,
/// unchanged `CrcCall` behind it for as long as the [`Crc32`] is used.
fn trampoline(at: usize, crc: u32, bytes: &[u8]) -> u32 {
    let call = ptr::with_exposed_provenance::<CrcCall>(at);
    // SAFETY: by the contract of `CrcCall::crc32`, the only maker of a
    // `Crc32` with this function, `at` is the exposed address of a readable
    // `CrcCall` that nobody writes while the `Crc32` is used, which is now.
    // It is read by value: no reference to caller memory is made.
    let c = unsafe { call.read() };
    match c.f {
        None => Crc32::FAST.update(crc, bytes),
        // SAFETY: the caller's non-NULL callback, with the contract of
        // the header's `crc32` members: called with its `ctx` and `len`
        // readable bytes at `buf` (a live slice), which it only reads.
        Some(f) => unsafe { f(c.ctx, crc, bytes.as_ptr().cast(), bytes.len()) },
    }
}
