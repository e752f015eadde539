//! Upgrade and rollback from C (`tests/c/capi_formats.c`, linked with
//! `libiommu_flb.a`): the next kernel's descriptor comes from a file, as
//! an outgoing kernel reads it out of the ELF file it is about to kexec:
//! here the `.iommu_flb_formats` section of an object compiled with
//! `IOMMU_FLB_DECLARE_FORMATS()`, and descriptors of an older, a later and
//! an unrelated kernel written by the Rust side.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use iommu_flb_abi::formats::{FORMATS, FormatSupport, Formats, IOMMU_FLB_FORMATS_SECTION};
use support::build;
use support::c_support::{gcc, out_dir, run_ok};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write descriptor");
    path
}

/// The `.iommu_flb_formats` section of an object compiled from
/// `tests/c/formats_section.c`: a next kernel built from this library.
fn section_of_an_object(dir: &Path) -> PathBuf {
    let obj = dir.join("next_kernel.o");
    let obj_s = obj.to_str().unwrap();
    gcc(&["-Iinclude", "-c", "tests/c/formats_section.c", "-o", obj_s]);
    let bin = dir.join("next_kernel.formats");
    let status = Command::new("objcopy")
        .args([
            "-O",
            "binary",
            "--only-section",
            IOMMU_FLB_FORMATS_SECTION,
            obj_s,
        ])
        .arg(&bin)
        .status()
        .expect("objcopy must be installed");
    assert!(status.success());
    bin
}

#[test]
#[cfg_attr(miri, ignore = "runs gcc")]
fn c_negotiates_with_descriptors_read_from_files_and_writes_the_agreed_version() {
    let dir = out_dir("c_formats");
    let exe = build(&dir, "capi_formats");
    let elf = section_of_an_object(&dir);
    let old = write(
        &dir,
        "old.formats",
        &formats(&[FormatSupport::read_write(1)]).to_bytes(),
    );
    let mut later = formats(&[
        FormatSupport::read_write(1),
        FormatSupport::read_write(2),
        FormatSupport::read_write(3),
    ])
    .to_bytes()
    .to_vec();
    later.extend([0x5a; 48]);
    later[8..12].copy_from_slice(&256u32.to_le_bytes());
    let later = write(&dir, "later.formats", &later);
    let other = write(
        &dir,
        "other.formats",
        &formats(&[FormatSupport::read_write(7)]).to_bytes(),
    );
    let mut bad = FORMATS.to_bytes();
    bad[..4].copy_from_slice(b"IFLX");
    let bad = write(&dir, "bad.formats", &bad);
    assert_eq!(std::fs::read(&elf).unwrap(), FORMATS.to_bytes());

    let files = [&elf, &old, &later, &other, &bad].map(|p| p.to_str().unwrap().to_string());
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = run_ok(&exe, &args);
    let negotiated: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("negotiate "))
        .collect();
    assert_eq!(
        negotiated,
        [
            "negotiate 1 0 2",
            "negotiate 2 0 1",
            "negotiate 3 0 2",
            "negotiate 4 EPROTONOSUPPORT 0",
            "negotiate 5 EPROTO 0",
        ]
    );
    let checks: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert_eq!(
        checks,
        [
            "macro-is-library",
            "upgrade 2 writes 2",
            "rollback 1 writes 1",
            "disjoint EPROTONOSUPPORT",
            "config-after-failure EPROTONOSUPPORT",
            "null EINVAL EINVAL EINVAL",
            "forged EPROTO EOPNOTSUPP EBADMSG EBADMSG EBADMSG EOPNOTSUPP EBADMSG",
        ]
    );
}

fn formats(entries: &[FormatSupport]) -> Formats {
    Formats::new(entries).expect("valid entries")
}
