//! The generated header compiles as userspace C and as kernel C, and its
//! layout equals the spec's table (`tests/c/layout_v1.c`) in both modes.

mod c_support;

use std::process::Command;

use c_support::{KERNEL_CFLAGS, gcc, out_dir, repo_root};

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_userspace_mode() {
    let exe = out_dir("c_header").join("layout_v1_user");
    let exe_s = exe.to_str().expect("utf-8 path");
    gcc(&["-Iinclude", "tests/c/layout_v1.c", "-o", exe_s]);
    let status = Command::new(&exe).status().expect("run layout test");
    assert!(status.success(), "layout_v1 byte check failed: {status}");
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn layout_matches_spec_in_kernel_mode() {
    let obj = out_dir("c_header").join("layout_v1_kernel.o");
    let mut args = KERNEL_CFLAGS.to_vec();
    args.extend([
        "-Iinclude",
        "-c",
        "tests/c/layout_v1.c",
        "-o",
        obj.to_str().expect("utf-8 path"),
    ]);
    gcc(&args);
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
