//! Recognising the diskdump-family formats by their headers, so that
//! `--format auto` reads them as what they are (see [`super::diskdump`]
//! and [`super::flattened`]), and names the one it cannot read (the older
//! `DISKDUMP` format), instead of reading them as flat physical dumps
//! (whose "root page" would then look corrupt).
//!
//! - the diskdump / kdump-compressed format (`dump-guest-memory -z/-l/-s`,
//!   makedumpfile's default output): `KDUMP   ` (or the older `DISKDUMP`)
//!   at offset 0, then `header_version` (4 bytes at 8), the `utsname`
//!   (390 bytes at 12), a timestamp, and the `status` flags and
//!   `block_size`. The timestamp is a `struct timeval`, 16 bytes at 408 on
//!   64-bit machines (`status` at 424, `block_size` at 428) and 8 bytes at
//!   404 on 32-bit ones (`status` at 412, `block_size` at 416); the fields
//!   are in the dumped machine's byte order;
//! - makedumpfile's flattened format (`makedumpfile -F`): `makedumpfile`
//!   in a 16-byte signature field, then `type` and `version` as big-endian
//!   64-bit integers.
//!
//! Only the header is read, with bounds-checked reads; a header cut short
//! is still recognised by its signature, with the fields it lacks unknown.

use core::fmt;

use crate::source::Source;

/// `KDUMP_SIGNATURE`: "KDUMP" and three spaces.
pub const KDUMP_SIGNATURE: &[u8; 8] = b"KDUMP   ";
/// `DISK_DUMP_SIGNATURE`, the older diskdump format.
pub const DISKDUMP_SIGNATURE: &[u8; 8] = b"DISKDUMP";
/// `MAKEDUMPFILE_SIGNATURE`, at the start of a 16-byte field.
pub const MAKEDUMPFILE_SIGNATURE: &[u8; 12] = b"makedumpfile";

/// `status` bits naming the page compression (`DUMP_DH_COMPRESSED_*`).
const COMPRESSION: [(u32, &str); 4] =
    [(0x1, "zlib"), (0x2, "lzo"), (0x4, "snappy"), (0x20, "zstd")];
/// `DUMP_DH_COMPRESSED_INCOMPLETE`: the dump was cut short when written.
const INCOMPLETE: u32 = 0x8;

/// Offsets of `status` and `block_size` in the 64-bit and 32-bit layouts.
const LAYOUT_64: (u64, u64) = (424, 428);
const LAYOUT_32: (u64, u64) = (412, 416);

/// Which diskdump signature a file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskdumpKind {
    /// `KDUMP   `: kdump-compressed (makedumpfile, QEMU).
    Kdump,
    /// `DISKDUMP`: the older diskdump format.
    Diskdump,
}

/// What the header of a diskdump / kdump-compressed file says; a field is
/// `None` when the header is too short for it or its value is implausible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskdumpHeader {
    /// The signature.
    pub kind: DiskdumpKind,
    /// `header_version`.
    pub header_version: Option<u32>,
    /// `block_size` (the dumped kernel's page size).
    pub block_size: Option<u32>,
    /// `status` (the `DUMP_DH_*` flags); read for `KDUMP` files only.
    pub status: Option<u32>,
}

/// What the header of a makedumpfile flattened file says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlattenedHeader {
    /// `type` (1 for the flattened format), if the header has it.
    pub flat_type: Option<i64>,
    /// `version`, if the header has it.
    pub version: Option<i64>,
}

/// A diskdump-family format recognised by its signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recognised {
    /// diskdump / kdump-compressed.
    Diskdump(DiskdumpHeader),
    /// makedumpfile's flattened format.
    Flattened(FlattenedHeader),
}

fn read<const N: usize, S: Source + ?Sized>(src: &S, at: u64) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    src.read_exact_at(&mut buf, at).ok()?;
    Some(buf)
}

