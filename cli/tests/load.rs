//! Loading dump files: hand-made ELF64 core files and flat dumps, the core
//! files `gen` writes, and truncated, empty and malformed files.

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use iommu_flb_cli::elfcore::{NT_IOMMU_FLB_ROOT, write_core};
use iommu_flb_cli::load::{
    Format, LoadError, LoadOptions, MAX_PROGRAM_HEADERS, SegmentProblem, load,
};
use object::elf::{self, FileHeader64, NoteHeader64};
use object::{BigEndian, Endian, Endianness, LittleEndian, U32, bytes_of};
use proptest::prelude::*;

mod common;
use common::{AUTO, ELF, Ph, hand_made, le, load_seg};

/// Where hand-made files with few program headers put their payload.
const PAYLOAD: u64 = 0x1000;

/// A page whose every byte says which page it is.
/// The tool's page size.
const PAGE_SIZE: usize = 4096;

/// The 4 KiB page `dump` serves at `phys`, as an array.
fn page_of(dump: &impl Memory, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]> {
    dump.page(phys, PageSize::Size4K)
        .map(|p| p.try_into().expect("a 4 KiB page"))
}

fn page(tag: u8) -> [u8; PAGE_SIZE] {
    let mut p = [tag; PAGE_SIZE];
    p[0] = !tag;
    p
}

/// A note in byte order `e`, 4-byte aligned.
fn note<E: Endian>(e: E, name: &[u8], n_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut out = bytes_of(&NoteHeader64::<E> {
        n_namesz: U32::new(e, u32::try_from(name.len() + 1).unwrap()),
        n_descsz: U32::new(e, u32::try_from(desc.len()).unwrap()),
        n_type: U32::new(e, elf::NoteType(n_type)),
    })
    .to_vec();
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn note_seg(len: usize) -> Ph {
    Ph {
        p_type: elf::PT_NOTE,
        offset: PAYLOAD,
        paddr: 0,
        filesz: len as u64,
        memsz: 0,
        align: 4,
    }
}

fn err(bytes: &[u8], opts: LoadOptions) -> LoadError {
    load(bytes, opts).expect_err("the file should be refused")
}

// --- flat dumps -------------------------------------------------------------

#[test]
fn flat_dump_maps_file_offset_plus_base_to_physical_address() {
    let mut bytes = page(1).to_vec();
    bytes.extend_from_slice(&page(2));
    let opts = LoadOptions {
        format: Format::Phys,
        base: Some(PhysAddr::new(0x8000_0000)),
    };
    let dump = load(&bytes[..], opts).unwrap();
    assert!(!dump.is_elf());
    assert_eq!(page_of(&dump, PhysAddr::new(0x8000_1000)), Some(&page(2)));
    assert_eq!(
        page_of(&dump, PhysAddr::new(0x1000)),
        None,
        "below the base"
    );
    assert_eq!(dump.root_note(), Ok(None), "flat dumps carry no root");
}

#[test]
fn flat_dump_base_defaults_to_zero() {
    let mut bytes = page(1).to_vec();
    bytes.extend_from_slice(&page(2));
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x1000)), Some(&page(2)));
}

#[test]
fn flat_dump_with_a_partial_last_page_serves_only_whole_pages() {
    let bytes = vec![3u8; PAGE_SIZE + 10];
    let dump = load(&bytes[..], AUTO).unwrap();
    assert!(page_of(&dump, PhysAddr::new(0)).is_some());
    assert_eq!(page_of(&dump, PhysAddr::new(0x1000)), None);
}

#[test]
fn empty_file_is_refused_in_every_format() {
    for format in [Format::Auto, Format::Elf, Format::Phys] {
        let opts = LoadOptions { format, base: None };
        assert_eq!(err(&[], opts), LoadError::Empty, "{format:?}");
    }
}

/// A core file written by `gen`'s writer holding one page at 0x5000.
fn one_page_core() -> ([u8; PAGE_SIZE], Vec<u8>) {
    let p = page(7);
    let core = write_core([(PhysAddr::new(0x5000), &p)], PhysAddr::new(0x5000)).unwrap();
    (p, core)
}

// --- format detection -----------------------------------------------------

