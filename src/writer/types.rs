//! What the caller passes in (the `*Init` parameters) and gets back (the
//! typed handles).

use crate::PhysAddr;
use crate::abi::v1::IommuTypeSer;

/// Identifies one [`Writer`](super::Writer), so a handle from another writer
/// is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WriterId(pub(crate) u32);

macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Only the writer creates handles; it refuses one another writer
        /// created with [`WriteError::ForeignHandle`](super::WriteError::ForeignHandle).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name {
            phys: PhysAddr,
            writer: WriterId,
        }

        impl $name {
            pub(crate) const fn new(phys: PhysAddr, writer: WriterId) -> Self {
                $name { phys, writer }
            }

            pub(crate) const fn writer(self) -> WriterId {
                self.writer
            }

            /// The physical address of the object's record in the image
            /// (what a version-1 device's `domain_phys` / `iommu_phys`
            /// stores; a version-2 device stores the record's index).
            pub const fn phys(self) -> PhysAddr {
                self.phys
            }
        }
    };
}

handle!(
    /// A preserved IOMMU (`struct iommu_hw_ser` record).
    IommuHandle
);
handle!(
    /// A preserved domain (`struct iommu_domain_ser` record).
    DomainHandle
);
handle!(
    /// A preserved device (`struct iommu_device_ser` record).
    DeviceHandle
);

/// Intel VT-d unit state (the fields of `struct iommu_intel_ser` the
/// outgoing kernel writes; `restored` is the next kernel's and stays 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntelIommuInit {
    /// MMIO base of the unit.
    pub phys_addr: PhysAddr,
    /// Physical address of the root table.
    pub root_table: PhysAddr,
    /// Which context tables are preserved, one bit per bus.
    pub context_tables_bitmap: [u64; 8],
}

/// ARM SMMUv3 unit state (`struct iommu_smmuv3_hw_ser`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Smmuv3IommuInit {
    /// MMIO base of the SMMU.
    pub phys_addr: PhysAddr,
    /// The STRTAB_BASE_CFG register value.
    pub strtab_base_cfg: u64,
    /// Live-update state of the level-1 stream table.
    pub l1_strtab_lu_state: u64,
    /// Physical address of the level-2 stream tables' live-update states.
    pub l2_strtab_lu_states_phys: PhysAddr,
}

/// An IOMMU's vendor payload; the variant sets the record's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuPayloadInit {
    /// `IOMMU_INTEL`.
    Intel(IntelIommuInit),
    /// `IOMMU_ARM_SMMUV3`.
    Smmuv3(Smmuv3IommuInit),
}

impl IommuPayloadInit {
    /// The IOMMU type this payload is for.
    pub const fn iommu_type(&self) -> IommuTypeSer {
        match self {
            IommuPayloadInit::Intel(_) => IommuTypeSer::IommuIntel,
            IommuPayloadInit::Smmuv3(_) => IommuTypeSer::IommuArmSmmuv3,
        }
    }
}

/// A domain to preserve (`struct iommu_domain_ser` without its header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DomainInit {
    /// Physical address of the top-level page table: non-zero, page-aligned.
    pub top_table_phys: PhysAddr,
    /// Level of the top-level table.
    pub top_level: u64,
    /// Virtual address size in bits, at most 64.
    pub vasz: u32,
    /// 0 or 1.
    pub sign_extend: u8,
}

/// Intel VT-d per-device state (`struct iommu_device_intel_ser`;
/// `restored` stays 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntelDeviceInit {
    /// Physical address of the PASID table.
    pub pasid_table: PhysAddr,
    /// Number of PASIDs.
    pub max_pasid: u64,
}

/// ARM SMMUv3 per-master state (`struct iommu_master_smmuv3_ser`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Smmuv3DeviceInit {
    /// Live-update state of the level-1 context-descriptor table.
    pub l1_cdtab_lu_state: u64,
    /// Number of level-2 context-descriptor tables.
    pub num_l2_cdtables: u32,
    /// Physical address of the level-2 tables' live-update states.
    pub l2_cdtab_lu_states_phys: PhysAddr,
}

/// A device's vendor payload; it must match its IOMMU's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DevicePayloadInit {
    /// Behind an `IOMMU_INTEL`.
    Intel(IntelDeviceInit),
    /// Behind an `IOMMU_ARM_SMMUV3`.
    Smmuv3(Smmuv3DeviceInit),
}

impl DevicePayloadInit {
    /// The IOMMU type this payload is for.
    pub const fn iommu_type(&self) -> IommuTypeSer {
        match self {
            DevicePayloadInit::Intel(_) => IommuTypeSer::IommuIntel,
            DevicePayloadInit::Smmuv3(_) => IommuTypeSer::IommuArmSmmuv3,
        }
    }
}

/// A device to preserve (`struct iommu_device_ser` without its header and
/// without the addresses, which come from the handles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceInit {
    /// PCI segment.
    pub pci_domain_nr: u32,
    /// PCI requester ID: bus << 8 | devfn.
    pub devid: u32,
    /// Token of the DMA owner (the preserving file).
    pub dma_owner_token: u64,
    /// The hardware ID of the attachment: the VT-d domain ID on Intel; the
    /// ASID (stage 1) or VMID (stage 2) behind an SMMUv3.
    pub attachment_id: u64,
    /// Vendor state.
    pub payload: DevicePayloadInit,
}

/// The key under which devices are unique: (PCI segment, devid) as one
/// `u64`, segment in the high half, so keys sort by segment, then devid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceKey(u64);

impl DeviceKey {
    /// The key of a device.
    pub const fn new(pci_domain_nr: u32, devid: u32) -> Self {
        // Lossless widening; `u64::from` is not const.
        #[allow(clippy::as_conversions)]
        let k = ((pci_domain_nr as u64) << 32) | devid as u64;
        DeviceKey(k)
    }

    /// The key as one number.
    pub const fn get(self) -> u64 {
        self.0
    }
}
