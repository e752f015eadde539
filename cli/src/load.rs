//! Loading dump files: ELF64 core files, kdump-compressed dumps,
//! makedumpfile flattened files and flat physical dumps.
//!
//! [`load`] takes the file as a [`Source`] (a byte slice, or an open file,
//! read with positioned reads) and returns a [`Dump`], which implements the
//! library's [`Memory`] trait, so the reader walks it exactly as it would
//! walk the kernel's pages. Whatever the bytes, loading either succeeds or
//! returns a [`LoadError`]; it never panics. A page whose bytes cannot be
//! read (an I/O error after loading) is an unreadable page, as a page
//! outside the dump is.
//!
//! # Memory
//!
//! Loading reads the ELF header and walks the program header table once,
//! keeping a table of the `PT_LOAD` segments ([`MAX_PROGRAM_HEADERS`] at
//! most, [`SEGMENT_BYTES`] each). After that, memory grows only when the
//! reader asks for a page: the page is read then (one positioned read per
//! segment piece) and kept, because [`Memory::page`] lends it for as long as
//! the dump lives; a page asked for again is not read again. A page that is
//! all zero tail costs nothing, nor does one that cannot be read. So a dump
//! costs its segment table plus one page (and [`PER_PAGE_OVERHEAD`] bytes)
//! per distinct page the reader asked for, whatever its segments or notes
//! claim; reads of the headers and notes go through one buffer of
//! [`Window::CAPACITY`] bytes at a time.
//!
//! # ELF64 core files
//!
//! As kdump's `/proc/vmcore` and QEMU's `dump-guest-memory` write them:
//! physical memory is in `PT_LOAD` segments, placed by `p_paddr` (`p_vaddr`
//! is ignored). The headers are read with the `object` crate's types. Rules:
//!
//! - the file must be ELF64 (either byte order) with `e_type` = `ET_CORE`,
//!   and have at least one `PT_LOAD` segment with a non-zero `p_memsz`;
//! - it may have at most [`MAX_PROGRAM_HEADERS`] program headers (an
//!   extended count, `e_phnum` = `PN_XNUM`, is read from section header 0);
//! - each such segment's file bytes (`p_offset`, `p_filesz`) must lie inside
//!   the file, `p_filesz` may not exceed `p_memsz`, and `p_paddr + p_memsz`
//!   may not overflow;
//! - two segments may not overlap in physical memory (the dump would say two
//!   things about one byte); they may share file bytes;
//! - bytes between `p_filesz` and `p_memsz` read as **zero**, as the ELF
//!   specification defines them (makedumpfile uses this to leave out zero
//!   pages). A page the dump does not cover entirely is unreadable, and the
//!   reader reports it as such;
//! - a page may be assembled from several segments that are adjacent in
//!   physical memory (a segment ending in the middle of a page, the next one
//!   starting there), when it is asked for;
//! - `PT_NOTE` segments are read only when the root address is needed and
//!   `--root` was not given: see [`crate::elfcore`] for the `IOMMUFLB` note.
//!   They are walked note by note, and together may not hold more bytes than
//!   the file (which only overlapping note segments do), so looking for the
//!   root reads each byte of the file at most once.
//!
//! # Flat physical dumps
//!
//! Byte `X` of the file is physical address `base + X`, as `/dev/mem` or
//! QEMU's `pmemsave` write them. They carry no root address.
//!
//! # kdump-compressed dumps and makedumpfile's flattened format
//!
//! `--format auto` reads a file that starts with `KDUMP   ` as a
//! kdump-compressed dump ([`diskdump`]) and one that starts with
//! `makedumpfile` as a flattened file ([`flattened`]), whose reassembled
//! contents are read as kdump-compressed or ELF. Loading reads their
//! headers and walks the kdump bitmap once, keeping a bounded table; pages
//! are read (and decompressed) when asked for, as for ELF files. A
//! descriptor or a page's data found malformed then makes the page
//! unreadable and is kept, to be reported ([`Dump::page_error`]). The older
//! `DISKDUMP` format is recognised and refused with
//! [`LoadError::Unsupported`]. Only `--format phys` reads such files as
//! flat bytes.

