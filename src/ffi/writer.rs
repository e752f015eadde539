//! The outgoing kernel's side: the writer's operations over the caller's
//! page-allocator callbacks, in writer state the caller owns.

use core::ffi::{CStr, c_int, c_void};
use core::mem::{align_of, offset_of, size_of};

use zerocopy::FromBytes;

use super::error::{Fail, IommuFlbChain, IommuFlbError, errno, report};
use super::reader::read_arg;
use super::usable;
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer, IommuHwVendorSer,
    IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::writer::{
    DeviceHandle, DeviceIndex, DeviceInit, DeviceKey, DevicePayloadInit, DomainHandle, DomainInit,
    IndexSlot, IntelDeviceInit, IntelIommuInit, IommuHandle, IommuPayloadInit, Lookup, NoIndex,
    ObjectKind, PageAlloc, SliceIndex, Smmuv3DeviceInit, Smmuv3IommuInit, WriteError, Writer,
    WriterId,
};

/// struct iommu_flb_page_alloc - Where the writer's pages come from.
///
/// In the kernel: kho_alloc_preserve() and virt_to_phys() for @alloc_page,
/// phys_to_virt() for @page, kho_unpreserve_free() for @free_page. Copied
/// into the writer by iommu_flb_writer_start(); @ctx must stay valid until
/// iommu_flb_writer_finish() or iommu_flb_writer_abort(). No callback may be
/// NULL. The writer checks every page it is given (non-zero, page-aligned,
/// not already in the image, mapped, all zeroes) before using it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IommuFlbPageAlloc {
    /// @alloc_page: Returns the physical address of a zeroed, preserved
    /// page of @page_size bytes, or 0 when none is available.
    pub alloc_page: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
    /// @page: Returns the writable mapping of a page @alloc_page handed out
    /// and @free_page did not take back, or NULL for any other address. The
    /// page must not be accessed by anyone else during a writer call.
    pub page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *mut u8>,
    /// @free_page: Takes back a page @alloc_page handed out.
    pub free_page: Option<unsafe extern "C" fn(ctx: *mut c_void, phys: u64)>,
    /// @ctx: Passed to the callbacks unchanged; may be NULL.
    pub ctx: *mut c_void,
    /// @page_size: The size of the pages @alloc_page hands out, in bytes:
    /// the kernel's PAGE_SIZE (4096, 16384 or 65536). Each array page's
    /// capacity follows from it.
    pub page_size: usize,
}

/// The caller's allocator, every callback checked non-NULL.
#[derive(Clone, Copy, Debug)]
struct CAlloc {
    alloc_page: unsafe extern "C" fn(ctx: *mut c_void) -> u64,
    page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64) -> *mut u8,
    free_page: unsafe extern "C" fn(ctx: *mut c_void, phys: u64),
    ctx: *mut c_void,
    page_size: PageSize,
}

