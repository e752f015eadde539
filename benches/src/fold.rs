//! What "visiting" a live record means in every benchmark: the fields the
//! kernel's walk (`kernel_walk.c`) folds into its checksum, folded the same
//! way, so that all readers load the same bytes and must agree on the sum.

use iommu_flb_abi::abi::v1::{IommuDeviceSer, IommuDomainSer, IommuHwSer};

/// An IOMMU: `token ^ type ^ ref_count`.
#[inline]
pub fn iommu(sum: u64, o: &IommuHwSer) -> u64 {
    iommu_fields(sum, o.token.get(), o.r#type.get(), o.hdr.ref_count.get())
}

/// A domain: `top_table_phys ^ vasz`.
#[inline]
pub fn domain(sum: u64, o: &IommuDomainSer) -> u64 {
    domain_fields(sum, o.top_table_phys.get(), o.vasz.get())
}

/// A device: `devid ^ pci_domain_nr ^ domain_phys ^ iommu_phys`.
#[inline]
pub fn device(sum: u64, o: &IommuDeviceSer) -> u64 {
    device_fields(
        sum,
        o.devid.get(),
        o.pci_domain_nr.get(),
        o.domain_iommu_ser.domain_phys.get(),
        o.domain_iommu_ser.iommu_phys.get(),
    )
}

/// [`iommu`] from the field values.
#[inline]
pub fn iommu_fields(sum: u64, token: u64, ty: u64, ref_count: u32) -> u64 {
    sum.wrapping_add(token ^ ty ^ u64::from(ref_count))
}

/// [`domain`] from the field values.
#[inline]
pub fn domain_fields(sum: u64, top_table_phys: u64, vasz: u32) -> u64 {
    sum.wrapping_add(top_table_phys ^ u64::from(vasz))
}

/// [`device`] from the field values.
#[inline]
pub fn device_fields(sum: u64, devid: u32, segment: u32, domain_phys: u64, iommu_phys: u64) -> u64 {
    sum.wrapping_add(u64::from(devid ^ segment) ^ domain_phys ^ iommu_phys)
}
