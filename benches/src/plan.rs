//! The benchmark images: what is preserved, independent of how it is
//! written. The FLB image is built from a [`Plan`] by the writer
//! ([`crate::image`]); the rkyv image of benchmark (5) from the same plan.
//!
//! The shapes are the issue's: (a) 64K devices, 64K domains, 64 IOMMUs and
//! (b) 1M devices, 64K domains, 256 IOMMUs. Devices are numbered as PCI
//! enumeration numbers them (segment = device / 65536, devid = device % 65536)
//! and sit behind IOMMUs in contiguous ranges, as each IOMMU covers a range of
//! buses; device `i` is attached to domain `i % domains`. IOMMUs alternate
//! between Intel VT-d and SMMUv3 so both vendor paths are exercised. Churn:
//! one device and one domain in every [`CHURN`] is preceded by a ghost that
//! is preserved and then unpreserved, so 1/64 of the records are DELETED
//! slots, as hot-unplug leaves them.

/// One ghost (a preserved-then-unpreserved record) per this many live records.
pub const CHURN: usize = 64;

/// The size of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Short name, used as the benchmark group name.
    pub name: &'static str,
    /// Live IOMMUs.
    pub iommus: usize,
    /// Live domains.
    pub domains: usize,
    /// Live devices.
    pub devices: usize,
}

/// Image (a): 64K devices, 64K domains, 64 IOMMUs.
pub const IMAGE_A: Shape = Shape {
    name: "a_64k_devices",
    iommus: 64,
    domains: 1 << 16,
    devices: 1 << 16,
};

/// Image (b): 1M devices, 64K domains, 256 IOMMUs.
pub const IMAGE_B: Shape = Shape {
    name: "b_1m_devices",
    iommus: 256,
    domains: 1 << 16,
    devices: 1 << 20,
};

impl Shape {
    /// Live objects of all three kinds.
    pub const fn live_objects(&self) -> usize {
        self.iommus + self.domains + self.devices
    }

    /// Record slots, live and deleted, of (IOMMUs, domains, devices).
    pub const fn slots(&self) -> (usize, usize, usize) {
        (
            self.iommus,
            self.domains + self.domains / CHURN,
            self.devices + self.devices / CHURN,
        )
    }
}

/// An IOMMU's vendor state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// One IOMMU to preserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuPlan {
    /// MMIO base (the `token`).
    pub token: u64,
    /// Vendor state; the variant is the type.
    pub vendor: IommuVendor,
}

/// One domain to preserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainPlan {
    /// Top-level page table (page-aligned, non-zero).
    pub top_table_phys: u64,
    /// Level of the top table.
    pub top_level: u64,
    /// Virtual address size in bits.
    pub vasz: u32,
    /// Sign extension.
    pub sign_extend: bool,
}

/// A device's vendor state; the variant matches its IOMMU's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceVendor {
    /// Behind Intel VT-d.
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

/// One device to preserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// PCI segment.
    pub segment: u32,
    /// bus << 8 | devfn.
    pub devid: u32,
    /// DMA owner token.
    pub dma_owner_token: u64,
    /// VT-d domain ID; the plan writes 0 behind an SMMUv3 (where the kernel
    /// stores the ASID or VMID).
    pub attachment_id: u64,
    /// Index into [`Plan::domains`].
    pub domain: usize,
    /// Index into [`Plan::iommus`].
    pub iommu: usize,
    /// Vendor state.
    pub vendor: DeviceVendor,
}

/// Everything preserved in one image, live records only (ghosts are
/// derived from them while writing, see [`CHURN`]).
#[derive(Clone, Debug)]
pub struct Plan {
    /// The shape it was made for.
    pub shape: Shape,
    /// IOMMUs, in preserve order.
    pub iommus: Vec<IommuPlan>,
    /// Domains, in preserve order.
    pub domains: Vec<DomainPlan>,
    /// Devices, in preserve order.
    pub devices: Vec<DevicePlan>,
}

/// Page-aligned addresses for tables the records point at (never read).
const TABLES: u64 = 0x40_0000_0000;

/// u64 from usize; every index here is far below 2^64.
fn wide(i: usize) -> u64 {
    u64::try_from(i).expect("index fits u64")
}

fn narrow(i: usize) -> u32 {
    u32::try_from(i).expect("index fits u32")
}

impl Plan {
    /// The plan for `shape`.
    pub fn new(shape: Shape) -> Plan {
        let iommus = (0..shape.iommus)
            .map(|k| {
                let mmio = 0xfe00_0000 + wide(k) * 0x1000;
                let vendor = if k % 2 == 0 {
                    IommuVendor::Intel {
                        phys_addr: mmio,
                        root_table: TABLES + wide(k) * 0x1000,
                        context_tables_bitmap: [!0; 8],
                    }
                } else {
                    IommuVendor::Smmuv3 {
                        phys_addr: mmio,
                        strtab_base_cfg: 0x0b_0010,
                        l1_strtab_lu_state: TABLES + wide(k) * 0x1000,
                        l2_strtab_lu_states_phys: TABLES + 0x1_0000_0000 + wide(k) * 0x1000,
                    }
                };
                IommuPlan {
                    token: mmio,
                    vendor,
                }
            })
            .collect();
        let domains = (0..shape.domains)
            .map(|j| DomainPlan {
                top_table_phys: TABLES + 0x2_0000_0000 + wide(j) * 0x1000,
                top_level: 4,
                vasz: 48,
                sign_extend: j % 2 == 1,
            })
            .collect::<Vec<_>>();
        let devices = (0..shape.devices)
            .map(|i| {
                let iommu = i * shape.iommus / shape.devices;
                let domain = i % shape.domains;
                let (attachment_id, vendor) = if iommu % 2 == 0 {
                    (
                        wide(domain % 0xffff) + 1,
                        DeviceVendor::Intel {
                            pasid_table: TABLES + 0x3_0000_0000 + wide(i) * 0x1000,
                            max_pasid: 1 << 20,
                        },
                    )
                } else {
                    (
                        0,
                        DeviceVendor::Smmuv3 {
                            l1_cdtab_lu_state: TABLES + 0x5_0000_0000 + wide(i) * 0x1000,
                            num_l2_cdtables: 1,
                            l2_cdtab_lu_states_phys: TABLES + 0x7_0000_0000 + wide(i) * 0x1000,
                        },
                    )
                };
                DevicePlan {
                    segment: narrow(i >> 16),
                    devid: narrow(i & 0xffff),
                    dma_owner_token: 0xffff_8880_0000_0000 + wide(i) * 0x40,
                    attachment_id,
                    domain,
                    iommu,
                    vendor,
                }
            })
            .collect();
        Plan {
            shape,
            iommus,
            domains,
            devices,
        }
    }

    /// The ghost preserved and unpreserved just before live device `i`, if
    /// any: the same device in a segment no live device uses.
    pub fn ghost_device(&self, i: usize) -> Option<DevicePlan> {
        let d = self.devices.get(i)?;
        (i % CHURN == CHURN - 1).then(|| DevicePlan {
            segment: d.segment + 0x8000,
            ..*d
        })
    }

    /// The ghost preserved and unpreserved just before live domain `j`.
    pub fn ghost_domain(&self, j: usize) -> Option<DomainPlan> {
        let d = self.domains.get(j)?;
        (j % CHURN == CHURN - 1).then_some(*d)
    }
}
