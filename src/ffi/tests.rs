//! The C API driven from Rust, through the same `extern "C"` functions and
//! raw pointers C uses, so that miri checks the boundary's `unsafe` code.
//! (The C programs in tests/c/ drive it from C.)

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::{CStr, c_int, c_void};
use core::ptr;

use super::error::{Fail, IOMMU_FLB_NONE, IommuFlbError, IommuFlbErrorKind, field_names};
use super::*;
use crate::PhysAddr;
/// The pool's page size.
const PAGE_SIZE: usize = 4096;
use crate::abi::v1::{IommuDeviceSer, IommuDomainSer, IommuHwVendorSer};
use crate::error::{ErrorKind, Limit, RefFault};
use crate::writer::{BadPage, DomainField, ObjectKind, PagePurpose, WriteError};
use zerocopy::FromZeros;

const BASE: u64 = 0x4000_0000;
const PAGES: usize = 12;

/// Physical memory of `PAGES` pages at `BASE`, handed out in a scrambled
/// order, readable and writable through the C callbacks.
struct Pool {
    mem: *mut u8,
    /// Owns the memory `mem` points into.
    _backing: Vec<u8>,
    used: [bool; PAGES],
    freed: Vec<u64>,
    /// Addresses the writer's `page` callback was asked for that the
    /// allocator had not handed out (or had taken back): each one breaks
    /// the callback's contract, which in the kernel is plain
    /// phys_to_virt().
    strays: Vec<u64>,
    /// Called by `pool_alloc` before it allocates (to call back into the
    /// library from a callback).
    on_alloc: Option<fn(&mut Pool)>,
    /// A page the writer's `page` callback refuses (a mapping failure).
    refuse: Option<u64>,
    /// What `on_alloc` may use.
    writer: *mut IommuFlbWriter,
    reentered: Vec<c_int>,
    /// Calls of the CRC callback `pool_crc`.
    crc_calls: usize,
    /// The pages the reader's `page` callback was asked for.
    reads: core::cell::RefCell<Vec<u64>>,
    /// XORed into every result of `pool_crc`: a CRC function other than
    /// the library's own.
    crc_flip: u32,
    /// What `iommu_flb_writer_last_error()` on `writer` answered inside
    /// `pool_crc`, when `writer` is set.
    crc_probes: Vec<c_int>,
}

/// A [`Pool`] as C holds one: at one address that every callback's `ctx`
/// is, however often the test reaches it. (A `Box` re-borrowed by the test
/// would, in Rust's aliasing model, invalidate the `ctx` a writer or image
/// holds from an earlier borrow.)
struct PoolRef(*mut Pool);

impl core::ops::Deref for PoolRef {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        // SAFETY: `PoolRef::new` leaked a live `Pool` for it.
        unsafe { &*self.0 }
    }
}

impl core::ops::DerefMut for PoolRef {
    fn deref_mut(&mut self) -> &mut Pool {
        // SAFETY: as above; the borrow is the test's, between library calls.
        unsafe { &mut *self.0 }
    }
}

impl Drop for PoolRef {
    fn drop(&mut self) {
        // SAFETY: leaked by `Pool::new`, freed once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

impl PoolRef {
    fn ctx(&self) -> *mut c_void {
        self.0.cast()
    }

    fn alloc(&self) -> IommuFlbPageAlloc {
        IommuFlbPageAlloc {
            alloc_page: Some(pool_alloc),
            page: Some(pool_page),
            free_page: Some(pool_free),
            ctx: self.ctx(),
            page_size: PAGE_SIZE,
            crc32: None,
        }
    }

    /// [`PoolRef::alloc`] with the CRC callback.
    fn alloc_crc(&self) -> IommuFlbPageAlloc {
        IommuFlbPageAlloc {
            crc32: Some(pool_crc),
            ..self.alloc()
        }
    }

    /// The reader's callbacks, the CRC one included: what the writer's
    /// [`PoolRef::alloc_crc`] wrote, it checks.
    fn mem(&self) -> IommuFlbMem {
        IommuFlbMem {
            crc32: Some(pool_crc),
            ..self.mem_own()
        }
    }

    /// [`PoolRef::mem`] with the library's own CRC.
    fn mem_own(&self) -> IommuFlbMem {
        IommuFlbMem {
            page: Some(pool_read),
            ctx: self.ctx(),
            page_size: PAGE_SIZE,
            crc32: None,
        }
    }
}

impl PoolRef {
    fn new() -> PoolRef {
        let mut backing = vec![0u8; PAGES * PAGE_SIZE];
        let mem = backing.as_mut_ptr();
        PoolRef(Box::into_raw(Box::new(Pool {
            mem,
            _backing: backing,
            used: [false; PAGES],
            freed: Vec::new(),
            strays: Vec::new(),
            refuse: None,
            on_alloc: None,
            writer: ptr::null_mut(),
            reentered: Vec::new(),
            crc_calls: 0,
            reads: core::cell::RefCell::new(Vec::new()),
            crc_flip: 0,
            crc_probes: Vec::new(),
        })))
    }
}

impl Pool {
    fn index(phys: u64) -> Option<usize> {
        let off = phys.checked_sub(BASE)?;
        if off % 4096 != 0 {
            return None;
        }
        let i = usize::try_from(off / 4096).ok()?;
        (i < PAGES).then_some(i)
    }

    /// The page at `phys` if it is handed out, else NULL.
    fn lookup(&self, phys: u64) -> *mut u8 {
        match Pool::index(phys) {
            // SAFETY: page `i` of the pool's memory.
            Some(i) if self.used[i] => unsafe { self.mem.add(i * PAGE_SIZE) },
            _ => ptr::null_mut(),
        }
    }

    fn pages_in_use(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

unsafe extern "C" fn pool_alloc(ctx: *mut c_void) -> u64 {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    if let Some(f) = pool.on_alloc {
        f(pool);
    }
    for k in 0..PAGES {
        let i = (k * 5 + 3) % PAGES;
        if !pool.used[i] {
            pool.used[i] = true;
            // SAFETY: page `i` of the pool's memory.
            unsafe { pool.mem.add(i * PAGE_SIZE).write_bytes(0, PAGE_SIZE) };
            return BASE + (i * PAGE_SIZE) as u64;
        }
    }
    0
}

/// The writer's `page` callback: its contract says it is only asked for
/// pages the allocator handed out, so any other address is recorded.
unsafe extern "C" fn pool_page(ctx: *mut c_void, phys: u64) -> *mut u8 {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    let p = pool.lookup(phys);
    if p.is_null() {
        pool.strays.push(phys);
    }
    if pool.refuse == Some(phys) {
        return ptr::null_mut();
    }
    p
}

/// The reader's `page` callback: any address may come from the image, so
/// it checks the page is one of the pool's (in use) and NULL otherwise.
unsafe extern "C" fn pool_read(ctx: *mut c_void, phys: u64) -> *const u8 {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &*ctx.cast::<Pool>() };
    pool.reads.borrow_mut().push(phys);
    pool.lookup(phys).cast_const()
}

/// The device walk hands out the records as stored: it reads the root's
/// page and the device pages, never a domain's or an IOMMU's (looking them
/// up is iommu_flb_device_domain()'s and iommu_flb_device_iommu()'s).
#[test]
fn device_walk_reads_only_device_pages() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let mut root = 0;
        // SAFETY: valid pointers.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
        let mut scratch = Vec::new();
        let img = validate(&mut pool, root, &mut scratch);
        pool.reads.borrow_mut().clear();
        let mut cur = IommuFlbCursor::default();
        let mut dev = IommuFlbDeviceRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut pages = vec![root & !0xfff];
        // SAFETY: `img` is valid while `scratch` and `pool` live.
        while unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) } == 1 {
            pages.push(dev.phys & !0xfff);
        }
        // Device 3 was unpreserved.
        let want: Vec<u64> = b.dev[..3].iter().map(|d| d.phys & !0xfff).collect();
        assert_eq!(pages[1..], want, "version {version}: every live device");
        let reads = pool.reads.borrow().clone();
        assert!(!reads.is_empty());
        for r in reads {
            assert!(
                pages.contains(&r),
                "version {version}: read {r:#x}, not a device page"
            );
        }
    }
}

unsafe extern "C" fn pool_free(ctx: *mut c_void, phys: u64) {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    if let Some(i) = Pool::index(phys) {
        pool.used[i] = false;
    }
    pool.freed.push(phys);
}

/// What the pool's CRC callback computes: CRC-32 in zlib's convention (the
/// library's own function) natively. Under miri, which checks the
/// boundary's unsafe code rather than CRC arithmetic, a stand-in that reads
/// only the first and last byte (every version-2 call rewrites whole pages'
/// sums, which interpreted costs minutes); writer and reader agree on it,
/// and it differs from the library's own.
fn pool_crc_of(crc: u32, bytes: &[u8]) -> u32 {
    if cfg!(miri) {
        let ends = [bytes.first(), bytes.last()].map(|b| u32::from(b.copied().unwrap_or(0)));
        crc.rotate_left(7) ^ (bytes.len() as u32) ^ ends[0] << 8 ^ ends[1] << 16 ^ 0x5a5a_0000
    } else {
        crate::crc::Crc32::FAST.update(crc, bytes)
    }
}

/// The CRC callback: [`pool_crc_of`], with the pool's `crc_flip` XORed in;
/// counts its calls and, when the pool names a writer, asks it for its last
/// error (a call must be running on it).
unsafe extern "C" fn pool_crc(ctx: *mut c_void, crc: u32, buf: *const c_void, len: usize) -> u32 {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    pool.crc_calls += 1;
    if !pool.writer.is_null() {
        let mut err = new_error();
        // SAFETY: `pool.writer` is the live writer whose callback this is.
        let r = unsafe { iommu_flb_writer_last_error(pool.writer, &mut err) };
        pool.crc_probes.push(r);
    }
    // SAFETY: the library passes `len` readable bytes at `buf`.
    let bytes = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) };
    pool_crc_of(crc, bytes) ^ pool.crc_flip
}

fn new_error() -> IommuFlbError {
    IommuFlbError::none()
}

fn message(err: &IommuFlbError) -> String {
    // SAFETY: the library always NUL-terminates the message.
    let c = unsafe { CStr::from_ptr(err.message.as_ptr()) };
    c.to_str().expect("ASCII message").into()
}

fn field(err: &IommuFlbError) -> Option<&'static str> {
    if err.field.is_null() {
        return None;
    }
    // SAFETY: the library stores static NUL-terminated strings.
    Some(
        unsafe { CStr::from_ptr(err.field) }
            .to_str()
            .expect("ASCII"),
    )
}

/// A started writer with 2 IOMMUs, 3 domains and 4 devices; device 3 is
/// unpreserved. Returns the writer, the root and the handles.
struct Built {
    w: Box<IommuFlbWriter>,
    root: u64,
    hw: [IommuFlbHandle; 2],
    dom: [IommuFlbHandle; 3],
    dev: [IommuFlbHandle; 4],
}

fn intel_vendor(token: u64) -> IommuHwVendorSer {
    let mut v = IommuHwVendorSer::new_zeroed();
    v.intel.phys_addr = token.into();
    v
}

fn build(pool: &mut PoolRef) -> Built {
    build_in(pool, 1)
}

/// The format versions the writer tests run in. Under miri, version 2
/// alone: the boundary's unsafe code is the same in both (the version
/// changes only safe encoding), version 2 also calls the CRC callback, and
/// each version adds over a minute of these tests there.
#[cfg(not(miri))]
const VERSIONS: [u32; 2] = [1, 2];
#[cfg(miri)]
const VERSIONS: [u32; 1] = [2];

/// The generation of the tests' version-2 images.
const GENERATION: u64 = 0x2a;

