//! kdump-compressed dumps and makedumpfile's flattened format: read page by
//! page, each compression decompressed by its crate; excluded pages and
//! pages not in the dump unreadable; every malformed header, bitmap,
//! descriptor, offset and payload a typed error naming its file offset.
//! The older DISKDUMP format and ELF files that are not cores are refused
//! by name; `--format phys` still reads any of them as flat bytes.
//!
//! The files are built in `common/kdump.rs` at the offsets of
//! makedumpfile's `struct disk_dump_header` (`diskdump_mod.h`) and QEMU's
//! `DiskDumpHeader32/64` (`include/sysemu/dump.h`).

use std::collections::BTreeMap;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use iommu_flb_cli::elfcore::write_core;
use iommu_flb_cli::load::diskdump::{DescriptorProblem, KdumpError, KdumpProblem};
use iommu_flb_cli::load::flattened::{FlattenedError, FlattenedProblem};
use iommu_flb_cli::load::kdump::{
    DiskdumpHeader, DiskdumpKind, FlattenedHeader, Recognised, recognise,
};
use iommu_flb_cli::load::{Container, Dump, Format, LoadError, LoadOptions, load};

mod common;
use common::kdump::{Built, Comp, Page, Spec, build, flatten};
use common::{AUTO, ELF, le, load_seg};

const PHYS: LoadOptions = LoadOptions {
    format: Format::Phys,
    base: None,
};

fn opts(format: Format) -> LoadOptions {
    LoadOptions { format, base: None }
}

/// A page whose bytes say which page frame it is, compressible.
fn data(pfn: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (pfn as usize * 31 + i / 64 + (i % 3)) as u8)
        .collect()
}

/// Pages 1, 2, 5 and 9 have data; 3 is excluded; 4 has a zero descriptor;
/// 0, 6, 7, 8 are in neither bitmap.
fn sample(bs: usize) -> BTreeMap<u64, Page> {
    let mut pages = BTreeMap::new();
    for pfn in [1, 2, 5, 9] {
        pages.insert(pfn, Page::Data(data(pfn, bs)));
    }
    pages.insert(3, Page::Excluded);
    pages.insert(4, Page::ZeroDescriptor);
    pages
}

fn comps() -> Vec<Comp> {
    let mut v = vec![Comp::Raw, Comp::Zlib, Comp::Snappy, Comp::Zstd];
    if cfg!(feature = "lzo") {
        v.push(Comp::Lzo);
    }
    v
}

fn page(dump: &impl Memory, phys: u64, size: PageSize) -> Option<Vec<u8>> {
    dump.page(PhysAddr::new(phys), size).map(<[u8]>::to_vec)
}

/// Every page of `sample` reads as it should from `dump` (4 KiB blocks).
#[track_caller]
fn check_sample<S: iommu_flb_cli::source::Source>(dump: &Dump<S>, what: &str) {
    let k4 = PageSize::Size4K;
    for pfn in [1u64, 2, 5, 9] {
        assert_eq!(
            page(dump, pfn * 4096, k4),
            Some(data(pfn, 4096)),
            "{what}: pfn {pfn}"
        );
    }
    for pfn in [0u64, 3, 4, 6, 7, 8, 10, 11, 1 << 40] {
        assert_eq!(page(dump, pfn * 4096, k4), None, "{what}: pfn {pfn}");
    }
    assert_eq!(dump.page_error(), None, "{what}");
    assert_eq!(dump.root_note(), Ok(None));
}

#[test]
fn each_compression_reads_its_pages_and_nothing_else() {
    for comp in comps() {
        let file = build(&Spec::x86_64(comp, 12), &sample(4096));
        if comp != Comp::Raw {
            let flag = comp.flag().to_le_bytes();
            let desc = file.desc[&1];
            assert_eq!(
                &file.bytes[desc + 12..desc + 16],
                flag,
                "{comp:?} compresses"
            );
        }
        let dump = load(&file.bytes[..], AUTO).unwrap();
        assert_eq!(dump.container(), Container::Kdump);
        assert!(!dump.is_elf());
        check_sample(&dump, &format!("{comp:?}"));
        let dump = load(&file.bytes[..], opts(Format::Kdump)).unwrap();
        check_sample(&dump, &format!("{comp:?}, --format kdump"));
    }
}