#[test]
fn auto_reads_a_file_with_the_elf_magic_as_elf() {
    let (p, core) = one_page_core();
    let dump = load(&core[..], AUTO).unwrap();
    assert!(dump.is_elf());
    assert_eq!(page_of(&dump, PhysAddr::new(0x5000)), Some(&p));
}

#[test]
fn format_phys_reads_even_an_elf_file_as_flat_bytes() {
    let (_, core) = one_page_core();
    let opts = LoadOptions {
        format: Format::Phys,
        base: None,
    };
    let dump = load(&core[..], opts).unwrap();
    assert!(!dump.is_elf());
    assert_eq!(
        page_of(&dump, PhysAddr::new(0)).map(|p| &p[..4]),
        Some(&core[..4])
    );
}

#[test]
fn format_elf_refuses_a_file_without_the_magic() {
    assert_eq!(
        err(&page(0), ELF),
        LoadError::NotElf64("the file does not start with the ELF magic")
    );
}

#[test]
fn base_is_refused_for_elf_files() {
    let (_, core) = one_page_core();
    let opts = LoadOptions {
        format: Format::Auto,
        base: Some(PhysAddr::new(0x1000)),
    };
    assert_eq!(err(&core, opts), LoadError::BaseWithElf);
}

// --- the core files gen writes ----------------------------------------------

#[test]
fn written_core_round_trips_scattered_pages_and_the_root_note() {
    let addrs = [
        0x20_3000u64,
        0x1000,
        0x20_2000,
        0x2000,
        0x7fff_f000,
        0x20_4000,
    ];
    let pages: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, &a)| (PhysAddr::new(a), page(u8::try_from(i).unwrap() + 1)))
        .collect();
    let root = PhysAddr::new(0x20_2000);
    let core = write_core(pages.iter().map(|(a, p)| (*a, p)), root).unwrap();
    let dump = load(&core[..], AUTO).unwrap();
    for (a, p) in &pages {
        assert_eq!(page_of(&dump, *a), Some(p), "page {a}");
    }
    for absent in [0u64, 0x3000, 0x20_1000, 0x20_5000, 0x8000_0000] {
        assert_eq!(page_of(&dump, PhysAddr::new(absent)), None, "{absent:#x}");
    }
    assert_eq!(dump.root_note(), Ok(Some(root)));

    // Three runs: 0x1000-0x3000, 0x202000-0x205000, 0x7ffff000.
    let header = FileHeader64::<Endianness>::parse(&*core).unwrap();
    let endian = header.endian().unwrap();
    let loads: Vec<(u64, u64)> = header
        .program_headers(endian, &*core)
        .unwrap()
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .map(|ph| (ph.p_paddr(endian), ph.p_memsz(endian)))
        .collect();
    assert_eq!(
        loads,
        [(0x1000, 0x2000), (0x20_2000, 0x3000), (0x7fff_f000, 0x1000)]
    );
    assert_eq!(header.e_type(endian), elf::ET_CORE);
}

use object::read::elf::{FileHeader as _, ProgramHeader as _};

#[test]
fn write_core_refuses_duplicate_and_unaligned_pages() {
    use iommu_flb_cli::elfcore::CoreError;
    let p = page(1);
    assert_eq!(
        write_core(
            [(PhysAddr::new(0x1000), &p), (PhysAddr::new(0x1000), &p)],
            PhysAddr::NULL
        ),
        Err(CoreError::Duplicate(PhysAddr::new(0x1000)))
    );
    assert_eq!(
        write_core([(PhysAddr::new(0x1008), &p)], PhysAddr::NULL),
        Err(CoreError::Unaligned(PhysAddr::new(0x1008)))
    );
}

#[test]
fn unaligned_page_request_is_unreadable() {
    let (_, core) = one_page_core();
    let dump = load(&core[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x5008)), None);
}

#[test]
fn core_truncated_inside_page_data_names_the_segment() {
    let (a, b) = (page(1), page(2));
    let core = write_core(
        [(PhysAddr::new(0x1000), &a), (PhysAddr::new(0x9000), &b)],
        PhysAddr::NULL,
    )
    .unwrap();
    let cut = &core[..core.len() - 1];
    // Program header 0 is the note; 2 is the PT_LOAD of the second run.
    assert_eq!(
        err(cut, AUTO),
        LoadError::Segment {
            index: 2,
            what: SegmentProblem::Truncated {
                offset: u64::try_from(core.len() - PAGE_SIZE).unwrap(),
                filesz: 0x1000,
                file_size: u64::try_from(cut.len()).unwrap(),
            },
        }
    );
}

