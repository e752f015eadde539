//! The generated header compiles as userspace C and as kernel C, and its
//! layout equals the spec's table (`tests/c/layout_v1.c`) in both modes.

use std::path::{Path, PathBuf};
use std::process::Command;

const CFLAGS: &[&str] = &["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_header");
    std::fs::create_dir_all(&dir).expect("create test output directory");
    dir
}

fn gcc(args: &[&str]) {
    let output = Command::new("gcc")
        .args(CFLAGS)
        .args(args)
        .current_dir(root())
        .output()
        .expect("gcc must be installed to run the C tests");
    assert!(
        output.status.success(),
        "gcc {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_userspace_mode() {
    let exe = out_dir().join("layout_v1_user");
    let exe_s = exe.to_str().expect("utf-8 path");
    gcc(&["-Iinclude", "tests/c/layout_v1.c", "-o", exe_s]);
    let status = Command::new(&exe).status().expect("run layout test");
    assert!(status.success(), "layout_v1 byte check failed: {status}");
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_kernel_mode() {
    let obj = out_dir().join("layout_v1_kernel.o");
    gcc(&[
        "-D__KERNEL__",
        "-nostdinc",
        "-ffreestanding",
        "-Itests/c/kinclude",
        "-Iinclude",
        "-c",
        "tests/c/layout_v1.c",
        "-o",
        obj.to_str().expect("utf-8 path"),
    ]);
}

#[test]
fn header_compatible_string_matches_rust_constant() {
    let header = std::fs::read_to_string(root().join("include/iommu_flb.h")).expect("header");
    let want = format!(
        "#define IOMMU_LUO_FLB_COMPATIBLE \"{}\"",
        iommu_flb_abi::abi::v1::IOMMU_LUO_FLB_COMPATIBLE
    );
    assert!(header.contains(&want), "header lacks `{want}`");
}
