//! The incoming kernel's first phase: validate an image into caller scratch
//! (the image's state lives there, so C holds it without the library
//! allocating).

use core::ffi::{CStr, c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr;

use super::crc::CrcCall;
use super::error::{Fail, IommuFlbError, errno, report};
use super::{Span, usable};
use crate::abi::PageSize;
use crate::error::ErrorKind;
use crate::reader::{self, Frozen, Image, Mode, Options, ScratchElem};
use crate::{Memory, PhysAddr};

/// struct iommu_flb_mem - How the library reads the image's pages.
///
/// The library never dereferences a physical address itself: it asks
/// @page for one whole page at a time. It is copied into the image by
/// iommu_flb_validate(), so it must stay usable (and @ctx valid) for as long
/// as the image is. An initializer that predates @crc32 leaves it NULL,
/// which is the library's own CRC.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbMem {
    /// @page: Returns the @page_size-byte page at physical address @phys, or
    /// NULL.
    /// The addresses come from the image, which is untrusted: the root's
    /// page, then whatever its chain pointers name. So before mapping, the
    /// callback must check that @phys is a page of this handover (in the
    /// kernel: a page KHO preserved for it; in a test or a tool: a page of
    /// the dump) and return NULL for any other address; phys_to_virt() of
    /// an unchecked address reads whatever the address names, and an
    /// address in a hole of the memory map is an oops. @phys is always
    /// page-aligned. A page the callback returned must stay mapped, at the
    /// same address, for as long as the image is used; it must not overlap
    /// the scratch (such a page is refused as unreadable). The library only
    /// reads pages; when others may write them is in "Concurrency and
    /// writes" at the top of this header. Must not be NULL.
    pub page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *const u8>,
    /// @ctx: Passed to @page unchanged; may be NULL.
    pub ctx: *mut c_void,
    /// @page_size: The size of the pages @page returns, in bytes: the
    /// kernel's PAGE_SIZE (4096, 16384 or 65536), the page size of the
    /// kernel that wrote the image.
    pub page_size: usize,
    /// @crc32: Checks version 2's page checksums: continues the CRC-32
    /// (IEEE 802.3, reflected polynomial 0xedb88320) @crc over the @len
    /// bytes at @buf and returns it, in zlib's convention, where @crc is
    /// a finished CRC (0 to start) and so is the result: zlib's
    /// crc32(@crc, @buf, @len). The kernel's crc32_le() neither seeds nor
    /// inverts, so the kernel passes a function that returns
    /// ~crc32_le(~@crc, @buf, @len), its arch-accelerated CRC. Called with
    /// @ctx, only during iommu_flb_scratch_size() and iommu_flb_validate()
    /// calls given this struct, never after them (walks check no CRC);
    /// it must only read @buf, which is inside an image page. NULL: the
    /// library's own (crc32fast). Unused for version-1 images.
    pub crc32: Option<
        unsafe extern "C" fn(ctx: *mut c_void, crc: u32, buf: *const c_void, len: usize) -> u32,
    >,
}

/// The caller's page callback, checked non-NULL, its page size, and the
/// scratch its pages must not overlap.
#[derive(Clone, Copy)]
pub(super) struct CMem {
    page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *const u8,
    ctx: *mut c_void,
    page_size: PageSize,
    scratch: Span,
}

impl CMem {
    fn new(m: IommuFlbMem, scratch: Span) -> Result<Self, Fail> {
        Ok(CMem {
            page: m.page.ok_or(Fail::Invalid(c"mem->page"))?,
            ctx: m.ctx,
            page_size: u64::try_from(m.page_size)
                .ok()
                .and_then(PageSize::from_bytes)
                .ok_or(Fail::Invalid(c"mem->page_size"))?,
            scratch,
        })
    }
}

