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

/// The two rewrites of cbindgen's output, into the kernel's style:
///
/// - the fixed-width integers C's `<stdint.h>` names (`uint8_t` ...
///   `uint64_t`, which cbindgen writes for Rust's `u8` ... `u64`) are
///   spelled as the kernel's headers shared with userspace spell them
///   (`__u8` ... `__u64`): `<linux/types.h>` defines them in kernel mode,
///   and the header's userspace branch defines them as uapi's
///   `<linux/types.h>` does, so both may be included;
/// - so that `scripts/kernel-doc` can parse the header: cbindgen writes the
///   packed attribute between the tag and the name (`struct ATTR name {`),
///   which kernel-doc does not recognize as a struct; the kernel's style
///   puts it after the closing brace (`} ATTR;`), which means the same to
///   the compiler.
fn kernel_style(header: &str) -> String {
    let header = kernel_types(header);
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

/// `uintN_t` -> `__uN` wherever cbindgen wrote it as a whole word.
fn kernel_types(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    let mut rest = header;
    while let Some(at) = rest.find("uint") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let word_start = !before
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let bits = ["8", "16", "32", "64"].into_iter().find(|b| {
            from[4..].starts_with(&format!("{b}_t"))
                && !from[4 + b.len() + 2..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        match bits {
            Some(b) if word_start => {
                out.push_str("__u");
                out.push_str(b);
                rest = &from[4 + b.len() + 2..];
            }
            _ => {
                out.push_str("uint");
                rest = &from[4..];
            }
        }
    }
    out.push_str(rest);
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
