//! The validation path allocates nothing, and the scratch the caller gives
//! it is exactly the documented size: `2 × P + 1 + I + D` elements of 16
//! bytes for `P` chain pages, `I` IOMMU slots and `D` device slots (deleted
//! ones included), on small images and large.
//!
//! A counting global allocator (per thread, so other tests running in
//! parallel do not disturb the count) watches everything a kernel does
//! between receiving the root address and restoring pages: `scratch_len`,
//! `validate` in handover mode, a visit of every live IOMMU, domain and
//! device with its domain, IOMMU and vendor payload, both lookups, and the
//! restore walk. Only the scratch itself is allocated, by the caller, as the
//! kernel would with kvmalloc.
#![cfg(feature = "alloc")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::v1::{
    IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_DOMAIN_ARRAY_CAPACITY_4K, IOMMU_HW_ARRAY_CAPACITY_4K,
    IommuTypeSer,
};
use iommu_flb_abi::reader::{self, Options, ScratchElem};
use iommu_flb_abi::writer::{
    DeviceInit, DevicePayloadInit, DomainInit, IndexSlot, IntelDeviceInit, IntelIommuInit,
    IommuPayloadInit, MapAlloc, SliceIndex, Smmuv3DeviceInit, Smmuv3IommuInit, Writer,
};

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the slot may be gone while the thread is torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Forwards to `System`, counting.
struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; counting touches only a const-initialised
// thread-local `Cell<u64>`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees for `layout` are `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`,
        // with `layout`; the caller guarantees the rest.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what it returned and how many allocations this
/// thread made meanwhile.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

/// Slots (records, live and deleted) of each chain.
#[derive(Clone, Copy, Debug, Default)]
struct Slots {
    iommus: u64,
    domains: u64,
    devices: u64,
}

impl Slots {
    /// Chain pages: each chain has at least its head, and is full but for
    /// its tail.
    fn pages(&self) -> u64 {
        [
            (self.iommus, IOMMU_HW_ARRAY_CAPACITY_4K),
            (self.domains, IOMMU_DOMAIN_ARRAY_CAPACITY_4K),
            (self.devices, IOMMU_DEVICE_ARRAY_CAPACITY_4K),
        ]
        .iter()
        .map(|&(n, cap)| n.div_ceil(cap).max(1))
        .sum()
    }
}

/// An image shaped like the benchmark images, scaled down: every IOMMU
/// vendor, devices behind IOMMUs in ranges, with `ghosts` one deleted device
/// and domain in every 16, pages at scattered addresses. Returns the pages,
/// the root and the slots of each chain.
fn image(iommus: u64, domains: u64, devices: u64, ghosts: bool) -> (MapAlloc, PhysAddr, Slots) {
    let mut slots = vec![IndexSlot::empty(); usize::try_from(4 * devices + 2).unwrap()];
    let mut w = Writer::with_index(MapAlloc::scattered(0x5eed), SliceIndex::new(&mut slots))
        .expect("start");
    let hw: Vec<_> = (0..iommus)
        .map(|k| {
            let mmio = 0xfe00_0000 + k * 0x1000;
            let payload = if k % 2 == 0 {
                IommuPayloadInit::Intel(IntelIommuInit {
                    phys_addr: PhysAddr::new(mmio),
                    root_table: PhysAddr::new(0x10_0000_0000 + k * 0x1000),
                    context_tables_bitmap: [!0; 8],
                })
            } else {
                IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
                    phys_addr: PhysAddr::new(mmio),
                    strtab_base_cfg: 0x0b_0010,
                    l1_strtab_lu_state: 0x11_0000_0000 + k * 0x1000,
                    l2_strtab_lu_states_phys: PhysAddr::new(0x12_0000_0000 + k * 0x1000),
                })
            };
            w.preserve_iommu(mmio, payload).expect("IOMMU")
        })
        .collect();
    let mut slots = Slots {
        iommus,
        ..Slots::default()
    };
    let domain = |j: u64| DomainInit {
        top_table_phys: PhysAddr::new(0x20_0000_0000 + j * 0x1000),
        top_level: 4,
        vasz: 48,
        sign_extend: 0,
    };
    let mut dom = Vec::new();
    for j in 0..domains {
        if ghosts && j % 16 == 15 {
            let ghost = w.preserve_domain(domain(j)).expect("ghost domain");
            w.unpreserve_domain(ghost).expect("unpreserve ghost domain");
            slots.domains += 1;
        }
        dom.push(w.preserve_domain(domain(j)).expect("domain"));
        slots.domains += 1;
    }
    for i in 0..devices {
        let k = i * iommus / devices;
        let intel = k % 2 == 0;
        let device = |segment: u64| DeviceInit {
            pci_domain_nr: u32::try_from(segment).unwrap(),
            devid: u32::try_from(i & 0xffff).unwrap(),
            dma_owner_token: 0xffff_8880_0000_0000 + i * 0x40,
            attachment_id: if intel { i % domains + 1 } else { 0 },
            payload: if intel {
                DevicePayloadInit::Intel(IntelDeviceInit {
                    pasid_table: PhysAddr::new(0x30_0000_0000 + i * 0x1000),
                    max_pasid: 1 << 20,
                })
            } else {
                DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
                    l1_cdtab_lu_state: 0x31_0000_0000 + i * 0x1000,
                    num_l2_cdtables: 1,
                    l2_cdtab_lu_states_phys: PhysAddr::new(0x32_0000_0000 + i * 0x1000),
                })
            },
        };
        let (d, h) = (
            dom[usize::try_from(i % domains).unwrap()],
            hw[usize::try_from(k).unwrap()],
        );
        if ghosts && i % 16 == 15 {
            let ghost = w
                .preserve_device(device(0x8000 + (i >> 16)), d, h)
                .expect("ghost");
            w.unpreserve_device(ghost).expect("unpreserve ghost");
            slots.devices += 1;
        }
        w.preserve_device(device(i >> 16), d, h).expect("device");
        slots.devices += 1;
    }
    let (root, pages) = w.finish();
    (pages, root, slots)
}

