//! Loading dump files: ELF64 core files and flat physical dumps.
//!
//! [`load`] takes the file as an `object` [`ReadRef`] (a byte slice, or a
//! [`object::ReadCache`] over an open file, which reads only the headers
//! and the pages the reader asks for, so a vmcore of many gigabytes costs
//! what the image needs) and returns a [`Dump`], which implements the
//! library's [`Memory`] trait, so the reader walks it exactly as it would
//! walk the kernel's pages. Whatever the bytes, loading either succeeds or
//! returns a [`LoadError`]; it never panics. A page whose bytes cannot be
//! read (an I/O error after loading) is an unreadable page, as a page
//! outside the dump is.
//!
//! # ELF64 core files
//!
//! As kdump's `/proc/vmcore` and QEMU's `dump-guest-memory` write them:
//! physical memory is in `PT_LOAD` segments, placed by `p_paddr` (`p_vaddr`
//! is ignored). The file is read with the `object` crate. Rules:
//!
//! - the file must be ELF64 (either byte order) with `e_type` = `ET_CORE`,
//!   and have at least one `PT_LOAD` segment with a non-zero `p_memsz`;
//! - each such segment's file bytes (`p_offset`, `p_filesz`) must lie inside
//!   the file, `p_filesz` may not exceed `p_memsz`, and `p_paddr + p_memsz`
//!   may not overflow;
//! - two segments may not overlap in physical memory (the dump would say two
//!   things about one byte);
//! - bytes between `p_filesz` and `p_memsz` read as **zero**, as the ELF
//!   specification defines them (makedumpfile uses this to leave out zero
//!   pages). A page the dump does not cover entirely is unreadable, and the
//!   reader reports it as such;
//! - a page may be assembled from several segments that are adjacent in
//!   physical memory (a segment ending in the middle of a page, the next one
//!   starting there). Such pages are assembled on first use only, so a
//!   hostile file with many tiny segments costs nothing until the reader
//!   asks for one of its pages;
//! - `PT_NOTE` segments are read only when the root address is needed and
//!   `--root` was not given: see [`crate::elfcore`] for the `IOMMUFLB` note.
//!
//! # Flat physical dumps
//!
//! Byte `X` of the file is physical address `base + X`, as `/dev/mem` or
//! QEMU's `pmemsave` write them. They carry no root address.

use core::cell::OnceCell;
use core::fmt;

use iommu_flb_abi::abi::PageSize;
use iommu_flb_abi::{Memory, PhysAddr};
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::{Endianness, ReadRef};

use crate::elfcore::{NOTE_NAME, NT_IOMMU_FLB_ROOT};
use crate::{PAGE, PAGE_SIZE, PS};

/// How to interpret a dump file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// An ELF64 core file if the file starts with the ELF magic, else a flat
    /// physical dump.
    #[default]
    Auto,
    /// An ELF64 core file.
    Elf,
    /// A flat physical dump.
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
                elf::ET_CORE.0
            ),
            LoadError::Malformed(why) => write!(f, "malformed ELF file: {why}"),
            LoadError::NoMemory => write!(
                f,
                "the ELF file has no PT_LOAD segment with memory: no physical memory to read"
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
        }
    }
}

impl std::error::Error for LoadError {}

/// A loaded dump file: physical memory, readable page by page.
pub struct Dump<'a, R: ReadRef<'a>> {
    inner: Inner<'a, R>,
}

enum Inner<'a, R: ReadRef<'a>> {
    Flat(FlatDump<R>),
    Elf(ElfMemory<'a, R>),
}

impl<'a, R: ReadRef<'a>> fmt::Debug for Dump<'a, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Flat(m) => f.debug_struct("FlatDump").field("base", &m.base).finish(),
            Inner::Elf(m) => m.fmt(f),
        }
    }
}

