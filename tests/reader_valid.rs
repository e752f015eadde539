//! Valid images of every shape are accepted, and the view on them gives
//! back exactly what was built.

mod common;

use std::cell::Cell;
use std::collections::HashMap;

use common::{Spec, off};
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::{
    IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING, IommuTypeSer,
};
use iommu_flb_abi::error::Chain;
use iommu_flb_abi::reader::{
    self, DevicePayload, IommuPayload, Mode, Options, RestoreError, ScratchElem,
};
use iommu_flb_abi::{FlatMemory, Memory, PageMap, PhysAddr};

use common::{accept, accept_with, check_view};

/// The page size of most images built here, in bytes.
const PAGE_SIZE: usize = 4096;

#[test]
fn empty_handover_is_accepted() {
    let spec = Spec::simple(0, 0, 0);
    let img = spec.build();
    accept(&spec, &img);
    assert_eq!(
        reader::scratch_len(&img.mem, img.root, &Options::default()),
        Ok(2 * 3 + 1)
    );
}

#[test]
fn exactly_full_single_pages_are_accepted() {
    let spec = Spec::simple(36, 102, 56);
    let img = spec.build();
    assert_eq!(img.pages.each_ref().map(|p| p.len()), [1, 1, 1]);
    accept(&spec, &img);
}

#[test]
fn exactly_full_multi_page_chains_are_accepted() {
    let spec = Spec::simple(72, 204, 112);
    let img = spec.build();
    assert_eq!(img.pages.each_ref().map(|p| p.len()), [2, 2, 2]);
    accept(&spec, &img);
}

#[test]
fn multi_page_chains_with_partial_tails_are_accepted() {
    let spec = Spec::simple(40, 205, 300);
    let img = spec.build();
    assert_eq!(img.pages.each_ref().map(|p| p.len()), [2, 3, 6]);
    accept(&spec, &img);
    // 300 devices span segments 0 and 1 with the same devids.
    let n = reader::scratch_len(&img.mem, img.root, &Options::default()).unwrap();
    assert_eq!(
        n,
        2 * 11 + 1 + 40 + 300,
        "2 per page + 1 + IOMMU and device slots"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "capacity arithmetic on 1,500+ records, over 2 minutes under miri (the 4 KiB tests read pages the same way); the native run covers it"
)]
fn full_pages_of_16_and_64_kib_hold_the_kernels_capacities_and_are_accepted() {
    // (PAGE_SIZE - 16) / size: 146, 409, 227 at 16 KiB; 585, 1638, 910 at
    // 64 KiB. Exactly full pages, and one record more in each chain.
    for (ps, caps) in [
        (PageSize::Size16K, [146, 409, 227]),
        (PageSize::Size64K, [585, 1638, 910]),
    ] {
        let spec = Spec::simple(caps[0], caps[1], caps[2]).with_page_size(ps);
        let img = spec.build();
        assert_eq!(img.pages.each_ref().map(|p| p.len()), [1, 1, 1], "{ps}");
        accept(&spec, &img);
        let spec = Spec::simple(caps[0] + 1, caps[1] + 1, caps[2] + 1).with_page_size(ps);
        let img = spec.build();
        assert_eq!(img.pages.each_ref().map(|p| p.len()), [2, 2, 2], "{ps}");
        accept(&spec, &img);
    }
}

/// Validates a flat dump of `img` at page size `ps`.
fn check_flat_at(img: &common::Img, ps: PageSize) -> Result<(), iommu_flb_abi::Error> {
    let (base, dump) = img.flat();
    let mem = FlatMemory::new(base, &dump);
    let opts = Options {
        page_size: ps,
        ..Options::default()
    };
    let n = reader::scratch_len(&mem, img.root, &opts)?;
    let mut scratch = vec![ScratchElem::default(); n];
    reader::validate(&mem, img.root, &opts, &mut scratch).map(|_| ())
}

