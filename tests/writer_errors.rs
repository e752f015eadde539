//! Misuse is a typed error naming the object, and leaves the image as it was.
#![cfg(feature = "alloc")] // The tests allocate from MapAlloc.

mod writer_support;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::*;
use iommu_flb_abi::reader::{self, Options};
use iommu_flb_abi::writer::*;
use writer_support::walk;

type W = Writer<MapAlloc>;

fn writer() -> W {
    Writer::start(MapAlloc::sequential(PhysAddr::new(0x10_0000))).unwrap()
}

fn intel(token: u64) -> IommuPayloadInit {
    IommuPayloadInit::Intel(IntelIommuInit {
        phys_addr: PhysAddr::new(token),
        ..Default::default()
    })
}

fn smmu(token: u64) -> IommuPayloadInit {
    IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
        phys_addr: PhysAddr::new(token),
        ..Default::default()
    })
}

fn domain_init() -> DomainInit {
    DomainInit {
        top_table_phys: PhysAddr::new(0x40_0000),
        top_level: 4,
        vasz: 48,
        sign_extend: 0,
    }
}

fn dev(seg: u32, devid: u32) -> DeviceInit {
    DeviceInit {
        pci_domain_nr: seg,
        devid,
        dma_owner_token: 1,
        attachment_id: 5,
        payload: DevicePayloadInit::Intel(IntelDeviceInit::default()),
    }
}

fn smmu_dev(devid: u32) -> DeviceInit {
    DeviceInit {
        attachment_id: 0,
        payload: DevicePayloadInit::Smmuv3(Smmuv3DeviceInit::default()),
        ..dev(0, devid)
    }
}

/// A writer with one Intel IOMMU and one domain.
fn setup() -> (W, IommuHandle, DomainHandle) {
    let mut w = writer();
    let i = w.preserve_iommu(0xfed0_0000, intel(0xfed0_0000)).unwrap();
    let d = w.preserve_domain(domain_init()).unwrap();
    (w, i, d)
}

/// The image's bytes, to prove a refused operation changed nothing.
fn snapshot<X: DeviceIndex>(w: &Writer<MapAlloc, X>) -> Vec<(PhysAddr, Vec<u8>)> {
    w.alloc()
        .map()
        .iter()
        .map(|(p, b)| (p, b.to_vec()))
        .collect()
}

#[test]
fn a_second_live_device_with_the_same_segment_and_devid_is_refused() {
    let (mut w, i, d) = setup();
    let first = w.preserve_device(dev(1, 0x300), d, i).unwrap();
    let before = snapshot(&w);
    assert_eq!(
        w.preserve_device(dev(1, 0x300), d, i),
        Err(WriteError::DuplicateDevice {
            pci_domain_nr: 1,
            devid: 0x300,
            existing: first.phys()
        })
    );
    assert_eq!(snapshot(&w), before);
    // Another segment, or the same key after unpreserve, is fine.
    w.preserve_device(dev(2, 0x300), d, i).unwrap();
    w.unpreserve_device(first).unwrap();
    w.preserve_device(dev(1, 0x300), d, i).unwrap();
}

#[test]
fn a_duplicate_device_below_the_highest_key_is_found_by_scanning() {
    let (mut w, i, d) = setup();
    // Descending keys defeat the ascending-order shortcut; the scan must
    // cross pages to find the first device.
    let first = w.preserve_device(dev(0, 500), d, i).unwrap();
    // 60 devices cross a device page (56) and keep miri quick.
    let n = if cfg!(miri) { 60 } else { 200 };
    for devid in (0..n).rev() {
        w.preserve_device(dev(0, devid), d, i).unwrap();
    }
    assert_eq!(
        w.preserve_device(dev(0, 500), d, i),
        Err(WriteError::DuplicateDevice {
            pci_domain_nr: 0,
            devid: 500,
            existing: first.phys()
        })
    );
}

#[test]
fn a_duplicate_device_is_found_through_a_slice_index() {
    let mut slots = [IndexSlot::empty(); 8];
    let pages = MapAlloc::sequential(PhysAddr::new(0x10_0000));
    let mut w = Writer::with_index(pages, SliceIndex::new(&mut slots)).unwrap();
    let i = w.preserve_iommu(1, intel(1)).unwrap();
    let d = w.preserve_domain(domain_init()).unwrap();
    let a = w.preserve_device(dev(0, 9), d, i).unwrap();
    w.preserve_device(dev(0, 3), d, i).unwrap();
    assert_eq!(
        w.preserve_device(dev(0, 9), d, i),
        Err(WriteError::DuplicateDevice {
            pci_domain_nr: 0,
            devid: 9,
            existing: a.phys()
        })
    );
    assert_eq!(w.index().len(), 2);
}

