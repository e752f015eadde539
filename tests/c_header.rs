//! The generated header compiles as userspace C and as kernel C, and its
//! layout equals the spec's tables (`tests/c/layout_v1.c`,
//! `tests/c/layout_v2.c`, `tests/c/formats_section.c`) in both modes; the
//! formats descriptor `IOMMU_FLB_DECLARE_FORMATS()` defines lands in the
//! objects' `.iommu_flb_formats` section as exactly the library's.

mod c_support;

use std::path::Path;
use std::process::Command;

use c_support::{KERNEL_CFLAGS, gcc, out_dir, repo_root};
use iommu_flb_abi::formats::{FORMATS, Formats, IOMMU_FLB_FORMATS_SECTION};
use zerocopy::IntoBytes;

/// The layout tests, one per format version, and the formats descriptor's.
const LAYOUTS: [&str; 3] = ["layout_v1", "layout_v2", "formats_section"];

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

/// The C file `c` asserts every struct and field of the frozen snapshot
/// `snapshot`, each with the snapshot's numbers; returns the lines checked.
fn covers_snapshot(snapshot: &str, c: &str) -> usize {
    let snapshot = std::fs::read_to_string(repo_root().join(snapshot)).expect("snapshot");
    let text = std::fs::read_to_string(repo_root().join(c)).expect("C file");
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
        assert!(text.contains(&want), "{c} lacks `{want}`");
        checked += 1;
    }
    checked
}

/// `tests/c/layout_v2.c` asserts every struct and field of the frozen
/// version-2 snapshot (`abi/v2.txt`), each with the snapshot's numbers.
#[test]
#[cfg_attr(
    miri,
    ignore = "compares two files' text, no library code; the native run covers it"
)]
fn layout_v2_covers_the_frozen_snapshot() {
    let checked = covers_snapshot("abi/v2.txt", "tests/c/layout_v2.c");
    assert!(checked > 60, "read only {checked} snapshot lines");
}

/// `tests/c/formats_section.c` asserts every struct and field of the
/// frozen formats descriptor (`abi/formats-v1.txt`).
#[test]
fn formats_section_c_covers_the_frozen_descriptor_snapshot() {
    let checked = covers_snapshot("abi/formats-v1.txt", "tests/c/formats_section.c");
    assert_eq!(checked, 11);
}

/// The `.iommu_flb_formats` section of the ELF file `elf`: its bytes, and
/// its flags and alignment as readelf prints them.
fn formats_section(elf: &Path) -> (Vec<u8>, String, String) {
    let bin = elf.with_extension("formats.bin");
    let _ = std::fs::remove_file(&bin);
    let status = Command::new("objcopy")
        .args(["-O", "binary", "--only-section", IOMMU_FLB_FORMATS_SECTION])
        .arg(elf)
        .arg(&bin)
        .status()
        .expect("objcopy must be installed");
    assert!(status.success(), "objcopy {}: {status}", elf.display());
    let bytes = std::fs::read(&bin).expect("objcopy wrote the section");
    let out = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(elf)
        .output()
        .expect("readelf must be installed");
    let table = String::from_utf8(out.stdout).expect("utf-8 readelf output");
    let row = table
        .lines()
        .find(|l| l.contains(&format!(" {IOMMU_FLB_FORMATS_SECTION} ")))
        .unwrap_or_else(|| {
            panic!(
                "{} has no {IOMMU_FLB_FORMATS_SECTION}:\n{table}",
                elf.display()
            )
        });
    // [Nr] Name Type Address Off Size ES Flg Lk Inf Al
    let cols: Vec<&str> = row
        .split(']')
        .nth(1)
        .expect("section row")
        .split_whitespace()
        .collect();
    let (flags, align) = match cols.as_slice() {
        [_, "PROGBITS", _, _, _, _, flags, _, _, align] => (flags.to_string(), align.to_string()),
        _ => panic!("unexpected readelf row {row:?}"),
    };
    (bytes, flags, align)
}

/// IOMMU_FLB_DECLARE_FORMATS() in a userspace object, a kernel-mode
/// object and a program linked with --gc-sections: each holds one
/// descriptor in an allocated, 8-aligned `.iommu_flb_formats`, byte for byte
/// the library's own, which `Formats::parse` reads back as `FORMATS`.
#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn declared_formats_section_is_exactly_the_library_descriptor() {
    let dir = out_dir("c_header");
    let src = "tests/c/formats_section.c";
    let user = dir.join("formats_section_user.o");
    gcc(&[
        "-Iinclude",
        "-c",
        src,
        "-o",
        user.to_str().expect("utf-8 path"),
    ]);
    let kernel = dir.join("formats_section_kernel.o");
    let mut args = KERNEL_CFLAGS.to_vec();
    args.extend([
        "-Iinclude",
        "-c",
        src,
        "-o",
        kernel.to_str().expect("utf-8 path"),
    ]);
    gcc(&args);
    let linked = dir.join("formats_section_linked");
    let linked_s = linked.to_str().expect("utf-8 path");
    gcc(&["-Iinclude", src, "-Wl,--gc-sections", "-o", linked_s]);
    let want = FORMATS.to_ser();
    for elf in [&user, &kernel, &linked] {
        let (bytes, flags, align) = formats_section(elf);
        assert_eq!(bytes, want.as_bytes(), "{}", elf.display());
        assert_eq!(Formats::parse(&bytes), Ok(FORMATS), "{}", elf.display());
        assert!(flags.contains('A'), "{}: flags {flags}", elf.display());
        assert_eq!(align, "8", "{}", elf.display());
    }
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
#[cfg_attr(
    miri,
    ignore = "searches the headers' text, most of a minute under miri and no library code"
)]
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

#[test]
fn header_formats_section_name_matches_rust_constant() {
    let header = std::fs::read_to_string(repo_root().join("include/iommu_flb.h")).expect("header");
    let want = format!("#define IOMMU_FLB_FORMATS_SECTION \"{IOMMU_FLB_FORMATS_SECTION}\"");
    assert!(header.contains(&want), "header lacks `{want}`");
}
