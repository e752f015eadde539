//! The golden images under `abi/golden/vN/`: released files, frozen like
//! the `abi/` snapshots. Every build must read each `NAME.elf` to exactly
//! the `NAME.json` beside it (`inspect --json --all`, through the same
//! read path as the tool), so a reader change that alters what an old
//! image means is caught. `scripts/golden` writes missing ones.
#![cfg(not(miri))]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::reader::Mode;
use iommu_flb_cli::cmd::{ReadOptions, Report, report};
use iommu_flb_cli::load::Format;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../abi/golden")
}

/// Every `NAME` in `dir` with the extension `ext`.
fn names(dir: &Path, ext: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().to_owned())
        .collect()
}

/// The page size a golden image's name says (`-16k`, `-64k`; else 4 KiB).
fn page_size(name: &str) -> PageSize {
    if name.ends_with("-16k") {
        PageSize::Size16K
    } else if name.ends_with("-64k") {
        PageSize::Size64K
    } else {
        PageSize::Size4K
    }
}

/// What `inspect --json --all` prints for `file`.
fn inspect_all(file: &Path, ps: PageSize) -> String {
    let opts = ReadOptions {
        file: file.to_owned(),
        format: Format::Auto,
        root: None,
        base: None,
        mode: Mode::Handover,
        page_size: ps,
    };
    let bytes = std::fs::read(file).unwrap();
    report(
        &file.display().to_string(),
        bytes.as_slice(),
        &opts,
        Report::Listing {
            all: true,
            json: true,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The set every released version has.
const SET: [&str; 8] = [
    "empty",
    "typical",
    "full",
    "deletions",
    "intel",
    "smmuv3",
    "typical-16k",
    "typical-64k",
];

#[test]
fn every_released_version_has_the_whole_set_each_image_with_its_json() {
    for version in [1, 2] {
        let dir = golden().join(format!("v{version}"));
        let elf = names(&dir, "elf");
        let json = names(&dir, "json");
        assert_eq!(
            elf,
            json,
            "{}: every NAME.elf has its NAME.json",
            dir.display()
        );
        for name in SET {
            assert!(elf.contains(name), "{}: no {name}.elf", dir.display());
        }
    }
}

#[test]
fn every_golden_image_reads_to_exactly_its_json() {
    let mut checked = 0;
    for entry in std::fs::read_dir(golden()).unwrap() {
        let dir = entry.unwrap().path();
        let version: u64 = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix('v'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: not a vN folder", dir.display()));
        for name in names(&dir, "elf") {
            let elf = dir.join(format!("{name}.elf"));
            let want = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
            let got = inspect_all(&elf, page_size(&name));
            assert_eq!(
                got,
                want,
                "{} reads differently from its JSON",
                elf.display()
            );
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            assert_eq!(
                v["version"],
                version,
                "{} is in the v{version} folder",
                elf.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * SET.len(), "only {checked} golden images");
}

#[test]
fn the_full_images_fill_every_page_exactly() {
    for version in [1u64, 2] {
        let elf = golden().join(format!("v{version}/full.elf"));
        let v: serde_json::Value =
            serde_json::from_str(&inspect_all(&elf, PageSize::Size4K)).unwrap();
        // Records per 4 KiB page: (4096 - page header) / record size.
        let (hdr, sizes) = if version == 1 {
            (16, [112, 40, 72])
        } else {
            (48, [104, 32, 72])
        };
        for (chain, size) in ["iommus", "domains", "devices"].into_iter().zip(sizes) {
            let per_page = (4096 - hdr) / size;
            let records = v[chain].as_array().unwrap().len();
            assert!(records > 0, "v{version} {chain}");
            assert_eq!(
                records % per_page,
                0,
                "v{version} {chain}: {records} records"
            );
        }
    }
}
