//! Target `capi`: the C API driven through its `extern "C"` functions, as
//! kernel C code calls it, by a fuzz-chosen sequence of calls, and checked
//! against models, call by call:
//!
//! - the C writer against the Rust [`Writer`] it wraps, running the same
//!   operations over an identical page pool with the same injected
//!   callback failures: the same result (errno, error kind, the exact log
//!   line), the same handle addresses, byte-identical pages;
//! - misuse the C API makes possible (a handle moved, swapped, edited,
//!   of the wrong kind, from another writer or an earlier start; a copy of
//!   the writer; a second start; a stale copy put back over it) against
//!   what the header documents: the exact refusal, and nothing changed (the
//!   pages still equal the Rust writer's), or, after a stale copy, never a
//!   slot handed out twice and always an image the reader accepts;
//! - the C reader against the Rust reader over the same memory, with the
//!   same page-callback failures: the same verdict and log line; walks,
//!   lookups, counts and restore that list exactly the Rust image; and the
//!   lifetime rules: an image pointer after a failed validation into its
//!   scratch is -ESTALE, a cursor of an earlier image -ESTALE, a cursor of
//!   another walk -EINVAL, a copy of an image -EINVAL.
//!
//! Both page callbacks check their contract: the writer's `page` may only
//! be asked for pages its allocator handed out (it is phys_to_virt() in the
//! kernel), and the reader's only for page-aligned addresses.

use core::ffi::{CStr, c_int, c_void};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ptr;

use iommu_flb_abi::abi::PageSize;

use crate::PAGE_SIZE;
use iommu_flb_abi::abi::v1::{
    IOMMU_SER_FLAG_INCOMING, IommuDeviceSer, IommuDomainSer, IommuHwVendorSer, IommuTypeSer,
};
use iommu_flb_abi::error::{Chain, ErrorKind};
use iommu_flb_abi::ffi::*;
use iommu_flb_abi::reader::{self, Mode, Options, ScratchElem};
use iommu_flb_abi::writer::{
    DeviceHandle, DeviceIndex, DeviceInit, DevicePayloadInit, DomainHandle, DomainInit, IndexSlot,
    IommuHandle, IommuPayloadInit, NoIndex, ObjectKind, PageAlloc, SliceIndex, WriteError, Writer,
};
use iommu_flb_abi::{Memory, PhysAddr};
use zerocopy::FromZeros;

use crate::input::{CapiInput, CapiOp, Fault, Spoil};
use crate::model::{device_payload, iommu_payload, token};

const EINVAL: c_int = -22;
const ENOENT: c_int = -2;
const EBUSY: c_int = -16;
const ESTALE: c_int = -116;

/// What a run exercised (for the seed tests: each seed reaches what its
/// name says).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// C writer calls checked against the Rust writer.
    pub writer_calls: u32,
    /// Of those, refused (by both).
    pub writer_refusals: u32,
    /// Spoiled handles refused.
    pub misuse_refused: u32,
    /// Calls on a copy of a writer refused, and second starts refused.
    pub copies_refused: u32,
    /// Appends refused after a stale copy was put back.
    pub stale_refused: u32,
    /// Validations that agreed with the Rust reader: accepted, refused.
    pub validated: u32,
    /// Validations refused.
    pub refused: u32,
    /// Walk steps that returned a record or page.
    pub walked: u32,
    /// Calls refused with -ESTALE (an image after a failed validation, or
    /// an earlier image's cursor).
    pub stale: u32,
    /// Lookups and restores checked on a valid image.
    pub lookups: u32,
    /// Calls on a copy of an image refused.
    pub image_copies: u32,
}

thread_local! {
    static STATS: Cell<Stats> = Cell::new(Stats::default());
}

fn count(f: impl FnOnce(&mut Stats)) {
    STATS.with(|c| {
        let mut s = c.get();
        f(&mut s);
        c.set(s);
    });
}

// ---- the writer's pages ----

const POOL_BASE: u64 = 0x7000_0000;
const POOL_PAGES: usize = 96;

/// Pages at `POOL_BASE`, handed out in a fixed scrambled order, with the
/// failures of the current operation. Two pools that see the same calls
/// are identical, which is what the C and the Rust writer are compared on.
#[derive(Clone)]
struct Pool {
    pages: Vec<Box<[u8; PAGE_SIZE]>>,
    used: Vec<bool>,
    /// The pages in use, in allocation order (what `Fault::page` counts).
    order: Vec<PhysAddr>,
    fault: Fault,
    /// Addresses `page_mut` was asked for that are not handed out.
    strays: Vec<u64>,
}

impl Pool {
    fn new() -> Pool {
        Pool {
            pages: (0..POOL_PAGES)
                .map(|_| Box::new([0u8; PAGE_SIZE]))
                .collect(),
            used: vec![false; POOL_PAGES],
            order: Vec::new(),
            fault: Fault::default(),
            strays: Vec::new(),
        }
    }

    fn index(phys: PhysAddr) -> Option<usize> {
        let off = phys.get().checked_sub(POOL_BASE)?;
        let i = usize::try_from(off / PAGE_SIZE as u64).ok()?;
        (off % PAGE_SIZE as u64 == 0 && i < POOL_PAGES).then_some(i)
    }

    fn refused(&self) -> Option<PhysAddr> {
        let k = self.fault.page()?;
        (!self.order.is_empty()).then(|| self.order[k % self.order.len()])
    }

    /// Whether `other` holds the same pages with the same bytes.
    fn same_as(&self, other: &Pool) -> bool {
        self.used == other.used
            && self.order == other.order
            && (0..POOL_PAGES).all(|i| !self.used[i] || self.pages[i] == other.pages[i])
    }
}

impl PageAlloc for Pool {
    fn page_size(&self) -> PageSize {
        crate::PS
    }

    fn alloc_page(&mut self) -> Option<PhysAddr> {
        if self.fault.alloc() {
            return None;
        }
        let i = (0..POOL_PAGES)
            .map(|k| (k * 37 + 11) % POOL_PAGES)
            .find(|&i| !self.used[i])?;
        self.used[i] = true;
        self.pages[i].fill(0);
        let phys = PhysAddr::new(POOL_BASE + (i * PAGE_SIZE) as u64);
        self.order.push(phys);
        Some(phys)
    }

    fn page_mut(&mut self, phys: PhysAddr) -> Option<&mut [u8]> {
        self.pages_mut([phys]).ok().map(|[p]| p)
    }

    fn pages_mut<const K: usize>(
        &mut self,
        phys: [PhysAddr; K],
    ) -> Result<[&mut [u8]; K], PhysAddr> {
        let mut want = [0usize; K];
        for (k, p) in phys.iter().enumerate() {
            match Pool::index(*p) {
                Some(i) if self.used[i] => {
                    if self.refused() == Some(*p) || want[..k].contains(&i) {
                        return Err(*p);
                    }
                    want[k] = i;
                }
                _ => {
                    self.strays.push(p.get());
                    return Err(*p);
                }
            }
        }
        let mut found: Vec<(usize, &mut [u8])> = self
            .pages
            .iter_mut()
            .enumerate()
            .filter_map(|(i, page)| {
                let k = want.iter().position(|&w| w == i)?;
                Some((k, &mut page[..]))
            })
            .collect();
        found.sort_unstable_by_key(|(k, _)| *k);
        let pages: Vec<&mut [u8]> = found.into_iter().map(|(_, p)| p).collect();
        Ok(pages
            .try_into()
            .unwrap_or_else(|_| unreachable!("one page per address")))
    }

