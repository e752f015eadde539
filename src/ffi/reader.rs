//! The incoming kernel's first phase: validate an image into caller scratch
//! (the image's state lives there, so C holds it without the library
//! allocating).

use core::ffi::{CStr, c_int, c_void};
use core::mem::{align_of, size_of};
use core::ptr;

use super::error::{Fail, IommuFlbError, errno, report};
use super::usable;
use crate::abi::PageSize;
use crate::error::ErrorKind;
use crate::reader::{self, Frozen, Image, Mode, Options, ScratchElem};
use crate::{Memory, PhysAddr};

/// struct iommu_flb_mem - How the library reads the image's pages.
///
/// The library never dereferences a physical address itself: it asks
/// @page for one whole page at a time, and only for pages it has proven it
/// needs. It is copied into the image by iommu_flb_validate(), so it must
/// stay usable (and @ctx valid) for as long as the image is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbMem {
    /// @page: Returns the @page_size-byte page at physical address
    /// @phys (always page-aligned), or NULL if it may not be read. In the
    /// kernel: NULL unless KHO preserved the page, else phys_to_virt(). A
    /// returned page must stay mapped from iommu_flb_validate() until the
    /// image is no longer used, and must not change during a library call
    /// (the callback must not write to image pages). Between calls the
    /// caller may write the fields the next kernel sets after adopting an
    /// object (IOMMU_SER_FLAG_INCOMING, restored, restored_domain). Must not
    /// be NULL.
    pub page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *const u8>,
    /// @ctx: Passed to @page unchanged; may be NULL.
    pub ctx: *mut c_void,
    /// @page_size: The size of the pages @page returns, in bytes: the
    /// kernel's PAGE_SIZE (4096, 16384 or 65536), the page size of the
    /// kernel that wrote the image.
    pub page_size: usize,
}

/// The caller's page callback, checked non-NULL, and its page size.
#[derive(Clone, Copy)]
pub(super) struct CMem {
    page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *const u8,
    ctx: *mut c_void,
    page_size: PageSize,
}