/// Starts the writer at `w` over `pool` in `version`: version 1 with
/// iommu_flb_writer_start() (or _indexed()), version 2 with
/// iommu_flb_writer_start_config() and the pool's CRC callback. Returns
/// the errno.
fn start_in(
    w: *mut IommuFlbWriter,
    pool: &PoolRef,
    version: u32,
    index: Option<(*mut c_void, usize)>,
    root: &mut u64,
) -> c_int {
    // SAFETY: `w` is a live writer of the calling test, `index` live
    // storage it owns, and `pool` outlives the writer.
    unsafe {
        match (version, index) {
            (1, None) => iommu_flb_writer_start(w, &pool.alloc(), root),
            (1, Some((p, n))) => iommu_flb_writer_start_indexed(w, &pool.alloc(), p, n, root),
            (_, index) => {
                let cfg = IommuFlbWriterConfig {
                    version,
                    reserved: 0,
                    generation: GENERATION,
                };
                let (p, n) = index.unwrap_or((ptr::null_mut(), 0));
                iommu_flb_writer_start_config(w, &pool.alloc_crc(), &cfg, p, n, root)
            }
        }
    }
}

/// Where records start in a 4 KiB array page of `version`.
fn hdr_size(version: u32) -> u64 {
    if version == 2 { 48 } else { 16 }
}

/// How many domains a 4 KiB array page of `version` holds.
fn domain_capacity(version: u32) -> u64 {
    if version == 2 {
        crate::abi::v2::records_per_page(
            crate::abi::PageSize::Size4K,
            core::mem::size_of::<crate::abi::v2::IommuDomainV2Ser>(),
        )
    } else {
        crate::abi::v1::IOMMU_DOMAIN_ARRAY_CAPACITY_4K
    }
}

/// [`build`] in format `version`.
fn build_in(pool: &mut PoolRef, version: u32) -> Built {
    let mut w = Box::new(IommuFlbWriter {
        opaque: [0; IOMMU_FLB_WRITER_WORDS],
    });
    let mut root = 0u64;
    assert_eq!(start_in(&mut *w, pool, version, None, &mut root), 0);
    let mut hw = [IommuFlbHandle::default(); 2];
    for (i, h) in hw.iter_mut().enumerate() {
        let token = 0xfed0_0000 + i as u64 * 0x1000;
        let v = intel_vendor(token);
        let ty = if i == 0 { 1 } else { 2 };
        // SAFETY: as above.
        let r = unsafe { iommu_flb_preserve_iommu(&mut *w, token, ty, &v, h) };
        assert_eq!(r, 0);
    }
    let mut dom = [IommuFlbHandle::default(); 3];
    for (i, h) in dom.iter_mut().enumerate() {
        let mut d = IommuDomainSer::new_zeroed();
        d.top_table_phys = (0x2000_0000 + i as u64 * 0x1000).into();
        d.vasz = 48.into();
        // SAFETY: as above.
        let r = unsafe { iommu_flb_preserve_domain(&mut *w, &d, h) };
        assert_eq!(r, 0);
    }
    let mut dev = [IommuFlbHandle::default(); 4];
    for (i, h) in dev.iter_mut().enumerate() {
        let mut d = IommuDeviceSer::new_zeroed();
        d.devid = (0x100 + i as u32).into();
        d.pci_domain_nr = 1.into();
        let hw_h = &hw[i % 2];
        if i % 2 == 0 {
            d.domain_iommu_ser.attachment_id = 5.into();
        }
        // SAFETY: as above.
        let r = unsafe { iommu_flb_preserve_device(&mut *w, &d, &dom[i % 3], hw_h, h) };
        assert_eq!(r, 0);
    }
    // SAFETY: as above.
    let r = unsafe { iommu_flb_unpreserve_device(&mut *w, &dev[3]) };
    assert_eq!(r, 0);
    Built {
        w,
        root,
        hw,
        dom,
        dev,
    }
}

/// Validates the image at `root` in `pool` into `scratch`.
fn validate(pool: &mut PoolRef, root: u64, scratch: &mut Vec<u64>) -> *const IommuFlbImage {
    let mem = pool.mem();
    let mut err = new_error();
    let mut size = 0usize;
    // SAFETY: valid pointers to live locals.
    let r = unsafe { iommu_flb_scratch_size(&mem, root, &mut size, &mut err) };
    assert_eq!(r, 0);
    *scratch = vec![0u64; size.div_ceil(8)];
    let mut img = ptr::null();
    // SAFETY: `scratch` has `size` bytes, 8-aligned.
    let r = unsafe {
        iommu_flb_validate(
            &mem,
            root,
            0,
            scratch.as_mut_ptr().cast(),
            size,
            &mut img,
            &mut err,
        )
    };
    assert_eq!(r, 0, "{}", message(&err));
    assert_eq!(err.kind, 0);
    img
}

#[test]
fn image_written_and_read_through_the_c_api_holds_what_was_preserved() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let mut root = 0;
    // SAFETY: valid pointers.
    let r = unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) };
    assert_eq!(r, 0);
    assert_eq!(root, b.root);
    let mut scratch = Vec::new();
    let img = validate(&mut pool, root, &mut scratch);

    let mut cur = IommuFlbCursor::default();
    let mut hw = IommuFlbIommuRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    };
    let mut got = Vec::new();
    // SAFETY: `img` is valid while `scratch` and `pool` live.
    while unsafe { iommu_flb_next_iommu(img, &mut cur, &mut hw) } == 1 {
        // SAFETY: `ser` points into a pool page.
        got.push((hw.phys, unsafe { (*hw.ser).token.get() }));
    }
    let want: Vec<_> =
        b.hw.iter()
            .zip([0xfed0_0000, 0xfed0_1000])
            .map(|(h, t)| (h.phys, t))
            .collect();
    assert_eq!(got, want);
    assert!(hw.ser.is_null(), "the end zeroes the out-parameter");

    let mut cur = IommuFlbCursor::default();
    let mut dom = IommuFlbDomainRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    };
    let mut got = Vec::new();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_domain(img, &mut cur, &mut dom) } == 1 {
        got.push(dom.phys);
    }
    assert_eq!(got, b.dom.map(|h| h.phys));

    let mut cur = IommuFlbCursor::default();
    let mut dev = IommuFlbDeviceRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    };
    let mut got = Vec::new();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) } == 1 {
        let d = dev;
        // SAFETY: as above.
        let r = unsafe { iommu_flb_device_domain(img, &d, &mut dom) };
        assert_eq!(r, 0);
        // SAFETY: as above.
        let r = unsafe { iommu_flb_device_iommu(img, &d, &mut hw) };
        assert_eq!(r, 0);
        let mut found = dev;
        // SAFETY: as above; `d.ser` points into a pool page.
        let (seg, devid) = unsafe { ((*d.ser).pci_domain_nr.get(), (*d.ser).devid.get()) };
        // SAFETY: as above.
        let r = unsafe { iommu_flb_find_device(img, seg, devid, &mut found) };
        assert_eq!(r, 0);
        assert_eq!((found.phys, found.ser), (d.phys, d.ser));
        got.push((d.phys, dom.phys, hw.phys));
    }
    let want: Vec<_> = (0..3)
        .map(|i| (b.dev[i].phys, b.dom[i % 3].phys, b.hw[i % 2].phys))
        .collect();
    assert_eq!(got, want, "device 3 was unpreserved");

    // Lookups that miss, and a device reference that is not a live device.
    // SAFETY: as above.
    let r = unsafe { iommu_flb_find_device(img, 1, 0x103, &mut dev) };
    assert_eq!(r, -2);
    assert!(dev.ser.is_null());
    // SAFETY: as above.
    let r = unsafe { iommu_flb_find_iommu(img, 0xfed0_1000, 1, &mut hw) };
    assert_eq!(r, -2);
    // SAFETY: as above.
    let r = unsafe { iommu_flb_find_iommu(img, 0xfed0_1000, 2, &mut hw) };
    assert_eq!(r, 0);
    assert_eq!(hw.phys, b.hw[1].phys);
    // SAFETY: as above.
    let r = unsafe { iommu_flb_find_iommu(img, 0xfed0_1000, 0, &mut hw) };
    assert_eq!(r, -22);
    let gone = IommuFlbDeviceRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: b.dev[3].phys,
    };
    // SAFETY: as above.
    let r = unsafe { iommu_flb_device_domain(img, &gone, &mut dom) };
    assert_eq!(r, -2);

    let mut info = IommuFlbImageInfo::default();
    // SAFETY: as above.
    let r = unsafe { iommu_flb_image_info(img, &mut info) };
    assert_eq!(r, 0);
    assert_eq!(
        (
            info.root_phys,
            info.version,
            info.pages,
            info.live_iommus,
            info.live_devices
        ),
        (root, 1, 4, 2, 3)
    );
}

/// Restore callback: records pages, fails with `-5` on the third.
unsafe extern "C" fn restore_cb(ctx: *mut c_void, phys: u64) -> c_int {
    // SAFETY: the test passes a live `Vec<u64>`.
    let seen = unsafe { &mut *ctx.cast::<Vec<u64>>() };
    seen.push(phys);
    if seen.len() == 3 { -5 } else { 0 }
}

unsafe extern "C" fn restore_positive(_ctx: *mut c_void, _phys: u64) -> c_int {
    1
}

#[test]
fn restore_stops_at_the_first_failure_and_says_how_far_it_got() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let mut scratch = Vec::new();
    let img = validate(&mut pool, b.root, &mut scratch);
    let mut order = Vec::new();
    let mut cur = IommuFlbCursor::default();
    let mut phys = 0u64;
    // SAFETY: `img` is valid while `scratch` and `pool` live.
    while unsafe { iommu_flb_next_page(img, &mut cur, &mut phys) } == 1 {
        order.push(phys);
    }
    assert_eq!(order.len(), 4);
    assert_eq!(order[0], b.root & !0xfff);

    let mut seen: Vec<u64> = Vec::new();
    let mut status = IommuFlbRestoreStatus {
        restored: 0,
        failed_phys: 0,
        ret: 0,
    };
    let ctx = ptr::from_mut(&mut seen).cast();
    // SAFETY: as above; `seen` outlives the call.
    let r = unsafe { iommu_flb_restore(img, Some(restore_cb), ctx, &mut status) };
    assert_eq!(r, -5);
    assert_eq!(
        (status.restored, status.failed_phys, status.ret),
        (2, order[2], -5)
    );
    assert_eq!(seen, order[..3]);

    // SAFETY: as above.
    let r = unsafe { iommu_flb_restore(img, Some(restore_positive), ptr::null_mut(), &mut status) };
    assert_eq!((r, status.restored, status.ret), (-22, 0, 1));
    // SAFETY: as above.
    let r = unsafe { iommu_flb_restore(img, None, ptr::null_mut(), &mut status) };
    assert_eq!(r, -22);
}

#[test]
fn refused_image_reports_errno_kind_location_and_message() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    // Corrupt the version.
    // SAFETY: the root is in a pool page.
    unsafe {
        pool.lookup(b.root & !0xfff)
            .add((b.root & 0xfff) as usize)
            .write(9)
    };
    let mem = pool.mem();
    let mut err = new_error();
    let mut scratch = vec![0u64; 64];
    let mut img: *const IommuFlbImage = ptr::dangling();
    // SAFETY: valid pointers; 512 bytes of 8-aligned scratch.
    let r = unsafe {
        iommu_flb_validate(
            &mem,
            b.root,
            0,
            scratch.as_mut_ptr().cast(),
            512,
            &mut img,
            &mut err,
        )
    };
    assert_eq!(r, -93);
    assert!(img.is_null());
    assert_eq!((err.error, err.kind, err.chain), (-93, 3, 0));
    assert_eq!(
        (err.page, err.page_phys, err.object),
        (IOMMU_FLB_NONE, b.root, IOMMU_FLB_NONE)
    );
    assert_eq!(field(&err), Some("version"));
    assert_eq!(
        message(&err),
        alloc::format!(
            "iommu-flb: root at {:#x} version: unsupported version 9",
            b.root
        )
    );
}

#[test]
fn scratch_too_small_is_enospc_counted_in_bytes() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let mem = pool.mem();
    let mut err = new_error();
    let mut size = 0usize;
    // SAFETY: valid pointers.
    let r = unsafe { iommu_flb_scratch_size(&mem, b.root, &mut size, &mut err) };
    assert_eq!(r, 0);
    let mut scratch = vec![0u64; size.div_ceil(8)];
    let mut img = ptr::null();
    for short in [size - 1, 8, 0] {
        // SAFETY: `short` bytes of 8-aligned scratch.
        let r = unsafe {
            iommu_flb_validate(
                &mem,
                b.root,
                0,
                scratch.as_mut_ptr().cast(),
                short,
                &mut img,
                &mut err,
            )
        };
        assert_eq!((r, err.kind), (-28, 23));
        assert_eq!(
            message(&err),
            alloc::format!(
                "iommu-flb: root at {:#x}: scratch has {short} bytes, image needs {size}",
                b.root
            )
        );
    }
}

