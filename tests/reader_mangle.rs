//! Mangle tests: build a valid image, corrupt one field, expect one exact
//! error (kind and location). One test per refusal of issues 3 and 11.

mod common;

use common::{DOM, INTEL, Img, Spec, off};
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::v1::{IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING};
use iommu_flb_abi::error::{Chain, Error, ErrorKind, Limit, Location, RefFault};
use iommu_flb_abi::reader::{self, Limits, Mode, Options, ScratchElem};

/// 2 IOMMUs (Intel, SMMUv3), 3 domains, 4 devices: device i uses domain
/// i % 3 and IOMMU i % 2.
fn base() -> Img {
    let img = Spec::simple(2, 3, 4).build();
    img.check().expect("the base image is valid");
    img
}

fn expect(img: &Img, kind: ErrorKind, at: Location) {
    assert_eq!(img.check(), Err(Error::new(kind, at)));
}

fn root_at(img: &Img, field: &'static str) -> Location {
    Location::root(img.root, Some(field))
}

fn plus(p: PhysAddr, n: u64) -> PhysAddr {
    PhysAddr::new(p.get() + n)
}

// ---- the root ----

#[test]
fn root_page_missing_is_root_unreadable() {
    let mut img = base();
    img.mem.remove(img.root.page_base(img.page_size));
    expect(
        &img,
        ErrorKind::RootUnreadable,
        Location::root(img.root, None),
    );
}

#[test]
fn root_not_starting_its_page_is_refused() {
    // The kernel allocates the root as a preserved page of its own, and
    // restore hands that whole page back: a root inside another page would
    // take that page from its owner. Version and heads are intact here.
    let mut img = Spec {
        root_offset: 8,
        ..Spec::simple(2, 3, 4)
    }
    .build();
    let root = img.root;
    img.put_u64(root, 1);
    expect(
        &img,
        ErrorKind::Unaligned { value: root },
        Location::root(root, None),
    );
}

#[test]
fn root_at_the_end_of_its_page_is_refused_as_unaligned() {
    // Where the root once crossed the page end: refused before it is read.
    let mut img = base();
    let moved = plus(img.root.page_base(img.page_size), 4096 - 16);
    let head = img.page(Chain::Iommu, 0).get();
    img.put_u64(moved, 1);
    img.put_u64(plus(moved, 8), head);
    img.root = moved;
    expect(
        &img,
        ErrorKind::Unaligned { value: moved },
        Location::root(img.root, None),
    );
}

#[test]
fn unsupported_version_names_the_version() {
    let mut img = base();
    img.put_u64(img.root, 2);
    expect(
        &img,
        ErrorKind::UnsupportedVersion { found: 2 },
        root_at(&img, "version"),
    );
}

#[test]
fn zero_iommu_head_is_refused() {
    let mut img = base();
    img.put_u64(plus(img.root, off::ROOT_IOMMU as u64), 0);
    expect(
        &img,
        ErrorKind::NullPointer,
        root_at(&img, "iommu_array_phys"),
    );
}

#[test]
fn zero_domain_head_is_refused() {
    let mut img = base();
    img.put_u64(plus(img.root, off::ROOT_DOMAIN as u64), 0);
    expect(
        &img,
        ErrorKind::NullPointer,
        root_at(&img, "iommu_domain_array_phys"),
    );
}

#[test]
fn zero_device_head_is_refused() {
    let mut img = base();
    img.put_u64(plus(img.root, off::ROOT_DEVICE as u64), 0);
    expect(
        &img,
        ErrorKind::NullPointer,
        root_at(&img, "device_array_phys"),
    );
}

#[test]
fn unaligned_head_is_refused() {
    let mut img = base();
    let value = plus(img.page(Chain::Iommu, 0), 8);
    img.put_u64(plus(img.root, off::ROOT_IOMMU as u64), value.get());
    expect(
        &img,
        ErrorKind::Unaligned { value },
        root_at(&img, "iommu_array_phys"),
    );
}

