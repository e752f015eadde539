//! The generated header compiles as userspace C and as kernel C, and its
//! layout equals the spec's tables (`tests/c/layout_v1.c`,
//! `tests/c/layout_v2.c`) in both modes.

mod c_support;

use std::process::Command;

use c_support::{KERNEL_CFLAGS, gcc, out_dir, repo_root};

/// The layout tests, one per format version.
const LAYOUTS: [&str; 2] = ["layout_v1", "layout_v2"];

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_userspace_mode() {
    for name in LAYOUTS {
        let exe = out_dir("c_header").join(format!("{name}_user"));
        let exe_s = exe.to_str().expect("utf-8 path");
        gcc(&["-Iinclude", &format!("tests/c/{name}.c"), "-o", exe_s]);
        let status = Command::new(&exe).status().expect("run layout test");
        assert!(status.success(), "{name} byte check failed: {status}");
    }
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_kernel_mode() {
    for name in LAYOUTS {
        let obj = out_dir("c_header").join(format!("{name}_kernel.o"));
        let src = format!("tests/c/{name}.c");
        let mut args = KERNEL_CFLAGS.to_vec();
        args.extend([
            "-Iinclude",
            "-c",
            &src,
            "-o",
            obj.to_str().expect("utf-8 path"),
        ]);
        gcc(&args);
    }
}

/// `tests/c/layout_v2.c` asserts every struct and field of the frozen
/// version-2 snapshot (`abi/v2.txt`), each with the snapshot's numbers.
#[test]
fn layout_v2_covers_the_frozen_snapshot() {
    let snapshot = std::fs::read_to_string(repo_root().join("abi/v2.txt")).expect("snapshot");
    let c = std::fs::read_to_string(repo_root().join("tests/c/layout_v2.c")).expect("layout_v2.c");
    let mut current = String::new();
    let mut checked = 0;
    for line in snapshot.lines().filter(|l| !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let want = match words.as_slice() {
            [tag @ ("struct" | "union"), name, "size", size, "align", "1"] => {
                current = format!("{tag} {name}");
                format!("LAYOUT({current}, {size});")
            }
            [off, size, .., field] => format!("FIELD({current}, {field}, {off}, {size});"),
            _ => panic!("unexpected snapshot line {line:?}"),
        };
        assert!(c.contains(&want), "layout_v2.c lacks `{want}`");
        checked += 1;
    }
    assert!(checked > 60, "read only {checked} snapshot lines");
}

#[test]
fn header_compatible_string_matches_rust_constant() {
    let header = std::fs::read_to_string(repo_root().join("include/iommu_flb.h")).expect("header");
    let want = format!(
        "#define IOMMU_LUO_FLB_COMPATIBLE \"{}\"",
        iommu_flb_abi::abi::v1::IOMMU_LUO_FLB_COMPATIBLE
    );
    assert!(header.contains(&want), "header lacks `{want}`");
}

/// Both headers name integers as the kernel's shared headers do (`__u8`
/// ... `__u64`, `__le16` ... `__le64`), never with `<stdint.h>`'s names,
/// and include nothing in userspace but `<stddef.h>` (for `size_t`).
#[test]
fn headers_spell_integers_with_the_kernels_names() {
    for header in ["include/iommu_flb.h", "include/iommu_flb_api.h"] {
        let text = std::fs::read_to_string(repo_root().join(header)).unwrap();
        for word in ["uint8_t", "uint16_t", "uint32_t", "uint64_t", "stdint.h"] {
            assert!(!text.contains(word), "{header} uses {word}");
        }
        for line in text.lines().filter(|l| l.starts_with("#include <")) {
            assert!(
                ["#include <linux/types.h>", "#include <stddef.h>"].contains(&line),
                "{header}: {line}"
            );
        }
    }
}