impl Memory for CMem {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if size != self.page_size || !phys.is_page_aligned(size) {
            return None;
        }
        // SAFETY: `page` is a non-NULL function pointer the caller supplied
        // with the contract of `struct iommu_flb_mem`: callable with its
        // `ctx` and any page-aligned address, returning NULL or a page.
        let p = unsafe { (self.page)(self.ctx, phys.get()) };
        if p.is_null() || self.scratch.overlaps(p, size.bytes()) {
            return None;
        }
        // SAFETY: by the `struct iommu_flb_mem` contract, a non-NULL return
        // points to `page_size` readable bytes (`size` is that page size,
        // checked above) that stay mapped while the image
        // is used, and by the "Concurrency and writes" contract nothing
        // writes them while a library call on the image runs. The reference
        // borrows `self`, and every `CMem` is a local of one API call
        // (`iommu_flb_scratch_size`, `iommu_flb_validate`, `with_image`), so
        // it ends before the call returns: no Rust reference to a page
        // outlives the call, and a write between calls aliases nothing. The
        // page does not overlap the scratch (checked above), the only caller
        // memory the library writes while pages are borrowed.
        // `u8` has alignment 1 and every byte pattern is a valid value;
        // `size.bytes()` is at most 64 KiB, far below `isize::MAX`.
        Some(unsafe { core::slice::from_raw_parts(p, size.bytes()) })
    }
}

/// enum iommu_flb_mode - Which state iommu_flb_validate() expects the image
/// in (its `mode` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum IommuFlbMode {
    /// @IOMMU_FLB_MODE_HANDOVER: Memory just handed over: the fields the
    /// next kernel writes only after restore (IOMMU_SER_FLAG_INCOMING,
    /// restored, restored_domain) must be zero. What the incoming kernel
    /// uses.
    IommuFlbModeHandover = 0,
    /// @IOMMU_FLB_MODE_RESTORED: A dump taken after restore: those fields may
    /// be set.
    IommuFlbModeRestored = 1,
}

fn mode(raw: u32) -> Result<Mode, Fail> {
    match raw {
        0 => Ok(Mode::Handover),
        1 => Ok(Mode::Restored),
        _ => Err(Fail::Invalid(c"mode")),
    }
}

/// DOC: struct iommu_flb_image, a validated image (opaque)
///
/// Only iommu_flb_validate() makes one, at the start of the caller's
/// scratch; it is valid until the scratch is freed or passed to
/// iommu_flb_validate() again. Nothing is allocated, so there is nothing to
/// free besides the scratch. The image is only read: several threads may
/// walk it at once if its page callback allows that and nothing writes its
/// pages meanwhile ("Concurrency and writes" at the top of the header).
///
/// The library refuses what is no longer this image: after a failed
/// iommu_flb_validate() into the same scratch every call on the pointer is
/// -ESTALE; a copy of the image (or of the scratch) at another address is
/// -EINVAL; a cursor started on an earlier image in the same scratch is
/// -ESTALE.
pub struct IommuFlbImage {
    _opaque: [u8; 0],
}

/// What the scratch starts with: the image's state between calls. `magic`
/// is the first word and is written (as [`DEAD_MAGIC`]) before anything
/// else by every `iommu_flb_validate()`; the rest is written, with
/// [`IMAGE_MAGIC`], only when a validation succeeds, so nothing but `magic`
/// is read unless it says the header is whole. Every field is valid for any
/// initialized bit pattern.
#[repr(C)]
struct ImageState {
    magic: u64,
    /// The header's own address: a copy elsewhere is not the image.
    this: usize,
    /// Which validation made the image; cursors record it.
    generation: u64,
    mem: IommuFlbMem,
    frozen: Frozen,
    /// Scratch elements after the header.
    elems: usize,
}

/// "iflbimg1": marks scratch that holds a validated image.
const IMAGE_MAGIC: u64 = 0x6966_6c62_696d_6731;
/// "iflbdead": marks scratch that iommu_flb_validate() was given and that
/// holds no image (the validation failed, or is running).
const DEAD_MAGIC: u64 = 0x6966_6c62_6465_6164;

const _: () = assert!(core::mem::offset_of!(ImageState, magic) == 0);
const _: () = assert!(core::mem::offset_of!(ImageState, this) == size_of::<u64>());

