//! Dump formats the tool recognises but cannot read: kdump-compressed and
//! diskdump headers, makedumpfile's flattened format, and ELF files that are
//! not cores. `--format auto` (and `elf`) must name them, never read them as
//! flat physical dumps; `--format phys` still reads them as flat bytes.
//!
//! The headers are built byte by byte at the offsets of makedumpfile's
//! `struct disk_dump_header` (`diskdump_mod.h`) and QEMU's
//! `DiskDumpHeader32/64` (`include/sysemu/dump.h`).

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use iommu_flb_cli::load::kdump::{DiskdumpHeader, DiskdumpKind, FlattenedHeader, Unsupported};
use iommu_flb_cli::load::{Format, LoadError, LoadOptions, load};

mod common;
use common::{le, load_seg};

const AUTO: LoadOptions = LoadOptions {
    format: Format::Auto,
    base: None,
};
const ELF: LoadOptions = LoadOptions {
    format: Format::Elf,
    base: None,
};
const PHYS: LoadOptions = LoadOptions {
    format: Format::Phys,
    base: None,
};

/// Where `status` and `block_size` are.
#[derive(Clone, Copy)]
enum Bits {
    /// 64-bit dumped machine: `struct timeval` of 16 bytes at 408.
    B64,
    /// 32-bit: 8 bytes at 404.
    B32,
}

/// A diskdump header with `sig`, in little- or big-endian byte order,
/// followed by zeros up to two 4 KiB blocks.
fn diskdump(
    sig: &[u8; 8],
    big: bool,
    bits: Bits,
    version: u32,
    status: u32,
    block: u32,
) -> Vec<u8> {
    let put = |bytes: &mut Vec<u8>, at: usize, v: u32| {
        let b = if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        bytes[at..at + 4].copy_from_slice(&b);
    };
    let mut bytes = vec![0u8; 8192];
    bytes[..8].copy_from_slice(sig);
    put(&mut bytes, 8, version);
    // utsname: sysname "Linux" at 12, machine at 12 + 4 * 65.
    bytes[12..17].copy_from_slice(b"Linux");
    let (status_at, block_at) = match bits {
        Bits::B64 => (424, 428),
        Bits::B32 => (412, 416),
    };
    put(&mut bytes, status_at, status);
    put(&mut bytes, block_at, block);
    // sub_hdr_size, bitmap_blocks: plausible values after block_size.
    put(&mut bytes, block_at + 4, 1);
    put(&mut bytes, block_at + 8, 2);
    bytes
}

fn kdump(status: u32) -> Vec<u8> {
    diskdump(b"KDUMP   ", false, Bits::B64, 6, status, 4096)
}

