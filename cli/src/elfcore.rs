//! Writing ELF64 core files, the form `gen --format elf` produces.
//!
//! The file is the smallest core file that kdump tools, `readelf` and this
//! tool's loader read alike:
//!
//! - an ELF64 little-endian header, `e_type` = `ET_CORE`, `e_machine` =
//!   `EM_NONE` (the handover format is the same on every KHO architecture);
//! - one `PT_NOTE` segment holding the `IOMMUFLB` root note (below);
//! - one `PT_LOAD` segment per run of physically contiguous pages, with
//!   `p_paddr` the run's physical address, `p_vaddr` 0, `p_filesz` =
//!   `p_memsz`, the data 4 KiB-aligned in the file.
//!
//! # The `IOMMUFLB` root note
//!
//! A standard ELF note (`Elf64_Nhdr`: `n_namesz`, `n_descsz`, `n_type`, all
//! 32-bit, 4-byte alignment) with name `"IOMMUFLB"` (`n_namesz` = 9,
//! including the NUL), `n_type` = [`NT_IOMMU_FLB_ROOT`] (`0x524f4f54`, "ROOT"), and an 8-byte
//! descriptor: the physical address of the root `iommu_flb_ser`, as a u64 in
//! the file's byte order. It stands in for the u64 `data` LUO hands the next
//! kernel, which a memory dump does not otherwise record. Readers look for
//! it in every `PT_NOTE` segment; a file with two is refused. Other note
//! types under the `IOMMUFLB` name are reserved and ignored.

use core::fmt;
use core::mem::size_of;

use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::abi::PageSize;
use object::elf::{self, FileHeader64, Ident, NoteHeader64, ProgramHeader64};
use object::{LittleEndian as LE, U16, U32, U64, bytes_of};

/// The name of the root note (without its NUL terminator).
pub const NOTE_NAME: &[u8] = b"IOMMUFLB";

/// `n_type` of the root note: the descriptor is the root's physical address.
/// The value spells `"ROOT"` in ASCII, in the way Linux's `NT_FILE`
/// (`"FILE"`) and `NT_SIGINFO` (`"SIGI"`) do, so tools that print core-file
/// notes by type number (`readelf -n`) do not mistake it for a core note.
pub const NT_IOMMU_FLB_ROOT: u32 = 0x524f_4f54;

/// Why a core file could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreError {
    /// A page address is not page-aligned.
    Unaligned(PhysAddr),
    /// A page is not 4, 16 or 64 KiB long, or not as long as the others.
    PageLength(PhysAddr, usize),
    /// Two pages have the same address.
    Duplicate(PhysAddr),
    /// The pages form more runs than an ELF header can count without the
    /// `PN_XNUM` extension, which this writer does not produce.
    TooManySegments(usize),
    /// The file would be larger than the address space.
    TooLarge,
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Unaligned(p) => write!(f, "page address {p} is not page-aligned"),
            CoreError::PageLength(p, n) => write!(f, "page {p} is {n} bytes long"),
            CoreError::Duplicate(p) => write!(f, "two pages at {p}"),
            CoreError::TooManySegments(n) => {
                write!(f, "{n} runs of contiguous pages: too many PT_LOAD segments")
            }
            CoreError::TooLarge => write!(f, "the core file would be too large"),
        }
    }
}

impl std::error::Error for CoreError {}

/// One run of physically contiguous pages.
struct Run<'p> {
    phys: u64,
    pages: Vec<&'p [u8]>,
}

