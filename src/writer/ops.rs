//! The operations: preserve and unpreserve IOMMUs, domains and devices.

use core::ops::ControlFlow;

use super::chain::{hdr_plan, page, pages, record, record_offset, reference_to};
use super::encoding::{Bytes, PageRole, Patch};
use super::index::Lookup;
use super::types::WriterId;
use super::{
    DeviceHandle, DeviceIndex, DeviceInit, DeviceKey, DomainField, DomainHandle, DomainInit,
    IommuHandle, IommuPayloadInit, ObjectKind, PageAlloc, WriteError, Writer,
};
use crate::PhysAddr;
use crate::abi::PageSize;
use crate::abi::v1::{IOMMU_SER_FLAG_DELETED, IommuHdrSer, IommuTypeSer};

fn hdr(ref_count: u32, flags: u32) -> IommuHdrSer {
    IommuHdrSer {
        ref_count: ref_count.into(),
        flags: flags.into(),
    }
}

fn is_deleted(h: &IommuHdrSer) -> bool {
    h.flags.get() & IOMMU_SER_FLAG_DELETED != 0
}

/// An IOMMU record as the writer sees it.
enum IommuState {
    /// Visible to readers, with this many devices.
    Live(u32),
    /// Preserved, no devices: `DELETED`, type kept.
    Idle,
    /// Unpreserved: `DELETED`, type `IOMMU_INVALID`.
    Unpreserved,
}

fn check_owner(
    mine: WriterId,
    theirs: WriterId,
    kind: ObjectKind,
    phys: PhysAddr,
) -> Result<(), WriteError> {
    if mine == theirs {
        Ok(())
    } else {
        Err(WriteError::ForeignHandle { kind, phys })
    }
}

impl<A: PageAlloc, X: DeviceIndex> Writer<A, X> {
    /// The state and type of the IOMMU at `phys`.
    fn iommu_state(&mut self, phys: PhysAddr) -> Result<(IommuState, IommuTypeSer), WriteError> {
        let rec = record(&mut self.alloc, self.enc, ObjectKind::Iommu, phys)?;
        let h = rec.hdr()?;
        let (_, raw) = rec.iommu_key()?;
        let bad = |what| WriteError::Inconsistent { phys, what };
        let ty = IommuTypeSer::from_wire(raw).ok_or(bad("IOMMU type unknown"))?;
        let rc = h.ref_count.get();
        let state = match (is_deleted(&h), ty) {
            (true, IommuTypeSer::IommuInvalid) => IommuState::Unpreserved,
            (true, _) => IommuState::Idle,
            (false, IommuTypeSer::IommuInvalid) => return Err(bad("live IOMMU of type 0")),
            (false, _) if rc == 0 => return Err(bad("live IOMMU with ref_count 0")),
            (false, _) => IommuState::Live(rc),
        };
        Ok((state, ty))
    }

    /// The type of the preserved IOMMU at `phys`, as
    /// [`preserve_device`](Self::preserve_device) reads it; `None` if the
    /// record cannot be read or is inconsistent. The C API needs it to pick
    /// the member of a device's vendor union before preserving the device.
    #[cfg(feature = "ffi")]
    pub(crate) fn iommu_type(&mut self, phys: PhysAddr) -> Option<IommuTypeSer> {
        self.iommu_state(phys).ok().map(|(_, ty)| ty)
    }

