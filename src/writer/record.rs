//! Records as bytes: every byte of a record is put at the offset
//! `core::mem::offset_of!` gives for its field, so a record never depends on
//! what its slot held before. The records whose vendor unions keep them
//! from being `IntoBytes` (`iommu_hw_ser`, `iommu_device_ser`) are put field
//! by field, the union through the member its type picks.
//!
//! The writer builds every record it writes in a buffer of its own first
//! (where any of these steps may fail with the image untouched), and copies
//! the finished bytes into the image in one assignment.

use core::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::WriteError;
use super::types::{
    DeviceInit, DevicePayloadInit, DomainInit, IommuPayloadInit, Smmuv3DeviceInit, Smmuv3IommuInit,
};
use crate::PhysAddr;
use crate::abi::v1::{
    IommuDevMapSer, IommuDeviceIntelSer, IommuDeviceSer, IommuHdrSer, IommuHwSer, IommuIntelSer,
    IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
};
use crate::abi::v2::{
    IommuDeviceIntelV2Ser, IommuDeviceV2Ser, IommuDomainV2Ser, IommuHwV2Ser, IommuIntelV2Ser,
};
use crate::abi::{Le32, Le64};

/// One record's bytes (`&[u8]` to read a record in the image, a mutable
/// buffer to build one) and where the record is.
pub(crate) struct Rec<B> {
    pub(crate) phys: PhysAddr,
    pub(crate) bytes: B,
}

fn truncated(phys: PhysAddr) -> WriteError {
    WriteError::Inconsistent {
        phys,
        what: "record does not fit its page",
    }
}

impl<B: AsRef<[u8]>> Rec<B> {
    fn get<T: FromBytes>(&self, offset: usize) -> Result<T, WriteError> {
        let src = self
            .bytes
            .as_ref()
            .get(offset..)
            .ok_or(truncated(self.phys))?;
        T::read_from_prefix(src)
            .map(|(v, _)| v)
            .map_err(|_| truncated(self.phys))
    }

    /// The record header (every record starts with one).
    pub(crate) fn hdr(&self) -> Result<IommuHdrSer, WriteError> {
        self.get(0)
    }

