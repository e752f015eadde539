//! Dumps are read through `object::ReadCache`, as the binary reads files:
//! only the headers and the pages the reader asks for, so a dump of many
//! gigabytes costs what its image needs.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::reader::Mode;
use iommu_flb_cli::cmd::{ReadOptions, Report, build_image, flat_dump, report};
use iommu_flb_cli::elfcore::write_core;
use iommu_flb_cli::load::Format;
use iommu_flb_cli::plan::{Spec, Vendor};
use object::ReadCache;

/// A file of `len` bytes: `head` and then zeros, counting the bytes read.
struct Virtual {
    head: Vec<u8>,
    len: u64,
    pos: u64,
    read: Rc<Cell<u64>>,
}

impl Read for Virtual {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = usize::try_from(self.pos).unwrap() + i;
            *b = self.head.get(at).copied().unwrap_or(0);
        }
        self.pos += n as u64;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl Seek for Virtual {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.checked_add_signed(d).unwrap(),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).unwrap(),
        };
        Ok(self.pos)
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
    }
}

fn run(head: Vec<u8>, format: Format, root: Option<PhysAddr>, what: Report) -> (String, u64) {
    let read = Rc::new(Cell::new(0));
    let file = Virtual {
        head,
        len: HUGE,
        pos: 0,
        read: read.clone(),
    };
    let cache = ReadCache::new(file);
    let out = report("huge", &cache, &opts(format, root), what).expect("valid");
    (out, read.get())
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
    // The magic and class bytes, the file header, program headers, note.
    let headers = 4 + 1 + 64 + phnum * 56 + 32;
    assert!(
        read <= headers + n * 4096,
        "read {read} bytes for {n} pages"
    );
}