#[test]
fn big_endian_and_32_bit_headers_are_read_in_their_layout() {
    for (big_endian, bits64) in [(true, true), (false, false), (true, false)] {
        let spec = Spec {
            big_endian,
            bits64,
            ..Spec::x86_64(Comp::Zlib, 12)
        };
        let file = build(&spec, &sample(4096));
        let dump = load(&file.bytes[..], AUTO).unwrap();
        check_sample(&dump, &format!("big {big_endian}, 64-bit {bits64}"));
    }
}

#[test]
fn header_versions_before_6_take_max_mapnr_from_the_header() {
    let mut spec = Spec::x86_64(Comp::Snappy, 12);
    spec.header_version = 5;
    let mut file = build(&spec, &sample(4096));
    // max_mapnr_64 in the sub-header is not read: make it nonsense.
    file.bytes[4096 + 96..4096 + 104].copy_from_slice(&[0xff; 8]);
    check_sample(&load(&file.bytes[..], AUTO).unwrap(), "version 5");
}

#[test]
fn pages_larger_and_smaller_than_a_block_are_put_together_or_cut_out() {
    // 16 KiB pages from 4 KiB blocks: whole only if all four are dumped.
    let mut pages = BTreeMap::new();
    for pfn in 4..8 {
        pages.insert(pfn, Page::Data(data(pfn, 4096)));
    }
    pages.insert(9, Page::Data(data(9, 4096)));
    let file = build(&Spec::x86_64(Comp::Zlib, 16), &pages);
    let dump = load(&file.bytes[..], AUTO).unwrap();
    let want: Vec<u8> = (4..8).flat_map(|p| data(p, 4096)).collect();
    assert_eq!(page(&dump, 0x4000, PageSize::Size16K), Some(want));
    assert_eq!(
        page(&dump, 0x8000, PageSize::Size16K),
        None,
        "pfn 8 missing"
    );

    // 4 KiB pages out of 64 KiB blocks.
    let spec = Spec {
        block_size: 65536,
        ..Spec::x86_64(Comp::Zstd, 4)
    };
    let mut pages = BTreeMap::new();
    pages.insert(1, Page::Data(data(1, 65536)));
    let file = build(&spec, &pages);
    let dump = load(&file.bytes[..], AUTO).unwrap();
    let block = data(1, 65536);
    for i in 0..16u64 {
        let at = 65536 + i * 4096;
        let want = block[i as usize * 4096..][..4096].to_vec();
        assert_eq!(page(&dump, at, PageSize::Size4K), Some(want), "part {i}");
    }
    assert_eq!(page(&dump, 0, PageSize::Size4K), None);
    assert_eq!(
        page(&dump, 65536, PageSize::Size64K),
        Some(block),
        "the whole block"
    );
}

#[test]
fn many_pages_are_found_past_the_running_counts() {
    // Enough page frames that the 2nd bitmap has several running counts
    // (one per 1 KiB of bitmap: 8192 page frames), and pages on both sides
    // of their edges.
    let mut pages = BTreeMap::new();
    let pfns: Vec<u64> = (0..40_000u64)
        .filter(|p| p % 7 == 0 || p % 8191 < 3)
        .collect();
    for &pfn in &pfns {
        pages.insert(pfn, Page::Data(data(pfn, 4096)));
    }
    let file = build(&Spec::x86_64(Comp::Snappy, 40_000), &pages);
    let dump = load(&file.bytes[..], AUTO).unwrap();
    for pfn in [
        0u64, 7, 8190, 8191, 8192, 8193, 16_383, 16_384, 24_577, 39_998,
    ] {
        let want = pages.contains_key(&pfn).then(|| data(pfn, 4096));
        assert_eq!(page(&dump, pfn * 4096, PageSize::Size4K), want, "pfn {pfn}");
    }
    assert_eq!(dump.page_error(), None);
}

