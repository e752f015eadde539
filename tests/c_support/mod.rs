//! Building and running the C test programs of `tests/c/`, and the text
//! they exchange with the Rust side (flat dumps, object manifests).
//!
//! Shared by this crate's `tests/c_old_kernel.rs` and the `capi` crate's C
//! API tests (which include this file by path).
#![allow(dead_code)] // Each test file uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iommu_flb_abi::reader::{self, Options, ScratchElem};
use iommu_flb_abi::{FlatMemory, PhysAddr};

/// The flags every C test is built with.
pub const CFLAGS: &[&str] = &["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"];

/// Kernel mode: what kernel code compiles with, and only `<linux/types.h>`.
pub const KERNEL_CFLAGS: &[&str] = &[
    "-D__KERNEL__",
    "-nostdinc",
    "-ffreestanding",
    "-Itests/c/kinclude",
];

/// The repository root: the nearest ancestor of the including crate that
/// holds `include/iommu_flb.h`.
pub fn repo_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .find(|d| d.join("include/iommu_flb.h").is_file())
        .expect("repository root above CARGO_MANIFEST_DIR")
        .to_path_buf()
}

/// A scratch directory for this test binary's outputs.
pub fn out_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create test output directory");
    dir
}

/// Runs gcc from the repository root with [`CFLAGS`] and `args`.
pub fn gcc(args: &[&str]) {
    compile("gcc", CFLAGS, args);
}

/// Runs the compiler `cc` from the repository root with `flags` and `args`.
pub fn compile(cc: &str, flags: &[&str], args: &[&str]) {
    let output = Command::new(cc)
        .args(flags)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{cc} must be installed to run the C tests: {e}"));
    assert!(
        output.status.success(),
        "{cc} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a program and returns what it did.
pub fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

/// Runs a program that must succeed and returns its stdout.
pub fn run_ok(exe: &Path, args: &[&str]) -> String {
    let out = run(exe, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// One line of a manifest or of a C program's report: a word, then
/// numbers (C prints them as `%#llx` or `%u`; `0x0` prints as `0`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub what: String,
    pub values: Vec<u64>,
}

impl Line {
    pub fn new(what: &str, values: &[u64]) -> Line {
        Line {
            what: what.to_string(),
            values: values.to_vec(),
        }
    }

    /// Parses `word n n n ...`.
    pub fn parse(text: &str) -> Line {
        let mut words = text.split_whitespace();
        let what = words.next().expect("empty line").to_string();
        let values = words
            .map(|w| {
                let n = match w.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => w.parse(),
                };
                n.unwrap_or_else(|e| panic!("bad number {w:?} in {text:?}: {e}"))
            })
            .collect();
        Line { what, values }
    }
}

/// What `tests/c/old_kernel_writer.c` wrote: the dump's base, the root,
/// and one line per live object (`iommu`, `domain`, `device`).
#[derive(Clone, Debug)]
pub struct Manifest {
    pub dump: PathBuf,
    pub base: u64,
    pub root: u64,
    pub objects: Vec<Line>,
}

/// Builds and runs the "old kernel" C program, which writes a version-1
/// image with nothing but the header's structs.
pub fn old_kernel_image(dir: &Path) -> Manifest {
    let exe = dir.join("old_kernel_writer");
    gcc(&[
        "-Iinclude",
        "tests/c/old_kernel_writer.c",
        "-o",
        exe.to_str().expect("utf-8 path"),
    ]);
    let dump = dir.join("old_kernel.dump");
    let text = run_ok(&exe, &[dump.to_str().expect("utf-8 path")]);
    let mut base = None;
    let mut root = None;
    let mut objects = Vec::new();
    for line in text.lines().map(Line::parse) {
        match line.what.as_str() {
            "base" => base = line.values.first().copied(),
            "root" => root = line.values.first().copied(),
            _ => objects.push(line),
        }
    }
    Manifest {
        dump,
        base: base.expect("manifest names the base"),
        root: root.expect("manifest names the root"),
        objects,
    }
}

/// The lines of a C program's report that start with `prefix` (and a
/// space), with the prefix removed, parsed.
pub fn section(text: &str, prefix: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .map(Line::parse)
        .collect()
}

/// What the Rust reader sees in a flat dump, in the manifests' line format:
/// the live IOMMUs, domains and devices, each in chain order.
pub fn reader_objects(base: u64, root: u64, bytes: &[u8]) -> Vec<Line> {
    let mem = FlatMemory::new(PhysAddr::new(base), bytes);
    let root = PhysAddr::new(root);
    let opts = Options::default();
    let n = reader::scratch_len(&mem, root, &opts).expect("scratch_len");
    let mut scratch = vec![ScratchElem::default(); n];
    let image = reader::validate(&mem, root, &opts, &mut scratch)
        .unwrap_or_else(|e| panic!("the image is refused: {e}"));
    let mut lines = Vec::new();
    for i in image.iommus() {
        let values = [
            i.phys().get(),
            i.token(),
            i.iommu_type().wire(),
            u64::from(i.ref_count()),
        ];
        lines.push(Line::new("iommu", &values));
    }
    for d in image.domains() {
        let vasz = u64::from(d.vasz());
        lines.push(Line::new(
            "domain",
            &[d.phys().get(), d.top_table_phys().get(), vasz],
        ));
    }
    for d in image.devices() {
        let values = [
            d.phys().get(),
            u64::from(d.segment()),
            u64::from(d.devid()),
            d.domain().phys().get(),
            d.iommu().phys().get(),
        ];
        lines.push(Line::new("device", &values));
    }
    lines
}