#[test]
fn core_truncated_inside_the_program_headers_is_malformed() {
    let p = page(1);
    let core = write_core([(PhysAddr::new(0x1000), &p)], PhysAddr::NULL).unwrap();
    assert!(matches!(err(&core[..100], AUTO), LoadError::Malformed(_)));
}

#[test]
fn core_truncated_inside_the_file_header_is_malformed() {
    let p = page(1);
    let core = write_core([(PhysAddr::new(0x1000), &p)], PhysAddr::NULL).unwrap();
    for len in [4, 5, 20, 63] {
        assert!(
            matches!(err(&core[..len], AUTO), LoadError::Malformed(_)),
            "{len} bytes"
        );
    }
}

// --- hand-made core files ----------------------------------------------------

#[test]
fn big_endian_core_is_read_by_p_paddr() {
    let p = page(9);
    let bytes = hand_made(
        BigEndian,
        4,
        &[load_seg(PAYLOAD, 0x4000_0000, 0x1000, 0x1000)],
        &p,
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x4000_0000)), Some(&p));
}

#[test]
fn elf32_file_is_refused_as_not_elf64() {
    let mut bytes = le(4, &[load_seg(PAYLOAD, 0, 0x1000, 0x1000)], &page(1));
    bytes[4] = 1; // EI_CLASS = ELFCLASS32
    assert_eq!(
        err(&bytes, AUTO),
        LoadError::NotElf64("this is an ELF32 file; only ELF64 is supported")
    );
}

#[test]
fn executable_is_refused_as_not_a_core_file() {
    let bytes = le(2, &[load_seg(PAYLOAD, 0, 0x1000, 0x1000)], &page(1));
    assert_eq!(err(&bytes, AUTO), LoadError::NotCore(2));
}

#[test]
fn core_without_load_segments_has_no_memory() {
    let n = note(LittleEndian, b"CORE", 1, &[0; 8]);
    let bytes = le(4, &[note_seg(n.len())], &n);
    assert_eq!(err(&bytes, AUTO), LoadError::NoMemory);
    let empty_load = le(4, &[load_seg(PAYLOAD, 0x1000, 0, 0)], &[]);
    assert_eq!(err(&empty_load, AUTO), LoadError::NoMemory);
}

#[test]
fn segment_with_more_file_bytes_than_memory_is_refused() {
    let bytes = le(4, &[load_seg(PAYLOAD, 0, 0x1000, 0x800)], &page(1));
    assert_eq!(
        err(&bytes, AUTO),
        LoadError::Segment {
            index: 0,
            what: SegmentProblem::FileLargerThanMemory {
                filesz: 0x1000,
                memsz: 0x800
            },
        }
    );
}

#[test]
fn segment_reaching_past_the_address_space_is_refused() {
    let bytes = le(4, &[load_seg(PAYLOAD, u64::MAX - 0xfff, 0, 0x1000)], &[]);
    assert_eq!(
        err(&bytes, AUTO),
        LoadError::Segment {
            index: 0,
            what: SegmentProblem::AddressOverflow {
                paddr: u64::MAX - 0xfff,
                memsz: 0x1000
            },
        }
    );
}

#[test]
fn segment_with_file_offset_overflowing_is_refused_as_truncated() {
    let bytes = le(4, &[load_seg(u64::MAX, 0, 2, 2)], &[]);
    assert!(matches!(
        err(&bytes, AUTO),
        LoadError::Segment {
            index: 0,
            what: SegmentProblem::Truncated { .. }
        }
    ));
}

#[test]
fn overlapping_segments_are_refused_naming_both() {
    let payload = [page(1), page(2)].concat();
    let bytes = le(
        4,
        &[
            load_seg(PAYLOAD + 0x1000, 0x10_0800, 0x1000, 0x1000),
            load_seg(PAYLOAD, 0x10_0000, 0x1000, 0x1000),
        ],
        &payload,
    );
    assert_eq!(
        err(&bytes, AUTO),
        LoadError::Overlap {
            first: 1,
            second: 0,
            at: PhysAddr::new(0x10_0800)
        }
    );
}

