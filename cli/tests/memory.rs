//! Peak memory of `validate` and `inspect --all --json` on hostile ELF
//! cores and on dumps that claim far more memory than they hold: it stays
//! within the bound the README states (section "Memory"), whatever the file
//! claims.
//!
//! Each case runs in a child process, this test binary again with
//! `--child`, which runs the tool's command on the file (`cmd::validate` or
//! `cmd::inspect`, which is all the binary's `main` does besides parsing
//! arguments and printing) and reports its peak resident memory (`VmHWM` in
//! `/proc/self/status`, less the code pages it faulted in) before and
//! after. The parent builds the files,
//! counts the distinct pages the reader asks for (validating the same bytes
//! through a counting `Memory`), and checks the child's growth against the
//! bound for that many pages and program headers.
//!
//! A plain `main` (`harness = false`): the child must be this binary, and
//! must run nothing but its one command.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use iommu_flb_abi::reader::{self, Mode, Options};
use iommu_flb_abi::{Memory, PhysAddr};
use iommu_flb_cli::cmd::{self, ReadOptions, build_image, flat_dump};
use iommu_flb_cli::elfcore::write_core;
use iommu_flb_cli::load::{Format, LoadOptions, load};
use iommu_flb_cli::plan::{Spec, Vendor};
use iommu_flb_cli::render::Records;
use object::elf;

mod common;
use common::kdump::{Comp, Spec as KdumpSpec, build as build_kdump, flatten, pages_of_flat};
use common::{Ph, data_offset, le, load_seg};

// The README's bound: at most FIXED bytes, plus PER_PROGRAM_HEADER per
// program header of an ELF file, plus PER_PAGE per distinct page the reader
// asks for: the page (4 KiB), its place in the loader's cache (128 bytes)
// and the reader's scratch for the records in it (at most 58 elements of
// 16 bytes, for a device page). `inspect` also builds its listing before
// printing it: twice the output's size (the string grows by doubling) and
// PER_LISTED_RECORD per record.
const FIXED: u64 = 1 << 20;
const PER_PROGRAM_HEADER: u64 = 40;
const PER_PAGE: u64 = 4096 + 128 + 58 * 16;
const PER_LISTED_RECORD: u64 = 128;
// A kdump-compressed dump adds two blocks (the block being decompressed
// and its compressed bytes), KDUMP_DECOMPRESSOR for a decompressor's state,
// and 8 bytes per running count of its 2nd bitmap (one per KiB of it, 2^16
// at most); a flattened file adds PER_DATA_HEADER per data header.
const KDUMP_DECOMPRESSOR: u64 = 256 << 10;
const PER_DATA_HEADER: u64 = 64;

/// What the README allows a kdump-compressed dump of 4 KiB blocks whose
/// bitmaps are `bitmap_len` bytes each.
fn kdump_allowance(bitmap_len: usize) -> u64 {
    let samples = (bitmap_len as u64).div_ceil(1024).min(1 << 16);
    2 * 4096 + KDUMP_DECOMPRESSOR + 8 * samples
}

const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Validate,
    InspectAllJson,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Validate => "validate",
            Cmd::InspectAllJson => "inspect",
        }
    }
}

