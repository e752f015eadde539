//! Version 1: the layout kernel C code writes today.
//!
//! Every type here is `repr(C, packed)`, byte-for-byte the `__packed` struct of the kernel's
//! `include/linux/kho/abi/iommu.h`: alignment 1, no padding the compiler
//! chooses, little-endian integers. Sizes and offsets are pinned below with
//! `static_assertions`, each number taken from the kernel's layout table.
//!
//! The types only describe memory. Reading an image is the reader's job
//! (it validates before anything is trusted); writing one is the writer's.

use core::mem::{align_of, offset_of, size_of};

use static_assertions::{const_assert, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{Le32, Le64, PageSize, StructLayout, describe};

/// IOMMU_LUO_FLB_COMPATIBLE - The FLB compatible string under which LUO hands this blob over.
pub const IOMMU_LUO_FLB_COMPATIBLE: &str = "iommu-liveupdate";

/// IOMMU_LUO_FLB_VERSION - The format version stored in `iommu_flb_ser.version`.
pub const IOMMU_LUO_FLB_VERSION: u64 = 1;

/// IOMMU_SER_FLAG_DELETED - Object flag: the slot was unpreserved (or its preserve failed). Readers
/// skip it; its other fields may be stale.
pub const IOMMU_SER_FLAG_DELETED: u32 = 1 << 0;

/// IOMMU_SER_FLAG_INCOMING - Object flag: set by the *next* kernel once it has adopted the object.
/// Never set in memory that was just handed over.
pub const IOMMU_SER_FLAG_INCOMING: u32 = 1 << 1;

/// IOMMU_SER_FLAGS_KNOWN - Every flag bit version 1 defines; any other bit is corruption.
pub const IOMMU_SER_FLAGS_KNOWN: u32 = IOMMU_SER_FLAG_DELETED | IOMMU_SER_FLAG_INCOMING;

/// IOMMU_ARRAY_HDR_SIZE - Size of `struct iommu_array_hdr_ser`, the header at the start of every array page.
pub const IOMMU_ARRAY_HDR_SIZE: u64 = 16;

/// How many records of `record_size` bytes one array page of size `page`
/// holds: the kernel's `iommu_max_objs_per_page()`,
/// `(PAGE_SIZE - sizeof(struct iommu_array_hdr_ser)) / record_size`.
/// 0 for a zero `record_size`.
pub const fn objects_per_page(page: PageSize, record_size: usize) -> u64 {
    // Lossless: `usize` is at most 64 bits on every target.
    #[allow(clippy::as_conversions)]
    let size = record_size as u64;
    super::records_in_page(page, IOMMU_ARRAY_HDR_SIZE, size)
}

/// How many `struct iommu_hw_ser` records fit in one 4 KiB array page
/// ([`objects_per_page`] gives every page size).
pub const IOMMU_HW_ARRAY_CAPACITY_4K: u64 = 36;

/// How many `struct iommu_domain_ser` records fit in one 4 KiB array page.
pub const IOMMU_DOMAIN_ARRAY_CAPACITY_4K: u64 = 102;

/// How many `struct iommu_device_ser` records fit in one 4 KiB array page.
pub const IOMMU_DEVICE_ARRAY_CAPACITY_4K: u64 = 56;

/// enum iommu_type_ser - The kind of IOMMU an `struct iommu_hw_ser` describes.
///
/// Stored in the 64-bit `iommu_hw_ser.type` field; it selects which member
/// of the vendor unions is meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub enum IommuTypeSer {
    /// @IOMMU_INVALID: No IOMMU; never valid in a live record.
    IommuInvalid = 0,
    /// @IOMMU_INTEL: Intel VT-d.
    IommuIntel = 1,
    /// @IOMMU_ARM_SMMUV3: ARM SMMUv3.
    IommuArmSmmuv3 = 2,
}

impl IommuTypeSer {
    /// The value as stored in `iommu_hw_ser.type`.
    pub const fn wire(self) -> u64 {
        match self {
            IommuTypeSer::IommuInvalid => 0,
            IommuTypeSer::IommuIntel => 1,
            IommuTypeSer::IommuArmSmmuv3 => 2,
        }
    }

    /// Decodes a stored `type`; `None` for values version 1 does not define.
    pub const fn from_wire(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(IommuTypeSer::IommuInvalid),
            1 => Some(IommuTypeSer::IommuIntel),
            2 => Some(IommuTypeSer::IommuArmSmmuv3),
            _ => None,
        }
    }
}