#[test]
fn page_sizes_other_than_4_16_and_64_kib_are_einval_naming_the_field() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let mut err = new_error();
    let mut size = 0usize;
    for bad in [0usize, 1, 2048, 8192, 32768, 1 << 17, usize::MAX] {
        let mem = IommuFlbMem {
            page_size: bad,
            ..pool.mem()
        };
        // SAFETY: valid pointers to live locals.
        let r = unsafe { iommu_flb_scratch_size(&mem, b.root, &mut size, &mut err) };
        assert_eq!((r, err.kind), (-22, 64), "{bad}");
        assert_eq!(field(&err), Some("mem->page_size"));
        let alloc = IommuFlbPageAlloc {
            page_size: bad,
            ..pool.alloc()
        };
        let mut w = IommuFlbWriter {
            opaque: [0; IOMMU_FLB_WRITER_WORDS],
        };
        let mut root = 0;
        // SAFETY: as above.
        let r = unsafe { iommu_flb_writer_start(&mut w, &alloc, &mut root) };
        assert_eq!(r, -22, "{bad}");
    }
    // The pool's own 4 KiB is accepted by both.
    // SAFETY: as above.
    let r = unsafe { iommu_flb_scratch_size(&pool.mem(), b.root, &mut size, &mut err) };
    assert_eq!(r, 0);
}

#[test]
fn null_and_misaligned_pointers_are_einval() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let mem = pool.mem();
    let mut err = new_error();
    let mut size = 0usize;
    let mut scratch = vec![0u64; 512];
    let sp: *mut c_void = scratch.as_mut_ptr().cast();
    let mut img = ptr::null();
    let no_page = IommuFlbMem {
        page: None,
        ctx: ptr::null_mut(),
        page_size: PAGE_SIZE,
        crc32: None,
    };
    // SAFETY: each pointer is NULL, misaligned, or
    // valid; the library must not dereference the bad ones.
    unsafe {
        assert_eq!(
            iommu_flb_scratch_size(&mem, b.root, &mut size, ptr::null_mut()),
            -22
        );
        let misaligned_err = ptr::from_mut(&mut err)
            .cast::<u8>()
            .add(1)
            .cast::<IommuFlbError>();
        assert_eq!(
            iommu_flb_scratch_size(&mem, b.root, &mut size, misaligned_err),
            -22
        );
        let e: *mut IommuFlbError = &mut err;
        let check = |r: c_int, name: &str| {
            let err = &*e;
            assert_eq!((r, err.error, err.kind), (-22, -22, 64), "{name}");
            assert_eq!(field(err), Some(name));
            assert_eq!(
                message(err),
                alloc::format!("iommu-flb: invalid argument {name}")
            );
        };
        check(
            iommu_flb_scratch_size(ptr::null(), b.root, &mut size, e),
            "mem",
        );
        check(
            iommu_flb_scratch_size(&no_page, b.root, &mut size, e),
            "mem->page",
        );
        check(
            iommu_flb_scratch_size(&mem, b.root, ptr::null_mut(), e),
            "size",
        );
        check(
            iommu_flb_validate(ptr::null(), b.root, 0, sp, 4096, &mut img, e),
            "mem",
        );
        check(
            iommu_flb_validate(&mem, b.root, 0, ptr::null_mut(), 4096, &mut img, e),
            "scratch",
        );
        let odd = sp.cast::<u8>().add(4).cast();
        check(
            iommu_flb_validate(&mem, b.root, 0, odd, 4096, &mut img, e),
            "scratch",
        );
        check(
            iommu_flb_validate(&mem, b.root, 0, sp, 4096, ptr::null_mut(), e),
            "image",
        );
        check(
            iommu_flb_validate(&mem, b.root, 7, sp, 4096, &mut img, e),
            "mode",
        );

        // Walks and lookups: NULL image, out, cursor; a buffer that is not an image.
        let zeroed = vec![0u64; 64];
        let not_image: *const IommuFlbImage = zeroed.as_ptr().cast();
        let mut cur = IommuFlbCursor::default();
        let mut dev = IommuFlbDeviceRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        let mut info = IommuFlbImageInfo::default();
        assert_eq!(iommu_flb_next_device(ptr::null(), &mut cur, &mut dev), -22);
        assert_eq!(iommu_flb_next_device(not_image, &mut cur, &mut dev), -22);
        assert_eq!(iommu_flb_image_info(not_image, &mut info), -22);
        let mut scratch2 = Vec::new();
        let img = validate(&mut pool, b.root, &mut scratch2);
        assert_eq!(iommu_flb_next_device(img, ptr::null_mut(), &mut dev), -22);
        assert_eq!(iommu_flb_next_device(img, &mut cur, ptr::null_mut()), -22);
        assert_eq!(iommu_flb_find_device(img, 1, 0x100, ptr::null_mut()), -22);
        assert_eq!(
            iommu_flb_device_iommu(
                img,
                ptr::null(),
                &mut IommuFlbIommuRef {
                    ser: ptr::null(),
                    ser_v2: ptr::null(),
                    phys: 0
                }
            ),
            -22
        );
        assert_eq!(iommu_flb_image_info(img, ptr::null_mut()), -22);
        assert_eq!(iommu_flb_next_page(img, &mut cur, ptr::null_mut()), -22);

        // The writer.
        let alloc = pool.alloc();
        let mut w = IommuFlbWriter {
            opaque: [0; IOMMU_FLB_WRITER_WORDS],
        };
        let mut root = 0;
        let mut h = IommuFlbHandle::default();
        let d = IommuDomainSer::new_zeroed();
        assert_eq!(
            iommu_flb_writer_start(ptr::null_mut(), &alloc, &mut root),
            -22
        );
        assert_eq!(iommu_flb_writer_start(&mut w, ptr::null(), &mut root), -22);
        let bad_alloc = IommuFlbPageAlloc {
            free_page: None,
            ..alloc
        };
        assert_eq!(iommu_flb_writer_start(&mut w, &bad_alloc, &mut root), -22);
        assert_eq!(
            iommu_flb_preserve_domain(&mut w, &d, &mut h),
            -22,
            "its start failed"
        );
        assert_eq!(iommu_flb_writer_last_error(&w, ptr::null_mut()), -22);
        assert_eq!(
            iommu_flb_writer_start_indexed(&mut w, &alloc, ptr::null_mut(), 64, &mut root),
            -22
        );
        assert_eq!(iommu_flb_writer_abort(ptr::null_mut()), -22);
    }
}

#[test]
fn writer_refusals_are_kept_for_last_error() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let mut err = new_error();
    let mut h = IommuFlbHandle::default();
    let mut d = IommuDomainSer::new_zeroed();
    d.top_table_phys = 0x1000.into();
    d.vasz = 65.into();
    // SAFETY: valid pointers to live locals; `pool` lives.
    unsafe {
        assert_eq!(iommu_flb_preserve_domain(&mut *b.w, &d, &mut h), -22);
        assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
        assert_eq!((err.error, err.kind, err.chain), (-22, 138, 2));
        assert_eq!(field(&err), Some("vasz"));
        assert_eq!(message(&err), "iommu-flb: invalid domain vasz: 0x41");

        // Domain 0 still has device 0.
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.dom[0]), -16);
        assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
        assert_eq!((err.kind, err.page_phys), (140, b.dom[0].phys));

        // A handle of the wrong kind, or not at a record slot.
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.dev[0]), -22);
        let mut odd = b.dom[1];
        odd.phys += 8;
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &odd), -22);
        // A handle from another writer.
        let mut other = b.dom[1];
        other.check ^= 1 << 40;
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &other), -22);
        assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
        assert_eq!(err.kind, 132);

        // Success clears it.
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.dom[1]), -16);
        assert_eq!(iommu_flb_unpreserve_device(&mut *b.w, &b.dev[1]), 0);
        assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
        assert_eq!((err.error, err.kind), (0, 0));
        let mut counts = IommuFlbCounts::default();
        assert_eq!(iommu_flb_writer_counts(&mut *b.w, &mut counts), 0);
        assert_eq!(
            (
                counts.pages,
                counts.live_iommus,
                counts.domains,
                counts.devices
            ),
            (4, 1, 3, 2)
        );

        // Abort gives back every page: domain, device, IOMMU chains, root.
        assert_eq!(iommu_flb_writer_abort(&mut *b.w), 0);
        assert_eq!(pool.freed.len(), 4);
        assert_eq!(pool.freed[3], b.root);
        assert!(pool.used.iter().all(|u| !u));
        assert_eq!(iommu_flb_writer_abort(&mut *b.w), -22, "aborted once");
        let mut root = 0;
        assert_eq!(iommu_flb_writer_finish(&mut *b.w, &mut root), -22);
    }
}

unsafe extern "C" fn no_page(_ctx: *mut c_void) -> u64 {
    0
}

#[test]
fn failed_start_keeps_its_error_and_an_index_fills_up() {
    let pool = PoolRef::new();
    let mut alloc = pool.alloc();
    alloc.alloc_page = Some(no_page);
    let mut w = IommuFlbWriter {
        opaque: [0; IOMMU_FLB_WRITER_WORDS],
    };
    let mut err = new_error();
    let mut root = 0;
    // SAFETY: valid pointers to live locals; `pool` and
    // `index` outlive the writer.
    unsafe {
        assert_eq!(iommu_flb_writer_start(&mut w, &alloc, &mut root), -12);
        assert_eq!(iommu_flb_writer_last_error(&w, &mut err), 0);
        assert_eq!((err.kind, field(&err)), (128, None));
        assert_eq!(message(&err), "iommu-flb: out of pages for the root");

        let size = iommu_flb_writer_index_size(1);
        let mut index = vec![0u64; size.div_ceil(8)];
        let alloc = pool.alloc();
        let r = iommu_flb_writer_start_indexed(
            &mut w,
            &alloc,
            index.as_mut_ptr().cast(),
            size,
            &mut root,
        );
        assert_eq!(r, 0);
        let v = intel_vendor(0x1000);
        let mut hw = IommuFlbHandle::default();
        assert_eq!(iommu_flb_preserve_iommu(&mut w, 0x1000, 1, &v, &mut hw), 0);
        let mut dd = IommuDomainSer::new_zeroed();
        dd.top_table_phys = 0x1000.into();
        let mut dom = IommuFlbHandle::default();
        assert_eq!(iommu_flb_preserve_domain(&mut w, &dd, &mut dom), 0);
        let mut dev = IommuDeviceSer::new_zeroed();
        let mut h = IommuFlbHandle::default();
        for devid in [9, 3] {
            dev.devid = devid.into();
            assert_eq!(
                iommu_flb_preserve_device(&mut w, &dev, &dom, &hw, &mut h),
                0
            );
        }
        // Found by the index, out of order.
        assert_eq!(
            iommu_flb_preserve_device(&mut w, &dev, &dom, &hw, &mut h),
            -17
        );
        dev.devid = 1.into();
        assert_eq!(
            iommu_flb_preserve_device(&mut w, &dev, &dom, &hw, &mut h),
            -28
        );
        assert_eq!(iommu_flb_writer_last_error(&w, &mut err), 0);
        assert_eq!(err.kind, 143);
        assert_eq!(iommu_flb_writer_finish(&mut w, &mut root), 0);
    }
}

#[test]
fn every_wire_field_has_a_static_c_name() {
    for layout in crate::abi::LAYOUTS {
        for s in layout.structs {
            for f in s.fields {
                assert_eq!(
                    field_of(f.name),
                    Some(f.name),
                    "{}.{} has no C string",
                    s.name,
                    f.name
                );
            }
        }
    }
    assert!(field_names().count() > 30);
    assert_eq!(field_of("no_such_field"), None);
}

