//! The reader on version-2 images: what it accepts (with exactly the
//! written objects), every version-2 refusal with its kind and location,
//! and the property that a single flipped bit anywhere is refused.

mod v2_support;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::abi::v1::IommuTypeSer;
use iommu_flb_abi::error::{Chain, Error, ErrorKind, Location, RefFault};
use iommu_flb_abi::reader::{self, DevicePayload, IommuPayload, Options, ScratchElem};
use v2_support::{Device, Img, Spec};

fn root_at(img: &Img, field: &'static str) -> Location {
    Location::root(img.root, Some(field))
}

fn page_at(img: &Img, c: usize, i: usize) -> Location {
    let chain = [Chain::Iommu, Chain::Domain, Chain::Device][c];
    Location::page(chain, i as u64, PhysAddr::new(img.pages[c][i]))
}

fn expect(img: &Img, kind: ErrorKind, at: Location) {
    assert_eq!(img.check(), Err(Error::new(kind, at)));
}

#[test]
fn typical_image_has_exactly_its_objects() {
    let spec = Spec::typical(70); // 70 devices: two device pages at 4 KiB.
    let img = Img::build(&spec);
    let mem = img.mem();
    let opts = Options::default();
    let n = reader::scratch_len(&mem, img.root, &opts).unwrap();
    let mut scratch = vec![ScratchElem::default(); n];
    let image = reader::validate(&mem, img.root, &opts, &mut scratch).unwrap();
    assert_eq!((image.version(), image.format()), (2, 2));
    assert_eq!(image.generation(), Some(spec.generation));
    assert_eq!(
        image.features().map(|f| (f.compat, f.incompat)),
        Some((0, 0))
    );
    assert!(image.root_v1().is_none() && image.root_v2().is_some());
    assert_eq!(image.chain_pages(Chain::Device), 2);
    assert_eq!(image.chain_stride(Chain::Device), 72);

    let iommus: Vec<_> = image.iommus().collect();
    assert_eq!(iommus.len(), 2);
    assert!(
        matches!(iommus[0].payload(), IommuPayload::IntelV2(p) if p.phys_addr.get() == 0xfed9_0000)
    );
    assert!(
        matches!(iommus[1].payload(), IommuPayload::Smmuv3(p) if p.phys_addr.get() == 0x0900_0000)
    );
    assert_eq!(iommus[0].ref_count(), 35);
    assert!(iommus[0].v2().is_some() && iommus[0].v1().is_none());

    let devices: Vec<_> = image.devices().collect();
    assert_eq!(devices.len(), 70);
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d.devid(), i as u32 * 8);
        assert_eq!(d.attachment_id(), i as u64 + 1);
        // References by index resolve to the records at those indexes.
        let dom = image.domain_by_index(i as u64 % 3).unwrap();
        assert_eq!(d.domain().phys(), dom.phys());
        assert_eq!(
            d.iommu().phys(),
            image.iommu_by_index(i as u64 % 2).unwrap().phys()
        );
        match (d.payload(), i % 2) {
            (DevicePayload::IntelV2(p), 0) => assert_eq!(p.max_pasid.get(), 1 << 20),
            (DevicePayload::Smmuv3(p), 1) => assert_eq!(p.num_l2_cdtables.get(), 2),
            (p, _) => panic!("payload {p:?} for device {i}"),
        }
    }
    // As stored records, the references are the indexes themselves.
    let records: Vec<_> = image.device_records().collect();
    assert_eq!(records.len(), 70);
    // `fold` walks the records a page at a time; `collect` one at a time.
    let by_fold = image.device_records().fold(Vec::new(), |mut v, r| {
        v.push(r.phys());
        v
    });
    assert_eq!(
        by_fold,
        records.iter().map(|r| r.phys()).collect::<Vec<_>>()
    );
    for (i, (r, d)) in records.iter().zip(&devices).enumerate() {
        assert_eq!((r.phys(), r.devid()), (d.phys(), d.devid()));
        assert_eq!(
            (r.domain_ref(), r.iommu_ref()),
            (i as u64 % 3, i as u64 % 2)
        );
        let again = image.resolve_device(r).unwrap();
        assert_eq!(again.domain().phys(), d.domain().phys());
        assert_eq!(again.iommu().phys(), d.iommu().phys());
    }
    let found = image.find_device(0, 8 * 41).unwrap();
    assert_eq!(found.phys(), devices[41].phys());
    assert_eq!(
        image
            .find_iommu(0x0900_0000, IommuTypeSer::IommuArmSmmuv3)
            .unwrap()
            .phys(),
        iommus[1].phys()
    );
    let pages: Vec<_> = image
        .chain_pages_iter()
        .map(|(p, c, i)| (p.get(), c, i))
        .collect();
    let want: Vec<_> = std::iter::once((img.base, None, 0))
        .chain(img.pages[0].iter().map(|&p| (p, Some(Chain::Iommu), 0)))
        .chain(img.pages[1].iter().map(|&p| (p, Some(Chain::Domain), 0)))
        .chain(
            img.pages[2]
                .iter()
                .enumerate()
                .map(|(i, &p)| (p, Some(Chain::Device), i as u64)),
        )
        .collect();
    assert_eq!(pages, want);
    assert_eq!(image.pages().count(), image.page_count());
}