/// struct iommu_flb_ser - The root object: the physical address LUO hands
/// to the next kernel points here. Each `*_phys` field is the head of a chain
/// of array pages.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuFlbSer {
    /// @version: Format version; `IOMMU_LUO_FLB_VERSION` for this layout.
    pub version: Le64,
    /// @iommu_array_phys: Head of the IOMMU chain (`struct iommu_hw_ser` records).
    pub iommu_array_phys: Le64,
    /// @iommu_domain_array_phys: Head of the domain chain (`struct iommu_domain_ser` records).
    pub iommu_domain_array_phys: Le64,
    /// @device_array_phys: Head of the device chain (`struct iommu_device_ser` records).
    pub device_array_phys: Le64,
}

/// struct iommu_array_hdr_ser - The header at the start of every array page.
/// `nr_objects` records follow it back to back.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuArrayHdrSer {
    /// @next_array_phys: Physical address of the next page of the chain, 0 on the last page.
    pub next_array_phys: Le64,
    /// @nr_objects: Records used in this page, deleted ones included.
    pub nr_objects: Le64,
}

/// struct iommu_hdr_ser - The header at the start of every record.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuHdrSer {
    /// @ref_count: 1 for domains and devices; for an IOMMU, the number of live devices
    /// behind it.
    pub ref_count: Le32,
    /// @flags: `IOMMU_SER_FLAG_*` bits.
    pub flags: Le32,
}

/// struct iommu_domain_ser - A preserved IOMMU domain.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuDomainSer {
    /// @hdr: Record header.
    pub hdr: IommuHdrSer,
    /// @top_table_phys: Physical address of the top-level page table (page-aligned, non-zero).
    pub top_table_phys: Le64,
    /// @top_level: Level of the top-level table.
    pub top_level: Le64,
    /// @vasz: Virtual address size in bits (at most 64).
    pub vasz: Le32,
    /// @sign_extend: Whether addresses are sign-extended (0 or 1).
    pub sign_extend: u8,
    /// @padding: Always zero.
    pub padding: [u8; 3],
    /// @restored_domain: Kernel pointer the next kernel stores after restore; 0 at handover.
    pub restored_domain: Le64,
}

/// struct iommu_dev_map_ser - Where a device is attached.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuDevMapSer {
    /// @attachment_id: The attachment's hardware ID: the VT-d domain ID on Intel; the ASID
    /// (stage 1) or VMID (stage 2) on SMMUv3.
    pub attachment_id: Le64,
    /// @domain_phys: Physical address of the device's `struct iommu_domain_ser` record.
    pub domain_phys: Le64,
    /// @iommu_phys: Physical address of the device's `struct iommu_hw_ser` record.
    pub iommu_phys: Le64,
}

/// struct iommu_device_intel_ser - Intel VT-d per-device state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuDeviceIntelSer {
    /// @restored: Set by the next kernel after restore; 0 at handover.
    pub restored: u8,
    /// @padding: Always zero.
    pub padding: [u8; 7],
    /// @pasid_table: Physical address of the PASID table.
    pub pasid_table: Le64,
    /// @max_pasid: Number of PASIDs.
    pub max_pasid: Le64,
}

/// struct iommu_master_smmuv3_ser - ARM SMMUv3 per-master state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuMasterSmmuv3Ser {
    /// @l1_cdtab_lu_state: Live-update state of the level-1 context-descriptor table.
    pub l1_cdtab_lu_state: Le64,
    /// @num_l2_cdtables: Number of level-2 context-descriptor tables.
    pub num_l2_cdtables: Le32,
    /// @padding: Always zero.
    pub padding: Le32,
    /// @l2_cdtab_lu_states_phys: Physical address of the level-2 tables' live-update states.
    pub l2_cdtab_lu_states_phys: Le64,
}

/// union iommu_device_vendor_ser - The vendor part of a device record, chosen by the `type` of the IOMMU
/// the device points to. In the kernel header this union is anonymous;
/// cbindgen cannot emit anonymous unions, so C reaches it as `vendor`.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub union IommuDeviceVendorSer {
    /// @intel: Meaningful when the IOMMU is `IOMMU_INTEL`.
    pub intel: IommuDeviceIntelSer,
    /// @smmuv3: Meaningful when the IOMMU is `IOMMU_ARM_SMMUV3`.
    pub smmuv3: IommuMasterSmmuv3Ser,
}

/// struct iommu_device_ser - A preserved device.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub struct IommuDeviceSer {
    /// @hdr: Record header.
    pub hdr: IommuHdrSer,
    /// @devid: PCI requester ID: bus << 8 | devfn.
    pub devid: Le32,
    /// @pci_domain_nr: PCI segment.
    pub pci_domain_nr: Le32,
    /// @dma_owner_token: Token of the DMA owner (the preserving file).
    pub dma_owner_token: Le64,
    /// @domain_iommu_ser: The domain and IOMMU this device is attached to.
    pub domain_iommu_ser: IommuDevMapSer,
    /// @vendor: Vendor state; see `union iommu_device_vendor_ser`.
    pub vendor: IommuDeviceVendorSer,
}