fn field_of(name: &str) -> Option<&'static str> {
    let p = super::error::c_field(name);
    // SAFETY: `c_field` returns NULL or a static NUL-terminated string.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().expect("ASCII"))
}

#[test]
fn message_is_truncated_and_nul_terminated() {
    static LONG: [u8; 2 * IOMMU_FLB_MESSAGE_LEN] = [b'x'; 2 * IOMMU_FLB_MESSAGE_LEN];
    let rec = IommuFlbError::of(&Fail::Invalid(c"w"));
    assert_eq!(message(&rec), "iommu-flb: invalid argument w");
    let inconsistent = WriteError::Inconsistent {
        phys: PhysAddr::new(1),
        what: core::str::from_utf8(&LONG).expect("ASCII"),
    };
    let rec = IommuFlbError::of(&Fail::Write(inconsistent));
    let text = message(&rec);
    assert_eq!(text.len(), IOMMU_FLB_MESSAGE_LEN - 1);
    assert!(text.starts_with("iommu-flb: image changed behind the writer at 0x1: xxx"));
}

/// Linux errno numbers (asm-generic), by name, for reading the header.
fn errno_number(name: &str) -> i32 {
    match name {
        "0" => 0,
        "-ENOENT" => -2,
        "-E2BIG" => -7,
        "-ENOMEM" => -12,
        "-EFAULT" => -14,
        "-EBUSY" => -16,
        "-EEXIST" => -17,
        "-EINVAL" => -22,
        "-ENOSPC" => -28,
        "-ERANGE" => -34,
        "-ELOOP" => -40,
        "-EPROTO" => -71,
        "-EBADMSG" => -74,
        "-EOVERFLOW" => -75,
        "-EPROTONOSUPPORT" => -93,
        "-EOPNOTSUPP" => -95,
        "-EADDRINUSE" => -98,
        "-EALREADY" => -114,
        "-ESTALE" => -116,
        "-EUCLEAN" => -117,
        other => panic!("unknown errno {other}"),
    }
}

/// `(value, documented errno)` of every `IOMMU_FLB_ERR_*` in the header.
fn header_kinds() -> Vec<(u32, i32)> {
    let header = include_str!("../../include/iommu_flb_api.h");
    let body = header
        .split("enum iommu_flb_error_kind {")
        .nth(1)
        .and_then(|s| s.split("};").next())
        .expect("the header declares enum iommu_flb_error_kind");
    let mut out = Vec::new();
    let mut text = String::new();
    for line in body.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            text.push_str(t);
            text.push(' ');
        } else if let Some((name, value)) = line.strip_suffix(',').and_then(|l| l.split_once(" = "))
        {
            let doc: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if doc.contains(&alloc::format!("@{name}: Retired, never returned")) {
                // A retired value keeps its number and is produced by nothing.
                text.clear();
                continue;
            }
            assert!(
                doc.contains(&alloc::format!("@{name}:")),
                "{name} is documented"
            );
            let errno = doc
                .split("Returned as ")
                .nth(1)
                .and_then(|s| s.trim_start().split(['.', ' ']).next())
                .unwrap_or_else(|| panic!("{name} documents its errno"));
            out.push((
                value.parse().expect("numbered explicitly"),
                errno_number(errno),
            ));
            text.clear();
        }
    }
    out
}

#[test]
#[cfg_attr(
    miri,
    ignore = "parses the header's text (safe code, a minute under miri); the native run covers it"
)]
fn header_documents_every_error_kind_with_its_value_and_errno() {
    let p = PhysAddr::new(0x1000);
    let read = [
        ErrorKind::RootUnreadable,
        ErrorKind::UnsupportedVersion { found: 2 },
        ErrorKind::NullPointer,
        ErrorKind::Unaligned { value: p },
        ErrorKind::Unreadable { target: p },
        ErrorKind::CountOverCapacity {
            nr_objects: 1,
            capacity: 1,
        },
        ErrorKind::PartialPage {
            nr_objects: 1,
            capacity: 1,
        },
        ErrorKind::Cycle {
            target: p,
            earlier: 0,
        },
        ErrorKind::PageReused {
            target: p,
            other_chain: None,
            other_page: None,
        },
        ErrorKind::LimitExceeded {
            what: Limit::Objects,
            limit: 1,
        },
        ErrorKind::UnknownFlags { flags: 4 },
        ErrorKind::ZeroRefCount,
        ErrorKind::RefCountNotOne { stored: 2 },
        ErrorKind::RefCountMismatch {
            stored: 1,
            counted: 2,
        },
        ErrorKind::UnknownIommuType { raw: 3 },
        ErrorKind::DuplicateIommu {
            other_page: 0,
            other_object: 0,
        },
        ErrorKind::DuplicateDevice {
            other_page: 0,
            other_object: 0,
        },
        ErrorKind::BadReference {
            target: p,
            fault: RefFault::Deleted,
        },
        ErrorKind::VaszTooLarge { vasz: 65 },
        ErrorKind::SignExtendInvalid { value: 2 },
        ErrorKind::NonZeroPadding,
        ErrorKind::AlreadyRestored,
        ErrorKind::BadMagic { found: 0 },
        ErrorKind::ChecksumMismatch {
            stored: 0,
            computed: 1,
        },
        ErrorKind::WrongChain { found: 0 },
        ErrorKind::WrongIndex {
            found: 1,
            expected: 0,
        },
        ErrorKind::StaleGeneration {
            found: 1,
            expected: 2,
        },
        ErrorKind::CountMismatch {
            stored: 1,
            counted: 2,
        },
        ErrorKind::UnknownFeatures { bits: 1 },
        ErrorKind::IncompatibleVersion {
            version: 3,
            last_compatible: 3,
        },
        ErrorKind::BadPageSize { found: 0 },
        ErrorKind::BadRootSize {
            found: 0,
            min: 128,
            max: 4096,
        },
        ErrorKind::BadStride {
            stride: 1,
            min: 32,
            max: 4048,
        },
        ErrorKind::StrideChanged {
            stride: 40,
            first: 32,
        },
        ErrorKind::EmptyPage,
        ErrorKind::BadIndex {
            index: 9,
            fault: RefFault::BeyondCount,
        },
    ];
    let k = ObjectKind::Device;
    let write = [
        WriteError::OutOfPages {
            purpose: PagePurpose::Root,
        },
        WriteError::BadPage {
            purpose: PagePurpose::Chain(k),
            phys: p,
            problem: BadPage::Null,
        },
        WriteError::PageUnavailable { phys: p },
        WriteError::Inconsistent { phys: p, what: "x" },
        WriteError::ForeignHandle { kind: k, phys: p },
        WriteError::AttachToDeleted { kind: k, phys: p },
        WriteError::AlreadyUnpreserved { kind: k, phys: p },
        WriteError::DuplicateDevice {
            pci_domain_nr: 0,
            devid: 0,
            existing: p,
        },
        WriteError::DuplicateIommu {
            token: 0,
            iommu_type: crate::abi::v1::IommuTypeSer::IommuIntel,
            existing: p,
        },
        WriteError::PayloadMismatch {
            iommu: p,
            iommu_type: crate::abi::v1::IommuTypeSer::IommuIntel,
            payload_type: crate::abi::v1::IommuTypeSer::IommuArmSmmuv3,
        },
        WriteError::InvalidDomain {
            field: DomainField::Vasz,
            value: 65,
        },
        WriteError::DomainInUse {
            domain: p,
            device: p,
        },
        WriteError::IommuInUse {
            iommu: p,
            devices: 1,
        },
        WriteError::RefCountOverflow { iommu: p },
        WriteError::IndexFull { capacity: 1 },
    ];
    let loc = crate::error::Location::root(p, None);
    let mut fails: Vec<Fail> = read
        .iter()
        .map(|&kind| Fail::Read(crate::Error::new(kind, loc)))
        .collect();
    fails.extend(write.iter().map(|&e| Fail::Write(e)));
    fails.push(Fail::Invalid(c"x"));
    fails.push(Fail::TooLarge { root: 0 });
    fails.push(Fail::ScratchBytes {
        root: 0,
        needed: 2,
        got: 1,
    });

    let header = header_kinds();
    let mut covered = vec![false; header.len()];
    covered[0] = header[0] == (IommuFlbErrorKind::IommuFlbErrNone.code(), 0);
    for f in &fails {
        let rec = IommuFlbError::of(f);
        let i = header
            .iter()
            .position(|&(v, _)| v == rec.kind)
            .unwrap_or_else(|| panic!("kind {} of {f:?} is not in the header", rec.kind));
        assert_eq!(header[i].1, f.errno(), "documented errno of {f:?}");
        assert_eq!(rec.error, f.errno());
        covered[i] = true;
    }
    assert!(
        covered.iter().all(|c| *c),
        "every documented kind is produced"
    );
}

/// Validates the image at `root` in `pool` into `scratch` as it is, and
/// returns what `iommu_flb_validate()` returned.
///
/// `scratch` is a raw pointer, as C holds it: re-borrowing a Rust slice for
/// each call would invalidate the image pointers of the earlier calls in
/// Rust's aliasing model.
fn validate_into(
    pool: &mut PoolRef,
    root: u64,
    scratch: (*mut u64, usize),
) -> (c_int, *const IommuFlbImage, IommuFlbError) {
    let mem = pool.mem();
    let mut err = new_error();
    let mut img = ptr::null();
    // SAFETY: `scratch` is 8-aligned and `8 * len` bytes long (the callers
    // pass a live `Vec<u64>`'s buffer).
    let r = unsafe {
        iommu_flb_validate(
            &mem,
            root,
            0,
            scratch.0.cast(),
            scratch.1 * 8,
            &mut img,
            &mut err,
        )
    };
    (r, img, err)
}

/// A `Vec<u64>`'s buffer as `validate_into` takes it.
fn raw(v: &mut Vec<u64>) -> (*mut u64, usize) {
    (v.as_mut_ptr(), v.len())
}

/// A zeroed scratch of the size `iommu_flb_scratch_size()` asks for.
fn sized_scratch(pool: &mut PoolRef, root: u64) -> Vec<u64> {
    let mem = pool.mem();
    let mut err = new_error();
    let mut size = 0usize;
    // SAFETY: valid pointers to live locals.
    let r = unsafe { iommu_flb_scratch_size(&mem, root, &mut size, &mut err) };
    assert_eq!(r, 0, "{}", message(&err));
    vec![0u64; size.div_ceil(8)]
}

/// The image `build` writes in `pool`, validated into a scratch of the
/// size asked for: the writer, the scratch, its raw buffer, the image.
fn validated(pool: &mut PoolRef) -> (Built, Vec<u64>, (*mut u64, usize), *const IommuFlbImage) {
    let b = build(pool);
    let mut scratch = sized_scratch(pool, b.root);
    let sp = raw(&mut scratch);
    let (r, img, err) = validate_into(pool, b.root, sp);
    assert_eq!(r, 0, "{}", message(&err));
    (b, scratch, sp, img)
}

fn no_iommu() -> IommuFlbIommuRef {
    IommuFlbIommuRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    }
}

fn no_domain() -> IommuFlbDomainRef {
    IommuFlbDomainRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    }
}

fn no_device() -> IommuFlbDeviceRef {
    IommuFlbDeviceRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    }
}

/// Flips bit `bit` of the `flags` of the record at `phys` in `pool`.
fn flip_flag(pool: &mut PoolRef, phys: u64, bit: u32) {
    let page = pool.lookup(phys & !0xfff);
    assert!(!page.is_null());
    // SAFETY: `flags` (4 bytes at offset 4 of the record) is inside the page.
    unsafe {
        let flags = page.add((phys & 0xfff) as usize + 4).cast::<[u8; 4]>();
        let v = u32::from_le_bytes(flags.read()) ^ 1 << bit;
        flags.write(v.to_le_bytes());
    }
}

fn set_flag(pool: &mut PoolRef, phys: u64, bit: u32) {
    flip_flag(pool, phys, bit);
}

fn clear_flag(pool: &mut PoolRef, phys: u64, bit: u32) {
    flip_flag(pool, phys, bit);
}