/// A fresh generation for each validated image, so a cursor of an earlier
/// image in the same scratch is told apart. Never 0 (a fresh cursor).
fn next_generation() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Relaxed: only uniqueness matters, which fetch_add gives in any order.
    // 2^64 validations do not happen; the counter cannot wrap to 0.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A validated image, as each call on it sees it.
pub(super) struct View<'m, 's> {
    /// The image.
    pub(super) image: Image<'m, 's, CMem>,
    /// Which validation made it.
    pub(super) generation: u64,
}

/// IOMMU_FLB_SCRATCH_ALIGN - Alignment the scratch given to
/// iommu_flb_validate() must have (kmalloc and kvmalloc give at least this).
pub const IOMMU_FLB_SCRATCH_ALIGN: usize = 8;

/// Bytes of scratch the state takes before the index elements.
const HEADER: usize = size_of::<ImageState>().next_multiple_of(16);
const ELEM: usize = size_of::<ScratchElem>();

// The state and the elements must be placeable at an 8-aligned address, the
// elements right after the header.
const _: () = assert!(align_of::<ImageState>() <= IOMMU_FLB_SCRATCH_ALIGN);
const _: () = assert!(align_of::<ScratchElem>() <= IOMMU_FLB_SCRATCH_ALIGN);
const _: () = assert!(HEADER % align_of::<ScratchElem>() == 0);
const _: () = assert!(ELEM > 0);

/// Reads a by-pointer argument.
///
/// # Safety
///
/// `p` must be NULL or point to a readable, initialized `T`.
pub(super) unsafe fn read_arg<T: Copy>(p: *const T, name: &'static CStr) -> Result<T, Fail> {
    if !usable(p) {
        return Err(Fail::Invalid(name));
    }
    // SAFETY: `p` is non-NULL and aligned (checked above) and, by the
    // caller's contract, points to an initialized `T`; `T: Copy`.
    Ok(unsafe { p.read() })
}

/// Checks an out-parameter.
fn out<T>(p: *mut T, name: &'static CStr) -> Result<*mut T, Fail> {
    if usable(p.cast_const()) {
        Ok(p)
    } else {
        Err(Fail::Invalid(name))
    }
}

/// The reader's error, with a too-small scratch counted in bytes as C
/// counts it.
fn read_fail(e: crate::Error, root: u64, got: usize) -> Fail {
    match e.kind() {
        ErrorKind::ScratchTooSmall { needed, .. } => {
            match needed.checked_mul(ELEM).and_then(|b| b.checked_add(HEADER)) {
                Some(needed) => Fail::ScratchBytes { root, needed, got },
                None => Fail::TooLarge { root },
            }
        }
        _ => Fail::Read(e),
    }
}

/// Runs `f` in a frame of its own: the work of a call whose refusal
/// [`report`] then formats, so that the message's `core::fmt` frames are
/// not stacked on the work's (the kernel's stack is small).
#[inline(never)]
fn apart<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// iommu_flb_scratch_size() - Size the scratch for iommu_flb_validate().
/// @mem: How to read pages.
/// @root: Physical address of the root struct iommu_flb_ser (the FLB's data).
/// @size: Where to store the number of bytes of scratch the image needs.
/// @err: Where to store what went wrong, and where; always written.
///
/// Checks the root and walks the three chains, reading each chain page once
/// and no record, so it fails with the same root and chain errors
/// iommu_flb_validate() would. The size is 16 * (2 * P + 1 + I + D) bytes
/// for P chain pages, I IOMMU slots and D device slots (deleted records
/// included), plus a small fixed header.
///
/// Context: Any context the @mem callback allows. Pointers must be valid
/// for the access their names say; @mem->ctx is only passed back.
///
/// Return: 0 and *@size set, or a negative errno with @err filled (see enum
/// iommu_flb_error_kind); -EINVAL without touching @err if @err is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_scratch_size(
    mem: *const IommuFlbMem,
    root: u64,
    size: *mut usize,
    err: *mut IommuFlbError,
) -> c_int {
    if !usable(err.cast_const()) {
        return errno::EINVAL;
    }
    let run = || -> Result<(), Fail> {
        // SAFETY: `mem` is NULL or points to a `struct iommu_flb_mem`
        // (this function's contract).
        let mem = unsafe { read_arg(mem, c"mem") }?;
        let m = CMem::new(mem, Span::default())?;
        let size = out(size, c"size")?;
        let call = CrcCall {
            f: mem.crc32,
            ctx: mem.ctx,
        };
        let opts = Options {
            page_size: m.page_size,
            // SAFETY: `call` is a local of this call that is never written
            // and outlives `opts`, whose CRC is used only inside this call
            // (`scratch_len` below); its callback is the caller's, with the
            // contract of `struct iommu_flb_mem`.
            crc: unsafe { CrcCall::crc32(&call) },
            ..Options::default()
        };
        let n = reader::scratch_len(&m, PhysAddr::new(root), &opts)
            .map_err(|e| read_fail(e, root, 0))?;
        let bytes = n
            .checked_mul(ELEM)
            .and_then(|b| b.checked_add(HEADER))
            .ok_or(Fail::TooLarge { root })?;
        // SAFETY: `size` is non-NULL and aligned (checked by `out`) and, by
        // the contract, writable.
        unsafe { size.write(bytes) };
        Ok(())
    };
    // SAFETY: `err` is non-NULL and aligned (checked above) and, by the
    // contract, writable.
    unsafe { report(err, apart(run)) }
}

