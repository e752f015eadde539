//! The formats descriptor: which image format versions a kernel's reader
//! reads and its writer writes, and per version which feature bits it
//! knows, as a wire format of its own.
//!
//! An outgoing kernel must know, before kexec, what the next kernel can
//! read; the next kernel is only an ELF file then (a `vmlinux`, a module).
//! So each kernel carries its descriptor in an ELF section,
//! `.iommu_flb_formats` (the C header's `IOMMU_FLB_DECLARE_FORMATS()`
//! puts it there), and one kernel's tools read another kernel's
//! descriptor out of that file: the layout is a wire format like the
//! image's, little-endian, alignment 1, frozen in `abi/formats-v1.txt`.
//!
//! - `magic` ("IFLF") says what the bytes are, `version` the descriptor's
//!   own layout (1). A reader refuses any other descriptor version: a
//!   change that old readers cannot skip is a new descriptor version.
//! - `size` is the number of bytes the producer wrote: at least
//!   `sizeof(struct iommu_flb_formats)`. A later producer of descriptor
//!   version 1 may append fields and raise it; a reader reads the fields
//!   it knows and skips the rest.
//! - `count` entries of the fixed array of
//!   [`IOMMU_FLB_FORMATS_MAX_ENTRIES`] are used, in any order, one per
//!   format version; the unused ones are zero.
//! - Each entry says, by its `flags`, whether the kernel reads images of
//!   that version ([`IOMMU_FLB_FORMATS_READ`]) and writes them
//!   ([`IOMMU_FLB_FORMATS_WRITE`]), and which compatible and incompatible
//!   feature bits of that version it knows. Unknown flag bits are refused,
//!   so a reader never misses a meaning.
//!
//! The checks, the crate's own descriptor and the negotiation between two
//! descriptors are in [`crate::formats`].

use core::mem::{align_of, offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Le32, Le64, StructLayout, describe};

/// IOMMU_FLB_FORMATS_MAGIC - `iommu_flb_formats.magic`: the bytes "IFLF" read as a little-endian u32.
pub const IOMMU_FLB_FORMATS_MAGIC: u32 = 0x464c_4649;

/// IOMMU_FLB_FORMATS_VERSION - `iommu_flb_formats.version`: the descriptor layout this header defines.
pub const IOMMU_FLB_FORMATS_VERSION: u32 = 1;

/// IOMMU_FLB_FORMATS_SIZE - sizeof(struct iommu_flb_formats): the least `iommu_flb_formats.size`.
pub const IOMMU_FLB_FORMATS_SIZE: u32 = 208;

/// IOMMU_FLB_FORMATS_MAX_ENTRIES - Entries in `iommu_flb_formats.entries`: the most format versions one descriptor names.
pub const IOMMU_FLB_FORMATS_MAX_ENTRIES: usize = 8;

/// IOMMU_FLB_FORMATS_READ - Entry flag: the kernel reads images of this format version.
pub const IOMMU_FLB_FORMATS_READ: u32 = 1 << 0;

/// IOMMU_FLB_FORMATS_WRITE - Entry flag: the kernel writes images of this format version.
pub const IOMMU_FLB_FORMATS_WRITE: u32 = 1 << 1;

/// IOMMU_FLB_FORMATS_FLAGS_KNOWN - Every entry flag descriptor version 1 defines; any other bit is refused.
pub const IOMMU_FLB_FORMATS_FLAGS_KNOWN: u32 = IOMMU_FLB_FORMATS_READ | IOMMU_FLB_FORMATS_WRITE;

/// IOMMU_FLB_V1_COMPAT_KNOWN - Compatible feature bits of version 1: none (version 1 has no feature fields).
pub const IOMMU_FLB_V1_COMPAT_KNOWN: u64 = 0;

/// IOMMU_FLB_V1_INCOMPAT_KNOWN - Incompatible feature bits of version 1: none.
pub const IOMMU_FLB_V1_INCOMPAT_KNOWN: u64 = 0;

/// IOMMU_FLB_FORMATS_COUNT - Entries the library's own descriptor uses: versions 1 and 2.
pub const IOMMU_FLB_FORMATS_COUNT: u32 = 2;