/// Whether the file at `src` is one of the formats above; reads at most
/// the header's first 432 bytes.
pub fn recognise<S: Source + ?Sized>(src: &S) -> Option<Recognised> {
    let sig: Option<[u8; 8]> = read(src, 0);
    let kind = match sig.as_ref() {
        Some(s) if s == KDUMP_SIGNATURE => Some(DiskdumpKind::Kdump),
        Some(s) if s == DISKDUMP_SIGNATURE => Some(DiskdumpKind::Diskdump),
        _ => None,
    };
    if let Some(kind) = kind {
        return Some(Recognised::Diskdump(diskdump(src, kind)));
    }
    let mdf: Option<[u8; 12]> = read(src, 0);
    if mdf.as_ref() == Some(MAKEDUMPFILE_SIGNATURE) {
        let be = |at| read::<8, S>(src, at).map(i64::from_be_bytes);
        return Some(Recognised::Flattened(FlattenedHeader {
            flat_type: be(16),
            version: be(24),
        }));
    }
    None
}

/// A `header_version` is small: 1 to 6 today. Its byte order tells the
/// header's.
fn plausible_version(v: u32) -> bool {
    (1..=0xff).contains(&v)
}

/// A `block_size` is a page size: a power of two from 512 bytes to 1 MiB.
fn plausible_block_size(b: u32) -> bool {
    b.is_power_of_two() && (512..=1 << 20).contains(&b)
}

fn diskdump<S: Source + ?Sized>(src: &S, kind: DiskdumpKind) -> DiskdumpHeader {
    let raw: Option<[u8; 4]> = read(src, 8);
    let decode: Option<fn([u8; 4]) -> u32> = match raw {
        Some(r) if plausible_version(u32::from_le_bytes(r)) => Some(u32::from_le_bytes),
        Some(r) if plausible_version(u32::from_be_bytes(r)) => Some(u32::from_be_bytes),
        _ => None,
    };
    let mut header = DiskdumpHeader {
        kind,
        header_version: None,
        block_size: None,
        status: None,
    };
    let (Some(decode), Some(raw)) = (decode, raw) else {
        return header;
    };
    header.header_version = Some(decode(raw));
    let field = |at| read::<4, S>(src, at).map(decode);
    let layout = [LAYOUT_64, LAYOUT_32]
        .into_iter()
        .find_map(|(status_at, block_at)| {
            field(block_at)
                .filter(|&b| plausible_block_size(b))
                .map(|b| (status_at, b))
        });
    if let Some((status_at, block_size)) = layout {
        header.block_size = Some(block_size);
        if kind == DiskdumpKind::Kdump {
            header.status = field(status_at);
        }
    }
    header
}

impl DiskdumpHeader {
    /// The refusal of a file the tool cannot read (the `DISKDUMP`
    /// signature), with advice.
    pub fn refusal(&self) -> String {
        format!(
            "{self}; this tool cannot read diskdump dumps (only kdump-compressed ones, \
             signature `KDUMP   `): save the dump as an ELF core instead (QEMU \
             `dump-guest-memory` without -z/-l/-s, or `makedumpfile -E`) or with \
             makedumpfile's default kdump-compressed output"
        )
    }
}

impl fmt::Display for DiskdumpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DiskdumpKind::Kdump => "kdump-compressed dump",
            DiskdumpKind::Diskdump => "diskdump dump (DISKDUMP signature)",
        };
        write!(f, "{what} (")?;
        match self.header_version {
            Some(v) => write!(f, "makedumpfile header version {v}")?,
            None => write!(f, "header version unknown")?,
        }
        if let Some(b) = self.block_size {
            write!(f, ", block size {b}")?;
        }
        if let Some(status) = self.status {
            let mut names = COMPRESSION
                .iter()
                .filter(|(bit, _)| status & bit != 0)
                .map(|(_, name)| *name);
            match names.next() {
                None => write!(f, ", uncompressed")?,
                Some(first) => {
                    write!(f, ", {first}")?;
                    for name in names {
                        write!(f, "+{name}")?;
                    }
                }
            }
            if status & INCOMPLETE != 0 {
                write!(f, ", marked incomplete")?;
            }
        }
        write!(f, ")")
    }
}

impl fmt::Display for FlattenedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "makedumpfile flattened format")?;
        match (self.flat_type, self.version) {
            (Some(t), Some(v)) => write!(f, " (type {t}, version {v})"),
            _ => write!(f, " (header cut short)"),
        }
    }
}

impl fmt::Display for Recognised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recognised::Diskdump(h) => h.fmt(f),
            Recognised::Flattened(h) => h.fmt(f),
        }
    }
}