use core::cell::RefCell;
use core::fmt;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use object::elf::{ELFMAG, ET_CORE};

use crate::source::Source;
#[cfg(doc)]
use crate::source::Window;

mod cache;
pub mod compress;
pub mod diskdump;
mod elf;
pub mod flattened;
pub mod kdump;

pub use cache::PER_PAGE_OVERHEAD;
pub use elf::{MAX_PROGRAM_HEADERS, SEGMENT_BYTES};

use cache::PageCache;
use diskdump::{Kdump, KdumpError};
use elf::Elf;
use flattened::{FlatIndex, FlattenedError, Reassembled};
use kdump::{DiskdumpHeader, DiskdumpKind, Recognised};

/// How to interpret a dump file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// By the file's first bytes: an ELF64 core file (the ELF magic), a
    /// kdump-compressed dump (`KDUMP   `), a flattened file
    /// (`makedumpfile`); refused with [`LoadError::Unsupported`] for the
    /// `DISKDUMP` format; else a flat physical dump.
    #[default]
    Auto,
    /// An ELF64 core file (a file of another recognised format is refused
    /// naming it, not as a file without the ELF magic).
    Elf,
    /// A kdump-compressed dump (`KDUMP   `).
    Kdump,
    /// A makedumpfile flattened file, whose reassembled contents are a
    /// kdump-compressed dump or an ELF64 core file.
    Flattened,
    /// A flat physical dump, whatever the file's contents.
    Phys,
}

impl Format {
    /// The name `--format` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Elf => "elf",
            Format::Kdump => "kdump",
            Format::Flattened => "flattened",
            Format::Phys => "phys",
        }
    }
}

/// Options for [`load`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// How to interpret the file.
    pub format: Format,
    /// For flat dumps: the physical address of the file's first byte
    /// (default 0). Refused for ELF files, whose segments say where they are.
    pub base: Option<PhysAddr>,
}

/// Why a dump file could not be loaded. These are problems of the container
/// (the file), not of the handover image inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The file has no bytes.
    Empty,
    /// The file's size or header bytes could not be read.
    Unreadable,
    /// `--base` was given for an ELF file.
    BaseWithElf,
    /// `--base` was given for a kdump-compressed or flattened file.
    BaseNotFlat {
        /// What the file is.
        found: &'static str,
    },
    /// The file is not an ELF64 core file the tool can read.
    NotElf64(&'static str),
    /// The ELF file is not a core file (`e_type` is given).
    NotCore(u16),
    /// The ELF file's headers are malformed (the `object` crate's message).
    Malformed(String),
    /// The ELF file has no `PT_LOAD` segment with memory in it.
    NoMemory,
    /// The ELF file has more program headers than the tool reads.
    TooManyProgramHeaders {
        /// How many it says it has (`e_phnum`, or the extended count).
        count: u32,
        /// [`MAX_PROGRAM_HEADERS`].
        max: u32,
    },
    /// A `PT_LOAD` segment is malformed.
    Segment {
        /// Index of the program header.
        index: usize,
        /// What is wrong with it.
        what: SegmentProblem,
    },
    /// Two `PT_LOAD` segments cover the same physical address.
    Overlap {
        /// Index of the program header of the lower segment.
        first: usize,
        /// Index of the program header of the higher one.
        second: usize,
        /// The first physical address both cover.
        at: PhysAddr,
    },
    /// A `PT_NOTE` segment could not be parsed while looking for the root.
    Note {
        /// Index of the program header.
        index: usize,
        /// The `object` crate's message.
        what: String,
    },
    /// An `IOMMUFLB` root note has a descriptor of the wrong size.
    RootNoteSize {
        /// Index of the program header holding the note.
        index: usize,
        /// Its `n_descsz`.
        descsz: usize,
    },
    /// The file has two `IOMMUFLB` root notes.
    TwoRootNotes,
    /// The file is a dump format the tool recognises but cannot read (the
    /// older `DISKDUMP` format); the message says how to save it in a
    /// format it reads.
    Unsupported(DiskdumpHeader),
    /// `--format` names one format and the file is of another.
    WrongFormat {
        /// The format asked for.
        asked: Format,
        /// What the file is.
        found: &'static str,
    },
    /// The kdump-compressed dump is malformed (or uses a compression the
    /// tool does not read).
    Kdump(KdumpError),
    /// The flattened file's own structure is malformed.
    Flattened(FlattenedError),
    /// What a flattened file reassembles to is malformed, or is not a
    /// format the tool reads; offsets are of the reassembled file.
    Reassembled(Box<LoadError>),
}