impl CMem {
    fn new(m: IommuFlbMem) -> Result<Self, Fail> {
        Ok(CMem {
            page: m.page.ok_or(Fail::Invalid(c"mem->page"))?,
            ctx: m.ctx,
            page_size: u64::try_from(m.page_size)
                .ok()
                .and_then(PageSize::from_bytes)
                .ok_or(Fail::Invalid(c"mem->page_size"))?,
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
        if p.is_null() {
            return None;
        }
        // SAFETY: by the `struct iommu_flb_mem` contract, a non-NULL return
        // points to `page_size` readable bytes (`size` is that page size,
        // checked above) that stay mapped while the image is used and do not
        // change during a library call. This borrow of `self` lasts at most
        // one API call (the `CMem` is a local of each entry point), so the
        // bytes neither move nor change while it lives. `u8` has alignment 1
        // and every byte pattern is a valid value; `size.bytes()` is at most
        // 64 KiB, far below `isize::MAX`.
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

/// struct iommu_flb_image - A validated image (opaque).
///
/// Only iommu_flb_validate() makes one, inside the caller's scratch; it is
/// valid until the scratch is freed or reused. Nothing is allocated, so
/// there is nothing to free besides the scratch. The image is only read:
/// several threads may walk it at once if its page callback allows that.
pub struct IommuFlbImage {
    _opaque: [u8; 0],
}

/// What the scratch starts with: the image's state between calls. Every
/// field is valid for any bit pattern except through `magic`, which is
/// checked before anything else is trusted.
#[repr(C)]
struct ImageState {
    magic: u64,
    mem: IommuFlbMem,
    frozen: Frozen,
    /// Scratch elements after the header.
    elems: usize,
}

/// "iflbimg1": marks scratch that holds a validated image.
const IMAGE_MAGIC: u64 = 0x6966_6c62_696d_6731;

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
        let m = CMem::new(unsafe { read_arg(mem, c"mem") }?)?;
        let size = out(size, c"size")?;
        let opts = Options {
            page_size: m.page_size,
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
    unsafe { report(err, run()) }
}

/// iommu_flb_validate() - Validate a handover image (phase one).
/// @mem: How to read pages; copied into the image.
/// @root: Physical address of the root struct iommu_flb_ser.
/// @mode: An enum iommu_flb_mode value; the incoming kernel passes
///        IOMMU_FLB_MODE_HANDOVER.
/// @scratch: Caller memory of @scratch_size bytes, aligned to
///           IOMMU_FLB_SCRATCH_ALIGN; its contents do not matter. On success
///           it holds the image and must stay allocated and untouched for as
///           long as the image is used.
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
/// alone. -EINVAL without touching @err if @err is NULL.
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
        let m = CMem::new(mem)?;
        let opts = Options {
            mode: self::mode(mode)?,
            page_size: m.page_size,
            ..Options::default()
        };
        let state = out(scratch.cast::<ImageState>(), c"scratch")?;
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
            // `ScratchElem`, two `u64`s) before the slice is made.
            unsafe {
                let first = scratch.cast::<u8>().add(HEADER).cast::<ScratchElem>();
                first.write_bytes(0, elems);
                core::slice::from_raw_parts_mut(first, elems)
            }
        };
        let frozen = reader::validate(&m, PhysAddr::new(root), &opts, slice)
            .map_err(|e| read_fail(e, root, scratch_size))?
            .freeze();
        if scratch_size < HEADER {
            // Unreachable: a valid image needs elements, so `elems` was
            // non-zero and the header fits. Refused rather than assumed.
            return Err(Fail::ScratchBytes {
                root,
                needed: HEADER,
                got: scratch_size,
            });
        }
        // SAFETY: `state` is non-NULL and aligned for `ImageState` (checked
        // by `out`; its alignment is at most IOMMU_FLB_SCRATCH_ALIGN) and
        // the first `HEADER >= size_of::<ImageState>()` bytes of the
        // scratch are the caller's writable memory (checked just above),
        // disjoint from the elements `slice` borrowed, whose borrow ended.
        unsafe {
            state.write(ImageState {
                magic: IMAGE_MAGIC,
                mem,
                frozen,
                elems,
            })
        };
        // SAFETY: as for the `write(ptr::null())` above.
        unsafe { image.write(state.cast_const().cast::<IommuFlbImage>()) };
        Ok(())
    };
    // SAFETY: `err` is non-NULL and aligned (checked above) and, by the
    // contract, writable.
    unsafe { report(err, run()) }
}

/// Runs `f` on the image behind `img`.
///
/// # Safety
///
/// `img` must be NULL or a pointer `iommu_flb_validate` stored, whose
/// scratch is still allocated and untouched.
pub(super) unsafe fn with_image<R>(
    img: *const IommuFlbImage,
    f: impl FnOnce(&Image<'_, '_, CMem>) -> Result<R, c_int>,
) -> Result<R, c_int> {
    let state = img.cast::<ImageState>();
    if !usable(state) {
        return Err(errno::EINVAL);
    }
    // SAFETY: `state` is non-NULL and aligned; by the contract it points to
    // the `ImageState` `iommu_flb_validate` wrote at the start of the
    // caller's scratch, still allocated. Every field of `ImageState` is
    // valid for any initialized bit pattern (integers, raw pointers, an
    // optional function pointer), so reading it is sound before `magic` is
    // checked.
    let state = unsafe { &*state };
    if state.magic != IMAGE_MAGIC {
        return Err(errno::EINVAL);
    }
    let mem = CMem::new(state.mem).map_err(|_| errno::EINVAL)?;
    // SAFETY: `iommu_flb_validate` initialized `elems` elements right after
    // the `HEADER` bytes of this scratch (so `add` stays inside it), with
    // their alignment, and the contract keeps the scratch allocated and
    // unmodified while the image is used; nothing writes it during this
    // shared borrow.
    let scratch = unsafe {
        let first = img.cast::<u8>().add(HEADER).cast::<ScratchElem>();
        core::slice::from_raw_parts(first, state.elems)
    };
    let image = Image::thaw(&mem, state.frozen, scratch).ok_or(errno::EFAULT)?;
    f(&image)
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
    f: impl FnOnce(&Image<'_, '_, CMem>) -> Result<(T, c_int), c_int>,
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