#[test]
fn unreadable_head_is_refused() {
    let mut img = base();
    let target = PhysAddr::new(0x9999_0000);
    img.put_u64(plus(img.root, off::ROOT_DOMAIN as u64), target.get());
    expect(
        &img,
        ErrorKind::Unreadable { target },
        root_at(&img, "iommu_domain_array_phys"),
    );
}

// ---- chain pages ----

#[test]
fn unaligned_next_pointer_is_refused() {
    let mut img = Spec::simple(1, 103, 1).build();
    let value = plus(img.page(Chain::Domain, 1), 8);
    img.put_u64(img.page(Chain::Domain, 0), value.get());
    expect(
        &img,
        ErrorKind::Unaligned { value },
        img.at_page(Chain::Domain, 0).field("next_array_phys"),
    );
}

#[test]
fn unreadable_next_page_is_refused() {
    let mut img = Spec::simple(1, 103, 1).build();
    let target = PhysAddr::new(0x7777_0000);
    img.put_u64(img.page(Chain::Domain, 0), target.get());
    expect(
        &img,
        ErrorKind::Unreadable { target },
        img.at_page(Chain::Domain, 0).field("next_array_phys"),
    );
}

#[test]
fn nr_objects_above_page_capacity_is_refused() {
    let mut img = base();
    img.put_u64(plus(img.page(Chain::Device, 0), off::NR as u64), 57);
    expect(
        &img,
        ErrorKind::CountOverCapacity {
            nr_objects: 57,
            capacity: 56,
        },
        img.at_page(Chain::Device, 0).field("nr_objects"),
    );
}

#[test]
fn partial_page_before_the_tail_is_refused() {
    let mut img = Spec::simple(1, 103, 1).build();
    img.put_u64(plus(img.page(Chain::Domain, 0), off::NR as u64), 101);
    expect(
        &img,
        ErrorKind::PartialPage {
            nr_objects: 101,
            capacity: 102,
        },
        img.at_page(Chain::Domain, 0).field("nr_objects"),
    );
}

#[test]
fn page_pointing_at_itself_is_a_cycle() {
    let mut img = Spec::simple(1, 1, 56).build();
    let p0 = img.page(Chain::Device, 0);
    img.put_u64(p0, p0.get());
    expect(
        &img,
        ErrorKind::Cycle {
            target: p0,
            earlier: 0,
        },
        img.at_page(Chain::Device, 0).field("next_array_phys"),
    );
}

/// Three full device pages, the last pointing back at `to`.
fn looped(to: usize) -> (Img, PhysAddr) {
    let mut img = Spec::simple(1, 1, 3 * 56).build();
    let target = img.page(Chain::Device, to);
    img.put_u64(img.page(Chain::Device, 2), target.get());
    (img, target)
}

#[test]
fn tail_pointing_back_at_the_head_is_a_cycle() {
    let (img, target) = looped(0);
    expect(
        &img,
        ErrorKind::Cycle { target, earlier: 0 },
        img.at_page(Chain::Device, 2).field("next_array_phys"),
    );
}

#[test]
fn tail_pointing_into_the_middle_is_a_cycle_naming_the_first_repeat() {
    let (img, target) = looped(1);
    expect(
        &img,
        ErrorKind::Cycle { target, earlier: 1 },
        img.at_page(Chain::Device, 2).field("next_array_phys"),
    );
}

#[test]
fn cycle_reaching_the_page_limit_is_still_reported_as_a_cycle() {
    // With exactly 3 pages allowed, the walk hits the limit before Brent's
    // detection closes; the limit path must recognise the loop.
    let (img, target) = looped(0);
    let opts = Options {
        limits: Limits {
            max_pages_per_chain: 3,
            ..Limits::default()
        },
        ..Options::default()
    };
    assert_eq!(
        img.check_with(&opts),
        Err(Error::new(
            ErrorKind::Cycle { target, earlier: 0 },
            img.at_page(Chain::Device, 2).field("next_array_phys"),
        ))
    );
}