/// struct iommu_intel_ser - Intel VT-d unit state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuIntelSer {
    /// @restored: Set by the next kernel after restore; 0 at handover.
    pub restored: u8,
    /// @padding: Always zero.
    pub padding: [u8; 7],
    /// @phys_addr: MMIO base of the unit.
    pub phys_addr: Le64,
    /// @root_table: Physical address of the root table.
    pub root_table: Le64,
    /// @context_tables_bitmap: Which context tables are preserved, one bit per bus.
    pub context_tables_bitmap: [Le64; 8],
}

/// struct iommu_smmuv3_hw_ser - ARM SMMUv3 unit state.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned, Clone, Copy, Debug)]
#[repr(C, packed)]
pub struct IommuSmmuv3HwSer {
    /// @phys_addr: MMIO base of the SMMU.
    pub phys_addr: Le64,
    /// @strtab_base_cfg: The STRTAB_BASE_CFG register value.
    pub strtab_base_cfg: Le64,
    /// @l1_strtab_lu_state: Live-update state of the level-1 stream table.
    pub l1_strtab_lu_state: Le64,
    /// @l2_strtab_lu_states_phys: Physical address of the level-2 stream tables' live-update states.
    pub l2_strtab_lu_states_phys: Le64,
}

/// union iommu_hw_vendor_ser - The vendor part of an IOMMU record, chosen by `iommu_hw_ser.type`. In the
/// kernel header this union is anonymous; cbindgen cannot emit anonymous
/// unions, so C reaches it as `vendor`.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub union IommuHwVendorSer {
    /// @intel: Meaningful when `type` is `IOMMU_INTEL`.
    pub intel: IommuIntelSer,
    /// @smmuv3: Meaningful when `type` is `IOMMU_ARM_SMMUV3`.
    pub smmuv3: IommuSmmuv3HwSer,
}

/// struct iommu_hw_ser - A preserved IOMMU unit.
#[derive(FromBytes, Immutable, KnownLayout, Unaligned, Clone, Copy)]
#[repr(C, packed)]
pub struct IommuHwSer {
    /// @hdr: Record header; `ref_count` is the number of live devices behind it.
    pub hdr: IommuHdrSer,
    /// @token: The IOMMU's MMIO base; with `type`, identifies the IOMMU.
    pub token: Le64,
    /// @type: An `enum iommu_type_ser` value.
    pub r#type: Le64,
    /// @vendor: Vendor state; see `union iommu_hw_vendor_ser`.
    pub vendor: IommuHwVendorSer,
}

