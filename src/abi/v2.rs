//! Version 2: the self-checking, extensible format this crate proposes.
//!
//! Version 1 cannot defend itself: nothing in a page says what it is, a page
//! left from an earlier handover looks like a fresh one, records cannot
//! grow, and the handover memory holds a kernel pointer and flags the next
//! kernel writes. Version 2 keeps what works (chains of whole pages, one
//! header per page, records back to back) and changes the rest. Each
//! decision, with its reason:
//!
//! - **The root starts like version 1's**: `version` is the first 8 bytes,
//!   so one read of the first word tells every reader which layout follows.
//! - **Self-identifying pages.** The root holds the magic `"IFLR"`, every
//!   array page `"IFLP"`, its chain (`chain`), its position in the chain
//!   (`index`) and its record size (`stride`). A page reached through a
//!   corrupt pointer, or one of another chain, is named as such.
//! - **Block header first.** An array page starts with the same 16-byte
//!   `{next, count}` header as version 1 (`struct iommu_array_hdr_ser`,
//!   which is also upstream `kho_block`'s layout), and version 2's own
//!   32 bytes follow it. One chain walk serves both versions, and kernel
//!   code can follow and count a version-2 chain with kho_block's helpers.
//!   kho_block refuses a block whose count is 0, so version 2 has no empty
//!   page: an empty chain has no pages at all and a zero head (the root's
//!   page count, 0, says that is intended). Version 2 does not take
//!   kho_block's 10,000-block cap: 2^24 devices need 299,594 device pages;
//!   the reader's own limits bound the walk instead.
//! - **Integrity.** Every page, the root's included, carries the CRC-32
//!   (IEEE 802.3, reflected, polynomial 0xedb88320: zlib's `crc32()`, and
//!   `crc32fast`) of all its bytes except the 4 bytes of the `crc` field
//!   itself: the bytes before it, then the bytes after it to the end of the
//!   page. Any single-bit flip anywhere in the image is in exactly one page
//!   and changes that page's CRC. In zlib's terms the value is
//!   `crc32(crc32(0, page, off), page + off + 4, page_size - off - 4)` for
//!   the `crc` field at offset `off` (48 in the root, 40 in an array
//!   page); with the kernel's `crc32_le()`, which neither seeds nor inverts,
//!   it is `~crc32_le(crc32_le(~0, page, off), page + off + 4, ...)`.
//!   Per-page sums let a writer update only the pages an operation touches.
//! - **Freshness and completeness.** The root holds a `generation` that
//!   every array page repeats: a page from an earlier handover, even an
//!   intact one, is refused. The root records each chain's page and record
//!   counts, so a chain cut short or lengthened is refused.
//! - **No kernel pointers, nothing the next kernel writes.** Version 1's
//!   `restored_domain` (a kernel pointer), `restored` bytes and `INCOMING`
//!   flag are gone. The next kernel keeps its restore state in its own
//!   memory, indexed by the record's index in its chain (an array of
//!   `nr_records` entries per chain, or an xarray): the handover image is
//!   read-only once handed over, and its CRCs stay valid.
//! - **References by index.** A device names its domain and IOMMU by their
//!   index in their chain (`domain_index`, `iommu_index`), not by physical
//!   address. The reader resolves one with a division: page `index /
//!   capacity` of the chain's page table, slot `index % capacity`, O(1) and
//!   with nothing else to check (a physical address needs a search for its
//!   page and an alignment check within it). An index also survives
//!   relocation: an image copied elsewhere, or converted, keeps its
//!   references. A (page, slot) pair would be O(1) too but costs two fields
//!   and admits a slot beyond the capacity, one more refusal to get right.
//! - **Growth.** Each page states its `stride`: the size of its records, at
//!   least the size version 2 defines, a multiple of 8, and the same on
//!   every page of a chain. A later 2.x writer appends fields to a record
//!   and raises the stride; a 2.0 reader reads the fields it knows and
//!   skips the rest. The root has its own `root_size` for the same reason.
//!   Features are bits: `compat_features` (an unknown one is ignored),
//!   `incompat_features` (an unknown one is refused). `last_compatible_version`
//!   (libfdt's `last_comp_version`) names the oldest reader that can read the
//!   image: a version-3 image whose `last_compatible_version` is 2 is read
//!   by a version-2 reader, one whose value is 3 is refused.
//! - **Page size in the root** (4096, 16384 or 65536), so a reader no
//!   longer has to be told.
//!
//! The record layouts follow version 1's field order and widths; only the
//! fields named above are gone or changed. SMMUv3's vendor structs carry no
//! next-kernel state, so version 2 uses version 1's
//! [`IommuSmmuv3HwSer`] and [`IommuMasterSmmuv3Ser`] unchanged.