/// The ELF section `IOMMU_FLB_DECLARE_FORMATS()` puts the descriptor in
/// (the C header spells it `IOMMU_FLB_FORMATS_SECTION`).
pub const IOMMU_FLB_FORMATS_SECTION: &str = ".iommu_flb_formats";

/// struct iommu_flb_formats_entry - What a kernel supports of one format version.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C, packed)]
pub struct IommuFlbFormatsEntry {
    /// @version: The format version (`iommu_flb_ser.version`): 1, 2, ...;
    /// never 0 in a used entry.
    pub version: Le32,
    /// @flags: `IOMMU_FLB_FORMATS_READ` and/or `IOMMU_FLB_FORMATS_WRITE`;
    /// other bits zero.
    pub flags: Le32,
    /// @compat_known: The version's compatible feature bits the kernel knows.
    pub compat_known: Le64,
    /// @incompat_known: The version's incompatible feature bits the kernel
    /// knows: an image with any other one set is refused (reading), or never
    /// written (writing).
    pub incompat_known: Le64,
}

/// struct iommu_flb_formats - A kernel's formats descriptor, in the ELF
/// section `IOMMU_FLB_FORMATS_SECTION`.
#[derive(
    FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C, packed)]
pub struct IommuFlbFormats {
    /// @magic: `IOMMU_FLB_FORMATS_MAGIC`.
    pub magic: Le32,
    /// @version: `IOMMU_FLB_FORMATS_VERSION`.
    pub version: Le32,
    /// @size: Bytes of the descriptor: at least `IOMMU_FLB_FORMATS_SIZE`; a
    /// later producer may append fields, which a reader skips.
    pub size: Le32,
    /// @count: Entries used, at most `IOMMU_FLB_FORMATS_MAX_ENTRIES`.
    pub count: Le32,
    /// @entries: The first @count describe one format version each, no
    /// version twice; the rest are zero.
    pub entries: [IommuFlbFormatsEntry; IOMMU_FLB_FORMATS_MAX_ENTRIES],
}

/// The layout, pinned at compile time.
#[allow(clippy::as_conversions)] // Constant expressions only.
mod pinned {
    use super::*;

    const_assert_eq!(size_of::<IommuFlbFormatsEntry>(), 24);
    const_assert_eq!(align_of::<IommuFlbFormatsEntry>(), 1);
    const_assert_eq!(offset_of!(IommuFlbFormatsEntry, version), 0);
    const_assert_eq!(offset_of!(IommuFlbFormatsEntry, flags), 4);
    const_assert_eq!(offset_of!(IommuFlbFormatsEntry, compat_known), 8);
    const_assert_eq!(offset_of!(IommuFlbFormatsEntry, incompat_known), 16);

    const_assert_eq!(
        size_of::<IommuFlbFormats>(),
        IOMMU_FLB_FORMATS_SIZE as usize
    );
    const_assert_eq!(align_of::<IommuFlbFormats>(), 1);
    const_assert_eq!(offset_of!(IommuFlbFormats, magic), 0);
    const_assert_eq!(offset_of!(IommuFlbFormats, version), 4);
    const_assert_eq!(offset_of!(IommuFlbFormats, size), 8);
    const_assert_eq!(offset_of!(IommuFlbFormats, count), 12);
    const_assert_eq!(offset_of!(IommuFlbFormats, entries), 16);
    // A multiple of 8, so descriptors (aligned(8)) pack without padding.
    const_assert_eq!(size_of::<IommuFlbFormats>() % 8, 0);
    const_assert_eq!(IOMMU_FLB_FORMATS_MAGIC, u32::from_le_bytes(*b"IFLF"));
}

/// The layout of descriptor version 1, frozen in `abi/formats-v1.txt`.
pub const LAYOUT: &[StructLayout] = &[
    describe!("struct" IommuFlbFormatsEntry, "iommu_flb_formats_entry" {
        version => "__le32", flags => "__le32", compat_known => "__le64",
        incompat_known => "__le64",
    }),
    describe!("struct" IommuFlbFormats, "iommu_flb_formats" {
        magic => "__le32", version => "__le32", size => "__le32", count => "__le32",
        entries => "struct iommu_flb_formats_entry[8]",
    }),
];