    fn free_page(&mut self, phys: PhysAddr) {
        if let Some(i) = Pool::index(phys) {
            self.used[i] = false;
            self.order.retain(|p| *p != phys);
        }
    }
}

impl Memory for Pool {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        let i = Pool::index(phys)?;
        (size == crate::PS && self.used[i]).then(|| &self.pages[i][..])
    }
}

/// The C callbacks over a `Pool` at `ctx`.
unsafe extern "C" fn pool_alloc(ctx: *mut c_void) -> u64 {
    // SAFETY: `ctx` is the live pool of a `CWriter`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    pool.alloc_page().map_or(0, PhysAddr::get)
}

unsafe extern "C" fn pool_page(ctx: *mut c_void, phys: u64) -> *mut u8 {
    // SAFETY: as in `pool_alloc`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    pool.page_mut(PhysAddr::new(phys))
        .map_or(ptr::null_mut(), |p| p.as_mut_ptr())
}

unsafe extern "C" fn pool_free(ctx: *mut c_void, phys: u64) {
    // SAFETY: as in `pool_alloc`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    pool.free_page(PhysAddr::new(phys));
}

/// An object at a fixed address, as C holds one: the library gets
/// [`ptr`](Self::ptr), and the harness reaches the object between calls
/// through short borrows of that same pointer (re-borrowing a `Box` would,
/// in Rust's aliasing model, invalidate the pointers the library keeps).
struct Leaked<T: ?Sized>(*mut T);

impl<T: ?Sized> Leaked<T> {
    fn new(b: Box<T>) -> Self {
        Leaked(Box::into_raw(b))
    }

    fn ptr(&self) -> *mut T {
        self.0
    }

    fn get(&self) -> &T {
        // SAFETY: `new` leaked a live `T` for this `Leaked`; no library
        // call runs while the harness borrows it.
        unsafe { &*self.0 }
    }

    fn get_mut(&mut self) -> &mut T {
        // SAFETY: as in `get`.
        unsafe { &mut *self.0 }
    }
}

impl<T: ?Sized> Drop for Leaked<T> {
    fn drop(&mut self) {
        // SAFETY: leaked by `new`, freed once, when no library call can
        // use it any more (the harness drops it at the end of the run).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A C writer: its state and its pool at fixed addresses (as C holds
/// them), and its device index storage.
struct CWriter {
    state: Leaked<IommuFlbWriter>,
    pool: Leaked<Pool>,
    index: Leaked<[u64; INDEX_WORDS]>,
}

/// Devices the index of an indexed writer holds.
const INDEX_DEVICES: usize = 24;
const INDEX_WORDS: usize = (2 * INDEX_DEVICES + 1) * 2;

impl CWriter {
    fn new() -> CWriter {
        CWriter {
            state: Leaked::new(Box::new(IommuFlbWriter {
                opaque: [0; IOMMU_FLB_WRITER_WORDS],
            })),
            pool: Leaked::new(Box::new(Pool::new())),
            index: Leaked::new(Box::new([0u64; INDEX_WORDS])),
        }
    }

    /// The writer state, as C passes it.
    fn w(&self) -> *mut IommuFlbWriter {
        self.state.ptr()
    }

    fn pool(&self) -> &Pool {
        self.pool.get()
    }

    fn pool_mut(&mut self) -> &mut Pool {
        self.pool.get_mut()
    }

    fn alloc(&self) -> IommuFlbPageAlloc {
        IommuFlbPageAlloc {
            alloc_page: Some(pool_alloc),
            page: Some(pool_page),
            free_page: Some(pool_free),
            ctx: self.pool.ptr().cast(),
            page_size: PAGE_SIZE,
            crc32: None,
        }
    }

    /// `iommu_flb_writer_start()` or `_indexed()`; the root on success.
    fn start(&mut self, indexed: bool) -> (c_int, u64) {
        let alloc = self.alloc();
        let mut root = 0;
        // SAFETY: the writer, pool and index live as long as `self`.
        let r = unsafe {
            if indexed {
                let size = iommu_flb_writer_index_size(INDEX_DEVICES);
                assert!(size <= INDEX_WORDS * 8);
                iommu_flb_writer_start_indexed(
                    self.w(),
                    &alloc,
                    self.index.ptr().cast(),
                    size,
                    &mut root,
                )
            } else {
                iommu_flb_writer_start(self.w(), &alloc, &mut root)
            }
        };
        (r, root)
    }

    fn last_error(&self) -> IommuFlbError {
        let mut err = blank_error();
        // SAFETY: the writer state lives.
        let r = unsafe { iommu_flb_writer_last_error(self.w(), &mut err) };
        assert_eq!(r, 0, "last_error of a started writer");
        err
    }
}

fn blank_error() -> IommuFlbError {
    // SAFETY: the library writes every field of an `IommuFlbError` on the
    // calls this is passed to; zero is a valid value of each (the field
    // pointer NULL).
    unsafe { core::mem::zeroed() }
}

fn message(err: &IommuFlbError) -> String {
    // SAFETY: the library always NUL-terminates the message.
    let c = unsafe { CStr::from_ptr(err.message.as_ptr()) };
    c.to_string_lossy().into_owned()
}

/// The log line C carries for `text`: truncated to the buffer.
fn clipped(text: String) -> String {
    text.chars().take(IOMMU_FLB_MESSAGE_LEN - 1).collect()
}

/// Checks a C writer call's result against the Rust writer's.
fn same_result(what: &str, rc: c_int, err: &IommuFlbError, want: Result<(), &WriteError>) {
    count(|s| {
        s.writer_calls += 1;
        s.writer_refusals += u32::from(want.is_err());
    });
    match want {
        Ok(()) => {
            assert_eq!(rc, 0, "{what}: C refused, Rust did not: {}", message(err));
            assert_eq!(err.kind, 0, "{what}: last error after a success");
        }
        Err(e) => {
            assert_eq!(rc, e.errno(), "{what}: errno for {e}");
            assert_eq!(err.error, rc, "{what}: err.error");
            assert_eq!(
                err.kind,
                IommuFlbErrorKind::of_write(e).code(),
                "{what}: kind"
            );
            assert_eq!(message(err), clipped(format!("iommu-flb: {e}")), "{what}");
        }
    }
}

// ---- one writer session ----

/// A preserved object: its C handle, and the Rust writer's (none for one
/// the C writer made after a stale copy was put back).
#[derive(Clone, Copy)]
struct Entry<R> {
    c: IommuFlbHandle,
    r: Option<R>,
}

/// What a session (start to finish or abort) has handed out.
#[derive(Default)]
struct Handles {
    iommus: Vec<(Entry<IommuHandle>, IommuTypeSer)>,
    domains: Vec<Entry<DomainHandle>>,
    devices: Vec<Entry<DeviceHandle>>,
}

impl Handles {
    fn c_of(&self, kind: usize) -> Vec<IommuFlbHandle> {
        match kind {
            0 => self.iommus.iter().map(|(e, _)| e.c).collect(),
            1 => self.domains.iter().map(|e| e.c).collect(),
            _ => self.devices.iter().map(|e| e.c).collect(),
        }
    }
}

/// The writer side between sessions.
struct Writers {
    c: CWriter,
    /// The Rust writer's pool, equal to the C writer's between operations.
    r: Pool,
    /// A second C writer over an identical pool, for foreign handles (see
    /// [`Outer::other_handles`]).
    other: CWriter,
}

fn vendor_of(payload: &IommuPayloadInit) -> IommuHwVendorSer {
    let mut v = IommuHwVendorSer::new_zeroed();
    match payload {
        IommuPayloadInit::Intel(p) => {
            // SAFETY: writing a member of a `Copy` union of plain integers.
            let i = unsafe { &mut v.intel };
            i.phys_addr = p.phys_addr.get().into();
            i.root_table = p.root_table.get().into();
            i.context_tables_bitmap = p.context_tables_bitmap.map(Into::into);
        }
        IommuPayloadInit::Smmuv3(p) => {
            // SAFETY: as above.
            let s = unsafe { &mut v.smmuv3 };
            s.phys_addr = p.phys_addr.get().into();
            s.strtab_base_cfg = p.strtab_base_cfg.into();
            s.l1_strtab_lu_state = p.l1_strtab_lu_state.into();
            s.l2_strtab_lu_states_phys = p.l2_strtab_lu_states_phys.get().into();
        }
    }
    v
}

fn device_ser(d: &DeviceInit) -> IommuDeviceSer {
    let mut x = IommuDeviceSer::new_zeroed();
    x.devid = d.devid.into();
    x.pci_domain_nr = d.pci_domain_nr.into();
    x.dma_owner_token = d.dma_owner_token.into();
    x.domain_iommu_ser.attachment_id = d.attachment_id.into();
    match d.payload {
        DevicePayloadInit::Intel(p) => {
            // SAFETY: writing a member of a `Copy` union of plain integers.
            let i = unsafe { &mut x.vendor.intel };
            i.pasid_table = p.pasid_table.get().into();
            i.max_pasid = p.max_pasid.into();
        }
        DevicePayloadInit::Smmuv3(p) => {
            // SAFETY: as above.
            let s = unsafe { &mut x.vendor.smmuv3 };
            s.l1_cdtab_lu_state = p.l1_cdtab_lu_state.into();
            s.num_l2_cdtables = p.num_l2_cdtables.into();
            s.l2_cdtab_lu_states_phys = p.l2_cdtab_lu_states_phys.get().into();
        }
    }
    x
}

fn domain_init(top: u8, vasz: u8) -> DomainInit {
    DomainInit {
        top_table_phys: PhysAddr::new(u64::from(top) << 12),
        top_level: 4,
        vasz: u32::from(vasz),
        sign_extend: 0,
    }
}

fn domain_ser(d: &DomainInit) -> IommuDomainSer {
    let mut x = IommuDomainSer::new_zeroed();
    x.top_table_phys = d.top_table_phys.get().into();
    x.top_level = d.top_level.into();
    x.vasz = d.vasz.into();
    x.sign_extend = d.sign_extend;
    x
}

/// A session: the C writer and the Rust writer side by side.
struct Session<'a, X: DeviceIndex> {
    c: &'a mut CWriter,
    r: Writer<&'a mut Pool, X>,
    root: u64,
    h: Handles,
    /// The writer's bytes saved by `Snapshot`, and per chain (IOMMU,
    /// domain, device) whether a record was appended to it since.
    snapshot: Option<(Box<IommuFlbWriter>, [bool; 3])>,
    /// Set once a stale copy was put back: per chain, whether a record had
    /// been appended to it between the copy and putting it back (appending
    /// to such a chain must fail: its tail bookkeeping is stale). From
    /// then on the Rust writer is no model of the C writer.
    stale: Option<[bool; 3]>,
}

/// How an operation of a session ended.
enum Next {
    Go,
    Finished,
    Aborted,
}

impl<X: DeviceIndex> Session<'_, X> {
    fn set_fault(&mut self, f: Fault) {
        self.c.pool_mut().fault = f;
        self.r.alloc_mut().fault = f;
    }

