//! Generated artifacts are fresh: the checked-in C headers equal what
//! cbindgen produces from the current sources.
//!
//! - `include/iommu_flb.h`, the wire format (`cbindgen.toml`), from
//!   `src/abi/` alone, so nothing but layout and constants can reach it;
//! - `include/iommu_flb_api.h`, the C API (`cbindgen-api.toml`), from
//!   `src/ffi/` alone; it includes the first for the wire structs.
//!
//! Set `IOMMU_FLB_BLESS=1` to rewrite the headers instead of comparing.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs cbindgen with `config` over `builder`'s sources and compares the
/// result with (or, blessing, writes it to) `header`.
fn check(config: &str, header: &str, builder: impl FnOnce(cbindgen::Builder) -> cbindgen::Builder) {
    let config = cbindgen::Config::from_file(root().join(config)).expect("cbindgen config");
    let bindings = builder(cbindgen::Builder::new())
        .with_config(config)
        .generate()
        .expect("cbindgen failed to parse the crate");
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let fresh = kernel_style(&String::from_utf8(raw).expect("cbindgen writes UTF-8")).into_bytes();
    let path = root().join(header);
    if std::env::var_os("IOMMU_FLB_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write header");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{header} is stale: the Rust sources changed the generated header.\n\
         Regenerate it with `scripts/regen` and review the diff."
    );
}

/// The one rewrite of cbindgen's output, so that `scripts/kernel-doc` can
/// parse the header: cbindgen writes the packed attribute between the tag
/// and the name (`struct ATTR name {`), which kernel-doc does not
/// recognize as a struct; the kernel's style puts it after the closing
/// brace (`} ATTR;`), which means the same to the compiler.
fn kernel_style(header: &str) -> String {
    const ATTR: &str = "__attribute__((__packed__))";
    let mut out = String::with_capacity(header.len());
    let mut packed_open = false;
    for line in header.split_inclusive('\n') {
        let moved = ["struct ", "union "].iter().find_map(|tag| {
            line.strip_prefix(tag)?
                .strip_prefix(ATTR)?
                .strip_prefix(' ')
                .map(|rest| (tag, rest))
        });
        if let Some((tag, rest)) = moved {
            assert!(!packed_open, "nested packed definition in cbindgen output");
            packed_open = true;
            out.push_str(tag);
            out.push_str(rest);
        } else if packed_open && line.starts_with("};") {
            packed_open = false;
            out.push_str("} ");
            out.push_str(ATTR);
            out.push_str(&line[1..]);
        } else {
            out.push_str(line);
        }
    }
    assert!(
        !packed_open,
        "unterminated packed definition in cbindgen output"
    );
    out
}

#[test]
#[cfg_attr(miri, ignore = "runs cbindgen over the sources")]
fn checked_in_header_matches_cbindgen_output() {
    check("cbindgen.toml", "include/iommu_flb.h", |b| {
        b.with_src(root().join("src/abi/mod.rs"))
    });
}

#[test]
#[cfg_attr(miri, ignore = "runs cbindgen over the sources")]
fn checked_in_api_header_matches_cbindgen_output() {
    check("cbindgen-api.toml", "include/iommu_flb_api.h", |b| {
        b.with_src(root().join("src/ffi/mod.rs"))
    });
}