fn load_err(bytes: &[u8]) -> LoadError {
    load(bytes, AUTO).expect_err("the file should be refused")
}

fn kdump_err(bytes: &[u8]) -> KdumpError {
    match load_err(bytes) {
        LoadError::Kdump(e) => e,
        other => panic!("expected a kdump error, got {other:?}"),
    }
}

/// The error reading page frame `pfn` of `bytes` keeps.
fn page_err(bytes: &[u8], pfn: u64) -> KdumpError {
    let dump = load(bytes, AUTO).unwrap();
    assert_eq!(page(&dump, pfn * 4096, PageSize::Size4K), None);
    match dump.page_error() {
        Some(LoadError::Kdump(e)) => e,
        other => panic!("expected a kdump page error, got {other:?}"),
    }
}

#[test]
fn garbage_descriptors_are_typed_errors_naming_the_descriptor() {
    let base = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let desc = base.desc[&2];
    let mangle = |f: &dyn Fn(&mut Built)| {
        let mut b = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
        f(&mut b);
        b.bytes
    };
    type Mangle<'a> = &'a dyn Fn(&mut Built);
    let cases: [(Mangle, DescriptorProblem); 5] = [
        (
            &|b| b.bytes[desc + 8..desc + 12].copy_from_slice(&0u32.to_le_bytes()),
            DescriptorProblem::Size {
                size: 0,
                block_size: 4096,
                compressed: true,
            },
        ),
        (
            &|b| b.bytes[desc + 8..desc + 12].copy_from_slice(&4097u32.to_le_bytes()),
            DescriptorProblem::Size {
                size: 4097,
                block_size: 4096,
                compressed: true,
            },
        ),
        (
            &|b| b.bytes[desc + 12..desc + 16].copy_from_slice(&0x40u32.to_le_bytes()),
            DescriptorProblem::UnknownFlags { flags: 0x40 },
        ),
        (
            &|b| b.bytes[desc + 12..desc + 16].copy_from_slice(&0x5u32.to_le_bytes()),
            DescriptorProblem::TwoCompressions { flags: 0x5 },
        ),
        (
            // A raw page must be one whole block.
            &|b| b.bytes[desc + 12..desc + 16].copy_from_slice(&0u32.to_le_bytes()),
            DescriptorProblem::Size {
                size: u32::from_le_bytes(base.bytes[desc + 8..desc + 12].try_into().unwrap()),
                block_size: 4096,
                compressed: false,
            },
        ),
    ];
    for (f, what) in cases {
        let bytes = mangle(f);
        let e = page_err(&bytes, 2);
        assert_eq!(
            e,
            KdumpError {
                offset: desc as u64,
                problem: KdumpProblem::Descriptor { pfn: 2, what }
            }
        );
        assert!(
            e.to_string()
                .starts_with(&format!("malformed kdump-compressed dump: at file offset {desc:#x}: the page descriptor of page frame 0x2: ")),
            "{e}"
        );
        // The other pages still read.
        let dump = load(&bytes[..], AUTO).unwrap();
        assert_eq!(page(&dump, 0x1000, PageSize::Size4K), Some(data(1, 4096)));
    }
}

#[test]
fn data_past_the_end_of_the_file_is_a_typed_error() {
    let mut file = build(&Spec::x86_64(Comp::Zstd, 12), &sample(4096));
    let desc = file.desc[&9];
    let len = file.bytes.len() as u64;
    file.bytes[desc..desc + 8].copy_from_slice(&(len - 10).to_le_bytes());
    let size = u32::from_le_bytes(file.bytes[desc + 8..desc + 12].try_into().unwrap());
    assert_eq!(
        page_err(&file.bytes, 9).problem,
        KdumpProblem::Descriptor {
            pfn: 9,
            what: DescriptorProblem::PastEnd {
                offset: len - 10,
                size,
                file_size: len
            }
        }
    );
    // An offset that overflows when the size is added.
    file.bytes[desc..desc + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        page_err(&file.bytes, 9).problem,
        KdumpProblem::Descriptor {
            what: DescriptorProblem::PastEnd { .. },
            ..
        }
    ));
}