/// What is wrong with one `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentProblem {
    /// `p_filesz` is larger than `p_memsz`.
    FileLargerThanMemory {
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// `p_paddr + p_memsz` overflows 64 bits.
    AddressOverflow {
        /// `p_paddr`.
        paddr: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// The file bytes `p_offset .. p_offset + p_filesz` are not in the file.
    Truncated {
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        filesz: u64,
        /// The file's size.
        file_size: u64,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Empty => write!(f, "the file is empty"),
            LoadError::Unreadable => write!(f, "the file cannot be read (is it seekable?)"),
            LoadError::BaseWithElf => write!(
                f,
                "--base applies to flat physical dumps only; an ELF file places memory by p_paddr"
            ),
            LoadError::BaseNotFlat { found } => write!(
                f,
                "--base applies to flat physical dumps only; the file is {found}, which \
                 places memory by page frame number"
            ),
            LoadError::NotElf64(why) => write!(f, "not an ELF64 core file: {why}"),
            LoadError::NotCore(t) => write!(
                f,
                "not an ELF core file: e_type is {t}, expected {} (ET_CORE)",
                ET_CORE.0
            ),
            LoadError::Malformed(why) => write!(f, "malformed ELF file: {why}"),
            LoadError::NoMemory => write!(
                f,
                "the ELF file has no PT_LOAD segment with memory: no physical memory to read"
            ),
            LoadError::TooManyProgramHeaders { count, max } => write!(
                f,
                "the ELF file has {count} program headers; the tool reads at most {max}"
            ),
            LoadError::Segment { index, what } => {
                write!(f, "program header {index} (PT_LOAD): ")?;
                match what {
                    SegmentProblem::FileLargerThanMemory { filesz, memsz } => {
                        write!(f, "p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}")
                    }
                    SegmentProblem::AddressOverflow { paddr, memsz } => write!(
                        f,
                        "p_paddr {paddr:#x} + p_memsz {memsz:#x} overflows 64 bits"
                    ),
                    SegmentProblem::Truncated {
                        offset,
                        filesz,
                        file_size,
                    } => write!(
                        f,
                        "file bytes {offset:#x}+{filesz:#x} are beyond the end of the file \
                         ({file_size:#x} bytes; truncated?)"
                    ),
                }
            }
            LoadError::Overlap { first, second, at } => write!(
                f,
                "program headers {first} and {second} (PT_LOAD) both cover physical address {at}"
            ),
            LoadError::Note { index, what } => {
                write!(f, "program header {index} (PT_NOTE): {what}")
            }
            LoadError::RootNoteSize { index, descsz } => write!(
                f,
                "program header {index} (PT_NOTE): the IOMMUFLB root note has {descsz} \
                 descriptor bytes, expected 8"
            ),
            LoadError::TwoRootNotes => write!(f, "the file has two IOMMUFLB root notes"),
            LoadError::Unsupported(h) => f.write_str(&h.refusal()),
            LoadError::WrongFormat { asked, found } => write!(
                f,
                "--format {}: the file is {found}, not that; --format auto reads it",
                asked.name()
            ),
            LoadError::Kdump(e) => write!(f, "{e}"),
            LoadError::Flattened(e) => write!(f, "{e}"),
            LoadError::Reassembled(e) => write!(
                f,
                "in what the makedumpfile flattened file reassembles to (offsets are of \
                 the reassembled file): {e}"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// A loaded dump file: physical memory, readable page by page.
pub struct Dump<S> {
    src: S,
    /// The file's size.
    len: u64,
    layout: Layout,
    /// Every page the reader asked for that has file bytes in it, by its
    /// address and size (see [`cache_key`]).
    cache: PageCache,
    /// A page buffer that was read into but not kept (the page was
    /// unreadable or all zero tail), for the next page.
    spare: RefCell<Option<Box<[u8]>>>,
    /// The first malformed thing found while reading a page (a kdump
    /// descriptor or page data): the page was unreadable because of it.
    page_error: RefCell<Option<LoadError>>,
}

/// Where physical memory is in the file.
enum Layout {
    /// Byte `X` of the file is physical address `base + X`.
    Flat { base: PhysAddr },
    /// By the segments of an ELF core file.
    Elf(Elf),
    /// By the bitmaps and page descriptors of a kdump-compressed dump.
    Kdump(Kdump),
    /// What a flattened file reassembles to, read through its index.
    Flattened(FlatIndex, Inner),
}

/// What a flattened file reassembles to.
enum Inner {
    Elf(Elf),
    Kdump(Kdump),
}

/// What kind of file a [`Dump`] was read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// A flat physical dump.
    Flat,
    /// An ELF64 core file.
    Elf,
    /// A kdump-compressed dump.
    Kdump,
    /// A makedumpfile flattened file of an ELF64 core file.
    FlattenedElf,
    /// A makedumpfile flattened file of a kdump-compressed dump.
    FlattenedKdump,
}

impl Container {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Container::Flat => "flat dump",
            Container::Elf => "ELF file",
            Container::Kdump => "kdump-compressed dump",
            Container::FlattenedElf => "flattened ELF file",
            Container::FlattenedKdump => "flattened kdump-compressed dump",
        }
    }
}

/// What reading one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageRead {
    /// The buffer holds the page, and some of it came from the file.
    Data,
    /// The page is all zero tail (bytes past `p_filesz`): no file bytes.
    Zero,
    /// Some byte of the page is not in the dump, or could not be read.
    Unreadable,
}