#[test]
fn page_shared_by_two_chains_is_refused() {
    let mut img = base();
    let shared = img.page(Chain::Iommu, 0);
    img.put_u64(plus(img.root, off::ROOT_DOMAIN as u64), shared.get());
    expect(
        &img,
        ErrorKind::PageReused {
            target: shared,
            other_chain: Some(Chain::Iommu),
            other_page: Some(0),
        },
        root_at(&img, "iommu_domain_array_phys"),
    );
}

#[test]
fn page_shared_in_the_middle_of_a_chain_is_refused() {
    let mut img = Spec::simple(1, 1, 57).build();
    let shared = img.page(Chain::Domain, 0);
    img.put_u64(img.page(Chain::Device, 0), shared.get());
    expect(
        &img,
        ErrorKind::PageReused {
            target: shared,
            other_chain: Some(Chain::Domain),
            other_page: Some(0),
        },
        img.at_page(Chain::Device, 0).field("next_array_phys"),
    );
}

#[test]
fn chain_head_naming_the_roots_page_is_refused() {
    let mut img = base();
    let root_page = img.root.page_base(img.page_size);
    img.put_u64(plus(img.root, off::ROOT_DEVICE as u64), root_page.get());
    expect(
        &img,
        ErrorKind::PageReused {
            target: root_page,
            other_chain: None,
            other_page: None,
        },
        root_at(&img, "device_array_phys"),
    );
}

#[test]
fn next_array_phys_naming_the_roots_page_is_refused() {
    let mut img = Spec::simple(1, 103, 1).build();
    let root_page = img.root.page_base(img.page_size);
    img.put_u64(img.page(Chain::Domain, 0), root_page.get());
    expect(
        &img,
        ErrorKind::PageReused {
            target: root_page,
            other_chain: None,
            other_page: None,
        },
        img.at_page(Chain::Domain, 0).field("next_array_phys"),
    );
}

// ---- limits ----

#[test]
fn chain_longer_than_the_page_limit_is_refused() {
    let img = Spec::simple(1, 1, 57).build();
    let opts = Options {
        limits: Limits {
            max_pages_per_chain: 1,
            ..Limits::default()
        },
        ..Options::default()
    };
    assert_eq!(
        img.check_with(&opts),
        Err(Error::new(
            ErrorKind::LimitExceeded {
                what: Limit::PagesPerChain,
                limit: 1,
            },
            img.at_page(Chain::Device, 0).field("next_array_phys"),
        ))
    );
}

#[test]
fn more_objects_than_the_limit_is_refused() {
    let img = base();
    let opts = Options {
        limits: Limits {
            max_objects: 5,
            ..Limits::default()
        },
        ..Options::default()
    };
    assert_eq!(
        img.check_with(&opts),
        Err(Error::new(
            ErrorKind::LimitExceeded {
                what: Limit::Objects,
                limit: 5,
            },
            img.at_page(Chain::Device, 0).field("nr_objects"),
        ))
    );
}

#[test]
fn scratch_shorter_than_scratch_len_is_refused() {
    let img = base();
    let opts = Options::default();
    let n = reader::scratch_len(&img.mem, img.root, &opts).unwrap();
    let mut scratch = vec![ScratchElem::default(); n - 1];
    let err = reader::validate(&img.mem, img.root, &opts, &mut scratch).unwrap_err();
    assert_eq!(
        err,
        Error::new(
            ErrorKind::ScratchTooSmall {
                needed: n,
                got: n - 1,
            },
            Location::root(img.root, None),
        )
    );
}

// ---- the order across chains: the device chain is walked with its records ----

/// 1 IOMMU, 1 domain, 300 devices (six device pages, the last partial),
/// with a zero `ref_count` on the first device and, if `iommu`, an unknown
/// flag on the IOMMU: record errors the passes meet before the device
/// chain's walk has gone far (the IOMMU's before it has started).
fn with_record_errors(iommu: bool) -> Img {
    let mut img = Spec::simple(1, 1, 300).build();
    assert_eq!(img.chain(Chain::Device).len(), 6);
    if iommu {
        img.put_u32(img.field(Chain::Iommu, 0, off::FLAGS), 1 << 2);
    }
    img.put_u32(img.field(Chain::Device, 0, off::REF_COUNT), 0);
    img
}