use core::mem::{align_of, offset_of, size_of};

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::v1::{IommuArrayHdrSer, IommuHdrSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer};
use super::{Le32, Le64, PageSize, StructLayout, describe};

/// A little-endian `u16` as stored in the image (`__le16` in the C header).
pub type Le16 = zerocopy::little_endian::U16;

/// IOMMU_FLB_V2_VERSION - The format version stored in `iommu_flb_v2_ser.version`.
pub const IOMMU_FLB_V2_VERSION: u64 = 2;

/// IOMMU_FLB_V2_ROOT_MAGIC - `iommu_flb_v2_ser.magic`: the bytes "IFLR" read as a little-endian u32.
pub const IOMMU_FLB_V2_ROOT_MAGIC: u32 = 0x524c_4649;

/// IOMMU_FLB_V2_PAGE_MAGIC - `iommu_array_v2_hdr_ser.magic`: the bytes "IFLP" read as a little-endian u32.
pub const IOMMU_FLB_V2_PAGE_MAGIC: u32 = 0x504c_4649;

/// IOMMU_FLB_V2_CHAIN_IOMMU - `iommu_array_v2_hdr_ser.chain` of an IOMMU array page.
pub const IOMMU_FLB_V2_CHAIN_IOMMU: u16 = 1;

/// IOMMU_FLB_V2_CHAIN_DOMAIN - `iommu_array_v2_hdr_ser.chain` of a domain array page.
pub const IOMMU_FLB_V2_CHAIN_DOMAIN: u16 = 2;

/// IOMMU_FLB_V2_CHAIN_DEVICE - `iommu_array_v2_hdr_ser.chain` of a device array page.
pub const IOMMU_FLB_V2_CHAIN_DEVICE: u16 = 3;

/// IOMMU_FLB_V2_FLAG_DELETED - Record flag: the slot was unpreserved. The only flag version 2 defines.
pub const IOMMU_FLB_V2_FLAG_DELETED: u32 = 1 << 0;

/// IOMMU_FLB_V2_FLAGS_KNOWN - Every record flag bit version 2 defines; any other bit is corruption.
pub const IOMMU_FLB_V2_FLAGS_KNOWN: u32 = IOMMU_FLB_V2_FLAG_DELETED;

/// IOMMU_FLB_V2_COMPAT_KNOWN - Compatible feature bits version 2.0 defines (none yet).
pub const IOMMU_FLB_V2_COMPAT_KNOWN: u64 = 0;

/// IOMMU_FLB_V2_INCOMPAT_KNOWN - Incompatible feature bits version 2.0 defines (none yet).
pub const IOMMU_FLB_V2_INCOMPAT_KNOWN: u64 = 0;

/// IOMMU_FLB_V2_ROOT_CRC_OFFSET - Offset of `crc` in the root page; the CRC leaves these 4 bytes out.
pub const IOMMU_FLB_V2_ROOT_CRC_OFFSET: usize = 48;

/// IOMMU_FLB_V2_PAGE_CRC_OFFSET - Offset of `crc` in an array page; the CRC leaves these 4 bytes out.
pub const IOMMU_FLB_V2_PAGE_CRC_OFFSET: usize = 40;

/// IOMMU_FLB_V2_PAGE_HDR_SIZE - Size of `struct iommu_array_v2_hdr_ser`; records start here.
pub const IOMMU_FLB_V2_PAGE_HDR_SIZE: usize = 48;

/// IOMMU_FLB_V2_STRIDE_ALIGN - Every stride is a multiple of this.
pub const IOMMU_FLB_V2_STRIDE_ALIGN: usize = 8;

/// Records of `stride` bytes one version-2 array page of size `page`
/// holds: `(page - 48) / stride`; 0 for a zero stride.
pub const fn records_per_page(page: PageSize, stride: usize) -> u64 {
    // Lossless: `usize` is at most 64 bits on every target.
    #[allow(clippy::as_conversions)]
    let (hdr, stride) = (IOMMU_FLB_V2_PAGE_HDR_SIZE as u64, stride as u64);
    super::records_in_page(page, hdr, stride)
}

/// struct iommu_flb_v2_chain_ser - What the root records about one chain.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuFlbV2ChainSer {
    /// @head_phys: Physical address of the chain's first page; 0 for an empty chain.
    pub head_phys: Le64,
    /// @nr_pages: Pages in the chain.
    pub nr_pages: Le64,
    /// @nr_records: Records in the chain, deleted ones included (the sum of the pages' counts).
    pub nr_records: Le64,
}

