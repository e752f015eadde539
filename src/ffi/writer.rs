//! The outgoing kernel's side: the writer's operations over the caller's
//! page-allocator callbacks, in writer state the caller owns.

use core::ffi::{CStr, c_int, c_void};
use core::mem::{align_of, offset_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use zerocopy::FromBytes;

use super::crc::CrcCall;
use super::error::{Fail, IommuFlbChain, IommuFlbError, errno, report};
use super::mac::Key;
use super::reader::read_arg;
use super::{Span, usable};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IommuArrayHdrSer, IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer,
    IommuHwVendorSer, IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::abi::v2::{IOMMU_FLB_V2_PAGE_HDR_SIZE, IOMMU_FLB_V2_VERSION};
use crate::format::Format;
use crate::format::v1::V1;
use crate::format::v2::V2;
use crate::writer::{
    Config, DeviceHandle, DeviceIndex, DeviceInit, DeviceKey, DevicePayloadInit, DomainHandle,
    DomainInit, IndexSlot, IntelDeviceInit, IntelIommuInit, IommuHandle, IommuPayloadInit, Lookup,
    NoIndex, ObjectKind, PageAlloc, SliceIndex, Smmuv3DeviceInit, Smmuv3IommuInit, WriteError,
    Writer,
};

/// struct iommu_flb_page_alloc - Where the writer's pages come from.
///
/// In the kernel: kho_alloc_preserve() and virt_to_phys() for @alloc_page,
/// phys_to_virt() for @page, kho_unpreserve_free() for @free_page, and
/// ~crc32_le(~crc, buf, len) for @crc32. Copied into the writer by
/// iommu_flb_writer_start(); @ctx must stay valid until
/// iommu_flb_writer_finish() or iommu_flb_writer_abort(). No callback but
/// @crc32 may be NULL (an initializer that predates @crc32 leaves it
/// NULL). The writer checks every page it is given (non-zero, page-aligned,
/// not already in the image, mapped, all zeroes) before using it. Until
/// iommu_flb_writer_finish() or iommu_flb_writer_abort(), the pages are the
/// writer's: nothing else may write them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbPageAlloc {
    /// @alloc_page: Returns the physical address of a zeroed, preserved
    /// page of @page_size bytes, or 0 when none is available.
    pub alloc_page: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
    /// @page: Returns the writable mapping of the page at @phys. The
    /// library only asks for pages @alloc_page returned and @free_page has
    /// not taken back: a handle is checked before anything at its address is
    /// mapped, and every other address it maps it wrote itself into pages
    /// no one else writes. So in the kernel plain phys_to_virt() is enough.
    /// NULL makes the call fail (IOMMU_FLB_ERR_PAGE_UNAVAILABLE, or
    /// IOMMU_FLB_ERR_BAD_PAGE for a page just allocated). The page must not
    /// be accessed by anyone else during a writer call, and must not
    /// overlap the struct iommu_flb_writer or its device index (such a page
    /// is refused).
    pub page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *mut u8>,
    /// @free_page: Takes back a page @alloc_page handed out.
    pub free_page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64)>,
    /// @ctx: Passed to the callbacks unchanged; may be NULL.
    pub ctx: *mut c_void,
    /// @page_size: The size of the pages @alloc_page hands out, in bytes:
    /// the kernel's PAGE_SIZE (4096, 16384 or 65536). Each array page's
    /// capacity follows from it.
    pub page_size: usize,
    /// @crc32: Computes version 2's page checksums: continues the CRC-32
    /// (IEEE 802.3, reflected polynomial 0xedb88320) @crc over the @len
    /// bytes at @buf and returns it, in zlib's convention, where @crc is
    /// a finished CRC (0 to start) and so is the result: zlib's
    /// crc32(@crc, @buf, @len). The kernel's crc32_le() neither seeds nor
    /// inverts, so the kernel passes a function that returns
    /// ~crc32_le(~@crc, @buf, @len), its arch-accelerated CRC; a page's
    /// checksum is then ~crc32_le(crc32_le(~0, page, off), page + off + 4,
    /// page_size - off - 4) for its crc field at offset off. Called with
    /// @ctx, only during calls on the writer this struct started (never
    /// after iommu_flb_writer_finish() or iommu_flb_writer_abort()); it
    /// must only read @buf, which is inside one of the writer's pages, and
    /// must not call the library on that writer (-EBUSY). NULL: the
    /// library's own (crc32fast). Unused by version 1.
    pub crc32: Option<
        unsafe extern "C" fn(ctx: *mut c_void, crc: u32, buf: *const c_void, len: usize) -> u32,
    >,
}

/// The caller's allocator, every callback checked non-NULL, and the caller
/// memory the writer writes besides pages (its state, its index), which no
/// page may overlap.
#[derive(Clone, Copy, Debug)]
struct CAlloc {
    alloc_page: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *mut u8,
    free_page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64),
    ctx: *mut c_void,
    page_size: PageSize,
    not_pages: [Span; 2],
}

impl CAlloc {
    fn new(a: IommuFlbPageAlloc, not_pages: [Span; 2]) -> Result<Self, Fail> {
        Ok(CAlloc {
            alloc_page: a.alloc_page.ok_or(Fail::Invalid(c"alloc->alloc_page"))?,
            page: a.page.ok_or(Fail::Invalid(c"alloc->page"))?,
            free_page: a.free_page.ok_or(Fail::Invalid(c"alloc->free_page"))?,
            ctx: a.ctx,
            page_size: u64::try_from(a.page_size)
                .ok()
                .and_then(PageSize::from_bytes)
                .ok_or(Fail::Invalid(c"alloc->page_size"))?,
            not_pages,
        })
    }
}

impl PageAlloc for CAlloc {
    fn page_size(&self) -> PageSize {
        self.page_size
    }