#[test]
fn empty_image_is_the_root_page_alone() {
    let mut spec = Spec::typical(0);
    spec.iommus.clear();
    spec.domains.clear();
    let img = Img::build(&spec);
    assert_eq!(img.bytes.len(), 4096);
    assert_eq!(img.check(), Ok((0, 0, 1)));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "16 KiB pages of CRC are slow under miri; the 4 KiB tests cover the code"
)]
fn sixteen_kib_pages_are_read_from_the_root_not_the_options() {
    let mut spec = Spec::typical(300);
    spec.page = PageSize::Size16K;
    let img = Img::build(&spec);
    // The default options say 4 KiB; the root says 16 KiB.
    assert_eq!(img.check(), Ok((2, 300, 5)));
}

#[test]
fn longer_records_of_a_later_2x_writer_are_read_and_their_tail_skipped() {
    let mut spec = Spec::typical(20);
    spec.strides = [112, 40, 80];
    let mut img = Img::build(&spec);
    // Bytes a 2.1 writer appended to each record: a 2.0 reader skips them.
    for i in 0..20 {
        let at = img.record(2, i) + 72;
        img.put_u64(at, 0xffff_ffff_ffff_ffff);
    }
    img.seal();
    assert_eq!(img.check(), Ok((2, 20, 4)));
}

#[test]
fn unknown_compatible_features_are_ignored_and_incompatible_ones_refused() {
    let mut img = Img::build(&Spec::typical(4));
    img.put_u64(32, 1 << 7);
    img.seal();
    assert!(img.check().is_ok());
    img.put_u64(40, 1 << 3);
    img.seal();
    expect(
        &img,
        ErrorKind::UnknownFeatures { bits: 1 << 3 },
        root_at(&img, "incompat_features"),
    );
}

#[test]
fn a_later_version_is_read_when_it_allows_version_2_readers() {
    let mut img = Img::build(&Spec::typical(4));
    img.put_u64(0, 3);
    img.seal();
    let mem = img.mem();
    let mut scratch = vec![ScratchElem::default(); 64];
    let image = reader::validate(&mem, img.root, &Options::default(), &mut scratch).unwrap();
    assert_eq!((image.version(), image.format()), (3, 2));
    img.put_u32(16, 3);
    img.seal();
    expect(
        &img,
        ErrorKind::IncompatibleVersion {
            version: 3,
            last_compatible: 3,
        },
        root_at(&img, "last_compatible_version"),
    );
    img.put_u64(0, 2);
    img.seal();
    expect(
        &img,
        ErrorKind::IncompatibleVersion {
            version: 2,
            last_compatible: 3,
        },
        root_at(&img, "last_compatible_version"),
    );
}

// ---- the root ----

#[test]
fn root_checksum_mismatch_names_both_values() {
    let mut img = Img::build(&Spec::typical(4));
    let stored = u32::from_le_bytes(img.bytes[48..52].try_into().unwrap());
    img.bytes[100] ^= 0x10; // a byte of the root no field check reads first
    let computed = v2_support::crc_of(&img.bytes[..4096], 48);
    expect(
        &img,
        ErrorKind::ChecksumMismatch { stored, computed },
        root_at(&img, "crc"),
    );
}

#[test]
fn root_without_the_magic_is_not_a_version_2_root() {
    let mut img = Img::build(&Spec::typical(4));
    img.put_u32(8, 0x1234_5678);
    img.seal();
    expect(
        &img,
        ErrorKind::UnsupportedVersion { found: 2 },
        root_at(&img, "version"),
    );
}