/// struct iommu_flb_v2_ser - The version-2 root, at the start of its own page.
///
/// The CRC covers the whole root page, bytes past `root_size` included.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuFlbV2Ser {
    /// @version: The writer's format version: 2, or a later one that sets
    /// @last_compatible_version to 2.
    pub version: Le64,
    /// @magic: `IOMMU_FLB_V2_ROOT_MAGIC`.
    pub magic: Le32,
    /// @root_size: Bytes of this struct the writer filled: at least
    /// sizeof(struct iommu_flb_v2_ser), at most the page size. A 2.x writer
    /// may append fields; a 2.0 reader skips them.
    pub root_size: Le32,
    /// @last_compatible_version: The oldest reader version that can read
    /// this image: 2 for every image of this layout.
    pub last_compatible_version: Le32,
    /// @page_size: The writer's page size in bytes: 4096, 16384 or 65536.
    pub page_size: Le32,
    /// @generation: Chosen by the writer for this handover; every array
    /// page repeats it.
    pub generation: Le64,
    /// @compat_features: Feature bits a reader that does not know them may ignore.
    pub compat_features: Le64,
    /// @incompat_features: Feature bits a reader must refuse unless it knows them.
    pub incompat_features: Le64,
    /// @crc: CRC-32 of the root page without these 4 bytes.
    pub crc: Le32,
    /// @reserved: Zero.
    pub reserved: Le32,
    /// @iommus: The IOMMU chain (`struct iommu_hw_v2_ser` records).
    pub iommus: IommuFlbV2ChainSer,
    /// @domains: The domain chain (`struct iommu_domain_v2_ser` records).
    pub domains: IommuFlbV2ChainSer,
    /// @devices: The device chain (`struct iommu_device_v2_ser` records).
    pub devices: IommuFlbV2ChainSer,
}

/// struct iommu_array_v2_hdr_ser - The header at the start of every
/// version-2 array page. `blk.nr_objects` records of `stride` bytes follow
/// it back to back.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuArrayV2HdrSer {
    /// @blk: Next page and record count, as in version 1 and kho_block;
    /// the count is never 0.
    pub blk: IommuArrayHdrSer,
    /// @magic: `IOMMU_FLB_V2_PAGE_MAGIC`.
    pub magic: Le32,
    /// @chain: `IOMMU_FLB_V2_CHAIN_*`: the chain this page belongs to.
    pub chain: Le16,
    /// @stride: Bytes per record: at least the record's size in this
    /// version, a multiple of 8, the same on every page of the chain.
    pub stride: Le16,
    /// @index: The page's position in its chain, 0 for the head.
    pub index: Le64,
    /// @generation: The root's generation.
    pub generation: Le64,
    /// @crc: CRC-32 of the page without these 4 bytes.
    pub crc: Le32,
    /// @reserved: Zero.
    pub reserved: Le32,
}

/// struct iommu_intel_v2_ser - Intel VT-d unit state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuIntelV2Ser {
    /// @phys_addr: MMIO base of the unit.
    pub phys_addr: Le64,
    /// @root_table: Physical address of the root table.
    pub root_table: Le64,
    /// @context_tables_bitmap: Which context tables are preserved, one bit per bus.
    pub context_tables_bitmap: [Le64; 8],
}

/// union iommu_hw_vendor_v2_ser - The vendor part of a version-2 IOMMU
/// record, chosen by `type`. Bytes past the member in use are zero.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub union IommuHwVendorV2Ser {
    /// @intel: Meaningful when `type` is `IOMMU_INTEL`.
    pub intel: IommuIntelV2Ser,
    /// @smmuv3: Meaningful when `type` is `IOMMU_ARM_SMMUV3`.
    pub smmuv3: IommuSmmuv3HwSer,
}

/// struct iommu_hw_v2_ser - A preserved IOMMU unit.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub struct IommuHwV2Ser {
    /// @hdr: Record header; `ref_count` is the number of live devices behind it.
    pub hdr: IommuHdrSer,
    /// @token: The IOMMU's MMIO base; with `type`, identifies the IOMMU.
    pub token: Le64,
    /// @type: An `enum iommu_type_ser` value.
    pub r#type: Le64,
    /// @vendor: Vendor state; see `union iommu_hw_vendor_v2_ser`.
    pub vendor: IommuHwVendorV2Ser,
}