#[test]
fn an_image_read_at_a_smaller_page_size_than_written_is_refused() {
    // A full 16 KiB device page holds 227 records; at 4 KiB that count is
    // above the page's capacity of 56.
    let spec = Spec::simple(1, 1, 227).with_page_size(PageSize::Size16K);
    let img = spec.build();
    assert_eq!(check_flat_at(&img, PageSize::Size16K), Ok(()));
    let err = check_flat_at(&img, PageSize::Size4K).unwrap_err();
    assert_eq!(
        err.kind(),
        iommu_flb_abi::error::ErrorKind::CountOverCapacity {
            nr_objects: 227,
            capacity: 56,
        }
    );
    assert_eq!(
        err.location(),
        img.at_page(Chain::Device, 0).field("nr_objects")
    );
}

#[test]
fn an_image_read_at_a_larger_page_size_than_written_is_refused() {
    // 4 KiB pages from 0x10_0000: at 64 KiB the root's page is readable but
    // the IOMMU chain's head, 0x10_1000, is not 64 KiB-aligned.
    let spec = Spec::simple(1, 1, 1);
    let img = spec.build();
    assert_eq!(check_flat_at(&img, PageSize::Size4K), Ok(()));
    let err = check_flat_at(&img, PageSize::Size64K).unwrap_err();
    assert_eq!(
        err.kind(),
        iommu_flb_abi::error::ErrorKind::Unaligned {
            value: PhysAddr::new(0x10_1000)
        }
    );
    assert_eq!(err.field(), Some("iommu_array_phys"));
}

#[test]
fn deleted_records_are_skipped_and_their_stale_fields_ignored() {
    let mut spec = Spec::simple(3, 4, 6);
    spec.iommus[2].deleted = true;
    spec.devices[2].iommu = 0;
    spec.devices[5].iommu = 1;
    spec.domains[3].deleted = true;
    spec.devices[3].domain = 0;
    spec.devices[4].deleted = true;
    spec.devices[4].devid = spec.devices[1].devid; // a stale duplicate key
    let mut img = spec.build();
    // Stale garbage in the deleted records: none of it is checked.
    img.put_u64(img.field(Chain::Iommu, 2, off::HW_TYPE), 99);
    img.put_u64(
        img.field(Chain::Iommu, 2, off::HW_TOKEN),
        spec.iommus[0].token,
    );
    img.put_u32(img.field(Chain::Domain, 3, off::REF_COUNT), 0);
    img.put_u64(img.field(Chain::Domain, 3, off::DOM_TOP), 0x123);
    img.put_u32(img.field(Chain::Domain, 3, off::DOM_VASZ), 999);
    img.put_u8(img.field(Chain::Domain, 3, off::DOM_PAD), 7);
    img.put_u32(img.field(Chain::Device, 4, off::REF_COUNT), 0);
    img.put_u64(img.field(Chain::Device, 4, off::DEV_DOMAIN), 0xdead_beef);
    let stale_iommu = img.record(Chain::Iommu, 2);
    img.put_u64(
        img.field(Chain::Device, 4, off::DEV_IOMMU),
        stale_iommu.get(),
    );
    // Padding is a live record's rule: stale padding of a deleted one is
    // ignored like its other fields.
    img.put_u8(img.field(Chain::Device, 4, off::DEV_VENDOR + 3), 9);
    accept(&spec, &img);

    let image = reader::validate_alloc(&img.mem, img.root, &Options::default()).unwrap();
    let image = image.image();
    let stale = image.all_devices().nth(4).unwrap();
    assert!(stale.is_deleted());
    assert!(stale.domain().is_none(), "0xdead_beef names no domain");
    assert!(
        stale.iommu().is_none(),
        "the deleted IOMMU's type 99 is unknown"
    );
    assert!(stale.payload().is_none() && stale.device().is_none());
    let dead = image.all_iommus().nth(2).unwrap();
    assert!(dead.is_deleted() && dead.iommu().is_none());
    assert_eq!(dead.phys(), stale_iommu);
    let found = image.find_device(0, spec.devices[1].devid).unwrap();
    assert_eq!(found.phys(), img.record(Chain::Device, 1), "the live one");
    assert!(image.all_domains().nth(3).unwrap().is_deleted());
}

