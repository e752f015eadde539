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
use crate::error::{Chain, ErrorKind, Limit, RefFault};
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
        }
    }

    fn mem(&self) -> IommuFlbMem {
        IommuFlbMem {
            page: Some(pool_read),
            ctx: self.ctx(),
            page_size: PAGE_SIZE,
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
    pool.lookup(phys).cast_const()
}

unsafe extern "C" fn pool_free(ctx: *mut c_void, phys: u64) {
    // SAFETY: the tests pass a live `Pool` as `ctx`.
    let pool = unsafe { &mut *ctx.cast::<Pool>() };
    if let Some(i) = Pool::index(phys) {
        pool.used[i] = false;
    }
    pool.freed.push(phys);
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
    let mut w = Box::new(IommuFlbWriter {
        opaque: [0; IOMMU_FLB_WRITER_WORDS],
    });
    let alloc = pool.alloc();
    let mut root = 0u64;
    // SAFETY: valid pointers to live locals; `pool` outlives the writer.
    let r = unsafe { iommu_flb_writer_start(&mut *w, &alloc, &mut root) };
    assert_eq!(r, 0);
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
            other_chain: Chain::Root,
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
/// first image's pages stayed allocated, owned by nobody.
#[test]
fn starting_a_started_writer_is_refused_and_keeps_its_image() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let pages = pool.pages_in_use();
    let alloc = pool.alloc();
    let mut root = 0u64;
    let mut index = vec![0x5555_5555_5555_5555u64; 8];
    // SAFETY: `b.w` is a live writer; `pool` and `index` outlive it.
    unsafe {
        assert_eq!(iommu_flb_writer_start(&mut *b.w, &alloc, &mut root), -16);
        let r = iommu_flb_writer_start_indexed(
            &mut *b.w,
            &alloc,
            index.as_mut_ptr().cast(),
            64,
            &mut root,
        );
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
    // A writer that ended may be started again.
    // SAFETY: as above.
    unsafe {
        assert_eq!(iommu_flb_writer_start(&mut *b.w, &alloc, &mut root), 0);
        assert_eq!(iommu_flb_writer_finish(&mut *b.w, &mut root), 0);
        assert_eq!(iommu_flb_writer_start(&mut *b.w, &alloc, &mut root), 0);
        assert_eq!(iommu_flb_writer_abort(&mut *b.w), 0);
    }
}

/// Issue 11, finding 3: a copy of a started writer handed out the record
/// slot the original hands out next (two domains at one address).
#[test]
fn copy_of_a_writer_is_refused() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let mut copy = zeroed_writer();
    copy_writer(&b.w, &mut copy);
    let (r, _) = preserve_domain(&mut *copy, 1);
    assert_eq!(r, -22, "the copy is not a writer");
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

fn indexed_writer(pool: &PoolRef) -> Indexed {
    let alloc = pool.alloc();
    let mut w = zeroed_writer();
    let size = iommu_flb_writer_index_size(4);
    let mut index = vec![0u64; size.div_ceil(8)];
    let slots = index.as_mut_ptr();
    let mut root = 0;
    // SAFETY: valid pointers; the pool and the index buffer (which moves
    // with its `Vec`, not in memory) outlive the writer.
    let r =
        unsafe { iommu_flb_writer_start_indexed(&mut *w, &alloc, slots.cast(), size, &mut root) };
    assert_eq!(r, 0);
    let v = intel_vendor(0x1000);
    let mut hw = IommuFlbHandle::default();
    // SAFETY: as above.
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
    let pool = PoolRef::new();
    let Indexed {
        mut w,
        index,
        hw,
        dom,
        ..
    } = indexed_writer(&pool);
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

/// Issue 11, finding 3, the stale copy put back: a snapshot of the writer
/// copied back over it (same address) would append into a slot already in
/// use, or relink a page that already has a successor.
#[test]
fn stale_copy_put_back_over_a_writer_cannot_append() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
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

/// The same when the tail was full at the snapshot: the domain after it
/// went to a new page, and the stale writer would link another new page
/// behind the old tail, cutting that domain out of the image.
#[test]
fn stale_copy_of_a_full_tail_does_not_relink_it() {
    let mut pool = PoolRef::new();
    let alloc = pool.alloc();
    let mut w = zeroed_writer();
    let mut root = 0;
    // SAFETY: valid pointers; `pool` outlives the writer.
    let r = unsafe { iommu_flb_writer_start(&mut *w, &alloc, &mut root) };
    assert_eq!(r, 0);
    let cap = crate::abi::v1::IOMMU_DOMAIN_ARRAY_CAPACITY_4K;
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
    // SAFETY: as above.
    assert_eq!(unsafe { iommu_flb_writer_finish(&mut *w, &mut root) }, 0);
    let (doms, _) = live(&mut pool, root);
    assert_eq!(doms.len() as u64, cap + 1);
    assert_eq!(doms.last(), Some(&next_page.phys));
}

/// Issue 11, finding 4: a handle was checked for its kind, writer id and
/// slot alignment only. A domain handle moved to a device page + 16 made
/// `iommu_flb_unpreserve_domain()` mark device 0 DELETED.
#[test]
fn forged_handle_is_refused_and_changes_nothing() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let mut err = new_error();
    let mut forged = b.dom[1];
    forged.phys = (b.dev[0].phys & !0xfff) + 16;
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
    let b2 = build(&mut pool2);
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

/// A handle kept from an earlier start of the same writer names a slot of
/// the new image (the pages are handed out again). Main refused it too, by
/// the writer id in the handle; the check value, keyed afresh by every
/// start, must go on refusing it.
#[test]
fn handle_of_an_earlier_start_is_refused() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    let alloc = pool.alloc();
    let mut root = 0;
    // SAFETY: `b.w` lives; `pool` outlives it.
    unsafe {
        assert_eq!(iommu_flb_writer_abort(&mut *b.w), 0);
        assert_eq!(iommu_flb_writer_start(&mut *b.w, &alloc, &mut root), 0);
    }
    let (r, h) = preserve_domain(&mut *b.w, 0);
    assert_eq!(r, 0);
    assert_eq!(h.phys, b.dom[0].phys, "the same slot again");
    // SAFETY: as above.
    unsafe {
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &b.dom[0]), -22);
        assert_eq!(iommu_flb_unpreserve_domain(&mut *b.w, &h), 0);
    }
}

