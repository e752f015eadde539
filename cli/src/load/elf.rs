//! ELF64 core files: the headers read once into a sorted, bounded table of
//! `PT_LOAD` segments, pages read on demand, notes streamed.
//!
//! Nothing here keeps file bytes: the program header table and the note
//! segments are walked through a [`Window`] (one buffer of at most
//! [`Window::CAPACITY`] bytes), and a page is read with one positioned read
//! per segment piece straight into the caller's buffer.

use iommu_flb_abi::PhysAddr;
use object::elf::{self, FileHeader64, NoteHeader64, ProgramHeader64, SectionHeader64};
use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _};
use object::{Endianness, Pod};

use super::{LoadError, PageRead, SegmentProblem};
use crate::elfcore::{NOTE_NAME, NT_IOMMU_FLB_ROOT};
use crate::source::{Source, Window};

/// The most program headers a file may have. kdump writes one `PT_LOAD`
/// per range of memory and makedumpfile's ELF output one per run of pages
/// it keeps; 2^20 is far above either, and bounds the segment table (at
/// most [`SEGMENT_BYTES`] each, twice that while it is built) and the time
/// to read it.
pub const MAX_PROGRAM_HEADERS: u32 = 1 << 20;

/// Bytes of the segment table per `PT_LOAD` segment (40; the README's
/// memory bound uses it).
pub const SEGMENT_BYTES: usize = core::mem::size_of::<Segment>();

const EHDR_SIZE: usize = core::mem::size_of::<FileHeader64<Endianness>>();
const PHDR_SIZE: usize = core::mem::size_of::<ProgramHeader64<Endianness>>();
const SHDR_SIZE: usize = core::mem::size_of::<SectionHeader64<Endianness>>();
const NHDR_SIZE: usize = core::mem::size_of::<NoteHeader64<Endianness>>();
/// [`PHDR_SIZE`] for offset arithmetic.
const PHDR_BYTES: u64 = 56;
const _: () = assert!(EHDR_SIZE == 64 && PHDR_SIZE == 56 && SHDR_SIZE == 64 && NHDR_SIZE == 12);
const _: () = assert!(SEGMENT_BYTES == 40);

/// One `PT_LOAD` segment, checked: `paddr + memsz` does not overflow, the
/// file bytes are inside the file, `filesz <= memsz`, `memsz > 0`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// First physical address.
    paddr: u64,
    /// One past the last physical address (`paddr + memsz`).
    end: u64,
    /// Physical address where the file bytes end (`paddr + filesz`).
    file_end: u64,
    /// File offset of the first byte.
    offset: u64,
    /// Program header index, for messages.
    index: u32,
}

/// The layout of an ELF64 core file: where its program headers are, and its
/// `PT_LOAD` segments sorted by physical address.
#[derive(Debug)]
pub struct Elf {
    endian: Endianness,
    /// File offset of the program header table.
    phoff: u64,
    /// Its number of entries (at most [`MAX_PROGRAM_HEADERS`]).
    phnum: u32,
    /// `PT_LOAD` segments with memory, sorted by `paddr`, disjoint.
    segments: Vec<Segment>,
}

fn malformed(what: impl Into<String>) -> LoadError {
    LoadError::Malformed(what.into())
}

/// Reads one `T` at `offset` of `src`, or says what is missing.
fn read_pod<T: Pod, S: Source + ?Sized>(src: &S, offset: u64, what: &str) -> Result<T, LoadError> {
    let mut buf = vec![0u8; core::mem::size_of::<T>()];
    src.read_exact_at(&mut buf, offset)
        .map_err(|e| malformed(format!("{what} at {offset:#x} cannot be read: {e}")))?;
    object::pod::from_bytes::<T>(&buf)
        .map(|(t, _)| *t)
        .map_err(|()| malformed(format!("{what} at {offset:#x}")))
}