#[test]
fn deleted_device_with_a_resolvable_stale_pointer_resolves_it() {
    let mut spec = Spec::simple(2, 2, 3);
    spec.devices[2].deleted = true;
    let img = spec.build();
    let image = reader::validate_alloc(&img.mem, img.root, &Options::default()).unwrap();
    let image = image.image();
    let d = image.all_devices().nth(2).unwrap();
    assert!(d.is_deleted());
    assert_eq!(d.domain().unwrap().phys(), img.record(Chain::Domain, 0));
    assert_eq!(d.iommu().unwrap().phys(), img.record(Chain::Iommu, 0));
    assert!(matches!(d.payload(), Some(DevicePayload::Intel(_))));
    assert_eq!(image.find_device(0, 2).map(|d| d.phys()), None);
}

#[test]
fn both_vendors_and_a_shared_token_across_types_are_accepted() {
    let mut spec = Spec::simple(2, 2, 4);
    spec.iommus[1].token = spec.iommus[0].token;
    let img = spec.build();
    accept(&spec, &img);
    let image = reader::validate_alloc(&img.mem, img.root, &Options::default()).unwrap();
    let image = image.image();
    let token = spec.iommus[0].token;
    let intel = image.find_iommu(token, IommuTypeSer::IommuIntel).unwrap();
    let smmu = image
        .find_iommu(token, IommuTypeSer::IommuArmSmmuv3)
        .unwrap();
    assert_ne!(intel.phys(), smmu.phys());
    assert!(matches!(intel.payload(), IommuPayload::Intel(_)));
    assert!(matches!(smmu.payload(), IommuPayload::Smmuv3(_)));
    assert!(
        image
            .find_iommu(token, IommuTypeSer::IommuInvalid)
            .is_none()
    );
    assert!(
        image
            .find_iommu(token + 1, IommuTypeSer::IommuIntel)
            .is_none()
    );
}

#[test]
fn pages_in_scrambled_physical_order_are_accepted() {
    let mut spec = Spec::simple(40, 110, 60);
    // 1 root + 2 + 2 + 2 pages, descending and interleaved, with gaps.
    spec.page_order = Some(vec![
        0x50_0000, 0x90_0000, 0x10_0000, 0x3f_f000, 0x7a_3000, 0x20_0000, 0x51_0000,
    ]);
    let img = spec.build();
    accept(&spec, &img);
}

#[test]
fn restored_mode_accepts_state_written_after_restore() {
    let spec = Spec::simple(2, 3, 4);
    let mut img = spec.build();
    img.put_u32(
        img.field(Chain::Device, 1, off::FLAGS),
        IOMMU_SER_FLAG_INCOMING,
    );
    img.put_u8(img.field(Chain::Iommu, 0, off::HW_VENDOR), 1);
    img.put_u8(img.field(Chain::Device, 2, off::DEV_VENDOR), 1);
    img.put_u64(
        img.field(Chain::Domain, 1, off::DOM_RESTORED),
        0xffff_8880_0000_1000,
    );
    assert!(img.check().is_err(), "handover mode refuses it");
    let opts = Options {
        mode: Mode::Restored,
        ..Options::default()
    };
    accept_with(&spec, &img, &opts);
}

#[test]
fn restored_mode_accepts_incoming_on_a_deleted_record() {
    let mut spec = Spec::simple(2, 3, 5);
    spec.devices[4].deleted = true;
    let mut img = spec.build();
    img.put_u32(
        img.field(Chain::Device, 4, off::FLAGS),
        IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING,
    );
    let opts = Options {
        mode: Mode::Restored,
        ..Options::default()
    };
    accept_with(&spec, &img, &opts);
}

#[test]
fn vasz_64_and_sign_extend_1_are_accepted() {
    let spec = Spec::simple(1, 1, 1);
    let mut img = spec.build();
    img.put_u32(img.field(Chain::Domain, 0, off::DOM_VASZ), 64);
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_SIGN), 1);
    accept(&spec, &img);
}

