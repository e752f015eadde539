//! The ABI guard: every released layout is frozen in `abi/v{N}.txt`.
//!
//! The test renders each version's layout from the Rust types and compares
//! it with the snapshot. Changing a field's type, order or size therefore
//! fails here (and in the `const_assert`s of `src/abi/`), unless the change
//! comes as a new version with a new snapshot. A missing snapshot is written
//! on first run (a new version); an existing one is never rewritten.
//!
//! The formats descriptor (`abi::formats`) is a wire format of its own with
//! its own versions, frozen the same way in `abi/formats-v{N}.txt`.

use std::fmt::Write as _;
use std::path::Path;

use iommu_flb_abi::abi::formats::{self, IOMMU_FLB_FORMATS_VERSION};
use iommu_flb_abi::abi::{LAYOUTS, StructLayout, VersionLayout};

fn render(v: &VersionLayout) -> String {
    let title = format!("IOMMU live-update FLB ABI, version {}", v.version);
    render_structs(&title, v.structs)
}

fn render_structs(title: &str, structs: &[StructLayout]) -> String {
    let mut out = String::new();
    writeln!(out, "# {title}").unwrap();
    writeln!(
        out,
        "# Frozen at release; never edit. A layout change needs a new version."
    )
    .unwrap();
    writeln!(out, "# struct <tag> size <bytes> align <bytes>").unwrap();
    writeln!(out, "#   <offset> <size> <c type> <field>").unwrap();
    for s in structs {
        writeln!(
            out,
            "{} {} size {} align {}",
            s.kind, s.name, s.size, s.align
        )
        .unwrap();
        for f in s.fields {
            writeln!(
                out,
                "  {:>4} {:>4} {} {}",
                f.offset, f.size, f.c_type, f.name
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn every_version_layout_equals_its_frozen_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi");
    for v in LAYOUTS {
        let path = dir.join(format!("v{}.txt", v.version));
        compare(&path, &render(v), &format!("version {}", v.version));
    }
}

/// Compares `fresh` with the snapshot at `path`, writing it if missing.
fn compare(path: &Path, fresh: &str, what: &str) {
    let Ok(frozen) = std::fs::read_to_string(path) else {
        std::fs::write(path, fresh).expect("write new snapshot");
        panic!(
            "{} did not exist; wrote it. Review and commit it.",
            path.display()
        );
    };
    assert!(
        frozen == fresh,
        "the layout of {what} differs from {}.\n\
         A released layout never changes: add a new version with its own snapshot \
         instead.\n--- frozen\n{frozen}\n--- now\n{fresh}",
        path.display()
    );
}

#[test]
fn formats_descriptor_layout_equals_its_frozen_snapshot() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi");
    let v = IOMMU_FLB_FORMATS_VERSION;
    let title = format!("IOMMU FLB formats descriptor, descriptor version {v}");
    let fresh = render_structs(&title, formats::LAYOUT);
    let what = format!("formats descriptor version {v}");
    compare(&dir.join(format!("formats-v{v}.txt")), &fresh, &what);
}

#[test]
fn every_formats_snapshot_is_a_known_descriptor_version() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi");
    for entry in std::fs::read_dir(&dir).expect("abi/ exists") {
        let name = entry.expect("dir entry").file_name();
        let name = name.to_str().expect("utf-8 name");
        let Some(v) = name
            .strip_prefix("formats-v")
            .and_then(|n| n.strip_suffix(".txt"))
        else {
            continue;
        };
        let v: u32 = v.parse().expect("abi/formats-v<N>.txt");
        assert!(
            v == IOMMU_FLB_FORMATS_VERSION,
            "abi/{name} is frozen but the crate describes descriptor version \
             {IOMMU_FLB_FORMATS_VERSION} only"
        );
    }
}

#[test]
fn every_snapshot_belongs_to_a_known_version() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi");
    for entry in std::fs::read_dir(&dir).expect("abi/ exists") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        let Some(v) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".txt")) else {
            continue;
        };
        let v: u64 = v.parse().expect("abi/v<N>.txt");
        assert!(
            LAYOUTS.iter().any(|l| l.version == v),
            "abi/{name} is frozen but the crate no longer describes version {v}"
        );
    }
}

#[test]
fn versions_are_listed_oldest_first_without_gaps() {
    for (i, v) in LAYOUTS.iter().enumerate() {
        assert_eq!(v.version, u64::try_from(i).unwrap() + 1);
    }
}
