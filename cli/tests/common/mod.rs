//! Hand-made ELF64 core files for the tests of `cli/tests/`: any program
//! headers, any byte order, the payload after the program headers.

use iommu_flb_cli::load::{Format, LoadOptions};
use object::elf::{self, FileHeader64, Ident, ProgramHeader64};
use object::{Endian, LittleEndian, U16, U32, U64, bytes_of};

pub mod kdump;

/// `--format auto`, no `--base`.
#[allow(dead_code)] // not every test crate loads files itself
pub const AUTO: LoadOptions = LoadOptions {
    format: Format::Auto,
    base: None,
};
/// `--format elf`, no `--base`.
#[allow(dead_code)]
pub const ELF: LoadOptions = LoadOptions {
    format: Format::Elf,
    base: None,
};

/// One program header of a hand-made core file.
#[derive(Clone, Copy)]
pub struct Ph {
    pub p_type: elf::ProgramType,
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A `PT_LOAD` segment.
pub fn load_seg(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph {
        p_type: elf::PT_LOAD,
        offset,
        paddr,
        filesz,
        memsz,
        align: 0x1000,
    }
}

/// Where a hand-made file with `n` program headers puts its payload: the
/// first page boundary after them (0x1000 for up to 71).
pub fn data_offset(n: usize) -> u64 {
    u64::try_from(64 + 56 * n).unwrap().next_multiple_of(0x1000)
}

/// An ELF64 file of type `e_type` with `phdrs`, and `payload` at file offset
/// [`data_offset`]`(phdrs.len())`, in byte order `e`.
pub fn hand_made<E: Endian>(e: E, e_type: u16, phdrs: &[Ph], payload: &[u8]) -> Vec<u8> {
    let header = FileHeader64::<E> {
        e_ident: Ident {
            magic: elf::ELFMAG,
            class: elf::ELFCLASS64,
            data: if e.is_little_endian() {
                elf::ELFDATA2LSB
            } else {
                elf::ELFDATA2MSB
            },
            version: elf::EV_CURRENT,
            os_abi: elf::ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(e, elf::FileType(e_type)),
        e_machine: U16::new(e, elf::EM_X86_64),
        e_version: U32::new(e, 1),
        e_entry: U64::new(e, 0),
        e_phoff: U64::new(e, 64),
        e_shoff: U64::new(e, 0),
        e_flags: U32::new(e, elf::FileFlags(0)),
        e_ehsize: U16::new(e, 64),
        e_phentsize: U16::new(e, 56),
        e_phnum: U16::new(e, u16::try_from(phdrs.len()).unwrap()),
        e_shentsize: U16::new(e, 0),
        e_shnum: U16::new(e, 0),
        e_shstrndx: U16::new(e, elf::SHN_UNDEF),
    };
    let mut out = bytes_of(&header).to_vec();
    for ph in phdrs {
        out.extend_from_slice(bytes_of(&ProgramHeader64::<E> {
            p_type: U32::new(e, ph.p_type),
            p_flags: U32::new(e, elf::PF_R),
            p_offset: U64::new(e, ph.offset),
            p_vaddr: U64::new(e, 0),
            p_paddr: U64::new(e, ph.paddr),
            p_filesz: U64::new(e, ph.filesz),
            p_memsz: U64::new(e, ph.memsz),
            p_align: U64::new(e, ph.align),
        }));
    }
    out.resize(usize::try_from(data_offset(phdrs.len())).unwrap(), 0);
    out.extend_from_slice(payload);
    out
}

/// A little-endian [`hand_made`] file.
pub fn le(e_type: u16, phdrs: &[Ph], payload: &[u8]) -> Vec<u8> {
    hand_made(LittleEndian, e_type, phdrs, payload)
}