    fn alloc_page(&mut self) -> Option<PhysAddr> {
        // SAFETY: a non-NULL callback of `struct iommu_flb_page_alloc`,
        // called with its `ctx` as the contract says.
        let phys = unsafe { (self.alloc_page)(self.ctx) };
        (phys != 0).then_some(PhysAddr::new(phys))
    }

    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
        self.pages_mut([phys]).ok().map(|[p]| p)
    }

    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr> {
        for (i, p) in phys.iter().enumerate() {
            if phys.iter().take(i).any(|q| q == p) {
                return Err(*p);
            }
        }
        let size = self.page_size.bytes();
        // SAFETY: as in `alloc_page`. The writer only asks for pages the
        // allocator handed out and did not take back (handles are proven
        // before anything at their address is mapped: `handle`).
        let ptrs = phys.map(|p| unsafe { (self.page)(self.ctx, p.get()) });
        for ((p, &at), i) in ptrs.iter().zip(&phys).zip(0usize..) {
            // Two distinct pages whose mappings overlap would alias.
            let overlaps = ptrs
                .iter()
                .take(i)
                .any(|q| q.addr().abs_diff(p.addr()) < size);
            // Nor may a page overlap the writer state or the index, the
            // other caller memory the writer writes.
            let state = self.not_pages.iter().any(|s| s.overlaps(*p, size));
            if p.is_null() || overlaps || state {
                return Err(at);
            }
        }
        // SAFETY: by the `struct iommu_flb_page_alloc` contract, a non-NULL
        // return is the writable mapping of `page_size` bytes that nothing
        // else accesses during a writer call; the K mappings were checked
        // above to be pairwise disjoint and apart from the writer state and
        // the index, so the K borrows alias nothing, and they are tied to
        // `&mut self`, which lives in the writer state, borrowed only
        // within one call (`claim`): no reference to a page outlives it. `u8` has alignment 1 and
        // every byte pattern is valid; the length is at most 64 KiB, far
        // below `isize::MAX`.
        Ok(ptrs.map(|p| unsafe { core::slice::from_raw_parts_mut(p, size) }))
    }

    fn free_page(&mut self, phys: PhysAddr) {
        // SAFETY: as in `alloc_page`.
        unsafe { (self.free_page)(self.ctx, phys.get()) }
    }
}

/// The device index of a C writer: none, or a [`SliceIndex`] in caller
/// storage, kept as a raw pointer between calls so that no reference to
/// caller memory outlives a call.
#[derive(Debug)]
enum CIndex {
    None(NoIndex),
    Slice {
        slots: *mut IndexSlot,
        n: usize,
        len: usize,
    },
}

/// The index in `n` slots at `slots` holding `len` devices, for one
/// operation.
///
/// # Safety
///
/// `slots` must be the start of `n` initialized slots that only this
/// writer accesses (the contract of `iommu_flb_writer_start_indexed()`),
/// with no other reference to them alive for `'a`.
unsafe fn resume<'a>(slots: *mut IndexSlot, n: usize, len: usize) -> SliceIndex<'a> {
    // SAFETY: forwarded from this function's contract; `IndexSlot` is two
    // `u64`s, valid for the bytes `iommu_flb_writer_start_indexed` zeroed
    // and the index wrote since.
    SliceIndex::resume(unsafe { core::slice::from_raw_parts_mut(slots, n) }, len)
}

impl DeviceIndex for CIndex {
    fn lookup(&self, key: DeviceKey) -> Lookup {
        match *self {
            CIndex::None(x) => x.lookup(key),
            // SAFETY: the storage `iommu_flb_writer_start_indexed` was
            // given, the writer's alone until finish or abort; the slice
            // lives only for this lookup, and no other reference to the
            // storage exists (the writer never keeps one).
            CIndex::Slice { slots, n, len } => unsafe { resume(slots, n, len) }.lookup(key),
        }
    }
    fn insert(&mut self, key: DeviceKey, device: PhysAddr) -> Result<(), WriteError> {
        match self {
            CIndex::None(x) => x.insert(key, device),
            CIndex::Slice { slots, n, len } => {
                // SAFETY: as in `lookup`.
                let mut x = unsafe { resume(*slots, *n, *len) };
                let r = x.insert(key, device);
                *len = x.len();
                r
            }
        }
    }
    fn remove(&mut self, key: DeviceKey) {
        match self {
            CIndex::None(x) => x.remove(key),
            CIndex::Slice { slots, n, len } => {
                // SAFETY: as in `lookup`.
                let mut x = unsafe { resume(*slots, *n, *len) };
                x.remove(key);
                *len = x.len();
            }
        }
    }
}

/// IOMMU_FLB_WRITER_WORDS - Size of struct iommu_flb_writer in 64-bit words.
pub const IOMMU_FLB_WRITER_WORDS: usize = 64;

/// struct iommu_flb_writer - A writer's state (opaque, caller-allocated).
///
/// Declare one (static, on the stack, or in a larger struct), initialized
/// to zero (IOMMU_FLB_WRITER_INIT, memset or kzalloc), and pass it to
/// iommu_flb_writer_start(); the library keeps all its state in it and
/// allocates nothing. A started writer is refused by another start
/// (-EBUSY) until iommu_flb_writer_finish() or iommu_flb_writer_abort(),
/// after which it may be started again. The state records its own address:
/// a copy, or the struct moved elsewhere, is refused by every call
/// (-EINVAL); do not copy it back over the original either (the writer
/// refuses to append after that, but cannot tell every stale field). Calls
/// on one writer must not run concurrently (the caller's lock serializes
/// them); a call made while another runs on the same writer, including
/// from the writer's own callbacks, is refused (-EBUSY).
#[repr(C)]
#[derive(Debug)]
pub struct IommuFlbWriter {
    /// @opaque: Private.
    pub opaque: [u64; IOMMU_FLB_WRITER_WORDS],
}

/// What `struct iommu_flb_writer` holds: plain words the boundary checks
/// before it trusts anything else, the CRC callback, then the typed state.
#[repr(C)]
struct WriterSlot {
    head: Head,
    /// The page allocator's `crc32` and `ctx`, which the writer's CRC
    /// reaches by this field's address (`CrcCall::crc32`): outside `body`,
    /// so reading it never touches what a call's claim borrows. Written by
    /// `iommu_flb_writer_start` before the writer exists, never after.
    crc: CrcCall,
    body: Body,
}

/// The words every call reads first, through raw pointers (never through a
/// reference covering the typed state): valid for any bit pattern.
#[repr(C)]
struct Head {
    /// [`WRITER_MAGIC`] once `iommu_flb_writer_start` ran.
    magic: u64,
    /// [`LIVE`], [`BUSY`] or [`ENDED`]; changed atomically, so a call that
    /// overlaps another is refused.
    state: u64,
    /// The address of the `struct iommu_flb_writer` this lives in.
    this: u64,
}

/// The typed state, only borrowed (by [`claim`]) once the [`Head`] proved
/// it whole and at home.
struct Body {
    /// The secret handles are checked with.
    key: Key,
    /// The most recent call's failure, for `iommu_flb_writer_last_error`.
    last_error: Option<WriteError>,
    /// `None` once finished or aborted, or if `start` failed.
    writer: Option<Writer<CAlloc, CIndex>>,
}

/// "iflbwrt2": marks a writer `iommu_flb_writer_start` initialized.
const WRITER_MAGIC: u64 = 0x6966_6c62_7772_7432;
/// Started, no call running.
const LIVE: u64 = 1;
/// A call is running.
const BUSY: u64 = 2;
/// Finished, aborted, or its start failed: only its last error is left.
const ENDED: u64 = 3;

