//! Reading kdump-compressed dumps (`KDUMP   `), as makedumpfile and QEMU's
//! `dump-guest-memory -z/-l/-s` write them, on demand.
//!
//! The file is a sequence of blocks of `block_size` bytes (the dumped
//! kernel's page size):
//!
//! | blocks | what |
//! |---|---|
//! | 1 | `disk_dump_header`: signature, `header_version`, `utsname`, timestamp, `status`, `block_size`, `sub_hdr_size`, `bitmap_blocks`, `max_mapnr`, ... |
//! | `sub_hdr_size` | `kdump_sub_header` (`max_mapnr_64` from version 6 on), notes, vmcoreinfo |
//! | `bitmap_blocks` | the 1st bitmap (pages that are RAM), then the 2nd (pages that are in the dump), one bit per page frame, least significant bit first |
//! | | one `page_desc` (24 bytes: `offset`, `size`, `flags`, `page_flags`) per bit set in the 2nd bitmap, in page frame order |
//! | | the pages' data, raw or compressed as their `flags` say |
//!
//! Fields are in the dumped machine's byte order, and the header's layout
//! depends on its word size: both are told from the header as
//! [`super::kdump`] does (`header_version` is small, `block_size` a page
//! size), a layout being taken only if the rest of its header holds
//! together.
//!
//! Loading reads the header and the sub-header, and walks the 2nd bitmap
//! once through a [`Window`] to count the page descriptors (their table
//! must lie in the file) and to keep one running count per
//! [`rank_step`](Kdump) bytes of it, [`MAX_RANK_SAMPLES`] at most: that is
//! all it keeps. Reading page frame `pfn` then reads its bits in both
//! bitmaps, counts the 2nd bitmap's bits from the last sample up to it (at
//! most one step of bitmap), reads its descriptor and its data, and
//! decompresses the data into the page.
//!
//! A page frame beyond `max_mapnr`, or whose bit in the 2nd bitmap is
//! clear (makedumpfile left it out: a zero, free, cache or user page), is
//! not in the dump: unreadable, never zeros. So is one whose descriptor is
//! all zero (makedumpfile leaves descriptors it did not get to write so
//! when the disk filled up, and marks the dump incomplete). Every other
//! malformed thing is a [`KdumpError`] naming its file offset: at load,
//! for the headers and the bitmaps; when the page is read, for a
//! descriptor or its data.

use core::cell::RefCell;
use core::fmt;

use super::PageRead;
use super::compress::{self, METHODS, Method};
use super::kdump::KDUMP_SIGNATURE;
use crate::source::{Source, Window};

/// The most running counts of the 2nd bitmap kept (8 bytes each: 512 KiB).
pub const MAX_RANK_SAMPLES: u64 = 1 << 16;

/// Bytes of the 2nd bitmap per running count, at least.
const MIN_RANK_STEP: u64 = 1024;

/// `sizeof(struct page_desc)`.
const DESC_BYTES: u64 = 24;

/// `status` bits the tool knows: the compressions, `INCOMPLETE` (0x8) and
/// `EXCLUDED_VMEMMAP` (0x10).
const KNOWN_STATUS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20;

/// The compression bits of `status` and of a descriptor's `flags`.
const COMPRESSION_BITS: u32 = 0x1 | 0x2 | 0x4 | 0x20;

/// Where the header fields after the timestamp are, and how large the
/// sub-header's fields are, for one word size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Offset of `status` (then `block_size`, `sub_hdr_size`,
    /// `bitmap_blocks`, `max_mapnr`, 4 bytes each).
    status_at: u64,
    /// Offset of `max_mapnr_64` in the sub-header.
    max_mapnr_64_at: u64,
}

/// `DiskDumpHeader64` / `KdumpSubHeader64`: a 16-byte `struct timeval`.
const LAYOUT_64: Layout = Layout {
    status_at: 424,
    max_mapnr_64_at: 96,
};
/// `DiskDumpHeader32` / `KdumpSubHeader32` (packed, as i386 lays it out).
const LAYOUT_32: Layout = Layout {
    status_at: 412,
    max_mapnr_64_at: 72,
};