/// `validate` on `img` with room to spare, not through `scratch_len`
/// (whose walk would refuse a chain error first): the refusal, or `Ok`.
fn validate_roomy(img: &Img) -> Result<(), Error> {
    let mut scratch = vec![ScratchElem::default(); common::ROOM];
    reader::validate(&img.mem, img.root, &img.opts(), &mut scratch).map(|_| ())
}

#[test]
fn a_device_chain_error_comes_before_any_record_error() {
    for iommu in [true, false] {
        let mut img = with_record_errors(iommu);
        img.put_u64(plus(img.page(Chain::Device, 4), off::NEXT as u64), 1);
        let unaligned = Error::new(
            ErrorKind::Unaligned {
                value: PhysAddr::new(1),
            },
            img.at_page(Chain::Device, 4).field("next_array_phys"),
        );
        assert_eq!(validate_roomy(&img), Err(unaligned));
        assert_eq!(img.check(), Err(unaligned));
    }
}

#[test]
fn a_device_page_used_twice_comes_before_any_record_error() {
    // Device page 4 pointing back to page 1 is a cycle, found by the walk:
    // a chain error. Page 3 pointing to the domain page, or page 2 to the
    // IOMMU page, is found by the page table once the walk ends.
    for iommu in [true, false] {
        let img = with_record_errors(iommu);
        let (first, domain) = (img.page(Chain::Device, 1), img.page(Chain::Domain, 0));
        let iommu_page = img.page(Chain::Iommu, 0);
        let cycle = ErrorKind::Cycle {
            target: first,
            earlier: 1,
        };
        let reused = ErrorKind::PageReused {
            target: domain,
            other_chain: Some(Chain::Domain),
            other_page: Some(0),
        };
        let reused_iommu = ErrorKind::PageReused {
            target: iommu_page,
            other_chain: Some(Chain::Iommu),
            other_page: Some(0),
        };
        let cases = [
            (4, first, cycle),
            (3, domain, reused),
            (2, iommu_page, reused_iommu),
        ];
        for (page, target, kind) in cases {
            let mut img = with_record_errors(iommu);
            let next = plus(img.page(Chain::Device, page), off::NEXT as u64);
            img.put_u64(next, target.get());
            let at = img.at_page(Chain::Device, page).field("next_array_phys");
            assert_eq!(validate_roomy(&img), Err(Error::new(kind, at)));
            expect(&img, kind, at);
        }
    }
}

/// A chain error the device chain's walk meets while the pass runs (the
/// walk four pages ahead): the devices of the pages before were handed to
/// the visitor, as `validate_visiting` allows, and the error is the
/// chain's. Device page 4's `next_array_phys` is read as the pass starts
/// page 1.
#[test]
fn a_device_chain_error_met_during_the_pass_is_refused_after_a_page_was_visited() {
    let mut img = Spec::simple(1, 1, 300).build();
    img.put_u64(plus(img.page(Chain::Device, 4), off::NEXT as u64), 1);
    let mut scratch = vec![ScratchElem::default(); common::ROOM];
    let mut seen = 0usize;
    let opts = img.opts();
    let refused = reader::validate_visiting(&img.mem, img.root, &opts, &mut scratch, |_| seen += 1)
        .map(|_| ())
        .unwrap_err();
    let unaligned = ErrorKind::Unaligned {
        value: PhysAddr::new(1),
    };
    let at = img.at_page(Chain::Device, 4).field("next_array_phys");
    assert_eq!(refused, Error::new(unaligned, at));
    assert_eq!(seen, img.cap(Chain::Device));
}

