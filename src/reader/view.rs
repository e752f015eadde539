//! The validated view: [`Image`] and the record handles it hands out.

use core::fmt;

use super::index::{Cursor, Found, Pages, ScratchElem, TAG_SHIFT};
use super::validate::{DEV, DOM, HW, dev_intel, dev_smmuv3, hw_intel, hw_smmuv3, iommu_type};
use crate::abi::PageSize;
use crate::abi::v1::{
    IOMMU_ARRAY_HDR_SIZE, IOMMU_SER_FLAG_DELETED, IommuDeviceIntelSer, IommuDeviceSer,
    IommuDomainSer, IommuFlbSer, IommuHwSer, IommuIntelSer, IommuMasterSmmuv3Ser, IommuSmmuv3HwSer,
    IommuTypeSer,
};
use crate::error::Chain;
use crate::mem::read_page;
use crate::{Memory, PhysAddr};

/// What validation proved about the image, besides the scratch contents.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape<'m> {
    pub page_size: PageSize,
    pub root_phys: PhysAddr,
    pub root: &'m IommuFlbSer,
    pub pages: [u64; 3],
    /// Only re-slicing the scratch (`Image::from_scratch`) needs it.
    pub iommu_slots: u64,
    pub live_iommus: usize,
    pub live_devices: usize,
}

/// A validated handover image.
///
/// Only [`validate`](super::validate) makes one, so everything it hands out
/// has been checked: live records only reference live records of the right
/// kind, IOMMUs are Intel or SMMUv3, keys are unique. It borrows the memory
/// (`'m`) and the caller's scratch (`'s`), where its indexes live.
///
/// Accessors re-read pages through the `Memory`, which must keep returning
/// the pages it returned during validation. If it does not, iterators end
/// early and lookups return `None`; nothing panics.
pub struct Image<'m, 's, M: ?Sized> {
    mem: &'m M,
    shape: Shape<'m>,
    pages: Pages<'s>,
    iommu_keys: &'s [ScratchElem],
    device_keys: &'s [ScratchElem],
}

impl<M: ?Sized> Clone for Image<'_, '_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: ?Sized> Copy for Image<'_, '_, M> {}

impl<M: ?Sized> fmt::Debug for Image<'_, '_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image")
            .field("root_phys", &self.shape.root_phys)
            .field("pages", &self.shape.pages)
            .field("live_iommus", &self.shape.live_iommus)
            .field("live_devices", &self.shape.live_devices)
            .finish_non_exhaustive()
    }
}

impl<'m, 's, M: Memory + ?Sized> Image<'m, 's, M> {
    pub(crate) fn from_parts(
        mem: &'m M,
        shape: Shape<'m>,
        walk: [&'s [ScratchElem]; 3],
        sorted: &'s [ScratchElem],
        iommu_keys: &'s [ScratchElem],
        device_keys: &'s [ScratchElem],
    ) -> Self {
        Image {
            mem,
            shape,
            pages: Pages {
                page_size: shape.page_size,
                walk,
                sorted,
            },
            iommu_keys,
            device_keys,
        }
    }

    /// The view on a scratch slice `validate` filled for `shape`: the
    /// regions in the order `validate` took them (see `index`).
    #[cfg_attr(not(any(feature = "alloc", feature = "ffi")), allow(dead_code))]
    pub(crate) fn from_scratch(mem: &'m M, shape: Shape<'m>, scratch: &'s [ScratchElem]) -> Self {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let start = at;
            at = at.saturating_add(n);
            scratch.get(start..at).unwrap_or(&[])
        };
        let [a, b, c] = shape
            .pages
            .map(|p| usize::try_from(p).unwrap_or(usize::MAX));
        let walk = [take(a), take(b), take(c)];
        let sorted = take(a.saturating_add(b).saturating_add(c).saturating_add(1));
        let iommu_region = usize::try_from(shape.iommu_slots).unwrap_or(usize::MAX);
        let iommu_keys = take(iommu_region);
        let iommu_keys = iommu_keys.get(..shape.live_iommus).unwrap_or(&[]);
        let device_keys = take(shape.live_devices);
        Image::from_parts(mem, shape, walk, sorted, iommu_keys, device_keys)
    }