impl<'a, R: ReadRef<'a>> Dump<'a, R> {
    /// Whether the dump was read as an ELF core file.
    pub fn is_elf(&self) -> bool {
        matches!(self.inner, Inner::Elf(_))
    }

    /// The root address the file records: the `IOMMUFLB` note of an ELF
    /// file written by `gen`, or `None` (always `None` for flat dumps).
    /// Notes are parsed only here, so a malformed note matters only to a
    /// caller that needs the root from the file.
    pub fn root_note(&self) -> Result<Option<PhysAddr>, LoadError> {
        match &self.inner {
            Inner::Flat(_) => Ok(None),
            Inner::Elf(e) => e.root_note(),
        }
    }
}

impl<'a, R: ReadRef<'a>> Memory for Dump<'a, R> {
    fn page(&self, phys: PhysAddr, size: PageSize) -> Option<&[u8]> {
        if size != PS {
            return None;
        }
        match &self.inner {
            Inner::Flat(m) => m.page(phys).map(|p| &p[..]),
            Inner::Elf(m) => m.page(phys).map(|p| &p[..]),
        }
    }
}

/// Loads a dump from the file's contents: a byte slice, or an
/// [`object::ReadCache`] over an open file.
pub fn load<'a, R: ReadRef<'a>>(data: R, opts: LoadOptions) -> Result<Dump<'a, R>, LoadError> {
    let len = data.len().map_err(|()| LoadError::Unreadable)?;
    if len == 0 {
        return Err(LoadError::Empty);
    }
    let elf = match opts.format {
        Format::Elf => true,
        Format::Phys => false,
        Format::Auto => data.read_bytes_at(0, 4).ok() == Some(&elf::ELFMAG[..]),
    };
    let inner = if elf {
        if opts.base.is_some() {
            return Err(LoadError::BaseWithElf);
        }
        Inner::Elf(ElfMemory::parse(data, len)?)
    } else {
        Inner::Flat(FlatDump {
            base: opts.base.unwrap_or(PhysAddr::NULL),
            data,
        })
    };
    Ok(Dump { inner })
}

/// A flat physical dump: byte `X` of `data` is physical address `base + X`
/// (the library's `FlatMemory`, over a [`ReadRef`] instead of a slice).
struct FlatDump<R> {
    base: PhysAddr,
    data: R,
}

impl<'a, R: ReadRef<'a>> FlatDump<R> {
    fn page(&self, phys: PhysAddr) -> Option<&'a [u8; PAGE_SIZE]> {
        if !phys.is_page_aligned(PS) {
            return None;
        }
        let offset = phys.checked_offset_from(self.base)?;
        self.data.read_bytes_at(offset, PAGE).ok()?.try_into().ok()
    }
}

/// A page of zeros, for pages inside a segment's zero-filled tail.
static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// One `PT_LOAD` segment, checked: `paddr + memsz` does not overflow, the
/// file bytes are inside the file, `filesz <= memsz`, `memsz > 0`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Program header index, for messages.
    index: usize,
    /// First physical address.
    paddr: u64,
    /// One past the last physical address (`paddr + memsz`).
    end: u64,
    /// Physical address where the file bytes end (`paddr + filesz`).
    file_end: u64,
    /// File offset of the first byte.
    offset: u64,
}

impl Segment {
    /// The file bytes for `[phys, phys + len)`, which must lie inside
    /// `[paddr, file_end)`.
    fn file_bytes<'a, R: ReadRef<'a>>(&self, data: R, phys: u64, len: u64) -> Option<&'a [u8]> {
        let start = self.offset.checked_add(phys.checked_sub(self.paddr)?)?;
        if phys.checked_add(len)? > self.file_end {
            return None;
        }
        data.read_bytes_at(start, len).ok()
    }
}

/// A page assembled on first use; `None` if it is not entirely covered.
type LazyPage = OnceCell<Option<Box<[u8; PAGE_SIZE]>>>;