fn unsupported(bytes: &[u8], opts: LoadOptions) -> Unsupported {
    match load(bytes, opts).expect_err("the file should be refused") {
        LoadError::Unsupported(u) => u,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn header(version: Option<u32>, block: Option<u32>, status: Option<u32>) -> Unsupported {
    Unsupported::Diskdump(DiskdumpHeader {
        kind: DiskdumpKind::Kdump,
        header_version: version,
        block_size: block,
        status,
    })
}

const ADVICE: &str = "this tool cannot read kdump-compressed dumps yet: save the dump as an \
                      ELF core instead (QEMU `dump-guest-memory` without -z/-l/-s, or \
                      `makedumpfile -E`)";

#[test]
fn kdump_compressed_zlib_is_refused_naming_version_and_compression() {
    let u = unsupported(&kdump(0x1), AUTO);
    assert_eq!(u, header(Some(6), Some(4096), Some(0x1)));
    let msg = LoadError::Unsupported(u).to_string();
    assert_eq!(
        msg,
        format!(
            "kdump-compressed dump (makedumpfile header version 6, block size 4096, zlib); \
             {ADVICE}"
        )
    );
    assert!(!msg.contains("corrupt"), "{msg}");
}

#[test]
fn each_compression_flag_is_named() {
    for (status, name) in [
        (0x1, "zlib"),
        (0x2, "lzo"),
        (0x4, "snappy"),
        (0x20, "zstd"),
        (0x0, "uncompressed"),
        (0x10 | 0x2, "lzo"),
    ] {
        let msg = unsupported(&kdump(status), AUTO).to_string();
        assert!(
            msg.starts_with(&format!(
                "kdump-compressed dump (makedumpfile header version 6, block size 4096, {name})"
            )),
            "status {status:#x}: {msg}"
        );
    }
    let msg = unsupported(&kdump(0x1 | 0x8), AUTO).to_string();
    assert!(msg.contains(", zlib, marked incomplete);"), "{msg}");
}

#[test]
fn big_endian_and_32_bit_headers_are_read_in_their_layout() {
    let be = diskdump(b"KDUMP   ", true, Bits::B64, 6, 0x4, 65536);
    assert_eq!(
        unsupported(&be, AUTO),
        header(Some(6), Some(65536), Some(0x4))
    );
    let b32 = diskdump(b"KDUMP   ", false, Bits::B32, 5, 0x2, 4096);
    assert_eq!(
        unsupported(&b32, AUTO),
        header(Some(5), Some(4096), Some(0x2))
    );
}

#[test]
fn older_diskdump_signature_is_refused_too() {
    let bytes = diskdump(b"DISKDUMP", false, Bits::B64, 1, 0x8, 4096);
    let u = unsupported(&bytes, AUTO);
    assert_eq!(
        u,
        Unsupported::Diskdump(DiskdumpHeader {
            kind: DiskdumpKind::Diskdump,
            header_version: Some(1),
            block_size: Some(4096),
            status: None,
        })
    );
    assert!(
        u.to_string()
            .starts_with("diskdump dump (DISKDUMP signature) (makedumpfile header version 1, block size 4096); this tool cannot read diskdump dumps yet"),
        "{u}"
    );
}

#[test]
fn a_header_cut_short_is_still_recognised_by_its_signature() {
    let bytes = kdump(0x1);
    // Only the signature and the version: no block size, no status.
    assert_eq!(unsupported(&bytes[..12], AUTO), header(Some(6), None, None));
    // Only the signature.
    assert_eq!(unsupported(&bytes[..8], AUTO), header(None, None, None));
    // An implausible version and block size are left unknown, not guessed.
    let mut odd = diskdump(b"KDUMP   ", false, Bits::B64, 0x1234_5678, 0x1, 4096);
    assert_eq!(unsupported(&odd, AUTO), header(None, None, None));
    odd = diskdump(b"KDUMP   ", false, Bits::B64, 6, 0x1, 4097);
    assert_eq!(unsupported(&odd, AUTO), header(Some(6), None, None));
    assert!(unsupported(&odd, AUTO).to_string().starts_with(
        "kdump-compressed dump (makedumpfile header version 6); this tool cannot read"
    ));
}

#[test]
fn a_signature_that_differs_in_one_byte_is_a_flat_dump() {
    // "KDUMP" without its three spaces is not the signature.
    let mut bytes = kdump(0x1);
    bytes[7] = 0;
    let dump = load(&bytes[..], AUTO).expect("a flat dump");
    assert!(!dump.is_elf());
    let mut mdf = flattened();
    mdf[0] = b'M';
    assert!(load(&mdf[..], AUTO).is_ok());
}

#[test]
fn format_elf_names_the_format_too() {
    assert_eq!(
        unsupported(&kdump(0x20), ELF),
        header(Some(6), Some(4096), Some(0x20))
    );
    assert!(matches!(
        unsupported(&flattened(), ELF),
        Unsupported::Flattened(_)
    ));
}

#[test]
fn format_phys_still_reads_a_kdump_file_as_flat_bytes() {
    let bytes = kdump(0x1);
    let dump = load(&bytes[..], PHYS).expect("--format phys reads any file");
    assert!(!dump.is_elf());
    let page = dump.page(PhysAddr::NULL, PageSize::Size4K).expect("page 0");
    assert_eq!(&page[..8], b"KDUMP   ");
    let mdf = flattened();
    let dump = load(&mdf[..], PHYS).expect("--format phys reads any file");
    let page = dump.page(PhysAddr::NULL, PageSize::Size4K).expect("page 0");
    assert_eq!(&page[..12], b"makedumpfile");
}

/// A makedumpfile flattened header: the signature in 16 bytes, then type 1
/// and version 1 as big-endian 64-bit integers; then the first data header
/// (offset, size) and zeros.
fn flattened() -> Vec<u8> {
    let mut bytes = vec![0u8; 8192];
    bytes[..12].copy_from_slice(b"makedumpfile");
    bytes[16..24].copy_from_slice(&1i64.to_be_bytes());
    bytes[24..32].copy_from_slice(&1i64.to_be_bytes());
    bytes[4096..4104].copy_from_slice(&0i64.to_be_bytes());
    bytes[4104..4112].copy_from_slice(&4096i64.to_be_bytes());
    bytes
}

#[test]
fn flattened_format_is_refused_with_how_to_reassemble_it() {
    let u = unsupported(&flattened(), AUTO);
    assert_eq!(
        u,
        Unsupported::Flattened(FlattenedHeader {
            flat_type: Some(1),
            version: Some(1),
        })
    );
    let msg = LoadError::Unsupported(u).to_string();
    assert_eq!(
        msg,
        "makedumpfile flattened format (type 1, version 1); this tool cannot read it: \
         reassemble it with `makedumpfile -R OUT < FILE`; OUT is then kdump-compressed, \
         which this tool cannot read yet either, so for this tool save the dump as an ELF \
         core instead (QEMU `dump-guest-memory` without -z/-l/-s, or `makedumpfile -E`)"
    );
    assert!(!msg.contains("corrupt"), "{msg}");
    assert_eq!(
        unsupported(&flattened()[..20], AUTO),
        Unsupported::Flattened(FlattenedHeader {
            flat_type: None,
            version: None,
        })
    );
}

#[test]
fn elf_file_that_is_not_a_core_is_refused_as_such_in_auto_and_read_flat_in_phys() {
    let bytes = le(2, &[load_seg(0x1000, 0, 0x1000, 0x1000)], &[7u8; 4096]);
    let e = load(&bytes[..], AUTO).expect_err("an executable is not a core");
    assert_eq!(e, LoadError::NotCore(2));
    assert_eq!(
        e.to_string(),
        "not an ELF core file: e_type is 2, expected 4 (ET_CORE)"
    );
    let dump = load(&bytes[..], PHYS).expect("--format phys reads any file");
    let page = dump.page(PhysAddr::NULL, PageSize::Size4K).expect("page 0");
    assert_eq!(&page[..4], b"\x7fELF");
}