/// iommu_flb_validate() - Validate a handover image (phase one).
/// @mem: How to read pages; copied into the image.
/// @root: Physical address of the root struct iommu_flb_ser.
/// @mode: An enum iommu_flb_mode value; the incoming kernel passes
///        IOMMU_FLB_MODE_HANDOVER.
/// @scratch: Caller memory of @scratch_size bytes, aligned to
///           IOMMU_FLB_SCRATCH_ALIGN; its contents do not matter. The first
///           thing the call does (if @scratch is aligned and @scratch_size
///           at least 8) is mark it as holding no image, so an image an
///           earlier call left in it is gone, success or not. On success it
///           holds the new image and must stay allocated and untouched for as
///           long as the image is used. No other call on an image in
///           @scratch may run meanwhile.
/// @scratch_size: At least what iommu_flb_scratch_size() returned.
/// @image: Where to store the validated image (a pointer into @scratch), or
///         NULL on failure.
/// @err: Where to store what went wrong, and where; always written.
///
/// Checks every rule of the format, in a fixed order, with no side effect on
/// the image: the root (starting its page, readable, version 1, heads
/// non-zero and page-aligned), each chain (pages readable, counts within
/// capacity, every page but the last full, no cycle, limits), no page used
/// twice, then every record (flags, reference counts, types, references
/// between records, padding, duplicates). Nothing is restored. Cost O(n log n) in pages and
/// records.
///
/// Context: Any context the @mem callback allows; does not sleep by itself.
/// Pointers must be valid for the access their names say.
///
/// Return: 0 with *@image set, or a negative errno (see enum
/// iommu_flb_error_kind) with @err saying what is wrong and where; then the
/// kernel must not use the handover: restore nothing and leave the pages
/// alone, and every call on a pointer to an earlier image in @scratch is
/// -ESTALE. -EINVAL without touching @err if @err is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_validate(
    mem: *const IommuFlbMem,
    root: u64,
    mode: u32,
    scratch: *mut c_void,
    scratch_size: usize,
    image: *mut *const IommuFlbImage,
    err: *mut IommuFlbError,
) -> c_int {
    // SAFETY: by the contract, `scratch` is NULL, misaligned, or
    // `scratch_size` bytes of writable caller memory.
    unsafe { invalidate(scratch, scratch_size) };
    if !usable(err.cast_const()) {
        return errno::EINVAL;
    }
    let run = || -> Result<(), Fail> {
        let image = out(image, c"image")?;
        // SAFETY: `image` is non-NULL and aligned (checked by `out`) and, by
        // the contract, writable.
        unsafe { image.write(ptr::null()) };
        // SAFETY: `mem` is NULL or points to a `struct iommu_flb_mem`.
        let mem = unsafe { read_arg(mem, c"mem") }?;
        let state = out(scratch.cast::<ImageState>(), c"scratch")?;
        let m = CMem::new(mem, Span::of(state, scratch_size))?;
        let call = CrcCall {
            f: mem.crc32,
            ctx: mem.ctx,
        };
        let opts = Options {
            mode: self::mode(mode)?,
            page_size: m.page_size,
            // SAFETY: `call` is a local of this call that is never written
            // and outlives `opts`, whose CRC is used only inside this call
            // (`validate` below; the frozen image keeps no CRC); its
            // callback is the caller's, with the contract of `struct
            // iommu_flb_mem`.
            crc: unsafe { CrcCall::crc32(&call) },
            ..Options::default()
        };
        let elems = scratch_size
            .checked_sub(HEADER)
            .and_then(|b| b.checked_div(ELEM))
            .unwrap_or(0);
        let slice: &mut [ScratchElem] = if elems == 0 {
            &mut []
        } else {
            // SAFETY: `scratch` is non-NULL and 8-aligned (checked above) and,
            // by the contract, `scratch_size` bytes of writable caller memory
            // no one else uses during the call; `HEADER + elems * ELEM <=
            // scratch_size`, so the elements are inside it, after the state,
            // and aligned (`HEADER` is a multiple of their alignment).
            // `write_bytes` initializes them (all-zero is a valid
            // `ScratchElem`, two `u64`s) before the slice is made. No page
            // the reader borrows overlaps them (`CMem` refuses such a page).
            // The slice is a local of this call.
            unsafe {
                let first = scratch.cast::<u8>().add(HEADER).cast::<ScratchElem>();
                first.write_bytes(0, elems);
                core::slice::from_raw_parts_mut(first, elems)
            }
        };
        // The state, provisional: `DEAD_MAGIC` (no image) until the end,
        // with the frozen shape that validation writes in place. A scratch
        // too small for it is too small for any image: validation then
        // refuses with the size it needs.
        let mut frozen: Option<&mut Frozen> = None;
        if scratch_size >= HEADER {
            // SAFETY: `state` is non-NULL and aligned for `ImageState`
            // (checked by `out`; its alignment is at most
            // IOMMU_FLB_SCRATCH_ALIGN) and the first `HEADER >=
            // size_of::<ImageState>()` bytes of the scratch are the
            // caller's writable memory (checked just above), disjoint from
            // the elements of `slice`. The reference to its `frozen` field
            // is made after the write initialized it, and is the only one
            // to the state until it is dropped below.
            frozen = Some(unsafe {
                state.write(ImageState {
                    magic: DEAD_MAGIC,
                    this: state.addr(),
                    generation: 0,
                    mem,
                    frozen: Frozen::UNSET,
                    elems,
                });
                &mut (*state).frozen
            });
        }
        reader::validate_into(&m, PhysAddr::new(root), &opts, slice, &mut frozen, ())
            .map_err(|e| read_fail(e, root, scratch_size))?;
        if frozen.take().is_none() {
            // Unreachable: a valid image needs elements, so `elems` was
            // non-zero and the header fits. Refused rather than assumed.
            return Err(Fail::ScratchBytes {
                root,
                needed: HEADER,
                got: scratch_size,
            });
        }
        // SAFETY: the state was written above (the header fits) and no
        // reference into it is left; the image is one only from here on.
        unsafe {
            (*state).generation = next_generation();
            (*state).magic = IMAGE_MAGIC;
        }
        // SAFETY: as for the `write(ptr::null())` above.
        unsafe { image.write(state.cast_const().cast::<IommuFlbImage>()) };
        Ok(())
    };
    // SAFETY: `err` is non-NULL and aligned (checked above) and, by the
    // contract, writable.
    unsafe { report(err, run()) }
}

