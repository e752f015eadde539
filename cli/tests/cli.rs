//! The `iommu-flb` binary, run as scripts run it: exit codes, standard
//! output and standard error, on images from `gen`, hand-corrupted images,
//! truncated and empty files.
//!
//! The snapshot of `demo`'s output is `tests/golden/demo.txt`; set
//! `IOMMU_FLB_BLESS=1` to rewrite it instead of comparing.
//!
//! Not under miri, which cannot spawn processes; `hostile.rs` runs the same
//! read path in-process.
#![cfg(not(miri))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "common/kdump.rs"]
mod kdump_files;
use kdump_files::{Built, Comp, Spec, build, flatten, pages_of_flat};

const BIN: &str = env!("CARGO_BIN_EXE_iommu-flb");

/// Runs the binary with `args`.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run iommu-flb")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// Runs `args`, expects exit `code` and `needle` on stderr.
#[track_caller]
fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    assert_exit(&o, code);
    assert!(
        stderr(&o).contains(needle),
        "{needle:?} not in {}",
        stderr(&o)
    );
}

/// A fresh directory for one test's files.
fn tmp(test: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("iommu-flb-cli-tests-{}", std::process::id()))
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Runs `gen` with `extra` arguments into `file` and returns its output.
/// The image is version 1 (which most of these tests mangle) unless
/// `extra` names a version.
fn generate(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["gen", "-o", path(file)];
    if !extra.contains(&"--abi-version") {
        args.extend_from_slice(&["--abi-version", "1"]);
    }
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_exit(&o, 0);
    stdout(&o)
}

/// An ELF image from `gen` with its defaults.
fn elf_image(dir: &Path) -> PathBuf {
    let file = dir.join("image.elf");
    generate(&file, &[]);
    file
}

/// A flat dump from `gen --format phys`, and its root address.
fn phys_image(dir: &Path, extra: &[&str]) -> (PathBuf, String) {
    let file = dir.join("image.bin");
    let mut args = vec!["--format", "phys"];
    args.extend_from_slice(extra);
    let out = generate(&file, &args);
    let root = out.lines().last().expect("a last line").to_owned();
    assert!(root.starts_with("0x"), "last line is the root: {out}");
    (file, root)
}