/// What is wrong with a kdump-compressed file, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KdumpError {
    /// The file offset of the bytes that are wrong (of the reassembled
    /// file, for a flattened one).
    pub offset: u64,
    /// What is wrong with them.
    pub problem: KdumpProblem,
}

/// What is wrong in a kdump-compressed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KdumpProblem {
    /// The file ends inside a structure.
    Truncated {
        /// The structure.
        what: &'static str,
        /// Its size in bytes.
        len: u64,
        /// The file's size.
        file_size: u64,
    },
    /// The header's byte order and word size cannot be told: no layout
    /// has a plausible `header_version` and `block_size`.
    UnknownLayout,
    /// A header field has a value the format does not allow.
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        expected: &'static str,
    },
    /// `status` has bits the tool does not know: a compression it cannot
    /// read, or a format it does not know.
    UnknownCompression {
        /// `status`.
        status: u32,
    },
    /// The dump uses a compression this build cannot decompress.
    NotBuiltIn {
        /// The compression.
        method: Method,
    },
    /// Each bitmap has fewer bits than `max_mapnr` page frames.
    BitmapTooSmall {
        /// Bits in each bitmap.
        bits: u64,
        /// `max_mapnr`.
        max_mapnr: u64,
    },
    /// A page frame is in the 2nd bitmap (dumped) but not in the 1st (RAM).
    NotInFirstBitmap {
        /// The page frame.
        pfn: u64,
    },
    /// The page descriptor of a page frame is malformed.
    Descriptor {
        /// The page frame.
        pfn: u64,
        /// What is wrong with it.
        what: DescriptorProblem,
    },
    /// A page's data does not decompress to one block.
    Payload {
        /// The page frame.
        pfn: u64,
        /// The compression its descriptor names.
        method: Method,
        /// The decompressor's complaint.
        why: String,
    },
}

/// What is wrong with one page descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescriptorProblem {
    /// `flags` has bits other than the compressions.
    UnknownFlags {
        /// `flags`.
        flags: u32,
    },
    /// `flags` names more than one compression.
    TwoCompressions {
        /// `flags`.
        flags: u32,
    },
    /// `size` is 0, above the block size, or (for a raw page) not the
    /// block size.
    Size {
        /// `size`.
        size: u32,
        /// The block size.
        block_size: u32,
        /// Whether the page is compressed.
        compressed: bool,
    },
    /// The data (`offset`, `size`) is not in the file.
    PastEnd {
        /// `offset`.
        offset: u64,
        /// `size`.
        size: u32,
        /// The file's size.
        file_size: u64,
    },
    /// The data's compression is not in this build.
    NotBuiltIn {
        /// The compression.
        method: Method,
    },
}