    /// Preserves an IOMMU, identified by `token` (its MMIO base) and the
    /// payload's type. It stays invisible to readers until a device is
    /// attached (see [IOMMUs and their reference counts](super#iommus-and-their-reference-counts)).
    pub fn preserve_iommu(
        &mut self,
        token: u64,
        payload: IommuPayloadInit,
    ) -> Result<IommuHandle, WriteError> {
        let ty = payload.iommu_type().wire();
        // An unpreserved slot's type is IOMMU_INVALID, so it never matches.
        let dup = self.iommus.scan(self.enc, &mut self.alloc, |rec| {
            Ok(if rec.iommu_key()? == (token, ty) {
                ControlFlow::Break(rec.phys)
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if let Some(existing) = dup {
            return Err(WriteError::DuplicateIommu {
                token,
                iommu_type: payload.iommu_type(),
                existing,
            });
        }
        let (enc, image) = (self.enc, self.image());
        let phys = self.iommus.append(
            enc,
            &mut self.alloc,
            &image,
            None,
            |r| enc.iommu_record(r, token, &payload, hdr(0, IOMMU_SER_FLAG_DELETED)),
            |_| Ok(()),
        )?;
        self.counts.iommus = self.counts.iommus.saturating_add(1);
        Ok(IommuHandle::new(phys, self.id))
    }

    /// Preserves a domain (live at once, `ref_count` 1).
    pub fn preserve_domain(&mut self, d: DomainInit) -> Result<DomainHandle, WriteError> {
        let invalid = |field, value| Err(WriteError::InvalidDomain { field, value });
        // IOMMU page tables are 4 KiB-aligned whatever the CPU's page size,
        // as the reader checks.
        let aligned = d.top_table_phys.is_page_aligned(PageSize::Size4K);
        if d.top_table_phys.is_null() || !aligned {
            return invalid(DomainField::TopTablePhys, d.top_table_phys.get());
        }
        if d.vasz > 64 {
            return invalid(DomainField::Vasz, u64::from(d.vasz));
        }
        if d.sign_extend > 1 {
            return invalid(DomainField::SignExtend, u64::from(d.sign_extend));
        }
        let (enc, image) = (self.enc, self.image());
        let phys = self.domains.append(
            enc,
            &mut self.alloc,
            &image,
            None,
            |r| r.write_domain(&d, hdr(1, 0)),
            |_| Ok(()),
        )?;
        self.counts.domains = self.counts.domains.saturating_add(1);
        Ok(DomainHandle::new(phys, self.id))
    }

    /// The live device with this key, if any.
    fn find_device(&mut self, key: DeviceKey) -> Result<Option<PhysAddr>, WriteError> {
        match self.index.lookup(key) {
            Lookup::Live(p) => return Ok(Some(p)),
            Lookup::Absent => return Ok(None),
            Lookup::Unknown => {}
        }
        if self.max_device_key.is_none_or(|max| key > max) {
            return Ok(None);
        }
        self.devices.scan(self.enc, &mut self.alloc, |rec| {
            let (seg, devid, _, _) = rec.device_fields()?;
            Ok(
                if !is_deleted(&rec.hdr()?) && DeviceKey::new(seg, devid) == key {
                    ControlFlow::Break(rec.phys)
                } else {
                    ControlFlow::Continue(())
                },
            )
        })
    }

    /// Preserves a device attached to `domain` behind `iommu`; the IOMMU's
    /// `ref_count` rises by one (an idle IOMMU becomes live with 1).
    pub fn preserve_device(
        &mut self,
        d: DeviceInit,
        domain: DomainHandle,
        iommu: IommuHandle,
    ) -> Result<DeviceHandle, WriteError> {
        let enc = self.enc;
        let (new_count, domain_ref, iommu_ref, key) = self.device_checks(&d, domain, iommu)?;
        let image = self.image();
        let index = &mut self.index;
        let phys = self.devices.append(
            enc,
            &mut self.alloc,
            &image,
            Some((iommu.phys(), hdr(new_count, 0))),
            |r| enc.device_record(r, &d, domain_ref, iommu_ref, hdr(1, 0)),
            // A failed insert leaves the index unchanged.
            |at| index.insert(key, at),
        )?;
        if new_count == 1 {
            self.counts.live_iommus = self.counts.live_iommus.saturating_add(1);
        }
        self.counts.devices = self.counts.devices.saturating_add(1);
        self.max_device_key = Some(self.max_device_key.map_or(key, |m| m.max(key)));
        Ok(DeviceHandle::new(phys, self.id))
    }

    /// Every check of [`preserve_device`](Self::preserve_device) before
    /// the append: the IOMMU's new `ref_count`, the references the record
    /// stores to its domain and IOMMU, and its key. A function of its own,
    /// so that its stack is gone before the append's (the kernel's stack is
    /// small).
    #[inline(never)]
    fn device_checks(
        &mut self,
        d: &DeviceInit,
        domain: DomainHandle,
        iommu: IommuHandle,
    ) -> Result<(u32, u64, u64, DeviceKey), WriteError> {
        check_owner(self.id, domain.writer(), ObjectKind::Domain, domain.phys())?;
        check_owner(self.id, iommu.writer(), ObjectKind::Iommu, iommu.phys())?;
        let enc = self.enc;
        let dom = record(&mut self.alloc, enc, ObjectKind::Domain, domain.phys())?.hdr()?;
        if is_deleted(&dom) {
            return Err(WriteError::AttachToDeleted {
                kind: ObjectKind::Domain,
                phys: domain.phys(),
            });
        }
        let (state, ty) = self.iommu_state(iommu.phys())?;
        let new_count = match state {
            IommuState::Unpreserved => {
                return Err(WriteError::AttachToDeleted {
                    kind: ObjectKind::Iommu,
                    phys: iommu.phys(),
                });
            }
            IommuState::Idle => 1,
            IommuState::Live(n) => n.checked_add(1).ok_or(WriteError::RefCountOverflow {
                iommu: iommu.phys(),
            })?,
        };
        if d.payload.iommu_type() != ty {
            return Err(WriteError::PayloadMismatch {
                iommu: iommu.phys(),
                iommu_type: ty,
                payload_type: d.payload.iommu_type(),
            });
        }
        let key = DeviceKey::new(d.pci_domain_nr, d.devid);
        if let Some(existing) = self.find_device(key)? {
            return Err(WriteError::DuplicateDevice {
                pci_domain_nr: d.pci_domain_nr,
                devid: d.devid,
                existing,
            });
        }
        let domain_ref = reference_to(&mut self.alloc, enc, ObjectKind::Domain, domain.phys())?;
        let iommu_ref = reference_to(&mut self.alloc, enc, ObjectKind::Iommu, iommu.phys())?;
        Ok((new_count, domain_ref, iommu_ref, key))
    }

    /// Unpreserves a device (`DELETED`); its IOMMU's `ref_count` falls by
    /// one, and the IOMMU is `DELETED` (idle) when it reaches 0.
    pub fn unpreserve_device(&mut self, device: DeviceHandle) -> Result<(), WriteError> {
        let phys = device.phys();
        check_owner(self.id, device.writer(), ObjectKind::Device, phys)?;
        let enc = self.enc;
        let rec = record(&mut self.alloc, enc, ObjectKind::Device, phys)?;
        let h = rec.hdr()?;
        if is_deleted(&h) {
            return Err(WriteError::AlreadyUnpreserved {
                kind: ObjectKind::Device,
                phys,
            });
        }
        let (seg, devid, _, iommu_ref) = rec.device_fields()?;
        let iommu = self.iommus.resolve(enc, &mut self.alloc, iommu_ref)?;
        let IommuState::Live(n) = self.iommu_state(iommu)?.0 else {
            return Err(WriteError::Inconsistent {
                phys: iommu,
                what: "live device behind a deleted IOMMU",
            });
        };
        let left = n.saturating_sub(1);
        let flags = if left == 0 { IOMMU_SER_FLAG_DELETED } else { 0 };
        let ps = self.alloc.page_size();
        let dev_hdr = hdr(h.ref_count.get(), IOMMU_SER_FLAG_DELETED);
        let hw_hdr = hdr(left, flags);
        let dev = hdr_plan(enc, ObjectKind::Device, ps, phys, &dev_hdr)?;
        let hw = hdr_plan(enc, ObjectKind::Iommu, ps, iommu, &hw_hdr)?;
        let [dev_page, hw_page] =
            pages(&mut self.alloc, [phys.page_base(ps), iommu.page_base(ps)])?;
        enc.commit(&dev, dev_page);
        enc.commit(&hw, hw_page);
        if left == 0 {
            self.counts.live_iommus = self.counts.live_iommus.saturating_sub(1);
        }
        self.index.remove(DeviceKey::new(seg, devid));
        self.counts.devices = self.counts.devices.saturating_sub(1);
        Ok(())
    }

    /// Unpreserves a domain (`DELETED`). Refused while a live device is
    /// attached to it: that device's `domain_phys` would name a deleted
    /// record.
    pub fn unpreserve_domain(&mut self, domain: DomainHandle) -> Result<(), WriteError> {
        let phys = domain.phys();
        check_owner(self.id, domain.writer(), ObjectKind::Domain, phys)?;
        let enc = self.enc;
        let h = record(&mut self.alloc, enc, ObjectKind::Domain, phys)?.hdr()?;
        if is_deleted(&h) {
            return Err(WriteError::AlreadyUnpreserved {
                kind: ObjectKind::Domain,
                phys,
            });
        }
        let me = reference_to(&mut self.alloc, enc, ObjectKind::Domain, phys)?;
        let user = self.devices.scan(enc, &mut self.alloc, |rec| {
            let (_, _, dom, _) = rec.device_fields()?;
            Ok(if dom == me && !is_deleted(&rec.hdr()?) {
                ControlFlow::Break(rec.phys)
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if let Some(device) = user {
            return Err(WriteError::DomainInUse {
                domain: phys,
                device,
            });
        }
        let ps = self.alloc.page_size();
        let deleted = hdr(h.ref_count.get(), IOMMU_SER_FLAG_DELETED);
        let plan = hdr_plan(enc, ObjectKind::Domain, ps, phys, &deleted)?;
        enc.commit(&plan, page(&mut self.alloc, phys.page_base(ps))?);
        self.counts.domains = self.counts.domains.saturating_sub(1);
        Ok(())
    }

    /// Unpreserves an IOMMU that has no devices left. Refused while devices
    /// are behind it (unpreserve them first, as the kernel does).
    pub fn unpreserve_iommu(&mut self, iommu: IommuHandle) -> Result<(), WriteError> {
        let phys = iommu.phys();
        check_owner(self.id, iommu.writer(), ObjectKind::Iommu, phys)?;
        match self.iommu_state(phys)?.0 {
            IommuState::Unpreserved => Err(WriteError::AlreadyUnpreserved {
                kind: ObjectKind::Iommu,
                phys,
            }),
            IommuState::Live(devices) => Err(WriteError::IommuInUse {
                iommu: phys,
                devices,
            }),
            IommuState::Idle => {
                let (enc, ps) = (self.enc, self.alloc.page_size());
                let at = record_offset(enc, ObjectKind::Iommu, ps, phys)?;
                let size = enc.record_size(ObjectKind::Iommu);
                let p = page(&mut self.alloc, phys.page_base(ps))?;
                let old = at.checked_add(size).and_then(|end| p.get(at..end));
                let old = old.ok_or(WriteError::Inconsistent {
                    phys,
                    what: "record does not fit its page",
                })?;
                let bytes = Bytes::edited(phys, old, |r| {
                    r.set_iommu_type(IommuTypeSer::IommuInvalid)?;
                    r.set_hdr(0, IOMMU_SER_FLAG_DELETED)
                })?;
                let patch = Some(Patch::new(at, bytes.get()));
                let plan = enc.plan(phys, ps, PageRole::Array, [patch, None])?;
                enc.commit(&plan, page(&mut self.alloc, phys.page_base(ps))?);
                self.counts.iommus = self.counts.iommus.saturating_sub(1);
                Ok(())
            }
        }
    }
}