#[test]
fn bad_page_size_root_size_and_reserved_are_refused() {
    let mut img = Img::build(&Spec::typical(4));
    img.put_u32(20, 8192);
    img.seal();
    expect(
        &img,
        ErrorKind::BadPageSize { found: 8192 },
        root_at(&img, "page_size"),
    );

    let mut img = Img::build(&Spec::typical(4));
    img.put_u32(12, 64);
    img.seal();
    expect(
        &img,
        ErrorKind::BadRootSize {
            found: 64,
            min: 128,
            max: 4096,
        },
        root_at(&img, "root_size"),
    );

    let mut img = Img::build(&Spec::typical(4));
    img.put_u32(52, 1);
    img.seal();
    expect(&img, ErrorKind::NonZeroPadding, root_at(&img, "reserved"));
}

#[test]
fn root_counts_that_disagree_with_the_chains_are_refused() {
    // The devices' chain entry in the root: head, nr_pages, nr_records.
    type At = fn(&Img) -> usize;
    let head: At = |_| 56 + 48;
    let nr_pages: At = |_| 56 + 48 + 8;
    let nr_records: At = |_| 56 + 48 + 16;
    let first_page: At = |img| img.page(2, 0);
    // (devices, where, the value written there, stored, counted, field)
    let cases: [(u32, At, u64, u64, u64, &str); 6] = [
        // One device page more than there is.
        (4, nr_pages, 2, 2, 1, "devices.nr_pages"),
        // A record fewer than the pages hold.
        (4, nr_records, 3, 3, 4, "devices.nr_records"),
        // A chain cut short: the device page unlinked, its counts kept.
        (4, head, 0, 1, 0, "devices.nr_pages"),
        // A chain cut inside: its first page made its last.
        (70, first_page, 0, 2, 1, "devices.nr_pages"),
        // A chain the root says has no pages, though its head leads to
        // two: the walk's real count is reported, not a guess from the head.
        (70, nr_pages, 0, 0, 2, "devices.nr_pages"),
        // A chain lengthened: the root knows one page of two.
        (70, nr_pages, 1, 1, 2, "devices.nr_pages"),
    ];
    for (devices, at, value, stored, counted, field) in cases {
        let mut img = Img::build(&Spec::typical(devices));
        let addr = at(&img);
        img.put_u64(addr, value);
        img.seal();
        expect(
            &img,
            ErrorKind::CountMismatch { stored, counted },
            root_at(&img, field),
        );
    }
}

// ---- pages ----

#[test]
fn page_magic_checksum_chain_index_generation_and_reserved_are_each_checked() {
    let spec = Spec::typical(70);
    let mut img = Img::build(&spec);
    let p = img.page(2, 1);
    img.put_u32(p + 16, 0);
    img.seal();
    expect(
        &img,
        ErrorKind::BadMagic { found: 0 },
        page_at(&img, 2, 1).field("magic"),
    );

    let mut img = Img::build(&spec);
    let p = img.page(2, 1);
    let stored = u32::from_le_bytes(img.bytes[p + 40..p + 44].try_into().unwrap());
    img.bytes[p + 4000] ^= 1; // slack after the last record is covered too
    let computed = v2_support::crc_of(&img.bytes[p..p + 4096], 40);
    expect(
        &img,
        ErrorKind::ChecksumMismatch { stored, computed },
        page_at(&img, 2, 1).field("crc"),
    );

    let mut img = Img::build(&spec);
    let p = img.page(1, 0);
    img.put_u16(p + 20, 3);
    img.seal();
    expect(
        &img,
        ErrorKind::WrongChain { found: 3 },
        page_at(&img, 1, 0).field("chain"),
    );

    let mut img = Img::build(&spec);
    let p = img.page(2, 1);
    img.put_u64(p + 24, 0);
    img.seal();
    expect(
        &img,
        ErrorKind::WrongIndex {
            found: 0,
            expected: 1,
        },
        page_at(&img, 2, 1).field("index"),
    );

    let mut img = Img::build(&spec);
    let p = img.page(0, 0);
    img.put_u64(p + 32, spec.generation - 1);
    img.seal();
    expect(
        &img,
        ErrorKind::StaleGeneration {
            found: spec.generation - 1,
            expected: spec.generation,
        },
        page_at(&img, 0, 0).field("generation"),
    );

    let mut img = Img::build(&spec);
    let p = img.page(0, 0);
    img.put_u32(p + 44, 1);
    img.seal();
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        page_at(&img, 0, 0).field("reserved"),
    );
}