const _: () = assert!(size_of::<WriterSlot>() <= size_of::<IommuFlbWriter>());
const _: () = assert!(align_of::<WriterSlot>() <= align_of::<IommuFlbWriter>());
const _: () = assert!(offset_of!(WriterSlot, head) == 0);
const _: () = assert!(offset_of!(WriterSlot, crc) % align_of::<CrcCall>() == 0);
const _: () = assert!(align_of::<AtomicU64>() <= align_of::<IommuFlbWriter>());
const _: () = assert!(offset_of!(Head, state) % align_of::<AtomicU64>() == 0);
const _: () = assert!(align_of::<IndexSlot>() <= 8 && size_of::<IndexSlot>() > 0);

/// A writer's address as its `Head` records it.
fn address(w: *const IommuFlbWriter) -> u64 {
    u64::try_from(w.addr()).unwrap_or(u64::MAX)
}

/// The state word of the writer at `w`.
///
/// # Safety
///
/// `w` must be non-NULL, aligned, and point to a `struct iommu_flb_writer`
/// that outlives `'a`.
unsafe fn state<'a>(w: *mut IommuFlbWriter) -> &'a AtomicU64 {
    let slot = w.cast::<WriterSlot>();
    // SAFETY: `w` points to a live `struct iommu_flb_writer` (the
    // contract), which holds a `WriterSlot` (asserted), so the projection
    // stays inside it; `state` is a `u64` aligned for `AtomicU64`
    // (asserted) that is accessed atomically while calls can overlap, and
    // non-atomically only by `iommu_flb_writer_start`, which must not
    // overlap other calls on the writer.
    unsafe { AtomicU64::from_ptr(ptr::addr_of_mut!((*slot).head.state)) }
}

/// A writer borrowed for one call: its typed state, and the state word to
/// put back when the call ends.
struct Claim<'a> {
    state: &'a AtomicU64,
    body: &'a mut Body,
}

impl Claim<'_> {
    /// Ends the call; the writer is `LIVE` again, or `ENDED` if the call
    /// finished or aborted it.
    fn release(self) {
        let now = if self.body.writer.is_some() {
            LIVE
        } else {
            ENDED
        };
        self.state.store(now, Ordering::Release);
    }
}

/// Borrows the writer at `w` for one call, if it is one `iommu_flb_writer_start`
/// initialized at this very address, in one of the states `allowed`, and
/// no other call on it is running. Reads nothing but its `Head` until it
/// has proven all three.
///
/// # Safety
///
/// `w` must be NULL, misaligned, or point to a readable and writable
/// `struct iommu_flb_writer` that is zero, or was initialized by
/// `iommu_flb_writer_start` (here, or elsewhere and copied here), and that
/// outlives `'a`.
unsafe fn claim<'a>(w: *mut IommuFlbWriter, allowed: &[u64]) -> Result<Claim<'a>, c_int> {
    if !usable(w.cast_const()) {
        return Err(errno::EINVAL);
    }
    let slot = w.cast::<WriterSlot>();
    // SAFETY: `w` is non-NULL and aligned (checked above) and points to a
    // `struct iommu_flb_writer` (the contract), which holds a `Head` at its
    // start (asserted); the `u64` words are valid for any bit pattern and
    // read through raw pointers, so no reference covers the typed state.
    let (magic, this) = unsafe {
        (
            ptr::addr_of!((*slot).head.magic).read(),
            ptr::addr_of!((*slot).head.this).read(),
        )
    };
    if magic != WRITER_MAGIC || this != address(w) {
        // Never started, or a copy (or moved) from where it was.
        return Err(errno::EINVAL);
    }
    // SAFETY: `w` is non-NULL, aligned and, by the contract, a live writer.
    let state = unsafe { state(w) };
    let was = state.load(Ordering::Acquire);
    if was == BUSY {
        return Err(errno::EBUSY);
    }
    if !allowed.contains(&was) {
        return Err(errno::EINVAL);
    }
    if state
        .compare_exchange(was, BUSY, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        return Err(errno::EBUSY);
    }
    // The writer's CRC finds the callback (`WriterSlot::crc`) through an
    // exposed address: expose this call's pointer to the writer state, the
    // one whose borrows are live while the call runs.
    let _: usize = w.expose_provenance();
    // SAFETY: the magic and the address say `iommu_flb_writer_start`
    // wrote a whole `WriterSlot` here, at this address (a byte copy of a
    // valid one elsewhere is refused just above; the contract forbids any
    // other change), so `body` is a valid `Body`. The state word is now
    // `BUSY` and only this call puts it back, so no other call borrows the
    // body until `release`: the `&mut` is unique. It covers `body` only,
    // never the `Head` other calls read meanwhile, and lives for this call.
    let body = unsafe { &mut *ptr::addr_of_mut!((*slot).body) };
    Ok(Claim { state, body })
}

/// The last error of the writer at `w`, read without writing anything (the
/// C signature takes a `const` writer): the same checks as [`claim`], and
/// a writer inside a call is refused, since its state is being changed.
///
/// # Safety
///
/// As [`claim`], but only readable; no other thread may be inside a call
/// on the writer (the contract of every writer call).
unsafe fn last_error(w: *const IommuFlbWriter) -> Result<Option<WriteError>, c_int> {
    if !usable(w) {
        return Err(errno::EINVAL);
    }
    let slot = w.cast::<WriterSlot>();
    // SAFETY: as in `claim`: plain `u64` words of the `Head`, read through
    // raw pointers.
    let (magic, this, state) = unsafe {
        (
            ptr::addr_of!((*slot).head.magic).read(),
            ptr::addr_of!((*slot).head.this).read(),
            ptr::addr_of!((*slot).head.state).read(),
        )
    };
    if magic != WRITER_MAGIC || this != address(w) {
        return Err(errno::EINVAL);
    }
    match state {
        LIVE | ENDED => {}
        BUSY => return Err(errno::EBUSY),
        _ => return Err(errno::EINVAL),
    }
    // SAFETY: the magic and the address prove a whole `WriterSlot` written
    // here by `iommu_flb_writer_start` (as in `claim`), and no call is
    // running on it (its state is not `BUSY`, and the contract rules out
    // other threads), so nothing writes `last_error` meanwhile. It is read
    // by value, through a raw pointer: no reference to caller memory.
    Ok(unsafe { ptr::addr_of!((*slot).body.last_error).read() })
}