impl<S> fmt::Debug for Dump<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dump");
        match &self.layout {
            Layout::Flat { base } => d.field("flat_base", base),
            Layout::Elf(e) | Layout::Flattened(_, Inner::Elf(e)) => {
                d.field("elf_segments", &e.segments())
            }
            Layout::Kdump(k) | Layout::Flattened(_, Inner::Kdump(k)) => {
                d.field("kdump_pages", &k.pages())
            }
        };
        d.field("len", &self.len)
            .field("pages_held", &self.cache.len())
            .finish()
    }
}

impl<S: Source> Dump<S> {
    /// Whether the dump was read as an ELF core file (flattened or not).
    pub fn is_elf(&self) -> bool {
        matches!(
            self.layout,
            Layout::Elf(_) | Layout::Flattened(_, Inner::Elf(_))
        )
    }

    /// What kind of file the dump was read as.
    pub fn container(&self) -> Container {
        match &self.layout {
            Layout::Flat { .. } => Container::Flat,
            Layout::Elf(_) => Container::Elf,
            Layout::Kdump(_) => Container::Kdump,
            Layout::Flattened(_, Inner::Elf(_)) => Container::FlattenedElf,
            Layout::Flattened(_, Inner::Kdump(_)) => Container::FlattenedKdump,
        }
    }

    /// The first malformed thing reading a page found (a kdump page
    /// descriptor, or a page's data that does not decompress): that page
    /// read as unreadable, and this says why. `None` if every page asked
    /// for was read or simply not in the dump.
    pub fn page_error(&self) -> Option<LoadError> {
        self.page_error.borrow().clone()
    }