impl fmt::Display for KdumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.offset;
        match &self.problem {
            KdumpProblem::UnknownCompression { status } => {
                return write!(
                    f,
                    "kdump-compressed with an unknown compression (status {status:#x} at file \
                     offset {at:#x} has bits {:#x} the tool does not know; it reads zlib 0x1, \
                     lzo 0x2, snappy 0x4 and zstd 0x20): refused, not read",
                    status & !KNOWN_STATUS
                );
            }
            KdumpProblem::NotBuiltIn { method } => {
                return write!(
                    f,
                    "kdump-compressed with {} (status at file offset {at:#x}): {}",
                    method.name(),
                    compress::NO_LZO
                );
            }
            _ => {}
        }
        write!(
            f,
            "malformed kdump-compressed dump: at file offset {at:#x}: "
        )?;
        match &self.problem {
            KdumpProblem::Truncated {
                what,
                len,
                file_size,
            } => write!(
                f,
                "the {what} ({len:#x} bytes) runs past the end of the file ({file_size:#x} \
                 bytes; truncated?)"
            ),
            KdumpProblem::UnknownLayout => write!(
                f,
                "header_version and block_size are implausible in either byte order and word \
                 size"
            ),
            KdumpProblem::Field {
                field,
                value,
                expected,
            } => write!(f, "{field} is {value:#x}; expected {expected}"),
            KdumpProblem::UnknownCompression { .. } | KdumpProblem::NotBuiltIn { .. } => Ok(()),
            KdumpProblem::BitmapTooSmall { bits, max_mapnr } => write!(
                f,
                "each bitmap has {bits:#x} bits, fewer than max_mapnr {max_mapnr:#x} page frames"
            ),
            KdumpProblem::NotInFirstBitmap { pfn } => write!(
                f,
                "page frame {pfn:#x} is in the 2nd bitmap (dumped) but not in the 1st (RAM)"
            ),
            KdumpProblem::Descriptor { pfn, what } => {
                write!(f, "the page descriptor of page frame {pfn:#x}: ")?;
                match what {
                    DescriptorProblem::UnknownFlags { flags } => {
                        write!(f, "flags {flags:#x} name no compression the tool knows")
                    }
                    DescriptorProblem::TwoCompressions { flags } => {
                        write!(f, "flags {flags:#x} name more than one compression")
                    }
                    DescriptorProblem::Size {
                        size,
                        block_size,
                        compressed,
                    } => write!(
                        f,
                        "size {size:#x} is not {} the block size {block_size:#x}",
                        if *compressed {
                            "between 1 and"
                        } else {
                            "(for a raw page)"
                        }
                    ),
                    DescriptorProblem::PastEnd {
                        offset,
                        size,
                        file_size,
                    } => write!(
                        f,
                        "its data at {offset:#x}+{size:#x} runs past the end of the file \
                         ({file_size:#x} bytes)"
                    ),
                    DescriptorProblem::NotBuiltIn { method } => {
                        write!(f, "{} data: {}", method.name(), compress::NO_LZO)
                    }
                }
            }
            KdumpProblem::Payload { pfn, method, why } => write!(
                f,
                "the {} data of page frame {pfn:#x}: {why}",
                method.name()
            ),
        }
    }
}

impl std::error::Error for KdumpError {}

fn err(offset: u64, problem: KdumpProblem) -> KdumpError {
    KdumpError { offset, problem }
}

/// The layout of a kdump-compressed file, checked, and the running counts
/// of its 2nd bitmap.
#[derive(Debug)]
pub struct Kdump {
    big_endian: bool,
    /// `status`.
    status: u32,
    /// The page size: a power of two, 512 bytes to 1 MiB.
    block_size: u32,
    /// Page frames `0..max_mapnr` may be in the dump.
    max_mapnr: u64,
    /// File offsets of the 1st and the 2nd bitmap, each `bitmap_len` bytes.
    bitmap1: u64,
    bitmap2: u64,
    bitmap_len: u64,
    /// File offset of the page descriptor table, and its number of entries.
    descs: u64,
    ndescs: u64,
    /// Bytes of the 2nd bitmap per running count (a multiple of
    /// [`MIN_RANK_STEP`]).
    rank_step: u64,
    /// `rank[i]`: bits set in the 2nd bitmap before byte `i * rank_step`.
    rank: Vec<u64>,
    /// The file's size.
    file_size: u64,
    /// The last block decompressed (its page frame, its bytes) and the
    /// buffer compressed data is read into: one block each.
    scratch: RefCell<Scratch>,
}

#[derive(Debug, Default)]
struct Scratch {
    held: Option<u64>,
    block: Vec<u8>,
    packed: Vec<u8>,
}

/// The header fields the reader needs, in one layout.
struct Header {
    status: u32,
    block_size: u32,
    sub_hdr_size: u32,
    bitmap_blocks: u32,
    max_mapnr: u32,
}

fn read_array<const N: usize, S: Source + ?Sized>(
    src: &S,
    at: u64,
    what: &'static str,
    file_size: u64,
) -> Result<[u8; N], KdumpError> {
    let mut buf = [0u8; N];
    src.read_exact_at(&mut buf, at).map_err(|_| {
        err(
            at,
            KdumpProblem::Truncated {
                what,
                len: u64::try_from(N).unwrap_or(u64::MAX),
                file_size,
            },
        )
    })?;
    Ok(buf)
}

fn plausible_version(v: u32) -> bool {
    (1..=0xff).contains(&v)
}

fn plausible_block_size(b: u32) -> bool {
    b.is_power_of_two() && (512..=1 << 20).contains(&b)
}

