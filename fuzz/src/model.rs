//! A model of the writer: the objects it should hold after a sequence of
//! [`Op`]s, the exact result of every operation, and what the reader must
//! see in the image (`roundtrip`), or simply the builder of valid images
//! (`mutate`).

use iommu_flb_abi::abi::v1::{
    IOMMU_DEVICE_ARRAY_CAPACITY_4K, IOMMU_DOMAIN_ARRAY_CAPACITY_4K, IOMMU_HW_ARRAY_CAPACITY_4K,
    IommuTypeSer,
};
use iommu_flb_abi::error::Chain;
use iommu_flb_abi::reader::{DevicePayload, Image, IommuPayload};
use iommu_flb_abi::writer::{
    DeviceHandle, DeviceIndex, DeviceInit, DevicePayloadInit, DomainField, DomainHandle,
    DomainInit, IntelDeviceInit, IntelIommuInit, IommuHandle, IommuPayloadInit, ObjectKind,
    PageAlloc, PagePurpose, Smmuv3DeviceInit, Smmuv3IommuInit, WriteError, Writer,
};
use iommu_flb_abi::{Memory, PhysAddr};

use crate::PS;
use crate::input::Op;

/// The state of a preserved IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuState {
    /// Visible, with this many live devices.
    Live(u32),
    /// Preserved, no device: deleted in the image, type kept.
    Idle,
    /// Unpreserved: deleted, type `IOMMU_INVALID`.
    Gone,
}

/// A preserved IOMMU.
#[derive(Clone, Debug)]
pub struct MIommu {
    /// Its handle.
    pub h: IommuHandle,
    /// Its token.
    pub token: u64,
    /// What was preserved.
    pub payload: IommuPayloadInit,
    /// Now.
    pub state: IommuState,
}

/// A preserved domain.
#[derive(Clone, Debug)]
pub struct MDomain {
    /// Its handle.
    pub h: DomainHandle,
    /// What was preserved.
    pub init: DomainInit,
    /// Unpreserved.
    pub deleted: bool,
}

/// A preserved device.
#[derive(Clone, Debug)]
pub struct MDevice {
    /// Its handle.
    pub h: DeviceHandle,
    /// What was preserved.
    pub init: DeviceInit,
    /// Index of its domain in [`Model::domains`].
    pub domain: usize,
    /// Index of its IOMMU in [`Model::iommus`].
    pub iommu: usize,
    /// Unpreserved.
    pub deleted: bool,
}

/// Every object ever preserved, in record (chain) order.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// IOMMU slots.
    pub iommus: Vec<MIommu>,
    /// Domain slots.
    pub domains: Vec<MDomain>,
    /// Device slots.
    pub devices: Vec<MDevice>,
}

/// What one [`Model::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The operation ran (or was refused as the model predicted).
    Done,
    /// `Op::Check`: the caller should compare the image now.
    Check,
}

/// The token of IOMMU number `t`.
pub fn token(t: u8) -> u64 {
    0xfed0_0000 + u64::from(t) * 0x1000
}

/// The payload an IOMMU with `token` is preserved with.
pub fn iommu_payload(intel: bool, token: u64) -> IommuPayloadInit {
    if intel {
        IommuPayloadInit::Intel(IntelIommuInit {
            phys_addr: PhysAddr::new(token),
            root_table: PhysAddr::new(token << 4),
            context_tables_bitmap: [token, 1, 2, 3, 4, 5, 6, !token],
        })
    } else {
        IommuPayloadInit::Smmuv3(Smmuv3IommuInit {
            phys_addr: PhysAddr::new(token),
            strtab_base_cfg: token ^ 0x55,
            l1_strtab_lu_state: token.rotate_left(7),
            l2_strtab_lu_states_phys: PhysAddr::new(token << 8),
        })
    }
}

/// The payload a device with key (`seg`, `devid`) is preserved with.
pub fn device_payload(intel: bool, seg: u8, devid: u16) -> DevicePayloadInit {
    let key = (u64::from(seg) << 16) | u64::from(devid);
    if intel {
        DevicePayloadInit::Intel(IntelDeviceInit {
            pasid_table: PhysAddr::new(key << 12),
            max_pasid: key + 1,
        })
    } else {
        DevicePayloadInit::Smmuv3(Smmuv3DeviceInit {
            l1_cdtab_lu_state: key,
            num_l2_cdtables: u32::from(devid),
            l2_cdtab_lu_states_phys: PhysAddr::new(key << 13),
        })
    }
}