    /// The root address the file records: the `IOMMUFLB` note of an ELF
    /// file written by `gen`, or `None` (always `None` for flat dumps).
    /// Notes are parsed only here, so a malformed note matters only to a
    /// caller that needs the root from the file.
    pub fn root_note(&self) -> Result<Option<PhysAddr>, LoadError> {
        match &self.layout {
            Layout::Flat { .. } | Layout::Kdump(_) | Layout::Flattened(_, Inner::Kdump(_)) => {
                Ok(None)
            }
            Layout::Elf(e) => e.root_note(&self.src, self.len),
            Layout::Flattened(index, Inner::Elf(e)) => e
                .root_note(&self.reassembled(index), index.len())
                .map_err(|e| LoadError::Reassembled(Box::new(e))),
        }
    }

    /// The physical ranges `[start, end)` the dump may hold bytes of, in
    /// ascending order: a flat dump's whole file, an ELF file's segments
    /// (their file bytes), a kdump dump's page frames up to `max_mapnr`
    /// (those its bitmap excludes read as unreadable). Where `scan` looks.
    pub fn extents(&self) -> Vec<(u64, u64)> {
        match &self.layout {
            Layout::Flat { base } => vec![(base.get(), base.get().saturating_add(self.len))],
            Layout::Elf(e) | Layout::Flattened(_, Inner::Elf(e)) => {
                // Segments that meet are one range, so a page split between
                // them is scanned.
                let mut out: Vec<(u64, u64)> = Vec::new();
                for (start, end) in e.extents() {
                    match out.last_mut() {
                        Some(last) if last.1 == start => last.1 = end,
                        _ => out.push((start, end)),
                    }
                }
                out
            }
            Layout::Kdump(k) | Layout::Flattened(_, Inner::Kdump(k)) => vec![(0, k.end())],
        }
    }

    /// The most 4 KiB pages with distinct file bytes the dump can hold, so
    /// a scan never reads more: a flat dump's pages; for an ELF file, its
    /// size in pages plus one partial page per segment (segments that
    /// share file bytes claim more pages than that, and a scan stops
    /// there); a kdump dump's extents are already bounded by its file (a
    /// bitmap bit and a 24-byte descriptor per page frame).
    pub fn scan_limit(&self) -> u64 {
        let pages = self.len.div_ceil(4096);
        match &self.layout {
            Layout::Flat { .. } => pages,
            Layout::Elf(e) | Layout::Flattened(_, Inner::Elf(e)) => {
                pages.saturating_add(u64::try_from(e.segments()).unwrap_or(u64::MAX))
            }
            Layout::Kdump(_) | Layout::Flattened(_, Inner::Kdump(_)) => u64::MAX,
        }
    }

    /// The size of the dump's own unit of presence, at least 4 KiB: a
    /// kdump dump's block (a page frame of the dumped machine), which is in
    /// the dump whole or not at all. A scan that finds a page unreadable
    /// skips the rest of its unit.
    pub fn presence_unit(&self) -> u64 {
        match &self.layout {
            Layout::Kdump(k) | Layout::Flattened(_, Inner::Kdump(k)) => {
                u64::from(k.block_size()).max(4096)
            }
            Layout::Flat { .. } | Layout::Elf(_) | Layout::Flattened(_, Inner::Elf(_)) => 4096,
        }
    }

    /// Reads the page of `buf.len()` bytes at `phys` into `buf` without
    /// keeping it; `true` if it was read (zero tails read as zeros).
    pub fn read_uncached(&self, phys: PhysAddr, buf: &mut [u8]) -> bool {
        match self.read_page(phys, buf) {
            PageRead::Data => true,
            PageRead::Zero => {
                buf.fill(0);
                true
            }
            PageRead::Unreadable => false,
        }
    }

    /// Drops every page kept so far, so a reader that asks for pages again
    /// reads them again: `scan` validates one candidate after another in
    /// the memory of one.
    pub fn forget_pages(&mut self) {
        self.cache = PageCache::default();
    }