impl CAlloc {
    fn new(a: IommuFlbPageAlloc) -> Result<Self, Fail> {
        Ok(CAlloc {
            alloc_page: a.alloc_page.ok_or(Fail::Invalid(c"alloc->alloc_page"))?,
            page: a.page.ok_or(Fail::Invalid(c"alloc->page"))?,
            free_page: a.free_page.ok_or(Fail::Invalid(c"alloc->free_page"))?,
            ctx: a.ctx,
            page_size: u64::try_from(a.page_size)
                .ok()
                .and_then(PageSize::from_bytes)
                .ok_or(Fail::Invalid(c"alloc->page_size"))?,
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
        // SAFETY: as in `alloc_page`.
        let ptrs = phys.map(|p| unsafe { (self.page)(self.ctx, p.get()) });
        for ((p, &at), i) in ptrs.iter().zip(&phys).zip(0usize..) {
            // Two distinct pages whose mappings overlap would alias.
            let overlaps = ptrs
                .iter()
                .take(i)
                .any(|q| q.addr().abs_diff(p.addr()) < size);
            if p.is_null() || overlaps {
                return Err(at);
            }
        }
        // SAFETY: by the `struct iommu_flb_page_alloc` contract, a non-NULL
        // return is the writable mapping of `page_size` bytes that nothing
        // else accesses during a writer call; the K mappings were checked
        // above to be pairwise disjoint, so the K borrows do not alias each
        // other, and they are tied to `&mut self`, so they end before the
        // next call and within this writer call. `u8` has alignment 1 and
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
/// storage.
#[derive(Debug)]
enum CIndex {
    None(NoIndex),
    Slice(SliceIndex<'static>),
}

impl DeviceIndex for CIndex {
    fn lookup(&self, key: DeviceKey) -> Lookup {
        match self {
            CIndex::None(x) => x.lookup(key),
            CIndex::Slice(x) => x.lookup(key),
        }
    }
    fn insert(&mut self, key: DeviceKey, device: PhysAddr) -> Result<(), WriteError> {
        match self {
            CIndex::None(x) => x.insert(key, device),
            CIndex::Slice(x) => x.insert(key, device),
        }
    }
    fn remove(&mut self, key: DeviceKey) {
        match self {
            CIndex::None(x) => x.remove(key),
            CIndex::Slice(x) => x.remove(key),
        }
    }
}

/// IOMMU_FLB_WRITER_WORDS - Size of struct iommu_flb_writer in 64-bit words.
pub const IOMMU_FLB_WRITER_WORDS: usize = 64;

/// struct iommu_flb_writer - A writer's state (opaque, caller-allocated).
///
/// Declare one (static, on the stack, or in a larger struct) and pass it to
/// iommu_flb_writer_start(); the library keeps all its state in it and
/// allocates nothing. Do not copy it while in use; calls on one writer
/// must not run concurrently (the caller's lock serializes them).
#[repr(C)]
#[derive(Debug)]
pub struct IommuFlbWriter {
    /// @opaque: Private.
    pub opaque: [u64; IOMMU_FLB_WRITER_WORDS],
}

/// What `struct iommu_flb_writer` holds.
#[repr(C)]
struct WriterSlot {
    magic: u64,
    /// The most recent call's failure, for `iommu_flb_writer_last_error`.
    last_error: Option<WriteError>,
    /// `None` once finished or aborted, or if `start` failed.
    writer: Option<Writer<CAlloc, CIndex>>,
}

/// "iflbwrt1": marks a started writer.
const WRITER_MAGIC: u64 = 0x6966_6c62_7772_7431;

const _: () = assert!(size_of::<WriterSlot>() <= size_of::<IommuFlbWriter>());
const _: () = assert!(align_of::<WriterSlot>() <= align_of::<IommuFlbWriter>());
const _: () = assert!(offset_of!(WriterSlot, magic) == 0);
const _: () = assert!(align_of::<IndexSlot>() <= 8 && size_of::<IndexSlot>() > 0);

/// The writer state behind `w`, checked for the start marker.
///
/// # Safety
///
/// `w` must be NULL or point to a readable `struct iommu_flb_writer`.
unsafe fn checked(w: *const IommuFlbWriter) -> Result<*const WriterSlot, Fail> {
    if !usable(w) {
        return Err(Fail::Invalid(c"w"));
    }
    // SAFETY: `w` is non-NULL and aligned (checked above) and, by the
    // contract, a `struct iommu_flb_writer`; its first word is a `u64`, at
    // the offset of `WriterSlot::magic` (asserted).
    let magic = unsafe { w.cast::<u64>().read() };
    if magic != WRITER_MAGIC {
        return Err(Fail::Invalid(c"w"));
    }
    Ok(w.cast::<WriterSlot>())
}

/// The started writer behind `w`, for changing it.
///
/// # Safety
///
/// `w` must be NULL or point to a `struct iommu_flb_writer` that is either
/// started (and not copied since) or holds anything but the start marker in
/// its first word, and that no one else accesses during the returned
/// borrow.
unsafe fn slot<'a>(w: *mut IommuFlbWriter) -> Result<&'a mut WriterSlot, Fail> {
    // SAFETY: forwarded from this function's contract.
    let s = unsafe { checked(w) }?.cast_mut();
    // SAFETY: the marker is only written by `iommu_flb_writer_start`,
    // together with a whole `WriterSlot`, which fits and is aligned
    // (asserted); by the contract it was not copied or changed since, and
    // the caller does not access it during this call.
    Ok(unsafe { &mut *s })
}

/// Runs one operation on a started writer and records its failure.
///
/// # Safety
///
/// As [`slot`].
unsafe fn with_writer(
    w: *mut IommuFlbWriter,
    op: impl FnOnce(&mut Writer<CAlloc, CIndex>) -> Result<(), Fail>,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    let s = match unsafe { slot(w) } {
        Ok(s) => s,
        Err(f) => return f.errno(),
    };
    let Some(writer) = s.writer.as_mut() else {
        return errno::EINVAL;
    };
    match op(writer) {
        Ok(()) => {
            s.last_error = None;
            0
        }
        Err(f) => {
            s.last_error = match f {
                Fail::Write(e) => Some(e),
                _ => None,
            };
            f.errno()
        }
    }
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
/// @w: Writer state to initialize (its contents do not matter).
/// @alloc: The page allocator; copied into @w.
/// @root: Where to store the root's physical address: what LUO hands over.
///
/// Takes the root page (version 1) and one zeroed page per chain, so the
/// three heads are set even if nothing is preserved. Duplicate devices are
/// found by scanning the device chain, except when devices are preserved in
/// ascending (segment, devid) order; iommu_flb_writer_start_indexed() finds
/// them in O(1) in any order.
///
/// Context: Whatever the @alloc callbacks need.
///
/// Return: 0, or a negative errno (enum iommu_flb_error_kind), with the
/// details from iommu_flb_writer_last_error(): then every page taken was
/// given back and @w can only report that error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_start(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    root: *mut u64,
) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { start(w, alloc, CIndex::None(NoIndex), root) }
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
/// @w: Writer state to initialize.
/// @alloc: The page allocator; copied into @w.
/// @index: Storage for the index, 8-byte aligned, owned by the writer until
///         iommu_flb_writer_finish() or iommu_flb_writer_abort().
/// @index_size: Its size in bytes (see iommu_flb_writer_index_size()).
/// @root: Where to store the root's physical address.
///
/// As iommu_flb_writer_start(), but a live duplicate device is found in
/// O(1) whatever the order of preserves. A preserve beyond the index's
/// capacity fails with IOMMU_FLB_ERR_INDEX_FULL.
///
/// Context: Whatever the @alloc callbacks need.
///
/// Return: As iommu_flb_writer_start(); -EINVAL if @index is NULL or
/// misaligned or @index_size holds less than one slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_start_indexed(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    index: *mut c_void,
    index_size: usize,
    root: *mut u64,
) -> c_int {
    let slots = index.cast::<IndexSlot>();
    let n = index_size.checked_div(size_of::<IndexSlot>()).unwrap_or(0);
    if !usable(slots.cast_const()) || n == 0 {
        return errno::EINVAL;
    }
    // SAFETY: `slots` is non-NULL and aligned (checked above) and, by the
    // contract, `index_size >= n * size_of::<IndexSlot>()` bytes of caller
    // memory the writer owns until finish or abort, which is as long as
    // the writer (and so this `'static` borrow) is used. `write_bytes`
    // initializes every slot (all-zero is an empty `IndexSlot`, two `u64`s)
    // before the slice is made.
    let slots: &'static mut [IndexSlot] = unsafe {
        slots.write_bytes(0, n);
        core::slice::from_raw_parts_mut(slots, n)
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { start(w, alloc, CIndex::Slice(SliceIndex::new(slots)), root) }
}

/// # Safety
///
/// `w` must be NULL or valid for writing a `struct iommu_flb_writer`;
/// `alloc` NULL or a readable `struct iommu_flb_page_alloc`; `root` NULL or
/// writable.
unsafe fn start(
    w: *mut IommuFlbWriter,
    alloc: *const IommuFlbPageAlloc,
    index: CIndex,
    root: *mut u64,
) -> c_int {
    if !usable(w.cast_const()) {
        return errno::EINVAL;
    }
    let run = || -> Result<Writer<CAlloc, CIndex>, Fail> {
        // SAFETY: forwarded from this function's contract.
        let a = CAlloc::new(unsafe { read_arg(alloc, c"alloc") }?)?;
        if !usable(root.cast_const()) {
            return Err(Fail::Invalid(c"root"));
        }
        let writer = Writer::with_index(a, index).map_err(Fail::Write)?;
        // SAFETY: `root` is non-NULL and aligned (checked above), writable
        // by the contract.
        unsafe { root.write(writer.root().get()) };
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
    // SAFETY: `w` is non-NULL and aligned (checked above) and, by the
    // contract, writable for `size_of::<IommuFlbWriter>()` bytes, which hold
    // a `WriterSlot` with its alignment (asserted). `write` does not read
    // the old contents.
    unsafe {
        w.cast::<WriterSlot>().write(WriterSlot {
            magic: WRITER_MAGIC,
            last_error,
            writer,
        })
    };
    code
}

/// struct iommu_flb_handle - A preserved object, as the writer hands it out.
///
/// Pass it back unchanged; only @phys is meant to be read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IommuFlbHandle {
    /// @phys: Physical address of the object's record in the image.
    pub phys: u64,
    /// @writer: Private: which writer made it.
    pub writer: u32,
    /// @kind: Private: an enum iommu_flb_chain value, the object's kind.
    pub kind: u32,
}

/// A handle's kind: the `enum iommu_flb_chain` value of its chain.
fn kind_code(kind: ObjectKind) -> u32 {
    IommuFlbChain::of_object(kind).code()
}

/// A handle from C, checked for its kind and for naming the start of a
/// record slot (the writer checks it is its own and what the record holds).
///
/// # Safety
///
/// `h` must be NULL or point to a readable `struct iommu_flb_handle`.
unsafe fn handle(
    h: *const IommuFlbHandle,
    kind: ObjectKind,
    page_size: PageSize,
    name: &'static CStr,
) -> Result<(PhysAddr, WriterId), Fail> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { read_arg(h, name) }?;
    let phys = PhysAddr::new(h.phys);
    let size = u64::try_from(kind.record_size()).map_err(|_| Fail::Invalid(name))?;
    let slot_start = u64::try_from(phys.page_offset(page_size))
        .ok()
        .and_then(|o| o.checked_sub(IOMMU_ARRAY_HDR_SIZE))
        .and_then(|o| o.checked_rem(size));
    if h.kind != kind_code(kind) || slot_start != Some(0) {
        return Err(Fail::Invalid(name));
    }
    Ok((phys, WriterId(h.writer)))
}

/// Stores a handle the writer returned.
///
/// # Safety
///
/// `out` must be NULL or writable.
unsafe fn give(
    out: *mut IommuFlbHandle,
    phys: PhysAddr,
    writer: WriterId,
    kind: ObjectKind,
) -> Result<(), Fail> {
    let h = IommuFlbHandle {
        phys: phys.get(),
        writer: writer.0,
        kind: kind_code(kind),
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
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
        unsafe { give(out, h.phys(), h.writer(), ObjectKind::Iommu) }
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
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
        unsafe { give(out, h.phys(), h.writer(), ObjectKind::Domain) }
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let (dom_phys, dom_id) =
            unsafe { handle(domain, ObjectKind::Domain, wr.page_size(), c"domain") }?;
        // SAFETY: as above.
        let (hw_phys, hw_id) =
            unsafe { handle(iommu, ObjectKind::Iommu, wr.page_size(), c"iommu") }?;
        // SAFETY: as above.
        let bytes = unsafe { bytes_of(init, c"init") }?;
        let d = IommuDeviceSer::ref_from_bytes(bytes).map_err(|_| Fail::Invalid(c"init"))?;
        let vendor = bytes
            .get(offset_of!(IommuDeviceSer, vendor)..)
            .ok_or(Fail::Invalid(c"init"))?;
        // The IOMMU's type picks the union member to read; a handle the
        // writer cannot resolve reads as Intel and is refused by it below.
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
                DomainHandle::new(dom_phys, dom_id),
                IommuHandle::new(hw_phys, hw_id),
            )
            .map_err(Fail::Write)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { give(out, h.phys(), h.writer(), ObjectKind::Device) }
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let (phys, id) = unsafe { handle(dev, ObjectKind::Device, wr.page_size(), c"dev") }?;
        wr.unpreserve_device(DeviceHandle::new(phys, id))
            .map_err(Fail::Write)
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let (phys, id) = unsafe { handle(domain, ObjectKind::Domain, wr.page_size(), c"domain") }?;
        wr.unpreserve_domain(DomainHandle::new(phys, id))
            .map_err(Fail::Write)
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    unsafe { with_writer(w, op) }
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
        // SAFETY: forwarded from this function's contract (kernel-doc above).
        let (phys, id) = unsafe { handle(iommu, ObjectKind::Iommu, wr.page_size(), c"iommu") }?;
        wr.unpreserve_iommu(IommuHandle::new(phys, id))
            .map_err(Fail::Write)
    };
    // SAFETY: forwarded from this function's contract (kernel-doc above).
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
    let op = |wr: &mut Writer<CAlloc, CIndex>| {
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
/// @w: A writer iommu_flb_writer_start() was called on (even if it failed).
/// @err: Where to store the error of the most recent call on @w; kind
///       IOMMU_FLB_ERR_NONE if it succeeded or failed only for a bad
///       argument.
///
/// Context: Any.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer never started.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_last_error(
    w: *const IommuFlbWriter,
    err: *mut IommuFlbError,
) -> c_int {
    if !usable(err.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let s = match unsafe { checked(w) } {
        Ok(s) => s,
        Err(f) => return f.errno(),
    };
    // SAFETY: as in `slot`, but only read: `s` points to the `WriterSlot`
    // `iommu_flb_writer_start` wrote, which nothing writes during the call.
    let last = unsafe { &*s }.last_error;
    // SAFETY: `err` is non-NULL and aligned (checked above), writable by
    // the contract.
    unsafe { report(err, last.map_or(Ok(()), |e| Err(Fail::Write(e)))) };
    0
}

/// iommu_flb_writer_finish() - End writing.
/// @w: A started writer; unusable afterwards.
/// @root: Where to store the root's physical address, for the FLB's data.
///
/// Every page stays allocated (and preserved): they are the image.
///
/// Context: Any.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer not started (or
/// already finished or aborted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_finish(w: *mut IommuFlbWriter, root: *mut u64) -> c_int {
    if !usable(root.cast_const()) {
        return errno::EINVAL;
    }
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let s = match unsafe { slot(w) } {
        Ok(s) => s,
        Err(f) => return f.errno(),
    };
    let Some(writer) = s.writer.take() else {
        return errno::EINVAL;
    };
    let (phys, _alloc) = writer.finish();
    // SAFETY: `root` is non-NULL and aligned (checked above), writable by
    // the contract.
    unsafe { root.write(phys.get()) };
    0
}

/// iommu_flb_writer_abort() - Abandon the image and free its pages.
/// @w: A started writer; unusable afterwards.
///
/// Gives every page back through free_page(), in the order of the kernel's
/// FLB code: the domain, device and IOMMU chains, each head to tail, then
/// the root.
///
/// Context: Whatever free_page() needs.
///
/// Return: 0, or -EINVAL for a bad pointer or a writer not started (or
/// already finished or aborted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iommu_flb_writer_abort(w: *mut IommuFlbWriter) -> c_int {
    // SAFETY: forwarded from this function's contract (kernel-doc above).
    let s = match unsafe { slot(w) } {
        Ok(s) => s,
        Err(f) => return f.errno(),
    };
    let Some(writer) = s.writer.take() else {
        return errno::EINVAL;
    };
    let _alloc = writer.abort();
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
