//! Corrupt images through the C API: a C program (`tests/c/capi_read.c`)
//! validates each one and prints what `iommu_flb_validate()` returned and
//! the error record; each corruption gets one exact answer: the documented
//! negative errno (named by the C library's <errno.h>), the
//! `enum iommu_flb_error_kind` value and the location.
//!
//! The images are the reader's hand-built ones (`tests/common`), so a bug
//! shared by the crate's writer and reader cannot hide here.

mod support;

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{Img, Spec, off};
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::v1::{IOMMU_SER_FLAG_DELETED, IOMMU_SER_FLAG_INCOMING};
use iommu_flb_abi::error::{Chain, Location};
use support::c_support::{out_dir, run};
use support::{build, flat_dump};

/// Where `Spec::build` puts its pages.
const BASE: u64 = 0x10_0000;

fn reader_exe() -> &'static PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build(&out_dir("c_errors"), "capi_read"))
}

/// What `capi_read` printed for a refused image.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    errno_name: String,
    errno: i32,
    kind: u32,
    chain: u32,
    page: i64,
    page_phys: u64,
    object: i64,
    field: String,
}

/// The refusal C reports for `img` in `mode`, with the scratch `short`
/// bytes below what `iommu_flb_scratch_size()` asked for.
fn refusal(img: &Img, name: &str, mode: u32, short: usize) -> (Refusal, String) {
    let dump = out_dir("c_errors").join(format!("{name}.dump"));
    flat_dump(&img.mem, BASE, &dump);
    let out = run(
        reader_exe(),
        &[
            dump.to_str().unwrap(),
            &format!("{BASE:#x}"),
            &format!("{:#x}", img.root.get()),
            &mode.to_string(),
            &short.to_string(),
        ],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "capi_read should refuse the image:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("error "))
        .expect("error line");
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let r = Refusal {
        errno_name: w[0].to_string(),
        errno: w[1].parse().unwrap(),
        kind: w[2].parse().unwrap(),
        chain: w[3].parse().unwrap(),
        page: w[4].parse().unwrap(),
        page_phys: num(w[5]),
        object: w[6].parse().unwrap(),
        field: w[7].to_string(),
    };
    let message = text
        .lines()
        .find_map(|l| l.strip_prefix("message "))
        .expect("message line")
        .to_string();
    (r, message)
}

/// The refusal expected: errno by name and number, kind, and where.
fn want(errno_name: &str, errno: i32, kind: u32, at: Location) -> Refusal {
    let chain = match at.chain {
        None => 0,
        Some(Chain::Iommu) => 1,
        Some(Chain::Domain) => 2,
        Some(Chain::Device) => 3,
    };
    Refusal {
        errno_name: errno_name.to_string(),
        errno,
        kind,
        chain,
        page: at.page.map_or(-1, |p| p as i64),
        page_phys: at.page_phys.get(),
        object: at.object.map_or(-1, |o| o as i64),
        field: at.field.unwrap_or("-").to_string(),
    }
}

/// Checks C's answer for `img` in handover mode, and that the message is
/// the reader's own `Display` of the same error.
fn check(img: &Img, name: &str, expected: Refusal) {
    let (got, message) = refusal(img, name, 0, 0);
    assert_eq!(got, expected);
    let rust = img.check().expect_err("the Rust reader refuses it too");
    assert_eq!(message, rust.to_string());
}

/// 2 IOMMUs (Intel, SMMUv3), 3 domains, 4 devices, as the mangle tests.
fn base() -> Img {
    Spec::simple(2, 3, 4).build()
}

fn plus(p: PhysAddr, n: u64) -> PhysAddr {
    PhysAddr::new(p.get() + n)
}

fn root_at(img: &Img, field: &'static str) -> Location {
    Location::root(img.root, Some(field))
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn uncorrupted_base_image_is_accepted_from_c() {
    let img = base();
    let dump = out_dir("c_errors").join("base.dump");
    flat_dump(&img.mem, BASE, &dump);
    let out = run(
        reader_exe(),
        &[
            dump.to_str().unwrap(),
            &format!("{BASE:#x}"),
            &format!("{:#x}", img.root.get()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn root_outside_memory_is_efault() {
    let mut img = base();
    img.root = PhysAddr::new(0x9000_0000);
    check(
        &img,
        "root_unreadable",
        want("EFAULT", -14, 1, Location::root(img.root, None)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn root_not_starting_its_page_is_einval() {
    // The root must start its page (IOMMU_FLB_ERR_UNALIGNED); this one, in
    // the last 16 bytes of the page, once crossed the page end.
    let mut img = base();
    let moved = plus(img.root.page_base(img.page_size), 4096 - 16);
    let head = img.page(Chain::Iommu, 0).get();
    img.put_u64(moved, 1);
    img.put_u64(plus(moved, 8), head);
    img.root = moved;
    check(
        &img,
        "root_unaligned",
        want("EINVAL", -22, 5, Location::root(img.root, None)),
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn unsupported_version_is_eprotonosupport() {
    let mut img = base();
    img.put_u64(img.root, 2);
    check(
        &img,
        "version",
        want("EPROTONOSUPPORT", -93, 3, root_at(&img, "version")),
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn zero_chain_head_is_einval() {
    let mut img = base();
    img.put_u64(plus(img.root, off::ROOT_DEVICE as u64), 0);
    check(
        &img,
        "null_head",
        want("EINVAL", -22, 4, root_at(&img, "device_array_phys")),
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn unaligned_chain_head_is_einval() {
    let mut img = base();
    let head = img.page(Chain::Domain, 0).get() + 8;
    img.put_u64(plus(img.root, off::ROOT_DOMAIN as u64), head);
    let at = root_at(&img, "iommu_domain_array_phys");
    check(&img, "unaligned_head", want("EINVAL", -22, 5, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn chain_page_outside_memory_is_efault() {
    let mut img = base();
    img.put_u64(plus(img.root, off::ROOT_IOMMU as u64), 0x9000_0000);
    let at = root_at(&img, "iommu_array_phys");
    check(&img, "unreadable", want("EFAULT", -14, 6, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn nr_objects_over_capacity_is_eoverflow() {
    let mut img = base();
    img.put_u64(plus(img.page(Chain::Device, 0), off::NR as u64), 57);
    let at = img.at_page(Chain::Device, 0).field("nr_objects");
    check(&img, "over_capacity", want("EOVERFLOW", -75, 7, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn partial_page_before_the_tail_is_ebadmsg() {
    let mut img = Spec::simple(1, 103, 1).build();
    img.put_u64(plus(img.page(Chain::Domain, 0), off::NR as u64), 101);
    let at = img.at_page(Chain::Domain, 0).field("nr_objects");
    check(&img, "partial", want("EBADMSG", -74, 8, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn cycle_is_eloop() {
    let mut img = Spec::simple(1, 1, 3 * 56).build();
    let head = img.page(Chain::Device, 0);
    img.put_u64(img.page(Chain::Device, 2), head.get());
    let at = img.at_page(Chain::Device, 2).field("next_array_phys");
    check(&img, "cycle", want("ELOOP", -40, 9, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn page_in_two_chains_is_eaddrinuse() {
    let mut img = base();
    let shared = img.page(Chain::Iommu, 0);
    img.put_u64(plus(img.root, off::ROOT_DOMAIN as u64), shared.get());
    let at = root_at(&img, "iommu_domain_array_phys");
    check(&img, "reused", want("EADDRINUSE", -98, 10, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn unknown_flag_is_eopnotsupp() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 1, off::FLAGS), 1 << 2);
    let at = img.at(Chain::Domain, 1).field("flags");
    check(&img, "flags", want("EOPNOTSUPP", -95, 12, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn live_domain_with_ref_count_2_is_ebadmsg() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 0, off::REF_COUNT), 2);
    let at = img.at(Chain::Domain, 0).field("ref_count");
    check(&img, "ref_not_one", want("EBADMSG", -74, 24, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn live_record_with_zero_ref_count_is_ebadmsg() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 2, off::REF_COUNT), 0);
    let at = img.at(Chain::Domain, 2).field("ref_count");
    check(&img, "zero_ref", want("EBADMSG", -74, 13, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn deleted_device_still_counted_by_its_iommu_is_ebadmsg() {
    let mut img = base();
    img.put_u32(
        img.field(Chain::Device, 2, off::FLAGS),
        IOMMU_SER_FLAG_DELETED,
    );
    let at = img.at(Chain::Iommu, 0).field("ref_count");
    check(&img, "ref_mismatch", want("EBADMSG", -74, 14, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn unknown_iommu_type_is_eopnotsupp() {
    let mut img = base();
    img.put_u64(img.field(Chain::Iommu, 1, off::HW_TYPE), 3);
    let at = img.at(Chain::Iommu, 1).field("type");
    check(&img, "iommu_type", want("EOPNOTSUPP", -95, 15, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn duplicate_iommu_is_eexist() {
    let mut spec = Spec::simple(2, 3, 4);
    spec.iommus[1].ty = common::INTEL;
    let mut img = spec.build();
    img.put_u64(
        img.field(Chain::Iommu, 1, off::HW_TOKEN),
        spec.iommus[0].token,
    );
    let at = img.at(Chain::Iommu, 1).field("token");
    check(&img, "dup_iommu", want("EEXIST", -17, 16, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn duplicate_device_is_eexist() {
    let mut img = base();
    img.put_u32(img.field(Chain::Device, 3, off::DEV_DEVID), 1);
    let at = img.at(Chain::Device, 3).field("devid");
    check(&img, "dup_device", want("EEXIST", -17, 17, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn device_naming_a_deleted_domain_is_enoent() {
    let mut spec = Spec::simple(2, 4, 4);
    spec.domains[3].deleted = true;
    let mut img = spec.build();
    let target = img.record(Chain::Domain, 3);
    img.put_u64(img.field(Chain::Device, 1, off::DEV_DOMAIN), target.get());
    let at = img.at(Chain::Device, 1).field("domain_phys");
    check(&img, "bad_ref", want("ENOENT", -2, 18, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn vasz_above_64_is_erange() {
    let mut img = base();
    img.put_u32(img.field(Chain::Domain, 0, off::DOM_VASZ), 65);
    let at = img.at(Chain::Domain, 0).field("vasz");
    check(&img, "vasz", want("ERANGE", -34, 19, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn sign_extend_above_1_is_erange() {
    let mut img = base();
    img.put_u8(img.field(Chain::Domain, 0, off::DOM_SIGN), 2);
    let at = img.at(Chain::Domain, 0).field("sign_extend");
    check(&img, "sign_extend", want("ERANGE", -34, 20, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn nonzero_padding_is_ebadmsg() {
    let mut img = base();
    img.put_u8(img.field(Chain::Domain, 2, off::DOM_PAD + 2), 1);
    let at = img.at(Chain::Domain, 2).field("padding");
    check(&img, "padding", want("EBADMSG", -74, 21, at));
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn incoming_flag_at_handover_is_ealready_and_accepted_after_restore() {
    let mut img = base();
    img.put_u32(
        img.field(Chain::Device, 1, off::FLAGS),
        IOMMU_SER_FLAG_INCOMING,
    );
    let at = img.at(Chain::Device, 1).field("flags");
    check(&img, "incoming", want("EALREADY", -114, 22, at));
    // IOMMU_FLB_MODE_RESTORED accepts the same bytes.
    let dump = out_dir("c_errors").join("incoming.dump");
    let out = run(
        reader_exe(),
        &[
            dump.to_str().unwrap(),
            &format!("{BASE:#x}"),
            &format!("{:#x}", img.root.get()),
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn scratch_one_byte_short_is_enospc() {
    let img = base();
    let (got, message) = refusal(&img, "short", 0, 1);
    assert_eq!(got, want("ENOSPC", -28, 23, Location::root(img.root, None)));
    assert!(message.contains("scratch has"), "{message}");
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn unknown_mode_is_einval_naming_the_argument() {
    let img = base();
    let (got, _) = refusal(&img, "mode", 2, 0);
    let expected = Refusal {
        errno_name: "EINVAL".into(),
        errno: -22,
        kind: 64,
        chain: 0,
        page: -1,
        page_phys: u64::MAX,
        object: -1,
        field: "mode".into(),
    };
    assert_eq!(got, expected);
}