/// Physical memory of an ELF64 core file.
struct ElfMemory<'a, R: ReadRef<'a>> {
    data: R,
    endian: Endianness,
    phdrs: &'a [ProgramHeader64<Endianness>],
    /// `PT_LOAD` segments with memory, sorted by `paddr`, disjoint.
    segments: Vec<Segment>,
    /// Pages that are not inside one region (file bytes or zero tail) of one
    /// segment, sorted: each is assembled from several regions on first
    /// use, or is unreadable (`None`) if some byte of it is not covered.
    mixed: Vec<(u64, LazyPage)>,
}

impl<'a, R: ReadRef<'a>> fmt::Debug for ElfMemory<'a, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElfMemory")
            .field("segments", &self.segments)
            .field("mixed_pages", &self.mixed.len())
            .finish()
    }
}

impl<'a, R: ReadRef<'a>> ElfMemory<'a, R> {
    fn parse(data: R, len: u64) -> Result<Self, LoadError> {
        if data.read_bytes_at(0, 4).ok() != Some(&elf::ELFMAG[..]) {
            return Err(LoadError::NotElf64(
                "the file does not start with the ELF magic",
            ));
        }
        // EI_CLASS, read before `object` parses a 64-bit header, so an ELF32
        // file gets a message that says so.
        let class = data
            .read_bytes_at(4, 1)
            .ok()
            .and_then(|c| c.first().copied());
        match class.map(elf::FileClass) {
            Some(elf::ELFCLASS64) => {}
            Some(elf::ELFCLASS32) => {
                return Err(LoadError::NotElf64(
                    "this is an ELF32 file; only ELF64 is supported",
                ));
            }
            Some(_) => return Err(LoadError::NotElf64("unknown ELF class (EI_CLASS)")),
            None => return Err(LoadError::Malformed("the ELF header is truncated".into())),
        }
        let header = FileHeader64::<Endianness>::parse(data).map_err(|e| malformed(&e))?;
        let endian = header.endian().map_err(|e| malformed(&e))?;
        let e_type = header.e_type(endian);
        if e_type != elf::ET_CORE {
            return Err(LoadError::NotCore(e_type.0));
        }
        let phdrs = header
            .program_headers(endian, data)
            .map_err(|e| malformed(&e))?;
        let mut segments = Vec::new();
        for (index, ph) in phdrs.iter().enumerate() {
            if ph.p_type(endian) != elf::PT_LOAD {
                continue;
            }
            if let Some(seg) = checked_segment(index, ph, endian, len)? {
                segments.push(seg);
            }
        }
        if segments.is_empty() {
            return Err(LoadError::NoMemory);
        }
        segments.sort_by_key(|s| s.paddr);
        for pair in segments.windows(2) {
            if let [a, b] = pair {
                if b.paddr < a.end {
                    return Err(LoadError::Overlap {
                        first: a.index,
                        second: b.index,
                        at: PhysAddr::new(b.paddr),
                    });
                }
            }
        }
        let mut bounds: Vec<u64> = segments
            .iter()
            .flat_map(|s| [s.paddr, s.file_end, s.end])
            .map(PhysAddr::new)
            .filter(|b| !b.is_page_aligned(PS))
            .map(|b| b.page_base(PS).get())
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mixed = bounds.into_iter().map(|p| (p, OnceCell::new())).collect();
        Ok(ElfMemory {
            data,
            endian,
            phdrs,
            segments,
            mixed,
        })
    }

    /// The segment containing `phys`, if any.
    fn segment_at(&self, phys: u64) -> Option<&Segment> {
        let after = self.segments.partition_point(|s| s.paddr <= phys);
        let seg = self.segments.get(after.checked_sub(1)?)?;
        (phys < seg.end).then_some(seg)
    }

    fn page(&self, phys: PhysAddr) -> Option<&[u8; PAGE_SIZE]> {
        if !phys.is_page_aligned(PS) {
            return None;
        }
        let p = phys.get();
        if let Ok(i) = self.mixed.binary_search_by_key(&p, |(addr, _)| *addr) {
            let (_, cell) = self.mixed.get(i)?;
            return cell.get_or_init(|| self.assemble(p)).as_deref();
        }
        // Not a mixed page: if it is readable, it lies entirely inside the
        // file bytes or entirely inside the zero tail of one segment.
        let seg = self.segment_at(p)?;
        let end = p.checked_add(PAGE)?;
        if end <= seg.file_end {
            seg.file_bytes(self.data, p, PAGE)?.try_into().ok()
        } else if p >= seg.file_end && end <= seg.end {
            Some(&ZERO_PAGE)
        } else {
            None
        }
    }

    /// Builds the page at `p` from every segment region it touches, or
    /// `None` if some byte of it is in no segment.
    fn assemble(&self, p: u64) -> Option<Box<[u8; PAGE_SIZE]>> {
        let end = p.checked_add(PAGE)?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let mut at = p;
        while at < end {
            let seg = self.segment_at(at)?;
            let stop = end.min(seg.end);
            let file_stop = stop.min(seg.file_end);
            if at < file_stop {
                let src = seg.file_bytes(self.data, at, file_stop.checked_sub(at)?)?;
                let from = usize::try_from(at.checked_sub(p)?).ok()?;
                let to = from.checked_add(src.len())?;
                page.get_mut(from..to)?.copy_from_slice(src);
            }
            // Bytes from `file_stop` to `stop` are the zero tail: already 0.
            at = stop;
        }
        Some(page)
    }

    fn root_note(&self) -> Result<Option<PhysAddr>, LoadError> {
        let mut found = None;
        for (index, ph) in self.phdrs.iter().enumerate() {
            let notes = ph
                .notes(self.endian, self.data)
                .map_err(|e| LoadError::Note {
                    index,
                    what: e.to_string(),
                })?;
            let Some(mut notes) = notes else { continue };
            while let Some(note) = notes.next().map_err(|e| LoadError::Note {
                index,
                what: e.to_string(),
            })? {
                if note.name() != NOTE_NAME || note.n_type(self.endian).0 != NT_IOMMU_FLB_ROOT {
                    continue;
                }
                let desc: [u8; 8] =
                    note.desc()
                        .try_into()
                        .map_err(|_| LoadError::RootNoteSize {
                            index,
                            descsz: note.desc().len(),
                        })?;
                let root = match self.endian {
                    Endianness::Little => u64::from_le_bytes(desc),
                    Endianness::Big => u64::from_be_bytes(desc),
                };
                if found.replace(PhysAddr::new(root)).is_some() {
                    return Err(LoadError::TwoRootNotes);
                }
            }
        }
        Ok(found)
    }
}