    /// After every operation: the C writer asked its page callback only
    /// for pages it was given, and its pages equal the Rust writer's (or,
    /// after a stale copy, form an image the reader accepts).
    fn check(&mut self, what: &str) {
        self.set_fault(Fault::default());
        assert!(
            self.c.pool().strays.is_empty(),
            "{what}: page() asked for {:x?}",
            self.c.pool().strays
        );
        assert!(
            self.r.alloc().strays.is_empty(),
            "{what}: the Rust writer strayed"
        );
        if self.stale.is_some() {
            let root = PhysAddr::new(self.root);
            if let Err(e) = reader::validate_alloc(self.c.pool(), root, &Options::default()) {
                panic!("{what}: after a stale copy, the image is refused: {e}");
            }
        } else {
            assert!(
                self.c.pool().same_as(self.r.alloc()),
                "{what}: the pages differ"
            );
        }
    }

    /// Runs a preserve: on both writers in step, or, after a stale copy,
    /// on the C writer alone.
    fn preserve<R: Copy>(
        &mut self,
        what: &str,
        chain: usize,
        c: impl FnOnce(*mut IommuFlbWriter, *mut IommuFlbHandle) -> c_int,
        r: impl FnOnce(&mut Writer<&mut Pool, X>) -> Result<R, WriteError>,
        phys: impl Fn(R) -> PhysAddr,
    ) -> Option<Entry<R>> {
        let mut out = IommuFlbHandle::default();
        let rc = c(self.c.w(), &mut out);
        if rc == 0
            && let Some((_, appended)) = &mut self.snapshot
        {
            appended[chain] = true;
        }
        match self.stale {
            Some(appended) => {
                if rc != 0 {
                    count(|s| s.stale_refused += u32::from(appended[chain]));
                    return None;
                }
                assert!(
                    !appended[chain],
                    "{what}: appended to a chain a stale copy does not know"
                );
                let taken = self.h.c_of(chain);
                assert!(
                    taken.iter().all(|h| h.phys != out.phys),
                    "{what}: slot {:#x} handed out twice",
                    out.phys
                );
                Some(Entry { c: out, r: None })
            }
            None => {
                let want = r(&mut self.r);
                let err = self.c.last_error();
                same_result(what, rc, &err, want.as_ref().map(|_| ()));
                let got = want.ok()?;
                assert_eq!(out.phys, phys(got).get(), "{what}: handle address");
                Some(Entry {
                    c: out,
                    r: Some(got),
                })
            }
        }
    }

    /// Runs an unpreserve the same way.
    fn unpreserve(
        &mut self,
        what: &str,
        c: impl FnOnce(*mut IommuFlbWriter) -> c_int,
        r: Option<impl FnOnce(&mut Writer<&mut Pool, X>) -> Result<(), WriteError>>,
    ) {
        let rc = c(self.c.w());
        if let (None, Some(r)) = (self.stale, r) {
            let want = r(&mut self.r);
            same_result(what, rc, &self.c.last_error(), want.as_ref().copied());
        }
    }