/// Issue 11, finding 5: the IOMMU handle's record was read before the
/// handle was checked, so a forged handle made the writer ask its page
/// callback (phys_to_virt() in the kernel) for an address the allocator
/// never handed out.
#[test]
fn writer_maps_only_pages_its_allocator_handed_out() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
    assert!(pool.strays.is_empty(), "{:x?}", pool.strays);
    let never = (0..PAGES as u64)
        .map(|i| BASE + i * 4096)
        .find(|&p| pool.lookup(p).is_null())
        .expect("a free page");
    let mut forged = b.hw[0];
    forged.phys = never + 16;
    let dev = IommuDeviceSer::new_zeroed();
    let mut h = IommuFlbHandle::default();
    let mut outside = b.dev[0];
    outside.phys = 0x7777_0010;
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
/// `&mut`, undefined behaviour, which miri reports).
#[test]
fn call_into_a_writer_from_its_own_callback_is_ebusy() {
    let mut pool = PoolRef::new();
    let alloc = pool.alloc();
    let mut w = zeroed_writer();
    let mut root = 0;
    // SAFETY: valid pointers; `pool` outlives the writer.
    let r = unsafe { iommu_flb_writer_start(&mut *w, &alloc, &mut root) };
    assert_eq!(r, 0);
    let w: *mut IommuFlbWriter = &mut *w;
    pool.writer = w;
    pool.on_alloc = Some(reenter);
    let cap = crate::abi::v1::IOMMU_DOMAIN_ARRAY_CAPACITY_4K;
    for i in 0..=cap {
        // The last one needs a page: `pool_alloc` calls back.
        assert_eq!(preserve_domain(w, i).0, 0);
    }
    assert_eq!(pool.reentered, [-16, -16, -16]);
    pool.on_alloc = None;
    // SAFETY: as above.
    assert_eq!(unsafe { iommu_flb_writer_finish(w, &mut root) }, 0);
    let (doms, _) = live(&mut pool, root);
    assert_eq!(doms.len() as u64, cap + 1);
}

/// Issue 11, finding 6, on the writer's side: the writer kept a `&mut` to
/// its device index in caller memory from one call to the next, so a read
/// of that storage between calls (the contract forbids only writes)
/// invalidated it in Rust's aliasing model, and the next preserve used an
/// invalid reference: undefined behaviour, which miri reports.
#[test]
fn index_storage_may_be_read_between_writer_calls() {
    let mut pool = PoolRef::new();
    let Indexed {
        mut w,
        index,
        slots,
        hw,
        dom,
    } = indexed_writer(&pool);
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

/// Found by the `capi` fuzz target: a device preserved onto an unpreserved
/// domain while the IOMMU's page cannot be mapped. The writer reads the
/// domain first and refuses with -ENOENT (ATTACH_TO_DELETED); the C API's
/// handle check mapped the IOMMU's page before the writer ran and answered
/// -EFAULT. The C API answers as the writer does.
#[test]
fn refused_page_is_reported_in_the_writers_order() {
    let mut pool = PoolRef::new();
    let mut b = build(&mut pool);
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
