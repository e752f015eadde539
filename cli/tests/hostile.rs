//! The whole read path of `validate` and `inspect` (load, root, validate,
//! print) on corrupted images, in-process: every outcome is output, a
//! refusal (exit 1) or a usage error (exit 2), never a panic.

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::reader::Mode;
use iommu_flb_cli::cmd::{Failure, ReadOptions, Report, build_image, flat_dump, report};
use iommu_flb_cli::elfcore::write_core;
use iommu_flb_cli::load::Format;
use iommu_flb_cli::plan::{Spec, Vendor};
use proptest::prelude::*;

const SPEC: Spec = Spec {
    iommus: 2,
    domains: 3,
    // Two device pages; a handful of devices under miri, which is slow.
    devices: if cfg!(miri) { 8 } else { 60 },
    deleted: 3,
    vendor: Vendor::Mixed,
    seed: 5,
};

fn opts(root: Option<PhysAddr>) -> ReadOptions {
    ReadOptions {
        file: "image".into(),
        format: Format::Auto,
        root,
        base: None,
        mode: Mode::Handover,
        page_size: iommu_flb_abi::abi::PageSize::Size4K,
    }
}

const REPORTS: [Report; 3] = [
    Report::Summary,
    Report::Listing {
        all: true,
        json: false,
    },
    Report::Listing {
        all: true,
        json: true,
    },
];

/// Runs every report on `bytes`; returns the exit codes.
fn codes(bytes: &[u8], root: Option<PhysAddr>) -> Vec<u8> {
    REPORTS
        .iter()
        .map(|r| match report("image", bytes, &opts(root), *r) {
            Ok(_) => 0,
            Err(f) => f.exit_code(),
        })
        .collect()
}

#[test]
fn uncorrupted_images_are_reported_in_both_formats() {
    let (root, pages) = build_image(&SPEC).unwrap();
    let flat = flat_dump(&pages).unwrap();
    let elf = write_core(pages.iter(), root).unwrap();
    assert_eq!(codes(&flat, Some(root)), [0, 0, 0]);
    assert_eq!(codes(&elf, None), [0, 0, 0]);
    let out = report("image", &elf[..], &opts(None), Report::Summary).unwrap();
    let expect = format!(
        "2 IOMMUs, 3 domains, {} devices live, 3 deleted records",
        SPEC.devices
    );
    assert!(out.contains(&expect), "{out}");
}

#[test]
fn corrupted_version_is_a_refusal_not_a_usage_error() {
    let (root, pages) = build_image(&SPEC).unwrap();
    let mut flat = flat_dump(&pages).unwrap();
    let at = usize::try_from(root.get()).unwrap();
    flat[at] = 2;
    let err = report("image", &flat[..], &opts(Some(root)), Report::Summary).unwrap_err();
    assert!(matches!(&err, Failure::Refused(m) if m.contains("unsupported version 2")));
    assert_eq!(err.exit_code(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 64 }))]

    #[test]
    fn any_corrupted_byte_of_the_image_pages_is_reported_or_refused(
        page in 0usize..8,
        offset in 0usize..4096,
        value in any::<u8>(),
    ) {
        let (root, pages) = build_image(&SPEC).unwrap();
        let addrs: Vec<PhysAddr> = pages.iter().map(|(a, _)| a).collect();
        let target = addrs[page % addrs.len()];
        let mut flat = flat_dump(&pages).unwrap();
        let at = usize::try_from(target.get()).unwrap() + offset;
        flat[at] = value;
        for code in codes(&flat, Some(root)) {
            prop_assert!(code <= 1, "a corrupt image is output or a refusal, got {code}");
        }
    }

    #[test]
    fn any_corrupted_byte_of_an_elf_file_is_reported_or_refused(
        at in prop_oneof![0usize..0x1100, any::<usize>()],
        value in any::<u8>(),
    ) {
        let (root, pages) = build_image(&SPEC).unwrap();
        let mut elf = write_core(pages.iter(), root).unwrap();
        let at = at % elf.len();
        let in_memory = load_ranges(&elf).iter().any(|r| r.contains(&at));
        elf[at] = value;
        // Half the cases hit the headers, the note or the first page's
        // first bytes, half any byte. Whatever the byte, the three reports
        // agree (they load and validate alike), and a byte of the memory
        // itself leaves the container intact, so it is output or a refused
        // image, never a usage error.
        let got = codes(&elf, None);
        prop_assert!(got.iter().all(|c| *c == got[0]), "reports disagree: {got:?}");
        if in_memory {
            prop_assert!(got[0] <= 1, "byte {at:#x} of a PT_LOAD segment gave exit {}", got[0]);
        }
    }
}

/// The file ranges of `elf`'s `PT_LOAD` segments: the image's memory.
fn load_ranges(elf: &[u8]) -> Vec<std::ops::Range<usize>> {
    use object::elf::{FileHeader64, PT_LOAD};
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let header = FileHeader64::<object::Endianness>::parse(elf).unwrap();
    let endian = header.endian().unwrap();
    let size = |v: u64| usize::try_from(v).unwrap();
    header
        .program_headers(endian, elf)
        .unwrap()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| {
            let start = size(ph.p_offset(endian));
            start..start + size(ph.p_filesz(endian))
        })
        .collect()
}

#[test]
fn the_elf_corruption_test_reaches_the_memory_segments() {
    // Guards the property test above: the first 0x1100 bytes it favours
    // must include some PT_LOAD bytes as well as the headers.
    let (root, pages) = build_image(&SPEC).unwrap();
    let elf = write_core(pages.iter(), root).unwrap();
    assert!(load_ranges(&elf).iter().any(|r| r.start < 0x1100));
}