    fn op(&mut self, op: &CapiOp, outer: &mut Outer) -> Next {
        let w = self.c.w();
        match *op {
            CapiOp::Start { indexed } => {
                let pages = self.c.pool().clone();
                assert_eq!(self.c.start(indexed).0, EBUSY, "start of a started writer");
                count(|s| s.copies_refused += 1);
                assert!(self.c.pool().same_as(&pages), "a refused start took pages");
            }
            CapiOp::Iommu {
                token: t,
                intel,
                fault,
            } => {
                let tok = token(t);
                let payload = iommu_payload(intel, tok);
                let v = vendor_of(&payload);
                let ty = payload.iommu_type();
                self.set_fault(fault);
                let e = self.preserve(
                    "preserve_iommu",
                    0,
                    // SAFETY: a live writer and valid pointers.
                    |w, out| unsafe { iommu_flb_preserve_iommu(w, tok, ty.wire(), &v, out) },
                    |r| r.preserve_iommu(tok, payload),
                    IommuHandle::phys,
                );
                if let Some(e) = e {
                    self.h.iommus.push((e, ty));
                }
            }
            CapiOp::Domain { top, vasz, fault } => {
                let d = domain_init(top, vasz);
                let x = domain_ser(&d);
                self.set_fault(fault);
                let e = self.preserve(
                    "preserve_domain",
                    1,
                    // SAFETY: a live writer and valid pointers.
                    |w, out| unsafe { iommu_flb_preserve_domain(w, &x, out) },
                    |r| r.preserve_domain(d),
                    DomainHandle::phys,
                );
                if let Some(e) = e {
                    self.h.domains.push(e);
                }
            }
            CapiOp::Device {
                seg,
                devid,
                domain,
                iommu,
                attachment,
                fault,
            } => {
                let (Some(dom), Some(&(hw, ty))) = (
                    pick(&self.h.domains, domain).copied(),
                    pick(&self.h.iommus, iommu),
                ) else {
                    return Next::Go;
                };
                // C reads the union member of the IOMMU's type, so the
                // payload always matches it.
                let intel = ty == IommuTypeSer::IommuIntel;
                let d = DeviceInit {
                    pci_domain_nr: u32::from(seg % 4),
                    devid: u32::from(devid),
                    dma_owner_token: u64::from(devid) ^ 0xd0d0,
                    attachment_id: u64::from(attachment % 3),
                    payload: device_payload(intel, seg % 4, u16::from(devid)),
                };
                let x = device_ser(&d);
                self.set_fault(fault);
                let refs = (dom.r, hw.r);
                let e = self.preserve(
                    "preserve_device",
                    2,
                    // SAFETY: a live writer and valid pointers.
                    |w, out| unsafe { iommu_flb_preserve_device(w, &x, &dom.c, &hw.c, out) },
                    |r| match refs {
                        (Some(dr), Some(hr)) => r.preserve_device(d, dr, hr),
                        _ => unreachable!("no Rust handle outside a stale session"),
                    },
                    DeviceHandle::phys,
                );
                if let Some(e) = e {
                    self.h.devices.push(e);
                }
            }
            CapiOp::UnDevice(i, fault) => {
                let Some(e) = pick(&self.h.devices, i).copied() else {
                    return Next::Go;
                };
                self.set_fault(fault);
                self.unpreserve(
                    "unpreserve_device",
                    // SAFETY: a live writer and a valid pointer.
                    |w| unsafe { iommu_flb_unpreserve_device(w, &e.c) },
                    e.r.map(|h| move |r: &mut Writer<&mut Pool, X>| r.unpreserve_device(h)),
                );
            }
            CapiOp::UnDomain(i, fault) => {
                let Some(e) = pick(&self.h.domains, i).copied() else {
                    return Next::Go;
                };
                self.set_fault(fault);
                self.unpreserve(
                    "unpreserve_domain",
                    // SAFETY: as above.
                    |w| unsafe { iommu_flb_unpreserve_domain(w, &e.c) },
                    e.r.map(|h| move |r: &mut Writer<&mut Pool, X>| r.unpreserve_domain(h)),
                );
            }
            CapiOp::UnIommu(i, fault) => {
                let Some(&(e, _)) = pick(&self.h.iommus, i) else {
                    return Next::Go;
                };
                self.set_fault(fault);
                self.unpreserve(
                    "unpreserve_iommu",
                    // SAFETY: as above.
                    |w| unsafe { iommu_flb_unpreserve_iommu(w, &e.c) },
                    e.r.map(|h| move |r: &mut Writer<&mut Pool, X>| r.unpreserve_iommu(h)),
                );
            }
            CapiOp::Misuse { which, spoil, call } => self.misuse(which, spoil, call, outer),
            CapiOp::CopyCall => {
                let copy = copy_of(w);
                let copy = Box::into_raw(copy);
                let x = domain_ser(&domain_init(1, 48));
                let mut out = IommuFlbHandle::default();
                let mut err = blank_error();
                // SAFETY: `copy` is a live struct (a byte copy of the writer).
                unsafe {
                    assert_eq!(
                        iommu_flb_preserve_domain(copy, &x, &mut out),
                        EINVAL,
                        "copy preserved"
                    );
                    assert_eq!(iommu_flb_writer_last_error(copy, &mut err), EINVAL);
                    assert_eq!(iommu_flb_writer_abort(copy), EINVAL, "copy aborted");
                    drop(Box::from_raw(copy));
                }
                count(|s| s.copies_refused += 1);
            }
            CapiOp::Snapshot => self.snapshot = Some((copy_of(w), [false; 3])),
            CapiOp::PutBack => {
                if let Some((saved, appended)) = self.snapshot.take() {
                    // SAFETY: two live structs of the same size.
                    unsafe { ptr::copy_nonoverlapping(&*saved, w, 1) };
                    let was = self.stale.unwrap_or_default();
                    self.stale = Some([0, 1, 2].map(|k| was[k] || appended[k]));
                }
            }
            CapiOp::Counts => {
                let mut got = IommuFlbCounts::default();
                // SAFETY: a live writer.
                assert_eq!(unsafe { iommu_flb_writer_counts(w, &mut got) }, 0);
                if self.stale.is_none() {
                    let c = self.r.counts();
                    let want = (c.pages, c.iommus, c.live_iommus, c.domains, c.devices);
                    assert_eq!(
                        (
                            got.pages,
                            got.iommus,
                            got.live_iommus,
                            got.domains,
                            got.devices
                        ),
                        want
                    );
                }
            }
            CapiOp::Finish => {
                let mut root = 0;
                // SAFETY: a live writer.
                assert_eq!(unsafe { iommu_flb_writer_finish(w, &mut root) }, 0);
                assert_eq!(root, self.root);
                return Next::Finished;
            }
            CapiOp::Abort => {
                // SAFETY: a live writer.
                assert_eq!(unsafe { iommu_flb_writer_abort(w) }, 0);
                return Next::Aborted;
            }
            _ => outer.reader_op(op, &*self.c),
        }
        self.check(&format!("{op:?}"));
        Next::Go
    }

