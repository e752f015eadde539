//! The static library under test, and C programs linked with it.
#![allow(dead_code)] // Each test file uses a different part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[path = "../../../tests/c_support/mod.rs"]
pub mod c_support;

use c_support::repo_root;
use iommu_flb_abi::PageMap;

/// `libiommu_flb.a` as shipped: built by cargo in the release profile
/// (`panic = "abort"`), once per test binary. Its path comes from cargo's
/// own report of the artifact.
pub fn staticlib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()))
            .args([
                "build",
                "--release",
                "-p",
                "iommu-flb-capi",
                "--lib",
                "--message-format=json",
            ])
            .current_dir(repo_root())
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build of the staticlib failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 cargo output");
        stdout
            .lines()
            .filter(|l| l.contains("\"compiler-artifact\"") && l.contains("iommu-flb-capi"))
            .flat_map(|l| l.split('"'))
            .find(|s| s.ends_with("libiommu_flb.a"))
            .map(PathBuf::from)
            .expect("cargo reports libiommu_flb.a")
    })
}

/// Compiles `tests/c/<name>.c` against the headers and links it with the
/// static library, as the README's link line says.
pub fn build(dir: &Path, name: &str) -> PathBuf {
    link(dir, name, "c", "gcc", c_support::CFLAGS, &[])
}

/// [`build`], also linking the system libraries `libs` (`-lz`).
pub fn build_with(dir: &Path, name: &str, libs: &[&str]) -> PathBuf {
    link(dir, name, "c", "gcc", c_support::CFLAGS, libs)
}

/// The flags the C++ test is built with (as [`c_support::CFLAGS`] for C).
pub const CXXFLAGS: &[&str] = &["-std=gnu++17", "-Wall", "-Wextra", "-Werror", "-O2"];

/// Compiles `tests/c/<name>.cc` with g++ against the headers and links it
/// with the static library.
pub fn build_cxx(dir: &Path, name: &str) -> PathBuf {
    link(dir, name, "cc", "g++", CXXFLAGS, &[])
}

fn link(dir: &Path, name: &str, ext: &str, cc: &str, flags: &[&str], libs: &[&str]) -> PathBuf {
    let exe = dir.join(name);
    let src = format!("tests/c/{name}.{ext}");
    let mut args = vec![
        "-Iinclude",
        &src,
        staticlib().to_str().expect("utf-8 path"),
        "-lpthread",
        "-ldl",
    ];
    args.extend_from_slice(libs);
    args.extend(["-o", exe.to_str().expect("utf-8 path")]);
    c_support::compile(cc, flags, &args);
    exe
}

/// Writes `map`'s pages as a flat dump starting at `base` (holes are
/// zero) and returns its path.
pub fn flat_dump(map: &PageMap, base: u64, path: &Path) -> PathBuf {
    let end = map
        .iter()
        .map(|(p, page)| p.get() - base + page.len() as u64)
        .max()
        .unwrap_or(0);
    let mut bytes = vec![0u8; usize::try_from(end).expect("dump fits memory")];
    for (phys, page) in map.iter() {
        let off = usize::try_from(phys.get() - base).expect("page above base");
        bytes[off..off + page.len()].copy_from_slice(page);
    }
    std::fs::write(path, &bytes).expect("write dump");
    path.to_path_buf()
}