/// Checks one `PT_LOAD` program header; `None` for a segment without memory.
fn checked_segment(
    index: usize,
    ph: &ProgramHeader64<Endianness>,
    endian: Endianness,
    file_size: u64,
) -> Result<Option<Segment>, LoadError> {
    let (paddr, memsz) = (ph.p_paddr(endian), ph.p_memsz(endian));
    let (offset, filesz) = (ph.p_offset(endian), ph.p_filesz(endian));
    let bad = |what| LoadError::Segment { index, what };
    if memsz == 0 && filesz == 0 {
        return Ok(None);
    }
    if filesz > memsz {
        return Err(bad(SegmentProblem::FileLargerThanMemory { filesz, memsz }));
    }
    let end = paddr
        .checked_add(memsz)
        .ok_or(bad(SegmentProblem::AddressOverflow { paddr, memsz }))?;
    let truncated = || {
        bad(SegmentProblem::Truncated {
            offset,
            filesz,
            file_size,
        })
    };
    let in_file = offset.checked_add(filesz).is_some_and(|e| e <= file_size);
    if !in_file {
        return Err(truncated());
    }
    Ok(Some(Segment {
        index,
        paddr,
        end,
        // `filesz <= memsz`, so this does not overflow either.
        file_end: paddr.checked_add(filesz).ok_or_else(truncated)?,
        offset,
    }))
}

fn malformed(e: &object::read::Error) -> LoadError {
    LoadError::Malformed(e.to_string())
}