/// Issue 11, finding 1: validating a good image into scratch S, then a
/// corrupted one into the same S, left the first image in S; walking it
/// returned live records, the refused one included.
#[test]
fn failed_revalidation_leaves_no_image_in_the_scratch() {
    let mut pool = PoolRef::new();
    let (b, _scratch, sp, img) = validated(&mut pool);
    let mut dev = no_device();
    let mut cur = IommuFlbCursor::default();
    // SAFETY: `img` is in `scratch`, which lives; `pool` lives.
    assert_eq!(unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) }, 1);
    assert_eq!(dev.phys, b.dev[0].phys);

    set_flag(&mut pool, b.dev[0].phys, 7);
    let (r, again, err) = validate_into(&mut pool, b.root, sp);
    assert_eq!((r, err.kind), (-95, 12), "{}", message(&err));
    assert!(again.is_null());

    // Every call on the first image's pointer is -ESTALE now.
    let mut cur = IommuFlbCursor::default();
    let mut info = IommuFlbImageInfo::default();
    let mut status = IommuFlbRestoreStatus {
        restored: 0,
        failed_phys: 0,
        ret: 0,
    };
    let mut seen: Vec<u64> = Vec::new();
    // SAFETY: as above; `seen` outlives the call.
    unsafe {
        dev = no_device();
        assert_eq!(iommu_flb_next_device(img, &mut cur, &mut dev), -116);
        assert!(dev.ser.is_null(), "no record is handed out");
        assert_eq!(iommu_flb_find_device(img, 1, 0x100, &mut dev), -116);
        assert_eq!(iommu_flb_image_info(img, &mut info), -116);
        let ctx = ptr::from_mut(&mut seen).cast();
        assert_eq!(
            iommu_flb_restore(img, Some(restore_cb), ctx, &mut status),
            -116
        );
    }
    assert!(seen.is_empty(), "no page is restored");

    // A validation refused for a bad argument ends the image too.
    clear_flag(&mut pool, b.dev[0].phys, 7);
    let (r, img, _) = validate_into(&mut pool, b.root, sp);
    assert_eq!(r, 0);
    let mem = pool.mem();
    let mut out = ptr::null();
    let mut err = new_error();
    // SAFETY: as above.
    unsafe {
        let r = iommu_flb_validate(&mem, b.root, 7, sp.0.cast(), sp.1 * 8, &mut out, &mut err);
        assert_eq!((r, field(&err)), (-22, Some("mode")));
        assert_eq!(iommu_flb_image_info(img, &mut info), -116);
    }
}

/// Issue 11, finding 1 (the cursor half): a cursor of an image validated
/// earlier into the same scratch went on walking the new image from its
/// old position.
#[test]
fn cursor_of_an_earlier_image_in_the_same_scratch_is_stale() {
    let mut pool = PoolRef::new();
    let (b, _scratch, sp, img) = validated(&mut pool);
    let mut dev = no_device();
    let mut cur = IommuFlbCursor::default();
    // SAFETY: `img` is in `scratch`, which lives; `pool` lives.
    assert_eq!(unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) }, 1);

    let (r, img2, _) = validate_into(&mut pool, b.root, sp);
    assert_eq!(r, 0);
    assert_eq!(img2, img, "the image is at the start of the scratch");
    // SAFETY: as above.
    unsafe {
        assert_eq!(iommu_flb_next_device(img2, &mut cur, &mut dev), -116);
        let mut fresh = IommuFlbCursor::default();
        assert_eq!(iommu_flb_next_device(img2, &mut fresh, &mut dev), 1);
        assert_eq!(dev.phys, b.dev[0].phys, "a fresh cursor starts over");
        // The device walk's cursor is not an IOMMU walk's.
        let mut hw = IommuFlbIommuRef {
            ser: ptr::null(),
            ser_v2: ptr::null(),
            phys: 0,
        };
        assert_eq!(iommu_flb_next_iommu(img2, &mut fresh, &mut hw), -22);
        let mut page = 0u64;
        assert_eq!(iommu_flb_next_page(img2, &mut fresh, &mut page), -22);
    }
}

/// Issue 11, finding 1 (the pointer half): a copy of the image's scratch
/// elsewhere read as an image.
#[test]
fn copy_of_an_image_elsewhere_is_not_an_image() {
    let mut pool = PoolRef::new();
    let (_b, scratch, _sp, img) = validated(&mut pool);
    let copy = scratch.clone();
    let moved: *const IommuFlbImage = copy.as_ptr().cast();
    assert_ne!(moved, img);
    let mut dev = no_device();
    let mut cur = IommuFlbCursor::default();
    let mut info = IommuFlbImageInfo::default();
    // SAFETY: `copy` and `scratch` live; `pool` lives.
    unsafe {
        assert_eq!(iommu_flb_next_device(moved, &mut cur, &mut dev), -22);
        assert_eq!(iommu_flb_image_info(moved, &mut info), -22);
        assert_eq!(iommu_flb_image_info(img, &mut info), 0);
    }
}

fn zeroed_writer() -> Box<IommuFlbWriter> {
    Box::new(IommuFlbWriter {
        opaque: [0; IOMMU_FLB_WRITER_WORDS],
    })
}

/// Copies a writer's bytes as C's assignment or memcpy would (its padding
/// is uninitialized as far as Rust is concerned, so not as `[u64; 64]`).
fn copy_writer(from: &IommuFlbWriter, to: &mut IommuFlbWriter) {
    // SAFETY: two distinct live structs of the same size.
    unsafe {
        ptr::copy_nonoverlapping(
            ptr::from_ref(from).cast::<u8>(),
            ptr::from_mut(to).cast::<u8>(),
            core::mem::size_of::<IommuFlbWriter>(),
        )
    }
}

fn domain_init(i: u64) -> IommuDomainSer {
    let mut d = IommuDomainSer::new_zeroed();
    d.top_table_phys = (0x3000_0000 + i * 0x1000).into();
    d.vasz = 48.into();
    d
}

/// Preserves a domain; returns the errno and the handle.
fn preserve_domain(w: *mut IommuFlbWriter, i: u64) -> (c_int, IommuFlbHandle) {
    let d = domain_init(i);
    let mut h = IommuFlbHandle::default();
    // SAFETY: `w` is a live writer of the calling test; `d` and `h` live.
    let r = unsafe { iommu_flb_preserve_domain(w, &d, &mut h) };
    (r, h)
}

/// The live domains and devices the Rust reader sees in `pool`'s image.
fn live(pool: &mut PoolRef, root: u64) -> (Vec<u64>, Vec<u64>) {
    let mut scratch = sized_scratch(pool, root);
    let (r, img, err) = validate_into(pool, root, raw(&mut scratch));
    assert_eq!(r, 0, "{}", message(&err));
    let (mut doms, mut devs) = (Vec::new(), Vec::new());
    let mut cur = IommuFlbCursor::default();
    let mut d = IommuFlbDomainRef {
        ser: ptr::null(),
        ser_v2: ptr::null(),
        phys: 0,
    };
    // SAFETY: `img` is in `scratch`, which lives.
    while unsafe { iommu_flb_next_domain(img, &mut cur, &mut d) } == 1 {
        doms.push(d.phys);
    }
    let mut cur = IommuFlbCursor::default();
    let mut v = no_device();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_device(img, &mut cur, &mut v) } == 1 {
        devs.push(v.phys);
    }
    (doms, devs)
}

/// Issue 11, finding 2: starting a started writer overwrote it, and the
/// first image's pages stayed allocated, owned by nobody. In both versions,
/// by every start.
#[test]
fn starting_a_started_writer_is_refused_and_keeps_its_image() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let pages = pool.pages_in_use();
        let alloc = pool.alloc();
        let mut root = 0u64;
        let mut index = vec![0x5555_5555_5555_5555u64; 8];
        let ip: *mut c_void = index.as_mut_ptr().cast();
        let cfg = IommuFlbWriterConfig {
            version: 2,
            ..IommuFlbWriterConfig::default()
        };
        // SAFETY: `b.w` is a live writer; `pool` and `index` outlive it.
        unsafe {
            assert_eq!(iommu_flb_writer_start(&mut *b.w, &alloc, &mut root), -16);
            let r = iommu_flb_writer_start_indexed(&mut *b.w, &alloc, ip, 64, &mut root);
            assert_eq!(r, -16);
            let r = iommu_flb_writer_start_config(&mut *b.w, &alloc, &cfg, ip, 64, &mut root);
            assert_eq!(r, -16);
        }
        assert_eq!(root, 0, "nothing is written");
        assert!(index.iter().all(|&w| w == 0x5555_5555_5555_5555));
        assert_eq!(pool.pages_in_use(), pages, "no page is taken");
        // The first writer is intact: its handles work, abort frees it all.
        // SAFETY: as above.
        unsafe {
            assert_eq!(iommu_flb_unpreserve_device(&mut *b.w, &b.dev[1]), 0);
            assert_eq!(iommu_flb_writer_abort(&mut *b.w), 0);
        }
        assert_eq!(pool.pages_in_use(), 0, "abort gives every page back");
        // A writer that ended may be started again, in either version.
        for again in VERSIONS {
            assert_eq!(start_in(&mut *b.w, &pool, again, None, &mut root), 0);
            // SAFETY: as above.
            assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
            assert_eq!(start_in(&mut *b.w, &pool, again, None, &mut root), 0);
            // SAFETY: as above.
            assert_eq!(unsafe { iommu_flb_writer_abort(&mut *b.w) }, 0);
        }
    }
}

/// Issue 11, finding 3: a copy of a started writer handed out the record
/// slot the original hands out next (two domains at one address).
#[test]
fn copy_of_a_writer_is_refused() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let mut copy = zeroed_writer();
        copy_writer(&b.w, &mut copy);
        let calls = pool.crc_calls;
        let (r, _) = preserve_domain(&mut *copy, 1);
        assert_eq!(r, -22, "the copy is not a writer");
        assert_eq!(pool.crc_calls, calls, "nor is its CRC callback called");
        let mut err = new_error();
        let mut root = 0;
        // SAFETY: `copy` and `b.w` live.
        unsafe {
            assert_eq!(iommu_flb_writer_last_error(&*copy, &mut err), -22);
            assert_eq!(iommu_flb_writer_finish(&mut *copy, &mut root), -22);
            assert_eq!(iommu_flb_writer_abort(&mut *copy), -22);
        }
        let (r, h) = preserve_domain(&mut *b.w, 2);
        assert_eq!(r, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
        let (doms, _) = live(&mut pool, root);
        assert_eq!(doms.len(), 4);
        assert_eq!(doms[3], h.phys);
    }
}

/// A writer over `pool` started with an index for 4 devices, holding one
/// Intel IOMMU and one domain.
struct Indexed {
    w: Box<IommuFlbWriter>,
    /// The index storage; the writer holds `slots`, its buffer.
    index: Vec<u64>,
    slots: *mut u64,
    hw: IommuFlbHandle,
    dom: IommuFlbHandle,
}

fn indexed_writer(pool: &PoolRef, version: u32) -> Indexed {
    let mut w = zeroed_writer();
    let size = iommu_flb_writer_index_size(4);
    let mut index = vec![0u64; size.div_ceil(8)];
    let slots = index.as_mut_ptr();
    let mut root = 0;
    // The pool and the index buffer (which moves with its `Vec`, not in
    // memory) outlive the writer.
    let r = start_in(
        &mut *w,
        pool,
        version,
        Some((slots.cast(), size)),
        &mut root,
    );
    assert_eq!(r, 0);
    let v = intel_vendor(0x1000);
    let mut hw = IommuFlbHandle::default();
    // SAFETY: valid pointers to live locals.
    let r = unsafe { iommu_flb_preserve_iommu(&mut *w, 0x1000, 1, &v, &mut hw) };
    assert_eq!(r, 0);
    let (_, dom) = preserve_domain(&mut *w, 0);
    Indexed {
        w,
        index,
        slots,
        hw,
        dom,
    }
}