#[test]
fn a_full_device_index_refuses_the_device_and_changes_no_byte() {
    let mut slots = [IndexSlot::empty(); 3];
    let pages = MapAlloc::sequential(PhysAddr::new(0x10_0000));
    let mut w = Writer::with_index(pages, SliceIndex::new(&mut slots)).unwrap();
    let i = w.preserve_iommu(1, intel(1)).unwrap();
    let d = w.preserve_domain(domain_init()).unwrap();
    w.preserve_device(dev(0, 1), d, i).unwrap();
    w.preserve_device(dev(0, 2), d, i).unwrap();
    let before = snapshot(&w);
    assert_eq!(
        w.preserve_device(dev(0, 3), d, i),
        Err(WriteError::IndexFull { capacity: 2 })
    );
    // Not a byte written, not even in the slot past nr_objects.
    assert!(
        snapshot(&w) == before,
        "the refused device changed the image"
    );
    let img = walk(w.alloc(), w.root());
    assert_eq!(img.devices.records.len(), 2);
    assert_eq!(img.iommus.records[0].ref_count(), 2);
}

#[test]
fn the_same_iommu_token_and_type_twice_is_refused_until_unpreserved() {
    let mut w = writer();
    let a = w.preserve_iommu(0x1000, intel(0x1000)).unwrap();
    assert_eq!(
        w.preserve_iommu(0x1000, intel(0x1000)),
        Err(WriteError::DuplicateIommu {
            token: 0x1000,
            iommu_type: IommuTypeSer::IommuIntel,
            existing: a.phys()
        })
    );
    // The pair identifies an IOMMU: the same token with another type is another one.
    w.preserve_iommu(0x1000, smmu(0x1000)).unwrap();
    w.unpreserve_iommu(a).unwrap();
    w.preserve_iommu(0x1000, intel(0x1000)).unwrap();
}

#[test]
fn attaching_to_an_unpreserved_domain_is_refused() {
    let (mut w, i, d) = setup();
    w.unpreserve_domain(d).unwrap();
    assert_eq!(
        w.preserve_device(dev(0, 1), d, i),
        Err(WriteError::AttachToDeleted {
            kind: ObjectKind::Domain,
            phys: d.phys()
        })
    );
}

#[test]
fn attaching_to_an_unpreserved_iommu_is_refused() {
    let (mut w, i, d) = setup();
    w.unpreserve_iommu(i).unwrap();
    assert_eq!(
        w.preserve_device(dev(0, 1), d, i),
        Err(WriteError::AttachToDeleted {
            kind: ObjectKind::Iommu,
            phys: i.phys()
        })
    );
}

#[test]
fn an_iommu_whose_last_device_left_takes_devices_again() {
    let (mut w, i, d) = setup();
    let a = w.preserve_device(dev(0, 1), d, i).unwrap();
    w.unpreserve_device(a).unwrap();
    let img = walk(w.alloc(), w.root());
    let rec = &img.iommus.records[0];
    assert_eq!((rec.ref_count(), rec.flags()), (0, IOMMU_SER_FLAG_DELETED));
    w.preserve_device(dev(0, 2), d, i).unwrap();
    let img = walk(w.alloc(), w.root());
    let rec = &img.iommus.records[0];
    assert_eq!((rec.ref_count(), rec.flags()), (1, 0));
}

#[test]
fn unpreserving_a_device_twice_is_refused() {
    let (mut w, i, d) = setup();
    let a = w.preserve_device(dev(0, 1), d, i).unwrap();
    w.unpreserve_device(a).unwrap();
    assert_eq!(
        w.unpreserve_device(a),
        Err(WriteError::AlreadyUnpreserved {
            kind: ObjectKind::Device,
            phys: a.phys()
        })
    );
}

#[test]
fn unpreserving_a_domain_twice_is_refused() {
    let (mut w, _, d) = setup();
    w.unpreserve_domain(d).unwrap();
    assert_eq!(
        w.unpreserve_domain(d),
        Err(WriteError::AlreadyUnpreserved {
            kind: ObjectKind::Domain,
            phys: d.phys()
        })
    );
}