/// Runs one operation on a started writer and records its failure.
///
/// # Safety
///
/// As [`claim`].
unsafe fn with_writer(
    w: *mut IommuFlbWriter,
    op: impl FnOnce(&mut Writer<CAlloc, CIndex>, &Key) -> Result<(), Fail>,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    let c = match unsafe { claim(w, &[LIVE]) } {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Body {
        key,
        last_error,
        writer,
    } = &mut *c.body;
    let code = match writer.as_mut().map(|wr| op(wr, key)) {
        None => errno::EINVAL,
        Some(Ok(())) => {
            *last_error = None;
            0
        }
        Some(Err(f)) => {
            *last_error = match f {
                Fail::Write(e) => Some(e),
                _ => None,
            };
            f.errno()
        }
    };
    c.release();
    code
}

/// Writes an out-parameter.
///
/// # Safety
///
/// `p` must be NULL or valid for writing one `T`.
unsafe fn put<T>(p: *mut T, name: &'static CStr, value: T) -> Result<(), Fail> {
    if !usable(p.cast_const()) {
        return Err(Fail::Invalid(name));
    }
    // SAFETY: non-NULL and aligned (checked above); writable by contract.
    unsafe { p.write(value) };
    Ok(())
}

/// The bytes of a C struct argument.
///
/// # Safety
///
/// `p` must be NULL or point to an initialized `T` (every byte set, as by
/// a `= { ... }` initializer or memset).
unsafe fn bytes_of<'a, T>(p: *const T, name: &'static CStr) -> Result<&'a [u8], Fail> {
    if !usable(p) {
        return Err(Fail::Invalid(name));
    }
    // SAFETY: non-NULL and aligned (checked above); by the contract it
    // points to `size_of::<T>()` initialized bytes that are not written
    // during the call.
    Ok(unsafe { core::slice::from_raw_parts(p.cast::<u8>(), size_of::<T>()) })
}

/// iommu_flb_writer_start() - Start an image, as the kernel's first preserve.
/// @w: Writer state to initialize: zero (IOMMU_FLB_WRITER_INIT), or a
///     writer that was finished or aborted, or whose start failed.
/// @alloc: The page allocator; copied into @w.
/// @root: Where to store the root's physical address: what LUO hands over.
///
/// Takes the root page (version 1) and one zeroed page per chain, so the
/// three heads are set even if nothing is preserved. Duplicate devices are
/// found by scanning the device chain, except when devices are preserved in
/// ascending (segment, devid) order; iommu_flb_writer_start_indexed() finds
/// them in O(1) in any order. Handles of an earlier start of @w are not
/// this writer's.
///
/// Context: Whatever the @alloc callbacks need.
///
/// Return: 0; -EBUSY, changing nothing, if @w holds a started writer (or a
/// copy of one) that was not finished or aborted; or another negative
/// errno (enum iommu_flb_error_kind), with the details from
/// iommu_flb_writer_last_error(): then every page taken was given back and
/// @w can only report that error (or be started again).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_start(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    root: *mut u64,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { start(w, alloc, || Ok(None), None, root) }
}

/// iommu_flb_writer_index_size() - Size the storage of a device index.
/// @devices: Most live devices the image will hold at once.
///
/// Return: Bytes of storage for iommu_flb_writer_start_indexed() (two slots
/// per device and one), or 0 if that does not fit a size_t.
#[unsafe(no_mangle)]
pub extern "C" fn iommu_flb_writer_index_size(devices: usize) -> usize {
    devices
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_mul(size_of::<IndexSlot>()))
        .unwrap_or(0)
}

/// iommu_flb_writer_start_indexed() - Start an image with a device index.
/// @w: Writer state to initialize, as for iommu_flb_writer_start().
/// @alloc: The page allocator; copied into @w.
/// @index: Storage for the index, 8-byte aligned, not overlapping @w, owned
///         by the writer until iommu_flb_writer_finish() or
///         iommu_flb_writer_abort() (one writer per storage).
/// @index_size: Its size in bytes (see iommu_flb_writer_index_size()).
/// @root: Where to store the root's physical address.
///
/// As iommu_flb_writer_start(), but a live duplicate device is found in
/// O(1) whatever the order of preserves. A preserve beyond the index's
/// capacity fails with IOMMU_FLB_ERR_INDEX_FULL. @index is not touched if
/// @w is refused with -EBUSY.
///
/// Context: Whatever the @alloc callbacks need.
///
/// Return: As iommu_flb_writer_start(); -EINVAL if @index is NULL,
/// misaligned or overlaps @w, or @index_size holds less than one slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_start_indexed(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    index: *mut c_void,
    index_size: usize,
    root: *mut u64,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { start(w, alloc, || Ok(None), Some((index, index_size)), root) }
}

/// Whether the writer at `w` is started and not finished or aborted (or
/// inside a call): what `start` must not overwrite.
///
/// # Safety
///
/// `w` must be non-NULL, aligned, and point to a readable `struct
/// iommu_flb_writer` (zero, or initialized by `iommu_flb_writer_start`).
unsafe fn in_use(w: *mut IommuFlbWriter) -> bool {
    let slot = w.cast::<WriterSlot>();
    // SAFETY: as in `claim`: a plain `u64` at the start of the struct.
    let magic = unsafe { ptr::addr_of!((*slot).head.magic).read() };
    // SAFETY: `w` is non-NULL, aligned and live (the contract).
    magic == WRITER_MAGIC && matches!(unsafe { state(w) }.load(Ordering::Acquire), LIVE | BUSY)
}

/// struct iommu_flb_writer_config - The format a writer writes.
///
/// For iommu_flb_writer_start_config(). iommu_flb_writer_start() and
/// iommu_flb_writer_start_indexed() write version 1, as { 1, 0, 0 } does.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbWriterConfig {
    /// @version: The format version: 1 (IOMMU_LUO_FLB_VERSION, what
    /// kernels read today) or 2 (IOMMU_FLB_V2_VERSION, whose pages carry
    /// a CRC-32, computed by &struct iommu_flb_page_alloc.crc32).
    pub version: u32,
    /// @reserved: Must be 0.
    pub reserved: u32,
    /// @generation: Version 2: this handover's generation, which the root
    /// and every array page record, so that a page left from another
    /// handover is refused (e.g. a counter kept across kexecs, or random
    /// bits). Version 1 has none: must be 0.
    pub generation: u64,
}

/// The library's configuration for `c`, or the field it cannot have
/// (checked here: `reserved`; by the writer: `version`, `generation`).
fn writer_config(c: IommuFlbWriterConfig) -> Result<Config, Fail> {
    if c.reserved != 0 {
        return Err(Fail::Write(WriteError::BadConfig { field: "reserved" }));
    }
    Ok(Config {
        version: u64::from(c.version),
        ..Config::v2(c.generation)
    })
}