/// Issue 11, finding 3 with an index: two copies of an indexed writer held
/// two `&mut` to one index (undefined behaviour, which miri reports).
#[test]
fn copy_of_an_indexed_writer_never_touches_the_index() {
    for version in VERSIONS {
        let pool = PoolRef::new();
        let Indexed {
            mut w,
            index,
            hw,
            dom,
            ..
        } = indexed_writer(&pool, version);
        let mut copy = zeroed_writer();
        copy_writer(&w, &mut copy);
        let dev = IommuDeviceSer::new_zeroed();
        let mut h = IommuFlbHandle::default();
        let before = index.clone();
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                iommu_flb_preserve_device(&mut *copy, &dev, &dom, &hw, &mut h),
                -22
            );
            assert_eq!(index, before, "the copy did not use the index");
            assert_eq!(
                iommu_flb_preserve_device(&mut *w, &dev, &dom, &hw, &mut h),
                0
            );
            assert_eq!(iommu_flb_writer_abort(&mut *w), 0);
        }
    }
}

/// Issue 11, finding 3, the stale copy put back: a snapshot of the writer
/// copied back over it (same address) would append into a slot already in
/// use, or relink a page that already has a successor.
#[test]
fn stale_copy_put_back_over_a_writer_cannot_append() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let mut snapshot = zeroed_writer();
        copy_writer(&b.w, &mut snapshot);
        let (r, kept) = preserve_domain(&mut *b.w, 7);
        assert_eq!(r, 0);
        copy_writer(&snapshot, &mut b.w);
        let (r, again) = preserve_domain(&mut *b.w, 8);
        assert_eq!(r, -117, "slot {:#x} is taken", again.phys);
        let mut err = new_error();
        // SAFETY: `b.w` lives.
        assert_eq!(unsafe { iommu_flb_writer_last_error(&*b.w, &mut err) }, 0);
        assert_eq!((err.kind, err.page_phys), (131, kept.phys & !0xfff));
        // What reads the pages still works: the domain preserved after the
        // snapshot is in the image and can be unpreserved.
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_unpreserve_domain(&mut *b.w, &kept) }, 0);
        let mut root = 0;
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
        let (doms, devs) = live(&mut pool, root);
        assert_eq!((doms.len(), devs.len()), (3, 3));
        assert!(pool.strays.is_empty(), "{:x?}", pool.strays);
    }
}

/// The same when the tail was full at the snapshot: the domain after it
/// went to a new page, and the stale writer would link another new page
/// behind the old tail, cutting that domain out of the image.
#[test]
fn stale_copy_of_a_full_tail_does_not_relink_it() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut w = zeroed_writer();
        let mut root = 0;
        assert_eq!(start_in(&mut *w, &pool, version, None, &mut root), 0);
        let cap = domain_capacity(version);
        for i in 0..cap {
            assert_eq!(preserve_domain(&mut *w, i).0, 0);
        }
        let mut snapshot = zeroed_writer();
        copy_writer(&w, &mut snapshot);
        let (r, next_page) = preserve_domain(&mut *w, cap);
        assert_eq!(r, 0);
        let pages = pool.pages_in_use();
        copy_writer(&snapshot, &mut w);
        assert_eq!(preserve_domain(&mut *w, cap + 1).0, -117);
        assert_eq!(pool.pages_in_use(), pages, "no page is linked");
        // SAFETY: `w` lives; `pool` outlives it.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *w, &mut root) }, 0);
        let (doms, _) = live(&mut pool, root);
        assert_eq!(doms.len() as u64, cap + 1);
        assert_eq!(doms.last(), Some(&next_page.phys));
    }
}

/// Issue 11, finding 4: a handle was checked for its kind, writer id and
/// slot alignment only. A domain handle moved to a device page's first
/// slot made `iommu_flb_unpreserve_domain()` mark device 0 DELETED.
#[test]
fn forged_handle_is_refused_and_changes_nothing() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let mut err = new_error();
        let mut forged = b.dom[1];
        forged.phys = (b.dev[0].phys & !0xfff) + hdr_size(version);
        assert_eq!(forged.phys, b.dev[0].phys, "device 0 is the first slot");
        // SAFETY: `b.w` lives.
        unsafe {
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &forged), -22);
            assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
        }
        assert_eq!((err.kind, err.page_phys), (132, forged.phys));
        // Another domain's address under a genuine handle's check value.
        let mut swapped = b.dom[1];
        swapped.phys = b.dom[2].phys;
        // A handle of the right kind from another writer over the same pages.
        let mut pool2 = PoolRef::new();
        let b2 = build_in(&mut pool2, version);
        assert_eq!(b2.dom[1].phys, b.dom[1].phys, "the pools hand out alike");
        // SAFETY: as above.
        unsafe {
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &swapped), -22);
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b2.dom[2]), -22);
            assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
            assert_eq!(err.kind, 132);
            // The right handle of the wrong kind: an invalid argument.
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.hw[0]), -22);
            assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
            assert_eq!(err.kind, 0);
        }
        let mut root = 0;
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
        let (doms, devs) = live(&mut pool, root);
        assert_eq!(doms, b.dom.map(|h| h.phys));
        assert_eq!(devs, b.dev[..3].iter().map(|h| h.phys).collect::<Vec<_>>());
    }
}

/// A handle kept from an earlier start of the same writer names a slot of
/// the new image (the pages are handed out again). Main refused it too, by
/// the writer id in the handle; the check value, keyed afresh by every
/// start, must go on refusing it, whatever versions the two starts write.
#[test]
fn handle_of_an_earlier_start_is_refused() {
    // Under miri, the two pairs that change version (see `VERSIONS`).
    let pairs: &[(u32, u32)] = if cfg!(miri) {
        &[(1, 2), (2, 1)]
    } else {
        &[(1, 1), (2, 2), (1, 2), (2, 1)]
    };
    for &(first, second) in pairs {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, first);
        let mut root = 0;
        // SAFETY: `b.w` lives; `pool` outlives it.
        assert_eq!(unsafe { iommu_flb_writer_abort(&mut *b.w) }, 0);
        assert_eq!(start_in(&mut *b.w, &pool, second, None, &mut root), 0);
        let (r, h) = preserve_domain(&mut *b.w, 0);
        assert_eq!(r, 0);
        if (first, second) == (1, 1) {
            // (Version 2 takes a chain's first page with its first record,
            // so the domain chain's head is another page this time.)
            assert_eq!(h.phys, b.dom[0].phys, "the same slot again");
        }
        let mut stale = b.dom[0];
        stale.phys = h.phys;
        // SAFETY: as above.
        unsafe {
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.dom[0]), -22);
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &stale), -22);
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &h), 0);
        }
    }
}

/// Issue 11, finding 5: the IOMMU handle's record was read before the
/// handle was checked, so a forged handle made the writer ask its page
/// callback (phys_to_virt() in the kernel) for an address the allocator
/// never handed out.
#[test]
fn writer_maps_only_pages_its_allocator_handed_out() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        assert!(pool.strays.is_empty(), "{:x?}", pool.strays);
        let never = (0..PAGES as u64)
            .map(|i| BASE + i * 4096)
            .find(|&p| pool.lookup(p).is_null())
            .expect("a free page");
        let mut forged = b.hw[0];
        forged.phys = never + hdr_size(version);
        let dev = IommuDeviceSer::new_zeroed();
        let mut h = IommuFlbHandle::default();
        let mut outside = b.dev[0];
        outside.phys = 0x7777_0000 + hdr_size(version);
        // SAFETY: `b.w` lives.
        unsafe {
            assert_eq!(
                iommu_flb_preserve_device(&mut *b.w, &dev, &b.dom[0], &forged, &mut h),
                -22
            );
            assert_eq!(iommu_flb_unpreserve_iommu(&mut *b.w, &forged), -22);
            assert_eq!(iommu_flb_unpreserve_device(&mut *b.w, &outside), -22);
        }
        assert!(pool.strays.is_empty(), "asked for {:x?}", pool.strays);
    }
}

fn reenter(pool: &mut Pool) {
    let w = pool.writer;
    let (r, _) = preserve_domain(w, 99);
    let mut err = new_error();
    let mut root = 0;
    // SAFETY: `w` is the live writer whose callback this is.
    let (e, f) = unsafe {
        (
            iommu_flb_writer_last_error(w, &mut err),
            iommu_flb_writer_finish(w, &mut root),
        )
    };
    pool.reentered.extend([r, e, f]);
}

/// A sibling of finding 3: a writer callback that calls back into the same
/// writer ran a second call on it while the first held its state (two
/// `&mut`, undefined behaviour, which miri reports). Version 2's CRC
/// callback runs only inside a call on its writer, which is busy then.
#[test]
fn call_into_a_writer_from_its_own_callback_is_ebusy() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut w = zeroed_writer();
        let w: *mut IommuFlbWriter = &mut *w;
        let mut root = 0;
        assert_eq!(start_in(w, &pool, version, None, &mut root), 0);
        pool.writer = w;
        pool.on_alloc = Some(reenter);
        let cap = domain_capacity(version);
        for i in 0..=cap {
            // The last one needs a page: `pool_alloc` calls back.
            assert_eq!(preserve_domain(w, i).0, 0);
        }
        // Version 2 also takes the domain chain's head with the first.
        let allocs = if version == 2 { 2 } else { 1 };
        assert_eq!(pool.reentered, [-16, -16, -16].repeat(allocs));
        pool.on_alloc = None;
        pool.writer = ptr::null_mut();
        // SAFETY: `w` is live; `pool` outlives it.
        assert_eq!(unsafe { iommu_flb_writer_finish(w, &mut root) }, 0);
        let probes = core::mem::take(&mut pool.crc_probes);
        if version == 2 {
            // Each preserve rewrites the root and a domain page.
            assert!(probes.len() as u64 >= 2 * (cap + 1), "{}", probes.len());
            assert!(probes.iter().all(|&r| r == -16), "{probes:?}");
        } else {
            assert!(probes.is_empty(), "version 1 has no CRC");
        }
        let (doms, _) = live(&mut pool, root);
        assert_eq!(doms.len() as u64, cap + 1);
    }
}

/// Issue 11, finding 6, on the writer's side: the writer kept a `&mut` to
/// its device index in caller memory from one call to the next, so a read
/// of that storage between calls (the contract forbids only writes)
/// invalidated it in Rust's aliasing model, and the next preserve used an
/// invalid reference: undefined behaviour, which miri reports.
#[test]
fn index_storage_may_be_read_between_writer_calls() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let Indexed {
            mut w,
            index,
            slots,
            hw,
            dom,
        } = indexed_writer(&pool, version);
        let mut root = 0;
        let mut dev = IommuDeviceSer::new_zeroed();
        let mut h = IommuFlbHandle::default();
        let mut seen = 0u64;
        for devid in [7u32, 3, 5] {
            dev.devid = devid.into();
            // SAFETY: as above.
            let r = unsafe { iommu_flb_preserve_device(&mut *w, &dev, &dom, &hw, &mut h) };
            assert_eq!(r, 0);
            // A debugger's look at the index between calls.
            // SAFETY: `slots` points to the live `index` storage.
            seen = (0..index.len()).fold(seen, |a, i| a ^ unsafe { slots.add(i).read() });
        }
        assert_ne!(seen, 0, "the index holds the devices");
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                iommu_flb_preserve_device(&mut *w, &dev, &dom, &hw, &mut h),
                -17,
                "the index still finds devid 5"
            );
            assert_eq!(iommu_flb_writer_finish(&mut *w, &mut root), 0);
        }
        let (_, devs) = live(&mut pool, root);
        assert_eq!(devs.len(), 3);
    }
}