impl Kdump {
    /// The page size of the dump.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The header's `status` flags.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// One past the last physical address the dump may hold
    /// (`max_mapnr` pages of `block_size`), saturating.
    pub fn end(&self) -> u64 {
        self.max_mapnr.saturating_mul(u64::from(self.block_size))
    }

    /// How many pages the dump holds (bits set in the 2nd bitmap).
    pub fn pages(&self) -> u64 {
        self.ndescs
    }

    fn u32_of(&self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn u64_of(&self, b: [u8; 8]) -> u64 {
        if self.big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }

    /// Reads and checks the headers of a file of `len` bytes that starts
    /// with [`KDUMP_SIGNATURE`], and walks its 2nd bitmap once.
    pub fn parse<S: Source + ?Sized>(src: &S, len: u64) -> Result<Self, KdumpError> {
        let sig: [u8; 8] = read_array(src, 0, "signature", len)?;
        if &sig != KDUMP_SIGNATURE {
            return Err(err(
                0,
                KdumpProblem::Field {
                    field: "the signature",
                    value: u64::from_be_bytes(sig),
                    expected: "\"KDUMP   \"",
                },
            ));
        }
        let raw_version: [u8; 4] = read_array(src, 8, "disk_dump_header", len)?;
        let big_endian = if plausible_version(u32::from_le_bytes(raw_version)) {
            false
        } else if plausible_version(u32::from_be_bytes(raw_version)) {
            true
        } else {
            return Err(err(8, KdumpProblem::UnknownLayout));
        };
        let mut dump = Kdump {
            big_endian,
            status: 0,
            block_size: 0,
            max_mapnr: 0,
            bitmap1: 0,
            bitmap2: 0,
            bitmap_len: 0,
            descs: 0,
            ndescs: 0,
            rank_step: MIN_RANK_STEP,
            rank: Vec::new(),
            file_size: len,
            scratch: RefCell::new(Scratch::default()),
        };
        let version = dump.u32_of(raw_version);
        // The first layout whose block size is a page size and whose header
        // then holds together; the error of the first plausible one if none
        // does.
        let mut first_error = None;
        for layout in [LAYOUT_64, LAYOUT_32] {
            let header = match dump.header(src, layout) {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match dump.layout(src, layout, version, &header) {
                Ok(()) => return Ok(dump),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| err(8, KdumpProblem::UnknownLayout)))
    }

    /// The header fields of `layout`, or `None` if its block size is not a
    /// page size.
    fn header<S: Source + ?Sized>(
        &self,
        src: &S,
        layout: Layout,
    ) -> Result<Option<Header>, KdumpError> {
        let at = layout.status_at;
        let fields: [u8; 20] = read_array(src, at, "disk_dump_header", self.file_size)?;
        let field = |i: usize| {
            let mut b = [0u8; 4];
            if let Some(s) = fields.get(i.saturating_mul(4)..i.saturating_mul(4).saturating_add(4))
            {
                b.copy_from_slice(s);
            }
            self.u32_of(b)
        };
        let block_size = field(1);
        if !plausible_block_size(block_size) {
            return Ok(None);
        }
        Ok(Some(Header {
            status: field(0),
            block_size,
            sub_hdr_size: field(2),
            bitmap_blocks: field(3),
            max_mapnr: field(4),
        }))
    }

    /// Checks `header` (in `layout`) against the file and fills in `self`.
    fn layout<S: Source + ?Sized>(
        &mut self,
        src: &S,
        layout: Layout,
        version: u32,
        h: &Header,
    ) -> Result<(), KdumpError> {
        let at = layout.status_at;
        let field_at = |i: u64| at.saturating_add(i.saturating_mul(4));
        let bad = |i: u64, field: &'static str, value: u32, expected: &'static str| {
            err(
                field_at(i),
                KdumpProblem::Field {
                    field,
                    value: u64::from(value),
                    expected,
                },
            )
        };
        if h.sub_hdr_size == 0 {
            return Err(bad(
                2,
                "sub_hdr_size",
                h.sub_hdr_size,
                "at least 1 block (the kdump sub-header)",
            ));
        }
        if h.bitmap_blocks == 0 || h.bitmap_blocks % 2 != 0 {
            return Err(bad(
                3,
                "bitmap_blocks",
                h.bitmap_blocks,
                "a non-zero even number of blocks (the 1st and the 2nd bitmap)",
            ));
        }
        let bs = u64::from(h.block_size);
        let blocks = |n: u64| n.checked_mul(bs);
        let sub_at = bs;
        let bitmap1 = blocks(1 + u64::from(h.sub_hdr_size)).ok_or_else(|| {
            bad(
                2,
                "sub_hdr_size",
                h.sub_hdr_size,
                "a size that fits the file",
            )
        })?;
        let bitmap_bytes = blocks(u64::from(h.bitmap_blocks)).ok_or_else(|| {
            bad(
                3,
                "bitmap_blocks",
                h.bitmap_blocks,
                "a size that fits the file",
            )
        })?;
        let descs = bitmap1.checked_add(bitmap_bytes).ok_or_else(|| {
            bad(
                3,
                "bitmap_blocks",
                h.bitmap_blocks,
                "a size that fits the file",
            )
        })?;
        let file_size = self.file_size;
        let in_file = |start: u64, n: u64, what: &'static str| {
            if start.checked_add(n).is_some_and(|e| e <= file_size) {
                Ok(())
            } else {
                Err(err(
                    start,
                    KdumpProblem::Truncated {
                        what,
                        len: n,
                        file_size,
                    },
                ))
            }
        };
        in_file(sub_at, bs, "kdump sub-header")?;
        in_file(bitmap1, bitmap_bytes, "pair of page bitmaps")?;
        let max_mapnr = if version >= 6 {
            let mm_at = sub_at.saturating_add(layout.max_mapnr_64_at);
            let raw: [u8; 8] = read_array(src, mm_at, "kdump sub-header", self.file_size)?;
            let m = self.u64_of(raw);
            (m, mm_at)
        } else {
            (u64::from(h.max_mapnr), field_at(4))
        };
        let (max_mapnr, mm_at) = max_mapnr;
        if max_mapnr == 0 {
            return Err(err(
                mm_at,
                KdumpProblem::Field {
                    field: "max_mapnr",
                    value: 0,
                    expected: "at least one page frame",
                },
            ));
        }
        let bitmap_len = bitmap_bytes / 2;
        let bits = bitmap_len.saturating_mul(8);
        if bits < max_mapnr {
            return Err(err(
                bitmap1,
                KdumpProblem::BitmapTooSmall { bits, max_mapnr },
            ));
        }
        // Checked last, so that a header read in the wrong byte order or
        // layout fails on its structure rather than as a compression.
        if h.status & !KNOWN_STATUS != 0 {
            return Err(err(
                at,
                KdumpProblem::UnknownCompression { status: h.status },
            ));
        }
        for (bit, method) in METHODS {
            if h.status & bit != 0 && !method.built_in() {
                return Err(err(at, KdumpProblem::NotBuiltIn { method }));
            }
        }
        self.status = h.status;
        self.block_size = h.block_size;
        self.max_mapnr = max_mapnr;
        self.bitmap1 = bitmap1;
        self.bitmap2 = bitmap1.saturating_add(bitmap_len);
        self.bitmap_len = bitmap_len;
        self.descs = descs;
        self.count_bitmap(src)?;
        let table = self.ndescs.saturating_mul(DESC_BYTES);
        in_file(descs, table, "page descriptor table")?;
        Ok(())
    }

    /// Walks the 2nd bitmap once: the running counts and the number of
    /// descriptors.
    fn count_bitmap<S: Source + ?Sized>(&mut self, src: &S) -> Result<(), KdumpError> {
        let step = self
            .bitmap_len
            .div_ceil(MAX_RANK_SAMPLES)
            .max(1)
            .next_multiple_of(MIN_RANK_STEP);
        let end = self.bitmap2.saturating_add(self.bitmap_len);
        let mut window = Window::new(src, end);
        let samples = self.bitmap_len.div_ceil(step);
        let mut rank = Vec::with_capacity(usize::try_from(samples).unwrap_or(0));
        let mut total = 0u64;
        let mut at = 0u64;
        let piece = usize::try_from(MIN_RANK_STEP).unwrap_or(1024);
        while at < self.bitmap_len {
            if at.checked_rem(step) == Some(0) {
                rank.push(total);
            }
            let n = usize::try_from(self.bitmap_len.saturating_sub(at).min(MIN_RANK_STEP))
                .unwrap_or(piece);
            let off = self.bitmap2.saturating_add(at);
            let bytes = window.bytes(off, n).ok_or(err(
                off,
                KdumpProblem::Truncated {
                    what: "2nd bitmap",
                    len: self.bitmap_len,
                    file_size: self.file_size,
                },
            ))?;
            total = total.saturating_add(popcount(bytes));
            at = at.saturating_add(MIN_RANK_STEP);
        }
        self.rank = rank;
        self.rank_step = step;
        self.ndescs = total;
        Ok(())
    }

    /// Whether bit `pfn` of the bitmap at `base` is set.
    fn bit<S: Source + ?Sized>(&self, src: &S, base: u64, pfn: u64) -> Result<bool, KdumpError> {
        let at = base.saturating_add(pfn / 8);
        let [byte]: [u8; 1] = read_array(src, at, "page bitmap", self.file_size)?;
        Ok(byte >> (pfn % 8) & 1 != 0)
    }

    /// The number of bits set in the 2nd bitmap before `pfn`: the index of
    /// its descriptor.
    fn rank<S: Source + ?Sized>(&self, src: &S, pfn: u64) -> Result<u64, KdumpError> {
        let byte = pfn / 8;
        let sample = byte.checked_div(self.rank_step).unwrap_or(0);
        let mut count = usize::try_from(sample)
            .ok()
            .and_then(|i| self.rank.get(i))
            .copied()
            .unwrap_or(0);
        let mut at = sample.saturating_mul(self.rank_step);
        let mut buf = [0u8; 1024];
        while at < byte {
            let n = byte.saturating_sub(at).min(1024);
            let piece = buf
                .get_mut(..usize::try_from(n).unwrap_or(0))
                .unwrap_or_default();
            let off = self.bitmap2.saturating_add(at);
            src.read_exact_at(piece, off).map_err(|_| {
                err(
                    off,
                    KdumpProblem::Truncated {
                        what: "2nd bitmap",
                        len: self.bitmap_len,
                        file_size: self.file_size,
                    },
                )
            })?;
            count = count.saturating_add(popcount(piece));
            at = at.saturating_add(n);
        }
        let [last]: [u8; 1] = read_array(
            src,
            self.bitmap2.saturating_add(byte),
            "2nd bitmap",
            self.file_size,
        )?;
        // The bits of `last` below `pfn`'s.
        let above = u8::MAX
            .checked_shl(u32::try_from(pfn % 8).unwrap_or(0))
            .unwrap_or(0);
        Ok(count.saturating_add(u64::from((last & !above).count_ones())))
    }

    /// Decompresses page frame `pfn` into `out` (one block): `Ok(false)`
    /// if it is not in the dump.
    fn read_block<S: Source + ?Sized>(
        &self,
        src: &S,
        pfn: u64,
        out: &mut [u8],
        packed: &mut Vec<u8>,
    ) -> Result<bool, KdumpError> {
        if pfn >= self.max_mapnr || !self.bit(src, self.bitmap2, pfn)? {
            return Ok(false);
        }
        if !self.bit(src, self.bitmap1, pfn)? {
            return Err(err(
                self.bitmap1.saturating_add(pfn / 8),
                KdumpProblem::NotInFirstBitmap { pfn },
            ));
        }
        let index = self.rank(src, pfn)?;
        let at = index
            .checked_mul(DESC_BYTES)
            .and_then(|o| o.checked_add(self.descs))
            .unwrap_or(u64::MAX);
        let raw: [u8; 24] = read_array(src, at, "page descriptor", self.file_size)?;
        if raw == [0u8; 24] {
            // Never written: the page is not in the dump.
            return Ok(false);
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(raw.get(i..i.saturating_add(8)).unwrap_or(&[0; 8]));
            self.u64_of(b)
        };
        let half = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(raw.get(i..i.saturating_add(4)).unwrap_or(&[0; 4]));
            self.u32_of(b)
        };
        let (offset, size, flags) = (word(0), half(8), half(12));
        let bad = |what| err(at, KdumpProblem::Descriptor { pfn, what });
        if flags & !COMPRESSION_BITS != 0 {
            return Err(bad(DescriptorProblem::UnknownFlags { flags }));
        }
        if (flags & COMPRESSION_BITS).count_ones() > 1 {
            return Err(bad(DescriptorProblem::TwoCompressions { flags }));
        }
        let method = METHODS
            .iter()
            .find(|(bit, _)| flags & bit != 0)
            .map(|&(_, m)| m);
        let size_ok = match method {
            Some(_) => size > 0 && size <= self.block_size,
            None => size == self.block_size,
        };
        if !size_ok {
            return Err(bad(DescriptorProblem::Size {
                size,
                block_size: self.block_size,
                compressed: method.is_some(),
            }));
        }
        if offset
            .checked_add(u64::from(size))
            .is_none_or(|e| e > self.file_size)
        {
            return Err(bad(DescriptorProblem::PastEnd {
                offset,
                size,
                file_size: self.file_size,
            }));
        }
        let truncated = || {
            err(
                offset,
                KdumpProblem::Truncated {
                    what: "page data",
                    len: u64::from(size),
                    file_size: self.file_size,
                },
            )
        };
        let Some(method) = method else {
            src.read_exact_at(out, offset).map_err(|_| truncated())?;
            return Ok(true);
        };
        if !method.built_in() {
            return Err(bad(DescriptorProblem::NotBuiltIn { method }));
        }
        packed.resize(usize::try_from(size).map_err(|_| truncated())?, 0);
        src.read_exact_at(packed, offset).map_err(|_| truncated())?;
        compress::decompress(method, packed, out)
            .map_err(|why| err(offset, KdumpProblem::Payload { pfn, method, why }))?;
        Ok(true)
    }