fn domain_init(top: u16, unaligned: bool, level: u8, vasz: u8, sign_extend: u8) -> DomainInit {
    DomainInit {
        top_table_phys: PhysAddr::new((u64::from(top) << 12) | if unaligned { 8 } else { 0 }),
        top_level: u64::from(level),
        vasz: u32::from(vasz),
        sign_extend,
    }
}

fn device_init(seg: u8, devid: u16, intel: bool, attachment: u8) -> DeviceInit {
    DeviceInit {
        pci_domain_nr: u32::from(seg),
        devid: u32::from(devid),
        dma_owner_token: (u64::from(seg) << 32) ^ u64::from(devid) ^ 0xd0d0,
        attachment_id: u64::from(attachment),
        payload: device_payload(intel, seg, devid),
    }
}

/// Most record slots per chain a model builds: four pages' worth. Larger
/// images cost the fuzzer quadratic time (duplicate searches) and reach no
/// new code; operations past the cap are skipped.
pub const MAX_PAGES_PER_CHAIN: u64 = 4;

fn full(slots: usize, cap: u64) -> bool {
    slots as u64 >= MAX_PAGES_PER_CHAIN * cap
}

/// Whether appending to a chain with `slots` records needs a new page.
fn needs_page(slots: usize, cap: u64) -> bool {
    slots > 0 && (slots as u64).is_multiple_of(cap)
}

/// Pages a chain with `slots` records has.
pub fn chain_pages(slots: usize, cap: u64) -> usize {
    (slots as u64).div_ceil(cap).max(1) as usize
}

/// Upper bound on the devices `ops` preserve (to size a `SliceIndex`).
pub fn max_devices(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match *op {
            Op::Device { .. } => 1,
            Op::Devices { n, .. } => usize::from(n),
            _ => 0,
        })
        .sum()
}

fn pick(n: usize, i: usize) -> Option<usize> {
    (n > 0).then(|| i % n)
}

/// The result of an append the allocator may fail: `OutOfPages` is allowed
/// (and changes nothing) only when a page was needed.
fn appended<T>(
    got: Result<T, WriteError>,
    expect: Option<WriteError>,
    kind: ObjectKind,
    slots: usize,
    cap: u64,
) -> Result<Option<T>, String> {
    match (expect, got) {
        (Some(e), Err(g)) if e == g => Ok(None),
        (Some(e), Err(g)) => Err(format!("expected {e:?}, writer said {g:?}")),
        (Some(e), Ok(_)) => Err(format!("expected {e:?}, writer succeeded")),
        (None, Ok(v)) => Ok(Some(v)),
        (None, Err(WriteError::OutOfPages { purpose }))
            if purpose == PagePurpose::Chain(kind) && needs_page(slots, cap) =>
        {
            Ok(None)
        }
        (None, Err(g)) => Err(format!("unexpected {g:?}")),
    }
}

fn refused(got: Result<(), WriteError>, expect: Option<WriteError>) -> Result<bool, String> {
    match (expect, got) {
        (None, Ok(())) => Ok(true),
        (Some(e), Err(g)) if e == g => Ok(false),
        (e, g) => Err(format!("expected {e:?}, writer said {g:?}")),
    }
}