    #[cfg_attr(not(feature = "alloc"), allow(dead_code))] // For `validate_alloc`.
    pub(crate) fn shape(&self) -> Shape<'m> {
        self.shape
    }

    /// The format version (always 1 for a validated image).
    pub fn version(&self) -> u64 {
        self.shape.root.version.get()
    }

    /// The page size the image was validated with.
    pub fn page_size(&self) -> PageSize {
        self.shape.page_size
    }

    /// The physical address of the root `iommu_flb_ser`.
    pub fn root_phys(&self) -> PhysAddr {
        self.shape.root_phys
    }

    /// The root struct.
    pub fn root(&self) -> &'m IommuFlbSer {
        self.shape.root
    }

    /// Number of pages: the root's page and every chain page.
    pub fn page_count(&self) -> usize {
        self.pages
            .walk
            .iter()
            .map(|w| w.len())
            .fold(1, usize::saturating_add)
    }

    /// Number of pages in `chain` (1 for [`Chain::Root`]).
    pub fn chain_pages(&self, chain: Chain) -> usize {
        match chain {
            Chain::Root => 1,
            c => self.pages.chain(c).len(),
        }
    }

    /// Number of live IOMMUs.
    pub fn live_iommus(&self) -> usize {
        self.shape.live_iommus
    }

    /// Number of live devices.
    pub fn live_devices(&self) -> usize {
        self.shape.live_devices
    }

    /// Every record slot of `chain`, deleted ones included.
    fn records<const N: usize>(&self, chain: Chain) -> Records<'m, 's, M, N> {
        Records {
            mem: self.mem,
            page_size: self.shape.page_size,
            pages: self.pages.chain(chain).iter(),
            next: None,
            recs: [].iter(),
        }
    }

    /// Every IOMMU record, deleted ones included, in chain order.
    pub fn all_iommus(&self) -> impl Iterator<Item = AnyIommu<'m>> + use<'m, 's, M> {
        self.records::<HW>(Chain::Iommu)
            .map(|(phys, bytes)| AnyIommu { phys, bytes })
    }

    /// The live IOMMUs, in chain order.
    pub fn iommus(&self) -> impl Iterator<Item = Iommu<'m>> + use<'m, 's, M> {
        self.all_iommus()
            .filter(|r| !r.is_deleted())
            .filter_map(|r| r.iommu())
    }

    /// Every domain record, deleted ones included, in chain order.
    pub fn all_domains(&self) -> impl Iterator<Item = Domain<'m>> + use<'m, 's, M> {
        self.records::<DOM>(Chain::Domain)
            .map(|(phys, bytes)| Domain {
                phys,
                record: zerocopy::transmute_ref!(bytes),
            })
    }

    /// The live domains, in chain order.
    pub fn domains(&self) -> impl Iterator<Item = Domain<'m>> + use<'m, 's, M> {
        self.all_domains().filter(|d| !d.is_deleted())
    }

    /// Every device record, deleted ones included, in chain order, with its
    /// domain and IOMMU resolved where its (possibly stale) pointers name a
    /// record of the right kind.
    pub fn all_devices(&self) -> impl Iterator<Item = AnyDevice<'m>> + use<'m, 's, M> {
        let this = *self;
        self.records::<DEV>(Chain::Device)
            .scan(Default::default(), move |cursors, (phys, bytes)| {
                Some(this.any_device(phys, bytes, cursors))
            })
    }

    /// The live devices, in chain order.
    pub fn devices(&self) -> impl Iterator<Item = Device<'m>> + use<'m, 's, M> {
        let this = *self;
        let mut cursors = Default::default();
        self.records::<DEV>(Chain::Device)
            .filter_map(move |(phys, bytes)| {
                let rec: &IommuDeviceSer = zerocopy::transmute_ref!(bytes);
                if rec.hdr.flags.get() & IOMMU_SER_FLAG_DELETED != 0 {
                    return None;
                }
                this.any_device(phys, bytes, &mut cursors).device()
            })
    }

    /// A device record with its references resolved; `cursors` are the
    /// domain and IOMMU lookup cursors (see `Pages::locate`).
    #[inline]
    fn any_device(
        &self,
        phys: PhysAddr,
        bytes: &'m [u8; DEV],
        cursors: &mut [Cursor<'m>; 2],
    ) -> AnyDevice<'m> {
        let [dom_cursor, hw_cursor] = cursors;
        let rec: &IommuDeviceSer = zerocopy::transmute_ref!(bytes);
        let map = &rec.domain_iommu_ser;
        let domain = self
            .pages
            .locate::<M, DOM>(
                self.mem,
                Chain::Domain,
                PhysAddr::new(map.domain_phys.get()),
                false,
                dom_cursor,
            )
            .ok()
            .map(|f| Domain {
                phys: f.phys,
                record: zerocopy::transmute_ref!(f.bytes),
            });
        let iommu = self
            .pages
            .locate::<M, HW>(
                self.mem,
                Chain::Iommu,
                PhysAddr::new(map.iommu_phys.get()),
                false,
                hw_cursor,
            )
            .ok()
            .and_then(|f| {
                AnyIommu {
                    phys: f.phys,
                    bytes: f.bytes,
                }
                .iommu()
            });
        AnyDevice {
            phys,
            bytes,
            domain,
            iommu,
        }
    }

    /// The live IOMMU with this (token, type), in `O(log n)`.
    pub fn find_iommu(&self, token: u64, ty: IommuTypeSer) -> Option<Iommu<'m>> {
        let key = (token, ty.wire());
        let i = self
            .iommu_keys
            .binary_search_by(|e| (e.hi, e.lo >> TAG_SHIFT).cmp(&key))
            .ok()?;
        let index = self.iommu_keys.get(i)?.lo & super::index::LOW_MASK;
        let f: Found<'m, HW> = self.pages.record_at(self.mem, Chain::Iommu, index)?;
        AnyIommu {
            phys: f.phys,
            bytes: f.bytes,
        }
        .iommu()
    }

    /// The live device with this PCI segment and devid (bus << 8 | devfn),
    /// in `O(log n)`.
    pub fn find_device(&self, segment: u32, devid: u32) -> Option<Device<'m>> {
        let key = (u64::from(segment) << 32) | u64::from(devid);
        let i = self.device_keys.binary_search_by(|e| e.hi.cmp(&key)).ok()?;
        let index = self.device_keys.get(i)?.lo;
        let f: Found<'m, DEV> = self.pages.record_at(self.mem, Chain::Device, index)?;
        self.any_device(f.phys, f.bytes, &mut Default::default())
            .device()
    }

    /// Every page of the image exactly once, in restore order: the root's
    /// page, then the IOMMU, domain and device chains, each from its head.
    pub fn pages(&self) -> impl Iterator<Item = PhysAddr> + use<'m, 's, M> {
        let root = self.shape.root_phys.page_base(self.shape.page_size);
        let [a, b, c] = self.pages.walk;
        core::iter::once(root).chain(a.iter().chain(b).chain(c).map(|e| PhysAddr::new(e.hi)))
    }

    /// Calls `restore` on every page in [`pages`](Self::pages) order and
    /// returns how many it restored (all of them).
    ///
    /// # Errors
    ///
    /// The first failure stops the walk; [`RestoreError`] says which page
    /// failed, its index, and so which pages were restored before it
    /// (`self.pages().take(err.restored())`).
    pub fn restore<E>(
        &self,
        mut restore: impl FnMut(PhysAddr) -> Result<(), E>,
    ) -> Result<usize, RestoreError<E>> {
        let mut done = 0usize;
        for page in self.pages() {
            restore(page).map_err(|error| RestoreError {
                page,
                index: done,
                error,
            })?;
            done = done.saturating_add(1);
        }
        Ok(done)
    }
}