#[test]
fn unpreserving_an_iommu_twice_is_refused() {
    let (mut w, i, _) = setup();
    w.unpreserve_iommu(i).unwrap();
    assert_eq!(
        w.unpreserve_iommu(i),
        Err(WriteError::AlreadyUnpreserved {
            kind: ObjectKind::Iommu,
            phys: i.phys()
        })
    );
}

#[test]
fn a_domain_with_a_live_device_cannot_be_unpreserved() {
    let (mut w, i, d) = setup();
    let a = w.preserve_device(dev(0, 1), d, i).unwrap();
    assert_eq!(
        w.unpreserve_domain(d),
        Err(WriteError::DomainInUse {
            domain: d.phys(),
            device: a.phys()
        })
    );
    w.unpreserve_device(a).unwrap();
    w.unpreserve_domain(d).unwrap();
}

#[test]
fn an_iommu_with_live_devices_cannot_be_unpreserved() {
    let (mut w, i, d) = setup();
    w.preserve_device(dev(0, 1), d, i).unwrap();
    w.preserve_device(dev(0, 2), d, i).unwrap();
    assert_eq!(
        w.unpreserve_iommu(i),
        Err(WriteError::IommuInUse {
            iommu: i.phys(),
            devices: 2
        })
    );
}

#[test]
fn handles_from_another_writer_are_refused() {
    let (mut w, i, d) = setup();
    let a = w.preserve_device(dev(0, 1), d, i).unwrap();
    // The same allocator layout, so the other writer's records sit at the
    // very same addresses: only the writer identity tells them apart.
    let (mut other, oi, od) = setup();
    let oa = other.preserve_device(dev(0, 1), od, oi).unwrap();
    assert_eq!(
        (oi.phys(), od.phys(), oa.phys()),
        (i.phys(), d.phys(), a.phys())
    );
    assert_eq!(
        w.preserve_device(dev(0, 2), od, i),
        Err(WriteError::ForeignHandle {
            kind: ObjectKind::Domain,
            phys: od.phys()
        })
    );
    assert_eq!(
        w.preserve_device(dev(0, 2), d, oi),
        Err(WriteError::ForeignHandle {
            kind: ObjectKind::Iommu,
            phys: oi.phys()
        })
    );
    assert_eq!(
        w.unpreserve_device(oa),
        Err(WriteError::ForeignHandle {
            kind: ObjectKind::Device,
            phys: oa.phys()
        })
    );
    assert_eq!(
        w.unpreserve_domain(od),
        Err(WriteError::ForeignHandle {
            kind: ObjectKind::Domain,
            phys: od.phys()
        })
    );
    assert_eq!(
        w.unpreserve_iommu(oi),
        Err(WriteError::ForeignHandle {
            kind: ObjectKind::Iommu,
            phys: oi.phys()
        })
    );
}

#[test]
fn a_null_top_table_is_refused() {
    let mut w = writer();
    let d = DomainInit {
        top_table_phys: PhysAddr::NULL,
        ..domain_init()
    };
    assert_eq!(
        w.preserve_domain(d),
        Err(WriteError::InvalidDomain {
            field: DomainField::TopTablePhys,
            value: 0
        })
    );
}

#[test]
fn an_unaligned_top_table_is_refused() {
    let mut w = writer();
    let d = DomainInit {
        top_table_phys: PhysAddr::new(0x40_0800),
        ..domain_init()
    };
    assert_eq!(
        w.preserve_domain(d),
        Err(WriteError::InvalidDomain {
            field: DomainField::TopTablePhys,
            value: 0x40_0800
        })
    );
}

#[test]
fn vasz_above_64_is_refused_and_64_accepted() {
    let mut w = writer();
    let d = DomainInit {
        vasz: 65,
        ..domain_init()
    };
    assert_eq!(
        w.preserve_domain(d),
        Err(WriteError::InvalidDomain {
            field: DomainField::Vasz,
            value: 65
        })
    );
    w.preserve_domain(DomainInit { vasz: 64, ..d }).unwrap();
}

#[test]
fn sign_extend_above_1_is_refused_and_1_accepted() {
    let mut w = writer();
    let d = DomainInit {
        sign_extend: 2,
        ..domain_init()
    };
    assert_eq!(
        w.preserve_domain(d),
        Err(WriteError::InvalidDomain {
            field: DomainField::SignExtend,
            value: 2
        })
    );
    w.preserve_domain(DomainInit {
        sign_extend: 1,
        ..d
    })
    .unwrap();
}