#[test]
fn a_corrupt_payload_is_a_typed_error_naming_its_offset() {
    for comp in comps().into_iter().filter(|&c| c != Comp::Raw) {
        let mut file = build(&Spec::x86_64(comp, 12), &sample(4096));
        let at = file.data[&5];
        // Cut its stream in half: what is left does not make a block.
        let desc = file.desc[&5];
        let size = u32::from_le_bytes(file.bytes[desc + 8..desc + 12].try_into().unwrap());
        file.bytes[desc + 8..desc + 12].copy_from_slice(&(size / 2).to_le_bytes());
        let e = page_err(&file.bytes, 5);
        assert_eq!(e.offset, at as u64, "{comp:?}");
        assert!(
            matches!(&e.problem, KdumpProblem::Payload { pfn: 5, .. }),
            "{comp:?}: {e:?}"
        );
        assert!(
            e.to_string().contains(&format!("at file offset {at:#x}")),
            "{e}"
        );
    }
}

#[test]
fn a_page_in_the_2nd_bitmap_but_not_the_1st_is_a_typed_error() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    file.bytes[file.bitmap1] &= !(1 << 2);
    assert_eq!(
        page_err(&file.bytes, 2),
        KdumpError {
            offset: file.bitmap1 as u64,
            problem: KdumpProblem::NotInFirstBitmap { pfn: 2 }
        }
    );
}