/// The record slots of one chain, in chain order, with their addresses: one
/// `Memory::page` call per page. Ends early if the memory stops serving a
/// page.
struct Records<'m, 's, M: ?Sized, const N: usize> {
    mem: &'m M,
    page_size: PageSize,
    pages: core::slice::Iter<'s, ScratchElem>,
    /// The address of the next record of `recs`.
    next: Option<PhysAddr>,
    recs: core::slice::Iter<'m, [u8; N]>,
}

impl<'m, M: Memory + ?Sized, const N: usize> Iterator for Records<'m, '_, M, N> {
    type Item = (PhysAddr, &'m [u8; N]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(rec) = self.recs.next() {
                if let Some(phys) = self.next {
                    self.next = phys.checked_add(u64::try_from(N).unwrap_or(u64::MAX));
                    return Some((phys, rec));
                }
                return self.stop();
            }
            let e = self.pages.next()?;
            let phys = PhysAddr::new(e.hi);
            let Some(page) = read_page(self.mem, phys, self.page_size) else {
                return self.stop();
            };
            self.recs = super::index::page_records::<N>(page, e.lo)
                .unwrap_or(&[])
                .iter();
            self.next = phys.checked_add(IOMMU_ARRAY_HDR_SIZE);
        }
    }
}

impl<M: ?Sized, const N: usize> Records<'_, '_, M, N> {
    /// Ends the iteration for good.
    #[cold]
    fn stop<T>(&mut self) -> Option<T> {
        self.pages = [].iter();
        self.recs = [].iter();
        None
    }
}