    /// How many pages the dump holds in memory: each distinct page the
    /// reader asked for that has file bytes in it, and nothing else.
    pub fn pages_held(&self) -> usize {
        self.cache.len()
    }

    /// Reads the page at `phys` into `buf` (of the page size) without
    /// keeping it.
    fn read_page(&self, phys: PhysAddr, buf: &mut [u8]) -> PageRead {
        match &self.layout {
            Layout::Flat { base } => match phys.checked_offset_from(*base) {
                Some(offset) if self.src.read_exact_at(buf, offset).is_ok() => PageRead::Data,
                _ => PageRead::Unreadable,
            },
            Layout::Elf(e) => e.read_page(&self.src, phys.get(), buf),
            Layout::Kdump(k) => self.kdump_page(k, &self.src, phys, buf, false),
            Layout::Flattened(index, Inner::Elf(e)) => {
                e.read_page(&self.reassembled(index), phys.get(), buf)
            }
            Layout::Flattened(index, Inner::Kdump(k)) => {
                self.kdump_page(k, &self.reassembled(index), phys, buf, true)
            }
        }
    }

    fn reassembled<'a>(&'a self, index: &'a FlatIndex) -> Reassembled<'a, S> {
        Reassembled {
            src: &self.src,
            index,
        }
    }

    /// Reads a kdump page; a malformed descriptor or payload makes it
    /// unreadable, and the first such error is kept.
    fn kdump_page<T: Source + ?Sized>(
        &self,
        k: &Kdump,
        src: &T,
        phys: PhysAddr,
        buf: &mut [u8],
        flattened: bool,
    ) -> PageRead {
        match k.read_page(src, phys.get(), buf) {
            Ok(read) => read,
            Err(e) => {
                let e = LoadError::Kdump(e);
                let e = if flattened {
                    LoadError::Reassembled(Box::new(e))
                } else {
                    e
                };
                self.page_error.borrow_mut().get_or_insert(e);
                PageRead::Unreadable
            }
        }
    }
}

/// Zeros for pages inside a segment's zero-filled tail (64 KiB, the
/// largest page size).
static ZERO_PAGE: [u8; 1 << 16] = [0; 1 << 16];

/// The cache key of the page of `size` at `phys` (aligned to it): the
/// address, with the size's log2 in the low bits the alignment leaves
/// clear, so pages of two sizes at one address are two entries.
fn cache_key(phys: PhysAddr, size: PageSize) -> u64 {
    phys.get() | u64::from(size.shift())
}

impl<S: Source> Memory for Dump<S> {
    /// The page of `size` at `phys`, read from the file the first time it
    /// is asked for and kept; a dump serves pages of any page size.
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if !phys.is_page_aligned(size) {
            return None;
        }
        let key = cache_key(phys, size);
        if let Some(page) = self.cache.get(key) {
            return Some(page);
        }
        let spare = self.spare.borrow_mut().take();
        let mut buf = spare
            .filter(|b| b.len() == size.bytes())
            .unwrap_or_else(|| vec![0u8; size.bytes()].into_boxed_slice());
        match self.read_page(phys, &mut buf) {
            PageRead::Data => self.cache.insert(key, buf),
            PageRead::Zero => {
                *self.spare.borrow_mut() = Some(buf);
                ZERO_PAGE.get(..size.bytes())
            }
            PageRead::Unreadable => {
                *self.spare.borrow_mut() = Some(buf);
                None
            }
        }
    }
}

/// What the first bytes of a file say it is.
enum Magic {
    Elf,
    Kdump,
    Diskdump(DiskdumpHeader),
    Flattened,
    Other,
}