impl Elf {
    /// Reads and checks the ELF header and the program header table of a
    /// file of `len` bytes (the ELF magic already matched).
    pub fn parse<S: Source + ?Sized>(src: &S, len: u64) -> Result<Self, LoadError> {
        // EI_CLASS, read before the 64-bit header, so that an ELF32 file
        // gets a message that says so.
        let mut class = [0u8; 1];
        if len < 5 || src.read_exact_at(&mut class, 4).is_err() {
            return Err(malformed("the ELF header is truncated"));
        }
        match elf::FileClass(class[0]) {
            elf::ELFCLASS64 => {}
            elf::ELFCLASS32 => {
                return Err(LoadError::NotElf64(
                    "this is an ELF32 file; only ELF64 is supported",
                ));
            }
            _ => return Err(LoadError::NotElf64("unknown ELF class (EI_CLASS)")),
        }
        if len < 64 {
            return Err(malformed(format!(
                "the ELF header is truncated: the file has {len} bytes, the header 64"
            )));
        }
        let header: FileHeader64<Endianness> = read_pod(src, 0, "the ELF header")?;
        if !header.is_supported() {
            return Err(malformed("unsupported ELF header (EI_DATA or EI_VERSION)"));
        }
        let endian = header.endian().map_err(|e| malformed(e.to_string()))?;
        let e_type = header.e_type(endian);
        if e_type != elf::ET_CORE {
            return Err(LoadError::NotCore(e_type.0));
        }
        let (phoff, phnum) = program_header_table(src, &header, endian, len)?;
        let mut segments = Vec::new();
        for_each_program_header(src, phoff, phnum, |index, ph| {
            if ph.p_type(endian) == elf::PT_LOAD {
                if let Some(seg) = checked_segment(index, &ph, endian, len)? {
                    segments.push(seg);
                }
            }
            Ok(())
        })?;
        if segments.is_empty() {
            return Err(LoadError::NoMemory);
        }
        segments.shrink_to_fit();
        segments.sort_unstable_by_key(|s| (s.paddr, s.index));
        for pair in segments.windows(2) {
            if let [a, b] = pair {
                if b.paddr < a.end {
                    return Err(LoadError::Overlap {
                        first: index(a.index),
                        second: index(b.index),
                        at: PhysAddr::new(b.paddr),
                    });
                }
            }
        }
        Ok(Elf {
            endian,
            phoff,
            phnum,
            segments,
        })
    }

    /// The physical ranges `[start, end)` that have file bytes, in
    /// ascending order (segments do not overlap).
    pub fn extents(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.segments
            .iter()
            .filter(|s| s.file_end > s.paddr)
            .map(|s| (s.paddr, s.file_end))
    }

    /// The number of `PT_LOAD` segments with memory.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Reads the page at `phys` (a multiple of `buf.len()`) into `buf`, from
    /// every segment piece it is made of; a page some byte of which no
    /// segment covers is unreadable. Costs one positioned read per piece
    /// with file bytes (at most one per byte of the page).
    pub fn read_page<S: Source + ?Sized>(&self, src: &S, phys: u64, buf: &mut [u8]) -> PageRead {
        self.try_read_page(src, phys, buf)
            .unwrap_or(PageRead::Unreadable)
    }

    fn try_read_page<S: Source + ?Sized>(
        &self,
        src: &S,
        phys: u64,
        buf: &mut [u8],
    ) -> Option<PageRead> {
        let end = phys.checked_add(u64::try_from(buf.len()).ok()?)?;
        // Segments are disjoint and sorted, so their ends are sorted too:
        // this is the first segment that reaches past `phys`.
        let mut next = self.segments.partition_point(|s| s.end <= phys);
        let (mut at, mut file_bytes) = (phys, false);
        while at < end {
            let seg = self.segments.get(next)?;
            if seg.paddr > at {
                return Some(PageRead::Unreadable);
            }
            let stop = end.min(seg.end);
            let file_stop = stop.min(seg.file_end).max(at);
            let from = usize::try_from(at.checked_sub(phys)?).ok()?;
            let mid = usize::try_from(file_stop.checked_sub(phys)?).ok()?;
            let to = usize::try_from(stop.checked_sub(phys)?).ok()?;
            if mid > from {
                let offset = seg.offset.checked_add(at.checked_sub(seg.paddr)?)?;
                src.read_exact_at(buf.get_mut(from..mid)?, offset).ok()?;
                file_bytes = true;
            }
            // Past `p_filesz`: the zero tail.
            buf.get_mut(mid..to)?.fill(0);
            at = stop;
            next = next.checked_add(1)?;
        }
        Some(if file_bytes {
            PageRead::Data
        } else {
            PageRead::Zero
        })
    }