#[test]
fn restore_visits_every_page_once_in_order() {
    let spec = Spec::simple(2, 103, 57);
    let img = spec.build();
    let owned = reader::validate_alloc(&img.mem, img.root, &Options::default()).unwrap();
    let image = owned.image();
    let mut seen = Vec::new();
    let n = image
        .restore(|p| {
            seen.push(p);
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(n, 6);
    assert_eq!(seen, image.pages().collect::<Vec<_>>());
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
}

#[test]
fn restore_failure_reports_the_page_and_what_was_restored() {
    let spec = Spec::simple(2, 103, 57);
    let img = spec.build();
    let owned = reader::validate_alloc(&img.mem, img.root, &Options::default()).unwrap();
    let image = owned.image();
    let bad = img.page(Chain::Domain, 1);
    let mut calls = 0;
    let err = image
        .restore(|p| {
            calls += 1;
            if p == bad {
                Err("not preserved")
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    // root, IOMMU page, domain pages 0 and 1: the fourth page fails.
    assert_eq!(
        err,
        RestoreError {
            page: bad,
            index: 3,
            error: "not preserved",
        }
    );
    assert_eq!(calls, 4);
    assert_eq!(err.restored(), 3);
    let done: Vec<_> = image.pages().take(err.restored()).collect();
    assert_eq!(
        done,
        [
            img.root.page_base(img.page_size),
            img.page(Chain::Iommu, 0),
            img.page(Chain::Domain, 0)
        ]
    );
    assert_eq!(
        err.to_string(),
        format!("iommu-flb: restoring page 3 ({bad}) failed after 3 pages: not preserved")
    );
}

#[test]
fn flat_memory_dump_is_accepted() {
    let spec = Spec::simple(3, 5, 7);
    let img = spec.build();
    let base = 0x10_0000u64;
    let mut dump = vec![0u8; img.mem.len() * PAGE_SIZE];
    for (phys, page) in img.mem.iter() {
        let at = (phys.get() - base) as usize;
        dump[at..at + PAGE_SIZE].copy_from_slice(page);
    }
    let mem = FlatMemory::new(PhysAddr::new(base), &dump);
    let opts = Options::default();
    let mut scratch = [ScratchElem::default(); 64];
    let image = reader::validate(&mem, img.root, &opts, &mut scratch).unwrap();
    check_view(&spec, &img, &image);
}

/// A `Memory` that breaks its contract: it stops serving pages once told
/// to, after validation.
struct Vanishing {
    pages: PageMap,
    gone: Cell<bool>,
}

impl Memory for Vanishing {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if self.gone.get() {
            None
        } else {
            self.pages.page(phys, size)
        }
    }
}

#[test]
fn memory_that_loses_pages_after_validation_ends_iteration_without_panic() {
    let spec = Spec::simple(2, 3, 4);
    let img = spec.build();
    let mem = Vanishing {
        pages: img.mem.clone(),
        gone: Cell::new(false),
    };
    let owned = reader::validate_alloc(&mem, img.root, &Options::default()).unwrap();
    let image = owned.image();
    mem.gone.set(true);
    assert_eq!(image.iommus().count(), 0);
    assert_eq!(image.all_devices().count(), 0);
    assert!(image.find_device(0, 1).is_none());
    assert!(
        image
            .find_iommu(spec.iommus[0].token, IommuTypeSer::IommuIntel)
            .is_none()
    );
    assert_eq!(
        image.pages().count(),
        4,
        "page addresses come from the scratch"
    );
}

/// A `Memory` that notes every page it is asked for, in order.
struct Noting {
    pages: PageMap,
    asked: std::cell::RefCell<Vec<u64>>,
}

impl Memory for Noting {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        self.asked.borrow_mut().push(phys.get());
        self.pages.page(phys, size)
    }
}

impl Noting {
    fn new(img: &common::Img) -> Self {
        Noting {
            pages: img.mem.clone(),
            asked: Default::default(),
        }
    }
}

/// The reader asks the memory only for pages it has proven it needs (the
/// root's and the chains' pages), and for each of them, through
/// validation (its device chain walked ahead of the pass that checks the
/// records) and the view's iterators and lookups.
#[test]
fn validation_asks_the_memory_for_the_image_pages_only() {
    let spec = Spec::simple(2, 3, 350);
    let img = spec.build();
    assert!(img.pages[2].len() >= 6, "device pages past the read-ahead");
    let mem = Noting::new(&img);
    let owned = reader::validate_alloc(&mem, img.root, &Options::default()).unwrap();
    let image = owned.image();
    assert_eq!(image.iommus().count(), 2);
    assert_eq!(image.domains().count(), 3);
    assert_eq!(image.all_devices().count(), 350);
    assert_eq!(image.devices().count(), 350);
    let d = &spec.devices[349];
    assert!(image.find_device(d.segment, d.devid).is_some());
    let mut expected: std::collections::BTreeSet<u64> =
        img.pages.iter().flatten().map(|p| p.get()).collect();
    expected.insert(img.root.page_base(img.page_size).get());
    let asked: std::collections::BTreeSet<u64> = mem.asked.borrow().iter().copied().collect();
    assert_eq!(asked, expected);
}

/// The layout validation leaves in the scratch does not depend on its
/// length: a scratch of exactly `scratch_len` elements, one more, many more
/// and three times as many give the same view, with the device keys
/// indexed per page (keys ascending) or in full (two keys swapped), and
/// with many domain pages (whose sorted table moves once the device chain
/// is known) or few.
#[test]
fn any_scratch_at_least_scratch_len_gives_the_same_view() {
    let ascending = Spec::simple(3, 150, 300);
    let swapped = ascending.with_devids_swapped(100, 7);
    // Under miri (about a minute for each validation and view here), the
    // small image at the longest length only.
    let specs = [ascending, swapped, Spec::simple(1, 1, 120)];
    let specs = if cfg!(miri) { &specs[2..] } else { &specs[..] };
    for spec in specs {
        let img = spec.build();
        let opts = img.opts();
        let n = reader::scratch_len(&img.mem, img.root, &opts).unwrap();
        let all = [n, n + 1, n + 100, 3 * n];
        let lens = if cfg!(miri) { &all[3..] } else { &all[..] };
        for &len in lens {
            let mut scratch = vec![ScratchElem::default(); len];
            let image = reader::validate(&img.mem, img.root, &opts, &mut scratch).unwrap();
            check_view(spec, &img, &image);
        }
    }
}

/// Validation walks the device chain four pages ahead of the pass over
/// its records, and reads each device page twice: once as the walk checks
/// its header (and reads all its cache lines), once as the pass checks its
/// records. The walk's first four pages come before the pass starts; then
/// each page the pass starts first takes the walk one page on.
#[test]
fn device_chain_is_walked_four_pages_ahead_of_its_pass() {
    let img = Spec::simple(2, 3, 350).build();
    let device = img.chain(Chain::Device);
    assert!(device.len() >= 6, "device pages past the read-ahead");
    let mem = Noting::new(&img);
    let opts = Options::default();
    let mut scratch = vec![ScratchElem::default(); 1024];
    reader::validate(&mem, img.root, &opts, &mut scratch).unwrap();
    let read: Vec<usize> = mem
        .asked
        .borrow()
        .iter()
        .filter_map(|&p| device.iter().position(|d| d.get() == p))
        .collect();
    let n = device.len();
    let mut expected: Vec<usize> = (0..4).collect();
    for k in 0..n {
        expected.extend((k + 4 < n).then_some(k + 4));
        expected.push(k);
    }
    assert_eq!(read, expected);
}

/// A `Memory` that breaks its contract once or twice: the reads of one
/// page whose numbers (counted from 1) are in `miss` find nothing.
struct Hiccup {
    pages: PageMap,
    page: PhysAddr,
    miss: &'static [u32],
    reads: Cell<u32>,
}

impl Memory for Hiccup {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if phys == self.page {
            let n = self.reads.get() + 1;
            self.reads.set(n);
            if self.miss.contains(&n) {
                return None;
            }
        }
        self.pages.page(phys, size)
    }
}

/// The device pass stops where a page cannot be read, checks that record
/// with every rule and goes on from the next one: a page the memory
/// misses once and then serves again is still counted exactly once per
/// device. Device page 1 is read by `scratch_len`'s chain walk and
/// validation's (reads 1 and 2), then by the device pass, which misses it
/// at its start (read 3) and, with read 5 missed too, again after its
/// first record. So the record after each miss is accepted by the full
/// checks, not the fast ones: `validate_visiting` still hands every live
/// record to its visitor exactly once, in order, and `validate_with` every
/// live IOMMU, domain and device. In the second image the
/// first key that does not ascend is that record's (device 56, the first
/// of page 1, swapped with device 55), so the full checks also switch the
/// device index from one entry per page to every key.
#[test]
fn device_pass_resumes_after_a_page_the_memory_missed() {
    let ascending = Spec::simple(2, 3, 200);
    let swapped = ascending.with_devids_swapped(55, 56);
    // 0: `validate`; 1: `validate_visiting`; 2: `validate_with`. Under
    // miri not 1, an adapter over 2's code (each mode is minutes there).
    let modes: &[u8] = if cfg!(miri) { &[0, 2] } else { &[0, 1, 2] };
    for (spec, miss, visiting) in modes.iter().copied().flat_map(|visiting| {
        [&ascending, &swapped]
            .into_iter()
            .flat_map(move |spec| [(spec, &[3][..], visiting), (spec, &[3, 5], visiting)])
    }) {
        let img = spec.build();
        assert!(img.pages[2].len() >= 3, "device page 1 has a page after it");
        let mem = Hiccup {
            pages: img.mem.clone(),
            page: img.page(Chain::Device, 1),
            miss,
            reads: Cell::new(0),
        };
        let opts = Options::default();
        let n = reader::scratch_len(&mem, img.root, &opts).unwrap();
        let mut scratch = vec![ScratchElem::default(); n];
        let mut seen = Vec::new();
        let mut all = common::Visited::default();
        let image = match visiting {
            1 => reader::validate_visiting(&mem, img.root, &opts, &mut scratch, |d| {
                seen.push(d.phys())
            }),
            2 => reader::validate_with(&mem, img.root, &opts, &mut scratch, &mut all),
            _ => reader::validate(&mem, img.root, &opts, &mut scratch),
        };
        let image = image.unwrap_or_else(|e| panic!("misses {miss:?}: {e}"));
        if visiting == 1 {
            let records: Vec<_> = image.device_records().map(|d| d.phys()).collect();
            assert_eq!(
                seen, records,
                "misses {miss:?}: each live record visited once"
            );
        }
        if visiting == 2 {
            assert_eq!(
                all,
                common::Visited::of(&image),
                "misses {miss:?}: each live record of every kind visited once"
            );
        }
        let reads = mem.reads.get();
        assert!(
            reads > *miss.last().unwrap(),
            "misses {miss:?}: the page was read {reads} times, so not every miss happened"
        );
        check_view(spec, &img, &image);
    }
}

/// `find_device` against a model, on devices whose keys ascend in chain
/// order (the chain is then its own index, one entry per page) and on the
/// same devices with two keys swapped (a sorted index of every device):
/// every live key is found at its record, and no other key is, below the
/// first, between two in a page or across pages, above the last, or held
/// only by a deleted record. Four device pages, each with its first and
/// last slot and one in the middle deleted, and the third with every slot
/// deleted (a page with no entry in the per-page index).
#[test]
fn find_device_finds_exactly_the_live_keys_in_either_index() {
    let cap = IOMMU_DEVICE_ARRAY_CAPACITY_4K as usize;
    let mut spec = Spec::simple(2, 3, 3 * cap + 10);
    for (i, d) in spec.devices.iter_mut().enumerate() {
        d.segment = 1;
        d.devid = 2 * i as u32 + 2;
        d.deleted = matches!(i % cap, 0 | 20 | 55) || i / cap == 2;
    }
    // Deleted records with a key no live device has, and with the key of
    // the live device after them, which the page scan must pass over.
    spec.devices[55].devid = 111;
    spec.devices[20].devid = spec.devices[21].devid;
    let swapped = spec.with_devids_swapped(3, 100);
    for spec in [spec, swapped] {
        let img = spec.build();
        let opts = img.opts();
        let n = reader::scratch_len(&img.mem, img.root, &opts).unwrap();
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(&img.mem, img.root, &opts, &mut scratch).unwrap();
        let live: HashMap<(u32, u32), PhysAddr> = (0..spec.devices.len())
            .filter(|&i| !spec.devices[i].deleted)
            .map(|i| {
                let d = &spec.devices[i];
                ((d.segment, d.devid), img.record(Chain::Device, i))
            })
            .collect();
        let top = 2 * spec.devices.len() as u32 + 4;
        for segment in 0..3 {
            for devid in (0..top).chain([u32::MAX]) {
                assert_eq!(
                    image.find_device(segment, devid).map(|d| d.phys()),
                    live.get(&(segment, devid)).copied(),
                    "segment {segment} devid {devid}"
                );
            }
        }
    }
}