#[test]
fn a_scratch_too_short_comes_before_any_record_error() {
    let img = with_record_errors(true);
    let opts = img.opts();
    let n = reader::scratch_len(&img.mem, img.root, &opts).unwrap();
    // Too short for the device chain, for the IOMMU and domain chains'
    // regions, and for anything.
    for got in [n - 1, n / 2, 3, 0] {
        let mut scratch = vec![ScratchElem::default(); got];
        let err = reader::validate(&img.mem, img.root, &opts, &mut scratch).unwrap_err();
        assert_eq!(
            err,
            Error::new(
                ErrorKind::ScratchTooSmall { needed: n, got },
                Location::root(img.root, None),
            ),
            "{got} elements"
        );
    }
    let mut scratch = vec![ScratchElem::default(); n];
    let err = reader::validate(&img.mem, img.root, &opts, &mut scratch).unwrap_err();
    assert_eq!(
        err,
        Error::new(
            ErrorKind::UnknownFlags { flags: 1 << 2 },
            img.at(Chain::Iommu, 0).field("flags")
        )
    );
}

// ---- every record ----

#[test]
fn unknown_flag_bit_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 1, off::FLAGS), 1 << 2);
    expect(
        &img,
        ErrorKind::UnknownFlags { flags: 1 << 2 },
        img.at(Chain::Domain, 1).field("flags"),
    );
}

#[test]
fn unknown_flag_bit_on_a_deleted_record_is_refused() {
    let mut spec = Spec::simple(2, 3, 5);
    spec.devices[4].deleted = true;
    let mut img = spec.build();
    let flags = IOMMU_SER_FLAG_DELETED | 1 << 31;
    img.put_u32(img.field(Chain::Device, 4, off::FLAGS), flags);
    expect(
        &img,
        ErrorKind::UnknownFlags { flags },
        img.at(Chain::Device, 4).field("flags"),
    );
}

#[test]
fn live_domain_with_zero_ref_count_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 2, off::REF_COUNT), 0);
    expect(
        &img,
        ErrorKind::ZeroRefCount,
        img.at(Chain::Domain, 2).field("ref_count"),
    );
}

#[test]
fn live_iommu_with_zero_ref_count_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Iommu, 1, off::REF_COUNT), 0);
    expect(
        &img,
        ErrorKind::ZeroRefCount,
        img.at(Chain::Iommu, 1).field("ref_count"),
    );
}

#[test]
fn live_domain_with_ref_count_2_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 1, off::REF_COUNT), 2);
    expect(
        &img,
        ErrorKind::RefCountNotOne { stored: 2 },
        img.at(Chain::Domain, 1).field("ref_count"),
    );
}

#[test]
fn live_device_with_ref_count_above_1_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Device, 3, off::REF_COUNT), u32::MAX);
    expect(
        &img,
        ErrorKind::RefCountNotOne { stored: u32::MAX },
        img.at(Chain::Device, 3).field("ref_count"),
    );
}

#[test]
fn iommu_ref_count_above_its_live_devices_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Iommu, 0, off::REF_COUNT), 3);
    expect(
        &img,
        ErrorKind::RefCountMismatch {
            stored: 3,
            counted: 2,
        },
        img.at(Chain::Iommu, 0).field("ref_count"),
    );
}

#[test]
fn deleting_a_device_without_dropping_its_iommu_ref_is_refused() {
    let mut img = base();
    let flags = img.field(Chain::Device, 2, off::FLAGS);
    img.put_u32(flags, IOMMU_SER_FLAG_DELETED);
    expect(
        &img,
        ErrorKind::RefCountMismatch {
            stored: 2,
            counted: 1,
        },
        img.at(Chain::Iommu, 0).field("ref_count"),
    );
}

#[test]
fn iommu_type_invalid_is_refused() {
    let mut img = base();
    img.put_u64(img.field(Chain::Iommu, 1, off::HW_TYPE), 0);
    expect(
        &img,
        ErrorKind::UnknownIommuType { raw: 0 },
        img.at(Chain::Iommu, 1).field("type"),
    );
}

#[test]
fn iommu_type_unknown_is_refused() {
    let mut img = base();
    img.put_u64(img.field(Chain::Iommu, 1, off::HW_TYPE), 3);
    expect(
        &img,
        ErrorKind::UnknownIommuType { raw: 3 },
        img.at(Chain::Iommu, 1).field("type"),
    );
}