    /// The root address in the file's `IOMMUFLB` note, if it has one. Walks
    /// the program header table again and every `PT_NOTE` segment note by
    /// note; keeps nothing but the answer. The `PT_NOTE` segments together
    /// may not hold more bytes than the file (only overlapping ones do), so
    /// the walk reads at most the file once.
    pub fn root_note<S: Source + ?Sized>(
        &self,
        src: &S,
        len: u64,
    ) -> Result<Option<PhysAddr>, LoadError> {
        let endian = self.endian;
        let mut found = None;
        let mut scanned = 0u64;
        for_each_program_header(src, self.phoff, self.phnum, |index, ph| {
            if ph.p_type(endian) != elf::PT_NOTE {
                return Ok(());
            }
            let bad = |what: String| LoadError::Note { index, what };
            let (offset, size) = (ph.p_offset(endian), ph.p_filesz(endian));
            let align = match ph.p_align(endian) {
                0..=4 => 4,
                8 => 8,
                a => return Err(bad(format!("p_align {a} is not a note alignment (4 or 8)"))),
            };
            let end = offset
                .checked_add(size)
                .filter(|&e| e <= len)
                .ok_or_else(|| {
                    bad(format!(
                        "file bytes {offset:#x}+{size:#x} are beyond the end of the file \
                         ({len:#x} bytes)"
                    ))
                })?;
            scanned = scanned.saturating_add(size);
            if scanned > len {
                return Err(bad(format!(
                    "the PT_NOTE segments up to this one hold {scanned:#x} bytes, more than \
                     the file's {len:#x}: they overlap"
                )));
            }
            let mut notes = Notes {
                window: Window::new(src, end),
                endian,
                start: offset,
                size,
                align,
                pos: 0,
            };
            while let Some(note) = notes.next().map_err(bad)? {
                if note.n_type != NT_IOMMU_FLB_ROOT || !notes.name_is(&note, NOTE_NAME) {
                    continue;
                }
                let root = notes.desc_u64(&note).ok_or(LoadError::RootNoteSize {
                    index,
                    descsz: usize::try_from(note.descsz).unwrap_or(usize::MAX),
                })?;
                if found.replace(PhysAddr::new(root)).is_some() {
                    return Err(LoadError::TwoRootNotes);
                }
            }
            Ok(())
        })?;
        Ok(found)
    }
}

fn index(i: u32) -> usize {
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// The file offset and number of entries of the program header table,
/// checked: entries of 56 bytes, at most [`MAX_PROGRAM_HEADERS`], all in
/// the file. The count may be extended (`e_phnum` = `PN_XNUM`, the count in
/// section header 0's `sh_info`).
fn program_header_table<S: Source + ?Sized>(
    src: &S,
    header: &FileHeader64<Endianness>,
    endian: Endianness,
    len: u64,
) -> Result<(u64, u32), LoadError> {
    let phoff = header.e_phoff(endian);
    let e_phnum = header.e_phnum(endian);
    if phoff == 0 || e_phnum == 0 {
        return Err(LoadError::NoMemory);
    }
    let phnum = if e_phnum < elf::PN_XNUM {
        u32::from(e_phnum)
    } else {
        let shoff = header.e_shoff(endian);
        if shoff == 0 {
            return Err(malformed(
                "e_phnum is PN_XNUM (0xffff) but there is no section header 0 to hold the count",
            ));
        }
        let shentsize = header.e_shentsize(endian);
        if usize::from(shentsize) != SHDR_SIZE {
            return Err(malformed(format!(
                "e_shentsize is {shentsize}, expected {SHDR_SIZE}"
            )));
        }
        let sh0: SectionHeader64<Endianness> = read_pod(src, shoff, "section header 0")?;
        sh0.sh_info(endian)
    };
    if phnum == 0 {
        return Err(LoadError::NoMemory);
    }
    let phentsize = header.e_phentsize(endian);
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(malformed(format!(
            "e_phentsize is {phentsize}, expected {PHDR_SIZE}"
        )));
    }
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(LoadError::TooManyProgramHeaders {
            count: phnum,
            max: MAX_PROGRAM_HEADERS,
        });
    }
    let in_file = u64::from(phnum)
        .checked_mul(PHDR_BYTES)
        .and_then(|n| n.checked_add(phoff))
        .is_some_and(|end| end <= len);
    if !in_file {
        return Err(malformed(format!(
            "the program header table ({phnum} entries at {phoff:#x}) is beyond the end of \
             the file ({len:#x} bytes)"
        )));
    }
    Ok((phoff, phnum))
}

/// Calls `f` with each program header of the table at `phoff`, in order,
/// reading the table through one [`Window`]; stops at `f`'s first error.
fn for_each_program_header<S: Source + ?Sized>(
    src: &S,
    phoff: u64,
    phnum: u32,
    mut f: impl FnMut(usize, ProgramHeader64<Endianness>) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let table = u64::from(phnum)
        .checked_mul(PHDR_BYTES)
        .and_then(|n| n.checked_add(phoff));
    let mut window = Window::new(src, table.unwrap_or(0));
    for i in 0..phnum {
        let at = u64::from(i)
            .checked_mul(PHDR_BYTES)
            .and_then(|n| n.checked_add(phoff));
        let ph = at
            .and_then(|at| window.bytes(at, PHDR_SIZE))
            .and_then(|b| object::pod::from_bytes::<ProgramHeader64<Endianness>>(b).ok())
            .map(|(ph, _)| *ph)
            .ok_or_else(|| malformed(format!("program header {i} cannot be read")))?;
        f(index(i), ph)?;
    }
    Ok(())
}