    /// A spoiled handle: refused exactly as documented, nothing changed.
    fn misuse(&mut self, which: u8, spoil: Spoil, call: u8, outer: &Outer) {
        let kind = usize::from(which % 3);
        let pool: Vec<IommuFlbHandle> = match spoil {
            Spoil::OtherWriter => vec![outer.other_handles[kind]],
            Spoil::EarlierStart(_) => outer.old[kind].clone(),
            _ => self.h.c_of(kind),
        };
        let Some(mut h) = pick(&pool, which / 3).copied() else {
            return;
        };
        // The kind the call expects, and the refusal.
        let mut expect_kind = kind;
        match spoil {
            Spoil::Moved(n) => h.phys = h.phys.wrapping_add(8 * (u64::from(n) + 1)),
            Spoil::Swapped(n) => {
                let Some(other) = pick(&pool, n) else { return };
                if other.phys == h.phys {
                    return;
                }
                h.phys = other.phys;
            }
            Spoil::Flipped(n) => h.check ^= 1 << (n % 64),
            Spoil::WrongKind => expect_kind = (kind + 1) % 3,
            Spoil::OtherWriter | Spoil::EarlierStart(_) => {}
        }
        let kinds = [ObjectKind::Iommu, ObjectKind::Domain, ObjectKind::Device];
        let want = (spoil != Spoil::WrongKind).then_some(WriteError::ForeignHandle {
            kind: kinds[expect_kind],
            phys: PhysAddr::new(h.phys),
        });
        let w = self.c.w();
        let genuine_domain = self.h.domains.first().map(|e| e.c);
        let genuine_iommu = self.h.iommus.first().map(|(e, _)| e.c);
        let x = IommuDeviceSer::new_zeroed();
        let mut out = IommuFlbHandle::default();
        // SAFETY: a live writer and valid pointers.
        let rc = unsafe {
            match (expect_kind, call % 2, genuine_domain, genuine_iommu) {
                (0, 1, Some(d), _) => iommu_flb_preserve_device(w, &x, &d, &h, &mut out),
                (1, 1, _, Some(i)) => iommu_flb_preserve_device(w, &x, &h, &i, &mut out),
                (0, ..) => iommu_flb_unpreserve_iommu(w, &h),
                (1, ..) => iommu_flb_unpreserve_domain(w, &h),
                _ => iommu_flb_unpreserve_device(w, &h),
            }
        };
        let err = self.c.last_error();
        match want {
            Some(e) => same_result("spoiled handle", rc, &err, Err(&e)),
            None => assert_eq!((rc, err.kind), (EINVAL, 0), "handle of the wrong kind"),
        }
        count(|s| s.misuse_refused += 1);
    }
}

fn pick<T>(v: &[T], i: u8) -> Option<&T> {
    (!v.is_empty()).then(|| &v[usize::from(i) % v.len()])
}

/// A byte copy of the writer at `w`, as C's assignment makes.
fn copy_of(w: *const IommuFlbWriter) -> Box<IommuFlbWriter> {
    let mut b = Box::new(IommuFlbWriter {
        opaque: [0; IOMMU_FLB_WRITER_WORDS],
    });
    // SAFETY: two live structs of the same size.
    unsafe { ptr::copy_nonoverlapping(w, &mut *b, 1) };
    b
}

// ---- the reader side ----

/// The memory the reader side reads: pages by address, with the page-call
/// failure of the current validation, counted the same way for the C and
/// the Rust reader.
struct RMem {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE]>>,
    root: u64,
    calls: Cell<u64>,
    fail_at: Cell<Option<u64>>,
    unaligned: Cell<bool>,
}

impl RMem {
    fn get(&self, phys: u64) -> Option<&[u8; PAGE_SIZE]> {
        if !phys.is_multiple_of(PAGE_SIZE as u64) {
            self.unaligned.set(true);
            return None;
        }
        let n = self.calls.get();
        self.calls.set(n + 1);
        if self.fail_at.get() == Some(n) {
            return None;
        }
        self.pages.get(&phys).map(|p| &**p)
    }

    fn arm(&self, fail_at: Option<u64>) {
        self.calls.set(0);
        self.fail_at.set(fail_at);
    }
}

impl Memory for RMem {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if size != crate::PS {
            return None;
        }
        self.get(phys.get()).map(|p| &p[..])
    }
}

unsafe extern "C" fn rmem_page(ctx: *mut c_void, phys: u64) -> *const u8 {
    // SAFETY: `ctx` is the live `RMem` of the `Outer`.
    let m = unsafe { &*ctx.cast::<RMem>() };
    m.get(phys).map_or(ptr::null(), |p| p.as_ptr())
}

/// What a validated image holds, by the Rust reader.
#[derive(Clone, Debug, Default)]
struct Expect {
    /// Per walk (IOMMUs, domains, devices, pages): the addresses in order.
    walks: [Vec<u64>; 4],
    iommus: Vec<(u64, u64, u64)>,
    devices: Vec<(u64, u32, u32, u64, u64)>,
    info: [u64; 8],
}

impl Expect {
    fn of<M: Memory + ?Sized>(image: &reader::Image<'_, '_, M>) -> Expect {
        let iommus: Vec<_> = image
            .iommus()
            .map(|m| (m.phys().get(), m.token(), m.iommu_type().wire()))
            .collect();
        let devices: Vec<_> = image
            .devices()
            .map(|d| {
                let (dom, hw) = (d.domain().phys().get(), d.iommu().phys().get());
                (d.phys().get(), d.segment(), d.devid(), dom, hw)
            })
            .collect();
        let n = |x: usize| x as u64;
        Expect {
            walks: [
                iommus.iter().map(|i| i.0).collect(),
                image.domains().map(|d| d.phys().get()).collect(),
                devices.iter().map(|d| d.0).collect(),
                image.pages().map(PhysAddr::get).collect(),
            ],
            info: [
                image.root_phys().get(),
                image.version(),
                n(image.page_count()),
                n(image.chain_pages(Chain::Iommu)),
                n(image.chain_pages(Chain::Domain)),
                n(image.chain_pages(Chain::Device)),
                n(image.live_iommus()),
                n(image.live_devices()),
            ],
            iommus,
            devices,
        }
    }
}

/// What a scratch holds.
#[derive(Clone, Debug)]
enum Held {
    /// Never validated into: zeroes.
    Nothing,
    /// The last validation into it failed.
    Dead,
    /// An image; `generation` tells validations apart; `changed` once its memory
    /// was changed in a way the contract forbids (then it is not called).
    Image {
        generation: u64,
        expect: Box<Expect>,
        changed: bool,
    },
}

const SCRATCH_WORDS: usize = 1 << 13;
const CURSORS: usize = 4;

/// The reader side, and what the writer side needs between sessions.
struct Outer {
    mem: Leaked<RMem>,
    scratch: [Leaked<[u64]>; 2],
    held: [Held; 2],
    cursors: Leaked<[IommuFlbCursor; CURSORS]>,
    /// Per cursor: the (generation, walk) it is tied to, and how many
    /// records it returned.
    cursor_model: [(Option<(u64, usize)>, usize); CURSORS],
    gens: u64,
    /// The other writer's IOMMU, domain and device: the addresses the
    /// first writer's first session hands out, under another key.
    other_handles: [IommuFlbHandle; 3],
    /// Handles of ended sessions, per kind.
    old: [Vec<IommuFlbHandle>; 3],
    /// The root of the writer's latest session, for `Publish`.
    root: Option<u64>,
}

/// Bytes of the image header in front of the scratch elements.
fn header_bytes(size: usize, elems: usize) -> usize {
    size - elems * size_of::<ScratchElem>()
}