#[test]
fn two_live_iommus_with_the_same_token_and_type_are_refused() {
    let mut spec = Spec::simple(2, 3, 4);
    spec.iommus[1].ty = INTEL;
    let mut img = spec.build();
    img.check().expect("valid before the corruption");
    let token = spec.iommus[0].token;
    img.put_u64(img.field(Chain::Iommu, 1, off::HW_TOKEN), token);
    expect(
        &img,
        ErrorKind::DuplicateIommu {
            other_page: 0,
            other_object: 0,
        },
        img.at(Chain::Iommu, 1).field("token"),
    );
}

#[test]
fn two_live_devices_with_the_same_segment_and_devid_are_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Device, 3, off::DEV_DEVID), 1);
    expect(
        &img,
        ErrorKind::DuplicateDevice {
            other_page: 0,
            other_object: 1,
        },
        img.at(Chain::Device, 3).field("devid"),
    );
}

/// The largest key there is (segment and devid all ones), twice at the end
/// of keys that otherwise ascend: the ascending-order shortcut must not
/// take it for a sorted, unique index.
#[test]
fn two_live_devices_with_the_largest_key_are_refused() {
    let mut img = base();
    for dev in [2, 3] {
        img.put_u32(img.field(Chain::Device, dev, off::DEV_SEG), u32::MAX);
        img.put_u32(img.field(Chain::Device, dev, off::DEV_DEVID), u32::MAX);
    }
    expect(
        &img,
        ErrorKind::DuplicateDevice {
            other_page: 0,
            other_object: 2,
        },
        img.at(Chain::Device, 3).field("devid"),
    );
}

/// `validate_visiting` refuses a duplicate device as `validate` does, once
/// the device pass is over: by then its visitor has seen every live
/// device, the duplicate too, as its docs warn.
#[test]
fn a_visitor_has_seen_every_device_of_an_image_refused_for_a_duplicate() {
    let mut img = base();
    for (field, value) in [(off::DEV_SEG, 0x77), (off::DEV_DEVID, 0x100)] {
        for dev in [1, 3] {
            img.put_u32(img.field(Chain::Device, dev, field), value);
        }
    }
    let opts = img.opts();
    let n = reader::scratch_len(&img.mem, img.root, &opts).unwrap();
    let mut scratch = vec![ScratchElem::default(); n];
    let mut seen = Vec::new();
    let visiting = reader::validate_visiting(&img.mem, img.root, &opts, &mut scratch, |d| {
        seen.push(d.phys());
    });
    let want = Error::new(
        ErrorKind::DuplicateDevice {
            other_page: 0,
            other_object: 1,
        },
        img.at(Chain::Device, 3).field("devid"),
    );
    assert_eq!(visiting.map(|_| ()), Err(want));
    let all: Vec<_> = (0..4).map(|d| img.record(Chain::Device, d)).collect();
    assert_eq!(seen, all);
}

// ---- device references ----

fn bad_ref(img: &Img, dev: usize, field: &'static str, target: PhysAddr, fault: RefFault) {
    expect(
        img,
        ErrorKind::BadReference { target, fault },
        img.at(Chain::Device, dev).field(field),
    );
}

#[test]
fn domain_phys_inside_a_record_is_refused() {
    let mut img = base();
    let target = plus(img.record(Chain::Domain, 0), 8);
    img.put_u64(img.field(Chain::Device, 0, off::DEV_DOMAIN), target.get());
    bad_ref(&img, 0, "domain_phys", target, RefFault::NotRecordStart);
}

#[test]
fn domain_phys_naming_the_page_header_is_refused() {
    let mut img = base();
    let target = img.page(Chain::Domain, 0);
    img.put_u64(img.field(Chain::Device, 1, off::DEV_DOMAIN), target.get());
    bad_ref(&img, 1, "domain_phys", target, RefFault::NotRecordStart);
}

#[test]
fn domain_phys_naming_an_iommu_is_refused() {
    let mut img = base();
    let target = img.record(Chain::Iommu, 0);
    img.put_u64(img.field(Chain::Device, 0, off::DEV_DOMAIN), target.get());
    bad_ref(&img, 0, "domain_phys", target, RefFault::NotInChain);
}