/// Two header fields broken at once: the one checked first is reported,
/// in the order magic, CRC, chain, index, generation, reserved, stride.
#[test]
fn page_header_checks_run_in_their_order() {
    let spec = Spec::typical(70);
    // Magic before CRC: a bad magic, CRC not resealed.
    let mut img = Img::build(&spec);
    let p = img.page(2, 1);
    img.put_u32(p + 16, 0);
    expect(
        &img,
        ErrorKind::BadMagic { found: 0 },
        page_at(&img, 2, 1).field("magic"),
    );
    // CRC before chain: a wrong chain, CRC not resealed.
    let mut img = Img::build(&spec);
    let stored = u32::from_le_bytes(img.bytes[p + 40..p + 44].try_into().unwrap());
    img.put_u16(p + 20, 1);
    let computed = v2_support::crc_of(&img.bytes[p..p + 4096], 40);
    expect(
        &img,
        ErrorKind::ChecksumMismatch { stored, computed },
        page_at(&img, 2, 1).field("crc"),
    );
    // Each later pair, resealed: the earlier field is named.
    let pairs: [(usize, u64, usize, u64, ErrorKind, &str); 4] = [
        (20, 1, 24, 7, ErrorKind::WrongChain { found: 1 }, "chain"),
        (
            24,
            7,
            32,
            1,
            ErrorKind::WrongIndex {
                found: 7,
                expected: 1,
            },
            "index",
        ),
        (
            32,
            1,
            44,
            1,
            ErrorKind::StaleGeneration {
                found: 1,
                expected: spec.generation,
            },
            "generation",
        ),
        (44, 1, 22, 36, ErrorKind::NonZeroPadding, "reserved"),
    ];
    for (at_a, a, at_b, b, kind, field) in pairs {
        let mut img = Img::build(&spec);
        for (at, v) in [(at_a, a), (at_b, b)] {
            match at {
                20 | 22 => img.put_u16(p + at, v as u16),
                44 => img.put_u32(p + at, v as u32),
                _ => img.put_u64(p + at, v),
            }
        }
        img.seal();
        expect(&img, kind, page_at(&img, 2, 1).field(field));
    }
}

#[test]
fn page_of_an_earlier_handover_is_refused_even_intact() {
    // The same records written by the previous kernel, generation 1 older:
    // a pointer to its page (it is self-consistent, its CRC right).
    let old = Img::build(&Spec {
        generation: 0x5eed_0000,
        ..Spec::typical(4)
    });
    let mut img = Img::build(&Spec::typical(4));
    let p = img.page(2, 0);
    img.bytes[p..p + 4096].copy_from_slice(&old.bytes[p..p + 4096]);
    expect(
        &img,
        ErrorKind::StaleGeneration {
            found: 0x5eed_0000,
            expected: 0x5eed_0001,
        },
        page_at(&img, 2, 0).field("generation"),
    );
}

#[test]
fn bad_and_changing_strides_and_empty_pages_are_refused() {
    let mut img = Img::build(&Spec::typical(4));
    let p = img.page(1, 0);
    img.put_u16(p + 22, 36);
    img.seal();
    expect(
        &img,
        ErrorKind::BadStride {
            stride: 36,
            min: 32,
            max: 4048,
        },
        page_at(&img, 1, 0).field("stride"),
    );
    let mut img = Img::build(&Spec::typical(4));
    let p = img.page(2, 0);
    img.put_u16(p + 22, 64);
    img.seal();
    expect(
        &img,
        ErrorKind::BadStride {
            stride: 64,
            min: 72,
            max: 4048,
        },
        page_at(&img, 2, 0).field("stride"),
    );
    let mut img = Img::build(&Spec::typical(70));
    let p = img.page(2, 1);
    img.put_u16(p + 22, 80);
    img.seal();
    expect(
        &img,
        ErrorKind::StrideChanged {
            stride: 80,
            first: 72,
        },
        page_at(&img, 2, 1).field("stride"),
    );
    let mut img = Img::build(&Spec::typical(4));
    let p = img.page(2, 0);
    img.put_u64(p + 8, 0);
    img.seal();
    expect(
        &img,
        ErrorKind::EmptyPage,
        page_at(&img, 2, 0).field("nr_objects"),
    );
}

// ---- records ----

#[test]
fn device_indexes_past_the_chain_or_at_deleted_records_are_refused() {
    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(2, 1);
    img.put_u64(at + 32, 3);
    img.seal();
    expect(
        &img,
        ErrorKind::BadIndex {
            index: 3,
            fault: RefFault::BeyondCount,
        },
        page_at(&img, 2, 0).object(1).field("domain_index"),
    );

    let mut spec = Spec::typical(4);
    spec.domains[2] = true;
    spec.devices.truncate(2);
    spec.devices.push(Device {
        segment: 0,
        devid: 99,
        domain: 2,
        iommu: 0,
        deleted: false,
    });
    let img = Img::build(&spec);
    expect(
        &img,
        ErrorKind::BadIndex {
            index: 2,
            fault: RefFault::Deleted,
        },
        page_at(&img, 2, 0).object(2).field("domain_index"),
    );

    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(2, 0);
    img.put_u64(at + 40, 7);
    img.seal();
    expect(
        &img,
        ErrorKind::BadIndex {
            index: 7,
            fault: RefFault::BeyondCount,
        },
        page_at(&img, 2, 0).object(0).field("iommu_index"),
    );
}