#[test]
fn validation_and_visit_allocate_nothing_and_scratch_is_exactly_the_documented_size() {
    // Under miri the image is small; natively it is benchmark image (a)'s
    // device count with 1 domain per 2 devices.
    let (iommus, domains, devices) = if cfg!(miri) {
        (2, 8, 40)
    } else {
        (64, 1 << 15, 1 << 16)
    };
    validate_and_visit(iommus, domains, devices, true);
}

#[test]
fn scratch_is_exactly_the_documented_size_on_small_images() {
    // Issue 11: 1 IOMMU, 1 domain and 56 devices fill 3 chain pages, 64
    // elements (1024 bytes) for 58 records: 17.7 bytes per record, which the
    // old "at most 16 bytes per record" claim got wrong.
    let (pages, root, slots) = image(1, 1, 56, false);
    let len = reader::scratch_len(&pages, root, &Options::default()).expect("valid");
    assert_eq!((slots.pages(), len), (3, 64));
    assert_eq!(len * size_of::<ScratchElem>(), 1024);
    validate_and_visit(1, 1, 56, false);
    // An image with nothing in it, one record of each kind, then a page or
    // two past each boundary, with deleted slots.
    for (i, d, v) in [(0, 0, 0), (1, 1, 1), (37, 103, 57), (3, 250, 130)] {
        validate_and_visit(i, d, v, true);
    }
}

/// Builds the image, checks `scratch_len` against `2 × P + 1 + I + D`
/// elements of 16 bytes, then validates and visits everything, allocating
/// nothing. Needs `devices >= iommus` (every IOMMU gets a device).
fn validate_and_visit(iommus: u64, domains: u64, devices: u64, ghosts: bool) {
    let (pages, root, slots) = image(iommus, domains, devices, ghosts);
    let opts = Options::default();

    let (len, n) = allocations_during(|| reader::scratch_len(&pages, root, &opts));
    let len = len.expect("scratch_len accepts the writer's image");
    assert_eq!(n, 0, "scratch_len allocated");
    assert_eq!(size_of::<ScratchElem>(), 16);
    let want = 2 * slots.pages() + 1 + slots.iommus + slots.devices;
    assert_eq!(
        u64::try_from(len).unwrap(),
        want,
        "scratch elements for {slots:?} in {} chain pages",
        slots.pages()
    );

    let mut scratch = vec![ScratchElem::default(); len];
    let (visited, n) = allocations_during(|| {
        let image = reader::validate(&pages, root, &opts, &mut scratch).expect("valid");
        let mut visited = (0u64, 0u64, 0u64);
        for i in image.iommus() {
            let _ = std::hint::black_box((i.token(), i.iommu_type(), i.ref_count(), i.payload()));
            visited.0 += 1;
        }
        for d in image.domains() {
            std::hint::black_box(d.top_table_phys());
            visited.1 += 1;
        }
        for d in image.devices() {
            let (dom, hw) = (d.domain(), d.iommu());
            std::hint::black_box((dom.phys(), hw.phys(), d.payload()));
            assert!(image.find_device(d.segment(), d.devid()).is_some());
            assert!(image.find_iommu(hw.token(), hw.iommu_type()).is_some());
            visited.2 += 1;
        }
        for r in image.device_records() {
            std::hint::black_box((r.domain_ref(), r.iommu_ref()));
            assert!(image.resolve_device(&r).is_some());
        }
        assert_eq!(
            image
                .find_iommu(0xfe00_0000, IommuTypeSer::IommuIntel)
                .is_some(),
            iommus > 0
        );
        let mut restored = 0usize;
        image
            .restore(|_| {
                restored += 1;
                Ok::<(), ()>(())
            })
            .expect("restore");
        assert_eq!(restored, image.page_count());
        visited
    });
    assert_eq!(n, 0, "validation or the visit allocated");
    assert_eq!(
        visited,
        (iommus, domains, devices),
        "every live object was visited"
    );
}