/// A failed [`Image::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreError<E> {
    /// The page whose restore failed.
    pub page: PhysAddr,
    /// Its index in [`Image::pages`] order; the pages before it were
    /// restored.
    pub index: usize,
    /// What the restore callback returned.
    pub error: E,
}

impl<E> RestoreError<E> {
    /// How many pages were restored before the failure: the first
    /// `restored()` of [`Image::pages`].
    pub fn restored(&self) -> usize {
        self.index
    }
}

impl<E: fmt::Display> fmt::Display for RestoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "iommu-flb: restoring page {} ({}) failed after {} pages: {}",
            self.index, self.page, self.index, self.error
        )
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for RestoreError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The vendor part of an IOMMU record, chosen by its `type`.
#[derive(Clone, Copy, Debug)]
pub enum IommuPayload<'m> {
    /// `IOMMU_INTEL`.
    Intel(&'m IommuIntelSer),
    /// `IOMMU_ARM_SMMUV3`.
    Smmuv3(&'m IommuSmmuv3HwSer),
}

/// The vendor part of a device record, chosen by its IOMMU's `type`.
#[derive(Clone, Copy, Debug)]
pub enum DevicePayload<'m> {
    /// The device's IOMMU is `IOMMU_INTEL`.
    Intel(&'m IommuDeviceIntelSer),
    /// The device's IOMMU is `IOMMU_ARM_SMMUV3`.
    Smmuv3(&'m IommuMasterSmmuv3Ser),
}

/// An IOMMU record whose type is Intel or SMMUv3 (every live one is).
#[derive(Clone, Copy)]
pub struct Iommu<'m> {
    phys: PhysAddr,
    bytes: &'m [u8; HW],
    ty: IommuTypeSer,
}

impl<'m> Iommu<'m> {
    /// The record's physical address (what devices' `iommu_phys` holds).
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The record.
    pub fn record(&self) -> &'m IommuHwSer {
        zerocopy::transmute_ref!(self.bytes)
    }

    /// Intel or SMMUv3.
    pub fn iommu_type(&self) -> IommuTypeSer {
        self.ty
    }

    /// The IOMMU's token (its MMIO base).
    pub fn token(&self) -> u64 {
        self.record().token.get()
    }

    /// Live devices behind it.
    pub fn ref_count(&self) -> u32 {
        self.record().hdr.ref_count.get()
    }

    /// `IOMMU_SER_FLAG_*` bits.
    pub fn flags(&self) -> u32 {
        self.record().hdr.flags.get()
    }

    /// Whether the record is deleted (never, for one from
    /// [`Image::iommus`]).
    pub fn is_deleted(&self) -> bool {
        self.flags() & IOMMU_SER_FLAG_DELETED != 0
    }

    /// The vendor state.
    pub fn payload(&self) -> IommuPayload<'m> {
        match self.ty {
            IommuTypeSer::IommuIntel => IommuPayload::Intel(hw_intel(self.bytes)),
            _ => IommuPayload::Smmuv3(hw_smmuv3(self.bytes).0),
        }
    }
}