#[test]
fn a_device_payload_for_another_iommu_type_is_refused() {
    let (mut w, i, d) = setup();
    assert_eq!(
        w.preserve_device(smmu_dev(1), d, i),
        Err(WriteError::PayloadMismatch {
            iommu: i.phys(),
            iommu_type: IommuTypeSer::IommuIntel,
            payload_type: IommuTypeSer::IommuArmSmmuv3
        })
    );
}

#[test]
fn an_smmuv3_asid_or_vmid_in_attachment_id_is_stored_and_read_back() {
    // The SMMUv3 live-update driver stores the stage-1 ASID or the stage-2
    // VMID in attachment_id.
    let mut w = writer();
    let i = w.preserve_iommu(1, smmu(1)).unwrap();
    let d = w.preserve_domain(domain_init()).unwrap();
    let asid = DeviceInit {
        attachment_id: 0x2a,
        ..smmu_dev(1)
    };
    let dev = w.preserve_device(asid, d, i).unwrap();
    let img = walk(w.alloc(), w.root());
    assert_eq!(img.devices.records[0].phys, dev.phys());
    let stored = img.devices.records[0].device().domain_iommu_ser;
    assert_eq!(stored.attachment_id.get(), 0x2a);
    let (root, pages) = w.finish();
    let owned = reader::validate_alloc(&pages, root, &Options::default()).unwrap();
    let seen = owned.image().find_device(0, 1).unwrap();
    assert_eq!(seen.phys(), dev.phys());
    assert_eq!(seen.attachment_id(), 0x2a);
}

#[test]
fn a_reference_count_at_its_maximum_refuses_another_device() {
    let (mut w, i, d) = setup();
    w.preserve_device(dev(0, 1), d, i).unwrap();
    // Pretend u32::MAX devices are behind the IOMMU.
    let page = w
        .alloc_mut()
        .page_mut(i.phys().page_base(PageSize::Size4K))
        .unwrap();
    let off = i.phys().page_offset(PageSize::Size4K);
    page[off..off + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        w.preserve_device(dev(0, 2), d, i),
        Err(WriteError::RefCountOverflow { iommu: i.phys() })
    );
}

#[test]
fn a_page_count_changed_behind_the_writer_is_reported_not_followed() {
    let (mut w, _, _) = setup();
    let head = walk(w.alloc(), w.root()).iommus.pages[0];
    w.alloc_mut().page_mut(head).unwrap()[8] = 200;
    assert_eq!(
        w.preserve_iommu(2, intel(2)),
        Err(WriteError::Inconsistent {
            phys: head,
            what: "nr_objects above capacity"
        })
    );
}

#[test]
fn a_page_taken_away_from_the_writer_is_reported() {
    let (mut w, i, _) = setup();
    let page = i.phys().page_base(PageSize::Size4K);
    w.alloc_mut().free_page(page);
    assert_eq!(
        w.unpreserve_iommu(i),
        Err(WriteError::PageUnavailable { phys: page })
    );
}

#[test]
fn errors_map_to_negative_errno_values() {
    assert_eq!(
        WriteError::OutOfPages {
            purpose: PagePurpose::Root
        }
        .errno(),
        -12
    );
    assert_eq!(
        WriteError::DuplicateDevice {
            pci_domain_nr: 0,
            devid: 0,
            existing: PhysAddr::NULL
        }
        .errno(),
        -17
    );
    assert_eq!(
        WriteError::IommuInUse {
            iommu: PhysAddr::NULL,
            devices: 1
        }
        .errno(),
        -16
    );
}

#[test]
fn error_text_names_the_object() {
    let e = WriteError::DuplicateDevice {
        pci_domain_nr: 1,
        devid: 0x300,
        existing: PhysAddr::new(0x10_3010),
    };
    let wide = WriteError::DuplicateDevice {
        pci_domain_nr: 0,
        devid: 0x1_0000,
        existing: PhysAddr::new(0x10_3010),
    };
    assert_eq!(
        wide.to_string(),
        "device 0000:devid 0x10000 is already preserved at 0x103010"
    );
    assert_eq!(
        e.to_string(),
        "device 0001:03:00.0 is already preserved at 0x103010"
    );
}