/// struct iommu_domain_v2_ser - A preserved IOMMU domain.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuDomainV2Ser {
    /// @hdr: Record header.
    pub hdr: IommuHdrSer,
    /// @top_table_phys: Physical address of the top-level page table (4 KiB-aligned, non-zero).
    pub top_table_phys: Le64,
    /// @top_level: Level of the top-level table.
    pub top_level: Le64,
    /// @vasz: Virtual address size in bits (at most 64).
    pub vasz: Le32,
    /// @sign_extend: Whether addresses are sign-extended (0 or 1).
    pub sign_extend: u8,
    /// @padding: Zero.
    pub padding: [u8; 3],
}

/// struct iommu_device_intel_v2_ser - Intel VT-d per-device state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuDeviceIntelV2Ser {
    /// @pasid_table: Physical address of the PASID table.
    pub pasid_table: Le64,
    /// @max_pasid: Number of PASIDs.
    pub max_pasid: Le64,
}

/// union iommu_device_vendor_v2_ser - The vendor part of a version-2 device
/// record, chosen by the `type` of its IOMMU. Bytes past the member in use
/// are zero.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub union IommuDeviceVendorV2Ser {
    /// @intel: Meaningful when the IOMMU is `IOMMU_INTEL`.
    pub intel: IommuDeviceIntelV2Ser,
    /// @smmuv3: Meaningful when the IOMMU is `IOMMU_ARM_SMMUV3`.
    pub smmuv3: IommuMasterSmmuv3Ser,
}

/// struct iommu_device_v2_ser - A preserved device.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub struct IommuDeviceV2Ser {
    /// @hdr: Record header.
    pub hdr: IommuHdrSer,
    /// @devid: PCI requester ID: bus << 8 | devfn.
    pub devid: Le32,
    /// @pci_domain_nr: PCI segment.
    pub pci_domain_nr: Le32,
    /// @dma_owner_token: Token of the DMA owner (the preserving file).
    pub dma_owner_token: Le64,
    /// @attachment_id: The attachment's hardware ID (VT-d domain ID; SMMUv3 ASID or VMID).
    pub attachment_id: Le64,
    /// @domain_index: Index of the device's domain in the domain chain.
    pub domain_index: Le64,
    /// @iommu_index: Index of the device's IOMMU in the IOMMU chain.
    pub iommu_index: Le64,
    /// @vendor: Vendor state; see `union iommu_device_vendor_v2_ser`.
    pub vendor: IommuDeviceVendorV2Ser,
}

/// The layout, pinned at compile time.
#[allow(clippy::as_conversions, clippy::arithmetic_side_effects)] // Constant expressions only.
mod pinned {
    use super::*;

    macro_rules! pin {
        ($ty:ty, size $size:literal { $($field:ident @ $off:literal),* $(,)? }) => {
            const_assert_eq!(size_of::<$ty>(), $size);
            const_assert_eq!(align_of::<$ty>(), 1);
            $(const_assert_eq!(offset_of!($ty, $field), $off);)*
        };
    }