/// The kernel's layout, pinned at compile time. Every number is from the
/// version-1 table of the spec.
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

    pin!(IommuFlbSer, size 32 {
        version @ 0, iommu_array_phys @ 8, iommu_domain_array_phys @ 16, device_array_phys @ 24,
    });
    pin!(IommuArrayHdrSer, size 16 { next_array_phys @ 0, nr_objects @ 8 });
    pin!(IommuHdrSer, size 8 { ref_count @ 0, flags @ 4 });
    pin!(IommuDomainSer, size 40 {
        hdr @ 0, top_table_phys @ 8, top_level @ 16, vasz @ 24, sign_extend @ 28, padding @ 29,
        restored_domain @ 32,
    });
    pin!(IommuDevMapSer, size 24 { attachment_id @ 0, domain_phys @ 8, iommu_phys @ 16 });
    pin!(IommuDeviceSer, size 72 {
        hdr @ 0, devid @ 8, pci_domain_nr @ 12, dma_owner_token @ 16, domain_iommu_ser @ 24,
        vendor @ 48,
    });
    pin!(IommuDeviceVendorSer, size 24 { intel @ 0, smmuv3 @ 0 });
    pin!(IommuDeviceIntelSer, size 24 { restored @ 0, padding @ 1, pasid_table @ 8, max_pasid @ 16 });
    pin!(IommuMasterSmmuv3Ser, size 24 {
        l1_cdtab_lu_state @ 0, num_l2_cdtables @ 8, padding @ 12, l2_cdtab_lu_states_phys @ 16,
    });
    pin!(IommuHwSer, size 112 { hdr @ 0, token @ 8, r#type @ 16, vendor @ 24 });
    pin!(IommuHwVendorSer, size 88 { intel @ 0, smmuv3 @ 0 });
    pin!(IommuIntelSer, size 88 {
        restored @ 0, padding @ 1, phys_addr @ 8, root_table @ 16, context_tables_bitmap @ 24,
    });
    pin!(IommuSmmuv3HwSer, size 32 {
        phys_addr @ 0, strtab_base_cfg @ 8, l1_strtab_lu_state @ 16, l2_strtab_lu_states_phys @ 24,
    });

    const_assert_eq!(size_of::<IommuArrayHdrSer>() as u64, IOMMU_ARRAY_HDR_SIZE);
    const_assert_eq!(
        IOMMU_HW_ARRAY_CAPACITY_4K,
        objects_per_page(PageSize::Size4K, size_of::<IommuHwSer>())
    );
    const_assert_eq!(
        IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
        objects_per_page(PageSize::Size4K, size_of::<IommuDomainSer>())
    );
    const_assert_eq!(
        IOMMU_DEVICE_ARRAY_CAPACITY_4K,
        objects_per_page(PageSize::Size4K, size_of::<IommuDeviceSer>())
    );
    // The kernel's formula at the larger page sizes (arm64 16 and 64 KiB).
    const_assert_eq!(
        objects_per_page(PageSize::Size16K, size_of::<IommuHwSer>()),
        146
    );
    const_assert_eq!(
        objects_per_page(PageSize::Size16K, size_of::<IommuDomainSer>()),
        409
    );
    const_assert_eq!(
        objects_per_page(PageSize::Size16K, size_of::<IommuDeviceSer>()),
        227
    );
    const_assert_eq!(
        objects_per_page(PageSize::Size64K, size_of::<IommuHwSer>()),
        585
    );
    const_assert_eq!(
        objects_per_page(PageSize::Size64K, size_of::<IommuDomainSer>()),
        1638
    );
    const_assert_eq!(
        objects_per_page(PageSize::Size64K, size_of::<IommuDeviceSer>()),
        910
    );
    // The union members the kernel stores must fit their unions exactly or below.
    const_assert!(size_of::<IommuSmmuv3HwSer>() <= size_of::<IommuHwVendorSer>());
}

/// The version-1 layout of every wire type, frozen in `abi/v1.txt`.
pub const LAYOUT: &[StructLayout] = &[
    describe!("struct" IommuFlbSer, "iommu_flb_ser" {
        version => "__le64", iommu_array_phys => "__le64",
        iommu_domain_array_phys => "__le64", device_array_phys => "__le64",
    }),
    describe!("struct" IommuArrayHdrSer, "iommu_array_hdr_ser" {
        next_array_phys => "__le64", nr_objects => "__le64",
    }),
    describe!("struct" IommuHdrSer, "iommu_hdr_ser" { ref_count => "__le32", flags => "__le32" }),
    describe!("struct" IommuDomainSer, "iommu_domain_ser" {
        hdr => "struct iommu_hdr_ser", top_table_phys => "__le64", top_level => "__le64",
        vasz => "__le32", sign_extend => "uint8_t", padding => "uint8_t[3]",
        restored_domain => "__le64",
    }),
    describe!("struct" IommuDevMapSer, "iommu_dev_map_ser" {
        attachment_id => "__le64", domain_phys => "__le64", iommu_phys => "__le64",
    }),
    describe!("struct" IommuDeviceSer, "iommu_device_ser" {
        hdr => "struct iommu_hdr_ser", devid => "__le32", pci_domain_nr => "__le32",
        dma_owner_token => "__le64", domain_iommu_ser => "struct iommu_dev_map_ser",
        vendor => "union iommu_device_vendor_ser",
    }),
    describe!("union" IommuDeviceVendorSer, "iommu_device_vendor_ser" {
        intel => "struct iommu_device_intel_ser", smmuv3 => "struct iommu_master_smmuv3_ser",
    }),
    describe!("struct" IommuDeviceIntelSer, "iommu_device_intel_ser" {
        restored => "uint8_t", padding => "uint8_t[7]", pasid_table => "__le64",
        max_pasid => "__le64",
    }),
    describe!("struct" IommuMasterSmmuv3Ser, "iommu_master_smmuv3_ser" {
        l1_cdtab_lu_state => "__le64", num_l2_cdtables => "__le32", padding => "__le32",
        l2_cdtab_lu_states_phys => "__le64",
    }),
    describe!("struct" IommuHwSer, "iommu_hw_ser" {
        hdr => "struct iommu_hdr_ser", token => "__le64", r#type => "__le64",
        vendor => "union iommu_hw_vendor_ser",
    }),
    describe!("union" IommuHwVendorSer, "iommu_hw_vendor_ser" {
        intel => "struct iommu_intel_ser", smmuv3 => "struct iommu_smmuv3_hw_ser",
    }),
    describe!("struct" IommuIntelSer, "iommu_intel_ser" {
        restored => "uint8_t", padding => "uint8_t[7]", phys_addr => "__le64",
        root_table => "__le64", context_tables_bitmap => "__le64[8]",
    }),
    describe!("struct" IommuSmmuv3HwSer, "iommu_smmuv3_hw_ser" {
        phys_addr => "__le64", strtab_base_cfg => "__le64", l1_strtab_lu_state => "__le64",
        l2_strtab_lu_states_phys => "__le64",
    }),
];