struct Case {
    name: &'static str,
    /// What the file is made of, for the report.
    what: &'static str,
    bytes: Vec<u8>,
    format: Format,
    root: Option<u64>,
    cmd: Cmd,
    /// The exit code the tool gives (0 valid, 1 refused, 2 container).
    code: u8,
    /// Program headers in the file (0 for a flat dump).
    program_headers: u64,
    /// What the README allows a kdump-compressed or flattened file's
    /// tables and buffers beyond FIXED (0 for the others).
    container: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    if cfg!(miri) || !cfg!(target_os = "linux") {
        // Child processes and /proc/self/status: Linux, not miri.
        println!("memory: skipped (needs Linux processes)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("iommu-flb-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failed = Vec::new();
    for case in cases() {
        if let Err(e) = run_case(&dir, &case) {
            println!("FAILED {}: {e}", case.name);
            failed.push(case.name);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failed.is_empty(),
        "memory bound exceeded or wrong outcome: {failed:?}"
    );
    println!("memory: every case within its bound");
}

fn opts(path: &Path, format: Format, root: Option<u64>) -> ReadOptions {
    ReadOptions {
        file: path.to_path_buf(),
        format,
        root: root.map(PhysAddr::new),
        base: None,
        mode: Mode::Handover,
        page_size: iommu_flb_abi::abi::PageSize::Size4K,
    }
}

/// A field of `/proc/self/status` in kB, as bytes.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}

/// Peak resident memory of this process so far, in bytes.
fn vm_hwm() -> u64 {
    status_kb("VmHWM:")
}

/// Resident file-backed memory: mostly the binary's own code, faulted in
/// as it first runs. It is not memory the tool allocates, and how much of
/// it a command touches depends on how the linker laid the code out (it
/// grew by half a MiB when the kdump decompressors were linked in), so
/// the peak is measured without it.
fn rss_file() -> u64 {
    status_kb("RssFile:")
}

/// `--child CMD FORMAT ROOT FILE`: runs the command and prints `BEFORE
/// AFTER CODE OUTPUT_BYTES MESSAGE`.
fn child(args: &[String]) {
    let [cmd, format, root, file] = args else {
        panic!("usage: --child CMD FORMAT ROOT FILE");
    };
    let format = match format.as_str() {
        "elf" => Format::Elf,
        "phys" => Format::Phys,
        "kdump" => Format::Kdump,
        "flattened" => Format::Flattened,
        _ => Format::Auto,
    };
    let root = u64::from_str_radix(root.trim_start_matches("0x"), 16).ok();
    let o = opts(Path::new(file), format, root.filter(|&r| r != 0));
    let (before, code_before) = (vm_hwm(), rss_file());
    let result = match cmd.as_str() {
        "validate" => cmd::validate(&o),
        _ => cmd::inspect(&o, true, true),
    };
    // Code pages stay resident once faulted in, so what RssFile grew by
    // is the code the command touched; the peak without it is what the
    // command allocated (and the file pages it read, which the page cache
    // does not count here: reads copy into anonymous buffers).
    let code = rss_file().saturating_sub(code_before);
    let after = vm_hwm().saturating_sub(code);
    let (code, output, message) = match &result {
        Ok(out) => (0, out.len(), format!("{} bytes of output", out.len())),
        Err(f) => (f.exit_code(), 0, f.to_string()),
    };
    println!("{before} {after} {code} {output} {message}");
}

/// A `Memory` that records which pages are asked for.
struct Counting<M> {
    inner: M,
    seen: RefCell<BTreeSet<u64>>,
}

impl<M: Memory> Memory for Counting<M> {
    fn page(&self, phys: PhysAddr, size: iommu_flb_abi::abi::PageSize) -> Option<&[u8]> {
        self.seen.borrow_mut().insert(phys.get());
        self.inner.page(phys, size)
    }
}

/// The distinct pages the reader asks for on `case`'s bytes (validation,
/// and a visit of every record when the image is valid), and the number of
/// records of a valid image.
fn pages_asked(case: &Case) -> (u64, u64) {
    let Ok(dump) = load(
        &case.bytes[..],
        LoadOptions {
            format: case.format,
            base: None,
        },
    ) else {
        return (0, 0);
    };
    let root = match case.root {
        Some(r) => PhysAddr::new(r),
        None => match dump.root_note() {
            Ok(Some(r)) => r,
            _ => return (0, 0),
        },
    };
    let mem = Counting {
        inner: dump,
        seen: RefCell::new(BTreeSet::new()),
    };
    let mut records = 0;
    if let Ok(owned) = reader::validate_alloc(&mem, root, &Options::default()) {
        let image = owned.image();
        let _ = Records::collect(&image, true);
        records = image.all_iommus().count() + image.all_domains().count();
        records += image.all_devices().count();
    }
    let pages = mem.seen.borrow().len();
    (
        u64::try_from(pages).unwrap(),
        u64::try_from(records).unwrap(),
    )
}

fn run_case(dir: &Path, case: &Case) -> Result<(), String> {
    let path: PathBuf = dir.join(case.name);
    std::fs::write(&path, &case.bytes).unwrap();
    let format = match case.format {
        Format::Elf => "elf",
        Format::Phys => "phys",
        Format::Auto => "auto",
        Format::Kdump => "kdump",
        Format::Flattened => "flattened",
    };
    let root = format!("{:#x}", case.root.unwrap_or(0));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", case.cmd.name(), format, &root])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            format!(
                "the child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let mut fields = line.splitn(5, ' ');
    let mut num = || fields.next().and_then(|f| f.parse::<u64>().ok());
    let [before, after, code, output] = [num(), num(), num(), num()].map(Option::unwrap);
    let message = fields.next().unwrap_or("").to_owned();
    let (pages, records) = pages_asked(case);
    let growth = after.saturating_sub(before);
    let listing = match case.cmd {
        Cmd::InspectAllJson => 2 * output + PER_LISTED_RECORD * records,
        Cmd::Validate => 0,
    };
    let bound = FIXED
        + PER_PROGRAM_HEADER * case.program_headers
        + case.container
        + PER_PAGE * pages
        + listing;
    println!(
        "{:<28} {:>9} bytes, {:>6} program headers, {:>5} pages asked: peak +{:>10} bytes, \
         bound {:>10} ({}: {})",
        case.name,
        case.bytes.len(),
        case.program_headers,
        pages,
        growth,
        bound,
        case.what,
        message
    );
    std::fs::remove_file(&path).ok();
    if code != u64::from(case.code) {
        return Err(format!(
            "exit code {code}, expected {}: {message}",
            case.code
        ));
    }
    if growth > bound {
        return Err(format!("peak memory grew by {growth} bytes, bound {bound}"));
    }
    Ok(())
}

// --- hostile files ------------------------------------------------------------

/// A note segment over `filesz` bytes at `offset`.
fn note_ph(offset: u64, filesz: u64) -> Ph {
    Ph {
        p_type: elf::PT_NOTE,
        offset,
        paddr: 0,
        filesz,
        memsz: 0,
        align: 4,
    }
}

/// A little-endian core with `phdrs`, and `data` at
/// [`data_offset`]`(phdrs.len())`.
fn core(phdrs: &[Ph], data: &[u8]) -> Vec<u8> {
    le(4, phdrs, data)
}

fn put_u64(bytes: &mut [u8], at: u64, v: u64) {
    let at = usize::try_from(at).unwrap();
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The root's page at `ROOT`, then an empty IOMMU chain page and an empty
/// domain chain page; the device chain starts at `devices`.
const ROOT: u64 = 0x1000;

fn root_pages(devices: u64) -> Vec<u8> {
    let mut pages = vec![0u8; 3 * 4096];
    put_u64(&mut pages, 0, 1); // version
    put_u64(&mut pages, 8, ROOT + 0x1000); // iommu_array_phys
    put_u64(&mut pages, 16, ROOT + 0x2000); // iommu_domain_array_phys
    put_u64(&mut pages, 24, devices); // device_array_phys
    pages
}

/// Device records per page, so that a page which is not the last is full.
const DEVICES_PER_PAGE: u64 = 56;

/// Many `PT_NOTE` segments over the same 2 MiB of empty notes, each at its
/// own offset: the old loader cached each segment whole.
fn overlapping_notes(cmd: Cmd, name: &'static str) -> Case {
    const NOTES: usize = 64;
    let len = 2u64 << 20;
    let data_off = data_offset(NOTES + 1);
    let mut phdrs = vec![load_seg(data_off, ROOT, PAGE, PAGE)];
    for i in 0..NOTES {
        let off = data_off + PAGE + 4 * u64::try_from(i).unwrap();
        // Whole 12-byte empty notes up to the end of the file.
        phdrs.push(note_ph(off, (data_off + len - off) / 12 * 12));
    }
    let data = vec![0u8; usize::try_from(len).unwrap()];
    Case {
        name,
        what: "64 PT_NOTE segments over the same 2 MiB",
        bytes: core(&phdrs, &data),
        format: Format::Auto,
        root: None,
        cmd,
        code: 2,
        program_headers: u64::try_from(phdrs.len()).unwrap(),
        container: 0,
    }
}

/// 4096 `PT_LOAD` segments of 2^40 bytes each, all zero tail but the root
/// page: 4 PiB of memory claimed in a 240 KiB file. The chain heads are
/// zero pages (empty chains), so the image is valid and empty.
fn huge_zero_tails() -> Case {
    const SEGMENTS: u64 = 4096;
    let mut phdrs = Vec::new();
    let data_off = data_offset(usize::try_from(SEGMENTS).unwrap());
    for i in 0..SEGMENTS {
        let (paddr, filesz) = if i == 0 { (ROOT, PAGE) } else { (i << 40, 0) };
        phdrs.push(load_seg(
            data_off,
            paddr,
            filesz,
            (1 << 40) - (paddr & 0xfff_ffff),
        ));
    }
    let mut root = vec![0u8; 4096];
    put_u64(&mut root, 0, 1);
    for (i, head) in [0x10_0000u64, 0x20_0000, 0x30_0000].iter().enumerate() {
        put_u64(&mut root, 8 * (u64::try_from(i).unwrap() + 1), *head);
    }
    Case {
        name: "huge-zero-tails",
        what: "4096 PT_LOADs claiming 2^40 bytes each",
        bytes: core(&phdrs, &root),
        format: Format::Auto,
        root: Some(ROOT),
        cmd: Cmd::InspectAllJson,
        code: 0,
        program_headers: SEGMENTS,
        container: 0,
    }
}

/// `k` `PT_LOAD` segments over the same file bytes, each 16 bytes further
/// in: every 16 bytes of the file is the header of a page of some segment,
/// so the device chain runs through `k` times as many pages as the file
/// has. The records are zero, so validation refuses the image after the
/// chain walk has asked for every page.
fn shared_file_bytes() -> Case {
    const K: u64 = 16;
    const PAGES: u64 = 256;
    let seg_base = |s: u64| (1u64 << 32) + (s << 28);
    let order: Vec<(u64, u64)> = (0..K)
        .flat_map(|s| (0..PAGES).map(move |j| (s, j)))
        .collect();
    let phys = |(s, j): (u64, u64)| seg_base(s) + j * PAGE;
    let mut region = vec![0u8; usize::try_from(PAGES * PAGE + 16 * K).unwrap()];
    for (i, &(s, j)) in order.iter().enumerate() {
        let next = order.get(i + 1).map_or(0, |&p| phys(p));
        let at = 16 * s + PAGE * j;
        put_u64(&mut region, at, next);
        put_u64(
            &mut region,
            at + 8,
            if next == 0 { 1 } else { DEVICES_PER_PAGE },
        );
    }
    let data_off = data_offset(usize::try_from(K + 1).unwrap());
    let mut phdrs = vec![load_seg(data_off, ROOT, 3 * PAGE, 3 * PAGE)];
    for s in 0..K {
        let size = PAGES * PAGE;
        phdrs.push(load_seg(
            data_off + 3 * PAGE + 16 * s,
            seg_base(s),
            size,
            size,
        ));
    }
    let data = [root_pages(phys(order[0])), region].concat();
    Case {
        name: "shared-file-bytes",
        what: "16 PT_LOADs over one region, 16 bytes apart",
        bytes: core(&phdrs, &data),
        format: Format::Auto,
        root: Some(ROOT),
        cmd: Cmd::Validate,
        code: 1,
        program_headers: K + 1,
        container: 0,
    }
}

/// 255 device pages, each assembled from 256 segments of 16 bytes: its
/// header from a segment of its own, the rest from segments that all share
/// 16 zero bytes. The old loader kept every 16-byte read.
fn tiny_segments() -> Case {
    const PAGES: u64 = 255;
    const PIECES: u64 = PAGE / 16;
    let base = 1u64 << 32;
    let n = usize::try_from(1 + PAGES * PIECES).unwrap();
    let data_off = data_offset(n);
    // File: root pages, then the page headers, then 16 zero bytes.
    let headers_at = data_off + 3 * PAGE;
    let zeros_at = headers_at + 16 * PAGES;
    let mut headers = vec![0u8; usize::try_from(16 * PAGES + 16).unwrap()];
    for p in 0..PAGES {
        let next = if p + 1 < PAGES {
            base + (p + 1) * PAGE
        } else {
            0
        };
        put_u64(&mut headers, 16 * p, next);
        put_u64(
            &mut headers,
            16 * p + 8,
            if next == 0 { 1 } else { DEVICES_PER_PAGE },
        );
    }
    let mut phdrs = vec![load_seg(data_off, ROOT, 3 * PAGE, 3 * PAGE)];
    for p in 0..PAGES {
        for i in 0..PIECES {
            let offset = if i == 0 {
                headers_at + 16 * p
            } else {
                zeros_at
            };
            phdrs.push(load_seg(offset, base + p * PAGE + 16 * i, 16, 16));
        }
    }
    let data = [root_pages(base), headers].concat();
    Case {
        name: "tiny-segments",
        what: "255 pages of 256 PT_LOADs of 16 bytes",
        bytes: core(&phdrs, &data),
        format: Format::Auto,
        root: Some(ROOT),
        cmd: Cmd::Validate,
        code: 1,
        program_headers: u64::try_from(phdrs.len()).unwrap(),
        container: 0,
    }
}

const SPEC: Spec = Spec {
    iommus: 4,
    domains: 20,
    devices: 600,
    deleted: 30,
    vendor: Vendor::Mixed,
    seed: 3,
};

/// A valid image written by `gen`'s code whose last segment claims 64 GiB
/// of zero tail beyond its pages.
fn valid_core_claiming_64_gib() -> Case {
    let (root, pages) = build_image(&SPEC).unwrap();
    let mut bytes = write_core(pages.iter(), root).unwrap();
    let phnum = u64::from(u16::from_le_bytes([bytes[56], bytes[57]]));
    let last = 64 + (phnum - 1) * 56;
    put_u64(&mut bytes, last + 40, 64 << 30); // p_memsz
    Case {
        name: "valid-core-claiming-64g",
        what: "a valid gen image, last PT_LOAD with 64 GiB p_memsz",
        bytes,
        format: Format::Auto,
        root: None,
        cmd: Cmd::InspectAllJson,
        code: 0,
        program_headers: phnum,
        container: 0,
    }
}

/// `validate` on a valid image of 200,000 records keeps none of them: it
/// needs the pages and the reader's scratch, nothing per record.
fn large_valid_core() -> Case {
    let spec = Spec {
        iommus: 8,
        domains: 100_000,
        devices: 100_000,
        deleted: 0,
        vendor: Vendor::Mixed,
        seed: 4,
    };
    let (root, pages) = build_image(&spec).unwrap();
    let bytes = write_core(pages.iter(), root).unwrap();
    let phnum = u64::from(u16::from_le_bytes([bytes[56], bytes[57]]));
    Case {
        name: "large-valid-core-validate",
        what: "a valid gen image of 200,000 records",
        bytes,
        format: Format::Auto,
        root: None,
        cmd: Cmd::Validate,
        code: 0,
        program_headers: phnum,
        container: 0,
    }
}

/// The same image as a flat dump.
fn valid_flat_dump() -> Case {
    let (root, pages) = build_image(&SPEC).unwrap();
    Case {
        name: "valid-flat-dump",
        what: "a valid gen image, flat",
        bytes: flat_dump(&pages).unwrap(),
        format: Format::Phys,
        root: Some(root.get()),
        cmd: Cmd::InspectAllJson,
        code: 0,
        program_headers: 0,
        container: 0,
    }
}

/// The same image as a kdump-compressed dump (zlib, zero pages excluded)
/// whose bitmaps cover `max_mapnr` page frames: 2^25 of them (128 GiB)
/// makes each bitmap 4 MiB, which the loader walks once but keeps 32 KiB
/// of.
fn valid_kdump(name: &'static str, comp: Comp, max_mapnr: u64) -> Case {
    let (root, pages) = build_image(&SPEC).unwrap();
    let built = build_kdump(
        &KdumpSpec::x86_64(comp, max_mapnr),
        &pages_of_flat(&flat_dump(&pages).unwrap()),
    );
    Case {
        name,
        what: "a valid gen image, kdump-compressed",
        bytes: built.bytes,
        format: Format::Auto,
        root: Some(root.get()),
        cmd: Cmd::InspectAllJson,
        code: 0,
        program_headers: 0,
        container: kdump_allowance(built.bitmap_len),
    }
}

/// That dump flattened in 64-byte pieces: thousands of data headers.
fn flattened_kdump() -> Case {
    let (root, pages) = build_image(&SPEC).unwrap();
    let built = build_kdump(
        &KdumpSpec::x86_64(Comp::Zstd, 1 << 12),
        &pages_of_flat(&flat_dump(&pages).unwrap()),
    );
    let headers = built.bytes.len().div_ceil(64) as u64 + 1;
    Case {
        name: "flattened-kdump",
        what: "a valid gen image, kdump-compressed, flattened in 64-byte pieces",
        bytes: flatten(&built.bytes, 64),
        format: Format::Auto,
        root: Some(root.get()),
        cmd: Cmd::InspectAllJson,
        code: 0,
        program_headers: 0,
        container: kdump_allowance(built.bitmap_len) + PER_DATA_HEADER * headers,
    }
}

fn cases() -> Vec<Case> {
    vec![
        valid_kdump("valid-kdump", Comp::Zlib, 1 << 12),
        valid_kdump("kdump-128g-bitmap", Comp::Snappy, 1 << 25),
        flattened_kdump(),
        overlapping_notes(Cmd::Validate, "overlapping-notes-validate"),
        overlapping_notes(Cmd::InspectAllJson, "overlapping-notes-inspect"),
        huge_zero_tails(),
        shared_file_bytes(),
        tiny_segments(),
        valid_core_claiming_64_gib(),
        valid_flat_dump(),
        large_valid_core(),
    ]
}