impl Model {
    /// Runs `op` on `w` and on the model; an error if the writer's result
    /// differs from the model's prediction.
    pub fn apply<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        op: &Op,
    ) -> Result<Applied, String> {
        match *op {
            Op::Iommu { token: t, intel } => self.iommu(w, token(t), intel)?,
            Op::Domain {
                top,
                unaligned,
                level,
                vasz,
                sign_extend,
            } => self.domain(w, domain_init(top, unaligned, level, vasz, sign_extend))?,
            Op::Device {
                seg,
                devid,
                domain,
                iommu,
                intel,
                attachment,
            } => {
                if let (Some(d), Some(i)) = (
                    pick(self.domains.len(), domain.into()),
                    pick(self.iommus.len(), iommu.into()),
                ) {
                    self.device(w, device_init(seg, devid, intel, attachment), d, i)?;
                }
            }
            Op::Devices {
                n,
                seg,
                devid,
                domain,
                iommu,
            } => {
                if let (Some(d), Some(i)) = (
                    pick(self.domains.len(), domain.into()),
                    pick(self.iommus.len(), iommu.into()),
                ) {
                    let intel = matches!(self.iommus[i].payload, IommuPayloadInit::Intel(_));
                    for k in 0..u16::from(n) {
                        let init = device_init(seg, devid.wrapping_add(k), intel, 0);
                        self.device(w, init, d, i)?;
                    }
                }
            }
            Op::Domains { n } => {
                for k in 0..u16::from(n) {
                    let top = 0x100u16.wrapping_add(k).max(1);
                    self.domain(w, domain_init(top, false, 4, 48, 0))?;
                }
            }
            Op::UnDevice(i) => {
                if let Some(i) = pick(self.devices.len(), i.into()) {
                    self.undevice(w, i)?;
                }
            }
            Op::UnDomain(i) => {
                if let Some(i) = pick(self.domains.len(), i.into()) {
                    self.undomain(w, i)?;
                }
            }
            Op::UnIommu(i) => {
                if let Some(i) = pick(self.iommus.len(), i.into()) {
                    self.uniommu(w, i)?;
                }
            }
            Op::Check => return Ok(Applied::Check),
        }
        Ok(Applied::Done)
    }

    fn iommu<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        token: u64,
        intel: bool,
    ) -> Result<(), String> {
        if full(self.iommus.len(), IOMMU_HW_ARRAY_CAPACITY_4K) {
            return Ok(());
        }
        let payload = iommu_payload(intel, token);
        let ty = payload.iommu_type();
        let expect = self
            .iommus
            .iter()
            .find(|m| m.state != IommuState::Gone && m.token == token && ty_of(m) == ty)
            .map(|m| WriteError::DuplicateIommu {
                token,
                iommu_type: ty,
                existing: m.h.phys(),
            });
        let got = w.preserve_iommu(token, payload);
        let slots = self.iommus.len();
        if let Some(h) = appended(
            got,
            expect,
            ObjectKind::Iommu,
            slots,
            IOMMU_HW_ARRAY_CAPACITY_4K,
        )? {
            self.iommus.push(MIommu {
                h,
                token,
                payload,
                state: IommuState::Idle,
            });
        }
        Ok(())
    }

    fn domain<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        init: DomainInit,
    ) -> Result<(), String> {
        if full(self.domains.len(), IOMMU_DOMAIN_ARRAY_CAPACITY_4K) {
            return Ok(());
        }
        let invalid = |field, value| Some(WriteError::InvalidDomain { field, value });
        let top = init.top_table_phys;
        let expect = if top.is_null() || !top.is_page_aligned(PS) {
            invalid(DomainField::TopTablePhys, top.get())
        } else if init.vasz > 64 {
            invalid(DomainField::Vasz, u64::from(init.vasz))
        } else if init.sign_extend > 1 {
            invalid(DomainField::SignExtend, u64::from(init.sign_extend))
        } else {
            None
        };
        let got = w.preserve_domain(init);
        let slots = self.domains.len();
        if let Some(h) = appended(
            got,
            expect,
            ObjectKind::Domain,
            slots,
            IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
        )? {
            self.domains.push(MDomain {
                h,
                init,
                deleted: false,
            });
        }
        Ok(())
    }

    fn device<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        init: DeviceInit,
        d: usize,
        i: usize,
    ) -> Result<(), String> {
        if full(self.devices.len(), IOMMU_DEVICE_ARRAY_CAPACITY_4K) {
            return Ok(());
        }
        let (dom, mm) = (&self.domains[d], &self.iommus[i]);
        let ty = ty_of(mm);
        let expect = if dom.deleted {
            Some(WriteError::AttachToDeleted {
                kind: ObjectKind::Domain,
                phys: dom.h.phys(),
            })
        } else if mm.state == IommuState::Gone {
            Some(WriteError::AttachToDeleted {
                kind: ObjectKind::Iommu,
                phys: mm.h.phys(),
            })
        } else if init.payload.iommu_type() != ty {
            Some(WriteError::PayloadMismatch {
                iommu: mm.h.phys(),
                iommu_type: ty,
                payload_type: init.payload.iommu_type(),
            })
        } else {
            self.devices
                .iter()
                .find(|v| {
                    !v.deleted
                        && (v.init.pci_domain_nr, v.init.devid) == (init.pci_domain_nr, init.devid)
                })
                .map(|v| WriteError::DuplicateDevice {
                    pci_domain_nr: init.pci_domain_nr,
                    devid: init.devid,
                    existing: v.h.phys(),
                })
        };
        let got = w.preserve_device(init, dom.h, mm.h);
        let slots = self.devices.len();
        if let Some(h) = appended(
            got,
            expect,
            ObjectKind::Device,
            slots,
            IOMMU_DEVICE_ARRAY_CAPACITY_4K,
        )? {
            let m = &mut self.iommus[i];
            m.state = match m.state {
                IommuState::Live(n) => IommuState::Live(n + 1),
                _ => IommuState::Live(1),
            };
            self.devices.push(MDevice {
                h,
                init,
                domain: d,
                iommu: i,
                deleted: false,
            });
        }
        Ok(())
    }

    fn undevice<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        i: usize,
    ) -> Result<(), String> {
        let v = &self.devices[i];
        let expect = v.deleted.then_some(WriteError::AlreadyUnpreserved {
            kind: ObjectKind::Device,
            phys: v.h.phys(),
        });
        if refused(w.unpreserve_device(v.h), expect)? {
            let m = &mut self.iommus[v.iommu];
            m.state = match m.state {
                IommuState::Live(n) if n > 1 => IommuState::Live(n - 1),
                IommuState::Live(_) => IommuState::Idle,
                s => return Err(format!("live device behind IOMMU in state {s:?}")),
            };
            self.devices[i].deleted = true;
        }
        Ok(())
    }

    fn undomain<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        i: usize,
    ) -> Result<(), String> {
        let d = &self.domains[i];
        let expect = if d.deleted {
            Some(WriteError::AlreadyUnpreserved {
                kind: ObjectKind::Domain,
                phys: d.h.phys(),
            })
        } else {
            self.devices
                .iter()
                .find(|v| !v.deleted && v.domain == i)
                .map(|v| WriteError::DomainInUse {
                    domain: d.h.phys(),
                    device: v.h.phys(),
                })
        };
        if refused(w.unpreserve_domain(d.h), expect)? {
            self.domains[i].deleted = true;
        }
        Ok(())
    }

    fn uniommu<A: PageAlloc, X: DeviceIndex>(
        &mut self,
        w: &mut Writer<A, X>,
        i: usize,
    ) -> Result<(), String> {
        let m = &self.iommus[i];
        let expect = match m.state {
            IommuState::Gone => Some(WriteError::AlreadyUnpreserved {
                kind: ObjectKind::Iommu,
                phys: m.h.phys(),
            }),
            IommuState::Live(devices) => Some(WriteError::IommuInUse {
                iommu: m.h.phys(),
                devices,
            }),
            IommuState::Idle => None,
        };
        if refused(w.unpreserve_iommu(m.h), expect)? {
            self.iommus[i].state = IommuState::Gone;
        }
        Ok(())
    }
}