#[test]
fn bytes_past_filesz_read_as_zero() {
    let p = page(5);
    // One page of file bytes, then three pages of zero tail.
    let bytes = le(4, &[load_seg(PAYLOAD, 0x10_0000, 0x1000, 0x4000)], &p);
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&p));
    assert_eq!(
        page_of(&dump, PhysAddr::new(0x10_3000)),
        Some(&[0u8; PAGE_SIZE])
    );
    assert_eq!(
        page_of(&dump, PhysAddr::new(0x10_4000)),
        None,
        "past p_memsz"
    );
}

#[test]
fn page_half_file_bytes_half_zero_tail_is_assembled() {
    let p = page(5);
    let bytes = le(
        4,
        &[load_seg(PAYLOAD, 0x10_0000, 0x800, 0x2000)],
        &p[..0x800],
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    let mut expect = [0u8; PAGE_SIZE];
    expect[..0x800].copy_from_slice(&p[..0x800]);
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&expect));
    assert_eq!(
        page_of(&dump, PhysAddr::new(0x10_1000)),
        Some(&[0u8; PAGE_SIZE])
    );
}

#[test]
fn page_spanning_two_adjacent_segments_is_assembled() {
    let (a, b) = (page(1), page(2));
    // Segment 0 covers the first half of page 0x10_0000 from `a`, segment 1
    // the second half and the whole next page, from `b` and `a`.
    let payload = [a, b].concat();
    let bytes = le(
        4,
        &[
            load_seg(PAYLOAD, 0x10_0000, 0x800, 0x800),
            load_seg(PAYLOAD + 0x1800, 0x10_0800, 0x800, 0x800),
        ],
        &payload,
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    let mut expect = [0u8; PAGE_SIZE];
    expect[..0x800].copy_from_slice(&a[..0x800]);
    expect[0x800..].copy_from_slice(&b[0x800..]);
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&expect));
    // Asking twice gives the same (cached) bytes.
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&expect));
}

#[test]
fn page_with_a_hole_between_segments_is_unreadable() {
    let payload = [page(1), page(2)].concat();
    let bytes = le(
        4,
        &[
            load_seg(PAYLOAD, 0x10_0000, 0x800, 0x800),
            load_seg(PAYLOAD + 0x1000, 0x10_0900, 0x700, 0x700),
        ],
        &payload,
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), None);
}

#[test]
fn page_partly_outside_every_segment_is_unreadable() {
    let bytes = le(
        4,
        &[load_seg(PAYLOAD, 0x10_0000, 0x1800, 0x1800)],
        &[page(1), page(2)].concat(),
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    assert!(page_of(&dump, PhysAddr::new(0x10_0000)).is_some());
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_1000)), None);
}

#[test]
fn segments_may_share_file_bytes() {
    let p = page(4);
    let bytes = le(
        4,
        &[
            load_seg(PAYLOAD, 0x10_0000, 0x1000, 0x1000),
            load_seg(PAYLOAD, 0x80_0000, 0x1000, 0x1000),
        ],
        &p,
    );
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&p));
    assert_eq!(page_of(&dump, PhysAddr::new(0x80_0000)), Some(&p));
}

#[test]
fn page_assembled_from_many_small_segments_and_zero_tails() {
    // 64 segments of 64 bytes each: 32 file bytes then 32 of zero tail,
    // each from its own place in the payload.
    let payload: Vec<u8> = (0..64 * 32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let phdrs: Vec<Ph> = (0..64u64)
        .map(|i| load_seg(PAYLOAD + 32 * i, 0x10_0000 + 64 * i, 32, 64))
        .collect();
    let bytes = le(4, &phdrs, &payload);
    let dump = load(&bytes[..], AUTO).unwrap();
    let mut expect = [0u8; PAGE_SIZE];
    for (i, chunk) in payload.chunks(32).enumerate() {
        expect[64 * i..64 * i + 32].copy_from_slice(chunk);
    }
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&expect));
}