#[test]
fn a_truncated_bitmap_or_descriptor_table_is_refused_at_load() {
    let file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    // Cut inside the 2nd bitmap.
    let cut = file.bitmap2 + 100;
    let e = kdump_err(&file.bytes[..cut]);
    assert_eq!(
        e,
        KdumpError {
            offset: file.bitmap1 as u64,
            problem: KdumpProblem::Truncated {
                what: "pair of page bitmaps",
                len: 2 * file.bitmap_len as u64,
                file_size: cut as u64
            }
        }
    );
    assert!(
        e.to_string()
            .contains("at file offset 0x2000: the pair of page bitmaps"),
        "{e}"
    );
    // Cut inside the descriptor table.
    let descs = file.bitmap2 + file.bitmap_len;
    let e = kdump_err(&file.bytes[..descs + 30]);
    assert_eq!(e.offset, descs as u64);
    assert!(matches!(
        e.problem,
        KdumpProblem::Truncated {
            what: "page descriptor table",
            len: 120,
            ..
        }
    ));
    // Cut inside the header.
    let e = kdump_err(&file.bytes[..300]);
    assert!(
        matches!(
            e.problem,
            KdumpProblem::Truncated {
                what: "disk_dump_header",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn bitmaps_smaller_than_max_mapnr_are_refused() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    // max_mapnr_64: 2^20 page frames, but each bitmap has 4096 * 8 bits.
    file.bytes[4096 + 96..4096 + 104].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_eq!(
        kdump_err(&file.bytes).problem,
        KdumpProblem::BitmapTooSmall {
            bits: 4096 * 8,
            max_mapnr: 1 << 20
        }
    );
}

#[test]
fn header_fields_out_of_range_are_typed_errors() {
    let file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let with = |at: usize, v: u32| {
        let mut b = file.bytes.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        kdump_err(&b)
    };
    let e = with(436, 3);
    assert_eq!(e.offset, 436);
    assert!(
        matches!(
            e.problem,
            KdumpProblem::Field {
                field: "bitmap_blocks",
                value: 3,
                ..
            }
        ),
        "{e:?}"
    );
    let e = with(432, 0);
    assert!(matches!(
        e.problem,
        KdumpProblem::Field {
            field: "sub_hdr_size",
            ..
        }
    ));
    // A huge sub-header puts the bitmaps past the end of the file.
    let e = with(432, u32::MAX);
    assert!(matches!(e.problem, KdumpProblem::Truncated { .. }), "{e:?}");
}

#[test]
fn wrong_byte_order_is_refused_not_misread() {
    // A big-endian header_version with little-endian fields: the fields
    // read as nonsense (block_size 4096 reads as 1 MiB, sub_hdr_size 1 as
    // 2^24 blocks), and the file is refused on its structure, naming the
    // offset, never as a compression or a flat dump.
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    file.bytes[8..12].copy_from_slice(&6u32.to_be_bytes());
    let e = kdump_err(&file.bytes);
    assert_eq!(
        e,
        KdumpError {
            offset: 1 << 20,
            problem: KdumpProblem::Truncated {
                what: "kdump sub-header",
                len: 1 << 20,
                file_size: file.bytes.len() as u64
            }
        }
    );
    assert!(e.to_string().contains("at file offset 0x100000"), "{e}");
    // A version plausible in neither order.
    file.bytes[8..12].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    assert_eq!(kdump_err(&file.bytes).problem, KdumpProblem::UnknownLayout);
}

#[test]
fn an_unknown_compression_is_named_and_refused_never_read_flat() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    file.bytes[424..428].copy_from_slice(&0x41u32.to_le_bytes());
    let e = load_err(&file.bytes);
    assert_eq!(
        e,
        LoadError::Kdump(KdumpError {
            offset: 424,
            problem: KdumpProblem::UnknownCompression { status: 0x41 }
        })
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("kdump-compressed with an unknown compression (status 0x41 at file offset 0x1a8 has bits 0x40"),
        "{msg}"
    );
    assert!(load(&file.bytes[..], opts(Format::Kdump)).is_err());
    // Only --format phys reads it, as flat bytes.
    let dump = load(&file.bytes[..], PHYS).unwrap();
    assert_eq!(dump.container(), Container::Flat);
}

#[cfg(not(feature = "lzo"))]
#[test]
fn an_lzo_dump_without_the_lzo_feature_says_how_to_read_it() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    file.bytes[424..428].copy_from_slice(&0x2u32.to_le_bytes());
    let msg = load_err(&file.bytes).to_string();
    assert!(msg.starts_with("kdump-compressed with lzo"), "{msg}");
    assert!(msg.contains("--features lzo"), "{msg}");
}

// --- makedumpfile's flattened format ----------------------------------------

#[test]
fn a_flattened_kdump_file_reads_the_same_pages() {
    for comp in comps() {
        let file = build(&Spec::x86_64(comp, 12), &sample(4096));
        for piece in [1000, 4096, 1 << 20] {
            let flat = flatten(&file.bytes, piece);
            for format in [Format::Auto, Format::Flattened] {
                let dump = load(&flat[..], opts(format)).unwrap();
                assert_eq!(dump.container(), Container::FlattenedKdump);
                check_sample(&dump, &format!("{comp:?} flattened in {piece}-byte pieces"));
            }
        }
    }
}

#[test]
fn a_flattened_elf_core_reads_like_the_core_with_its_root_note() {
    let p: Vec<u8> = data(3, 4096);
    let core = write_core([(PhysAddr::new(0x5000), &p[..])], PhysAddr::new(0x5000)).unwrap();
    let flat = flatten(&core, 700);
    let dump = load(&flat[..], AUTO).unwrap();
    assert_eq!(dump.container(), Container::FlattenedElf);
    assert!(dump.is_elf());
    assert_eq!(page(&dump, 0x5000, PageSize::Size4K), Some(p));
    assert_eq!(page(&dump, 0x6000, PageSize::Size4K), None);
    assert_eq!(dump.root_note(), Ok(Some(PhysAddr::new(0x5000))));
}

#[test]
fn errors_inside_a_flattened_file_say_so() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let desc = file.desc[&2];
    file.bytes[desc + 12..desc + 16].copy_from_slice(&0x40u32.to_le_bytes());
    let flat = flatten(&file.bytes, 4096);
    let dump = load(&flat[..], AUTO).unwrap();
    assert_eq!(page(&dump, 0x2000, PageSize::Size4K), None);
    let e = dump.page_error().unwrap();
    assert!(
        matches!(&e, LoadError::Reassembled(inner) if matches!(**inner, LoadError::Kdump(KdumpError { offset, .. }) if offset == desc as u64)),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("in what the makedumpfile flattened file reassembles to"),
        "{e}"
    );

    // What is not kdump-compressed or ELF is named.
    let flat = flatten(&[7u8; 5000], 4096);
    let e = load_err(&flat);
    assert!(
        e.to_string().contains("neither kdump-compressed nor ELF"),
        "{e}"
    );

    // The flattened file's own structure.
    let mut flat = flatten(&file.bytes, 4096);
    flat.truncate(flat.len() - 16);
    assert_eq!(
        load_err(&flat),
        LoadError::Flattened(FlattenedError {
            offset: flat.len() as u64,
            problem: FlattenedProblem::Truncated {
                what: "a data header, before the end marker"
            }
        })
    );
}