#[test]
fn domain_phys_zero_is_refused() {
    let mut img = base();
    img.put_u64(img.field(Chain::Device, 3, off::DEV_DOMAIN), 0);
    bad_ref(&img, 3, "domain_phys", PhysAddr::NULL, RefFault::NotInChain);
}

#[test]
fn domain_phys_past_nr_objects_is_refused() {
    let mut img = base();
    let target = plus(img.page(Chain::Domain, 0), 16 + 3 * DOM as u64);
    img.put_u64(img.field(Chain::Device, 0, off::DEV_DOMAIN), target.get());
    bad_ref(&img, 0, "domain_phys", target, RefFault::BeyondCount);
}

#[test]
fn domain_phys_naming_a_deleted_domain_is_refused() {
    let mut img = base();
    img.put_u32(
        img.field(Chain::Domain, 2, off::FLAGS),
        IOMMU_SER_FLAG_DELETED,
    );
    let target = img.record(Chain::Domain, 2);
    bad_ref(&img, 2, "domain_phys", target, RefFault::Deleted);
}

#[test]
fn iommu_phys_naming_a_domain_is_refused() {
    let mut img = base();
    let target = img.record(Chain::Domain, 0);
    img.put_u64(img.field(Chain::Device, 1, off::DEV_IOMMU), target.get());
    bad_ref(&img, 1, "iommu_phys", target, RefFault::NotInChain);
}

#[test]
fn iommu_phys_naming_a_deleted_iommu_is_refused() {
    let mut spec = Spec::simple(3, 3, 4);
    spec.iommus[2].deleted = true;
    spec.devices[2].iommu = 0;
    let mut img = spec.build();
    img.check().expect("valid before the corruption");
    let target = img.record(Chain::Iommu, 2);
    img.put_u64(img.field(Chain::Device, 3, off::DEV_IOMMU), target.get());
    bad_ref(&img, 3, "iommu_phys", target, RefFault::Deleted);
}

// ---- domains ----

#[test]
fn domain_top_table_zero_is_refused() {
    let mut img = base();
    img.put_u64(img.field(Chain::Domain, 1, off::DOM_TOP), 0);
    expect(
        &img,
        ErrorKind::NullPointer,
        img.at(Chain::Domain, 1).field("top_table_phys"),
    );
}

#[test]
fn domain_top_table_unaligned_is_refused() {
    let mut img = base();
    let value = PhysAddr::new(0x4000_0008);
    img.put_u64(img.field(Chain::Domain, 1, off::DOM_TOP), value.get());
    expect(
        &img,
        ErrorKind::Unaligned { value },
        img.at(Chain::Domain, 1).field("top_table_phys"),
    );
}

#[test]
fn domain_vasz_above_64_is_refused() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 0, off::DOM_VASZ), 65);
    expect(
        &img,
        ErrorKind::VaszTooLarge { vasz: 65 },
        img.at(Chain::Domain, 0).field("vasz"),
    );
}

#[test]
fn domain_sign_extend_above_1_is_refused() {
    let mut img = base();
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_SIGN), 2);
    expect(
        &img,
        ErrorKind::SignExtendInvalid { value: 2 },
        img.at(Chain::Domain, 0).field("sign_extend"),
    );
}

#[test]
fn domain_padding_not_zero_is_refused() {
    padding_refused(Chain::Domain, 2, off::DOM_PAD + 2, 1, "padding");
}

/// `sign_extend` and the padding after it are checked in one compare;
/// each keeps its own error, `sign_extend` first, and a valid 1 there
/// does not hide the padding.
#[test]
fn domain_sign_extend_is_checked_before_the_padding_beside_it() {
    let mut img = base();
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_SIGN), 2);
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_PAD), 1);
    expect(
        &img,
        ErrorKind::SignExtendInvalid { value: 2 },
        img.at(Chain::Domain, 0).field("sign_extend"),
    );
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_SIGN), 1);
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        img.at(Chain::Domain, 0).field("padding"),
    );
}