/// iommu_flb_writer_start_config() - Start an image in a chosen format.
/// @w: Writer state to initialize, as for iommu_flb_writer_start().
/// @alloc: The page allocator, with the CRC callback version 2 uses
///         (&struct iommu_flb_page_alloc.crc32); copied into @w.
/// @cfg: The format: version 1 or 2, and version 2's generation.
/// @index: Storage for a device index, as for
///         iommu_flb_writer_start_indexed(); NULL for none (then
///         @index_size must be 0).
/// @index_size: Its size in bytes.
/// @root: Where to store the root's physical address.
///
/// Version 1 is what iommu_flb_writer_start() writes. Version 2 takes only
/// the root page (a chain gets its first page with its first record), and
/// every call that changes a page rewrites that page's CRC; the operations,
/// handles and their checks are those of version 1.
///
/// Context: Whatever the @alloc callbacks need.
///
/// Return: As iommu_flb_writer_start_indexed(); -EINVAL for a bad @cfg
/// (IOMMU_FLB_ERR_INVALID_ARGUMENT from iommu_flb_writer_last_error(),
/// its field "version", "reserved" or "generation"), taking no page, or
/// for a NULL @index with a non-zero @index_size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_start_config(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    cfg: *const IommuFlbWriterConfig,
    index: *mut c_void,
    index_size: usize,
    root: *mut u64,
) -> c_int {
    let index = (!index.is_null() || index_size != 0).then_some((index, index_size));
    // SAFETY: `cfg` is NULL or a readable `struct iommu_flb_writer_config`
    // (this function's contract).
    let config = || writer_config(unsafe { read_arg(cfg, c"cfg") }?).map(Some);
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { start(w, alloc, config, index, root) }
}

/// # Safety
///
/// `w` must be NULL, misaligned, or valid for reading and writing a `struct
/// iommu_flb_writer` (zero, or initialized by `iommu_flb_writer_start`);
/// `alloc` NULL or a readable `struct iommu_flb_page_alloc`; `root` NULL or
/// writable; `index` `None` or (NULL, misaligned, or
/// `index_size` bytes of writable caller memory the writer owns until
/// finish or abort).
unsafe fn start(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    config: impl FnOnce() -> Result<Option<Config>, Fail>,
    index: Option<(*mut c_void, usize)>,
    root: *mut u64,
) -> c_int {
    if !usable(w.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: `w` is non-NULL and aligned; the rest is this function's
    // contract.
    if unsafe { in_use(w) } {
        return errno::EBUSY;
    }
    let state = Span::of(w, size_of::<IommuFlbWriter>());
    let slot = w.cast::<WriterSlot>();
    // The callback's home for the life of the writer: its CRC reads it
    // there, by address.
    // SAFETY: `slot` is non-NULL and aligned (checked above) and points to
    // the caller's `struct iommu_flb_writer`, which holds a `WriterSlot`
    // (asserted): the projection stays inside it and reads nothing.
    let crc_at = unsafe { ptr::addr_of_mut!((*slot).crc) };
    let mut call = CrcCall::NONE;
    let mut root_phys = PhysAddr::NULL;
    let mut ctx = 0usize;
    let run = || -> Result<Writer<CAlloc, CIndex>, Fail> {
        // SAFETY: forwarded from this function's contract.
        let a = unsafe { read_arg(alloc, c"alloc") }?;
        ctx = a.ctx.addr();
        // `None`: version 1 by `Writer::with_index`, as the entry points
        // that predate version 2 always did (their stack use stays).
        let config = config()?;
        let (index, index_span) = match index {
            None => (CIndex::None(NoIndex), Span::default()),
            // SAFETY: forwarded from this function's contract.
            Some((p, size)) => unsafe { slice_index(p, size, state) }?,
        };
        call = CrcCall {
            f: a.crc32,
            ctx: a.ctx,
        };
        let a = CAlloc::new(a, [state, index_span])?;
        if !usable(root.cast_const()) {
            return Err(Fail::Invalid(c"root"));
        }
        // SAFETY: `crc_at` is inside the writer state (a `WriterSlot` fits
        // in it, asserted), writable by the contract and not in use
        // (checked above); no page overlaps it (`CAlloc` refuses such a
        // page). The field is written here, before the writer exists, and
        // rewritten with the same value with the whole slot below, and
        // never otherwise while the writer lives.
        unsafe { crc_at.write(call) };
        // SAFETY: by the above, while the writer lives `crc_at` holds the
        // caller's callback, with the contract of `struct
        // iommu_flb_page_alloc`, unwritten; the writer is used only in
        // this call and in later calls on `w` at this address (`claim`
        // checks the address), which re-expose `w` (`claim`) so the
        // pointer's provenance is valid then.
        let crc = unsafe { CrcCall::crc32(crc_at) };
        let writer = match config {
            None => Writer::with_index(a, index),
            Some(c) => Writer::with_config_and_index(a, c.with_crc(crc), index),
        }
        .map_err(Fail::Write)?;
        root_phys = writer.root();
        // SAFETY: `root` is non-NULL and aligned (checked above), writable
        // by the contract.
        unsafe { root.write(root_phys.get()) };
        Ok(writer)
    };
    let (writer, last_error, code) = match run() {
        Ok(writer) => (Some(writer), None, 0),
        Err(f) => (
            None,
            match f {
                Fail::Write(e) => Some(e),
                _ => None,
            },
            f.errno(),
        ),
    };
    let slot = WriterSlot {
        head: Head {
            magic: WRITER_MAGIC,
            state: if writer.is_some() { LIVE } else { ENDED },
            this: address(w),
        },
        crc: call,
        body: Body {
            key: Key::derive(w.addr(), root_phys, ctx),
            last_error,
            writer,
        },
    };
    // SAFETY: `w` is non-NULL and aligned (checked above) and, by the
    // contract, writable for `size_of::<IommuFlbWriter>()` bytes, which hold
    // a `WriterSlot` with its alignment (asserted). It holds no writer that
    // is in use (checked above), so nothing is lost; `write` neither reads
    // nor drops the old contents.
    unsafe { w.cast::<WriterSlot>().write(slot) };
    code
}

/// The device index in caller storage: `size` bytes at `p`, which must not
/// overlap the writer state `state`. Zeroes it.
///
/// # Safety
///
/// `p` must be NULL, misaligned, or `size` bytes of writable caller memory
/// the writer owns until finish or abort.
unsafe fn slice_index(p: *mut c_void, size: usize, state: Span) -> Result<(CIndex, Span), Fail> {
    let slots = p.cast::<IndexSlot>();
    let n = size.checked_div(size_of::<IndexSlot>()).unwrap_or(0);
    let bytes = n.saturating_mul(size_of::<IndexSlot>());
    if !usable(slots.cast_const()) || n == 0 || state.overlaps(slots, bytes) {
        return Err(Fail::Invalid(c"index"));
    }
    // SAFETY: `slots` is non-NULL and aligned (checked above) and, by the
    // contract, `size >= bytes` bytes of writable caller memory the writer
    // owns; all-zero is an empty `IndexSlot` (two `u64`s).
    unsafe { slots.write_bytes(0, n) };
    // What `SliceIndex::new` leaves: every slot empty, no device.
    Ok((CIndex::Slice { slots, n, len: 0 }, Span::of(slots, bytes)))
}

/// struct iommu_flb_handle - A preserved object, as the writer hands it out.
///
/// Pass it back unchanged; only @phys is meant to be read. A handle is
/// accepted only by the writer (and the start of it) that handed it out,
/// for the kind of object it was handed out for, with its @phys unchanged,
/// and then only while that record's slot is in the image: anything else
/// is refused before the library maps or reads what @phys names (a handle
/// of another kind with IOMMU_FLB_ERR_INVALID_ARGUMENT, any other with
/// IOMMU_FLB_ERR_FOREIGN_HANDLE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbHandle {
    /// @phys: Physical address of the object's record in the image.
    pub phys: u64,
    /// @check: Private: a keyed check value over the object's kind and
    /// @phys, keyed by a secret of the writer that handed it out.
    pub check: u64,
}