impl fmt::Debug for Iommu<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iommu")
            .field("phys", &self.phys)
            .field("type", &self.ty)
            .field("token", &self.token())
            .field("ref_count", &self.ref_count())
            .field("flags", &self.flags())
            .field("payload", &self.payload())
            .finish()
    }
}

/// Any IOMMU record, deleted or not (from [`Image::all_iommus`]). A deleted
/// record is not validated: its type may be anything.
#[derive(Clone, Copy)]
pub struct AnyIommu<'m> {
    phys: PhysAddr,
    bytes: &'m [u8; HW],
}

impl<'m> AnyIommu<'m> {
    /// The record's physical address.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The record.
    pub fn record(&self) -> &'m IommuHwSer {
        zerocopy::transmute_ref!(self.bytes)
    }

    /// Whether the record is deleted.
    pub fn is_deleted(&self) -> bool {
        self.record().hdr.flags.get() & IOMMU_SER_FLAG_DELETED != 0
    }

    /// The record as an [`Iommu`], if its type is Intel or SMMUv3 (always,
    /// when it is live).
    pub fn iommu(&self) -> Option<Iommu<'m>> {
        iommu_type(self.record()).map(|ty| Iommu {
            phys: self.phys,
            bytes: self.bytes,
            ty,
        })
    }
}

impl fmt::Debug for AnyIommu<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.record();
        f.debug_struct("AnyIommu")
            .field("phys", &self.phys)
            .field("type", &r.r#type.get())
            .field("token", &r.token.get())
            .field("flags", &r.hdr.flags.get())
            .finish_non_exhaustive()
    }
}

/// A domain record.
#[derive(Clone, Copy, Debug)]
pub struct Domain<'m> {
    phys: PhysAddr,
    record: &'m IommuDomainSer,
}

impl<'m> Domain<'m> {
    /// The record's physical address (what devices' `domain_phys` holds).
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The record.
    pub fn record(&self) -> &'m IommuDomainSer {
        self.record
    }

    /// Whether the record is deleted (never, for one from
    /// [`Image::domains`] or [`Device::domain`]).
    pub fn is_deleted(&self) -> bool {
        self.record.hdr.flags.get() & IOMMU_SER_FLAG_DELETED != 0
    }

    /// The top-level page table (non-zero and page-aligned when live).
    pub fn top_table_phys(&self) -> PhysAddr {
        PhysAddr::new(self.record.top_table_phys.get())
    }
}

/// A device record with its domain and IOMMU resolved. Every one from
/// [`Image::devices`] or [`Image::find_device`] is live; one from
/// [`AnyDevice::device`] may be deleted.
#[derive(Clone, Copy)]
pub struct Device<'m> {
    phys: PhysAddr,
    bytes: &'m [u8; DEV],
    domain: Domain<'m>,
    iommu: Iommu<'m>,
}

impl<'m> Device<'m> {
    /// The record's physical address.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The record.
    pub fn record(&self) -> &'m IommuDeviceSer {
        zerocopy::transmute_ref!(self.bytes)
    }

    /// The PCI segment (`pci_domain_nr`).
    pub fn segment(&self) -> u32 {
        self.record().pci_domain_nr.get()
    }

    /// The PCI requester ID, bus << 8 | devfn.
    pub fn devid(&self) -> u32 {
        self.record().devid.get()
    }

    /// Whether the record is deleted (never, for one from
    /// [`Image::devices`]).
    pub fn is_deleted(&self) -> bool {
        self.record().hdr.flags.get() & IOMMU_SER_FLAG_DELETED != 0
    }

    /// The domain `domain_phys` names.
    pub fn domain(&self) -> Domain<'m> {
        self.domain
    }

    /// The IOMMU `iommu_phys` names.
    pub fn iommu(&self) -> Iommu<'m> {
        self.iommu
    }

    /// The vendor state, chosen by the IOMMU's type.
    pub fn payload(&self) -> DevicePayload<'m> {
        device_payload(self.bytes, self.iommu.ty)
    }
}