/// Writes an ELF64 core file holding `pages` (in any order) and an
/// `IOMMUFLB` note naming `root`. Every page must have the same length, one
/// of the page sizes (the image's), which is also the segments' alignment.
pub fn write_core<'p, B: AsRef<[u8]> + ?Sized + 'p>(
    pages: impl IntoIterator<Item = (PhysAddr, &'p B)>,
    root: PhysAddr,
) -> Result<Vec<u8>, CoreError> {
    let mut pages: Vec<_> = pages.into_iter().collect();
    pages.sort_by_key(|(p, _)| *p);
    let ps = match pages.first() {
        None => PageSize::default(),
        Some((phys, bytes)) => {
            let len = bytes.as_ref().len();
            u64::try_from(len)
                .ok()
                .and_then(PageSize::from_bytes)
                .ok_or(CoreError::PageLength(*phys, len))?
        }
    };
    let page = ps.bytes_u64();
    let mut runs: Vec<Run<'p>> = Vec::new();
    for (phys, bytes) in pages {
        let bytes = bytes.as_ref();
        if !phys.is_page_aligned(ps) {
            return Err(CoreError::Unaligned(phys));
        }
        if bytes.len() != ps.bytes() {
            return Err(CoreError::PageLength(phys, bytes.len()));
        }
        if let Some(last) = runs.last_mut() {
            let run_end = u64::try_from(last.pages.len())
                .ok()
                .and_then(|n| n.checked_mul(page))
                .and_then(|len| last.phys.checked_add(len));
            if run_end.is_some_and(|e| e > phys.get()) {
                return Err(CoreError::Duplicate(phys));
            }
            if run_end == Some(phys.get()) {
                last.pages.push(bytes);
                continue;
            }
        }
        runs.push(Run {
            phys: phys.get(),
            pages: vec![bytes],
        });
    }

    let phnum = runs
        .len()
        .checked_add(1)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n < elf::PN_XNUM)
        .ok_or(CoreError::TooManySegments(runs.len()))?;
    let big = |_| CoreError::TooLarge;
    let phoff = size_of::<FileHeader64<LE>>();
    let note_off = size_of::<ProgramHeader64<LE>>()
        .checked_mul(usize::from(phnum))
        .and_then(|n| n.checked_add(phoff))
        .ok_or(CoreError::TooLarge)?;
    let note = root_note(root);
    let data_off = note_off
        .checked_add(note.len())
        .and_then(|n| n.checked_next_multiple_of(ps.bytes()))
        .ok_or(CoreError::TooLarge)?;

    let mut out = Vec::new();
    out.extend_from_slice(bytes_of(&file_header(phnum, phoff)));
    out.extend_from_slice(bytes_of(&program_header(
        elf::PT_NOTE,
        elf::PF_R,
        u64::try_from(note_off).map_err(big)?,
        0,
        u64::try_from(note.len()).map_err(big)?,
        4,
    )));
    let mut offset = u64::try_from(data_off).map_err(big)?;
    for run in &runs {
        let len = u64::try_from(run.pages.len())
            .ok()
            .and_then(|n| n.checked_mul(page))
            .ok_or(CoreError::TooLarge)?;
        out.extend_from_slice(bytes_of(&program_header(
            elf::PT_LOAD,
            elf::PF_R | elf::PF_W,
            offset,
            run.phys,
            len,
            page,
        )));
        offset = offset.checked_add(len).ok_or(CoreError::TooLarge)?;
    }
    out.extend_from_slice(&note);
    out.resize(data_off, 0);
    for page in runs.iter().flat_map(|r| r.pages.iter()) {
        out.extend_from_slice(&page[..]);
    }
    Ok(out)
}

fn file_header(phnum: u16, phoff: usize) -> FileHeader64<LE> {
    let size = |n: usize| U16::new(LE, u16::try_from(n).unwrap_or(u16::MAX));
    FileHeader64 {
        e_ident: Ident {
            magic: elf::ELFMAG,
            class: elf::ELFCLASS64,
            data: elf::ELFDATA2LSB,
            version: elf::EV_CURRENT,
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(LE, elf::ET_CORE),
        e_machine: U16::new(LE, elf::EM_NONE),
        e_version: U32::new(LE, u32::from(elf::EV_CURRENT.0)),
        e_entry: U64::new(LE, 0),
        e_phoff: U64::new(LE, u64::try_from(phoff).unwrap_or(0)),
        e_shoff: U64::new(LE, 0),
        e_flags: U32::new(LE, elf::FileFlags(0)),
        e_ehsize: size(size_of::<FileHeader64<LE>>()),
        e_phentsize: size(size_of::<ProgramHeader64<LE>>()),
        e_phnum: U16::new(LE, phnum),
        e_shentsize: U16::new(LE, 0),
        e_shnum: U16::new(LE, 0),
        e_shstrndx: U16::new(LE, elf::SHN_UNDEF),
    }
}

fn program_header(
    p_type: elf::ProgramType,
    flags: elf::ProgramFlags,
    offset: u64,
    paddr: u64,
    size: u64,
    align: u64,
) -> ProgramHeader64<LE> {
    ProgramHeader64 {
        p_type: U32::new(LE, p_type),
        p_flags: U32::new(LE, flags),
        p_offset: U64::new(LE, offset),
        p_vaddr: U64::new(LE, 0),
        p_paddr: U64::new(LE, paddr),
        p_filesz: U64::new(LE, size),
        p_memsz: U64::new(LE, size),
        p_align: U64::new(LE, align),
    }
}

/// The `IOMMUFLB` note: header, NUL-terminated name padded to 4 bytes,
/// 8-byte descriptor.
fn root_note(root: PhysAddr) -> Vec<u8> {
    const NAME: &[u8; 12] = b"IOMMUFLB\0\0\0\0";
    const NAMESZ: u32 = 9;
    const _: () = assert!(NOTE_NAME.len() == 8);
    let header = NoteHeader64 {
        n_namesz: U32::new(LE, NAMESZ),
        n_descsz: U32::new(LE, 8),
        n_type: U32::new(LE, elf::NoteType(NT_IOMMU_FLB_ROOT)),
    };
    let mut note = bytes_of(&header).to_vec();
    note.extend_from_slice(NAME);
    note.extend_from_slice(&root.get().to_le_bytes());
    note
}