/// A handle's kind: the `enum iommu_flb_chain` value of its chain.
fn kind_code(kind: ObjectKind) -> u32 {
    IommuFlbChain::of(Some(kind)).code()
}

const KINDS: [ObjectKind; 3] = [ObjectKind::Iommu, ObjectKind::Domain, ObjectKind::Device];

/// Where records of `kind` start in an array page of `version`, and their
/// size: version 2's page header and records are its own.
fn slots(version: u64, kind: ObjectKind) -> (u64, u64) {
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    if version == IOMMU_FLB_V2_VERSION {
        let size = <V2 as Format>::record_size(kind);
        (wide(IOMMU_FLB_V2_PAGE_HDR_SIZE), wide(size))
    } else {
        (
            IOMMU_ARRAY_HDR_SIZE,
            wide(<V1 as Format>::record_size(kind)),
        )
    }
}

/// The address a handle from C names, once proven a live slot of `kind`
/// that this writer handed out. The check value is verified first, before
/// anything at the address is mapped: only then is the address one of the
/// writer's own record slots, in a page the allocator handed out and did not
/// take back, so asking the page callback for it keeps the callback's
/// contract. Then the slot is checked against its page's `nr_objects`.
///
/// # Safety
///
/// `h` must be NULL, misaligned, or point to a readable `struct
/// iommu_flb_handle`.
unsafe fn handle(
    wr: &mut Writer<CAlloc, CIndex>,
    key: &Key,
    h: *const IommuFlbHandle,
    kind: ObjectKind,
    name: &'static CStr,
) -> Result<PhysAddr, Fail> {
    let page_size = wr.page_size();
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { read_arg(h, name) }?;
    let phys = PhysAddr::new(h.phys);
    if h.check != key.check(kind_code(kind), phys) {
        let other_kind = KINDS
            .iter()
            .any(|&k| k != kind && h.check == key.check(kind_code(k), phys));
        return Err(if other_kind {
            Fail::Invalid(name)
        } else {
            Fail::Write(WriteError::ForeignHandle { kind, phys })
        });
    }
    let bad = |what| Fail::Write(WriteError::Inconsistent { phys, what });
    let (hdr, size) = slots(wr.version(), kind);
    let offset = u64::try_from(phys.page_offset(page_size))
        .ok()
        .and_then(|o| o.checked_sub(hdr));
    let (Some(slot), Some(0)) = (
        offset.and_then(|o| o.checked_div(size)),
        offset.and_then(|o| o.checked_rem(size)),
    ) else {
        return Err(bad("the handle names no record slot"));
    };
    // A page that cannot be mapped now is left to the writer, which reports
    // it in its own order of accesses (the C API answers as it does).
    if let Some(page) = wr.alloc_mut().page_mut(phys.page_base(page_size)) {
        let nr =
            IommuArrayHdrSer::read_from_prefix(page).map_or(0, |(hdr, _)| hdr.nr_objects.get());
        if slot >= nr {
            return Err(bad("the handle names a slot past its page's nr_objects"));
        }
    }
    Ok(phys)
}

/// Stores a handle the writer returned.
///
/// # Safety
///
/// `out` must be NULL, misaligned, or writable.
unsafe fn give(
    out: *mut IommuFlbHandle,
    key: &Key,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<(), Fail> {
    let h = IommuFlbHandle {
        phys: phys.get(),
        check: key.check(kind_code(kind), phys),
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { put(out, c"out", h) }
}

/// iommu_flb_preserve_iommu() - Preserve an IOMMU unit.
/// @w: A started writer.
/// @token: The IOMMU's token (its MMIO base); with @iommu_type, its
///         identity.
/// @iommu_type: IOMMU_INTEL or IOMMU_ARM_SMMUV3; selects the member of
///              @vendor that is read.
/// @vendor: The unit's state: @vendor->intel's phys_addr, root_table and
///          context_tables_bitmap, or all of @vendor->smmuv3. Fields the
///          next kernel writes (restored) and padding are ignored; the
///          whole union must be initialized.
/// @out: Where to store the handle.
///
/// The record stays invisible to readers (DELETED, ref_count 0) until its
/// first device is preserved, and becomes so again when its last device is
/// unpreserved: a live IOMMU's ref_count is its number of live devices.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: 0 with *@out set, or a negative errno (enum
/// iommu_flb_error_kind; details from iommu_flb_writer_last_error()). A
/// failure leaves the image unchanged (every page holds the bytes it held).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_preserve_iommu(
    w: *mut IommuFlbWriter,
    token: u64,
    iommu_type: u64,
    vendor: *const IommuHwVendorSer,
    out: *mut IommuFlbHandle,
) -> c_int {
    let op = |wr: &mut Writer<CAlloc, CIndex>, key: &Key| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let bytes = unsafe { bytes_of(vendor, c"vendor") }?;
        let payload = match IommuTypeSer::from_wire(iommu_type) {
            Some(IommuTypeSer::IommuIntel) => {
                let v = IommuIntelSer::read_from_prefix(bytes)
                    .map_err(|_| Fail::Invalid(c"vendor"))?
                    .0;
                IommuPayloadInit::Intel(IntelIommuInit {
                    phys_addr: PhysAddr::new(v.phys_addr.get()),
                    root_table: PhysAddr::new(v.root_table.get()),
                    context_tables_bitmap: v.context_tables_bitmap.map(|b| b.get()),
                })
            }
            Some(IommuTypeSer::IommuArmSmmuv3) => {
                let v = IommuSmmuv3HwSer::read_from_prefix(bytes)
                    .map_err(|_| Fail::Invalid(c"vendor"))?
                    .0;
                IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
                    phys_addr: PhysAddr::new(v.phys_addr.get()),
                    strtab_base_cfg: v.strtab_base_cfg.get(),
                    l1_strtab_lu_state: v.l1_strtab_lu_state.get(),
                    l2_strtab_lu_states_phys: PhysAddr::new(v.l2_strtab_lu_states_phys.get()),
                })
            }
            _ => return Err(Fail::Invalid(c"iommu_type")),
        };
        let h: IommuHandle = wr.preserve_iommu(token, payload).map_err(Fail::Write)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { give(out, key, ObjectKind::Iommu, h.phys()) }
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
}

