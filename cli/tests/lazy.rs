//! Dumps are read on demand through a `Source`, as the binary reads files:
//! only the headers and the pages the reader asks for, so a dump of many
//! gigabytes costs what its image needs.

use std::cell::Cell;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::reader::Mode;
use iommu_flb_cli::cmd::{ReadOptions, Report, build_image, flat_dump, report};
use iommu_flb_cli::elfcore::write_core;
use iommu_flb_cli::load::Format;
use iommu_flb_cli::plan::{Spec, Vendor};
use iommu_flb_cli::source::Source;

/// A file of `len` bytes: `head` and then zeros, counting the bytes read.
struct Virtual {
    head: Vec<u8>,
    len: u64,
    read: Cell<u64>,
}

impl Source for Virtual {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let n = buf.len() as u64;
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let at = usize::try_from(offset).unwrap() + i;
            *b = self.head.get(at).copied().unwrap_or(0);
        }
        self.read.set(self.read.get() + n);
        Ok(())
    }
}

const SPEC: Spec = Spec {
    iommus: 2,
    domains: 4,
    devices: if cfg!(miri) { 10 } else { 100 },
    deleted: 4,
    vendor: Vendor::Mixed,
    seed: 1,
};

/// 64 GiB: far more than a test could read.
const HUGE: u64 = 64 << 30;

fn opts(format: Format, root: Option<PhysAddr>) -> ReadOptions {
    ReadOptions {
        file: "huge".into(),
        format,
        root,
        base: None,
        mode: Mode::Handover,
        page_size: iommu_flb_abi::abi::PageSize::Size4K,
    }
}

fn run(head: Vec<u8>, format: Format, root: Option<PhysAddr>, what: Report) -> (String, u64) {
    let file = Virtual {
        head,
        len: HUGE,
        read: Cell::new(0),
    };
    let out = report("huge", &file, &opts(format, root), what).expect("valid");
    (out, file.read.get())
}

#[test]
fn huge_flat_dump_is_validated_reading_only_the_image_pages() {
    let (root, pages) = build_image(&SPEC).unwrap();
    let n = u64::try_from(pages.len()).unwrap();
    let (out, read) = run(
        flat_dump(&pages).unwrap(),
        Format::Phys,
        Some(root),
        Report::Listing {
            all: true,
            json: true,
        },
    );
    assert!(out.starts_with("{\"version\":1"), "{out}");
    assert!(read <= n * 4096, "read {read} bytes for {n} pages");
}

#[test]
fn huge_elf_file_is_validated_reading_only_headers_note_and_pages() {
    let (root, pages) = build_image(&SPEC).unwrap();
    let n = u64::try_from(pages.len()).unwrap();
    let mut core = write_core(pages.iter(), root).unwrap();
    // Make the last segment claim the rest of the 64 GiB: its bytes exist
    // (zeros) but nobody needs them.
    let phnum = u64::from(u16::from_le_bytes([core[56], core[57]]));
    let last = usize::try_from(64 + (phnum - 1) * 56).unwrap();
    let offset = u64::from_le_bytes(core[last + 8..last + 16].try_into().unwrap());
    let size = HUGE - offset;
    core[last + 32..last + 40].copy_from_slice(&size.to_le_bytes()); // p_filesz
    core[last + 40..last + 48].copy_from_slice(&size.to_le_bytes()); // p_memsz
    let (out, read) = run(core, Format::Auto, None, Report::Summary);
    let expect = format!("{} devices live, 4 deleted records", SPEC.devices);
    assert!(out.contains(&expect), "{out}");
    // The magic and class bytes, the file header, the program headers
    // (once to load, once more to find the note), the note segment.
    let headers = 4 + 1 + 64 + 2 * phnum * 56 + 32;
    assert!(
        read <= headers + n * 4096,
        "read {read} bytes for {n} pages"
    );
}
