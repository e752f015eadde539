//! Loading dump files: ELF64 core files and flat physical dumps.
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
//! # Formats recognised and refused
//!
//! `--format auto` (and `elf`) refuse the kdump-compressed and diskdump
//! formats and makedumpfile's flattened format by their signatures, with
//! [`LoadError::Unsupported`] and advice on how to save the dump instead:
//! see [`kdump`]. Only `--format phys` reads such a file as flat bytes.

use core::cell::RefCell;
use core::fmt;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use object::elf::{ELFMAG, ET_CORE};

use crate::source::Source;
#[cfg(doc)]
use crate::source::Window;

mod cache;
mod elf;
pub mod kdump;

pub use cache::PER_PAGE_OVERHEAD;
pub use elf::{MAX_PROGRAM_HEADERS, SEGMENT_BYTES};

use cache::PageCache;
use elf::Elf;
use kdump::Unsupported;

/// How to interpret a dump file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// An ELF64 core file if the file starts with the ELF magic; refused
    /// with [`LoadError::Unsupported`] if it is a dump format the tool
    /// recognises but cannot read (see [`kdump`]); else a flat physical
    /// dump.
    #[default]
    Auto,
    /// An ELF64 core file (a recognised unsupported format is refused as
    /// such, not as a file without the ELF magic).
    Elf,
    /// A flat physical dump, whatever the file's contents.
    Phys,
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
    /// The file is a dump format the tool recognises but cannot read
    /// (kdump-compressed, diskdump, makedumpfile flattened); the message
    /// says how to save it in a format it reads.
    Unsupported(Unsupported),
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
            LoadError::Unsupported(u) => write!(f, "{u}"),
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
}

/// Where physical memory is in the file.
enum Layout {
    /// Byte `X` of the file is physical address `base + X`.
    Flat { base: PhysAddr },
    /// By the segments of an ELF core file.
    Elf(Elf),
}

/// What reading one page found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageRead {
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
            Layout::Elf(e) => d.field("elf_segments", &e.segments()),
        };
        d.field("len", &self.len)
            .field("pages_held", &self.cache.len())
            .finish()
    }
}

impl<S: Source> Dump<S> {
    /// Whether the dump was read as an ELF core file.
    pub fn is_elf(&self) -> bool {
        matches!(self.layout, Layout::Elf(_))
    }

    /// The root address the file records: the `IOMMUFLB` note of an ELF
    /// file written by `gen`, or `None` (always `None` for flat dumps).
    /// Notes are parsed only here, so a malformed note matters only to a
    /// caller that needs the root from the file.
    pub fn root_note(&self) -> Result<Option<PhysAddr>, LoadError> {
        match &self.layout {
            Layout::Flat { .. } => Ok(None),
            Layout::Elf(e) => e.root_note(&self.src, self.len),
        }
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

/// Loads a dump from the file's contents: a byte slice, or an open file.
pub fn load<S: Source>(data: S, opts: LoadOptions) -> Result<Dump<S>, LoadError> {
    let len = data.size().map_err(|_| LoadError::Unreadable)?;
    if len == 0 {
        return Err(LoadError::Empty);
    }
    // A flat dump is not even looked at until the reader asks for a page.
    let has_magic = opts.format != Format::Phys && {
        let mut magic = [0u8; 4];
        data.read_exact_at(&mut magic, 0).is_ok() && magic == ELFMAG
    };
    // Without the ELF magic, a format the tool knows it cannot read is
    // named, never read as flat bytes (unless `--format phys` says so).
    if opts.format != Format::Phys && !has_magic {
        if let Some(what) = kdump::recognise(&data) {
            return Err(LoadError::Unsupported(what));
        }
    }
    let is_elf = match opts.format {
        Format::Elf => true,
        Format::Phys => false,
        Format::Auto => has_magic,
    };
    let layout = if is_elf {
        if opts.base.is_some() {
            return Err(LoadError::BaseWithElf);
        }
        if !has_magic {
            return Err(LoadError::NotElf64(
                "the file does not start with the ELF magic",
            ));
        }
        Layout::Elf(Elf::parse(&data, len)?)
    } else {
        Layout::Flat {
            base: opts.base.unwrap_or(PhysAddr::NULL),
        }
    };
    Ok(Dump {
        src: data,
        len,
        layout,
        cache: PageCache::default(),
        spare: RefCell::new(None),
    })
}