// --- recognising, refusing, and --format ------------------------------------

#[test]
fn the_recogniser_names_version_block_size_and_compression() {
    let file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let Some(Recognised::Diskdump(h)) = recognise(&file.bytes[..]) else {
        panic!("recognised")
    };
    assert_eq!(
        h,
        DiskdumpHeader {
            kind: DiskdumpKind::Kdump,
            header_version: Some(6),
            block_size: Some(4096),
            status: Some(0x1),
        }
    );
    assert_eq!(
        h.to_string(),
        "kdump-compressed dump (makedumpfile header version 6, block size 4096, zlib)"
    );
    let flat = flatten(&file.bytes, 4096);
    assert_eq!(
        recognise(&flat[..]),
        Some(Recognised::Flattened(FlattenedHeader {
            flat_type: Some(1),
            version: Some(1)
        }))
    );
    // A header cut short is still recognised, its fields unknown.
    assert!(matches!(
        recognise(&file.bytes[..8]),
        Some(Recognised::Diskdump(DiskdumpHeader {
            header_version: None,
            ..
        }))
    ));
}

#[test]
fn older_diskdump_signature_is_refused_with_advice() {
    let mut file = build(&Spec::x86_64(Comp::Raw, 12), &sample(4096));
    file.bytes[..8].copy_from_slice(b"DISKDUMP");
    for format in [Format::Auto, Format::Elf, Format::Kdump, Format::Flattened] {
        let e = load(&file.bytes[..], opts(format)).unwrap_err();
        assert!(matches!(e, LoadError::Unsupported(_)), "{format:?}: {e:?}");
        assert!(
            e.to_string().starts_with(
                "diskdump dump (DISKDUMP signature) (makedumpfile header version 6, block \
                 size 4096); this tool cannot read diskdump dumps"
            ),
            "{e}"
        );
    }
}

#[test]
fn a_signature_that_differs_in_one_byte_is_a_flat_dump() {
    let mut file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    file.bytes[7] = 0;
    assert_eq!(
        load(&file.bytes[..], AUTO).unwrap().container(),
        Container::Flat
    );
    let mut flat = flatten(&file.bytes, 4096);
    flat[0] = b'M';
    assert_eq!(load(&flat[..], AUTO).unwrap().container(), Container::Flat);
}