/// iommu_flb_preserve_domain() - Preserve a domain.
/// @w: A started writer.
/// @init: The domain: top_table_phys (non-zero, page-aligned), top_level,
///        vasz (at most 64) and sign_extend (0 or 1) are read; hdr, padding
///        and restored_domain are ignored (the writer sets them).
/// @out: Where to store the handle.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: As iommu_flb_preserve_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_preserve_domain(
    w: *mut IommuFlbWriter,
    init: *const IommuDomainSer,
    out: *mut IommuFlbHandle,
) -> c_int {
    let op = |wr: &mut Writer<CAlloc, CIndex>, key: &Key| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let d = unsafe { read_arg(init, c"init") }?;
        let h: DomainHandle = wr
            .preserve_domain(DomainInit {
                top_table_phys: PhysAddr::new(d.top_table_phys.get()),
                top_level: d.top_level.get(),
                vasz: d.vasz.get(),
                sign_extend: d.sign_extend,
            })
            .map_err(Fail::Write)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { give(out, key, ObjectKind::Domain, h.phys()) }
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
}

/// iommu_flb_preserve_device() - Preserve a device behind a domain and IOMMU.
/// @w: A started writer.
/// @init: The device: devid, pci_domain_nr, dma_owner_token,
///        domain_iommu_ser.attachment_id (the VT-d domain ID, or the SMMUv3
///        ASID or VMID) and the member
///        of the vendor union the IOMMU's type selects are read; hdr, the
///        domain and IOMMU addresses, restored and padding are ignored (the
///        writer sets them). The whole struct must be initialized.
/// @domain: The domain's handle.
/// @iommu: The IOMMU's handle; its ref_count rises by one.
/// @out: Where to store the handle.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: As iommu_flb_preserve_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_preserve_device(
    w: *mut IommuFlbWriter,
    init: *const IommuDeviceSer,
    domain: *const IommuFlbHandle,
    iommu: *const IommuFlbHandle,
    out: *mut IommuFlbHandle,
) -> c_int {
    let op = |wr: &mut Writer<CAlloc, CIndex>, key: &Key| {
        // Both handles are proven this writer's before anything at their
        // addresses is mapped (the IOMMU's record is read just below).
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let dom_phys = unsafe { handle(wr, key, domain, ObjectKind::Domain, c"domain") }?;
        // SAFETY: as above.
        let hw_phys = unsafe { handle(wr, key, iommu, ObjectKind::Iommu, c"iommu") }?;
        let id = wr.id();
        // SAFETY: as above.
        let bytes = unsafe { bytes_of(init, c"init") }?;
        let d = IommuDeviceSer::ref_from_bytes(bytes).map_err(|_| Fail::Invalid(c"init"))?;
        let vendor = bytes
            .get(offset_of!(IommuDeviceSer, vendor)..)
            .ok_or(Fail::Invalid(c"init"))?;
        // The IOMMU's type picks the union member to read; a record the
        // writer cannot read reads as Intel and is refused by it below.
        let payload = match wr.iommu_type(hw_phys).unwrap_or(IommuTypeSer::IommuIntel) {
            IommuTypeSer::IommuArmSmmuv3 => {
                let v = IommuMasterSmmuv3Ser::read_from_prefix(vendor)
                    .map_err(|_| Fail::Invalid(c"init"))?
                    .0;
                DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                    l1_cdtab_lu_state: v.l1_cdtab_lu_state.get(),
                    num_l2_cdtables: v.num_l2_cdtables.get(),
                    l2_cdtab_lu_states_phys: PhysAddr::new(v.l2_cdtab_lu_states_phys.get()),
                })
            }
            _ => {
                let v = IommuDeviceIntelSer::read_from_prefix(vendor)
                    .map_err(|_| Fail::Invalid(c"init"))?
                    .0;
                DevicePayloadInit::Intel(IntelDeviceInit {
                    pasid_table: PhysAddr::new(v.pasid_table.get()),
                    max_pasid: v.max_pasid.get(),
                })
            }
        };
        let h: DeviceHandle = wr
            .preserve_device(
                DeviceInit {
                    pci_domain_nr: d.pci_domain_nr.get(),
                    devid: d.devid.get(),
                    dma_owner_token: d.dma_owner_token.get(),
                    attachment_id: d.domain_iommu_ser.attachment_id.get(),
                    payload,
                },
                DomainHandle::new(dom_phys, id),
                IommuHandle::new(hw_phys, id),
            )
            .map_err(Fail::Write)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { give(out, key, ObjectKind::Device, h.phys()) }
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
}

/// iommu_flb_unpreserve_device() - Unpreserve a device.
/// @w: A started writer.
/// @dev: The device's handle.
///
/// Marks the record DELETED; its IOMMU's ref_count falls by one, and the
/// IOMMU is DELETED (invisible) when it reaches 0.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: As iommu_flb_preserve_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_unpreserve_device(
    w: *mut IommuFlbWriter,
    dev: *const IommuFlbHandle,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { unpreserve(w, dev, ObjectKind::Device, c"dev") }
}

/// iommu_flb_unpreserve_domain() - Unpreserve a domain.
/// @w: A started writer.
/// @domain: The domain's handle.
///
/// Refused (IOMMU_FLB_ERR_DOMAIN_IN_USE) while a live device is attached.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: As iommu_flb_preserve_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_unpreserve_domain(
    w: *mut IommuFlbWriter,
    domain: *const IommuFlbHandle,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { unpreserve(w, domain, ObjectKind::Domain, c"domain") }
}

/// iommu_flb_unpreserve_iommu() - Unpreserve an IOMMU with no devices left.
/// @w: A started writer.
/// @iommu: The IOMMU's handle.
///
/// Refused (IOMMU_FLB_ERR_IOMMU_IN_USE) while devices are behind it.
///
/// Context: Whatever the allocator callbacks need.
///
/// Return: As iommu_flb_preserve_iommu().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_unpreserve_iommu(
    w: *mut IommuFlbWriter,
    iommu: *const IommuFlbHandle,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { unpreserve(w, iommu, ObjectKind::Iommu, c"iommu") }
}

