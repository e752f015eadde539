//! Benchmark (5): the same logical records as an image, serialized with
//! rkyv 0.8 and read back through its validated `access` (bytecheck).
//!
//! The records carry what the FLB records carry for a live object. A device
//! names its domain and IOMMU by the same 64-bit identifiers the FLB image
//! uses (their record addresses), so every visitor folds the same values and
//! all benchmarks agree on one checksum. Deleted FLB records have no rkyv
//! counterpart: rkyv writes a snapshot, not an append-only log.
//!
//! What rkyv's validation checks is structural (every relative pointer and
//! length stays inside the buffer, every enum tag is known, alignment); it
//! does not know that a device's domain must exist, that (segment, devid)
//! is unique, or that an IOMMU's count equals its devices.

use iommu_flb_bench::fold;
use iommu_flb_bench::image::Built;
use iommu_flb_bench::plan;
use rkyv::rancor::Error;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};

/// The whole handover.
#[derive(Archive, Serialize)]
pub struct Image {
    /// Live IOMMUs.
    pub iommus: Vec<Iommu>,
    /// Live domains.
    pub domains: Vec<Domain>,
    /// Live devices.
    pub devices: Vec<Device>,
}

/// One IOMMU unit.
#[derive(Archive, Serialize)]
pub struct Iommu {
    /// Its identifier (devices name it by this).
    pub id: u64,
    /// Number of devices behind it.
    pub ref_count: u32,
    /// MMIO base; with the vendor, identifies the unit.
    pub token: u64,
    /// Vendor state; the variant is the IOMMU type.
    pub vendor: IommuVendor,
}

/// An IOMMU's vendor state.
#[derive(Archive, Serialize)]
pub enum IommuVendor {
    /// Intel VT-d.
    Intel {
        /// MMIO base.
        phys_addr: u64,
        /// Root table.
        root_table: u64,
        /// Preserved context tables.
        context_tables_bitmap: [u64; 8],
    },
    /// ARM SMMUv3.
    Smmuv3 {
        /// MMIO base.
        phys_addr: u64,
        /// STRTAB_BASE_CFG.
        strtab_base_cfg: u64,
        /// Level-1 stream table state.
        l1_strtab_lu_state: u64,
        /// Level-2 stream table states.
        l2_strtab_lu_states_phys: u64,
    },
}

/// One domain.
#[derive(Archive, Serialize)]
pub struct Domain {
    /// Its identifier (devices name it by this).
    pub id: u64,
    /// Top-level page table.
    pub top_table_phys: u64,
    /// Level of the top table.
    pub top_level: u64,
    /// Virtual address size in bits.
    pub vasz: u32,
    /// Sign extension of the input address.
    pub sign_extend: bool,
}

/// One device.
#[derive(Archive, Serialize)]
pub struct Device {
    /// PCI bus << 8 | devfn.
    pub devid: u32,
    /// PCI segment.
    pub segment: u32,
    /// DMA owner token.
    pub dma_owner_token: u64,
    /// VT-d domain ID, or the SMMUv3 ASID or VMID (0 in these plans).
    pub attachment_id: u64,
    /// The [`Domain::id`] it is attached to.
    pub domain: u64,
    /// The [`Iommu::id`] it sits behind.
    pub iommu: u64,
    /// Vendor state.
    pub vendor: DeviceVendor,
}

/// A device's vendor state.
#[derive(Archive, Serialize)]
pub enum DeviceVendor {
    /// Behind an Intel VT-d unit.
    Intel {
        /// PASID table.
        pasid_table: u64,
        /// Number of PASIDs.
        max_pasid: u64,
    },
    /// Behind an SMMUv3.
    Smmuv3 {
        /// Level-1 CD table state.
        l1_cdtab_lu_state: u64,
        /// Number of level-2 CD tables.
        num_l2_cdtables: u32,
        /// Level-2 CD table states.
        l2_cdtab_lu_states_phys: u64,
    },
}

/// The live records of `built`, as rkyv records.
pub fn records(built: &Built) -> Image {
    let p = &built.plan;
    let iommus = p
        .iommus
        .iter()
        .zip(&built.iommu_phys)
        .zip(&built.iommu_refs)
        .map(|((i, id), refs)| Iommu {
            id: id.get(),
            ref_count: *refs,
            token: i.token,
            vendor: match i.vendor {
                plan::IommuVendor::Intel {
                    phys_addr,
                    root_table,
                    context_tables_bitmap,
                } => IommuVendor::Intel {
                    phys_addr,
                    root_table,
                    context_tables_bitmap,
                },
                plan::IommuVendor::Smmuv3 {
                    phys_addr,
                    strtab_base_cfg,
                    l1_strtab_lu_state,
                    l2_strtab_lu_states_phys,
                } => IommuVendor::Smmuv3 {
                    phys_addr,
                    strtab_base_cfg,
                    l1_strtab_lu_state,
                    l2_strtab_lu_states_phys,
                },
            },
        })
        .collect();
    let domains = p
        .domains
        .iter()
        .zip(&built.domain_phys)
        .map(|(d, id)| Domain {
            id: id.get(),
            top_table_phys: d.top_table_phys,
            top_level: d.top_level,
            vasz: d.vasz,
            sign_extend: d.sign_extend,
        })
        .collect();
    let devices = p
        .devices
        .iter()
        .map(|d| Device {
            devid: d.devid,
            segment: d.segment,
            dma_owner_token: d.dma_owner_token,
            attachment_id: d.attachment_id,
            domain: built.domain_phys[d.domain].get(),
            iommu: built.iommu_phys[d.iommu].get(),
            vendor: match d.vendor {
                plan::DeviceVendor::Intel {
                    pasid_table,
                    max_pasid,
                } => DeviceVendor::Intel {
                    pasid_table,
                    max_pasid,
                },
                plan::DeviceVendor::Smmuv3 {
                    l1_cdtab_lu_state,
                    num_l2_cdtables,
                    l2_cdtab_lu_states_phys,
                } => DeviceVendor::Smmuv3 {
                    l1_cdtab_lu_state,
                    num_l2_cdtables,
                    l2_cdtab_lu_states_phys,
                },
            },
        })
        .collect();
    Image {
        iommus,
        domains,
        devices,
    }
}

/// Serializes `image`.
pub fn serialize(image: &Image) -> AlignedVec {
    rkyv::to_bytes::<Error>(image).expect("serializing to memory cannot fail")
}

/// Benchmark (5): validated access, then the visit every benchmark makes.
pub fn access_and_visit(bytes: &[u8]) -> Result<u64, Error> {
    let image = rkyv::access::<ArchivedImage, Error>(bytes)?;
    let mut sum = 0u64;
    for i in image.iommus.iter() {
        let ty = match i.vendor {
            ArchivedIommuVendor::Intel { .. } => 1,
            ArchivedIommuVendor::Smmuv3 { .. } => 2,
        };
        sum = fold::iommu_fields(sum, i.token.to_native(), ty, i.ref_count.to_native());
    }
    for d in image.domains.iter() {
        sum = fold::domain_fields(sum, d.top_table_phys.to_native(), d.vasz.to_native());
    }
    for d in image.devices.iter() {
        sum = fold::device_fields(
            sum,
            d.devid.to_native(),
            d.segment.to_native(),
            d.domain.to_native(),
            d.iommu.to_native(),
        );
    }
    Ok(sum)
}