#[test]
fn a_named_format_refuses_a_file_of_another_naming_both() {
    let file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let flat = flatten(&file.bytes, 4096);
    let core = write_core([(PhysAddr::new(0x5000), &[1u8; 4096][..])], PhysAddr::NULL).unwrap();
    for (bytes, format, found) in [
        (&file.bytes[..], Format::Elf, "a kdump-compressed dump"),
        (&flat[..], Format::Elf, "a makedumpfile flattened file"),
        (&core[..], Format::Kdump, "an ELF file"),
        (&flat[..], Format::Kdump, "a makedumpfile flattened file"),
        (
            &file.bytes[..],
            Format::Flattened,
            "a kdump-compressed dump",
        ),
        (
            &[0u8; 8192][..],
            Format::Kdump,
            "none of the dump formats the tool recognises",
        ),
    ] {
        let e = load(bytes, opts(format)).unwrap_err();
        assert_eq!(
            e,
            LoadError::WrongFormat {
                asked: format,
                found
            },
            "{format:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "--format {}: the file is {found}, not that; --format auto reads it",
                format.name()
            )
        );
    }
    assert!(load(&file.bytes[..], ELF).is_err());
    let base = LoadOptions {
        format: Format::Auto,
        base: Some(PhysAddr::new(0x1000)),
    };
    assert!(matches!(
        load(&file.bytes[..], base),
        Err(LoadError::BaseNotFlat { .. })
    ));
}

#[test]
fn format_phys_still_reads_kdump_and_flattened_files_as_flat_bytes() {
    let file = build(&Spec::x86_64(Comp::Zlib, 12), &sample(4096));
    let dump = load(&file.bytes[..], PHYS).expect("--format phys reads any file");
    assert_eq!(dump.container(), Container::Flat);
    let p = page(&dump, 0, PageSize::Size4K).expect("page 0");
    assert_eq!(&p[..8], b"KDUMP   ");
    let flat = flatten(&file.bytes, 4096);
    let dump = load(&flat[..], PHYS).expect("--format phys reads any file");
    let p = page(&dump, 0, PageSize::Size4K).expect("page 0");
    assert_eq!(&p[..12], b"makedumpfile");
}

#[test]
fn elf_file_that_is_not_a_core_is_refused_as_such_in_auto_and_read_flat_in_phys() {
    let bytes = le(2, &[load_seg(0x1000, 0, 0x1000, 0x1000)], &[7u8; 4096]);
    let e = load(&bytes[..], AUTO).expect_err("an executable is not a core");
    assert_eq!(e, LoadError::NotCore(2));
    assert_eq!(
        e.to_string(),
        "not an ELF core file: e_type is 2, expected 4 (ET_CORE)"
    );
    let dump = load(&bytes[..], PHYS).expect("--format phys reads any file");
    let p = page(&dump, 0, PageSize::Size4K).expect("page 0");
    assert_eq!(&p[..4], b"\x7fELF");
}

/// A slice that counts the positioned reads made of it.
struct CountingReads<'a> {
    bytes: &'a [u8],
    reads: std::cell::Cell<u64>,
}

impl iommu_flb_cli::source::Source for CountingReads<'_> {
    fn size(&self) -> std::io::Result<u64> {
        self.bytes.size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.reads.set(self.reads.get() + 1);
        self.bytes.read_exact_at(buf, offset)
    }
}

#[test]
fn scan_skips_a_whole_kdump_block_that_is_not_in_the_dump() {
    use iommu_flb_abi::reader::Options;
    use iommu_flb_cli::scan::scan;
    // 1 MiB blocks, 1024 page frames (1 GiB claimed), none dumped: 262,144
    // pages of 4 KiB, 1024 blocks.
    let spec = Spec {
        block_size: 1 << 20,
        ..Spec::x86_64(Comp::Zlib, 1024)
    };
    let built = build(&spec, &BTreeMap::new());
    let src = CountingReads {
        bytes: &built.bytes,
        reads: std::cell::Cell::new(0),
    };
    let mut dump = load(&src, AUTO).unwrap();
    let loaded = src.reads.get();
    let report = scan(&mut dump, &Options::default(), &mut |_, _| {});
    assert_eq!(report.pages, 0);
    assert_eq!(report.unreadable, 1024 * 256);
    // One bitmap read per block, not per 4 KiB page.
    let reads = src.reads.get() - loaded;
    assert!(reads <= 2 * 1024, "{reads} reads for 1024 blocks");
}