/// Issue 11, finding 6, on the reader's side: the next kernel sets
/// `INCOMING` and `restored` on records it adopted, between calls, while it
/// still walks the image. The walk goes on with the records validation saw,
/// and no reference of an earlier call is used after the write (miri checks
/// that).
#[test]
fn next_kernel_fields_may_be_written_between_walk_calls() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let mut scratch = sized_scratch(&mut pool, b.root);
    let (r, img, _) = validate_into(&mut pool, b.root, raw(&mut scratch));
    assert_eq!(r, 0);
    let mut cur = IommuFlbCursor::default();
    let mut dev = no_device();
    let mut got = Vec::new();
    // SAFETY: `img` is in `scratch`, which lives; `pool` lives.
    while unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) } == 1 {
        got.push(dev.phys);
        // The adopting kernel's writes: INCOMING, and the Intel `restored`
        // byte (the first of the vendor union, at offset 48).
        set_flag(&mut pool, dev.phys, 1);
        let page = pool.lookup(dev.phys & !0xfff);
        // SAFETY: the record is inside the pool page.
        unsafe { page.add((dev.phys & 0xfff) as usize + 48).write(1) };
        let mut found = no_device();
        // SAFETY: as above.
        let r = unsafe { iommu_flb_find_device(img, 1, 0x100, &mut found) };
        assert_eq!((r, found.phys), (0, b.dev[0].phys));
    }
    assert_eq!(got, b.dev[..3].iter().map(|h| h.phys).collect::<Vec<_>>());
    // A dump of it now validates only as restored.
    let (r, _, err) = validate_into(&mut pool, b.root, raw(&mut scratch));
    assert_eq!((r, err.kind), (-114, 22));
}

/// `iommu_flb_find_device()` on an image whose device keys do not ascend
/// in chain order (devices 0 and 1 of `build` with their devids swapped):
/// validation then keeps a sorted index of every key, not one entry per
/// device page, and the image the C API thaws from its scratch searches
/// that one.
#[test]
fn find_device_finds_every_device_when_keys_do_not_ascend() {
    let mut pool = PoolRef::new();
    let b = build(&mut pool);
    let devid_at = core::mem::offset_of!(IommuDeviceSer, devid);
    for (phys, devid) in [(b.dev[0].phys, 0x101u32), (b.dev[1].phys, 0x100)] {
        let page = pool.lookup(phys & !0xfff);
        let at = (phys & 0xfff) as usize + devid_at;
        // SAFETY: the record's devid is inside the pool page.
        unsafe {
            page.add(at)
                .cast::<[u8; 4]>()
                .write_unaligned(devid.to_le_bytes())
        };
    }
    let mut scratch = sized_scratch(&mut pool, b.root);
    let (r, img, _) = validate_into(&mut pool, b.root, raw(&mut scratch));
    assert_eq!(r, 0);
    let want = [
        (0x100, b.dev[1].phys),
        (0x101, b.dev[0].phys),
        (0x102, b.dev[2].phys),
    ];
    for (devid, phys) in want {
        let mut found = no_device();
        // SAFETY: `img` is in `scratch`, which lives; `pool` lives.
        let r = unsafe { iommu_flb_find_device(img, 1, devid, &mut found) };
        assert_eq!((r, found.phys), (0, phys), "devid {devid:#x}");
    }
    // Device 3 was unpreserved.
    let mut found = no_device();
    // SAFETY: as above.
    let r = unsafe { iommu_flb_find_device(img, 1, 0x103, &mut found) };
    assert_eq!(r, -2);
}

/// Found by the `capi` fuzz target: a device preserved onto an unpreserved
/// domain while the IOMMU's page cannot be mapped. The writer reads the
/// domain first and refuses with -ENOENT (ATTACH_TO_DELETED); the C API's
/// handle check mapped the IOMMU's page before the writer ran and answered
/// -EFAULT. The C API answers as the writer does.
#[test]
fn refused_page_is_reported_in_the_writers_order() {
    for version in VERSIONS {
        let mut pool = PoolRef::new();
        let mut b = build_in(&mut pool, version);
        let (r, dom) = preserve_domain(&mut *b.w, 9);
        assert_eq!(r, 0);
        let mut err = new_error();
        // SAFETY: `b.w` lives.
        unsafe {
            assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &dom), 0);
            pool.refuse = Some(b.hw[0].phys & !0xfff);
            let mut d = IommuDeviceSer::new_zeroed();
            d.devid = 0x777.into();
            let mut h = IommuFlbHandle::default();
            let r = iommu_flb_preserve_device(&mut *b.w, &d, &dom, &b.hw[0], &mut h);
            assert_eq!(r, -2);
            assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
            assert_eq!((err.kind, err.page_phys), (133, dom.phys));
            // With a live domain, the refused page is what stops it.
            let r = iommu_flb_preserve_device(&mut *b.w, &d, &b.dom[1], &b.hw[0], &mut h);
            assert_eq!(r, -14);
            assert_eq!(iommu_flb_writer_last_error(&*b.w, &mut err), 0);
            assert_eq!((err.kind, err.page_phys), (130, b.hw[0].phys & !0xfff));
        }
    }
}

/// Validates the image at `root` with `mem` into a fresh scratch
/// of the size `mem` asks for: the errno, the image, the error, and the
/// scratch holding the image.
fn validate_with(
    mem: &IommuFlbMem,
    root: u64,
) -> (c_int, *const IommuFlbImage, IommuFlbError, Vec<u64>) {
    let mut err = new_error();
    let mut size = 0usize;
    // SAFETY: valid pointers to live locals; `mem`'s pool lives.
    let r = unsafe { iommu_flb_scratch_size(mem, root, &mut size, &mut err) };
    if r != 0 {
        return (r, ptr::null(), err, Vec::new());
    }
    let mut scratch = vec![0u64; size.div_ceil(8)];
    let mut img = ptr::null();
    // SAFETY: `scratch` has at least `size` bytes, 8-aligned.
    let r = unsafe {
        iommu_flb_validate(
            mem,
            root,
            0,
            scratch.as_mut_ptr().cast(),
            size,
            &mut img,
            &mut err,
        )
    };
    (r, img, err, scratch)
}

/// The version-2 writer of the C API, read back through the C reader with
/// the caller's CRC callback on both sides: what was preserved is there,
/// in version 2's records (`ser_v2`), referencing by chain index.
#[test]
fn v2_image_written_and_read_through_the_c_api_holds_what_was_preserved() {
    let mut pool = PoolRef::new();
    let mut b = build_in(&mut pool, 2);
    assert!(pool.crc_calls > 0, "the writer used the callback");
    let mut root = 0;
    // SAFETY: `b.w` lives.
    assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
    assert_eq!(root, b.root);
    let writer_calls = pool.crc_calls;
    let mem = pool.mem();
    let (r, img, err, _scratch) = validate_with(&mem, root);
    assert_eq!(r, 0, "{}", message(&err));
    assert!(
        pool.crc_calls > writer_calls,
        "the reader used the callback"
    );
    let after_validate = pool.crc_calls;

    let mut info = IommuFlbImageInfo::default();
    // SAFETY: `img` is in `_scratch`, which lives, as does `pool`.
    assert_eq!(unsafe { iommu_flb_image_info(img, &mut info) }, 0);
    // The root's page and one page per chain.
    assert_eq!(
        (
            info.version,
            info.pages,
            info.live_iommus,
            info.live_devices
        ),
        (2, 4, 2, 3)
    );

    let mut cur = IommuFlbCursor::default();
    let mut hw = no_iommu();
    let mut got = Vec::new();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_iommu(img, &mut cur, &mut hw) } == 1 {
        assert!(hw.ser.is_null(), "no version-1 record in a version-2 image");
        // SAFETY: `ser_v2` points into a pool page.
        got.push((hw.phys, unsafe { (*hw.ser_v2).token.get() }));
    }
    assert_eq!(
        got,
        [(b.hw[0].phys, 0xfed0_0000), (b.hw[1].phys, 0xfed0_1000)]
    );

    let mut cur = IommuFlbCursor::default();
    let mut dom = no_domain();
    let mut got = Vec::new();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_domain(img, &mut cur, &mut dom) } == 1 {
        assert!(dom.ser.is_null());
        // SAFETY: as above.
        got.push((dom.phys, unsafe { (*dom.ser_v2).top_table_phys.get() }));
    }
    let want: Vec<_> = (0..3)
        .map(|i| (b.dom[i].phys, 0x2000_0000 + i as u64 * 0x1000))
        .collect();
    assert_eq!(got, want);

    let mut cur = IommuFlbCursor::default();
    let mut dev = no_device();
    let mut got = Vec::new();
    // SAFETY: as above.
    while unsafe { iommu_flb_next_device(img, &mut cur, &mut dev) } == 1 {
        assert!(dev.ser.is_null());
        // SAFETY: as above.
        let d = unsafe { &*dev.ser_v2 };
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_device_domain(img, &dev, &mut dom) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_device_iommu(img, &dev, &mut hw) }, 0);
        got.push((
            dev.phys,
            d.devid.get(),
            d.attachment_id.get(),
            d.domain_index.get(),
            d.iommu_index.get(),
            dom.phys,
            hw.phys,
        ));
    }
    let want: Vec<_> = (0..3usize)
        .map(|i| {
            (
                b.dev[i].phys,
                0x100 + i as u32,
                if i % 2 == 0 { 5 } else { 0 },
                (i % 3) as u64,
                (i % 2) as u64,
                b.dom[i % 3].phys,
                b.hw[i % 2].phys,
            )
        })
        .collect();
    assert_eq!(got, want, "device 3 was unpreserved");
    assert_eq!(pool.crc_calls, after_validate, "walks check no CRC");
}

/// The callback is what both sides checksum with: a CRC function other
/// than the library's own writes pages only that function accepts.
#[test]
fn crc_callback_is_what_the_writer_and_the_reader_use() {
    let mut pool = PoolRef::new();
    pool.crc_flip = 0x8000_0001;
    let mut b = build_in(&mut pool, 2);
    let mut root = 0;
    // SAFETY: `b.w` lives.
    assert_eq!(unsafe { iommu_flb_writer_finish(&mut *b.w, &mut root) }, 0);
    let own = pool.mem_own();
    let (r, img, err, _) = validate_with(&own, root);
    assert_eq!(
        (r, err.kind, err.page_phys),
        (-74, 26, root),
        "{}",
        message(&err)
    );
    assert!(img.is_null());
    let theirs = pool.mem();
    let (r, _, err, _) = validate_with(&theirs, root);
    assert_eq!(r, 0, "{}", message(&err));
    // And the other way round: the library's own CRC, read with the
    // changed callback.
    let mut pool = PoolRef::new();
    let mut w = zeroed_writer();
    let cfg = IommuFlbWriterConfig {
        version: 2,
        reserved: 0,
        generation: 1,
    };
    // SAFETY: valid pointers; `pool` outlives the writer.
    unsafe {
        let r = iommu_flb_writer_start_config(
            &mut *w,
            &pool.alloc(),
            &cfg,
            ptr::null_mut(),
            0,
            &mut root,
        );
        assert_eq!(r, 0);
        assert_eq!(iommu_flb_writer_finish(&mut *w, &mut root), 0);
    }
    assert_eq!(pool.crc_calls, 0, "no callback: the library's own CRC");
    let own = pool.mem_own();
    let (r, _, err, _) = validate_with(&own, root);
    assert_eq!(r, 0, "{}", message(&err));
    pool.crc_flip = 1;
    let theirs = pool.mem();
    let (r, _, err, _) = validate_with(&theirs, root);
    assert_eq!((r, err.kind), (-74, 26));
}