fn ty_of(m: &MIommu) -> IommuTypeSer {
    m.payload.iommu_type()
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! ensure_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: {:?} != {:?}", format!($($fmt)+), a, b));
        }
    };
}

impl Model {
    /// Compares a validated image with the model: every slot in chain order
    /// (deleted or not), every live record's fields, ref counts, resolved
    /// references, payloads, lookups, and the number of pages per chain.
    pub fn compare<M: Memory + ?Sized>(&self, image: &Image<'_, '_, M>) -> Result<(), String> {
        self.compare_iommus(image)?;
        self.compare_domains(image)?;
        self.compare_devices(image)?;
        for (chain, slots, cap) in [
            (Chain::Iommu, self.iommus.len(), IOMMU_HW_ARRAY_CAPACITY_4K),
            (
                Chain::Domain,
                self.domains.len(),
                IOMMU_DOMAIN_ARRAY_CAPACITY_4K,
            ),
            (
                Chain::Device,
                self.devices.len(),
                IOMMU_DEVICE_ARRAY_CAPACITY_4K,
            ),
        ] {
            ensure_eq!(
                image.chain_pages(chain),
                chain_pages(slots, cap),
                "pages of the {chain} chain for {slots} records"
            );
        }
        Ok(())
    }

    fn compare_iommus<M: Memory + ?Sized>(&self, image: &Image<'_, '_, M>) -> Result<(), String> {
        ensure_eq!(image.all_iommus().count(), self.iommus.len(), "IOMMU slots");
        for (r, m) in image.all_iommus().zip(&self.iommus) {
            ensure_eq!(r.phys(), m.h.phys(), "IOMMU slot address");
            ensure_eq!(
                r.is_deleted(),
                !matches!(m.state, IommuState::Live(_)),
                "IOMMU {} deleted",
                m.h.phys()
            );
            let want_ty = match m.state {
                IommuState::Gone => IommuTypeSer::IommuInvalid,
                _ => ty_of(m),
            };
            ensure_eq!(
                r.v1().expect("a version-1 image").r#type.get(),
                want_ty.wire(),
                "IOMMU type"
            );
            ensure_eq!(
                r.v1().expect("a version-1 image").token.get(),
                m.token,
                "IOMMU token"
            );
        }
        let live: Vec<_> = self
            .iommus
            .iter()
            .filter_map(|m| match m.state {
                IommuState::Live(n) => Some((m, n)),
                _ => None,
            })
            .collect();
        ensure_eq!(image.iommus().count(), live.len(), "live IOMMUs");
        ensure_eq!(image.live_iommus(), live.len(), "live_iommus()");
        for (r, (m, n)) in image.iommus().zip(&live) {
            ensure_eq!(r.phys(), m.h.phys(), "live IOMMU order");
            ensure_eq!(r.token(), m.token, "token");
            ensure_eq!(r.iommu_type(), ty_of(m), "type");
            ensure_eq!(r.ref_count(), *n, "ref_count of {}", m.h.phys());
            ensure_eq!(r.flags(), 0, "flags");
            match (r.payload(), &m.payload) {
                (IommuPayload::Intel(p), IommuPayloadInit::Intel(i)) => {
                    ensure_eq!(p.restored, 0, "restored");
                    ensure_eq!(p.phys_addr.get(), i.phys_addr.get(), "phys_addr");
                    ensure_eq!(p.root_table.get(), i.root_table.get(), "root_table");
                    let bitmap = p.context_tables_bitmap.map(|w| w.get());
                    ensure_eq!(bitmap, i.context_tables_bitmap, "context bitmap");
                }
                (IommuPayload::Smmuv3(p), IommuPayloadInit::Smmuv3(i)) => {
                    ensure_eq!(p.phys_addr.get(), i.phys_addr.get(), "phys_addr");
                    ensure_eq!(p.strtab_base_cfg.get(), i.strtab_base_cfg, "strtab");
                    ensure_eq!(p.l1_strtab_lu_state.get(), i.l1_strtab_lu_state, "l1");
                    let l2 = p.l2_strtab_lu_states_phys.get();
                    ensure_eq!(l2, i.l2_strtab_lu_states_phys.get(), "l2");
                }
                (p, i) => return Err(format!("payload {p:?} for {i:?}")),
            }
            let found = image.find_iommu(m.token, ty_of(m)).map(|f| f.phys());
            ensure_eq!(found, Some(m.h.phys()), "find_iommu({:#x})", m.token);
        }
        for m in self.iommus.iter().filter(|m| m.state == IommuState::Idle) {
            let live = live
                .iter()
                .any(|(l, _)| l.token == m.token && ty_of(l) == ty_of(m));
            if !live {
                let found = image.find_iommu(m.token, ty_of(m)).map(|f| f.phys());
                ensure_eq!(found, None, "find_iommu of an idle IOMMU");
            }
        }
        Ok(())
    }