/// The one body of the three `iommu_flb_unpreserve_*()`: the record of
/// `kind` behind the handle `h` (the argument called `name`).
///
/// # Safety
///
/// As [`with_writer`]; `h` must be NULL or point to an initialized
/// `struct iommu_flb_handle`.
unsafe fn unpreserve(
    w: *mut IommuFlbWriter,
    h: *const IommuFlbHandle,
    kind: ObjectKind,
    name: &'static CStr,
) -> c_int {
    let op = |wr: &mut Writer<CAlloc, CIndex>, key: &Key| {
        // SAFETY: forwarded from this function's contract.
        let phys = unsafe { handle(wr, key, h, kind, name) }?;
        let id = wr.id();
        match kind {
            ObjectKind::Device => wr.unpreserve_device(DeviceHandle::new(phys, id)),
            ObjectKind::Domain => wr.unpreserve_domain(DomainHandle::new(phys, id)),
            ObjectKind::Iommu => wr.unpreserve_iommu(IommuHandle::new(phys, id)),
        }
        .map_err(Fail::Write)
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { with_writer(w, op) }
}

/// struct iommu_flb_counts - What a writer's image holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbCounts {
    /// @pages: Pages taken: the root and every array page.
    pub pages: u64,
    /// @iommus: IOMMUs preserved and not unpreserved (with devices or not).
    pub iommus: u64,
    /// @live_iommus: IOMMUs with at least one live device: what readers see.
    pub live_iommus: u64,
    /// @domains: Live domains.
    pub domains: u64,
    /// @devices: Live devices.
    pub devices: u64,
}

/// iommu_flb_writer_counts() - Count what a writer's image holds.
/// @w: A started writer.
/// @out: Where to store the counts.
///
/// Context: Any.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer not started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_counts(
    w: *mut IommuFlbWriter,
    out: *mut IommuFlbCounts,
) -> c_int {
    let op = |wr: &mut Writer<CAlloc, CIndex>, _: &Key| {
        let c = wr.counts();
        let counts = IommuFlbCounts {
            pages: c.pages,
            iommus: c.iommus,
            live_iommus: c.live_iommus,
            domains: c.domains,
            devices: c.devices,
        };
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        unsafe { put(out, c"out", counts) }
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
}

/// iommu_flb_writer_last_error() - Explain a writer's most recent failure.
/// @w: A writer iommu_flb_writer_start() was called on (even if it failed,
///     or the writer was finished or aborted since).
/// @err: Where to store the error of the most recent call on @w; kind
///       IOMMU_FLB_ERR_NONE if it succeeded or failed only for a bad
///       argument.
///
/// Context: Any.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer never started (or a
/// copy of one), -EBUSY while another call on @w runs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_last_error(
    w: *const IommuFlbWriter,
    err: *mut IommuFlbError,
) -> c_int {
    if !usable(err.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let last = match unsafe { last_error(w) } {
        Ok(last) => last,
        Err(code) => return code,
    };
    // SAFETY: `err` is non-NULL and aligned (checked above), writable by
    // the contract.
    unsafe { report(err, last.map_or(Ok(()), |e| Err(Fail::Write(e)))) };
    0
}

/// iommu_flb_writer_finish() - End writing.
/// @w: A started writer; afterwards it can only report its last error or
///     be started again.
/// @root: Where to store the root's physical address, for the FLB's data.
///
/// Every page stays allocated (and preserved): they are the image.
///
/// Context: Any.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer not started (or
/// already finished or aborted, or a copy), -EBUSY while another call on
/// @w runs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_finish(w: *mut IommuFlbWriter, root: *mut u64) -> c_int {
    if !usable(root.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let c = match unsafe { claim(w, &[LIVE]) } {
        Ok(c) => c,
        Err(code) => return code,
    };
    let taken = c.body.writer.take();
    c.release();
    let Some(writer) = taken else {
        return errno::EINVAL;
    };
    let (phys, _alloc) = writer.finish();
    // SAFETY: `root` is non-NULL and aligned (checked above), writable by
    // the contract.
    unsafe { root.write(phys.get()) };
    0
}

/// iommu_flb_writer_abort() - Abandon the image and free its pages.
/// @w: A started writer; afterwards it can only report its last error or
///     be started again.
///
/// Gives every page back through free_page(), in the order of the kernel's
/// FLB code: the domain, device and IOMMU chains, each head to tail, then
/// the root.
///
/// Context: Whatever free_page() needs.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer not started (or
/// already finished or aborted, or a copy), -EBUSY while another call on
/// @w runs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_abort(w: *mut IommuFlbWriter) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let c = match unsafe { claim(w, &[LIVE]) } {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(writer) = c.body.writer.take() else {
        c.release();
        return errno::EINVAL;
    };
    let _alloc = writer.abort();
    c.release();
    0
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use super::*;

    /// The tests' page size.
    const PAGE_SIZE: usize = 4096;

    /// Maps 0x1000 and 0x2000 to the two pages of the `ctx` buffer, 0x3000
    /// half-way into both (a callback bug), anything else to NULL.
    unsafe extern "C" fn two_pages(ctx: *mut c_void, phys: u64) -> *mut u8 {
        let at = match phys {
            0x1000 => 0,
            0x2000 => PAGE_SIZE,
            0x3000 => PAGE_SIZE / 2,
            _ => return core::ptr::null_mut(),
        };
        // SAFETY: `ctx` is the tests' buffer of two pages; `at` is inside it.
        unsafe { ctx.cast::<u8>().add(at) }
    }

    unsafe extern "C" fn no_alloc(_ctx: *mut c_void) -> u64 {
        0
    }

    unsafe extern "C" fn no_free(_ctx: *mut c_void, _phys: u64) {}

    #[test]
    fn pages_are_mapped_all_or_none_and_never_overlapping() {
        let mut buf = alloc::vec![0u8; 2 * PAGE_SIZE];
        let mut a = CAlloc {
            alloc_page: no_alloc,
            page: two_pages,
            free_page: no_free,
            ctx: buf.as_mut_ptr().cast(),
            page_size: PageSize::Size4K,
            not_pages: [Span::default(); 2],
        };
        let [p, q] = a
            .pages_mut([PhysAddr::new(0x2000), PhysAddr::new(0x1000)])
            .expect("two distinct pages");
        (p[0], q[0]) = (2, 1);
        assert_eq!((buf[0], buf[PAGE_SIZE]), (1, 2));
        let [one, two, half] = [0x1000, 0x2000, 0x3000].map(PhysAddr::new);
        assert_eq!(a.pages_mut([one, half]).err(), Some(half), "overlaps");
        assert_eq!(a.pages_mut([half, two]).err(), Some(two), "overlaps");
        assert_eq!(a.pages_mut([one, one]).err(), Some(one), "twice");
        let unmapped = PhysAddr::new(0x5000);
        assert_eq!(a.pages_mut([one, unmapped]).err(), Some(unmapped));
        assert!(a.page_mut(unmapped).is_none());
        assert!(a.page_mut(half).is_some(), "alone it aliases nothing");
    }
}