/// One note of a `PT_NOTE` segment: its header, and where its name and
/// descriptor are (offsets in the segment).
struct Note {
    n_type: u32,
    name_at: u64,
    namesz: u64,
    desc_at: u64,
    descsz: u64,
}

/// The notes of one `PT_NOTE` segment, read one at a time with the
/// alignment rules of the `object` crate: the name right after the header,
/// the descriptor and the next note aligned to the segment's alignment from
/// its start; a note that does not fit is an error and ends the walk; the
/// padding after the last note may be missing.
struct Notes<'s, S: ?Sized> {
    window: Window<'s, S>,
    endian: Endianness,
    /// File offset of the segment.
    start: u64,
    /// Its size.
    size: u64,
    /// 4 or 8.
    align: u64,
    /// Offset of the next note in the segment.
    pos: u64,
}

impl<S: Source + ?Sized> Notes<'_, S> {
    fn align_up(&self, n: u64) -> Option<u64> {
        n.checked_next_multiple_of(self.align)
    }

    fn next(&mut self) -> Result<Option<Note>, String> {
        let pos = self.pos;
        if pos >= self.size {
            return Ok(None);
        }
        // Whatever happens, the walk ends at an error.
        self.pos = self.size;
        let short = || format!("the note at segment offset {pos:#x} is too short");
        let header = self
            .start
            .checked_add(pos)
            .and_then(|at| self.window.bytes(at, NHDR_SIZE))
            .and_then(|b| object::pod::from_bytes::<NoteHeader64<Endianness>>(b).ok())
            .map(|(h, _)| *h)
            .ok_or_else(short)?;
        let namesz = u64::from(header.n_namesz.get(self.endian));
        let descsz = u64::from(header.n_descsz.get(self.endian));
        let past = |field: &str, n: u64| {
            format!("the note at segment offset {pos:#x}: {field} {n} runs past the segment")
        };
        let name_at = pos.checked_add(12).ok_or_else(short)?;
        let name_end = name_at
            .checked_add(namesz)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| past("n_namesz", namesz))?;
        let desc_at = self.align_up(name_end).ok_or_else(short)?;
        let desc_end = desc_at
            .checked_add(descsz)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| past("n_descsz", descsz))?;
        if let Some(next) = self.align_up(desc_end).filter(|&n| n <= self.size) {
            self.pos = next;
        }
        Ok(Some(Note {
            n_type: header.n_type.get(self.endian).0,
            name_at,
            namesz,
            desc_at,
            descsz,
        }))
    }

    /// Whether the note's name is `want` followed by zero or more NULs.
    fn name_is(&mut self, note: &Note, want: &[u8]) -> bool {
        let Ok(want_len) = u64::try_from(want.len()) else {
            return false;
        };
        let Some(mut at) = self.start.checked_add(note.name_at) else {
            return false;
        };
        if note.namesz < want_len || self.window.bytes(at, want.len()) != Some(want) {
            return false;
        }
        let mut left = note.namesz.saturating_sub(want_len);
        at = at.saturating_add(want_len);
        while left > 0 {
            let n = left.min(16 << 10);
            let Some(chunk) = usize::try_from(n)
                .ok()
                .and_then(|n| self.window.bytes(at, n))
            else {
                return false;
            };
            if chunk.iter().any(|&b| b != 0) {
                return false;
            }
            left = left.saturating_sub(n);
            at = at.saturating_add(n);
        }
        true
    }

    /// The note's descriptor as a u64 in the file's byte order, if it has
    /// exactly 8 bytes.
    fn desc_u64(&mut self, note: &Note) -> Option<u64> {
        if note.descsz != 8 {
            return None;
        }
        let at = self.start.checked_add(note.desc_at)?;
        let desc: [u8; 8] = self.window.bytes(at, 8)?.try_into().ok()?;
        Some(match self.endian {
            Endianness::Little => u64::from_le_bytes(desc),
            Endianness::Big => u64::from_be_bytes(desc),
        })
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
        paddr,
        end,
        // `filesz <= memsz`, so this does not overflow either.
        file_end: paddr.checked_add(filesz).ok_or_else(truncated)?,
        offset,
        index: u32::try_from(index).map_err(|_| truncated())?,
    }))
}