/// Marks `scratch` as holding no image: the first thing
/// `iommu_flb_validate()` does, so that no earlier image in it survives a
/// validation that fails (or returns early for a bad argument).
///
/// # Safety
///
/// `scratch` must be NULL, misaligned for a `u64`, or valid for writing
/// `size` bytes.
unsafe fn invalidate(scratch: *mut c_void, size: usize) {
    let magic = scratch.cast::<u64>();
    if usable(magic.cast_const()) && size >= size_of::<u64>() {
        // SAFETY: non-NULL, aligned (checked above) and, by the contract,
        // the first 8 of `size >= 8` writable bytes.
        unsafe { magic.write(DEAD_MAGIC) };
    }
}

/// Runs `f` on the image behind `img`.
///
/// Refuses, before reading anything else: a pointer that is not aligned
/// scratch (-EINVAL), scratch whose last validation failed (-ESTALE),
/// scratch that never held an image (-EINVAL), and a copy of an image at
/// another address (-EINVAL).
///
/// # Safety
///
/// `img` must be NULL, misaligned, or point to at least 8 readable,
/// initialized bytes; if those say `IMAGE_MAGIC`, to a whole `ImageState`
/// that `iommu_flb_validate` wrote (at `img`, or elsewhere and copied) whose
/// scratch is still allocated and not written during the call.
pub(super) unsafe fn with_image<R>(
    img: *const IommuFlbImage,
    f: impl FnOnce(&View<'_, '_>) -> Result<R, c_int>,
) -> Result<R, c_int> {
    let state = img.cast::<ImageState>();
    if !usable(state) {
        return Err(errno::EINVAL);
    }
    // SAFETY: `state` is non-NULL and aligned; by the contract its first 8
    // bytes are readable and initialized, and `magic` is the first field
    // (asserted).
    let magic = unsafe { state.cast::<u64>().read() };
    match magic {
        IMAGE_MAGIC => {}
        DEAD_MAGIC => return Err(errno::ESTALE),
        _ => return Err(errno::EINVAL),
    }
    // SAFETY: `IMAGE_MAGIC` is only written together with a whole
    // `ImageState` (by `iommu_flb_validate`), so by the contract `state`
    // points to one, which nothing writes during the call. Every field is
    // valid for any initialized bit pattern (integers, raw pointers, an
    // optional function pointer). The borrow is a local of this call.
    let state = unsafe { &*state };
    if state.this != img.addr() {
        return Err(errno::EINVAL);
    }
    let bytes = state
        .elems
        .checked_mul(ELEM)
        .and_then(|b| b.checked_add(HEADER))
        .ok_or(errno::EINVAL)?;
    let mem = CMem::new(state.mem, Span::of(img, bytes)).map_err(|_| errno::EINVAL)?;
    // SAFETY: the header is at its own address (checked above), so this is
    // the scratch `iommu_flb_validate` initialized: `elems` elements right
    // after its `HEADER` bytes (so `add` stays inside it), with their
    // alignment; the contract keeps it allocated and unwritten while the
    // image is used, and no page `mem` hands out overlaps it. The shared
    // slice is a local of this call: no reference to the scratch outlives
    // it.
    let scratch = unsafe {
        let first = img.cast::<u8>().add(HEADER).cast::<ScratchElem>();
        core::slice::from_raw_parts(first, state.elems)
    };
    let image = Image::thaw(&mem, state.frozen, scratch).ok_or(errno::EFAULT)?;
    f(&View {
        image,
        generation: state.generation,
    })
}

/// Runs `f` on the image and stores its result through `out`: the calling
/// convention of the walk and lookup functions.
///
/// # Safety
///
/// As [`with_image`]; `out` must be NULL or valid for writing one `T`.
pub(super) unsafe fn answer<T>(
    img: *const IommuFlbImage,
    out: *mut T,
    f: impl FnOnce(&View<'_, '_>) -> Result<(T, c_int), c_int>,
) -> c_int {
    if !usable(out.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: forwarded from this function's contract.
    match unsafe { with_image(img, f) } {
        Ok((value, code)) => {
            // SAFETY: `out` is non-NULL and aligned (checked above) and, by
            // the contract, writable.
            unsafe { out.write(value) };
            code
        }
        Err(code) => code,
    }
}