#[test]
fn only_pages_asked_for_with_file_bytes_are_held() {
    let (a, b) = (page(1), page(2));
    let payload = [a, b].concat();
    let bytes = le(4, &[load_seg(PAYLOAD, 0x10_0000, 0x2000, 0x8000)], &payload);
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(dump.pages_held(), 0, "loading reads no page");
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_1000)), Some(&b));
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_1000)), Some(&b));
    assert_eq!(dump.pages_held(), 1, "a page asked for twice is held once");
    assert_eq!(
        page_of(&dump, PhysAddr::new(0x10_5000)),
        Some(&[0u8; PAGE_SIZE])
    );
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_8000)), None);
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0008)), None);
    assert_eq!(
        dump.pages_held(),
        1,
        "zero-tail and unreadable pages hold nothing"
    );
    assert_eq!(page_of(&dump, PhysAddr::new(0x10_0000)), Some(&a));
    assert_eq!(dump.pages_held(), 2);

    let flat = [a, b].concat();
    let dump = load(&flat[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x1000)), Some(&b));
    assert_eq!(page_of(&dump, PhysAddr::new(0x2000)), None);
    assert_eq!(dump.pages_held(), 1);
}

/// `bytes` with its program header count moved to section header 0's
/// `sh_info` (`e_phnum` = `PN_XNUM`), as ELF does for 65,535 or more.
fn with_extended_count(mut bytes: Vec<u8>, count: u32) -> Vec<u8> {
    let shoff = u64::try_from(bytes.len()).unwrap();
    bytes[40..48].copy_from_slice(&shoff.to_le_bytes()); // e_shoff
    bytes[56..58].copy_from_slice(&elf::PN_XNUM.to_le_bytes()); // e_phnum
    bytes[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let mut sh0 = [0u8; 64];
    sh0[44..48].copy_from_slice(&count.to_le_bytes()); // sh_info
    bytes.extend_from_slice(&sh0);
    bytes
}

#[test]
fn extended_program_header_count_is_read_from_section_header_0() {
    let payload = [page(1), page(2)].concat();
    let phdrs = [
        load_seg(PAYLOAD, 0x10_0000, 0x1000, 0x1000),
        load_seg(PAYLOAD + 0x1000, 0x20_0000, 0x1000, 0x1000),
    ];
    let bytes = with_extended_count(le(4, &phdrs, &payload), 2);
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(page_of(&dump, PhysAddr::new(0x20_0000)), Some(&page(2)));

    let mut no_sections = bytes.clone();
    no_sections[40..48].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(err(&no_sections, AUTO), LoadError::Malformed(m) if m.contains("PN_XNUM")));
}

#[test]
fn more_program_headers_than_the_bound_are_refused_before_reading_them() {
    let phdrs = [load_seg(PAYLOAD, 0x10_0000, 0x1000, 0x1000)];
    let bytes = with_extended_count(le(4, &phdrs, &page(1)), MAX_PROGRAM_HEADERS + 1);
    assert_eq!(
        err(&bytes, AUTO),
        LoadError::TooManyProgramHeaders {
            count: MAX_PROGRAM_HEADERS + 1,
            max: MAX_PROGRAM_HEADERS,
        }
    );
    // At the bound, the table is read, and this one is not in the file.
    let bytes = with_extended_count(le(4, &phdrs, &page(1)), MAX_PROGRAM_HEADERS);
    assert!(matches!(err(&bytes, AUTO), LoadError::Malformed(m) if m.contains("beyond the end")));
}

// --- the root note ------------------------------------------------------------

#[test]
fn root_note_is_read_in_the_files_byte_order() {
    let p = page(1);
    for big in [false, true] {
        let (n, bytes) = if big {
            let n = note(
                BigEndian,
                b"IOMMUFLB",
                NT_IOMMU_FLB_ROOT,
                &0x1234_5000u64.to_be_bytes(),
            );
            let payload = [n.clone(), vec![0; 0x1000 - n.len()], p.to_vec()].concat();
            let phdrs = [
                note_seg(n.len()),
                load_seg(PAYLOAD + 0x1000, 0x1234_5000, 0x1000, 0x1000),
            ];
            (n, hand_made(BigEndian, 4, &phdrs, &payload))
        } else {
            let n = note(
                LittleEndian,
                b"IOMMUFLB",
                NT_IOMMU_FLB_ROOT,
                &0x1234_5000u64.to_le_bytes(),
            );
            let payload = [n.clone(), vec![0; 0x1000 - n.len()], p.to_vec()].concat();
            let phdrs = [
                note_seg(n.len()),
                load_seg(PAYLOAD + 0x1000, 0x1234_5000, 0x1000, 0x1000),
            ];
            (n, le(4, &phdrs, &payload))
        };
        assert_eq!(n.len(), 32);
        let dump = load(&bytes[..], AUTO).unwrap();
        assert_eq!(
            dump.root_note(),
            Ok(Some(PhysAddr::new(0x1234_5000))),
            "big {big}"
        );
    }
}