    /// Reads the page at `phys` (a multiple of `buf.len()`, a power of two)
    /// into `buf`: from the blocks it is made of, or from the part of the
    /// one block it is in. Unreadable if any of its blocks is not in the
    /// dump; an error if one is malformed.
    pub(crate) fn read_page<S: Source + ?Sized>(
        &self,
        src: &S,
        phys: u64,
        buf: &mut [u8],
    ) -> Result<PageRead, KdumpError> {
        let bs = u64::from(self.block_size);
        let bs_len = usize::try_from(self.block_size).unwrap_or(usize::MAX);
        let mut scratch = self.scratch.borrow_mut();
        let Scratch {
            held,
            block,
            packed,
        } = &mut *scratch;
        if buf.len() >= bs_len {
            // Whole blocks.
            let first = phys.checked_div(bs).unwrap_or(0);
            for (i, chunk) in buf.chunks_mut(bs_len).enumerate() {
                let pfn = first.saturating_add(u64::try_from(i).unwrap_or(u64::MAX));
                if chunk.len() != bs_len || !self.read_block(src, pfn, chunk, packed)? {
                    return Ok(PageRead::Unreadable);
                }
            }
            return Ok(PageRead::Data);
        }
        // Part of one block, which is kept for the next part.
        let pfn = phys.checked_div(bs).unwrap_or(0);
        if *held != Some(pfn) {
            *held = None;
            block.resize(bs_len, 0);
            if !self.read_block(src, pfn, block, packed)? {
                return Ok(PageRead::Unreadable);
            }
            *held = Some(pfn);
        }
        let from = usize::try_from(phys.checked_rem(bs).unwrap_or(0)).unwrap_or(usize::MAX);
        match from
            .checked_add(buf.len())
            .and_then(|to| block.get(from..to))
        {
            Some(part) => {
                buf.copy_from_slice(part);
                Ok(PageRead::Data)
            }
            None => Ok(PageRead::Unreadable),
        }
    }
}

fn popcount(bytes: &[u8]) -> u64 {
    bytes.iter().map(|b| u64::from(b.count_ones())).sum()
}