/// A configuration the writer cannot write is refused before any page is
/// taken, naming the field, and the writer can only report it.
#[test]
fn bad_writer_config_is_einval_naming_the_field() {
    let pool = PoolRef::new();
    let alloc = pool.alloc_crc();
    let cfg = |version, reserved, generation| IommuFlbWriterConfig {
        version,
        reserved,
        generation,
    };
    let bad = [
        (cfg(0, 0, 0), "version"),
        (cfg(3, 0, 1), "version"),
        (cfg(u32::MAX, 0, 1), "version"),
        (cfg(2, 1, 1), "reserved"),
        (cfg(1, 0x8000_0000, 0), "reserved"),
        (cfg(1, 0, 1), "generation"),
    ];
    let mut index = vec![0x77u64; 8];
    for (c, name) in bad {
        index.fill(0x77);
        let mut w = zeroed_writer();
        let mut root = 0x1234;
        let mut err = new_error();
        // SAFETY: valid pointers to live locals; `pool` and `index` live.
        unsafe {
            let r =
                iommu_flb_writer_start_config(&mut *w, &alloc, &c, ptr::null_mut(), 0, &mut root);
            assert_eq!(r, -22, "{c:?}");
            assert_eq!(iommu_flb_writer_last_error(&*w, &mut err), 0);
            assert_eq!((err.error, err.kind, field(&err)), (-22, 64, Some(name)));
            assert!(message(&err).contains(name), "{}", message(&err));
            let (r, _) = preserve_domain(&mut *w, 0);
            assert_eq!(r, -22, "a refused start is no writer");
            // With an index, the refusal of `reserved` leaves it untouched.
            let r = iommu_flb_writer_start_config(
                &mut *w,
                &alloc,
                &c,
                index.as_mut_ptr().cast(),
                64,
                &mut root,
            );
            assert_eq!(r, -22);
        }
        assert_eq!(root, 0x1234, "no root");
        assert_eq!(pool.pages_in_use(), 0, "no page taken");
        if name == "reserved" {
            assert!(index.iter().all(|&x| x == 0x77));
        }
    }
    // NULL arguments: the configuration, or an index with a size.
    let mut w = zeroed_writer();
    let mut root = 0;
    let good = cfg(2, 0, 9);
    // SAFETY: as above; the NULL pointers must not be dereferenced.
    unsafe {
        let r = iommu_flb_writer_start_config(
            &mut *w,
            &alloc,
            ptr::null(),
            ptr::null_mut(),
            0,
            &mut root,
        );
        assert_eq!(r, -22);
        let r =
            iommu_flb_writer_start_config(&mut *w, &alloc, &good, ptr::null_mut(), 64, &mut root);
        assert_eq!(r, -22);
        let r = iommu_flb_writer_start_config(
            &mut *w,
            &alloc,
            &good,
            index.as_mut_ptr().cast(),
            0,
            &mut root,
        );
        assert_eq!(r, -22, "an index of no slot");
        let misaligned = index.as_mut_ptr().cast::<u8>().wrapping_add(4).cast();
        let r = iommu_flb_writer_start_config(&mut *w, &alloc, &good, misaligned, 32, &mut root);
        assert_eq!(r, -22);
        let r = iommu_flb_writer_start_config(
            &mut *w,
            ptr::null(),
            &good,
            ptr::null_mut(),
            0,
            &mut root,
        );
        assert_eq!(r, -22);
        let r = iommu_flb_writer_start_config(
            &mut *w,
            &alloc,
            &good,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
        );
        assert_eq!(r, -22);
    }
    assert_eq!(pool.pages_in_use(), 0);
    assert_eq!(pool.crc_calls, 0);
}

/// Version 1 through iommu_flb_writer_start_config() is exactly what
/// iommu_flb_writer_start() writes, byte for byte, callback or not.
#[test]
fn v1_through_start_config_is_start() {
    let run = |config: bool| {
        let pool = PoolRef::new();
        let mut w = zeroed_writer();
        let mut root = 0;
        let cfg = IommuFlbWriterConfig {
            version: 1,
            reserved: 0,
            generation: 0,
        };
        // SAFETY: valid pointers; `pool` outlives the writer.
        let r = unsafe {
            if config {
                let alloc = pool.alloc_crc();
                iommu_flb_writer_start_config(&mut *w, &alloc, &cfg, ptr::null_mut(), 0, &mut root)
            } else {
                iommu_flb_writer_start(&mut *w, &pool.alloc(), &mut root)
            }
        };
        assert_eq!(r, 0);
        for i in 0..3 {
            assert_eq!(preserve_domain(&mut *w, i).0, 0);
        }
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *w, &mut root) }, 0);
        assert_eq!(pool.crc_calls, 0, "version 1 has no CRC");
        let pages: Vec<Vec<u8>> = (0..PAGES as u64)
            .map(|i| {
                let p = pool.lookup(BASE + i * 4096);
                if p.is_null() {
                    return Vec::new();
                }
                // SAFETY: a pool page in use.
                unsafe { core::slice::from_raw_parts(p, PAGE_SIZE) }.to_vec()
            })
            .collect();
        (root, pages)
    };
    let (root, pages) = run(false);
    assert_eq!(run(true), (root, pages.clone()));
    assert_eq!(pages.iter().filter(|p| !p.is_empty()).count(), 4);
}

// ---- formats: the library's descriptor, negotiation, writer config ----

use crate::abi::formats::IommuFlbFormats;
use crate::formats::{FORMATS, FormatSupport, Formats};
use zerocopy::IntoBytes;

/// A stored descriptor of `entries`.
fn formats_ser(entries: &[FormatSupport]) -> IommuFlbFormats {
    Formats::new(entries).expect("valid entries").to_ser()
}

/// `iommu_flb_negotiate(ours, theirs)`: its return and what it stored.
fn c_negotiate(
    ours: *const IommuFlbFormats,
    theirs: *const IommuFlbFormats,
) -> (c_int, IommuFlbNegotiated) {
    let mut out = IommuFlbNegotiated {
        version: 0xdead,
        reserved: 1,
        compat: 1,
        incompat: 1,
    };
    // SAFETY: each pointer is NULL or a descriptor of the calling test.
    let r = unsafe { iommu_flb_negotiate(ours, theirs, &mut out) };
    (r, out)
}

#[test]
fn library_formats_is_the_crates_descriptor() {
    // SAFETY: a pointer to the library's static.
    let own = unsafe { &*iommu_flb_library_formats() };
    assert_eq!(own.as_bytes(), FORMATS.to_ser().as_bytes());
    assert_eq!(Formats::from_ser(own), Ok(FORMATS));
}

#[test]
fn negotiate_agrees_on_the_newest_common_version() {
    let own = iommu_flb_library_formats();
    let agreed = |version| IommuFlbNegotiated {
        version,
        reserved: 0,
        compat: 0,
        incompat: 0,
    };
    assert_eq!(c_negotiate(own, own), (0, agreed(2)));
    let v1 = formats_ser(&[FormatSupport::read_write(1)]);
    assert_eq!(c_negotiate(own, &v1), (0, agreed(1)));
    assert_eq!(c_negotiate(&v1, own), (0, agreed(1)));
    // Disjoint: -EPROTONOSUPPORT, and the result zeroed.
    let v5 = formats_ser(&[FormatSupport::read_write(5)]);
    assert_eq!(c_negotiate(own, &v5), (-93, IommuFlbNegotiated::default()));
}

#[test]
fn negotiate_reads_only_the_struct_of_a_longer_later_descriptor() {
    // A later kernel's descriptor says 256 bytes; the caller's copy holds
    // only the struct's 208 (miri would see a read past them).
    let mut later = formats_ser(&[
        FormatSupport::read_write(1),
        FormatSupport::read_write(2),
        FormatSupport::read_write(3),
    ]);
    later.size.set(256);
    let boxed = Box::new(later);
    let (r, out) = c_negotiate(iommu_flb_library_formats(), &*boxed);
    assert_eq!((r, out.version), (0, 2));
}

#[test]
fn negotiate_refuses_null_and_forged_descriptors_with_their_errno() {
    let own = iommu_flb_library_formats();
    let zero = IommuFlbNegotiated::default();
    assert_eq!(c_negotiate(ptr::null(), own), (-22, zero));
    assert_eq!(c_negotiate(own, ptr::null()), (-22, zero));
    // SAFETY: a valid descriptor; the NULL out is refused before use.
    let r = unsafe { iommu_flb_negotiate(own, own, ptr::null_mut()) };
    assert_eq!(r, -22);
    // Misaligned out (align 8).
    let mut buf = [0u64; 4];
    let odd = buf.as_mut_ptr().cast::<u8>().wrapping_add(4).cast();
    // SAFETY: as above; the misaligned out is refused before use.
    assert_eq!(unsafe { iommu_flb_negotiate(own, own, odd) }, -22);
    assert_eq!(buf, [0; 4]);

    let forged = |edit: fn(&mut IommuFlbFormats)| {
        let mut f = FORMATS.to_ser();
        edit(&mut f);
        let theirs = c_negotiate(own, &f);
        let ours = c_negotiate(&f, own);
        assert_eq!(theirs, ours, "both arguments are checked alike");
        assert_eq!(theirs.1, zero);
        theirs.0
    };
    assert_eq!(forged(|f| f.magic.set(0)), -71);
    assert_eq!(forged(|f| f.version.set(2)), -95);
    assert_eq!(forged(|f| f.entries[0].flags.set(0x10)), -95);
    assert_eq!(forged(|f| f.size.set(207)), -74);
    assert_eq!(forged(|f| f.count.set(9)), -74);
    assert_eq!(forged(|f| f.count.set(u32::MAX)), -74);
    assert_eq!(forged(|f| f.entries[1].version.set(1)), -74);
    assert_eq!(forged(|f| f.entries[0].version.set(0)), -74);
    assert_eq!(forged(|f| f.entries[7].incompat_known.set(1)), -74);
}

#[test]
fn writer_config_from_a_negotiation_and_its_refusals() {
    let fill = |agreed: IommuFlbNegotiated, generation| {
        let mut cfg = IommuFlbWriterConfig {
            version: 0xee,
            reserved: 0xee,
            generation: 0xee,
        };
        // SAFETY: valid pointers to locals.
        let r = unsafe { iommu_flb_writer_config_negotiated(&agreed, generation, &mut cfg) };
        (r, cfg.version, cfg.reserved, cfg.generation)
    };
    let v2 = IommuFlbNegotiated {
        version: 2,
        ..IommuFlbNegotiated::default()
    };
    assert_eq!(fill(v2, 0x55), (0, 2, 0, 0x55));
    let v1 = IommuFlbNegotiated { version: 1, ..v2 };
    assert_eq!(fill(v1, 0x55), (0, 1, 0, 0), "version 1 has no generation");
    // Refused, and the config untouched.
    let untouched = (0xee, 0xee, 0xee);
    let refused = |agreed, errno| {
        let (r, a, b, c) = fill(agreed, 0x55);
        assert_eq!((r, (a, b, c)), (errno, untouched), "{agreed:?}");
    };
    refused(IommuFlbNegotiated::default(), -93);
    refused(IommuFlbNegotiated { version: 3, ..v2 }, -93);
    refused(IommuFlbNegotiated { reserved: 1, ..v2 }, -22);
    refused(IommuFlbNegotiated { compat: 1, ..v2 }, -22);
    refused(
        IommuFlbNegotiated {
            incompat: 1 << 63,
            ..v1
        },
        -22,
    );
    let mut cfg = IommuFlbWriterConfig {
        version: 0,
        reserved: 0,
        generation: 0,
    };
    // SAFETY: NULL arguments are refused before use.
    unsafe {
        assert_eq!(
            iommu_flb_writer_config_negotiated(ptr::null(), 1, &mut cfg),
            -22
        );
        assert_eq!(
            iommu_flb_writer_config_negotiated(&v2, 1, ptr::null_mut()),
            -22
        );
    }
}

#[test]
fn a_writer_started_from_a_negotiation_writes_the_agreed_version() {
    for (theirs, version) in [
        (formats_ser(&[FormatSupport::read_write(1)]), 1),
        (FORMATS.to_ser(), 2),
    ] {
        let (r, agreed) = c_negotiate(iommu_flb_library_formats(), &theirs);
        assert_eq!(r, 0);
        let mut cfg = IommuFlbWriterConfig {
            version: 0,
            reserved: 0,
            generation: 0,
        };
        // SAFETY: valid pointers to locals.
        let r = unsafe { iommu_flb_writer_config_negotiated(&agreed, 0x77, &mut cfg) };
        assert_eq!(r, 0);
        let mut pool = PoolRef::new();
        let mut w = zeroed_writer();
        let mut root = 0;
        let alloc = pool.alloc_crc();
        // SAFETY: valid pointers; `pool` outlives the writer.
        let r = unsafe {
            iommu_flb_writer_start_config(&mut *w, &alloc, &cfg, ptr::null_mut(), 0, &mut root)
        };
        assert_eq!(r, 0);
        assert_eq!(preserve_domain(&mut *w, 1).0, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { iommu_flb_writer_finish(&mut *w, &mut root) }, 0);
        let mut scratch = Vec::new();
        let img = validate(&mut pool, root, &mut scratch);
        let mut info = IommuFlbImageInfo::default();
        // SAFETY: `img` points into `scratch`, which is live.
        assert_eq!(unsafe { iommu_flb_image_info(img, &mut info) }, 0);
        assert_eq!(info.version, version);
    }
}