/// A core with the given notes in one PT_NOTE segment and one page of memory.
fn core_with_notes(notes: &[u8]) -> Vec<u8> {
    let payload = [
        notes.to_vec(),
        vec![0; 0x1000 - notes.len()],
        page(1).to_vec(),
    ]
    .concat();
    le(
        4,
        &[
            note_seg(notes.len()),
            load_seg(PAYLOAD + 0x1000, 0x1000, 0x1000, 0x1000),
        ],
        &payload,
    )
}

#[test]
fn other_notes_are_ignored_when_looking_for_the_root() {
    let notes = [
        note(LittleEndian, b"CORE", 1, &[0; 20]),
        note(LittleEndian, b"IOMMUFLB", 2, &[1; 8]),
        note(LittleEndian, b"IOMMUFL", NT_IOMMU_FLB_ROOT, &[1; 8]),
        note(LittleEndian, b"CORE", NT_IOMMU_FLB_ROOT, &[1; 8]),
    ]
    .concat();
    let bytes = core_with_notes(&notes);
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(dump.root_note(), Ok(None));
}

#[test]
fn two_root_notes_are_refused() {
    let n = note(
        LittleEndian,
        b"IOMMUFLB",
        NT_IOMMU_FLB_ROOT,
        &0x1000u64.to_le_bytes(),
    );
    let bytes = core_with_notes(&[n.clone(), n].concat());
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(dump.root_note(), Err(LoadError::TwoRootNotes));
}

#[test]
fn root_note_with_a_short_descriptor_is_refused() {
    let n = note(
        LittleEndian,
        b"IOMMUFLB",
        NT_IOMMU_FLB_ROOT,
        &[0x10, 0, 0, 0],
    );
    let bytes = core_with_notes(&n);
    let dump = load(&bytes[..], AUTO).unwrap();
    assert_eq!(
        dump.root_note(),
        Err(LoadError::RootNoteSize {
            index: 0,
            descsz: 4
        })
    );
}

#[test]
fn malformed_note_segment_is_refused_only_when_the_root_is_needed() {
    let mut n = note(
        LittleEndian,
        b"IOMMUFLB",
        NT_IOMMU_FLB_ROOT,
        &0x1000u64.to_le_bytes(),
    );
    n[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes()); // n_descsz
    let bytes = core_with_notes(&n);
    let dump = load(&bytes[..], AUTO).expect("memory is still readable");
    assert!(page_of(&dump, PhysAddr::new(0x1000)).is_some());
    assert!(matches!(
        dump.root_note(),
        Err(LoadError::Note { index: 0, .. })
    ));
}

#[test]
fn root_note_name_may_be_padded_with_nuls_but_nothing_else() {
    let root = 0x1000u64.to_le_bytes();
    let raw = |name: &[u8]| {
        let mut n = bytes_of(&NoteHeader64::<LittleEndian> {
            n_namesz: U32::new(LittleEndian, u32::try_from(name.len()).unwrap()),
            n_descsz: U32::new(LittleEndian, 8),
            n_type: U32::new(LittleEndian, elf::NoteType(NT_IOMMU_FLB_ROOT)),
        })
        .to_vec();
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(&root);
        n
    };
    for (name, found) in [
        (&b"IOMMUFLB"[..], true),
        (b"IOMMUFLB\0\0\0\0\0\0\0\0\0\0\0\0", true),
        (b"IOMMUFLB\0\0x", false),
        (b"IOMMUFL", false),
    ] {
        let bytes = core_with_notes(&raw(name));
        let dump = load(&bytes[..], AUTO).unwrap();
        let want = found.then_some(PhysAddr::new(0x1000));
        assert_eq!(dump.root_note(), Ok(want), "{name:?}");
    }
}