    fn compare_domains<M: Memory + ?Sized>(&self, image: &Image<'_, '_, M>) -> Result<(), String> {
        ensure_eq!(image.all_domains().count(), self.domains.len(), "domains");
        for (r, d) in image.all_domains().zip(&self.domains) {
            ensure_eq!(r.phys(), d.h.phys(), "domain slot address");
            ensure_eq!(r.is_deleted(), d.deleted, "domain {} deleted", d.h.phys());
        }
        let live: Vec<_> = self.domains.iter().filter(|d| !d.deleted).collect();
        ensure_eq!(image.domains().count(), live.len(), "live domains");
        for (r, d) in image.domains().zip(live) {
            ensure_eq!(r.phys(), d.h.phys(), "live domain order");
            let rec = r.v1().expect("a version-1 image");
            ensure_eq!(r.top_table_phys(), d.init.top_table_phys, "top_table_phys");
            ensure_eq!(rec.top_level.get(), d.init.top_level, "top_level");
            ensure_eq!(rec.vasz.get(), d.init.vasz, "vasz");
            ensure_eq!(rec.sign_extend, d.init.sign_extend, "sign_extend");
            ensure_eq!(rec.hdr.ref_count.get(), 1, "domain ref_count");
        }
        Ok(())
    }

    fn compare_devices<M: Memory + ?Sized>(&self, image: &Image<'_, '_, M>) -> Result<(), String> {
        ensure_eq!(image.all_devices().count(), self.devices.len(), "devices");
        for (r, v) in image.all_devices().zip(&self.devices) {
            ensure_eq!(r.phys(), v.h.phys(), "device slot address");
            ensure_eq!(r.is_deleted(), v.deleted, "device {} deleted", v.h.phys());
        }
        let live: Vec<_> = self.devices.iter().filter(|v| !v.deleted).collect();
        ensure_eq!(image.devices().count(), live.len(), "live devices");
        ensure_eq!(image.live_devices(), live.len(), "live_devices()");
        for (r, v) in image.devices().zip(&live) {
            ensure_eq!(r.phys(), v.h.phys(), "live device order");
            ensure_eq!(r.segment(), v.init.pci_domain_nr, "segment");
            ensure_eq!(r.devid(), v.init.devid, "devid");
            let rec = r.v1().expect("a version-1 image");
            ensure_eq!(rec.dma_owner_token.get(), v.init.dma_owner_token, "owner");
            let map = &rec.domain_iommu_ser;
            ensure_eq!(map.attachment_id.get(), v.init.attachment_id, "attachment");
            ensure_eq!(r.domain().phys(), self.domains[v.domain].h.phys(), "domain");
            ensure_eq!(r.iommu().phys(), self.iommus[v.iommu].h.phys(), "IOMMU");
            match (r.payload(), v.init.payload) {
                (DevicePayload::Intel(p), DevicePayloadInit::Intel(i)) => {
                    ensure_eq!(p.restored, 0, "restored");
                    ensure_eq!(p.pasid_table.get(), i.pasid_table.get(), "pasid_table");
                    ensure_eq!(p.max_pasid.get(), i.max_pasid, "max_pasid");
                }
                (DevicePayload::Smmuv3(p), DevicePayloadInit::Smmuv3(i)) => {
                    ensure_eq!(p.l1_cdtab_lu_state.get(), i.l1_cdtab_lu_state, "l1");
                    ensure_eq!(p.num_l2_cdtables.get(), i.num_l2_cdtables, "num_l2");
                    let l2 = p.l2_cdtab_lu_states_phys.get();
                    ensure_eq!(l2, i.l2_cdtab_lu_states_phys.get(), "l2");
                }
                (p, i) => return Err(format!("device payload {p:?} for {i:?}")),
            }
            let found = image.find_device(v.init.pci_domain_nr, v.init.devid);
            ensure_eq!(found.map(|f| f.phys()), Some(v.h.phys()), "find_device");
        }
        for v in self.devices.iter().filter(|v| v.deleted) {
            let key = (v.init.pci_domain_nr, v.init.devid);
            if !live
                .iter()
                .any(|l| (l.init.pci_domain_nr, l.init.devid) == key)
            {
                let found = image.find_device(key.0, key.1).map(|f| f.phys());
                ensure!(found.is_none(), "find_device{key:?} found {found:?}");
            }
        }
        Ok(())
    }
}