fn read_u64(bytes: &[u8], at: u64) -> u64 {
    let at = usize::try_from(at).unwrap();
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn write_u32(bytes: &mut [u8], at: u64, v: u32) {
    let at = usize::try_from(at).unwrap();
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn write_u64(bytes: &mut [u8], at: u64, v: u64) {
    let at = usize::try_from(at).unwrap();
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn parse_root(root: &str) -> u64 {
    u64::from_str_radix(root.trim_start_matches("0x"), 16).unwrap()
}

// --- demo ------------------------------------------------------------------

#[test]
fn demo_output_matches_the_golden_snapshot() {
    let o = run(&["demo"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo.txt");
    if std::env::var_os("IOMMU_FLB_BLESS").is_some() {
        std::fs::write(&golden, &out).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    assert!(
        out == expected,
        "demo output differs from tests/golden/demo.txt (IOMMU_FLB_BLESS=1 rewrites it):\n{out}"
    );
}

#[test]
fn demo_validates_a_mixed_image_with_unpreserved_devices() {
    let o = run(&["demo"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("valid: version 1"), "{out}");
    assert!(out.contains(" intel ") && out.contains(" smmuv3 "), "{out}");
    assert!(
        out.contains("deleted: 0 IOMMUs, 0 domains, 12 devices"),
        "{out}"
    );
    assert!(out.contains("device chain 2"), "two device pages: {out}");
}

#[test]
fn demo_takes_no_arguments() {
    assert_exit(&run(&["demo", "extra"]), 2);
}

// --- gen, validate, inspect on good images -----------------------------------

#[test]
fn gen_elf_image_validates_without_root_thanks_to_its_note() {
    let dir = tmp("gen_elf");
    let file = dir.join("image.elf");
    let out = generate(
        &file,
        &[
            "--iommus",
            "3",
            "--domains",
            "5",
            "--devices",
            "70",
            "--deleted",
            "4",
        ],
    );
    assert!(out.contains("ELF64 core file"), "{out}");
    let o = run(&["validate", path(&file)]);
    assert_exit(&o, 0);
    let line = stdout(&o);
    assert_eq!(line.lines().count(), 1, "one summary line: {line}");
    assert!(
        line.contains("3 IOMMUs, 5 domains, 70 devices live, 4 deleted records"),
        "{line}"
    );
}

#[test]
fn page_size_goes_with_every_command_and_must_match_the_image() {
    let dir = tmp("page_size");
    for (ps, pages) in [("16384", "4 pages"), ("65536", "4 pages")] {
        let elf = dir.join(format!("image-{ps}.elf"));
        // 200 devices fit one device page at 16 KiB (227) and 64 KiB (910).
        let out = generate(&elf, &["--devices", "200", "--page-size", ps]);
        assert!(out.contains(pages), "{out}");
        let o = run(&["validate", "--page-size", ps, path(&elf)]);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("200 devices live"), "{}", stdout(&o));
        let o = run(&["inspect", "--json", "--page-size", ps, path(&elf)]);
        assert_exit(&o, 0);
        // Read as 4 KiB pages, the image is not one: refused, not a usage
        // error.
        assert_exit(&run(&["validate", path(&elf)]), 1);

        let flat = dir.join(format!("image-{ps}.bin"));
        let o = run(&[
            "gen",
            "--abi-version",
            "1",
            "--format",
            "phys",
            "--page-size",
            ps,
            "-o",
            path(&flat),
        ]);
        assert_exit(&o, 0);
        let root = stdout(&o).lines().last().unwrap().to_owned();
        let o = run(&["validate", "--page-size", ps, "--root", &root, path(&flat)]);
        assert_exit(&o, 0);
        let o = run(&["demo", "--page-size", ps]);
        assert_exit(&o, 0);
    }
    assert_fails(
        &["validate", "--page-size", "8192", "x"],
        2,
        "use 4096, 16384 or 65536",
    );
}

#[test]
fn gen_phys_prints_the_root_last_and_validate_needs_it() {
    let dir = tmp("gen_phys");
    let (file, root) = phys_image(&dir, &["--vendor", "intel"]);
    let o = run(&["validate", "--root", &root, path(&file)]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("root {root}")));

    // The same root in decimal.
    let dec = parse_root(&root).to_string();
    assert_exit(&run(&["validate", "--root", &dec, path(&file)]), 0);

    // Without --root: the scan finds it.
    let o = run(&["validate", path(&file)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("root {root}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn base_shifts_a_flat_dump() {
    let dir = tmp("base");
    let (file, root) = phys_image(&dir, &[]);
    // The file starts at physical 0; claiming it starts at 0x1000 moves
    // every page, and the root page read is a different one.
    let o = run(&["validate", "--base", "0x1000", "--root", &root, path(&file)]);
    assert_exit(&o, 1);
    // Cut the first MiB off and say where the rest starts: valid again.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &bytes[0x10_0000..]).unwrap();
    let o = run(&[
        "validate",
        "--base",
        "0x100000",
        "--root",
        &root,
        path(&cut),
    ]);
    assert_exit(&o, 0);
}

#[test]
fn same_seed_gives_the_same_file() {
    let dir = tmp("seed");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    generate(&a, &["--seed", "9"]);
    generate(&b, &["--seed", "9"]);
    generate(&c, &["--seed", "10"]);
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}

#[test]
fn inspect_lists_live_records_and_resolves_devices() {
    let dir = tmp("inspect_text");
    let file = dir.join("image.elf");
    generate(
        &file,
        &[
            "--iommus",
            "2",
            "--domains",
            "2",
            "--devices",
            "4",
            "--deleted",
            "1",
        ],
    );
    let o = run(&["inspect", path(&file)]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("live: 2 IOMMUs, 2 domains, 4 devices"),
        "{out}"
    );
    assert_eq!(out.matches("-> domain #").count(), 4, "{out}");
    assert!(!out.contains("DELETED"), "{out}");
    let o = run(&["inspect", "--all", path(&file)]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert_eq!(out.matches("-> domain #").count(), 5, "{out}");
    assert_eq!(out.matches("(DELETED)").count(), 1, "{out}");
}

/// The keys of a JSON object.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn inspect_json_has_the_kernel_field_names_and_integer_numbers() {
    let dir = tmp("inspect_json");
    let (file, root) = phys_image(
        &dir,
        &[
            "--iommus",
            "2",
            "--domains",
            "3",
            "--devices",
            "6",
            "--deleted",
            "2",
        ],
    );
    let o = run(&["inspect", "--json", "--root", &root, path(&file)]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(
        keys(&v),
        [
            "version",
            "root_phys",
            "pages",
            "iommus",
            "domains",
            "devices"
        ]
    );
    assert_eq!(v["version"], 1);
    let pages = v["pages"].as_array().expect("pages");
    assert_eq!(pages[0]["chain"], "root");
    assert_eq!(pages[0]["phys"].as_u64(), Some(parse_root(&root)));
    let chains: Vec<&str> = pages.iter().map(|p| p["chain"].as_str().unwrap()).collect();
    assert_eq!(chains, ["root", "iommu", "domain", "device"]);
    assert_eq!(v["root_phys"].as_u64(), Some(parse_root(&root)));

    let iommus = v["iommus"].as_array().unwrap();
    assert_eq!(iommus.len(), 2);
    let intel = iommus
        .iter()
        .find(|u| u["type"] == 1)
        .expect("an Intel IOMMU");
    assert_eq!(
        keys(intel),
        ["phys", "ref_count", "flags", "token", "type", "intel"]
    );
    assert_eq!(
        keys(&intel["intel"]),
        [
            "restored",
            "phys_addr",
            "root_table",
            "context_tables_bitmap"
        ]
    );
    let smmu = iommus.iter().find(|u| u["type"] == 2).expect("an SMMUv3");
    assert_eq!(
        keys(&smmu["smmuv3"]),
        [
            "phys_addr",
            "strtab_base_cfg",
            "l1_strtab_lu_state",
            "l2_strtab_lu_states_phys"
        ]
    );

    let domains = v["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 3);
    assert_eq!(
        keys(&domains[0]),
        [
            "phys",
            "ref_count",
            "flags",
            "top_table_phys",
            "top_level",
            "vasz",
            "sign_extend",
            "restored_domain"
        ]
    );

    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 6, "live devices only");
    for d in devices {
        let k = keys(d);
        assert_eq!(
            k[..9],
            [
                "phys",
                "ref_count",
                "flags",
                "devid",
                "pci_domain_nr",
                "dma_owner_token",
                "attachment_id",
                "domain_phys",
                "iommu_phys"
            ]
        );
        assert!(k[9] == "intel" || k[9] == "smmuv3", "{k:?}");
        // Every device names a listed domain and IOMMU.
        assert!(domains.iter().any(|x| x["phys"] == d["domain_phys"]));
        assert!(iommus.iter().any(|x| x["phys"] == d["iommu_phys"]));
    }

    // Every number is a JSON integer, nowhere a string or a float (the
    // pages' `chain` is a name).
    fn all_integers(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_u64(),
            Value::Array(a) => a.iter().all(all_integers),
            Value::Object(m) => m.values().all(all_integers),
            _ => false,
        }
    }
    let mut numbers = v.clone();
    for p in numbers["pages"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("chain");
    }
    assert!(all_integers(&numbers));

    // The physical address of a record is where its bytes are.
    let bytes = std::fs::read(&file).unwrap();
    let dev = &devices[0];
    let phys = dev["phys"].as_u64().unwrap();
    assert_eq!(
        read_u64(&bytes, phys + 16),
        dev["dma_owner_token"].as_u64().unwrap()
    );

    let o = run(&["inspect", "--json", "--all", "--root", &root, path(&file)]);
    assert_exit(&o, 0);
    let all: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(all["devices"].as_array().unwrap().len(), 8);
}

// --- refused images -----------------------------------------------------------

/// A flat image, one field corrupted by `corrupt(bytes, root)`: `validate`
/// and `inspect` both exit 1, print nothing on stdout, and name the place.
#[track_caller]
fn assert_refused(test: &str, corrupt: impl Fn(&mut Vec<u8>, u64), expect: &[&str]) {
    let dir = tmp(test);
    let (file, root) = phys_image(&dir, &["--devices", "8", "--deleted", "1"]);
    let mut bytes = std::fs::read(&file).unwrap();
    corrupt(&mut bytes, parse_root(&root));
    let bad = dir.join("bad.bin");
    std::fs::write(&bad, &bytes).unwrap();
    for cmd in ["validate", "inspect"] {
        let o = run(&[cmd, "--root", &root, path(&bad)]);
        assert_exit(&o, 1);
        assert!(o.stdout.is_empty(), "{cmd} printed {}", stdout(&o));
        let err = stderr(&o);
        assert!(err.contains("invalid image"), "{err}");
        for e in expect {
            assert!(err.contains(e), "{cmd}: {e:?} not in {err}");
        }
    }
}

/// Offset of the root's field for the head of `chain` (0 IOMMU, 1 domain,
/// 2 device).
fn head(bytes: &[u8], root: u64, chain: u64) -> u64 {
    read_u64(bytes, root + 8 + 8 * chain)
}

#[test]
fn unsupported_version_is_refused_naming_the_root() {
    assert_refused(
        "version",
        |b, root| write_u64(b, root, 7),
        &["root at", "version", "unsupported version 7"],
    );
}

#[test]
fn count_above_capacity_is_refused_naming_the_page() {
    assert_refused(
        "nr_objects",
        |b, root| {
            let page = head(b, root, 2);
            write_u64(b, page + 8, 57);
        },
        &["device chain page 0", "nr_objects"],
    );
}

#[test]
fn device_with_zero_ref_count_is_refused_naming_the_object_and_field() {
    assert_refused(
        "ref_count",
        |b, root| {
            let page = head(b, root, 2);
            // Object 3 of the head page (72-byte records after the header).
            let rec = page + 16 + 3 * 72;
            write_u32(b, rec, 0);
        },
        &["device chain page 0", "object 3", "ref_count"],
    );
}

#[test]
fn device_pointing_at_no_domain_is_refused_naming_domain_phys() {
    assert_refused(
        "domain_phys",
        |b, root| {
            let page = head(b, root, 2);
            // First live device: find an object without the DELETED flag.
            let rec = (0..8)
                .map(|i| page + 16 + i * 72)
                .find(|&r| b[usize::try_from(r + 4).unwrap()] & 1 == 0)
                .unwrap();
            write_u64(b, rec + 32, 0x10_0008);
        },
        &["device chain page 0", "domain_phys"],
    );
}

#[test]
fn chain_cycle_is_refused() {
    assert_refused(
        "cycle",
        |b, root| {
            let page = head(b, root, 1);
            write_u64(b, page, page); // next_array_phys = itself
        },
        &["domain chain page"],
    );
}

#[test]
fn incoming_flag_is_refused_in_handover_mode_and_accepted_in_restored_mode() {
    let dir = tmp("incoming");
    let (file, root) = phys_image(&dir, &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    let page = head(&bytes, parse_root(&root), 1);
    write_u32(&mut bytes, page + 16 + 4, 2); // domain 0 flags = INCOMING
    let bad = dir.join("restored.bin");
    std::fs::write(&bad, &bytes).unwrap();
    assert_fails(
        &["validate", "--root", &root, path(&bad)],
        1,
        "domain chain page 0",
    );
    let o = run(&[
        "validate",
        "--mode",
        "restored",
        "--root",
        &root,
        path(&bad),
    ]);
    assert_exit(&o, 0);
    let o = run(&["inspect", "--mode", "restored", "--root", &root, path(&bad)]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("(INCOMING)"), "{}", stdout(&o));
}

#[test]
fn wrong_root_is_refused_not_a_usage_error() {
    let dir = tmp("wrong_root");
    let (file, _) = phys_image(&dir, &[]);
    let o = run(&["validate", "--root", "0x0", path(&file)]);
    assert_exit(&o, 1);
    let o = run(&["validate", "--root", "0x7fff0000000", path(&file)]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("root at 0x7fff0000000"),
        "{}",
        stderr(&o)
    );
}

// --- truncated, empty, missing and malformed files ------------------------------

#[test]
fn empty_file_is_a_usage_error() {
    let dir = tmp("empty");
    let file = dir.join("empty");
    std::fs::write(&file, b"").unwrap();
    for args in [
        vec!["validate", path(&file)],
        vec!["inspect", "--root", "0x1000", path(&file)],
        vec![
            "validate",
            "--format",
            "phys",
            "--root",
            "0x1000",
            path(&file),
        ],
    ] {
        let o = run(&args);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains("the file is empty"), "{}", stderr(&o));
    }
}

#[test]
fn missing_file_is_a_usage_error() {
    assert_fails(
        &["validate", "/nonexistent/iommu-flb-image"],
        2,
        "cannot read",
    );
}

#[test]
fn truncated_elf_file_is_a_usage_error_naming_the_segment() {
    let dir = tmp("truncated_elf");
    let file = elf_image(&dir);
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.elf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let o = run(&["validate", path(&cut)]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("PT_LOAD") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn elf_file_cut_inside_its_header_is_a_usage_error() {
    let dir = tmp("elf_header");
    let file = elf_image(&dir);
    let bytes = std::fs::read(&file).unwrap();
    for len in [4, 30, 100] {
        let cut = dir.join(format!("cut{len}"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let o = run(&["validate", path(&cut)]);
        assert_exit(&o, 2);
    }
}

#[test]
fn truncated_flat_dump_is_refused_at_the_missing_page() {
    let dir = tmp("truncated_phys");
    // Find a seed whose image has a chain page above the root, so a cut
    // between them keeps the root and loses that page.
    let (file, r, first_above) = (0..32)
        .find_map(|seed| {
            let (file, root) = phys_image(&dir, &["--seed", &seed.to_string()]);
            let bytes = std::fs::read(&file).unwrap();
            let r = parse_root(&root);
            let above = (0..3)
                .map(|c| head(&bytes, r, c))
                .filter(|&h| h > r)
                .min()?;
            Some((file, r, above))
        })
        .expect("some seed puts a chain head above the root");
    let root = format!("{r:#x}");
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.bin");
    std::fs::write(&cut, &bytes[..usize::try_from(first_above).unwrap()]).unwrap();
    let o = run(&["validate", "--root", &root, path(&cut)]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains("root at") && err.contains(&format!("{first_above:#x}")),
        "the root's head field names the lost page: {err}"
    );

    // Cut inside the root's page: the root itself is unreadable.
    let cut = dir.join("cut_root.bin");
    std::fs::write(&cut, &bytes[..usize::try_from(r + 100).unwrap()]).unwrap();
    let o = run(&["validate", "--root", &root, path(&cut)]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains(&format!("root at {root}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn elf_without_a_root_note_is_read_at_the_root_the_scan_finds() {
    let dir = tmp("no_note");
    let file = dir.join("image.elf");
    let out = generate(&file, &[]);
    let root = out
        .split("root ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_owned();
    let mut bytes = std::fs::read(&file).unwrap();
    // Rename the note's owner: the IOMMUFLB note is gone.
    let at = bytes
        .windows(8)
        .position(|w| w == b"IOMMUFLB")
        .expect("the note name");
    bytes[at] = b'X';
    let renamed = dir.join("renamed.elf");
    std::fs::write(&renamed, &bytes).unwrap();
    let o = run(&["validate", path(&renamed)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("root {root}")),
        "{}",
        stdout(&o)
    );
    assert_exit(&run(&["validate", "--root", &root, path(&renamed)]), 0);
}

#[test]
fn base_with_an_elf_file_is_a_usage_error() {
    let dir = tmp("elf_base");
    let file = elf_image(&dir);
    assert_fails(&["validate", "--base", "0x1000", path(&file)], 2, "--base");
}

#[test]
fn format_elf_on_a_flat_dump_is_a_usage_error() {
    let dir = tmp("elf_on_phys");
    let (file, root) = phys_image(&dir, &[]);
    assert_fails(
        &["validate", "--format", "elf", "--root", &root, path(&file)],
        2,
        "ELF magic",
    );
}

// --- kdump-compressed and flattened dumps --------------------------------------------

/// A kdump-compressed header as QEMU's `dump-guest-memory -z` writes it on
/// x86_64 (little-endian `DiskDumpHeader64`): `KDUMP   `, header_version 6
/// at 8, status (zlib) at 424, block_size 4096 at 428; zeros up to 16 KiB,
/// so no valid kdump file.
fn kdump_header_file(dir: &Path) -> PathBuf {
    let mut bytes = vec![0u8; 0x4000];
    bytes[..8].copy_from_slice(b"KDUMP   ");
    write_u32(&mut bytes, 8, 6);
    write_u32(&mut bytes, 424, 0x1);
    write_u32(&mut bytes, 428, 4096);
    let file = dir.join("guest.kdump");
    std::fs::write(&file, bytes).unwrap();
    file
}

/// The image `gen` writes with `extra`, as an ELF file and as a
/// kdump-compressed dump of `comp` made from the flat dump of the same
/// image (all-zero pages excluded), with the root's address.
fn kdump_and_elf(dir: &Path, comp: Comp, extra: &[&str]) -> (PathBuf, PathBuf, String, Built) {
    let (flat, root) = phys_image(dir, extra);
    let elf = dir.join("image.elf");
    generate(&elf, extra);
    let bytes = std::fs::read(&flat).unwrap();
    let pages = pages_of_flat(&bytes);
    let max_mapnr = bytes.len().div_ceil(4096) as u64 + 3;
    let built = build(&Spec::x86_64(comp, max_mapnr), &pages);
    let kdump = dir.join("image.kdump");
    std::fs::write(&kdump, &built.bytes).unwrap();
    (kdump, elf, root, built)
}

/// Runs `args` on `file` and returns stdout, expecting exit 0; the file's
/// name is replaced by FILE so that outputs of two files compare.
fn output_of(args: &[&str], file: &Path) -> String {
    let mut all = args.to_vec();
    all.push(path(file));
    let o = run(&all);
    assert_exit(&o, 0);
    stdout(&o).replace(path(file), "FILE")
}

#[test]
fn an_image_in_a_kdump_file_reads_exactly_like_the_same_image_in_an_elf_file() {
    let dir = tmp("kdump_like_elf");
    for comp in [Comp::Zlib, Comp::Snappy, Comp::Zstd, Comp::Raw] {
        let (kdump, elf, root, built) = kdump_and_elf(&dir, comp, &["--seed", "7"]);
        let flattened = dir.join("image.flat");
        std::fs::write(&flattened, flatten(&built.bytes, 8192)).unwrap();
        for args in [
            &["validate", "--root", &root][..],
            &["inspect", "--root", &root],
            &["inspect", "--all", "--json", "--root", &root],
        ] {
            let want = output_of(args, &elf);
            assert!(
                want.contains("0x101000") || want.contains("1052672"),
                "{want}"
            );
            assert_eq!(output_of(args, &kdump), want, "{comp:?} {args:?}");
            assert_eq!(
                output_of(args, &flattened),
                want,
                "{comp:?} flattened {args:?}"
            );
            let mut named = args.to_vec();
            named.extend(["--format", "kdump"]);
            assert_eq!(output_of(&named, &kdump), want, "{comp:?} --format kdump");
            let mut named = args.to_vec();
            named.extend(["--format", "flattened"]);
            assert_eq!(
                output_of(&named, &flattened),
                want,
                "{comp:?} --format flattened"
            );
        }
    }
}

#[test]
fn a_kdump_file_is_read_at_the_root_the_scan_finds() {
    let dir = tmp("kdump_no_root");
    let (kdump, _, root, _) = kdump_and_elf(&dir, Comp::Zlib, &[]);
    let o = run(&["validate", path(&kdump)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("root {root}")),
        "{}",
        stdout(&o)
    );
    let o = run(&["scan", path(&kdump)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("root {root} (version-1 root structure): valid")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_malformed_page_descriptor_under_the_image_is_a_container_error_not_a_refused_image() {
    let dir = tmp("kdump_bad_desc");
    let (kdump, _, root, built) = kdump_and_elf(&dir, Comp::Zlib, &[]);
    let pfn = parse_root(&root) / 4096;
    let desc = built.desc[&pfn];
    let mut bytes = built.bytes.clone();
    write_u32(&mut bytes, desc as u64 + 12, 0x40);
    std::fs::write(&kdump, &bytes).unwrap();
    let o = run(&["validate", "--root", &root, path(&kdump)]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "image.kdump: malformed kdump-compressed dump: at file offset {desc:#x}: the page \
             descriptor of page frame {pfn:#x}: flags 0x40 name no compression the tool knows; \
             so the image cannot be read: root"
        )),
        "{err}"
    );
    // A root in a page the dump left out is an unreadable page: a refused
    // image, as for an ELF file.
    let o = run(&["validate", "--root", "0x0", path(&kdump)]);
    assert_exit(&o, 1);
}

#[test]
fn a_kdump_file_with_an_unknown_compression_is_named_and_refused() {
    let dir = tmp("kdump_unknown");
    let (kdump, _, root, built) = kdump_and_elf(&dir, Comp::Zlib, &[]);
    let mut bytes = built.bytes.clone();
    write_u32(&mut bytes, 424, 0x80);
    std::fs::write(&kdump, &bytes).unwrap();
    assert_fails(
        &["validate", "--root", &root, path(&kdump)],
        2,
        "image.kdump: kdump-compressed with an unknown compression (status 0x80 at file offset \
         0x1a8",
    );
}

#[test]
fn a_kdump_header_without_the_rest_of_the_file_is_a_container_error() {
    let dir = tmp("kdump_header_only");
    let file = kdump_header_file(&dir);
    assert_fails(
        &["validate", "--root", "0x1000", path(&file)],
        2,
        "guest.kdump: malformed kdump-compressed dump: at file offset 0x1b0: sub_hdr_size is 0x0",
    );
}

#[test]
fn diskdump_signature_is_named_with_advice_not_read_as_flat() {
    let dir = tmp("diskdump");
    let file = kdump_header_file(&dir);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[..8].copy_from_slice(b"DISKDUMP");
    std::fs::write(&file, &bytes).unwrap();
    for args in [
        &["validate", path(&file)][..],
        &["inspect", "--root", "0x1000", path(&file)],
        &["validate", "--format", "elf", path(&file)],
    ] {
        let o = run(args);
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains(
                "guest.kdump: diskdump dump (DISKDUMP signature) (makedumpfile header \
                          version 6, block size 4096); this tool cannot read diskdump dumps"
            ),
            "{err}"
        );
        assert!(!err.contains("invalid image"), "{err}");
    }
}

#[test]
fn format_elf_on_a_kdump_file_names_what_it_is() {
    let dir = tmp("kdump_as_elf");
    let (kdump, _, root, _) = kdump_and_elf(&dir, Comp::Zlib, &[]);
    assert_fails(
        &["validate", "--format", "elf", "--root", &root, path(&kdump)],
        2,
        "--format elf: the file is a kdump-compressed dump, not that; --format auto reads it",
    );
}

/// Runs `args`, expects exit 2 and `needle` on stderr, and no word of a
/// corrupt image.
#[track_caller]
fn assert_unreadable_format(args: &[&str], needle: &str) {
    let o = run(args);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.contains(needle), "{needle:?} not in {err}");
    for word in ["corrupt", "root page", "refused"] {
        assert!(!err.contains(word), "{word:?} in {err}");
    }
}

#[test]
fn elf_file_that_is_not_a_core_is_a_usage_error() {
    let dir = tmp("not_core");
    let file = elf_image(&dir);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[16..18].copy_from_slice(&2u16.to_le_bytes()); // e_type = ET_EXEC
    std::fs::write(&file, bytes).unwrap();
    assert_unreadable_format(
        &["validate", path(&file)],
        "not an ELF core file: e_type is 2, expected 4 (ET_CORE)",
    );
}

#[test]
fn format_phys_reads_a_kdump_file_as_flat_bytes_when_asked() {
    let dir = tmp("kdump_phys");
    let file = kdump_header_file(&dir);
    // Read as flat bytes, the zeros at 0x1000 are no valid root: the image
    // is refused (exit 1), and the container is not named.
    let o = run(&[
        "validate",
        "--format",
        "phys",
        "--root",
        "0x1000",
        path(&file),
    ]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("invalid image: root at 0x1000"), "{err}");
    assert!(!err.contains("kdump-compressed"), "{err}");
}

// --- usage --------------------------------------------------------------------------

#[test]
fn malformed_options_are_usage_errors() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["validate"],
        vec!["validate", "--root", "0xzz", "f"],
        vec!["validate", "--root", "-1", "f"],
        vec!["validate", "--format", "tar", "f"],
        vec!["validate", "--mode", "later", "f"],
        vec!["gen"],
        vec!["gen", "-o", "/dev/null", "--vendor", "amd"],
        vec!["gen", "-o", "/dev/null", "--devices", "ten"],
    ] {
        assert_exit(&run(&args), 2);
    }
}

#[test]
fn impossible_gen_request_is_a_usage_error() {
    let o = run(&["gen", "-o", "/dev/null", "--iommus", "5", "--devices", "2"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("every live IOMMU needs a live device"));
}

#[test]
fn unwritable_output_is_a_usage_error() {
    assert_fails(
        &["gen", "-o", "/nonexistent/dir/image.elf"],
        2,
        "cannot write",
    );
}

#[test]
fn help_exits_zero_and_names_every_command() {
    let o = run(&["--help"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for c in ["demo", "validate", "inspect", "gen"] {
        assert!(out.contains(c), "{out}");
    }
}

// --- hostile bytes ------------------------------------------------------------------------

#[test]
fn every_single_byte_corruption_of_the_root_and_heads_exits_0_1_or_2_without_panic() {
    let dir = tmp("fuzz");
    let (file, root) = phys_image(&dir, &[]);
    let bytes = std::fs::read(&file).unwrap();
    let r = parse_root(&root);
    let bad = dir.join("bad.bin");
    for off in (0..32).step_by(3) {
        let mut b = bytes.clone();
        let at = usize::try_from(r).unwrap() + off;
        b[at] ^= 0x5a;
        std::fs::write(&bad, &b).unwrap();
        let o = run(&["inspect", "--all", "--root", &root, path(&bad)]);
        let code = o.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "byte {off}: exit {code:?}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

// ---- version 2 ----

#[test]
fn gen_writes_version_2_by_default_and_the_tool_names_it() {
    let dir = tmp("v2_default");
    let file = dir.join("image.elf");
    let o = run(&["gen", "-o", path(&file)]);
    assert_exit(&o, 0);
    let o = run(&["validate", path(&file)]);
    assert_exit(&o, 0);
    let line = stdout(&o);
    assert!(
        line.contains(": valid: version 2, features compat 0x0 incompat 0x0, root "),
        "{line}"
    );
    let o = run(&["inspect", "--json", "--all", path(&file)]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["version"], 2);
    assert_eq!(v["generation"], 1); // seed 0, plus 1
    assert_eq!(
        v["features"],
        serde_json::json!({"compat": 0, "incompat": 0})
    );
    let pages = v["pages"].as_array().unwrap();
    assert_eq!(pages[0]["chain"], "root");
    assert!(pages.iter().skip(1).all(|p| p["chain"] != "root"));
    // Devices name their domain and IOMMU by index, which the listing
    // resolves.
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 18);
    for d in devices {
        assert!(d.get("domain_phys").is_none());
        let i = d["domain_index"].as_u64().unwrap() as usize;
        assert!(i < v["domains"].as_array().unwrap().len());
    }
}

#[test]
fn version_2_images_give_their_page_size_and_refuse_any_flipped_byte() {
    let dir = tmp("v2_page_size");
    let (file, root) = phys_image(&dir, &["--abi-version", "2", "--page-size", "16384"]);
    // No --page-size: the root says 16 KiB.
    let o = run(&["validate", "--root", &root, path(&file)]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("valid: version 2"), "{}", stdout(&o));
    let mut bytes = std::fs::read(&file).unwrap();
    let root_off = parse_root(&root) as usize;
    bytes[root_off + 200] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let o = run(&["validate", "--root", &root, path(&file)]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains(" crc: checksum 0x"), "{}", stderr(&o));
}

// --- convert ---------------------------------------------------------------

/// `inspect --json`'s live objects with what depends on where the writer put
/// them taken out: no `phys`, and a device names its domain and IOMMU by
/// their place among the live ones (from `domain_phys`/`iommu_phys` in
/// version 1, `domain_index`/`iommu_index` in version 2). Version 1's
/// next-kernel state (`restored`, `restored_domain`) must be 0 and is left
/// out, as version 2 has none.
fn live_objects(json: &str) -> Value {
    let v: Value = serde_json::from_str(json).expect("inspect --json is JSON");
    let list = |k: &str| v[k].as_array().expect("a list").clone();
    let place = |k: &str, phys: &Value| {
        list(k)
            .iter()
            .position(|o| &o["phys"] == phys)
            .unwrap_or_else(|| panic!("{phys} is not a live {k}"))
    };
    fn strip(o: &mut Value) {
        let m = o.as_object_mut().expect("an object");
        for k in ["phys", "restored", "restored_domain"] {
            if let Some(x) = m.remove(k) {
                assert!(k == "phys" || x == 0, "{k} is {x}");
            }
        }
        for vendor in ["intel", "smmuv3"] {
            if let Some(p) = m.get_mut(vendor) {
                strip(p);
            }
        }
    }
    let mut out = serde_json::Map::new();
    for k in ["iommus", "domains", "devices"] {
        let mut objs = list(k);
        for o in &mut objs {
            if k == "devices" {
                let m = o.as_object_mut().expect("an object");
                for (by_phys, by_index, chain) in [
                    ("domain_phys", "domain_index", "domains"),
                    ("iommu_phys", "iommu_index", "iommus"),
                ] {
                    let at = match (m.remove(by_phys), m.remove(by_index)) {
                        (Some(p), None) => place(chain, &p),
                        (None, Some(i)) => usize::try_from(i.as_u64().unwrap()).unwrap(),
                        other => panic!("device names its {chain} as {other:?}"),
                    };
                    m.insert(chain.into(), at.into());
                }
            }
            strip(o);
        }
        out.insert(k.into(), Value::Array(objs));
    }
    Value::Object(out)
}

/// `inspect --json` of `file` (extra read options first).
fn inspect_json(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["inspect", "--json"];
    args.extend_from_slice(extra);
    args.push(path(file));
    let o = run(&args);
    assert_exit(&o, 0);
    stdout(&o)
}

/// `convert --to to` of `from` into `to_file`; returns its output.
fn convert(from: &Path, to: &str, to_file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["convert", "--to", to, "-o", path(to_file)];
    args.extend_from_slice(extra);
    args.push(path(from));
    let o = run(&args);
    assert_exit(&o, 0);
    stdout(&o)
}

fn version_of(file: &Path, extra: &[&str]) -> u64 {
    let v: Value = serde_json::from_str(&inspect_json(file, extra)).unwrap();
    v["version"].as_u64().unwrap()
}

#[test]
fn convert_round_trips_v1_v2_v1_and_v2_v1_v2_to_the_same_live_objects() {
    let dir = tmp("convert_round_trip");
    for (start, there, page_size) in [("1", "2", "4096"), ("2", "1", "4096"), ("1", "2", "16384")] {
        let a = dir.join(format!("a{start}-{page_size}.elf"));
        let b = dir.join(format!("b{there}-{page_size}.elf"));
        let c = dir.join(format!("c{start}-{page_size}.elf"));
        let ps = ["--page-size", page_size];
        generate(
            &a,
            &[
                "--abi-version",
                start,
                "--page-size",
                page_size,
                "--devices",
                "300",
                "--deleted",
                "40",
                "--seed",
                "7",
            ],
        );
        convert(&a, there, &b, &ps);
        convert(&b, start, &c, &ps);
        assert_eq!(version_of(&b, &ps).to_string(), there);
        assert_eq!(version_of(&c, &ps).to_string(), start);
        let want = live_objects(&inspect_json(&a, &ps));
        assert_eq!(want["devices"].as_array().unwrap().len(), 300);
        assert_eq!(
            live_objects(&inspect_json(&b, &ps)),
            want,
            "{start} -> {there}"
        );
        assert_eq!(
            live_objects(&inspect_json(&c, &ps)),
            want,
            "{start} -> {there} -> {start}"
        );
        // Deleted slots are not carried over.
        let mut all = vec!["--all"];
        all.extend_from_slice(&ps);
        let listed: Value = serde_json::from_str(&inspect_json(&b, &all)).unwrap();
        assert_eq!(listed["devices"].as_array().unwrap().len(), 300);
    }
}

#[test]
fn convert_to_phys_prints_the_root_last_and_the_dump_reads_there() {
    let dir = tmp("convert_phys");
    let a = dir.join("a.elf");
    generate(&a, &["--abi-version", "2"]);
    let out_file = dir.join("b.bin");
    let out = convert(&a, "1", &out_file, &["--output-format", "phys"]);
    let root = out.lines().last().unwrap();
    assert!(root.starts_with("0x"), "last line is the root: {out}");
    let o = run(&[
        "validate",
        "--format",
        "phys",
        "--root",
        root,
        path(&out_file),
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("valid: version 1"), "{}", stdout(&o));
}

#[test]
fn convert_sets_the_generation_it_is_given_or_the_next_one() {
    let dir = tmp("convert_generation");
    let a = dir.join("a.elf");
    generate(&a, &["--abi-version", "2", "--seed", "41"]);
    let generation = |f: &Path| {
        let v: Value = serde_json::from_str(&inspect_json(f, &[])).unwrap();
        v["generation"].as_u64().unwrap()
    };
    let g = generation(&a);
    let b = dir.join("b.elf");
    convert(&a, "2", &b, &[]);
    assert_eq!(generation(&b), g + 1);
    convert(&a, "2", &b, &["--generation", "0x99"]);
    assert_eq!(generation(&b), 0x99);
    let v1 = dir.join("v1.elf");
    convert(&a, "1", &v1, &[]);
    convert(&v1, "2", &b, &[]);
    assert_eq!(generation(&b), 1);
    assert_fails(
        &[
            "convert",
            "--to",
            "2",
            "--generation",
            "0",
            "-o",
            path(&b),
            path(&a),
        ],
        2,
        "generation 0 is reserved",
    );
    assert_fails(
        &[
            "convert",
            "--to",
            "1",
            "--generation",
            "5",
            "-o",
            path(&b),
            path(&a),
        ],
        2,
        "version 1 has no generation",
    );
    assert_fails(
        &["convert", "--to", "3", "-o", path(&b), path(&a)],
        2,
        "invalid value '3' for '--to <N>'",
    );
}

#[test]
fn convert_refuses_an_image_with_a_compatible_feature_the_target_would_drop() {
    use iommu_flb_abi::crc::Crc32;
    let dir = tmp("convert_compat");
    let (file, root) = phys_image(&dir, &["--abi-version", "2"]);
    let at = parse_root(&root);
    let mut bytes = std::fs::read(&file).unwrap();
    // compat_features at offset 32 of the root, its CRC at 48.
    write_u64(&mut bytes, at + 32, 1 << 5);
    let page = usize::try_from(at).unwrap();
    let crc = Crc32::FAST.page(&bytes[page..page + 4096], 48).unwrap();
    write_u32(&mut bytes, at + 48, crc);
    std::fs::write(&file, &bytes).unwrap();
    // The reader accepts the unknown compatible bit...
    let o = run(&["validate", "--root", &root, path(&file)]);
    assert_exit(&o, 0);
    // ...but neither version's writer can carry it.
    let out = dir.join("out.elf");
    for to in ["1", "2"] {
        let args = [
            "convert",
            "--to",
            to,
            "--root",
            &root,
            "-o",
            path(&out),
            path(&file),
        ];
        assert_fails(&args, 1, "cannot convert to version");
        assert_fails(&args, 1, "compat_features 0x20");
    }
    assert!(!out.exists(), "nothing is written for a refused image");
}

#[test]
fn convert_refuses_a_corrupt_image_as_validate_does() {
    let dir = tmp("convert_corrupt");
    let (file, root) = phys_image(&dir, &[]);
    let mut bytes = std::fs::read(&file).unwrap();
    write_u64(&mut bytes, parse_root(&root), 99);
    std::fs::write(&file, &bytes).unwrap();
    let out = dir.join("out.elf");
    assert_fails(
        &[
            "convert",
            "--to",
            "2",
            "--root",
            &root,
            "-o",
            path(&out),
            path(&file),
        ],
        1,
        "invalid image: root",
    );
    assert!(!out.exists());
}

// --- scan ------------------------------------------------------------------

/// A small image written by the library's writer at pages from `base` up
/// (two IOMMUs, a domain, `devices` devices), in `version`; its pages
/// and root.
fn image_at(
    base: u64,
    version: u64,
    devices: u32,
) -> (iommu_flb_abi::PageMap, iommu_flb_abi::PhysAddr) {
    use iommu_flb_abi::PhysAddr;
    use iommu_flb_abi::writer::{
        Config, DeviceInit, DevicePayloadInit, DomainInit, IntelDeviceInit, IntelIommuInit,
        IommuPayloadInit, MapAlloc, Writer,
    };
    let config = if version == 1 {
        Config::v1()
    } else {
        Config::v2(9)
    };
    let mut w = Writer::with_config(MapAlloc::sequential(PhysAddr::new(base)), config).unwrap();
    let hw = w
        .preserve_iommu(
            0xfed9_0000,
            IommuPayloadInit::Intel(IntelIommuInit {
                phys_addr: PhysAddr::new(0xfed9_0000),
                root_table: PhysAddr::new(0x70_0000),
                context_tables_bitmap: [1, 0, 0, 0, 0, 0, 0, 0],
            }),
        )
        .unwrap();
    let dom = w
        .preserve_domain(DomainInit {
            top_table_phys: PhysAddr::new(0x3000_0000),
            top_level: 4,
            vasz: 48,
            sign_extend: 0,
        })
        .unwrap();
    for i in 0..devices {
        let d = DeviceInit {
            pci_domain_nr: 0,
            devid: i,
            dma_owner_token: 1,
            attachment_id: 1,
            payload: DevicePayloadInit::Intel(IntelDeviceInit {
                pasid_table: PhysAddr::new(0x4000_0000),
                max_pasid: 1 << 20,
            }),
        };
        w.preserve_device(d, dom, hw).unwrap();
    }
    let (root, alloc) = w.finish();
    (alloc.into_map(), root)
}

/// A flat dump from 0 holding `images`' pages.
fn flat_of(images: &[&iommu_flb_abi::PageMap], len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    for map in images {
        for (phys, page) in map.iter() {
            let at = usize::try_from(phys.get()).unwrap();
            bytes[at..at + page.len()].copy_from_slice(page);
        }
    }
    bytes
}

#[test]
fn scan_lists_every_valid_root_and_validate_without_root_refuses_to_guess() {
    let dir = tmp("scan_two");
    let (v1, r1) = image_at(0x10_0000, 1, 5);
    let (v2, r2) = image_at(0x20_0000, 2, 7);
    let file = dir.join("two.bin");
    std::fs::write(&file, flat_of(&[&v1, &v2], 0x30_0000)).unwrap();
    let o = run(&["scan", "--format", "phys", path(&file)]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("; 2 valid root(s)"), "{out}");
    assert!(
        out.contains(&format!(
            "root {r1} (version-1 root structure): valid: version 1"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "root {r2} (version-2 root magic): valid: version 2"
        )),
        "{out}"
    );
    assert!(
        out.contains("5 devices live") && out.contains("7 devices live"),
        "{out}"
    );
    let o = run(&["validate", "--format", "phys", path(&file)]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("scan found 2 valid roots; pass --root"),
        "{err}"
    );
    assert!(
        err.contains(&r1.to_string()) && err.contains(&r2.to_string()),
        "{err}"
    );
    // --root picks one.
    let o = run(&[
        "validate",
        "--format",
        "phys",
        "--root",
        &r2.to_string(),
        path(&file),
    ]);
    assert_exit(&o, 0);
    assert_fails(
        &["scan", "--root", "0x1000", path(&file)],
        2,
        "scan finds roots itself",
    );
}

#[test]
fn a_refused_v2_root_is_listed_with_its_error_and_a_dump_with_none_says_so() {
    let dir = tmp("scan_none");
    let (v2, r2) = image_at(0x10_0000, 2, 3);
    let mut bytes = flat_of(&[&v2], 0x20_0000);
    // Flip a byte in the root after its magic: the CRC no longer matches.
    let at = usize::try_from(r2.get()).unwrap() + 60;
    bytes[at] ^= 1;
    let file = dir.join("bad.bin");
    std::fs::write(&file, &bytes).unwrap();
    let o = run(&["scan", "--format", "phys", path(&file)]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("; 0 valid root(s)"), "{out}");
    assert!(
        out.contains(&format!(
            "root {r2} (version-2 root magic): refused: root at {r2} crc"
        )),
        "{out}"
    );
    let o = run(&["inspect", "--format", "phys", path(&file)]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("flat dumps do not record it), and scan found no valid root"),
        "{err}"
    );
    assert!(err.contains("refused: root at"), "{err}");
    let zeros = dir.join("zeros.bin");
    std::fs::write(&zeros, vec![0u8; 1 << 16]).unwrap();
    let o = run(&["scan", "--format", "phys", path(&zeros)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("scanned 16 pages of 4 KiB (0 unreadable)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn luo_flb_table_names_the_root_and_wins_over_other_valid_roots() {
    let dir = tmp("scan_luo");
    let (named, r1) = image_at(0x10_0000, 2, 4);
    let (other, r2) = image_at(0x20_0000, 1, 6);
    let mut bytes = flat_of(&[&named, &other], 0x30_0000);
    // LUO's FLB table at 0x5000: { pgcnt 1, count 2 }, then an entry for
    // another subsystem and the IOMMU's.
    let table = 0x5000usize;
    bytes[table..table + 8].copy_from_slice(&1u64.to_le_bytes());
    bytes[table + 8..table + 16].copy_from_slice(&2u64.to_le_bytes());
    let entry = |bytes: &mut Vec<u8>, i: usize, name: &[u8], data: u64| {
        let at = table + 16 + 64 * i;
        bytes[at..at + name.len()].copy_from_slice(name);
        bytes[at + 48..at + 56].copy_from_slice(&data.to_le_bytes());
        bytes[at + 56..at + 64].copy_from_slice(&1u64.to_le_bytes());
    };
    entry(&mut bytes, 0, b"pci", 0x9000);
    entry(&mut bytes, 1, b"iommu-liveupdate", r1.get());
    let file = dir.join("luo.bin");
    std::fs::write(&file, &bytes).unwrap();
    let o = run(&["scan", "--format", "phys", path(&file)]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "root {r1} (named by LUO's FLB table entry at 0x5050): valid: version 2"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("root {r2} (version-1 root structure): valid")),
        "{out}"
    );
    assert!(!out.contains("no LUO FLB table"), "{out}");
    let o = run(&["validate", "--format", "phys", path(&file)]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains(&format!("root {r1}")), "{}", stdout(&o));
}

// --- formats and validate --for --------------------------------------------

/// Compiles C `source` (with the repository's headers) into the object
/// `dir/name.o`, as kernel code would contribute it to vmlinux or a module.
fn c_object(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let obj = dir.join(format!("{name}.o"));
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let o = Command::new("gcc")
        .args([
            "-std=gnu11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-c",
            "-I",
        ])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("gcc must be installed to run this test");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    obj
}

/// A kernel object built with the library's header: the descriptor of the
/// library it links.
const LIBRARY_KERNEL: &str = "#include \"iommu_flb.h\"\nIOMMU_FLB_DECLARE_FORMATS();\n";

/// An older kernel's descriptor: reads and writes version 1 only.
const V1_KERNEL: &str = r#"#include "iommu_flb.h"
__attribute__((used, section(".iommu_flb_formats"), aligned(8)))
static const struct iommu_flb_formats old = {
	.magic = IOMMU_FLB_FORMATS_MAGIC,
	.version = IOMMU_FLB_FORMATS_VERSION,
	.size = IOMMU_FLB_FORMATS_SIZE,
	.count = 1,
	.entries = { { .version = 1, .flags = IOMMU_FLB_FORMATS_READ | IOMMU_FLB_FORMATS_WRITE } },
};
"#;

#[test]
fn formats_reads_the_descriptor_the_header_macro_compiles_into_an_object() {
    let dir = tmp("formats_macro");
    let obj = c_object(&dir, "kernel", LIBRARY_KERNEL);
    let o = run(&["formats", "--json", path(&obj)]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["versions"], serde_json::json!([1, 2]));
    assert_eq!(v["writes"], serde_json::json!([1, 2]));
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let o = run(&["formats", path(&obj)]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("reads format versions 1, 2; writes 1, 2"),
        "{}",
        stdout(&o)
    );
    let old = c_object(&dir, "old", V1_KERNEL);
    let o = run(&["formats", "--json", path(&old)]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["versions"], serde_json::json!([1]));
    let none = c_object(&dir, "none", "int unrelated;\n");
    assert_fails(
        &["formats", path(&none)],
        2,
        "no .iommu_flb_formats section",
    );
    assert_fails(
        &["formats", path(&dir.join("kernel.c"))],
        2,
        "not an ELF file",
    );
}

#[test]
fn validate_for_refuses_an_image_the_kernel_cannot_read_and_says_why() {
    let dir = tmp("validate_for");
    let new = c_object(&dir, "new", LIBRARY_KERNEL);
    let old = c_object(&dir, "old", V1_KERNEL);
    let none = c_object(&dir, "none", "int unrelated;\n");
    let v1 = dir.join("v1.elf");
    let v2 = dir.join("v2.elf");
    generate(&v1, &["--abi-version", "1"]);
    generate(&v2, &["--abi-version", "2"]);
    for (kernel, image, ok) in [
        (&new, &v1, true),
        (&new, &v2, true),
        (&old, &v1, true),
        (&old, &v2, false),
        (&none, &v1, true),
        (&none, &v2, false),
    ] {
        let o = run(&["validate", "--for", path(kernel), path(image)]);
        if ok {
            assert_exit(&o, 0);
            assert!(
                stdout(&o).contains("reads it (by the rules of version"),
                "{}",
                stdout(&o)
            );
        } else {
            assert_exit(&o, 1);
            assert!(
                stderr(&o).contains("cannot read this image"),
                "{}",
                stderr(&o)
            );
            assert!(stderr(&o).contains("reads 1"), "{}", stderr(&o));
        }
        if kernel == &none {
            let all = format!("{}{}", stdout(&o), stderr(&o));
            assert!(
                all.contains("taken as a kernel that reads version 1 only"),
                "{all}"
            );
        }
    }
    // The way back: convert the image for the old kernel, which then reads it.
    let back = dir.join("back.elf");
    convert(&v2, "1", &back, &[]);
    assert_exit(&run(&["validate", "--for", path(&old), path(&back)]), 0);
}

#[test]
fn formats_of_a_link_of_several_objects_needs_them_to_agree() {
    let dir = tmp("formats_link");
    let a = c_object(&dir, "a", LIBRARY_KERNEL);
    let b = c_object(&dir, "b", LIBRARY_KERNEL);
    let old = c_object(&dir, "old", V1_KERNEL);
    // `ld -r`, as kbuild links a module's objects: the sections are
    // concatenated, one descriptor per object.
    let link = |name: &str, objs: &[&Path]| {
        let out = dir.join(name);
        let o = Command::new("ld")
            .arg("-r")
            .args(objs)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("ld must be installed to run this test");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        out
    };
    let same = link("same.o", &[&a, &b]);
    let o = run(&["formats", "--json", path(&same)]);
    assert_exit(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["versions"], serde_json::json!([1, 2]));
    let mixed = link("mixed.o", &[&a, &old]);
    assert_fails(
        &["formats", path(&mixed)],
        2,
        "holds two different descriptors",
    );
    assert_fails(
        &[
            "validate",
            "--for",
            path(&mixed),
            path(&dir.join("none.elf")),
        ],
        2,
        "holds two different descriptors",
    );
}
