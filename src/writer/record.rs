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
use super::types::{DeviceInit, DevicePayloadInit, DomainInit, IommuPayloadInit};
use crate::PhysAddr;
use crate::abi::v1::{
    IommuDevMapSer, IommuDeviceIntelSer, IommuDeviceSer, IommuDomainSer, IommuHdrSer, IommuHwSer,
    IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer, IommuTypeSer,
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

    /// A device record's (segment, devid, domain_phys, iommu_phys).
    pub(crate) fn device_fields(&self) -> Result<(u32, u32, PhysAddr, PhysAddr), WriteError> {
        let devid: Le32 = self.get(offset_of!(IommuDeviceSer, devid))?;
        let seg: Le32 = self.get(offset_of!(IommuDeviceSer, pci_domain_nr))?;
        let map: IommuDevMapSer = self.get(offset_of!(IommuDeviceSer, domain_iommu_ser))?;
        Ok((
            seg.get(),
            devid.get(),
            PhysAddr::new(map.domain_phys.get()),
            PhysAddr::new(map.iommu_phys.get()),
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

    /// Writes a whole `iommu_domain_ser`.
    pub(crate) fn write_domain(
        &mut self,
        d: &DomainInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        self.put(
            0,
            &IommuDomainSer {
                hdr,
                top_table_phys: d.top_table_phys.get().into(),
                top_level: d.top_level.into(),
                vasz: d.vasz.into(),
                sign_extend: d.sign_extend,
                padding: [0; 3],
                restored_domain: 0.into(),
            },
        )
    }

    /// Writes a whole `iommu_hw_ser`; the union bytes the payload does not
    /// cover are zero.
    pub(crate) fn write_iommu(
        &mut self,
        token: u64,
        payload: &IommuPayloadInit,
        hdr: IommuHdrSer,
    ) -> Result<(), WriteError> {
        self.zero(size_of::<IommuHwSer>())?;
        self.put(offset_of!(IommuHwSer, hdr), &hdr)?;
        self.put(offset_of!(IommuHwSer, token), &Le64::new(token))?;
        let ty = payload.iommu_type().wire();
        self.put(offset_of!(IommuHwSer, r#type), &Le64::new(ty))?;
        let at = offset_of!(IommuHwSer, vendor);
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
            IommuPayloadInit::Smmuv3(p) => self.put(
                at,
                &IommuSmmuv3HwSer {
                    phys_addr: p.phys_addr.get().into(),
                    strtab_base_cfg: p.strtab_base_cfg.into(),
                    l1_strtab_lu_state: p.l1_strtab_lu_state.into(),
                    l2_strtab_lu_states_phys: p.l2_strtab_lu_states_phys.get().into(),
                },
            ),
        }
    }

    /// Overwrites an IOMMU record's type (used to mark an unpreserved slot).
    pub(crate) fn set_iommu_type(&mut self, ty: IommuTypeSer) -> Result<(), WriteError> {
        self.put(offset_of!(IommuHwSer, r#type), &Le64::new(ty.wire()))
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
        self.zero(size_of::<IommuDeviceSer>())?;
        self.put(offset_of!(IommuDeviceSer, hdr), &hdr)?;
        self.put(offset_of!(IommuDeviceSer, devid), &Le32::new(d.devid))?;
        self.put(
            offset_of!(IommuDeviceSer, pci_domain_nr),
            &Le32::new(d.pci_domain_nr),
        )?;
        self.put(
            offset_of!(IommuDeviceSer, dma_owner_token),
            &Le64::new(d.dma_owner_token),
        )?;
        self.put(
            offset_of!(IommuDeviceSer, domain_iommu_ser),
            &IommuDevMapSer {
                attachment_id: d.attachment_id.into(),
                domain_phys: domain.get().into(),
                iommu_phys: iommu.get().into(),
            },
        )?;
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
            DevicePayloadInit::Smmuv3(p) => self.put(
                at,
                &IommuMasterSmmuv3Ser {
                    l1_cdtab_lu_state: p.l1_cdtab_lu_state.into(),
                    num_l2_cdtables: p.num_l2_cdtables.into(),
                    padding: 0.into(),
                    l2_cdtab_lu_states_phys: p.l2_cdtab_lu_states_phys.get().into(),
                },
            ),
        }
    }
}

/// Record sizes in bytes.
pub(crate) const HW: usize = size_of::<IommuHwSer>();
pub(crate) const DOM: usize = size_of::<IommuDomainSer>();
pub(crate) const DEV: usize = size_of::<IommuDeviceSer>();

/// The bytes of a new `N`-byte record at `phys`, as `write` puts them into
/// a zeroed buffer.
pub(crate) fn built<const N: usize>(
    phys: PhysAddr,
    write: impl FnOnce(&mut Rec<[u8; N]>) -> Result<(), WriteError>,
) -> Result<[u8; N], WriteError> {
    let mut rec = Rec {
        phys,
        bytes: [0; N],
    };
    write(&mut rec)?;
    Ok(rec.bytes)
}
