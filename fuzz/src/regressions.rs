//! Inputs on which a fuzz target failed, checked in under
//! `regressions/<target>/` (minimized) and run through their target again,
//! one test each, saying what went wrong. Failures of the library itself
//! are regression-tested in the root crate's `tests/fuzz_regressions.rs`;
//! these are the ones whose fix was in this crate or in the tool.

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};

use crate::input::LoadInput;
use crate::targets;

fn input(target: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `load`, 1 byte: `--format elf --base 0` on an empty file. The loader
/// refuses it as empty (it checks the length before the base); the target
/// expected `BaseWithElf` whenever a base came with an ELF file. The
/// target's expectation was wrong, not the loader: fixed in
/// `targets::load`.
#[test]
fn load_empty_elf_file_with_a_base_is_refused_as_empty() {
    let bytes = input("load", "empty-elf-file-with-base");
    let input = LoadInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
    assert!(input.file.is_empty() && input.base.is_some());
    let opts = iommu_flb_cli::load::LoadOptions {
        format: iommu_flb_cli::load::Format::Elf,
        base: input.base.map(iommu_flb_abi::PhysAddr::new),
    };
    let got = iommu_flb_cli::load::load(input.file, opts).map(|_| ());
    assert_eq!(got, Err(iommu_flb_cli::load::LoadError::Empty));
    targets::load(&input);
}

/// `capi`, 39 bytes: a device preserved onto an unpreserved domain while
/// the page callback refuses the IOMMU's page. The writer reads the domain
/// first and refuses with -ENOENT; the C API's handle check had mapped the
/// IOMMU's page before the writer ran and answered -EFAULT. The library
/// was wrong (the regression test of the fix is
/// `ffi::tests::refused_page_is_reported_in_the_writers_order` in the root
/// crate); this runs the input through the target again.
#[test]
fn capi_handle_check_leaves_an_unmapped_page_to_the_writer() {
    let bytes = input("capi", "handle-check-mapped-the-iommu-page-first");
    let input =
        crate::input::CapiInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
    targets::capi(&input);
}

/// `capi`: a validation whose page-call failure is armed past its last
/// call, so that the Rust reader's listing of the image (the target's
/// expectation) lost the device page instead of validation: the target
/// expected no devices where the C walk rightly found one. The harness was
/// wrong; it now lists the image with the memory whole.
#[test]
fn capi_expectation_is_listed_with_the_memory_whole() {
    let bytes = input("capi", "failure-armed-past-validation");
    let input =
        crate::input::CapiInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
    targets::capi(&input);
}

/// `load`, found by CI's 15-second run: `--format elf --base B` on a file
/// that starts with the kdump signature (after the input's option bytes).
/// The loader refuses it naming what it is (`BaseNotFlat`: a base for a
/// kdump-compressed dump); the target expected `BaseWithElf`, as if every
/// file read with `--format elf` were an ELF file. The target's expectation
/// was wrong: fixed in `targets::load`.
#[test]
fn load_elf_format_with_a_base_on_a_kdump_file_names_the_kdump_file() {
    let bytes = input("load", "elf-format-base-on-a-kdump-file");
    let input = LoadInput::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decodes");
    assert!(input.file.starts_with(b"KDUMP   ") && input.base.is_some());
    let opts = iommu_flb_cli::load::LoadOptions {
        format: iommu_flb_cli::load::Format::Elf,
        base: input.base.map(iommu_flb_abi::PhysAddr::new),
    };
    let got = iommu_flb_cli::load::load(input.file, opts).map(|_| ());
    assert!(
        matches!(got, Err(iommu_flb_cli::load::LoadError::BaseNotFlat { .. })),
        "{got:?}"
    );
    targets::load(&input);
}