fn device_payload(bytes: &[u8; DEV], ty: IommuTypeSer) -> DevicePayload<'_> {
    match ty {
        IommuTypeSer::IommuIntel => DevicePayload::Intel(dev_intel(bytes)),
        _ => DevicePayload::Smmuv3(dev_smmuv3(bytes)),
    }
}

impl fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("phys", &self.phys)
            .field("segment", &self.segment())
            .field("devid", &self.devid())
            .field("domain", &self.domain.phys)
            .field("iommu", &self.iommu.phys)
            .field("payload", &self.payload())
            .finish_non_exhaustive()
    }
}

/// Any device record, deleted or not (from [`Image::all_devices`]). A
/// deleted record is not validated: its pointers may be stale, so its domain
/// and IOMMU are resolved only where they name a record of the right kind.
#[derive(Clone, Copy)]
pub struct AnyDevice<'m> {
    phys: PhysAddr,
    bytes: &'m [u8; DEV],
    domain: Option<Domain<'m>>,
    iommu: Option<Iommu<'m>>,
}

impl<'m> AnyDevice<'m> {
    /// The record's physical address.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// The record.
    pub fn record(&self) -> &'m IommuDeviceSer {
        zerocopy::transmute_ref!(self.bytes)
    }

    /// Whether the record is deleted.
    pub fn is_deleted(&self) -> bool {
        self.record().hdr.flags.get() & IOMMU_SER_FLAG_DELETED != 0
    }

    /// The domain record `domain_phys` names, if it names one.
    pub fn domain(&self) -> Option<Domain<'m>> {
        self.domain
    }

    /// The IOMMU record `iommu_phys` names, if it names one of a known type.
    pub fn iommu(&self) -> Option<Iommu<'m>> {
        self.iommu
    }

    /// The vendor state, if the IOMMU resolves.
    pub fn payload(&self) -> Option<DevicePayload<'m>> {
        self.iommu.map(|i| device_payload(self.bytes, i.ty))
    }

    /// The record as a [`Device`], if both its domain and its IOMMU resolve
    /// (always, when it is live).
    pub fn device(&self) -> Option<Device<'m>> {
        Some(Device {
            phys: self.phys,
            bytes: self.bytes,
            domain: self.domain?,
            iommu: self.iommu?,
        })
    }
}

impl fmt::Debug for AnyDevice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.record();
        f.debug_struct("AnyDevice")
            .field("phys", &self.phys)
            .field("segment", &r.pci_domain_nr.get())
            .field("devid", &r.devid.get())
            .field("flags", &r.hdr.flags.get())
            .field("domain", &self.domain.map(|d| d.phys))
            .field("iommu", &self.iommu.map(|i| i.phys))
            .finish_non_exhaustive()
    }
}

/// What an [`Image`] knows besides its scratch, without borrows, so the C
/// boundary (`src/ffi`) can keep it in caller memory between calls and
/// [`Image::thaw`] it again.
#[cfg(feature = "ffi")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frozen {
    page_size: PageSize,
    root_phys: PhysAddr,
    pages: [u64; 3],
    iommu_slots: u64,
    live_iommus: usize,
    live_devices: usize,
}

/// Crate-internal access by position, for the C boundary's cursors and
/// lookups (`src/ffi`): each call costs O(1) or O(log n), where the public
/// iterators would have to start over.
#[cfg(feature = "ffi")]
impl<'m, 's, M: Memory + ?Sized> Image<'m, 's, M> {
    /// The image without its borrows.
    pub(crate) fn freeze(&self) -> Frozen {
        let s = self.shape;
        Frozen {
            page_size: s.page_size,
            root_phys: s.root_phys,
            pages: s.pages,
            iommu_slots: s.iommu_slots,
            live_iommus: s.live_iommus,
            live_devices: s.live_devices,
        }
    }