    /// An IOMMU record's (token, raw type).
    pub(crate) fn iommu_key(&self) -> Result<(u64, u64), WriteError> {
        let token: Le64 = self.get(offset_of!(IommuHwSer, token))?;
        let ty: Le64 = self.get(offset_of!(IommuHwSer, r#type))?;
        Ok((token.get(), ty.get()))
    }

    /// A device record's (segment, devid, domain reference, IOMMU
    /// reference): `domain_phys` and `iommu_phys` in version 1,
    /// `domain_index` and `iommu_index` in version 2 (at the same offsets).
    pub(crate) fn device_fields(&self) -> Result<(u32, u32, u64, u64), WriteError> {
        let devid: Le32 = self.get(offset_of!(IommuDeviceSer, devid))?;
        let seg: Le32 = self.get(offset_of!(IommuDeviceSer, pci_domain_nr))?;
        let map: IommuDevMapSer = self.get(offset_of!(IommuDeviceSer, domain_iommu_ser))?;
        Ok((
            seg.get(),
            devid.get(),
            map.domain_phys.get(),
            map.iommu_phys.get(),
        ))
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Rec<B> {
    fn put<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: &T,
    ) -> Result<(), WriteError> {
        let dst = self
            .bytes
            .as_mut()
            .get_mut(offset..)
            .ok_or(truncated(self.phys))?;
        value.write_to_prefix(dst).map_err(|_| truncated(self.phys))
    }

    /// Rewrites the record header.
    pub(crate) fn set_hdr(&mut self, ref_count: u32, flags: u32) -> Result<(), WriteError> {
        self.put(
            0,
            &IommuHdrSer {
                ref_count: ref_count.into(),
                flags: flags.into(),
            },
        )
    }

    fn zero(&mut self, size: usize) -> Result<(), WriteError> {
        self.bytes
            .as_mut()
            .get_mut(..size)
            .ok_or(truncated(self.phys))?
            .fill(0);
        Ok(())
    }

    /// Writes a whole domain record of either version: version 2's
    /// `iommu_domain_v2_ser` is version 1's `iommu_domain_ser` without its
    /// last field (pinned below), and the bytes after it (version 1's
    /// `restored_domain`, the next kernel's) are zero.
    pub(crate) fn write_domain(
        &mut self,
        d: &DomainInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        self.zero(self.bytes.as_ref().len())?;
        self.put(
            0,
            &IommuDomainV2Ser {
                hdr,
                top_table_phys: d.top_table_phys.get().into(),
                top_level: d.top_level.into(),
                vasz: d.vasz.into(),
                sign_extend: d.sign_extend,
                padding: [0; 3],
            },
        )
    }

    /// Zeroes an IOMMU record of `size` bytes and writes the fields both
    /// versions share at the offsets both have (pinned below): header,
    /// token, type. Returns where the vendor union starts.
    fn write_iommu_common(
        &mut self,
        size: usize,
        token: u64,
        payload: &IommuPayloadInit,
        hdr: IommuHdrSer,
    ) -> Result<usize, WriteError> {
        self.zero(size)?;
        self.put(offset_of!(IommuHwV2Ser, hdr), &hdr)?;
        self.put(offset_of!(IommuHwV2Ser, token), &Le64::new(token))?;
        let ty = payload.iommu_type().wire();
        self.put(offset_of!(IommuHwV2Ser, r#type), &Le64::new(ty))?;
        Ok(offset_of!(IommuHwV2Ser, vendor))
    }

    /// Writes a whole `iommu_hw_ser`; the union bytes the payload does not
    /// cover are zero.
    pub(crate) fn write_iommu(
        &mut self,
        token: u64,
        payload: &IommuPayloadInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        let at = self.write_iommu_common(size_of::<IommuHwSer>(), token, payload, hdr)?;
        match payload {
            IommuPayloadInit::Intel(p) => self.put(
                at,
                &IommuIntelSer {
                    restored: 0,
                    padding: [0; 7],
                    phys_addr: p.phys_addr.get().into(),
                    root_table: p.root_table.get().into(),
                    context_tables_bitmap: p.context_tables_bitmap.map(Le64::new),
                },
            ),
            IommuPayloadInit::Smmuv3(p) => self.put(at, &smmuv3_hw(p)),
        }
    }

    /// Overwrites an IOMMU record's type (used to mark an unpreserved slot).
    pub(crate) fn set_iommu_type(&mut self, ty: IommuTypeSer) -> Result<(), WriteError> {
        self.put(offset_of!(IommuHwSer, r#type), &Le64::new(ty.wire()))
    }

    /// Writes the fields version 1's `iommu_device_ser` and version 2's
    /// `iommu_device_v2_ser` share, at the offsets both have (pinned
    /// below): the header, the device's identity, its attachment, and the
    /// references to its domain and IOMMU (addresses in version 1, indexes
    /// in version 2). The record's other `size - 48` bytes, its vendor
    /// union, are zero.
    fn write_device_common(
        &mut self,
        size: usize,
        d: &DeviceInit,
        domain: u64,
        iommu: u64,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        self.zero(size)?;
        self.put(offset_of!(IommuDeviceV2Ser, hdr), &hdr)?;
        self.put(offset_of!(IommuDeviceV2Ser, devid), &Le32::new(d.devid))?;
        self.put(
            offset_of!(IommuDeviceV2Ser, pci_domain_nr),
            &Le32::new(d.pci_domain_nr),
        )?;
        self.put(
            offset_of!(IommuDeviceV2Ser, dma_owner_token),
            &Le64::new(d.dma_owner_token),
        )?;
        self.put(
            offset_of!(IommuDeviceV2Ser, attachment_id),
            &Le64::new(d.attachment_id),
        )?;
        self.put(
            offset_of!(IommuDeviceV2Ser, domain_index),
            &Le64::new(domain),
        )?;
        self.put(offset_of!(IommuDeviceV2Ser, iommu_index), &Le64::new(iommu))
    }

    /// Writes a whole `iommu_device_ser`; the union bytes the payload does
    /// not cover are zero.
    pub(crate) fn write_device(
        &mut self,
        d: &DeviceInit,
        domain: PhysAddr,
        iommu: PhysAddr,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        let size = size_of::<IommuDeviceSer>();
        self.write_device_common(size, d, domain.get(), iommu.get(), hdr)?;
        let at = offset_of!(IommuDeviceSer, vendor);
        match &d.payload {
            DevicePayloadInit::Intel(p) => self.put(
                at,
                &IommuDeviceIntelSer {
                    restored: 0,
                    padding: [0; 7],
                    pasid_table: p.pasid_table.get().into(),
                    max_pasid: p.max_pasid.into(),
                },
            ),
            DevicePayloadInit::Smmuv3(p) => self.put(at, &smmuv3_master(p)),
        }
    }

    /// Writes a whole `iommu_hw_v2_ser`; the union bytes the payload does
    /// not cover are zero.
    pub(crate) fn write_iommu_v2(
        &mut self,
        token: u64,
        payload: &IommuPayloadInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        let at = self.write_iommu_common(size_of::<IommuHwV2Ser>(), token, payload, hdr)?;
        match payload {
            IommuPayloadInit::Intel(p) => self.put(
                at,
                &IommuIntelV2Ser {
                    phys_addr: p.phys_addr.get().into(),
                    root_table: p.root_table.get().into(),
                    context_tables_bitmap: p.context_tables_bitmap.map(Le64::new),
                },
            ),
            IommuPayloadInit::Smmuv3(p) => self.put(at, &smmuv3_hw(p)),
        }
    }

    /// Writes a whole `iommu_device_v2_ser` naming its domain and IOMMU by
    /// index; the union bytes the payload does not cover are zero.
    pub(crate) fn write_device_v2(
        &mut self,
        d: &DeviceInit,
        domain_index: u64,
        iommu_index: u64,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        let size = size_of::<IommuDeviceV2Ser>();
        self.write_device_common(size, d, domain_index, iommu_index, hdr)?;
        let at = offset_of!(IommuDeviceV2Ser, vendor);
        match &d.payload {
            DevicePayloadInit::Intel(p) => self.put(
                at,
                &IommuDeviceIntelV2Ser {
                    pasid_table: p.pasid_table.get().into(),
                    max_pasid: p.max_pasid.into(),
                },
            ),
            DevicePayloadInit::Smmuv3(p) => self.put(at, &smmuv3_master(p)),
        }
    }
}

/// The SMMUv3 unit state both versions store (`iommu_smmuv3_hw_ser`).
fn smmuv3_hw(p: &Smmuv3IommuInit) -> IommuSmmuv3HwSer {
    IommuSmmuv3HwSer {
        phys_addr: p.phys_addr.get().into(),
        strtab_base_cfg: p.strtab_base_cfg.into(),
        l1_strtab_lu_state: p.l1_strtab_lu_state.into(),
        l2_strtab_lu_states_phys: p.l2_strtab_lu_states_phys.get().into(),
    }
}

/// The SMMUv3 master state both versions store (`iommu_master_smmuv3_ser`).
fn smmuv3_master(p: &Smmuv3DeviceInit) -> IommuMasterSmmuv3Ser {
    IommuMasterSmmuv3Ser {
        l1_cdtab_lu_state: p.l1_cdtab_lu_state.into(),
        num_l2_cdtables: p.num_l2_cdtables.into(),
        padding: 0.into(),
        l2_cdtab_lu_states_phys: p.l2_cdtab_lu_states_phys.get().into(),
    }
}

// The fields `write_domain`, `write_iommu_common` and `write_device_common`
// put are where version 1 has them too.
#[allow(clippy::arithmetic_side_effects)] // Constant expressions only.
mod pinned {
    use core::mem::{offset_of, size_of};

    use static_assertions::const_assert_eq;

    use crate::abi::v1::{IommuDevMapSer, IommuDeviceSer, IommuDomainSer, IommuHwSer};
    use crate::abi::v2::{IommuDeviceV2Ser, IommuDomainV2Ser, IommuHwV2Ser};

    const_assert_eq!(
        offset_of!(IommuDomainSer, restored_domain),
        size_of::<IommuDomainV2Ser>()
    );
    const_assert_eq!(
        offset_of!(IommuDomainSer, top_table_phys),
        offset_of!(IommuDomainV2Ser, top_table_phys)
    );
    const_assert_eq!(
        offset_of!(IommuDomainSer, top_level),
        offset_of!(IommuDomainV2Ser, top_level)
    );
    const_assert_eq!(
        offset_of!(IommuDomainSer, vasz),
        offset_of!(IommuDomainV2Ser, vasz)
    );
    const_assert_eq!(
        offset_of!(IommuDomainSer, sign_extend),
        offset_of!(IommuDomainV2Ser, sign_extend)
    );
    const_assert_eq!(
        offset_of!(IommuDomainSer, padding),
        offset_of!(IommuDomainV2Ser, padding)
    );
    const_assert_eq!(offset_of!(IommuHwSer, hdr), offset_of!(IommuHwV2Ser, hdr));
    const_assert_eq!(
        offset_of!(IommuHwSer, token),
        offset_of!(IommuHwV2Ser, token)
    );
    const_assert_eq!(
        offset_of!(IommuHwSer, r#type),
        offset_of!(IommuHwV2Ser, r#type)
    );
    const_assert_eq!(
        offset_of!(IommuHwSer, vendor),
        offset_of!(IommuHwV2Ser, vendor)
    );

    const MAP: usize = offset_of!(IommuDeviceSer, domain_iommu_ser);
    const_assert_eq!(
        offset_of!(IommuDeviceSer, hdr),
        offset_of!(IommuDeviceV2Ser, hdr)
    );
    const_assert_eq!(
        offset_of!(IommuDeviceSer, devid),
        offset_of!(IommuDeviceV2Ser, devid)
    );
    const_assert_eq!(
        offset_of!(IommuDeviceSer, pci_domain_nr),
        offset_of!(IommuDeviceV2Ser, pci_domain_nr)
    );
    const_assert_eq!(
        offset_of!(IommuDeviceSer, dma_owner_token),
        offset_of!(IommuDeviceV2Ser, dma_owner_token)
    );
    const_assert_eq!(
        MAP + offset_of!(IommuDevMapSer, attachment_id),
        offset_of!(IommuDeviceV2Ser, attachment_id)
    );
    const_assert_eq!(
        MAP + offset_of!(IommuDevMapSer, domain_phys),
        offset_of!(IommuDeviceV2Ser, domain_index)
    );
    const_assert_eq!(
        MAP + offset_of!(IommuDevMapSer, iommu_phys),
        offset_of!(IommuDeviceV2Ser, iommu_index)
    );
    const_assert_eq!(
        offset_of!(IommuDeviceSer, vendor),
        offset_of!(IommuDeviceV2Ser, vendor)
    );
}