#[test]
fn the_next_kernels_flag_does_not_exist_in_version_2() {
    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(1, 0);
    img.put_u32(at + 4, 2); // version 1's INCOMING
    img.seal();
    expect(
        &img,
        ErrorKind::UnknownFlags { flags: 2 },
        page_at(&img, 1, 0).object(0).field("flags"),
    );
}

#[test]
fn unused_union_bytes_are_padding() {
    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(0, 1); // SMMUv3: 48 bytes past its member
    img.bytes[at + 24 + 32] = 1;
    img.seal();
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        page_at(&img, 0, 0).object(1).field("vendor"),
    );

    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(2, 0); // Intel device: 8 bytes past its member
    img.bytes[at + 48 + 16] = 1;
    img.seal();
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        page_at(&img, 2, 0).object(0).field("vendor"),
    );

    let mut img = Img::build(&Spec::typical(4));
    let at = img.record(2, 1); // SMMUv3 device padding
    img.put_u32(at + 48 + 12, 1);
    img.seal();
    expect(
        &img,
        ErrorKind::NonZeroPadding,
        page_at(&img, 2, 0).object(1).field("padding"),
    );
}

// ---- the property ----

/// Every single-bit flip of a small image (root, one page per chain: four
/// 4 KiB pages, 131,072 bits) is refused: the CRCs cover every byte. Under
/// miri, one bit in every 127th byte (a shorter run of the same property).
#[test]
fn every_single_bit_flip_is_refused() {
    let mut spec = Spec::typical(2);
    spec.domains.truncate(2);
    let img = Img::build(&spec);
    assert!(img.check().is_ok());
    let opts = Options::default();
    let mut scratch = vec![ScratchElem::default(); 64];
    let mut bytes = img.bytes.clone();
    let bits: Vec<usize> = if cfg!(miri) {
        (0..img.bytes.len())
            .step_by(127)
            .map(|b| b * 8 + b % 8)
            .collect()
    } else {
        (0..img.bytes.len() * 8).collect()
    };
    for bit in bits {
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mem = iommu_flb_abi::FlatMemory::new(PhysAddr::new(img.base), &bytes);
        let r = reader::validate(&mem, img.root, &opts, &mut scratch);
        assert!(
            r.is_err(),
            "bit {bit} (byte {:#x}) flipped is accepted",
            bit / 8
        );
        bytes[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Bytes summed by `counting_crc` (a test-wide counter: only the test
/// below uses it).
static SUMMED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counting_crc(crc: u32, bytes: &[u8]) -> u32 {
    SUMMED.fetch_add(bytes.len(), std::sync::atomic::Ordering::Relaxed);
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(bytes);
    h.finalize()
}

#[test]
fn validation_sums_every_page_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let img = Img::build(&Spec::typical(70));
    let mem = img.mem();
    let opts = Options {
        crc: iommu_flb_abi::crc::Crc32::new(counting_crc),
        ..Options::default()
    };
    let pages = 1 + img.pages.iter().map(Vec::len).sum::<usize>();
    // Every page but its 4-byte `crc` field, the root's as well.
    let once = pages * (img.ps - 4);
    let n = reader::scratch_len(&mem, img.root, &opts).unwrap();
    let mut scratch = vec![ScratchElem::default(); n];
    SUMMED.store(0, Relaxed);
    let image = reader::validate(&mem, img.root, &opts, &mut scratch).unwrap();
    assert_eq!(image.live_devices(), 70);
    assert_eq!(SUMMED.load(Relaxed), once);
    // Summed once is not skipped: a record byte flipped in the second
    // device page is refused by that page's checksum, at its `crc`.
    let mut bad = img.bytes.clone();
    let at = (img.pages[2][1] - img.base) as usize + 100;
    bad[at] ^= 1;
    let mem = iommu_flb_abi::FlatMemory::new(PhysAddr::new(img.base), &bad);
    let err = reader::validate(&mem, img.root, &opts, &mut scratch).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::ChecksumMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.location(), page_at(&img, 2, 1).field("crc"));
}
