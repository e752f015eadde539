//! [`Visited`], what a `reader::Visitor` was handed, shared by the test
//! helpers of both versions (`common`, `v2_support`).

use iommu_flb_abi::Memory;
use iommu_flb_abi::PhysAddr;
use iommu_flb_abi::reader::{DeviceRecord, Domain, Image, Iommu, Visitor};

/// Every live record a [`Visitor`] was handed, in order, as the visiting
/// tests compare them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Visited {
    /// The kind of each record handed over, in the order it was: `i`,
    /// `d` or `v` (device).
    pub kinds: String,
    pub iommus: Vec<(PhysAddr, u64)>,
    pub domains: Vec<(PhysAddr, PhysAddr)>,
    pub devices: Vec<(PhysAddr, u32, u32)>,
}

impl<'m> Visitor<'m> for Visited {
    fn iommu(&mut self, iommu: Iommu<'m>) {
        self.kinds.push('i');
        self.iommus.push((iommu.phys(), iommu.token()));
    }

    fn domain(&mut self, domain: Domain<'m>) {
        self.kinds.push('d');
        self.domains.push((domain.phys(), domain.top_table_phys()));
    }

    fn device(&mut self, d: DeviceRecord<'m>) {
        self.kinds.push('v');
        self.devices.push((d.phys(), d.segment(), d.devid()));
    }
}

impl Visited {
    /// What the image's iterators yield, in the order a visitor is
    /// handed the records: every IOMMU, then every domain, then every
    /// device.
    pub fn of<M: Memory>(image: &Image<'_, '_, M>) -> Visited {
        let iommus: Vec<_> = image.iommus().map(|m| (m.phys(), m.token())).collect();
        let domains: Vec<_> = image
            .domains()
            .map(|d| (d.phys(), d.top_table_phys()))
            .collect();
        let devices: Vec<_> = image
            .device_records()
            .map(|d| (d.phys(), d.segment(), d.devid()))
            .collect();
        let kinds = [
            "i".repeat(iommus.len()),
            "d".repeat(domains.len()),
            "v".repeat(devices.len()),
        ];
        Visited {
            kinds: kinds.concat(),
            iommus,
            domains,
            devices,
        }
    }
}