#[test]
fn note_segment_with_an_unknown_alignment_is_refused() {
    let n = note(LittleEndian, b"IOMMUFLB", NT_IOMMU_FLB_ROOT, &[0; 8]);
    let mut bytes = core_with_notes(&n);
    bytes[64 + 48..64 + 56].copy_from_slice(&16u64.to_le_bytes()); // note's p_align
    let dump = load(&bytes[..], AUTO).unwrap();
    assert!(matches!(
        dump.root_note(),
        Err(LoadError::Note { index: 0, .. })
    ));
}

#[test]
fn note_segments_that_together_exceed_the_file_are_refused() {
    // Two note segments over the same 0x3000 bytes of empty notes: a file
    // of 0x5000 bytes cannot hold 0x5fe8 bytes of notes without overlap.
    let payload = [page(1).to_vec(), vec![0; 0x3000]].concat();
    let notes = Ph {
        offset: PAYLOAD + 0x1000,
        filesz: 0x3000 / 12 * 12,
        ..note_seg(0)
    };
    let phdrs = [load_seg(PAYLOAD, 0x1000, 0x1000, 0x1000), notes, notes];
    let bytes = le(4, &phdrs, &payload);
    let dump = load(&bytes[..], AUTO).expect("memory is still readable");
    assert_eq!(page_of(&dump, PhysAddr::new(0x1000)), Some(&page(1)));
    match dump.root_note() {
        Err(e @ LoadError::Note { index: 2, .. }) => {
            assert!(e.to_string().contains("they overlap"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // One of them alone is read note by note, and holds no root.
    let bytes = le(4, &phdrs[..2], &payload);
    assert_eq!(load(&bytes[..], AUTO).unwrap().root_note(), Ok(None));
}

#[test]
fn errors_say_what_and_where() {
    let e = LoadError::Segment {
        index: 3,
        what: SegmentProblem::Truncated {
            offset: 0x2000,
            filesz: 0x1000,
            file_size: 0x2800,
        },
    };
    assert_eq!(
        e.to_string(),
        "program header 3 (PT_LOAD): file bytes 0x2000+0x1000 are beyond the end of the \
         file (0x2800 bytes; truncated?)"
    );
    let o = LoadError::Overlap {
        first: 1,
        second: 2,
        at: PhysAddr::new(0x10_0800),
    };
    assert_eq!(
        o.to_string(),
        "program headers 1 and 2 (PT_LOAD) both cover physical address 0x100800"
    );
    let many = LoadError::TooManyProgramHeaders {
        count: 2_000_000,
        max: MAX_PROGRAM_HEADERS,
    };
    assert_eq!(
        many.to_string(),
        "the ELF file has 2000000 program headers; the tool reads at most 1048576"
    );
}

// --- hostile bytes --------------------------------------------------------------

/// Loads `bytes` and reads every page any segment could name, and the root
/// note: whatever happens, it must not panic.
fn exercise(bytes: &[u8]) {
    if let Ok(dump) = load(bytes, AUTO) {
        let _ = dump.root_note();
        for a in (0..0x40u64).map(|i| i * 0x1000) {
            let _ = page_of(&dump, PhysAddr::new(a));
            let _ = page_of(&dump, PhysAddr::new(a + 0x7fff_0000));
        }
    }
}

fn sample_core() -> Vec<u8> {
    let (a, b) = (page(1), page(2));
    write_core(
        [(PhysAddr::new(0x1000), &a), (PhysAddr::new(0x3000), &b)],
        PhysAddr::new(0x1000),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

    #[test]
    fn any_corrupted_byte_of_a_core_loads_or_is_refused(
        at in 0usize..(64 + 3 * 56 + 32),
        value in any::<u8>(),
    ) {
        let mut bytes = sample_core();
        bytes[at] = value;
        exercise(&bytes);
    }

    #[test]
    fn any_prefix_of_a_core_loads_or_is_refused(len in 0usize..0x3000) {
        let bytes = sample_core();
        exercise(&bytes[..len.min(bytes.len())]);
    }

    #[test]
    fn random_bytes_after_the_elf_magic_load_or_are_refused(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = elf::ELFMAG.to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
    }
}

#[test]
fn scan_of_segments_sharing_file_bytes_stops_at_the_files_size() {
    use iommu_flb_abi::reader::Options;
    use iommu_flb_cli::scan::scan;
    // 64 segments of 16 pages each, all over the same 16 pages of file:
    // 1024 pages claimed, 16 held.
    let payload: Vec<u8> = (0..16u8).flat_map(page).collect();
    let off = common::data_offset(64);
    let len = payload.len() as u64;
    let phdrs: Vec<Ph> = (0..64u64)
        .map(|i| load_seg(off, 0x100_0000 + i * len, len, len))
        .collect();
    let bytes = hand_made(LittleEndian, elf::ET_CORE.0, &phdrs, &payload);
    let mut dump = load(bytes.as_slice(), AUTO).unwrap();
    let limit = dump.scan_limit();
    assert!(limit < 200, "limit {limit}");
    let mut calls = 0;
    let report = scan(&mut dump, &Options::default(), &mut |_, _| calls += 1);
    assert!(report.stopped);
    assert_eq!(report.pages, limit);
    assert!(report.found.is_empty());
    assert!(calls >= 1);
    assert!(report.text("f").contains("the scan stopped early"));
}

#[test]
fn scan_validates_at_most_max_candidates_and_counts_the_rest() {
    use iommu_flb_abi::reader::Options;
    use iommu_flb_cli::scan::{MAX_CANDIDATES, scan};
    // Every page looks like a version-1 root whose chains are outside the
    // dump: a candidate that does not validate.
    let n = MAX_CANDIDATES + 5;
    let mut bytes = vec![0u8; n * PAGE_SIZE];
    for page in bytes.chunks_exact_mut(PAGE_SIZE) {
        page[..8].copy_from_slice(&1u64.to_le_bytes());
        page[8..16].copy_from_slice(&0x7000_0000u64.to_le_bytes());
    }
    // From 1 MiB: physical page 0 is no root (its zero heads would be
    // itself).
    let base = 0x10_0000u64;
    let opts = LoadOptions {
        format: Format::Phys,
        base: Some(PhysAddr::new(base)),
    };
    let mut dump = load(bytes.as_slice(), opts).unwrap();
    let report = scan(&mut dump, &Options::default(), &mut |_, _| {});
    assert_eq!(report.pages, n as u64);
    assert_eq!(report.found.len(), MAX_CANDIDATES);
    assert_eq!(report.skipped, 5);
    assert!(report.found.iter().all(|f| f.result.is_err()));
    // The first pages by address are the ones validated.
    assert_eq!(report.found[0].root, PhysAddr::new(base));
    assert_eq!(
        report.found.last().unwrap().root,
        PhysAddr::new(base + ((MAX_CANDIDATES - 1) * PAGE_SIZE) as u64)
    );
    assert!(
        report
            .text("f")
            .contains("5 more candidate(s) not validated")
    );
    assert_eq!(dump.pages_held(), 0, "the scan keeps no page");
}

#[test]
fn scan_reads_a_page_split_between_two_segments_that_meet() {
    use iommu_flb_abi::reader::Options;
    use iommu_flb_cli::scan::{How, scan};
    // A page that looks like a version-1 root (its chains outside the
    // file), its first 1 KiB in one segment and the rest in the next.
    let mut root = [0u8; PAGE_SIZE];
    root[..8].copy_from_slice(&1u64.to_le_bytes());
    root[8..16].copy_from_slice(&0x7000_0000u64.to_le_bytes());
    let off = common::data_offset(2);
    let phdrs = [
        load_seg(off, 0x20_0000, 0x400, 0x400),
        load_seg(off + 0x400, 0x20_0400, 0xc00, 0xc00),
    ];
    let bytes = hand_made(LittleEndian, elf::ET_CORE.0, &phdrs, &root);
    let mut dump = load(bytes.as_slice(), AUTO).unwrap();
    let report = scan(&mut dump, &Options::default(), &mut |_, _| {});
    assert_eq!(report.pages, 1);
    let roots: Vec<_> = report.found.iter().map(|f| (f.root, f.how)).collect();
    assert_eq!(roots, [(PhysAddr::new(0x20_0000), How::V1Structure)]);
}