#[test]
fn intel_iommu_padding_not_zero_is_refused() {
    // IOMMU 0 is Intel: restored (1 byte), then padding[7].
    padding_refused(Chain::Iommu, 0, off::HW_VENDOR + 7, 0x80, "padding");
}

#[test]
fn smmuv3_iommu_union_bytes_past_its_member_not_zero_are_refused() {
    // IOMMU 1 is SMMUv3: its 32-byte member leaves 56 of the union's 88
    // bytes, which version 1 does not use; the last one is set.
    padding_refused(Chain::Iommu, 1, off::HW_VENDOR + 87, 1, "vendor");
}

#[test]
fn intel_device_padding_not_zero_is_refused() {
    // Device 2 is behind IOMMU 0 (Intel): restored, then padding[7].
    padding_refused(Chain::Device, 2, off::DEV_VENDOR + 1, 1, "padding");
}

/// Sets byte `at` of record `index` of `chain` in the base image to
/// `value`, which must be refused as non-zero `field`.
fn padding_refused(chain: Chain, index: usize, at: usize, value: u8, field: &'static str) {
    let mut img = base();
    img.put_u8(img.field(chain, index, at), value);
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        img.at(chain, index).field(field),
    );
}

#[test]
fn smmuv3_device_padding_not_zero_is_refused() {
    // Device 1 is behind IOMMU 1 (SMMUv3): padding is the u32 at 12; its
    // high byte is set.
    padding_refused(Chain::Device, 1, off::DEV_VENDOR + 15, 1, "padding");
}

#[test]
fn padding_is_refused_in_restored_mode_too() {
    let mut img = base();
    img.put_u8(img.field(Chain::Device, 0, off::DEV_VENDOR + 4), 1);
    let opts = Options {
        mode: Mode::Restored,
        ..Options::default()
    };
    assert_eq!(
        img.check_with(&opts),
        Err(Error::new(
            ErrorKind::NonZeroPadding,
            img.at(Chain::Device, 0).field("padding")
        ))
    );
}

// ---- fields only the next kernel writes (handover mode) ----

#[test]
fn incoming_flag_at_handover_is_refused() {
    let mut img = base();
    img.put_u32(
        img.field(Chain::Device, 1, off::FLAGS),
        IOMMU_SER_FLAG_INCOMING,
    );
    expect(
        &img,
        ErrorKind::AlreadyRestored,
        img.at(Chain::Device, 1).field("flags"),
    );
}

#[test]
fn incoming_flag_on_a_deleted_record_at_handover_is_refused() {
    // Only the next kernel sets INCOMING, so never at handover, deleted or
    // not; the flags word is read on deleted records too.
    let mut spec = Spec::simple(2, 3, 5);
    spec.devices[4].deleted = true;
    let mut img = spec.build();
    img.check().expect("valid before the corruption");
    img.put_u32(
        img.field(Chain::Device, 4, off::FLAGS),
        IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING,
    );
    expect(
        &img,
        ErrorKind::AlreadyRestored,
        img.at(Chain::Device, 4).field("flags"),
    );
}

#[test]
fn intel_iommu_restored_at_handover_is_refused() {
    let mut img = base();
    img.put_u8(img.field(Chain::Iommu, 0, off::HW_VENDOR), 1);
    expect(
        &img,
        ErrorKind::AlreadyRestored,
        img.at(Chain::Iommu, 0).field("restored"),
    );
}

#[test]
fn intel_device_restored_at_handover_is_refused() {
    let mut img = base();
    img.put_u8(img.field(Chain::Device, 2, off::DEV_VENDOR), 1);
    expect(
        &img,
        ErrorKind::AlreadyRestored,
        img.at(Chain::Device, 2).field("restored"),
    );
}

#[test]
fn restored_domain_at_handover_is_refused() {
    let mut img = base();
    img.put_u64(
        img.field(Chain::Domain, 1, off::DOM_RESTORED),
        0xffff_8880_0000_1000,
    );
    expect(
        &img,
        ErrorKind::AlreadyRestored,
        img.at(Chain::Domain, 1).field("restored_domain"),
    );
}