impl Outer {
    fn mem(&self) -> &RMem {
        self.mem.get()
    }

    fn mem_mut(&mut self) -> &mut RMem {
        self.mem.get_mut()
    }

    fn c_mem(&self) -> IommuFlbMem {
        IommuFlbMem {
            page: Some(rmem_page),
            ctx: self.mem.ptr().cast(),
            page_size: PAGE_SIZE,
            crc32: None,
        }
    }

    /// Every image is left alone from now on: its memory changed.
    fn changed(&mut self) {
        for h in &mut self.held {
            if let Held::Image { changed, .. } = h {
                *changed = true;
            }
        }
    }

    fn img(&self, s: usize) -> *const IommuFlbImage {
        self.scratch[s].ptr().cast_const().cast()
    }

    /// The errno every call on scratch `s` gives before it reads anything,
    /// or `None` for an image that may be called; `Some(None)` to skip.
    fn refused(&self, s: usize) -> Option<Option<c_int>> {
        match &self.held[s] {
            Held::Nothing => Some(Some(EINVAL)),
            Held::Dead => Some(Some(ESTALE)),
            Held::Image { changed: true, .. } => Some(None),
            Held::Image { .. } => None,
        }
    }

    fn reader_op(&mut self, op: &CapiOp, writer: &CWriter) {
        match *op {
            CapiOp::Publish => {
                let Some(root) = self.root else { return };
                self.changed();
                let pool = writer.pool();
                let m = self.mem_mut();
                m.pages.clear();
                for (i, used) in pool.used.iter().enumerate() {
                    if *used {
                        m.pages
                            .insert(POOL_BASE + (i * PAGE_SIZE) as u64, pool.pages[i].clone());
                    }
                }
                m.root = root;
            }
            CapiOp::Validate {
                scratch,
                mode,
                delta,
                mem_fail,
            } => self.validate(usize::from(scratch % 2), mode & 1 == 1, delta, mem_fail),
            CapiOp::Walk {
                scratch,
                cursor,
                kind,
                steps,
            } => {
                let (s, c, k) = (
                    usize::from(scratch % 2),
                    usize::from(cursor) % CURSORS,
                    usize::from(kind % 4),
                );
                for _ in 0..steps.min(64) {
                    if !self.step(s, c, k) {
                        break;
                    }
                }
            }
            CapiOp::ResetCursor(c) => {
                let c = usize::from(c) % CURSORS;
                // SAFETY: leaked by `run`; no library call runs.
                unsafe { (*self.cursors.ptr())[c] = IommuFlbCursor::default() };
                self.cursor_model[c] = (None, 0);
            }
            CapiOp::Lookup {
                scratch,
                which,
                index,
            } => self.lookup(usize::from(scratch % 2), which % 5, index),
            CapiOp::Restore { scratch, fail_at } => self.restore(usize::from(scratch % 2), fail_at),
            CapiOp::CopyImage(s) => {
                let s = usize::from(s % 2);
                let want = match self.refused(s) {
                    Some(None) => return,
                    Some(Some(e)) => e,
                    None => EINVAL,
                };
                let copy: Vec<u64> = self.scratch[s].get().to_vec();
                let mut info = IommuFlbImageInfo::default();
                let mut cur = IommuFlbCursor::default();
                let mut r = IommuFlbDomainRef {
                    ser: ptr::null(),
                    ser_v2: ptr::null(),
                    phys: 0,
                };
                let img: *const IommuFlbImage = copy.as_ptr().cast();
                // SAFETY: `copy` lives.
                unsafe {
                    assert_eq!(
                        iommu_flb_image_info(img, &mut info),
                        want,
                        "a copy of an image"
                    );
                    assert_eq!(iommu_flb_next_domain(img, &mut cur, &mut r), want);
                }
                count(|s| s.image_copies += 1);
            }
            CapiOp::SetIncoming(n) => {
                let root = PhysAddr::new(self.mem().root);
                self.mem().arm(None);
                let opts = Options {
                    mode: Mode::Restored,
                    ..Options::default()
                };
                let Ok(owned) = reader::validate_alloc(self.mem(), root, &opts) else {
                    return;
                };
                let devices: Vec<u64> = owned.image().devices().map(|d| d.phys().get()).collect();
                drop(owned);
                let Some(&phys) = pick(&devices, n) else {
                    return;
                };
                // The flags word of the record.
                let page = self
                    .mem_mut()
                    .pages
                    .get_mut(&(phys & !0xfff))
                    .expect("a device's page");
                let at = (phys & 0xfff) as usize + 4;
                let flags = u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"));
                page[at..at + 4].copy_from_slice(&(flags | IOMMU_SER_FLAG_INCOMING).to_le_bytes());
            }
            CapiOp::Corrupt { page, byte, bit } => {
                let m = self.mem_mut();
                let keys: Vec<u64> = m.pages.keys().copied().collect();
                let Some(k) = pick(&keys, page).copied() else {
                    return;
                };
                m.pages.get_mut(&k).expect("a page")[usize::from(byte) % PAGE_SIZE] ^=
                    1 << (bit % 8);
                self.changed();
            }
            _ => {}
        }
        assert!(
            !self.mem().unaligned.get(),
            "the reader asked for an unaligned page"
        );
    }

    fn validate(&mut self, s: usize, restored: bool, delta: i8, mem_fail: u8) {
        let m = self.mem();
        let root = m.root;
        let opts = Options {
            mode: if restored {
                Mode::Restored
            } else {
                Mode::Handover
            },
            ..Options::default()
        };
        let cm = self.c_mem();
        let mut size = 0usize;
        let mut err = blank_error();
        m.arm(None);
        // SAFETY: valid pointers; the memory lives.
        let rc = unsafe { iommu_flb_scratch_size(&cm, root, &mut size, &mut err) };
        let want = reader::scratch_len(m, PhysAddr::new(root), &Options::default());
        let elem = size_of::<ScratchElem>();
        let (elems, size) = match &want {
            Ok(n) => {
                assert_eq!(rc, 0, "scratch_size: {}", message(&err));
                let header = header_bytes(size, *n);
                let elems = n.saturating_add_signed(isize::from(delta));
                (elems, header + elems * elem)
            }
            Err(e) => {
                assert_eq!(
                    (rc, message(&err)),
                    (e.errno(), clipped(e.to_string())),
                    "scratch_size"
                );
                (0, 0)
            }
        };
        if size > SCRATCH_WORDS * 8 {
            return;
        }
        let fail = mem_fail.checked_sub(1).map(u64::from);
        // The Rust reader, with the same page-call failure.
        m.arm(fail);
        let mut elems_r = vec![ScratchElem::default(); elems];
        // The failure is for validation: what the image holds is read with
        // the memory whole again.
        let expect = reader::validate(m, PhysAddr::new(root), &opts, &mut elems_r).map(|i| {
            m.arm(None);
            Expect::of(&i)
        });
        m.arm(fail);
        let mut img = ptr::null();
        let mode = u32::from(restored);
        // SAFETY: the scratch holds `SCRATCH_WORDS * 8 >= size` bytes.
        let rc = unsafe {
            iommu_flb_validate(
                &cm,
                root,
                mode,
                self.scratch[s].ptr().cast(),
                size,
                &mut img,
                &mut err,
            )
        };
        m.arm(None);
        match expect {
            Ok(expect) => {
                assert_eq!(rc, 0, "validate: {}", message(&err));
                assert_eq!(img, self.img(s), "the image is at the start of its scratch");
                count(|s| s.validated += 1);
                self.gens += 1;
                self.held[s] = Held::Image {
                    generation: self.gens,
                    expect: Box::new(expect),
                    changed: false,
                };
            }
            Err(e) => {
                let text = match e.kind() {
                    ErrorKind::ScratchTooSmall { needed, .. } => {
                        let header = size - elems * elem;
                        format!(
                            "iommu-flb: root at {root:#x}: scratch has {size} bytes, image needs {}",
                            header + needed * elem
                        )
                    }
                    _ => e.to_string(),
                };
                assert_eq!((rc, message(&err)), (e.errno(), clipped(text)), "validate");
                assert!(img.is_null());
                count(|s| {
                    s.validated += 1;
                    s.refused += 1;
                });
                if size >= 8 {
                    self.held[s] = Held::Dead;
                }
            }
        }
    }

