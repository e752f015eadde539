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
        at in 0usize..0x1100,
        value in any::<u8>(),
    ) {
        let (root, pages) = build_image(&SPEC).unwrap();
        let mut elf = write_core(pages.iter(), root).unwrap();
        let at = at % elf.len();
        elf[at] = value;
        // Headers, the note and the first page: any exit code, no panic.
        let _ = codes(&elf, None);
    }
}
