//! The ABI guard: every released layout is frozen in `abi/v{N}.txt`.
//!
//! The test renders each version's layout from the Rust types and compares
//! it with the snapshot. Changing a field's type, order or size therefore
//! fails here (and in the `const_assert`s of `src/abi/`), unless the change
//! comes as a new version with a new snapshot. A missing snapshot is written
//! on first run (a new version); an existing one is never rewritten.

use std::fmt::Write as _;
use std::path::Path;

use iommu_flb_abi::abi::{LAYOUTS, VersionLayout};

fn render(v: &VersionLayout) -> String {
    let mut out = String::new();
    writeln!(out, "# IOMMU live-update FLB ABI, version {}", v.version).unwrap();
    writeln!(
        out,
        "# Frozen at release; never edit. A layout change needs a new version."
    )
    .unwrap();
    writeln!(out, "# struct <tag> size <bytes> align <bytes>").unwrap();
    writeln!(out, "#   <offset> <size> <c type> <field>").unwrap();
    for s in v.structs {
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
        let fresh = render(v);
        let Ok(frozen) = std::fs::read_to_string(&path) else {
            std::fs::write(&path, &fresh).expect("write new snapshot");
            panic!(
                "{} did not exist; wrote it. Review and commit it.",
                path.display()
            );
        };
        assert!(
            frozen == fresh,
            "the layout of version {} differs from {}.\n\
             A released layout never changes: add a new version (src/abi/vN.rs) with its own \
             snapshot instead.\n--- frozen\n{frozen}\n--- now\n{fresh}",
            v.version,
            path.display()
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