    /// One `iommu_flb_next_*()` call; false once the walk ended or failed.
    fn step(&mut self, s: usize, c: usize, k: usize) -> bool {
        let img = self.img(s);
        // SAFETY: leaked by `run`; the library borrows it for the call only.
        let cur = unsafe { &mut (*self.cursors.ptr())[c] };
        let mut hw = IommuFlbIommuRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut dom = IommuFlbDomainRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut dev = IommuFlbDeviceRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut page = 0u64;
        let want = match self.refused(s) {
            Some(None) => return false,
            Some(Some(e)) => Err(e),
            None => {
                let Held::Image {
                    generation, expect, ..
                } = &self.held[s]
                else {
                    unreachable!()
                };
                let model = &mut self.cursor_model[c];
                match model.0 {
                    Some((g, _)) if g != *generation => Err(ESTALE),
                    Some((_, walk)) if walk != k => Err(EINVAL),
                    _ => {
                        model.0 = Some((*generation, k));
                        let list = &expect.walks[k];
                        Ok(list.get(model.1).copied())
                    }
                }
            }
        };
        // SAFETY: the scratch and the memory live; valid pointers.
        let (rc, phys, ser) = unsafe {
            match k {
                0 => (
                    iommu_flb_next_iommu(img, cur, &mut hw),
                    hw.phys,
                    hw.ser.cast::<u8>(),
                ),
                1 => (
                    iommu_flb_next_domain(img, cur, &mut dom),
                    dom.phys,
                    dom.ser.cast(),
                ),
                2 => (
                    iommu_flb_next_device(img, cur, &mut dev),
                    dev.phys,
                    dev.ser.cast(),
                ),
                _ => (iommu_flb_next_page(img, cur, &mut page), page, ptr::null()),
            }
        };
        match want {
            Err(e) => {
                assert_eq!(rc, e, "walk {k} on scratch {s}");
                count(|s| s.stale += u32::from(e == ESTALE));
                false
            }
            Ok(Some(p)) => {
                count(|s| s.walked += 1);
                assert_eq!((rc, phys), (1, p), "walk {k} on scratch {s}");
                if k < 3 {
                    assert_eq!(ser, self.record(p), "the record is in its page");
                }
                self.cursor_model[c].1 += 1;
                true
            }
            Ok(None) => {
                assert_eq!((rc, phys), (0, 0), "end of walk {k}");
                false
            }
        }
    }

    /// Where the record at `phys` is in the reader's memory.
    fn record(&self, phys: u64) -> *const u8 {
        let page = self
            .mem()
            .pages
            .get(&(phys & !0xfff))
            .expect("a page of the image");
        page[(phys & 0xfff) as usize..].as_ptr()
    }

    fn lookup(&mut self, s: usize, which: u8, index: u8) {
        let img = self.img(s);
        let (want_rc, expect) = match self.refused(s) {
            Some(None) => return,
            Some(Some(e)) => (e, None),
            None => match &self.held[s] {
                Held::Image { expect, .. } => (0, Some(Expect::clone(expect))),
                _ => unreachable!(),
            },
        };
        let mut hw = IommuFlbIommuRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut dom = IommuFlbDomainRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut dev = IommuFlbDeviceRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let iommu = expect
            .as_ref()
            .and_then(|e| pick(&e.iommus, index).copied());
        let device = expect
            .as_ref()
            .and_then(|e| pick(&e.devices, index).copied());
        // SAFETY: the scratch and the memory live; valid pointers.
        unsafe {
            match (which, iommu, device) {
                (0, Some((phys, tok, ty)), _) => {
                    assert_eq!(iommu_flb_find_iommu(img, tok, ty, &mut hw), want_rc);
                    assert_eq!(hw.phys, phys);
                }
                (1, _, Some((phys, seg, devid, ..))) => {
                    assert_eq!(iommu_flb_find_device(img, seg, devid, &mut dev), want_rc);
                    assert_eq!(dev.phys, phys);
                }
                (2, _, Some((phys, _, _, d, _))) => {
                    let r = IommuFlbDeviceRef {
                        ser: ptr::null(),
                        ser_v2: ptr::null(),
                        phys,
                    };
                    assert_eq!(iommu_flb_device_domain(img, &r, &mut dom), want_rc);
                    assert_eq!(dom.phys, d);
                }
                (3, _, Some((phys, _, _, _, h))) => {
                    let r = IommuFlbDeviceRef {
                        ser: ptr::null(),
                        ser_v2: ptr::null(),
                        phys,
                    };
                    assert_eq!(iommu_flb_device_iommu(img, &r, &mut hw), want_rc);
                    assert_eq!(hw.phys, h);
                }
                _ if want_rc != 0 => {
                    assert_eq!(
                        iommu_flb_find_device(img, 0, u32::from(index), &mut dev),
                        want_rc
                    );
                }
                _ => {
                    // Keys no live record has: a segment above those used,
                    // an IOMMU record's address as a device.
                    assert_eq!(
                        iommu_flb_find_device(img, 0x100, u32::from(index), &mut dev),
                        ENOENT
                    );
                    assert!(dev.ser.is_null());
                    if let Some((phys, ..)) = iommu {
                        let r = IommuFlbDeviceRef {
                            ser: ptr::null(),
                            ser_v2: ptr::null(),
                            phys,
                        };
                        assert_eq!(iommu_flb_device_domain(img, &r, &mut dom), ENOENT);
                    }
                }
            }
        }
        let mut info = IommuFlbImageInfo::default();
        // SAFETY: as above.
        let rc = unsafe { iommu_flb_image_info(img, &mut info) };
        assert_eq!(rc, want_rc);
        count(|s| match want_rc {
            0 => s.lookups += 1,
            ESTALE => s.stale += 1,
            _ => {}
        });
        if let Some(e) = expect {
            let got = [
                info.root_phys,
                info.version,
                info.pages,
                info.iommu_pages,
                info.domain_pages,
                info.device_pages,
                info.live_iommus,
                info.live_devices,
            ];
            assert_eq!(got, e.info, "image_info");
        }
    }