fn magic<S: Source + ?Sized>(src: &S) -> Magic {
    let mut elf = [0u8; 4];
    if src.read_exact_at(&mut elf, 0).is_ok() && elf == ELFMAG {
        return Magic::Elf;
    }
    match kdump::recognise(src) {
        Some(Recognised::Diskdump(h)) if h.kind == DiskdumpKind::Kdump => Magic::Kdump,
        Some(Recognised::Diskdump(h)) => Magic::Diskdump(h),
        Some(Recognised::Flattened(_)) => Magic::Flattened,
        None => Magic::Other,
    }
}

impl Magic {
    fn name(&self) -> &'static str {
        match self {
            Magic::Elf => "an ELF file",
            Magic::Kdump => "a kdump-compressed dump",
            Magic::Diskdump(_) => "a diskdump dump (DISKDUMP signature)",
            Magic::Flattened => "a makedumpfile flattened file",
            Magic::Other => "none of the dump formats the tool recognises",
        }
    }
}

/// Parses what a flattened file reassembles to: kdump-compressed or ELF.
fn reassembled_layout<S: Source + ?Sized>(src: &S, len: u64) -> Result<Layout, LoadError> {
    let index = FlatIndex::parse(src, len).map_err(LoadError::Flattened)?;
    let inner = {
        let r = Reassembled { src, index: &index };
        let wrap = |e| LoadError::Reassembled(Box::new(e));
        match magic(&r) {
            Magic::Elf => Inner::Elf(Elf::parse(&r, index.len()).map_err(wrap)?),
            Magic::Kdump => {
                Inner::Kdump(Kdump::parse(&r, index.len()).map_err(|e| wrap(LoadError::Kdump(e)))?)
            }
            Magic::Diskdump(h) => return Err(wrap(LoadError::Unsupported(h))),
            other => {
                return Err(wrap(LoadError::WrongFormat {
                    asked: Format::Flattened,
                    found: match other {
                        Magic::Flattened => "a flattened file again (flattened twice)",
                        _ => "neither kdump-compressed nor ELF",
                    },
                }));
            }
        }
    };
    Ok(Layout::Flattened(index, inner))
}

/// Loads a dump from the file's contents: a byte slice, or an open file.
pub fn load<S: Source>(data: S, opts: LoadOptions) -> Result<Dump<S>, LoadError> {
    let len = data.size().map_err(|_| LoadError::Unreadable)?;
    if len == 0 {
        return Err(LoadError::Empty);
    }
    // A flat dump is not even looked at until the reader asks for a page.
    let magic = match opts.format {
        Format::Phys => Magic::Other,
        _ => magic(&data),
    };
    if opts.format != Format::Phys {
        if let Magic::Diskdump(h) = magic {
            return Err(LoadError::Unsupported(h));
        }
    }
    let wrong = |asked| LoadError::WrongFormat {
        asked,
        found: magic.name(),
    };
    let layout = match (opts.format, &magic) {
        (Format::Phys, _) | (Format::Auto, Magic::Other) => Layout::Flat {
            base: opts.base.unwrap_or(PhysAddr::NULL),
        },
        (_, _) if opts.base.is_some() => {
            return Err(match magic {
                Magic::Elf | Magic::Other => LoadError::BaseWithElf,
                _ => LoadError::BaseNotFlat {
                    found: magic.name(),
                },
            });
        }
        (Format::Auto | Format::Elf, Magic::Elf) => Layout::Elf(Elf::parse(&data, len)?),
        (Format::Auto | Format::Kdump, Magic::Kdump) => {
            Layout::Kdump(Kdump::parse(&data, len).map_err(LoadError::Kdump)?)
        }
        (Format::Auto | Format::Flattened, Magic::Flattened) => reassembled_layout(&data, len)?,
        (Format::Elf, Magic::Other) => {
            return Err(LoadError::NotElf64(
                "the file does not start with the ELF magic",
            ));
        }
        (asked, _) => return Err(wrong(asked)),
    };
    Ok(Dump {
        src: data,
        len,
        layout,
        cache: PageCache::default(),
        spare: RefCell::new(None),
        page_error: RefCell::new(None),
    })
}
