//! Generated artifacts are fresh: the checked-in C header equals what
//! cbindgen produces from the current sources.
//!
//! Set `IOMMU_FLB_BLESS=1` to rewrite the header instead of comparing.

use std::path::Path;

#[test]
#[cfg_attr(miri, ignore = "runs cbindgen over the sources")]
fn checked_in_header_matches_cbindgen_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to parse the crate");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = root.join("include/iommu_flb.h");
    if std::env::var_os("IOMMU_FLB_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write header");
        return;
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/iommu_flb.h is stale: the Rust sources changed the generated header.\n\
         Regenerate it with `scripts/regen` and review the diff."
    );
}