    pin!(IommuFlbV2ChainSer, size 24 { head_phys @ 0, nr_pages @ 8, nr_records @ 16 });
    pin!(IommuFlbV2Ser, size 128 {
        version @ 0, magic @ 8, root_size @ 12, last_compatible_version @ 16, page_size @ 20,
        generation @ 24, compat_features @ 32, incompat_features @ 40, crc @ 48, reserved @ 52,
        iommus @ 56, domains @ 80, devices @ 104,
    });
    pin!(IommuArrayV2HdrSer, size 48 {
        blk @ 0, magic @ 16, chain @ 20, stride @ 22, index @ 24, generation @ 32, crc @ 40,
        reserved @ 44,
    });
    pin!(IommuIntelV2Ser, size 80 { phys_addr @ 0, root_table @ 8, context_tables_bitmap @ 16 });
    pin!(IommuHwVendorV2Ser, size 80 { intel @ 0, smmuv3 @ 0 });
    pin!(IommuHwV2Ser, size 104 { hdr @ 0, token @ 8, r#type @ 16, vendor @ 24 });
    pin!(IommuDomainV2Ser, size 32 {
        hdr @ 0, top_table_phys @ 8, top_level @ 16, vasz @ 24, sign_extend @ 28, padding @ 29,
    });
    pin!(IommuDeviceIntelV2Ser, size 16 { pasid_table @ 0, max_pasid @ 8 });
    pin!(IommuDeviceVendorV2Ser, size 24 { intel @ 0, smmuv3 @ 0 });
    pin!(IommuDeviceV2Ser, size 72 {
        hdr @ 0, devid @ 8, pci_domain_nr @ 12, dma_owner_token @ 16, attachment_id @ 24,
        domain_index @ 32, iommu_index @ 40, vendor @ 48,
    });

    const_assert_eq!(IOMMU_FLB_V2_ROOT_MAGIC, u32::from_le_bytes(*b"IFLR"));
    const_assert_eq!(IOMMU_FLB_V2_PAGE_MAGIC, u32::from_le_bytes(*b"IFLP"));
    const_assert_eq!(offset_of!(IommuFlbV2Ser, crc), IOMMU_FLB_V2_ROOT_CRC_OFFSET);
    const_assert_eq!(
        offset_of!(IommuArrayV2HdrSer, crc),
        IOMMU_FLB_V2_PAGE_CRC_OFFSET
    );
    const_assert_eq!(size_of::<IommuArrayV2HdrSer>(), IOMMU_FLB_V2_PAGE_HDR_SIZE);
    // Every record size is a valid stride.
    const_assert_eq!(size_of::<IommuHwV2Ser>() % IOMMU_FLB_V2_STRIDE_ALIGN, 0);
    const_assert_eq!(size_of::<IommuDomainV2Ser>() % IOMMU_FLB_V2_STRIDE_ALIGN, 0);
    const_assert_eq!(size_of::<IommuDeviceV2Ser>() % IOMMU_FLB_V2_STRIDE_ALIGN, 0);
    // Capacities at the natural stride, for the docs and the C macros.
    const_assert_eq!(
        records_per_page(PageSize::Size4K, size_of::<IommuHwV2Ser>()),
        38
    );
    const_assert_eq!(
        records_per_page(PageSize::Size4K, size_of::<IommuDomainV2Ser>()),
        126
    );
    const_assert_eq!(
        records_per_page(PageSize::Size4K, size_of::<IommuDeviceV2Ser>()),
        56
    );
}

/// The version-2 layout of every wire type, frozen in `abi/v2.txt`. The
/// version-1 structs that version 2 embeds are frozen in `abi/v1.txt` and
/// listed there.
pub const LAYOUT: &[StructLayout] = &[
    describe!("struct" IommuFlbV2ChainSer, "iommu_flb_v2_chain_ser" {
        head_phys => "__le64", nr_pages => "__le64", nr_records => "__le64",
    }),
    describe!("struct" IommuFlbV2Ser, "iommu_flb_v2_ser" {
        version => "__le64", magic => "__le32", root_size => "__le32",
        last_compatible_version => "__le32", page_size => "__le32", generation => "__le64",
        compat_features => "__le64", incompat_features => "__le64", crc => "__le32",
        reserved => "__le32", iommus => "struct iommu_flb_v2_chain_ser",
        domains => "struct iommu_flb_v2_chain_ser", devices => "struct iommu_flb_v2_chain_ser",
    }),
    describe!("struct" IommuArrayV2HdrSer, "iommu_array_v2_hdr_ser" {
        blk => "struct iommu_array_hdr_ser", magic => "__le32", chain => "__le16",
        stride => "__le16", index => "__le64", generation => "__le64", crc => "__le32",
        reserved => "__le32",
    }),
    describe!("struct" IommuIntelV2Ser, "iommu_intel_v2_ser" {
        phys_addr => "__le64", root_table => "__le64", context_tables_bitmap => "__le64[8]",
    }),
    describe!("union" IommuHwVendorV2Ser, "iommu_hw_vendor_v2_ser" {
        intel => "struct iommu_intel_v2_ser", smmuv3 => "struct iommu_smmuv3_hw_ser",
    }),
    describe!("struct" IommuHwV2Ser, "iommu_hw_v2_ser" {
        hdr => "struct iommu_hdr_ser", token => "__le64", r#type => "__le64",
        vendor => "union iommu_hw_vendor_v2_ser",
    }),
    describe!("struct" IommuDomainV2Ser, "iommu_domain_v2_ser" {
        hdr => "struct iommu_hdr_ser", top_table_phys => "__le64", top_level => "__le64",
        vasz => "__le32", sign_extend => "uint8_t", padding => "uint8_t[3]",
    }),
    describe!("struct" IommuDeviceIntelV2Ser, "iommu_device_intel_v2_ser" {
        pasid_table => "__le64", max_pasid => "__le64",
    }),
    describe!("union" IommuDeviceVendorV2Ser, "iommu_device_vendor_v2_ser" {
        intel => "struct iommu_device_intel_v2_ser", smmuv3 => "struct iommu_master_smmuv3_ser",
    }),
    describe!("struct" IommuDeviceV2Ser, "iommu_device_v2_ser" {
        hdr => "struct iommu_hdr_ser", devid => "__le32", pci_domain_nr => "__le32",
        dma_owner_token => "__le64", attachment_id => "__le64", domain_index => "__le64",
        iommu_index => "__le64", vendor => "union iommu_device_vendor_v2_ser",
    }),
];
