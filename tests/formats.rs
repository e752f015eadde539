//! The formats descriptor: every refusal of `Formats::parse`, the
//! negotiation between an outgoing and a next kernel, `Formats::accepts`
//! against the reader itself, and the writer started from a negotiation.

mod v2_support;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::formats::{
    IOMMU_FLB_FORMATS_MAGIC, IOMMU_FLB_FORMATS_READ, IOMMU_FLB_FORMATS_SIZE,
    IOMMU_FLB_FORMATS_WRITE,
};
use iommu_flb_abi::formats::{
    FORMATS, FormatSupport, Formats, FormatsError, NegotiateError, Negotiated, negotiate,
};
use iommu_flb_abi::reader::{self, Options, ScratchElem};
use iommu_flb_abi::writer::{Config, MapAlloc, WriteError, Writer};
use v2_support::{Img, Spec};
use zerocopy::IntoBytes;

/// Offsets in a stored descriptor.
const MAGIC: usize = 0;
const VERSION: usize = 4;
const SIZE: usize = 8;
const COUNT: usize = 12;
/// Offset of entry `i`'s field at `field` (0 version, 4 flags, 8 compat,
/// 16 incompat).
fn entry(i: usize, field: usize) -> usize {
    16 + 24 * i + field
}

fn own_bytes() -> Vec<u8> {
    FORMATS.to_ser().as_bytes().to_vec()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The own descriptor with `edit` applied, parsed.
fn parse_edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Formats, FormatsError> {
    let mut b = own_bytes();
    edit(&mut b);
    Formats::parse(&b)
}

fn support(version: u32, read: bool, write: bool) -> FormatSupport {
    FormatSupport {
        version,
        read,
        write,
        compat: 0,
        incompat: 0,
    }
}

fn rw(version: u32) -> FormatSupport {
    FormatSupport::read_write(version)
}

fn formats(entries: &[FormatSupport]) -> Formats {
    Formats::new(entries).expect("valid entries")
}

// ---- the library's own descriptor ----

#[test]
fn the_own_descriptor_reads_and_writes_versions_1_and_2_and_round_trips() {
    let b = own_bytes();
    assert_eq!(b.len(), IOMMU_FLB_FORMATS_SIZE as usize);
    assert_eq!(&b[..4], b"IFLF");
    assert_eq!(Formats::parse(&b), Ok(FORMATS));
    assert_eq!(Formats::from_ser(&FORMATS.to_ser()), Ok(FORMATS));
    let want = [
        FormatSupport {
            version: 1,
            read: true,
            write: true,
            compat: 0,
            incompat: 0,
        },
        FormatSupport {
            version: 2,
            read: true,
            write: true,
            compat: iommu_flb_abi::abi::v2::IOMMU_FLB_V2_COMPAT_KNOWN,
            incompat: iommu_flb_abi::abi::v2::IOMMU_FLB_V2_INCOMPAT_KNOWN,
        },
    ];
    assert_eq!(FORMATS.entries(), want);
    assert_eq!(
        FORMATS.entries()[0].flags(),
        IOMMU_FLB_FORMATS_READ | IOMMU_FLB_FORMATS_WRITE
    );
    // The stored bytes are exactly the layout's fields.
    assert_eq!(
        u32::from_le_bytes(b[COUNT..COUNT + 4].try_into().unwrap()),
        2
    );
    assert_eq!(
        u32::from_le_bytes(b[entry(1, 0)..][..4].try_into().unwrap()),
        2
    );
    assert_eq!(
        u32::from_le_bytes(b[entry(1, 4)..][..4].try_into().unwrap()),
        3
    );
    assert!(b[entry(2, 0)..].iter().all(|&x| x == 0));
}

// ---- every refusal of parse ----

#[test]
fn fewer_bytes_than_descriptor_version_1_are_refused() {
    let b = own_bytes();
    for len in [0, 1, 16, 207] {
        assert_eq!(Formats::parse(&b[..len]), Err(FormatsError::Short { len }));
    }
}

#[test]
fn a_wrong_magic_is_refused_with_the_value_found() {
    let e = parse_edited(|b| put_u32(b, MAGIC, 0x1234_5678)).unwrap_err();
    assert_eq!(e, FormatsError::BadMagic { found: 0x1234_5678 });
    assert_eq!(
        (e.field(), e.entry(), e.errno()),
        (Some("magic"), None, -71)
    );
    assert_eq!(
        e.to_string(),
        "formats descriptor: magic: 0x12345678, not 0x464c4649 (\"IFLF\")"
    );
    assert_eq!(IOMMU_FLB_FORMATS_MAGIC, u32::from_le_bytes(*b"IFLF"));
}

#[test]
fn an_unknown_descriptor_version_is_refused() {
    for v in [0, 2, u32::MAX] {
        let e = parse_edited(|b| put_u32(b, VERSION, v)).unwrap_err();
        assert_eq!(e, FormatsError::UnknownVersion { found: v });
        assert_eq!((e.field(), e.errno()), (Some("version"), -95));
    }
}

#[test]
fn a_size_below_descriptor_version_1_is_refused() {
    for size in [0, 16, 207] {
        let e = parse_edited(|b| put_u32(b, SIZE, size)).unwrap_err();
        assert_eq!(e, FormatsError::SizeTooSmall { size });
        assert_eq!((e.field(), e.errno()), (Some("size"), -74));
    }
}

#[test]
fn a_size_beyond_the_bytes_is_refused() {
    for size in [209, 216, u32::MAX] {
        let e = parse_edited(|b| put_u32(b, SIZE, size)).unwrap_err();
        assert_eq!(e, FormatsError::SizeBeyondData { size, len: 208 });
        assert_eq!(e.field(), Some("size"));
    }
}

#[test]
fn bytes_past_the_size_are_refused_by_parse_and_returned_by_parse_prefix() {
    // Two descriptors in one section (two objects used the macro).
    let mut b = own_bytes();
    b.extend(own_bytes());
    assert_eq!(
        Formats::parse(&b),
        Err(FormatsError::TrailingBytes {
            size: 208,
            len: 416
        })
    );
    let (first, rest) = Formats::parse_prefix(&b).unwrap();
    assert_eq!(first, FORMATS);
    assert_eq!(Formats::parse(rest), Ok(FORMATS));
}

#[test]
fn a_count_beyond_the_entry_array_is_refused() {
    for count in [9, 1000, u32::MAX] {
        let e = parse_edited(|b| put_u32(b, COUNT, count)).unwrap_err();
        assert_eq!(e, FormatsError::TooManyEntries { count, max: 8 });
        assert_eq!((e.field(), e.entry()), (Some("count"), None));
    }
}

#[test]
fn a_used_entry_with_version_0_is_refused_naming_the_entry() {
    let e = parse_edited(|b| put_u32(b, entry(1, 0), 0)).unwrap_err();
    assert_eq!(e, FormatsError::ZeroVersion { entry: 1 });
    assert_eq!((e.field(), e.entry()), (Some("version"), Some(1)));
    assert_eq!(e.to_string(), "formats descriptor: entries[1].version: 0");
    // A count over the zeroed entries reaches them as used: version 0.
    let e = parse_edited(|b| put_u32(b, COUNT, 3)).unwrap_err();
    assert_eq!(e, FormatsError::ZeroVersion { entry: 2 });
}

#[test]
fn a_duplicate_version_is_refused_naming_both_entries() {
    let e = parse_edited(|b| put_u32(b, entry(1, 0), 1)).unwrap_err();
    assert_eq!(
        e,
        FormatsError::DuplicateVersion {
            entry: 1,
            first: 0,
            version: 1
        }
    );
    assert_eq!(
        e.to_string(),
        "formats descriptor: entries[1].version: version 1 again (entries[0])"
    );
    // Also when the duplicate is not adjacent.
    let e = parse_edited(|b| {
        put_u32(b, COUNT, 4);
        put_u32(b, entry(2, 0), 7);
        put_u32(b, entry(3, 0), 2);
    })
    .unwrap_err();
    assert_eq!(
        e,
        FormatsError::DuplicateVersion {
            entry: 3,
            first: 1,
            version: 2
        }
    );
}

#[test]
fn unknown_entry_flags_are_refused() {
    for bits in [1 << 2, 1 << 31] {
        let e = parse_edited(|b| put_u32(b, entry(0, 4), 3 | bits)).unwrap_err();
        assert_eq!(e, FormatsError::UnknownFlags { entry: 0, bits });
        assert_eq!(
            (e.field(), e.entry(), e.errno()),
            (Some("flags"), Some(0), -95)
        );
    }
}

#[test]
fn a_nonzero_unused_entry_is_refused() {
    for (i, field) in [(2, 0), (2, 8), (7, 16), (7, 23)] {
        let e = parse_edited(|b| b[entry(i, field)] = 1).unwrap_err();
        assert_eq!(e, FormatsError::UnusedEntryNotZero { entry: i });
        assert_eq!((e.field(), e.entry()), (None, Some(i)));
    }
    // A count that leaves a written entry unused.
    let e = parse_edited(|b| put_u32(b, COUNT, 1)).unwrap_err();
    assert_eq!(e, FormatsError::UnusedEntryNotZero { entry: 1 });
}

#[test]
fn every_bit_flip_is_refused_or_parses_to_another_descriptor() {
    let b = own_bytes();
    for at in 0..b.len() {
        for bit in 0..8 {
            let mut m = b.clone();
            m[at] ^= 1 << bit;
            if let Ok(f) = Formats::parse(&m) {
                assert_ne!(f, FORMATS, "byte {at} bit {bit} flipped went unnoticed");
            }
        }
    }
}

#[test]
fn from_ser_checks_the_struct_but_not_bytes_past_it() {
    let mut ser = FORMATS.to_ser();
    ser.size.set(4096);
    assert_eq!(Formats::from_ser(&ser), Ok(FORMATS));
    ser.size.set(200);
    assert_eq!(
        Formats::from_ser(&ser),
        Err(FormatsError::SizeTooSmall { size: 200 })
    );
    let mut ser = FORMATS.to_ser();
    ser.entries[5].flags.set(1);
    assert_eq!(
        Formats::from_ser(&ser),
        Err(FormatsError::UnusedEntryNotZero { entry: 5 })
    );
}

#[test]
fn new_refuses_what_parse_refuses() {
    assert_eq!(
        Formats::new(&[rw(1); 9]),
        Err(FormatsError::TooManyEntries { count: 9, max: 8 })
    );
    assert_eq!(
        Formats::new(&[rw(1), rw(0)]),
        Err(FormatsError::ZeroVersion { entry: 1 })
    );
    assert_eq!(
        Formats::new(&[rw(3), rw(1), rw(3)]),
        Err(FormatsError::DuplicateVersion {
            entry: 2,
            first: 0,
            version: 3
        })
    );
    let eight: Vec<_> = (1..=8).map(rw).collect();
    let f = formats(&eight);
    assert_eq!(Formats::parse(f.to_ser().as_bytes()), Ok(f));
    assert_eq!(Formats::new(&[]).unwrap().entries(), []);
}

/// A later kernel's descriptor: versions 1 to 3, with 48 bytes of fields
/// this crate does not know after the entries.
fn future_bytes() -> Vec<u8> {
    let v3 = FormatSupport {
        version: 3,
        read: true,
        write: true,
        compat: 0b11,
        incompat: 0b1,
    };
    let f = formats(&[rw(1), rw(2), v3]);
    let mut b = f.to_ser().as_bytes().to_vec();
    b.extend((0..48).map(|i| 0xa0 | i as u8));
    put_u32(&mut b, SIZE, 256);
    b
}

#[test]
fn a_later_descriptor_with_more_bytes_is_read_by_its_known_fields() {
    let b = future_bytes();
    let f = Formats::parse(&b).expect("a larger size is allowed");
    assert_eq!(f.reads().as_slice(), [1, 2, 3]);
    assert_eq!(f.get(3).unwrap().incompat, 1);
    // Without the extra bytes the size is beyond the data.
    assert_eq!(
        Formats::parse(&b[..208]),
        Err(FormatsError::SizeBeyondData {
            size: 256,
            len: 208
        })
    );
}

// ---- negotiation ----

#[test]
fn a_kernel_reading_only_version_1_gets_version_1_either_way() {
    let old = formats(&[rw(1)]);
    let want = Negotiated {
        version: 1,
        compat: 0,
        incompat: 0,
    };
    assert_eq!(negotiate(&FORMATS, &old), Ok(want));
    assert_eq!(negotiate(&old, &FORMATS), Ok(want));
}

#[test]
fn two_kernels_of_this_library_agree_on_version_2() {
    assert_eq!(negotiate(&FORMATS, &FORMATS).unwrap().version, 2);
    // Entry order does not matter.
    let reversed = formats(&[FORMATS.entries()[1], FORMATS.entries()[0]]);
    assert_eq!(negotiate(&reversed, &FORMATS).unwrap().version, 2);
    assert_eq!(negotiate(&FORMATS, &reversed).unwrap().version, 2);
}

#[test]
fn disjoint_kernels_are_refused_with_both_lists() {
    let other = formats(&[rw(3), rw(4)]);
    let e = negotiate(&FORMATS, &other).unwrap_err();
    assert_eq!(e.errno(), -93);
    let NegotiateError::NoCommonVersion { writes, reads } = e else {
        panic!("{e:?}");
    };
    assert_eq!(
        (writes.as_slice(), reads.as_slice()),
        (&[1, 2][..], &[3, 4][..])
    );
    assert_eq!(
        e.to_string(),
        "no common format version: this kernel writes 1, 2, the next reads 3, 4"
    );
    let empty = formats(&[]);
    assert!(matches!(
        negotiate(&FORMATS, &empty),
        Err(NegotiateError::NoCommonVersion { .. })
    ));
}

#[test]
fn a_later_kernel_with_version_3_and_extra_bytes_gets_version_2() {
    let future = Formats::parse(&future_bytes()).unwrap();
    assert_eq!(negotiate(&FORMATS, &future).unwrap().version, 2);
    // And rolling back from it to this library: also version 2.
    assert_eq!(negotiate(&future, &FORMATS).unwrap().version, 2);
    // Between two later kernels: version 3, with the bits both know.
    assert_eq!(
        negotiate(&future, &future),
        Ok(Negotiated {
            version: 3,
            compat: 0b11,
            incompat: 0b1
        })
    );
}

#[test]
fn the_writer_needs_write_and_the_next_kernel_read() {
    // The next kernel names version 2 but only writes it: version 1.
    let theirs = formats(&[rw(1), support(2, false, true)]);
    assert_eq!(negotiate(&FORMATS, &theirs).unwrap().version, 1);
    // This kernel reads version 2 but does not write it: version 1.
    let ours = formats(&[rw(1), support(2, true, false)]);
    assert_eq!(negotiate(&ours, &FORMATS).unwrap().version, 1);
    // Only read on both sides: nothing in common.
    let read_only = formats(&[support(1, true, false)]);
    assert_eq!(
        negotiate(&read_only, &read_only).unwrap_err().to_string(),
        "no common format version: this kernel writes none, the next reads 1"
    );
}

#[test]
fn feature_bits_are_those_both_kernels_know() {
    let ours = FormatSupport {
        version: 2,
        read: true,
        write: true,
        compat: 0b1100,
        incompat: 0b1010,
    };
    let theirs = FormatSupport {
        compat: 0b0110,
        incompat: 0b0011,
        ..ours
    };
    let got = negotiate(&formats(&[ours]), &formats(&[theirs])).unwrap();
    assert_eq!((got.compat, got.incompat), (0b0100, 0b0010));
    // The bits of the agreed version, not another entry's.
    let ours_v1 = FormatSupport {
        version: 1,
        incompat: 0b1111,
        ..ours
    };
    let got = negotiate(&formats(&[ours_v1, ours]), &formats(&[theirs])).unwrap();
    assert_eq!((got.version, got.incompat), (2, 0b0010));
}

// ---- accepts ----

#[test]
fn accepts_reads_an_image_by_its_version_or_the_newest_allowed_one() {
    assert_eq!(FORMATS.accepts(1, 0, 0), Ok(1));
    assert_eq!(FORMATS.accepts(2, 2, 0), Ok(2));
    assert_eq!(FORMATS.accepts(3, 2, 0), Ok(2));
    assert_eq!(FORMATS.accepts(1000, 2, 0), Ok(2));
    let later = formats(&[rw(2), rw(3)]);
    assert_eq!(later.accepts(3, 2, 0), Ok(3));
    assert_eq!(later.accepts(4, 2, 0), Ok(3));
    assert_eq!(later.accepts(4, 3, 0), Ok(3));
    assert_eq!(later.accepts(2, 2, 0), Ok(2));
}

#[test]
fn accepts_refuses_with_the_precise_reason() {
    let not = |version, last_compatible, reads: &Formats| NegotiateError::NotReadable {
        version,
        last_compatible,
        reads: reads.reads(),
    };
    assert_eq!(FORMATS.accepts(3, 3, 0), Err(not(3, 3, &FORMATS)));
    assert_eq!(FORMATS.accepts(0, 0, 0), Err(not(0, 0, &FORMATS)));
    assert_eq!(
        FORMATS.accepts(3, 3, 0).unwrap_err().to_string(),
        "version 3 (last_compatible_version 3) is not readable by a kernel that reads 1, 2"
    );
    let v1_only = formats(&[rw(1)]);
    assert_eq!(v1_only.accepts(2, 2, 0), Err(not(2, 2, &v1_only)));
    let v2_only = formats(&[rw(2)]);
    assert_eq!(v2_only.accepts(1, 0, 0), Err(not(1, 0, &v2_only)));
    assert_eq!(
        v2_only.accepts(1, 0, 0).unwrap_err().to_string(),
        "version 1 is not readable by a kernel that reads 2"
    );
    // An entry that only writes does not read.
    let write_only = formats(&[support(2, false, true)]);
    assert_eq!(write_only.accepts(2, 2, 0), Err(not(2, 2, &write_only)));
    for (version, last_compatible) in [(2, 0), (2, 1), (2, 3), (3, 4)] {
        let e = FORMATS.accepts(version, last_compatible, 0).unwrap_err();
        assert_eq!(
            e,
            NegotiateError::BadLastCompatible {
                version,
                last_compatible
            }
        );
        assert_eq!(e.errno(), -93);
    }
    let e = FORMATS.accepts(2, 2, 1 << 40).unwrap_err();
    assert_eq!(
        e,
        NegotiateError::UnknownFeatures {
            version: 2,
            bits: 1 << 40
        }
    );
    assert_eq!(e.errno(), -95);
    assert_eq!(
        FORMATS.accepts(1, 0, 1),
        Err(NegotiateError::UnknownFeatures {
            version: 1,
            bits: 1
        })
    );
    // Bits the reading entry knows are fine.
    let knows = formats(&[FormatSupport {
        incompat: 0b110,
        ..rw(2)
    }]);
    assert_eq!(knows.accepts(3, 2, 0b100), Ok(2));
    assert_eq!(
        knows.accepts(3, 2, 0b1100),
        Err(NegotiateError::UnknownFeatures {
            version: 2,
            bits: 0b1000
        })
    );
}

/// For the library's own descriptor, `accepts` says what the reader says
/// of a version-2 root with each (version, last_compatible_version,
/// incompat_features).
#[test]
fn accepts_of_the_own_descriptor_agrees_with_the_reader() {
    let (mut n_read, mut n_refused) = (0, 0);
    let typical = Img::build(&Spec::typical(3));
    for version in [2u64, 3, 4] {
        for last in 0u32..=5 {
            for incompat in [0u64, 1 << 3] {
                let mut img = typical.clone();
                img.put_u64(0, version);
                img.put_u32(16, last);
                img.put_u64(40, incompat);
                img.seal();
                let mem = img.mem();
                let mut scratch = vec![ScratchElem::default(); 64];
                let read = reader::validate(&mem, img.root, &Options::default(), &mut scratch);
                let accepted = FORMATS.accepts(version, last, incompat);
                match (&read, accepted) {
                    (Ok(image), Ok(v)) => {
                        assert_eq!(image.format(), u64::from(v));
                        assert_eq!(FORMATS.accepts_image(image), Ok(v));
                        n_read += 1;
                    }
                    (Err(_), Err(_)) => n_refused += 1,
                    _ => panic!(
                        "version {version} last {last} incompat {incompat:#x}: \
                         reader {read:?}, accepts {accepted:?}",
                        read = read.map(|i| i.format())
                    ),
                }
            }
        }
    }
    // Version 2, 3 and 4 with last_compatible_version 2 and no unknown
    // bit are read; the other 33 combinations are refused.
    assert_eq!((n_read, n_refused), (3, 33));
}

#[test]
fn accepts_image_of_written_images_names_their_version() {
    for config in [Config::v1(), Config::v2(9)] {
        let w = Writer::with_config(MapAlloc::sequential(PhysAddr::new(0x10_0000)), config)
            .expect("start");
        let (root, alloc) = w.finish();
        let opts = Options::default();
        let n = reader::scratch_len(alloc.map(), root, &opts).unwrap();
        let mut scratch = vec![ScratchElem::default(); n];
        let image = reader::validate(alloc.map(), root, &opts, &mut scratch).unwrap();
        let v = u32::try_from(config.version).unwrap();
        assert_eq!(FORMATS.accepts_image(&image), Ok(v));
        let other = formats(&[rw(3 - v)]);
        assert!(matches!(
            other.accepts_image(&image),
            Err(NegotiateError::NotReadable { .. })
        ));
    }
}

// ---- the writer started from a negotiation ----

#[test]
fn the_writer_writes_the_negotiated_version() {
    let start = |agreed: &Negotiated| {
        let pages = MapAlloc::sequential(PhysAddr::new(0x10_0000));
        Writer::with_config(pages, Config::negotiated(agreed, 0x77))
    };
    let rollback = negotiate(&FORMATS, &formats(&[rw(1)])).unwrap();
    let w = start(&rollback).unwrap();
    assert_eq!(w.version(), 1);
    let upgrade = negotiate(&FORMATS, &FORMATS).unwrap();
    let w = start(&upgrade).unwrap();
    assert_eq!(w.version(), 2);
    let (root, alloc) = w.finish();
    let opts = Options::default();
    let mut scratch = vec![ScratchElem::default(); 64];
    let image = reader::validate(alloc.map(), root, &opts, &mut scratch).unwrap();
    assert_eq!(image.generation(), Some(0x77));
    // A version this writer does not write, agreed between other kernels.
    let future = Formats::parse(&future_bytes()).unwrap();
    let v3 = negotiate(&future, &future).unwrap();
    assert_eq!(
        start(&v3).err(),
        Some(WriteError::BadConfig { field: "version" })
    );
}

#[test]
fn entries_are_checked_in_order_each_version_before_its_flags() {
    // Entry 0's flags are refused before entry 1's version.
    let e = parse_edited(|b| {
        put_u32(b, entry(0, 4), 1 << 9);
        put_u32(b, entry(1, 0), 0);
    })
    .unwrap_err();
    assert_eq!(
        e,
        FormatsError::UnknownFlags {
            entry: 0,
            bits: 1 << 9
        }
    );
    // Within one entry, its version comes first.
    let e = parse_edited(|b| {
        put_u32(b, entry(1, 0), 1);
        put_u32(b, entry(1, 4), 1 << 9);
    })
    .unwrap_err();
    assert!(
        matches!(e, FormatsError::DuplicateVersion { entry: 1, .. }),
        "{e:?}"
    );
}

#[test]
fn a_kernel_without_a_descriptor_reads_and_writes_version_1_only() {
    use iommu_flb_abi::formats::WITHOUT_DESCRIPTOR;
    assert_eq!(WITHOUT_DESCRIPTOR.reads().as_slice(), &[1]);
    assert_eq!(WITHOUT_DESCRIPTOR.writes().as_slice(), &[1]);
    assert_eq!(
        Formats::parse(&WITHOUT_DESCRIPTOR.to_bytes()),
        Ok(WITHOUT_DESCRIPTOR)
    );
    assert_eq!(
        negotiate(&FORMATS, &WITHOUT_DESCRIPTOR).map(|n| n.version),
        Ok(1)
    );
    assert!(WITHOUT_DESCRIPTOR.accepts(2, 2, 0).is_err());
}