    /// The image `freeze` was called on, over the same memory and the same
    /// scratch; `None` if the root can no longer be read.
    pub(crate) fn thaw(mem: &'m M, f: Frozen, scratch: &'s [ScratchElem]) -> Option<Self> {
        use zerocopy::FromBytes;
        let ps = f.page_size;
        let page = read_page(mem, f.root_phys.page_base(ps), ps)?;
        let (root, _) =
            IommuFlbSer::ref_from_prefix(page.get(f.root_phys.page_offset(ps)..)?).ok()?;
        let shape = Shape {
            page_size: ps,
            root_phys: f.root_phys,
            root,
            pages: f.pages,
            iommu_slots: f.iommu_slots,
            live_iommus: f.live_iommus,
            live_devices: f.live_devices,
        };
        Some(Image::from_scratch(mem, shape, scratch))
    }

    /// IOMMU record `index` of the chain (page × capacity + slot), deleted
    /// or not; `None` past the last.
    pub(crate) fn iommu_by_index(&self, index: u64) -> Option<AnyIommu<'m>> {
        let f: Found<'m, HW> = self.pages.record_at(self.mem, Chain::Iommu, index)?;
        Some(AnyIommu {
            phys: f.phys,
            bytes: f.bytes,
        })
    }

    /// Domain record `index` of the chain, deleted or not.
    pub(crate) fn domain_by_index(&self, index: u64) -> Option<Domain<'m>> {
        let f: Found<'m, DOM> = self.pages.record_at(self.mem, Chain::Domain, index)?;
        Some(Domain {
            phys: f.phys,
            record: zerocopy::transmute_ref!(f.bytes),
        })
    }

    /// Device record `index` of the chain, deleted or not.
    pub(crate) fn device_by_index(&self, index: u64) -> Option<AnyDevice<'m>> {
        let f: Found<'m, DEV> = self.pages.record_at(self.mem, Chain::Device, index)?;
        Some(self.any_device(f.phys, f.bytes, &mut Default::default()))
    }

    /// The live device whose record starts at `phys`.
    pub(crate) fn device_at(&self, phys: PhysAddr) -> Option<Device<'m>> {
        let f: Found<'m, DEV> = self
            .pages
            .locate(self.mem, Chain::Device, phys, true, &mut Cursor::default())
            .ok()?;
        self.any_device(f.phys, f.bytes, &mut Default::default())
            .device()
    }

    /// Page `index` in [`pages`](Self::pages) order.
    pub(crate) fn page_by_index(&self, index: usize) -> Option<PhysAddr> {
        let Some(mut rest) = index.checked_sub(1) else {
            return Some(self.shape.root_phys.page_base(self.shape.page_size));
        };
        for walk in self.pages.walk {
            match walk.get(rest) {
                Some(e) => return Some(PhysAddr::new(e.hi)),
                None => rest = rest.checked_sub(walk.len())?,
            }
        }
        None
    }
}

/// An [`Image`] that owns its scratch (from
/// [`validate_alloc`](super::validate_alloc)).
#[cfg(feature = "alloc")]
pub struct OwnedImage<'m, M: ?Sized> {
    mem: &'m M,
    shape: Shape<'m>,
    scratch: alloc::vec::Vec<ScratchElem>,
}

#[cfg(feature = "alloc")]
impl<'m, M: Memory + ?Sized> OwnedImage<'m, M> {
    pub(crate) fn new(mem: &'m M, shape: Shape<'m>, scratch: alloc::vec::Vec<ScratchElem>) -> Self {
        OwnedImage {
            mem,
            shape,
            scratch,
        }
    }

    /// The validated view.
    pub fn image(&self) -> Image<'m, '_, M> {
        Image::from_scratch(self.mem, self.shape, &self.scratch)
    }
}

#[cfg(feature = "alloc")]
impl<M: ?Sized> fmt::Debug for OwnedImage<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedImage")
            .field("root_phys", &self.shape.root_phys)
            .field("scratch_len", &self.scratch.len())
            .finish_non_exhaustive()
    }
}