    fn restore(&mut self, s: usize, fail_at: u8) {
        let (want_rc, pages) = match self.refused(s) {
            Some(None) => return,
            Some(Some(e)) => (e, None),
            None => match &self.held[s] {
                Held::Image { expect, .. } => (0, Some(expect.walks[3].clone())),
                _ => unreachable!(),
            },
        };
        let mut seen = Restoring {
            seen: Vec::new(),
            fail_at: usize::from(fail_at),
        };
        let mut status = IommuFlbRestoreStatus {
            restored: 0,
            failed_phys: 0,
            ret: 0,
        };
        let ctx = ptr::from_mut(&mut seen).cast();
        // SAFETY: `seen` outlives the call; the scratch and memory live.
        let rc = unsafe { iommu_flb_restore(self.img(s), Some(restore_page), ctx, &mut status) };
        let Some(pages) = pages else {
            assert_eq!(rc, want_rc, "restore on scratch {s}");
            assert!(seen.seen.is_empty());
            count(|s| s.stale += u32::from(want_rc == ESTALE));
            return;
        };
        count(|s| s.lookups += 1);
        if seen.fail_at < pages.len() {
            let n = seen.fail_at;
            assert_eq!(
                (rc, status.restored, status.failed_phys, status.ret),
                (-5, n as u64, pages[n], -5)
            );
            assert_eq!(seen.seen, pages[..=n]);
        } else {
            assert_eq!(
                (rc, status.restored, status.failed_phys),
                (0, pages.len() as u64, IOMMU_FLB_NONE)
            );
            assert_eq!(seen.seen, pages);
        }
    }
}

struct Restoring {
    seen: Vec<u64>,
    fail_at: usize,
}

unsafe extern "C" fn restore_page(ctx: *mut c_void, phys: u64) -> c_int {
    // SAFETY: `Outer::restore` passes a live `Restoring`.
    let r = unsafe { &mut *ctx.cast::<Restoring>() };
    r.seen.push(phys);
    if r.seen.len() == r.fail_at + 1 { -5 } else { 0 }
}

// ---- the run ----

/// Runs a session started with `index` on both writers until it ends or
/// the input does.
fn session<X: DeviceIndex>(
    ops: &mut std::slice::Iter<'_, CapiOp>,
    w: &mut Writers,
    outer: &mut Outer,
    indexed: bool,
    index: X,
) {
    let (rc, root) = w.c.start(indexed);
    let r = Writer::with_index(&mut w.r, index);
    let r = match r {
        Ok(r) => {
            assert_eq!(rc, 0, "start: {}", message(&w.c.last_error()));
            assert_eq!(root, r.root().get());
            r
        }
        Err(e) => {
            same_result("start", rc, &w.c.last_error(), Err(&e));
            return;
        }
    };
    outer.root = Some(root);
    let mut s = Session {
        c: &mut w.c,
        r,
        root,
        h: Handles::default(),
        snapshot: None,
        stale: None,
    };
    let mut end = Next::Go;
    for op in ops.by_ref() {
        end = s.op(op, outer);
        if !matches!(end, Next::Go) {
            break;
        }
    }
    if let Next::Go = end {
        // The input ended first.
        // SAFETY: a live writer.
        assert_eq!(unsafe { iommu_flb_writer_abort(s.c.w()) }, 0);
    }
    let Session { c, r, h, stale, .. } = s;
    for (k, hs) in [0, 1, 2].map(|k| h.c_of(k)).into_iter().enumerate() {
        outer.old[k].extend(hs);
    }
    let _ = c;
    if stale.is_none() {
        // The Rust writer ends as the C one did, on the same pages.
        match end {
            Next::Finished => assert_eq!(r.finish().0.get(), root),
            _ => drop(r.abort()),
        }
        assert!(
            w.c.pool().same_as(&w.r),
            "the writers ended on different pages"
        );
    } else {
        // No model since the stale copy: the Rust writer's pool follows
        // the C one's from here.
        drop(r);
        w.r = w.c.pool().clone();
    }
}

/// Target `capi`; see the [module docs](self). Returns what it exercised.
pub fn run(input: &CapiInput) -> Stats {
    STATS.with(|c| c.set(Stats::default()));
    let mut w = Writers {
        c: CWriter::new(),
        r: Pool::new(),
        other: CWriter::new(),
    };
    let other_handles = other_writer(&mut w.other);
    let mem = Leaked::new(Box::new(RMem {
        pages: BTreeMap::new(),
        root: 0,
        calls: Cell::new(0),
        fail_at: Cell::new(None),
        unaligned: Cell::new(false),
    }));
    let scratch = [0, 1].map(|_| Leaked::new(vec![0u64; SCRATCH_WORDS].into_boxed_slice()));
    let cursors = Leaked::new(Box::new([IommuFlbCursor::default(); CURSORS]));
    let mut outer = Outer {
        mem,
        scratch,
        held: [Held::Nothing, Held::Nothing],
        cursors,
        cursor_model: [(None, 0); CURSORS],
        gens: 0,
        other_handles,
        old: Default::default(),
        root: None,
    };
    let mut ops = input.ops.iter();
    while let Some(op) = ops.next() {
        match *op {
            CapiOp::Start { indexed: false } => {
                session(&mut ops, &mut w, &mut outer, false, NoIndex)
            }
            CapiOp::Start { indexed: true } => {
                let mut slots = vec![IndexSlot::empty(); 2 * INDEX_DEVICES + 1];
                session(
                    &mut ops,
                    &mut w,
                    &mut outer,
                    true,
                    SliceIndex::new(&mut slots),
                );
            }
            CapiOp::Iommu { .. } | CapiOp::Domain { .. } | CapiOp::Finish | CapiOp::Abort => {
                // No writer is started: every call is refused.
                let x = domain_ser(&domain_init(1, 48));
                let mut out = IommuFlbHandle::default();
                let mut root = 0;
                // SAFETY: the writer's struct lives.
                unsafe {
                    assert_eq!(iommu_flb_preserve_domain(w.c.w(), &x, &mut out), EINVAL);
                    assert_eq!(iommu_flb_writer_finish(w.c.w(), &mut root), EINVAL);
                    assert_eq!(iommu_flb_writer_abort(w.c.w()), EINVAL);
                }
            }
            _ => outer.reader_op(op, &w.c),
        }
    }
    drop(outer);
    STATS.with(Cell::get)
}

/// Starts the other writer and preserves one IOMMU, domain and device.
fn other_writer(c: &mut CWriter) -> [IommuFlbHandle; 3] {
    let (rc, _) = c.start(false);
    assert_eq!(rc, 0);
    let mut h = [IommuFlbHandle::default(); 3];
    let payload = iommu_payload(true, token(0));
    let v = vendor_of(&payload);
    let d = domain_ser(&domain_init(1, 48));
    let x = IommuDeviceSer::new_zeroed();
    // SAFETY: a live writer and valid pointers.
    unsafe {
        assert_eq!(
            iommu_flb_preserve_iommu(c.w(), token(0), 1, &v, &mut h[0]),
            0
        );
        assert_eq!(iommu_flb_preserve_domain(c.w(), &d, &mut h[1]), 0);
        let [hw, dom, dev] = &mut h;
        assert_eq!(iommu_flb_preserve_device(c.w(), &x, dom, hw, dev), 0);
    }
    h
}
